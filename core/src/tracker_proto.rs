//! The WebTorrent WebSocket tracker protocol, with SwarmCDN's optional extension fields.
//!
//! Each message is one JSON text frame. Clients send [`ToTracker`] messages (announce, answer,
//! scrape); trackers send [`FromTracker`] messages (announce response, relayed offer, relayed
//! answer, scrape response, failure). `docs/protocol.md` specifies the format precisely.
//!
//! # Binary strings
//!
//! `info_hash`, `peer_id`, `to_peer_id` and `offer_id` are 20-byte values written as JSON strings
//! of exactly 20 code points in U+0000..=U+00FF, one code point per byte ("latin1 binary
//! strings"). Bytes >= 0x80 are two UTF-8 bytes on the wire and control bytes are `\u00XX`
//! escapes; both round-trip exactly. Strings of another length, or with a code point above
//! U+00FF, are rejected.
//!
//! # Extension fields
//!
//! SwarmCDN peers add an optional object under the key `"swarmcdn"` ([`PeerInfo`]): role,
//! rendition, playback position, locality, NAT type and upload capacity. Other trackers and
//! clients ignore unknown keys, and our decoders ignore unknown keys too (inside the extension
//! as well), so each side can add fields without breaking the other.
//!
//! # Example
//!
//! ```
//! use swarmcdn_core::ids::{PeerId, SwarmId};
//! use swarmcdn_core::tracker_proto::{Announce, AnnounceEvent, ToTracker};
//!
//! let msg = ToTracker::Announce(Announce {
//!     event: Some(AnnounceEvent::Started),
//!     numwant: Some(0),
//!     ..Announce::new(SwarmId([0xff; 20]), PeerId([b'a'; 20]))
//! });
//! let json = msg.to_json();
//! assert!(json.starts_with(r#"{"action":"announce","info_hash":"ÿÿÿ"#));
//! assert_eq!(ToTracker::from_json(json.as_bytes()).unwrap(), msg);
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ids::{ID_LEN, PeerId, RenditionId, SwarmId};

/// The largest message [`ToTracker::from_json`] and [`FromTracker::from_json`] accept, in bytes.
/// A WebTorrent announce with 5 non-trickle offers is about 10-20 KB.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// The longest `stream` URL accepted in [`PeerInfo`] and [`Demand`], in bytes.
pub const MAX_STREAM_LEN: usize = 2048;

/// The longest `locality` hint accepted in [`PeerInfo`], in bytes.
pub const MAX_LOCALITY_LEN: usize = 64;

/// Errors from decoding a tracker protocol message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The message is larger than [`MAX_MESSAGE_LEN`].
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Size of the message.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The message is not valid JSON, or a field has the wrong type or value.
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
    /// The message is valid JSON but misses a field its kind requires.
    #[error("invalid {kind} message: {reason}")]
    Invalid {
        /// What kind of message it looked like.
        kind: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The 20-byte id of one WebRTC offer, chosen at random by the offerer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct OfferId(pub [u8; ID_LEN]);

impl fmt::Debug for OfferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OfferId({})", hex::encode(self.0))
    }
}

/// A WebRTC session description as the browser's `RTCSessionDescriptionInit` has it: a JSON
/// object with the strings `type` (`"offer"` or `"answer"`) and `sdp`.
///
/// It is kept as the object's JSON text, checked when decoded: a tracker relays it as it came,
/// without unescaping the SDP and escaping it again (most of the work of relaying an offer).
/// Peers read it with [`Self::sdp`].
#[derive(Clone)]
pub struct SessionDescription(Box<RawValue>);

impl SessionDescription {
    /// An offer.
    pub fn offer(sdp: impl AsRef<str>) -> Self {
        Self::new("offer", sdp.as_ref())
    }

    /// An answer.
    pub fn answer(sdp: impl AsRef<str>) -> Self {
        Self::new("answer", sdp.as_ref())
    }

    /// A description of any `type` (`"pranswer"`, `"rollback"`: relayed like the others).
    pub fn new(kind: &str, sdp: &str) -> Self {
        let text = serde_json::to_string(&Parts {
            kind: kind.into(),
            sdp: sdp.into(),
        })
        .expect("serializing two strings cannot fail");
        Self(RawValue::from_string(text).expect("serde_json writes valid JSON"))
    }

    /// `"offer"` or `"answer"` (as the sender wrote it: a tracker does not check it).
    pub fn kind(&self) -> String {
        self.parts().kind.into_owned()
    }

    /// The SDP text.
    pub fn sdp(&self) -> String {
        self.parts().sdp.into_owned()
    }

    /// The JSON object, as it is on the wire.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }

    fn parts(&self) -> Parts<'_> {
        serde_json::from_str(self.0.get()).expect("checked when made or decoded")
    }
}

/// A session description's fields, unescaped only where needed.
#[derive(Serialize, Deserialize)]
struct Parts<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    sdp: std::borrow::Cow<'a, str>,
}

impl PartialEq for SessionDescription {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for SessionDescription {}

impl fmt::Debug for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SessionDescription")
            .field(&self.0.get())
            .finish()
    }
}

impl Serialize for SessionDescription {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SessionDescription {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // One pass over the object: `type` and `sdp` are captured as their JSON text (not
        // unescaped) and must be strings; other keys are skipped. The description is then
        // written back as `{"type":…,"sdp":…}` from those two texts.
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Key {
            Type,
            Sdp,
            #[serde(other)]
            Other,
        }

        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SessionDescription;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a session description: an object with string `type` and `sdp`")
            }

            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut kind, mut sdp): (Option<&'de RawValue>, Option<&'de RawValue>) =
                    (None, None);
                while let Some(key) = map.next_key::<Key>()? {
                    let slot = match key {
                        Key::Type => &mut kind,
                        Key::Sdp => &mut sdp,
                        Key::Other => {
                            map.next_value::<de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    if slot.is_some() {
                        return Err(de::Error::custom("duplicate `type` or `sdp`"));
                    }
                    *slot = Some(map.next_value()?);
                }
                match (kind, sdp) {
                    (Some(kind), Some(sdp))
                        if kind.get().starts_with('"') && sdp.get().starts_with('"') =>
                    {
                        let raw = serde_json::value::to_raw_value(&RawParts { kind, sdp })
                            .map_err(de::Error::custom)?;
                        Ok(SessionDescription(raw))
                    }
                    _ => Err(de::Error::custom("type and sdp must be strings")),
                }
            }
        }
        d.deserialize_map(V)
            .map_err(|e| de::Error::custom(format_args!("session description: {e}")))
    }
}

