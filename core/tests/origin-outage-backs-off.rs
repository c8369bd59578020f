//! The origin fails for a while: nodes retry each segment with exponential backoff instead
//! of hammering it, and playback resumes when it comes back.

mod common;

use common::*;
use swarmcdn_core::node::NodeRole;
use swarmcdn_core::time::Time;

#[test]
fn origin_outage_backs_off_and_recovers() {
    let mut h = Harness::new(StreamSpec::live(), 12);
    for i in 0..3 {
        let c = h.config(i, NodeRole::Viewer);
        h.add(c, Link::default());
    }
    h.run_until(Time::from_secs(20));
    assert_eq!(h.total_stalls(), 0, "{}", h.summary());
    let delivered: usize = h
        .viewers()
        .map(|v| v.player.as_ref().unwrap().delivered.len())
        .sum();

    h.origin.down = true;
    h.run_until(Time::from_secs(50));
    let failed = h.origin.failed_requests;
    // 3 viewers, 30 s, a few segments each: with backoff up to 4 s, far fewer than one try per
    // millisecond (a tight loop would make tens of thousands).
    println!("failed requests during the outage: {failed}");
    assert!(failed > 0, "the outage was noticed");
    assert!(
        failed < 3 * 4 * 30,
        "{failed} failed requests in 30 s: no backoff"
    );

    h.origin.down = false;
    h.run_until(Time::from_secs(90));
    println!("{}", h.summary());
    let after: usize = h
        .viewers()
        .map(|v| v.player.as_ref().unwrap().delivered.len())
        .sum();
    assert!(
        after > delivered + 3 * 10,
        "playback resumed: {}",
        h.summary()
    );
    assert_eq!(h.bad_bytes(), 0);
}
