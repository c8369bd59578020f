//! The peer wire protocol decoder: any message must decode or fail cleanly, and whatever
//! decodes must re-encode to frames that decode to the same thing.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use swarmcdn_core::wire::{self, Frame};

fuzz_target!(|data: &[u8]| {
    let msg = Bytes::copy_from_slice(data);
    if let Ok(frames) = wire::decode_message(&msg, wire::LARGE_MAX_MESSAGE) {
        let known: Vec<Frame> = frames
            .into_iter()
            .filter(|f| !matches!(f, Frame::Unknown { .. }))
            .collect();
        if !known.is_empty() {
            let again = Bytes::from(wire::encode_frames(&known));
            let decoded =
                wire::decode_message(&again, usize::MAX).expect("re-encoded frames decode");
            assert_eq!(decoded, known);
        }
    }
});
