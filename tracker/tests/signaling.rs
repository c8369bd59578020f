//! Two peers meet in a swarm: an offer is relayed, its answer comes back, scrape counts are
//! right, and stopping or closing the socket removes a peer. Plus the HTTP endpoints and a
//! graceful shutdown.

mod common;

use common::*;
use swarmcdn_core::tracker_proto::{
    AnnounceEvent, Answer, FromTracker, Scrape, SessionDescription, ToTracker,
};
use swarmcdn_tracker::{Config, Tracker};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn offer_and_answer_are_relayed_and_scrape_counts() {
    let server = start(Config::default()).await;
    let mut a = Client::connect(server.addr).await;
    let mut b = Client::connect(server.addr).await;

    a.send(&announce(1, 1, 0)).await;
    let FromTracker::AnnounceResponse(r) = a.recv().await else {
        panic!("announce response")
    };
    assert_eq!(r.interval, Some(120));
    assert_eq!((r.complete, r.incomplete), (Some(0), Some(1)));

    b.send(&announce(1, 2, 3)).await;
    let FromTracker::AnnounceResponse(r) = b.recv().await else {
        panic!("announce response")
    };
    assert_eq!(r.incomplete, Some(2));
    // One candidate: one of the three offers reaches A.
    let FromTracker::Offer(offer) = a.recv().await else {
        panic!("relayed offer")
    };
    assert_eq!(offer.peer_id, peer(2));
    assert_eq!(offer.info_hash, swarm(1));
    assert!(offer.offer.sdp().contains("offer 2/"));

    a.send(&ToTracker::Answer(Answer {
        info_hash: swarm(1),
        peer_id: peer(1),
        to_peer_id: peer(2),
        offer_id: offer.offer_id,
        answer: SessionDescription::answer("v=0\r\no=answer\r\n"),
        ext: None,
    }))
    .await;
    let FromTracker::Answer(answer) = b.recv().await else {
        panic!("relayed answer")
    };
    assert_eq!(answer.peer_id, peer(1));
    assert_eq!(answer.offer_id, offer.offer_id);
    assert_eq!(answer.answer.sdp(), "v=0\r\no=answer\r\n");

    // A second answer to the same offer is refused.
    a.send(&ToTracker::Answer(Answer {
        info_hash: swarm(1),
        peer_id: peer(1),
        to_peer_id: peer(2),
        offer_id: offer.offer_id,
        answer: SessionDescription::answer("again"),
        ext: None,
    }))
    .await;
    assert!(matches!(a.recv().await, FromTracker::Error(_)));

    let mut c = Client::connect(server.addr).await;
    c.send(&ToTracker::Scrape(Scrape {
        info_hashes: vec![swarm(1)],
    }))
    .await;
    let FromTracker::Scrape(s) = c.recv().await else {
        panic!("scrape")
    };
    assert_eq!(s.files[&swarm(1)].incomplete, 2);

    // Stopping removes B.
    let ToTracker::Announce(mut stop) = announce(1, 2, 0) else {
        unreachable!()
    };
    stop.event = Some(AnnounceEvent::Stopped);
    b.send(&ToTracker::Announce(stop)).await;
    let _ = b.recv().await;
    c.send(&ToTracker::Scrape(Scrape {
        info_hashes: vec![swarm(1)],
    }))
    .await;
    let FromTracker::Scrape(s) = c.recv().await else {
        panic!("scrape")
    };
    assert_eq!(s.files[&swarm(1)].incomplete, 1);

    // Closing A's socket removes A.
    drop(a);
    let mut gone = false;
    for _ in 0..50 {
        c.send(&ToTracker::Scrape(Scrape {
            info_hashes: vec![swarm(1)],
        }))
        .await;
        let FromTracker::Scrape(s) = c.recv().await else {
            panic!("scrape")
        };
        if s.files[&swarm(1)].incomplete == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(gone, "closing the socket removes its peers");
}

#[tokio::test]
async fn counters_behind_their_own_port_and_a_token() {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        metrics_token: "s3cret".into(),
        ..Config::default()
    };
    let tracker = Tracker::bind(config).await.unwrap();
    let (public, metrics) = (tracker.local_addr(), tracker.metrics_addr().unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(tracker.run(shutdown.clone()));
    let mut a = Client::connect(public).await;
    a.send(&announce(3, 1, 0)).await;
    let _ = a.recv().await;

    let auth = "authorization: Bearer s3cret\r\n";
    for path in ["/stats", "/metrics"] {
        // Not on the public port, even with the token.
        assert_eq!(http_get_with(public, path, auth).await.0, 404, "{path}");
        // On the metrics port, only with the token.
        assert_eq!(http_get(metrics, path).await.0, 401, "{path}");
        for wrong in [
            "authorization: Bearer s3cre\r\n",
            "authorization: Bearer s3cret2\r\n",
            "authorization: Basic s3cret\r\n",
            "authorization: s3cret\r\n",
        ] {
            assert_eq!(
                http_get_with(metrics, path, wrong).await.0,
                401,
                "{wrong:?}"
            );
        }
        let (status, body) =
            http_get_with(metrics, path, "authorization: bearer  s3cret \r\n").await;
        assert_eq!(status, 200, "{path}");
        assert!(body.contains("peers"), "{path}: {body}");
    }
    let (_, body) = http_get_with(metrics, "/stats", auth).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["connections"].as_u64(), v["peers"].as_u64()),
        (Some(1), Some(1))
    );
    // Health stays open on both; the metrics port is no WebSocket endpoint.
    assert_eq!(http_get(public, "/health").await, (200, "ok\n".into()));
    assert_eq!(http_get(metrics, "/health").await, (200, "ok\n".into()));
    assert_eq!(http_get(metrics, "/").await.0, 404);
    assert!(
        tokio_tungstenite::connect_async(format!("ws://{metrics}"))
            .await
            .is_err(),
        "the metrics port takes no WebSocket"
    );
    // The WebSocket client is undisturbed.
    a.send(&announce(3, 1, 0)).await;
    assert!(matches!(a.recv().await, FromTracker::AnnounceResponse(_)));

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn http_endpoints() {
    let server = start(Config::default()).await;
    let mut a = Client::connect(server.addr).await;
    a.send(&announce(3, 1, 0)).await;
    let _ = a.recv().await;

    let (status, body) = http_get(server.addr, "/health").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = http_get(server.addr, "/stats").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["connections"], 1);
    assert_eq!(v["swarms"], 1);
    assert_eq!(v["peers"], 1);
    assert_eq!(v["announces"], 1);
    let (status, body) = http_get(server.addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains(
            "# TYPE swarmcdn_tracker_connections gauge\nswarmcdn_tracker_connections 1\n"
        ),
        "{body}"
    );
    assert!(body.contains("swarmcdn_tracker_peers 1\n"));
    assert!(body.contains("swarmcdn_tracker_rejections_total{reason=\"swarm_full\"} 0\n"));
    let (status, _) = http_get(server.addr, "/").await;
    assert_eq!(
        status, 426,
        "plain HTTP on the WebSocket path asks for an upgrade"
    );
}

