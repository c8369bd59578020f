//! The byte-bounded segment store of a node.
//!
//! Eviction order when over budget: segments behind the playhead, oldest first (for live they
//! will never be played again; for VOD they are the least likely to be wanted); then segments
//! farthest ahead of the playhead. The segment being inserted is never evicted by its own
//! insertion, so a segment larger than the whole budget is still delivered (and evicted next).

use bytes::Bytes;

use crate::integrity::SignedDigest;
use crate::wire::SegmentRef;

use super::vecmap::VecMap;

/// A stored segment.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) data: Bytes,
    /// The signed digest to relay with it; `None` while no digest is known (such a segment is
    /// played but not served).
    pub(crate) digest: Option<SignedDigest>,
    /// Where its bytes came from.
    pub(crate) http_bytes: u64,
    pub(crate) p2p_bytes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Cache {
    budget: u64,
    used: u64,
    map: VecMap<SegmentRef, Stored>,
}

impl Cache {
    pub(crate) fn new(budget: u64) -> Self {
        Self {
            budget,
            used: 0,
            map: VecMap::new(),
        }
    }

    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn get(&self, seg: &SegmentRef) -> Option<&Stored> {
        self.map.get(seg)
    }

    pub(crate) fn get_mut(&mut self, seg: &SegmentRef) -> Option<&mut Stored> {
        self.map.get_mut(seg)
    }

    pub(crate) fn contains(&self, seg: &SegmentRef) -> bool {
        self.map.contains_key(seg)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&SegmentRef, &Stored)> {
        self.map.iter()
    }

    /// Stores a segment and evicts others to stay within the budget, given the playhead's
    /// sequence number. Returns the evicted segments.
    pub(crate) fn insert(
        &mut self,
        seg: SegmentRef,
        stored: Stored,
        playhead: Option<u64>,
    ) -> Vec<SegmentRef> {
        let len = stored.data.len() as u64;
        if let Some(old) = self.map.insert(seg, stored) {
            self.used -= old.data.len() as u64;
        }
        self.used += len;
        self.evict(Some(seg), playhead)
    }

    /// Evicts until within budget, never `keep`.
    pub(crate) fn evict(
        &mut self,
        keep: Option<SegmentRef>,
        playhead: Option<u64>,
    ) -> Vec<SegmentRef> {
        let mut evicted = Vec::new();
        while self.used > self.budget {
            let victim = self.victim(keep, playhead);
            let Some(victim) = victim else { break };
            let old = self.map.remove(&victim).expect("victim is in the map");
            self.used -= old.data.len() as u64;
            evicted.push(victim);
        }
        evicted
    }

    fn victim(&self, keep: Option<SegmentRef>, playhead: Option<u64>) -> Option<SegmentRef> {
        let candidates = || self.map.keys().filter(|k| Some(**k) != keep);
        let behind = playhead.and_then(|p| {
            candidates()
                .filter(|k| k.sequence < p)
                .min_by_key(|k| k.sequence)
                .copied()
        });
        match playhead {
            // Farthest ahead: the player needs it last.
            Some(_) => behind.or_else(|| candidates().max_by_key(|k| k.sequence).copied()),
            // No player (a seed): the oldest. Viewers of a live stream want the newest, and
            // a seed that dropped those would fetch them again at once.
            None => candidates().min_by_key(|k| k.sequence).copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RenditionId;

    fn seg(n: u64) -> SegmentRef {
        SegmentRef {
            rendition: RenditionId([1; 8]),
            sequence: n,
        }
    }

    fn stored(len: usize) -> Stored {
        Stored {
            data: Bytes::from(vec![0; len]),
            digest: None,
            http_bytes: len as u64,
            p2p_bytes: 0,
        }
    }

    #[test]
    fn evicts_behind_the_playhead_oldest_first_then_farthest_ahead() {
        let mut c = Cache::new(300);
        for n in [10, 11, 12] {
            assert!(c.insert(seg(n), stored(100), Some(12)).is_empty());
        }
        assert_eq!(c.insert(seg(13), stored(100), Some(12)), [seg(10)]);
        assert_eq!(c.insert(seg(14), stored(100), Some(12)), [seg(11)]);
        // Nothing behind 12 now: the farthest ahead goes, never the new one.
        assert_eq!(c.insert(seg(15), stored(100), Some(12)), [seg(14)]);
        assert_eq!(c.used(), 300);
        assert!(c.contains(&seg(12)) && c.contains(&seg(13)) && c.contains(&seg(15)));
    }

    #[test]
    fn without_a_playhead_the_oldest_goes() {
        let mut c = Cache::new(300);
        for n in [10, 11, 12] {
            assert!(c.insert(seg(n), stored(100), None).is_empty());
        }
        assert_eq!(c.insert(seg(13), stored(100), None), [seg(10)]);
        assert_eq!(c.insert(seg(14), stored(100), None), [seg(11)]);
        assert!(c.contains(&seg(12)) && c.contains(&seg(13)) && c.contains(&seg(14)));
    }

    #[test]
    fn an_oversized_segment_is_kept_alone() {
        let mut c = Cache::new(100);
        c.insert(seg(1), stored(50), None);
        assert_eq!(c.insert(seg(2), stored(500), None), [seg(1)]);
        assert!(c.contains(&seg(2)));
        assert_eq!(c.evict(None, None), [seg(2)]);
        assert_eq!(c.used(), 0);
    }
}
