//! The event queue: a timing wheel of 1 ms slots with an overflow heap for the far future.
//!
//! Time is virtual, in microseconds ([`swarmcdn_core::time::Time`]). Events are popped in
//! `(time, insertion order)` order exactly: the wheel only decides which slot's events are
//! next; the slot being drained is kept in a small heap, so events a few microseconds apart
//! inside one millisecond still come out in time order, and events at the same time come out
//! in the order they were pushed. That makes a run a pure function of its inputs and seed.
//!
//! Cost: push is O(1) into the wheel (O(log n) into the overflow heap for events more than
//! the horizon ahead); pop is O(log k) for k events in the current millisecond plus an
//! amortized scan of an occupancy bitmap to find the next non-empty slot. A binary heap over
//! all pending events costs O(log n) with poor locality, which dominates at millions of
//! pending events (see `benches/kernel.rs`).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// Microseconds per wheel slot.
pub const SLOT_MICROS: u64 = 1_000;

/// Slots in the wheel (a power of two): 65.5 s of horizon at 1 ms per slot.
pub const SLOTS: usize = 1 << 16;

const WORDS: usize = SLOTS / 64;

struct Entry<E> {
    at: u64,
    seq: u64,
    ev: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<E> Eq for Entry<E> {}

impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A deterministic priority queue of events keyed by virtual time in microseconds.
pub struct EventQueue<E> {
    /// The slot being drained (absolute index: time / SLOT_MICROS).
    slot: u64,
    /// Events of `slot`, in exact order.
    current: BinaryHeap<Reverse<Entry<E>>>,
    /// Events of the next `SLOTS - 1` slots, unordered within a slot.
    wheel: Vec<Vec<Entry<E>>>,
    /// One bit per wheel slot: non-empty.
    occupied: Vec<u64>,
    /// Events at or beyond the horizon.
    overflow: BinaryHeap<Reverse<Entry<E>>>,
    seq: u64,
    len: usize,
    /// The time of the last event popped; pushes before it are clamped to it.
    now: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> EventQueue<E> {
    /// An empty queue at time zero.
    pub fn new() -> Self {
        Self {
            slot: 0,
            current: BinaryHeap::new(),
            wheel: (0..SLOTS).map(|_| Vec::new()).collect(),
            occupied: vec![0; WORDS],
            overflow: BinaryHeap::new(),
            seq: 0,
            len: 0,
            now: 0,
        }
    }

    /// Events pending.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no event is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The time of the last event popped.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Schedules `ev` at `at` microseconds. An event in the past is scheduled now (after the
    /// events already queued for now).
    pub fn push(&mut self, at: u64, ev: E) {
        let at = at.max(self.now);
        let seq = self.seq;
        self.seq += 1;
        self.len += 1;
        let entry = Entry { at, seq, ev };
        let slot = at / SLOT_MICROS;
        if slot <= self.slot {
            // The slot being drained (or, after a peek, an earlier one not yet reached by
            // `now`): exact order comes from the heap.
            self.current.push(Reverse(entry));
        } else if slot - self.slot < SLOTS as u64 {
            let i = (slot as usize) & (SLOTS - 1);
            self.wheel[i].push(entry);
            self.occupied[i / 64] |= 1 << (i % 64);
        } else {
            self.overflow.push(Reverse(entry));
        }
    }

    /// The time of the next event, if any.
    pub fn peek_time(&mut self) -> Option<u64> {
        if self.current.is_empty() && !self.advance() {
            return None;
        }
        self.current.peek().map(|Reverse(e)| e.at)
    }

    /// Removes and returns the next event with its time.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        if self.current.is_empty() && !self.advance() {
            return None;
        }
        let Reverse(e) = self.current.pop()?;
        self.len -= 1;
        self.now = e.at;
        Some((e.at, e.ev))
    }