/// A session description written back from the JSON text of its two fields.
#[derive(Serialize)]
struct RawParts<'a> {
    #[serde(rename = "type")]
    kind: &'a RawValue,
    sdp: &'a RawValue,
}

/// The `event` of an announce. A missing event is a periodic update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnnounceEvent {
    /// The peer joins the swarm.
    Started,
    /// The peer leaves the swarm.
    Stopped,
    /// The peer has the whole content (it becomes a seeder).
    Completed,
    /// The peer pauses (accepted by bittorrent-tracker; treated as an update).
    Paused,
    /// An explicit periodic update (`"update"`, or `"empty"` as some clients send).
    #[serde(alias = "empty")]
    Update,
}

/// The role of a SwarmCDN peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A viewer's player.
    Viewer,
    /// An operator's seed node.
    Seed,
    /// A role this version does not know.
    #[serde(other)]
    Unknown,
}

/// The NAT type a peer believes it is behind, as a hint for matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatType {
    /// A public address, no NAT.
    Open,
    /// Full-cone NAT.
    FullCone,
    /// Address-restricted cone NAT.
    Restricted,
    /// Port-restricted cone NAT.
    PortRestricted,
    /// Symmetric NAT: connects to open and full-cone peers only.
    Symmetric,
    /// Not known (also any value this version does not know).
    #[serde(other)]
    Unknown,
}

/// SwarmCDN's extension of announces, answers and relayed offers, under the key `"swarmcdn"`.
/// Every field is optional; unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer's role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The rendition the peer is playing, as hex.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_rendition_hex"
    )]
    pub rendition: Option<RenditionId>,
    /// The media sequence number at the peer's playhead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// A self-reported network locality hint (for example a region code), at most
    /// [`MAX_LOCALITY_LEN`] bytes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_locality"
    )]
    pub locality: Option<String>,
    /// The NAT type the peer believes it is behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<NatType>,
    /// Upload slots the peer has free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_slots: Option<u32>,
    /// A join token (`core::token`), for trackers that require one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_token"
    )]
    pub token: Option<String>,
    /// The stream's playlist URL (without its query), so that a tracker can ask a seed on
    /// standby to join a swarm that has none ([`FromTracker::Demand`]); at most
    /// [`MAX_STREAM_LEN`] bytes, `http://` or `https://`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_stream"
    )]
    pub stream: Option<String>,
}

/// A seed offering to join swarms on demand (`action: "seed_standby"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standby {
    /// The seed's peer id.
    pub peer_id: PeerId,
    /// Its info (a join token, where the tracker requires one).
    pub ext: Option<PeerInfo>,
}

/// The tracker asks a seed on standby to join a swarm (`action: "seed_demand"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    /// The swarm that wants a seed.
    pub info_hash: SwarmId,
    /// Its stream's playlist URL, as a viewer announced it.
    pub stream: String,
}

/// An announce: join, refresh or leave a swarm, with offers for the tracker to relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// The swarm.
    pub info_hash: SwarmId,
    /// The announcing peer.
    pub peer_id: PeerId,
    /// The event; `None` for a periodic update.
    pub event: Option<AnnounceEvent>,
    /// How many peers the client wants (bittorrent-tracker ignores it and uses the offer count).
    pub numwant: Option<u32>,
    /// Bytes uploaded so far.
    pub uploaded: Option<u64>,
    /// Bytes downloaded so far.
    pub downloaded: Option<u64>,
    /// Bytes left; `None` means unknown (a leecher), `Some(0)` a seeder.
    pub left: Option<u64>,
    /// Offers, one per peer the client would like to connect to.
    pub offers: Offers,
    /// The `trackerid` echoed back, if the tracker gave one.
    pub tracker_id: Option<String>,
    /// SwarmCDN extension.
    pub ext: Option<PeerInfo>,
}

impl Announce {
    /// An announce with only the swarm and the peer set.
    pub fn new(info_hash: SwarmId, peer_id: PeerId) -> Self {
        Self {
            info_hash,
            peer_id,
            event: None,
            numwant: None,
            uploaded: None,
            downloaded: None,
            left: None,
            offers: Offers::default(),
            tracker_id: None,
            ext: None,
        }
    }
}

/// One offer inside an announce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The offer's id, echoed by the answer.
    #[serde(with = "binary_string")]
    pub offer_id: OfferId,
    /// The SDP offer (non-trickle: it holds every ICE candidate).
    pub offer: SessionDescription,
}

/// The offers of an announce.
///
/// A client builds them as a list. Decoded from the wire, they stay the array's JSON text
/// (checked to be well-formed JSON and an array) until [`Self::into_vec`]: a tracker decodes
/// offers only when it has peers to relay them to, and an announce into a swarm where nobody
/// else is, the commonest announce of a lone viewer, then costs a scan of its offers instead
/// of their decoding.
#[derive(Clone, Default)]
pub struct Offers(OffersRepr);

#[derive(Clone)]
enum OffersRepr {
    List(Vec<Offer>),
    /// A non-empty JSON array, not yet decoded.
    Json(Box<RawValue>),
}

impl Default for OffersRepr {
    fn default() -> Self {
        Self::List(Vec::new())
    }
}

impl Offers {
    /// Adds an offer to an announce being built. Offers decoded from the wire are decoded
    /// first; if they are malformed, they are dropped.
    pub fn push(&mut self, offer: Offer) {
        if let OffersRepr::Json(_) = self.0 {
            let decoded = std::mem::take(self).into_vec().unwrap_or_default();
            self.0 = OffersRepr::List(decoded);
        }
        if let OffersRepr::List(list) = &mut self.0 {
            list.push(offer);
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        match &self.0 {
            OffersRepr::List(list) => list.is_empty(),
            OffersRepr::Json(_) => false,
        }
    }

    /// The offers, decoded if they came from the wire: an error if one is malformed (not an
    /// object with a binary-string `offer_id` and a session description `offer`).
    pub fn into_vec(self) -> Result<Vec<Offer>, ProtoError> {
        match self.0 {
            OffersRepr::List(list) => Ok(list),
            OffersRepr::Json(raw) => Ok(serde_json::from_str(raw.get())?),
        }
    }

    /// [`Self::into_vec`] of a copy.
    pub fn to_vec(&self) -> Result<Vec<Offer>, ProtoError> {
        self.clone().into_vec()
    }
}

impl From<Vec<Offer>> for Offers {
    fn from(list: Vec<Offer>) -> Self {
        Self(OffersRepr::List(list))
    }
}

impl FromIterator<Offer> for Offers {
    fn from_iter<I: IntoIterator<Item = Offer>>(iter: I) -> Self {
        Self(OffersRepr::List(iter.into_iter().collect()))
    }
}

/// Equal when they are the same JSON text or decode to the same offers.
impl PartialEq for Offers {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (OffersRepr::List(a), OffersRepr::List(b)) => a == b,
            (OffersRepr::Json(a), OffersRepr::Json(b)) if a.get() == b.get() => true,
            _ => matches!((self.to_vec(), other.to_vec()), (Ok(a), Ok(b)) if a == b),
        }
    }
}