#[tokio::test]
async fn shutdown_closes_clients_with_a_close_frame() {
    let server = start(Config::default()).await;
    let mut a = Client::connect(server.addr).await;
    let mut b = Client::connect(server.addr).await;
    a.send(&announce(1, 1, 0)).await;
    let _ = a.recv().await;
    server.shutdown.cancel();
    for c in [&mut a, &mut b] {
        let frame = c.closed().await.expect("a close frame");
        assert_eq!(frame.code, CloseCode::Away);
    }
    let mut server = server;
    let task = server.task.take().unwrap();
    let res = tokio::time::timeout(WAIT, task)
        .await
        .expect("the server stops")
        .unwrap();
    assert!(res.is_ok());
}

#[tokio::test]
async fn the_root_and_announce_paths_both_speak_websocket() {
    let server = start(Config::default()).await;
    for url in [
        format!("ws://{}", server.addr),
        format!("ws://{}/", server.addr),
        format!("ws://{}/announce", server.addr),
    ] {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(&url))
            .await
            .expect("connect in time")
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let mut c = Client { ws };
        c.send(&announce(1, 1, 0)).await;
        assert!(
            matches!(c.recv().await, FromTracker::AnnounceResponse(_)),
            "{url}"
        );
        c.send(&ToTracker::Announce({
            let ToTracker::Announce(mut a) = announce(1, 1, 0) else {
                unreachable!()
            };
            a.event = Some(AnnounceEvent::Stopped);
            a
        }))
        .await;
        let _ = c.recv().await;
    }
}

#[tokio::test]
async fn shutdown_does_not_wait_for_idle_http_keep_alive_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = Config::default();
    config.limits.shutdown_grace_ms = 30_000;
    let mut server = start(config).await;
    // A metrics scraper keeps its connection open between scrapes.
    let mut scraper = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    scraper
        .write_all(b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(WAIT, scraper.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    server.shutdown.cancel();
    let task = server.task.take().unwrap();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the server stops well before the 30 s grace period")
        .unwrap()
        .unwrap();
    let n = tokio::time::timeout(WAIT, scraper.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the idle connection was closed");
}
