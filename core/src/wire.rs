//! The peer wire protocol, version 1, spoken over one reliable, ordered WebRTC DataChannel.
//!
//! Every DataChannel message holds one or more frames. A frame is
//!
//! ```text
//! length (varint, of kind + body) | kind (1 byte) | body
//! ```
//!
//! so a receiver never guesses where a frame starts and can skip frames it does not know. Both
//! sides first send a [`Handshake`]; the session then uses version
//! `min(ours.max_version, theirs.max_version)` if that is at least both sides' `min_version`
//! ([`Handshake::negotiate`]), and 256 KiB messages if both advertise
//! [`Capabilities::LARGE_MESSAGES`], else 64 KiB. `docs/protocol.md` specifies every frame with
//! byte examples.
//!
//! Decoding takes the message size limit of the session and returns an error, never a panic,
//! on any input; it allocates no more than the message's own size.
//!
//! ```
//! use bytes::Bytes;
//! use swarmcdn_core::ids::RenditionId;
//! use swarmcdn_core::wire::{decode_message, encode_frames, Frame, RequestId, SegmentRef};
//!
//! let seg = SegmentRef { rendition: RenditionId([1; 8]), sequence: 300 };
//! let frames = vec![
//!     Frame::Request { id: RequestId(7), segment: seg, offset: 0, length: 0 },
//!     Frame::Cancel { id: RequestId(7) },
//! ];
//! let msg = Bytes::from(encode_frames(&frames));
//! assert_eq!(decode_message(&msg, 64 * 1024).unwrap(), frames);
//! ```

use bytes::Bytes;

use crate::ids::{RENDITION_ID_LEN, RenditionId, SwarmId};
use crate::integrity::{IntegrityError, SignedDigest};
use crate::varint::{self, VarintError};

/// `Goodbye` reason codes (`docs/protocol.md` §4.2); receivers treat unknown codes as
/// [`goodbye::NORMAL`].
pub mod goodbye {
    /// Normal close (shutting down).
    pub const NORMAL: u8 = 0;
    /// Protocol error.
    pub const PROTOCOL: u8 = 1;
    /// Integrity failure: the receiver is banned.
    pub const INTEGRITY: u8 = 2;
    /// Overloaded.
    pub const OVERLOADED: u8 = 3;
    /// Version or handshake mismatch (also another swarm).
    pub const HANDSHAKE: u8 = 4;
}

/// The highest protocol version this implementation speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// The lowest protocol version this implementation speaks.
pub const MIN_PROTOCOL_VERSION: u8 = 1;

/// The largest DataChannel message every peer accepts (64 KiB: webrtc-rs's default and safe in
/// every browser).
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;

/// The largest DataChannel message used when both peers advertise
/// [`Capabilities::LARGE_MESSAGES`].
pub const LARGE_MAX_MESSAGE: usize = 256 * 1024;

/// The most bytes of availability bitmap in one frame (65 536 segments).
pub const MAX_BITMAP_BYTES: usize = 8 * 1024;

/// The largest chunk map in a [`Frame::Chunks`]: one bit per chunk, at most
/// [`crate::integrity::MAX_CHUNKS`] chunks.
pub const MAX_CHUNK_MAP_BYTES: usize = crate::integrity::MAX_CHUNKS / 8;

/// The most sequence numbers in each list of an [`Frame::HaveDelta`].
pub const MAX_DELTA_ENTRIES: usize = 1024;

/// The most frames in one message: bounds the memory a decoded message takes.
pub const MAX_FRAMES_PER_MESSAGE: usize = 256;

/// The longest reason text of a [`Frame::Goodbye`], in bytes.
pub const MAX_REASON_LEN: usize = 256;

/// Frame kinds at or above this value are extensions: a receiver that does not know one skips
/// it. Unknown kinds below it are a protocol error.
pub const FIRST_EXTENSION_KIND: u8 = 0x40;

/// Most bytes a [`Frame::Data`] adds around its payload (length, kind, request id, segment,
/// offset), so that `max_message - DATA_OVERHEAD` bytes of payload always fit.
pub const DATA_OVERHEAD: usize = varint::MAX_LEN + 1 + 5 + RENDITION_ID_LEN + 2 * varint::MAX_LEN;