impl Eq for Offers {}

impl fmt::Debug for Offers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            OffersRepr::List(list) => f.debug_list().entries(list).finish(),
            OffersRepr::Json(raw) => f.debug_tuple("Offers").field(&raw.get()).finish(),
        }
    }
}

impl Serialize for Offers {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            OffersRepr::List(list) => list.serialize(s),
            OffersRepr::Json(raw) => raw.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Offers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        let text = raw.get();
        let Some(inner) = text.strip_prefix('[') else {
            return Err(de::Error::custom("offers must be an array"));
        };
        if inner.trim_start().starts_with(']') {
            return Ok(Self::default());
        }
        Ok(Self(OffersRepr::Json(raw)))
    }
}

/// An answer to a relayed offer, sent by the peer that received the offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The swarm.
    pub info_hash: SwarmId,
    /// The answering peer.
    pub peer_id: PeerId,
    /// The peer that made the offer.
    pub to_peer_id: PeerId,
    /// The offer answered.
    pub offer_id: OfferId,
    /// The SDP answer.
    pub answer: SessionDescription,
    /// SwarmCDN extension: the answerer's info.
    pub ext: Option<PeerInfo>,
}

/// A scrape: swarm statistics. An empty list asks for every swarm.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scrape {
    /// The swarms asked about.
    pub info_hashes: Vec<SwarmId>,
}

/// A message from a client to the tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToTracker {
    /// `action: "announce"` without an answer.
    Announce(Announce),
    /// `action: "announce"` with `answer`, `to_peer_id` and `offer_id`.
    Answer(Answer),
    /// `action: "scrape"`.
    Scrape(Scrape),
    /// `action: "seed_standby"` (SwarmCDN extension).
    Standby(Standby),
}

/// The tracker's response to an announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceResponse {
    /// The swarm.
    pub info_hash: SwarmId,
    /// Seconds until the next periodic announce.
    pub interval: Option<u32>,
    /// Minimum seconds between announces.
    pub min_interval: Option<u32>,
    /// Seeders in the swarm.
    pub complete: Option<u64>,
    /// Leechers in the swarm.
    pub incomplete: Option<u64>,
    /// A tracker id to echo in later announces.
    pub tracker_id: Option<String>,
    /// A warning to log.
    pub warning: Option<String>,
}

/// An offer relayed by the tracker to a chosen peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayedOffer {
    /// The swarm.
    pub info_hash: SwarmId,
    /// The offering peer.
    pub peer_id: PeerId,
    /// The offer's id, to echo in the answer.
    pub offer_id: OfferId,
    /// The SDP offer.
    pub offer: SessionDescription,
    /// SwarmCDN extension: the offerer's info.
    pub ext: Option<PeerInfo>,
}

/// An answer relayed by the tracker back to the offerer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayedAnswer {
    /// The swarm.
    pub info_hash: SwarmId,
    /// The answering peer.
    pub peer_id: PeerId,
    /// The offer answered.
    pub offer_id: OfferId,
    /// The SDP answer.
    pub answer: SessionDescription,
    /// SwarmCDN extension: the answerer's info.
    pub ext: Option<PeerInfo>,
}

/// Statistics of one swarm in a scrape response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrapeStats {
    /// Seeders.
    #[serde(default, deserialize_with = "de_count")]
    pub complete: u64,
    /// Leechers.
    #[serde(default, deserialize_with = "de_count")]
    pub incomplete: u64,
    /// Completed downloads.
    #[serde(default, deserialize_with = "de_count")]
    pub downloaded: u64,
}

/// The tracker's response to a scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrapeResponse {
    /// Statistics per swarm.
    pub files: BTreeMap<SwarmId, ScrapeStats>,
    /// `flags.min_request_interval`, in seconds.
    pub min_request_interval: Option<u32>,
}

/// A failure reported by the tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    /// The `failure reason` text.
    pub failure_reason: String,
    /// The action that failed, if known (`"announce"` or `"scrape"`).
    pub action: Option<String>,
    /// The swarm, if known.
    pub info_hash: Option<SwarmId>,
}

/// A message from the tracker to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromTracker {
    /// Response to an announce.
    AnnounceResponse(AnnounceResponse),
    /// An offer from another peer.
    Offer(RelayedOffer),
    /// An answer to one of our offers.
    Answer(RelayedAnswer),
    /// Response to a scrape.
    Scrape(ScrapeResponse),
    /// A failure.
    Error(ErrorResponse),
    /// A request to a seed on standby to join a swarm (SwarmCDN extension).
    Demand(Demand),
}

impl ToTracker {
    /// Decodes a message, rejecting those larger than [`MAX_MESSAGE_LEN`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, ProtoError> {
        check_len(bytes)?;
        let raw: RawMessage = serde_json::from_slice(bytes)?;
        raw.into_to_tracker()
    }

    /// [`Self::from_json`] for text already known to be UTF-8 (a WebSocket text message):
    /// strings are not validated again, which is most of the decoding time of an SDP.
    pub fn from_json_str(text: &str) -> Result<Self, ProtoError> {
        check_len(text.as_bytes())?;
        let raw: RawMessage = serde_json::from_str(text)?;
        raw.into_to_tracker()
    }

    /// Encodes the message as JSON text.
    pub fn to_json(&self) -> String {
        let raw = match self {
            Self::Announce(a) => RawOut {
                action: Some(Action::Announce),
                info_hash: Some(InfoHashesOut::One(a.info_hash)),
                peer_id: Some(a.peer_id),
                numwant: a.numwant.map(u64::from),
                uploaded: a.uploaded,
                downloaded: a.downloaded,
                left: a.left,
                event: a.event,
                offers: Some(&a.offers),
                trackerid: a.tracker_id.as_deref(),
                swarmcdn: a.ext.as_ref(),
                ..RawOut::default()
            },
            Self::Answer(a) => RawOut {
                action: Some(Action::Announce),
                info_hash: Some(InfoHashesOut::One(a.info_hash)),
                peer_id: Some(a.peer_id),
                to_peer_id: Some(a.to_peer_id),
                offer_id: Some(a.offer_id),
                answer: Some(&a.answer),
                swarmcdn: a.ext.as_ref(),
                ..RawOut::default()
            },
            Self::Scrape(s) => RawOut {
                action: Some(Action::Scrape),
                info_hash: match s.info_hashes.as_slice() {
                    [] => None,
                    [one] => Some(InfoHashesOut::One(*one)),
                    many => Some(InfoHashesOut::Many(many)),
                },
                ..RawOut::default()
            },
            Self::Standby(st) => RawOut {
                action: Some(Action::SeedStandby),
                peer_id: Some(st.peer_id),
                swarmcdn: st.ext.as_ref(),
                ..RawOut::default()
            },
        };
        raw.to_json()
    }
}

