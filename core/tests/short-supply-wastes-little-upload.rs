//! Viewers whose uplink is half the stream rate (u/r = 0.5, the simulator's S0 at its lowest
//! rate): every segment ends with an HTTP fallback for what peers could not bring, so what
//! matters is that what peers do upload arrives in time to be used.
//!
//! Two behaviours keep it so (found with the simulator, docs/simulations.md):
//! - a holder that shares a slow uplink sends each requester a chunk every second or two;
//!   requests to it are given up only after a few chunks' time at its measured rate, not after
//!   the fixed 1.5 s (which cancelled most requests with their data already queued);
//! - a request the holder would not finish before the segment's HTTP fallback is not sent.
//!
//! Before both, 77% of the bytes uploaded were thrown away on arrival and peers brought 9% of
//! the segments' bytes (simulator, N = 10).
//!
//! And the origin sends only what is missing: the fallback asks for each run of missing
//! chunks, not one range from the first to the last (which sent again what peers had brought
//! in between: 5% of the origin's bytes here, a fifth in the simulator).

mod common;

use common::*;
use swarmcdn_core::time::Time;

#[test]
fn short_supply_wastes_little_upload() {
    let mut h = Harness::new(StreamSpec::live(), 5);
    // 500 KB per 2 s segment: 250 KB/s; the viewers upload half that.
    h.add_viewers(8, 125_000, |_| {});
    h.run_until(Time::from_secs(150));
    let (uploaded, aborted) = h.viewers().fold((0, 0), |(u, a), n| {
        let s = n.node.stats();
        (u + s.p2p_bytes_up, a + s.aborted_p2p_bytes)
    });
    let share = h.p2p_share();
    let wasted = aborted as f64 / uploaded.max(1) as f64;
    println!(
        "P2P share {share:.3}; uploaded {uploaded} bytes, {aborted} thrown away ({wasted:.3}); {}",
        h.summary()
    );
    assert_eq!(h.total_stalls(), 0);
    assert_eq!(h.bad_bytes(), 0);
    assert!(wasted < 0.35, "{wasted:.3} of the upload thrown away");
    let (http, _) = h.viewer_bytes();
    let resent = h.origin.bytes as f64 / http.max(1) as f64 - 1.0;
    assert!(
        resent < 0.01,
        "the origin sent {resent:.3} more than the viewers used"
    );
    assert!(share > 0.2, "P2P share {share:.3}");
}
