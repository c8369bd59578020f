//! The seed mesh's messages: what seeds tell each other over gossipsub and ask each other over
//! request-response (the transport, libp2p, lives in `peer-node`).
//!
//! Every seed of a stream publishes on the stream's topic ([`topic`]):
//! - a Hello [`Presence`] every second: "I follow this stream", signed with the seed's operator
//!   key over its mesh peer id, the swarm id and the time, so only the operator's seeds take
//!   part in the ownership draw ([`owner_rank`]) and old hellos cannot be replayed;
//! - [`Gossip::Have`] once it holds a segment: the segment's [`SignedDigest`];
//! - a Bye [`Presence`] when it shuts down.
//!
//! A seed fetches a segment it does not own from its owner with a [`FetchRequest`]; the
//! [`FetchResponse`] carries the signed digest and the bytes (or the chunk-aligned cover of the
//! byte range asked for), so the requester verifies before it keeps a byte.
//!
//! Encodings (all integers varints unless said otherwise; see `docs/protocol.md` §6):
//! ```text
//! Gossip        = 0x01 Hello: time_ms(u64 BE) signer(32) signature(64)
//!               | 0x02 Have:  signed_digest (integrity encoding)
//!               | 0x03 Bye:   time_ms(u64 BE) signer(32) signature(64)
//! FetchRequest  = version(1) segment_id(36) range_flag(1) [start end]
//!                 url_len url resource_flag(1) [start end]
//! FetchResponse = 0x00 Found: digest_len signed_digest offset data_len data
//!               | 0x01 NotFound
//!               | 0x02 Refused: reason_len reason
//! ```

use std::ops::Range;

use bytes::Bytes;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use sha2::{Digest, Sha256};

use crate::ids::{SegmentId, SwarmId};
use crate::integrity::{
    IntegrityError, PUBLIC_KEY_LEN, PublicKey, SIGNATURE_LEN, SignedDigest, TrustedKeys,
};
use crate::varint::{self, VarintError};

/// Version byte of [`FetchRequest`].
pub const VERSION: u8 = 1;

/// The longest resource URL a request may carry.
pub const MAX_URL_LEN: usize = 2048;

/// The longest encoded request.
pub const MAX_REQUEST_LEN: usize = 4096;

/// The longest refusal reason.
pub const MAX_REASON_LEN: usize = 256;

/// The largest segment (or range) a response may carry: 64 MiB.
pub const MAX_DATA_LEN: u64 = 64 * 1024 * 1024;

/// The longest gossip message (a Have of a digest with the most chunks fits).
pub const MAX_GOSSIP_LEN: usize = 40 * 1024;

const HELLO_DOMAIN: &[u8] = b"swarmcdn/mesh-hello/v1\0";
const BYE_DOMAIN: &[u8] = b"swarmcdn/mesh-bye/v1\0";
const OWNER_DOMAIN: &[u8] = b"swarmcdn/mesh-owner/v1\0";

/// Errors decoding mesh messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeshProtoError {
    /// The message ended early.
    #[error("mesh message truncated: {0}")]
    Truncated(&'static str),
    /// A malformed varint.
    #[error("mesh message: {0}")]
    Varint(#[from] VarintError),
    /// An unknown message type or version.
    #[error("unknown mesh message type or version {0}")]
    UnknownType(u8),
    /// A field beyond its limit.
    #[error("mesh message: {what} of {len} bytes exceeds {max}")]
    TooLong {
        /// The field.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A range whose end is before its start.
    #[error("mesh message: empty or inverted range {0}..{1}")]
    BadRange(u64, u64),
    /// A string that is not UTF-8.
    #[error("mesh message: {0} is not UTF-8")]
    NotUtf8(&'static str),
    /// Bytes after the message.
    #[error("{0} unexpected bytes after the mesh message")]
    TrailingBytes(usize),
    /// The embedded digest is malformed.
    #[error("mesh message digest: {0}")]
    Digest(#[from] IntegrityError),
}

/// The gossipsub topic of a stream's seeds.
pub fn topic(swarm: &SwarmId) -> String {
    format!("swarmcdn/mesh/v1/{}", swarm.to_hex())
}

/// The weight of a mesh member (by its mesh peer id bytes) as the owner of `segment`.
pub fn owner_weight(segment: &SegmentId, member: &[u8]) -> u64 {
    let mut h = Sha256::new();
    h.update(OWNER_DOMAIN);
    h.update(segment.to_bytes());
    h.update(member);
    let d = h.finalize();
    let mut w = [0u8; 8];
    w.copy_from_slice(&d[..8]);
    u64::from_be_bytes(w)
}

/// `members` ordered as owners of `segment`: the owner first, then who takes over if it fails.
/// Ties (never in practice) break by the member bytes, so every seed computes the same order.
pub fn owner_rank<'a, M: AsRef<[u8]>>(segment: &SegmentId, members: &'a [M]) -> Vec<&'a M> {
    let mut v: Vec<(u64, &M)> = members
        .iter()
        .map(|m| (owner_weight(segment, m.as_ref()), m))
        .collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.as_ref().cmp(b.1.as_ref())));
    v.into_iter().map(|(_, m)| m).collect()
}

