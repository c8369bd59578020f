//! The tracker's WebSocket frame marking (text frames read as binary): any bytes, cut
//! anywhere, never panic; the marking changes only opcode bits, the same however the stream
//! is cut, and only ever text (1) into binary (2).
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmcdn_tracker::readahead::TextAsBinary;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let mut whole = stream.to_vec();
    TextAsBinary::default().mark(&mut whole);
    let mut pieces = stream.to_vec();
    let mut marks = TextAsBinary::default();
    for piece in pieces.chunks_mut(usize::from(cut).max(1)) {
        marks.mark(piece);
    }
    assert_eq!(whole, pieces);
    for (before, after) in stream.iter().zip(&whole) {
        if before != after {
            assert_eq!((before & 0x0F, after & 0x0F), (1, 2));
            assert_eq!(before & 0xF0, after & 0xF0);
        }
    }
});
