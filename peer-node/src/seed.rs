//! The seed service: a node loop per configured stream, playlist pullers for every rendition,
//! and the `/metrics`, `/stats` and `/health` endpoint.

use std::convert::Infallible;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use swarmcdn_core::node::{IntegrityMode, NodeConfig, NodeRole, UploadConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, StreamConfig};
use crate::driver::{self, LoopConfig, NodeHandle};
use crate::http::HttpClient;
use crate::mesh::Mesh;
use crate::puller::{self, PullStats};
use crate::tracker::TrackerEvent;
use swarmcdn_core::ids::SwarmId;
use swarmcdn_core::tracker_proto::{FromTracker, PeerInfo, Role, Standby, ToTracker};

/// One followed stream.
#[derive(Debug, Clone)]
pub struct Followed {
    /// The configured stream.
    pub config: StreamConfig,
    /// Its node loop.
    pub node: NodeHandle,
    /// Playlist counters.
    pub pulls: Arc<PullStats>,
    /// Renditions followed.
    pub renditions: usize,
}

/// A running seed.
#[derive(Debug, Default)]
pub struct Seed {
    /// The streams followed (filled as each stream's playlist loads).
    pub streams: std::sync::Mutex<Vec<Followed>>,
    /// Playlist counters of streams that did not load yet.
    pub pending: std::sync::Mutex<Vec<(StreamConfig, Arc<PullStats>)>>,
    /// The seed mesh, when `mesh.listen` is set.
    pub mesh: Option<Mesh>,
    /// Streams followed on demand now (loading or loaded).
    pub on_demand: std::sync::atomic::AtomicUsize,
    /// Streams followed on demand and let go for want of neighbours.
    pub released: std::sync::atomic::AtomicU64,
}

/// One of the `on_demand.max_streams` places, held by a stream followed on demand for as long
/// as its task lives (however it ends).
struct OnDemandSlot(Arc<Seed>);

impl OnDemandSlot {
    fn take(seed: &Arc<Seed>) -> Self {
        seed.on_demand.fetch_add(1, Ordering::Relaxed);
        Self(seed.clone())
    }
}

