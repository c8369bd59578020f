//! The test and demo origin: an HLS server over the sample media.
//!
//! - VOD: `/vod/master.m3u8`, `/vod/<rendition>/index.m3u8`, `/vod/<rendition>/init.mp4`,
//!   `/vod/<rendition>/seg-<n>.m4s`.
//! - Live: `/live/master.m3u8`, `/live/<rendition>/index.m3u8` (a sliding window that advances
//!   in real time and loops the clip forever, with `EXT-X-DISCONTINUITY` at each loop and
//!   ever-increasing media sequence numbers), `/live/<rendition>/init.mp4`,
//!   `/live/<rendition>/seg-<msn>.m4s`.
//! - `/stats` (JSON request and byte counters), `/health`, and static files from an optional
//!   folder for every other path.
//!
//! Segments last `segment_duration` seconds: that many one-second fragments of the sample
//! media, concatenated. Byte ranges (`Range: bytes=…`), `HEAD` and CORS (with preflight) are
//! supported on every path.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Live segments older than this many segments behind the live edge are gone (404).
const LIVE_RETENTION: u64 = 120;

/// Configuration of the origin.
#[derive(Debug, Clone)]
pub struct OriginConfig {
    /// The folder with `master.m3u8` and one folder per rendition.
    pub media_dir: PathBuf,
    /// Seconds per served segment; must divide the clip's fragment count. Default 2.
    pub segment_duration: u32,
    /// Segments in the live playlist. Default 6.
    pub window: usize,
    /// Media time the live clock starts at, in seconds (to start just before a loop, say).
    pub live_start_offset: f64,
    /// A folder served for every path that is not HLS or an endpoint.
    pub static_dir: Option<PathBuf>,
    /// Segment bodies are sent at this rate (8 KiB pieces, evenly spaced, the first at
    /// once), as from a distant or loaded origin. Default none: as fast as the socket takes.
    pub pace_bytes_per_sec: Option<u64>,
}

impl Default for OriginConfig {
    fn default() -> Self {
        Self {
            media_dir: default_media_dir(),
            segment_duration: 2,
            window: 6,
            live_start_offset: 0.0,
            static_dir: None,
            pace_bytes_per_sec: None,
        }
    }
}

/// The sample media committed in the repository.
pub fn default_media_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("media")
}

/// The live clock: real time from a start instant, or set by hand (tests).
#[derive(Debug, Clone)]
pub enum LiveClock {
    /// Seconds since this instant.
    Real(tokio::time::Instant),
    /// Microseconds, set with [`LiveClock::set`].
    Manual(Arc<AtomicU64>),
}

impl LiveClock {
    /// A manual clock at zero.
    pub fn manual() -> Self {
        Self::Manual(Arc::new(AtomicU64::new(0)))
    }

    /// Sets a manual clock (no effect on a real one).
    pub fn set(&self, elapsed: Duration) {
        if let Self::Manual(m) = self {
            m.store(elapsed.as_micros() as u64, Ordering::Relaxed);
        }
    }

    fn elapsed(&self) -> Duration {
        match self {
            Self::Real(start) => start.elapsed(),
            Self::Manual(m) => Duration::from_micros(m.load(Ordering::Relaxed)),
        }
    }
}

#[derive(Debug)]
struct Rendition {
    name: String,
    /// The `EXT-X-STREAM-INF` attributes, as in the source master playlist.
    attributes: String,
    init: Bytes,
    /// Served segments of one loop of the clip (fragments concatenated).
    segments: Vec<Bytes>,
}

/// Request and byte counters.
#[derive(Debug, Default)]
pub struct OriginStats {
    requests: AtomicU64,
    bytes: AtomicU64,
    playlist_requests: AtomicU64,
    init_requests: AtomicU64,
    segment_requests: AtomicU64,
    segment_bytes: AtomicU64,
    /// Per segment path (`live/360p/seg-12.m4s`): requests and body bytes.
    per_segment: Mutex<BTreeMap<String, (u64, u64)>>,
}

