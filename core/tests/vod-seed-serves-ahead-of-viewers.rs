//! A seed following a VOD fetches the segments just ahead of where its neighbours are and
//! serves them: viewers who start at different times get most of their bytes from peers, the
//! seed does much of the uploading, and the origin sends each segment about once.

mod common;

use common::*;
use swarmcdn_core::node::NodeRole;
use swarmcdn_core::time::Time;

#[test]
fn vod_seed_serves_ahead_of_viewers() {
    let mut h = Harness::new(StreamSpec::vod(90), 12);
    let seed = h.config(0, NodeRole::Seed);
    let seed = h.add(
        seed,
        Link {
            up: 50_000_000,
            ..Link::default()
        },
    );
    let mut viewers = Vec::new();
    for i in 1..=3 {
        let c = h.config(i, NodeRole::Viewer);
        viewers.push(h.add(c, Link::default()));
        h.run_for(secs(15));
    }
    h.run_until(Time::from_secs(150));
    println!("{}", h.summary());
    assert_eq!(h.total_stalls(), 0, "{}", h.summary());
    assert_eq!(h.bad_bytes(), 0);
    for &v in &viewers {
        let p = h.nodes[v].player.as_ref().unwrap();
        let share = p.p2p_bytes as f64 / (p.p2p_bytes + p.http_bytes) as f64;
        assert!(
            share >= 0.7,
            "viewer {v}: p2p share {share:.2}: {}",
            h.summary()
        );
    }
    // The seed uploads at least as much as all the viewers together.
    let seed_up = h.nodes[seed].node.stats().p2p_bytes_up;
    let viewers_up: u64 = viewers
        .iter()
        .map(|&v| h.nodes[v].node.stats().p2p_bytes_up)
        .sum();
    assert!(
        seed_up >= viewers_up,
        "seed {seed_up} bytes up, viewers {viewers_up}: {}",
        h.summary()
    );
    let copies = h.mean_copies(2..60);
    assert!(copies <= 1.3, "origin copies per segment {copies:.2}");
}
