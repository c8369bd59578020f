//! With join tokens required, an announce needs a valid token for its swarm (or for the
//! all-zero swarm: a seed's standby token): missing, expired, forged, other-swarm and
//! other-peer tokens are refused with a failure reason, and so is the seed role without a seed
//! token.

mod common;

use common::*;
use swarmcdn_core::integrity::DigestSigner;
use swarmcdn_core::token::JoinToken;
use swarmcdn_core::tracker_proto::{AnnounceEvent, FromTracker, PeerInfo, Role, ToTracker};
use swarmcdn_tracker::Config;

const SECRET: [u8; 32] = [8; 32];

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn with_token(s: u8, p: u8, token: Option<String>) -> ToTracker {
    let ToTracker::Announce(mut a) = announce(s, p, 0) else {
        unreachable!()
    };
    a.ext = Some(PeerInfo {
        token,
        ..PeerInfo::default()
    });
    ToTracker::Announce(a)
}

#[tokio::test]
async fn announces_need_a_valid_token() {
    let mut config = Config::default();
    config.tokens.required = true;
    config.tokens.keys = vec![DigestSigner::from_secret(SECRET).public_key().to_string()];
    let server = start(config).await;
    let mut c = Client::connect(server.addr).await;

    let refused = |m: FromTracker| match m {
        FromTracker::Error(e) => e.failure_reason,
        other => panic!("expected a refusal, got {other:?}"),
    };
    c.send(&with_token(1, 1, None)).await;
    assert!(refused(c.recv().await).contains("required"));

    let valid = JoinToken {
        swarm: swarm(1),
        expires: now() + 60,
        peer: None,
        seed: false,
    };
    let expired = JoinToken {
        expires: now() - 1,
        ..valid
    };
    let other_swarm = JoinToken {
        swarm: swarm(2),
        ..valid
    };
    let other_peer = JoinToken {
        peer: Some(peer(9)),
        ..valid
    };
    for (token, secret, why) in [
        (expired, SECRET, "expired"),
        (other_swarm, SECRET, "another swarm"),
        (other_peer, SECRET, "another peer"),
        (valid, [9; 32], "trusted key"),
    ] {
        c.send(&with_token(1, 1, Some(token.sign(&secret)))).await;
        let reason = refused(c.recv().await);
        assert!(reason.contains(why), "{reason}");
    }
    c.send(&with_token(1, 1, Some("zz".into()))).await;
    assert!(refused(c.recv().await).contains("malformed"));

    c.send(&with_token(1, 1, Some(valid.sign(&SECRET)))).await;
    assert!(matches!(c.recv().await, FromTracker::AnnounceResponse(_)));
    // A token for the all-zero swarm (a seed's standby token) admits to every swarm, within
    // its peer binding.
    let any_swarm = JoinToken {
        swarm: swarmcdn_core::ids::SwarmId([0; 20]),
        ..valid
    };
    c.send(&with_token(1, 1, Some(any_swarm.sign(&SECRET))))
        .await;
    assert!(matches!(c.recv().await, FromTracker::AnnounceResponse(_)));
    let any_other_peer = JoinToken {
        peer: Some(peer(9)),
        ..any_swarm
    };
    c.send(&with_token(1, 1, Some(any_other_peer.sign(&SECRET))))
        .await;
    assert!(refused(c.recv().await).contains("another peer"));
    let bound = JoinToken {
        peer: Some(peer(1)),
        ..valid
    };
    c.send(&with_token(1, 1, Some(bound.sign(&SECRET)))).await;
    assert!(matches!(c.recv().await, FromTracker::AnnounceResponse(_)));

    // The seed role needs a seed token (or one for every swarm).
    let as_seed = |token: &JoinToken| {
        let ToTracker::Announce(mut a) = with_token(1, 1, Some(token.sign(&SECRET))) else {
            unreachable!()
        };
        a.ext.as_mut().unwrap().role = Some(Role::Seed);
        ToTracker::Announce(a)
    };
    c.send(&as_seed(&valid)).await;
    assert!(refused(c.recv().await).contains("seed token"));
    c.send(&as_seed(&JoinToken {
        seed: true,
        ..valid
    }))
    .await;
    assert!(matches!(c.recv().await, FromTracker::AnnounceResponse(_)));
    c.send(&as_seed(&any_swarm)).await;
    assert!(matches!(c.recv().await, FromTracker::AnnounceResponse(_)));

    // Swarm ids are secret: a scrape must name its swarms.
    c.send(&ToTracker::Scrape(Default::default())).await;
    assert!(refused(c.recv().await).contains("name its swarms"));
    c.send(&ToTracker::Scrape(swarmcdn_core::tracker_proto::Scrape {
        info_hashes: vec![swarm(1)],
    }))
    .await;
    assert!(matches!(c.recv().await, FromTracker::Scrape(_)));

    // Leaving needs no token.
    let ToTracker::Announce(mut stop) = announce(1, 1, 0) else {
        unreachable!()
    };
    stop.event = Some(AnnounceEvent::Stopped);
    c.send(&ToTracker::Announce(stop)).await;
    assert!(matches!(c.recv().await, FromTracker::AnnounceResponse(_)));
}