impl Drop for OnDemandSlot {
    fn drop(&mut self) {
        self.0.on_demand.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs the seed until `shutdown`. `ready` gets the metrics address once bound.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    config.check()?;
    let secret = crate::config::read_secret(&config.key_file)?;
    let trusted = config.trusted()?;
    let http = HttpClient::new(config.origin.timeouts());
    let mesh = if config.mesh.listen.is_empty() {
        None
    } else {
        Some(Mesh::start(
            &config.mesh,
            secret,
            trusted.clone(),
            http.clone(),
            shutdown.clone(),
        )?)
    };
    let seed = Arc::new(Seed {
        mesh,
        ..Seed::default()
    });
    let listener = TcpListener::bind(config.metrics_listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "metrics on http://{addr}/metrics");
    if let Some(r) = ready {
        let _ = r.send(addr);
    }
    let peer_id = crate::random_peer_id()?;
    let integrity = IntegrityMode::Sign {
        secret,
        trusted: trusted.clone(),
    };
    let mut tasks = Vec::new();
    if !config.on_demand.origins.is_empty() {
        tasks.push(tokio::spawn(stand_by(
            config.clone(),
            peer_id,
            integrity.clone(),
            http.clone(),
            seed.clone(),
            shutdown.clone(),
        )));
    }
    for stream in &config.streams {
        let stats = Arc::new(PullStats::default());
        seed.pending
            .lock()
            .expect("not poisoned")
            .push((stream.clone(), stats.clone()));
        tasks.push(tokio::spawn(follow_stream(
            config.clone(),
            stream.clone(),
            None,
            peer_id,
            integrity.clone(),
            http.clone(),
            seed.clone(),
            stats,
            shutdown.clone(),
        )));
    }
    serve_metrics(listener, seed.clone(), shutdown.clone()).await;
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// Stands by at every tracker and follows the streams they ask for (within
/// `on_demand.origins` and `on_demand.max_streams`).
async fn stand_by(
    config: Config,
    peer_id: swarmcdn_core::ids::PeerId,
    integrity: IntegrityMode,
    http: HttpClient,
    seed: Arc<Seed>,
    shutdown: CancellationToken,
) {
    let hello = ToTracker::Standby(Standby {
        peer_id,
        ext: config.on_demand.token.clone().map(|token| PeerInfo {
            role: Some(Role::Seed),
            token: Some(token),
            ..PeerInfo::default()
        }),
    })
    .to_json();
    let (events_tx, mut events) = tokio::sync::mpsc::channel::<TrackerEvent>(64);
    // Held until shutdown: dropping them ends the standby connections.
    let mut keep = Vec::new();
    for url in &config.trackers {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        keep.push(tx);
        tokio::spawn(crate::tracker::run(
            vec![url.clone()],
            Some(hello.clone()),
            rx,
            events_tx.clone(),
        ));
    }
    drop(events_tx);
    loop {
        let ev = tokio::select! {
            ev = events.recv() => ev,
            () = shutdown.cancelled() => break,
        };
        let Some(ev) = ev else { break };
        let TrackerEvent::Message(m) = ev else {
            continue;
        };
        let FromTracker::Demand(d) = *m else {
            continue;
        };
        let Some(url) = url::Url::parse(&d.stream).ok().map(String::from) else {
            continue;
        };
        if !config.on_demand.allows(&url) {
            tracing::warn!(stream = %d.stream, "asked to follow a stream outside on_demand.origins: ignored");
            continue;
        }
        let known = seed
            .streams
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|f| f.node.swarm == d.info_hash)
            || seed
                .pending
                .lock()
                .expect("not poisoned")
                .iter()
                .any(|(s, _)| s.url == url);
        if known {
            continue;
        }
        if seed.on_demand.load(Ordering::Relaxed) >= config.on_demand.max() {
            tracing::warn!(stream = %url, "on_demand.max_streams reached: not following");
            continue;
        }
        let slot = OnDemandSlot::take(&seed);
        tracing::info!(stream = %url, swarm = %d.info_hash.to_hex(), "a tracker asked for a seed: following");
        // The standby token admits to every swarm (docs/protocol.md §3.8).
        let stream = StreamConfig {
            url,
            content_id: None,
            token: config.on_demand.token.clone(),
        };
        let stats = Arc::new(PullStats::default());
        seed.pending
            .lock()
            .expect("not poisoned")
            .push((stream.clone(), stats.clone()));
        tokio::spawn(follow_stream(
            config.clone(),
            stream,
            Some((d.info_hash, slot)),
            peer_id,
            integrity.clone(),
            http.clone(),
            seed.clone(),
            stats,
            shutdown.clone(),
        ));
    }
    drop(keep);
}

/// Follows one stream. `on_demand`: the swarm a tracker asked for, and the place it takes: the
/// stream is dropped if it does not make that swarm, a stream that fails to load is given up,
/// and one without neighbours for `on_demand.idle_secs` is let go (the tracker asks again while
/// viewers are there).
#[allow(clippy::too_many_arguments)]
async fn follow_stream(
    config: Config,
    stream: StreamConfig,
    on_demand: Option<(SwarmId, OnDemandSlot)>,
    peer_id: swarmcdn_core::ids::PeerId,
    integrity: IntegrityMode,
    http: HttpClient,
    seed: Arc<Seed>,
    pulls: Arc<PullStats>,
    shutdown: CancellationToken,
) {
    let Ok(url) = url::Url::parse(&stream.url) else {
        return;
    };
    let expected = on_demand.as_ref().map(|(swarm, _)| *swarm);
    // The origin may not be up yet: keep trying (each failure is logged and counted).
    let forget = |seed: &Seed| {
        seed.pending
            .lock()
            .expect("not poisoned")
            .retain(|(s, _)| *s != stream);
    };
    let loaded = loop {
        let attempt = puller::load_stream(&http, &url, stream.content_id.as_deref(), 3, &pulls);
        tokio::select! {
            r = attempt => match r {
                Ok(s) => break s,
                Err(e) if expected.is_some() => {
                    tracing::warn!(stream = %url, error = %e, "cannot load the stream a tracker asked for");
                    forget(&seed);
                    return;
                }
                Err(e) => tracing::error!(stream = %url, error = %e, "cannot load stream; retrying in 10 s"),
            },
            () = shutdown.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(10)) => {}
            () = shutdown.cancelled() => return,
        }
    };
    if let Some(want) = expected
        && want != loaded.swarm
    {
        tracing::warn!(stream = %url, "the stream a tracker asked for does not make its swarm: ignored");
        forget(&seed);
        return;
    }
    let mut nc = NodeConfig::new(peer_id, loaded.swarm, NodeRole::Seed, integrity);
    nc.join_token = stream.token.clone();
    nc.cache_bytes = config.cache.max_bytes;
    nc.max_peers = config.webrtc.max_peers;
    // In the mesh, the mesh is this seed's source; its neighbours are there to be served.
    nc.download_from_peers = seed.mesh.is_none();
    nc.upload = UploadConfig {
        enabled: true,
        slots: config.upload.slots,
        rate: (config.upload.rate_bytes_per_sec > 0).then_some(config.upload.rate_bytes_per_sec),
        ..nc.upload
    };
    let lc = LoopConfig {
        trackers: crate::tracker::ranked(&loaded.swarm, &config.trackers),
        rtc: config.webrtc.rtc(),
        offer_timeout: Duration::from_secs(config.webrtc.offer_timeout_secs),
        mesh: seed.mesh.clone(),
    };
    if let Some(mesh) = &seed.mesh {
        mesh.follow(loaded.swarm, &url).await;
    }
    // This stream's own stop: the seed's shutdown, or letting it go.
    let stop = shutdown.child_token();
    let (node, task) = match driver::spawn(nc, lc, http.clone(), stop.clone()) {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the node");
            return;
        }
    };
    tracing::info!(stream = %url, swarm = %loaded.swarm.to_hex(), renditions = loaded.renditions.len(), "following stream");
    for r in &loaded.renditions {
        tokio::spawn(puller::follow(
            http.clone(),
            r.clone(),
            node.inputs(),
            None,
            pulls.clone(),
            stop.clone(),
        ));
    }
    let idle = Duration::from_secs(config.on_demand.idle_secs);
    let watch = (on_demand.is_some() && !idle.is_zero()).then(|| {
        tokio::spawn(let_go_when_idle(
            node.clone(),
            idle,
            seed.clone(),
            stop.clone(),
        ))
    });
    {
        forget(&seed);
        seed.streams.lock().expect("not poisoned").push(Followed {
            config: stream,
            node,
            pulls,
            renditions: loaded.renditions.len(),
        });
    }
    let _ = task.await;
    // The node said goodbye to its tracker and neighbours: stop everything else of it.
    stop.cancel();
    if let Some(w) = watch {
        let _ = w.await;
    }
    seed.streams
        .lock()
        .expect("not poisoned")
        .retain(|f| f.node.swarm != loaded.swarm);
    if !shutdown.is_cancelled()
        && let Some(mesh) = &seed.mesh
    {
        mesh.unfollow(loaded.swarm).await;
    }
    drop(on_demand);
}