/// Frame kind bytes.
pub mod kind {
    /// [`super::Frame::Handshake`].
    pub const HANDSHAKE: u8 = 0x01;
    /// [`super::Frame::Have`].
    pub const HAVE: u8 = 0x02;
    /// [`super::Frame::HaveDelta`].
    pub const HAVE_DELTA: u8 = 0x03;
    /// [`super::Frame::Request`].
    pub const REQUEST: u8 = 0x04;
    /// [`super::Frame::Data`].
    pub const DATA: u8 = 0x05;
    /// [`super::Frame::Cancel`].
    pub const CANCEL: u8 = 0x06;
    /// [`super::Frame::Absent`].
    pub const ABSENT: u8 = 0x07;
    /// [`super::Frame::Busy`].
    pub const BUSY: u8 = 0x08;
    /// [`super::Frame::Digest`].
    pub const DIGEST: u8 = 0x09;
    /// [`super::Frame::Goodbye`].
    pub const GOODBYE: u8 = 0x0a;
    /// [`super::Frame::Fetching`].
    pub const FETCHING: u8 = 0x0b;
    /// [`super::Frame::Chunks`].
    pub const CHUNKS: u8 = 0x0c;
}

/// Errors from decoding a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message is larger than the session allows.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The message holds no frame.
    #[error("empty message")]
    Empty,
    /// A frame's length runs past the end of the message.
    #[error("frame of {len} bytes runs past the end of the message ({left} left)")]
    FrameOverrun {
        /// The frame's declared length.
        len: u64,
        /// Bytes left in the message.
        left: usize,
    },
    /// The message holds more than [`MAX_FRAMES_PER_MESSAGE`] frames.
    #[error("more than {MAX_FRAMES_PER_MESSAGE} frames in one message")]
    TooManyFrames,
    /// A frame's length is zero (no kind byte).
    #[error("zero-length frame")]
    ZeroLengthFrame,
    /// A field ends past the end of its frame.
    #[error("{kind} frame truncated in {field}")]
    Truncated {
        /// The frame kind.
        kind: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A varint is malformed.
    #[error("{kind} frame, {field}: {source}")]
    Varint {
        /// The frame kind.
        kind: &'static str,
        /// The field.
        field: &'static str,
        /// What is wrong.
        source: VarintError,
    },
    /// A value does not fit its field.
    #[error("{kind} frame: {field} value {value} out of range")]
    OutOfRange {
        /// The frame kind.
        kind: &'static str,
        /// The field.
        field: &'static str,
        /// The value.
        value: u64,
    },
    /// A frame kind this version does not know, below [`FIRST_EXTENSION_KIND`].
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// Bytes remain after the last field of a frame.
    #[error("{kind} frame has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// The frame kind.
        kind: &'static str,
        /// How many.
        extra: usize,
    },
    /// The goodbye reason is not UTF-8.
    #[error("goodbye reason is not UTF-8")]
    BadUtf8,
    /// The digest frame is invalid.
    #[error("digest frame: {0}")]
    Digest(#[from] IntegrityError),
}

/// Capability bits advertised in the handshake. Unknown bits are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(pub u64);

impl Capabilities {
    /// Accepts DataChannel messages of up to [`LARGE_MAX_MESSAGE`] bytes.
    pub const LARGE_MESSAGES: Self = Self(1 << 0);
    /// Serves segment data (upload is on).
    pub const UPLOAD: Self = Self(1 << 1);
    /// Is an operator seed node.
    pub const SEED: Self = Self(1 << 2);
    /// Relays signed digests.
    pub const DIGESTS: Self = Self(1 << 3);
    /// Understands [`Frame::Chunks`]: send it the chunk maps of segments still arriving.
    pub const CHUNK_MAPS: Self = Self(1 << 4);

    /// Whether all bits of `other` are set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of both.
    #[must_use]
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// The first frame each side sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    /// The lowest version the sender speaks.
    pub min_version: u8,
    /// The highest version the sender speaks.
    pub max_version: u8,
    /// The sender's capabilities.
    pub capabilities: Capabilities,
    /// The swarm this channel belongs to (must match the receiver's).
    pub swarm: SwarmId,
}

/// What two handshakes agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// The protocol version in use.
    pub version: u8,
    /// The largest DataChannel message either side may send.
    pub max_message: usize,
    /// The remote side's capabilities.
    pub remote: Capabilities,
}

/// Why two handshakes do not agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// No version both sides speak.
    #[error(
        "no common protocol version (ours {our_min}..={our_max}, theirs {their_min}..={their_max})"
    )]
    NoCommonVersion {
        /// Our lowest.
        our_min: u8,
        /// Our highest.
        our_max: u8,
        /// Their lowest.
        their_min: u8,
        /// Their highest.
        their_max: u8,
    },
    /// The remote side is in another swarm.
    #[error("remote peer is in another swarm")]
    WrongSwarm,
}