/// A snapshot of [`OriginStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    /// Requests answered (all paths).
    pub requests: u64,
    /// Body bytes sent (all paths).
    pub bytes: u64,
    /// Playlist requests.
    pub playlist_requests: u64,
    /// Init segment requests.
    pub init_requests: u64,
    /// Media segment requests.
    pub segment_requests: u64,
    /// Media segment body bytes sent.
    pub segment_bytes: u64,
    /// Per media segment path: `[requests, bytes]`.
    pub segments: BTreeMap<String, (u64, u64)>,
}

impl OriginStats {
    /// A snapshot of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            playlist_requests: self.playlist_requests.load(Ordering::Relaxed),
            init_requests: self.init_requests.load(Ordering::Relaxed),
            segment_requests: self.segment_requests.load(Ordering::Relaxed),
            segment_bytes: self.segment_bytes.load(Ordering::Relaxed),
            segments: self.per_segment.lock().expect("not poisoned").clone(),
        }
    }
}

/// The origin: media loaded in memory, a live clock and counters.
#[derive(Debug)]
pub struct Origin {
    config: OriginConfig,
    renditions: Vec<Rendition>,
    /// One-second fragments per loop of the clip.
    fragments: usize,
    fragment_duration: f64,
    clock: LiveClock,
    stats: Arc<OriginStats>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Playlist,
    Init,
    Segment,
    Other,
}

impl Origin {
    /// Loads the media. Errors say what is missing or malformed.
    pub fn new(config: OriginConfig, clock: LiveClock) -> anyhow::Result<Self> {
        ensure!(
            config.segment_duration > 0,
            "segment duration must be at least 1 s"
        );
        ensure!(
            config.window > 0,
            "the live window must hold at least one segment"
        );
        let dir = &config.media_dir;
        let master_path = dir.join("master.m3u8");
        let text = std::fs::read(&master_path)
            .with_context(|| format!("reading {}", master_path.display()))?;
        let master = m3u8_rs::parse_master_playlist_res(&text).map_err(|e| {
            anyhow::anyhow!("{}: not a master playlist: {e:?}", master_path.display())
        })?;
        let source = String::from_utf8_lossy(&text);
        let mut renditions = Vec::new();
        let mut fragments = None;
        let mut fragment_duration = 1.0;
        for v in master.variants.iter().filter(|v| !v.is_i_frame) {
            let (name, index) = v.uri.split_once('/').with_context(|| {
                format!("variant URI {:?} is not <rendition>/index.m3u8", v.uri)
            })?;
            ensure!(is_safe_name(name), "bad rendition folder name {name:?}");
            let attributes = stream_inf_for(&source, &v.uri)
                .with_context(|| format!("no EXT-X-STREAM-INF line for {}", v.uri))?;
            let media_path = dir.join(name).join(index);
            let text = std::fs::read(&media_path)
                .with_context(|| format!("reading {}", media_path.display()))?;
            let media = m3u8_rs::parse_media_playlist_res(&text).map_err(|e| {
                anyhow::anyhow!("{}: not a media playlist: {e:?}", media_path.display())
            })?;
            let map = media
                .segments
                .first()
                .and_then(|s| s.map.as_ref())
                .with_context(|| format!("{}: no EXT-X-MAP init segment", media_path.display()))?;
            let init = read(&dir.join(name).join(&map.uri))?;
            let mut frags = Vec::new();
            for s in &media.segments {
                ensure!(
                    (f64::from(s.duration) - f64::from(media.segments[0].duration)).abs() < 0.01,
                    "{}: fragments must all last the same",
                    media_path.display()
                );
                frags.push(read(&dir.join(name).join(&s.uri))?);
            }
            ensure!(!frags.is_empty(), "{}: no segments", media_path.display());
            match fragments {
                None => fragments = Some(frags.len()),
                Some(n) => ensure!(
                    n == frags.len(),
                    "renditions have different fragment counts ({n} and {})",
                    frags.len()
                ),
            }
            fragment_duration = f64::from(media.segments[0].duration);
            let k = config.segment_duration as usize;
            ensure!(
                frags.len() % k == 0,
                "a segment duration of {k} s does not divide the clip's {} fragments",
                frags.len()
            );
            let segments = frags
                .chunks(k)
                .map(|c| {
                    let mut b = Vec::with_capacity(c.iter().map(Bytes::len).sum());
                    for f in c {
                        b.extend_from_slice(f);
                    }
                    Bytes::from(b)
                })
                .collect();
            renditions.push(Rendition {
                name: name.to_owned(),
                attributes,
                init,
                segments,
            });
        }
        ensure!(
            !renditions.is_empty(),
            "{}: no variants",
            master_path.display()
        );
        ensure!(
            (fragment_duration - 1.0).abs() < 0.01,
            "fragments must last 1 s (found {fragment_duration})"
        );
        Ok(Self {
            fragments: fragments.expect("at least one rendition"),
            fragment_duration,
            renditions,
            config,
            clock,
            stats: Arc::new(OriginStats::default()),
        })
    }

