//! A live stream with two renditions, one seed and viewers on each: the seed follows both,
//! every viewer gets almost all its bytes from peers, and the origin sends about one copy of
//! each segment of each rendition.

mod common;

use common::*;
use swarmcdn_core::node::NodeRole;
use swarmcdn_core::time::Time;

#[test]
fn live_two_renditions_one_seed() {
    let mut h = Harness::new(StreamSpec::live(), 14);
    h.origin.renditions = vec![RENDITION, RENDITION_B];
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
    for i in 1..=6 {
        let c = h.config(i, NodeRole::Viewer);
        let v = h.add(c, Link::default());
        if i % 2 == 0 {
            h.nodes[v].player.as_mut().unwrap().rendition = RENDITION_B;
        }
    }
    h.run_until(Time::from_secs(122));
    println!("{}", h.summary());

    assert_eq!(h.total_stalls(), 0, "{}", h.summary());
    assert_eq!(h.bad_bytes(), 0);
    for v in h.viewers() {
        let p = v.player.as_ref().unwrap();
        assert!(p.delivered.len() >= 55, "{}", h.summary());
        let share = p.p2p_bytes as f64 / (p.p2p_bytes + p.http_bytes) as f64;
        assert!(share >= 0.9, "p2p share {share:.3}: {}", h.summary());
    }
    // Two renditions: about two origin copies per sequence number.
    let first = h.origin.spec.first_sequence + 5;
    let last = h.origin.edge(h.now) - 2;
    let copies = h.mean_copies(first..last);
    assert!(
        copies < 2.5,
        "origin copies per sequence {copies:.2}: {}",
        h.summary()
    );
}