/// Whether a [`Presence`] says the seed is there or leaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceKind {
    /// "I follow this stream."
    Hello,
    /// "I stop following this stream."
    Bye,
}

/// A seed's signed, timestamped statement that it follows (Hello) or leaves (Bye) a stream
/// under a mesh peer id. The time bounds replays: receivers reject statements older than their
/// window (clocks are assumed synchronized to within it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// Hello or Bye.
    pub kind: PresenceKind,
    /// When it was signed: milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The operator key that signed it.
    pub signer: PublicKey,
    /// Ed25519 over `domain swarm_id(20) time_ms(u64 BE) peer_id`, where the domain is
    /// `"swarmcdn/mesh-hello/v1\0"` or `"swarmcdn/mesh-bye/v1\0"`.
    pub signature: [u8; SIGNATURE_LEN],
}

impl Presence {
    /// Signs a statement for `peer` (the mesh peer id's bytes) in `swarm` at `time_ms`.
    pub fn sign(
        kind: PresenceKind,
        secret: &[u8; 32],
        peer: &[u8],
        swarm: &SwarmId,
        time_ms: u64,
    ) -> Self {
        let key = SigningKey::from_bytes(secret);
        Self {
            kind,
            time_ms,
            signer: PublicKey(key.verifying_key().to_bytes()),
            signature: key
                .sign(&presence_message(kind, peer, swarm, time_ms))
                .to_bytes(),
        }
    }

    /// Checks that a trusted key signed this statement for `peer` in `swarm`, and that it is
    /// at most `window_ms` away from `now_ms`.
    pub fn verify(
        &self,
        trusted: &TrustedKeys,
        peer: &[u8],
        swarm: &SwarmId,
        now_ms: u64,
        window_ms: u64,
    ) -> Result<(), PresenceError> {
        if self.time_ms.abs_diff(now_ms) > window_ms {
            return Err(PresenceError::Stale {
                time_ms: self.time_ms,
                now_ms,
            });
        }
        let key = trusted
            .verifying_key(&self.signer)
            .ok_or(PresenceError::UntrustedKey)?;
        key.verify(
            &presence_message(self.kind, peer, swarm, self.time_ms),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| PresenceError::BadSignature)
    }
}

/// Why a [`Presence`] was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceError {
    /// Signed too long ago (or in the future): a replay, or clocks too far apart.
    #[error("presence signed at {time_ms} ms, now is {now_ms} ms")]
    Stale {
        /// Its time.
        time_ms: u64,
        /// The receiver's time.
        now_ms: u64,
    },
    /// The signer is not trusted.
    #[error("presence signed by an untrusted key")]
    UntrustedKey,
    /// The signature does not verify.
    #[error("bad presence signature")]
    BadSignature,
}

fn presence_message(kind: PresenceKind, peer: &[u8], swarm: &SwarmId, time_ms: u64) -> Vec<u8> {
    let domain = match kind {
        PresenceKind::Hello => HELLO_DOMAIN,
        PresenceKind::Bye => BYE_DOMAIN,
    };
    let mut m = Vec::with_capacity(domain.len() + 28 + peer.len());
    m.extend_from_slice(domain);
    m.extend_from_slice(&swarm.0);
    m.extend_from_slice(&time_ms.to_be_bytes());
    m.extend_from_slice(peer);
    m
}