impl Handshake {
    /// Our handshake for `swarm` with `capabilities`, for the versions this build speaks.
    pub fn new(swarm: SwarmId, capabilities: Capabilities) -> Self {
        Self {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            capabilities,
            swarm,
        }
    }

    /// Negotiates a session between our handshake (`self`) and theirs.
    pub fn negotiate(&self, theirs: &Self) -> Result<Session, HandshakeError> {
        if self.swarm != theirs.swarm {
            return Err(HandshakeError::WrongSwarm);
        }
        let version = self.max_version.min(theirs.max_version);
        if version < self.min_version || version < theirs.min_version {
            return Err(HandshakeError::NoCommonVersion {
                our_min: self.min_version,
                our_max: self.max_version,
                their_min: theirs.min_version,
                their_max: theirs.max_version,
            });
        }
        let large = self.capabilities.contains(Capabilities::LARGE_MESSAGES)
            && theirs.capabilities.contains(Capabilities::LARGE_MESSAGES);
        Ok(Session {
            version,
            max_message: if large {
                LARGE_MAX_MESSAGE
            } else {
                DEFAULT_MAX_MESSAGE
            },
            remote: theirs.capabilities,
        })
    }
}

/// A request id, chosen by the requester and echoed in every reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RequestId(pub u32);

/// A segment within the channel's swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentRef {
    /// The rendition.
    pub rendition: RenditionId,
    /// The media sequence number.
    pub sequence: u64,
}

impl SegmentRef {
    /// The full segment id, given the channel's swarm.
    pub fn in_swarm(self, swarm: SwarmId) -> crate::ids::SegmentId {
        crate::ids::SegmentId::new(swarm, self.rendition, self.sequence)
    }
}

/// Which segments of one rendition a peer has: bit `i` of the bitmap (least significant bit
/// first within each byte) says whether it has sequence `base + i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Availability {
    /// The rendition.
    pub rendition: RenditionId,
    /// The sequence number of bit 0.
    pub base: u64,
    /// The bitmap, at most [`MAX_BITMAP_BYTES`] bytes.
    pub bitmap: Bytes,
}

impl Availability {
    /// The availability of the given sequence numbers. They must span less than
    /// `8 * MAX_BITMAP_BYTES`; when they span more, the newest are kept (live viewers want the
    /// live edge, and what lies far behind it is least useful). Trailing zero bytes are
    /// trimmed.
    pub fn from_sequences(rendition: RenditionId, seqs: impl IntoIterator<Item = u64>) -> Self {
        let mut seqs: Vec<u64> = seqs.into_iter().collect();
        seqs.sort_unstable();
        seqs.dedup();
        let span = (8 * MAX_BITMAP_BYTES) as u64;
        let newest = seqs.last().copied().unwrap_or(0);
        let lowest_kept = newest.saturating_sub(span - 1);
        let base = seqs
            .iter()
            .copied()
            .find(|s| *s >= lowest_kept)
            .unwrap_or(0);
        let mut bitmap = Vec::new();
        for s in seqs.into_iter().filter(|s| *s >= base) {
            let bit = s - base;
            let byte = (bit / 8) as usize;
            if bitmap.len() <= byte {
                bitmap.resize(byte + 1, 0);
            }
            bitmap[byte] |= 1 << (bit % 8);
        }
        Self {
            rendition,
            base,
            bitmap: Bytes::from(bitmap),
        }
    }

    /// Whether `seq` is marked.
    pub fn contains(&self, seq: u64) -> bool {
        let Some(bit) = seq.checked_sub(self.base) else {
            return false;
        };
        let byte = bit / 8;
        byte < self.bitmap.len() as u64 && self.bitmap[byte as usize] & (1 << (bit % 8)) != 0
    }

    /// The marked sequence numbers, ascending. Bits that would lie beyond `u64::MAX` (a
    /// `base` near the end of the range, from a hostile peer) are ignored.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.bitmap.iter().enumerate().flat_map(move |(i, &b)| {
            (0..8u64)
                .filter(move |bit| b & (1 << bit) != 0)
                .filter_map(move |bit| self.base.checked_add(8 * i as u64 + bit))
        })
    }
}

