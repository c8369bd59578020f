//! Identifiers: swarms, peers, renditions and segments.
//!
//! # Swarm ids
//!
//! A swarm is the set of viewers of one stream (all renditions of one master playlist), so that a
//! viewer whose player switches bitrate keeps its neighbours; the tracker prefers to match peers
//! of the same rendition inside it. Every viewer of a stream must derive the same [`SwarmId`]
//! without talking to anyone, so it is a hash of what they all see:
//!
//! - the stream key: the operator-given content id when there is one
//!   ([`StreamKey::ContentId`]), or else the playlist URL with its query and fragment removed
//!   ([`StreamKey::PlaylistUrl`]), so that per-viewer tokens (`?token=…`) do not split a swarm;
//! - the rendition fingerprint of the stream: the sorted [`RenditionId`]s of its renditions, so
//!   that viewers given different encodings of the "same" URL (an operator re-encoding, a
//!   different ladder) never exchange segments that would not play.
//!
//! ```text
//! swarm_id = SHA-256( "swarmcdn/swarm/v1" 0x00 kind 0x00 key 0x00 rendition_1 … rendition_n )[..20]
//! kind     = "content" | "url"
//! ```
//!
//! # Rendition ids
//!
//! A [`RenditionId`] is the first 8 bytes of the SHA-256 of the rendition's normalized
//! attributes ([`RenditionAttributes`]): bandwidth, codecs (trimmed, lower-cased and sorted),
//! resolution, frame rate (to 3 decimals) and name. It does not depend on the rendition's
//! position in the master playlist or on its URI, so players that filter or reorder variants
//! still agree.
//!
//! # Segment ids
//!
//! A [`SegmentId`] is (swarm, rendition, media sequence number). For live streams the media
//! sequence number is the HLS `EXT-X-MEDIA-SEQUENCE` of the segment; for VOD it is the same
//! (the playlist's first sequence number plus the segment's index), which every viewer sees
//! identically.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Length in bytes of a [`SwarmId`] or a [`PeerId`] (the WebTorrent `info_hash` / `peer_id`).
pub const ID_LEN: usize = 20;

/// Length in bytes of a [`RenditionId`].
pub const RENDITION_ID_LEN: usize = 8;

/// Errors from parsing an id from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The text is not hex, or not of the right length.
    #[error("expected {expected} hex digits, got {got:?}")]
    BadHex {
        /// Number of hex digits expected.
        expected: usize,
        /// The text given (cut to 64 characters).
        got: String,
    },
    /// A segment id string is not of the form `swarm/rendition/sequence`.
    #[error("segment id must be swarm_hex/rendition_hex/sequence, got {0:?}")]
    BadSegmentId(String),
}

/// Lexicographic order of two byte strings of one length, eight bytes at a time.
#[inline]
fn bytes_cmp<const N: usize>(a: &[u8; N], b: &[u8; N]) -> std::cmp::Ordering {
    let (mut x, mut y) = (a.chunks_exact(8), b.chunks_exact(8));
    for (p, q) in (&mut x).zip(&mut y) {
        let p = u64::from_be_bytes(p.try_into().expect("chunks of 8"));
        let q = u64::from_be_bytes(q.try_into().expect("chunks of 8"));
        if p != q {
            return p.cmp(&q);
        }
    }
    x.remainder().cmp(y.remainder())
}

macro_rules! byte_id {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(pub [u8; $len]);

        // The order of the bytes (as derived), compared eight at a time as big-endian
        // integers: ids key the node's ordered maps, and the derived order calls `memcmp`
        // for every comparison.
        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                bytes_cmp(&self.0, &other.0)
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl $name {
            /// The id's bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// The id as lower-case hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl From<[u8; $len]> for $name {
            fn from(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in &self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut out = [0u8; $len];
                hex::decode_to_slice(s, &mut out).map_err(|_| IdError::BadHex {
                    expected: 2 * $len,
                    got: s.chars().take(64).collect(),
                })?;
                Ok(Self(out))
            }
        }
    };
}

