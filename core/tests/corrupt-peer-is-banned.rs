//! A neighbour sends corrupt chunks: no bad byte reaches any player, the liar is dropped and
//! banned, and every segment still completes in time.

mod common;

use common::*;
use swarmcdn_core::node::NodeRole;
use swarmcdn_core::time::Time;

#[test]
fn corrupt_peer_is_banned() {
    let mut h = Harness::new(StreamSpec::live(), 4);
    // The liar joins first and has the fattest uplink, so it is everyone's favourite source.
    let c = h.config(0, NodeRole::Viewer);
    let liar = h.add(
        c,
        Link {
            up: 20_000_000,
            ..Link::default()
        },
    );
    h.nodes[liar].corrupt_uploads = true;
    h.run_for(secs(5));
    let mut victims = Vec::new();
    for i in 1..=4 {
        let c = h.config(i, NodeRole::Viewer);
        victims.push(h.add(c, Link::default()));
        h.run_for(ms(200));
    }
    h.run_until(Time::from_secs(90));
    println!("{}", h.summary());
    assert_eq!(h.bad_bytes(), 0, "a corrupt byte reached a player");
    let liar_id = h.nodes[liar].id;
    let mut caught = 0;
    for &v in &victims {
        let n = &h.nodes[v];
        let p = n.player.as_ref().unwrap();
        assert_eq!(p.stalls, 0, "{}", h.summary());
        assert_eq!(n.node.stats().late_segments, 0, "{}", h.summary());
        assert!(
            !n.node.connected_peers().any(|p| p == liar_id),
            "liar still connected"
        );
        if n.dropped
            .iter()
            .any(|(p, r)| *p == liar_id && r.contains("Integrity"))
        {
            caught += 1;
            assert!(n.integrity_failures > 0);
        }
    }
    assert_eq!(
        caught,
        victims.len(),
        "every victim caught the liar: {}",
        h.summary()
    );
    // Honest neighbours are never blamed: they stay connected to each other.
    for &v in &victims {
        assert!(h.nodes[v].node.stats().peers >= 2, "{}", h.summary());
        assert!(h.nodes[v].dropped.iter().all(|(p, _)| *p == liar_id));
    }
    // Banned: the liar never gets back in, although the tracker keeps offering it.
    let liar_peers = h.nodes[liar].node.stats().peers;
    assert!(liar_peers <= victims.len() - caught, "{}", h.summary());
}
