//! The tracker disappears: playback goes on over HTTP and the neighbours already connected;
//! a viewer joining during the outage plays from HTTP alone; when the tracker returns, peers
//! find each other again.

mod common;

use common::*;
use swarmcdn_core::node::NodeRole;
use swarmcdn_core::time::Time;

#[test]
fn tracker_disappears() {
    let mut h = Harness::new(StreamSpec::live(), 5);
    let seed = h.config(0, NodeRole::Seed);
    h.add(
        seed,
        Link {
            up: 50_000_000,
            ..Link::default()
        },
    );
    for i in 1..=4 {
        let c = h.config(i, NodeRole::Viewer);
        h.add(c, Link::default());
    }
    h.run_until(Time::from_secs(30));
    let p2p_before: u64 = h.viewers().map(|v| v.node.stats().p2p_bytes_down).sum();

    h.set_tracker(false);
    let c = h.config(5, NodeRole::Viewer);
    let late = h.add(c, Link::default());
    h.run_until(Time::from_secs(90));
    let p2p_during: u64 = h
        .viewers()
        .take(4)
        .map(|v| v.node.stats().p2p_bytes_down)
        .sum::<u64>()
        - p2p_before;
    assert!(
        p2p_during > 4 * 25 * 500_000,
        "existing neighbours kept serving: {}",
        h.summary()
    );
    let lp = h.nodes[late].player.as_ref().unwrap();
    assert!(
        lp.delivered.len() >= 28,
        "the late joiner played from HTTP: {}",
        h.summary()
    );
    assert_eq!(h.nodes[late].node.stats().peers, 0);

    h.set_tracker(true);
    h.run_until(Time::from_secs(150));
    println!("{}", h.summary());
    assert_eq!(h.total_stalls(), 0, "{}", h.summary());
    assert_eq!(h.bad_bytes(), 0);
    assert!(
        h.nodes[late].node.stats().peers > 0,
        "found peers once the tracker was back"
    );
}
