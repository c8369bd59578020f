//! The test origin over real HTTP on loopback: playlists, live window and loops, byte ranges,
//! CORS, counters, errors. The live clock is set by hand, so nothing sleeps.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use swarmcdn_tests::origin::{LiveClock, Origin, OriginConfig, default_media_dir, serve};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

struct Server {
    addr: std::net::SocketAddr,
    clock: LiveClock,
    origin: Arc<Origin>,
    shutdown: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(config: OriginConfig) -> Server {
    let clock = LiveClock::manual();
    let origin = Arc::new(Origin::new(config, clock.clone()).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(origin.clone(), listener, shutdown.clone()));
    Server {
        addr,
        clock,
        origin,
        shutdown,
    }
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

async fn request(s: &Server, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "origin");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()),
    )
    .await
    .expect("no reply in 10 s")
    .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

async fn get(s: &Server, path: &str) -> Reply {
    request(s, "GET", path, &[]).await
}

fn fragment(rendition: &str, i: usize) -> Vec<u8> {
    std::fs::read(
        default_media_dir()
            .join(rendition)
            .join(format!("seg{i:03}.m4s")),
    )
    .unwrap()
}

fn media_playlist(body: &[u8]) -> m3u8_rs::MediaPlaylist {
    m3u8_rs::parse_media_playlist_res(body).expect("a valid media playlist")
}

#[tokio::test]
async fn vod_playlists_parse_and_every_segment_is_served() {
    let s = start(OriginConfig::default()).await;
    let master = get(&s, "/vod/master.m3u8").await;
    assert_eq!(master.status, StatusCode::OK);
    assert_eq!(
        master.headers["content-type"],
        "application/vnd.apple.mpegurl"
    );
    let master = m3u8_rs::parse_master_playlist_res(&master.body).unwrap();
    assert_eq!(master.variants.len(), 2, "two renditions");
    for v in &master.variants {
        assert!(v.codecs.as_deref().unwrap().contains("avc1"));
        assert!(v.resolution.is_some());
        let r = get(&s, &format!("/vod/{}", v.uri)).await;
        let pl = media_playlist(&r.body);
        assert!(pl.end_list);
        assert_eq!(pl.segments.len(), 12, "24 s in 2 s segments");
        assert_eq!(pl.segments[0].map.as_ref().unwrap().uri, "init.mp4");
        let dir = v.uri.trim_end_matches("/index.m3u8");
        let init = get(&s, &format!("/vod/{dir}/init.mp4")).await;
        assert_eq!(init.status, StatusCode::OK);
        for (i, seg) in pl.segments.iter().enumerate() {
            let r = get(&s, &format!("/vod/{dir}/{}", seg.uri)).await;
            assert_eq!(r.status, StatusCode::OK, "{}", seg.uri);
            let mut expected = fragment(dir, 2 * i);
            expected.extend(fragment(dir, 2 * i + 1));
            assert_eq!(r.body, expected, "{}", seg.uri);
        }
    }
}

