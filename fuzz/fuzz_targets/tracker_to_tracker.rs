//! Client-to-tracker messages (what the tracker decodes): decode or fail cleanly; whatever
//! decodes round-trips through its encoding; text decodes the same as its bytes (the tracker
//! decodes WebSocket text with `from_json_str`); an announce's offers, decoded when relayed,
//! decode or fail cleanly too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmcdn_core::tracker_proto::ToTracker;

fuzz_target!(|data: &[u8]| {
    let decoded = ToTracker::from_json(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let from_text = ToTracker::from_json_str(text);
        match (&decoded, &from_text) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            _ => panic!("bytes and text decode differently: {decoded:?} {from_text:?}"),
        }
    }
    if let Ok(msg) = decoded {
        if let ToTracker::Announce(a) = &msg {
            let _ = a.offers.to_vec();
        }
        let json = msg.to_json();
        if json.len() <= swarmcdn_core::tracker_proto::MAX_MESSAGE_LEN {
            assert_eq!(
                ToTracker::from_json(json.as_bytes()).expect("re-encoded decodes"),
                msg
            );
        }
    }
});
