//! Segment integrity: signed digests with per-chunk hashes.
//!
//! The operator's signer (every seed node is one) computes a [`SegmentDigest`] of each segment
//! it pulls from the origin: the segment id, its length, a chunk size, the SHA-256 of every
//! chunk and a root hash over all of these, and signs the root with an ed25519 key
//! ([`DigestSigner`]). Viewers trust a set of operator public keys ([`TrustedKeys`]); once a
//! [`SignedDigest`] verifies against it, each chunk of the segment can be checked on its own,
//! as it arrives from any peer ([`VerifiedDigest::verify_chunk`]), before a byte of it is played
//! or relayed. Because the digest is signed, any peer may relay it.
//!
//! ```text
//! chunk_hash[i] = SHA-256(segment[i*chunk_size .. min((i+1)*chunk_size, length)])
//! root          = SHA-256("swarmcdn/digest/v1" 0x00 segment_id(36) length(u64 BE)
//!                         chunk_size(u32 BE) chunk_hash[0] … chunk_hash[n-1])
//! signature     = Ed25519(key, "swarmcdn/digest-signature/v1" 0x00 root)
//! ```
//!
//! ```
//! use swarmcdn_core::ids::{RenditionId, SegmentId, SwarmId};
//! use swarmcdn_core::integrity::{DigestSigner, SegmentDigest, TrustedKeys};
//!
//! let seg = SegmentId::new(SwarmId([1; 20]), RenditionId([2; 8]), 42);
//! let data = vec![7u8; 200_000];
//! let signer = DigestSigner::from_secret([9; 32]);
//! let signed = signer.sign(SegmentDigest::compute(seg, &data, 64 * 1024));
//!
//! let trusted = TrustedKeys::new([signer.public_key()]);
//! let verified = signed.verify(&trusted).unwrap();
//! assert_eq!(verified.chunk_count(), 4);
//! verified.verify_chunk(0, &data[..65536]).unwrap();
//! assert!(verified.verify_chunk(1, &[0u8; 65536]).is_err());
//! ```

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::ids::SegmentId;
use crate::varint::{self, VarintError};

/// The most chunks a digest may have: bounds its encoding to 32 KiB of hashes, so that a digest
/// always fits in one 64 KiB DataChannel message.
pub const MAX_CHUNKS: usize = 1024;

/// The smallest chunk size allowed.
pub const MIN_CHUNK_SIZE: u32 = 1024;

/// The largest chunk size allowed.
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;

/// The chunk size signers use unless a segment is too large for it (64 KiB: a chunk is then
/// one default-size DataChannel message, give or take the frame header).
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;

/// Length of an ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;

/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

const ROOT_DOMAIN: &[u8] = b"swarmcdn/digest/v1\0";
const SIGNATURE_DOMAIN: &[u8] = b"swarmcdn/digest-signature/v1\0";

/// Errors from decoding or verifying digests and chunks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntegrityError {
    /// The encoded digest ended early.
    #[error("digest truncated: {0}")]
    Truncated(&'static str),
    /// A varint in the encoded digest is malformed.
    #[error("digest: {0}")]
    Varint(#[from] VarintError),
    /// The chunk size is outside [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`].
    #[error("chunk size {0} out of range")]
    BadChunkSize(u64),
    /// The segment needs more than [`MAX_CHUNKS`] chunks at this chunk size.
    #[error("{chunks} chunks exceed the limit of {MAX_CHUNKS}")]
    TooManyChunks {
        /// Chunks the digest would need.
        chunks: u64,
    },
    /// Bytes follow the encoded digest.
    #[error("{0} unexpected bytes after the digest")]
    TrailingBytes(usize),
    /// The signer's key is not one of the trusted keys.
    #[error("digest signed by an untrusted key")]
    UntrustedKey,
    /// The signature does not verify.
    #[error("bad digest signature")]
    BadSignature,
    /// A chunk index beyond the segment.
    #[error("chunk {index} out of range ({count} chunks)")]
    ChunkOutOfRange {
        /// The index asked for.
        index: u64,
        /// Chunks in the segment.
        count: usize,
    },
    /// A chunk has the wrong length.
    #[error("chunk {index} has {got} bytes, expected {expected}")]
    ChunkLength {
        /// The chunk.
        index: usize,
        /// Its length.
        got: usize,
        /// The expected length.
        expected: usize,
    },
    /// A chunk's hash does not match.
    #[error("chunk {0} does not match its hash")]
    ChunkMismatch(usize),
    /// A whole segment does not match the digest.
    #[error("segment of {got} bytes does not match its digest ({expected} bytes)")]
    SegmentMismatch {
        /// Its length.
        got: usize,
        /// The digest's length.
        expected: u64,
    },
}

/// The digest of one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentDigest {
    segment: SegmentId,
    length: u64,
    chunk_size: u32,
    /// Shared: a digest is cloned into every download and relayed to every neighbour.
    chunk_hashes: std::sync::Arc<[[u8; 32]]>,
    root: [u8; 32],
}