/// One frame of the wire protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Version and capabilities; the first frame each side sends.
    Handshake(Handshake),
    /// The full availability of one rendition, replacing what was known.
    Have(Availability),
    /// Changes to the availability of one rendition.
    HaveDelta {
        /// The rendition.
        rendition: RenditionId,
        /// Sequence numbers now available.
        added: Vec<u64>,
        /// Sequence numbers no longer available (evicted).
        removed: Vec<u64>,
    },
    /// Asks for bytes of a segment.
    Request {
        /// Echoed in the replies.
        id: RequestId,
        /// The segment.
        segment: SegmentRef,
        /// First byte wanted.
        offset: u64,
        /// Bytes wanted; 0 means up to the end of the segment.
        length: u64,
    },
    /// Bytes of a segment, in reply to a request.
    Data {
        /// The request answered.
        id: RequestId,
        /// The segment.
        segment: SegmentRef,
        /// Offset of `payload` in the segment.
        offset: u64,
        /// The bytes; the payload runs to the end of the frame.
        payload: Bytes,
    },
    /// The requester no longer wants a request's data.
    Cancel {
        /// The request.
        id: RequestId,
    },
    /// The responder does not have the segment.
    Absent {
        /// The request.
        id: RequestId,
        /// The segment.
        segment: SegmentRef,
    },
    /// The responder has the segment but no upload capacity now.
    Busy {
        /// The request.
        id: RequestId,
        /// Milliseconds after which a retry may succeed.
        retry_after_ms: u32,
    },
    /// A signed segment digest.
    Digest(Box<SignedDigest>),
    /// The sender closes the session, with a reason.
    Goodbye {
        /// A reason code (see `docs/protocol.md`).
        code: u8,
        /// A human-readable reason, at most [`MAX_REASON_LEN`] bytes.
        reason: String,
    },
    /// The sender is fetching a segment from the origin now and will announce it when it has
    /// it: receivers hold back their own origin fetch of that segment for a while.
    Fetching {
        /// The segment.
        segment: SegmentRef,
    },
    /// Which chunks of a segment the sender holds while the segment is still arriving (sent
    /// only to peers with [`Capabilities::CHUNK_MAPS`]). A map with every chunk set says the
    /// segment is complete.
    Chunks {
        /// The segment.
        segment: SegmentRef,
        /// Bit `i` (least significant bit first in each byte): the sender holds chunk `i`,
        /// verified. At most [`MAX_CHUNK_MAP_BYTES`] bytes.
        bitmap: Bytes,
    },
    /// An extension frame this version does not know (kind >= [`FIRST_EXTENSION_KIND`]),
    /// skipped.
    Unknown {
        /// Its kind.
        kind: u8,
    },
}

impl Frame {
    /// The frame's kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            Self::Handshake(_) => kind::HANDSHAKE,
            Self::Have(_) => kind::HAVE,
            Self::HaveDelta { .. } => kind::HAVE_DELTA,
            Self::Request { .. } => kind::REQUEST,
            Self::Data { .. } => kind::DATA,
            Self::Cancel { .. } => kind::CANCEL,
            Self::Absent { .. } => kind::ABSENT,
            Self::Busy { .. } => kind::BUSY,
            Self::Digest(_) => kind::DIGEST,
            Self::Goodbye { .. } => kind::GOODBYE,
            Self::Fetching { .. } => kind::FETCHING,
            Self::Chunks { .. } => kind::CHUNKS,
            Self::Unknown { kind } => *kind,
        }
    }

    /// Appends the frame, with its length prefix, to `out`.
    ///
    /// # Panics
    ///
    /// On a [`Frame::Unknown`], which has no body to encode.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // The kind and body go after room for the longest length prefix, then move back to
        // just after the prefix: one pass over the body, no buffer of its own.
        let at = out.len();
        out.reserve(varint::MAX_LEN + 1 + self.body_size_hint());
        out.resize(at + varint::MAX_LEN, 0);
        out.push(self.kind());
        self.encode_body(out);
        let len = out.len() - at - varint::MAX_LEN;
        let n = varint::len(len as u64);
        out.copy_within(at + varint::MAX_LEN.., at + n);
        varint::write(&mut out[at..at + n], len as u64);
        out.truncate(at + n + len);
    }

    /// About the bytes of the frame's body: what its variable parts take, plus room for the
    /// rest (an encoder's buffer is sized once).
    fn body_size_hint(&self) -> usize {
        32 + match self {
            Self::Have(a) => a.bitmap.len(),
            Self::HaveDelta { added, removed, .. } => 10 * (added.len() + removed.len()),
            Self::Data { payload, .. } => payload.len(),
            Self::Digest(d) => d.encoded_len(),
            Self::Goodbye { reason, .. } => reason.len().min(MAX_REASON_LEN),
            Self::Chunks { bitmap, .. } => bitmap.len(),
            _ => 0,
        }
    }

    fn encode_body(&self, b: &mut Vec<u8>) {
        match self {
            Self::Handshake(h) => {
                b.push(h.min_version);
                b.push(h.max_version);
                varint::put(b, h.capabilities.0);
                b.extend_from_slice(&h.swarm.0);
            }
            Self::Have(a) => {
                b.extend_from_slice(&a.rendition.0);
                varint::put(b, a.base);
                varint::put(b, a.bitmap.len() as u64);
                b.extend_from_slice(&a.bitmap);
            }
            Self::HaveDelta {
                rendition,
                added,
                removed,
            } => {
                b.extend_from_slice(&rendition.0);
                for list in [added, removed] {
                    varint::put(b, list.len() as u64);
                    for s in list {
                        varint::put(b, *s);
                    }
                }
            }
            Self::Request {
                id,
                segment,
                offset,
                length,
            } => {
                varint::put(b, u64::from(id.0));
                put_segment(b, segment);
                varint::put(b, *offset);
                varint::put(b, *length);
            }
            Self::Data {
                id,
                segment,
                offset,
                payload,
            } => {
                varint::put(b, u64::from(id.0));
                put_segment(b, segment);
                varint::put(b, *offset);
                b.extend_from_slice(payload);
            }
            Self::Cancel { id } => varint::put(b, u64::from(id.0)),
            Self::Absent { id, segment } => {
                varint::put(b, u64::from(id.0));
                put_segment(b, segment);
            }
            Self::Busy { id, retry_after_ms } => {
                varint::put(b, u64::from(id.0));
                varint::put(b, u64::from(*retry_after_ms));
            }
            Self::Digest(d) => d.encode(b),
            Self::Goodbye { code, reason } => {
                b.push(*code);
                let reason = truncate_utf8(reason, MAX_REASON_LEN);
                varint::put(b, reason.len() as u64);
                b.extend_from_slice(reason.as_bytes());
            }
            Self::Fetching { segment } => put_segment(b, segment),
            Self::Chunks { segment, bitmap } => {
                put_segment(b, segment);
                varint::put(b, bitmap.len() as u64);
                b.extend_from_slice(bitmap);
            }
            Self::Unknown { kind } => panic!("cannot encode unknown frame kind {kind:#04x}"),
        }
    }
}

