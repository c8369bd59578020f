//! A virtual-time harness for scenario tests: nodes, a registry (the tracker), an origin, and
//! links with latency, bandwidth and loss. It jumps from event to event (as str0m's `progress`
//! or quinn's `Pair::drive`), so minutes of playback run in milliseconds.
//!
//! Each node is paired with a player model (startup buffer, real-time consumption, stalls,
//! hls.js-like requests of one segment at a time up to a buffer target). The origin serves a
//! live stream (a new segment every `segment_duration`) or VOD, counts what it sends, and
//! publishes each segment's signed digest (as a sidecar the shell fetches).
#![allow(dead_code, unreachable_pub)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use swarmcdn_core::ids::{PeerId, RenditionId, SwarmId};
use swarmcdn_core::integrity::{DigestSigner, SegmentDigest, SignedDigest, TrustedKeys};
use swarmcdn_core::node::{
    Event, HttpTarget, IntegrityMode, Node, NodeConfig, NodeRole, PeerEvent, PlayerState, Playlist,
    SegmentMeta, Transmit,
};
use swarmcdn_core::registry::{ConnId, Registry, RegistryConfig};
use swarmcdn_core::time::Time;
use swarmcdn_core::tracker_proto::{
    Answer, FromTracker, Offer, OfferId, SessionDescription, ToTracker,
};
use swarmcdn_core::wire::{self, Frame, SegmentRef};

pub const SWARM: SwarmId = SwarmId([0x5a; 20]);
pub const RENDITION: RenditionId = RenditionId([0x11; 8]);
/// A second rendition of the same stream, segment for segment (an ABR ladder's other rung).
pub const RENDITION_B: RenditionId = RenditionId([0x22; 8]);
pub const OPERATOR_SECRET: [u8; 32] = [0x42; 32];

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// Tells a node that its player plays `RENDITION` live at `playhead`, the playlist listing
/// 4 s segments `sequences`, and wants 30 s ahead.
pub fn watch_live(node: &mut Node, now: Time, sequences: std::ops::Range<u64>, playhead: u64) {
    node.handle_playlist(
        now,
        Playlist {
            rendition: RENDITION,
            live: true,
            segments: sequences
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
            rendition: RENDITION,
            playhead,
            buffer_ahead: Duration::from_secs(30),
        },
    );
}

/// A peer's network link.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// One-way latency to the "internet core".
    pub latency: Duration,
    /// Upload capacity, bytes/s.
    pub up: u64,
    /// Download capacity, bytes/s.
    pub down: u64,
    /// Probability that a message needs one retransmission (adds a round trip).
    pub loss: f64,
    /// How late after a publication the peer reloads the live playlist (a player reloads on
    /// its own timer, so it sees a new segment up to a target duration late).
    pub playlist_lag: Duration,
}

