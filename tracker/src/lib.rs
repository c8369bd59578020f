//! SwarmCDN tracker: a WebTorrent-compatible WebSocket tracker that groups the viewers of a
//! stream into swarms and relays their WebRTC signaling.
//!
//! One task (the swarm worker) owns the [`swarmcdn_core::registry::Registry`] by `&mut`; each
//! connection task decodes its client's messages, enforces the per-connection limits and
//! forwards them to the worker over a bounded channel; the worker pushes replies into each
//! connection's bounded queue, and drops a connection whose queue is full (a slow reader never
//! holds up the others). The same port serves `/health`, `/stats` (JSON) and `/metrics`
//! (Prometheus), unless `metrics_listen` gives them a port of their own; `metrics_token` puts
//! `/stats` and `/metrics` behind a bearer token.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! swarmcdn_tracker::run(swarmcdn_tracker::Config::default(), shutdown).await
//! # }
//! ```

mod config;
mod frame;
mod metrics;
mod outbox;
mod worker;
#[doc(hidden)]
pub mod ws;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use swarmcdn_core::registry::ConnId;
use swarmcdn_core::tracker_proto::{ErrorResponse, FromTracker, ToTracker};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use config::{Config, Limits, Seeds, SwarmConfig, Tokens};
use frame::Frame;
pub use metrics::Metrics;
use outbox::{Outbox, Popped};
use worker::ToWorker;
use ws::{WsError, close_code};

/// Runs the tracker until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    Tracker::bind(config).await?.run(shutdown).await
}

/// A bound tracker, not yet serving.
pub struct Tracker {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shared: Arc<Shared>,
}

/// Which of the tracker's listeners a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    /// `listen`: WebSocket clients, and the HTTP endpoints unless `metrics_listen` is set.
    Public,
    /// `metrics_listen`: the HTTP endpoints only.
    Metrics,
}

struct Shared {
    config: Config,
    token_keys: Vec<swarmcdn_core::integrity::PublicKey>,
    metrics: Metrics,
    slots: Mutex<Slots>,
    next_conn: AtomicU64,
}

/// WebSocket connections held, from the upgrade response to the end of the connection task.
#[derive(Default)]
struct Slots {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Tracker {
    /// Checks the configuration and binds the listening socket.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding the tracker to {}", config.listen))?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the tracker's metrics_listen to {addr}"))?,
            ),
            None => None,
        };
        Ok(Self {
            listener,
            metrics_listener,
            shared: Arc::new(Shared {
                token_keys: config.tokens.public_keys()?,
                config,
                metrics: Metrics::default(),
                slots: Mutex::new(Slots::default()),
                next_conn: AtomicU64::new(1),
            }),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has an address")
    }

    /// The address `/stats` and `/metrics` are served on, if `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .map(|l| l.local_addr().expect("a bound TCP listener has an address"))
    }

    /// Serves until `shutdown` is cancelled, then sends every client a close frame (1001,
    /// going away) and waits for them, at most `limits.shutdown_grace_ms`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if let Some(addr) = self.metrics_addr() {
            tracing::info!(%addr, "metrics listening");
        }
        let shared = self.shared;
        let (worker_tx, worker_rx) = mpsc::channel(4096);
        let tasks = TaskTracker::new();
        let seed = rand_seed();
        let worker = tokio::spawn(worker::run(shared.config.swarm.registry(), seed, worker_rx));
        tracing::info!(addr = %self.listener.local_addr()?, "tracker listening");
        let accept_metrics = async |l: Option<&TcpListener>| match l {
            Some(l) => l.accept().await,
            None => std::future::pending().await,
        };
        loop {
            let (accepted, port) = tokio::select! {
                a = self.listener.accept() => (a, Port::Public),
                a = accept_metrics(self.metrics_listener.as_ref()) => (a, Port::Metrics),
                () = shutdown.cancelled() => break,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            let worker_tx = worker_tx.clone();
            let conn_shutdown = shutdown.clone();
            let shutdown = shutdown.clone();
            let conn_tasks = tasks.clone();
            tasks.spawn(async move {
                let header_timeout = Duration::from_millis(shared.config.limits.header_timeout_ms);
                let service = service_fn(move |req| {
                    let shared = shared.clone();
                    let worker_tx = worker_tx.clone();
                    let shutdown = shutdown.clone();
                    let conn_tasks = conn_tasks.clone();
                    async move {
                        Ok::<_, Infallible>(match port {
                            Port::Public => {
                                handle_http(req, peer, shared, worker_tx, shutdown, conn_tasks)
                                    .await
                            }
                            Port::Metrics => endpoint(&req, port, &shared, &worker_tx).await,
                        })
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                let mut conn = std::pin::pin!(conn);
                // An upgraded connection has left hyper (the future is done); a plain HTTP one
                // (a metrics scraper's keep-alive) finishes its request and closes on shutdown.
                let res = tokio::select! {
                    res = conn.as_mut() => res,
                    () = conn_shutdown.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = res {
                    tracing::debug!(error = %e, "http connection ended with an error");
                }
            });
        }
        // No new connection is let in while the others close (nor left to wait at the kernel).
        drop(self.listener);
        drop(self.metrics_listener);
        tracing::info!("shutting down: closing connections");
        tasks.close();
        let grace = Duration::from_millis(shared.config.limits.shutdown_grace_ms);
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::warn!("connections still open after the grace period");
        }
        drop(worker_tx);
        let _ = tokio::time::timeout(grace, worker).await;
        Ok(())
    }
}

fn rand_seed() -> u64 {
    // The registry's RNG and hash keys: unpredictable to clients. RandomState is seeded by the
    // OS per process.
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish()
}

type Body = Full<Bytes>;

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::HeaderValue::from_static("*"),
    );
    r
}