#[tokio::test]
async fn segment_duration_is_configurable() {
    let s = start(OriginConfig {
        segment_duration: 4,
        ..OriginConfig::default()
    })
    .await;
    let pl = media_playlist(&get(&s, "/vod/216p/index.m3u8").await.body);
    assert_eq!(pl.target_duration, 4);
    assert_eq!(pl.segments.len(), 6);
    assert!(pl.segments.iter().all(|x| (x.duration - 4.0).abs() < 1e-3));
    let body = get(&s, "/vod/216p/seg-1.m4s").await.body;
    let expected: Vec<u8> = (4..8).flat_map(|i| fragment("216p", i)).collect();
    assert_eq!(body, expected);

    // A duration that does not divide the clip is refused with a clear error.
    let err = Origin::new(
        OriginConfig {
            segment_duration: 5,
            ..OriginConfig::default()
        },
        LiveClock::manual(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not divide"), "{err}");
}

#[tokio::test]
async fn live_window_advances_and_loops_with_a_discontinuity() {
    let s = start(OriginConfig {
        segment_duration: 1,
        window: 6,
        ..OriginConfig::default()
    })
    .await;
    // Before the first segment is complete there is no playlist yet.
    assert_eq!(
        get(&s, "/live/360p/index.m3u8").await.status,
        StatusCode::NOT_FOUND
    );

    let mut last_first = 0;
    let mut seen_disc_seq = Vec::new();
    for t in [3u64, 10, 23, 24, 25, 27, 29, 31, 47, 48, 49, 53, 60] {
        s.clock.set(Duration::from_secs(t));
        let r = get(&s, "/live/360p/index.m3u8").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers["cache-control"], "no-cache");
        let pl = media_playlist(&r.body);
        let edge = t - 1;
        let first = edge.saturating_sub(5);
        assert_eq!(pl.media_sequence, first, "t={t}");
        assert!(
            pl.media_sequence >= last_first,
            "media sequence never goes back"
        );
        last_first = pl.media_sequence;
        assert!(!pl.end_list);
        assert_eq!(pl.segments.len() as u64, edge - first + 1);
        assert_eq!(pl.discontinuity_sequence, first / 24, "t={t}");
        seen_disc_seq.push(pl.discontinuity_sequence);
        for (i, seg) in pl.segments.iter().enumerate() {
            let msn = first + i as u64;
            assert_eq!(seg.uri, format!("seg-{msn}.m4s"));
            // A discontinuity before the first segment of each loop (but the playlist's
            // first segment, whose discontinuity sequence says it).
            assert_eq!(
                seg.discontinuity,
                i > 0 && msn.is_multiple_of(24),
                "t={t} msn={msn}"
            );
        }
    }
    assert!(seen_disc_seq.contains(&0) && seen_disc_seq.contains(&1) && seen_disc_seq.contains(&2));

    // Segments: published ones are served (the clip's content, looped), others are 404.
    s.clock.set(Duration::from_secs(30));
    let r = get(&s, "/live/360p/seg-28.m4s").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, fragment("360p", 4));
    assert_eq!(
        get(&s, "/live/360p/seg-29.m4s").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&s, "/live/360p/seg-30.m4s").await.status,
        StatusCode::NOT_FOUND
    );
    s.clock.set(Duration::from_secs(1000));
    assert_eq!(
        get(&s, "/live/360p/seg-28.m4s").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn live_start_offset_starts_inside_the_clip() {
    let s = start(OriginConfig {
        segment_duration: 1,
        live_start_offset: 20.0,
        ..OriginConfig::default()
    })
    .await;
    s.clock.set(Duration::ZERO);
    let pl = media_playlist(&get(&s, "/live/216p/index.m3u8").await.body);
    assert_eq!(pl.media_sequence, 14);
    assert_eq!(pl.segments.last().unwrap().uri, "seg-19.m4s");
    assert_eq!(s.origin.live_edge(), Some(19));
}

#[tokio::test]
async fn byte_ranges_head_and_cors() {
    let s = start(OriginConfig::default()).await;
    let full = get(&s, "/vod/360p/seg-0.m4s").await.body;
    let total = full.len();

    let r = request(
        &s,
        "GET",
        "/vod/360p/seg-0.m4s",
        &[("range", "bytes=100-199")],
    )
    .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.body, full.slice(100..200));
    assert_eq!(r.headers["content-range"], format!("bytes 100-199/{total}"));
    assert_eq!(r.headers["content-length"], "100");

    let r = request(&s, "GET", "/vod/360p/seg-0.m4s", &[("range", "bytes=-10")]).await;
    assert_eq!(r.body, full.slice(total - 10..));
    let r = request(
        &s,
        "GET",
        "/vod/360p/seg-0.m4s",
        &[("range", "bytes=1000-")],
    )
    .await;
    assert_eq!(r.body, full.slice(1000..));

    let r = request(
        &s,
        "GET",
        "/vod/360p/seg-0.m4s",
        &[("range", &format!("bytes={total}-"))],
    )
    .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers["content-range"], format!("bytes */{total}"));

    let r = request(&s, "HEAD", "/vod/360p/seg-0.m4s", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    assert_eq!(r.headers["content-length"], total.to_string());
    assert_eq!(r.headers["accept-ranges"], "bytes");

    let r = request(
        &s,
        "OPTIONS",
        "/vod/360p/seg-0.m4s",
        &[
            ("origin", "http://page.example"),
            ("access-control-request-headers", "range"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert!(
        r.headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("Range")
    );
    let r = get(&s, "/vod/360p/seg-0.m4s").await;
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert!(
        r.headers["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("Content-Range")
    );
}

#[tokio::test]
async fn counters_count_requests_and_bytes_exactly() {
    let s = start(OriginConfig::default()).await;
    s.clock.set(Duration::from_secs(10));
    get(&s, "/live/master.m3u8").await;
    get(&s, "/live/360p/index.m3u8").await;
    get(&s, "/live/360p/init.mp4").await;
    let a = get(&s, "/live/360p/seg-3.m4s").await.body.len() as u64;
    let b = get(&s, "/live/360p/seg-3.m4s").await.body.len() as u64;
    let c = request(
        &s,
        "GET",
        "/live/216p/seg-2.m4s",
        &[("range", "bytes=0-999")],
    )
    .await;
    assert_eq!(c.body.len(), 1000);
    get(&s, "/live/360p/seg-99.m4s").await; // 404: counted as a request, no bytes

    let snap = s.origin.stats().snapshot();
    assert_eq!(snap.playlist_requests, 2);
    assert_eq!(snap.init_requests, 1);
    assert_eq!(snap.segment_requests, 3);
    assert_eq!(snap.segment_bytes, a + b + 1000);
    assert_eq!(snap.segments["live/360p/seg-3.m4s"], (2, a + b));
    assert_eq!(snap.segments["live/216p/seg-2.m4s"], (1, 1000));
    assert_eq!(snap.requests, 7);

    // The same counters over HTTP, for other processes.
    let r = get(&s, "/stats").await;
    let over_http: swarmcdn_tests::origin::StatsSnapshot = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(over_http.segment_bytes, snap.segment_bytes);
    assert_eq!(get(&s, "/health").await.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_paths_and_bad_media_are_clear_errors() {
    let s = start(OriginConfig::default()).await;
    for p in [
        "/vod/720p/index.m3u8",
        "/vod/360p/seg-12.m4s",
        "/vod/360p/seg-x.m4s",
        "/nope",
    ] {
        assert_eq!(get(&s, p).await.status, StatusCode::NOT_FOUND, "{p}");
    }
    assert_eq!(
        request(&s, "POST", "/vod/master.m3u8", &[]).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );

    let missing = std::env::temp_dir().join("swarmcdn-no-such-media");
    let err = Origin::new(
        OriginConfig {
            media_dir: missing,
            ..OriginConfig::default()
        },
        LiveClock::manual(),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("master.m3u8"), "{err:#}");
}

#[tokio::test]
async fn static_files_stay_inside_their_folder() {
    let dir = std::env::temp_dir().join(format!("swarmcdn-static-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("pages")).unwrap();
    std::fs::write(dir.join("pages/a.html"), "<p>hi</p>").unwrap();
    let s = start(OriginConfig {
        static_dir: Some(dir.clone()),
        ..OriginConfig::default()
    })
    .await;
    let r = get(&s, "/pages/a.html").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(
        get(&s, "/pages/../../etc/passwd").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&s, "/pages/%2e%2e/%2e%2e/etc/passwd").await.status,
        StatusCode::NOT_FOUND
    );
    std::fs::remove_dir_all(dir).ok();
}
