//! The node's neighbours, kept in id order in arrays: the ids' first eight bytes as numbers,
//! which a lookup searches (two or three cache lines for a node's neighbours, compared as
//! integers rather than as 20-byte strings), the ids, and the neighbours' state beside them.
//!
//! A hash map costs three dependent memory reads per lookup (control bytes, index, entry),
//! and in a large simulation each node's map is cold at almost every message, so those reads
//! were an eighth of the simulator's time. The arrays also hold exactly the neighbours
//! present: a node adds and drops one at a time, over minutes.

use crate::ids::PeerId;

#[derive(Debug)]
pub(super) struct PeerMap<V> {
    /// `prefixes[i]` is the first eight bytes of `ids[i]`, big-endian: ordered as the ids.
    prefixes: Vec<u64>,
    /// Sorted, no duplicates; `vals[i]` belongs to `ids[i]`.
    ids: Vec<PeerId>,
    vals: Vec<V>,
}

impl<V> Default for PeerMap<V> {
    fn default() -> Self {
        Self {
            prefixes: Vec::new(),
            ids: Vec::new(),
            vals: Vec::new(),
        }
    }
}

fn prefix(id: &PeerId) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&id.0[..8]);
    u64::from_be_bytes(b)
}

impl<V> PeerMap<V> {
    /// Where `id` is, or would go. Ids sharing a prefix (none among random ids) are told apart
    /// by the rest of their bytes.
    fn find(&self, id: &PeerId) -> Result<usize, usize> {
        let p = prefix(id);
        let mut i = self.prefixes.partition_point(|&q| q < p);
        while self.prefixes.get(i) == Some(&p) {
            match self.ids[i].cmp(id) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Equal => return Ok(i),
                std::cmp::Ordering::Greater => break,
            }
        }
        Err(i)
    }

    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    pub(super) fn contains_key(&self, id: &PeerId) -> bool {
        self.find(id).is_ok()
    }

    pub(super) fn get(&self, id: &PeerId) -> Option<&V> {
        self.find(id).ok().map(|i| &self.vals[i])
    }

    pub(super) fn get_mut(&mut self, id: &PeerId) -> Option<&mut V> {
        self.find(id).ok().map(|i| &mut self.vals[i])
    }

    /// Adds `id` in its place, or replaces its value (returned). Room grows by one.
    pub(super) fn insert(&mut self, id: PeerId, val: V) -> Option<V> {
        match self.find(&id) {
            Ok(i) => Some(std::mem::replace(&mut self.vals[i], val)),
            Err(i) => {
                self.prefixes.reserve_exact(1);
                self.ids.reserve_exact(1);
                self.vals.reserve_exact(1);
                self.prefixes.insert(i, prefix(&id));
                self.ids.insert(i, id);
                self.vals.insert(i, val);
                None
            }
        }
    }

    /// Removes `id`, keeping the others in order; gives back room once a quarter is free.
    pub(super) fn remove(&mut self, id: &PeerId) -> Option<V> {
        let i = self.find(id).ok()?;
        self.prefixes.remove(i);
        self.ids.remove(i);
        let val = self.vals.remove(i);
        let n = self.ids.len();
        if self.vals.capacity() > n + n / 4 + 2 {
            self.prefixes.shrink_to_fit();
            self.ids.shrink_to_fit();
            self.vals.shrink_to_fit();
        }
        Some(val)
    }

    pub(super) fn clear(&mut self) {
        self.prefixes = Vec::new();
        self.ids = Vec::new();
        self.vals = Vec::new();
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &PeerId> {
        self.ids.iter()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.vals.iter()
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.vals.iter_mut()
    }

    pub(super) fn iter(
        &self,
    ) -> std::iter::Zip<std::slice::Iter<'_, PeerId>, std::slice::Iter<'_, V>> {
        self.ids.iter().zip(&self.vals)
    }

    pub(super) fn iter_mut(
        &mut self,
    ) -> std::iter::Zip<std::slice::Iter<'_, PeerId>, std::slice::IterMut<'_, V>> {
        self.ids.iter().zip(&mut self.vals)
    }
}