/// Encodes frames into one message.
pub fn encode_frames(frames: &[Frame]) -> Vec<u8> {
    let size: usize = frames
        .iter()
        .map(|f| varint::MAX_LEN + 1 + f.body_size_hint())
        .sum();
    let mut out = Vec::with_capacity(size);
    for f in frames {
        f.encode(&mut out);
    }
    out
}

/// Decodes every frame of one DataChannel message. `max_message` is the session's limit
/// ([`DEFAULT_MAX_MESSAGE`] until the handshake says otherwise).
pub fn decode_message(msg: &Bytes, max_message: usize) -> Result<Vec<Frame>, DecodeError> {
    if msg.len() > max_message {
        return Err(DecodeError::MessageTooLarge {
            len: msg.len(),
            max: max_message,
        });
    }
    if msg.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < msg.len() {
        if frames.len() == MAX_FRAMES_PER_MESSAGE {
            return Err(DecodeError::TooManyFrames);
        }
        let mut rest = &msg[pos..];
        let len = varint::get(&mut rest).map_err(|source| DecodeError::Varint {
            kind: "message",
            field: "frame length",
            source,
        })?;
        if len == 0 {
            return Err(DecodeError::ZeroLengthFrame);
        }
        if len > rest.len() as u64 {
            return Err(DecodeError::FrameOverrun {
                len,
                left: rest.len(),
            });
        }
        let start = msg.len() - rest.len();
        let end = start + len as usize;
        frames.push(decode_frame(msg.slice(start..end))?);
        pos = end;
    }
    Ok(frames)
}