    /// Moves to the next non-empty slot and loads it into `current`. False if nothing is
    /// pending.
    fn advance(&mut self) -> bool {
        if self.len == 0 {
            return false;
        }
        loop {
            if let Some(next) = self.next_occupied() {
                self.slot = next;
                let i = (next as usize) & (SLOTS - 1);
                self.occupied[i / 64] &= !(1 << (i % 64));
                let events = std::mem::take(&mut self.wheel[i]);
                self.current.extend(events.into_iter().map(Reverse));
                // The slot's buffer goes with it: kept, each of the 65 536 slots would hold
                // the capacity of the busiest millisecond it ever saw (recycling emptied
                // buffers through a free list was measured: 2.7x the heap at 2000 viewers).
                self.pull_overflow();
                if !self.current.is_empty() {
                    return true;
                }
                continue;
            }
            // The wheel is empty: jump to the overflow's first slot.
            let Some(Reverse(first)) = self.overflow.peek() else {
                return false;
            };
            self.slot = first.at / SLOT_MICROS;
            self.pull_overflow();
            if !self.current.is_empty() {
                return true;
            }
        }
    }

    /// Moves overflow events that are now within the horizon into the wheel (or `current`).
    fn pull_overflow(&mut self) {
        while let Some(Reverse(first)) = self.overflow.peek() {
            let slot = first.at / SLOT_MICROS;
            if slot.saturating_sub(self.slot) >= SLOTS as u64 {
                break;
            }
            let Reverse(e) = self.overflow.pop().expect("peeked just above");
            if slot <= self.slot {
                self.current.push(Reverse(e));
            } else {
                let i = (slot as usize) & (SLOTS - 1);
                self.wheel[i].push(e);
                self.occupied[i / 64] |= 1 << (i % 64);
            }
        }
    }

    /// The absolute index of the first occupied slot after `self.slot`, within the horizon.
    fn next_occupied(&self) -> Option<u64> {
        let start = ((self.slot + 1) as usize) & (SLOTS - 1);
        // Scan the ring from `start`, wrapping once.
        let mut word = start / 64;
        let mut mask = !0u64 << (start % 64);
        for step in 0..=WORDS {
            let bits = self.occupied[word] & mask;
            if bits != 0 {
                let i = word * 64 + bits.trailing_zeros() as usize;
                let ahead = (i + SLOTS - start) % SLOTS;
                return Some(self.slot + 1 + ahead as u64);
            }
            word = (word + 1) % WORDS;
            mask = !0;
            if step == WORDS {
                break;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pops_in_time_then_insertion_order() {
        let mut q = EventQueue::new();
        q.push(5_000, "c");
        q.push(10, "a");
        q.push(5_000, "d");
        q.push(999, "b");
        q.push(100_000_000, "f");
        q.push(70_000_000, "e");
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            order,
            vec![
                (10, "a"),
                (999, "b"),
                (5_000, "c"),
                (5_000, "d"),
                (70_000_000, "e"),
                (100_000_000, "f")
            ]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn past_events_run_now_after_queued_ones() {
        let mut q = EventQueue::new();
        q.push(2_000, 1);
        q.push(2_000, 2);
        assert_eq!(q.pop(), Some((2_000, 1)));
        q.push(0, 3);
        assert_eq!(q.pop(), Some((2_000, 2)));
        assert_eq!(q.pop(), Some((2_000, 3)));
    }

    #[test]
    fn wraps_around_the_wheel_many_times() {
        let mut q = EventQueue::new();
        let mut t = 0;
        for i in 0..10_000u64 {
            t += 37_123 + i % 1000;
            q.push(t, i);
        }
        let mut last = 0;
        let mut n = 0;
        while let Some((at, _)) = q.pop() {
            assert!(at >= last);
            last = at;
            n += 1;
        }
        assert_eq!(n, 10_000);
    }

    proptest! {
        /// Same order as a sort by (time, insertion), with pushes interleaved with pops.
        #[test]
        fn matches_a_sorted_reference(ops in proptest::collection::vec((0u64..200_000_000, any::<bool>()), 1..400)) {
            let mut q = EventQueue::new();
            let mut reference: Vec<(u64, usize)> = Vec::new();
            let mut now = 0;
            for (i, (delta, pop)) in ops.into_iter().enumerate() {
                if pop && !reference.is_empty() {
                    reference.sort();
                    let want = reference.remove(0);
                    let got = q.pop().unwrap();
                    prop_assert_eq!(got, want);
                    now = want.0;
                } else {
                    let at = now + delta % (if i % 3 == 0 { 2_000 } else { 200_000_000 });
                    q.push(at, i);
                    reference.push((at, i));
                }
            }
            reference.sort();
            for want in reference {
                prop_assert_eq!(q.pop().unwrap(), want);
            }
            prop_assert!(q.pop().is_none());
        }
    }
}