/// A message on a stream's topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gossip {
    /// "I follow this stream" or "I stop following it" (see [`Presence`]).
    Presence(Presence),
    /// "I hold this segment, and this is its digest."
    Have(Box<SignedDigest>),
}

impl Gossip {
    /// The binary encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::Presence(p) => {
                out.push(match p.kind {
                    PresenceKind::Hello => 1,
                    PresenceKind::Bye => 3,
                });
                out.extend_from_slice(&p.time_ms.to_be_bytes());
                out.extend_from_slice(&p.signer.0);
                out.extend_from_slice(&p.signature);
            }
            Self::Have(d) => {
                out.reserve(1 + d.encoded_len());
                out.push(2);
                d.encode(&mut out);
            }
        }
        out
    }

    /// Decodes one message (trailing bytes are an error).
    pub fn decode(buf: &[u8]) -> Result<Self, MeshProtoError> {
        limit("gossip message", buf.len() as u64, MAX_GOSSIP_LEN as u64)?;
        let (&kind, mut rest) = buf.split_first().ok_or(MeshProtoError::Truncated("type"))?;
        let msg = match kind {
            1 | 3 => {
                let time: &[u8; 8] = take(&mut rest, "time")?;
                let signer: &[u8; PUBLIC_KEY_LEN] = take(&mut rest, "signer")?;
                let signature: &[u8; SIGNATURE_LEN] = take(&mut rest, "signature")?;
                end(rest)?;
                Self::Presence(Presence {
                    kind: if kind == 1 {
                        PresenceKind::Hello
                    } else {
                        PresenceKind::Bye
                    },
                    time_ms: u64::from_be_bytes(*time),
                    signer: PublicKey(*signer),
                    signature: *signature,
                })
            }
            2 => Self::Have(Box::new(SignedDigest::decode(rest)?)),
            k => return Err(MeshProtoError::UnknownType(k)),
        };
        Ok(msg)
    }
}

/// A request for a segment, or a byte range of it, from another seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// The segment.
    pub segment: SegmentId,
    /// The byte range wanted within the segment (`None`: all of it).
    pub range: Option<Range<u64>>,
    /// The segment's resource at the origin, so that the seed asked can pull it through if it
    /// has not yet listed it (it only does so for an origin it follows).
    pub url: String,
    /// The segment's byte range within that resource (`EXT-X-BYTERANGE`).
    pub resource_range: Option<Range<u64>>,
}

impl FetchRequest {
    /// The binary encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.url.len());
        out.push(VERSION);
        out.extend_from_slice(&self.segment.to_bytes());
        put_range(&mut out, self.range.as_ref());
        varint::put(&mut out, self.url.len() as u64);
        out.extend_from_slice(self.url.as_bytes());
        put_range(&mut out, self.resource_range.as_ref());
        out
    }

    /// Decodes one request.
    pub fn decode(buf: &[u8]) -> Result<Self, MeshProtoError> {
        limit("request", buf.len() as u64, MAX_REQUEST_LEN as u64)?;
        let (&version, mut rest) = buf
            .split_first()
            .ok_or(MeshProtoError::Truncated("version"))?;
        if version != VERSION {
            return Err(MeshProtoError::UnknownType(version));
        }
        let seg: &[u8; SegmentId::ENCODED_LEN] = take(&mut rest, "segment id")?;
        let segment = SegmentId::from_bytes(seg);
        let range = get_range(&mut rest)?;
        let len = varint::get(&mut rest)?;
        limit("url", len, MAX_URL_LEN as u64)?;
        let url = take_slice(&mut rest, len as usize, "url")?;
        let url = std::str::from_utf8(url)
            .map_err(|_| MeshProtoError::NotUtf8("url"))?
            .to_string();
        let resource_range = get_range(&mut rest)?;
        end(rest)?;
        Ok(Self {
            segment,
            range,
            url,
            resource_range,
        })
    }
}

/// The answer to a [`FetchRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchResponse {
    /// The segment (or the chunk-aligned cover of the range asked for).
    Found {
        /// The segment's signed digest.
        digest: Box<SignedDigest>,
        /// Where `data` starts within the segment.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// The seed does not hold the segment and could not get it in time.
    NotFound,
    /// The seed will not serve this request.
    Refused(String),
}