    /// The counters.
    pub fn stats(&self) -> Arc<OriginStats> {
        self.stats.clone()
    }

    /// Names of the renditions.
    pub fn rendition_names(&self) -> Vec<String> {
        self.renditions.iter().map(|r| r.name.clone()).collect()
    }

    /// Served segments per loop of the clip.
    pub fn segments_per_loop(&self) -> u64 {
        (self.fragments / self.config.segment_duration as usize) as u64
    }

    fn segment_seconds(&self) -> f64 {
        f64::from(self.config.segment_duration) * self.fragment_duration
    }

    /// The newest published live media sequence number (`None` before the first segment is
    /// complete).
    pub fn live_edge(&self) -> Option<u64> {
        let media_time = self.clock.elapsed().as_secs_f64() + self.config.live_start_offset;
        let complete = (media_time / self.segment_seconds()).floor() as u64;
        complete.checked_sub(1)
    }

    /// The bytes of segment `n` of a rendition (live `n` is any media sequence number).
    pub fn segment_bytes(&self, rendition: &str, n: u64) -> Option<Bytes> {
        let r = self.renditions.iter().find(|r| r.name == rendition)?;
        Some(r.segments[(n % self.segments_per_loop()) as usize].clone())
    }

    fn master(&self) -> String {
        let mut s = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
        for r in &self.renditions {
            s.push_str(&format!(
                "#EXT-X-STREAM-INF:{}\n{}/index.m3u8\n",
                r.attributes, r.name
            ));
        }
        s
    }

    fn vod_playlist(&self) -> String {
        let d = self.segment_seconds();
        let mut s = format!(
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init.mp4\"\n",
            d.ceil() as u64
        );
        for n in 0..self.segments_per_loop() {
            s.push_str(&format!("#EXTINF:{d:.3},\nseg-{n}.m4s\n"));
        }
        s.push_str("#EXT-X-ENDLIST\n");
        s
    }

    /// The live media playlist now, or `None` before the first segment is published.
    pub fn live_playlist(&self) -> Option<String> {
        let edge = self.live_edge()?;
        let first = edge.saturating_sub(self.config.window as u64 - 1);
        let per_loop = self.segments_per_loop();
        let d = self.segment_seconds();
        let mut s = format!(
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{first}\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:{}\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init.mp4\"\n",
            d.ceil() as u64,
            first / per_loop
        );
        for n in first..=edge {
            if n != first && n % per_loop == 0 {
                s.push_str("#EXT-X-DISCONTINUITY\n");
            }
            s.push_str(&format!("#EXTINF:{d:.3},\nseg-{n}.m4s\n"));
        }
        Some(s)
    }