/// Decodes one frame without its length prefix: the kind byte, then the body.
fn decode_frame(frame: Bytes) -> Result<Frame, DecodeError> {
    let kind = frame[0];
    let mut r = Reader {
        buf: &frame[1..],
        kind: kind_name(kind),
    };
    let f = match kind {
        kind::HANDSHAKE => {
            let min_version = r.u8("min_version")?;
            let max_version = r.u8("max_version")?;
            let capabilities = Capabilities(r.varint("capabilities")?);
            let swarm = SwarmId(*r.array("swarm")?);
            // Later versions may append fields to the handshake: ignore them.
            r.buf = &[];
            Frame::Handshake(Handshake {
                min_version,
                max_version,
                capabilities,
                swarm,
            })
        }
        kind::HAVE => {
            let rendition = RenditionId(*r.array("rendition")?);
            let base = r.varint("base")?;
            let len = r.len("bitmap length", MAX_BITMAP_BYTES)?;
            let start = frame.len() - r.buf.len();
            r.bytes("bitmap", len)?;
            Frame::Have(Availability {
                rendition,
                base,
                bitmap: frame.slice(start..start + len),
            })
        }
        kind::HAVE_DELTA => {
            let rendition = RenditionId(*r.array("rendition")?);
            let added = r.seq_list("added")?;
            let removed = r.seq_list("removed")?;
            Frame::HaveDelta {
                rendition,
                added,
                removed,
            }
        }
        kind::REQUEST => Frame::Request {
            id: r.request_id()?,
            segment: r.segment()?,
            offset: r.varint("offset")?,
            length: r.varint("length")?,
        },
        kind::DATA => {
            let id = r.request_id()?;
            let segment = r.segment()?;
            let offset = r.varint("offset")?;
            if offset.checked_add(r.buf.len() as u64).is_none() {
                return Err(DecodeError::OutOfRange {
                    kind: "data",
                    field: "offset",
                    value: offset,
                });
            }
            let start = frame.len() - r.buf.len();
            r.buf = &[];
            Frame::Data {
                id,
                segment,
                offset,
                payload: frame.slice(start..),
            }
        }
        kind::CANCEL => Frame::Cancel {
            id: r.request_id()?,
        },
        kind::ABSENT => Frame::Absent {
            id: r.request_id()?,
            segment: r.segment()?,
        },
        kind::BUSY => Frame::Busy {
            id: r.request_id()?,
            retry_after_ms: r.u32("retry_after_ms")?,
        },
        kind::DIGEST => {
            let d = SignedDigest::decode(r.buf)?;
            r.buf = &[];
            Frame::Digest(Box::new(d))
        }
        kind::GOODBYE => {
            let code = r.u8("code")?;
            let len = r.len("reason length", MAX_REASON_LEN)?;
            let text = r.bytes("reason", len)?;
            let reason = std::str::from_utf8(text)
                .map_err(|_| DecodeError::BadUtf8)?
                .to_owned();
            Frame::Goodbye { code, reason }
        }
        kind::FETCHING => Frame::Fetching {
            segment: r.segment()?,
        },
        kind::CHUNKS => {
            let segment = r.segment()?;
            let len = r.len("bitmap length", MAX_CHUNK_MAP_BYTES)?;
            let start = frame.len() - r.buf.len();
            r.bytes("bitmap", len)?;
            Frame::Chunks {
                segment,
                bitmap: frame.slice(start..start + len),
            }
        }
        k if k >= FIRST_EXTENSION_KIND => {
            r.buf = &[];
            Frame::Unknown { kind: k }
        }
        k => return Err(DecodeError::UnknownKind(k)),
    };
    if !r.buf.is_empty() {
        return Err(DecodeError::TrailingBytes {
            kind: r.kind,
            extra: r.buf.len(),
        });
    }
    Ok(f)
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        kind::HANDSHAKE => "handshake",
        kind::HAVE => "have",
        kind::HAVE_DELTA => "have-delta",
        kind::REQUEST => "request",
        kind::DATA => "data",
        kind::CANCEL => "cancel",
        kind::ABSENT => "absent",
        kind::BUSY => "busy",
        kind::DIGEST => "digest",
        kind::GOODBYE => "goodbye",
        kind::FETCHING => "fetching",
        kind::CHUNKS => "chunks",
        _ => "unknown",
    }
}

fn put_segment(b: &mut Vec<u8>, s: &SegmentRef) {
    b.extend_from_slice(&s.rendition.0);
    varint::put(b, s.sequence);
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Reader<'a> {
    buf: &'a [u8],
    kind: &'static str,
}

impl<'a> Reader<'a> {
    fn truncated(&self, field: &'static str) -> DecodeError {
        DecodeError::Truncated {
            kind: self.kind,
            field,
        }
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or_else(|| self.truncated(field))?;
        self.buf = rest;
        Ok(b)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<&'a [u8; N], DecodeError> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or_else(|| self.truncated(field))?;
        self.buf = rest;
        Ok(head)
    }

