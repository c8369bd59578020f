//! A neighbour leaves in the middle of a segment: the viewer finishes the segment over HTTP
//! byte ranges in time, keeping the chunks it already had, and never stalls.

mod common;

use common::*;
use swarmcdn_core::node::NodeRole;
use swarmcdn_core::time::Time;

#[test]
fn peer_leaves_mid_segment() {
    let mut h = Harness::new(StreamSpec::live(), 3);
    // A seed with a thin uplink, so that each segment takes a while to cross.
    let seed = h.config(0, NodeRole::Seed);
    let seed = h.add(
        seed,
        Link {
            up: 400_000,
            ..Link::default()
        },
    );
    h.run_for(secs(1));
    let c = h.config(1, NodeRole::Viewer);
    let viewer = h.add(c, Link::default());
    h.run_until(Time::from_secs(30));
    // Wait until the viewer is in the middle of a segment from the seed, then kill the seed.
    let mut killed = false;
    for _ in 0..2000 {
        h.run_for(ms(10));
        let st = h.nodes[viewer].node.stats();
        if !st.p2p_bytes_down.is_multiple_of(500_000) {
            h.kill(seed);
            killed = true;
            break;
        }
    }
    assert!(killed, "never caught a segment in flight: {}", h.summary());
    let before = h.nodes[viewer].player.as_ref().unwrap().mixed;
    h.run_until(Time::from_secs(80));
    println!("{}", h.summary());
    let p = h.nodes[viewer].player.as_ref().unwrap();
    assert_eq!(p.stalls, 0, "{}", h.summary());
    assert_eq!(p.bad_bytes, 0);
    assert!(
        p.mixed > before,
        "the interrupted segment was finished over HTTP, keeping P2P chunks"
    );
    assert_eq!(h.nodes[viewer].node.stats().late_segments, 0);
    assert!(p.delivered.len() >= 38, "{}", h.summary());
}
