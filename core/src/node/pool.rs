//! Segment bytes shared between the nodes of one process.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::ids::SegmentId;
use crate::integrity::VerifiedDigest;

/// Segment bytes and digests shared between nodes that run in one process.
///
/// The simulator runs thousands of nodes, and their copies of a segment are the same bytes: a
/// node that completes a segment keeps the pool's copy when its own is equal (compared byte for
/// byte, so a node never trades its verified bytes for different ones), and each segment is
/// held once however many nodes cache it. Digests likewise: a node that verified a digest keeps
/// the pool's copy when it is the same digest, signer and signature. A real peer runs one node
/// and needs no pool.
#[derive(Debug, Clone, Default)]
pub struct SegmentPool(Arc<Mutex<Shared>>);

#[derive(Debug, Default)]
struct Shared {
    map: HashMap<SegmentId, Bytes>,
    bytes: u64,
    digests: HashMap<SegmentId, VerifiedDigest>,
}

impl SegmentPool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// The pool's copy of `data` when it holds an equal one; otherwise `data`, which becomes
    /// the pool's copy if it had none.
    pub fn intern(&self, id: SegmentId, data: Bytes) -> Bytes {
        let mut shared = self
            .0
            .lock()
            .expect("never poisoned: no panics under the lock");
        let Shared { map, bytes, .. } = &mut *shared;
        match map.entry(id) {
            Entry::Occupied(e) if *e.get() == data => e.get().clone(),
            Entry::Occupied(_) => data,
            Entry::Vacant(v) => {
                *bytes += data.len() as u64;
                v.insert(data.clone());
                data
            }
        }
    }

    /// The pool's copy of `digest` when it holds an equal one; otherwise `digest`, which
    /// becomes the pool's copy if it had none for the segment.
    pub fn intern_digest(&self, id: SegmentId, digest: VerifiedDigest) -> VerifiedDigest {
        let mut shared = self
            .0
            .lock()
            .expect("never poisoned: no panics under the lock");
        match shared.digests.entry(id) {
            Entry::Occupied(e) if *e.get() == digest => e.get().clone(),
            Entry::Occupied(_) => digest,
            Entry::Vacant(v) => v.insert(digest).clone(),
        }
    }

    /// Forgets the segments and digests no node holds any more.
    pub fn prune(&self) {
        let mut shared = self
            .0
            .lock()
            .expect("never poisoned: no panics under the lock");
        shared.digests.retain(|_, d| !d.is_unique());
        let Shared { map, bytes, .. } = &mut *shared;
        map.retain(|_, data| {
            let keep = !data.is_unique();
            if !keep {
                *bytes -= data.len() as u64;
            }
            keep
        });
    }

    /// Segments held, and their bytes.
    pub fn held(&self) -> (usize, u64) {
        let shared = self
            .0
            .lock()
            .expect("never poisoned: no panics under the lock");
        (shared.map.len(), shared.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{RenditionId, SwarmId};

    fn id(seq: u64) -> SegmentId {
        SegmentId::new(SwarmId([1; 20]), RenditionId([2; 8]), seq)
    }

    #[test]
    fn equal_bytes_are_held_once_and_different_bytes_are_kept_apart() {
        let pool = SegmentPool::new();
        let first = pool.intern(id(1), Bytes::from(vec![7u8; 1000]));
        let second = pool.intern(id(1), Bytes::from(vec![7u8; 1000]));
        assert_eq!(first.as_ptr(), second.as_ptr(), "the pool's copy is shared");
        let other = pool.intern(id(1), Bytes::from(vec![8u8; 1000]));
        assert_eq!(
            &other[..],
            &[8u8; 1000][..],
            "different bytes are never replaced"
        );
        assert_ne!(other.as_ptr(), first.as_ptr());
        assert_eq!(pool.held(), (1, 1000));
        drop((first, second, other));
        pool.prune();
        assert_eq!(pool.held(), (0, 0), "nobody holds it any more");
    }

    #[test]
    fn equal_digests_are_shared_and_others_kept() {
        let signer = crate::integrity::DigestSigner::from_secret([9; 32]);
        let digest = |data: &[u8]| {
            signer
                .sign(crate::integrity::SegmentDigest::compute(id(1), data, 1024))
                .accept_unverified()
        };
        let pool = SegmentPool::new();
        let a = pool.intern_digest(id(1), digest(&[1; 3000]));
        let b = pool.intern_digest(id(1), digest(&[1; 3000]));
        assert!(std::ptr::eq(a.digest(), b.digest()), "one copy for both");
        let other = pool.intern_digest(id(1), digest(&[2; 3000]));
        assert_ne!(other, a, "a different digest is never replaced");
        drop((b, other));
        pool.prune();
        assert!(!a.is_unique(), "still in the pool while a node holds it");
        drop(a);
        pool.prune();
        assert!(pool.0.lock().unwrap().digests.is_empty());
    }

    #[test]
    fn prune_keeps_what_a_node_still_holds() {
        let pool = SegmentPool::new();
        let kept = pool.intern(id(1), Bytes::from(vec![1u8; 10]));
        drop(pool.intern(id(2), Bytes::from(vec![2u8; 20])));
        pool.prune();
        assert_eq!(pool.held(), (1, 10));
        assert_eq!(
            pool.intern(id(1), Bytes::from(vec![1u8; 10])).as_ptr(),
            kept.as_ptr()
        );
    }
}
