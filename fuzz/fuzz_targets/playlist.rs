//! The peer node's HLS playlist parsing (`peer-node/src/hls.rs`, on top of `m3u8-rs`): any
//! bytes served as a master or media playlist parse or fail with an error, never a panic, and
//! what parses is playable (ranges non-empty, sequences in order, durations bounded).
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmcdn_core::ids::{RenditionAttributes, RenditionId};
use url::Url;

// The module is compiled here on its own, so that the fuzz build does not pull in the peer
// node's WebRTC and libp2p stacks.
#[allow(dead_code)]
#[path = "../../peer-node/src/hls.rs"]
mod hls;

fuzz_target!(|data: &[u8]| {
    let url = Url::parse("http://origin.example/live/index.m3u8").expect("a valid URL");
    if let Ok(stream) = hls::parse_stream(&url, data, None) {
        assert!(!stream.renditions.is_empty());
    }
    let rendition = RenditionId::from_attributes(&RenditionAttributes::default());
    if let Ok(media) = hls::parse_media(&url, data, rendition) {
        for pair in media.segments.windows(2) {
            assert!(pair[0].sequence < pair[1].sequence);
        }
        for s in &media.segments {
            if let Some(r) = &s.location.range {
                assert!(r.start < r.end);
            }
            assert!(s.duration.as_secs() <= 3600);
        }
    }
});
