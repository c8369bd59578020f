//! A viewer that switches rendition (ABR) keeps playing without a stall, and its node fetches
//! the new rendition from where the player's buffer ends: the segments the player already
//! holds in the old rendition are not fetched again in the new one.

mod common;

use common::*;
use swarmcdn_core::node::NodeRole;
use swarmcdn_core::time::Time;

#[test]
fn abr_switch_fetches_only_what_plays() {
    let mut h = Harness::new(StreamSpec::vod(90), 13);
    h.origin.renditions = vec![RENDITION, RENDITION_B];
    let seed = h.config(0, NodeRole::Seed);
    h.add(
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
    }
    let x = viewers[0];
    h.run_until(Time::from_secs(40));
    let buffered = h.nodes[x].player.as_ref().unwrap().buffer.len();
    assert!(buffered >= 5, "a full buffer before the switch: {buffered}");
    let held = *h.nodes[x]
        .player
        .as_ref()
        .unwrap()
        .delivered
        .last()
        .unwrap();
    let http_before = h.nodes[x].node.stats().http_bytes;
    // Up a rung: the next requests are for the other rendition.
    h.nodes[x].player.as_mut().unwrap().rendition = RENDITION_B;
    h.load_playlists(x);
    h.run_until(Time::from_secs(100));

    println!("{}", h.summary());
    assert_eq!(h.total_stalls(), 0, "{}", h.summary());
    assert_eq!(h.bad_bytes(), 0);
    // The player held the old rendition up to `held` at the switch: none of those is
    // fetched again in the new one.
    let refetched: Vec<u64> = (0..=held)
        .filter(|&sequence| {
            h.nodes[x]
                .node
                .has_segment(&swarmcdn_core::wire::SegmentRef {
                    rendition: RENDITION_B,
                    sequence,
                })
        })
        .collect();
    assert!(
        refetched.is_empty(),
        "fetched again in the new rendition: {refetched:?} (held up to {held})"
    );
    let p = h.nodes[x].player.as_ref().unwrap();
    assert!(p.delivered.len() >= 45, "{}", h.summary());
    let http = h.nodes[x].node.stats().http_bytes - http_before;
    println!("over HTTP since the switch: {http} bytes");
}