    fn route(&self, path: &str) -> Result<(Bytes, &'static str, Kind), StatusCode> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let playlist = "application/vnd.apple.mpegurl";
        match parts.as_slice() {
            ["vod" | "live", "master.m3u8"] => Ok((self.master().into(), playlist, Kind::Playlist)),
            [mode @ ("vod" | "live"), rendition, file] => {
                let r = self
                    .renditions
                    .iter()
                    .find(|r| r.name == *rendition)
                    .ok_or(StatusCode::NOT_FOUND)?;
                let live = *mode == "live";
                match *file {
                    "index.m3u8" if live => self
                        .live_playlist()
                        .map(|p| (p.into(), playlist, Kind::Playlist))
                        .ok_or(StatusCode::NOT_FOUND),
                    "index.m3u8" => Ok((self.vod_playlist().into(), playlist, Kind::Playlist)),
                    "init.mp4" => Ok((r.init.clone(), "video/mp4", Kind::Init)),
                    f => {
                        let n: u64 = f
                            .strip_prefix("seg-")
                            .and_then(|f| f.strip_suffix(".m4s"))
                            .and_then(|n| n.parse().ok())
                            .ok_or(StatusCode::NOT_FOUND)?;
                        if live {
                            let edge = self.live_edge().ok_or(StatusCode::NOT_FOUND)?;
                            if n > edge || n + LIVE_RETENTION < edge {
                                return Err(StatusCode::NOT_FOUND);
                            }
                        } else if n >= self.segments_per_loop() {
                            return Err(StatusCode::NOT_FOUND);
                        }
                        let body = r.segments[(n % self.segments_per_loop()) as usize].clone();
                        Ok((body, "video/mp4", Kind::Segment))
                    }
                }
            }
            _ => Err(StatusCode::NOT_FOUND),
        }
    }

    fn count(&self, path: &str, kind: Kind, body_bytes: u64) {
        let s = &self.stats;
        s.requests.fetch_add(1, Ordering::Relaxed);
        s.bytes.fetch_add(body_bytes, Ordering::Relaxed);
        match kind {
            Kind::Playlist => {
                s.playlist_requests.fetch_add(1, Ordering::Relaxed);
            }
            Kind::Init => {
                s.init_requests.fetch_add(1, Ordering::Relaxed);
            }
            Kind::Segment => {
                s.segment_requests.fetch_add(1, Ordering::Relaxed);
                s.segment_bytes.fetch_add(body_bytes, Ordering::Relaxed);
                let mut per = s.per_segment.lock().expect("not poisoned");
                let e = per
                    .entry(path.trim_start_matches('/').to_owned())
                    .or_default();
                e.0 += 1;
                e.1 += body_bytes;
            }
            Kind::Other => {}
        }
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<BoxBody<Bytes, Infallible>> {
        let (parts, _body) = req.into_parts();
        self.respond(&parts.method, parts.uri.path(), &parts.headers)
            .await
    }

    async fn respond(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Response<BoxBody<Bytes, Infallible>> {
        if method == Method::OPTIONS {
            let mut resp = Response::new(empty());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            cors(resp.headers_mut());
            return resp;
        }
        if method != Method::GET && method != Method::HEAD {
            return status(StatusCode::METHOD_NOT_ALLOWED);
        }
        let (body, content_type, kind) = match path {
            "/health" => (Bytes::from_static(b"ok\n"), "text/plain", Kind::Other),
            "/stats" => (
                Bytes::from(
                    serde_json::to_vec(&self.stats.snapshot()).expect("plain data serializes"),
                ),
                "application/json",
                Kind::Other,
            ),
            p if p.starts_with("/vod/") || p.starts_with("/live/") => match self.route(p) {
                Ok(found) => found,
                Err(code) => {
                    self.count(p, Kind::Other, 0);
                    return status(code);
                }
            },
            p => match self.static_file(p).await {
                Some(found) => found,
                None => return status(StatusCode::NOT_FOUND),
            },
        };
        let total = body.len() as u64;
        let range = match headers.get(header::RANGE).map(parse_range) {
            None => None,
            Some(Ok(r)) => match r.resolve(total) {
                Some(r) => Some(r),
                None => {
                    let mut resp = status(StatusCode::RANGE_NOT_SATISFIABLE);
                    resp.headers_mut().insert(
                        header::CONTENT_RANGE,
                        HeaderValue::from_str(&format!("bytes */{total}")).expect("ascii header"),
                    );
                    return resp;
                }
            },
            // A malformed Range header is ignored, as RFC 9110 allows.
            Some(Err(())) => None,
        };
        let (code, slice) = match range {
            Some((start, end)) => (
                StatusCode::PARTIAL_CONTENT,
                body.slice(start as usize..end as usize),
            ),
            None => (StatusCode::OK, body),
        };
        let sent = if method == Method::HEAD {
            0
        } else {
            slice.len() as u64
        };
        self.count(path, kind, sent);
        let mut resp = Response::new(match self.config.pace_bytes_per_sec {
            _ if method == Method::HEAD => empty(),
            Some(rate) if kind == Kind::Segment => paced(slice.clone(), rate),
            _ => Full::new(slice.clone()).boxed(),
        });
        *resp.status_mut() = code;
        let h = resp.headers_mut();
        cors(h);
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        h.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(slice.len() as u64),
        );
        if let Some((start, end)) = range {
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {start}-{}/{total}", end - 1))
                    .expect("ascii header"),
            );
        }
        let cache = match kind {
            Kind::Playlist if path.starts_with("/live/") => "no-cache",
            Kind::Playlist | Kind::Init | Kind::Segment => "public, max-age=3600",
            Kind::Other => "no-store",
        };
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        resp
    }