    fn bytes(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(self.truncated(field));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn varint(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        varint::get(&mut self.buf).map_err(|source| DecodeError::Varint {
            kind: self.kind,
            field,
            source,
        })
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let v = self.varint(field)?;
        u32::try_from(v).map_err(|_| DecodeError::OutOfRange {
            kind: self.kind,
            field,
            value: v,
        })
    }

    fn len(&mut self, field: &'static str, max: usize) -> Result<usize, DecodeError> {
        let v = self.varint(field)?;
        if v > max as u64 {
            return Err(DecodeError::OutOfRange {
                kind: self.kind,
                field,
                value: v,
            });
        }
        Ok(v as usize)
    }

    fn request_id(&mut self) -> Result<RequestId, DecodeError> {
        self.u32("request id").map(RequestId)
    }

    fn segment(&mut self) -> Result<SegmentRef, DecodeError> {
        Ok(SegmentRef {
            rendition: RenditionId(*self.array("rendition")?),
            sequence: self.varint("sequence")?,
        })
    }

    fn seq_list(&mut self, field: &'static str) -> Result<Vec<u64>, DecodeError> {
        let n = self.len(field, MAX_DELTA_ENTRIES)?;
        // Each entry is at least one byte: a count larger than what is left is a lie, and
        // checking first bounds the allocation by the message size.
        if n > self.buf.len() {
            return Err(self.truncated(field));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.varint(field)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(sequence: u64) -> SegmentRef {
        SegmentRef {
            rendition: RenditionId([0xaa; 8]),
            sequence,
        }
    }

    fn one(frame: &Frame) -> Vec<u8> {
        encode_frames(std::slice::from_ref(frame))
    }

    #[test]
    fn request_bytes_match_the_spec_example() {
        // docs/protocol.md, "Request": id 7, rendition aa×8, sequence 300, offset 65536, length 0.
        let f = Frame::Request {
            id: RequestId(7),
            segment: seg(300),
            offset: 65536,
            length: 0,
        };
        let bytes = one(&f);
        let mut expected = vec![0x10, 0x04, 0x07];
        expected.extend_from_slice(&[0xaa; 8]);
        expected.extend_from_slice(&[0xac, 0x02, 0x80, 0x80, 0x04, 0x00]);
        assert_eq!(bytes, expected);
        assert_eq!(
            decode_message(&bytes.into(), DEFAULT_MAX_MESSAGE).unwrap(),
            [f]
        );
    }

    #[test]
    fn handshake_negotiation() {
        let swarm = SwarmId([1; 20]);
        let large = Handshake::new(
            swarm,
            Capabilities::LARGE_MESSAGES.with(Capabilities::UPLOAD),
        );
        let small = Handshake::new(swarm, Capabilities::UPLOAD);
        assert_eq!(
            large.negotiate(&large).unwrap().max_message,
            LARGE_MAX_MESSAGE
        );
        assert_eq!(
            large.negotiate(&small).unwrap().max_message,
            DEFAULT_MAX_MESSAGE
        );
        let future = Handshake {
            min_version: 2,
            max_version: 3,
            ..large
        };
        assert!(matches!(
            large.negotiate(&future),
            Err(HandshakeError::NoCommonVersion { .. })
        ));
        let newer_but_compatible = Handshake {
            max_version: 9,
            ..large
        };
        assert_eq!(large.negotiate(&newer_but_compatible).unwrap().version, 1);
        let other = Handshake::new(SwarmId([2; 20]), Capabilities::default());
        assert_eq!(large.negotiate(&other), Err(HandshakeError::WrongSwarm));
    }

    #[test]
    fn handshake_ignores_appended_fields_and_unknown_bits() {
        let h = Handshake {
            capabilities: Capabilities(1 << 40 | 1),
            ..Handshake::new(SwarmId([5; 20]), Capabilities::default())
        };
        let mut bytes = one(&Frame::Handshake(h));
        bytes[0] += 3;
        bytes.extend_from_slice(&[1, 2, 3]);
        let frames = decode_message(&bytes.into(), DEFAULT_MAX_MESSAGE).unwrap();
        assert_eq!(frames, [Frame::Handshake(h)]);
    }

    #[test]
    fn availability_bitmap() {
        let a = Availability::from_sequences(RenditionId([1; 8]), [103, 100, 101, 115]);
        assert_eq!(a.base, 100);
        assert_eq!(&a.bitmap[..], &[0b0000_1011, 0b1000_0000]);
        assert!(a.contains(100) && a.contains(101) && a.contains(103) && a.contains(115));
        assert!(!a.contains(99) && !a.contains(102) && !a.contains(116) && !a.contains(0));
        assert_eq!(a.iter().collect::<Vec<_>>(), [100, 101, 103, 115]);
    }

    #[test]
    fn availability_beyond_the_bitmap_keeps_the_newest() {
        let span = (8 * MAX_BITMAP_BYTES) as u64;
        let seqs = [5, 10, 10 + span, 20 + span, 9 + 2 * span];
        let a = Availability::from_sequences(RenditionId([1; 8]), seqs);
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            [10 + span, 20 + span, 9 + 2 * span]
        );
        assert!(a.bitmap.len() <= MAX_BITMAP_BYTES);
        let one = Availability::from_sequences(RenditionId([1; 8]), [u64::MAX]);
        assert_eq!(one.iter().collect::<Vec<_>>(), [u64::MAX]);
        let none = Availability::from_sequences(RenditionId([1; 8]), []);
        assert_eq!(none.iter().count(), 0);
    }

    #[test]
    fn availability_near_the_end_of_the_range_does_not_overflow() {
        let a = Availability {
            rendition: RenditionId([1; 8]),
            base: u64::MAX,
            bitmap: Bytes::from_static(&[0b11, 0xff]),
        };
        assert_eq!(a.iter().collect::<Vec<_>>(), [u64::MAX]);
        assert!(a.contains(u64::MAX));
        assert!(!a.contains(0));
    }

    #[test]
    fn extension_frames_are_skipped_unknown_core_kinds_rejected() {
        let mut msg = vec![0x03, 0x40, 0xde, 0xad];
        msg.extend(one(&Frame::Cancel { id: RequestId(1) }));
        let frames = decode_message(&msg.into(), DEFAULT_MAX_MESSAGE).unwrap();
        assert_eq!(
            frames,
            [
                Frame::Unknown { kind: 0x40 },
                Frame::Cancel { id: RequestId(1) }
            ]
        );
        let msg = Bytes::from_static(&[0x01, 0x3f]);
        assert_eq!(
            decode_message(&msg, DEFAULT_MAX_MESSAGE),
            Err(DecodeError::UnknownKind(0x3f))
        );
    }

    #[test]
    fn limits() {
        let big = Bytes::from(vec![0u8; DEFAULT_MAX_MESSAGE + 1]);
        assert!(matches!(
            decode_message(&big, DEFAULT_MAX_MESSAGE),
            Err(DecodeError::MessageTooLarge { .. })
        ));
        // A frame length beyond the message.
        let msg = Bytes::from_static(&[0x05, 0x06, 0x01]);
        assert!(matches!(
            decode_message(&msg, DEFAULT_MAX_MESSAGE),
            Err(DecodeError::FrameOverrun { .. })
        ));
        // A delta claiming 1000 entries with 2 bytes left.
        let mut body = vec![kind::HAVE_DELTA];
        body.extend_from_slice(&[0; 8]);
        varint::put(&mut body, 1000);
        body.extend_from_slice(&[1, 2]);
        let mut msg = Vec::new();
        varint::put(&mut msg, body.len() as u64);
        msg.extend(body);
        assert!(matches!(
            decode_message(&msg.into(), DEFAULT_MAX_MESSAGE),
            Err(DecodeError::Truncated { .. })
        ));
        // Trailing bytes in a cancel.
        let msg = Bytes::from_static(&[0x03, 0x06, 0x01, 0x00]);
        assert!(matches!(
            decode_message(&msg, DEFAULT_MAX_MESSAGE),
            Err(DecodeError::TrailingBytes { .. })
        ));
        // A request id above u32.
        let msg = Bytes::from_static(&[0x06, 0x06, 0x80, 0x80, 0x80, 0x80, 0x10]);
        assert!(matches!(
            decode_message(&msg, DEFAULT_MAX_MESSAGE),
            Err(DecodeError::OutOfRange { .. })
        ));
    }

    #[test]
    fn data_payload_fits_the_overhead_bound() {
        let payload = Bytes::from(vec![7u8; DEFAULT_MAX_MESSAGE - DATA_OVERHEAD]);
        let f = Frame::Data {
            id: RequestId(u32::MAX),
            segment: seg(u64::MAX),
            offset: u64::MAX - payload.len() as u64,
            payload,
        };
        let bytes = one(&f);
        assert!(bytes.len() <= DEFAULT_MAX_MESSAGE);
        assert_eq!(
            decode_message(&bytes.into(), DEFAULT_MAX_MESSAGE).unwrap(),
            [f]
        );
    }

    #[test]
    fn goodbye_reason_is_truncated_on_a_char_boundary() {
        let reason = "é".repeat(200);
        let bytes = one(&Frame::Goodbye {
            code: goodbye::PROTOCOL,
            reason,
        });
        let [Frame::Goodbye { reason, .. }] =
            &decode_message(&bytes.into(), DEFAULT_MAX_MESSAGE).unwrap()[..]
        else {
            panic!()
        };
        assert_eq!(reason.len(), MAX_REASON_LEN);
    }
}
