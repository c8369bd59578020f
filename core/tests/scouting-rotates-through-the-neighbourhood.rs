//! Four viewers of a live stream, no seed, all neighbours of each other, whose playlist
//! reloads fall at different phases of each segment (as players reloading on their own
//! timers): the new segments leave the origin about once, and fetching them rotates through
//! the four, so the viewer that sees new segments first does not carry the origin for the
//! others, and each gets most of its bytes from peers.

mod common;

use common::*;
use swarmcdn_core::node::NodeRole;
use swarmcdn_core::time::Time;

#[test]
fn scouting_rotates_through_the_neighbourhood() {
    let mut h = Harness::new(StreamSpec::live(), 7);
    let n = 4;
    for i in 0..n {
        let c = h.config(i, NodeRole::Viewer);
        h.add(
            c,
            Link {
                playlist_lag: ms(500 * i as u64),
                ..Link::default()
            },
        );
        h.run_for(ms(1300));
    }
    h.run_until(Time::from_secs(300));
    println!("{}", h.summary());
    assert_eq!(h.total_stalls(), 0, "{}", h.summary());
    assert_eq!(h.bad_bytes(), 0);

    let first = h.origin.spec.first_sequence + 10;
    let last = h.origin.edge(h.now) - 2;
    let copies = h.mean_copies(first..last);
    assert!(copies <= 1.2, "origin copies per segment {copies:.2}");

    // Each viewer fetched about a quarter of the segments from the origin: with 4 members
    // the rotation gives each exactly a quarter, and the rest is start-up (the first
    // segments, due at once) and the odd race.
    let shares: Vec<f64> = h
        .viewers()
        .filter_map(|v| v.player.as_ref())
        .map(|p| p.p2p_bytes as f64 / (p.http_bytes + p.p2p_bytes).max(1) as f64)
        .collect();
    println!("per-viewer p2p shares: {shares:.3?}");
    for (i, s) in shares.iter().enumerate() {
        assert!(*s >= 0.65, "viewer {i}: p2p share {s:.3} ({shares:.3?})");
    }
    let (lo, hi) = shares
        .iter()
        .fold((1.0f64, 0.0f64), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
    assert!(hi - lo <= 0.06, "uneven shares {shares:.3?}");
}
