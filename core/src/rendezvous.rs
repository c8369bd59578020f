//! Rendezvous (highest random weight) hashing: which tracker instance a swarm lives on, and
//! which peers of a neighbourhood scout a new segment.
//!
//! Swarms are independent, so tracker instances shard by swarm id. Every client computes the
//! same choice from the swarm id and the configured tracker list alone, so the peers of one
//! swarm meet on one instance without any shared state. Adding or removing an instance moves
//! only the swarms that go to or came from it (about 1/n of them).
//!
//! ```text
//! weight(swarm, tracker) = first 8 bytes, big-endian, of
//!                          SHA-256("swarmcdn/rendezvous/v1" 00 swarm_id(20) 00 tracker_url)
//! ```
//!
//! The tracker with the highest weight wins (ties: the smaller URL).
//!
//! The same idea orders the peers of a swarm for each new live segment: where neighbourhoods
//! overlap only in part, a node is the segment's first scout when no member of its
//! neighbourhood weighs more ([`scout_weight`]). Every node computes the weights alike, so
//! two neighbours never both come first, and the role moves from segment to segment.
//!
//! ```text
//! scout_weight(segment, peer) = first 8 bytes, big-endian, of
//!     SHA-256("swarmcdn/scout/v1" 00 rendition(8) sequence(u64 BE) 00 peer_id(20))
//! ```

use sha2::{Digest, Sha256};

use crate::ids::{PeerId, SwarmId};
use crate::wire::SegmentRef;

/// The weight of `tracker` for `swarm`.
pub fn weight(swarm: &SwarmId, tracker: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(b"swarmcdn/rendezvous/v1\0");
    h.update(swarm.0);
    h.update(b"\0");
    h.update(tracker.as_bytes());
    let d = h.finalize();
    let mut w = [0u8; 8];
    w.copy_from_slice(&d[..8]);
    u64::from_be_bytes(w)
}

/// The index of the tracker `swarm` lives on, or `None` for an empty list. The order of the
/// list does not matter.
pub fn pick<S: AsRef<str>>(swarm: &SwarmId, trackers: &[S]) -> Option<usize> {
    trackers
        .iter()
        .enumerate()
        .max_by(|(_, a), (_, b)| {
            let (a, b) = (a.as_ref(), b.as_ref());
            weight(swarm, a)
                .cmp(&weight(swarm, b))
                .then_with(|| b.cmp(a))
        })
        .map(|(i, _)| i)
}

/// The trackers in preference order for `swarm` (the first is [`pick`]'s; the next ones are
/// where to go when it is down).
pub fn rank<'a, S: AsRef<str>>(swarm: &SwarmId, trackers: &'a [S]) -> Vec<&'a S> {
    let mut v: Vec<&S> = trackers.iter().collect();
    v.sort_by(|a, b| {
        let (a, b) = (a.as_ref(), b.as_ref());
        weight(swarm, b)
            .cmp(&weight(swarm, a))
            .then_with(|| a.cmp(b))
    });
    v
}

/// The weight of `peer` as the scout of `segment` (the heaviest scouts first).
pub fn scout_weight(segment: &SegmentRef, peer: &PeerId) -> u64 {
    let mut h = Sha256::new();
    h.update(b"swarmcdn/scout/v1\0");
    h.update(segment.rendition.0);
    h.update(segment.sequence.to_be_bytes());
    h.update(b"\0");
    h.update(peer.0);
    let d = h.finalize();
    let mut w = [0u8; 8];
    w.copy_from_slice(&d[..8]);
    u64::from_be_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RenditionId;

    fn swarm(i: u32) -> SwarmId {
        let mut id = [0u8; 20];
        id[..4].copy_from_slice(&i.to_be_bytes());
        SwarmId(id)
    }

    const T3: [&str; 3] = ["wss://t1.example", "wss://t2.example", "wss://t3.example"];

    #[test]
    fn order_does_not_matter() {
        for i in 0..200 {
            let s = swarm(i);
            let a = T3[pick(&s, &T3).unwrap()];
            let rev = [T3[2], T3[1], T3[0]];
            assert_eq!(rev[pick(&s, &rev).unwrap()], a);
            assert_eq!(*rank(&s, &T3)[0], a);
        }
        assert_eq!(pick::<&str>(&swarm(1), &[]), None);
    }

    #[test]
    fn spreads_evenly_and_moves_little() {
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            counts[pick(&swarm(i), &T3).unwrap()] += 1;
        }
        for c in counts {
            assert!((850..1150).contains(&c), "{counts:?}");
        }
        // A fourth tracker takes about a quarter; nothing moves between the first three.
        let t4 = [T3[0], T3[1], T3[2], "wss://t4.example"];
        let mut moved = 0;
        for i in 0..3000 {
            let before = T3[pick(&swarm(i), &T3).unwrap()];
            let after = t4[pick(&swarm(i), &t4).unwrap()];
            if before != after {
                assert_eq!(after, t4[3]);
                moved += 1;
            }
        }
        assert!((600..900).contains(&moved), "{moved}");
    }

    #[test]
    fn scout_weights_spread_the_role_evenly() {
        let peers: Vec<PeerId> = (0..4u8).map(|i| PeerId([i; 20])).collect();
        let mut counts = [0usize; 4];
        for sequence in 0..4000 {
            let seg = SegmentRef {
                rendition: RenditionId([7; 8]),
                sequence,
            };
            let top = (0..4)
                .max_by_key(|&i| scout_weight(&seg, &peers[i]))
                .unwrap();
            counts[top] += 1;
        }
        for c in counts {
            assert!((850..1150).contains(&c), "{counts:?}");
        }
        let a = SegmentRef {
            rendition: RenditionId([1; 8]),
            sequence: 5,
        };
        let b = SegmentRef {
            rendition: RenditionId([2; 8]),
            sequence: 5,
        };
        assert_ne!(scout_weight(&a, &peers[0]), scout_weight(&b, &peers[0]));
    }
}