impl FromTracker {
    /// Decodes a message, rejecting those larger than [`MAX_MESSAGE_LEN`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, ProtoError> {
        check_len(bytes)?;
        let raw: RawMessage = serde_json::from_slice(bytes)?;
        raw.into_from_tracker()
    }

    /// Encodes the message as JSON text.
    pub fn to_json(&self) -> String {
        self.raw().to_json()
    }

    /// Appends the message's JSON text to `out` (as [`Self::to_json`] writes it): a server
    /// can encode straight into its frame buffer, after room for the frame header.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, &self.raw()).expect("serializing plain structs cannot fail");
    }

    fn raw(&self) -> RawOut<'_> {
        match self {
            Self::AnnounceResponse(r) => RawOut {
                action: Some(Action::Announce),
                info_hash: Some(InfoHashesOut::One(r.info_hash)),
                interval: r.interval,
                min_interval: r.min_interval,
                complete: r.complete,
                incomplete: r.incomplete,
                tracker_id: r.tracker_id.as_deref(),
                warning_message: r.warning.as_deref(),
                ..RawOut::default()
            },
            Self::Offer(o) => RawOut {
                action: Some(Action::Announce),
                info_hash: Some(InfoHashesOut::One(o.info_hash)),
                peer_id: Some(o.peer_id),
                offer_id: Some(o.offer_id),
                offer: Some(&o.offer),
                swarmcdn: o.ext.as_ref(),
                ..RawOut::default()
            },
            Self::Answer(a) => RawOut {
                action: Some(Action::Announce),
                info_hash: Some(InfoHashesOut::One(a.info_hash)),
                peer_id: Some(a.peer_id),
                offer_id: Some(a.offer_id),
                answer: Some(&a.answer),
                swarmcdn: a.ext.as_ref(),
                ..RawOut::default()
            },
            Self::Scrape(s) => RawOut {
                action: Some(Action::Scrape),
                files: Some(&s.files),
                flags: s.min_request_interval.map(|m| ScrapeFlags {
                    min_request_interval: Some(m),
                }),
                ..RawOut::default()
            },
            Self::Demand(d) => RawOut {
                action: Some(Action::SeedDemand),
                info_hash: Some(InfoHashesOut::One(d.info_hash)),
                stream: Some(&d.stream),
                ..RawOut::default()
            },
            Self::Error(e) => RawOut {
                action: match e.action.as_deref() {
                    Some("announce") => Some(Action::Announce),
                    Some("scrape") => Some(Action::Scrape),
                    Some("seed_standby") => Some(Action::SeedStandby),
                    _ => None,
                },
                info_hash: e.info_hash.map(InfoHashesOut::One),
                failure_reason: Some(&e.failure_reason),
                ..RawOut::default()
            },
        }
    }
}

fn check_len(bytes: &[u8]) -> Result<(), ProtoError> {
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(ProtoError::TooLarge {
            len: bytes.len(),
            max: MAX_MESSAGE_LEN,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The flat wire form. Every message of either direction is one JSON object whose fields are a
// subset of these; decoding reads it in one pass and then classifies it.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    Announce,
    Scrape,
    SeedStandby,
    SeedDemand,
    /// Any other action: an error to a tracker, ignored in a failure from one.
    #[serde(other, skip_serializing)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum InfoHashes {
    One(SwarmId),
    Many(Vec<SwarmId>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ScrapeFlags {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_request_interval: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
struct RawMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    action: Option<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    info_hash: Option<InfoHashes>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_binary_string"
    )]
    peer_id: Option<PeerId>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_lenient_u64"
    )]
    numwant: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_lenient_u64"
    )]
    uploaded: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_lenient_u64"
    )]
    downloaded: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_lenient_u64"
    )]
    left: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event: Option<AnnounceEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offers: Option<Offers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offer: Option<SessionDescription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    answer: Option<SessionDescription>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_binary_string"
    )]
    to_peer_id: Option<PeerId>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_binary_string"
    )]
    offer_id: Option<OfferId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trackerid: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_lenient_u32"
    )]
    interval: Option<u32>,
    #[serde(
        default,
        rename = "min interval",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_lenient_u32"
    )]
    min_interval: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_lenient_u64"
    )]
    complete: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_lenient_u64"
    )]
    incomplete: Option<u64>,
    #[serde(
        default,
        rename = "tracker id",
        skip_serializing_if = "Option::is_none"
    )]
    tracker_id: Option<String>,
    #[serde(
        default,
        rename = "warning message",
        skip_serializing_if = "Option::is_none"
    )]
    warning_message: Option<String>,
    #[serde(
        default,
        rename = "failure reason",
        skip_serializing_if = "Option::is_none"
    )]
    failure_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    files: Option<BTreeMap<SwarmId, ScrapeStats>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flags: Option<ScrapeFlags>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    swarmcdn: Option<PeerInfo>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_stream"
    )]
    stream: Option<String>,
}