impl Default for Link {
    fn default() -> Self {
        Self {
            latency: ms(20),
            up: 2_500_000,
            down: 12_500_000,
            loss: 0.0,
            playlist_lag: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub live: bool,
    pub segment_duration: Duration,
    pub segment_bytes: usize,
    /// Live: segments in the playlist window. VOD: segments in the stream.
    pub window: u64,
    /// Live: the live edge starts at this sequence.
    pub first_sequence: u64,
}

impl StreamSpec {
    pub fn live() -> Self {
        Self {
            live: true,
            segment_duration: secs(2),
            segment_bytes: 500_000,
            window: 6,
            first_sequence: 1000,
        }
    }

    pub fn vod(segments: u64) -> Self {
        Self {
            live: false,
            segment_duration: secs(2),
            segment_bytes: 500_000,
            window: segments,
            first_sequence: 0,
        }
    }
}

/// The origin: deterministic segment bytes, counters, digests.
pub struct Origin {
    pub spec: StreamSpec,
    pub start: Time,
    pub ttfb: Duration,
    pub bytes_per_segment: BTreeMap<u64, u64>,
    pub requests: u64,
    /// Requests answered with an error (origin down, segment not published).
    pub failed_requests: u64,
    pub bytes: u64,
    /// The stream's renditions (seeds follow them all).
    pub renditions: Vec<RenditionId>,
    signer: DigestSigner,
    digests: HashMap<(RenditionId, u64), SignedDigest>,
    cache: std::cell::RefCell<HashMap<(RenditionId, u64), Bytes>>,
    pub down: bool,
}

impl Origin {
    pub fn segment(&self, seq: u64) -> Bytes {
        self.segment_of(RENDITION, seq)
    }

    /// The bytes of a segment of a rendition (each rendition's differ).
    pub fn segment_of(&self, rendition: RenditionId, seq: u64) -> Bytes {
        if let Some(b) = self.cache.borrow().get(&(rendition, seq)) {
            return b.clone();
        }
        let b = self.make_segment(rendition, seq);
        self.cache.borrow_mut().insert((rendition, seq), b.clone());
        b
    }

    fn make_segment(&self, rendition: RenditionId, seq: u64) -> Bytes {
        let mut v = vec![0u8; self.spec.segment_bytes];
        let salt = if rendition == RENDITION {
            0
        } else {
            u64::from_le_bytes(rendition.0)
        };
        let mut x = (seq ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for b in v.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        Bytes::from(v)
    }

    pub fn digest(&mut self, seg: SegmentRef) -> SignedDigest {
        let key = (seg.rendition, seg.sequence);
        if let Some(d) = self.digests.get(&key) {
            return d.clone();
        }
        let data = self.segment_of(seg.rendition, seg.sequence);
        let d = self.signer.sign(SegmentDigest::compute(
            seg.in_swarm(SWARM),
            &data,
            swarmcdn_core::integrity::DEFAULT_CHUNK_SIZE,
        ));
        self.digests.insert(key, d.clone());
        d
    }

    /// The live edge: the newest published sequence at `now`.
    pub fn edge(&self, now: Time) -> u64 {
        if !self.spec.live {
            return self.spec.window - 1;
        }
        let elapsed = now.saturating_since(self.start);
        let n = elapsed.as_micros() / self.spec.segment_duration.as_micros();
        self.spec.first_sequence + n as u64
    }

    pub fn playlist(&self, now: Time) -> Playlist {
        self.playlist_of(RENDITION, now)
    }

    pub fn playlist_of(&self, rendition: RenditionId, now: Time) -> Playlist {
        let (first, last) = if self.spec.live {
            let edge = self.edge(now);
            (
                edge.saturating_sub(self.spec.window - 1).max(
                    self.spec
                        .first_sequence
                        .saturating_sub(self.spec.window - 1),
                ),
                edge,
            )
        } else {
            (0, self.spec.window - 1)
        };
        Playlist {
            rendition,
            live: self.spec.live,
            segments: (first..=last)
                .map(|sequence| SegmentMeta {
                    sequence,
                    duration: self.spec.segment_duration,
                    partial: false,
                })
                .collect(),
        }
    }

    pub fn published(&self, now: Time, seq: u64) -> bool {
        !self.spec.live || seq <= self.edge(now)
    }

    /// Origin copies of each published segment (bytes sent / segment size).
    pub fn copies(&self) -> Vec<(u64, f64)> {
        self.bytes_per_segment
            .iter()
            .map(|(s, b)| (*s, *b as f64 / self.spec.segment_bytes as f64))
            .collect()
    }
}

/// The player model attached to a viewer.
#[derive(Debug, Clone)]
pub struct Player {
    /// The rendition it plays (and requests next).
    pub rendition: RenditionId,
    pub started: bool,
    pub start_time: Option<Time>,
    pub joined: Time,
    /// Sequence under the playhead.
    pub playhead: u64,
    /// Media time consumed within the playhead's segment.
    pub into_segment: Duration,
    /// Delivered segments not yet fully played: (seq, duration).
    pub buffer: Vec<(u64, Duration)>,
    pub next_request: u64,
    pub outstanding: bool,
    pub last_advance: Time,
    pub stalls: u32,
    pub stalled_time: Duration,
    pub stalled: bool,
    /// When each stall began, and at which sequence.
    pub stall_log: Vec<(Time, u64)>,
    pub target_buffer: Duration,
    pub startup_segments: usize,
    pub bad_bytes: u64,
    pub http_bytes: u64,
    pub p2p_bytes: u64,
    pub delivered: Vec<u64>,
    /// Segments whose bytes came partly from peers and partly from the origin.
    pub mixed: u32,
    pub played_until: Option<u64>,
    /// One past the last sequence (VOD); `u64::MAX` for live.
    pub end: u64,
}

impl Player {
    fn buffer_ahead(&self) -> Duration {
        self.buffer
            .iter()
            .map(|(_, d)| *d)
            .sum::<Duration>()
            .saturating_sub(self.into_segment)
    }
}

pub struct SimNode {
    pub node: Node,
    pub id: PeerId,
    pub conn: ConnId,
    pub link: Link,
    pub role: NodeRole,
    pub player: Option<Player>,
    pub alive: bool,
    pub corrupt_uploads: bool,
    /// When its upload and download pipes are next free.
    up_free: Time,
    down_free: Time,
    pub dropped: Vec<(PeerId, String)>,
    pub integrity_failures: u64,
    pending_offers: HashMap<OfferId, ()>,
    /// Bytes handed to each DataChannel and not yet sent.
    send_queued: HashMap<PeerId, u64>,
    /// The most bytes handed to its DataChannels together and not yet sent.
    pub peak_send_queued: u64,
}

#[derive(Debug)]
enum Ev {
    ToRegistry(usize, ToTracker),
    FromRegistry(usize, FromTracker),
    PeerOpen(usize, PeerId),
    PeerMsg(usize, PeerId, Bytes),
    /// A peer message reaches the receiver's downlink: (receiver, sender index, data).
    PeerArrive(usize, usize, Bytes),
    PeerClosed(usize, PeerId),
    HttpData(usize, swarmcdn_core::node::FetchId, u64, Option<u64>, Bytes),
    HttpDone(usize, swarmcdn_core::node::FetchId, Option<u16>),
    Wake(usize),
    Departed(usize, PeerId, u64),
    PlayerTick(usize),
    PlaylistReload(usize),
}

pub struct Harness {
    pub now: Time,
    pub nodes: Vec<SimNode>,
    pub registry: Registry,
    pub origin: Origin,
    pub tracker_up: bool,
    queue: BinaryHeap<Reverse<(Time, u64, usize)>>,
    evs: HashMap<usize, Ev>,
    next_ev: usize,
    seq: u64,
    rng: Xoshiro256PlusPlus,
    by_peer: HashMap<PeerId, usize>,
    by_conn: HashMap<ConnId, usize>,
    offers: HashMap<OfferId, usize>,
    cancelled_fetches: std::collections::HashSet<(usize, u64)>,
    wakes: HashMap<usize, Time>,
    /// When the last message from one node to another is delivered: a DataChannel is
    /// ordered, so a message retransmitted after a loss holds back those behind it.
    last_delivery: HashMap<(usize, usize), Time>,
    pub ice_delay: Duration,
    pub tracker_latency: Duration,
    /// Inputs handed to nodes (every `handle_*` call), for benchmarks.
    pub node_inputs: u64,
}

impl Harness {
    pub fn new(spec: StreamSpec, seed: u64) -> Self {
        let origin = Origin {
            spec,
            start: Time::ZERO,
            ttfb: ms(50),
            bytes_per_segment: BTreeMap::new(),
            requests: 0,
            failed_requests: 0,
            bytes: 0,
            renditions: vec![RENDITION],
            signer: DigestSigner::from_secret(OPERATOR_SECRET),
            digests: HashMap::new(),
            cache: Default::default(),
            down: false,
        };
        Self {
            now: Time::ZERO,
            nodes: Vec::new(),
            registry: Registry::new(RegistryConfig::default(), seed).unwrap(),
            origin,
            tracker_up: true,
            queue: BinaryHeap::new(),
            evs: HashMap::new(),
            next_ev: 0,
            seq: 0,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            by_peer: HashMap::new(),
            by_conn: HashMap::new(),
            offers: HashMap::new(),
            cancelled_fetches: Default::default(),
            wakes: HashMap::new(),
            last_delivery: HashMap::new(),
            ice_delay: ms(300),
            tracker_latency: ms(30),
            node_inputs: 0,
        }
    }

    pub fn operator_keys() -> TrustedKeys {
        TrustedKeys::new([DigestSigner::from_secret(OPERATOR_SECRET).public_key()])
    }

    pub fn config(&self, n: usize, role: NodeRole) -> NodeConfig {
        let mut id = [0u8; 20];
        id[..8].copy_from_slice(&(n as u64 + 1).to_be_bytes());
        id[8] = 0xEE;
        let integrity = match role {
            NodeRole::Seed => IntegrityMode::Sign {
                secret: OPERATOR_SECRET,
                trusted: TrustedKeys::default(),
            },
            NodeRole::Viewer => IntegrityMode::Verify(Self::operator_keys()),
        };
        NodeConfig::new(PeerId(id), SWARM, role, integrity)
    }

    /// Adds `count` viewers uploading at `up` bytes/s, 700 ms apart, each configured by
    /// `configure`.
    pub fn add_viewers(&mut self, count: usize, up: u64, configure: impl Fn(&mut NodeConfig)) {
        for i in 0..count {
            let mut c = self.config(i, NodeRole::Viewer);
            configure(&mut c);
            self.add(
                c,
                Link {
                    up,
                    ..Link::default()
                },
            );
            self.run_for(ms(700));
        }
    }

    /// Adds a node that joins now.
    pub fn add(&mut self, config: NodeConfig, link: Link) -> usize {
        let n = self.nodes.len();
        let role = config.role;
        let id = config.peer_id;
        let node = Node::new(config, self.now, 1000 + n as u64).unwrap();
        let player = (role == NodeRole::Viewer).then(|| {
            let edge = self.origin.edge(self.now);
            let start = if self.origin.spec.live {
                edge.saturating_sub(3)
            } else {
                0
            };
            Player {
                rendition: RENDITION,
                started: false,
                start_time: None,
                joined: self.now,
                playhead: start,
                into_segment: Duration::ZERO,
                buffer: Vec::new(),
                next_request: start,
                outstanding: false,
                last_advance: self.now,
                stalls: 0,
                stalled_time: Duration::ZERO,
                stalled: false,
                stall_log: Vec::new(),
                target_buffer: secs(30),
                startup_segments: 1,
                bad_bytes: 0,
                http_bytes: 0,
                p2p_bytes: 0,
                delivered: Vec::new(),
                mixed: 0,
                played_until: None,
                end: if self.origin.spec.live {
                    u64::MAX
                } else {
                    self.origin.spec.window
                },
            }
        });
        self.nodes.push(SimNode {
            node,
            id,
            conn: ConnId(n as u64),
            link,
            role,
            player,
            alive: true,
            corrupt_uploads: false,
            up_free: self.now,
            down_free: self.now,
            dropped: Vec::new(),
            integrity_failures: 0,
            pending_offers: HashMap::new(),
            send_queued: HashMap::new(),
            peak_send_queued: 0,
        });
        self.by_peer.insert(id, n);
        self.by_conn.insert(ConnId(n as u64), n);
        if self.tracker_up {
            let now = self.now;
            self.nodes[n].node.handle_tracker_connected(now);
        }
        self.push(self.now, Ev::PlaylistReload(n));
        if role == NodeRole::Viewer {
            self.push(self.now, Ev::PlayerTick(n));
        }
        self.drain(n);
        n
    }

    /// Stops a node abruptly (its connections close after a latency).
    pub fn kill(&mut self, n: usize) {
        self.nodes[n].alive = false;
        self.registry.handle_disconnect(self.nodes[n].conn);
        let peers: Vec<PeerId> = self.nodes[n].node.connected_peers().collect();
        let me = self.nodes[n].id;
        for p in peers {
            if let Some(&m) = self.by_peer.get(&p) {
                let at = self.now + self.nodes[m].link.latency * 2;
                self.push(at, Ev::PeerClosed(m, me));
            }
        }
    }

    pub fn set_tracker(&mut self, up: bool) {
        self.tracker_up = up;
        let now = self.now;
        for n in 0..self.nodes.len() {
            if !self.nodes[n].alive {
                continue;
            }
            if up {
                self.nodes[n].node.handle_tracker_connected(now);
            } else {
                self.nodes[n].node.handle_tracker_disconnected(now);
                self.registry.handle_disconnect(self.nodes[n].conn);
            }
            self.drain(n);
        }
    }

    fn push(&mut self, at: Time, ev: Ev) {
        let id = self.next_ev;
        self.next_ev += 1;
        self.evs.insert(id, ev);
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, id)));
    }

