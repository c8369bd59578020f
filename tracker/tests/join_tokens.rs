//! With join tokens required, an announce needs a valid token for its swarm: missing, expired,
//! forged, other-swarm and other-peer tokens are refused with a failure reason.

mod common;

use common::*;
use swarmcdn_core::integrity::DigestSigner;
use swarmcdn_core::token::JoinToken;
use swarmcdn_core::tracker_proto::{AnnounceEvent, FromTracker, PeerInfo, ToTracker};
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
    let bound = JoinToken {
        peer: Some(peer(1)),
        ..valid
    };
    c.send(&with_token(1, 1, Some(bound.sign(&SECRET)))).await;
    assert!(matches!(c.recv().await, FromTracker::AnnounceResponse(_)));

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