/// Cancels `stop` once the node has had no neighbour for `idle` (checked a few times per
/// `idle`, from the counters the node loop publishes every second).
async fn let_go_when_idle(
    node: NodeHandle,
    idle: Duration,
    seed: Arc<Seed>,
    stop: CancellationToken,
) {
    let tick = (idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
    let mut alone_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            () = stop.cancelled() => return,
        }
        let peers = node.published.stats.lock().expect("not poisoned").peers;
        if peers > 0 {
            alone_since = None;
            continue;
        }
        let since = *alone_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= idle {
            tracing::info!(
                swarm = %node.swarm.to_hex(),
                idle_secs = idle.as_secs(),
                "no neighbour in a stream followed on demand: letting it go"
            );
            seed.released.fetch_add(1, Ordering::Relaxed);
            stop.cancel();
            return;
        }
    }
}

async fn serve_metrics(listener: TcpListener, seed: Arc<Seed>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let seed = seed.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let seed = seed.clone();
                async move { Ok::<_, Infallible>(respond(&seed, req.uri().path())) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
        });
    }
}

fn respond(seed: &Seed, path: &str) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match path {
        "/health" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            prometheus_text(seed),
        ),
        "/stats" => (StatusCode::OK, "application/json", stats_json(seed)),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    };
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

