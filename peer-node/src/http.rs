//! The origin HTTP client: playlists (whole, size-capped) and segments (streamed, ranged),
//! with connect, first-byte and idle timeouts, over HTTP/1.1 or HTTPS (rustls with the
//! system's root certificates).

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use swarmcdn_core::node::FetchError;
use url::Url;

/// Timeouts of origin requests.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Until the response head arrives (connect included).
    pub first_byte: Duration,
    /// Between two pieces of the body.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            first_byte: Duration::from_secs(10),
            idle: Duration::from_secs(10),
        }
    }
}

/// The largest playlist accepted.
pub const MAX_PLAYLIST_BYTES: usize = 4 << 20;

/// A shared HTTP/1.1 client with connection pooling.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    timeouts: Timeouts,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

/// A response whose body is being read.
pub struct Body {
    body: hyper::body::Incoming,
    idle: Duration,
    /// The status.
    pub status: u16,
    /// Where the body starts in the resource (from `Content-Range`, else 0).
    pub start: u64,
    /// The resource's full size, if the response said.
    pub total: Option<u64>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("status", &self.status)
            .field("start", &self.start)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl Body {
    /// The next piece of the body; `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, FetchError> {
        loop {
            let frame = tokio::time::timeout(self.idle, self.body.frame())
                .await
                .map_err(|_| FetchError::Network("body stalled".into()))?;
            match frame {
                None => return Ok(None),
                Some(Err(e)) => return Err(FetchError::Network(e.to_string())),
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data()
                        && !data.is_empty()
                    {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

impl HttpClient {
    /// A client with these timeouts.
    pub fn new(timeouts: Timeouts) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeouts.first_byte));
        http.set_nodelay(true);
        http.enforce_http(false);
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let tls = match builder.with_provider_and_native_roots(provider.clone()) {
            Ok(b) => b,
            Err(e) => {
                // HTTPS origins then fail with a certificate error; plain HTTP still works.
                tracing::warn!(error = %e, "no system root certificates: HTTPS origins cannot be verified");
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default protocol versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let connector = tls.https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(16)
            .build(connector);
        Self { client, timeouts }
    }

    /// Starts a GET of `url` (the bytes `range` of it, end exclusive) and returns once the
    /// head arrived with 200 or 206.
    pub async fn get(&self, url: &Url, range: Option<Range<u64>>) -> Result<Body, FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::BadResponse(format!(
                "unsupported scheme {} (http or https)",
                url.scheme()
            )));
        }
        let mut req = hyper::Request::get(url.as_str());
        if let Some(r) = &range {
            if r.is_empty() {
                return Err(FetchError::BadResponse("empty range".into()));
            }
            req = req.header(header::RANGE, format!("bytes={}-{}", r.start, r.end - 1));
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| FetchError::BadResponse(e.to_string()))?;
        let resp = tokio::time::timeout(self.timeouts.first_byte, self.client.request(req))
            .await
            .map_err(|_| FetchError::Network("no response in time".into()))?
            .map_err(|e| FetchError::Network(error_chain(&e)))?;
        let status = resp.status().as_u16();
        if status != 200 && status != 206 {
            return Err(FetchError::Status(status));
        }
        let headers = resp.headers();
        let length: Option<u64> = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let (start, total) = if status == 206 {
            let cr = headers
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range)
                .ok_or_else(|| {
                    FetchError::BadResponse("206 without a valid Content-Range".into())
                })?;
            if let Some(r) = &range
                && cr.0 != r.start
            {
                return Err(FetchError::BadResponse(format!(
                    "asked for bytes from {}, got from {}",
                    r.start, cr.0
                )));
            }
            (cr.0, cr.1)
        } else {
            (0, length)
        };
        Ok(Body {
            body: resp.into_body(),
            idle: self.timeouts.idle,
            status,
            start,
            total,
        })
    }

    /// GETs a whole (small) resource such as a playlist.
    pub async fn get_bytes(&self, url: &Url, limit: usize) -> Result<Bytes, FetchError> {
        let mut body = self.get(url, None).await?;
        let mut out = Vec::new();
        while let Some(piece) = body.next().await? {
            if out.len() + piece.len() > limit {
                return Err(FetchError::BadResponse(format!(
                    "larger than {limit} bytes"
                )));
            }
            out.extend_from_slice(&piece);
        }
        Ok(out.into())
    }
}

/// `bytes START-END/TOTAL` or `bytes START-END/*`: the start and the total.
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 0-99/1000"),
            Some((0, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("bytes 9-5/10"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes x-1/2"), None);
    }
}