byte_id!(
    /// The id of a swarm: the WebTorrent `info_hash`. See the [module docs](self) for how it is
    /// derived.
    SwarmId,
    ID_LEN
);

byte_id!(
    /// The id of a peer: the WebTorrent `peer_id`. Chosen by the peer at random when it starts
    /// (see [`PeerId::generate`]).
    PeerId,
    ID_LEN
);

byte_id!(
    /// The fingerprint of one rendition (variant stream) of a stream. See the
    /// [module docs](self).
    RenditionId,
    RENDITION_ID_LEN
);

/// The prefix of the peer ids this implementation generates, in the Azureus style used by
/// BitTorrent and WebTorrent clients (`-XXvvvv-`): `SC` for SwarmCDN, then the version.
pub const PEER_ID_PREFIX: &[u8; 8] = b"-SC0001-";

impl PeerId {
    /// A peer id made of [`PEER_ID_PREFIX`] and 12 random bytes given by the caller (core holds
    /// no global random number generator).
    pub fn generate(random: [u8; 12]) -> Self {
        let mut id = [0u8; ID_LEN];
        id[..8].copy_from_slice(PEER_ID_PREFIX);
        id[8..].copy_from_slice(&random);
        Self(id)
    }
}

/// What identifies a stream, before hashing into a [`SwarmId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKey<'a> {
    /// An id the operator gives the stream (for example in the player's configuration). Takes
    /// precedence: the same content served from several URLs then forms one swarm.
    ContentId(&'a str),
    /// The URL of the master (or only) playlist. Its query and fragment are removed.
    PlaylistUrl(&'a str),
}

impl SwarmId {
    /// Derives the swarm id of a stream from its key and its renditions' fingerprints (in any
    /// order; they are sorted and deduplicated first).
    pub fn derive(key: StreamKey<'_>, renditions: &[RenditionId]) -> Self {
        let (kind, text): (&[u8], &str) = match key {
            StreamKey::ContentId(id) => (b"content", id),
            StreamKey::PlaylistUrl(url) => (b"url", strip_query(url)),
        };
        let mut sorted = renditions.to_vec();
        sorted.sort_unstable();
        sorted.dedup();

        let mut h = Sha256::new();
        h.update(b"swarmcdn/swarm/v1\0");
        h.update(kind);
        h.update(b"\0");
        h.update(text.as_bytes());
        h.update(b"\0");
        for r in &sorted {
            h.update(r.0);
        }
        let digest = h.finalize();
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&digest[..ID_LEN]);
        Self(id)
    }
}

/// Removes the query (`?…`) and fragment (`#…`) of a URL.
pub fn strip_query(url: &str) -> &str {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    &url[..end]
}

/// The attributes of a rendition that its [`RenditionId`] is computed from: those of the HLS
/// `EXT-X-STREAM-INF` tag (or their equivalent for an audio-only or single-rendition stream).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenditionAttributes {
    /// `BANDWIDTH`, in bits per second.
    pub bandwidth: Option<u64>,
    /// `CODECS`, as written (for example `"avc1.64001f,mp4a.40.2"`).
    pub codecs: Option<String>,
    /// `RESOLUTION`, width and height.
    pub resolution: Option<(u32, u32)>,
    /// `FRAME-RATE`.
    pub frame_rate: Option<f64>,
    /// A name, for example the `NAME` of an `EXT-X-MEDIA` rendition or a language.
    pub name: Option<String>,
}

