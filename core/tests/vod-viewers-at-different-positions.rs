//! VOD with viewers who started at different times: later viewers fetch what earlier ones
//! already played from them, the origin sends each segment about once, nobody stalls.

mod common;

use common::*;
use swarmcdn_core::node::NodeRole;
use swarmcdn_core::time::Time;

#[test]
fn vod_viewers_at_different_positions() {
    let mut h = Harness::new(StreamSpec::vod(90), 9);
    let mut viewers = Vec::new();
    for i in 0..4 {
        let c = h.config(i, NodeRole::Viewer);
        viewers.push(h.add(c, Link::default()));
        h.run_for(secs(20));
    }
    h.run_until(Time::from_secs(170));
    println!("{}", h.summary());
    assert_eq!(h.total_stalls(), 0, "{}", h.summary());
    assert_eq!(h.bad_bytes(), 0);
    // Everyone is at a different place in the video.
    let heads: Vec<u64> = viewers
        .iter()
        .map(|&v| h.nodes[v].player.as_ref().unwrap().playhead)
        .collect();
    assert!(heads.windows(2).all(|w| w[0] > w[1] + 5), "{heads:?}");
    // The later viewers get most of their bytes from the earlier ones.
    for &v in &viewers[1..] {
        let p = h.nodes[v].player.as_ref().unwrap();
        let share = p.p2p_bytes as f64 / (p.p2p_bytes + p.http_bytes) as f64;
        assert!(
            share >= 0.8,
            "viewer {v}: p2p share {share:.2}: {}",
            h.summary()
        );
    }
    let copies = h.mean_copies(2..60);
    assert!(copies <= 1.3, "origin copies per segment {copies:.2}");
}
