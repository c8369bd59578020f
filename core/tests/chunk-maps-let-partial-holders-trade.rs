//! Viewers whose uplinks barely exceed the stream rate, all relaying segments while they
//! arrive. With chunk maps (`Chunks` frames) each requester knows which chunks a neighbour
//! still receiving a segment holds, asks it only for those, and fetches the rarest chunks
//! first, so that neighbours end up with different chunks to trade. Without them, a
//! neighbour announced at its first chunk looks whole: requests for its missing chunks get
//! `Busy`, and the swarm falls back to the origin more often.

mod common;

use common::*;
use swarmcdn_core::time::Time;

fn run(chunk_maps: bool, seed: u64) -> (f64, u32, u64) {
    let mut h = Harness::new(StreamSpec::live(), seed);
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
    // Over eight seeds: one seed's gain is within the noise of matching.
    let (mut gain, mut origin_ratio) = (0.0, 0.0);
    for seed in 1..=8 {
        let (with, stalls, origin_with) = run(true, seed);
        let (without, stalls_without, origin_without) = run(false, seed);
        println!(
            "seed {seed}: P2P share with chunk maps {with:.3} ({origin_with} origin bytes), \
             without {without:.3} ({origin_without} origin bytes)"
        );
        assert_eq!((stalls, stalls_without), (0, 0), "seed {seed}");
        gain += (with - without) / 8.0;
        origin_ratio += origin_with as f64 / origin_without as f64 / 8.0;
    }
    println!("mean gain {gain:.4}, origin bytes with/without {origin_ratio:.3}");
    // Measured: a gain of 0.008 (from -0.002 to 0.021 by seed) and 4.8% fewer origin bytes.
    // Since a tracker offers a peer once at a time per offerer (decision 0020), both runs
    // gained 3-5 points (seed 1: 0.818 -> 0.852 with maps, 0.798 -> 0.848 without), and the
    // maps' margin narrowed (seed 1 gained 0.020 before). Earlier: 0.003 to 0.026 by seed
    // since the uplink is measured in segment bytes (decision 0016), 0.017 to 0.038 before;
    // 0.43 against 0.37 before send queues were bounded by the uplink's time (decision 0014).
    assert!(gain > 0.004, "mean gain of chunk maps {gain:.4}");
    assert!(
        origin_ratio < 0.97,
        "origin bytes with chunk maps / without {origin_ratio:.3}"
    );
}