/// A plain HTTP request: `/health`, `/stats`, `/metrics`.
async fn endpoint(
    req: &Request<Incoming>,
    port: Port,
    shared: &Shared,
    worker_tx: &mpsc::Sender<ToWorker>,
) -> Response<Body> {
    let path = req.uri().path();
    let counters = matches!(path, "/stats" | "/metrics");
    if counters && port == Port::Public && shared.config.metrics_listen.is_some() {
        return text(StatusCode::NOT_FOUND, "text/plain", "not found\n");
    }
    if counters && !bearer_matches(req.headers(), &shared.config.metrics_token) {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "text/plain",
            "this endpoint needs Authorization: Bearer <metrics_token>\n",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"swarmcdn-tracker\""),
        );
        return r;
    }
    match path {
        "/health" => text(StatusCode::OK, "text/plain", "ok\n"),
        "/stats" => {
            let registry = worker::stats(worker_tx).await;
            let body = shared.metrics.stats_json(registry.as_ref());
            text(StatusCode::OK, "application/json", body)
        }
        "/metrics" => {
            let registry = worker::stats(worker_tx).await;
            let body = shared.metrics.prometheus(registry.as_ref());
            text(StatusCode::OK, "text/plain; version=0.0.4", body)
        }
        _ if port == Port::Metrics => text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        _ => text(
            StatusCode::UPGRADE_REQUIRED,
            "text/plain",
            "this is a WebTorrent tracker: connect with WebSocket\n",
        ),
    }
}

/// Whether the request carries `Authorization: Bearer <token>` (any token when `token` is
/// empty). The token is compared in constant time.
fn bearer_matches(headers: &http::HeaderMap, token: &str) -> bool {
    use subtle::ConstantTimeEq;
    if token.is_empty() {
        return true;
    }
    headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| {
            let v = v.as_bytes();
            let (scheme, rest) = v.split_at_checked(7)?;
            scheme
                .eq_ignore_ascii_case(b"bearer ")
                .then(|| rest.trim_ascii())
        })
        .any(|given| bool::from(given.ct_eq(token.as_bytes())))
}