impl RenditionId {
    /// The fingerprint of a rendition: the first 8 bytes of SHA-256 over its normalized
    /// attributes, written as `bw=…;codecs=…;res=WxH;fps=…;name=…` with absent attributes left
    /// empty. Codecs are trimmed, lower-cased and sorted; the frame rate is rounded to three
    /// decimals.
    pub fn from_attributes(a: &RenditionAttributes) -> Self {
        let mut codecs: Vec<String> = a
            .codecs
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        codecs.sort_unstable();
        let bw = a.bandwidth.map(|b| b.to_string()).unwrap_or_default();
        let res = a
            .resolution
            .map(|(w, h)| format!("{w}x{h}"))
            .unwrap_or_default();
        let fps = a
            .frame_rate
            .filter(|f| f.is_finite())
            .map(|f| format!("{f:.3}"))
            .unwrap_or_default();
        let name = a.name.as_deref().unwrap_or("").trim();
        let canonical = format!(
            "bw={bw};codecs={};res={res};fps={fps};name={name}",
            codecs.join(",")
        );
        let mut h = Sha256::new();
        h.update(b"swarmcdn/rendition/v1\0");
        h.update(canonical.as_bytes());
        let digest = h.finalize();
        let mut id = [0u8; RENDITION_ID_LEN];
        id.copy_from_slice(&digest[..RENDITION_ID_LEN]);
        Self(id)
    }
}

/// One media segment of one rendition of one stream.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId {
    /// The stream's swarm.
    pub swarm: SwarmId,
    /// The rendition the segment belongs to.
    pub rendition: RenditionId,
    /// The HLS media sequence number of the segment.
    pub sequence: u64,
}

impl SegmentId {
    /// Length of [`SegmentId::to_bytes`].
    pub const ENCODED_LEN: usize = ID_LEN + RENDITION_ID_LEN + 8;

    /// A segment id.
    pub const fn new(swarm: SwarmId, rendition: RenditionId, sequence: u64) -> Self {
        Self {
            swarm,
            rendition,
            sequence,
        }
    }

    /// The fixed-size encoding used where a segment id is signed: swarm (20 bytes), rendition
    /// (8 bytes), sequence (8 bytes, big-endian).
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[..ID_LEN].copy_from_slice(&self.swarm.0);
        out[ID_LEN..ID_LEN + RENDITION_ID_LEN].copy_from_slice(&self.rendition.0);
        out[ID_LEN + RENDITION_ID_LEN..].copy_from_slice(&self.sequence.to_be_bytes());
        out
    }

    /// The inverse of [`SegmentId::to_bytes`].
    pub fn from_bytes(b: &[u8; Self::ENCODED_LEN]) -> Self {
        let mut swarm = [0u8; ID_LEN];
        swarm.copy_from_slice(&b[..ID_LEN]);
        let mut rendition = [0u8; RENDITION_ID_LEN];
        rendition.copy_from_slice(&b[ID_LEN..ID_LEN + RENDITION_ID_LEN]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&b[ID_LEN + RENDITION_ID_LEN..]);
        Self {
            swarm: SwarmId(swarm),
            rendition: RenditionId(rendition),
            sequence: u64::from_be_bytes(seq),
        }
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.swarm, self.rendition, self.sequence)
    }
}

impl fmt::Debug for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SegmentId({self})")
    }
}

