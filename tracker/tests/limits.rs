//! Every limit holds, and bad input gets a `failure reason` (or, for floods and oversized
//! messages, a close) without affecting other clients.

mod common;

use common::*;
use futures_util::SinkExt;
use swarmcdn_core::tracker_proto::{Answer, FromTracker, OfferId, SessionDescription, ToTracker};
use swarmcdn_tracker::Config;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn config(f: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::default();
    f(&mut c);
    c
}

async fn still_works(addr: std::net::SocketAddr, client: &mut Client, s: u8, p: u8) {
    client.send(&announce(s, p, 0)).await;
    assert!(
        matches!(client.recv().await, FromTracker::AnnounceResponse(_)),
        "another client is unaffected"
    );
    let _ = addr;
}

#[tokio::test]
async fn malformed_messages_get_a_failure_reason_and_the_connection_stays() {
    let server = start(Config::default()).await;
    let mut bad = Client::connect(server.addr).await;
    let mut good = Client::connect(server.addr).await;
    for junk in [
        "{not json",
        r#"{"action":"announce","info_hash":"short","peer_id":"bbbbbbbbbbbbbbbbbbbb"}"#,
        r#"{"action":"announce","info_hash":"aaaaaaaaaaaaaaaaaaaaa","peer_id":"bbbbbbbbbbbbbbbbbbbb"}"#,
        r#"{"action":"dance","info_hash":"aaaaaaaaaaaaaaaaaaaa"}"#,
        r#"{"action":"announce","info_hash":"aaaaaaaaaaaaaaaaaaaa"}"#,
        r#"[1,2,3]"#,
    ] {
        bad.send_raw(junk).await;
        match bad.recv().await {
            FromTracker::Error(e) => assert!(!e.failure_reason.is_empty()),
            other => panic!("{junk}: {other:?}"),
        }
    }
    // The same connection still works, and so does the other one.
    still_works(server.addr, &mut bad, 1, 1).await;
    still_works(server.addr, &mut good, 1, 2).await;
    let (_, stats) = http_get(server.addr, "/stats").await;
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(v["rejections"]["malformed"], 6);
}

#[tokio::test]
async fn an_answer_to_an_unknown_offer_is_refused() {
    let server = start(Config::default()).await;
    let mut a = Client::connect(server.addr).await;
    a.send(&announce(1, 1, 0)).await;
    let _ = a.recv().await;
    a.send(&ToTracker::Answer(Answer {
        info_hash: swarm(1),
        peer_id: peer(1),
        to_peer_id: peer(9),
        offer_id: OfferId([7; 20]),
        answer: SessionDescription::answer("x"),
        ext: None,
    }))
    .await;
    let FromTracker::Error(e) = a.recv().await else {
        panic!()
    };
    assert!(e.failure_reason.contains("offer"), "{}", e.failure_reason);
}

#[tokio::test]
async fn oversized_messages_close_only_that_connection() {
    let server = start(config(|c| c.limits.max_message_bytes = 2048)).await;
    let mut big = Client::connect(server.addr).await;
    let mut other = Client::connect(server.addr).await;
    big.send_raw(&format!(
        r#"{{"action":"scrape","pad":"{}"}}"#,
        "x".repeat(4096)
    ))
    .await;
    let frame = big.closed().await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Size);
    still_works(server.addr, &mut other, 1, 2).await;

    // The limit is on the whole message: fragments each under it do not get around it.
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let mut fragmented = Client::connect(server.addr).await;
    let part = "x".repeat(1000);
    let mut frames = vec![Frame::message(
        format!(r#"{{"action":"scrape","pad":"{part}"#),
        OpCode::Data(Data::Text),
        false,
    )];
    for _ in 0..4 {
        frames.push(Frame::message(
            part.clone(),
            OpCode::Data(Data::Continue),
            false,
        ));
    }
    for f in frames {
        // The server may close before the last fragment is written.
        if fragmented.ws.send(Message::Frame(f)).await.is_err() {
            break;
        }
    }
    let frame = fragmented.closed().await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Size);
}

#[tokio::test]
async fn floods_are_closed() {
    let server = start(config(|c| {
        c.limits.messages_per_second = 1.0;
        c.limits.message_burst = 3;
    }))
    .await;
    let mut flood = Client::connect(server.addr).await;
    let mut other = Client::connect(server.addr).await;
    for _ in 0..10 {
        flood.send_raw(r#"{"action":"scrape"}"#).await;
    }
    // Up to the burst, scrapes are answered; then the close comes.
    let frame = flood.closed().await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Policy);
    still_works(server.addr, &mut other, 1, 2).await;

    // Pings count too: they cost a pong each.
    let mut pinger = Client::connect(server.addr).await;
    for _ in 0..10 {
        pinger
            .ws
            .send(Message::Ping(Vec::new().into()))
            .await
            .unwrap();
    }
    let frame = pinger.closed().await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Policy);
    let (_, stats) = http_get(server.addr, "/stats").await;
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(v["rejections"]["flood"], 2);
}