/// The Prometheus text of a seed's counters, one series per stream (label `swarm`).
pub fn prometheus_text(seed: &Seed) -> String {
    let streams = seed.streams.lock().expect("not poisoned").clone();
    let mut out = String::new();
    type Get = fn(&Followed) -> u64;
    let series: [(&str, &str, &str, Get); 11] = [
        (
            "swarmcdn_seed_origin_bytes_total",
            "counter",
            "Segment bytes fetched from the origin.",
            |f| {
                f.node
                    .published
                    .stats
                    .lock()
                    .expect("not poisoned")
                    .http_bytes
            },
        ),
        (
            "swarmcdn_seed_origin_requests_total",
            "counter",
            "Segment requests to the origin.",
            |f| {
                f.node
                    .published
                    .stats
                    .lock()
                    .expect("not poisoned")
                    .http_requests
            },
        ),
        (
            "swarmcdn_seed_playlist_requests_total",
            "counter",
            "Playlist requests to the origin.",
            |f| f.pulls.requests.load(Ordering::Relaxed),
        ),
        (
            "swarmcdn_seed_playlist_errors_total",
            "counter",
            "Playlist loads that failed.",
            |f| f.pulls.errors.load(Ordering::Relaxed),
        ),
        (
            "swarmcdn_seed_served_bytes_total",
            "counter",
            "Segment bytes sent to peers.",
            |f| {
                f.node
                    .published
                    .stats
                    .lock()
                    .expect("not poisoned")
                    .p2p_bytes_up
            },
        ),
        (
            "swarmcdn_seed_peer_bytes_in_total",
            "counter",
            "Verified segment bytes received from peers.",
            |f| {
                f.node
                    .published
                    .stats
                    .lock()
                    .expect("not poisoned")
                    .p2p_bytes_down
            },
        ),
        (
            "swarmcdn_seed_peers",
            "gauge",
            "Connected neighbours.",
            |f| f.node.published.stats.lock().expect("not poisoned").peers as u64,
        ),
        (
            "swarmcdn_seed_integrity_failures_total",
            "counter",
            "Chunks from peers that failed verification.",
            |f| {
                f.node
                    .published
                    .stats
                    .lock()
                    .expect("not poisoned")
                    .integrity_failures
            },
        ),
        (
            "swarmcdn_seed_cache_bytes",
            "gauge",
            "Bytes in the segment cache.",
            |f| {
                f.node
                    .published
                    .stats
                    .lock()
                    .expect("not poisoned")
                    .cache_bytes
            },
        ),
        (
            "swarmcdn_seed_cache_segments",
            "gauge",
            "Segments in the cache.",
            |f| {
                f.node
                    .published
                    .stats
                    .lock()
                    .expect("not poisoned")
                    .cached_segments as u64
            },
        ),
        (
            "swarmcdn_seed_pending_offers",
            "gauge",
            "WebRTC offers waiting for an answer.",
            |f| {
                *f.node
                    .published
                    .pending_offers
                    .lock()
                    .expect("not poisoned") as u64
            },
        ),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for f in &streams {
            let _ = writeln!(
                out,
                "{name}{{swarm=\"{}\"}} {}",
                f.node.swarm.to_hex(),
                get(f)
            );
        }
    }
    if let Some(mesh) = &seed.mesh {
        mesh_metrics(&mut out, mesh);
    }
    let pending = seed.pending.lock().expect("not poisoned").len();
    let _ = writeln!(
        out,
        "# HELP swarmcdn_seed_streams_pending Configured streams whose playlist did not load yet.\n# TYPE swarmcdn_seed_streams_pending gauge\nswarmcdn_seed_streams_pending {pending}"
    );
    let on_demand = seed.on_demand.load(Ordering::Relaxed);
    let released = seed.released.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP swarmcdn_seed_streams_on_demand Streams followed on demand now.\n# TYPE swarmcdn_seed_streams_on_demand gauge\nswarmcdn_seed_streams_on_demand {on_demand}\n\
         # HELP swarmcdn_seed_streams_released_total Streams followed on demand and let go for want of neighbours.\n# TYPE swarmcdn_seed_streams_released_total counter\nswarmcdn_seed_streams_released_total {released}"
    );
    out
}