    async fn static_file(&self, path: &str) -> Option<(Bytes, &'static str, Kind)> {
        let root = self.config.static_dir.as_ref()?;
        let rel = path.trim_start_matches('/');
        let rel = if rel.is_empty() { "index.html" } else { rel };
        let rel = Path::new(rel);
        // No `..`, no absolute paths, no prefixes: the file must be inside the root.
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return None;
        }
        let full = root.join(rel);
        let data = tokio::fs::read(&full).await.ok()?;
        let ct = match full.extension().and_then(|e| e.to_str()) {
            Some("html") => "text/html; charset=utf-8",
            Some("js" | "mjs") => "text/javascript",
            Some("css") => "text/css",
            Some("json" | "map") => "application/json",
            Some("wasm") => "application/wasm",
            Some("svg") => "image/svg+xml",
            Some("png") => "image/png",
            _ => "application/octet-stream",
        };
        Some((Bytes::from(data), ct, Kind::Other))
    }
}

fn read(path: &Path) -> anyhow::Result<Bytes> {
    std::fs::read(path)
        .map(Bytes::from)
        .with_context(|| format!("reading {}", path.display()))
}

fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The attribute list of the `EXT-X-STREAM-INF` line just before `uri` in a master playlist.
fn stream_inf_for(master: &str, uri: &str) -> Option<String> {
    let lines: Vec<&str> = master.lines().map(str::trim).collect();
    let i = lines.iter().position(|l| *l == uri)?;
    lines[..i]
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("#EXT-X-STREAM-INF:"))
        .map(str::to_owned)
}

fn cors(h: &mut HeaderMap) {
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Range"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Length, Content-Range, Accept-Ranges"),
    );
}

/// `body` in 8 KiB pieces at `bytes_per_sec`.
fn paced(body: Bytes, bytes_per_sec: u64) -> BoxBody<Bytes, Infallible> {
    const PIECE: usize = 8 * 1024;
    let interval = Duration::from_secs_f64(PIECE as f64 / bytes_per_sec.max(1) as f64);
    let pieces = futures_util::stream::unfold((body, true), move |(rest, first)| async move {
        if rest.is_empty() {
            return None;
        }
        if !first {
            tokio::time::sleep(interval).await;
        }
        let n = rest.len().min(PIECE);
        let piece = Ok(hyper::body::Frame::data(rest.slice(..n)));
        Some((piece, (rest.slice(n..), false)))
    });
    http_body_util::StreamBody::new(pieces).boxed()
}

