//! Signed segment digests relayed by peers: decode or fail cleanly; whatever decodes
//! re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmcdn_core::integrity::SignedDigest;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = SignedDigest::decode(data) {
        let mut out = Vec::new();
        d.encode(&mut out);
        assert_eq!(out, data);
    }
});
