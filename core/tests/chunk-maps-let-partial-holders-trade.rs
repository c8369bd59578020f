//! Viewers whose uplinks barely exceed the stream rate, all relaying segments while they
//! arrive. With chunk maps (`Chunks` frames) each requester knows which chunks a neighbour
//! still receiving a segment holds, asks it only for those, and fetches the rarest chunks
//! first, so that neighbours end up with different chunks to trade. Without them, a
//! neighbour announced at its first chunk looks whole: requests for its missing chunks get
//! `Busy`, and the swarm falls back to the origin more often.

mod common;

use common::*;
use swarmcdn_core::time::Time;

fn run(chunk_maps: bool) -> (f64, u32, u64) {
    let mut h = Harness::new(StreamSpec::live(), 1);
    // 500 KB per 2 s segment: 250 KB/s; the viewers upload 1.5x that.
    h.add_viewers(10, 375_000, |c| {
        c.chunk_maps = chunk_maps;
    });
    h.run_until(Time::from_secs(150));
    let origin = h.origin.bytes;
    (h.p2p_share(), h.total_stalls(), origin)
}

#[test]
fn chunk_maps_raise_the_share_from_peers() {
    let (with, stalls, origin_with) = run(true);
    let (without, stalls_without, origin_without) = run(false);
    println!(
        "P2P share: with chunk maps {with:.3} ({stalls} stalls, {origin_with} origin bytes), \
         without {without:.3} ({stalls_without} stalls, {origin_without} origin bytes)"
    );
    assert_eq!(stalls, 0);
    assert_eq!(stalls_without, 0);
    // Measured (seed 1): 0.813 against 0.787, and 12% fewer origin bytes. Seeds 1-6 gain
    // 0.003 to 0.026 and 2-12% of the origin's bytes since the uplink is measured in segment
    // bytes (decision 0016; before, 0.017 to 0.038 and 11-16%, with seed 5 at 0.850 against
    // 0.833; before send queues were bounded by the uplink's time, decision 0014, 0.43
    // against 0.37).
    assert!(
        with > without + 0.01,
        "with chunk maps {with:.3}, without {without:.3}"
    );
    assert!(
        origin_with * 100 < origin_without * 96,
        "origin bytes: with chunk maps {origin_with}, without {origin_without}"
    );
}
