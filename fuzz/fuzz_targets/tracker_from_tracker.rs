//! Tracker-to-client messages (what peers decode): decode or fail cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmcdn_core::tracker_proto::FromTracker;

fuzz_target!(|data: &[u8]| {
    let _ = FromTracker::from_json(data);
});
