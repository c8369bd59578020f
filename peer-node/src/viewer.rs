//! The headless viewer: plays one rendition of a stream in real time with the production
//! scheduler, like hls.js would: it starts at the live edge (three segments back) or at the
//! start of a VOD, loads one segment at a time up to a buffer goal, consumes media at its
//! duration, and counts startup time, stalls and where the bytes came from.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use swarmcdn_core::node::PlayerState;
use swarmcdn_core::wire::SegmentRef;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::driver::NodeHandle;
use crate::hls::MediaPlaylist;
use crate::http::{HttpClient, MAX_PLAYLIST_BYTES};

/// Player settings.
#[derive(Debug, Clone)]
pub struct PlayerConfig {
    /// Segments back from the live edge to start at (hls.js `liveSyncDurationCount`).
    pub live_sync_segments: usize,
    /// Media buffered ahead before the player stops loading (hls.js `maxBufferLength`).
    pub max_buffer: Duration,
    /// Media needed to resume after a stall.
    pub rebuffer: Duration,
    /// How long to play.
    pub duration: Duration,
}

impl Default for PlayerConfig {
    fn default() -> Self {
        Self {
            live_sync_segments: 3,
            max_buffer: Duration::from_secs(30),
            rebuffer: Duration::from_secs(1),
            duration: Duration::from_secs(60),
        }
    }
}

/// One segment as played.
#[derive(Debug, Clone, Serialize)]
pub struct PlayedSegment {
    /// Media sequence number.
    pub sequence: u64,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
    /// Bytes from the origin.
    pub http_bytes: u64,
    /// Bytes from peers (each chunk verified).
    pub p2p_bytes: u64,
}

/// What a viewing session measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ViewReport {
    /// From the start until the first segment was ready, in milliseconds.
    pub startup_ms: Option<u64>,
    /// Times playback stalled after it started.
    pub stalls: u64,
    /// Total time stalled, in milliseconds.
    pub stall_ms: u64,
    /// Media played, in milliseconds.
    pub played_ms: u64,
    /// Segments skipped because they left the live window before they could be loaded.
    pub skipped_segments: u64,
    /// Segment requests that failed (and were retried).
    pub failed_requests: u64,
    /// Segment bytes from the origin.
    pub http_bytes: u64,
    /// Segment bytes from peers.
    pub p2p_bytes: u64,
    /// Initialization segment bytes (always from the origin).
    pub init_bytes: u64,
    /// Bytes this viewer uploaded to peers.
    pub uploaded_bytes: u64,
    /// Chunks from peers that failed verification.
    pub integrity_failures: u64,
    /// The segments delivered to the player, in order.
    pub segments: Vec<PlayedSegment>,
}

impl ViewReport {
    /// The share of segment bytes that came from peers.
    pub fn p2p_share(&self) -> f64 {
        let total = self.http_bytes + self.p2p_bytes;
        if total == 0 {
            0.0
        } else {
            self.p2p_bytes as f64 / total as f64
        }
    }
}

/// A segment load under way: its sequence number and the delivery.
type Loading = std::pin::Pin<Box<dyn Future<Output = (u64, crate::driver::Delivery)> + Send>>;

enum Play {
    Starting,
    Playing,
    Stalled { since: Instant },
}

