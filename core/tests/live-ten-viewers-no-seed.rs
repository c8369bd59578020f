//! Ten viewers of a live stream and no seed: each new segment leaves the origin about once
//! (a few viewers scout it, the rest get it from them), and the viewers' P2P share comes close
//! to the bound of a seedless swarm, 1 - 1/N.

mod common;

use common::*;
use swarmcdn_core::node::NodeRole;
use swarmcdn_core::time::Time;

#[test]
fn live_ten_viewers_no_seed() {
    let mut h = Harness::new(StreamSpec::live(), 2);
    let n = 10;
    for i in 0..n {
        let c = h.config(i, NodeRole::Viewer);
        h.add(c, Link::default());
        h.run_for(ms(300));
    }
    h.run_until(Time::from_secs(240));
    println!("{}", h.summary());

    assert_eq!(h.total_stalls(), 0, "{}", h.summary());
    assert_eq!(h.bad_bytes(), 0);
    for v in h.viewers() {
        assert_eq!(v.node.stats().late_segments, 0, "{}", h.summary());
    }
    let first = h.origin.spec.first_sequence + 10;
    let last = h.origin.edge(h.now) - 2;
    let copies = h.mean_copies(first..last);
    println!("origin copies per segment: {copies:.3}");
    assert!(copies <= 1.3, "origin copies per segment {copies:.2}");
    let bound = 1.0 - 1.0 / n as f64;
    let share = h.p2p_share();
    println!(
        "p2p share {share:.3}, bound {bound:.3}, ratio {:.3}",
        share / bound
    );
    assert!(
        share >= 0.9 * bound,
        "p2p share {share:.3} < 90% of {bound:.3}"
    );
}
