//! A viewer whose uplink is near the stream rate keeps about a tenth of a second of data
//! queued in its DataChannels, not the 256 KiB bound (0.7 s at 3 Mbit/s). A request that
//! reaches it waits behind what is queued, and so does every chunk relayed on from that
//! request: with the full bound, every relay hop cost most of a second (decision 0014).

mod common;

use common::*;
use swarmcdn_core::time::Time;

#[test]
fn slow_uplinks_queue_a_tenth_of_a_second() {
    let mut h = Harness::new(StreamSpec::live(), 5);
    // 500 KB per 2 s segment: 250 KB/s; the viewers upload at the stream rate.
    h.add_viewers(8, 250_000, |_| {});
    // Once the uplinks are measured.
    h.run_until(Time::from_secs(40));
    for n in &mut h.nodes {
        n.peak_send_queued = 0;
    }
    h.run_until(Time::from_secs(120));
    println!("{}", h.summary());
    let mut busy = 0;
    for v in h.viewers() {
        let c = v.node.config();
        // 25 KB at the measured rate is under the floor of twice the low-water mark; one
        // message (a chunk, with the segment's digest) may go over.
        let bound = 2 * c.send_buffer_low + 64 * 1024 + 4 * 1024;
        assert!(
            v.peak_send_queued <= bound,
            "{} bytes queued at once on a 250 KB/s uplink (bound {bound})",
            v.peak_send_queued
        );
        busy += usize::from(v.peak_send_queued > 0);
    }
    assert!(busy >= 4, "only {busy} viewers uploaded");
    assert_eq!(h.total_stalls(), 0);
    assert_eq!(h.bad_bytes(), 0);
    let share = h.p2p_share();
    assert!(share > 0.6, "P2P share {share:.3}");
}