impl FetchResponse {
    /// The encoding of everything before the data bytes (`Found`), or of the whole response.
    /// Sending the head and then the data avoids copying the segment.
    pub fn encode_head(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::Found {
                digest,
                offset,
                data,
            } => {
                out.push(0);
                varint::put(&mut out, digest.encoded_len() as u64);
                digest.encode(&mut out);
                varint::put(&mut out, *offset);
                varint::put(&mut out, data.len() as u64);
            }
            Self::NotFound => out.push(1),
            Self::Refused(reason) => {
                out.push(2);
                let r = truncate_utf8(reason, MAX_REASON_LEN);
                varint::put(&mut out, r.len() as u64);
                out.extend_from_slice(r.as_bytes());
            }
        }
        out
    }

    /// The whole encoding (head, then the data).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.encode_head();
        if let Self::Found { data, .. } = self {
            out.extend_from_slice(data);
        }
        out
    }

    /// Decodes one response; the data is a slice of `buf` (no copy).
    pub fn decode(buf: Bytes) -> Result<Self, MeshProtoError> {
        let mut rest: &[u8] = &buf;
        let (&kind, r) = rest
            .split_first()
            .ok_or(MeshProtoError::Truncated("type"))?;
        rest = r;
        match kind {
            0 => {
                let dlen = varint::get(&mut rest)?;
                let max = MAX_GOSSIP_LEN as u64;
                limit("digest", dlen, max)?;
                let d = take_slice(&mut rest, dlen as usize, "digest")?;
                let digest = Box::new(SignedDigest::decode(d)?);
                let offset = varint::get(&mut rest)?;
                let len = varint::get(&mut rest)?;
                limit("data", len, MAX_DATA_LEN)?;
                if rest.len() as u64 != len {
                    return Err(if (rest.len() as u64) < len {
                        MeshProtoError::Truncated("data")
                    } else {
                        MeshProtoError::TrailingBytes(rest.len() - len as usize)
                    });
                }
                let start = buf.len() - rest.len();
                Ok(Self::Found {
                    digest,
                    offset,
                    data: buf.slice(start..),
                })
            }
            1 => {
                end(rest)?;
                Ok(Self::NotFound)
            }
            2 => {
                let len = varint::get(&mut rest)?;
                limit("reason", len, MAX_REASON_LEN as u64)?;
                let r = take_slice(&mut rest, len as usize, "reason")?;
                let r = std::str::from_utf8(r).map_err(|_| MeshProtoError::NotUtf8("reason"))?;
                end(rest)?;
                Ok(Self::Refused(r.to_string()))
            }
            k => Err(MeshProtoError::UnknownType(k)),
        }
    }
}

/// The chunk-aligned cover of `range` within a segment of `length` bytes cut in chunks of
/// `chunk_size`: what a seed sends for a range request, so that every chunk sent can be checked.
pub fn aligned_cover(range: &Range<u64>, length: u64, chunk_size: u32) -> Range<u64> {
    let cs = u64::from(chunk_size.max(1));
    let start = (range.start.min(length) / cs) * cs;
    let end = range
        .end
        .min(length)
        .div_ceil(cs)
        .saturating_mul(cs)
        .min(length);
    start..end.max(start)
}

/// `Err(TooLong)` when `len > max`.
fn limit(what: &'static str, len: u64, max: u64) -> Result<(), MeshProtoError> {
    if len > max {
        return Err(MeshProtoError::TooLong { what, len, max });
    }
    Ok(())
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

fn put_range(out: &mut Vec<u8>, r: Option<&Range<u64>>) {
    match r {
        None => out.push(0),
        Some(r) => {
            out.push(1);
            varint::put(out, r.start);
            varint::put(out, r.end);
        }
    }
}

fn get_range(buf: &mut &[u8]) -> Result<Option<Range<u64>>, MeshProtoError> {
    let (&flag, rest) = buf
        .split_first()
        .ok_or(MeshProtoError::Truncated("range flag"))?;
    *buf = rest;
    match flag {
        0 => Ok(None),
        1 => {
            let start = varint::get(buf)?;
            let end = varint::get(buf)?;
            if end <= start {
                return Err(MeshProtoError::BadRange(start, end));
            }
            Ok(Some(start..end))
        }
        k => Err(MeshProtoError::UnknownType(k)),
    }
}

fn take<'a, const N: usize>(
    buf: &mut &'a [u8],
    what: &'static str,
) -> Result<&'a [u8; N], MeshProtoError> {
    let (head, rest) = buf
        .split_first_chunk::<N>()
        .ok_or(MeshProtoError::Truncated(what))?;
    *buf = rest;
    Ok(head)
}