impl FromStr for SegmentId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IdError::BadSegmentId(s.chars().take(64).collect());
        let mut parts = s.split('/');
        let (Some(swarm), Some(rendition), Some(seq), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(Self {
            swarm: swarm.parse()?,
            rendition: rendition.parse()?,
            sequence: seq.parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(bw: u64) -> RenditionId {
        RenditionId::from_attributes(&RenditionAttributes {
            bandwidth: Some(bw),
            codecs: Some("avc1.64001f,mp4a.40.2".into()),
            resolution: Some((640, 360)),
            frame_rate: Some(30.0),
            name: None,
        })
    }

    /// Ids order as their bytes do (the order the maps keyed by them iterate in).
    #[test]
    fn ids_order_as_their_bytes() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut byte = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Few values, so that long common prefixes and equal ids occur.
            (x % 3) as u8
        };
        for _ in 0..20_000 {
            let (a, b): ([u8; 20], [u8; 20]) = (
                std::array::from_fn(|_| byte()),
                std::array::from_fn(|_| byte()),
            );
            assert_eq!(PeerId(a).cmp(&PeerId(b)), a.cmp(&b), "{a:?} {b:?}");
            let (c, d): ([u8; 8], [u8; 8]) = (
                std::array::from_fn(|_| byte()),
                std::array::from_fn(|_| byte()),
            );
            assert_eq!(
                RenditionId(c).cmp(&RenditionId(d)),
                c.cmp(&d),
                "{c:?} {d:?}"
            );
        }
    }

    #[test]
    fn query_and_fragment_do_not_split_a_swarm() {
        let rs = [r(800_000), r(300_000)];
        let a = SwarmId::derive(
            StreamKey::PlaylistUrl("https://cdn.example/live/master.m3u8?token=abc"),
            &rs,
        );
        let b = SwarmId::derive(
            StreamKey::PlaylistUrl("https://cdn.example/live/master.m3u8#t=3"),
            &rs,
        );
        let c = SwarmId::derive(
            StreamKey::PlaylistUrl("https://cdn.example/live/master.m3u8"),
            &rs,
        );
        assert_eq!(a, b);
        assert_eq!(a, c);
        let other = SwarmId::derive(
            StreamKey::PlaylistUrl("https://cdn.example/live/other.m3u8"),
            &rs,
        );
        assert_ne!(a, other);
    }

    #[test]
    fn rendition_order_does_not_matter_but_the_set_does() {
        let key = StreamKey::ContentId("match-42");
        let a = SwarmId::derive(key, &[r(1), r(2)]);
        let b = SwarmId::derive(key, &[r(2), r(1), r(2)]);
        assert_eq!(a, b);
        assert_ne!(a, SwarmId::derive(key, &[r(1)]));
    }

    #[test]
    fn content_id_and_url_are_separate_namespaces() {
        let s = "https://cdn.example/master.m3u8";
        assert_ne!(
            SwarmId::derive(StreamKey::ContentId(s), &[]),
            SwarmId::derive(StreamKey::PlaylistUrl(s), &[])
        );
    }

    #[test]
    fn swarm_id_is_stable() {
        // A change to the derivation splits every deployed swarm: this pins it.
        let id = SwarmId::derive(StreamKey::ContentId("demo"), &[]);
        assert_eq!(
            id.to_hex(),
            swarm_hex_of("swarmcdn/swarm/v1\0content\0demo\0")
        );
    }

    fn swarm_hex_of(preimage: &str) -> String {
        hex::encode(&Sha256::digest(preimage.as_bytes())[..20])
    }

    #[test]
    fn rendition_normalization() {
        let a = RenditionId::from_attributes(&RenditionAttributes {
            bandwidth: Some(800_000),
            codecs: Some(" MP4A.40.2 , avc1.64001F".into()),
            resolution: Some((640, 360)),
            frame_rate: Some(29.9999),
            name: None,
        });
        let b = RenditionId::from_attributes(&RenditionAttributes {
            bandwidth: Some(800_000),
            codecs: Some("avc1.64001f,mp4a.40.2".into()),
            resolution: Some((640, 360)),
            frame_rate: Some(30.0),
            name: Some("  ".into()),
        });
        assert_eq!(a, b);
        assert_ne!(a, r(800_001));
    }

    #[test]
    fn peer_id_generate_has_prefix() {
        let p = PeerId::generate([0xAB; 12]);
        assert_eq!(&p.0[..8], PEER_ID_PREFIX);
        assert_eq!(&p.0[8..], &[0xAB; 12]);
    }

    #[test]
    fn segment_id_bytes_and_text_round_trip() {
        let seg = SegmentId::new(SwarmId([7; 20]), RenditionId([9; 8]), u64::MAX - 3);
        assert_eq!(SegmentId::from_bytes(&seg.to_bytes()), seg);
        let text = seg.to_string();
        assert_eq!(text.parse::<SegmentId>().unwrap(), seg);
        assert!("zz/00/1".parse::<SegmentId>().is_err());
        assert!(
            format!("{}/{}", seg.swarm, seg.rendition)
                .parse::<SegmentId>()
                .is_err()
        );
        assert!(format!("{text}/1").parse::<SegmentId>().is_err());
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let id = PeerId([0x80; 20]);
        assert_eq!(id.to_string().parse::<PeerId>().unwrap(), id);
        assert!(matches!(
            "abc".parse::<PeerId>(),
            Err(IdError::BadHex { expected: 40, .. })
        ));
    }
}
