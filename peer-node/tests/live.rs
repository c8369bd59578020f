//! End to end on loopback: origin, tracker, seed node and headless viewers as real processes.

mod common;

use std::time::Duration;

use common::{Harness, metric, serial};

#[test]
fn seed_and_five_viewers_play_a_minute_of_live_mostly_from_peers() {
    let _guard = serial();
    let h = Harness::start("five");
    let (mut seed, metrics) = h.seed("seed");
    std::thread::sleep(Duration::from_secs(2));
    let mut viewers: Vec<_> = (0..5)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(500));
            h.viewer(&format!("viewer{i}"), 60, &[])
        })
        .collect();
    let mut total_http = 0;
    let mut total_p2p = 0;
    for v in &mut viewers {
        let r = h.report(v);
        let name = v.name.clone();
        eprintln!(
            "{name}: startup {:?} ms, stalls {}, http {} p2p {} ({:.1}%), up {}",
            r.startup_ms,
            r.stalls,
            r.http_bytes,
            r.p2p_bytes,
            r.p2p_share() * 100.0,
            r.uploaded_bytes
        );
        assert_eq!(r.stalls, 0, "{name} stalled");
        assert_eq!(r.integrity_failures, 0, "{name}");
        assert!(r.played_ms >= 55_000, "{name} played {} ms", r.played_ms);
        h.check_segments(&name, &r);
        total_http += r.http_bytes;
        total_p2p += r.p2p_bytes;
    }
    let share = total_p2p as f64 / (total_http + total_p2p) as f64;
    let (requests, bytes, distinct) = h.origin_copies();
    let copies = bytes as f64 / distinct as f64;
    eprintln!(
        "viewers' P2P share {:.1}%; origin: {requests} segment requests, {:.2} copies per segment",
        share * 100.0,
        copies
    );
    assert!(share >= 0.90, "P2P share {share}");
    assert!(copies <= 1.5, "origin served {copies} copies per segment");
    assert!(metric(metrics, "swarmcdn_seed_served_bytes_total").unwrap_or(0.0) > 0.0);
    assert_eq!(
        metric(metrics, "swarmcdn_seed_integrity_failures_total"),
        Some(0.0)
    );
    // SIGTERM: a clean exit.
    let status = std::process::Command::new("kill")
        .arg(seed.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(s) = seed.child.try_wait().unwrap() {
            exited = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        exited.is_some_and(|s| s.success()),
        "the seed did not exit cleanly on SIGTERM: {exited:?}"
    );
}

#[test]
fn a_viewer_bans_a_neighbour_that_sends_corrupt_chunks_and_plays_only_good_bytes() {
    let _guard = serial();
    let h = Harness::start("corrupt");
    // No seed: one would hold every segment from its listing, the viewers would queue their
    // requests there and reach the liar only by chance (in one CI run, never). Here the liar
    // is the only neighbour that uploads, so it is the first scout of every new segment and
    // the honest viewers ask it for each one they do not fetch at their deadline. Without a
    // seed to sign, the viewers trust no key: each takes a segment's digest from whoever
    // serves it first and checks every chunk against it (the liar's digests are of the true
    // bytes; its chunks are not).
    let mut liar = h.unverified_viewer("liar", 40, &["--corrupt-uploads"]);
    std::thread::sleep(Duration::from_secs(4));
    let mut honest: Vec<_> = (0..2)
        .map(|i| h.unverified_viewer(&format!("honest{i}"), 30, &["--no-upload"]))
        .collect();
    for v in &mut honest {
        let r = h.report(v);
        let name = v.name.clone();
        eprintln!(
            "{name}: stalls {}, integrity failures {}, p2p {:.1}%",
            r.stalls,
            r.integrity_failures,
            r.p2p_share() * 100.0
        );
        assert_eq!(r.stalls, 0, "{name} stalled");
        h.check_segments(&name, &r);
        assert!(
            r.integrity_failures > 0,
            "{name} never asked the liar: the test proves nothing"
        );
        assert_eq!(r.p2p_bytes, 0, "{name} took bytes from the liar");
        let log = std::fs::read_to_string(h.dir.join(format!("{name}.log"))).unwrap();
        assert!(
            log.contains("dropped and banned"),
            "{name} did not drop the liar:\n{log}"
        );
    }
    let _ = h.report(&mut liar);
}

#[test]
fn viewers_play_on_when_the_seed_is_killed() {
    let _guard = serial();
    let h = Harness::start("kill");
    let (mut seed, _) = h.seed("seed");
    std::thread::sleep(Duration::from_secs(1));
    let mut viewers: Vec<_> = (0..3)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(500));
            h.viewer(&format!("viewer{i}"), 40, &[])
        })
        .collect();
    std::thread::sleep(Duration::from_secs(15));
    let before = h.origin.stats().snapshot().segment_requests;
    seed.kill();
    for v in &mut viewers {
        let r = h.report(v);
        let name = v.name.clone();
        eprintln!(
            "{name}: stalls {}, http {} p2p {} ({:.1}%)",
            r.stalls,
            r.http_bytes,
            r.p2p_bytes,
            r.p2p_share() * 100.0
        );
        assert_eq!(r.stalls, 0, "{name} stalled after the seed died");
        assert!(r.played_ms >= 35_000, "{name} played {} ms", r.played_ms);
        h.check_segments(&name, &r);
    }
    // Without the seed the viewers fetched new segments from the origin themselves.
    assert!(h.origin.stats().snapshot().segment_requests > before);
}