/// The wire form for encoding: [`RawMessage`]'s fields in the same order, borrowed from the
/// message (encoding copies no SDP, id or extension on the way to the text).
#[derive(Default, Serialize)]
struct RawOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<Action>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info_hash: Option<InfoHashesOut<'a>>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_binary_string::serialize"
    )]
    peer_id: Option<PeerId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    numwant: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uploaded: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    downloaded: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    left: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<AnnounceEvent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offers: Option<&'a Offers>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offer: Option<&'a SessionDescription>,
    #[serde(skip_serializing_if = "Option::is_none")]
    answer: Option<&'a SessionDescription>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_binary_string::serialize"
    )]
    to_peer_id: Option<PeerId>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_binary_string::serialize"
    )]
    offer_id: Option<OfferId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trackerid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<u32>,
    #[serde(rename = "min interval", skip_serializing_if = "Option::is_none")]
    min_interval: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    complete: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    incomplete: Option<u64>,
    #[serde(rename = "tracker id", skip_serializing_if = "Option::is_none")]
    tracker_id: Option<&'a str>,
    #[serde(rename = "warning message", skip_serializing_if = "Option::is_none")]
    warning_message: Option<&'a str>,
    #[serde(rename = "failure reason", skip_serializing_if = "Option::is_none")]
    failure_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<&'a BTreeMap<SwarmId, ScrapeStats>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flags: Option<ScrapeFlags>,
    #[serde(skip_serializing_if = "Option::is_none")]
    swarmcdn: Option<&'a PeerInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<&'a str>,
}

impl RawOut<'_> {
    fn to_json(&self) -> String {
        // `to_string`, not `to_writer` and `String::from_utf8`: serde_json knows what it wrote
        // is UTF-8, and checking it again took a quarter of the encoding time.
        serde_json::to_string(self).expect("serializing plain structs cannot fail")
    }
}

/// `info_hash` for encoding: one id, or several (a scrape).
enum InfoHashesOut<'a> {
    One(SwarmId),
    Many(&'a [SwarmId]),
}

impl Serialize for InfoHashesOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::One(id) => id.serialize(s),
            Self::Many(ids) => ids.serialize(s),
        }
    }
}

impl RawMessage {
    fn single_info_hash(&mut self, kind: &'static str) -> Result<SwarmId, ProtoError> {
        match self.info_hash.take() {
            Some(InfoHashes::One(id)) => Ok(id),
            Some(InfoHashes::Many(_)) => Err(ProtoError::Invalid {
                kind,
                reason: "info_hash must be a single binary string",
            }),
            None => Err(ProtoError::Invalid {
                kind,
                reason: "info_hash is missing",
            }),
        }
    }

    fn into_to_tracker(mut self) -> Result<ToTracker, ProtoError> {
        match self.action {
            None => Err(ProtoError::Invalid {
                kind: "client",
                reason: "action is missing",
            }),
            Some(Action::Scrape) => Ok(ToTracker::Scrape(Scrape {
                info_hashes: match self.info_hash {
                    None => Vec::new(),
                    Some(InfoHashes::One(id)) => vec![id],
                    Some(InfoHashes::Many(ids)) => ids,
                },
            })),
            Some(Action::SeedStandby) => Ok(ToTracker::Standby(Standby {
                peer_id: self.peer_id.ok_or(ProtoError::Invalid {
                    kind: "seed_standby",
                    reason: "peer_id is missing",
                })?,
                ext: self.swarmcdn,
            })),
            Some(Action::SeedDemand) => Err(ProtoError::Invalid {
                kind: "client",
                reason: "seed_demand is sent by trackers only",
            }),
            Some(Action::Unknown) => Err(ProtoError::Invalid {
                kind: "client",
                reason: "unknown action",
            }),
            Some(Action::Announce) if self.answer.is_some() => {
                const KIND: &str = "answer";
                let info_hash = self.single_info_hash(KIND)?;
                let missing = |reason| ProtoError::Invalid { kind: KIND, reason };
                Ok(ToTracker::Answer(Answer {
                    info_hash,
                    peer_id: self.peer_id.ok_or(missing("peer_id is missing"))?,
                    to_peer_id: self.to_peer_id.ok_or(missing("to_peer_id is missing"))?,
                    offer_id: self.offer_id.ok_or(missing("offer_id is missing"))?,
                    answer: self.answer.expect("checked by the match guard"),
                    ext: self.swarmcdn,
                }))
            }
            Some(Action::Announce) => {
                const KIND: &str = "announce";
                let info_hash = self.single_info_hash(KIND)?;
                Ok(ToTracker::Announce(Announce {
                    info_hash,
                    peer_id: self.peer_id.ok_or(ProtoError::Invalid {
                        kind: KIND,
                        reason: "peer_id is missing",
                    })?,
                    event: self.event,
                    numwant: self.numwant.map(saturate_u32),
                    uploaded: self.uploaded,
                    downloaded: self.downloaded,
                    left: self.left,
                    offers: self.offers.unwrap_or_default(),
                    tracker_id: self.trackerid,
                    ext: self.swarmcdn,
                }))
            }
        }
    }

    fn into_from_tracker(mut self) -> Result<FromTracker, ProtoError> {
        if let Some(failure_reason) = self.failure_reason {
            return Ok(FromTracker::Error(ErrorResponse {
                failure_reason,
                action: self.action.and_then(|a| {
                    match a {
                        Action::Announce => Some("announce"),
                        Action::Scrape => Some("scrape"),
                        Action::SeedStandby => Some("seed_standby"),
                        Action::SeedDemand => Some("seed_demand"),
                        Action::Unknown => None,
                    }
                    .map(str::to_owned)
                }),
                info_hash: match self.info_hash {
                    Some(InfoHashes::One(id)) => Some(id),
                    _ => None,
                },
            }));
        }
        match self.action {
            None => Err(ProtoError::Invalid {
                kind: "tracker",
                reason: "action is missing",
            }),
            Some(Action::Scrape) => Ok(FromTracker::Scrape(ScrapeResponse {
                files: self.files.unwrap_or_default(),
                min_request_interval: self.flags.and_then(|f| f.min_request_interval),
            })),
            Some(Action::SeedDemand) => {
                const KIND: &str = "seed_demand";
                let info_hash = self.single_info_hash(KIND)?;
                Ok(FromTracker::Demand(Demand {
                    info_hash,
                    stream: self.stream.ok_or(ProtoError::Invalid {
                        kind: KIND,
                        reason: "stream is missing",
                    })?,
                }))
            }
            Some(Action::SeedStandby) => Err(ProtoError::Invalid {
                kind: "tracker",
                reason: "seed_standby is sent by clients only",
            }),
            Some(Action::Unknown) => Err(ProtoError::Invalid {
                kind: "tracker",
                reason: "unknown action",
            }),
            Some(Action::Announce) if self.offer.is_some() => {
                const KIND: &str = "relayed offer";
                let info_hash = self.single_info_hash(KIND)?;
                let missing = |reason| ProtoError::Invalid { kind: KIND, reason };
                Ok(FromTracker::Offer(RelayedOffer {
                    info_hash,
                    peer_id: self.peer_id.ok_or(missing("peer_id is missing"))?,
                    offer_id: self.offer_id.ok_or(missing("offer_id is missing"))?,
                    offer: self.offer.expect("checked by the match guard"),
                    ext: self.swarmcdn,
                }))
            }
            Some(Action::Announce) if self.answer.is_some() => {
                const KIND: &str = "relayed answer";
                let info_hash = self.single_info_hash(KIND)?;
                let missing = |reason| ProtoError::Invalid { kind: KIND, reason };
                Ok(FromTracker::Answer(RelayedAnswer {
                    info_hash,
                    peer_id: self.peer_id.ok_or(missing("peer_id is missing"))?,
                    offer_id: self.offer_id.ok_or(missing("offer_id is missing"))?,
                    answer: self.answer.expect("checked by the match guard"),
                    ext: self.swarmcdn,
                }))
            }
            Some(Action::Announce) => {
                let info_hash = self.single_info_hash("announce response")?;
                Ok(FromTracker::AnnounceResponse(AnnounceResponse {
                    info_hash,
                    interval: self.interval,
                    min_interval: self.min_interval,
                    complete: self.complete,
                    incomplete: self.incomplete,
                    tracker_id: self.tracker_id,
                    warning: self.warning_message,
                }))
            }
        }
    }
}