fn mesh_metrics(out: &mut String, mesh: &Mesh) {
    let st = mesh.stats();
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let series: [(&str, &str, &str, u64); 12] = [
        (
            "swarmcdn_mesh_origin_requests_total",
            "counter",
            "Segment requests this seed made to the origin (as owner, or taking over).",
            get(&st.origin_requests),
        ),
        (
            "swarmcdn_mesh_origin_bytes_total",
            "counter",
            "Segment bytes this seed pulled from the origin.",
            get(&st.origin_bytes),
        ),
        (
            "swarmcdn_mesh_fetched_total",
            "counter",
            "Segments fetched from other seeds.",
            get(&st.fetched),
        ),
        (
            "swarmcdn_mesh_bytes_in_total",
            "counter",
            "Verified segment bytes received from other seeds.",
            get(&st.bytes_in),
        ),
        (
            "swarmcdn_mesh_bytes_out_total",
            "counter",
            "Segment bytes sent to other seeds.",
            get(&st.bytes_out),
        ),
        (
            "swarmcdn_mesh_takeovers_total",
            "counter",
            "Segments pulled from the origin because their owner did not deliver in time.",
            get(&st.takeovers),
        ),
        (
            "swarmcdn_mesh_pulled_through_total",
            "counter",
            "Segments pulled from the origin for another seed before this one listed them.",
            get(&st.pulled_through),
        ),
        (
            "swarmcdn_mesh_ownership_changes_total",
            "counter",
            "Seeds joining or leaving a stream's live set (each moves segment ownership).",
            get(&st.ownership_changes),
        ),
        (
            "swarmcdn_mesh_integrity_failures_total",
            "counter",
            "Responses or announced digests from other seeds that failed verification.",
            get(&st.integrity_failures),
        ),
        (
            "swarmcdn_mesh_members",
            "gauge",
            "Live seeds over all followed streams (this one included, once per stream).",
            mesh.member_count() as u64,
        ),
        (
            "swarmcdn_mesh_connected_peers",
            "gauge",
            "Connected mesh peers.",
            mesh.connected_count() as u64,
        ),
        (
            "swarmcdn_mesh_banned_peers",
            "gauge",
            "Seeds banned for failing verification.",
            mesh.banned_count() as u64,
        ),
    ];
    for (name, kind, help, v) in series {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
}

fn stats_json(seed: &Seed) -> String {
    let streams = seed.streams.lock().expect("not poisoned").clone();
    let list: Vec<serde_json::Value> = streams
        .iter()
        .map(|f| {
            let s = f.node.published.stats.lock().expect("not poisoned").clone();
            serde_json::json!({
                "url": f.config.url,
                "swarm": f.node.swarm.to_hex(),
                "renditions": f.renditions,
                "origin_bytes": s.http_bytes,
                "origin_requests": s.http_requests,
                "served_bytes": s.p2p_bytes_up,
                "peer_bytes_in": s.p2p_bytes_down,
                "uplink_bytes_per_sec": s.uplink_rate,
                "origin_bytes_per_sec": s.origin_rate,
                "origin_ttfb_ms": s.origin_ttfb.as_millis() as u64,
                "upload_slots": s.upload_slots,
                "peers": s.peers,
                "integrity_failures": s.integrity_failures,
                "cache_bytes": s.cache_bytes,
                "cached_segments": s.cached_segments,
                "playlist_requests": f.pulls.requests.load(Ordering::Relaxed),
                "playlist_errors": f.pulls.errors.load(Ordering::Relaxed),
                "last_playlist_error": f.pulls.last_error.lock().expect("not poisoned").clone(),
            })
        })
        .collect();
    let pending: Vec<serde_json::Value> = seed
        .pending
        .lock()
        .expect("not poisoned")
        .iter()
        .map(|(s, p)| {
            serde_json::json!({
                "url": s.url,
                "playlist_errors": p.errors.load(Ordering::Relaxed),
                "last_playlist_error": p.last_error.lock().expect("not poisoned").clone(),
            })
        })
        .collect();
    let mesh = seed.mesh.as_ref().map(Mesh::view);
    serde_json::json!({ "streams": list, "pending": pending, "mesh": mesh }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_a_seed_without_streams_yet() {
        let seed = Seed::default();
        seed.pending.lock().unwrap().push((
            StreamConfig {
                url: "http://o/x.m3u8".into(),
                content_id: None,
                token: None,
            },
            Arc::new(PullStats::default()),
        ));
        let text = prometheus_text(&seed);
        assert!(text.contains("# TYPE swarmcdn_seed_origin_bytes_total counter"));
        assert!(text.contains("swarmcdn_seed_streams_pending 1"));
        let json: serde_json::Value = serde_json::from_str(&stats_json(&seed)).unwrap();
        assert_eq!(json["pending"][0]["url"], "http://o/x.m3u8");
        assert_eq!(respond(&seed, "/nope").status(), StatusCode::NOT_FOUND);
        assert_eq!(respond(&seed, "/health").status(), StatusCode::OK);
    }
}
