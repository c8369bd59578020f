//! A seed serving more viewers at once than its send queue holds a chunk for each: its
//! writers must report each channel's buffer once it is empty (decision 0022). When they
//! reported only the low mark, each neighbour's last chunk stayed counted as queued, the
//! counts of eight neighbours filled the seed's send queue, and these viewers got 50% of
//! their bytes from the seed (91% now).

mod common;

use std::time::Duration;

use common::{Harness, metric, serial};

#[test]
fn a_seed_serves_eight_viewers_that_upload_nothing() {
    let _guard = serial();
    let h = Harness::start("fanout");
    let (_seed, metrics) = h.seed("seed");
    std::thread::sleep(Duration::from_secs(2));
    let mut viewers: Vec<_> = (0..8)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(300));
            h.viewer(&format!("viewer{i}"), 40, &["--no-upload"])
        })
        .collect();
    let (mut http, mut p2p) = (0, 0);
    for v in &mut viewers {
        let r = h.report(v);
        let name = v.name.clone();
        eprintln!(
            "{name}: startup {:?} ms, stalls {}, http {} p2p {} ({:.1}%), up {}",
            r.startup_ms,
            r.stalls,
            r.http_bytes,
            r.p2p_bytes,
            r.p2p_share() * 100.0,
            r.uploaded_bytes
        );
        assert_eq!(r.stalls, 0, "{name} stalled");
        assert_eq!(r.uploaded_bytes, 0, "{name} uploaded");
        http += r.http_bytes;
        p2p += r.p2p_bytes;
    }
    let share = p2p as f64 / (http + p2p) as f64;
    let served = metric(metrics, "swarmcdn_seed_served_bytes_total").unwrap_or(0.0);
    eprintln!(
        "from the seed: {:.1}% ({served} bytes served)",
        share * 100.0
    );
    // The first segments come from the origin (startup): about 9% over 40 s.
    assert!(
        share >= 0.8,
        "viewers got {share:.3} of their bytes from the seed"
    );
}
