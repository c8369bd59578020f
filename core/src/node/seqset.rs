//! A set of segment sequence numbers, as a bitmap over a window.
//!
//! What a neighbour has is a run of recent segments (a live viewer's cache) or a long run (a
//! seed's VOD): a bitmap from the lowest held sequence answers the scheduler's question (does
//! it have `s`?) with one shift, where the ordered set it replaces searched a tree for each
//! neighbour on every pass, and it holds a few words instead of a tree node per neighbour.

use smallvec::SmallVec;

/// Sequence numbers within a window of at most [`SeqSet::SPAN`], the newest kept.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SeqSet {
    /// The sequence of bit 0 of `words[0]`, a multiple of 64.
    base: u64,
    /// No zero word at either end. Two words (a window of up to 128 sequences, as a live
    /// viewer's) are held inline: the scheduler asks every neighbour's set on every pass, and
    /// a pointer to follow per neighbour was a cache miss per neighbour.
    words: SmallVec<[u64; 2]>,
    len: usize,
}

impl SeqSet {
    /// The widest window kept: a neighbour's `Have` bitmap spans at most this much.
    pub(crate) const SPAN: u64 = 8 * crate::wire::MAX_BITMAP_BYTES as u64;

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn contains(&self, s: u64) -> bool {
        let Some(off) = s.checked_sub(self.base) else {
            return false;
        };
        self.words
            .get((off / 64) as usize)
            .is_some_and(|w| w & (1 << (off % 64)) != 0)
    }

    /// The highest sequence held.
    pub(crate) fn last(&self) -> Option<u64> {
        let w = *self.words.last()?;
        Some(self.base + (self.words.len() as u64 - 1) * 64 + 63 - u64::from(w.leading_zeros()))
    }

    /// Adds `s`. A sequence that would stretch the window past [`Self::SPAN`] moves it: the
    /// oldest sequences are dropped, or `s` itself when it is the oldest.
    pub(crate) fn insert(&mut self, s: u64) {
        if self.words.is_empty() {
            self.base = s / 64 * 64;
            self.words.push(1 << (s % 64));
            self.len = 1;
            return;
        }
        let last = self.last().expect("not empty");
        if last.saturating_sub(s) >= Self::SPAN {
            return;
        }
        if s < self.base {
            let base = s / 64 * 64;
            let grow = ((self.base - base) / 64) as usize;
            self.words.insert_many(0, std::iter::repeat_n(0, grow));
            self.base = base;
        } else if s - self.base >= Self::SPAN {
            // Keep the newest: drop what falls out of a window ending at `s`.
            // `s - (SPAN - 1)`, not `s + 1 - SPAN`: `s` may be `u64::MAX`.
            let low = s - (Self::SPAN - 1);
            let drop = (((low - self.base) / 64) as usize).min(self.words.len());
            self.words.drain(..drop);
            self.base += drop as u64 * 64;
            if let Some(w) = self.words.first_mut()
                && low > self.base
            {
                *w &= !0 << (low - self.base);
            }
            self.trim();
            self.len = self.words.iter().map(|w| w.count_ones() as usize).sum();
            if self.words.is_empty() {
                return self.insert(s);
            }
        }
        let off = s - self.base;
        let i = (off / 64) as usize;
        if i >= self.words.len() {
            self.words.reserve_exact(i + 1 - self.words.len());
            self.words.resize(i + 1, 0);
        }
        let bit = 1 << (off % 64);
        if self.words[i] & bit == 0 {
            self.words[i] |= bit;
            self.len += 1;
        }
    }

    pub(crate) fn remove(&mut self, s: u64) {
        if self.contains(s) {
            self.clear(s);
        }
    }

    /// Keeps the sequences for which `f` is true.
    pub(crate) fn retain(&mut self, mut f: impl FnMut(u64) -> bool) {
        for (i, w) in self.words.iter_mut().enumerate() {
            let mut bits = *w;
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                if !f(self.base + i as u64 * 64 + u64::from(b)) {
                    *w &= !(1 << b);
                    self.len -= 1;
                }
            }
        }
        self.trim();
    }

    /// Clears `s`, which is held.
    fn clear(&mut self, s: u64) {
        let off = s - self.base;
        self.words[(off / 64) as usize] &= !(1 << (off % 64));
        self.len -= 1;
        self.trim();
    }

    /// Drops zero words at both ends.
    fn trim(&mut self) {
        if self.len == 0 {
            *self = Self::default();
            return;
        }
        while self.words.last() == Some(&0) {
            self.words.pop();
        }
        let lead = self.words.iter().take_while(|w| **w == 0).count();
        if lead > 0 {
            self.words.drain(..lead);
            self.base += lead as u64 * 64;
        }
        if self.words.is_empty() {
            *self = Self::default();
        }
    }
}

