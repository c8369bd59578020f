//! One segment being assembled from peers and HTTP, chunk by chunk.
//!
//! Chunks are the integrity chunks of the segment's digest. Each chunk has at most one owner at
//! a time (a peer request or the HTTP fetch) and fills in order from its start; a chunk is done
//! when it is full and, if it came from a peer, verified against the digest.

use std::ops::Range;

use crate::ids::PeerId;
use crate::integrity::VerifiedDigest;
use crate::time::Time;
use crate::wire::RequestId;

use super::FetchId;

/// Who is filling a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    Nobody,
    Peer(PeerId, RequestId),
    Http(FetchId),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Chunk {
    /// Bytes filled from the chunk's start.
    pub(crate) filled: u64,
    pub(crate) owner: Owner,
    pub(crate) done: bool,
    /// Checked against the current digest (bytes from a peer, once full).
    pub(crate) verified: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct HttpFetch {
    pub(crate) id: FetchId,
    pub(crate) started: Time,
    pub(crate) received: u64,
    /// Of a segment still being produced (see [`super::SegmentMeta::partial`]): its timing
    /// measures the packager, not the origin.
    pub(crate) paced: bool,
}

/// What writing bytes into a download did.
#[derive(Debug, Default)]
pub(crate) struct WriteOutcome {
    /// Chunks that became full (to verify, when they came from a peer).
    pub(crate) full: Vec<usize>,
    /// Bytes accepted.
    pub(crate) accepted: u64,
    /// The bytes were not where the owner's request said they would be.
    pub(crate) out_of_order: bool,
}

#[derive(Debug)]
pub(crate) struct Download {
    pub(crate) digest: Option<VerifiedDigest>,
    /// Segment length, once known (from the digest, or when an unranged HTTP fetch ends).
    pub(crate) length: Option<u64>,
    pub(crate) chunk_size: u64,
    pub(crate) buf: Vec<u8>,
    pub(crate) chunks: Vec<Chunk>,
    /// The HTTP fetches under way: one per run of missing chunks (see `Node::start_http`).
    pub(crate) http: Vec<HttpFetch>,
    /// When the fetches under way started, and the bytes they have brought: one sample of
    /// the origin's throughput when the last ends.
    pub(crate) http_group: Option<(Time, u64)>,
    /// A request to learn the segment's geometry (first bytes with the digest) from a peer.
    pub(crate) probe: Option<(PeerId, RequestId)>,
    pub(crate) http_bytes: u64,
    pub(crate) p2p_bytes: u64,
    /// When this node will fetch it from the origin if no neighbour has it by then.
    pub(crate) scout_at: Option<Time>,
    /// When this node started wanting it.
    pub(crate) wanted_since: Time,
    /// Set when an HTTP fetch was forced by the deadline rather than scouting.
    pub(crate) deadline_fallback: bool,
    /// Requests to neighbours that went on at the deadline fallback must end by then (see
    /// `Node::start_http`); until that time, HTTP fetches at once what they give up.
    pub(crate) keep_until: Option<Time>,
    /// Consecutive failed HTTP fetches, and when the next may start (exponential backoff).
    pub(crate) http_failures: u32,
    pub(crate) retry_at: Option<Time>,
    /// Neighbours were told this node has the segment while it was still arriving (its
    /// verified chunks are relayed as they come).
    pub(crate) announced: bool,
    /// Where this node starts among equally rare chunks (drawn per download, so neighbours
    /// fetching the same segment from the same holders start in different places and have
    /// different chunks to trade).
    pub(crate) rotation: usize,
    /// Done chunks when neighbours were last sent this download's chunk map.
    pub(crate) map_sent: usize,
}

impl Download {
    pub(crate) fn new() -> Self {
        Self {
            digest: None,
            length: None,
            chunk_size: 0,
            buf: Vec::new(),
            chunks: Vec::new(),
            http: Vec::new(),
            http_group: None,
            probe: None,
            http_bytes: 0,
            p2p_bytes: 0,
            scout_at: None,
            wanted_since: Time::ZERO,
            deadline_fallback: false,
            keep_until: None,
            http_failures: 0,
            retry_at: None,
            announced: false,
            rotation: 0,
            map_sent: 0,
        }
    }

    /// Whether chunk `i` is neither done nor assigned.
    pub(crate) fn is_free(&self, i: usize) -> bool {
        self.chunks
            .get(i)
            .is_some_and(|c| !c.done && c.owner == Owner::Nobody)
    }

    /// Chunks done.
    pub(crate) fn done_count(&self) -> usize {
        self.chunks.iter().filter(|c| c.done).count()
    }

    /// The done chunks as a bitmap (bit `i`, least significant first in each byte): what
    /// [`crate::wire::Frame::Chunks`] carries.
    pub(crate) fn chunk_map(&self) -> Vec<u8> {
        let mut map = vec![0u8; self.chunks.len().div_ceil(8)];
        for (i, c) in self.chunks.iter().enumerate() {
            if c.done {
                map[i / 8] |= 1 << (i % 8);
            }
        }
        map
    }

    /// Whether any chunk is done (verified, or from the origin).
    pub(crate) fn any_done(&self) -> bool {
        self.chunks.iter().any(|c| c.done)
    }

    /// The done bytes from `offset` to the end of its chunk (capped at `end`), if that chunk
    /// is done: what can be relayed now.
    pub(crate) fn done_from(&self, offset: u64, end: u64) -> Option<Range<u64>> {
        if self.chunk_size == 0 {
            return None;
        }
        let i = (offset / self.chunk_size) as usize;
        let c = self.chunks.get(i)?;
        if !c.done || (self.buf.len() as u64) < self.chunk_range(i).end {
            return None;
        }
        Some(offset..self.chunk_range(i).end.min(end))
    }

    pub(crate) fn has_geometry(&self) -> bool {
        self.length.is_some() && !self.chunks.is_empty() || self.length == Some(0)
    }

    /// Sets the digest (and so the geometry). Bytes already received by an unranged HTTP fetch
    /// fill the chunks they cover.
    pub(crate) fn set_digest(&mut self, digest: VerifiedDigest) {
        let d = digest.digest();
        if self.length.is_some_and(|l| l != d.length()) {
            // An HTTP fetch finished with another length: the origin is authoritative, the
            // digest is for other bytes. Keep the data, drop the digest.
            return;
        }
        let length = d.length();
        let chunk_size = u64::from(d.chunk_size());
        let count = d.chunk_count();
        if self
            .digest
            .as_ref()
            .is_some_and(|old| old.signed() != digest.signed())
        {
            // Chunks checked against another digest are checked again at the end.
            for c in &mut self.chunks {
                c.verified = false;
            }
        }
        self.digest = Some(digest);
        if !self.chunks.is_empty() {
            return;
        }
        self.length = Some(length);
        self.chunk_size = chunk_size;
        let have = self.buf.len() as u64;
        // Without geometry there is at most one fetch, of the whole segment.
        let http_owner = self.http.first().map(|h| Owner::Http(h.id));
        // The buffer grows to the segment's length at the first write (`write`): a node knows
        // the digests of the segments it prefetches long before their bytes come, and holding
        // zeroed buffers for all of them is most of its memory.
        self.chunks = (0..count)
            .map(|i| {
                let start = i as u64 * chunk_size;
                let len = chunk_size.min(length - start);
                let filled = have.saturating_sub(start).min(len);
                Chunk {
                    filled,
                    owner: if filled < len {
                        http_owner.unwrap_or(Owner::Nobody)
                    } else {
                        Owner::Nobody
                    },
                    // Bytes from HTTP need no verification.
                    done: filled == len,
                    verified: false,
                }
            })
            .collect();
    }

    pub(crate) fn chunk_range(&self, i: usize) -> Range<u64> {
        let start = i as u64 * self.chunk_size;
        let end = (start + self.chunk_size).min(self.length.unwrap_or(0));
        start..end
    }

    pub(crate) fn is_complete(&self) -> bool {
        match self.length {
            Some(len) if self.chunks.is_empty() => self.buf.len() as u64 == len,
            Some(_) => self.chunks.iter().all(|c| c.done),
            None => false,
        }
    }

    /// Bytes still missing (the whole segment when the length is unknown, guessed).
    pub(crate) fn missing_bytes(&self, guess: u64) -> u64 {
        match self.length {
            None => guess,
            Some(len) if self.chunks.is_empty() => len.saturating_sub(self.buf.len() as u64),
            Some(_) => self
                .chunks
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.done)
                .map(|(i, c)| {
                    let r = self.chunk_range(i);
                    (r.end - r.start) - c.filled
                })
                .sum(),
        }
    }

    /// A neighbour filling a chunk, if any (it has the segment: the likeliest holder).
    pub(crate) fn peer_owner(&self) -> Option<PeerId> {
        self.chunks.iter().find_map(|c| match c.owner {
            Owner::Peer(p, _) => Some(p),
            _ => None,
        })
    }

    /// Whether some chunk is neither done nor assigned.
    pub(crate) fn has_free_chunk(&self) -> bool {
        self.chunks
            .iter()
            .any(|c| !c.done && c.owner == Owner::Nobody)
    }

    /// The runs of chunks `wanted` (not done, say), merged (the closest first, the chunks
    /// between them included) down to at most `max` runs.
    pub(crate) fn runs(&self, max: usize, wanted: impl Fn(&Chunk) -> bool) -> Vec<Range<usize>> {
        let mut runs: Vec<Range<usize>> = Vec::new();
        for (i, c) in self.chunks.iter().enumerate() {
            if !wanted(c) {
                continue;
            }
            match runs.last_mut() {
                Some(r) if r.end == i => r.end = i + 1,
                _ => runs.push(i..i + 1),
            }
        }
        while runs.len() > max.max(1) {
            let k = (1..runs.len())
                .min_by_key(|&k| runs[k].start - runs[k - 1].end)
                .expect("two runs or more");
            let next = runs.remove(k);
            runs[k - 1].end = next.end;
        }
        runs
    }

    /// Assigns chunks to an owner and returns the byte range to request (from the first
    /// chunk's filled prefix to the last chunk's end).
    pub(crate) fn assign(&mut self, chunks: Range<usize>, owner: Owner) -> Range<u64> {
        let first = chunks.start;
        let last = chunks.end - 1;
        for c in &mut self.chunks[chunks] {
            c.owner = owner;
        }
        let start = self.chunk_range(first).start + self.chunks[first].filled;
        start..self.chunk_range(last).end
    }

    /// Releases every chunk `owner` holds that is not done, discarding their partial (and so
    /// unverified) bytes. Returns the bytes discarded.
    pub(crate) fn release(&mut self, owner: Owner) -> u64 {
        let mut discarded = 0;
        for c in &mut self.chunks {
            if c.owner == owner && !c.done {
                c.owner = Owner::Nobody;
                discarded += c.filled;
                c.filled = 0;
            }
        }
        discarded
    }

    /// Releases the chunks `owner` holds from byte `from` on (a chunk boundary); the chunks
    /// before stay its own.
    pub(crate) fn release_from(&mut self, owner: Owner, from: u64) {
        if self.chunk_size == 0 {
            return;
        }
        let first = from.div_ceil(self.chunk_size) as usize;
        for c in self.chunks.iter_mut().skip(first) {
            if c.owner == owner && !c.done {
                c.owner = Owner::Nobody;
                c.filled = 0;
            }
        }
    }

    /// Writes bytes that `owner` sent for `offset..`. Only bytes that continue a chunk the
    /// owner holds, exactly where its fill stands, are accepted.
    pub(crate) fn write(&mut self, owner: Owner, offset: u64, data: &[u8]) -> WriteOutcome {
        let mut out = WriteOutcome::default();
        if self.chunks.is_empty() {
            // No geometry: only an unranged HTTP fetch appends.
            if matches!(owner, Owner::Http(_)) && offset == self.buf.len() as u64 {
                self.buf.extend_from_slice(data);
                out.accepted = data.len() as u64;
            } else {
                out.out_of_order = true;
            }
            return out;
        }
        if let Some(len) = self.length
            && (self.buf.len() as u64) < len
        {
            self.buf.resize(len as usize, 0);
        }
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            if self.chunk_size == 0 {
                out.out_of_order = true;
                break;
            }
            let i = (pos / self.chunk_size) as usize;
            if i >= self.chunks.len() {
                out.out_of_order = true;
                break;
            }
            let range = self.chunk_range(i);
            let chunk = self.chunks[i];
            let len = range.end - range.start;
            let take = (range.end - pos).min(rest.len() as u64) as usize;
            if chunk.done || chunk.owner != owner {
                // Superseded (done already, or taken over by another source): skip these bytes.
            } else if pos != range.start + chunk.filled {
                out.out_of_order = true;
                break;
            } else {
                let at = pos as usize;
                self.buf[at..at + take].copy_from_slice(&rest[..take]);
                let c = &mut self.chunks[i];
                c.filled += take as u64;
                out.accepted += take as u64;
                if c.filled == len {
                    if matches!(owner, Owner::Http(_)) {
                        // Bytes from the origin need no verification.
                        c.owner = Owner::Nobody;
                        c.done = true;
                    } else {
                        // The owner keeps it until `settle`: if the peer is dropped first,
                        // `release` discards the unverified bytes.
                        out.full.push(i);
                    }
                }
            }
            pos += take as u64;
            rest = &rest[take..];
        }
        out
    }

    /// Marks a full chunk verified (done), or resets it after a failed verification.
    pub(crate) fn settle(&mut self, i: usize, ok: bool) {
        let c = &mut self.chunks[i];
        c.owner = Owner::Nobody;
        if ok {
            c.done = true;
            c.verified = true;
        } else {
            c.filled = 0;
            c.owner = Owner::Nobody;
        }
    }

    /// Whether the complete segment matches the digest: its length and every chunk, hashing
    /// only the chunks not verified on arrival (those from the origin). False without a
    /// digest.
    pub(crate) fn matches_digest(&self) -> bool {
        let Some(d) = &self.digest else { return false };
        let geometry = d.digest();
        let same_chunks = self.length == Some(geometry.length())
            && self.chunk_size == u64::from(geometry.chunk_size())
            && self.chunks.len() == geometry.chunk_count();
        if !same_chunks || self.buf.len() as u64 != geometry.length() {
            return d.verify_segment(&self.buf).is_ok();
        }
        (0..self.chunks.len()).all(|i| self.chunks[i].verified || self.verify(i))
    }

    /// Verifies a full chunk against the digest.
    pub(crate) fn verify(&self, i: usize) -> bool {
        let Some(d) = &self.digest else { return false };
        let r = self.chunk_range(i);
        d.verify_chunk(i, &self.buf[r.start as usize..r.end as usize])
            .is_ok()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn missing_runs_are_merged_closest_first() {
        let missing = |c: &Chunk| !c.done;
        let mut dl = Download::new();
        dl.chunks = vec![
            Chunk {
                filled: 0,
                owner: Owner::Nobody,
                done: false,
                verified: false,
            };
            12
        ];
        // Missing: 0-1, 3, 6-7, 9, 11.
        for i in [2, 4, 5, 8, 10] {
            dl.chunks[i].done = true;
        }
        assert_eq!(dl.runs(8, missing), [0..2, 3..4, 6..8, 9..10, 11..12]);
        // Gaps of 1, 2, 1, 1 chunks: the first single gap goes first, then the next.
        assert_eq!(dl.runs(4, missing), [0..4, 6..8, 9..10, 11..12]);
        assert_eq!(dl.runs(3, missing), [0..4, 6..10, 11..12]);
        assert_eq!(dl.runs(1, missing), vec![0..12]);
        for c in &mut dl.chunks {
            c.done = true;
        }
        assert!(dl.runs(4, missing).is_empty());
    }
    use crate::ids::{RenditionId, SegmentId, SwarmId};
    use crate::integrity::{DigestSigner, MIN_CHUNK_SIZE, SegmentDigest};

    pub(crate) const CHUNK: usize = MIN_CHUNK_SIZE as usize;

    pub(crate) fn digest_of(data: &[u8]) -> VerifiedDigest {
        let id = SegmentId::new(SwarmId([1; 20]), RenditionId([0; 8]), 7);
        DigestSigner::from_secret([9; 32])
            .sign(SegmentDigest::compute(id, data, MIN_CHUNK_SIZE))
            .accept_unverified()
    }

    /// Chunk 0 from a peer (verified on arrival), chunk 1 from the origin.
    pub(crate) fn assembled(data: &[u8]) -> Download {
        let mut dl = Download::new();
        dl.set_digest(digest_of(data));
        let peer = Owner::Peer(PeerId([2; 20]), RequestId(1));
        let http = Owner::Http(FetchId(3));
        dl.assign(0..1, peer);
        dl.assign(1..2, http);
        let full = dl.write(peer, 0, &data[..CHUNK]).full;
        assert_eq!(full, vec![0]);
        assert!(dl.verify(0));
        dl.settle(0, true);
        dl.write(http, CHUNK as u64, &data[CHUNK..]);
        assert!(dl.is_complete());
        dl
    }

    #[test]
    fn a_complete_segment_is_checked_against_its_digest_once() {
        let data: Vec<u8> = (0..2 * CHUNK).map(|i| (i * 7) as u8).collect();
        assert!(assembled(&data).matches_digest());

        // Origin bytes that differ from the digest are caught at the end.
        let mut dl = assembled(&data);
        dl.buf[CHUNK + 5] ^= 1;
        assert!(!dl.matches_digest());

        // A chunk verified on arrival is not hashed again...
        let mut dl = assembled(&data);
        dl.buf[5] ^= 1;
        assert!(dl.matches_digest());
        // ...unless the digest changed since.
        let other: Vec<u8> = data.iter().map(|b| b ^ 0xff).collect();
        dl.set_digest(digest_of(&other));
        assert!(!dl.matches_digest());

        assert!(!Download::new().matches_digest(), "no digest, no match");
    }

    #[test]
    fn the_chunk_map_lists_done_chunks_and_free_ones_are_unassigned() {
        let data: Vec<u8> = (0..10 * CHUNK).map(|i| (i * 3) as u8).collect();
        let mut dl = Download::new();
        dl.set_digest(digest_of(&data));
        assert_eq!(dl.chunk_map(), [0, 0]);
        let peer = Owner::Peer(PeerId([2; 20]), RequestId(1));
        dl.assign(8..10, peer);
        assert!(!dl.is_free(8) && !dl.is_free(9) && dl.is_free(7) && !dl.is_free(10));
        for i in 8..10 {
            dl.write(peer, (i * CHUNK) as u64, &data[i * CHUNK..(i + 1) * CHUNK]);
            assert!(dl.verify(i));
            dl.settle(i, true);
        }
        let http = Owner::Http(FetchId(3));
        dl.assign(0..1, http);
        dl.write(http, 0, &data[..CHUNK]);
        assert_eq!(dl.done_count(), 3);
        assert_eq!(dl.chunk_map(), [0b0000_0001, 0b0000_0011]);
    }
}