impl SegmentDigest {
    /// Computes the digest of `data`. The chunk size is `preferred_chunk_size` (clamped to the
    /// allowed range), doubled as often as needed to stay within [`MAX_CHUNKS`].
    ///
    /// # Panics
    ///
    /// If `data` is larger than `MAX_CHUNKS * MAX_CHUNK_SIZE` (16 GiB): no segment is.
    pub fn compute(segment: SegmentId, data: &[u8], preferred_chunk_size: u32) -> Self {
        let mut chunk_size = preferred_chunk_size.clamp(MIN_CHUNK_SIZE, MAX_CHUNK_SIZE);
        while data.len().div_ceil(chunk_size as usize) > MAX_CHUNKS {
            assert!(
                chunk_size < MAX_CHUNK_SIZE,
                "segment of {} bytes is too large to digest",
                data.len()
            );
            chunk_size = (chunk_size * 2).min(MAX_CHUNK_SIZE);
        }
        let chunk_hashes = data
            .chunks(chunk_size as usize)
            .map(|c| Sha256::digest(c).into())
            .collect();
        Self::from_parts(segment, data.len() as u64, chunk_size, chunk_hashes)
            .expect("chunk size and count were chosen within the limits")
    }

    /// A digest from its parts, checking that they are consistent.
    pub fn from_parts(
        segment: SegmentId,
        length: u64,
        chunk_size: u32,
        chunk_hashes: Vec<[u8; 32]>,
    ) -> Result<Self, IntegrityError> {
        let expected = check_geometry(length, chunk_size)?;
        if chunk_hashes.len() as u64 != expected {
            return Err(IntegrityError::Truncated(
                "chunk hash count does not match length",
            ));
        }
        let root = compute_root(&segment, length, chunk_size, &chunk_hashes);
        Ok(Self {
            segment,
            length,
            chunk_size,
            chunk_hashes: chunk_hashes.into(),
            root,
        })
    }

    /// The segment this digest is of.
    pub fn segment(&self) -> SegmentId {
        self.segment
    }

    /// The segment's length in bytes.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// The chunk size in bytes (the last chunk may be shorter).
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// The SHA-256 of every chunk.
    pub fn chunk_hashes(&self) -> &[[u8; 32]] {
        &self.chunk_hashes
    }

    /// The root hash, which the signature covers.
    pub fn root(&self) -> &[u8; 32] {
        &self.root
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> usize {
        self.chunk_hashes.len()
    }

    /// The byte range of chunk `index` within the segment.
    pub fn chunk_range(&self, index: usize) -> Option<std::ops::Range<u64>> {
        if index >= self.chunk_hashes.len() {
            return None;
        }
        let start = index as u64 * u64::from(self.chunk_size);
        Some(start..(start + u64::from(self.chunk_size)).min(self.length))
    }
}

fn check_geometry(length: u64, chunk_size: u32) -> Result<u64, IntegrityError> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        return Err(IntegrityError::BadChunkSize(u64::from(chunk_size)));
    }
    let chunks = length.div_ceil(u64::from(chunk_size));
    if chunks > MAX_CHUNKS as u64 {
        return Err(IntegrityError::TooManyChunks { chunks });
    }
    Ok(chunks)
}

fn compute_root(
    segment: &SegmentId,
    length: u64,
    chunk_size: u32,
    chunk_hashes: &[[u8; 32]],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(ROOT_DOMAIN);
    h.update(segment.to_bytes());
    h.update(length.to_be_bytes());
    h.update(chunk_size.to_be_bytes());
    for c in chunk_hashes {
        h.update(c);
    }
    h.finalize().into()
}

fn signed_message(root: &[u8; 32]) -> [u8; SIGNATURE_DOMAIN.len() + 32] {
    let mut msg = [0u8; SIGNATURE_DOMAIN.len() + 32];
    msg[..SIGNATURE_DOMAIN.len()].copy_from_slice(SIGNATURE_DOMAIN);
    msg[SIGNATURE_DOMAIN.len()..].copy_from_slice(root);
    msg
}

