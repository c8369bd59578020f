//! Client-to-tracker messages (what the tracker decodes): decode or fail cleanly; whatever
//! decodes round-trips through its encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmcdn_core::tracker_proto::ToTracker;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = ToTracker::from_json(data) {
        let json = msg.to_json();
        if json.len() <= swarmcdn_core::tracker_proto::MAX_MESSAGE_LEN {
            assert_eq!(
                ToTracker::from_json(json.as_bytes()).expect("re-encoded decodes"),
                msg
            );
        }
    }
});
