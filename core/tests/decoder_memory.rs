//! Decoders of remote input never allocate more than a small multiple of the input's size.
//!
//! A counting global allocator measures the peak of live heap bytes while one decode runs on
//! the current thread, for adversarial inputs that claim huge lengths and counts, and for
//! random inputs.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use proptest::prelude::*;
use swarmcdn_core::integrity::SignedDigest;
use swarmcdn_core::tracker_proto::{FromTracker, ToTracker};
use swarmcdn_core::varint;
use swarmcdn_core::wire::{self, decode_message};

struct Counting;

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = TRACK.try_with(|t| {
        if t.get() {
            LIVE.with(|l| {
                let v = l.get() + delta;
                l.set(v);
                PEAK.with(|p| p.set(p.get().max(v)));
            });
        }
    });
}

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as isize - layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Peak live bytes allocated by `f` on this thread (including what it returns).
fn peak_of<R>(f: impl FnOnce() -> R) -> usize {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    TRACK.with(|t| t.set(true));
    let r = f();
    TRACK.with(|t| t.set(false));
    drop(r);
    PEAK.with(|p| p.get()).max(0) as usize
}

/// The bound every decoder must hold: 8 bytes per input byte plus a fixed 16 KiB.
fn bound(input_len: usize) -> usize {
    8 * input_len + 16 * 1024
}

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint::put(&mut out, body.len() as u64 + 1);
    out.push(kind);
    out.extend_from_slice(body);
    out
}

#[test]
fn lying_lengths_and_counts_do_not_allocate() {
    // A digest claiming 1024 chunks with no hashes behind it.
    let mut digest = vec![0u8; 36];
    varint::put(&mut digest, 1024 * 1024);
    varint::put(&mut digest, 1024);
    let peak = peak_of(|| SignedDigest::decode(&digest));
    assert!(peak <= bound(digest.len()), "digest: {peak} bytes");

    // A have-delta claiming the maximum count of entries, twice, with nothing behind.
    let mut body = vec![0u8; 8];
    varint::put(&mut body, wire::MAX_DELTA_ENTRIES as u64);
    let msg = Bytes::from(frame(wire::kind::HAVE_DELTA, &body));
    let peak = peak_of(|| decode_message(&msg, wire::LARGE_MAX_MESSAGE));
    assert!(peak <= bound(msg.len()), "delta: {peak} bytes");

    // A message of the most tiny frames allowed.
    let mut many = Vec::new();
    for _ in 0..wire::MAX_FRAMES_PER_MESSAGE + 10 {
        many.extend(frame(0x40, &[]));
    }
    let msg = Bytes::from(many);
    let peak = peak_of(|| decode_message(&msg, wire::LARGE_MAX_MESSAGE));
    assert!(peak <= bound(msg.len()), "tiny frames: {peak} bytes");

    // JSON with a deeply nested value and a long array of numbers.
    let nested = format!(
        r#"{{"action":"announce","x":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let peak = peak_of(|| ToTracker::from_json(nested.as_bytes()));
    assert!(peak <= bound(nested.len()), "nested: {peak} bytes");
    let numbers = format!(
        r#"{{"action":"scrape","info_hash":[{}]}}"#,
        vec!["1"; 20_000].join(",")
    );
    let peak = peak_of(|| ToTracker::from_json(numbers.as_bytes()));
    assert!(peak <= bound(numbers.len()), "numbers: {peak} bytes");
}

proptest! {
    #[test]
    fn random_input_stays_within_the_bound(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let msg = Bytes::from(bytes.clone());
        let peak = peak_of(|| decode_message(&msg, wire::LARGE_MAX_MESSAGE));
        prop_assert!(peak <= bound(bytes.len()));
        let peak = peak_of(|| SignedDigest::decode(&bytes));
        prop_assert!(peak <= bound(bytes.len()));
        let peak = peak_of(|| (ToTracker::from_json(&bytes).ok(), FromTracker::from_json(&bytes).ok()));
        prop_assert!(peak <= bound(bytes.len()));
    }
}