/// An operator public key that signs digests.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; PUBLIC_KEY_LEN]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.0))
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::str::FromStr for PublicKey {
    type Err = crate::ids::IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; PUBLIC_KEY_LEN];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|_| crate::ids::IdError::BadHex {
            expected: 2 * PUBLIC_KEY_LEN,
            got: s.chars().take(64).collect(),
        })?;
        Ok(Self(out))
    }
}

/// Signs digests with an operator's ed25519 key.
pub struct DigestSigner {
    key: SigningKey,
}

impl std::fmt::Debug for DigestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestSigner")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

impl DigestSigner {
    /// A signer from the 32-byte ed25519 secret key (seed). The shell generates it from a
    /// cryptographic random source and stores it.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&secret),
        }
    }

    /// The public key viewers must trust.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key().to_bytes())
    }

    /// Signs a digest.
    pub fn sign(&self, digest: SegmentDigest) -> SignedDigest {
        let signature = self.key.sign(&signed_message(&digest.root)).to_bytes();
        SignedDigest::from_parts(digest, self.public_key(), signature)
    }
}

/// The set of operator keys a peer trusts.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<(PublicKey, VerifyingKey)>,
}

impl TrustedKeys {
    /// Trusts these keys. Keys that are not valid curve points are skipped (they could never
    /// verify a signature).
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        let keys = keys
            .into_iter()
            .filter_map(|k| VerifyingKey::from_bytes(&k.0).ok().map(|v| (k, v)))
            .collect();
        Self { keys }
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted keys.
    pub fn keys(&self) -> impl Iterator<Item = PublicKey> + '_ {
        self.keys.iter().map(|(k, _)| *k)
    }

    /// Whether `key` is trusted.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys.iter().any(|(k, _)| k == key)
    }

    /// The verifying key of `key`, if it is trusted.
    pub fn verifying_key(&self, key: &PublicKey) -> Option<&VerifyingKey> {
        self.keys.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// A digest with its signer and signature, as it travels between peers.
///
/// Shared: a node keeps it with the segment, in its digest table and in every download, and
/// relays it to every neighbour; a clone is a reference count, not 200 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDigest(std::sync::Arc<Signed>);

#[derive(Debug, PartialEq, Eq)]
struct Signed {
    digest: SegmentDigest,
    signer: PublicKey,
    signature: [u8; SIGNATURE_LEN],
}

impl SignedDigest {
    /// A signed digest from its parts (not verified).
    pub fn from_parts(
        digest: SegmentDigest,
        signer: PublicKey,
        signature: [u8; SIGNATURE_LEN],
    ) -> Self {
        Self(std::sync::Arc::new(Signed {
            digest,
            signer,
            signature,
        }))
    }

    /// The digest (not yet verified).
    pub fn digest(&self) -> &SegmentDigest {
        &self.0.digest
    }

    /// The key that signed it.
    pub fn signer(&self) -> &PublicKey {
        &self.0.signer
    }

    /// The signature.
    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.0.signature
    }

    /// Checks that a trusted key signed this digest.
    pub fn verify(&self, trusted: &TrustedKeys) -> Result<VerifiedDigest, IntegrityError> {
        let (_, key) = trusted
            .keys
            .iter()
            .find(|(k, _)| *k == self.0.signer)
            .ok_or(IntegrityError::UntrustedKey)?;
        let sig = Signature::from_bytes(&self.0.signature);
        key.verify_strict(&signed_message(&self.0.digest.root), &sig)
            .map_err(|_| IntegrityError::BadSignature)?;
        Ok(VerifiedDigest {
            signed: self.clone(),
        })
    }

    /// Accepts the digest without checking who signed it: for a peer explicitly configured to
    /// run unverified (no trusted key). Chunks are still checked against the digest's hashes,
    /// which catches corruption in transit but not a malicious peer that lies about both.
    pub fn accept_unverified(&self) -> VerifiedDigest {
        VerifiedDigest {
            signed: self.clone(),
        }
    }

    /// Number of bytes [`SignedDigest::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        SegmentId::ENCODED_LEN
            + varint::len(self.0.digest.length)
            + varint::len(u64::from(self.0.digest.chunk_size))
            + 32 * self.0.digest.chunk_hashes.len()
            + PUBLIC_KEY_LEN
            + SIGNATURE_LEN
    }

    /// Appends the binary encoding (see `docs/protocol.md`):
    /// `segment_id(36) length(varint) chunk_size(varint) hashes(32 × n) signer(32) signature(64)`,
    /// where `n = ceil(length / chunk_size)`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.digest.segment.to_bytes());
        varint::put(out, self.0.digest.length);
        varint::put(out, u64::from(self.0.digest.chunk_size));
        for h in self.0.digest.chunk_hashes.iter() {
            out.extend_from_slice(h);
        }
        out.extend_from_slice(&self.0.signer.0);
        out.extend_from_slice(&self.0.signature);
    }

    /// Decodes exactly one encoded digest (trailing bytes are an error). Allocates at most
    /// `32 * MAX_CHUNKS` bytes, and never more than the input's length.
    pub fn decode(mut buf: &[u8]) -> Result<Self, IntegrityError> {
        let seg: &[u8; SegmentId::ENCODED_LEN] = take(&mut buf, "segment id")?;
        let segment = SegmentId::from_bytes(seg);
        let length = varint::get(&mut buf)?;
        let chunk_size = varint::get(&mut buf)?;
        let chunk_size =
            u32::try_from(chunk_size).map_err(|_| IntegrityError::BadChunkSize(chunk_size))?;
        let chunks = check_geometry(length, chunk_size)? as usize;
        if buf.len() < chunks * 32 {
            return Err(IntegrityError::Truncated("chunk hashes"));
        }
        let mut chunk_hashes = Vec::with_capacity(chunks);
        for _ in 0..chunks {
            let h: &[u8; 32] = take(&mut buf, "chunk hash")?;
            chunk_hashes.push(*h);
        }
        let signer: &[u8; PUBLIC_KEY_LEN] = take(&mut buf, "signer key")?;
        let signature: &[u8; SIGNATURE_LEN] = take(&mut buf, "signature")?;
        if !buf.is_empty() {
            return Err(IntegrityError::TrailingBytes(buf.len()));
        }
        let digest = SegmentDigest::from_parts(segment, length, chunk_size, chunk_hashes)?;
        Ok(Self::from_parts(digest, PublicKey(*signer), *signature))
    }
}