#[test]
fn a_seed_on_standby_joins_a_stream_when_the_tracker_asks() {
    let _guard = serial();
    let h = Harness::start("demand");
    let (_seed, metrics) = h.seed_on_demand("seed");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        metric(metrics, "swarmcdn_seed_origin_bytes_total"),
        None,
        "follows nothing before it is asked"
    );
    let mut viewers: Vec<_> = (0..2)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(500));
            h.viewer(&format!("viewer{i}"), 30, &[])
        })
        .collect();
    for v in &mut viewers {
        let r = h.report(v);
        let name = v.name.clone();
        eprintln!(
            "{name}: stalls {}, http {} p2p {} ({:.1}%)",
            r.stalls,
            r.http_bytes,
            r.p2p_bytes,
            r.p2p_share() * 100.0
        );
        assert_eq!(r.stalls, 0, "{name} stalled");
        h.check_segments(&name, &r);
        assert!(r.p2p_share() > 0.5, "{name}: the seed did not come");
    }
    assert!(metric(metrics, "swarmcdn_seed_served_bytes_total").unwrap_or(0.0) > 0.0);
}

#[test]
fn a_seed_on_demand_lets_an_idle_stream_go_and_comes_back_with_viewers() {
    let _guard = serial();
    let h = Harness::start("demand-idle");
    let (_seed, metrics) = h.seed_on_demand_with("seed", "idle_secs = 3\n");
    std::thread::sleep(Duration::from_secs(1));
    let mut first = h.viewer("viewer0", 12, &[]);
    let r = h.report(&mut first);
    assert!(r.p2p_share() > 0.5, "the seed did not come: {r:?}");
    h.check_segments("viewer0", &r);

    // The viewer is gone: the seed lets the stream go and stops pulling it.
    let gone = std::time::Instant::now();
    let deadline = gone + Duration::from_secs(20);
    while metric(metrics, "swarmcdn_seed_streams_released_total") != Some(1.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle stream was not let go"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "the stream was let go {:.1} s after the viewer left",
        gone.elapsed().as_secs_f64()
    );
    assert_eq!(
        metric(metrics, "swarmcdn_seed_streams_on_demand"),
        Some(0.0)
    );
    std::thread::sleep(Duration::from_secs(1));
    let pulled = h.origin.stats().snapshot().segment_requests;
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        h.origin.stats().snapshot().segment_requests,
        pulled,
        "the seed still pulls a stream nobody watches"
    );

    // A viewer comes back: the tracker asks again and the seed follows the stream again.
    let mut second = h.viewer("viewer1", 12, &[]);
    let r = h.report(&mut second);
    eprintln!(
        "viewer1: stalls {}, http {} p2p {} ({:.1}%)",
        r.stalls,
        r.http_bytes,
        r.p2p_bytes,
        r.p2p_share() * 100.0
    );
    assert_eq!(r.stalls, 0);
    h.check_segments("viewer1", &r);
    assert!(r.p2p_share() > 0.3, "the seed did not come back: {r:?}");
    assert_eq!(
        metric(metrics, "swarmcdn_seed_streams_on_demand"),
        Some(1.0)
    );
}

/// With join tokens required, the seed and a viewer that hold a token for the stream's swarm
/// meet and trade segments; a viewer without one is refused by the tracker and plays from the
/// origin alone.
#[test]
fn join_tokens_let_their_holders_into_the_swarm_and_no_one_else() {
    use swarmcdn_core::ids::SwarmId;
    use swarmcdn_core::integrity::DigestSigner;
    use swarmcdn_core::token::JoinToken;

    let _guard = serial();
    let secret = [0x37; 32];
    let public = DigestSigner::from_secret(secret).public_key().to_string();
    let h = Harness::start_with("tokens", |c| {
        c.tokens.required = true;
        c.tokens.keys = vec![public];
    });
    // The stream's swarm, from a seed that follows it (its announces are refused).
    let (mut probe, addr) = h.seed("probe");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let swarm: SwarmId = loop {
        let s = common::stats(addr);
        if let Some(hex) = s["streams"][0]["swarm"].as_str() {
            break hex.parse().unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the seed never loaded the stream"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    probe.kill();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = JoinToken {
        swarm,
        expires: now + 3600,
        peer: None,
        seed: false,
    };
    // The seed's token grants the seed role (a viewer's would be refused for it).
    let seed_token = JoinToken {
        seed: true,
        ..token
    }
    .sign(&secret);
    let token = token.sign(&secret);

    let (mut seed, metrics) = h.seed_with("seed", &format!("token = {seed_token:?}\n"));
    std::thread::sleep(Duration::from_secs(2));
    let mut holder = h.viewer("holder", 20, &["--token", &token]);
    let mut stranger = h.viewer("stranger", 20, &[]);
    let with = h.report(&mut holder);
    let without = h.report(&mut stranger);
    eprintln!(
        "with a token: http {} p2p {}; without: http {} p2p {}",
        with.http_bytes, with.p2p_bytes, without.http_bytes, without.p2p_bytes
    );
    assert!(
        with.p2p_bytes > 0,
        "the token holder got nothing from peers"
    );
    assert_eq!(
        without.p2p_bytes, 0,
        "a viewer without a token joined the swarm"
    );
    assert_eq!(without.stalls, 0);
    assert!(
        without.played_ms >= 15_000,
        "played {} ms",
        without.played_ms
    );
    h.check_segments("holder", &with);
    h.check_segments("stranger", &without);
    let log = std::fs::read_to_string(h.dir.join("stranger.log")).unwrap();
    assert!(
        log.contains("tracker refused") && log.contains("token"),
        "no refusal in the stranger's log:\n{log}"
    );
    assert!(metric(metrics, "swarmcdn_seed_served_bytes_total").unwrap_or(0.0) > 0.0);
    seed.kill();
}
