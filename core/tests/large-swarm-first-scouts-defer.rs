//! Thirty viewers of a live stream and no seed, each with at most four neighbours: every
//! neighbourhood has a member whose scout weight is the highest it can see, and when each of
//! those fetched every new segment from the origin at once, the origin sent several whole
//! copies of each. A first scout that members it cannot see likely outrank
//! (`NodeConfig::scout_outranked_wait`) waits a little, and gets the segment from the
//! neighbours those members' chunks have reached: the origin sends far fewer copies, and
//! nobody stalls.

mod common;

use common::*;
use std::time::Duration;
use swarmcdn_core::node::NodeRole;
use swarmcdn_core::time::Time;

/// Origin copies per segment, stalls and P2P share of the swarm with first scouts that wait
/// `wait` when likely outranked.
fn run(wait: Duration) -> (f64, u32, f64) {
    let mut h = Harness::new(StreamSpec::live(), 3);
    let n = 30;
    for i in 0..n {
        let mut c = h.config(i, NodeRole::Viewer);
        c.max_peers = 4;
        c.scout_outranked_wait = wait;
        h.add(
            c,
            Link {
                playlist_lag: ms(37 * i as u64 % 1000),
                ..Link::default()
            },
        );
        h.run_for(ms(200));
    }
    h.run_until(Time::from_secs(150));
    assert_eq!(h.bad_bytes(), 0);
    let first = h.origin.spec.first_sequence + 10;
    let last = h.origin.edge(h.now) - 2;
    (h.mean_copies(first..last), h.total_stalls(), h.p2p_share())
}

#[test]
fn large_swarm_first_scouts_defer() {
    let (before, _, share_before) = run(Duration::ZERO);
    let (after, stalls, share) = run(Duration::from_secs(1));
    println!(
        "origin copies per segment: {before:.2} -> {after:.2}; p2p share {share_before:.3} -> {share:.3}"
    );
    assert_eq!(stalls, 0);
    assert!(after <= 0.7 * before, "copies {before:.2} -> {after:.2}");
    assert!(share > share_before);
}
