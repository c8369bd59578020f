//! The peer state machine and its scheduler: one peer (seed, browser viewer, headless viewer or
//! simulated viewer) in one swarm.
//!
//! Sans-IO: inputs are `handle_*` calls given `now`; outputs are drained with
//! [`Node::poll_transmit`] (to the tracker, peers and the origin), [`Node::poll_event`] (to the
//! player and the application) and [`Node::poll_timeout`] (when to call
//! [`Node::handle_timeout`]).
//!
//! # Caller contract
//!
//! After every input, drain `poll_transmit` and `poll_event` until they return `None`, then
//! wait until `poll_timeout` (or the next input):
//!
//! ```no_run
//! # use swarmcdn_core::node::*;
//! # use swarmcdn_core::time::Time;
//! # fn now() -> Time { Time::ZERO }
//! # fn config() -> NodeConfig {
//! #     use swarmcdn_core::ids::{PeerId, SwarmId};
//! #     NodeConfig::new(PeerId([1; 20]), SwarmId([2; 20]), NodeRole::Viewer, IntegrityMode::Unverified)
//! # }
//! # fn send(_: Transmit) {}
//! # fn deliver(_: Event) {}
//! # fn wait_for_input_until(_: Option<Time>) -> Option<Input> { None }
//! # enum Input { Peer(swarmcdn_core::ids::PeerId, PeerEvent) }
//! let mut node = Node::new(config(), now(), 1).unwrap();
//! loop {
//!     while let Some(t) = node.poll_transmit() {
//!         send(t);
//!     }
//!     while let Some(e) = node.poll_event() {
//!         deliver(e);
//!     }
//!     match wait_for_input_until(node.poll_timeout()) {
//!         Some(Input::Peer(peer, ev)) => node.handle_peer_event(now(), peer, ev),
//!         None => node.handle_timeout(now()),
//!     }
//! }
//! ```
//!
//! # The scheduler
//!
//! For each segment the player will need (the one it asked for and those within
//! [`NodeConfig::prefetch_window`] of media after it), in deadline order:
//!
//! 1. When the deadline is near (now >= deadline - HTTP time estimate of the missing bytes -
//!    [`NodeConfig::http_margin`]), what is missing is fetched over HTTP with one byte range;
//!    chunks already received from peers are kept.
//! 2. Otherwise, if neighbours have it, its chunks are requested from them, in blocks of
//!    up to [`NodeConfig::request_chunks`] chunks (fewer to a neighbour measured slow),
//!    from several at once, each block to a neighbour
//!    drawn at random weighted by measured throughput (unproven neighbours weigh as much as the
//!    best proven one, so they get a chance).
//! 3. Otherwise, if a neighbour said it is fetching it from the origin
//!    ([`crate::wire::Frame::Fetching`]), the node waits for it.
//! 4. Otherwise the segment is new to the neighbourhood: seeds fetch it from the origin at
//!    once; a viewer waits a random delay (within [`NodeConfig::scout_spread`], longer when a
//!    seed is a neighbour or when it is not one of the segment's first scouts, see
//!    [`NodeConfig::scouts`]; one that is not waits at least until
//!    [`NodeConfig::scout_step_in_lead`] before the segment's deadline), then,
//!    if still nobody has it, fetches it from the origin and tells its neighbours
//!    ([`crate::wire::Frame::Fetching`]). So each segment leaves the origin about once per
//!    neighbourhood.
//!
//! Every chunk from a peer is verified against the segment's signed digest before it is
//! delivered or relayed; a peer that sends a bad chunk is dropped and banned, and the chunk is
//! fetched again elsewhere.

mod cache;
mod download;
mod peers;
mod pool;
mod rate;
mod seqset;
mod vecmap;

pub use pool::SegmentPool;

use peers::PeerMap;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Range;

use seqset::SeqSet;
use std::time::Duration;
use vecmap::VecMap;

use bytes::Bytes;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use smallvec::SmallVec;
use thin_vec::ThinVec;

use crate::ids::{PeerId, RenditionId, SwarmId};
use crate::integrity::{DigestSigner, SegmentDigest, SignedDigest, TrustedKeys, VerifiedDigest};
use crate::time::Time;
use crate::tracker_proto::{
    Announce, AnnounceEvent, FromTracker, OfferId, PeerInfo, RelayedAnswer, RelayedOffer, Role,
};
use crate::wire::{
    self, Availability, Capabilities, Frame, Handshake, RequestId, SegmentRef, Session,
};

use cache::{Cache, Stored};
use download::{Download, Owner};
use rate::{Throughput, TokenBucket};

/// What kind of peer this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// An operator's seed: first to fetch every segment, signs digests, serves many viewers.
    Seed,
    /// A viewer's player (browser, headless or simulated).
    Viewer,
}

/// How a node checks the data it receives from peers.
#[derive(Debug, Clone)]
pub enum IntegrityMode {
    /// The node signs the digest of every segment it fetches from the origin with this
    /// ed25519 secret key (seed nodes), and trusts digests signed by `trusted` as well.
    Sign {
        /// The operator's secret key.
        secret: [u8; 32],
        /// Other trusted keys (the node's own public key is always trusted).
        trusted: TrustedKeys,
    },
    /// Only digests signed by one of these keys are accepted.
    Verify(TrustedKeys),
    /// No trusted key: digests are accepted whoever signed them (each chunk is still checked
    /// against them, which catches corruption but not a lying peer). Chosen explicitly, never
    /// by default; the node signs the digests of its own origin fetches with a throwaway key.
    Unverified,
}

/// Upload limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadConfig {
    /// Whether this node serves data to peers at all.
    pub enabled: bool,
    /// Neighbours served at once; others get `Busy`.
    pub slots: usize,
    /// Upload rate cap in bytes per second, over all neighbours.
    pub rate: Option<u64>,
    /// Total bytes this node uploads before it stops serving.
    pub volume_budget: Option<u64>,
    /// Requests queued per neighbour before it gets `Busy`.
    pub queue_per_peer: usize,
}

/// Configuration of a [`Node`]. `Default` is a viewer with sensible values; each field says
/// its default and why.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This peer's id.
    pub peer_id: PeerId,
    /// The swarm (stream) it is in.
    pub swarm: SwarmId,
    /// Seed or viewer. Default viewer.
    pub role: NodeRole,
    /// Integrity mode. No default: the caller must choose (see [`NodeConfig::new`]).
    pub integrity: IntegrityMode,
    /// Neighbours at most. Default 20 for viewers (enough for multi-source downloads, few
    /// enough for browsers), 200 for seeds.
    pub max_peers: usize,
    /// Offers per announce while below `max_peers`. Default 5, as WebTorrent clients.
    pub offers_per_announce: usize,
    /// Announce interval until the tracker gives one. Default 30 s, as WebTorrent clients.
    pub announce_interval: Duration,
    /// Announce interval while the node has fewer than `max_peers / 2` neighbours and the
    /// swarm has more peers than that: the tracker's interval (120 s) is for keeping a place
    /// in the swarm, and a node that joined early, or lost neighbours, would wait that long
    /// for new ones (each announce brings at most `offers_per_announce`). Never shorter than
    /// the tracker's `min interval`. Default 15 s.
    pub refill_interval: Duration,
    /// A connection that does not open within this time, or whose DataChannel brings no
    /// handshake within this time of opening, is given up. Default 15 s.
    pub connect_timeout: Duration,
    /// Upload limits. Default: on, 4 slots for viewers (64 for seeds), no rate cap, no volume
    /// budget, 4 queued requests per neighbour.
    pub upload: UploadConfig,
    /// Bytes of segments kept. Default 256 MiB for viewers, 1 GiB for seeds.
    pub cache_bytes: u64,
    /// Safety margin added to the HTTP time estimate before a deadline. Default 1 s: one
    /// round trip of retries on a slow origin.
    pub http_margin: Duration,
    /// HTTP time to first byte assumed until measured. Default 300 ms.
    pub http_initial_ttfb: Duration,
    /// HTTP throughput assumed until measured, bytes/s. Default 1 MB/s (a modest connection).
    pub http_initial_rate: u64,
    /// Segment size assumed for estimates before the real size is known. Default 1 MB.
    pub segment_size_guess: u64,
    /// Throughput assumed for a neighbour until measured, bytes/s. Default 2 MB/s.
    pub p2p_initial_rate: u64,
    /// Chunks per request to a neighbour, at most. Default 2 (128 KiB with the default chunk
    /// size; with two requests in flight, 256 KiB per neighbour: 5 MB/s from one neighbour
    /// at a 50 ms round trip). A neighbour measured slow gets fewer, down to one chunk for
    /// one that takes a quarter of a second per chunk (see `request_chunks_for`). Fewer chunks per request commit fewer chunks
    /// to a holder that is slow to serve them while another sits idle (in the simulator,
    /// against 4: S4 at 230 concurrent viewers 0.896 and 0.844 -> 0.894 and 0.857 with a
    /// sixth fewer deadline fallbacks, S0 at u = r and N = 50 0.785 -> 0.806).
    pub request_chunks: usize,
    /// Requests in flight per neighbour. Default 2: keeps the channel busy across round trips.
    pub requests_per_peer: usize,
    /// A request that receives nothing for this long is cancelled and re-issued elsewhere.
    /// Default 1.5 s.
    pub request_stall_timeout: Duration,
    /// How much media ahead of the player's next segment is fetched from peers. Default 30 s.
    pub prefetch_window: Duration,
    /// Viewers spread their origin fetches of new segments over this time. Default 2 s: long
    /// against the time a `Fetching` frame takes to reach the neighbours (so few fetch the
    /// same segment), short against the several segments live viewers play behind the edge.
    pub scout_spread: Duration,
    /// How many members of a neighbourhood are a new segment's first scouts (the members:
    /// the node, when it uploads, and its open, uploading viewer neighbours that play the
    /// rendition). In a full mesh the role rotates through them in peer id order; otherwise
    /// they rank by [`crate::rendezvous::scout_weight`]. Default 1.
    pub scouts: usize,
    /// A viewer that is not one of a segment's first scouts does not fetch it from the origin
    /// whole while its deadline is further than this: a first scout elsewhere in the swarm
    /// has usually fetched it, and the deadline fallback brings whatever peers have not. In
    /// a large swarm each neighbourhood has its own first scouts, so a second scout stepping
    /// in early is a whole extra copy from the origin. Default 8 s (two 4 s segments): at
    /// the usual three segments behind the live edge it is rarely later than the one to two
    /// spreads it waits anyway; further behind, it saves the copies (simulator, S0 at u = r
    /// and N = 50, six segments behind: 0.932 -> 0.941).
    pub scout_step_in_lead: Duration,
    /// A first scout of its neighbourhood that a member of the swarm it cannot see likely
    /// outranks (the members it does not see, times the share of scout weights above its
    /// own, is two or more; the members it does not see are the tracker's count less its
    /// open neighbours, taken to be members in the proportion its open neighbours are) waits
    /// this much longer before it fetches a new segment from the origin, unless the fetch
    /// would then start after the segment's deadline fallback would. In a swarm much larger than a neighbourhood every
    /// neighbourhood has a first scout, and each of their fetches is a whole copy from the
    /// origin (simulator, S0 at u = 2r and N = 1000: 44 copies per segment); the members the
    /// swarm ranks highest go at once, and in this time their chunks reach the neighbours of
    /// the others, which then fetch from peers. Default 1 s (half the default spread).
    pub scout_outranked_wait: Duration,
    /// After joining, a node waits this long for neighbours before it fetches from the origin
    /// segments that are not yet due (due ones are always fetched). Default 3 s: a tracker
    /// round trip, an offer and ICE.
    pub join_grace: Duration,
    /// How long a neighbour's `Fetching` holds this node back. Default 3 s.
    pub fetching_hold: Duration,
    /// Whether to offer 256 KiB DataChannel messages. Default true.
    pub large_messages: bool,
    /// The chunk size of the digests this node signs (a seed's, or an unverified node's own),
    /// doubled as needed to stay within `MAX_CHUNKS`; until a digest from elsewhere is
    /// accepted, also the chunk size its probes, upload slots, `Busy` retry times and stall
    /// timeouts assume. Default [`crate::integrity::DEFAULT_CHUNK_SIZE`] (64 KiB); the
    /// simulator, whose segment bytes are scaled down, scales it with them. Peers accept any
    /// size from 1 KiB to 16 MiB.
    pub digest_chunk_size: u32,
    /// Whether segments are downloaded from neighbours at all. Default true; a seed in the
    /// seed mesh sets it false: its "HTTP" fetches go through the mesh, which already shares
    /// each origin pull among the seeds, and its neighbours are there to be served.
    pub download_from_peers: bool,
    /// Whether uploads send at most one chunk per message (round-robin between neighbours
    /// chunk by chunk). Default true: with several neighbours served over an uplink of a few
    /// Mbit/s, whole-request messages of 256 KiB take longer than the requesters' stall
    /// timeout to arrive (measured in the simulator: 7% offload instead of 28% at u = r).
    pub chunk_messages: bool,
    /// Whether a segment still arriving is announced to neighbours once its first chunk is in,
    /// and its verified chunks relayed as they come, rather than only once complete. Default
    /// true: store-and-forward of whole segments costs a segment's upload time per hop, which
    /// on uplinks near the stream rate leaves room for only a hop or two before live
    /// deadlines (measured in the simulator).
    pub relay_partial: bool,
    /// Whether to tell neighbours which chunks of a segment still arriving this node holds
    /// ([`Frame::Chunks`], to neighbours that advertise [`Capabilities::CHUNK_MAPS`]), and
    /// advertise that it understands them. Default true: without maps a neighbour announced
    /// at its first chunk looks whole, requests for its missing chunks get `Busy`, and
    /// requesters cannot fetch the rarest chunks first so that they have different chunks to
    /// trade (in the simulator, S4 at 230 concurrent viewers: offload 0.86 and 0.76 without
    /// maps, 0.90 and 0.84 with them; decision 0009).
    pub chunk_maps: bool,
    /// A scarce uplink (under 1.75 times the stream rate) keeps itself for chunks it has sent to
    /// nobody yet, as a BitTorrent super-seed does: while some chunk of a segment has not
    /// gone out, a request for chunks it has already sent, and that another neighbour has
    /// announced holding, gets `Busy` when another neighbour's upload is waiting anyway, so
    /// the uplink stays busy. Default true: a segment's first copy, which only its scout can
    /// give, leaves sooner (in the simulator, S0 at u = r, N = 10: 0.846 -> 0.873;
    /// decision 0015).
    pub first_copies_first: bool,
    /// Bytes handed to the DataChannels and not yet sent (over all neighbours: they share one
    /// uplink) above which the node stops queueing more. Default 256 KiB for viewers (four
    /// 64 KiB chunks: 0.7 s on a 3 Mbit/s uplink, 0.1 s at 20 Mbit/s), 512 KiB for seeds.
    /// Whatever sits in the buffer is sent even if its request is cancelled meanwhile, and a
    /// new request or a control frame (`Fetching`, `Have`) waits behind it: on viewers'
    /// uplinks of a few Mbit/s, 512 KiB (1.4 s at 3 Mbit/s) made half of what viewers
    /// uploaded arrive after its request was given up (measured in the simulator, S0 at
    /// u = r: offload 0.33 with 512/128 KiB, 0.64 with 256/64 KiB). Once the uplink is
    /// measured, the bound is what it sends in [`NodeConfig::send_queue_time`], if less.
    pub send_buffer_high: u64,
    /// The low-water mark the shell reports drains at (see [`PeerEvent::Drained`]). Default
    /// 16 KiB for viewers (a quarter chunk: the buffer of a slow uplink is refilled before
    /// it runs dry, without holding a chunk's time of data), 128 KiB for seeds.
    pub send_buffer_low: u64,
    /// How much of the measured uplink's time the DataChannels' buffers may hold, together:
    /// the bound on queued bytes is the smaller of this at the measured rate (at least twice
    /// `send_buffer_low`, so that drains are still reported) and `send_buffer_high`.
    /// Default 100 ms. A request that arrives waits behind what is queued, and so does every
    /// chunk relayed on from it: four chunks queued on an uplink near the stream rate held
    /// each relay hop 0.7 s (in the simulator, S0 at u = r, seeds 1-5: offload 0.748, 0.813
    /// and 0.881 at N = 5, 10 and 50 with 256 KiB, 0.756, 0.828 and 0.910 with 100 ms;
    /// decision 0014).
    pub send_queue_time: Duration,
    /// How long a banned peer stays banned. Default 10 min.
    pub ban_duration: Duration,
    /// A join token for trackers that require one (`core::token`). Default none.
    pub join_token: Option<String>,
    /// A locality hint for the tracker's matching (a region, a network). Default none.
    pub locality: Option<String>,
    /// The NAT type, if the shell knows it. Default none.
    pub nat: Option<crate::tracker_proto::NatType>,
    /// The stream's playlist URL without its query, announced so that the tracker can ask a
    /// seed on standby to join a swarm that has none. Default none.
    pub stream: Option<String>,
}

impl NodeConfig {
    /// A configuration with the defaults for `role`.
    pub fn new(peer_id: PeerId, swarm: SwarmId, role: NodeRole, integrity: IntegrityMode) -> Self {
        let seed = role == NodeRole::Seed;
        Self {
            peer_id,
            swarm,
            role,
            integrity,
            max_peers: if seed { 200 } else { 20 },
            offers_per_announce: 5,
            announce_interval: Duration::from_secs(30),
            refill_interval: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(15),
            upload: UploadConfig {
                enabled: true,
                slots: if seed { 64 } else { 4 },
                rate: None,
                volume_budget: None,
                queue_per_peer: 4,
            },
            cache_bytes: if seed { 1 << 30 } else { 256 << 20 },
            http_margin: Duration::from_secs(1),
            http_initial_ttfb: Duration::from_millis(300),
            http_initial_rate: 1_000_000,
            segment_size_guess: 1_000_000,
            p2p_initial_rate: 2_000_000,
            request_chunks: 2,
            requests_per_peer: 2,
            request_stall_timeout: Duration::from_millis(1500),
            prefetch_window: Duration::from_secs(30),
            scout_spread: Duration::from_secs(2),
            scouts: 1,
            scout_step_in_lead: Duration::from_secs(8),
            scout_outranked_wait: Duration::from_secs(1),
            join_grace: Duration::from_secs(3),
            fetching_hold: Duration::from_secs(3),
            large_messages: true,
            digest_chunk_size: crate::integrity::DEFAULT_CHUNK_SIZE,
            download_from_peers: true,
            chunk_messages: true,
            relay_partial: true,
            chunk_maps: true,
            first_copies_first: true,
            send_buffer_high: if seed { 512 << 10 } else { 256 << 10 },
            send_buffer_low: if seed { 128 << 10 } else { 16 << 10 },
            send_queue_time: Duration::from_millis(100),
            ban_duration: Duration::from_secs(600),
            join_token: None,
            locality: None,
            nat: None,
            stream: None,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value that must be positive is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The integrity mode trusts no key and is not explicitly unverified.
    #[error("integrity: Verify needs at least one trusted key (or choose Unverified explicitly)")]
    NoTrustedKey,
}

/// The id of an HTTP fetch, chosen by the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FetchId(pub u64);

/// The id of a player request, chosen by the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlayerRequestId(pub u64);

/// What an HTTP fetch is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpTarget {
    /// Bytes of a media segment (the shell knows its URL and any playlist byte range, which
    /// `range` is relative to).
    Segment(SegmentRef),
}

/// An HTTP request for the shell to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Echo it in [`Node::handle_http_data`] and [`Node::handle_http_done`].
    pub id: FetchId,
    /// What to fetch.
    pub target: HttpTarget,
    /// Byte range within the segment (end exclusive); `None` for the whole segment.
    pub range: Option<Range<u64>>,
}

/// How an HTTP fetch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// An HTTP status other than 200/206.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The connection failed or timed out.
    #[error("network error: {0}")]
    Network(String),
    /// The body did not match the request (wrong range, wrong length).
    #[error("bad response: {0}")]
    BadResponse(String),
}

/// Something for the shell to send or do.
#[derive(Debug, Clone, PartialEq)]
pub enum Transmit {
    /// Send this announce to the tracker, after creating `offers` WebRTC offers (non-trickle)
    /// and putting them in `announce.offers`.
    Announce {
        /// The announce, without offers (boxed, as the offers' variants: a node queues many
        /// transmits, most of them small messages to neighbours).
        announce: Box<Announce>,
        /// How many offers to create.
        offers: usize,
    },
    /// Answer this relayed offer: create the WebRTC answer and send it to the tracker.
    AcceptOffer(Box<RelayedOffer>),
    /// Apply this relayed answer to the pending offer with its offer id.
    CompleteOffer(Box<RelayedAnswer>),
    /// Forget the pending offer (it was answered by a peer this node will not connect to).
    DropOffer(OfferId),
    /// Send one DataChannel message to a neighbour.
    Peer {
        /// The neighbour.
        peer: PeerId,
        /// The message (one or more wire frames).
        data: Bytes,
    },
    /// Close the connection to a neighbour.
    ClosePeer(PeerId),
    /// Make an HTTP request.
    Http(HttpRequest),
    /// Abort an HTTP request; no more calls for it are expected.
    CancelHttp(FetchId),
}

/// Why a neighbour was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// It closed the connection (or the connection failed).
    Closed,
    /// The connection did not open in time.
    ConnectTimeout,
    /// It broke the wire protocol.
    Protocol(String),
    /// It sent data that failed verification; it is banned.
    Integrity,
    /// Its handshake does not match ours.
    Handshake(String),
}

/// Where a segment's bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SourceBytes {
    /// From the origin over HTTP.
    pub http: u64,
    /// From neighbours.
    pub p2p: u64,
}

/// Something that happened, for the player and the application.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A segment the player asked for is ready.
    SegmentReady {
        /// The request.
        request: PlayerRequestId,
        /// The segment.
        segment: SegmentRef,
        /// Its bytes.
        data: Bytes,
        /// Where they came from.
        sources: SourceBytes,
    },
    /// A segment the player asked for could not be had (the origin failed).
    SegmentFailed {
        /// The request.
        request: PlayerRequestId,
        /// The segment.
        segment: SegmentRef,
        /// Why.
        error: FetchError,
    },
    /// A neighbour's DataChannel opened and its handshake agreed.
    PeerConnected {
        /// The neighbour.
        peer: PeerId,
        /// Whether it is a seed.
        seed: bool,
    },
    /// A neighbour is gone.
    PeerDropped {
        /// The neighbour.
        peer: PeerId,
        /// Why.
        reason: DropReason,
    },
    /// A neighbour sent a chunk that failed verification.
    IntegrityFailure {
        /// The neighbour.
        peer: PeerId,
        /// The segment.
        segment: SegmentRef,
    },
}

/// A segment as listed in the playlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentMeta {
    /// Media sequence number.
    pub sequence: u64,
    /// Media duration.
    pub duration: Duration,
    /// Whether the playlist lists it by its parts only (LL-HLS: it is still being produced,
    /// and served as its parts come out). A fetch of it is paced by the packager, not the
    /// network, so it measures neither the origin's time to first byte nor its throughput.
    pub partial: bool,
}

/// A media playlist as the player or puller loaded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Playlist {
    /// The rendition.
    pub rendition: RenditionId,
    /// Live (sliding window) or VOD.
    pub live: bool,
    /// The segments listed, in order.
    pub segments: Vec<SegmentMeta>,
}

/// The player's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayerState {
    /// The rendition playing.
    pub rendition: RenditionId,
    /// Sequence number of the segment under the playhead.
    pub playhead: u64,
    /// Media buffered ahead of the playhead.
    pub buffer_ahead: Duration,
}

/// Counters of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Segment bytes received from the origin.
    pub http_bytes: u64,
    /// HTTP requests made for segment data.
    pub http_requests: u64,
    /// Verified segment bytes received from neighbours.
    pub p2p_bytes_down: u64,
    /// Segment bytes sent to neighbours.
    pub p2p_bytes_up: u64,
    /// Bytes of segments delivered to the player.
    pub delivered_bytes: u64,
    /// Segments delivered to the player.
    pub segments_delivered: u64,
    /// Of those, delivered after a deadline that was still ahead when the player asked.
    pub late_segments: u64,
    /// HTTP fetches forced by a near deadline.
    pub deadline_fallbacks: u64,
    /// Chunks from neighbours that failed verification.
    pub integrity_failures: u64,
    /// Neighbours now connected.
    pub peers: usize,
    /// Bytes in the cache.
    pub cache_bytes: u64,
    /// Segments in the cache.
    pub cached_segments: usize,
    /// Bytes held for segments still arriving (the downloads' buffers).
    pub arriving_bytes: u64,
    /// Bytes received from neighbours and thrown away: partly received chunks of cancelled or
    /// failed requests, replies that arrive after their request was cancelled, and bytes of
    /// chunks another source completed first.
    pub aborted_p2p_bytes: u64,
    /// Requests to neighbours in flight.
    pub requests_in_flight: usize,
    /// Uploads queued or under way.
    pub uploads_queued: usize,
    /// The uplink's measured rate, bytes per second, once uploads have measured it.
    pub uplink_rate: Option<u64>,
    /// Neighbours served at once now (see [`UploadConfig::slots`]).
    pub upload_slots: usize,
    /// The origin's measured throughput, bytes per second (body bytes over the time from the
    /// first byte to the last), once a fetch has measured it.
    pub origin_rate: Option<u64>,
    /// The origin's time to first byte as estimated (a moving average, starting at
    /// [`NodeConfig::http_initial_ttfb`]).
    pub origin_ttfb: Duration,
    /// Requests turned away with `Busy` for chunks this node had sent already while others
    /// had not gone out (see [`NodeConfig::first_copies_first`]).
    pub duplicates_deferred: u64,
    /// Per-segment records kept besides the cache: digests, and per neighbour the segments
    /// it has, is fetching, and whose digest it was sent. Bounded by the cache, the downloads
    /// and the protocol's windows; a figure that grows with time is a leak.
    pub segment_records: usize,
}

#[derive(Debug)]
enum Conn {
    /// Signaling under way; the DataChannel is not open yet.
    Connecting { since: Time },
    /// The DataChannel opened (at `since`) and our handshake went out; theirs has not come.
    Opening { since: Time },
    /// Both handshakes are in.
    Open { session: Session },
}

#[derive(Debug)]
struct Inflight {
    seg: SegmentRef,
    /// Next offset expected.
    next: u64,
    end: u64,
    last_data: Time,
    started: Time,
    received: u64,
    /// Cancelled at the neighbour but for the chunk on its way, which `end` now closes:
    /// bytes past it were sent before the cancel arrived, and are dropped.
    cut: bool,
}

#[derive(Debug)]
struct UploadJob {
    id: RequestId,
    seg: SegmentRef,
    next: u64,
    end: u64,
}

/// See [`Node::stall_timeout`].
const STALL_CHUNKS: f64 = 3.0;
/// See [`Node::start_http`].
const MAX_HTTP_RANGES: usize = 4;

/// The largest segment a node takes a digest for (a 6 s segment of a 16 Mbit/s rung is
/// 12 MB): a digest sizes the segment's buffer before any byte arrives.
pub const MAX_SEGMENT_BYTES: u64 = 64 << 20;
/// See [`Node::upload_slots`]. With 450 ms an uplink at 3 Mbit/s (a 3 Mbit/s stream's rate)
/// serves two neighbours at once, one at half that rate one. (It was 350 ms while the
/// simulator's uplink measurement ran 1.3 times high, which gave such an uplink two slots
/// too; measured right, 350 ms gave it one, and S0 at u = r fell from 0.920 to 0.897 at
/// N = 50; decision 0016.)
const SLOT_CHUNK_TIME: Duration = Duration::from_millis(450);

