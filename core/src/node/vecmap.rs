//! An ordered map kept as a sorted vector, for the node's small per-segment tables.
//!
//! A `BTreeMap` allocates its nodes with room for eleven entries however few it holds (a
//! leaf of `SegmentRef` to a 56-byte value is about 800 bytes), and a map past eleven entries
//! adds internal nodes. The node's tables hold a few to a few dozen entries each (the digest
//! table up to a few hundred, when neighbours send digests of segments the node does not
//! hold), are looked up far more often than changed, and are walked in key order: a sorted vector holds them in
//! their own size, looks them up by binary search and walks them in the same order as the map
//! did, so the node's decisions do not change (decision 0012).

use std::borrow::Borrow;

/// A map from `K` to `V` in key order, backed by a vector sorted by key.
#[derive(Debug, Clone)]
pub(crate) struct VecMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<K: Ord, V> VecMap<K, V> {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn find<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.entries.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &self.entries[i].1)
    }

    pub(crate) fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &mut self.entries[i].1)
    }

    pub(crate) fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.find(key).is_ok()
    }

    /// Inserts or replaces; returns the value replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    pub(crate) fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let i = self.find(key).ok()?;
        let (_, v) = self.entries.remove(i);
        self.release();
        Some(v)
    }

    /// Gives back room the map no longer needs: a table that held many entries once (a
    /// seek's window, a burst of digests) should not keep their room for the node's life.
    fn release(&mut self) {
        if self.entries.capacity() > 8 && self.entries.len() * 4 <= self.entries.capacity() {
            self.entries.shrink_to(self.entries.len() * 2);
        }
    }

    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub(crate) fn keys(&self) -> impl DoubleEndedIterator<Item = &K> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub(crate) fn values(&self) -> impl DoubleEndedIterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }
}

impl<K: Ord, V, Q: Ord + ?Sized> std::ops::Index<&Q> for VecMap<K, V>
where
    K: Borrow<Q>,
{
    type Output = V;

    fn index(&self, key: &Q) -> &V {
        self.get(key).expect("no entry for the key")
    }
}

impl<'a, K: Ord, V> IntoIterator for &'a VecMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u32),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<u8>(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            3 => any::<u8>().prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Whatever is done to it, the map answers and iterates as a `BTreeMap` does.
        #[test]
        fn behaves_as_an_ordered_map(ops in proptest::collection::vec(op(), 0..200)) {
            let mut ours = VecMap::new();
            let mut model = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(ours.insert(k, v), model.insert(k, v)),
                    Op::Remove(k) => prop_assert_eq!(ours.remove(&k), model.remove(&k)),
                }
                prop_assert_eq!(ours.len(), model.len());
                prop_assert!(ours.iter().eq(model.iter()));
                prop_assert!(ours.iter().rev().eq(model.iter().rev()));
                prop_assert!(ours.keys().eq(model.keys()));
                prop_assert!(ours.values().eq(model.values()));
                for k in [0u8, 1, 77, 128, 255] {
                    prop_assert_eq!(ours.get(&k), model.get(&k));
                    prop_assert_eq!(ours.contains_key(&k), model.contains_key(&k));
                    if let (Some(a), Some(b)) = (ours.get_mut(&k), model.get_mut(&k)) {
                        *a = a.wrapping_mul(3);
                        *b = b.wrapping_mul(3);
                    }
                    if model.contains_key(&k) {
                        prop_assert_eq!(ours[&k], model[&k]);
                    }
                }
                // Room is given back: never more than four times what it holds, beyond 8.
                prop_assert!(ours.entries.capacity() <= (4 * ours.len()).max(8));
            }
        }
    }

    #[test]
    fn room_is_given_back_when_most_entries_are_gone() {
        let mut m = VecMap::new();
        for k in 0..100u32 {
            m.insert(k, k);
        }
        for k in 10..100u32 {
            m.remove(&k);
        }
        assert_eq!(m.len(), 10);
        // At most four times what it holds (it held 100).
        assert!(m.entries.capacity() <= 40, "{}", m.entries.capacity());
        assert_eq!(m[&3], 3);
        assert!(m.get_mut(&50).is_none());
        *m.get_mut(&4).unwrap() = 40;
        assert_eq!(m.values().copied().collect::<Vec<_>>()[4], 40);
    }
}