/// Plays until `config.duration` has passed (or `shutdown`) and reports.
pub async fn play(
    node: NodeHandle,
    http: HttpClient,
    mut playlist: watch::Receiver<Option<MediaPlaylist>>,
    config: PlayerConfig,
    shutdown: CancellationToken,
) -> ViewReport {
    let started = Instant::now();
    let end = started + config.duration;
    let mut report = ViewReport::default();
    // Wait for the first playlist.
    let first = tokio::select! {
        r = playlist.wait_for(|p| p.as_ref().is_some_and(|p| !p.segments.is_empty())) => match r {
            Ok(p) => p.clone().expect("checked"),
            Err(_) => return report,
        },
        () = tokio::time::sleep_until(end) => return report,
        () = shutdown.cancelled() => return report,
    };
    let rendition = first.rendition;
    let mut next = if first.live {
        let n = first.segments.len();
        first.segments[n.saturating_sub(config.live_sync_segments.max(1))].sequence
    } else {
        first.segments[0].sequence
    };
    let mut init_loaded: Option<url::Url> = None;

    // Media ready ahead of the playhead: (sequence, duration left).
    let mut buffer: VecDeque<(u64, Duration)> = VecDeque::new();
    let mut state = Play::Starting;
    let mut last_tick = Instant::now();
    let mut loading: Option<Loading> = None;
    let mut retry_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut ended = false;

    loop {
        // Advance the playhead.
        let now = Instant::now();
        let elapsed = now - last_tick;
        last_tick = now;
        if matches!(state, Play::Playing) {
            let mut left = elapsed;
            while left > Duration::ZERO {
                let Some(front) = buffer.front_mut() else {
                    break;
                };
                let step = left.min(front.1);
                front.1 -= step;
                left -= step;
                report.played_ms += u64::try_from(step.as_millis()).unwrap_or(0);
                if front.1.is_zero() {
                    buffer.pop_front();
                }
            }
            if buffer.is_empty() && !ended {
                report.stalls += 1;
                state = Play::Stalled { since: now };
                tracing::info!(next, "stalled");
            }
        }
        let buffered: Duration = buffer.iter().map(|b| b.1).sum();
        if let Play::Stalled { since } = state
            && (buffered >= config.rebuffer || (ended && !buffer.is_empty()))
        {
            report.stall_ms += u64::try_from((now - since).as_millis()).unwrap_or(0);
            state = Play::Playing;
        }
        if now >= end || shutdown.is_cancelled() || (ended && buffer.is_empty()) {
            if let Play::Stalled { since } = state {
                report.stall_ms += u64::try_from((now - since).as_millis()).unwrap_or(0);
            }
            break;
        }
        let current = playlist.borrow().clone().unwrap_or_else(|| first.clone());
        // Tell the node where the playhead is.
        let playhead = buffer.front().map_or(next, |b| b.0);
        node.player(PlayerState {
            rendition,
            playhead,
            buffer_ahead: buffered,
        })
        .await;
        // Load the next segment when there is room.
        if loading.is_none() && buffered < config.max_buffer && retry_at.is_none_or(|t| now >= t) {
            let oldest = current.segments.first().map(|s| s.sequence);
            if let Some(o) = oldest
                && next < o
            {
                report.skipped_segments += o - next;
                next = o;
            }
            if let Some(s) = current.segments.iter().find(|s| s.sequence == next) {
                if let Some(init) = &s.init
                    && init_loaded.as_ref() != Some(&init.url)
                {
                    match http.get_bytes(&init.url, MAX_PLAYLIST_BYTES).await {
                        Ok(b) => {
                            report.init_bytes += b.len() as u64;
                            init_loaded = Some(init.url.clone());
                        }
                        Err(e) => tracing::warn!(error = %e, "init segment load failed"),
                    }
                }
                let seg = SegmentRef {
                    rendition,
                    sequence: next,
                };
                let n = node.clone();
                let seq = next;
                loading = Some(Box::pin(async move { (seq, n.request(seg).await) }));
            } else if !current.live && current.segments.last().is_none_or(|l| next > l.sequence) {
                ended = true;
            }
        }
        tokio::select! {
            r = async { loading.as_mut().expect("guarded").await }, if loading.is_some() => {
                loading = None;
                let (seq, delivery) = r;
                match delivery {
                    Ok((data, sources)) => {
                        let duration = current
                            .segments
                            .iter()
                            .find(|s| s.sequence == seq)
                            .map_or(current.target_duration, |s| s.duration);
                        report.http_bytes += sources.http;
                        report.p2p_bytes += sources.p2p;
                        report.segments.push(PlayedSegment {
                            sequence: seq,
                            sha256: hex::encode(Sha256::digest(&data)),
                            http_bytes: sources.http,
                            p2p_bytes: sources.p2p,
                        });
                        buffer.push_back((seq, duration));
                        next = seq + 1;
                        retry_at = None;
                        if matches!(state, Play::Starting) {
                            report.startup_ms =
                                Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(0));
                            state = Play::Playing;
                            last_tick = Instant::now();
                        }
                    }
                    Err(e) => {
                        report.failed_requests += 1;
                        tracing::warn!(sequence = seq, error = %e, "segment failed; retrying");
                        retry_at = Some(Instant::now() + Duration::from_millis(500));
                    }
                }
            }
            _ = tick.tick() => {}
            () = shutdown.cancelled() => {}
        }
    }
    if let Some(s) = node.stats().await {
        report.uploaded_bytes = s.p2p_bytes_up;
        report.integrity_failures = s.integrity_failures;
    }
    report
}