async fn handle_http(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    worker_tx: mpsc::Sender<ToWorker>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) -> Response<Body> {
    let is_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !is_upgrade {
        return endpoint(&req, Port::Public, &shared, &worker_tx).await;
    }
    let m = &shared.metrics;
    // RFC 6455 §4.2.1: a GET with `Connection: Upgrade`, version 13 and a key.
    if req.method() != hyper::Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "a WebSocket upgrade must be a GET\n",
        );
    }
    let connection_upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return text(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "missing Connection: Upgrade\n",
        );
    }
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        let mut resp = text(
            StatusCode::UPGRADE_REQUIRED,
            "text/plain",
            "unsupported Sec-WebSocket-Version (13 is spoken)\n",
        );
        resp.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            header::HeaderValue::from_static("13"),
        );
        return resp;
    }
    let Some(key) = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| k.len() == 24)
        .cloned()
    else {
        return text(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "missing or malformed Sec-WebSocket-Key\n",
        );
    };
    // Connection limits, checked (and the slot taken) before the upgrade is answered.
    let guard = match ConnGuard::take(&shared, peer.ip()) {
        Ok(guard) => guard,
        Err(Refusal::Total) => {
            m.reject("too_many_connections");
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "too many connections\n",
            );
        }
        Err(Refusal::PerIp) => {
            m.reject("too_many_connections_per_ip");
            return text(
                StatusCode::TOO_MANY_REQUESTS,
                "text/plain",
                "too many connections from your address\n",
            );
        }
    };
    let may_seed = shared.config.seeds.allows(peer.ip());
    let accept = derive_accept_key(key.as_bytes());
    let conn = ConnId(shared.next_conn.fetch_add(1, Ordering::Relaxed));
    let shared2 = shared.clone();
    let ws_tasks = tasks.clone();
    tasks.spawn(async move {
        let upgraded = hyper::upgrade::on(&mut req).await;
        drop(req);
        match upgraded {
            Ok(upgraded) => {
                // Built here, not in the connection's task: that task's future would hold
                // the connection by value in its first state, and a task's allocation is as
                // large as its largest state for the connection's whole life.
                let ws = Box::new(WsConn {
                    io: TokioIo::new(upgraded),
                    decoder: ws::Decoder::new(shared2.config.limits.max_message_bytes),
                });
                // The connection runs in a task of its own: this one's future holds the
                // request, which an idle connection should not keep.
                ws_tasks.spawn(
                    async move {
                        let _guard = guard;
                        serve_ws(ws, conn, may_seed, shared2, worker_tx, shutdown).await;
                    }
                    .instrument(tracing::debug_span!("conn", id = conn.0)),
                );
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        header::HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    r
}

/// Why a connection was refused at the upgrade.
enum Refusal {
    Total,
    PerIp,
}

/// What the per-address limit counts by: an IPv4 address (IPv4-mapped IPv6 ones too), or an
/// IPv6 /64, which one host or one home usually holds whole (counting each address would let
/// one host open connections without limit).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

/// Holds a connection slot (in total and for its IP address) for as long as it lives.
struct ConnGuard {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl ConnGuard {
    fn take(shared: &Arc<Shared>, ip: IpAddr) -> Result<Self, Refusal> {
        let limits = &shared.config.limits;
        let mut slots = shared.slots.lock().expect("not poisoned");
        if slots.total >= limits.max_connections {
            return Err(Refusal::Total);
        }
        let ip = address_key(ip);
        let n = slots.per_ip.get(&ip).copied().unwrap_or(0);
        if n >= limits.max_connections_per_ip {
            return Err(Refusal::PerIp);
        }
        slots.total += 1;
        slots.per_ip.insert(ip, n + 1);
        Ok(Self {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut slots = self.shared.slots.lock().expect("not poisoned");
        slots.total -= 1;
        if let Some(n) = slots.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                slots.per_ip.remove(&self.ip);
            }
        }
    }
}

/// A token bucket counting messages.
struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl RateLimit {
    fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: tokio::time::Instant::now(),
        }
    }

    fn allow(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// With tokens required, an announce (other than `stopped`) must carry a valid join token (a
/// seed token if it claims the role `seed`), and a `seed_standby` one for the all-zero swarm
/// id (standby seeds serve any swarm).
fn check_token(shared: &Shared, msg: &ToTracker) -> Result<(), swarmcdn_core::token::TokenError> {
    use swarmcdn_core::token::{JoinToken, TokenError};
    use swarmcdn_core::tracker_proto::AnnounceEvent;
    if !shared.config.tokens.required {
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if let ToTracker::Standby(st) = msg {
        let token = st
            .ext
            .as_ref()
            .and_then(|e| e.token.as_deref())
            .ok_or(TokenError::Missing)?;
        let any_swarm = swarmcdn_core::ids::SwarmId([0; 20]);
        return JoinToken::verify(token, &shared.token_keys, now, &any_swarm, &st.peer_id)
            .map(drop);
    }
    let ToTracker::Announce(a) = msg else {
        return Ok(());
    };
    if a.event == Some(AnnounceEvent::Stopped) {
        return Ok(());
    }
    let token = a
        .ext
        .as_ref()
        .and_then(|e| e.token.as_deref())
        .ok_or(TokenError::Missing)?;
    let granted = match JoinToken::verify(token, &shared.token_keys, now, &a.info_hash, &a.peer_id)
    {
        // A token for the all-zero swarm (the seeds' standby token) admits to every swarm: a
        // seed a tracker asks to join a stream announces there with it.
        Err(TokenError::WrongSwarm) => {
            let any_swarm = swarmcdn_core::ids::SwarmId([0; 20]);
            JoinToken::verify(token, &shared.token_keys, now, &any_swarm, &a.peer_id)
        }
        other => other,
    }?;
    // The seed role puts a peer into every viewer's offers in thin swarms and keeps a standby
    // seed from being asked: only the operator's seeds may claim it.
    if claims_seed(msg) && !granted.grants_seed() {
        return Err(TokenError::NotSeed);
    }
    Ok(())
}

/// Why a write to a client did not complete.
#[derive(Debug, PartialEq, Eq)]
enum WriteError {
    Failed,
    TimedOut,
}

/// Runs a write to the client, at most `timeout` long: a client that stops reading cannot hold
/// its connection task (and its slot) forever.
///
/// The write is boxed: it exists only while a connection writes, and inline it would add its
/// size to the state of every connection task, idle ones included.
fn write<'a, E>(
    timeout: Duration,
    f: impl Future<Output = Result<(), E>> + 'a,
) -> impl Future<Output = Result<(), WriteError>> + 'a {
    let boxed = Box::pin(tokio::time::timeout(timeout, f));
    async move {
        match boxed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(WriteError::Failed),
            Err(_) => Err(WriteError::TimedOut),
        }
    }
}

/// Longest wait for a close frame to go out: it is a courtesy, and the socket may be stuck.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

fn failure_frame(reason: String) -> Frame {
    Frame::message(&FromTracker::Error(ErrorResponse {
        failure_reason: reason,
        action: None,
        info_hash: None,
    }))
}

/// What a connection task does next (see `serve_ws`).
enum Step {
    Nothing,
    /// A decoded message for the worker.
    Forward(Box<ToTracker>),
    /// A reply of the task's own (a `failure reason`), or a message from the worker (with
    /// any others queued behind it).
    Send(Frame),
    /// Answer a ping.
    Pong(Bytes),
    /// Close with a frame (code and text), then end for `reason`.
    Close(u16, &'static str, &'static str),
    /// End without a close frame.
    End(&'static str),
    /// The worker says the connection held no peer after its join messages up to this one.
    LeftEverySwarm(u32),
}

/// The step for what the client sent (or the end of its stream).
fn on_incoming(
    shared: &Shared,
    may_seed: bool,
    rate: &mut RateLimit,
    incoming: Result<Option<ws::Incoming>, ws::NextError>,
) -> Step {
    let m = &shared.metrics;
    match incoming {
        // Every frame counts against the message rate (announces, answers, scrapes, pings,
        // pongs), except the client's own close.
        Ok(Some(ref i)) if !matches!(i, ws::Incoming::Close(_)) && !rate.allow() => {
            m.reject("flood");
            Step::Close(close_code::POLICY, "too many messages", "flood")
        }
        // Text and binary messages alike are read as JSON text, as bittorrent-tracker does;
        // the UTF-8 check is SIMD (`simdutf8`).
        Ok(Some(ws::Incoming::Message(b))) => match simdutf8::basic::from_utf8(&b) {
            Ok(text) => on_text(shared, may_seed, text),
            Err(_) => {
                m.reject("invalid_utf8");
                Step::Close(close_code::INVALID, "invalid UTF-8", "invalid UTF-8")
            }
        },
        Ok(Some(ws::Incoming::Ping(payload))) => Step::Pong(payload),
        Ok(Some(ws::Incoming::Pong)) => Step::Nothing,
        Ok(Some(ws::Incoming::Close(_))) => Step::Close(close_code::NORMAL, "", "closed by client"),
        Ok(None) => Step::End("closed by client"),
        Err(ws::NextError::Ws(WsError::TooLarge)) => {
            m.reject("message_too_large");
            Step::Close(close_code::SIZE, "message too large", "message too large")
        }
        Err(ws::NextError::Ws(WsError::Protocol(why))) => {
            m.reject("protocol_error");
            Step::Close(close_code::PROTOCOL, why, "protocol error")
        }
        Err(ws::NextError::Io(_)) => Step::End("read failed"),
    }
}

/// Whether `msg` takes the seed role: an announce saying so, or a standby.
fn claims_seed(msg: &ToTracker) -> bool {
    match msg {
        ToTracker::Announce(a) => a
            .ext
            .as_ref()
            .is_some_and(|e| e.role == Some(swarmcdn_core::tracker_proto::Role::Seed)),
        ToTracker::Standby(_) => true,
        ToTracker::Answer(_) | ToTracker::Scrape(_) => false,
    }
}

/// The step for a text message (`may_seed`: the client's address is among `seeds.networks`).
fn on_text(shared: &Shared, may_seed: bool, text: &str) -> Step {
    let m = &shared.metrics;
    m.messages_in.fetch_add(1, Ordering::Relaxed);
    match ToTracker::from_json_str(text) {
        // With tokens required, swarm ids are secrets of their viewers: a scrape must name
        // them (it may learn counts of a swarm it knows, not which swarms exist).
        Ok(ToTracker::Scrape(s)) if s.info_hashes.is_empty() && shared.config.tokens.required => {
            m.reject("scrape_all");
            Step::Send(failure_frame(
                "a scrape must name its swarms on this tracker".into(),
            ))
        }
        Ok(msg) if !may_seed && claims_seed(&msg) => {
            m.reject("seed_not_allowed");
            Step::Send(failure_frame(
                "the seed role is kept to the operator's seed addresses".into(),
            ))
        }
        Ok(msg) => match check_token(shared, &msg) {
            Ok(()) => Step::Forward(Box::new(msg)),
            Err(e) => {
                m.reject("bad_token");
                Step::Send(failure_frame(e.to_string()))
            }
        },
        Err(e) => {
            m.reject("malformed");
            Step::Send(failure_frame(e.to_string()))
        }
    }
}

/// An upgraded connection: the socket and the decoder of what the client sends.
struct WsConn<S> {
    io: S,
    decoder: ws::Decoder,
}

/// One WebSocket client, from the upgrade to the close.
///
/// The connection comes boxed: an async fn keeps its arguments for its whole life.
async fn serve_ws<S>(
    ws: Box<WsConn<S>>,
    conn: ConnId,
    may_seed: bool,
    shared: Arc<Shared>,
    worker_tx: mpsc::Sender<ToWorker>,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let m = &shared.metrics;
    let limits = &shared.config.limits;
    let wt = Duration::from_millis(limits.write_timeout_ms);
    let ct = wt.min(CLOSE_TIMEOUT);
    let outbox = Arc::new(Outbox::new(limits.outgoing_queue));
    let open = Box::pin(worker_tx.send(ToWorker::Open {
        conn,
        outbox: outbox.clone(),
    }));
    if open.await.is_err() {
        return;
    }
    m.connections.fetch_add(1, Ordering::Relaxed);
    m.connections_total.fetch_add(1, Ordering::Relaxed);
    tracing::debug!("connected");
    let mut ws = ws;
    let WsConn { io, decoder } = &mut *ws;
    let mut rate = RateLimit::new(limits.messages_per_second, limits.message_burst);
    // Until the client announces: boxed, and dropped after, so that it costs idle connections
    // nothing.
    let mut join_deadline = (limits.join_timeout_ms > 0).then(|| {
        Box::pin(tokio::time::sleep(Duration::from_millis(
            limits.join_timeout_ms,
        )))
    });
    // Each turn decides a step without awaiting, then awaits only the step: the decoded
    // message and its errors never live across an await, so they do not size the state
    // every idle connection task keeps.
    // Join messages (announces, standby) forwarded to the worker.
    let mut join_messages: u32 = 0;
    let reason = loop {
        let step = tokio::select! {
            incoming = decoder.next(io) => on_incoming(&shared, may_seed, &mut rate, incoming),
            out = outbox.pop() => match out {
                Popped::Frame(frame) => Step::Send(frame),
                Popped::LeftEverySwarm(n) => Step::LeftEverySwarm(n),
                // The worker dropped us: our queue overflowed.
                Popped::Closed => {
                    m.reject("slow_consumer");
                    Step::Close(close_code::AGAIN, "too slow", "slow consumer")
                }
            },
            () = shutdown.cancelled() => {
                Step::Close(close_code::AWAY, "tracker shutting down", "shutdown")
            }
            () = async { join_deadline.as_mut().expect("guarded").await }, if join_deadline.is_some() => {
                m.reject("no_announce");
                Step::Close(close_code::POLICY, "no announce", "no announce")
            }
        };
        match step {
            Step::Nothing => {}
            Step::Forward(msg) => {
                let joins = match &*msg {
                    ToTracker::Announce(a) => {
                        a.event != Some(swarmcdn_core::tracker_proto::AnnounceEvent::Stopped)
                    }
                    ToTracker::Standby(_) => true,
                    _ => false,
                };
                if joins {
                    join_deadline = None;
                }
                if matches!(&*msg, ToTracker::Announce(_) | ToTracker::Standby(_)) {
                    // Numbered from 1; 0 means "no news" in the outbox.
                    join_messages = join_messages.checked_add(1).unwrap_or(1);
                }
                // Boxed, as `write`: a channel send waiting for room is large.
                let send = Box::pin(worker_tx.send(ToWorker::Message {
                    conn,
                    msg,
                    joins: join_messages,
                }));
                if send.await.is_err() {
                    break "shutdown";
                }
            }
            Step::Send(first) => {
                // Write every message already queued with it at once: one write for a burst
                // of relayed offers instead of one per message.
                let mut batch = 1;
                let written = write(wt, async {
                    let mut frames = Vec::with_capacity(4);
                    frames.push(first);
                    while frames.len() < frame::MAX_BATCH {
                        let Some(next) = outbox.try_pop() else { break };
                        frames.push(next);
                    }
                    batch = frames.len() as u64;
                    frame::write_all(io, &frames).await
                })
                .await;
                m.messages_out.fetch_add(batch, Ordering::Relaxed);
                match written {
                    Ok(()) => {}
                    Err(WriteError::Failed) => break "write failed",
                    Err(WriteError::TimedOut) => {
                        // Not reading: no point in a close frame either.
                        m.reject("slow_consumer");
                        break "write timed out";
                    }
                }
            }
            Step::Pong(payload) => {
                let pong = [Frame::pong(&payload)];
                if write(wt, frame::write_all(io, &pong)).await.is_err() {
                    break "write failed";
                }
            }
            Step::Close(code, why, reason) => {
                let close = [Frame::close(code, why)];
                let _ = write(ct, frame::write_all(io, &close)).await;
                break reason;
            }
            Step::End(reason) => break reason,
            // It holds no peer (its `stopped`, a refused announce, or its peers expired) and
            // has sent no join message since the worker saw that: it has again
            // `join_timeout_ms` to join a swarm, or its slot goes (a client could otherwise
            // announce once, stop, and hold the connection idle for ever).
            Step::LeftEverySwarm(handled) => {
                if handled == join_messages && limits.join_timeout_ms > 0 && join_deadline.is_none()
                {
                    join_deadline = Some(Box::pin(tokio::time::sleep(Duration::from_millis(
                        limits.join_timeout_ms,
                    ))));
                }
            }
        }
    };
    tracing::debug!(reason, "disconnected");
    // Replies still on their way are dropped, not queued for nobody.
    outbox.close();
    m.connections.fetch_sub(1, Ordering::Relaxed);
    let _ = Box::pin(worker_tx.send(ToWorker::Close { conn })).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_count_by_ipv4_address_or_ipv6_slash_64() {
        let key = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(key("192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:ee:dd:cc"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2::"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }
}
