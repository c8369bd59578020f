//! Varints: decode or fail cleanly; a decoded value re-encodes to the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmcdn_core::varint;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    if let Ok(v) = varint::get(&mut buf) {
        let mut out = Vec::new();
        varint::put(&mut out, v);
        assert_eq!(out, &data[..data.len() - buf.len()]);
    }
});