    /// Runs until `until` (virtual time).
    pub fn run_until(&mut self, until: Time) {
        while let Some(Reverse((at, _, id))) = self.queue.peek().copied() {
            if at > until {
                break;
            }
            self.queue.pop();
            self.now = at;
            let ev = self.evs.remove(&id).expect("queued event exists");
            self.dispatch(ev);
        }
        self.now = until;
        // Bring every player's accounting up to date.
        for n in 0..self.nodes.len() {
            if self.nodes[n].alive {
                self.advance_player(n);
            }
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn dispatch(&mut self, ev: Ev) {
        let now = self.now;
        if !matches!(ev, Ev::ToRegistry(..)) {
            self.node_inputs += 1;
        }
        match ev {
            Ev::ToRegistry(n, msg) => {
                if !self.tracker_up || !self.nodes[n].alive {
                    return;
                }
                let mut out = Vec::new();
                self.registry
                    .handle_message(now, self.nodes[n].conn, msg, &mut out);
                if let Some(t) = self.registry.poll_timeout()
                    && t <= now
                {
                    self.registry.handle_timeout(now);
                }
                for (conn, reply) in out {
                    if let Some(&m) = self.by_conn.get(&conn) {
                        let at = now + self.tracker_latency;
                        self.push(at, Ev::FromRegistry(m, reply));
                    }
                }
            }
            Ev::FromRegistry(n, msg) => {
                if !self.tracker_up || !self.nodes[n].alive {
                    return;
                }
                self.nodes[n].node.handle_tracker_msg(now, msg);
                self.drain(n);
            }
            Ev::PeerOpen(n, peer) => {
                if !self.nodes[n].alive {
                    return;
                }
                self.nodes[n]
                    .node
                    .handle_peer_event(now, peer, PeerEvent::Opened);
                self.drain(n);
            }
            Ev::PeerArrive(m, n, data) => {
                let size = data.len() as u64;
                let down = self.nodes[m].link.down;
                let start = self.nodes[m].down_free.max(now);
                let mut done = start + Duration::from_micros(size * 1_000_000 / down);
                self.nodes[m].down_free = done;
                let last = self.last_delivery.entry((n, m)).or_insert(done);
                done = done.max(*last);
                *last = done;
                let from = self.nodes[n].id;
                self.push(done, Ev::PeerMsg(m, from, data));
            }
            Ev::PeerMsg(n, from, data) => {
                if !self.nodes[n].alive {
                    return;
                }
                self.nodes[n]
                    .node
                    .handle_peer_event(now, from, PeerEvent::Message(data));
                self.drain(n);
            }
            Ev::PeerClosed(n, peer) => {
                if !self.nodes[n].alive {
                    return;
                }
                self.nodes[n]
                    .node
                    .handle_peer_event(now, peer, PeerEvent::Closed);
                self.drain(n);
            }
            Ev::HttpData(n, id, offset, total, data) => {
                if !self.nodes[n].alive || self.cancelled_fetches.contains(&(n, id.0)) {
                    return;
                }
                self.nodes[n]
                    .node
                    .handle_http_data(now, id, offset, total, data);
                self.drain(n);
            }
            Ev::HttpDone(n, id, error) => {
                if !self.nodes[n].alive || self.cancelled_fetches.contains(&(n, id.0)) {
                    return;
                }
                let result = match error {
                    None => Ok(()),
                    Some(code) => Err(swarmcdn_core::node::FetchError::Status(code)),
                };
                self.nodes[n].node.handle_http_done(now, id, result);
                self.drain(n);
            }
            Ev::Departed(n, peer, size) => {
                // The DataChannel's buffered amount falls; below the low-water mark the
                // browser fires `bufferedamountlow`.
                let low = self.nodes[n].node.config().send_buffer_low;
                let q = self.nodes[n].send_queued.entry(peer).or_default();
                let before = *q;
                *q = q.saturating_sub(size);
                let after = *q;
                // Shells report a drain below the low-water mark and an empty buffer (see
                // `PeerEvent::Drained`).
                let crossed = before > low && after <= low;
                let emptied = before > 0 && after == 0;
                if self.nodes[n].alive && (crossed || emptied) {
                    self.nodes[n].node.handle_peer_event(
                        now,
                        peer,
                        PeerEvent::Drained { buffered: after },
                    );
                    self.drain(n);
                }
            }
            Ev::Wake(n) => {
                if !self.nodes[n].alive {
                    return;
                }
                if self.wakes.get(&n) != Some(&now) {
                    return;
                }
                self.wakes.remove(&n);
                self.nodes[n].node.handle_timeout(now);
                self.drain(n);
            }
            Ev::PlaylistReload(n) => {
                if !self.nodes[n].alive {
                    return;
                }
                self.load_playlists(n);
                if self.origin.spec.live {
                    // Reload at the next publication (plus the client's delay).
                    let edge = self.origin.edge(now);
                    let next = self.origin.start
                        + self.origin.spec.segment_duration
                            * (edge + 1 - self.origin.spec.first_sequence) as u32
                        + self.nodes[n].link.latency * 2
                        + self.nodes[n].link.playlist_lag;
                    self.push(next, Ev::PlaylistReload(n));
                }
            }
            Ev::PlayerTick(n) => {
                if !self.nodes[n].alive {
                    return;
                }
                self.player_tick(n);
            }
        }
    }

    /// Gives a node the playlists it follows now: a seed every rendition of the stream, a
    /// viewer its player's (as hls.js loads only the playing level's).
    pub fn load_playlists(&mut self, n: usize) {
        let now = self.now;
        let renditions = match &self.nodes[n].player {
            Some(p) => vec![p.rendition],
            None => self.origin.renditions.clone(),
        };
        for r in renditions {
            let pl = self.origin.playlist_of(r, now);
            self.nodes[n].node.handle_playlist(now, pl);
        }
        self.drain(n);
    }

    /// Drains a node's outputs into the simulated world.
    fn drain(&mut self, n: usize) {
        let now = self.now;
        while let Some(t) = self.nodes[n].node.poll_transmit() {
            self.transmit(n, t);
        }
        while let Some(e) = self.nodes[n].node.poll_event() {
            self.event(n, e);
        }
        if let Some(t) = self.nodes[n].node.poll_timeout() {
            let t = t.max(now);
            if self.wakes.get(&n) != Some(&t) {
                self.wakes.insert(n, t);
                self.push(t, Ev::Wake(n));
            }
        }
    }

    fn transmit(&mut self, n: usize, t: Transmit) {
        let now = self.now;
        let lat = self.nodes[n].link.latency;
        match t {
            Transmit::Announce {
                mut announce,
                offers,
            } => {
                for _ in 0..offers {
                    let offer_id = OfferId(self.rng.random());
                    self.offers.insert(offer_id, n);
                    announce.offers.push(Offer {
                        offer_id,
                        offer: SessionDescription::offer("v=0 sim"),
                    });
                }
                if self.tracker_up {
                    self.push(
                        now + lat + self.tracker_latency,
                        Ev::ToRegistry(n, ToTracker::Announce(*announce)),
                    );
                }
            }
            Transmit::AcceptOffer(o) => {
                let answer = ToTracker::Answer(Answer {
                    info_hash: o.info_hash,
                    peer_id: self.nodes[n].id,
                    to_peer_id: o.peer_id,
                    offer_id: o.offer_id,
                    answer: SessionDescription::answer("v=0 sim"),
                    ext: None,
                });
                if self.tracker_up {
                    self.push(now + lat + self.tracker_latency, Ev::ToRegistry(n, answer));
                }
            }
            Transmit::CompleteOffer(a) => {
                // ICE and DTLS: both ends open after a delay.
                if let Some(&m) = self.by_peer.get(&a.peer_id) {
                    let at = now + self.ice_delay + lat + self.nodes[m].link.latency;
                    let me = self.nodes[n].id;
                    self.push(at, Ev::PeerOpen(n, a.peer_id));
                    self.push(at, Ev::PeerOpen(m, me));
                }
            }
            Transmit::DropOffer(_) => {}
            Transmit::Peer { peer, mut data } => {
                let Some(&m) = self.by_peer.get(&peer) else {
                    return;
                };
                if self.nodes[n].corrupt_uploads {
                    data = corrupt(data);
                }
                let size = data.len() as u64;
                // Serialize through our upload pipe and their download pipe.
                let up = self.nodes[n].link.up;
                let start = self.nodes[n].up_free.max(now);
                let sent = start + Duration::from_micros(size * 1_000_000 / up);
                self.nodes[n].up_free = sent;
                *self.nodes[n].send_queued.entry(peer).or_default() += size;
                let queued = self.nodes[n].send_queued.values().sum();
                self.nodes[n].peak_send_queued = self.nodes[n].peak_send_queued.max(queued);
                self.push(sent, Ev::Departed(n, peer, size));
                let mut arrive = sent + lat + self.nodes[m].link.latency;
                let loss = self.nodes[n].link.loss.max(self.nodes[m].link.loss);
                if loss > 0.0 && self.rng.random::<f64>() < loss {
                    arrive += (lat + self.nodes[m].link.latency) * 2;
                }
                // The receiver's downlink is taken when the message reaches it: reserving it
                // now, for a message that arrives seconds later behind a slow uplink's
                // queue, would hold back everything the downlink receives before then
                // (HTTP fallbacks included).
                self.push(arrive, Ev::PeerArrive(m, n, data));
            }
            Transmit::ClosePeer(peer) => {
                if let Some(&m) = self.by_peer.get(&peer) {
                    let at = now + lat + self.nodes[m].link.latency;
                    let me = self.nodes[n].id;
                    self.push(at, Ev::PeerClosed(m, me));
                }
            }
            Transmit::Http(req) => {
                let HttpTarget::Segment(seg) = req.target;
                if self.origin.down || !self.origin.published(now, seg.sequence) {
                    // Not there (yet): a 404 after a round trip.
                    let at = now + lat * 2 + self.origin.ttfb;
                    let id = req.id;
                    self.origin.failed_requests += 1;
                    self.push(at, Ev::HttpDone(n, id, Some(404)));
                    return;
                }
                let body = self.origin.segment_of(seg.rendition, seg.sequence);
                let total = body.len() as u64;
                let range = req.range.clone().unwrap_or(0..total);
                let range = range.start.min(total)..range.end.min(total);
                let len = range.end - range.start;
                self.origin.requests += 1;
                self.origin.bytes += len;
                *self
                    .origin
                    .bytes_per_segment
                    .entry(seg.sequence)
                    .or_default() += len;
                // Time: round trip + TTFB, then the body through our download pipe, in pieces.
                let first = now + lat * 2 + self.origin.ttfb;
                let down = self.nodes[n].link.down;
                let mut t = self.nodes[n].down_free.max(first);
                let piece = 64 * 1024;
                let mut off = range.start;
                while off < range.end {
                    let end = (off + piece).min(range.end);
                    t += Duration::from_micros((end - off) * 1_000_000 / down);
                    let data = body.slice(off as usize..end as usize);
                    self.push(t, Ev::HttpData(n, req.id, off, Some(total), data));
                    off = end;
                }
                self.nodes[n].down_free = t;
                self.push(t, Ev::HttpDone(n, req.id, None));
                // The origin publishes digests: the shell fetches the sidecar with the segment.
                let d = self.origin.digest(seg);
                let node = &mut self.nodes[n].node;
                node.handle_digest(now, d);
            }
            Transmit::CancelHttp(id) => {
                self.cancelled_fetches.insert((n, id.0));
            }
        }
    }

    fn event(&mut self, n: usize, e: Event) {
        let now = self.now;
        match e {
            Event::SegmentReady {
                segment,
                data,
                sources,
                ..
            } => {
                let expected = self.origin.segment_of(segment.rendition, segment.sequence);
                let player = self.nodes[n].player.as_mut().expect("only viewers request");
                let bad = data
                    .iter()
                    .zip(expected.iter())
                    .filter(|(a, b)| a != b)
                    .count() as u64
                    + data.len().abs_diff(expected.len()) as u64;
                player.bad_bytes += bad;
                player.http_bytes += sources.http;
                player.p2p_bytes += sources.p2p;
                player.delivered.push(segment.sequence);
                if sources.http > 0 && sources.p2p > 0 {
                    player.mixed += 1;
                }
                player
                    .buffer
                    .push((segment.sequence, self.origin.spec.segment_duration));
                player.outstanding = false;
                self.push(now, Ev::PlayerTick(n));
            }
            Event::SegmentFailed { .. } => {
                let player = self.nodes[n].player.as_mut().expect("only viewers request");
                player.outstanding = false;
                self.push(now + ms(500), Ev::PlayerTick(n));
            }
            Event::PeerDropped { peer, reason } => {
                self.nodes[n].dropped.push((peer, format!("{reason:?}")));
            }
            Event::IntegrityFailure { .. } => {
                self.nodes[n].integrity_failures += 1;
            }
            _ => {}
        }
    }

    fn advance_player(&mut self, n: usize) {
        let now = self.now;
        let Some(p) = self.nodes[n].player.as_mut() else {
            return;
        };
        let mut dt = now.saturating_since(p.last_advance);
        p.last_advance = now;
        if !p.started {
            return;
        }
        while dt > Duration::ZERO {
            let Some(&(seq, dur)) = p.buffer.first() else {
                if p.played_until.is_some_and(|s| s + 1 >= p.end) {
                    // The end of a VOD stream: ended, not stalled.
                    return;
                }
                if !p.stalled {
                    p.stalled = true;
                    p.stalls += 1;
                    p.stall_log.push((now, p.playhead));
                }
                p.stalled_time += dt;
                return;
            };
            p.stalled = false;
            p.playhead = seq;
            let left = dur.saturating_sub(p.into_segment);
            if dt >= left {
                dt -= left;
                p.into_segment = Duration::ZERO;
                p.buffer.remove(0);
                p.played_until = Some(seq);
                if let Some(&(next, _)) = p.buffer.first() {
                    p.playhead = next;
                } else {
                    p.playhead = seq + 1;
                }
            } else {
                p.into_segment += dt;
                dt = Duration::ZERO;
            }
        }
    }

    fn player_tick(&mut self, n: usize) {
        self.advance_player(n);
        let now = self.now;
        let edge = self.origin.edge(now);
        let live = self.origin.spec.live;
        let last = if live {
            edge
        } else {
            self.origin.spec.window - 1
        };
        let seg_dur = self.origin.spec.segment_duration;
        let p = self.nodes[n].player.as_mut().expect("viewer");
        if !p.started && p.buffer.len() >= p.startup_segments {
            p.started = true;
            p.start_time = Some(now);
            p.last_advance = now;
        }
        let rendition = p.rendition;
        let state = PlayerState {
            rendition,
            playhead: p.playhead,
            buffer_ahead: p.buffer_ahead(),
        };
        let mut request = None;
        if !p.outstanding && p.buffer_ahead() < p.target_buffer && p.next_request <= last {
            request = Some(p.next_request);
            p.next_request += 1;
            p.outstanding = true;
        }
        // Next tick: when the buffer runs out, or a new segment may appear.
        let next = if p.started {
            now + p.buffer_ahead().min(seg_dur).max(ms(100))
        } else {
            now + ms(250)
        };
        self.nodes[n].node.handle_player(now, state);
        if let Some(seq) = request {
            self.nodes[n].node.request_segment(
                now,
                SegmentRef {
                    rendition,
                    sequence: seq,
                },
            );
        }
        self.drain(n);
        self.push(next, Ev::PlayerTick(n));
    }

    // -------------------------------------------------------------------------------------
    // Measurements.

    pub fn viewers(&self) -> impl Iterator<Item = &SimNode> {
        self.nodes.iter().filter(|n| n.role == NodeRole::Viewer)
    }

    pub fn viewer_bytes(&self) -> (u64, u64) {
        self.viewers()
            .filter_map(|n| n.player.as_ref())
            .fold((0, 0), |(h, p), pl| (h + pl.http_bytes, p + pl.p2p_bytes))
    }

    /// P2P share of the viewers' segment bytes.
    pub fn p2p_share(&self) -> f64 {
        let (h, p) = self.viewer_bytes();
        p as f64 / (h + p).max(1) as f64
    }

    pub fn total_stalls(&self) -> u32 {
        self.viewers()
            .filter_map(|n| n.player.as_ref())
            .map(|p| p.stalls)
            .sum()
    }

    pub fn bad_bytes(&self) -> u64 {
        self.viewers()
            .filter_map(|n| n.player.as_ref())
            .map(|p| p.bad_bytes)
            .sum()
    }

    /// Mean origin copies per segment over the given sequence range.
    pub fn mean_copies(&self, range: std::ops::Range<u64>) -> f64 {
        let seg = self.origin.spec.segment_bytes as f64;
        let total: u64 = range
            .clone()
            .map(|s| self.origin.bytes_per_segment.get(&s).copied().unwrap_or(0))
            .sum();
        total as f64 / seg / (range.end - range.start) as f64
    }

    pub fn summary(&self) -> String {
        let (h, p) = self.viewer_bytes();
        let mut s = format!(
            "t={:?} origin: {} requests {} bytes | viewers: http {h} p2p {p} share {:.3} stalls {} bad {}",
            self.now.saturating_since(Time::ZERO),
            self.origin.requests,
            self.origin.bytes,
            self.p2p_share(),
            self.total_stalls(),
            self.bad_bytes()
        );
        for (i, n) in self.nodes.iter().enumerate() {
            let st = n.node.stats();
            s.push_str(&format!(
                "\n  node {i} {:?} alive={} peers={} http={} p2p_down={} up={} fallbacks={} late={}",
                n.role, n.alive, st.peers, st.http_bytes, st.p2p_bytes_down, st.p2p_bytes_up, st.deadline_fallbacks, st.late_segments
            ));
            if let Some(pl) = &n.player {
                s.push_str(&format!(
                    " | stalls={} {:?} delivered={} playhead={}",
                    pl.stalls,
                    pl.stall_log,
                    pl.delivered.len(),
                    pl.playhead
                ));
            }
        }
        s
    }
}

/// Flips bits in the payload of every Data frame of a message.
fn corrupt(data: Bytes) -> Bytes {
    let Ok(frames) = wire::decode_message(&data, wire::LARGE_MAX_MESSAGE) else {
        return data;
    };
    let frames: Vec<Frame> = frames
        .into_iter()
        .map(|f| match f {
            Frame::Data {
                id,
                segment,
                offset,
                payload,
            } => {
                let mut p = payload.to_vec();
                for b in p.iter_mut().step_by(97) {
                    *b ^= 0x5a;
                }
                Frame::Data {
                    id,
                    segment,
                    offset,
                    payload: Bytes::from(p),
                }
            }
            f => f,
        })
        .collect();
    Bytes::from(wire::encode_frames(&frames))
}