fn take<'a, const N: usize>(
    buf: &mut &'a [u8],
    what: &'static str,
) -> Result<&'a [u8; N], IntegrityError> {
    let (head, rest) = buf
        .split_first_chunk::<N>()
        .ok_or(IntegrityError::Truncated(what))?;
    *buf = rest;
    Ok(head)
}

/// A digest whose signature verified against a trusted key: chunks can now be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDigest {
    signed: SignedDigest,
}

impl VerifiedDigest {
    /// The digest.
    pub fn digest(&self) -> &SegmentDigest {
        self.signed.digest()
    }

    /// Whether this is the only reference to the digest (clones share it).
    pub(crate) fn is_unique(&self) -> bool {
        std::sync::Arc::strong_count(&self.signed.0) == 1
    }

    /// The signed digest, to relay to other peers.
    pub fn signed(&self) -> &SignedDigest {
        &self.signed
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> usize {
        self.signed.digest().chunk_count()
    }

    /// Checks one chunk on its own: its length and its hash.
    pub fn verify_chunk(&self, index: usize, data: &[u8]) -> Result<(), IntegrityError> {
        let d = self.signed.digest();
        let range = d
            .chunk_range(index)
            .ok_or(IntegrityError::ChunkOutOfRange {
                index: index as u64,
                count: d.chunk_count(),
            })?;
        let expected = (range.end - range.start) as usize;
        if data.len() != expected {
            return Err(IntegrityError::ChunkLength {
                index,
                got: data.len(),
                expected,
            });
        }
        let hash: [u8; 32] = Sha256::digest(data).into();
        if hash != d.chunk_hashes[index] {
            return Err(IntegrityError::ChunkMismatch(index));
        }
        Ok(())
    }

    /// Checks a whole segment.
    pub fn verify_segment(&self, data: &[u8]) -> Result<(), IntegrityError> {
        let d = self.signed.digest();
        if data.len() as u64 != d.length {
            return Err(IntegrityError::SegmentMismatch {
                got: data.len(),
                expected: d.length,
            });
        }
        for (i, chunk) in data.chunks(d.chunk_size as usize).enumerate() {
            self.verify_chunk(i, chunk)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{RenditionId, SwarmId};
    use proptest::prelude::*;

    fn seg(n: u64) -> SegmentId {
        SegmentId::new(SwarmId([3; 20]), RenditionId([4; 8]), n)
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn sign_verify_and_check_chunks() {
        let signer = DigestSigner::from_secret([1; 32]);
        let d = data(150_000);
        let signed = signer.sign(SegmentDigest::compute(seg(1), &d, 64 * 1024));
        let trusted = TrustedKeys::new([signer.public_key()]);
        let v = signed.verify(&trusted).unwrap();
        assert_eq!(v.chunk_count(), 3);
        assert_eq!(v.digest().chunk_range(2), Some(131_072..150_000));
        v.verify_segment(&d).unwrap();
        v.verify_chunk(2, &d[131_072..]).unwrap();
        let mut bad = d[65_536..131_072].to_vec();
        bad[100] ^= 1;
        assert_eq!(
            v.verify_chunk(1, &bad),
            Err(IntegrityError::ChunkMismatch(1))
        );
        assert!(matches!(
            v.verify_chunk(2, &d[131_072..149_999]),
            Err(IntegrityError::ChunkLength { .. })
        ));
        assert!(matches!(
            v.verify_chunk(3, &[]),
            Err(IntegrityError::ChunkOutOfRange { .. })
        ));
    }

    #[test]
    fn untrusted_key_and_forged_digest_are_rejected() {
        let signer = DigestSigner::from_secret([1; 32]);
        let other = DigestSigner::from_secret([2; 32]);
        let d = data(10_000);
        let signed = other.sign(SegmentDigest::compute(seg(1), &d, 4096));
        let trusted = TrustedKeys::new([signer.public_key()]);
        assert_eq!(signed.verify(&trusted), Err(IntegrityError::UntrustedKey));

        // A digest of other data, or of another segment, under a valid signature.
        let good = signer.sign(SegmentDigest::compute(seg(1), &d, 4096));
        let forged_data = SegmentDigest::compute(seg(1), &data(10_001), 4096);
        let forged = SignedDigest::from_parts(forged_data, *good.signer(), *good.signature());
        assert_eq!(forged.verify(&trusted), Err(IntegrityError::BadSignature));
        let moved = SegmentDigest::compute(seg(2), &d, 4096);
        let moved = SignedDigest::from_parts(moved, *good.signer(), *good.signature());
        assert_eq!(moved.verify(&trusted), Err(IntegrityError::BadSignature));
    }

    #[test]
    fn chunk_size_grows_for_big_segments() {
        let d = data(MAX_CHUNKS * 4096 + 1);
        let digest = SegmentDigest::compute(seg(1), &d, 4096);
        assert_eq!(digest.chunk_size(), 8192);
        assert!(digest.chunk_count() <= MAX_CHUNKS);
    }

    #[test]
    fn empty_segment_has_no_chunks() {
        let signer = DigestSigner::from_secret([1; 32]);
        let signed = signer.sign(SegmentDigest::compute(seg(1), &[], DEFAULT_CHUNK_SIZE));
        let v = signed
            .verify(&TrustedKeys::new([signer.public_key()]))
            .unwrap();
        assert_eq!(v.chunk_count(), 0);
        v.verify_segment(&[]).unwrap();
    }

    #[test]
    fn decode_rejects_lies_about_geometry() {
        let signer = DigestSigner::from_secret([1; 32]);
        let signed = signer.sign(SegmentDigest::compute(seg(1), &data(5000), 1024));
        let mut enc = Vec::new();
        signed.encode(&mut enc);
        // Claim a huge length: too many chunks, rejected before any allocation.
        let mut lie = enc[..SegmentId::ENCODED_LEN].to_vec();
        varint::put(&mut lie, u64::MAX);
        varint::put(&mut lie, 1024);
        assert!(matches!(
            SignedDigest::decode(&lie),
            Err(IntegrityError::TooManyChunks { .. })
        ));
        let mut extra = enc.clone();
        extra.push(0);
        assert_eq!(
            SignedDigest::decode(&extra),
            Err(IntegrityError::TrailingBytes(1))
        );
        assert!(SignedDigest::decode(&enc[..enc.len() - 1]).is_err());
    }

    proptest! {
        #[test]
        fn encoding_round_trips(len in 0usize..300_000, chunk in 1024u32..200_000, secret: [u8; 32], n: u64) {
            let signer = DigestSigner::from_secret(secret);
            let signed = signer.sign(SegmentDigest::compute(seg(n), &data(len), chunk));
            let mut enc = Vec::new();
            signed.encode(&mut enc);
            prop_assert_eq!(enc.len(), signed.encoded_len());
            let back = SignedDigest::decode(&enc).unwrap();
            prop_assert_eq!(&back, &signed);
            prop_assert!(back.verify(&TrustedKeys::new([signer.public_key()])).is_ok());
        }

        #[test]
        fn decode_never_panics(bytes: Vec<u8>) {
            let _ = SignedDigest::decode(&bytes);
        }
    }
}