fn empty() -> BoxBody<Bytes, Infallible> {
    Full::new(Bytes::new()).boxed()
}

fn status(code: StatusCode) -> Response<BoxBody<Bytes, Infallible>> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = code;
    cors(resp.headers_mut());
    resp
}

/// A byte range request, before it meets the body's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeSpec {
    /// `bytes=a-b` or `bytes=a-`.
    From { start: u64, end: Option<u64> },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl RangeSpec {
    /// The half-open range within a body of `total` bytes, or `None` if unsatisfiable.
    fn resolve(self, total: u64) -> Option<(u64, u64)> {
        match self {
            Self::From { start, end } => {
                if start >= total {
                    return None;
                }
                let end = end.map_or(total, |e| (e + 1).min(total));
                (end > start).then_some((start, end))
            }
            Self::Suffix(n) => {
                if n == 0 || total == 0 {
                    return None;
                }
                Some((total.saturating_sub(n), total))
            }
        }
    }
}

/// Parses a single-range `Range` header (multiple ranges are treated as malformed and ignored).
fn parse_range(v: &HeaderValue) -> Result<RangeSpec, ()> {
    let s = v.to_str().map_err(|_| ())?.trim();
    let spec = s.strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Err(());
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        return b.parse().map(RangeSpec::Suffix).map_err(|_| ());
    }
    let start = a.parse().map_err(|_| ())?;
    let end = if b.is_empty() {
        None
    } else {
        let e: u64 = b.parse().map_err(|_| ())?;
        if e < start {
            return Err(());
        }
        Some(e)
    };
    Ok(RangeSpec::From { start, end })
}

/// Serves the origin on `listener` until `shutdown` is cancelled; open connections are then
/// closed gracefully.
pub async fn serve(
    origin: Arc<Origin>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tasks = TaskTracker::new();
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let origin = origin.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let service = service_fn(move |req| {
                let origin = origin.clone();
                async move { Ok::<_, Infallible>(origin.handle(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
        });
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// Binds `addr`, loads the media and serves until `shutdown`; returns the bound address through
/// `bound` as soon as it is known.
pub async fn run(
    config: OriginConfig,
    addr: SocketAddr,
    shutdown: CancellationToken,
    bound: tokio::sync::oneshot::Sender<(SocketAddr, Arc<OriginStats>)>,
) -> anyhow::Result<()> {
    let origin = Arc::new(Origin::new(
        config,
        LiveClock::Real(tokio::time::Instant::now()),
    )?);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    if bound.send((local, origin.stats())).is_err() {
        bail!("the caller stopped waiting for the origin");
    }
    serve(origin, listener, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let p = |s: &str| parse_range(&HeaderValue::from_str(s).unwrap());
        assert_eq!(p("bytes=0-99").unwrap().resolve(1000), Some((0, 100)));
        assert_eq!(p("bytes=900-").unwrap().resolve(1000), Some((900, 1000)));
        assert_eq!(
            p("bytes=900-5000").unwrap().resolve(1000),
            Some((900, 1000))
        );
        assert_eq!(p("bytes=-100").unwrap().resolve(1000), Some((900, 1000)));
        assert_eq!(p("bytes=-5000").unwrap().resolve(1000), Some((0, 1000)));
        assert_eq!(p("bytes=1000-").unwrap().resolve(1000), None);
        assert_eq!(p("bytes=-0").unwrap().resolve(1000), None);
        assert!(p("bytes=5-2").is_err());
        assert!(p("bytes=0-1,5-6").is_err());
        assert!(p("items=0-1").is_err());
        assert!(p("bytes=x-1").is_err());
    }

    #[test]
    fn stream_inf_lookup() {
        let m = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=2\nb/index.m3u8\n";
        assert_eq!(stream_inf_for(m, "b/index.m3u8").unwrap(), "BANDWIDTH=2");
        assert_eq!(stream_inf_for(m, "a/index.m3u8").unwrap(), "BANDWIDTH=1");
        assert!(stream_inf_for(m, "c/index.m3u8").is_none());
    }
}
