//! Seed mesh messages from other seeds (gossip, segment requests and responses): decode or
//! fail cleanly; whatever decodes re-encodes to the same bytes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use swarmcdn_core::mesh_proto::{FetchRequest, FetchResponse, Gossip};

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = Gossip::decode(data) {
        assert_eq!(g.encode(), data);
    }
    if let Ok(r) = FetchRequest::decode(data) {
        assert_eq!(r.encode(), data);
    }
    if let Ok(r) = FetchResponse::decode(Bytes::copy_from_slice(data)) {
        assert_eq!(r.encode(), data);
    }
});