impl<V> std::ops::Index<&PeerId> for PeerMap<V> {
    type Output = V;

    /// Panics when `id` is not a neighbour.
    fn index(&self, id: &PeerId) -> &V {
        self.get(id).expect("a neighbour")
    }
}

impl<'a, V> IntoIterator for &'a PeerMap<V> {
    type Item = (&'a PeerId, &'a V);
    type IntoIter = std::iter::Zip<std::slice::Iter<'a, PeerId>, std::slice::Iter<'a, V>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a, V> IntoIterator for &'a mut PeerMap<V> {
    type Item = (&'a PeerId, &'a mut V);
    type IntoIter = std::iter::Zip<std::slice::Iter<'a, PeerId>, std::slice::IterMut<'a, V>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> PeerId {
        PeerId([n; 20])
    }

    #[test]
    fn neighbours_stay_in_id_order_with_exact_room() {
        let mut m = PeerMap::default();
        for n in [5, 1, 9, 3, 7] {
            assert_eq!(m.insert(id(n), u32::from(n)), None);
        }
        assert_eq!(m.insert(id(3), 30), Some(3));
        let order: Vec<u8> = m.keys().map(|k| k.0[0]).collect();
        assert_eq!(order, [1, 3, 5, 7, 9]);
        assert_eq!(m.values().copied().collect::<Vec<_>>(), [1, 30, 5, 7, 9]);
        assert_eq!(m.vals.capacity(), 5, "grown one at a time");
        assert_eq!(m.get(&id(7)), Some(&7));
        assert_eq!(m.get(&id(4)), None);
        *m.get_mut(&id(9)).unwrap() += 1;
        assert_eq!(m.remove(&id(1)), Some(1));
        assert_eq!(m.remove(&id(1)), None);
        assert!(!m.contains_key(&id(1)) && m.contains_key(&id(9)));
        let pairs: Vec<(u8, u32)> = m.iter().map(|(k, v)| (k.0[0], *v)).collect();
        assert_eq!(pairs, [(3, 30), (5, 5), (7, 7), (9, 10)]);
        for n in [3, 5, 7] {
            m.remove(&id(n));
        }
        assert!(m.vals.capacity() <= 3, "room given back");
        m.clear();
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn ids_sharing_their_first_bytes_are_told_apart() {
        let mut m = PeerMap::default();
        let with_tail = |head: u8, tail: u8| {
            let mut b = [head; 20];
            b[19] = tail;
            PeerId(b)
        };
        for (head, tail) in [(2, 9), (1, 5), (2, 1), (2, 5), (3, 0), (1, 4)] {
            assert_eq!(m.insert(with_tail(head, tail), (head, tail)), None);
        }
        let order: Vec<(u8, u8)> = m.keys().map(|k| (k.0[0], k.0[19])).collect();
        assert_eq!(order, [(1, 4), (1, 5), (2, 1), (2, 5), (2, 9), (3, 0)]);
        for (head, tail) in order {
            assert_eq!(m.get(&with_tail(head, tail)), Some(&(head, tail)));
        }
        for (head, tail) in [(2, 0), (2, 3), (2, 7), (2, 10), (1, 6), (0, 0), (4, 0)] {
            assert_eq!(m.get(&with_tail(head, tail)), None, "{head} {tail}");
        }
        assert_eq!(m.remove(&with_tail(2, 5)), Some((2, 5)));
        assert_eq!(m.get(&with_tail(2, 9)), Some(&(2, 9)));
        assert_eq!(m.insert(with_tail(2, 6), (2, 6)), None);
        let order: Vec<(u8, u8)> = m.keys().map(|k| (k.0[0], k.0[19])).collect();
        assert_eq!(order, [(1, 4), (1, 5), (2, 1), (2, 6), (2, 9), (3, 0)]);
    }
}