/// An uplink under this many times the stream rate is scarce: it announces every chunk of
/// a segment still arriving while it has a slot free (see `Node::on_chunks_done`), and
/// sends first copies first ([`NodeConfig::first_copies_first`]). (Twice the rate while the
/// simulator's uplink measurement ran 1.3 times high; measured right, an uplink of exactly
/// twice the rate fell under it about half the time, and S0 at u = 2r, N = 50 lost 0.7
/// points; decision 0016.)
const SCARCE_UPLINK: f64 = 1.75;

/// Bounds of the retry time given to a neighbour turned away for want of a free upload slot
/// (see [`Node::slot_retry_ms`]).
const SLOT_RETRY_MIN: Duration = Duration::from_millis(50);
const SLOT_RETRY_MAX: Duration = Duration::from_millis(500);
/// See [`Node::on_drained`]: shorter intervals say more about message timing than the rate.
const UPLINK_MIN_SAMPLE: Duration = Duration::from_millis(100);
const STALL_MAX_FACTOR: u32 = 4;
/// A queued request moves to an idle holder that would finish it this many times sooner
/// (see [`Node::steal_queued`]).
const STEAL_MARGIN: f64 = 1.5;
/// ... and only from behind at least this many chunks of ours (see [`Node::steal_queued`]).
const STEAL_BEHIND_CHUNKS: u64 = 2;
/// How many members a first scout does not see must be expected to outrank it before it
/// waits [`NodeConfig::scout_outranked_wait`]: with one, in a swarm of 50 whose
/// neighbourhoods hold 18, most first scouts waited, and S0 at u = r lost 0.2 points.
const OUTRANKED_BY: f64 = 2.0;
/// See [`request_chunks_for`].
const REQUEST_TIME: Duration = Duration::from_millis(250);

/// Chunks per request to `p`: as many as it sends in [`REQUEST_TIME`] at its measured rate,
/// at least one and at most `most` ([`NodeConfig::request_chunks`]). A slow holder (a
/// viewer's uplink shared between requesters, 64 KiB taking a quarter of a second or more)
/// is asked for one chunk at a time, so the chunks it would take seconds to send stay free
/// for the holders that finish first. A fast one (a seed) gets whole requests that keep its
/// channel busy across round trips. The rate measured with one chunk per request is at most
/// two chunks per round trip (two requests in flight), which stays above the threshold for
/// round trips up to `REQUEST_TIME`: a fast holder is not talked down to one chunk by its
/// own measurement.
fn request_chunks_for(p: &Peer, most: usize, chunk_size: u32) -> usize {
    let most = most.max(1);
    if !p.throughput.is_proven() {
        return most;
    }
    let chunks = p.throughput.get() * REQUEST_TIME.as_secs_f64() / f64::from(chunk_size.max(1));
    (chunks as usize).clamp(1, most)
}

#[derive(Debug)]
struct Peer {
    conn: Conn,
    seed: bool,
    caps: Capabilities,
    have: SegmentSets,
    fetching: Fetching,
    busy_until: Time,
    /// When data for any of our requests last came from it: a neighbour sending data for one
    /// request is alive, and our other requests to it wait their turn rather than stall.
    last_data: Time,
    /// Digests of segments we have sent to this peer.
    digests_sent: SegmentSets,
    inflight: Inflights,
    throughput: Throughput,
    /// Requests it made of us, first come first served: a few at a time.
    uploads: ThinVec<UploadJob>,
    send_buffered: u64,
    /// Which chunks it holds of segments it announced while they were still arriving
    /// ([`Frame::Chunks`]); a segment it announced without a map, or whose map is full, it
    /// holds whole. At most [`Peer::MAX_CHUNK_MAPS`], the oldest dropped.
    chunk_maps: ThinVec<(SegmentRef, ChunkMap)>,
}

// Every node holds one per neighbour, and the simulator holds thousands of nodes: its vectors
// are thin (one pointer; an empty one allocates nothing), but for the sets of segments, held
// inline for one rendition (see `SegmentSets`).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(size_of::<Peer>() <= 232);

impl Peer {
    /// Chunk maps kept per neighbour: a neighbour has a few segments arriving at a time.
    const MAX_CHUNK_MAPS: usize = 16;

    fn new(conn: Conn, seed: bool, initial_rate: f64) -> Self {
        Self {
            conn,
            seed,
            caps: Capabilities::default(),
            have: SegmentSets::default(),
            fetching: Fetching::default(),
            busy_until: Time::ZERO,
            last_data: Time::ZERO,
            digests_sent: SegmentSets::default(),
            inflight: Inflights::default(),
            throughput: Throughput::new(initial_rate),
            uploads: ThinVec::new(),
            send_buffered: 0,
            chunk_maps: ThinVec::new(),
        }
    }

    /// Whether it understands chunk maps and may play `seg`'s rendition: it has announced
    /// some of it, or nothing at all yet (a neighbour that just joined would otherwise take
    /// a segment announced while arriving for whole), or it is fetching some of it (a
    /// request to this node, or a `Fetching` notice): a viewer that has just switched to
    /// the rendition has announced none of it yet.
    fn plays_with_chunk_maps(&self, seg: &SegmentRef) -> bool {
        self.session()
            .is_some_and(|s| s.remote.contains(Capabilities::CHUNK_MAPS))
            && (self.have.len() == 0
                || self.have.get(&seg.rendition).is_some_and(|s| !s.is_empty())
                || self
                    .uploads
                    .iter()
                    .any(|j| j.seg.rendition == seg.rendition)
                || self
                    .fetching
                    .0
                    .iter()
                    .any(|(s, _)| s.rendition == seg.rendition))
    }

    /// Whether to send it this node's chunk map of `seg` still arriving: it understands
    /// maps, plays the rendition and does not hold `seg` whole, as far as this node knows
    /// (it has not announced it, or announced it with a partial map).
    fn wants_chunk_map(&self, seg: &SegmentRef) -> bool {
        self.plays_with_chunk_maps(seg)
            && (!self.has(seg) || self.chunk_maps.iter().any(|(s, _)| s == seg))
    }

    /// Its chunk map of `seg`, if it announced `seg` while it was still arriving and has not
    /// said since that it holds it whole: see [`has_chunk`].
    fn chunk_map(&self, seg: &SegmentRef) -> Option<&[u8]> {
        self.chunk_maps
            .iter()
            .find(|(s, _)| s == seg)
            .map(|(_, m)| m.as_slice())
    }

    /// Keeps the chunk maps of the segments for which `f` is true; none left, no buffer.
    fn retain_chunk_maps(&mut self, mut f: impl FnMut(&SegmentRef) -> bool) {
        self.chunk_maps.retain(|(s, _)| f(s));
        if self.chunk_maps.is_empty() {
            self.chunk_maps = ThinVec::new();
        }
    }

    /// Its queue of uploads lost a job: none left, no buffer.
    fn uploads_shrunk(&mut self) {
        if self.uploads.is_empty() {
            self.uploads = ThinVec::new();
        }
    }

    /// Records its chunk map of `seg`; a map with all `chunks` set (when the count is known)
    /// says it holds the segment whole. The map is copied: the frame's bytes share the
    /// buffer of the whole message they came in.
    fn set_chunk_map(&mut self, seg: SegmentRef, map: &[u8], chunks: Option<usize>) {
        self.retain_chunk_maps(|s| *s != seg);
        let full = chunks.is_some_and(|n| {
            (0..n).all(|i| map.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
        });
        if full {
            return;
        }
        if self.chunk_maps.len() >= Self::MAX_CHUNK_MAPS {
            self.chunk_maps.remove(0);
        }
        self.chunk_maps.push((seg, ChunkMap::from_slice(map)));
    }

    fn session(&self) -> Option<&Session> {
        match &self.conn {
            Conn::Open { session } => Some(session),
            Conn::Connecting { .. } | Conn::Opening { .. } => None,
        }
    }

    /// Has `seg`, is not busy, uploads and is open: a candidate for a request.
    fn can_serve(&self, now: Time, seg: &SegmentRef) -> bool {
        // Cheap field checks before the set lookup.
        self.busy_until <= now
            && self.caps.contains(Capabilities::UPLOAD)
            && self.session().is_some()
            && self.has(seg)
    }

    fn has(&self, seg: &SegmentRef) -> bool {
        self.have.contains(seg)
    }
}

/// A neighbour's chunk map of one segment (one bit per chunk), held inline up to 128 chunks:
/// a segment of a few MB in 64 KiB chunks takes a few bytes.
type ChunkMap = SmallVec<[u8; 16]>;

/// The segments a neighbour said it is fetching from the origin, and when. A few at a time
/// (at most 256), looked up by segment: a vector, freed when empty (an ordered map keeps a
/// node with room for eleven once it has held one).
#[derive(Debug, Default)]
struct Fetching(ThinVec<(SegmentRef, Time)>);

impl Fetching {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn get(&self, seg: &SegmentRef) -> Option<&Time> {
        self.0.iter().find(|(s, _)| s == seg).map(|(_, t)| t)
    }

    fn insert(&mut self, seg: SegmentRef, at: Time) {
        match self.0.iter_mut().find(|(s, _)| *s == seg) {
            Some((_, t)) => *t = at,
            None => self.0.push((seg, at)),
        }
    }

    fn remove(&mut self, seg: &SegmentRef) {
        self.retain(|s, _| s != seg);
    }

    fn retain(&mut self, mut f: impl FnMut(&SegmentRef, &Time) -> bool) {
        self.0.retain(|(s, t)| f(s, t));
        if self.0.is_empty() {
            self.0 = ThinVec::new();
        }
    }
}

/// Requests in flight to one neighbour, in id order (as an ordered map by id would list them).
/// A neighbour has a few at a time, so a sorted vector, freed when the last one ends: an
/// ordered map keeps a node with room for eleven for every neighbour ever asked.
#[derive(Debug, Default)]
struct Inflights(ThinVec<(RequestId, Inflight)>);

type InflightRef<'a> = (&'a RequestId, &'a Inflight);
type InflightMut<'a> = (&'a RequestId, &'a mut Inflight);

impl Inflights {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn find(&self, id: &RequestId) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.cmp(id))
    }

    fn contains_key(&self, id: &RequestId) -> bool {
        self.find(id).is_ok()
    }

    #[cfg(test)]
    fn get_ref(&self, id: &RequestId) -> Option<&Inflight> {
        self.find(id).ok().map(|i| &self.0[i].1)
    }

    fn get_mut(&mut self, id: &RequestId) -> Option<&mut Inflight> {
        let i = self.find(id).ok()?;
        Some(&mut self.0[i].1)
    }

    fn insert(&mut self, id: RequestId, req: Inflight) {
        match self.find(&id) {
            Ok(i) => self.0[i].1 = req,
            Err(i) => self.0.insert(i, (id, req)),
        }
    }

    fn remove(&mut self, id: &RequestId) -> Option<Inflight> {
        let i = self.find(id).ok()?;
        let (_, req) = self.0.remove(i);
        if self.0.is_empty() {
            self.0 = ThinVec::new();
        }
        Some(req)
    }

    fn iter(&self) -> impl Iterator<Item = InflightRef<'_>> {
        self.into_iter()
    }

    fn values(&self) -> impl Iterator<Item = &Inflight> {
        self.0.iter().map(|(_, r)| r)
    }
}