#[test]
fn required_tokens_need_a_key() {
    let err = Config::from_toml("[tokens]\nrequired = true").unwrap_err();
    assert!(format!("{err:#}").contains("tokens.keys"), "{err:#}");
    assert!(Config::from_toml("[tokens]\nkeys = [\"xyz\"]").is_err());
}

/// Seeds on standby need a token for the all-zero swarm id; with it, a viewer that names its
/// stream in a swarm without a seed makes the tracker ask the seed.
#[tokio::test]
async fn standby_seeds_need_a_token_and_get_demands() {
    use swarmcdn_core::ids::SwarmId;
    use swarmcdn_core::tracker_proto::Standby;
    let mut config = Config::default();
    config.tokens.required = true;
    config.tokens.keys = vec![DigestSigner::from_secret(SECRET).public_key().to_string()];
    let server = start(config).await;
    let mut seed = Client::connect(server.addr).await;
    let standby = |token: Option<String>| {
        ToTracker::Standby(Standby {
            peer_id: peer(50),
            ext: Some(PeerInfo {
                token,
                ..PeerInfo::default()
            }),
        })
    };
    seed.send(&standby(None)).await;
    assert!(
        matches!(seed.recv().await, FromTracker::Error(e) if e.failure_reason.contains("required"))
    );
    // A token for one swarm is not a standby token.
    let one_swarm = JoinToken {
        swarm: swarm(1),
        expires: now() + 60,
        peer: None,
        seed: false,
    };
    seed.send(&standby(Some(one_swarm.sign(&SECRET)))).await;
    assert!(matches!(seed.recv().await, FromTracker::Error(_)));
    let any = JoinToken {
        swarm: SwarmId([0; 20]),
        ..one_swarm
    };
    seed.send(&standby(Some(any.sign(&SECRET)))).await;
    assert!(seed.silent().await, "standby has no reply");

    let mut viewer = Client::connect(server.addr).await;
    let ToTracker::Announce(mut a) = announce(1, 1, 0) else {
        unreachable!()
    };
    a.ext = Some(PeerInfo {
        token: Some(one_swarm.sign(&SECRET)),
        stream: Some("http://origin.example/live/master.m3u8".into()),
        ..PeerInfo::default()
    });
    viewer.send(&ToTracker::Announce(a)).await;
    assert!(matches!(
        viewer.recv().await,
        FromTracker::AnnounceResponse(_)
    ));
    match seed.recv().await {
        FromTracker::Demand(d) => {
            assert_eq!(d.info_hash, swarm(1));
            assert_eq!(d.stream, "http://origin.example/live/master.m3u8");
        }
        other => panic!("expected a demand, got {other:?}"),
    }
    let (_, metrics) = http_get(server.addr, "/metrics").await;
    assert!(
        metrics.contains("swarmcdn_tracker_standby_seeds 1"),
        "{metrics}"
    );
    assert!(metrics.contains("swarmcdn_tracker_seed_demands_total 1"));
}