#[tokio::test]
async fn connections_per_ip_and_in_total_are_limited() {
    let server = start(config(|c| c.limits.max_connections_per_ip = 2)).await;
    let _a = Client::connect(server.addr).await;
    let _b = Client::connect(server.addr).await;
    let third = tokio_tungstenite::connect_async(format!("ws://{}/", server.addr)).await;
    match third {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 429),
        other => panic!("expected 429, got {:?}", other.map(|_| ())),
    }
    drop(_a);
    // The slot frees up when a connection ends.
    let mut ok = false;
    for _ in 0..50 {
        if tokio_tungstenite::connect_async(format!("ws://{}/", server.addr))
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok);

    let server = start(config(|c| c.limits.max_connections = 1)).await;
    let _a = Client::connect(server.addr).await;
    // The slot is taken before the upgrade is answered: no wait needed.
    match tokio_tungstenite::connect_async(format!("ws://{}/", server.addr)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn swarm_limits_refuse_with_a_failure_reason() {
    let server = start(config(|c| {
        c.swarm.max_swarms_per_connection = 1;
        c.swarm.max_peers_per_swarm = 2;
    }))
    .await;
    let mut a = Client::connect(server.addr).await;
    a.send(&announce(1, 1, 0)).await;
    assert!(matches!(a.recv().await, FromTracker::AnnounceResponse(_)));
    a.send(&announce(2, 1, 0)).await;
    let FromTracker::Error(e) = a.recv().await else {
        panic!("too many swarms")
    };
    assert!(e.failure_reason.contains("swarms"), "{}", e.failure_reason);

    let mut b = Client::connect(server.addr).await;
    b.send(&announce(1, 2, 0)).await;
    assert!(matches!(b.recv().await, FromTracker::AnnounceResponse(_)));
    let mut c = Client::connect(server.addr).await;
    c.send(&announce(1, 3, 0)).await;
    let FromTracker::Error(e) = c.recv().await else {
        panic!("swarm full")
    };
    assert!(e.failure_reason.contains("full"), "{}", e.failure_reason);
}

#[tokio::test]
async fn a_connection_has_one_peer_id_per_swarm() {
    let server = start(Config::default()).await;
    let mut a = Client::connect(server.addr).await;
    a.send(&announce(1, 1, 0)).await;
    assert!(matches!(a.recv().await, FromTracker::AnnounceResponse(_)));
    a.send(&announce(1, 2, 0)).await;
    let FromTracker::Error(e) = a.recv().await else {
        panic!("a second peer id in the swarm")
    };
    assert!(
        e.failure_reason.contains("already has a peer"),
        "{}",
        e.failure_reason
    );
    // Another swarm is fine.
    a.send(&announce(2, 2, 0)).await;
    assert!(matches!(a.recv().await, FromTracker::AnnounceResponse(_)));
}

#[tokio::test]
async fn offers_pending_to_one_peer_are_capped() {
    let server = start(config(|c| c.swarm.max_pending_offers_to_peer = 3)).await;
    // The victim never answers; each offerer's only other candidates are offerers.
    let mut victim = Client::connect(server.addr).await;
    victim.send(&announce(1, 1, 0)).await;
    let _ = victim.recv().await;
    let mut offerers = Vec::new();
    for p in 10..16 {
        let mut c = Client::connect(server.addr).await;
        c.send(&announce(1, p, 0)).await;
        let _ = c.recv().await;
        offerers.push(c);
    }
    for (i, c) in offerers.iter_mut().enumerate() {
        c.send(&announce(1, 10 + i as u8, 10)).await;
    }
    let mut offers = 0;
    while !victim.silent().await {
        offers += 1;
    }
    assert_eq!(
        offers, 3,
        "6 offerers, 3 offers pending to the victim at most"
    );
}

#[tokio::test]
async fn a_connection_that_never_announces_is_closed() {
    let server = start(config(|c| c.limits.join_timeout_ms = 300)).await;
    let mut silent = Client::connect(server.addr).await;
    let mut scraper = Client::connect(server.addr).await;
    let mut member = Client::connect(server.addr).await;
    member.send(&announce(1, 1, 0)).await;
    assert!(matches!(
        member.recv().await,
        FromTracker::AnnounceResponse(_)
    ));
    // Scrapes do not count as joining.
    scraper.send(&ToTracker::Scrape(Default::default())).await;
    assert!(matches!(scraper.recv().await, FromTracker::Scrape(_)));
    for c in [&mut silent, &mut scraper] {
        let frame = c.closed().await.expect("a close frame");
        assert_eq!(frame.code, CloseCode::Policy);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    still_works(server.addr, &mut member, 1, 1).await;
}

/// A connection whose peers all left with `stopped`, or whose announce was refused, gets the
/// join timeout anew; one that announces again, or still holds a peer in another swarm,
/// stays.
#[tokio::test]
async fn a_connection_in_no_swarm_must_join_again() {
    let server = start(config(|c| {
        c.limits.join_timeout_ms = 300;
        c.swarm.max_peers_per_swarm = 1;
        // One thread: a connection forwards the messages it has read before the worker
        // runs, so its news of an earlier `stopped` comes after later announces.
        c.threads = 1;
    }))
    .await;
    let stopped = |s, p| {
        let mut a = announce(s, p, 0);
        if let ToTracker::Announce(a) = &mut a {
            a.event = Some(swarmcdn_core::tracker_proto::AnnounceEvent::Stopped);
        }
        a
    };
    let joined = async |c: &mut Client, s, p| {
        c.send(&announce(s, p, 0)).await;
        assert!(matches!(c.recv().await, FromTracker::AnnounceResponse(_)));
    };
    // One swarm each (a swarm holds one peer here).
    let mut gone = Client::connect(server.addr).await;
    let mut back = Client::connect(server.addr).await;
    let mut elsewhere = Client::connect(server.addr).await;
    let mut hopping = Client::connect(server.addr).await;
    let mut full = Client::connect(server.addr).await;
    joined(&mut gone, 1, 1).await;
    joined(&mut back, 2, 2).await;
    joined(&mut elsewhere, 3, 3).await;
    joined(&mut elsewhere, 7, 3).await;
    joined(&mut hopping, 8, 4).await;
    joined(&mut full, 6, 5).await;
    // Past the first join timeout: all had joined in time.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    gone.send(&stopped(1, 1)).await;
    // Stopped, then back at once.
    back.send_together(&[stopped(2, 2), announce(2, 2, 0)])
        .await;
    // Out of one of its two swarms.
    elsewhere.send(&stopped(3, 3)).await;
    // Out of its only swarm, into another, out of one it never was in: whatever the tracker's
    // news of the first `stopped` finds when it reaches the connection, it holds a peer.
    hopping
        .send_together(&[stopped(8, 4), announce(4, 4, 0), stopped(5, 4)])
        .await;
    // Refused (swarm 6 is full): it holds nothing.
    let mut refused = Client::connect(server.addr).await;
    refused.send(&announce(6, 6, 0)).await;
    assert!(matches!(refused.recv().await, FromTracker::Error(_)));

    for c in [&mut gone, &mut refused] {
        let frame = c.closed().await.expect("a close frame");
        assert_eq!(frame.code, CloseCode::Policy);
        assert_eq!(frame.reason.as_str(), "no announce");
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    // Each got a reply to each of its stops and announces, and is still served.
    for (c, s, p, replies) in [
        (&mut back, 2, 2, 2),
        (&mut elsewhere, 7, 3, 1),
        (&mut hopping, 4, 4, 3),
        (&mut full, 6, 5, 0),
    ] {
        for _ in 0..replies {
            assert!(matches!(c.recv().await, FromTracker::AnnounceResponse(_)));
        }
        still_works(server.addr, c, s, p).await;
    }
}

#[tokio::test]
async fn offers_per_announce_are_capped() {
    let server = start(config(|c| c.swarm.max_offers_per_announce = 2)).await;
    let mut others = Vec::new();
    for p in 10..15 {
        let mut c = Client::connect(server.addr).await;
        c.send(&announce(1, p, 0)).await;
        let _ = c.recv().await;
        others.push(c);
    }
    let mut a = Client::connect(server.addr).await;
    a.send(&announce(1, 1, 5)).await;
    let _ = a.recv().await;
    let mut relayed = 0;
    for c in &mut others {
        if !c.silent().await {
            relayed += 1;
        }
    }
    assert_eq!(relayed, 2, "5 offers sent, 2 used");
}

#[tokio::test]
async fn a_silent_tcp_connection_is_closed_after_the_header_timeout() {
    use tokio::io::AsyncReadExt;
    let server = start(config(|c| c.limits.header_timeout_ms = 200)).await;
    let mut idle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 256];
    // EOF (or a reset), with at most an error response: never a hang.
    let read = tokio::time::timeout(WAIT, async {
        loop {
            match idle.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(read.is_ok(), "closed within the header timeout");
    let mut other = Client::connect(server.addr).await;
    still_works(server.addr, &mut other, 1, 1).await;
}

/// RFC 6455 §4.2.1: the upgrade must be a GET with `Connection: Upgrade`, version 13 and a
/// 16-byte key; anything else gets a clear HTTP error and no WebSocket.
#[tokio::test]
async fn malformed_upgrades_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start(Config::default()).await;
    let raw = |method: &str, headers: &str| {
        format!("{method} / HTTP/1.1\r\nhost: t\r\nupgrade: websocket\r\n{headers}\r\n",)
    };
    let good = "connection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    for (request, status, says) in [
        (raw("POST", good), 405, "GET"),
        (
            raw(
                "GET",
                "connection: Upgrade\r\nsec-websocket-version: 8\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            ),
            426,
            "13",
        ),
        (
            raw(
                "GET",
                "sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            ),
            400,
            "Connection",
        ),
        (
            raw(
                "GET",
                "connection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: short\r\n",
            ),
            400,
            "Key",
        ),
        (raw("GET", good), 101, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
    ] {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")),
            "{request:?} -> {text}"
        );
        assert!(text.contains(says), "{request:?} -> {text}");
    }
}

/// Binary messages are read like text (as bittorrent-tracker reads them), a text message in
/// fragments is read whole, and a message that is not UTF-8 closes only its connection (1007).
#[tokio::test]
async fn binary_and_fragmented_messages_are_read_and_invalid_utf8_closes() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let server = start(Config::default()).await;
    let mut a = Client::connect(server.addr).await;
    let json = announce(1, 1, 0).to_json();
    a.ws.send(Message::Binary(json.clone().into_bytes().into()))
        .await
        .unwrap();
    assert!(matches!(a.recv().await, FromTracker::AnnounceResponse(_)));
    let (head, tail) = json.split_at(json.len() / 2);
    let (mid, tail) = tail.split_at(tail.len() / 2);
    for f in [
        Frame::message(head.to_owned(), OpCode::Data(Data::Text), false),
        Frame::message(mid.to_owned(), OpCode::Data(Data::Continue), false),
        Frame::message(tail.to_owned(), OpCode::Data(Data::Continue), true),
    ] {
        a.ws.send(Message::Frame(f)).await.unwrap();
    }
    assert!(matches!(a.recv().await, FromTracker::AnnounceResponse(_)));

    let mut other = Client::connect(server.addr).await;
    for kind in [Data::Text, Data::Binary] {
        let mut bad = Client::connect(server.addr).await;
        let payload = b"{\"action\":\"scrape\",\"x\":\"\xC3\x28\"}".to_vec();
        bad.ws
            .send(Message::Frame(Frame::message(
                payload,
                OpCode::Data(kind),
                true,
            )))
            .await
            .unwrap();
        let frame = bad.closed().await.expect("a close frame");
        assert_eq!(frame.code, CloseCode::Invalid);
    }
    still_works(server.addr, &mut other, 1, 2).await;
    still_works(server.addr, &mut a, 1, 1).await;
    let (_, stats) = http_get(server.addr, "/stats").await;
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(v["rejections"]["invalid_utf8"], 2);
    assert_eq!(v["rejections"]["malformed"], serde_json::Value::Null);
}

#[tokio::test]
async fn the_seed_role_can_be_kept_to_the_seeds_networks() {
    use swarmcdn_core::tracker_proto::{PeerInfo, Role, Standby};
    let as_seed = |s: u8, p: u8| {
        let ToTracker::Announce(mut a) = announce(s, p, 0) else {
            unreachable!()
        };
        a.ext = Some(PeerInfo {
            role: Some(Role::Seed),
            ..PeerInfo::default()
        });
        ToTracker::Announce(a)
    };
    let standby = ToTracker::Standby(Standby {
        peer_id: peer(9),
        ext: None,
    });
    // Loopback is not among the seeds' networks: its clients may only be viewers.
    let server = start(Config::from_toml("[seeds]\nnetworks = [\"10.0.0.0/8\"]").unwrap()).await;
    let mut c = Client::connect(server.addr).await;
    for msg in [as_seed(1, 1), standby.clone()] {
        c.send(&msg).await;
        let FromTracker::Error(e) = c.recv().await else {
            panic!("the seed role was taken")
        };
        assert!(e.failure_reason.contains("seed"), "{}", e.failure_reason);
    }
    still_works(server.addr, &mut c, 1, 1).await;
    let (_, metrics) = http_get(server.addr, "/metrics").await;
    assert!(
        metrics.contains("reason=\"seed_not_allowed\"} 2"),
        "{metrics}"
    );
    // From an allowed network, it is.
    let server =
        start(Config::from_toml("[seeds]\nnetworks = [\"127.0.0.0/8\", \"::1/128\"]").unwrap())
            .await;
    let mut c = Client::connect(server.addr).await;
    c.send(&as_seed(1, 1)).await;
    assert!(matches!(c.recv().await, FromTracker::AnnounceResponse(_)));
    c.send(&standby).await;
    assert!(c.silent().await, "standby has no reply");
}
