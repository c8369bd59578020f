//! A misbehaving origin: a malformed playlist, a segment that 404s, a slow segment. The
//! headless viewer (HTTP only, no tracker) reports a clear error or retries, and never crashes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

const PLAYLIST: &str = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:1.0,\nseg0.ts\n#EXTINF:1.0,\nseg1.ts\n#EXTINF:1.0,\nseg2.ts\n#EXTINF:1.0,\nseg3.ts\n#EXT-X-ENDLIST\n";

struct Bad {
    seg1_requests: AtomicU64,
}

async fn respond(bad: Arc<Bad>, path: String) -> Response<Full<Bytes>> {
    let ok = |body: Bytes| Response::new(Full::new(body));
    match path.as_str() {
        "/garbage/master.m3u8" => ok(Bytes::from_static(b"<html>oops</html>")),
        "/broken/master.m3u8" => ok(Bytes::from_static(
            b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n#EXT-X-BYTERANGE:10\nseg.ts\n",
        )),
        "/vod/index.m3u8" => ok(Bytes::from_static(PLAYLIST.as_bytes())),
        // Missing twice, then there.
        "/vod/seg1.ts" if bad.seg1_requests.fetch_add(1, Ordering::Relaxed) < 2 => {
            Response::builder()
                .status(404)
                .body(Full::new(Bytes::from_static(b"not found")))
                .unwrap()
        }
        // Slow: the head comes after 1.5 s.
        "/vod/seg2.ts" => {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            ok(Bytes::from(vec![2u8; 50_000]))
        }
        p if p.starts_with("/vod/seg") => ok(Bytes::from(vec![p.len() as u8; 50_000])),
        _ => Response::builder()
            .status(404)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    }
}

fn start() -> (tokio::runtime::Runtime, SocketAddr, Arc<Bad>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let bad = Arc::new(Bad {
        seg1_requests: AtomicU64::new(0),
    });
    let b = bad.clone();
    let addr = rt.block_on(async move {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                let b = b.clone();
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let b = b.clone();
                            async move {
                                Ok::<_, Infallible>(respond(b, req.uri().path().to_string()).await)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        addr
    });
    (rt, addr, bad)
}

fn view(url: &str, secs: u64) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_peer-node"))
        .args(["view", url, "--unverified", "--udp", "127.0.0.1:0"])
        .args(["--duration", &secs.to_string()])
        .output()
        .unwrap()
}

#[test]
fn malformed_playlists_are_clear_errors() {
    let (_rt, addr, _) = start();
    for (path, want) in [
        ("garbage/master.m3u8", "does not start with #EXTM3U"),
        ("broken/master.m3u8", "EXT-X-BYTERANGE without an offset"),
        ("missing/master.m3u8", "HTTP status 404"),
    ] {
        let out = view(&format!("http://{addr}/{path}"), 5);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{path}: should fail");
        assert!(err.contains(want), "{path}: stderr lacks {want:?}:\n{err}");
        assert!(!err.contains("panicked"), "{path}: {err}");
    }
    // HTTPS is spoken (here to a plain-HTTP server, so the handshake fails clearly).
    let out = view(&format!("https://{addr}/vod/index.m3u8"), 5);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot load https://"), "{err}");
    assert!(!err.contains("unsupported scheme"), "{err}");
    // Nothing listening at all.
    let out = view("http://127.0.0.1:9/x.m3u8", 5);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot load"));
}

#[test]
fn a_missing_segment_is_retried_and_a_slow_one_waited_for() {
    let (_rt, addr, bad) = start();
    let out = view(&format!("http://{addr}/vod/index.m3u8"), 20);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let seqs: Vec<u64> = report["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [0, 1, 2, 3], "{err}");
    assert!(bad.seg1_requests.load(Ordering::Relaxed) >= 3);
    assert!(
        err.contains("HTTP status 404"),
        "the 404 is reported:\n{err}"
    );
    assert_eq!(report["http_bytes"].as_u64(), Some(200_000));
}
