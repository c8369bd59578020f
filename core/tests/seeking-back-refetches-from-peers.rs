//! A viewer that seeks back to segments it evicted gets them from its neighbours again: a
//! neighbour that was told the segment is gone sends its digest again with the data (the
//! viewer forgot the digest with the segment), and nobody is dropped.

mod common;

use common::*;
use swarmcdn_core::node::NodeRole;
use swarmcdn_core::time::Time;

#[test]
fn seeking_back_refetches_evicted_segments_from_peers() {
    let mut h = Harness::new(StreamSpec::vod(60), 11);
    let seed = h.config(0, NodeRole::Seed);
    h.add(
        seed,
        Link {
            up: 50_000_000,
            ..Link::default()
        },
    );
    let mut small = h.config(1, NodeRole::Viewer);
    // Room for a few 500 kB segments: what is played is evicted.
    small.cache_bytes = 2_000_000;
    let a = h.add(small, Link::default());
    let b = h.config(2, NodeRole::Viewer);
    h.add(b, Link::default());
    h.run_until(Time::from_secs(40));
    assert!(
        !h.nodes[a].node.has_segment(&segment(0)),
        "segment 0 is evicted"
    );

    // Seek back to the start once nothing is outstanding.
    while h.nodes[a].player.as_ref().unwrap().outstanding {
        h.run_for(ms(10));
    }
    let before = h.nodes[a].node.stats();
    let p = h.nodes[a].player.as_mut().unwrap();
    p.playhead = 0;
    p.into_segment = secs(0);
    p.buffer.clear();
    p.next_request = 0;
    h.run_for(secs(20));

    let after = h.nodes[a].node.stats();
    println!("{}", h.summary());
    for n in &h.nodes {
        assert!(n.dropped.is_empty(), "{:?}", n.dropped);
    }
    let played = &h.nodes[a].player.as_ref().unwrap().delivered;
    assert!(
        played.ends_with(&[0, 1, 2, 3]) || played.windows(4).any(|w| w == [0, 1, 2, 3]),
        "segments 0 to 3 played again: {played:?}"
    );
    let from_peers = after.p2p_bytes_down - before.p2p_bytes_down;
    let from_origin = after.http_bytes - before.http_bytes;
    assert!(
        // The first one or two have passed their deadline when asked (the buffer is empty):
        // those come from the origin.
        from_peers >= 10 * 500_000 && from_origin <= 2 * 500_000,
        "after the seek: {from_peers} bytes from peers, {from_origin} from the origin"
    );
    assert_eq!(h.bad_bytes(), 0);
}

fn segment(sequence: u64) -> swarmcdn_core::wire::SegmentRef {
    swarmcdn_core::wire::SegmentRef {
        rendition: RENDITION,
        sequence,
    }
}