fn saturate_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

// ---------------------------------------------------------------------------------------------
// Binary strings.

/// Encodes 20 bytes as a latin1 binary string: one `char` per byte.
pub fn encode_binary_string(bytes: &[u8; ID_LEN]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Decodes a latin1 binary string of exactly 20 code points, each at most U+00FF.
pub fn decode_binary_string(s: &str) -> Result<[u8; ID_LEN], &'static str> {
    let mut out = [0u8; ID_LEN];
    let mut n = 0;
    for c in s.chars() {
        if n == ID_LEN {
            return Err("binary string longer than 20 characters");
        }
        out[n] =
            u8::try_from(u32::from(c)).map_err(|_| "binary string has a character above U+00FF")?;
        n += 1;
    }
    if n != ID_LEN {
        return Err("binary string shorter than 20 characters");
    }
    Ok(out)
}

/// Serde for types that are 20 bytes and written as binary strings.
trait BinaryId: Sized {
    fn bytes(&self) -> &[u8; ID_LEN];
    fn from_bytes(b: [u8; ID_LEN]) -> Self;
}

macro_rules! binary_id {
    ($($t:ty),*) => {$(
        impl BinaryId for $t {
            fn bytes(&self) -> &[u8; ID_LEN] {
                &self.0
            }
            fn from_bytes(b: [u8; ID_LEN]) -> Self {
                Self(b)
            }
        }
    )*};
}
binary_id!(SwarmId, PeerId, OfferId);

struct BinaryStringVisitor<T>(std::marker::PhantomData<T>);

impl<T: BinaryId> Visitor<'_> for BinaryStringVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a binary string of 20 characters in U+0000..=U+00FF")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        decode_binary_string(v)
            .map(T::from_bytes)
            .map_err(E::custom)
    }
}

mod binary_string {
    use super::*;

    pub(super) fn serialize<T: BinaryId, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        // At most two UTF-8 bytes per code point: encoded on the stack.
        let mut buf = [0u8; 2 * ID_LEN];
        let mut n = 0;
        for &b in v.bytes() {
            n += char::from(b).encode_utf8(&mut buf[n..]).len();
        }
        s.serialize_str(std::str::from_utf8(&buf[..n]).expect("encoded from chars"))
    }

    pub(super) fn deserialize<'de, T: BinaryId, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        d.deserialize_str(BinaryStringVisitor(std::marker::PhantomData))
    }
}

mod opt_binary_string {
    use super::*;

    pub(super) fn serialize<T: BinaryId, S: Serializer>(
        v: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => binary_string::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, T: BinaryId, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        // `null` reads as absent (some clients send `"to_peer_id": null`).
        struct OptVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: BinaryId> Visitor<'de> for OptVisitor<T> {
            type Value = Option<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a binary string or null")
            }

            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
                binary_string::deserialize(d).map(Some)
            }
        }
        d.deserialize_option(OptVisitor(std::marker::PhantomData))
    }
}

// Map keys of scrape responses and `info_hash` values use these impls.
impl Serialize for SwarmId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        binary_string::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for SwarmId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        binary_string::deserialize(d)
    }
}

impl<'de> Deserialize<'de> for InfoHashes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = InfoHashes;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a binary string or an array of binary strings")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<InfoHashes, E> {
                BinaryStringVisitor::<SwarmId>(std::marker::PhantomData)
                    .visit_str(v)
                    .map(InfoHashes::One)
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<InfoHashes, A::Error> {
                let mut ids = Vec::new();
                while let Some(id) = seq.next_element::<SwarmId>()? {
                    ids.push(id);
                }
                Ok(InfoHashes::Many(ids))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Lenient numbers: JavaScript clients send counters as doubles (and `left` may be huge).

fn de_lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a non-negative number or null")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom("negative number where a count was expected"))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            if v.is_finite() && v >= 0.0 {
                // `as` saturates at u64::MAX, which is what a huge `left` means.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Ok(Some(v as u64))
            } else {
                Err(E::custom("negative number where a count was expected"))
            }
        }
    }
    d.deserialize_any(V)
}

/// A number of seconds: fractions are dropped and values beyond `u32` saturate (trackers
/// computing `interval` from milliseconds may send `120.5`).
fn de_lenient_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    de_lenient_u64(d).map(|v| v.map(saturate_u32))
}

fn de_count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    de_lenient_u64(d).map(Option::unwrap_or_default)
}

fn de_locality<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    match s {
        Some(s) if s.len() > MAX_LOCALITY_LEN => Err(de::Error::custom(format!(
            "locality longer than {MAX_LOCALITY_LEN} bytes"
        ))),
        s => Ok(s),
    }
}

fn de_stream<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    match s {
        Some(s) if s.len() > MAX_STREAM_LEN => Err(de::Error::custom(format!(
            "stream longer than {MAX_STREAM_LEN} bytes"
        ))),
        Some(s) if !(s.starts_with("http://") || s.starts_with("https://")) => Err(
            de::Error::custom("stream must be an http:// or https:// URL"),
        ),
        s => Ok(s),
    }
}

