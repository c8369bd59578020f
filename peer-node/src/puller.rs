//! The playlist puller: loads a stream's master playlist, then follows media playlists (live:
//! reloaded every half target duration; VOD: loaded once) and hands each to the node loop.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::driver::Input;
use crate::hls::{self, MediaPlaylist, Rendition, Stream};
use crate::http::{HttpClient, MAX_PLAYLIST_BYTES};

/// Counters of playlist loading.
#[derive(Debug, Default)]
pub struct PullStats {
    /// Playlist requests made.
    pub requests: AtomicU64,
    /// Of those, failed (network, status, or a playlist that does not parse).
    pub errors: AtomicU64,
    /// The last error, for `/stats` and logs.
    pub last_error: Mutex<Option<String>>,
}

impl PullStats {
    fn failed(&self, e: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().expect("not poisoned") = Some(e.to_string());
    }
}

/// Loads and parses the stream's playlist, retrying `attempts` times with backoff.
pub async fn load_stream(
    http: &HttpClient,
    url: &Url,
    content_id: Option<&str>,
    attempts: u32,
    stats: &PullStats,
) -> anyhow::Result<Stream> {
    let mut backoff = Duration::from_millis(500);
    let mut last = String::new();
    for attempt in 0..attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(8));
        }
        stats.requests.fetch_add(1, Ordering::Relaxed);
        match http.get_bytes(url, MAX_PLAYLIST_BYTES).await {
            Ok(text) => match hls::parse_stream(url, &text, content_id) {
                Ok(s) => return Ok(s),
                // A playlist that does not parse will not parse on retry either.
                Err(e) => {
                    stats.failed(&e.to_string());
                    anyhow::bail!("{e}");
                }
            },
            Err(e) => {
                last = format!("cannot load {url}: {e}");
                tracing::warn!("{last}");
                stats.failed(&last);
            }
        }
    }
    anyhow::bail!("{last}")
}

/// Loads one media playlist, retrying network failures `attempts` times with backoff; a
/// playlist that does not parse is an error at once.
pub async fn load_media(
    http: &HttpClient,
    rendition: &Rendition,
    attempts: u32,
    stats: &PullStats,
) -> anyhow::Result<MediaPlaylist> {
    let url = &rendition.playlist_url;
    let mut backoff = Duration::from_millis(500);
    let mut last = String::new();
    for attempt in 0..attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(8));
        }
        stats.requests.fetch_add(1, Ordering::Relaxed);
        match http.get_bytes(url, MAX_PLAYLIST_BYTES).await {
            Ok(text) => {
                return hls::parse_media(url, &text, rendition.id).map_err(|e| {
                    stats.failed(&e.to_string());
                    anyhow::anyhow!("{e}")
                });
            }
            Err(e) => {
                last = format!("cannot load {url}: {e}");
                tracing::warn!("{last}");
                stats.failed(&last);
            }
        }
    }
    anyhow::bail!("{last}")
}

/// Follows one rendition's media playlist until `shutdown` (or, for VOD, until loaded):
/// each load goes to the node loop and to `latest`.
pub async fn follow(
    http: HttpClient,
    rendition: Rendition,
    inputs: mpsc::Sender<Input>,
    latest: Option<watch::Sender<Option<MediaPlaylist>>>,
    stats: std::sync::Arc<PullStats>,
    shutdown: CancellationToken,
) {
    let url = rendition.playlist_url.clone();
    let mut backoff = Duration::from_millis(500);
    loop {
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let loaded = match http.get_bytes(&url, MAX_PLAYLIST_BYTES).await {
            Ok(text) => hls::parse_media(&url, &text, rendition.id).map_err(|e| e.to_string()),
            Err(e) => Err(format!("cannot load {url}: {e}")),
        };
        let wait = match loaded {
            Ok(p) => {
                backoff = Duration::from_millis(500);
                let live = p.live;
                let every = (p.target_duration / 2).max(Duration::from_millis(250));
                if let Some(l) = &latest {
                    let _ = l.send(Some(p.clone()));
                }
                if inputs.send(Input::Playlist(p)).await.is_err() {
                    return;
                }
                if !live {
                    return;
                }
                every
            }
            Err(e) => {
                tracing::warn!(rendition = %url, error = %e, "playlist load failed; retrying");
                stats.failed(&e);
                let w = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(8));
                w
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