impl<'a> IntoIterator for &'a Inflights {
    type Item = InflightRef<'a>;
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (RequestId, Inflight)>,
        fn(&'a (RequestId, Inflight)) -> InflightRef<'a>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl<'a> IntoIterator for &'a mut Inflights {
    type Item = InflightMut<'a>;
    type IntoIter = std::iter::Map<
        std::slice::IterMut<'a, (RequestId, Inflight)>,
        fn(&'a mut (RequestId, Inflight)) -> InflightMut<'a>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter_mut().map(|(k, v)| (&*k, v))
    }
}

impl IntoIterator for Inflights {
    type Item = (RequestId, Inflight);
    type IntoIter = thin_vec::IntoIter<(RequestId, Inflight)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Segments, per rendition: what a neighbour has, and which digests it was sent. A neighbour
/// has one or a few renditions, so a short vector beats a hash map on the scheduler's hot path
/// (`holders`, run on every input); it keeps at most [`SegmentSets::MAX_RENDITIONS`], dropping
/// the oldest, so a neighbour announcing endless renditions cannot grow it. One rendition is
/// held inline, in the neighbour's entry: the scheduler asks every neighbour on every pass,
/// and a pointer to follow per neighbour was a cache miss per neighbour.
#[derive(Debug, Default)]
struct SegmentSets(SmallVec<[(RenditionId, SeqSet); 1]>);

impl SegmentSets {
    const MAX_RENDITIONS: usize = 16;

    fn contains(&self, seg: &SegmentRef) -> bool {
        self.get(&seg.rendition)
            .is_some_and(|s| s.contains(seg.sequence))
    }

    /// Adds `seg`; false if it was there.
    fn insert(&mut self, seg: SegmentRef) -> bool {
        let set = self.entry(seg.rendition);
        let had = set.contains(seg.sequence);
        set.insert(seg.sequence);
        !had
    }

    fn remove(&mut self, seg: &SegmentRef) {
        if let Some(set) = self.get_mut(&seg.rendition) {
            set.remove(seg.sequence);
        }
    }

    fn len(&self) -> usize {
        self.0.iter().map(|(_, s)| s.len()).sum()
    }

    fn retain(&mut self, mut f: impl FnMut(SegmentRef) -> bool) {
        for (rendition, set) in &mut self.0 {
            let rendition = *rendition;
            set.retain(|sequence| {
                f(SegmentRef {
                    rendition,
                    sequence,
                })
            });
        }
        self.0.retain(|(_, s)| !s.is_empty());
    }

    fn get(&self, rendition: &RenditionId) -> Option<&SeqSet> {
        self.0.iter().find(|(r, _)| r == rendition).map(|(_, s)| s)
    }

    fn get_mut(&mut self, rendition: &RenditionId) -> Option<&mut SeqSet> {
        self.0
            .iter_mut()
            .find(|(r, _)| r == rendition)
            .map(|(_, s)| s)
    }

    /// The set of `rendition`, created empty if missing.
    fn entry(&mut self, rendition: RenditionId) -> &mut SeqSet {
        let i = match self.0.iter().position(|(r, _)| *r == rendition) {
            Some(i) => i,
            None => {
                if self.0.len() >= Self::MAX_RENDITIONS {
                    self.0.remove(0);
                }
                self.0.push((rendition, SeqSet::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }
}

#[derive(Debug)]
struct PlayerWait {
    id: PlayerRequestId,
    seg: SegmentRef,
    deadline: Time,
    /// The deadline had passed when the player asked (an empty buffer: startup or a stall).
    urgent: bool,
}

/// One peer in one swarm. See the [module docs](self).
pub struct Node {
    config: NodeConfig,
    rng: Xoshiro256PlusPlus,
    signer: Option<DigestSigner>,
    trusted: TrustedKeys,
    unverified: bool,
    handshake: Handshake,

    // Tracker.
    tracker_connected: bool,
    started: Time,
    next_announce: Option<Time>,
    last_announce: Option<Time>,
    announce_interval: Duration,
    min_interval: Duration,
    swarm_size: u64,

    // Peers.
    /// Kept sorted by id (inserted with `insert_sorted`, removed with `shift_remove`): the
    /// scheduler's passes see neighbours in id order, as with an ordered map, but each
    /// message's lookup is a hash and each pass walks a vector, not a tree.
    peers: PeerMap<Peer>,
    banned: BTreeMap<PeerId, Time>,
    next_request_id: u32,

    // Media.
    playlists: VecMap<RenditionId, Playlist>,
    /// When each segment of the playlists was first listed (when its scouts go): those listed
    /// now, a few per live rendition, sorted by segment.
    first_listed: Vec<(SegmentRef, Time)>,
    /// The player's last report and when it came.
    player: Option<(PlayerState, Time)>,
    /// Segments delivered since that report (by sequence): they are not in the buffer it
    /// reported, and play after it. A few at most.
    delivered_since_report: Vec<u64>,
    waits: Vec<PlayerWait>,
    /// The highest sequence delivered to the player, in any rendition: the renditions of a
    /// ladder share sequence numbers, and after an ABR switch the player's buffer still holds
    /// the old rendition's segments (the shells route only the main playlist's segments here).
    delivered_upto: Option<u64>,
    next_player_request: u64,
    /// Boxed: a download is large (its chunk table, buffer and fetches), and a map node holds
    /// room for eleven of them however few there are.
    downloads: VecMap<SegmentRef, Box<Download>>,
    digests: VecMap<SegmentRef, VerifiedDigest>,
    cache: Cache,
    /// Where completed segments' bytes are shared with other nodes of the process, if anywhere.
    pool: Option<SegmentPool>,
    http_ttfb: Duration,
    http_rate: Throughput,
    /// Moving average of segment sizes, for estimates before a size is known.
    segment_size: u64,
    /// The chunk size of the last digest seen: a stream's segments share one, so it sizes
    /// the probe request for a segment whose digest is not known yet.
    chunk_size: u32,
    next_fetch: u64,
    fetches: HashMap<FetchId, SegmentRef>,

    // Upload.
    upload_bucket: Option<TokenBucket>,
    /// Segment bytes (`Data` payloads) handed to DataChannels, all neighbours, ever (less
    /// those of dropped neighbours still buffered): with the buffered amounts, what has left
    /// over the uplink. Control frames are left out: the uplink's rate is wanted in segment
    /// bytes, for chunk times, and they are a small share of a real link's bytes (chunk maps
    /// to twenty neighbours at every chunk: under 1%); in the simulator, where segment
    /// bytes are scaled down and control frames are not, counting them made the uplink look
    /// 1.3 times faster than it was (median, S0 at u = r, N = 50).
    handed: u64,
    /// The uplink's measured rate (see [`Node::on_drained`]).
    uplink: Throughput,
    /// Since when the uplink has had bytes waiting, and what had left by then.
    uplink_busy: Option<(Time, u64)>,
    upload_cursor: Option<PeerId>,
    /// Which chunks of the last few segments it uploaded this node has sent to anyone, oldest
    /// first: see [`Node::defers_duplicate`].
    chunks_out: VecDeque<(SegmentRef, Vec<u8>)>,
    upload_wake: Option<Time>,

    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    wake: Option<Time>,
    stats: NodeStats,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.config.peer_id)
            .field("role", &self.config.role)
            .field("peers", &self.peers.len())
            .field("downloads", &self.downloads.len())
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

/// How many segments past a neighbour's newest a seed fetches in a VOD.
const VOD_SEED_AHEAD: u64 = 4;

/// How often the scheduler re-examines pending downloads while any is waiting on peers.
const MIN_RECHECK: Duration = Duration::from_millis(50);

impl Node {
    /// A node. `rng_seed` seeds its random choices: shells pass a random seed, tests a fixed
    /// one.
    pub fn new(config: NodeConfig, now: Time, rng_seed: u64) -> Result<Self, ConfigError> {
        let probe_chunk_size = config.digest_chunk_size.clamp(
            crate::integrity::MIN_CHUNK_SIZE,
            crate::integrity::MAX_CHUNK_SIZE,
        );
        for (v, name) in [
            (config.max_peers, "max_peers"),
            (config.request_chunks, "request_chunks"),
            (config.requests_per_peer, "requests_per_peer"),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if config.upload.enabled && config.upload.slots == 0 {
            return Err(ConfigError::Zero("upload.slots"));
        }
        if config.upload.rate == Some(0) {
            return Err(ConfigError::Zero("upload.rate"));
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(rng_seed);
        let (signer, trusted, unverified) = match &config.integrity {
            IntegrityMode::Sign { secret, trusted } => {
                let signer = DigestSigner::from_secret(*secret);
                let mut keys: Vec<_> = trusted_keys(trusted);
                keys.push(signer.public_key());
                (Some(signer), TrustedKeys::new(keys), false)
            }
            IntegrityMode::Verify(keys) => {
                if keys.is_empty() {
                    return Err(ConfigError::NoTrustedKey);
                }
                (None, keys.clone(), false)
            }
            IntegrityMode::Unverified => {
                let secret: [u8; 32] = rng.random();
                (
                    Some(DigestSigner::from_secret(secret)),
                    TrustedKeys::default(),
                    true,
                )
            }
        };
        let mut caps = Capabilities::DIGESTS;
        if config.chunk_maps {
            caps = caps.with(Capabilities::CHUNK_MAPS);
        }
        if config.large_messages {
            caps = caps.with(Capabilities::LARGE_MESSAGES);
        }
        if config.upload.enabled {
            caps = caps.with(Capabilities::UPLOAD);
        }
        if config.role == NodeRole::Seed {
            caps = caps.with(Capabilities::SEED);
        }
        let handshake = Handshake::new(config.swarm, caps);
        let upload_bucket = config
            .upload
            .rate
            .map(|r| TokenBucket::new(r, (r / 4).max(wire::LARGE_MAX_MESSAGE as u64), now));
        let http_rate = Throughput::new(config.http_initial_rate as f64);
        let config_segment_guess = config.segment_size_guess;
        Ok(Self {
            http_ttfb: config.http_initial_ttfb,
            cache: Cache::new(config.cache_bytes),
            pool: None,
            announce_interval: config.announce_interval,
            config,
            rng,
            signer,
            trusted,
            unverified,
            handshake,
            tracker_connected: false,
            started: now,
            next_announce: None,
            last_announce: None,
            min_interval: Duration::ZERO,
            swarm_size: 0,
            peers: PeerMap::default(),
            banned: BTreeMap::new(),
            next_request_id: 0,
            playlists: VecMap::new(),
            first_listed: Vec::new(),
            player: None,
            waits: Vec::new(),
            delivered_upto: None,
            delivered_since_report: Vec::new(),
            next_player_request: 0,
            downloads: VecMap::new(),
            digests: VecMap::new(),
            http_rate,
            segment_size: config_segment_guess,
            chunk_size: probe_chunk_size,
            next_fetch: 0,
            fetches: HashMap::new(),
            upload_bucket,
            upload_cursor: None,
            chunks_out: VecDeque::new(),
            handed: 0,
            uplink: Throughput::new(0.0),
            uplink_busy: None,
            upload_wake: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            wake: None,
            stats: NodeStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> NodeStats {
        NodeStats {
            peers: self
                .peers
                .values()
                .filter(|p| p.session().is_some())
                .count(),
            cache_bytes: self.cache.used(),
            cached_segments: self.cache.len(),
            arriving_bytes: self
                .downloads
                .values()
                .map(|d| d.buf.capacity() as u64)
                .sum(),
            requests_in_flight: self.peers.values().map(|p| p.inflight.len()).sum(),
            uploads_queued: self.peers.values().map(|p| p.uploads.len()).sum(),
            uplink_rate: self.uplink.is_proven().then(|| self.uplink.get() as u64),
            upload_slots: self.upload_slots(),
            origin_rate: self
                .http_rate
                .is_proven()
                .then(|| self.http_rate.get() as u64),
            origin_ttfb: self.http_ttfb,
            segment_records: self.digests.len()
                + self.first_listed.len()
                + self.chunks_out.len()
                + self
                    .peers
                    .values()
                    .map(|p| p.digests_sent.len() + p.fetching.len() + p.have.len())
                    .sum::<usize>(),
            ..self.stats.clone()
        }
    }

    /// Whether the node holds `seg` (verified, or fetched from the origin).
    pub fn has_segment(&self, seg: &SegmentRef) -> bool {
        self.cache.contains(seg)
    }

    /// Neighbours whose handshake is complete.
    pub fn connected_peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers
            .iter()
            .filter(|(_, p)| p.session().is_some())
            .map(|(id, _)| *id)
    }

    // ---------------------------------------------------------------------------------------
    // Outputs.

    /// The next thing to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front();
        if t.is_none() {
            release_idle(&mut self.transmits);
        }
        t
    }

    /// Shares the bytes of the segments this node completes with the other nodes of `pool`
    /// (see [`SegmentPool`]): for a process that runs many nodes, such as the simulator.
    pub fn share_segments(&mut self, pool: SegmentPool) {
        self.pool = Some(pool);
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop_front();
        if e.is_none() {
            release_idle(&mut self.events);
        }
        e
    }

    /// When [`Node::handle_timeout`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        [self.next_announce, self.wake, self.upload_wake]
            .into_iter()
            .flatten()
            .min()
    }

    // ---------------------------------------------------------------------------------------
    // Inputs: tracker.

    /// The tracker connection is up (first time or again): announce.
    pub fn handle_tracker_connected(&mut self, now: Time) {
        self.tracker_connected = true;
        self.announce(now, Some(AnnounceEvent::Started));
    }

    /// The tracker connection is down. Playback goes on with HTTP and the neighbours the node
    /// already has; the shell reconnects and calls [`Node::handle_tracker_connected`].
    pub fn handle_tracker_disconnected(&mut self, _now: Time) {
        self.tracker_connected = false;
        self.next_announce = None;
    }

    /// Leaving: tell the tracker and close every neighbour.
    pub fn shutdown(&mut self, now: Time) {
        if self.tracker_connected {
            self.announce(now, Some(AnnounceEvent::Stopped));
        }
        self.next_announce = None;
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.send_frames(
                id,
                &[Frame::Goodbye {
                    code: wire::goodbye::NORMAL,
                    reason: "shutting down".into(),
                }],
            );
            self.transmits.push_back(Transmit::ClosePeer(id));
        }
        self.peers.clear();
    }

    /// A message from the tracker.
    pub fn handle_tracker_msg(&mut self, now: Time, msg: FromTracker) {
        match msg {
            FromTracker::AnnounceResponse(r) if r.info_hash == self.config.swarm => {
                if let Some(i) = r.interval {
                    self.announce_interval = Duration::from_secs(u64::from(i).clamp(10, 600));
                }
                if let Some(m) = r.min_interval {
                    self.min_interval = Duration::from_secs(u64::from(m).min(600));
                }
                self.swarm_size = r.complete.unwrap_or(0) + r.incomplete.unwrap_or(0);
                if self.next_announce.is_some() {
                    self.next_announce = Some(now + self.reannounce_after());
                }
            }
            FromTracker::Offer(o)
                if o.info_hash == self.config.swarm && self.may_connect(now, &o.peer_id) =>
            {
                let seed = o.ext.as_ref().and_then(|e| e.role) == Some(Role::Seed);
                self.insert_peer(
                    o.peer_id,
                    Peer::new(
                        Conn::Connecting { since: now },
                        seed,
                        self.config.p2p_initial_rate as f64,
                    ),
                );
                self.transmits.push_back(Transmit::AcceptOffer(Box::new(o)));
                self.set_wake(now + self.config.connect_timeout);
            }
            FromTracker::Answer(a) if a.info_hash == self.config.swarm => {
                if self.may_connect(now, &a.peer_id) {
                    let seed = a.ext.as_ref().and_then(|e| e.role) == Some(Role::Seed);
                    self.insert_peer(
                        a.peer_id,
                        Peer::new(
                            Conn::Connecting { since: now },
                            seed,
                            self.config.p2p_initial_rate as f64,
                        ),
                    );
                    self.transmits
                        .push_back(Transmit::CompleteOffer(Box::new(a)));
                    self.set_wake(now + self.config.connect_timeout);
                } else {
                    self.transmits.push_back(Transmit::DropOffer(a.offer_id));
                }
            }
            // Other swarms on a shared socket, scrapes and failures: nothing to do here (the
            // shell logs failures).
            _ => {}
        }
    }

    fn may_connect(&mut self, now: Time, peer: &PeerId) -> bool {
        if *peer == self.config.peer_id || self.peers.contains_key(peer) {
            return false;
        }
        if self.banned.get(peer).is_some_and(|until| *until > now) {
            return false;
        }
        self.peers.len() < self.config.max_peers
    }

    fn announce(&mut self, now: Time, event: Option<AnnounceEvent>) {
        let stopped = event == Some(AnnounceEvent::Stopped);
        let offers = if stopped {
            0
        } else {
            self.config
                .offers_per_announce
                .min(self.config.max_peers.saturating_sub(self.peers.len()))
        };
        let position = self.player.map(|(p, _)| p.playhead).or_else(|| {
            self.playlists
                .values()
                .filter_map(|p| p.segments.last().map(|s| s.sequence))
                .max()
        });
        let free_slots = if self.config.upload.enabled {
            let busy = self
                .peers
                .values()
                .filter(|p| !p.uploads.is_empty())
                .count();
            Some(u32::try_from(self.upload_slots().saturating_sub(busy)).unwrap_or(u32::MAX))
        } else {
            Some(0)
        };
        let announce = Announce {
            event,
            numwant: Some(u32::try_from(offers).unwrap_or(u32::MAX)),
            uploaded: Some(self.stats.p2p_bytes_up),
            downloaded: Some(self.stats.p2p_bytes_down + self.stats.http_bytes),
            left: if self.config.role == NodeRole::Seed {
                Some(0)
            } else {
                None
            },
            ext: Some(PeerInfo {
                role: Some(match self.config.role {
                    NodeRole::Seed => Role::Seed,
                    NodeRole::Viewer => Role::Viewer,
                }),
                rendition: self.player.map(|(p, _)| p.rendition),
                position,
                locality: self.config.locality.clone(),
                nat: self.config.nat,
                upload_slots: free_slots,
                token: self.config.join_token.clone(),
                stream: self.config.stream.clone(),
            }),
            ..Announce::new(self.config.swarm, self.config.peer_id)
        };
        self.transmits.push_back(Transmit::Announce {
            announce: Box::new(announce),
            offers,
        });
        self.last_announce = Some(now);
        self.next_announce = if stopped {
            None
        } else {
            Some(now + self.reannounce_after())
        };
    }

    /// Whether the node wants more neighbours than it has and the swarm can give them.
    fn under_connected(&self) -> bool {
        let want = self.config.max_peers / 2;
        let others = usize::try_from(self.swarm_size.saturating_sub(1)).unwrap_or(usize::MAX);
        self.peers.len() < want.min(others)
    }

    /// The wait until the next announce: short while under-connected (`refill_interval`).
    fn reannounce_after(&self) -> Duration {
        if self.under_connected() {
            self.config
                .refill_interval
                .max(self.min_interval)
                .min(self.announce_interval)
        } else {
            self.announce_interval
        }
    }

    /// Losing a neighbour may leave the node under-connected: announce sooner, but not
    /// sooner than `refill_interval` after the last announce.
    fn refill_soon(&mut self, now: Time) {
        let (Some(next), Some(last)) = (self.next_announce, self.last_announce) else {
            return;
        };
        if self.under_connected() {
            let soon = (last + self.reannounce_after()).max(now);
            if soon < next {
                self.next_announce = Some(soon);
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Inputs: peers.

    /// An event on a neighbour's connection.
    ///
    /// A drain report concerns only the upload side: it skips the scheduler's pass over the
    /// downloads (the costliest part of an input; in the simulator, a fifth of the run time).
    pub fn handle_peer_event(&mut self, now: Time, peer: PeerId, ev: PeerEvent) {
        match ev {
            PeerEvent::Opened => self.on_open(now, peer),
            PeerEvent::Message(data) => {
                if !self.on_message(now, peer, data) {
                    return;
                }
            }
            PeerEvent::Closed => {
                if self.peers.contains_key(&peer) {
                    self.drop_peer(now, peer, DropReason::Closed, false);
                }
            }
            PeerEvent::Drained { buffered } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.send_buffered = buffered;
                }
                self.on_drained(now);
                self.pump_uploads(now);
                return;
            }
        }
        self.schedule(now);
    }

    fn on_open(&mut self, now: Time, peer: PeerId) {
        if self.banned.get(&peer).is_some_and(|u| *u > now) {
            self.transmits.push_back(Transmit::ClosePeer(peer));
            return;
        }
        let initial = self.config.p2p_initial_rate as f64;
        if !self.peers.contains_key(&peer) {
            // In id order, as every insertion (`entry` would append).
            self.insert_peer(
                peer,
                Peer::new(Conn::Connecting { since: now }, false, initial),
            );
        }
        let p = self.peers.get_mut(&peer).expect("inserted above");
        if matches!(p.conn, Conn::Opening { .. } | Conn::Open { .. }) {
            return;
        }
        p.conn = Conn::Opening { since: now };
        let hs = Frame::Handshake(self.handshake);
        self.send_frames(peer, &[hs]);
    }

    /// Handles one message; false when it cannot have changed what the scheduler would do
    /// (its pass is then skipped: most messages are uploads' requests and chunk maps of
    /// segments this node is not fetching).
    fn on_message(&mut self, now: Time, peer: PeerId, data: Bytes) -> bool {
        let Some(p) = self.peers.get(&peer) else {
            return false;
        };
        let max = p
            .session()
            .map_or(wire::DEFAULT_MAX_MESSAGE, |s| s.max_message)
            .max(wire::DEFAULT_MAX_MESSAGE);
        // Accept large messages as soon as we offered them: the remote may switch before our
        // handshake reached it.
        let limit = if self.config.large_messages {
            wire::LARGE_MAX_MESSAGE
        } else {
            max
        };
        let frames = match wire::decode_message(&data, limit) {
            Ok(f) => f,
            Err(e) => {
                self.drop_peer(now, peer, DropReason::Protocol(e.to_string()), false);
                return true;
            }
        };
        let mut moves = false;
        for frame in frames {
            if !self.peers.contains_key(&peer) {
                return true;
            }
            moves = moves || self.moves_downloads(&frame);
            if let Err(reason) = self.on_frame(now, peer, frame) {
                self.drop_peer(now, peer, reason, false);
                return true;
            }
        }
        moves
    }

    /// Whether a frame can change what the scheduler does: anything but the upload side
    /// (requests, cancels) and news of segments this node is not fetching. The scheduler
    /// asks neighbours only for segments it has a download for (a segment newly wanted gets
    /// one in the pass that follows the input that made it wanted). A seed following a VOD
    /// is the exception: what it wants follows what its neighbours announce.
    fn moves_downloads(&self, frame: &Frame) -> bool {
        let fetching = |seg: &SegmentRef| self.downloads.get(seg).is_some_and(|d| !d.is_complete());
        let follows_vod =
            || self.config.role == NodeRole::Seed && self.playlists.values().any(|pl| !pl.live);
        match frame {
            Frame::Request { .. } | Frame::Cancel { .. } => false,
            Frame::Have(_) | Frame::HaveDelta { .. } if follows_vod() => true,
            Frame::Chunks { segment, .. } | Frame::Fetching { segment } => fetching(segment),
            Frame::HaveDelta {
                rendition,
                added,
                removed,
            } => added.iter().chain(removed).any(|&sequence| {
                fetching(&SegmentRef {
                    rendition: *rendition,
                    sequence,
                })
            }),
            Frame::Have(a) => self
                .downloads
                .iter()
                .any(|(s, d)| s.rendition == a.rendition && !d.is_complete()),
            _ => true,
        }
    }

    fn on_frame(&mut self, now: Time, peer: PeerId, frame: Frame) -> Result<(), DropReason> {
        let p = self.peers.get_mut(&peer).expect("checked by the caller");
        if p.session().is_none() {
            let Frame::Handshake(theirs) = frame else {
                return Err(DropReason::Protocol(
                    "first frame is not a handshake".into(),
                ));
            };
            let session = self
                .handshake
                .negotiate(&theirs)
                .map_err(|e| DropReason::Handshake(e.to_string()))?;
            p.caps = session.remote;
            p.seed |= session.remote.contains(Capabilities::SEED);
            p.conn = Conn::Open { session };
            let seed = p.seed;
            self.events.push_back(Event::PeerConnected { peer, seed });
            self.send_availability(peer);
            return Ok(());
        }
        match frame {
            Frame::Handshake(_) => {
                return Err(DropReason::Protocol("second handshake".into()));
            }
            Frame::Have(a) => {
                let set: SeqSet = a.iter().collect();
                p.fetching
                    .retain(|s, _| s.rendition != a.rendition || !set.contains(s.sequence));
                // A segment it no longer lists may be gone with its digest: send the digest
                // again with the next data.
                p.digests_sent
                    .retain(|s| s.rendition != a.rendition || set.contains(s.sequence));
                p.retain_chunk_maps(|s| s.rendition != a.rendition || set.contains(s.sequence));
                *p.have.entry(a.rendition) = set;
            }
            Frame::HaveDelta {
                rendition,
                added,
                removed,
            } => {
                let set = p.have.entry(rendition);
                for s in removed {
                    set.remove(s);
                    let seg = SegmentRef {
                        rendition,
                        sequence: s,
                    };
                    p.digests_sent.remove(&seg);
                    p.chunk_maps.retain(|(x, _)| *x != seg);
                }
                for s in added {
                    set.insert(s);
                    p.fetching.remove(&SegmentRef {
                        rendition,
                        sequence: s,
                    });
                }
                p.retain_chunk_maps(|_| true);
            }
            Frame::Fetching { segment } => {
                // A fetch it never announced (abandoned, failed, or by a node that does not
                // upload) holds nobody back for longer than `fetching_hold`: forget those.
                let hold = self.config.fetching_hold;
                p.fetching.retain(|_, t| now.saturating_since(*t) < hold);
                if p.fetching.len() < 256 {
                    p.fetching.insert(segment, now);
                }
            }
            Frame::Chunks { segment, bitmap } => {
                let chunks = self.digests.get(&segment).map(|d| d.digest().chunk_count());
                p.set_chunk_map(segment, &bitmap, chunks);
            }
            Frame::Digest(d) => self.on_digest(now, Some(peer), *d)?,
            Frame::Request {
                id,
                segment,
                offset,
                length,
            } => self.on_request(now, peer, id, segment, offset, length),
            Frame::Cancel { id } => {
                p.uploads.retain(|j| j.id != id);
                p.uploads_shrunk();
                // The upload it cancelled may have been the one waiting at the head of the
                // queue (for a chunk not here yet): the next may go now.
                self.pump_uploads(now);
            }
            Frame::Data {
                id,
                segment,
                offset,
                payload,
            } => self.on_data(now, peer, id, segment, offset, payload)?,
            Frame::Absent { id, segment } => {
                if let Some(set) = p.have.get_mut(&segment.rendition) {
                    set.remove(segment.sequence);
                }
                self.end_request(peer, id, false);
            }
            Frame::Busy { id, retry_after_ms } => {
                p.busy_until = now + Duration::from_millis(u64::from(retry_after_ms.min(60_000)));
                self.end_request(peer, id, false);
            }
            Frame::Goodbye { .. } => {
                self.drop_peer(now, peer, DropReason::Closed, false);
            }
            Frame::Unknown { .. } => {}
        }
        Ok(())
    }

    fn on_digest(
        &mut self,
        now: Time,
        from: Option<PeerId>,
        d: SignedDigest,
    ) -> Result<(), DropReason> {
        let seg = SegmentRef {
            rendition: d.digest().segment().rendition,
            sequence: d.digest().segment().sequence,
        };
        if d.digest().segment().swarm != self.config.swarm {
            return Err(DropReason::Protocol("digest for another swarm".into()));
        }
        if self.digests.contains_key(&seg) {
            return Ok(());
        }
        // A segment's buffer is sized from its digest: a digest of gigabytes (the geometry
        // allows 16 GiB) would exhaust memory, and an unverified node takes any digest.
        if d.digest().length() > MAX_SEGMENT_BYTES {
            return Err(DropReason::Protocol(format!(
                "digest of a {} byte segment (at most {MAX_SEGMENT_BYTES})",
                d.digest().length()
            )));
        }
        let verified = if self.unverified {
            d.accept_unverified()
        } else {
            match d.verify(&self.trusted) {
                Ok(v) => v,
                Err(_) => {
                    self.stats.integrity_failures += 1;
                    if let Some(peer) = from {
                        self.events
                            .push_back(Event::IntegrityFailure { peer, segment: seg });
                    }
                    return Err(DropReason::Integrity);
                }
            }
        };
        let verified = match &self.pool {
            Some(pool) => pool.intern_digest(seg.in_swarm(self.config.swarm), verified),
            None => verified,
        };
        self.chunk_size = verified.digest().chunk_size();
        if let Some(dl) = self.downloads.get_mut(&seg) {
            dl.set_digest(verified.clone());
            self.on_geometry(seg);
        }
        // A segment fetched from the origin before its digest arrived can now be served, if it
        // matches.
        if let Some(stored) = self.cache.get_mut(&seg)
            && stored.digest.is_none()
            && verified.verify_segment(&stored.data).is_ok()
        {
            stored.digest = Some(d.clone());
            self.announce_have(seg);
        }
        self.digests.insert(seg, verified);
        self.prune_digests();
        let _ = now;
        Ok(())
    }

    fn on_request(
        &mut self,
        now: Time,
        peer: PeerId,
        id: RequestId,
        seg: SegmentRef,
        offset: u64,
        length: u64,
    ) {
        let len = match self.cache.get(&seg).filter(|s| s.digest.is_some()) {
            Some(stored) => stored.data.len() as u64,
            None => match self.downloads.get(&seg) {
                Some(dl) if dl.announced && dl.digest.is_some() => {
                    if dl.done_from(offset, offset.saturating_add(1)).is_none() {
                        // Not here yet: ask again later (or elsewhere) rather than wait on
                        // this node's own source, which may be slow.
                        self.send_frames(
                            peer,
                            &[Frame::Busy {
                                id,
                                retry_after_ms: 500,
                            }],
                        );
                        return;
                    }
                    dl.length.unwrap_or(0)
                }
                _ => {
                    self.send_frames(peer, &[Frame::Absent { id, segment: seg }]);
                    return;
                }
            },
        };
        let end = if length == 0 {
            len
        } else {
            offset.saturating_add(length).min(len)
        };
        // A neighbour occupies a slot while it has uploads queued or data still in its
        // DataChannel's buffer.
        let slot_free = self.upload_slot_free(Some(&peer));
        let p = self.peers.get_mut(&peer).expect("checked by the caller");
        let budget_left = self
            .config
            .upload
            .volume_budget
            .is_none_or(|b| self.stats.p2p_bytes_up < b);
        if !self.config.upload.enabled
            || !budget_left
            || !slot_free
            || p.uploads.len() >= self.config.upload.queue_per_peer
        {
            let retry_after_ms = if budget_left && self.config.upload.enabled {
                self.slot_retry_ms()
            } else {
                60_000
            };
            self.send_frames(peer, &[Frame::Busy { id, retry_after_ms }]);
            return;
        }
        if offset > len {
            self.send_frames(peer, &[Frame::Absent { id, segment: seg }]);
            return;
        }
        if self.defers_duplicate(peer, seg, offset..end) {
            self.stats.duplicates_deferred += 1;
            let retry_after_ms = self.slot_retry_ms();
            self.send_frames(peer, &[Frame::Busy { id, retry_after_ms }]);
            return;
        }
        let p = self.peers.get_mut(&peer).expect("checked by the caller");
        p.uploads.push(UploadJob {
            id,
            seg,
            next: offset,
            end,
        });
        self.pump_uploads(now);
    }

    /// Records that `bytes` of `seg` went out to a neighbour.
    fn note_chunks_out(&mut self, seg: SegmentRef, bytes: Range<u64>, chunk_size: u32) {
        /// Segments remembered: those a viewer uploads at once (its prefetch window).
        const SEGMENTS: usize = 4;
        let chunk_size = u64::from(chunk_size.max(1));
        let i = match self.chunks_out.iter().position(|(s, _)| *s == seg) {
            Some(i) => i,
            None => {
                if self.chunks_out.len() >= SEGMENTS {
                    self.chunks_out.pop_front();
                }
                self.chunks_out.push_back((seg, Vec::new()));
                self.chunks_out.len() - 1
            }
        };
        let map = &mut self.chunks_out[i].1;
        for c in (bytes.start / chunk_size)..bytes.end.div_ceil(chunk_size) {
            let c = c as usize;
            if map.len() <= c / 8 {
                map.resize(c / 8 + 1, 0);
            }
            map[c / 8] |= 1 << (c % 8);
        }
    }

    /// Whether to answer `peer`'s request for `bytes` of `seg` with `Busy`, so that this
    /// node's uplink goes to chunks it has sent to nobody yet ([`NodeConfig::first_copies_first`]).
    /// All of these hold: the uplink is scarce, or the segment is still being produced
    /// (decision 0023); another neighbour's upload can go now (the uplink does not idle for
    /// it); every chunk asked for has gone out before and another
    /// neighbour has announced holding it (the requester has somewhere else to turn); some
    /// chunk of the segment has not gone out at all.
    fn defers_duplicate(&self, peer: PeerId, seg: SegmentRef, bytes: Range<u64>) -> bool {
        if !self.config.first_copies_first || bytes.is_empty() {
            return false;
        }
        let Some((_, out)) = self.chunks_out.iter().find(|(s, _)| *s == seg) else {
            return false;
        };
        let Some(digest) = self
            .digests
            .get(&seg)
            .or_else(|| self.downloads.get(&seg).and_then(|dl| dl.digest.as_ref()))
        else {
            return false;
        };
        let chunk_size = u64::from(digest.digest().chunk_size().max(1));
        let chunks = digest.digest().length().div_ceil(chunk_size) as usize;
        let is_out = |i: usize| out.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0);
        let asked = (bytes.start / chunk_size) as usize..bytes.end.div_ceil(chunk_size) as usize;
        if !asked.clone().all(is_out) || (0..chunks).all(is_out) {
            return false;
        }
        // Another upload that can go now (not one waiting for a chunk still to come: the
        // uplink would idle).
        if !self.peers.iter().any(|(id, p)| {
            *id != peer
                && p.uploads.first().is_some_and(|job| {
                    self.cache.contains(&job.seg)
                        || self
                            .downloads
                            .get(&job.seg)
                            .is_some_and(|dl| dl.done_from(job.next, job.end).is_some())
                })
        }) {
            return false;
        }
        if !self.uplink_is_scarce(seg) && !self.listed_partial(&seg) {
            return false;
        }
        self.peers.iter().any(|(id, p)| {
            *id != peer
                && p.session().is_some()
                && p.has(&seg)
                && asked.clone().all(|i| has_chunk(p.chunk_map(&seg), i))
        })
    }

    fn on_data(
        &mut self,
        now: Time,
        peer: PeerId,
        id: RequestId,
        seg: SegmentRef,
        offset: u64,
        payload: Bytes,
    ) -> Result<(), DropReason> {
        let p = self.peers.get_mut(&peer).expect("checked by the caller");
        let Some(req) = p.inflight.get_mut(&id) else {
            // A reply to a request we cancelled: ignore.
            self.stats.aborted_p2p_bytes += payload.len() as u64;
            return Ok(());
        };
        let mut payload = payload;
        if req.cut && req.seg == seg && offset == req.next && offset < req.end {
            let keep = (req.end - offset).min(payload.len() as u64);
            self.stats.aborted_p2p_bytes += payload.len() as u64 - keep;
            payload.truncate(keep as usize);
        }
        if req.seg != seg || offset != req.next || offset + payload.len() as u64 > req.end {
            return Err(DropReason::Protocol(format!(
                "data for request {} at {offset} does not match it",
                id.0
            )));
        }
        req.next += payload.len() as u64;
        req.last_data = now;
        p.last_data = now;
        req.received += payload.len() as u64;
        let done = req.next == req.end;
        let Some(dl) = self.downloads.get_mut(&seg) else {
            return Ok(());
        };
        if !dl.has_geometry() {
            // It sent the digest earlier and this node has forgotten it since (a digest it
            // never used, pruned): the data cannot be checked. Not a protocol error; ask
            // others, as if it did not have the segment.
            if let Some(set) = p.have.get_mut(&seg.rendition) {
                set.remove(seg.sequence);
            }
            self.end_request(peer, id, false);
            self.send_frames(peer, &[Frame::Cancel { id }]);
            return Ok(());
        }
        let outcome = dl.write(Owner::Peer(peer, id), offset, &payload);
        if outcome.out_of_order {
            return Err(DropReason::Protocol("data out of order".into()));
        }
        self.stats.aborted_p2p_bytes += payload.len() as u64 - outcome.accepted;
        let full = !outcome.full.is_empty();
        for i in outcome.full {
            let ok = dl.verify(i);
            dl.settle(i, ok);
            let r = dl.chunk_range(i);
            if ok {
                dl.p2p_bytes += r.end - r.start;
                self.stats.p2p_bytes_down += r.end - r.start;
            } else {
                self.stats.integrity_failures += 1;
                self.stats.aborted_p2p_bytes += r.end - r.start;
                self.events
                    .push_back(Event::IntegrityFailure { peer, segment: seg });
                return Err(DropReason::Integrity);
            }
        }
        if done {
            self.end_request(peer, id, true);
        }
        if self.downloads.get(&seg).is_some_and(|d| d.is_complete()) {
            self.complete(now, seg);
        } else if full {
            self.on_chunks_done(now, seg);
        }
        Ok(())
    }

    /// The segment's geometry became known: requests in flight for it are clipped to its
    /// length, and the probe request takes the chunks it covers.
    fn on_geometry(&mut self, seg: SegmentRef) {
        let Some(dl) = self.downloads.get_mut(&seg) else {
            return;
        };
        let Some(len) = dl.length else { return };
        let probe = dl.probe;
        for (pid, p) in &mut self.peers {
            for (rid, req) in &mut p.inflight {
                if req.seg != seg {
                    continue;
                }
                req.end = req.end.min(len);
                if probe == Some((*pid, *rid)) && dl.chunk_size > 0 {
                    let first = (req.next / dl.chunk_size) as usize;
                    let last = (req.end.div_ceil(dl.chunk_size) as usize).min(dl.chunks.len());
                    for c in dl.chunks.iter_mut().take(last).skip(first) {
                        if !c.done && c.owner == Owner::Nobody {
                            c.owner = Owner::Peer(*pid, *rid);
                        }
                    }
                }
            }
        }
    }

    /// Ends a request from our side (finished, refused, or cancelled): releases its chunks and
    /// records the neighbour's throughput.
    fn end_request(&mut self, peer: PeerId, id: RequestId, finished: bool) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some(req) = p.inflight.remove(&id) else {
            return;
        };
        if finished {
            p.throughput
                .sample(req.received, req.last_data.saturating_since(req.started));
        }
        if let Some(dl) = self.downloads.get_mut(&req.seg) {
            self.stats.aborted_p2p_bytes += dl.release(Owner::Peer(peer, id));
            if dl.probe == Some((peer, id)) {
                dl.probe = None;
            }
        }
    }

    /// Adds a neighbour, in id order as every insertion (`entry` would append), with room for
    /// exactly the neighbours held: a node holds its neighbours for minutes and adds one at a
    /// time, so growing by one (a copy of a few KiB) is cheap where doubling would leave
    /// room for up to as many again in every node of a large simulation.
    fn insert_peer(&mut self, id: PeerId, peer: Peer) {
        self.peers.insert(id, peer);
    }

    fn drop_peer(&mut self, now: Time, peer: PeerId, reason: DropReason, _quiet: bool) {
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        // Its buffered bytes never leave.
        self.handed -= p.send_buffered.min(self.handed);
        self.refill_soon(now);
        for (id, req) in p.inflight {
            if let Some(dl) = self.downloads.get_mut(&req.seg) {
                self.stats.aborted_p2p_bytes += dl.release(Owner::Peer(peer, id));
                if dl.probe == Some((peer, id)) {
                    dl.probe = None;
                }
            }
        }
        if reason == DropReason::Integrity {
            self.banned.insert(peer, now + self.config.ban_duration);
            if self.banned.len() > 4096 {
                self.banned.retain(|_, until| *until > now);
            }
        }
        if !matches!(reason, DropReason::Closed)
            && let Some(msg) = goodbye(&reason)
        {
            self.send_frames(peer, &[msg]);
        }
        self.transmits.push_back(Transmit::ClosePeer(peer));
        self.events.push_back(Event::PeerDropped { peer, reason });
    }

    // ---------------------------------------------------------------------------------------
    // Inputs: origin.

    /// Bytes of an HTTP response body, at `offset` within the segment (for a ranged request,
    /// the range's start for the first bytes). `total` is the segment's full length if the
    /// response said (Content-Length of a 200, or the size in Content-Range).
    pub fn handle_http_data(
        &mut self,
        now: Time,
        id: FetchId,
        offset: u64,
        total: Option<u64>,
        data: Bytes,
    ) {
        let Some(&seg) = self.fetches.get(&id) else {
            return;
        };
        let Some(dl) = self.downloads.get_mut(&seg) else {
            return;
        };
        if let Some(t) = total
            && dl.length.is_none()
            && dl.chunks.is_empty()
        {
            dl.length = Some(t);
        }
        if let Some(h) = dl.http.iter_mut().find(|h| h.id == id) {
            if h.received == 0 && !h.paced {
                let ttfb = now.saturating_since(h.started);
                self.http_ttfb = (self.http_ttfb * 7 + ttfb * 3) / 10;
            }
            h.received += data.len() as u64;
        }
        if let Some((_, received)) = &mut dl.http_group {
            *received += data.len() as u64;
        }
        let outcome = dl.write(Owner::Http(id), offset, &data);
        dl.http_bytes += outcome.accepted;
        self.stats.http_bytes += data.len() as u64;
        if dl.is_complete() {
            self.finish_http(now, id, seg);
            self.complete(now, seg);
        } else if outcome.accepted > 0 {
            // Origin bytes need no verification: chunks they fill are done at once.
            self.on_chunks_done(now, seg);
        }
        self.schedule(now);
    }

    /// The HTTP response ended: `Ok` when the whole body was delivered.
    pub fn handle_http_done(&mut self, now: Time, id: FetchId, result: Result<(), FetchError>) {
        let Some(seg) = self.fetches.remove(&id) else {
            return;
        };
        let Some(dl) = self.downloads.get_mut(&seg) else {
            return;
        };
        dl.http.retain(|h| h.id != id);
        if dl.http.is_empty()
            && let Some(group) = dl.http_group.take()
            && result.is_ok()
        {
            sample_http(&mut self.http_rate, self.http_ttfb, now, group);
        }
        dl.release(Owner::Http(id));
        if result.is_ok() && dl.chunks.is_empty() && dl.length.is_none() && !dl.buf.is_empty() {
            dl.length = Some(dl.buf.len() as u64);
        }
        let complete = dl.is_complete();
        // With other fetches of the same fallback still under way, they bring the rest.
        // Chunks still with the requests kept at the fallback are theirs to bring; free ones
        // after a whole body mean the origin sent less than asked.
        let incomplete = match &result {
            Ok(()) => {
                !complete && dl.http.is_empty() && (dl.keep_until.is_none() || dl.has_free_chunk())
            }
            Err(_) => true,
        };
        if incomplete {
            // Back off before fetching this segment again: 250 ms, doubling up to 4 s, so a
            // failing origin is not hammered.
            dl.http_failures += 1;
            let backoff = Duration::from_millis(250 << (dl.http_failures - 1).min(4));
            dl.retry_at = Some(now + backoff);
        }
        match result {
            Ok(()) => {
                if complete {
                    self.complete(now, seg);
                }
            }
            Err(error) => {
                // Tell the player only when nothing can save the deadline; otherwise the
                // scheduler retries (another HTTP fetch or peers).
                let waits: Vec<PlayerRequestId> = self
                    .waits
                    .iter()
                    .filter(|w| w.seg == seg && w.deadline <= now)
                    .map(|w| w.id)
                    .collect();
                if !waits.is_empty() {
                    self.waits.retain(|w| !waits.contains(&w.id));
                    for request in waits {
                        self.events.push_back(Event::SegmentFailed {
                            request,
                            segment: seg,
                            error: error.clone(),
                        });
                    }
                }
                self.http_rate.penalize();
            }
        }
        self.schedule(now);
    }

    /// Fetch `id` completed the segment: it is over (the segment's other fetches are
    /// cancelled by `complete`).
    fn finish_http(&mut self, now: Time, id: FetchId, seg: SegmentRef) {
        self.fetches.remove(&id);
        if let Some(dl) = self.downloads.get_mut(&seg) {
            dl.http.retain(|h| h.id != id);
            if let Some(group) = dl.http_group.take() {
                sample_http(&mut self.http_rate, self.http_ttfb, now, group);
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Inputs: the player.

    /// The current media playlist of a rendition.
    pub fn handle_playlist(&mut self, now: Time, playlist: Playlist) {
        // Segments gone from the playlist are no longer scouted: forget them first.
        if let Some(first) = playlist.segments.first() {
            let r = playlist.rendition;
            let oldest = first.sequence;
            self.first_listed
                .retain(|(k, _)| k.rendition != r || k.sequence >= oldest);
        }
        for s in &playlist.segments {
            let seg = SegmentRef {
                rendition: playlist.rendition,
                sequence: s.sequence,
            };
            if let Err(i) = self.first_listed.binary_search_by(|(k, _)| k.cmp(&seg)) {
                self.first_listed.insert(i, (seg, now));
            }
        }
        self.playlists.insert(playlist.rendition, playlist);
        self.schedule(now);
    }

    /// The player's position and buffer.
    pub fn handle_player(&mut self, now: Time, state: PlayerState) {
        // A seek: the playhead jumped back, or forward past what the player was given, or the
        // buffer fell by more than a segment beyond the time gone by (a seek just past the
        // buffer, or into segments this node held). The deadlines of the requests waiting
        // were set from the state before it (a shell reports the player's state now and then,
        // and the player asks for the segments at its new position at once), so they are set
        // again, never later than they were. A buffer one segment short is no seek: a report
        // taken between a delivery and the player's append of it shows that.
        let longest = self
            .playlists
            .get(&state.rendition)
            .and_then(|p| p.segments.iter().map(|s| s.duration).max())
            .unwrap_or(Duration::from_secs(10));
        let seeked = self.player.is_some_and(|(old, at)| {
            let left = old.buffer_ahead.saturating_sub(now.saturating_since(at));
            state.playhead < old.playhead
                || state.playhead > self.first_undelivered(old.playhead).saturating_add(1)
                || state.buffer_ahead + longest < left
        });
        self.player = Some((state, now));
        self.delivered_since_report.clear();
        if seeked {
            for i in 0..self.waits.len() {
                let Some(fresh) = self.deadline_of(now, self.waits[i].seg) else {
                    continue;
                };
                let w = &mut self.waits[i];
                if fresh < w.deadline {
                    w.deadline = fresh;
                    w.urgent |= fresh <= now;
                }
            }
        }
        self.schedule(now);
    }

    /// The player needs a segment. [`Event::SegmentReady`] (or `SegmentFailed`) follows.
    pub fn request_segment(&mut self, now: Time, seg: SegmentRef) -> PlayerRequestId {
        let id = PlayerRequestId(self.next_player_request);
        self.next_player_request += 1;
        // Asked again for what it was given: the player seeked back (or dropped its buffer),
        // and holds nothing from here on. Without this, the segments after it would count as
        // delivered: none prefetched, each fetched from the origin at its request.
        if self.delivered_upto.is_some_and(|d| seg.sequence <= d) {
            self.delivered_upto = seg.sequence.checked_sub(1);
        }
        if let Some(stored) = self.cache.get(&seg) {
            let data = stored.data.clone();
            let sources = SourceBytes {
                http: stored.http_bytes,
                p2p: stored.p2p_bytes,
            };
            self.stats.segments_delivered += 1;
            self.stats.delivered_bytes += data.len() as u64;
            self.note_delivered(seg);
            self.events.push_back(Event::SegmentReady {
                request: id,
                segment: seg,
                data,
                sources,
            });
            return id;
        }
        let deadline = self.deadline_of(now, seg).unwrap_or(now);
        self.waits.push(PlayerWait {
            id,
            seg,
            deadline,
            urgent: deadline <= now,
        });
        self.schedule(now);
        id
    }

    /// The player no longer needs a request.
    pub fn cancel_request(&mut self, now: Time, id: PlayerRequestId) {
        self.waits.retain(|w| w.id != id);
        self.schedule(now);
    }

    /// Timers are due.
    pub fn handle_timeout(&mut self, now: Time) {
        if self.next_announce.is_some_and(|t| t <= now) && self.tracker_connected {
            self.announce(now, None);
        }
        if self.upload_wake.is_some_and(|t| t <= now) {
            self.upload_wake = None;
            self.pump_uploads(now);
        }
        // Connections that never opened, and channels whose handshake never came (each would
        // hold a neighbour's place for ever).
        let stale: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| match p.conn {
                Conn::Connecting { since } | Conn::Opening { since } => {
                    now.saturating_since(since) >= self.config.connect_timeout
                }
                Conn::Open { .. } => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.drop_peer(now, id, DropReason::ConnectTimeout, false);
        }
        // `Fetching` notices past their hold: they no longer hold scouts back, nor say that
        // the neighbour plays the rendition (it may have switched away).
        let hold = self.config.fetching_hold;
        for p in self.peers.values_mut() {
            if p.fetching.len() > 0 {
                p.fetching.retain(|_, t| now.saturating_since(*t) < hold);
            }
        }
        // Stalled requests.
        let mut stalled = Vec::new();
        for (pid, p) in &self.peers {
            let timeout = self.stall_timeout(p);
            for (rid, req) in &p.inflight {
                if now.saturating_since(req.last_data.max(p.last_data)) >= timeout {
                    stalled.push((*pid, *rid));
                }
            }
        }
        for (pid, rid) in stalled {
            if let Some(p) = self.peers.get_mut(&pid) {
                p.throughput.penalize();
            }
            self.cancel_peer_request(pid, rid);
        }
        self.schedule(now);
    }

    /// A digest obtained by the shell (for example published by the origin beside the
    /// segment).
    pub fn handle_digest(&mut self, now: Time, digest: SignedDigest) {
        let _ = self.on_digest(now, None, digest);
        self.schedule(now);
    }

    // ---------------------------------------------------------------------------------------
    // The scheduler.

    /// Measures the uplink. From the moment uploads are queued until the DataChannels' buffers
    /// run empty the uplink is never idle, so the bytes that left between two drain reports
    /// of such a busy period, over the time between them, are its rate.
    fn on_drained(&mut self, now: Time) {
        let buffered: u64 = self.peers.values().map(|p| p.send_buffered).sum();
        let sent = self.handed.saturating_sub(buffered);
        if let Some((since, sent_then)) = self.uplink_busy {
            let elapsed = now.saturating_since(since);
            if elapsed >= UPLINK_MIN_SAMPLE && sent > sent_then {
                self.uplink.sample(sent - sent_then, elapsed);
                self.uplink_busy = Some((now, sent));
            }
        }
        if buffered == 0 {
            self.uplink_busy = None;
        }
    }

    /// Bytes queued in all DataChannels together at most (see
    /// [`NodeConfig::send_queue_time`]).
    fn send_queue_limit(&self) -> u64 {
        let high = self.config.send_buffer_high;
        if !self.uplink.is_proven() {
            return high;
        }
        let bytes = (self.uplink.get() * self.config.send_queue_time.as_secs_f64()) as u64;
        bytes.clamp((2 * self.config.send_buffer_low).min(high), high)
    }

    /// Neighbours served at once: [`UploadConfig::slots`], fewer on a slow uplink. Each
    /// served neighbour gets one chunk in turn, so with k served a chunk takes k chunks' time
    /// to reach its requester; on an uplink near the stream rate, four at once left every
    /// chunk arriving after the segment's HTTP fallback (in the simulator, S0 at u = r: 0.69
    /// against 0.78 with two; at u = r/2 a quarter of the upload thrown away with one, two
    /// thirds with four). So as many as get a chunk each within [`SLOT_CHUNK_TIME`], at least
    /// one.
    fn upload_slots(&self) -> usize {
        let max = self.config.upload.slots;
        if !self.uplink.is_proven() {
            return max;
        }
        let per_slot = f64::from(self.chunk_size) / SLOT_CHUNK_TIME.as_secs_f64();
        ((self.uplink.get() / per_slot) as usize).clamp(1, max.max(1))
    }

    /// Whether this node's measured uplink is under [`SCARCE_UPLINK`] times `seg`'s stream
    /// rate: a holder the swarm needs busy all the time if peers are to keep up with the
    /// stream.
    fn uplink_is_scarce(&self, seg: SegmentRef) -> bool {
        if !self.uplink.is_proven() {
            return false;
        }
        let Some(duration) = self
            .playlists
            .get(&seg.rendition)
            .and_then(|pl| pl.segments.iter().find(|s| s.sequence == seg.sequence))
            .map(|s| s.duration.as_secs_f64())
            .filter(|d| *d > 0.0)
        else {
            return false;
        };
        let length = self
            .downloads
            .get(&seg)
            .and_then(|d| d.length)
            .unwrap_or(self.segment_size);
        self.uplink.get() < SCARCE_UPLINK * length as f64 / duration
    }

    /// Whether the playlist lists `seg` by its parts only: it is still being produced.
    fn listed_partial(&self, seg: &SegmentRef) -> bool {
        self.playlists
            .get(&seg.rendition)
            .and_then(|p| p.segments.iter().rev().find(|s| s.sequence == seg.sequence))
            .is_some_and(|s| s.partial)
    }

    /// Whether a neighbour (other than `besides`) would get an upload slot now. A neighbour
    /// occupies a slot while it has uploads queued or more than a chunk (or the low-water
    /// mark, if larger) still in its DataChannel's buffer, with an allowance of two frame
    /// headers ([`wire::DATA_OVERHEAD`]). The count is the last drain report's figure, in the
    /// channel's units (control frames and headers still queued included), plus the chunks
    /// handed since: without the allowance, the few bytes of control frames a report left
    /// with the last chunk counted as more than a chunk, every request was turned away while
    /// a slow uplink's last chunk left, and the uplink then idled until the neighbours asked
    /// again. (The whole low-water mark as the allowance cost S3 half a point.)
    fn upload_slot_free(&self, besides: Option<&PeerId>) -> bool {
        let allowance = 2 * wire::DATA_OVERHEAD as u64;
        let low = self
            .config
            .send_buffer_low
            .max(u64::from(self.chunk_size) + allowance);
        let serving = self
            .peers
            .iter()
            .filter(|(id, p)| {
                Some(*id) != besides && (!p.uploads.is_empty() || p.send_buffered > low)
            })
            .count();
        serving < self.upload_slots()
    }

    /// When a neighbour turned away for want of a free upload slot should ask again: about
    /// when one frees, the time a chunk takes to leave at the measured uplink (175 ms for
    /// 64 KiB at 3 Mbit/s), between [`SLOT_RETRY_MIN`] and [`SLOT_RETRY_MAX`]. A fixed half
    /// second left the uplink of a holder near the stream rate idle while the neighbours it
    /// had turned away waited it out.
    fn slot_retry_ms(&self) -> u32 {
        let secs = if self.uplink.is_proven() {
            f64::from(self.chunk_size) / self.uplink.get().max(1.0)
        } else {
            SLOT_RETRY_MAX.as_secs_f64()
        };
        let t = Duration::from_secs_f64(secs.min(SLOT_RETRY_MAX.as_secs_f64()))
            .clamp(SLOT_RETRY_MIN, SLOT_RETRY_MAX);
        t.as_millis() as u32
    }

    /// How long requests to `p` may receive nothing before they are given up: the configured
    /// timeout, or longer for a neighbour measured slow. A holder that shares a slow uplink
    /// between several requesters sends each one a chunk every few seconds; giving up on it
    /// throws away what it has queued for us, and the request is reissued to a holder no
    /// faster. So the timeout is at least [`STALL_CHUNKS`] chunks at the neighbour's measured
    /// rate (a stall halves that rate, so repeated stalls lengthen it), at most
    /// [`STALL_MAX_FACTOR`] times the configured one. Deadlines do not depend on it: the
    /// HTTP fallback takes over a segment that peers cannot finish in time.
    fn stall_timeout(&self, p: &Peer) -> Duration {
        let base = self.config.request_stall_timeout;
        if !p.throughput.is_proven() {
            return base;
        }
        let chunk_secs = f64::from(self.chunk_size) / p.throughput.get().max(1.0);
        Duration::from_secs_f64(STALL_CHUNKS * chunk_secs).clamp(base, base * STALL_MAX_FACTOR)
    }

    fn deadline_of(&self, now: Time, seg: SegmentRef) -> Option<Time> {
        let (state, at) = self.player?;
        let playlist = self.playlists.get(&seg.rendition)?;
        let first_missing = self.first_undelivered(state.playhead);
        if seg.sequence < first_missing {
            return Some(now);
        }
        // The player plays out the buffer it reported, then the segments this node delivered
        // since (not in that buffer: counting them as played put the next segment's deadline
        // a segment early, and in LL-HLS, where it is listed as the last one comes in, viewers
        // fetched it whole from the origin at once; decision 0023), then those still to come.
        // Only segments actually delivered since count: the player may hold segments from
        // elsewhere, already in its buffer.
        let mut played_out = at + state.buffer_ahead;
        let mut t = Duration::ZERO;
        for s in &playlist.segments {
            if s.sequence >= seg.sequence {
                break;
            }
            if s.sequence >= first_missing {
                t += s.duration;
            } else if s.sequence >= state.playhead
                && self.delivered_since_report.contains(&s.sequence)
            {
                played_out += s.duration;
            }
        }
        Some(played_out.max(now) + t)
    }

    /// The first segment at or after the playhead the player does not have yet (per what this
    /// node delivered or holds).
    fn note_delivered(&mut self, seg: SegmentRef) {
        if self.delivered_since_report.len() < 16 {
            self.delivered_since_report.push(seg.sequence);
        }
        let d = self.delivered_upto.get_or_insert(seg.sequence);
        // A jump back is a seek: start counting again from there.
        if seg.sequence > *d || seg.sequence + 1_000 < *d {
            *d = seg.sequence;
        }
    }

    fn first_undelivered(&self, playhead: u64) -> u64 {
        match self.delivered_upto {
            // The player holds what was delivered after the playhead (a jump back, or far
            // ahead, means it seeked: start from the playhead).
            Some(d) if d >= playhead && d - playhead <= 1_000 => d + 1,
            _ => playhead,
        }
    }

    /// What a seed fetches of a VOD: viewers play on from where they are, so for each open
    /// neighbour the [`VOD_SEED_AHEAD`] listed segments after the newest it has announced in
    /// this rendition (the first ones of the stream for a neighbour that has nothing yet in
    /// any rendition), in order.
    fn vod_seed_targets(&self, pl: &Playlist) -> Vec<SegmentRef> {
        let listed = |seq: u64| {
            pl.segments
                .binary_search_by_key(&seq, |s| s.sequence)
                .is_ok()
        };
        let first = pl.segments.first().map(|s| s.sequence);
        let mut targets = BTreeSet::new();
        for p in self.peers.values() {
            if p.seed || p.session().is_none() {
                continue;
            }
            let from = match p.have.get(&pl.rendition).and_then(|set| set.last()) {
                Some(newest) => newest.saturating_add(1),
                // It plays another rendition: nothing of this one for it (after a switch to
                // this one, its first segment here starts it).
                None if p.have.0.iter().any(|(_, set)| !set.is_empty()) => continue,
                None => match first {
                    Some(f) => f,
                    None => continue,
                },
            };
            for seq in from..from.saturating_add(VOD_SEED_AHEAD) {
                if listed(seq) {
                    targets.insert(seq);
                }
            }
        }
        targets
            .into_iter()
            .map(|sequence| SegmentRef {
                rendition: pl.rendition,
                sequence,
            })
            .collect()
    }

    /// The segments wanted now, with their deadlines (None: no deadline, prefetch only).
    fn wanted(&self, now: Time) -> Vec<(SegmentRef, Option<Time>)> {
        let mut out: Vec<(SegmentRef, Option<Time>)> = Vec::new();
        for w in &self.waits {
            if !out.iter().any(|(s, _)| *s == w.seg) {
                out.push((w.seg, Some(w.deadline)));
            }
        }
        // Prefetch only what fits in three quarters of the memory budget (at least one
        // segment), or segments would evict each other in a loop.
        let room = self.config.cache_bytes / 4 * 3;
        let mut bytes = 0u64;
        let mut fits = |seg: &SegmentRef| {
            let size = self.size_of(seg);
            if bytes > 0 && bytes + size > room {
                return false;
            }
            bytes += size;
            true
        };
        match self.config.role {
            NodeRole::Seed => {
                // Seeds want the newest listed live segments (what viewers need next); in a
                // VOD, the few segments just ahead of where each neighbour is.
                for pl in self.playlists.values() {
                    if !pl.live {
                        for seg in self.vod_seed_targets(pl) {
                            if !fits(&seg) {
                                break;
                            }
                            if !self.cache.contains(&seg) && !out.iter().any(|(x, _)| *x == seg) {
                                out.push((seg, None));
                            }
                        }
                        continue;
                    }
                    for s in pl.segments.iter().rev().take(8) {
                        let seg = SegmentRef {
                            rendition: pl.rendition,
                            sequence: s.sequence,
                        };
                        if !fits(&seg) {
                            break;
                        }
                        if !self.cache.contains(&seg) && !out.iter().any(|(x, _)| *x == seg) {
                            out.push((seg, None));
                        }
                    }
                }
            }
            NodeRole::Viewer => {
                if let Some((state, _)) = self.player
                    && let Some(pl) = self.playlists.get(&state.rendition)
                {
                    // From the playhead: what is cached ahead of it counts against the room.
                    let start = self.first_undelivered(state.playhead);
                    let mut media = Duration::ZERO;
                    for s in pl.segments.iter().filter(|s| s.sequence >= state.playhead) {
                        let seg = SegmentRef {
                            rendition: pl.rendition,
                            sequence: s.sequence,
                        };
                        if !fits(&seg) {
                            break;
                        }
                        if s.sequence < start {
                            continue;
                        }
                        if media > self.config.prefetch_window {
                            break;
                        }
                        media += s.duration;
                        if !self.cache.contains(&seg) && !out.iter().any(|(x, _)| *x == seg) {
                            out.push((seg, self.deadline_of(now, seg)));
                        }
                    }
                }
            }
        }
        out.sort_by_key(|(s, d)| (d.is_none(), *d, s.sequence));
        out
    }

    fn schedule(&mut self, now: Time) {
        let wanted = self.wanted(now);
        // Forget downloads nobody wants any more (cancel their fetches).
        // `wanted` is short (a prefetch window): a scan beats building a set on every input.
        let is_stale = |s: &SegmentRef| !wanted.iter().any(|(w, _)| w == s);
        if self.downloads.keys().any(is_stale) {
            let stale: Vec<SegmentRef> = self
                .downloads
                .keys()
                .filter(|s| is_stale(s))
                .copied()
                .collect();
            let mut withdrawn: BTreeMap<RenditionId, Vec<u64>> = BTreeMap::new();
            for seg in stale {
                if self.abandon(seg) {
                    withdrawn
                        .entry(seg.rendition)
                        .or_default()
                        .push(seg.sequence);
                }
            }
            // Announced while they arrived: withdraw them, or neighbours would go on asking
            // for chunks that will never come; requests waiting for them get `Absent`. One
            // message for them all (a seek abandons a window of segments at once).
            if !withdrawn.is_empty() {
                let frames: Vec<Frame> = withdrawn
                    .into_iter()
                    .map(|(rendition, mut removed)| {
                        removed.sort_unstable();
                        Frame::HaveDelta {
                            rendition,
                            added: Vec::new(),
                            removed,
                        }
                    })
                    .collect();
                self.broadcast(&frames);
                self.pump_uploads(now);
            }
        }

        let mut wake: Option<Time> = None;
        let mut note = |t: Time| {
            let t = t.max(now + Duration::from_millis(1));
            wake = Some(wake.map_or(t, |w: Time| w.min(t)));
        };

        for (seg, deadline) in wanted {
            if !self.downloads.contains_key(&seg) {
                let mut dl = Download::new();
                dl.rotation = self.rng.random_range(0..crate::integrity::MAX_CHUNKS);
                dl.wanted_since = now;
                if let Some(d) = self.digests.get(&seg) {
                    dl.set_digest(d.clone());
                }
                self.downloads.insert(seg, Box::new(dl));
            }
            let dl = &self.downloads[&seg];
            if dl.is_complete() {
                continue;
            }
            let http_allowed = dl.retry_at.is_none_or(|t| t <= now);
            if let Some(until) = dl.keep_until {
                // The deadline fallback is under way, with requests to neighbours kept.
                if now >= until {
                    // Those still going are late: HTTP takes their chunks too.
                    self.cancel_segment_requests(seg);
                    self.downloads.get_mut(&seg).expect("listed").keep_until = None;
                } else {
                    note(until);
                }
                let dl = &self.downloads[&seg];
                if dl.has_free_chunk() {
                    if http_allowed {
                        let runs = dl.runs(usize::MAX, |c| !c.done && c.owner == Owner::Nobody);
                        self.fetch_over_http(now, seg, Some(runs), false);
                    } else {
                        note(dl.retry_at.expect("set when not allowed"));
                    }
                }
                continue;
            }
            if !dl.http.is_empty() {
                continue;
            }
            let missing = dl.missing_bytes(self.segment_size);
            let mut switch_at = None;
            // Due for HTTP, behind an earlier segment's fetch: only peers may be asked.
            let mut http_queued = false;
            if let Some(deadline) = deadline {
                // The other HTTP fetches under way share the downlink with this one.
                let backlog = self.http_backlog(seg);
                let switch =
                    deadline - (self.http_estimate(missing + backlog) + self.config.http_margin);
                switch_at = Some(switch);
                let queued = self.config.role == NodeRole::Viewer && self.earlier_http_busy(seg);
                match (now >= switch, http_allowed) {
                    (true, true) if !queued => {
                        self.start_http(now, seg, Some(deadline));
                        if let Some(until) = self.downloads[&seg].keep_until {
                            note(until);
                        }
                        continue;
                    }
                    // Peers may still bring chunks meanwhile.
                    (true, true) => {
                        http_queued = true;
                        note(now + MIN_RECHECK);
                    }
                    (true, false) => note(dl.retry_at.expect("set when not allowed")),
                    (false, _) => note(switch),
                }
            }
            if !self.config.download_from_peers {
                if http_allowed {
                    self.start_http(now, seg, None);
                } else {
                    note(dl.retry_at.expect("set when not allowed"));
                }
                continue;
            }
            // Listing the holders costs a set lookup per neighbour: only when there is
            // something to ask them for (the geometry, or a chunk nobody is fetching).
            // Otherwise knowing that one exists decides the same branch.
            let wants_requests = if dl.has_geometry() {
                dl.has_free_chunk()
            } else {
                dl.probe.is_none()
            };
            if wants_requests {
                let holders = self.holders(now, &seg);
                if !holders.is_empty() {
                    self.request_from_peers(now, seg, &holders, switch_at);
                    note(now + self.config.request_stall_timeout);
                    continue;
                }
            } else if dl
                .peer_owner()
                .and_then(|id| self.peers.get(&id))
                .is_some_and(|p| p.can_serve(now, &seg))
                || self.peers.values().any(|p| p.can_serve(now, &seg))
            {
                note(now + self.config.request_stall_timeout);
                continue;
            }
            if http_queued {
                continue;
            }
            // Neighbours that have it but are busy: wait for them rather than fetch from the
            // origin (the deadline still rules).
            let busy_until = self
                .peers
                .values()
                .filter(|p| {
                    p.session().is_some() && p.caps.contains(Capabilities::UPLOAD) && p.has(&seg)
                })
                .map(|p| p.busy_until)
                .min();
            if let Some(t) = busy_until {
                note(t);
                continue;
            }
            if !http_allowed {
                note(self.downloads[&seg].retry_at.expect("set when not allowed"));
                continue;
            }
            if self.config.role == NodeRole::Seed {
                self.start_http(now, seg, None);
                continue;
            }
            let held_back = self.peers.values().any(|p| {
                p.fetching
                    .get(&seg)
                    .is_some_and(|t| now.saturating_since(*t) < self.config.fetching_hold)
            });
            if held_back {
                note(now + MIN_RECHECK.max(self.config.fetching_hold / 4));
                continue;
            }
            // Nobody has it: scout after a random delay.
            let scout_at = match self.downloads[&seg].scout_at {
                Some(t) => t,
                None => {
                    let spread = self.config.scout_spread.as_micros() as u64;
                    // A first scout goes within an eighth of the spread of listing the
                    // segment: a neighbour may have listed it up to a playlist reload
                    // earlier, and one that plays close to the live edge may already be near
                    // its deadline; the short jitter keeps first scouts whose views of the
                    // neighbourhood differ from fetching at the same instant (the first one's
                    // `Fetching` holds the others back). The others wait one to two spreads,
                    // then step in for a scout that is gone. A segment listed before this node
                    // wanted it (a viewer further behind the live edge than its prefetch
                    // window) counts from when it became wanted: its neighbours come to want
                    // it at their own times as well, and counted from the listing every one
                    // of them would be past its turn and fetch it at once.
                    let first = self.is_first_scout(&seg);
                    let mut delay = match (spread, first) {
                        (0, _) => 0,
                        (_, true) => self.rng.random_range(0..spread.div_ceil(8)),
                        (_, false) => spread + self.rng.random_range(0..spread),
                    };
                    if self.peers.values().any(|p| p.seed && p.session().is_some()) {
                        delay += spread;
                    }
                    let from = self
                        .listed_at(&seg)
                        .unwrap_or(now)
                        .max(self.downloads[&seg].wanted_since)
                        .max(self.started + self.config.join_grace);
                    // Only while the fetch would still start before the deadline fallback's
                    // time: after it, the fetch would be a fallback, which does not hold the
                    // neighbours back.
                    let wait = self.config.scout_outranked_wait.as_micros() as u64;
                    if first
                        && switch_at.is_none_or(|s| from + Duration::from_micros(delay + wait) < s)
                        && self.outranked_elsewhere(&seg)
                    {
                        delay += wait;
                    }
                    let mut t = from + Duration::from_micros(delay);
                    if let (false, Some(deadline)) = (first, deadline) {
                        let earliest = deadline - self.config.scout_step_in_lead;
                        if earliest > t {
                            // Neighbours that play at the same latency get there together:
                            // they keep their spread.
                            let jitter = self.rng.random_range(0..spread.max(1));
                            t = earliest + Duration::from_micros(jitter);
                        }
                    }
                    self.downloads
                        .get_mut(&seg)
                        .expect("inserted above")
                        .scout_at = Some(t);
                    t
                }
            };
            if now >= scout_at {
                self.start_http(now, seg, None);
                self.broadcast(&[Frame::Fetching { segment: seg }]);
            } else {
                note(scout_at);
            }
        }
        // Stall checks for requests in flight.
        for p in self.peers.values() {
            // The earliest data among its requests decides: one timeout per peer.
            if let Some(last) = p.inflight.values().map(|r| r.last_data).min() {
                note(last.max(p.last_data) + self.stall_timeout(p));
            }
            if let Conn::Connecting { since } | Conn::Opening { since } = p.conn {
                note(since + self.config.connect_timeout);
            }
        }
        self.wake = wake;
    }

    /// A segment's size: known when cached or digested, else the average of those seen.
    fn size_of(&self, seg: &SegmentRef) -> u64 {
        if let Some(stored) = self.cache.get(seg) {
            return stored.data.len() as u64;
        }
        if let Some(d) = self.digests.get(seg) {
            return d.digest().length();
        }
        self.segment_size
    }

    /// Whether this node is one of `seg`'s first scouts ([`NodeConfig::scouts`]). Alone, or
    /// not uploading among nobody who does, it is.
    ///
    /// When every peer of the swarm is a neighbour (the tracker's count), all members see
    /// the same neighbourhood, and the role rotates through it in peer id order: segment `s`
    /// falls to position `s mod members`, so each fetches an equal share. Otherwise views
    /// differ from node to node, and a rotation modulo different counts would make
    /// neighbours disagree; there the members rank by [`crate::rendezvous::scout_weight`],
    /// a per-segment order every node computes alike, so two neighbours never both think
    /// they come first.
    fn is_first_scout(&self, seg: &SegmentRef) -> bool {
        let me = &self.config.peer_id;
        let open = self
            .peers
            .values()
            .filter(|p| p.session().is_some())
            .count() as u64;
        let full_mesh = self.swarm_size > 0 && open + 1 >= self.swarm_size;
        let my_weight = (!full_mesh).then(|| crate::rendezvous::scout_weight(seg, me));
        let mut members = 0u64;
        let mut ahead = 0u64;
        for (id, p) in &self.peers {
            if p.session().is_some() && Self::scout_member(p, seg) {
                members += 1;
                ahead += u64::from(match my_weight {
                    None => id < me,
                    Some(w) => crate::rendezvous::scout_weight(seg, id) > w,
                });
            }
        }
        if !self.config.upload.enabled {
            return members == 0;
        }
        let scouts = self.config.scouts.max(1) as u64;
        if my_weight.is_some() {
            return ahead < scouts;
        }
        members += 1;
        let turn = seg.sequence % members;
        // Positions turn, turn + 1, …, turn + scouts - 1, modulo `members`.
        (ahead + members - turn) % members < scouts.min(members)
    }

    /// Whether a member of the swarm this node has no open connection to likely outranks it
    /// as `seg`'s scout (see [`NodeConfig::scout_outranked_wait`]). The tracker's count of
    /// the swarm also holds seeds, peers that do not upload and viewers of other renditions:
    /// the members among the peers it cannot see are taken to be in the same proportion as
    /// among its open neighbours. Never with no member open (nothing would bring it the
    /// chunks) or when it does not upload (it is first only when no member is open).
    fn outranked_elsewhere(&self, seg: &SegmentRef) -> bool {
        if !self.config.upload.enabled {
            return false;
        }
        let (mut open, mut members) = (0u64, 0u64);
        for p in self.peers.values().filter(|p| p.session().is_some()) {
            open += 1;
            members += u64::from(Self::scout_member(p, seg));
        }
        let unseen = self.swarm_size.saturating_sub(open + 1);
        if members == 0 || unseen == 0 {
            return false;
        }
        let unseen_members = unseen as f64 * members as f64 / open as f64;
        let weight = crate::rendezvous::scout_weight(seg, &self.config.peer_id);
        let above = 1.0 - weight as f64 / u64::MAX as f64;
        unseen_members * above >= OUTRANKED_BY
    }

    /// Whether neighbour `p` (open) is a member of `seg`'s neighbourhood for scouting: a
    /// viewer that uploads and plays the rendition.
    fn scout_member(p: &Peer, seg: &SegmentRef) -> bool {
        !p.seed && p.caps.contains(Capabilities::UPLOAD) && p.have.get(&seg.rendition).is_some()
    }

    fn listed_at(&self, seg: &SegmentRef) -> Option<Time> {
        let i = self
            .first_listed
            .binary_search_by(|(k, _)| k.cmp(seg))
            .ok()?;
        Some(self.first_listed[i].1)
    }

    /// Bytes still to come over HTTP for segments that play after `seg` (or in another
    /// rendition): a fallback for `seg` shares the downlink with them (in the simulator's S3 a
    /// viewer whose stream rate was near its downlink stalled when a deadline fallback started
    /// while it fetched a later segment from the origin). Earlier segments are left out:
    /// counting them would move every later segment's fallback earlier while one runs, and
    /// each of those the next.
    fn http_backlog(&self, seg: SegmentRef) -> u64 {
        self.downloads
            .iter()
            .filter(|(s, d)| {
                (s.rendition != seg.rendition || s.sequence > seg.sequence) && !d.http.is_empty()
            })
            .map(|(_, d)| d.missing_bytes(self.segment_size))
            .sum()
    }

    /// Whether an HTTP fetch of an earlier segment of `seg`'s rendition has more than a time
    /// to first byte still to go. A fetch for `seg` started now would share the downlink
    /// with it and delay the segment that plays first; it starts when that one is nearly
    /// done (in the simulator's S4, fetching a viewer's second segment alongside its first
    /// took startup p95 from 1.2 s to 2.2 s once HTTP bodies shared the downlink).
    fn earlier_http_busy(&self, seg: SegmentRef) -> bool {
        let rate = self.http_rate.get().max(1.0);
        self.downloads.iter().any(|(s, d)| {
            s.rendition == seg.rendition
                && s.sequence < seg.sequence
                && !d.http.is_empty()
                && Duration::from_secs_f64(d.missing_bytes(self.segment_size) as f64 / rate)
                    > self.http_ttfb
        })
    }

    fn http_estimate(&self, bytes: u64) -> Duration {
        let rate = self.http_rate.get().max(1.0);
        self.http_ttfb + Duration::from_secs_f64(bytes as f64 / rate)
    }

    /// Neighbours that have `seg`, are not busy, and have a free request slot.
    fn holders(&self, now: Time, seg: &SegmentRef) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.can_serve(now, seg))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Asks `holders` for chunks of `seg` nobody is fetching. `until` is when HTTP takes over
    /// what is still missing (the deadline fallback): a request the holder would not finish
    /// by then is not sent, as its bytes would arrive after the origin's and be thrown away
    /// (with a supply below the demand, that was a third of all uploaded bytes).
    fn request_from_peers(
        &mut self,
        now: Time,
        seg: SegmentRef,
        holders: &[PeerId],
        until: Option<Time>,
    ) {
        let cap = self.config.requests_per_peer;
        let (most, chunk_size) = (self.config.request_chunks, self.chunk_size);
        let chunks_for = move |p: &Peer| request_chunks_for(p, most, chunk_size);
        let fits = |p: &Peer| {
            let Some(until) = until else {
                return true;
            };
            if !p.throughput.is_proven() {
                return true;
            }
            let request_len = chunks_for(p) as u64 * u64::from(chunk_size);
            let queued: u64 =
                p.inflight.values().map(|r| r.end - r.next).sum::<u64>() + request_len;
            now + Duration::from_secs_f64(queued as f64 / p.throughput.get().max(1.0)) <= until
        };
        let dl = self.downloads.get(&seg).expect("caller inserted it");
        if !dl.has_geometry() {
            if dl.probe.is_some() {
                return;
            }
            // Learn the geometry: ask one neighbour for the first block; its digest comes first.
            let free: Vec<PeerId> = holders
                .iter()
                .filter(|id| self.peers[*id].inflight.len() < cap)
                .copied()
                .collect();
            let Some(peer) = self.pick_peer(&free) else {
                return;
            };
            let len = self.config.request_chunks as u64 * u64::from(self.chunk_size);
            let id = self.send_request(now, peer, seg, 0, len);
            self.downloads.get_mut(&seg).expect("exists").probe = Some((peer, id));
            return;
        }
        // The holders with a free request slot and a chunk nobody is fetching.
        let n = dl.chunks.len();
        let mut free: Vec<PeerId> = holders
            .iter()
            .filter(|id| {
                let p = &self.peers[*id];
                let map = p.chunk_map(&seg);
                p.inflight.len() < cap
                    && fits(p)
                    && (0..n).any(|i| dl.is_free(i) && has_chunk(map, i))
            })
            .copied()
            .collect();
        if free.is_empty() {
            self.steal_queued(now, seg, holders, &fits);
            return;
        }
        // Rarest first: how many neighbours hold each chunk (those that announced the segment
        // without a chunk map hold all of it).
        let mut holding = vec![0u32; n];
        for p in self.peers.values() {
            if p.session().is_some() && p.has(&seg) {
                let map = p.chunk_map(&seg);
                for (i, h) in holding.iter_mut().enumerate() {
                    *h += u32::from(has_chunk(map, i));
                }
            }
        }
        let rotation = dl.rotation % n.max(1);
        while let Some(peer) = self.pick_peer(&free) {
            let map = self.peers[&peer].chunk_map(&seg);
            let dl = &self.downloads[&seg];
            let wanted = |i: usize| dl.is_free(i) && has_chunk(map, i);
            // The rarest chunk it holds that nobody is fetching; among equals, the first from
            // this download's own starting point.
            let start = (0..n)
                .map(|k| (k + rotation) % n)
                .filter(|i| wanted(*i))
                .min_by_key(|i| holding[*i]);
            let Some(start) = start else {
                free.retain(|id| *id != peer);
                continue;
            };
            let chunks = chunks_for(&self.peers[&peer]);
            let mut end = start + 1;
            while end < n && end - start < chunks && wanted(end) {
                end += 1;
            }
            let id = RequestId(self.next_request_id);
            let dl = self.downloads.get_mut(&seg).expect("exists");
            let range = dl.assign(start..end, Owner::Peer(peer, id));
            let sent = self.send_request(now, peer, seg, range.start, range.end - range.start);
            debug_assert_eq!(sent, id);
            let p = &self.peers[&peer];
            if p.inflight.len() >= cap || !fits(p) {
                free.retain(|id| *id != peer);
            }
        }
        self.steal_queued(now, seg, holders, &fits);
    }

    /// Gives a holder that has nothing of ours to send a request queued at another holder
    /// behind one of our own: the idle uplink starts on it now instead of after the other
    /// holder's current request. Only a request that has received nothing moves (nothing
    /// is lost but its place in the other holder's queue), and only to a holder measured at
    /// least as fast that would finish it [`STEAL_MARGIN`] times sooner, and only from behind
    /// [`STEAL_BEHIND_CHUNKS`] chunks' worth of our bytes not received yet (decision 0014).
    /// A slow holder's send queue holds about a chunk (see [`NodeConfig::send_queue_time`]),
    /// so such a request is still in its upload queue, not in its DataChannel. Behind less,
    /// its chunk may already be in the channel, the holder having handed it over as the last
    /// chunk ahead of it left: its bytes then came anyway and were thrown away (in the
    /// simulator's S0 at u = r/2, half of all the bytes thrown away; at u = r, N = 50, they
    /// cost 0.7 points of offload). A fast holder's queue can hold several chunks, so a move
    /// from one may still waste what it had queued; the speed condition makes such moves
    /// rare.
    fn steal_queued(
        &mut self,
        now: Time,
        seg: SegmentRef,
        holders: &[PeerId],
        fits: &dyn Fn(&Peer) -> bool,
    ) {
        let Some(dl) = self.downloads.get(&seg) else {
            return;
        };
        let chunk_size = dl.chunk_size.max(1);
        let n = dl.chunks.len();
        for h in holders {
            let p = &self.peers[h];
            if p.inflight.len() > 0 || !p.throughput.is_proven() || !fits(p) {
                continue;
            }
            let rate_h = p.throughput.get().max(1.0);
            let map = p.chunk_map(&seg);
            // The request with the most of ours ahead of it at its holder.
            let mut best: Option<(PeerId, RequestId, Range<usize>, u64)> = None;
            for (a, q) in &self.peers {
                if a == h || q.inflight.len() < 2 || !q.throughput.is_proven() {
                    continue;
                }
                let rate_a = q.throughput.get().max(1.0);
                if rate_h < rate_a {
                    continue;
                }
                // A holder serves our requests in the order sent (ids increase).
                let mut ahead = 0;
                for (id, r) in q.inflight.iter() {
                    let (before, len) = (ahead, r.end - r.next);
                    ahead += len;
                    if r.seg != seg || r.received > 0 || before < STEAL_BEHIND_CHUNKS * chunk_size {
                        continue;
                    }
                    let via_a = (before + len) as f64 / rate_a;
                    if len as f64 / rate_h * STEAL_MARGIN > via_a {
                        continue;
                    }
                    let chunks = (r.next / chunk_size) as usize
                        ..(r.end.div_ceil(chunk_size) as usize).min(n);
                    if chunks.is_empty() || !chunks.clone().all(|i| has_chunk(map, i)) {
                        continue;
                    }
                    if best.as_ref().is_none_or(|b| before > b.3) {
                        best = Some((*a, *id, chunks, before));
                    }
                }
            }
            let Some((a, id, chunks, _)) = best else {
                continue;
            };
            self.cancel_peer_request(a, id);
            let dl = self.downloads.get_mut(&seg).expect("exists");
            if !chunks.clone().all(|i| dl.is_free(i)) {
                continue;
            }
            let range = dl.assign(chunks, Owner::Peer(*h, RequestId(self.next_request_id)));
            self.send_request(now, *h, seg, range.start, range.end - range.start);
        }
    }

    fn pick_peer(&mut self, candidates: &[PeerId]) -> Option<PeerId> {
        if candidates.is_empty() {
            return None;
        }
        let best = candidates
            .iter()
            .map(|id| &self.peers[id].throughput)
            .filter(|t| t.is_proven())
            .map(Throughput::get)
            .fold(self.config.p2p_initial_rate as f64, f64::max);
        let weight = |id: &PeerId| {
            let t = &self.peers[id].throughput;
            if t.is_proven() {
                t.get().max(best * 0.05)
            } else {
                best
            }
        };
        let total: f64 = candidates.iter().map(weight).sum();
        let mut x = self.rng.random::<f64>() * total;
        for id in candidates {
            x -= weight(id);
            if x <= 0.0 {
                return Some(*id);
            }
        }
        candidates.last().copied()
    }

    fn send_request(
        &mut self,
        now: Time,
        peer: PeerId,
        seg: SegmentRef,
        offset: u64,
        length: u64,
    ) -> RequestId {
        let id = RequestId(self.next_request_id);
        self.next_request_id = self.next_request_id.wrapping_add(1);
        let p = self.peers.get_mut(&peer).expect("holder exists");
        p.inflight.insert(
            id,
            Inflight {
                seg,
                next: offset,
                end: offset + length,
                last_data: now,
                started: now,
                received: 0,
                cut: false,
            },
        );
        self.send_frames(
            peer,
            &[Frame::Request {
                id,
                segment: seg,
                offset,
                length,
            }],
        );
        id
    }

    fn cancel_peer_request(&mut self, peer: PeerId, id: RequestId) {
        let had = self
            .peers
            .get(&peer)
            .is_some_and(|p| p.inflight.contains_key(&id));
        if had {
            self.end_request(peer, id, false);
            self.send_frames(peer, &[Frame::Cancel { id }]);
        }
    }

    /// Cancels every request for `seg` to neighbours.
    fn cancel_segment_requests(&mut self, seg: SegmentRef) {
        let reqs: Vec<(PeerId, RequestId)> = self
            .peers
            .iter()
            .flat_map(|(pid, p)| {
                p.inflight
                    .iter()
                    .filter(|(_, r)| r.seg == seg)
                    .map(move |(rid, _)| (*pid, *rid))
            })
            .collect();
        for (pid, rid) in reqs {
            self.cancel_peer_request(pid, rid);
        }
    }

    /// HTTP takes over what is missing of `seg`: one ranged request per run of missing chunks
    /// (at most [`MAX_HTTP_RANGES`], the closest runs merged), or the whole segment when
    /// its geometry is not known. A single range from the first missing chunk to the last
    /// made the origin send again the chunks peers had brought in between: a fifth of its
    /// bytes in the simulator's S0 at u <= r, 8% in S3.
    ///
    /// `deadline`: when the player needs the segment, if that forced the fetch. Requests to
    /// neighbours for it are cancelled, but at a deadline fallback those whose next chunk is
    /// on its way and due in time go on for that chunk (see
    /// [`Node::keep_chunks_on_their_way`]).
    fn start_http(&mut self, now: Time, seg: SegmentRef, deadline: Option<Time>) {
        let keep_until = match deadline {
            Some(deadline) => self.keep_chunks_on_their_way(now, seg, deadline),
            None => {
                self.cancel_segment_requests(seg);
                None
            }
        };
        let runs = loop {
            let dl = &self.downloads[&seg];
            if !dl.has_geometry() || dl.chunks.is_empty() {
                break None;
            }
            // The requests kept hold their chunks; a run merged over one of theirs takes
            // it (and so the request's other chunks) for HTTP.
            let runs = dl.runs(MAX_HTTP_RANGES, |c| !c.done && c.owner == Owner::Nobody);
            let mut taken: Vec<(PeerId, RequestId)> = runs
                .iter()
                .flat_map(|r| &dl.chunks[r.clone()])
                .filter_map(|c| match c.owner {
                    Owner::Peer(p, id) if !c.done => Some((p, id)),
                    _ => None,
                })
                .collect();
            if taken.is_empty() {
                break Some(runs);
            }
            taken.dedup();
            for (peer, id) in taken {
                self.cancel_peer_request(peer, id);
            }
        };
        // Still awaited from a neighbour after the merges?
        let awaited = keep_until.is_some()
            && self
                .peers
                .values()
                .any(|p| p.inflight.iter().any(|(_, r)| r.seg == seg));
        let dl = self.downloads.get_mut(&seg).expect("caller inserted it");
        dl.keep_until = keep_until.filter(|_| awaited);
        dl.deadline_fallback = deadline.is_some();
        if deadline.is_some() {
            self.stats.deadline_fallbacks += 1;
        }
        self.fetch_over_http(now, seg, runs, true);
    }

    /// At a deadline fallback: cancels the requests for `seg`, except, for each, the chunk it
    /// is bringing when that chunk is due early enough that HTTP could still fetch it before
    /// `deadline` if it failed to come (with a quarter of [`NodeConfig::http_margin`] to
    /// spare). A neighbour's chunk messages leave whole, so the one on its way at the
    /// fallback arrived anyway and was thrown away: in the simulator's S0 at u = r/2, 8% of
    /// all the bytes peers sent. The neighbour is sent a cancel for the rest, and stops after
    /// what it has already sent. Returns when the chunks kept must have come (HTTP fetches
    /// them then), if any is kept.
    fn keep_chunks_on_their_way(
        &mut self,
        now: Time,
        seg: SegmentRef,
        deadline: Time,
    ) -> Option<Time> {
        let dl = &self.downloads[&seg];
        if !dl.has_geometry() || dl.chunks.is_empty() || dl.chunk_size == 0 {
            self.cancel_segment_requests(seg);
            return None;
        }
        let chunk_size = dl.chunk_size;
        // (neighbour, request, end of the chunk on its way, when it is due)
        let mut candidates = Vec::new();
        let mut cancel = Vec::new();
        for (pid, p) in self.peers.iter() {
            let rate = p
                .throughput
                .is_proven()
                .then(|| p.throughput.get().max(1.0));
            // A neighbour serves our requests in the order they were sent (ids rise): each
            // waits for those before it.
            let mut ahead = 0;
            for (rid, r) in p.inflight.iter() {
                let chunk_end = ((r.next / chunk_size + 1) * chunk_size).min(r.end);
                let queued = ahead + (chunk_end - r.next);
                let first = ahead == 0;
                ahead += r.end - r.next;
                if r.seg != seg {
                    continue;
                }
                // One to cut must be the one the neighbour is sending (a cancel drops a job
                // still queued there before any of it leaves): its first, with data flowing.
                // One that ends within its next chunk gets no cancel, and so comes in turn.
                let cut = chunk_end < r.end;
                match rate {
                    Some(_) if cut && !(first && r.received > 0) => cancel.push((*pid, *rid)),
                    Some(rate) => {
                        let due =
                            p.last_data.max(now) + Duration::from_secs_f64(queued as f64 / rate);
                        candidates.push((*pid, *rid, chunk_end, due, chunk_end - r.next));
                    }
                    None => cancel.push((*pid, *rid)),
                }
            }
        }
        // The chunks kept, fetched over HTTP at `until` if they have not come by then, along
        // with the later segments' fetches, must still be in by the deadline.
        let reserve = self.config.http_margin / 4;
        let backlog = self.http_backlog(seg);
        let all: u64 = candidates.iter().map(|c| c.4).sum();
        let until = deadline - (self.http_estimate(all + backlog) + reserve);
        let mut kept = Vec::new();
        for (peer, id, end, due, _) in candidates {
            if due <= until {
                kept.push((peer, id, end));
            } else {
                cancel.push((peer, id));
            }
        }
        for (peer, id) in cancel {
            self.cancel_peer_request(peer, id);
        }
        if kept.is_empty() {
            return None;
        }
        for &(peer, id, end) in &kept {
            let r = self
                .peers
                .get_mut(&peer)
                .and_then(|p| p.inflight.get_mut(&id))
                .expect("listed above");
            if end < r.end {
                r.end = end;
                r.cut = true;
                self.downloads
                    .get_mut(&seg)
                    .expect("listed above")
                    .release_from(Owner::Peer(peer, id), end);
                self.send_frames(peer, &[Frame::Cancel { id }]);
            }
        }
        Some(until)
    }

    /// Starts HTTP fetches for `runs` of `seg`'s chunks (`None`: the whole segment, its
    /// geometry unknown). `group`: they time a sample of the origin's throughput (not the
    /// chunks a kept request gave up, fetched alongside a fallback's: a chunk's time is
    /// mostly the time to first byte, and would measure the origin far too fast or slow).
    fn fetch_over_http(
        &mut self,
        now: Time,
        seg: SegmentRef,
        runs: Option<Vec<Range<usize>>>,
        group: bool,
    ) {
        let dl = self.downloads.get_mut(&seg).expect("caller inserted it");
        let mut requests = Vec::new();
        if let Some(runs) = runs {
            if runs.is_empty() {
                return;
            }
            for run in runs {
                // The partly filled chunks restart from their start.
                for c in &mut dl.chunks[run.clone()] {
                    if !c.done {
                        c.filled = 0;
                    }
                }
                let id = FetchId(self.next_fetch);
                self.next_fetch += 1;
                // Chunks inside the range that were already done stay done; HTTP bytes for
                // them are skipped.
                let r = dl.assign(run, Owner::Http(id));
                let full = r.start == 0 && Some(r.end) == dl.length;
                requests.push((id, (!full).then_some(r)));
            }
        } else {
            dl.buf.clear();
            let id = FetchId(self.next_fetch);
            self.next_fetch += 1;
            requests.push((id, None));
        }
        let paced = self.listed_partial(&seg);
        let dl = self.downloads.get_mut(&seg).expect("caller inserted it");
        if group && !paced {
            dl.http_group = Some((now, 0));
        }
        for (id, range) in requests {
            dl.http.push(download::HttpFetch {
                id,
                started: now,
                received: 0,
                paced,
            });
            self.fetches.insert(id, seg);
            self.stats.http_requests += 1;
            self.transmits.push_back(Transmit::Http(HttpRequest {
                id,
                target: HttpTarget::Segment(seg),
                range,
            }));
        }
    }

    /// Drops the download of `seg` and its fetches. Returns whether neighbours were told of
    /// it while it arrived (the caller withdraws it).
    fn abandon(&mut self, seg: SegmentRef) -> bool {
        let Some(dl) = self.downloads.remove(&seg) else {
            return false;
        };
        for h in dl.http {
            self.fetches.remove(&h.id);
            self.transmits.push_back(Transmit::CancelHttp(h.id));
        }
        self.cancel_segment_requests(seg);
        let withdraw = dl.announced && !self.cache.contains(&seg);
        if withdraw {
            // Announced again later, it goes with its digest.
            for p in self.peers.values_mut() {
                p.digests_sent.remove(&seg);
            }
        }
        withdraw
    }

    fn complete(&mut self, now: Time, seg: SegmentRef) {
        let Some(dl) = self.downloads.remove(&seg) else {
            return;
        };
        debug_assert!(dl.is_complete(), "{seg:?} delivered with chunks missing");
        for h in &dl.http {
            self.fetches.remove(&h.id);
            self.transmits.push_back(Transmit::CancelHttp(h.id));
        }
        let announced = dl.announced;
        let matches = dl.matches_digest();
        let mut data = Bytes::from(dl.buf);
        if let Some(pool) = &self.pool {
            data = pool.intern(seg.in_swarm(self.config.swarm), data);
        }
        // The digest to relay: the verified one, or our own signature over origin bytes.
        let digest = match &dl.digest {
            Some(d) if matches => Some(d.signed().clone()),
            _ => self.signer.as_ref().map(|s| {
                s.sign(SegmentDigest::compute(
                    seg.in_swarm(self.config.swarm),
                    &data,
                    self.config.digest_chunk_size,
                ))
            }),
        };
        if let Some(d) = &digest
            && !self.digests.contains_key(&seg)
        {
            self.digests.insert(seg, d.accept_unverified());
        }
        let sources = SourceBytes {
            http: dl.http_bytes,
            p2p: dl.p2p_bytes,
        };
        self.segment_size = (self.segment_size * 3 + data.len() as u64) / 4;
        let playhead = self.player.map(|(p, _)| p.playhead);
        let evicted = self.cache.insert(
            seg,
            Stored {
                data: data.clone(),
                digest: digest.clone(),
                http_bytes: sources.http,
                p2p_bytes: sources.p2p,
            },
            playhead,
        );
        // Deliver to the player.
        let mut delivered = false;
        let waits: Vec<PlayerWait> = {
            let (hit, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waits)
                .into_iter()
                .partition(|w| w.seg == seg);
            self.waits = rest;
            hit
        };
        for w in waits {
            delivered = true;
            self.stats.segments_delivered += 1;
            self.stats.delivered_bytes += data.len() as u64;
            if now > w.deadline && !w.urgent {
                self.stats.late_segments += 1;
            }
            self.note_delivered(seg);
            self.events.push_back(Event::SegmentReady {
                request: w.id,
                segment: seg,
                data: data.clone(),
                sources,
            });
        }
        let _ = delivered;
        if digest.is_some() && !announced {
            self.announce_have(seg);
        } else if announced && self.config.upload.enabled {
            // Announced while arriving: it is whole now.
            let chunks = self
                .digests
                .get(&seg)
                .map_or(0, |d| d.digest().chunk_count());
            let mut map = vec![0u8; chunks.div_ceil(8)];
            for i in 0..chunks {
                map[i / 8] |= 1 << (i % 8);
            }
            self.send_chunk_map(seg, Bytes::from(map), true);
        }
        // Uploads waiting for chunks of it can go on from the cache.
        self.pump_uploads(now);
        if !evicted.is_empty() {
            for e in &evicted {
                self.digests.remove(e);
            }
            self.forget_sent_digests();
            let by_rendition = group(&evicted);
            for (rendition, removed) in by_rendition {
                self.broadcast(&[Frame::HaveDelta {
                    rendition,
                    added: Vec::new(),
                    removed,
                }]);
            }
        }
    }

    /// Forgets which digests went to which neighbour for segments this node no longer holds
    /// or fetches (it announces a segment again with its digest if it gets it again): the
    /// record would otherwise grow by a segment per neighbour for as long as they stay
    /// connected.
    fn forget_sent_digests(&mut self) {
        let (cache, downloads) = (&self.cache, &self.downloads);
        let held = cache.len() + downloads.len();
        for p in self.peers.values_mut() {
            if p.digests_sent.len() > held {
                p.digests_sent
                    .retain(|s| cache.contains(&s) || downloads.contains_key(&s));
            }
        }
    }

    /// A download's first chunk is in: tell the neighbours (with the digest) that it can be
    /// had, and serve uploads waiting for its chunks.
    fn on_chunks_done(&mut self, now: Time, seg: SegmentRef) {
        if !self.config.relay_partial || !self.config.upload.enabled {
            return;
        }
        let Some(dl) = self.downloads.get_mut(&seg) else {
            return;
        };
        if !dl.announced {
            let Some(d) = dl.digest.as_ref() else {
                return;
            };
            if !dl.any_done() {
                return;
            }
            let digest = d.signed().clone();
            dl.announced = true;
            dl.map_sent = dl.done_count();
            self.announce_with(seg, digest);
        } else {
            // Updates go out every eighth of the segment (each is a message to every
            // interested neighbour), and at every chunk while this node's uplink is scarce
            // and has a slot free: neighbours ask only for chunks they know this node has,
            // and such an uplink must not sit idle. With updates every eighth only, in S0 at
            // u = r a holder's uplink was idle at the start of a quarter of its gaps while a
            // neighbour lacked a chunk it held but had not heard of (decision 0013).
            let done = dl.done_count();
            let sent = dl.map_sent;
            let step = dl.chunks.len().div_ceil(8);
            let now_too = done > sent
                && (self.uplink_is_scarce(seg) || self.listed_partial(&seg))
                && self.upload_slot_free(None);
            if done >= sent + step || now_too {
                let dl = self.downloads.get_mut(&seg).expect("looked up above");
                dl.map_sent = done;
                let map = Bytes::from(dl.chunk_map());
                self.send_chunk_map(seg, map, false);
            }
        }
        self.pump_uploads(now);
    }

    fn announce_have(&mut self, seg: SegmentRef) {
        let Some(stored) = self.cache.get(&seg) else {
            return;
        };
        let Some(digest) = stored.digest.clone() else {
            return;
        };
        self.announce_with(seg, digest);
    }

    /// Tells the neighbours that understand chunk maps, play `seg`'s rendition (they have
    /// announced some of it) and do not hold `seg` whole (as far as this node knows: they
    /// have not announced it, or announced it with a partial map) which of its chunks this
    /// node holds now. A `whole` map (the segment is complete) goes to every neighbour that
    /// plays the rendition: one that holds `seg` by now may still hold a partial map of
    /// this node's, which stays until it is told otherwise.
    fn send_chunk_map(&mut self, seg: SegmentRef, map: Bytes, whole: bool) {
        if !self.config.chunk_maps {
            return;
        }
        let ids: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                if whole {
                    p.plays_with_chunk_maps(&seg)
                } else {
                    p.wants_chunk_map(&seg)
                }
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.send_frames(
                id,
                &[Frame::Chunks {
                    segment: seg,
                    bitmap: map.clone(),
                }],
            );
        }
    }

    fn announce_with(&mut self, seg: SegmentRef, digest: SignedDigest) {
        if !self.config.upload.enabled {
            return;
        }
        // Still arriving: say which chunks are here.
        let map = self
            .downloads
            .get(&seg)
            .filter(|dl| self.config.chunk_maps && !dl.is_complete())
            .map(|dl| Bytes::from(dl.chunk_map()));
        let ids: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.session().is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let p = self.peers.get_mut(&id).expect("listed above");
            let mut frames = Vec::with_capacity(3);
            if p.digests_sent.insert(seg) {
                frames.push(Frame::Digest(Box::new(digest.clone())));
            }
            if let Some(map) = &map
                && p.wants_chunk_map(&seg)
            {
                frames.push(Frame::Chunks {
                    segment: seg,
                    bitmap: map.clone(),
                });
            }
            frames.push(Frame::HaveDelta {
                rendition: seg.rendition,
                added: vec![seg.sequence],
                removed: Vec::new(),
            });
            self.send_frames(id, &frames);
        }
    }

    /// Tells a neighbour whose handshake just came in what this node has: the segments it
    /// holds, and those it announced while they arrive, each with its chunk map first (a
    /// neighbour that joins while a segment arrives would otherwise never hear of it: when
    /// the segment completes, those told of it get only its whole map).
    fn send_availability(&mut self, peer: PeerId) {
        if !self.config.upload.enabled {
            return;
        }
        let mut by_rendition: BTreeMap<RenditionId, Vec<u64>> = BTreeMap::new();
        for (seg, stored) in self.cache.iter() {
            if stored.digest.is_some() {
                by_rendition
                    .entry(seg.rendition)
                    .or_default()
                    .push(seg.sequence);
            }
        }
        let mut frames = Vec::new();
        let maps = self.peers.get(&peer).is_some_and(|p| {
            p.session()
                .is_some_and(|s| s.remote.contains(Capabilities::CHUNK_MAPS))
        }) && self.config.chunk_maps;
        for (seg, dl) in &self.downloads {
            if !dl.announced || dl.is_complete() {
                continue;
            }
            by_rendition
                .entry(seg.rendition)
                .or_default()
                .push(seg.sequence);
            if maps {
                frames.push(Frame::Chunks {
                    segment: *seg,
                    bitmap: Bytes::from(dl.chunk_map()),
                });
            }
        }
        for (rendition, seqs) in by_rendition {
            frames.push(Frame::Have(Availability::from_sequences(rendition, seqs)));
        }
        if !frames.is_empty() {
            self.send_frames(peer, &frames);
        }
    }

    fn broadcast(&mut self, frames: &[Frame]) {
        let ids: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.session().is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.send_frames(id, frames);
        }
    }

    fn send_frames(&mut self, peer: PeerId, frames: &[Frame]) {
        let data = Bytes::from(wire::encode_frames(frames));
        if let Some(p) = self.peers.get_mut(&peer) {
            let payload = frames
                .iter()
                .map(|f| match f {
                    Frame::Data { payload, .. } => payload.len() as u64,
                    _ => 0,
                })
                .sum::<u64>();
            p.send_buffered += payload;
            self.handed += payload;
        }
        self.transmits.push_back(Transmit::Peer { peer, data });
    }

    fn set_wake(&mut self, t: Time) {
        self.wake = Some(self.wake.map_or(t, |w| w.min(t)));
    }

    fn prune_digests(&mut self) {
        // Keep digests of cached segments, of downloads, and a bounded number of others.
        const MAX_LOOSE: usize = 512;
        if self.digests.len() <= MAX_LOOSE + self.cache.len() + self.downloads.len() {
            return;
        }
        let cache = &self.cache;
        let downloads = &self.downloads;
        let mut loose: Vec<SegmentRef> = self
            .digests
            .keys()
            .filter(|s| !cache.contains(s) && !downloads.contains_key(s))
            .copied()
            .collect();
        loose.sort_by_key(|s| s.sequence);
        let excess = loose.len().saturating_sub(MAX_LOOSE);
        for s in loose.into_iter().take(excess) {
            self.digests.remove(&s);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Upload.

    /// Sends data for queued uploads, round-robin between neighbours, one message at a time,
    /// within the send-buffer limit, the rate cap and the volume budget.
    fn pump_uploads(&mut self, now: Time) {
        let ids: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.uploads.is_empty())
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return;
        }
        // Start after the neighbour served last, for fairness.
        let start = self
            .upload_cursor
            .and_then(|c| ids.iter().position(|id| *id > c))
            .unwrap_or(0);
        let order: Vec<PeerId> = ids[start..].iter().chain(&ids[..start]).copied().collect();
        // All neighbours share one uplink: bound the bytes queued in all DataChannels together,
        // or a request from one neighbour waits behind seconds of data for the others.
        let mut total_buffered: u64 = self.peers.values().map(|p| p.send_buffered).sum();
        if self.uplink_busy.is_none() {
            self.uplink_busy = Some((now, self.handed.saturating_sub(total_buffered)));
        }
        let limit = self.send_queue_limit();
        let mut progress = true;
        while progress {
            progress = false;
            for &id in &order {
                if total_buffered >= limit {
                    return;
                }
                if let Some(budget) = self.config.upload.volume_budget
                    && self.stats.p2p_bytes_up >= budget
                {
                    return;
                }
                let Some(p) = self.peers.get(&id) else {
                    continue;
                };
                let Some(job) = p.uploads.first() else {
                    continue;
                };
                if p.send_buffered >= limit {
                    continue;
                }
                let max_message = p
                    .session()
                    .map_or(wire::DEFAULT_MAX_MESSAGE, |s| s.max_message);
                // The bytes to send from: the cache, or a download still arriving (its done
                // chunks only).
                let source = match self.cache.get(&job.seg) {
                    Some(stored) => Some((stored.digest.clone(), None)),
                    None => self.downloads.get(&job.seg).and_then(|dl| {
                        let d = dl.digest.as_ref().filter(|_| dl.announced)?;
                        Some((Some(d.signed().clone()), dl.done_from(job.next, job.end)))
                    }),
                };
                let Some((digest, partial)) = source else {
                    // Evicted or abandoned since: tell the requester.
                    let (jid, seg) = (job.id, job.seg);
                    let p = self.peers.get_mut(&id).expect("exists");
                    p.uploads.remove(0);
                    p.uploads_shrunk();
                    self.send_frames(
                        id,
                        &[Frame::Absent {
                            id: jid,
                            segment: seg,
                        }],
                    );
                    progress = true;
                    continue;
                };
                let in_cache = partial.is_none() && self.cache.contains(&job.seg);
                if !in_cache && partial.is_none() {
                    // The chunk it needs has not arrived yet: it waits (chunks arriving pump
                    // the uploads again).
                    continue;
                }
                let mut frames = Vec::with_capacity(2);
                let send_digest = !p.digests_sent.contains(&job.seg);
                let mut room = max_message - wire::DATA_OVERHEAD;
                if send_digest && let Some(d) = &digest {
                    room = room.saturating_sub(d.encoded_len() + 4);
                    frames.push(Frame::Digest(Box::new(d.clone())));
                }
                let mut n = (job.end - job.next).min(room as u64);
                if let Some(r) = &partial {
                    n = n.min(r.end - r.start);
                }
                if self.config.chunk_messages
                    && let Some(d) = &digest
                {
                    // One chunk per message: the round-robin then gives every neighbour's
                    // request data at least every `slots` chunks, so a slow uplink delays
                    // requests instead of starving them past the stall timeout.
                    let chunk = u64::from(d.digest().chunk_size());
                    n = n.min(chunk - job.next % chunk);
                }
                if let Some(rate) = self.config.upload.rate {
                    // Under a rate cap, smaller messages keep every neighbour's data flowing
                    // (round-robin) instead of starving each for seconds.
                    n = n.min((rate / 16).max(16 * 1024));
                }
                if let Some(bucket) = &mut self.upload_bucket {
                    if bucket.available(now) < n {
                        let at = bucket.ready_at(now, n);
                        self.upload_wake = Some(self.upload_wake.map_or(at, |w| w.min(at)));
                        return;
                    }
                    bucket.take(n);
                }
                let range = job.next as usize..(job.next + n) as usize;
                let payload = match self.cache.get(&job.seg) {
                    Some(stored) => stored.data.slice(range),
                    None => Bytes::copy_from_slice(&self.downloads[&job.seg].buf[range]),
                };
                frames.push(Frame::Data {
                    id: job.id,
                    segment: job.seg,
                    offset: job.next,
                    payload,
                });
                let (seg, jid) = (job.seg, job.id);
                let p = self.peers.get_mut(&id).expect("exists");
                if send_digest {
                    p.digests_sent.insert(seg);
                }
                let job = p.uploads.first_mut().expect("checked above");
                let from = job.next;
                job.next += n;
                if job.next >= job.end {
                    p.uploads.remove(0);
                    p.uploads_shrunk();
                }
                let _ = jid;
                if let Some(d) = &digest {
                    self.note_chunks_out(seg, from..from + n, d.digest().chunk_size());
                }
                self.stats.p2p_bytes_up += n;
                let before = self.peers[&id].send_buffered;
                self.send_frames(id, &frames);
                total_buffered += self.peers[&id].send_buffered - before;
                self.upload_cursor = Some(id);
                progress = true;
            }
        }
    }
}

/// The [`PeerEvent::Drained`] reports a shell owes the node for one DataChannel: after a send,
/// one when the buffered amount is at or under the low mark, and one more when it reaches zero
/// (the node measures the uplink while anything is queued, and counts each neighbour's queue
/// from these reports: a queue left reported above zero would count as busy for ever).
///
/// The shell calls [`DrainReports::sent`] after handing messages to the channel, and
/// [`DrainReports::check`] with the buffered amount whenever it looks (after its sends, on
/// `bufferedamountlow`, on a timer while [`DrainReports::pending`]); it makes the report
/// returned. A shell woken by `bufferedamountlow` sets the channel's threshold to
/// [`DrainReports::threshold`] after each check, so that the event also fires at zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReports {
    low_owed: bool,
    zero_owed: bool,
}

impl DrainReports {
    /// Messages were handed to the channel.
    pub fn sent(&mut self) {
        self.low_owed = true;
        self.zero_owed = true;
    }

    /// Whether a report is still owed: the shell must keep watching the buffer.
    pub fn pending(&self) -> bool {
        self.low_owed || self.zero_owed
    }

    /// The buffered amount is `buffered`; `low` is [`NodeConfig::send_buffer_low`]. Returns
    /// the report to make now, if one is owed.
    pub fn check(&mut self, buffered: u64, low: u64) -> Option<PeerEvent> {
        let due = (self.low_owed && buffered <= low) || (self.zero_owed && buffered == 0);
        if !due {
            return None;
        }
        self.low_owed = buffered > low;
        self.zero_owed = buffered > 0;
        Some(PeerEvent::Drained { buffered })
    }

    /// The `bufferedAmountLowThreshold` that makes the browser fire `bufferedamountlow` at
    /// the next report owed: `low` until the low mark is reported, then zero.
    pub fn threshold(&self, low: u64) -> u64 {
        if self.low_owed { low } else { 0 }
    }
}

/// An event on a neighbour's connection, reported by the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// The DataChannel opened.
    Opened,
    /// A DataChannel message arrived.
    Message(Bytes),
    /// The connection closed or failed.
    Closed,
    /// The DataChannel's send buffer drained: shells report it when the buffered amount falls
    /// from above [`NodeConfig::send_buffer_low`] to at or below it (the browser's
    /// `bufferedamountlow` with that threshold), and when it falls to zero. `buffered` is what
    /// is still queued. The node stops writing to a neighbour while its estimate of the
    /// buffered amount is at or above [`NodeConfig::send_buffer_high`].
    Drained {
        /// Bytes still queued in the DataChannel.
        buffered: u64,
    },
}

/// Whether a neighbour with chunk map `map` of a segment it announced holds chunk `i` (no
/// map: it holds the segment whole).
/// An output queue just drained: a burst (a segment announced to every neighbour) leaves it
/// room for the whole burst, which a node would keep between bursts, and a process running
/// thousands of nodes in every one of them.
fn release_idle<T>(queue: &mut VecDeque<T>) {
    if queue.capacity() > 8 {
        *queue = VecDeque::new();
    }
}

fn has_chunk(map: Option<&[u8]>, i: usize) -> bool {
    map.is_none_or(|m| m.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
}

/// Records a finished HTTP fetch's throughput (time to first byte excluded).
/// One sample of the origin's throughput: the bytes a fallback's fetches brought, from their
/// start (less the time to first byte) to the end of the last.
fn sample_http(rate: &mut Throughput, ttfb: Duration, now: Time, (started, received): (Time, u64)) {
    if received > 0 {
        rate.sample(received, now.saturating_since(started).saturating_sub(ttfb));
    }
}

fn goodbye(reason: &DropReason) -> Option<Frame> {
    let (code, text) = match reason {
        DropReason::Closed | DropReason::ConnectTimeout => return None,
        DropReason::Protocol(t) => (wire::goodbye::PROTOCOL, t.clone()),
        DropReason::Integrity => (wire::goodbye::INTEGRITY, "integrity failure".into()),
        DropReason::Handshake(t) => (wire::goodbye::HANDSHAKE, t.clone()),
    };
    Some(Frame::Goodbye { code, reason: text })
}

fn group(segs: &[SegmentRef]) -> BTreeMap<RenditionId, Vec<u64>> {
    let mut m: BTreeMap<RenditionId, Vec<u64>> = BTreeMap::new();
    for s in segs {
        m.entry(s.rendition).or_default().push(s.sequence);
    }
    m
}

fn trusted_keys(t: &TrustedKeys) -> Vec<crate::integrity::PublicKey> {
    t.keys().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn have_sets_are_bounded_and_find_their_rendition() {
        let mut h = SegmentSets::default();
        for r in 0..40u8 {
            h.entry(RenditionId([r; 8])).insert(u64::from(r));
        }
        assert_eq!(h.0.len(), SegmentSets::MAX_RENDITIONS);
        // The oldest were dropped, the newest kept.
        assert!(h.get(&RenditionId([0; 8])).is_none());
        assert!(h.get(&RenditionId([39; 8])).unwrap().contains(39));
        h.get_mut(&RenditionId([39; 8])).unwrap().insert(40);
        assert_eq!(h.entry(RenditionId([39; 8])).len(), 2);
        assert_eq!(h.0.len(), SegmentSets::MAX_RENDITIONS);
    }

    fn seg(sequence: u64) -> SegmentRef {
        SegmentRef {
            rendition: RenditionId([1; 8]),
            sequence,
        }
    }

    fn response(swarm: SwarmId, peers: u64) -> FromTracker {
        FromTracker::AnnounceResponse(crate::tracker_proto::AnnounceResponse {
            info_hash: swarm,
            interval: Some(120),
            min_interval: None,
            complete: Some(0),
            incomplete: Some(peers),
            tracker_id: None,
            warning: None,
        })
    }

    fn offer_from(swarm: SwarmId, n: u8) -> FromTracker {
        FromTracker::Offer(RelayedOffer {
            info_hash: swarm,
            peer_id: PeerId([n; 20]),
            offer_id: OfferId([n; 20]),
            offer: crate::tracker_proto::SessionDescription::offer("v=0"),
            ext: None,
        })
    }

    /// A node with few neighbours in a larger swarm announces again after `refill_interval`,
    /// not the tracker's interval; with enough, or alone in the swarm, after the tracker's;
    /// losing neighbours brings the next announce forward (never closer than
    /// `refill_interval` to the last one).
    #[test]
    fn under_connected_nodes_announce_sooner() {
        let swarm = SwarmId([7; 20]);
        let config = NodeConfig::new(
            PeerId([1; 20]),
            swarm,
            NodeRole::Viewer,
            IntegrityMode::Unverified,
        );
        let t0 = Time::from_secs(100);
        let mut node = Node::new(config, t0, 1).unwrap();
        node.handle_tracker_connected(t0);
        assert!(matches!(
            node.poll_transmit(),
            Some(Transmit::Announce { .. })
        ));
        let t = t0 + Duration::from_millis(50);

        // Alone: nothing to refill from.
        node.handle_tracker_msg(t, response(swarm, 1));
        assert_eq!(node.next_announce, Some(t + Duration::from_secs(120)));
        // 30 peers in the swarm, none of them a neighbour.
        node.handle_tracker_msg(t, response(swarm, 30));
        assert_eq!(node.next_announce, Some(t + Duration::from_secs(15)));

        // Ten neighbours (half of `max_peers`): connected enough.
        for n in 10..20 {
            node.handle_tracker_msg(t, offer_from(swarm, n));
        }
        node.handle_tracker_msg(t, response(swarm, 30));
        assert_eq!(node.next_announce, Some(t + Duration::from_secs(120)));
        // One leaves a second later: 15 s after the last announce.
        let later = t0 + Duration::from_secs(1);
        node.handle_peer_event(later, PeerId([10; 20]), PeerEvent::Closed);
        assert_eq!(node.next_announce, Some(t0 + Duration::from_secs(15)));
        // Back to ten, then one leaves a minute later: at once.
        node.handle_tracker_msg(t, offer_from(swarm, 20));
        node.handle_tracker_msg(t, response(swarm, 30));
        assert_eq!(node.next_announce, Some(t + Duration::from_secs(120)));
        let much_later = t0 + Duration::from_secs(60);
        node.handle_peer_event(much_later, PeerId([11; 20]), PeerEvent::Closed);
        assert_eq!(node.next_announce, Some(much_later));
    }

    /// Opens a channel from `peer` and hands the node `peer`'s handshake (the node's own).
    fn connect(node: &mut Node, now: Time, peer: PeerId) {
        node.handle_peer_event(now, peer, PeerEvent::Opened);
        let theirs = wire::encode_frames(&[Frame::Handshake(node.handshake)]);
        node.handle_peer_event(now, peer, PeerEvent::Message(Bytes::from(theirs)));
    }

    fn viewer() -> Node {
        let config = NodeConfig::new(
            PeerId([1; 20]),
            SwarmId([7; 20]),
            NodeRole::Viewer,
            IntegrityMode::Unverified,
        );
        Node::new(config, Time::ZERO, 1).unwrap()
    }

    /// The configured digest chunk size also sizes the probe before any digest is seen,
    /// within the integrity limits.
    #[test]
    fn probes_take_the_configured_chunk_size() {
        for (configured, expected) in [
            (16 * 1024, 16 * 1024),
            (1, crate::integrity::MIN_CHUNK_SIZE),
            (u32::MAX, crate::integrity::MAX_CHUNK_SIZE),
        ] {
            let mut config = NodeConfig::new(
                PeerId([1; 20]),
                SwarmId([7; 20]),
                NodeRole::Viewer,
                IntegrityMode::Unverified,
            );
            config.digest_chunk_size = configured;
            let node = Node::new(config, Time::ZERO, 1).unwrap();
            assert_eq!(node.chunk_size, expected);
        }
        assert_eq!(viewer().chunk_size, crate::integrity::DEFAULT_CHUNK_SIZE);
    }

    /// Requests to a neighbour measured slow wait a few chunks' time at its rate before they
    /// are given up, within 1-4 times the configured timeout; a stall halves the rate.
    #[test]
    fn slow_neighbours_get_longer_to_send() {
        let node = viewer();
        let base = node.config.request_stall_timeout;
        let chunk = u64::from(node.chunk_size);
        let mut p = Peer::new(Conn::Connecting { since: Time::ZERO }, false, 1e6);
        // Not measured yet: the configured timeout.
        assert_eq!(node.stall_timeout(&p), base);
        // A chunk a second: three seconds.
        p.throughput.sample(chunk, Duration::from_secs(1));
        let t = node.stall_timeout(&p);
        assert!((t.as_secs_f64() - 3.0).abs() < 0.01, "{t:?}");
        // Stalled: half the rate, twice as long, up to four times the configured.
        p.throughput.penalize();
        assert_eq!(node.stall_timeout(&p), base * 4);
        // Fast: the configured timeout.
        let mut fast = Peer::new(Conn::Connecting { since: Time::ZERO }, false, 1e6);
        fast.throughput.sample(100 * chunk, Duration::from_secs(1));
        assert_eq!(node.stall_timeout(&fast), base);
    }

    /// Requests are sized to the holder: one chunk to a holder that takes a quarter of a
    /// second or more per chunk, the configured most to one that is fast or not measured yet;
    /// and the rate a fast holder shows with one-chunk requests (two chunks per round trip)
    /// earns it whole requests again.
    #[test]
    fn slow_holders_are_asked_for_one_chunk_at_a_time() {
        let chunk = 64 * 1024;
        let most = 2;
        let new = || Peer::new(Conn::Connecting { since: Time::ZERO }, false, 1e6);
        let p = new();
        assert_eq!(request_chunks_for(&p, most, chunk), most, "not measured");
        // A viewer's 3 Mbit/s uplink shared by two requesters: 0.7 s per chunk.
        let mut slow = new();
        slow.throughput.sample(187_500, Duration::from_secs(1));
        assert_eq!(request_chunks_for(&slow, most, chunk), 1);
        // A seed behind a 200 ms round trip, measured with one chunk per request and two
        // requests in flight: two chunks per round trip.
        let mut seed = new();
        seed.throughput
            .sample(2 * u64::from(chunk), Duration::from_millis(200));
        assert_eq!(request_chunks_for(&seed, most, chunk), most);
        // As many as it sends in a quarter of a second, up to the configured most; never none.
        assert_eq!(request_chunks_for(&seed, 8, chunk), 2);
        let mut fast = new();
        fast.throughput
            .sample(100 * u64::from(chunk), Duration::from_secs(1));
        assert_eq!(request_chunks_for(&fast, 8, chunk), 8);
        assert_eq!(request_chunks_for(&fast, most, chunk), most);
        assert_eq!(request_chunks_for(&slow, 0, chunk), 1);
    }

    /// The uplink is measured in segment bytes: control frames count for nothing (in the
    /// simulator they cost 1/64 of their size on the link, and counted in full they made the
    /// uplink look 1.3 times faster than it was; decision 0016).
    #[test]
    fn the_uplink_is_measured_in_segment_bytes() {
        let mut node = viewer();
        let a = PeerId([2; 20]);
        node.peers.insert(
            a,
            Peer::new(Conn::Connecting { since: Time::ZERO }, false, 1e6),
        );
        let seg = SegmentRef {
            rendition: RenditionId([1; 8]),
            sequence: 5,
        };
        let t0 = Time::from_secs(10);
        node.uplink_busy = Some((t0, node.handed));
        // A chunk map, then 1000 bytes of a segment with a cancel in the same message.
        node.send_frames(
            a,
            &[Frame::Chunks {
                segment: seg,
                bitmap: Bytes::from_static(&[0xff; 64]),
            }],
        );
        node.send_frames(
            a,
            &[
                Frame::Data {
                    id: RequestId(1),
                    segment: seg,
                    offset: 0,
                    payload: Bytes::from(vec![0; 1000]),
                },
                Frame::Cancel { id: RequestId(2) },
            ],
        );
        assert_eq!(node.handed, 1000);
        assert_eq!(node.peers[&a].send_buffered, 1000);
        // All of it left in one second: 1000 bytes a second.
        node.peers.get_mut(&a).unwrap().send_buffered = 0;
        node.on_drained(t0 + Duration::from_secs(1));
        assert!(
            (node.uplink.get() - 1000.0).abs() < 1.0,
            "{}",
            node.uplink.get()
        );
    }

    /// A first scout waits for swarm members it cannot see only when they likely outrank it
    /// (`scout_outranked_wait`): with the tracker's count known and larger than what it sees,
    /// an open member to bring it the chunks, and an upload of its own; the members it cannot
    /// see are estimated in the proportion of members among its open neighbours.
    #[test]
    fn first_scouts_wait_only_for_likely_higher_ranks_they_cannot_see() {
        let mut node = viewer();
        let (a, b) = (PeerId([2; 20]), PeerId([3; 20]));
        for id in [a, b] {
            connect(&mut node, Time::ZERO, id);
            let p = node.peers.get_mut(&id).unwrap();
            assert!(p.session().is_some() && p.caps.contains(Capabilities::UPLOAD));
            p.have.entry(seg(0).rendition);
        }
        // The share of scout weights above this node's for segment `n`.
        let me = node.config.peer_id;
        let above =
            |n: u64| 1.0 - crate::rendezvous::scout_weight(&seg(n), &me) as f64 / u64::MAX as f64;
        let low = (0..).find(|&n| above(n) > 0.5).unwrap();
        let top = (0..).find(|&n| above(n) < 1e-4).unwrap();

        // No count from the tracker, or every member of the swarm open.
        assert!(!node.outranked_elsewhere(&seg(low)));
        node.swarm_size = 3;
        assert!(!node.outranked_elsewhere(&seg(low)));
        // Members unseen: `unseen` x `above` against two.
        let unseen = (3.0 / above(low)).ceil() as u64;
        node.swarm_size = 3 + unseen;
        assert!(node.outranked_elsewhere(&seg(low)));
        assert!(
            !node.outranked_elsewhere(&seg(top)),
            "the likely top of the swarm goes at once"
        );
        // Half the open neighbours are no members (a seed): half the unseen peers count.
        node.peers.get_mut(&b).unwrap().seed = true;
        assert!(!node.outranked_elsewhere(&seg(low)));
        node.swarm_size = 3 + 2 * unseen;
        assert!(node.outranked_elsewhere(&seg(low)));
        // No member open: nothing would bring it the chunks.
        node.peers.get_mut(&a).unwrap().seed = true;
        assert!(!node.outranked_elsewhere(&seg(low)));
        // A viewer that does not upload is first only when no member is open.
        node.peers.get_mut(&a).unwrap().seed = false;
        node.config.upload.enabled = false;
        assert!(!node.outranked_elsewhere(&seg(low)));
    }

    /// Two neighbours, still connecting, with ids 2… and 3….
    fn two_neighbours(node: &mut Node) -> (PeerId, PeerId) {
        let (a, b) = (PeerId([2; 20]), PeerId([3; 20]));
        for id in [a, b] {
            node.peers.insert(
                id,
                Peer::new(Conn::Connecting { since: Time::ZERO }, false, 1e6),
            );
        }
        (a, b)
    }

    /// The uplink is measured over the times its buffers hold bytes, from the drain reports;
    /// the slots follow: as many neighbours as get a chunk each within `SLOT_CHUNK_TIME`,
    /// between one and `UploadConfig::slots`.
    #[test]
    fn slow_uplinks_serve_fewer_neighbours_at_once() {
        let mut node = viewer();
        let chunk = u64::from(node.chunk_size);
        assert_eq!(node.upload_slots(), 4, "unmeasured: the configured slots");
        let (a, b) = two_neighbours(&mut node);
        // Four chunks queued for each at t0 (the busy period starts as `pump_uploads` starts
        // sending); the uplink sends a chunk a second.
        let t0 = Time::from_secs(10);
        node.uplink_busy = Some((t0, node.handed));
        for id in [a, b] {
            node.send_frames(id, &[Frame::Cancel { id: RequestId(1) }]);
            let p = node.peers.get_mut(&id).unwrap();
            node.handed += 4 * chunk - p.send_buffered;
            p.send_buffered = 4 * chunk;
        }
        // Four seconds later `a` has drained to one chunk (and `b`, unreported, too).
        node.peers.get_mut(&a).unwrap().send_buffered = chunk;
        node.on_drained(t0 + Duration::from_secs(4));
        // 3 chunks counted as sent in 4 s (b's not yet reported): a lower bound.
        let r = node.uplink.get();
        assert!((r - 0.75 * chunk as f64).abs() < 1.0, "{r}");
        // Both empty at 8 s: 5 more chunks in 4 s.
        node.peers.get_mut(&a).unwrap().send_buffered = 0;
        node.peers.get_mut(&b).unwrap().send_buffered = 0;
        node.on_drained(t0 + Duration::from_secs(8));
        assert!(
            node.uplink_busy.is_none(),
            "idle once the buffers are empty"
        );
        // About a chunk a second: one neighbour at a time.
        assert_eq!(node.upload_slots(), 1);
        // Five chunks a second: two; a thousand: the configured four.
        node.uplink = Throughput::new(0.0);
        node.uplink.sample(5 * chunk, Duration::from_secs(1));
        assert_eq!(node.upload_slots(), 2);
        node.uplink.sample(1000 * chunk, Duration::from_secs(1));
        assert_eq!(node.upload_slots(), 4);
    }

    /// A neighbour whose last chunk is leaving holds no slot when the last drain report left a
    /// few bytes of control frames in its channel: the next neighbour's request is taken.
    /// Counting those with the chunk as more than a chunk turned every request away while a
    /// slow uplink's last chunk left, and the uplink then idled until the neighbours asked
    /// again (in the simulator, S0 at u = r/2: 6.5% of its time).
    #[test]
    fn a_slot_frees_while_the_last_chunk_leaves() {
        let mut node = viewer();
        let chunk = u64::from(node.chunk_size);
        let (a, b) = two_neighbours(&mut node);
        node.uplink.sample(chunk, Duration::from_secs(1));
        assert_eq!(node.upload_slots(), 1);
        // The last report left a chunk map's bytes in `a`'s channel; then its last chunk goes.
        let left = 40;
        node.handle_peer_event(Time::ZERO, a, PeerEvent::Drained { buffered: left });
        let data = |len: u64| Frame::Data {
            id: RequestId(0),
            segment: seg(1),
            offset: 0,
            payload: Bytes::from(vec![0; len as usize]),
        };
        node.send_frames(a, &[data(chunk)]);
        assert_eq!(node.peers[&a].send_buffered, left + chunk);
        assert!(node.upload_slot_free(Some(&b)));
        // More than a chunk and the allowance: `a` holds the slot.
        node.send_frames(a, &[data(2 * wire::DATA_OVERHEAD as u64)]);
        assert!(!node.upload_slot_free(Some(&b)));
        // So it does with an upload still queued.
        node.peers.get_mut(&a).unwrap().send_buffered = 0;
        node.peers.get_mut(&a).unwrap().uploads.push(UploadJob {
            id: RequestId(1),
            seg: seg(1),
            next: 0,
            end: chunk,
        });
        assert!(!node.upload_slot_free(Some(&b)));
        assert!(
            node.upload_slot_free(Some(&a)),
            "its own requests are its slot's"
        );
    }

    /// The scheduler's pass follows only messages that can change it: requests and cancels
    /// are the upload side's, and news of a segment matters only while it is being fetched.
    #[test]
    fn only_news_of_segments_being_fetched_wakes_the_scheduler() {
        let mut node = viewer();
        node.downloads.insert(seg(1), Box::new(Download::new()));
        let map = |s| Frame::Chunks {
            segment: seg(s),
            bitmap: Bytes::from_static(&[1]),
        };
        let delta = |added: Vec<u64>, removed: Vec<u64>| Frame::HaveDelta {
            rendition: seg(1).rendition,
            added,
            removed,
        };
        let request = Frame::Request {
            id: RequestId(1),
            segment: seg(1),
            offset: 0,
            length: 10,
        };
        for (frame, moves) in [
            (request, false),
            (Frame::Cancel { id: RequestId(1) }, false),
            (map(1), true),
            (map(2), false),
            (Frame::Fetching { segment: seg(1) }, true),
            (Frame::Fetching { segment: seg(2) }, false),
            (delta(vec![1], vec![]), true),
            (delta(vec![], vec![1]), true),
            (delta(vec![2, 3], vec![0]), false),
            (
                Frame::Busy {
                    id: RequestId(1),
                    retry_after_ms: 10,
                },
                true,
            ),
        ] {
            assert_eq!(node.moves_downloads(&frame), moves, "{frame:?}");
        }
        // Once the segment is whole, nothing about it does.
        let data = vec![7u8; 2 * download::tests::CHUNK];
        let whole = download::tests::assembled(&data);
        assert!(whole.is_complete());
        node.downloads.insert(seg(1), Box::new(whole));
        assert!(!node.moves_downloads(&map(1)));
        assert!(!node.moves_downloads(&delta(vec![1], vec![])));

        // A seed following a VOD fetches ahead of where its neighbours are: their news
        // always counts.
        let config = NodeConfig::new(
            PeerId([1; 20]),
            SwarmId([7; 20]),
            NodeRole::Seed,
            IntegrityMode::Unverified,
        );
        let mut seed = Node::new(config, Time::ZERO, 1).unwrap();
        assert!(!seed.moves_downloads(&delta(vec![2, 3], vec![])));
        seed.handle_playlist(
            Time::ZERO,
            Playlist {
                rendition: seg(0).rendition,
                live: false,
                segments: (0..10)
                    .map(|sequence| SegmentMeta {
                        sequence,
                        duration: Duration::from_secs(4),
                        partial: false,
                    })
                    .collect(),
            },
        );
        assert!(seed.moves_downloads(&delta(vec![2, 3], vec![])));
        assert!(!seed.moves_downloads(&map(2)));
    }

    /// A neighbour whose handshake comes in while a segment announced at its first chunks is
    /// still arriving hears of it with the others, with its chunk map first: when it
    /// completes, only its whole map goes out, and that alone would not tell the newcomer
    /// that this node has it.
    #[test]
    fn a_neighbour_joining_while_a_segment_arrives_hears_of_it() {
        use download::tests::{CHUNK, digest_of};
        let mut node = viewer();
        let now = Time::from_secs(10);
        let data = vec![3u8; 2 * CHUNK];
        let digest = digest_of(&data);
        let mut dl = Download::new();
        dl.set_digest(digest.clone());
        let http = Owner::Http(FetchId(1));
        dl.assign(0..1, http);
        dl.write(http, 0, &data[..CHUNK]);
        dl.announced = true;
        // The player wants it, so that the scheduler keeps its download.
        let arriving = seg(7);
        node.handle_playlist(
            now,
            Playlist {
                rendition: arriving.rendition,
                live: true,
                segments: (5..9)
                    .map(|sequence| SegmentMeta {
                        sequence,
                        duration: Duration::from_secs(4),
                        partial: false,
                    })
                    .collect(),
            },
        );
        node.handle_player(
            now,
            PlayerState {
                rendition: arriving.rendition,
                playhead: 7,
                buffer_ahead: Duration::from_secs(8),
            },
        );
        node.digests.insert(arriving, digest);
        node.downloads.insert(arriving, Box::new(dl));
        while node.poll_transmit().is_some() {}

        let b = PeerId([9; 20]);
        connect(&mut node, now, b);
        let mut frames = Vec::new();
        while let Some(t) = node.poll_transmit() {
            if let Transmit::Peer { peer, data } = t
                && peer == b
            {
                frames.extend(wire::decode_message(&data, wire::LARGE_MAX_MESSAGE).unwrap());
            }
        }
        let map = frames.iter().position(|f| {
            matches!(f, Frame::Chunks { segment, bitmap }
                if *segment == arriving && bitmap[..] == [0b01])
        });
        let have = frames.iter().position(|f| {
            matches!(f, Frame::Have(a)
                if a.rendition == arriving.rendition && a.iter().any(|s| s == 7))
        });
        assert!(
            map.is_some() && have.is_some() && map < have,
            "the newcomer was not told of the arriving segment, map first: {frames:?}"
        );
    }

    /// A segment announced while it arrived, then abandoned (the player moved on), is
    /// withdrawn: its neighbours hear `HaveDelta` with it removed (a request for its missing
    /// chunks got `Busy`, and they would have asked again and again), and a request after that
    /// gets `Absent`.
    #[test]
    fn an_abandoned_download_announced_while_arriving_is_withdrawn() {
        use download::tests::{CHUNK, digest_of};
        let mut node = viewer();
        let now = Time::from_secs(10);
        let data = vec![3u8; 2 * CHUNK];
        let digest = digest_of(&data);
        let mut dl = Download::new();
        dl.set_digest(digest.clone());
        let http = Owner::Http(FetchId(1));
        dl.assign(0..1, http);
        dl.write(http, 0, &data[..CHUNK]);
        dl.announced = true;
        let arriving = seg(7);
        node.handle_playlist(
            now,
            Playlist {
                rendition: arriving.rendition,
                live: true,
                segments: (5..12)
                    .map(|sequence| SegmentMeta {
                        sequence,
                        duration: Duration::from_secs(4),
                        partial: false,
                    })
                    .collect(),
            },
        );
        let player = |playhead| PlayerState {
            rendition: arriving.rendition,
            playhead,
            buffer_ahead: Duration::from_secs(8),
        };
        node.handle_player(now, player(7));
        node.digests.insert(arriving, digest);
        node.downloads.insert(arriving, Box::new(dl));
        let b = PeerId([9; 20]);
        connect(&mut node, now, b);
        // It asks for the chunk that has not come.
        let request = Frame::Request {
            id: RequestId(4),
            segment: arriving,
            offset: CHUNK as u64,
            length: CHUNK as u64,
        };
        let msg = Bytes::from(wire::encode_frames(&[request]));
        node.handle_peer_event(now, b, PeerEvent::Message(msg.clone()));
        while node.poll_transmit().is_some() {}

        // The player moves past it.
        node.handle_player(now, player(9));
        assert!(!node.downloads.contains_key(&arriving), "still downloading");
        let mut frames = Vec::new();
        while let Some(t) = node.poll_transmit() {
            if let Transmit::Peer { peer, data } = t
                && peer == b
            {
                frames.extend(wire::decode_message(&data, wire::LARGE_MAX_MESSAGE).unwrap());
            }
        }
        assert!(
            frames
                .iter()
                .any(|f| matches!(f, Frame::HaveDelta { removed, .. } if removed == &[7])),
            "not withdrawn: {frames:?}"
        );
        // Asked again, it says it is gone.
        node.handle_peer_event(now, b, PeerEvent::Message(msg));
        let mut frames = Vec::new();
        while let Some(t) = node.poll_transmit() {
            if let Transmit::Peer { peer, data } = t
                && peer == b
            {
                frames.extend(wire::decode_message(&data, wire::LARGE_MAX_MESSAGE).unwrap());
            }
        }
        assert!(
            frames
                .iter()
                .any(|f| matches!(f, Frame::Absent { id, .. } if id.0 == 4)),
            "{frames:?}"
        );
    }

    /// A viewer playing `seg(7)` (live playlist 5 to `last`, `buffer` ahead of the playhead)
    /// with neighbour `b` connected and measured at `rate` bytes per second, and a download of
    /// `seg(7)` (four chunks) with its digest. Returns the node, the data and `b`.
    fn fallback_setup(
        now: Time,
        rate: u64,
        last: u64,
        buffer: Duration,
    ) -> (Node, Vec<u8>, PeerId) {
        use download::tests::{CHUNK, digest_of};
        let mut node = viewer();
        let s = seg(7);
        let data: Vec<u8> = (0..4 * CHUNK).map(|i| (i % 251) as u8).collect();
        let digest = digest_of(&data);
        node.handle_playlist(
            now,
            Playlist {
                rendition: s.rendition,
                live: true,
                segments: (5..=last)
                    .map(|sequence| SegmentMeta {
                        sequence,
                        duration: Duration::from_secs(4),
                        partial: false,
                    })
                    .collect(),
            },
        );
        let b = PeerId([9; 20]);
        connect(&mut node, now, b);
        node.peers
            .get_mut(&b)
            .unwrap()
            .throughput
            .sample(rate, Duration::from_secs(1));
        let mut dl = Download::new();
        dl.set_digest(digest.clone());
        node.digests.insert(s, digest);
        node.downloads.insert(s, Box::new(dl));
        node.handle_player(
            now,
            PlayerState {
                rendition: s.rendition,
                playhead: 7,
                buffer_ahead: buffer,
            },
        );
        while node.poll_transmit().is_some() {}
        (node, data, b)
    }

    /// Asks `b` for `chunks` of `seg(7)`, as the scheduler does.
    fn request_chunks(node: &mut Node, now: Time, b: PeerId, chunks: Range<usize>) -> RequestId {
        use download::tests::CHUNK;
        let (offset, len) = (chunks.start * CHUNK, chunks.len() * CHUNK);
        let id = node.send_request(now, b, seg(7), offset as u64, len as u64);
        node.downloads
            .get_mut(&seg(7))
            .unwrap()
            .assign(chunks, Owner::Peer(b, id));
        while node.poll_transmit().is_some() {}
        id
    }

    /// `b` sends `bytes` of `seg(7)` from `offset` for request `id`.
    fn send_data(
        node: &mut Node,
        now: Time,
        b: PeerId,
        id: RequestId,
        offset: usize,
        bytes: &[u8],
    ) {
        let frame = Frame::Data {
            id,
            segment: seg(7),
            offset: offset as u64,
            payload: Bytes::copy_from_slice(bytes),
        };
        let msg = Bytes::from(wire::encode_frames(&[frame]));
        node.handle_peer_event(now, b, PeerEvent::Message(msg));
    }

    /// What `node` sent: cancels to neighbours, and HTTP fetches of `seg(7)`.
    fn fallback_transmits(node: &mut Node) -> (Vec<RequestId>, Vec<HttpRequest>) {
        let (mut cancels, mut fetches) = (Vec::new(), Vec::new());
        while let Some(t) = node.poll_transmit() {
            match t {
                Transmit::Peer { data, .. } => {
                    for f in wire::decode_message(&data, wire::LARGE_MAX_MESSAGE).unwrap() {
                        if let Frame::Cancel { id } = f {
                            cancels.push(id);
                        }
                    }
                }
                Transmit::Http(r) if r.target == HttpTarget::Segment(seg(7)) => fetches.push(r),
                _ => {}
            }
        }
        (cancels, fetches)
    }

    /// At a deadline fallback, a request whose next chunk is due in time is cancelled for the
    /// rest but kept for that chunk, which HTTP does not fetch: its bytes (and those after it,
    /// sent before the cancel arrived) are taken or dropped without ending the neighbour.
    /// Before, the whole request was cancelled and the chunk on its way thrown away.
    #[test]
    fn the_chunk_on_its_way_at_a_fallback_is_kept() {
        use download::tests::CHUNK;
        let now = Time::from_secs(10);
        // A chunk in a tenth of a second; the deadline 5 s away.
        let (mut node, data, b) =
            fallback_setup(now, 10 * CHUNK as u64, 11, Duration::from_secs(8));
        let s = seg(7);
        let id = request_chunks(&mut node, now, b, 0..4);
        // Data flowing: the first chunk is in.
        send_data(&mut node, now, b, id, 0, &data[..CHUNK]);
        node.start_http(now, s, Some(now + Duration::from_secs(5)));
        let (cancels, fetches) = fallback_transmits(&mut node);
        assert_eq!(cancels, [id]);
        assert_eq!(fetches.len(), 1, "{fetches:?}");
        assert_eq!(fetches[0].range, Some(2 * CHUNK as u64..4 * CHUNK as u64));
        assert_eq!(
            node.peers[&b].inflight.get_ref(&id).unwrap().end,
            2 * CHUNK as u64
        );
        assert_eq!(node.stats().deadline_fallbacks, 1);

        // The second chunk comes, with half the next (sent before the cancel arrived).
        let t = now + Duration::from_millis(100);
        send_data(
            &mut node,
            t,
            b,
            id,
            CHUNK,
            &data[CHUNK..2 * CHUNK + CHUNK / 2],
        );
        assert!(node.peers.contains_key(&b), "the neighbour was dropped");
        assert!(node.peers[&b].inflight.get_ref(&id).is_none());
        let dl = &node.downloads[&s];
        assert!(dl.chunks[1].done && !dl.chunks[2].done);
        assert_eq!(dl.p2p_bytes, 2 * CHUNK as u64);
        // The rest of what it had sent is dropped quietly.
        let aborted = node.stats().aborted_p2p_bytes;
        assert_eq!(aborted, CHUNK as u64 / 2);
        send_data(
            &mut node,
            t,
            b,
            id,
            2 * CHUNK + CHUNK / 2,
            &data[2 * CHUNK + CHUNK / 2..3 * CHUNK],
        );
        assert!(node.peers.contains_key(&b));
        assert_eq!(node.stats().aborted_p2p_bytes, aborted + CHUNK as u64 / 2);

        // HTTP brings the rest: the segment is complete, with the neighbour's chunks.
        let fetch = fetches[0].id;
        node.handle_http_data(
            t,
            fetch,
            2 * CHUNK as u64,
            None,
            Bytes::copy_from_slice(&data[2 * CHUNK..]),
        );
        node.handle_http_done(t, fetch, Ok(()));
        assert!(node.has_segment(&s));
        assert_eq!(node.stats().p2p_bytes_down, 2 * CHUNK as u64);
    }

    /// Requests a neighbour has not started on are cancelled whole at a fallback, even when
    /// they would come in time: the cancel drops them there before any of their bytes leave.
    /// So is one with no data yet that would need cutting.
    #[test]
    fn requests_queued_at_a_neighbour_are_not_kept() {
        use download::tests::CHUNK;
        let now = Time::from_secs(10);
        let (mut node, data, b) =
            fallback_setup(now, 100 * CHUNK as u64, 11, Duration::from_secs(8));
        let s = seg(7);
        let sending = request_chunks(&mut node, now, b, 0..2);
        let queued = request_chunks(&mut node, now, b, 2..4);
        send_data(&mut node, now, b, sending, 0, &data[..CHUNK]);
        node.start_http(now, s, Some(now + Duration::from_secs(5)));
        let (cancels, fetches) = fallback_transmits(&mut node);
        // The one being sent is a single chunk from its end: kept as it is, no cancel.
        assert_eq!(cancels, [queued]);
        assert!(node.peers[&b].inflight.get_ref(&sending).is_some());
        assert!(node.peers[&b].inflight.get_ref(&queued).is_none());
        assert_eq!(fetches.len(), 1, "{fetches:?}");
        assert_eq!(fetches[0].range, Some(2 * CHUNK as u64..4 * CHUNK as u64));

        // Nothing has come yet of a request to cut: cancelled whole.
        let (mut node, _data, b) =
            fallback_setup(now, 100 * CHUNK as u64, 11, Duration::from_secs(8));
        let idle = request_chunks(&mut node, now, b, 0..4);
        node.start_http(now, s, Some(now + Duration::from_secs(5)));
        let (cancels, fetches) = fallback_transmits(&mut node);
        assert_eq!(cancels, [idle]);
        assert_eq!(fetches[0].range, None, "the whole segment");
        assert_eq!(node.downloads[&s].keep_until, None);
    }

    /// A chunk kept at a fallback that has not come when it was due is fetched over HTTP
    /// then, early enough to be in by the deadline: the scheduler wakes for it even when no
    /// HTTP fetch is under way (every other chunk is in).
    #[test]
    fn a_kept_chunk_that_does_not_come_is_fetched_in_time() {
        use download::tests::CHUNK;
        let now = Time::from_secs(10);
        // Only seg(7) is wanted.
        let (mut node, data, b) = fallback_setup(now, 10 * CHUNK as u64, 7, Duration::from_secs(8));
        let s = seg(7);
        let deadline = now + Duration::from_millis(1200);
        assert!(node.downloads[&s].http.is_empty(), "fetched at the setup");
        {
            let dl = node.downloads.get_mut(&s).unwrap();
            let http = Owner::Http(FetchId(99));
            dl.assign(1..4, http);
            dl.write(http, CHUNK as u64, &data[CHUNK..]);
            dl.settle(1, true);
        }
        let id = request_chunks(&mut node, now, b, 0..1);
        // The player's buffer runs low.
        node.handle_player(
            now,
            PlayerState {
                rendition: s.rendition,
                playhead: 7,
                buffer_ahead: Duration::from_millis(1200),
            },
        );
        let (cancels, fetches) = fallback_transmits(&mut node);
        assert!(
            cancels.is_empty() && fetches.is_empty(),
            "{cancels:?} {fetches:?}"
        );
        assert_eq!(node.stats().deadline_fallbacks, 1);
        let until = node.downloads[&s].keep_until.expect("a chunk kept");
        assert!(
            until + node.http_estimate(CHUNK as u64) + node.config.http_margin / 4 <= deadline,
            "kept until {until:?}, past what the deadline allows"
        );
        let wake = node.poll_timeout().expect("a wake-up");
        assert!(wake <= until, "wakes at {wake:?}, after {until:?}");
        let mut t = wake;
        while t < until {
            node.handle_timeout(t);
            assert!(
                fallback_transmits(&mut node).1.is_empty(),
                "fetched before {until:?}"
            );
            t = node
                .poll_timeout()
                .expect("a wake-up")
                .max(t + Duration::from_millis(1));
        }
        node.handle_timeout(until);
        let (cancels, fetches) = fallback_transmits(&mut node);
        assert_eq!(cancels, [id]);
        assert_eq!(fetches.len(), 1, "{fetches:?}");
        assert_eq!(fetches[0].range, Some(0..CHUNK as u64));
        node.handle_http_data(
            until,
            fetches[0].id,
            0,
            None,
            Bytes::copy_from_slice(&data[..CHUNK]),
        );
        assert!(node.has_segment(&s));
        assert_eq!(node.stats().deadline_fallbacks, 1);
    }

    /// An idle holder at least as fast takes a request queued at a slow one behind two
    /// chunks of ours; behind one, the request stays: its chunk may be on its way.
    #[test]
    fn only_requests_surely_still_queued_move_to_an_idle_holder() {
        use download::tests::CHUNK;
        let now = Time::from_secs(100);
        let chunk = CHUNK as u64;
        for (ahead, moves) in [(1, false), (2, true)] {
            let (mut node, _, b) = fallback_setup(now, chunk, 20, Duration::from_secs(60));
            let h = PeerId([10; 20]);
            connect(&mut node, now, h);
            let p = node.peers.get_mut(&h).unwrap();
            p.throughput.sample(10 * chunk, Duration::from_secs(1));
            p.have.insert(seg(7));
            request_chunks(&mut node, now, b, 0..ahead);
            let queued = request_chunks(&mut node, now, b, ahead..ahead + 1);
            node.steal_queued(now, seg(7), &[h], &|_| true);
            assert_eq!(
                !node.peers[&b].inflight.contains_key(&queued),
                moves,
                "{ahead}"
            );
            assert_eq!(node.peers[&h].inflight.len(), usize::from(moves), "{ahead}");
            let sent: Vec<Transmit> = std::iter::from_fn(|| node.poll_transmit()).collect();
            let cancelled = sent
                .iter()
                .any(|t| matches!(t, Transmit::Peer { peer, .. } if *peer == b));
            assert_eq!(cancelled, moves, "{ahead}: the slow holder is told");
        }
    }

    /// A request whose next chunk would come too late is cancelled whole at a fallback, and
    /// HTTP fetches the whole segment.
    #[test]
    fn a_chunk_due_too_late_is_not_kept() {
        use download::tests::CHUNK;
        let now = Time::from_secs(10);
        // A chunk in 10 s; the deadline 5 s away.
        let (mut node, data, b) =
            fallback_setup(now, CHUNK as u64 / 10, 11, Duration::from_secs(8));
        let s = seg(7);
        let id = request_chunks(&mut node, now, b, 0..4);
        send_data(&mut node, now, b, id, 0, &data[..CHUNK]);
        node.start_http(now, s, Some(now + Duration::from_secs(5)));
        let (cancels, fetches) = fallback_transmits(&mut node);
        assert_eq!(cancels, [id]);
        assert_eq!(fetches.len(), 1, "{fetches:?}");
        assert_eq!(fetches[0].range, Some(CHUNK as u64..4 * CHUNK as u64));
        assert!(node.peers[&b].inflight.get_ref(&id).is_none());
        assert_eq!(node.downloads[&s].keep_until, None);
    }

    /// Downloads abandoned together (the player moved past them) are withdrawn in one
    /// `HaveDelta` per rendition, not one message per segment.
    #[test]
    fn downloads_abandoned_together_are_withdrawn_in_one_message() {
        use download::tests::{CHUNK, digest_of};
        let mut node = viewer();
        let now = Time::from_secs(10);
        let rendition = seg(0).rendition;
        node.handle_playlist(
            now,
            Playlist {
                rendition,
                live: true,
                segments: (5..14)
                    .map(|sequence| SegmentMeta {
                        sequence,
                        duration: Duration::from_secs(4),
                        partial: false,
                    })
                    .collect(),
            },
        );
        let player = |playhead| PlayerState {
            rendition,
            playhead,
            buffer_ahead: Duration::from_secs(8),
        };
        node.handle_player(now, player(7));
        let b = PeerId([9; 20]);
        connect(&mut node, now, b);
        for sequence in [7, 8] {
            let data = vec![sequence as u8; 2 * CHUNK];
            let digest = digest_of(&data);
            let mut dl = Download::new();
            dl.set_digest(digest.clone());
            let http = Owner::Http(FetchId(sequence));
            dl.assign(0..1, http);
            dl.write(http, 0, &data[..CHUNK]);
            dl.announced = true;
            node.digests.insert(seg(sequence), digest);
            node.downloads.insert(seg(sequence), Box::new(dl));
        }
        while node.poll_transmit().is_some() {}

        node.handle_player(now, player(11));
        let mut withdrawals = Vec::new();
        while let Some(t) = node.poll_transmit() {
            if let Transmit::Peer { peer, data } = t
                && peer == b
            {
                let frames = wire::decode_message(&data, wire::LARGE_MAX_MESSAGE).unwrap();
                let removed: Vec<Vec<u64>> = frames
                    .into_iter()
                    .filter_map(|f| match f {
                        Frame::HaveDelta { removed, .. } if !removed.is_empty() => Some(removed),
                        _ => None,
                    })
                    .collect();
                if !removed.is_empty() {
                    withdrawals.push(removed);
                }
            }
        }
        assert_eq!(withdrawals, [vec![vec![7, 8]]]);
    }

    /// A neighbour that has announced segments of another rendition only is sent chunk maps
    /// of a rendition once it shows it fetches some of it (a `Fetching` notice here; a
    /// request to this node counts too): a viewer that has just switched renditions has
    /// announced none of its new one, and took the segments it heard of for whole.
    #[test]
    fn a_neighbour_that_switched_renditions_gets_its_chunk_maps() {
        let mut node = viewer();
        let now = Time::from_secs(10);
        let b = PeerId([9; 20]);
        connect(&mut node, now, b);
        let old = RenditionId([2; 8]);
        let new = seg(7);
        let have = Frame::Have(Availability::from_sequences(old, vec![3, 4]));
        let msg = Bytes::from(wire::encode_frames(&[have]));
        node.handle_peer_event(now, b, PeerEvent::Message(msg));
        assert!(!node.peers[&b].plays_with_chunk_maps(&new));
        let notice = Frame::Fetching { segment: seg(8) };
        let msg = Bytes::from(wire::encode_frames(&[notice]));
        node.handle_peer_event(now, b, PeerEvent::Message(msg));
        assert!(node.peers[&b].plays_with_chunk_maps(&new));
        assert!(node.peers[&b].wants_chunk_map(&new));
        // The rendition it announced still counts; a third one does not.
        assert!(node.peers[&b].plays_with_chunk_maps(&SegmentRef {
            rendition: old,
            sequence: 5
        }));
        assert!(!node.peers[&b].plays_with_chunk_maps(&SegmentRef {
            rendition: RenditionId([3; 8]),
            sequence: 5
        }));
        // A notice past its hold says no more (it may have switched away again).
        node.handle_timeout(now + node.config.fetching_hold);
        assert!(!node.peers[&b].plays_with_chunk_maps(&new));
    }

    /// A digest of an enormous segment (its geometry allows 16 GiB) would size a buffer that
    /// exhausts memory: the neighbour that sends one is dropped and the digest is not kept,
    /// also by a node that takes digests unverified.
    #[test]
    fn a_digest_of_an_oversized_segment_drops_its_sender() {
        let mut node = viewer();
        assert!(node.unverified);
        let now = Time::from_secs(1);
        let b = PeerId([9; 20]);
        connect(&mut node, now, b);
        assert!(node.peers.get(&b).is_some_and(|p| p.session().is_some()));
        let id = crate::ids::SegmentId::new(node.config.swarm, seg(5).rendition, 5);
        let chunk = crate::integrity::MAX_CHUNK_SIZE;
        let length = u64::from(chunk) * crate::integrity::MAX_CHUNKS as u64;
        let huge = SegmentDigest::from_parts(id, length, chunk, vec![[0; 32]; 1024]).unwrap();
        let d = DigestSigner::from_secret([5; 32]).sign(huge);
        let msg = wire::encode_frames(&[Frame::Digest(Box::new(d))]);
        node.handle_peer_event(now, b, PeerEvent::Message(Bytes::from(msg)));
        assert!(!node.peers.contains_key(&b), "the sender was kept");
        assert!(!node.digests.contains_key(&seg(5)), "the digest was kept");
        // One just under the limit is taken.
        let c = PeerId([10; 20]);
        connect(&mut node, now, c);
        let ok =
            SegmentDigest::from_parts(id, MAX_SEGMENT_BYTES, 1 << 20, vec![[0; 32]; 64]).unwrap();
        let d = DigestSigner::from_secret([5; 32]).sign(ok);
        let msg = wire::encode_frames(&[Frame::Digest(Box::new(d))]);
        node.handle_peer_event(now, c, PeerEvent::Message(Bytes::from(msg)));
        assert!(node.peers.contains_key(&c));
        assert!(node.digests.contains_key(&seg(5)));
    }

    /// A channel that opens but never brings the neighbour's handshake is given up after
    /// `connect_timeout`, as a connection that never opens: it would hold a neighbour's place
    /// for ever. One whose handshake came stays.
    #[test]
    fn a_neighbour_that_never_sends_its_handshake_is_dropped() {
        let mut node = viewer();
        let t0 = Time::from_secs(1);
        let (mute, talker) = (PeerId([9; 20]), PeerId([10; 20]));
        node.handle_peer_event(t0, mute, PeerEvent::Opened);
        connect(&mut node, t0, talker);
        let due = node.poll_timeout().expect("a wake-up for the handshake");
        assert!(due <= t0 + node.config.connect_timeout, "woken at {due:?}");
        node.handle_timeout(t0 + node.config.connect_timeout - Duration::from_millis(1));
        assert!(node.peers.contains_key(&mute), "dropped too soon");
        node.handle_timeout(t0 + node.config.connect_timeout);
        assert!(
            !node.peers.contains_key(&mute),
            "a mute neighbour kept its place"
        );
        assert!(node.peers.contains_key(&talker));
    }

    /// A neighbour's `Fetching` frames hold this node back for `fetching_hold`; those it never
    /// followed with an announcement are forgotten after that, so that they neither pile up
    /// nor, at the cap, make the node ignore its later ones.
    #[test]
    fn fetching_notices_are_forgotten_after_the_hold() {
        let mut node = viewer();
        let b = PeerId([9; 20]);
        let t0 = Time::from_secs(1);
        connect(&mut node, t0, b);
        let fetching =
            |s: u64| Bytes::from(wire::encode_frames(&[Frame::Fetching { segment: seg(s) }]));
        for s in 0..300 {
            node.handle_peer_event(t0, b, PeerEvent::Message(fetching(s)));
        }
        assert_eq!(node.peers[&b].fetching.len(), 256, "bounded");
        let later = t0 + node.config.fetching_hold + Duration::from_secs(1);
        node.handle_peer_event(later, b, PeerEvent::Message(fetching(1000)));
        let p = &node.peers[&b];
        assert_eq!(p.fetching.len(), 1, "stale notices kept");
        assert!(
            p.fetching.get(&seg(1000)).is_some(),
            "a new notice was ignored"
        );
    }

    /// A neighbour turned away for want of a slot is told to ask again about when one frees:
    /// a chunk's time at the measured uplink, within 50-500 ms.
    #[test]
    fn turned_away_neighbours_retry_when_a_slot_should_free() {
        let mut node = viewer();
        let chunk = u64::from(node.chunk_size);
        assert_eq!(node.slot_retry_ms(), 500, "unmeasured");
        // A chunk in 175 ms (64 KiB at 3 Mbit/s).
        node.uplink.sample(chunk, Duration::from_millis(175));
        let t = node.slot_retry_ms();
        assert!((174..=175).contains(&t), "{t}");
        // A chunk a second: capped.
        node.uplink = Throughput::new(0.0);
        node.uplink.sample(chunk, Duration::from_secs(1));
        assert_eq!(node.slot_retry_ms(), 500);
        // A hundred chunks a second: the floor.
        node.uplink = Throughput::new(0.0);
        node.uplink.sample(100 * chunk, Duration::from_secs(1));
        assert_eq!(node.slot_retry_ms(), 50);
    }

    /// A segment's deadline fallback counts the bytes HTTP fetches of later segments still
    /// have to bring: they share the downlink.
    #[test]
    fn http_fetches_under_way_count_against_a_fallback() {
        let mut node = viewer();
        let seg_a = seg(10);
        let seg_b = seg(11);
        let mut a = Download::new();
        a.length = Some(1_000_000);
        let mut b = Download::new();
        b.length = Some(500_000);
        node.downloads.insert(seg_a, Box::new(a));
        node.downloads.insert(seg_b, Box::new(b));
        // Nothing fetched over HTTP: no backlog.
        assert_eq!(node.http_backlog(seg_a), 0);
        // `b` (later) is being fetched: its missing bytes count for `a`, not for itself.
        let fetch = |id| download::HttpFetch {
            id: FetchId(id),
            started: Time::ZERO,
            received: 0,
            paced: false,
        };
        node.downloads.get_mut(&seg_b).unwrap().http.push(fetch(1));
        assert_eq!(node.http_backlog(seg_a), 500_000);
        assert_eq!(node.http_backlog(seg_b), 0);
        // `a` (earlier) is being fetched too: it does not count for `b`.
        node.downloads.get_mut(&seg_a).unwrap().http.push(fetch(2));
        assert_eq!(node.http_backlog(seg_b), 0);
        assert!(node.http_estimate(1_500_000) > node.http_estimate(1_000_000));
    }

    /// A viewer due to fetch two segments from the origin at once (no neighbours, a slow
    /// origin assumed) fetches the one that plays first alone, and the next when the first
    /// has less than a time to first byte to go: fetched together they would share the
    /// downlink and delay the first.
    #[test]
    fn origin_fetches_go_in_playback_order() {
        let mut config = NodeConfig::new(
            PeerId([1; 20]),
            SwarmId([7; 20]),
            NodeRole::Viewer,
            IntegrityMode::Unverified,
        );
        // 10 s for a 1 MB segment: every listed segment is due at once.
        config.http_initial_rate = 100_000;
        config.segment_size_guess = 1_000_000;
        let t0 = Time::from_secs(100);
        let mut node = Node::new(config, t0, 1).unwrap();
        let rendition = seg(0).rendition;
        node.handle_playlist(
            t0,
            Playlist {
                rendition,
                live: true,
                segments: (100..104)
                    .map(|sequence| SegmentMeta {
                        sequence,
                        duration: Duration::from_secs(4),
                        partial: false,
                    })
                    .collect(),
            },
        );
        node.handle_player(
            t0,
            PlayerState {
                rendition,
                playhead: 102,
                buffer_ahead: Duration::ZERO,
            },
        );
        node.request_segment(t0, seg(102));
        let fetches = |node: &mut Node| {
            let mut out = Vec::new();
            while let Some(t) = node.poll_transmit() {
                if let Transmit::Http(r) = t {
                    let HttpTarget::Segment(s) = r.target;
                    out.push((s.sequence, r.id));
                }
            }
            out
        };
        let first = fetches(&mut node);
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!(first[0].0, 102);
        let id = first[0].1;
        // Half of it: the next still waits.
        let t = t0 + Duration::from_secs(2);
        node.handle_http_data(t, id, 0, Some(1_000_000), Bytes::from(vec![0; 500_000]));
        node.handle_timeout(t);
        assert!(fetches(&mut node).is_empty());
        // 20 kB to go (0.2 s at 100 kB/s, less than the 300 ms time to first byte): the next
        // starts.
        let t = t + Duration::from_secs(5);
        node.handle_http_data(
            t,
            id,
            500_000,
            Some(1_000_000),
            Bytes::from(vec![0; 480_000]),
        );
        node.handle_timeout(t);
        let next = fetches(&mut node);
        assert_eq!(next.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [103]);
    }

    /// A request made before the shell reported a seek gets its deadline set again from the
    /// new playhead; the playhead moving on as it plays changes no deadline.
    #[test]
    fn a_seek_brings_the_deadlines_of_waiting_requests_closer() {
        let t0 = Time::from_secs(100);
        let mut node = viewer();
        let rendition = seg(0).rendition;
        node.handle_playlist(
            t0,
            Playlist {
                rendition,
                live: false,
                segments: (0..200)
                    .map(|sequence| SegmentMeta {
                        sequence,
                        duration: Duration::from_secs(4),
                        partial: false,
                    })
                    .collect(),
            },
        );
        let state = |playhead, ahead| PlayerState {
            rendition,
            playhead,
            buffer_ahead: Duration::from_secs(ahead),
        };
        node.handle_player(t0, state(10, 20));
        // The player jumps to segment 150 and asks for it before the shell's next report: the
        // state it knows puts it 140 segments away.
        node.request_segment(t0, seg(150));
        let far = node.waits[0].deadline;
        assert!(far > t0 + Duration::from_secs(500), "{far:?}");
        // Playing on (one segment further, as time passes): no seek, no change.
        let t1 = t0 + Duration::from_secs(4);
        node.handle_player(t1, state(11, 16));
        assert_eq!(node.waits[0].deadline, far);
        // The report of the seek: due now.
        let t2 = t1 + Duration::from_millis(200);
        node.handle_player(t2, state(150, 0));
        assert_eq!(node.waits[0].deadline, t2);
        // Never later than it was: a report that would put it further changes nothing.
        node.handle_player(t2, state(10, 20));
        assert_eq!(node.waits[0].deadline, t2);

        // A seek just past the buffer: playhead 20 with 30 s buffered (segments 20-27 given to
        // the player), then a request for segment 28 (due when the buffer runs out) and the
        // report of the seek to it.
        let mut node = viewer();
        node.handle_playlist(
            t0,
            Playlist {
                rendition,
                live: false,
                segments: (0..200)
                    .map(|sequence| SegmentMeta {
                        sequence,
                        duration: Duration::from_secs(4),
                        partial: false,
                    })
                    .collect(),
            },
        );
        node.delivered_upto = Some(27);
        node.handle_player(t0, state(20, 30));
        node.request_segment(t0, seg(28));
        assert_eq!(node.waits[0].deadline, t0 + Duration::from_secs(30));
        // Playing on: the buffer a segment short (not yet appended) is no seek.
        let t1 = t0 + Duration::from_secs(2);
        node.handle_player(t1, state(20, 24));
        assert_eq!(node.waits[0].deadline, t0 + Duration::from_secs(30));
        // The seek to 28: nothing buffered there.
        node.handle_player(t1, state(28, 0));
        assert_eq!(node.waits[0].deadline, t1);
    }

    /// A shell reports a drain at the low mark after a send and again at zero, once each.
    #[test]
    fn drain_reports_come_at_the_low_mark_and_at_zero() {
        let low = 16_000;
        let mut d = DrainReports::default();
        assert!(!d.pending());
        assert_eq!(d.check(0, low), None, "nothing sent, nothing owed");
        d.sent();
        assert_eq!(d.threshold(low), low);
        assert_eq!(d.check(64_000, low), None);
        assert_eq!(
            d.check(9_000, low),
            Some(PeerEvent::Drained { buffered: 9_000 })
        );
        assert!(d.pending());
        assert_eq!(
            d.threshold(low),
            0,
            "the browser's event must fire at zero now"
        );
        assert_eq!(d.check(4_000, low), None);
        assert_eq!(d.check(0, low), Some(PeerEvent::Drained { buffered: 0 }));
        assert!(!d.pending());
        assert_eq!(d.check(0, low), None);
        // Empty at once: one report.
        d.sent();
        assert_eq!(d.check(0, low), Some(PeerEvent::Drained { buffered: 0 }));
        assert!(!d.pending());
        // A send while the zero report is owed: the low mark is owed again.
        d.sent();
        assert_eq!(
            d.check(5_000, low),
            Some(PeerEvent::Drained { buffered: 5_000 })
        );
        d.sent();
        assert_eq!(d.threshold(low), low);
        assert_eq!(
            d.check(3_000, low),
            Some(PeerEvent::Drained { buffered: 3_000 })
        );
        assert_eq!(d.check(0, low), Some(PeerEvent::Drained { buffered: 0 }));
    }

    /// The origin's throughput is measured from the first byte to the last, the time to first
    /// byte apart, and shown in the stats: a shell that hands over the body only at its end
    /// would show a far higher rate than the origin's. A segment listed by its parts only
    /// (LL-HLS, still being produced) comes as the packager makes it: its fetch measures
    /// nothing, or the origin would look as slow as the stream's bitrate.
    #[test]
    fn the_origin_is_measured_from_its_first_byte() {
        let fetch = |partial: bool| {
            let t0 = Time::from_secs(100);
            let mut node = viewer();
            node.handle_playlist(
                t0,
                Playlist {
                    rendition: seg(0).rendition,
                    live: true,
                    segments: vec![SegmentMeta {
                        sequence: 5,
                        duration: Duration::from_secs(4),
                        partial,
                    }],
                },
            );
            assert_eq!(node.stats().origin_rate, None);
            node.request_segment(t0, seg(5));
            let id = std::iter::from_fn(|| node.poll_transmit())
                .find_map(|t| match t {
                    Transmit::Http(r) => Some(r.id),
                    _ => None,
                })
                .expect("an origin fetch");
            let total = (!partial).then_some(1_000_000);
            let t1 = t0 + Duration::from_millis(200);
            node.handle_http_data(t1, id, 0, total, Bytes::from(vec![0; 100_000]));
            let t2 = t0 + Duration::from_millis(1200);
            node.handle_http_data(t2, id, 100_000, total, Bytes::from(vec![0; 900_000]));
            node.handle_http_done(t2, id, Ok(()));
            assert!(
                std::iter::from_fn(|| node.poll_event())
                    .any(|e| matches!(e, Event::SegmentReady { .. })),
                "delivered"
            );
            node.stats()
        };
        let s = fetch(false);
        // 300 ms assumed, 200 ms seen: 270 ms; 1 MB in 1.2 s - 0.27 s.
        assert_eq!(s.origin_ttfb, Duration::from_millis(270));
        let rate = s.origin_rate.expect("measured");
        assert!((1_050_000..1_100_000).contains(&rate), "{rate}");
        let s = fetch(true);
        assert_eq!(s.origin_ttfb, Duration::from_millis(300), "as assumed");
        assert_eq!(s.origin_rate, None, "not measured");
    }

    /// A segment's deadline counts the segments delivered since the player's last report:
    /// the buffer it reported does not hold them yet, and they play before. (Counted as
    /// played, the next segment listed right after a delivery, as in LL-HLS, was due a
    /// segment early and fetched whole from the origin at once.)
    #[test]
    fn deadlines_count_segments_delivered_since_the_report() {
        let t0 = Time::from_secs(100);
        let mut node = viewer();
        let playlist = |last: u64| Playlist {
            rendition: seg(0).rendition,
            live: true,
            segments: (3..=last)
                .map(|sequence| SegmentMeta {
                    sequence,
                    duration: Duration::from_secs(2),
                    partial: false,
                })
                .collect(),
        };
        let fetch = |node: &mut Node, now: Time, s: u64| {
            node.request_segment(now, seg(s));
            let id = std::iter::from_fn(|| node.poll_transmit())
                .find_map(|t| match t {
                    Transmit::Http(r) if r.target == HttpTarget::Segment(seg(s)) => Some(r.id),
                    _ => None,
                })
                .expect("an origin fetch");
            node.handle_http_data(now, id, 0, Some(10_000), Bytes::from(vec![0; 10_000]));
            node.handle_http_done(now, id, Ok(()));
            assert!(
                std::iter::from_fn(|| node.poll_event())
                    .any(|e| matches!(e, Event::SegmentReady { segment, .. } if segment == seg(s))),
                "{s} delivered"
            );
        };
        node.handle_playlist(t0, playlist(6));
        fetch(&mut node, t0, 5);
        // Half a second of segment 5 left; 6 comes in before the next report.
        node.handle_player(
            t0,
            PlayerState {
                rendition: seg(0).rendition,
                playhead: 5,
                buffer_ahead: Duration::from_millis(500),
            },
        );
        let t1 = t0 + Duration::from_millis(200);
        fetch(&mut node, t1, 6);
        // 7 is listed before the player reports again: it plays after the 0.3 s left of 5
        // and the 2 s of 6.
        node.handle_playlist(t1, playlist(7));
        let expect = t1 + Duration::from_millis(300) + Duration::from_secs(2);
        assert_eq!(node.deadline_of(t1, seg(7)), Some(expect));
        // The report that follows holds 6 in its buffer: the same deadline.
        node.handle_player(
            t1,
            PlayerState {
                rendition: seg(0).rendition,
                playhead: 5,
                buffer_ahead: Duration::from_millis(2300),
            },
        );
        assert_eq!(node.deadline_of(t1, seg(7)), Some(expect));
        assert_eq!(node.deadline_of(t1, seg(6)), Some(t1), "delivered: due now");

        // The reported buffer runs out before the next report: the segment delivered since
        // plays on from there (not from the query).
        node.handle_player(
            t0,
            PlayerState {
                rendition: seg(0).rendition,
                playhead: 5,
                buffer_ahead: Duration::from_millis(500),
            },
        );
        node.delivered_since_report.push(6);
        let late = t0 + Duration::from_millis(900);
        assert_eq!(
            node.deadline_of(late, seg(7)),
            Some(t0 + Duration::from_millis(2500))
        );

        // Segments the player got elsewhere are in the buffer it reports: only those this
        // node delivered since count again.
        let mut node = viewer();
        node.handle_playlist(t0, playlist(12));
        fetch(&mut node, t0, 3);
        node.handle_player(
            t0,
            PlayerState {
                rendition: seg(0).rendition,
                playhead: 5,
                buffer_ahead: Duration::from_secs(9),
            },
        );
        fetch(&mut node, t1, 10);
        assert_eq!(
            node.deadline_of(t1, seg(11)),
            Some(t0 + Duration::from_secs(11)),
            "9 s reported, then 10"
        );
    }

    /// Nodes given one pool hold one copy of a segment they both fetched; a node without a
    /// pool keeps its own.
    #[test]
    fn nodes_sharing_a_pool_hold_one_copy_of_a_segment() {
        let fetch = |pool: Option<&SegmentPool>| {
            let t0 = Time::from_secs(100);
            let mut node = viewer();
            if let Some(pool) = pool {
                node.share_segments(pool.clone());
            }
            node.handle_playlist(
                t0,
                Playlist {
                    rendition: seg(0).rendition,
                    live: true,
                    segments: vec![SegmentMeta {
                        sequence: 5,
                        duration: Duration::from_secs(4),
                        partial: false,
                    }],
                },
            );
            node.request_segment(t0, seg(5));
            let id = std::iter::from_fn(|| node.poll_transmit())
                .find_map(|t| match t {
                    Transmit::Http(r) => Some(r.id),
                    _ => None,
                })
                .expect("fetched from the origin");
            let body = Bytes::from(vec![3u8; 50_000]);
            node.handle_http_data(t0, id, 0, Some(50_000), body);
            node.handle_http_done(t0, id, Ok(()));
            std::iter::from_fn(|| node.poll_event())
                .find_map(|e| match e {
                    Event::SegmentReady { data, .. } => Some(data),
                    _ => None,
                })
                .expect("delivered")
        };
        let pool = SegmentPool::new();
        let a = fetch(Some(&pool));
        let b = fetch(Some(&pool));
        let own = fetch(None);
        assert_eq!((&a[..], &own[..]), (&[3u8; 50_000][..], &[3u8; 50_000][..]));
        assert_eq!(a.as_ptr(), b.as_ptr(), "one copy for both nodes");
        assert_ne!(own.as_ptr(), a.as_ptr());
        assert_eq!(pool.held(), (1, 50_000));
    }

    #[test]
    fn chunk_maps_say_which_chunks_a_neighbour_holds() {
        // No map: the segment is whole. Bits are least significant first; bits past the map
        // are not held.
        assert!(has_chunk(None, 500));
        let map = [0b0000_0101, 0b1000_0000];
        let held: Vec<usize> = (0..20).filter(|i| has_chunk(Some(&map), *i)).collect();
        assert_eq!(held, [0, 2, 15]);

        let mut p = Peer::new(Conn::Connecting { since: Time::ZERO }, false, 1.0);
        p.set_chunk_map(seg(1), &map, None);
        assert_eq!(p.chunk_map(&seg(1)), Some(&map[..]));
        // A newer map replaces the older one.
        p.set_chunk_map(seg(1), &[0b11], Some(3));
        assert_eq!(p.chunk_map(&seg(1)).unwrap()[..], [0b11]);
        // A full map (the chunk count known) means whole: no map kept.
        p.set_chunk_map(seg(1), &[0b111], Some(3));
        assert_eq!(p.chunk_map(&seg(1)), None);
        // Bounded: the oldest maps go first.
        for s in 0..40 {
            p.set_chunk_map(seg(s), &[1], None);
        }
        assert_eq!(p.chunk_maps.len(), Peer::MAX_CHUNK_MAPS);
        assert_eq!(p.chunk_map(&seg(0)), None);
        assert!(p.chunk_map(&seg(39)).is_some());
    }
}