fn de_token<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    match s {
        Some(s) if s.len() > crate::token::MAX_TOKEN_LEN => Err(de::Error::custom(format!(
            "token longer than {} bytes",
            crate::token::MAX_TOKEN_LEN
        ))),
        s => Ok(s),
    }
}

mod opt_rendition_hex {
    use super::*;

    pub(super) fn serialize<S: Serializer>(
        v: &Option<RenditionId>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(r) => s.serialize_str(&r.to_hex()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<RenditionId>, D::Error> {
        let s = Option::<std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.map(|s| s.parse().map_err(de::Error::custom)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_bytes_id(start: u8) -> [u8; 20] {
        std::array::from_fn(|i| start.wrapping_add(i as u8))
    }

    #[test]
    fn binary_strings_round_trip_every_byte_value() {
        for start in (0..=255u8).step_by(20) {
            let id = SwarmId(all_bytes_id(start));
            let msg = ToTracker::Scrape(Scrape {
                info_hashes: vec![id],
            });
            let json = msg.to_json();
            assert_eq!(
                ToTracker::from_json(json.as_bytes()).unwrap(),
                msg,
                "{json}"
            );
        }
    }

    #[test]
    fn control_and_high_bytes_on_the_wire() {
        let mut id = [b'a'; 20];
        id[0] = 0x00;
        id[1] = 0x1f;
        id[2] = 0x80;
        id[3] = 0xff;
        id[4] = b'"';
        id[5] = b'\\';
        let s = encode_binary_string(&id);
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.starts_with(r#""\u0000\u001f"#), "{json}");
        // U+0080 and U+00FF are two UTF-8 bytes each.
        assert!(json.as_bytes().windows(2).any(|w| w == [0xc2, 0x80]));
        assert!(json.as_bytes().windows(2).any(|w| w == [0xc3, 0xbf]));
        assert_eq!(decode_binary_string(&s).unwrap(), id);
    }

    #[test]
    fn wrong_binary_strings_are_rejected() {
        let long = format!(r#"{{"action":"scrape","info_hash":"{}"}}"#, "a".repeat(21));
        assert!(ToTracker::from_json(long.as_bytes()).is_err());
        let short = r#"{"action":"scrape","info_hash":"abc"}"#;
        assert!(ToTracker::from_json(short.as_bytes()).is_err());
        let wide = format!(r#"{{"action":"scrape","info_hash":"{}Ā"}}"#, "a".repeat(19));
        assert!(ToTracker::from_json(wide.as_bytes()).is_err());
    }

    #[test]
    fn decodes_a_bittorrent_tracker_client_announce() {
        // As sent by the npm bittorrent-tracker client (websocket-tracker.js).
        let json = r#"{"action":"announce","info_hash":"\u0012\u0034Vx\u009a¼Þð\u0012\u0034Vx\u009a¼Þð\u0012\u0034Vx","peer_id":"-WW0208-abcdefghijkl","numwant":5,"uploaded":0,"downloaded":0,"left":null,"event":"started","offers":[{"offer":{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"},"offer_id":"ABCDEFGHIJKLMNOPQRST"}],"unknown_field":{"a":[1,2]}}"#;
        let ToTracker::Announce(a) = ToTracker::from_json(json.as_bytes()).unwrap() else {
            panic!("not an announce")
        };
        assert_eq!(a.info_hash.0[0], 0x12);
        assert_eq!(a.info_hash.0[4], 0x9a);
        assert_eq!(&a.peer_id.0, b"-WW0208-abcdefghijkl");
        assert_eq!(a.event, Some(AnnounceEvent::Started));
        assert_eq!(a.left, None);
        assert_eq!(a.numwant, Some(5));
        let offers = a.offers.into_vec().unwrap();
        assert_eq!(offers.len(), 1);
        assert_eq!(&offers[0].offer_id.0, b"ABCDEFGHIJKLMNOPQRST");
        assert_eq!(offers[0].offer.kind(), "offer");
    }

    /// An offer's `type` and `sdp` are relayed as they came, escapes included (other keys
    /// are dropped); one that is not an object with string `type` and `sdp` is refused when
    /// decoded: an answer at once, an announce's offers when they are to be relayed.
    #[test]
    fn session_descriptions_are_relayed_verbatim_and_checked() {
        let head = r#"{"action":"announce","info_hash":"aaaaaaaaaaaaaaaaaaaa","peer_id":"bbbbbbbbbbbbbbbbbbbb","offers":[{"offer_id":"cccccccccccccccccccc","offer":"#;
        let offer = r#"{"sdp":"v=0\r\no=- \u0041 1\r\n", "type" : "offer","x":[1]}"#;
        let kept = r#"{"type":"offer","sdp":"v=0\r\no=- \u0041 1\r\n"}"#;
        let json = format!("{head}{offer}}}]}}");
        let ToTracker::Announce(a) = ToTracker::from_json_str(&json).unwrap() else {
            panic!("not an announce")
        };
        let offers = a.offers.into_vec().unwrap();
        let d = &offers[0].offer;
        assert_eq!(d.as_json(), kept);
        assert_eq!(
            (d.kind().as_str(), d.sdp().as_str()),
            ("offer", "v=0\r\no=- A 1\r\n")
        );
        let relayed = FromTracker::Offer(RelayedOffer {
            info_hash: a.info_hash,
            peer_id: a.peer_id,
            offer_id: offers[0].offer_id,
            offer: d.clone(),
            ext: None,
        })
        .to_json();
        assert!(relayed.contains(&format!(r#""offer":{kept}"#)), "{relayed}");

        let answer_head = r#"{"action":"announce","info_hash":"aaaaaaaaaaaaaaaaaaaa","peer_id":"bbbbbbbbbbbbbbbbbbbb","to_peer_id":"dddddddddddddddddddd","offer_id":"cccccccccccccccccccc","answer":"#;
        for bad in [
            r#""v=0""#,
            r#"{"type":"offer"}"#,
            r#"{"sdp":"v=0"}"#,
            r#"{"type":"offer","sdp":7}"#,
            r#"{"type":null,"sdp":"v=0"}"#,
            r#"{"type":"offer","sdp":"a","sdp":"b"}"#,
            "[]",
        ] {
            let json = format!("{head}{bad}}}]}}");
            let ToTracker::Announce(a) = ToTracker::from_json_str(&json).expect(bad) else {
                panic!("not an announce")
            };
            let err = a.offers.into_vec().expect_err(bad);
            assert!(
                err.to_string().contains("session description"),
                "{bad}: {err}"
            );
            let json = format!("{answer_head}{bad}}}");
            let err = ToTracker::from_json_str(&json).expect_err(bad);
            assert!(
                err.to_string().contains("session description"),
                "{bad}: {err}"
            );
        }
    }

    /// Offers are not decoded with the announce, but the announce must still be well-formed
    /// JSON with an array there; an empty array is no offers.
    #[test]
    fn offers_are_decoded_when_used() {
        let head = r#"{"action":"announce","info_hash":"aaaaaaaaaaaaaaaaaaaa","peer_id":"bbbbbbbbbbbbbbbbbbbb","offers":"#;
        for (offers, decoded) in [("[ ]", Some(0)), ("[{\"offer_id\":1}]", None)] {
            let json = format!("{head}{offers}}}");
            let ToTracker::Announce(a) = ToTracker::from_json_str(&json).unwrap() else {
                panic!("not an announce")
            };
            assert_eq!(a.offers.is_empty(), decoded == Some(0), "{offers}");
            assert_eq!(
                a.offers.into_vec().ok().map(|v| v.len()),
                decoded,
                "{offers}"
            );
        }
        for bad in ["{}", "7", "[{]", "[1,]"] {
            let json = format!("{head}{bad}}}");
            assert!(ToTracker::from_json_str(&json).is_err(), "{bad}");
            assert!(ToTracker::from_json(json.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn lenient_numbers() {
        let base = r#""action":"announce","info_hash":"aaaaaaaaaaaaaaaaaaaa","peer_id":"bbbbbbbbbbbbbbbbbbbb""#;
        let json = format!(r#"{{{base},"left":1e300,"uploaded":12.7,"downloaded":3}}"#);
        let ToTracker::Announce(a) = ToTracker::from_json(json.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(a.left, Some(u64::MAX));
        assert_eq!(a.uploaded, Some(12));
        assert_eq!(a.downloaded, Some(3));
        let neg = format!(r#"{{{base},"left":-1}}"#);
        assert!(ToTracker::from_json(neg.as_bytes()).is_err());
    }

    #[test]
    fn answer_needs_its_fields() {
        let json = r#"{"action":"announce","info_hash":"aaaaaaaaaaaaaaaaaaaa","peer_id":"bbbbbbbbbbbbbbbbbbbb","offer_id":"cccccccccccccccccccc","answer":{"type":"answer","sdp":"x"}}"#;
        let err = ToTracker::from_json(json.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("to_peer_id"), "{err}");
    }

    #[test]
    fn what_other_trackers_send_is_read_leniently() {
        // A fractional interval, a null peer id, a failure naming an action this version does
        // not know.
        let json = r#"{"action":"announce","info_hash":"aaaaaaaaaaaaaaaaaaaa","interval":120.5,"min interval":30.9,"peer_id":null,"complete":1}"#;
        let FromTracker::AnnounceResponse(r) = FromTracker::from_json(json.as_bytes()).unwrap()
        else {
            panic!()
        };
        assert_eq!((r.interval, r.min_interval), (Some(120), Some(30)));
        let json = r#"{"failure reason":"nope","action":"future_thing"}"#;
        let FromTracker::Error(e) = FromTracker::from_json(json.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!((e.failure_reason.as_str(), e.action), ("nope", None));
        let json = r#"{"action":"announce","info_hash":"aaaaaaaaaaaaaaaaaaaa","peer_id":"bbbbbbbbbbbbbbbbbbbb","to_peer_id":null,"offer_id":null}"#;
        assert!(matches!(
            ToTracker::from_json(json.as_bytes()).unwrap(),
            ToTracker::Announce(_)
        ));
        let json = r#"{"action":"announce","info_hash":"aaaaaaaaaaaaaaaaaaaa","interval":-1}"#;
        assert!(FromTracker::from_json(json.as_bytes()).is_err());
    }

    #[test]
    fn unknown_action_and_event_are_errors() {
        let json = r#"{"action":"dance","info_hash":"aaaaaaaaaaaaaaaaaaaa"}"#;
        assert!(ToTracker::from_json(json.as_bytes()).is_err());
        let json = r#"{"action":"announce","info_hash":"aaaaaaaaaaaaaaaaaaaa","peer_id":"bbbbbbbbbbbbbbbbbbbb","event":"exploded"}"#;
        assert!(ToTracker::from_json(json.as_bytes()).is_err());
    }

    #[test]
    fn extension_is_optional_and_forward_compatible() {
        let json = r#"{"action":"announce","info_hash":"aaaaaaaaaaaaaaaaaaaa","peer_id":"bbbbbbbbbbbbbbbbbbbb","swarmcdn":{"role":"archer","nat":"quantum","position":7,"future":true,"rendition":"0102030405060708"}}"#;
        let ToTracker::Announce(a) = ToTracker::from_json(json.as_bytes()).unwrap() else {
            panic!()
        };
        let ext = a.ext.unwrap();
        assert_eq!(ext.role, Some(Role::Unknown));
        assert_eq!(ext.nat, Some(NatType::Unknown));
        assert_eq!(ext.position, Some(7));
        assert_eq!(ext.rendition, Some(RenditionId([1, 2, 3, 4, 5, 6, 7, 8])));
    }

    #[test]
    fn tracker_messages_classify() {
        let id = SwarmId([b'i'; 20]);
        let resp = FromTracker::AnnounceResponse(AnnounceResponse {
            info_hash: id,
            interval: Some(120),
            min_interval: None,
            complete: Some(1),
            incomplete: Some(2),
            tracker_id: None,
            warning: None,
        });
        assert_eq!(
            resp.to_json(),
            r#"{"action":"announce","info_hash":"iiiiiiiiiiiiiiiiiiii","interval":120,"complete":1,"incomplete":2}"#
        );
        let err = r#"{"failure reason":"nope","action":"announce"}"#;
        assert!(matches!(
            FromTracker::from_json(err.as_bytes()).unwrap(),
            FromTracker::Error(ErrorResponse { ref failure_reason, .. }) if failure_reason == "nope"
        ));
    }

    #[test]
    fn too_large_is_rejected_before_parsing() {
        let big = vec![b' '; MAX_MESSAGE_LEN + 1];
        assert!(matches!(
            ToTracker::from_json(&big),
            Err(ProtoError::TooLarge { .. })
        ));
    }
}
