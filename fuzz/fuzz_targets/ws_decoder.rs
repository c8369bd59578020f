//! The tracker's WebSocket decoder: any bytes, cut anywhere, never panic, and decode to the
//! same messages, pings, pongs, closes and error however the stream is cut; no message is
//! larger than the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmcdn_tracker::ws::{Decoder, Incoming, WsError};

const LIMIT: usize = 4096;

fn decode_all(stream: &[u8], step: usize) -> (Vec<Incoming>, Option<WsError>) {
    let mut d = Decoder::new(LIMIT);
    let mut got = Vec::new();
    for piece in stream.chunks(step) {
        d.extend(piece);
        loop {
            match d.decode() {
                Ok(Some(ev)) => {
                    if let Incoming::Message(m) = &ev {
                        assert!(m.len() <= LIMIT);
                    }
                    got.push(ev);
                }
                Ok(None) => break,
                Err(e) => return (got, Some(e)),
            }
        }
    }
    (got, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let whole = decode_all(stream, stream.len().max(1));
    let pieces = decode_all(stream, usize::from(cut).max(1));
    assert_eq!(whole, pieces);
});