fn take_slice<'a>(
    buf: &mut &'a [u8],
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], MeshProtoError> {
    if buf.len() < len {
        return Err(MeshProtoError::Truncated(what));
    }
    let (head, rest) = buf.split_at(len);
    *buf = rest;
    Ok(head)
}

fn end(rest: &[u8]) -> Result<(), MeshProtoError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(MeshProtoError::TrailingBytes(rest.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RenditionId;
    use crate::integrity::{DigestSigner, SegmentDigest};
    use proptest::prelude::*;

    fn seg(n: u64) -> SegmentId {
        SegmentId::new(SwarmId([3; 20]), RenditionId([4; 8]), n)
    }

    fn signed(n: u64, data: &[u8]) -> SignedDigest {
        DigestSigner::from_secret([5; 32]).sign(SegmentDigest::compute(seg(n), data, 1024))
    }

    #[test]
    fn presence_verifies_only_for_its_kind_peer_swarm_time_and_a_trusted_key() {
        let sw = SwarmId([1; 20]);
        let h = Presence::sign(PresenceKind::Hello, &[5; 32], b"peer-a", &sw, 1_000_000);
        let trusted = TrustedKeys::new([DigestSigner::from_secret([5; 32]).public_key()]);
        h.verify(&trusted, b"peer-a", &sw, 1_004_000, 10_000)
            .unwrap();
        let bad = Err(PresenceError::BadSignature);
        assert_eq!(h.verify(&trusted, b"peer-b", &sw, 1_000_000, 10_000), bad);
        assert_eq!(
            h.verify(&trusted, b"peer-a", &SwarmId([2; 20]), 1_000_000, 10_000),
            bad
        );
        // A Bye cannot be made of a Hello, nor a later Hello of an old one.
        let bye = Presence {
            kind: PresenceKind::Bye,
            ..h.clone()
        };
        assert_eq!(bye.verify(&trusted, b"peer-a", &sw, 1_000_000, 10_000), bad);
        let later = Presence {
            time_ms: 1_020_000,
            ..h.clone()
        };
        assert_eq!(
            later.verify(&trusted, b"peer-a", &sw, 1_020_000, 10_000),
            bad
        );
        // A replay after the window is stale.
        assert!(matches!(
            h.verify(&trusted, b"peer-a", &sw, 1_010_001, 10_000),
            Err(PresenceError::Stale { .. })
        ));
        let other = TrustedKeys::new([DigestSigner::from_secret([6; 32]).public_key()]);
        assert_eq!(
            h.verify(&other, b"peer-a", &sw, 1_000_000, 10_000),
            Err(PresenceError::UntrustedKey)
        );
    }

    #[test]
    fn owners_spread_over_members_and_agree_whatever_the_order() {
        let members = [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
        let mut reversed = members.clone();
        reversed.reverse();
        let mut counts = [0usize; 3];
        for n in 0..3000 {
            let r = owner_rank(&seg(n), &members);
            assert_eq!(r, owner_rank(&seg(n), &reversed));
            counts[members.iter().position(|m| m == r[0]).unwrap()] += 1;
        }
        for c in counts {
            assert!((850..1150).contains(&c), "{counts:?}");
        }
        // A member leaving moves only its own segments.
        let two = [b"a".to_vec(), b"c".to_vec()];
        for n in 0..500 {
            let before = owner_rank(&seg(n), &members)[0].clone();
            let after = owner_rank(&seg(n), &two)[0].clone();
            if before != b"b" {
                assert_eq!(before, after);
            }
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(Gossip::decode(&[]), Err(MeshProtoError::Truncated("type")));
        assert_eq!(Gossip::decode(&[9]), Err(MeshProtoError::UnknownType(9)));
        let mut bye = Gossip::Presence(Presence::sign(
            PresenceKind::Bye,
            &[1; 32],
            b"p",
            &SwarmId([1; 20]),
            5,
        ))
        .encode();
        bye.push(0);
        assert_eq!(Gossip::decode(&bye), Err(MeshProtoError::TrailingBytes(1)));
        assert_eq!(
            Gossip::decode(&[3, 0]),
            Err(MeshProtoError::Truncated("time"))
        );
        let mut req = FetchRequest {
            segment: seg(1),
            range: Some(5..9),
            url: "http://o/a.m4s".into(),
            resource_range: None,
        }
        .encode();
        req[0] = 2;
        assert_eq!(
            FetchRequest::decode(&req),
            Err(MeshProtoError::UnknownType(2))
        );
        let mut inverted = vec![VERSION];
        inverted.extend_from_slice(&seg(1).to_bytes());
        inverted.extend_from_slice(&[1, 9, 5]);
        assert_eq!(
            FetchRequest::decode(&inverted),
            Err(MeshProtoError::BadRange(9, 5))
        );
        let mut long = vec![VERSION];
        long.extend_from_slice(&seg(1).to_bytes());
        long.push(0);
        varint::put(&mut long, 5000);
        assert!(matches!(
            FetchRequest::decode(&long),
            Err(MeshProtoError::TooLong { what: "url", .. })
        ));
        let data = Bytes::from(vec![1u8; 3000]);
        let found = FetchResponse::Found {
            digest: Box::new(signed(1, &data)),
            offset: 0,
            data: data.clone(),
        }
        .encode();
        let cut = Bytes::copy_from_slice(&found[..found.len() - 1]);
        assert_eq!(
            FetchResponse::decode(cut),
            Err(MeshProtoError::Truncated("data"))
        );
        let mut extra = found.clone();
        extra.push(0);
        assert_eq!(
            FetchResponse::decode(Bytes::from(extra)),
            Err(MeshProtoError::TrailingBytes(1))
        );
    }

    #[test]
    fn aligned_cover_takes_whole_chunks() {
        assert_eq!(aligned_cover(&(1500..2100), 5000, 1024), 1024..3072);
        assert_eq!(aligned_cover(&(0..5000), 5000, 1024), 0..5000);
        assert_eq!(aligned_cover(&(4100..9000), 5000, 1024), 4096..5000);
        assert_eq!(aligned_cover(&(7000..9000), 5000, 1024), 4096..5000);
    }

    proptest! {
        #[test]
        fn requests_round_trip(n in any::<u64>(), r in proptest::option::of((0u64..1<<40, 1u64..1<<20)),
                               url in "[ -~]{0,300}", rr in proptest::option::of((0u64..1<<40, 1u64..1<<20))) {
            let req = FetchRequest {
                segment: seg(n),
                range: r.map(|(s, l)| s..s + l),
                url,
                resource_range: rr.map(|(s, l)| s..s + l),
            };
            prop_assert_eq!(FetchRequest::decode(&req.encode()), Ok(req));
        }

        #[test]
        fn responses_and_gossip_round_trip(n in any::<u64>(), len in 1usize..10_000, offset in any::<u64>(), reason in "\\PC{0,60}") {
            let data = Bytes::from(vec![7u8; len]);
            let d = signed(n, &data);
            let found = FetchResponse::Found { digest: Box::new(d.clone()), offset, data };
            prop_assert_eq!(FetchResponse::decode(Bytes::from(found.encode())), Ok(found));
            let refused = FetchResponse::Refused(reason);
            prop_assert_eq!(FetchResponse::decode(Bytes::from(refused.encode())), Ok(refused));
            let have = Gossip::Have(Box::new(d));
            prop_assert_eq!(Gossip::decode(&have.encode()), Ok(have));
            for kind in [PresenceKind::Hello, PresenceKind::Bye] {
                let p = Gossip::Presence(Presence::sign(kind, &[1; 32], &n.to_be_bytes(), &SwarmId([9; 20]), offset));
                prop_assert_eq!(Gossip::decode(&p.encode()), Ok(p));
            }
        }

        #[test]
        fn decoders_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Gossip::decode(&buf);
            let _ = FetchRequest::decode(&buf);
            let _ = FetchResponse::decode(Bytes::from(buf));
        }
    }
}