impl FromIterator<u64> for SeqSet {
    fn from_iter<I: IntoIterator<Item = u64>>(iter: I) -> Self {
        let mut set = Self::default();
        for s in iter {
            set.insert(s);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn holds_what_was_inserted_and_nothing_else() {
        let mut s = SeqSet::default();
        assert!(s.is_empty() && s.last().is_none() && !s.contains(0));
        for x in [130, 5, 64, 63, 200] {
            s.insert(x);
        }
        s.insert(64);
        assert_eq!(s.len(), 5);
        assert_eq!(s.last(), Some(200));
        for x in 0..300 {
            assert_eq!(s.contains(x), [5, 63, 64, 130, 200].contains(&x), "{x}");
        }
        for x in [5, 63, 64, 130, 200, 7] {
            s.remove(x);
        }
        assert!(s.is_empty());
        assert_eq!(s, SeqSet::default(), "an empty set holds no buffer");
    }

    #[test]
    fn a_window_wider_than_the_span_keeps_the_newest() {
        let mut s: SeqSet = [10, 20, 30].into_iter().collect();
        s.insert(20 + SeqSet::SPAN);
        // 10 and 20 fall out of the window ending at 20 + SPAN; 30 stays.
        assert!(!s.contains(10) && !s.contains(20) && s.contains(30));
        assert_eq!(s.len(), 2);
        // Older than the window: ignored.
        s.insert(15);
        assert!(!s.contains(15));
        assert!(s.words.len() as u64 * 64 <= SeqSet::SPAN + 64);
        // Sequences near u64::MAX do not overflow.
        let mut top = SeqSet::default();
        top.insert(u64::MAX);
        top.insert(u64::MAX - 1);
        assert_eq!(top.last(), Some(u64::MAX));
        assert!(top.contains(u64::MAX - 1));
        // A jump from the bottom to the top of the range moves the window without overflow.
        let mut jump: SeqSet = [0, 1].into_iter().collect();
        jump.insert(u64::MAX);
        assert!(!jump.contains(0) && jump.contains(u64::MAX));
        assert_eq!((jump.len(), jump.last()), (1, Some(u64::MAX)));
    }

    proptest! {
        /// Against an ordered set that keeps the newest `SPAN`: the same answers.
        #[test]
        fn behaves_as_an_ordered_set_of_the_newest(ops in proptest::collection::vec(
            (any::<bool>(), 0u64..3 * SeqSet::SPAN), 0..200)) {
            let mut s = SeqSet::default();
            let mut model = BTreeSet::new();
            for (add, x) in ops {
                // Cluster half the values so that removals hit.
                let x = if x % 2 == 0 { x / 1000 } else { x };
                if add {
                    let newest = model.last().copied().unwrap_or(x).max(x);
                    if newest - x < SeqSet::SPAN {
                        model.insert(x);
                    }
                    model.retain(|y| newest - y < SeqSet::SPAN);
                    s.insert(x);
                } else {
                    model.remove(&x);
                    s.remove(x);
                }
                prop_assert_eq!(s.len(), model.len());
                prop_assert_eq!(s.last(), model.last().copied());
                for y in model.iter().take(20) {
                    prop_assert!(s.contains(*y));
                }
                prop_assert!(!s.contains(x) || model.contains(&x));
                prop_assert!(s.words.first() != Some(&0) && s.words.last() != Some(&0));
            }
            // Retain agrees too.
            s.retain(|y| y % 3 != 0);
            model.retain(|y| y % 3 != 0);
            prop_assert_eq!(s.len(), model.len());
            prop_assert_eq!(s.last(), model.last().copied());
            prop_assert!(model.iter().all(|y| s.contains(*y)));
        }
    }
}
