//! One seed and five viewers of a live stream: every segment reaches every player before its
//! deadline, the origin sends about one copy of each segment, and the viewers get almost all
//! their bytes from peers.

mod common;

use common::*;
use swarmcdn_core::node::NodeRole;
use swarmcdn_core::time::Time;

#[test]
fn live_seed_and_five_viewers() {
    let mut h = Harness::new(StreamSpec::live(), 1);
    let seed = h.config(0, NodeRole::Seed);
    h.add(
        seed,
        Link {
            up: 50_000_000,
            down: 50_000_000,
            ..Link::default()
        },
    );
    h.run_for(secs(2));
    for i in 1..=5 {
        let c = h.config(i, NodeRole::Viewer);
        h.add(c, Link::default());
    }
    h.run_until(Time::from_secs(122));
    println!("{}", h.summary());

    assert_eq!(h.total_stalls(), 0, "{}", h.summary());
    assert_eq!(h.bad_bytes(), 0);
    for v in h.viewers() {
        let p = v.player.as_ref().unwrap();
        assert!(
            p.delivered.len() >= 55,
            "each viewer played ~60 segments: {}",
            h.summary()
        );
        assert_eq!(v.node.stats().late_segments, 0, "{}", h.summary());
    }
    // The origin: about one copy per segment once the swarm formed.
    let first = h.origin.spec.first_sequence + 5;
    let last = h.origin.edge(h.now) - 2;
    let copies = h.mean_copies(first..last);
    assert!(
        copies < 1.3,
        "origin copies per segment {copies:.2}: {}",
        h.summary()
    );
    // With a seed, the bound on the viewers' P2P share is 1; allow startup over HTTP.
    let share = h.p2p_share();
    assert!(share >= 0.95, "p2p share {share:.3}: {}", h.summary());
}
