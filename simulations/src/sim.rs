//! One simulation run: the production peer state machine (`core::node::Node`) for every
//! viewer and the production swarm registry (`core::registry::Registry`) as the tracker, in
//! virtual time, with the models of [`crate::model`] around them.
//!
//! The world around the nodes:
//! - **Access links**: each viewer has an uplink (its usable P2P upload) and a downlink.
//!   Every message a node sends is serialized through its uplink (FIFO at message
//!   granularity; the node interleaves its uploads round-robin, so concurrent transfers share
//!   the uplink fairly to within one message, a few KiB at the default byte scale), crosses
//!   the core network (one-way latency by region), and takes its own length at the
//!   receiver's downlink rate. HTTP bodies share the receiver's downlink: it serves the
//!   bodies under way round-robin, one chunk at a time (processor sharing to within a
//!   chunk), and a cancelled body leaves it at once. Peer messages do not queue on the
//!   downlink: a message scheduled now may arrive
//!   later than one scheduled after it, and a FIFO reservation would hold the earlier one
//!   behind it; the suite's downlinks are several times faster than the uplinks that pace
//!   peer messages, so the error is small.
//! - **Signaling**: announces, offers and answers go through the registry with the tracker's
//!   latency; a completed offer opens the DataChannel after an ICE time drawn from a
//!   log-normal, or fails (NAT classes that cannot connect, transient failures, partitions).
//! - **CDN**: elastic; each response starts after a round trip and a log-normal TTFB.
//! - **Players**: hls.js-like: start after one segment, one request at a time up to a
//!   30 s buffer, live start three segments behind the newest, stalls when the buffer runs dry.
//! - **Churn**: arrivals and session lengths from the scenario; a leaving viewer's
//!   connections close and its tracker connection drops.
//!
//! The CDN-only control run (`control = true`) sends the same viewers (same arrival times,
//! capacities, sessions) straight to the CDN, as a player without P2P would.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;
use swarmcdn_core::ids::{PeerId, RENDITION_ID_LEN, RenditionId, SwarmId};
use swarmcdn_core::integrity::{
    DigestSigner, MIN_CHUNK_SIZE, SegmentDigest, SignedDigest, TrustedKeys,
};
use swarmcdn_core::node::{
    Event, FetchError, HttpTarget, IntegrityMode, Node, NodeConfig, NodeRole, PeerEvent,
    PlayerState, Playlist, SegmentMeta, SegmentPool, Transmit,
};
use swarmcdn_core::registry::{ConnId, Registry, RegistryConfig};
use swarmcdn_core::time::Time;
use swarmcdn_core::tracker_proto::{
    Answer, FromTracker, Offer, OfferId, SessionDescription, ToTracker,
};
use swarmcdn_core::varint;
use swarmcdn_core::wire::{self, Frame, SegmentRef};

use crate::kernel::EventQueue;
use crate::metrics::{Counters, Row};
use crate::model::{self, CapacityModel, NatClass, NatModel, Popularity};
use crate::scenario::{Fault, Scenario, StreamKind};

/// How a run is made.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The seed of every random stream.
    pub seed: u64,
    /// CDN-only control run.
    pub control: bool,
    /// Only channels with `channel % n == i` (shard `i` of `n`).
    pub shard: (u32, u32),
    /// Of the shard's channels, only part `j` of `k` (see [`channel_parts`]). Channels are
    /// simulated independently (each its own tracker and random streams, every
    /// viewer's identity from its place in the arrival process), so a run's parts merge into
    /// exactly the whole run: [`crate::report::run_all`] runs them on several threads.
    pub part: (u32, u32),
}

impl Options {
    /// The whole run (shard 0 of 1, part 0 of 1).
    pub fn new(seed: u64, control: bool) -> Self {
        Self {
            seed,
            control,
            shard: (0, 1),
            part: (0, 1),
        }
    }
}

const OPERATOR_SECRET: [u8; 32] = [0x42; 32];
const LIVE_FIRST_SEQUENCE: u64 = 1000;
const STARTUP_SEGMENTS: u64 = 1;
const TARGET_BUFFER_US: u64 = 30_000_000;
/// A downlink serves its concurrent HTTP bodies round-robin in pieces of this many chunks.
const HTTP_PIECE_CHUNKS: u64 = 1;
/// A DataChannel across a partition dies after this long (ICE consent freshness).
const CONSENT_TIMEOUT_US: u64 = 15_000_000;
const NEVER: u64 = u64::MAX;

#[derive(Debug)]
enum Ev {
    Arrival,
    Depart(u32),
    /// A viewer of a channel this run does not simulate leaves (`global`, its identity): it
    /// may switch into a channel the run does.
    Elsewhere {
        global: u64,
        channel: u32,
    },
    Wake(u32),
    Tick(u32),
    Reload(u32),
    ToTracker(u32, Box<ToTracker>),
    FromTracker(u32, Box<FromTracker>),
    Open(u32, u32),
    Closed(u32, u32),
    Msg {
        to: u32,
        from: u32,
        data: Bytes,
    },
    Departed {
        n: u32,
        to: u32,
        size: u32,
    },
    /// An HTTP response's first byte: the body joins the receiver's downlink.
    HttpStart {
        n: u32,
        fetch: u64,
        seq: u64,
        start: u64,
        end: u64,
        total: u64,
    },
    /// The piece of an HTTP body in service on `n`'s downlink has arrived.
    HttpPiece {
        n: u32,
    },
    /// A part the bodies on `n`'s downlink wait for has been produced.
    HttpReady {
        n: u32,
    },
    /// The origin's digest of a segment `n` fetched while it was being produced: it is whole.
    OriginDigest {
        n: u32,
        seq: u64,
    },
    HttpDone {
        n: u32,
        fetch: u64,
        status: u16,
    },
    /// Control run: a segment fetched straight from the CDN.
    Direct {
        n: u32,
        seq: u64,
        bytes: u64,
    },
    Sample,
    Sweep,
    Fault {
        index: u16,
        start: bool,
    },
}

/// The names of the kinds of [`Ev`], by [`Ev::kind`].
const EV_KINDS: [&str; 21] = [
    "arrival",
    "depart",
    "wake",
    "tick",
    "reload",
    "to_tracker",
    "from_tracker",
    "open",
    "closed",
    "msg",
    "departed",
    "http_start",
    "http_piece",
    "http_done",
    "direct",
    "sample",
    "sweep",
    "fault",
    "elsewhere",
    "http_ready",
    "origin_digest",
];

impl Ev {
    /// An index into [`EV_KINDS`].
    fn kind(&self) -> usize {
        match self {
            Self::Arrival => 0,
            Self::Depart(_) => 1,
            Self::Wake(_) => 2,
            Self::Tick(_) => 3,
            Self::Reload(_) => 4,
            Self::ToTracker(..) => 5,
            Self::FromTracker(..) => 6,
            Self::Open(..) => 7,
            Self::Closed(..) => 8,
            Self::Msg { .. } => 9,
            Self::Departed { .. } => 10,
            Self::HttpStart { .. } => 11,
            Self::HttpPiece { .. } => 12,
            Self::HttpDone { .. } => 13,
            Self::Direct { .. } => 14,
            Self::Sample => 15,
            Self::Sweep => 16,
            Self::Fault { .. } => 17,
            Self::Elsewhere { .. } => 18,
            Self::HttpReady { .. } => 19,
            Self::OriginDigest { .. } => 20,
        }
    }
}

#[derive(Debug, Default)]
struct Player {
    started: bool,
    joined: u64,
    start_at: u64,
    playhead: u64,
    /// Microseconds played of the segment under the playhead.
    into: u64,
    /// Where in its first segment playback starts (`stream.target_latency_secs`), µs.
    start_into: u64,
    /// Segments delivered and not fully played.
    buffered: u64,
    next_request: u64,
    outstanding: bool,
    last_advance: u64,
    stalled: bool,
    stalls: u32,
    stalled_us: u64,
    played_us: u64,
    /// One past the last sequence (VOD), `u64::MAX` live.
    end: u64,
    tick_at: u64,
    ended: bool,
}

/// The part of an HTTP response body still to cross the downlink.
#[derive(Debug, Clone, Copy)]
struct HttpBody {
    fetch: u64,
    /// The segment's sequence number (of the receiver's rendition).
    seq: u64,
    next: u64,
    end: u64,
    total: u64,
    /// Whether the response gave the length: not when it started while the segment was
    /// still being produced (chunked transfer).
    sized: bool,
}

struct Peer {
    /// The viewer's identity (its peer id, its node's seed, its tracker connection): its
    /// index in the arrival process, plus 2^40 per channel switch. Not its index in
    /// `Run::peers`, which depends on the other channels simulated alongside.
    global: u64,
    node: Option<Box<Node>>,
    swarm: u32,
    region: u8,
    nat: NatClass,
    corrupt: bool,
    /// Bytes per second (scaled).
    up: u64,
    down: u64,
    /// One-way access latency, µs.
    access_us: u64,
    up_free: u64,
    down_free: u64,
    /// The time of the node's earliest `Wake` event in the queue (`NEVER`: none), and when
    /// its node asked to be woken, which may be later: a timeout put off keeps its event, and
    /// the event, when due, is put off in turn. Pushing an event at every change left a dozen
    /// stale ones per node in the queue.
    wake: u64,
    wake_want: u64,
    player: Player,
    queued: Vec<(u32, u64)>,
    /// HTTP bodies sharing the downlink, served round-robin one piece at a time.
    http: std::collections::VecDeque<HttpBody>,
    /// The piece on the downlink now: its body, its range, and whether it is the last.
    http_piece: Option<(HttpBody, u64, bool)>,
    /// Fetches cancelled by the node while their response is still to start or in service.
    cancelled: Vec<u64>,
    /// When an `HttpReady` is due: the bodies on the downlink wait for parts.
    http_ready: u64,
    alive: bool,
    offers: u64,
    /// Usable upload in bits per second (unscaled), for the bounds.
    up_bps: f64,
}

/// What a viewer's stream gives it, in draw order.
struct ViewerDraw {
    access: model::Access,
    nat: NatClass,
    region: u8,
    jitter: f64,
    corrupt: bool,
    session: Option<f64>,
}

struct SwarmState {
    id: SwarmId,
    channel: u32,
    rung: usize,
    /// Bytes per second of media (scaled).
    rate: f64,
    segment_bytes: u64,
    members: Vec<u32>,
    /// Members per NAT class (`NatClass::index`), and their upload in bits per second.
    class_count: [u64; 6],
    class_up: [f64; 6],
    digests: std::collections::VecDeque<(u64, SignedDigest)>,
}

/// A run in progress.
pub struct Run<'a> {
    sc: &'a Scenario,
    opts: Options,
    q: EventQueue<Ev>,
    now: u64,
    peers: Vec<Peer>,
    swarms: Vec<SwarmState>,
    /// One tracker per channel: its random choices depend on its own swarms only.
    registries: Vec<Registry>,
    /// Per channel: whether this run simulates it (its shard and part).
    simulated: Vec<bool>,
    tracker_up: bool,
    /// Network randomness, per channel.
    net: Vec<Xoshiro256PlusPlus>,
    /// `Peer::global` -> index in `peers`.
    by_global: HashMap<u64, u32>,
    arrivals: Xoshiro256PlusPlus,
    arrivals_drawn: u64,
    popularity: Popularity,
    capacity: CapacityModel,
    nat: NatModel,
    scale: u64,
    seg_us: u64,
    /// LL-HLS part duration, µs; 0 without parts.
    part_us: u64,
    chunk_size: u32,
    zeros: Bytes,
    /// Completed segments' bytes, shared by the nodes (one copy per segment, not per node).
    pool: SegmentPool,
    zero_chunk: [u8; 32],
    signer: DigestSigner,
    ttfb_factor: f64,
    partitioned: Vec<bool>,
    partition_on: bool,
    corrupt_fraction: f64,
    /// What the run measured.
    pub counters: Counters,
    row: Row,
    events: u64,
    end: u64,
    /// `SWARMCDN_SIM_TRACE=<viewer index>` prints that viewer's transmits to stderr (its
    /// index in the arrival process, `Peer::global`); `all`, every viewer's.
    trace: Option<u64>,
}

fn us(secs: f64) -> u64 {
    (secs * 1e6).max(0.0) as u64
}

/// The part (of `k`) each channel of shard `shard` falls in, `None` outside the shard: the
/// channels by expected viewers (the popularity's weights), each to the least loaded part so
/// far, so that parts run side by side take about as long.
pub fn channel_parts(channels: u32, zipf: f64, shard: (u32, u32), k: u32) -> Vec<Option<u32>> {
    let (i, n) = shard;
    let mut order: Vec<u32> = (0..channels).filter(|c| c % n == i).collect();
    let weight = |c: u32| 1.0 / f64::from(c + 1).powf(zipf);
    // Heaviest first; the sort is stable, so equal weights keep channel order.
    order.sort_by(|a, b| weight(*b).total_cmp(&weight(*a)));
    let mut load = vec![0.0f64; k.max(1) as usize];
    let mut part = vec![None; channels as usize];
    for c in order {
        let (j, _) = load
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .expect("at least one part");
        load[j] += weight(c);
        part[c as usize] = Some(j as u32);
    }
    part
}

/// A viewer's peer id: the low half of its global index, a marker, the high half.
fn peer_id(global: u64) -> PeerId {
    let mut id = [0u8; 20];
    id[..4].copy_from_slice(&(global as u32).to_be_bytes());
    id[4..8].copy_from_slice(b"sim!");
    id[8..12].copy_from_slice(&((global >> 32) as u32).to_be_bytes());
    PeerId(id)
}

fn global_of(id: &PeerId) -> Option<u64> {
    (&id.0[4..8] == b"sim!").then(|| {
        let low = u32::from_be_bytes(id.0[..4].try_into().expect("4 bytes"));
        let high = u32::from_be_bytes(id.0[8..12].try_into().expect("4 bytes"));
        u64::from(high) << 32 | u64::from(low)
    })
}

/// The index in `Run::peers` of the viewer with peer id `id`.
fn peer_index(by_global: &HashMap<u64, u32>, id: &PeerId) -> Option<u32> {
    by_global.get(&global_of(id)?).copied()
}

impl<'a> Run<'a> {
    /// Prepares a run of `sc`.
    pub fn new(sc: &'a Scenario, opts: Options) -> anyhow::Result<Self> {
        sc.check()?;
        let scale = sc.scale();
        let seg_us = us(sc.stream.segment_secs);
        let mut swarms = Vec::new();
        for channel in 0..sc.stream.channels {
            for (rung, mbps) in sc.stream.ladder.iter().enumerate() {
                let rate = mbps * 1e6 / 8.0 / scale as f64;
                let mut id = [0u8; 20];
                id[..8].copy_from_slice(
                    &model::mix(u64::from(channel) << 8 | rung as u64).to_be_bytes(),
                );
                swarms.push(SwarmState {
                    id: SwarmId(id),
                    channel,
                    rung,
                    rate,
                    segment_bytes: (rate * sc.stream.segment_secs).round().max(1.0) as u64,
                    members: Vec::new(),
                    class_count: [0; 6],
                    class_up: [0.0; 6],
                    digests: Default::default(),
                });
            }
        }
        let biggest = swarms.iter().map(|s| s.segment_bytes).max().unwrap_or(1);
        let chunk_size = ((64 * 1024) / scale as u32).max(MIN_CHUNK_SIZE);
        let zeros = Bytes::from(vec![0u8; biggest as usize]);
        let zero_chunk = sha2_of_zeros(chunk_size as usize);
        let regions = &sc.network.regions;
        let mut corrupt_fraction = 0.0;
        for f in &sc.faults {
            if let Fault::CorruptPeers { fraction } = f {
                corrupt_fraction = *fraction;
            }
        }
        let registries = (0..sc.stream.channels)
            .map(|c| {
                Registry::new(
                    RegistryConfig::default(),
                    model::rng(opts.seed, model::Stream::Tracker, u64::from(c)).random(),
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("registry: {e}"))?;
        let end = us(sc.duration_secs as f64);
        let mut run = Self {
            sc,
            opts,
            q: EventQueue::new(),
            now: 0,
            peers: Vec::new(),
            swarms,
            registries,
            simulated: channel_parts(sc.stream.channels, sc.stream.zipf, opts.shard, opts.part.1)
                .into_iter()
                .map(|p| p == Some(opts.part.0))
                .collect(),
            tracker_up: true,
            net: (0..sc.stream.channels)
                .map(|c| model::rng(opts.seed, model::Stream::Network, u64::from(c)))
                .collect(),
            by_global: HashMap::new(),
            arrivals: model::rng(opts.seed, model::Stream::Arrivals, 0),
            arrivals_drawn: 0,
            popularity: Popularity::new(sc.stream.channels, sc.stream.zipf),
            capacity: CapacityModel::new(&sc.population.capacity, sc.stream.ladder[0])?
                .with_cap(sc.population.upload_cap),
            nat: NatModel::new(&sc.population.nat)?,
            scale,
            seg_us,
            part_us: sc.stream.part_secs.map_or(0, |part| {
                seg_us / (sc.stream.segment_secs / part).round().max(1.0) as u64
            }),
            chunk_size,
            zeros,
            pool: SegmentPool::new(),
            zero_chunk,
            signer: DigestSigner::from_secret(OPERATOR_SECRET),
            ttfb_factor: 1.0,
            partitioned: vec![false; regions.len()],
            partition_on: false,
            corrupt_fraction,
            counters: Counters::new(sc, opts),
            row: Row::default(),
            events: 0,
            end,
            trace: std::env::var("SWARMCDN_SIM_TRACE").ok().and_then(|v| {
                if v == "all" {
                    Some(u64::MAX)
                } else {
                    v.parse().ok()
                }
            }),
        };
        run.schedule_next_arrival();
        run.q.push(1_000_000, Ev::Sample);
        run.q.push(1_000_000, Ev::Sweep);
        for (i, f) in sc.faults.iter().enumerate() {
            let window = match f {
                Fault::TrackerOutage {
                    at_secs,
                    duration_secs,
                }
                | Fault::OriginSlowdown {
                    at_secs,
                    duration_secs,
                    ..
                }
                | Fault::Partition {
                    at_secs,
                    duration_secs,
                    ..
                } => Some((*at_secs, *duration_secs)),
                Fault::CorruptPeers { .. } => None,
            };
            if let Some((at, d)) = window {
                run.q.push(
                    us(at),
                    Ev::Fault {
                        index: i as u16,
                        start: true,
                    },
                );
                run.q.push(
                    us(at + d),
                    Ev::Fault {
                        index: i as u16,
                        start: false,
                    },
                );
            }
        }
        Ok(run)
    }

    /// Runs to the end; `progress` is called with the virtual seconds done about once per
    /// virtual second.
    pub fn run(mut self, mut progress: impl FnMut(u64)) -> Counters {
        let wall = std::time::Instant::now();
        let mut kinds = [0u64; EV_KINDS.len()];
        while let Some(at) = self.q.peek_time() {
            if at > self.end {
                break;
            }
            let (at, ev) = self.q.pop().expect("peeked just above");
            self.now = at;
            self.events += 1;
            kinds[ev.kind()] += 1;
            if matches!(ev, Ev::Sample) {
                progress(at / 1_000_000);
                if (at / 1_000_000) % 30 == 0 {
                    self.pool.prune();
                }
            }
            self.dispatch(ev);
        }
        self.now = self.end;
        for n in self.peers.iter().filter_map(|p| p.node.as_deref()) {
            let stats = n.stats();
            self.counters.cached_bytes_at_end += stats.cache_bytes;
            self.counters.arriving_bytes_at_end += stats.arriving_bytes;
        }
        self.pool.prune();
        self.counters.segment_bytes_held_at_end = self.pool.held().1;
        for n in 0..self.peers.len() as u32 {
            if self.peers[n as usize].alive {
                self.finish(n);
            }
        }
        self.counters.events = self.events;
        self.counters.events_by_kind = EV_KINDS
            .iter()
            .zip(kinds)
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.to_string(), n))
            .collect();
        self.counters.wall_seconds = wall.elapsed().as_secs_f64();
        self.counters.peers_created = self.peers.len() as u64;
        self.counters
    }

    fn in_shard(&self, channel: u32) -> bool {
        self.simulated[channel as usize]
    }

    fn channel_of(&self, n: u32) -> usize {
        self.swarms[self.peers[n as usize].swarm as usize].channel as usize
    }

    fn measuring(&self) -> bool {
        self.now >= us(self.sc.warmup_secs as f64)
    }

    // ---------------------------------------------------------------------------------------
    // Arrivals and departures.

    fn schedule_next_arrival(&mut self) {
        let t = self.now as f64 / 1e6;
        if let Some(at) = model::next_arrival(
            &mut self.arrivals,
            &self.sc.population.arrivals,
            t,
            self.arrivals_drawn,
        ) {
            self.q.push(us(at), Ev::Arrival);
        }
    }

    fn arrival(&mut self) {
        let index = self.arrivals_drawn;
        self.arrivals_drawn += 1;
        let channel = self.popularity.sample(&mut self.arrivals);
        self.schedule_next_arrival();
        self.enter(index, channel);
    }

    /// Viewer `global` starts a session on `channel`: it joins if this run simulates the
    /// channel. Otherwise, if viewers switch channels, its departure is still scheduled (its
    /// session length comes from its own stream), for it may switch into a channel this run
    /// simulates: so the parts of a run, and its shards, lose no switch between them.
    fn enter(&mut self, global: u64, channel: u32) {
        if self.in_shard(channel) {
            self.join(global, channel);
        } else if self.sc.stream.channels > 1 && self.sc.population.channel_switch > 0.0 {
            let mut r = model::rng(self.opts.seed, model::Stream::Viewer, global);
            if let Some(secs) = self.draw_viewer(&mut r).session {
                self.q
                    .push(self.now + us(secs), Ev::Elsewhere { global, channel });
            }
        }
    }

    /// Whether viewer `global`, leaving `channel`, switches, and to which channel.
    fn switch_of(&self, global: u64, channel: u32) -> Option<u32> {
        let channels = self.sc.stream.channels;
        let mut r = model::rng(self.opts.seed, model::Stream::Zap, global);
        if channels < 2 || r.random::<f64>() >= self.sc.population.channel_switch {
            return None;
        }
        let next = self.popularity.sample(&mut r);
        Some(if next == channel {
            (next + 1) % channels
        } else {
            next
        })
    }

    /// A viewer's attributes, drawn in this order from its stream.
    fn draw_viewer(&self, r: &mut Xoshiro256PlusPlus) -> ViewerDraw {
        let sc = self.sc;
        let access = self.capacity.sample(r);
        let nat = self.nat.sample(r);
        let region = {
            let total: f64 = sc.network.regions.iter().map(|g| g.share).sum();
            let mut x = r.random::<f64>() * total;
            let mut region = sc.network.regions.len() - 1;
            for (i, g) in sc.network.regions.iter().enumerate() {
                if x < g.share {
                    region = i;
                    break;
                }
                x -= g.share;
            }
            region as u8
        };
        let jitter = r.random::<f64>() * sc.network.access_jitter_ms * 1e3;
        let corrupt = r.random::<f64>() < self.corrupt_fraction;
        let title = sc.stream.vod_length_secs as f64;
        let session = model::session_secs(r, &sc.population.session, title);
        ViewerDraw {
            access,
            nat,
            region,
            jitter,
            corrupt,
            session,
        }
    }

    /// Viewer `index` of the arrival process joins `channel`.
    fn join(&mut self, index: u64, channel: u32) {
        let sc = self.sc;
        let mut r = model::rng(self.opts.seed, model::Stream::Viewer, index);
        let draw = self.draw_viewer(&mut r);
        let title = sc.stream.vod_length_secs as f64;
        // Static rung choice: the highest rung within 80% of the downlink.
        let rung = sc
            .stream
            .ladder
            .iter()
            .rposition(|mbps| mbps * 1e6 <= 0.8 * draw.access.down_bps)
            .unwrap_or(0);
        let swarm = channel as usize * sc.stream.ladder.len() + rung;
        let n = self.peers.len() as u32;
        let live = sc.stream.kind == StreamKind::Live;
        let mut start_into = 0;
        let start = match sc.stream.target_latency_secs {
            // The segment under the media time `latency` ago, from that point in it.
            Some(latency) if live => {
                let seg = self.seg_us as i64;
                let media = self.now as i64 - us(latency) as i64;
                start_into = media.rem_euclid(seg) as u64;
                (LIVE_FIRST_SEQUENCE as i64 + 1 + media.div_euclid(seg)).max(0) as u64
            }
            _ if live => self.edge().saturating_sub(sc.stream.live_offset_segments),
            _ => 0,
        };
        let end = if live {
            u64::MAX
        } else {
            (title / sc.stream.segment_secs).ceil() as u64
        };
        let scale = self.scale as f64;
        let mut peer = Peer {
            global: index,
            node: None,
            swarm: swarm as u32,
            region: draw.region,
            nat: draw.nat,
            corrupt: draw.corrupt,
            up: (if draw.access.up_bps > 0.0 {
                draw.access.up_bps
            } else {
                draw.access.line_up_bps
            } / 8.0
                / scale)
                .max(1.0) as u64,
            down: (draw.access.down_bps / 8.0 / scale).max(1.0) as u64,
            access_us: draw.jitter as u64,
            up_free: self.now,
            down_free: self.now,
            wake: NEVER,
            wake_want: NEVER,
            player: Player {
                joined: self.now,
                playhead: start,
                start_into,
                next_request: start,
                last_advance: self.now,
                end,
                tick_at: NEVER,
                ..Default::default()
            },
            queued: Vec::new(),
            http: Default::default(),
            http_piece: None,
            cancelled: Vec::new(),
            http_ready: NEVER,
            alive: true,
            offers: 0,
            up_bps: draw.access.up_bps,
        };
        if !self.opts.control {
            peer.node = Some(Box::new(self.make_node(&peer)));
        }
        self.by_global.insert(index, n);
        self.peers.push(peer);
        self.enter_swarm(n);
        self.counters.sessions += 1;
        if let Some(secs) = draw.session {
            let at = self.now + us(secs);
            self.q.push(at, Ev::Depart(n));
        }
        if let Some(node) = self.peers[n as usize].node.as_deref_mut() {
            node.handle_tracker_connected(Time(self.now));
            if !self.tracker_up {
                node.handle_tracker_disconnected(Time(self.now));
            }
        }
        self.reload(n);
        self.schedule_tick(n, self.now);
        self.drain(n);
    }

    fn make_node(&self, peer: &Peer) -> Node {
        let sc = self.sc;
        let s = &self.swarms[peer.swarm as usize];
        let integrity = if sc.node.verify_signatures {
            IntegrityMode::Verify(TrustedKeys::new([self.signer.public_key()]))
        } else {
            IntegrityMode::Unverified
        };
        let mut c = NodeConfig::new(peer_id(peer.global), s.id, NodeRole::Viewer, integrity);
        let scale = self.scale;
        c.upload.enabled = peer.up_bps > 0.0;
        if let Some(m) = sc.node.max_peers {
            c.max_peers = m;
        }
        if let Some(slots) = sc.node.upload_slots {
            c.upload.slots = slots;
        }
        if let Some(p) = sc.node.prefetch_secs {
            c.prefetch_window = Duration::from_secs_f64(p);
        }
        if let Some(t) = sc.node.request_stall_secs {
            c.request_stall_timeout = Duration::from_secs_f64(t);
        }
        if let Some(b) = sc.node.relay_partial {
            c.relay_partial = b;
        }
        if let Some(b) = sc.node.chunk_maps {
            c.chunk_maps = b;
        }
        if let Some(b) = sc.node.first_copies_first {
            c.first_copies_first = b;
        }
        if let Some(b) = sc.node.chunk_messages {
            c.chunk_messages = b;
        }
        if let Some(k) = sc.node.request_chunks {
            c.request_chunks = k;
        }
        if let Some(r) = sc.node.refill_secs {
            c.refill_interval = Duration::from_secs_f64(r);
        }
        if let Some(m) = sc.node.http_margin_secs {
            c.http_margin = Duration::from_secs_f64(m);
        }
        if let Some(s) = sc.node.scout_step_in_secs {
            c.scout_step_in_lead = Duration::from_secs_f64(s);
        }
        if let Some(s) = sc.node.scout_outranked_secs {
            c.scout_outranked_wait = Duration::from_secs_f64(s);
        }
        if let Some(s) = sc.node.scout_spread_secs {
            c.scout_spread = Duration::from_secs_f64(s);
        }
        if let Some(t) = sc.node.send_queue_secs {
            c.send_queue_time = Duration::from_secs_f64(t);
        }
        let cache_secs = sc.node.cache_secs.unwrap_or(60.0);
        c.cache_bytes = ((s.rate * cache_secs) as u64).max(4 * s.segment_bytes);
        c.http_initial_rate = (c.http_initial_rate / scale).max(1);
        c.p2p_initial_rate = (c.p2p_initial_rate / scale).max(1);
        c.segment_size_guess = s.segment_bytes;
        c.send_buffer_high = (c.send_buffer_high / scale).max(4 * u64::from(self.chunk_size));
        c.send_buffer_low = (c.send_buffer_low / scale).max(u64::from(self.chunk_size) / 4);
        c.digest_chunk_size = self.chunk_size;
        c.locality = Some(sc.network.regions[peer.region as usize].name.clone());
        c.nat = Some(peer.nat.wire());
        let seed = model::rng(self.opts.seed, model::Stream::Node, peer.global).random();
        let mut node =
            Node::new(c, Time(self.now), seed).expect("the scenario's node settings are valid");
        node.share_segments(self.pool.clone());
        node
    }

    fn enter_swarm(&mut self, n: u32) {
        let p = &self.peers[n as usize];
        let s = &mut self.swarms[p.swarm as usize];
        s.members.push(n);
        s.class_count[p.nat.index()] += 1;
        s.class_up[p.nat.index()] += p.up_bps;
    }

    fn leave_swarm(&mut self, n: u32) {
        let p = &self.peers[n as usize];
        let s = &mut self.swarms[p.swarm as usize];
        if let Some(i) = s.members.iter().position(|m| *m == n) {
            s.members.swap_remove(i);
            s.class_count[p.nat.index()] -= 1;
            s.class_up[p.nat.index()] -= p.up_bps;
        }
    }

    fn depart(&mut self, n: u32) {
        if !self.peers[n as usize].alive {
            return;
        }
        let channel = self.channel_of(n) as u32;
        let global = self.peers[n as usize].global;
        self.finish(n);
        if self.tracker_up && !self.opts.control {
            self.registries[channel as usize].handle_disconnect(ConnId(global));
        }
        // Zapping: a switching viewer starts a new session on another channel.
        if let Some(next) = self.switch_of(global, channel) {
            self.counters.channel_switches += 1;
            self.enter(global + (1 << 40), next);
        }
    }

    /// Ends a viewer's session: its connections close, its counters are summed.
    fn finish(&mut self, n: u32) {
        self.advance_player(n);
        self.leave_swarm(n);
        let now = self.now;
        let p = &mut self.peers[n as usize];
        p.alive = false;
        let pl = &p.player;
        let c = &mut self.counters;
        if pl.started {
            c.startup.record(pl.start_at - pl.joined);
            if self.sc.stream.kind == StreamKind::Live {
                // How far behind the packager the viewer played when it left.
                let media = (pl.playhead as i64 - LIVE_FIRST_SEQUENCE as i64 - 1)
                    * self.seg_us as i64
                    + pl.into as i64;
                c.live_latency.record((now as i64 - media).max(0) as u64);
            }
        } else {
            c.never_started += 1;
        }
        c.stalls += u64::from(pl.stalls);
        c.stalled_us += pl.stalled_us;
        c.played_us += pl.played_us;
        if let Some(node) = p.node.take() {
            let st = node.stats();
            c.aborted_p2p_bytes += st.aborted_p2p_bytes * self.scale;
            c.deadline_fallbacks += st.deadline_fallbacks;
            c.late_segments += st.late_segments;
            c.integrity_failures += st.integrity_failures;
            c.http_requests += st.http_requests;
            c.uploaded_bytes += st.p2p_bytes_up * self.scale;
            let me = n;
            let access = p.access_us;
            for peer in node.connected_peers() {
                if let Some(m) = peer_index(&self.by_global, &peer) {
                    let at = now + self.one_way(me, m).max(access);
                    self.q.push(at, Ev::Closed(m, me));
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Time and latency.

    /// Live: the newest segment produced in full. Segment `LIVE_FIRST_SEQUENCE + k` is
    /// produced from `(k - 1)` to `k` segment durations into the run.
    fn edge(&self) -> u64 {
        LIVE_FIRST_SEQUENCE + self.now / self.seg_us
    }

    /// Live: when segment `seq` starts being produced, µs into the run (negative for the
    /// segments the run starts with).
    fn production_start(&self, seq: u64) -> i64 {
        (seq as i64 - LIVE_FIRST_SEQUENCE as i64 - 1) * self.seg_us as i64
    }

    /// Live: the newest segment listed: with parts, the one being produced once its first
    /// part is out.
    fn listed_last(&self) -> u64 {
        let edge = self.edge();
        if self.part_us > 0 && self.now % self.seg_us >= self.part_us {
            edge + 1
        } else {
            edge
        }
    }

    fn published(&self, seq: u64) -> bool {
        self.sc.stream.kind == StreamKind::Vod || seq <= self.listed_last()
    }

    /// Bytes of segment `seq` (of `total`) the origin has now: all of a segment produced in
    /// full, the parts out so far of one being produced.
    fn produced(&self, seq: u64, total: u64) -> u64 {
        if self.part_us == 0 || self.sc.stream.kind == StreamKind::Vod || seq <= self.edge() {
            return total;
        }
        let Ok(since) = u64::try_from(self.now as i64 - self.production_start(seq)) else {
            return 0;
        };
        let parts = self.seg_us / self.part_us;
        total * (since / self.part_us).min(parts) / parts
    }

    /// When the part that holds byte `at` of segment `seq` (of `total`) comes out.
    fn produced_at(&self, seq: u64, at: u64, total: u64) -> u64 {
        let parts = self.seg_us / self.part_us;
        let mut j = at * parts / total.max(1);
        while j + 1 < parts && total * (j + 1) / parts <= at {
            j += 1;
        }
        let at = self.production_start(seq) + ((j + 1) * self.part_us) as i64;
        at.max(0) as u64
    }

    fn one_way(&self, a: u32, b: u32) -> u64 {
        let (pa, pb) = (&self.peers[a as usize], &self.peers[b as usize]);
        let core = if pa.region == pb.region {
            self.sc.network.rtt_intra_ms
        } else {
            self.sc.network.rtt_inter_ms
        };
        us(core / 2e3) + pa.access_us + pb.access_us
    }

    fn cut(&self, a: u32, b: u32) -> bool {
        self.partition_on
            && self.partitioned[self.peers[a as usize].region as usize]
                != self.partitioned[self.peers[b as usize].region as usize]
    }

    fn tracker_delay(&self, n: u32) -> u64 {
        us(self.sc.network.tracker_latency_ms / 1e3) + self.peers[n as usize].access_us
    }

    fn cdn_response_start(&mut self, n: u32) -> u64 {
        let net = &self.sc.network;
        let channel = self.channel_of(n);
        let ttfb = model::lognormal(
            &mut self.net[channel],
            net.cdn_ttfb_median_ms,
            net.cdn_ttfb_sigma,
        ) * self.ttfb_factor;
        self.now + us((net.rtt_intra_ms + ttfb) / 1e3) + 2 * self.peers[n as usize].access_us
    }

    // ---------------------------------------------------------------------------------------
    // Dispatch.

    fn dispatch(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Arrival => self.arrival(),
            Ev::Depart(n) => self.depart(n),
            Ev::Elsewhere { global, channel } => {
                if let Some(next) = self.switch_of(global, channel) {
                    self.enter(global + (1 << 40), next);
                }
            }
            Ev::Wake(n) => {
                let p = &mut self.peers[n as usize];
                if !p.alive || p.wake != now {
                    return;
                }
                p.wake = NEVER;
                if p.wake_want > now && p.wake_want != NEVER {
                    // Put off since this event was queued.
                    p.wake = p.wake_want;
                    self.q.push(p.wake, Ev::Wake(n));
                    return;
                }
                p.wake_want = NEVER;
                if let Some(node) = p.node.as_deref_mut() {
                    node.handle_timeout(Time(now));
                }
                self.drain(n);
            }
            Ev::Tick(n) => {
                let p = &mut self.peers[n as usize];
                if !p.alive || p.player.tick_at != now {
                    return;
                }
                p.player.tick_at = NEVER;
                self.player_tick(n);
            }
            Ev::Reload(n) => {
                if !self.peers[n as usize].alive {
                    return;
                }
                self.reload(n);
            }
            Ev::ToTracker(n, msg) => {
                if !self.tracker_up || !self.peers[n as usize].alive {
                    return;
                }
                self.row.tracker_messages += 1;
                let mut out = Vec::new();
                let (channel, global) = (self.channel_of(n), self.peers[n as usize].global);
                self.registries[channel].handle_message(Time(now), ConnId(global), *msg, &mut out);
                for (conn, reply) in out {
                    let Some(&m) = self.by_global.get(&conn.0) else {
                        continue;
                    };
                    let at = now + self.tracker_delay(m);
                    self.row.tracker_messages += 1;
                    self.q.push(at, Ev::FromTracker(m, Box::new(reply)));
                }
            }
            Ev::FromTracker(n, msg) => {
                if !self.tracker_up {
                    return;
                }
                if let Some(node) = self.node(n) {
                    node.handle_tracker_msg(Time(now), *msg);
                    self.drain(n);
                }
            }
            Ev::Open(n, from) => {
                if !self.peers[from as usize].alive {
                    return;
                }
                let from = peer_id(self.peers[from as usize].global);
                if let Some(node) = self.node(n) {
                    node.handle_peer_event(Time(now), from, PeerEvent::Opened);
                    self.drain(n);
                }
            }
            Ev::Closed(n, from) => {
                let from = peer_id(self.peers[from as usize].global);
                if let Some(node) = self.node(n) {
                    node.handle_peer_event(Time(now), from, PeerEvent::Closed);
                    self.drain(n);
                }
            }
            Ev::Msg { to, from, data } => {
                if !self.peers[from as usize].alive || self.cut(from, to) {
                    return;
                }
                let from = peer_id(self.peers[from as usize].global);
                if let Some(node) = self.node(to) {
                    node.handle_peer_event(Time(now), from, PeerEvent::Message(data));
                    self.drain(to);
                }
            }
            Ev::Departed { n, to, size } => {
                let low = self.peers[n as usize]
                    .node
                    .as_ref()
                    .map_or(0, |node| node.config().send_buffer_low);
                let p = &mut self.peers[n as usize];
                let Some(i) = p.queued.iter().position(|(m, _)| *m == to) else {
                    return;
                };
                let before = p.queued[i].1;
                let after = before.saturating_sub(u64::from(size));
                p.queued[i].1 = after;
                if after == 0 {
                    p.queued.swap_remove(i);
                }
                if (before > low && after <= low) || (before > 0 && after == 0) {
                    let to = peer_id(self.peers[to as usize].global);
                    if let Some(node) = self.node(n) {
                        node.handle_peer_event(
                            Time(now),
                            to,
                            PeerEvent::Drained { buffered: after },
                        );
                        self.drain(n);
                    }
                }
            }
            Ev::HttpStart {
                n,
                fetch,
                seq,
                start,
                end,
                total,
            } => {
                let sized = self.produced(seq, total) == total;
                let p = &mut self.peers[n as usize];
                if let Some(i) = p.cancelled.iter().position(|f| *f == fetch) {
                    p.cancelled.swap_remove(i);
                    return;
                }
                if !p.alive {
                    return;
                }
                p.http.push_back(HttpBody {
                    fetch,
                    seq,
                    next: start,
                    end,
                    total,
                    sized,
                });
                self.serve_http(n);
            }
            Ev::OriginDigest { n, seq } => {
                if !self.peers[n as usize].alive {
                    return;
                }
                let swarm = self.peers[n as usize].swarm as usize;
                let digest = self.digest(swarm, seq);
                if let Some(node) = self.node(n) {
                    node.handle_digest(Time(now), digest);
                    self.drain(n);
                }
            }
            Ev::HttpReady { n } => {
                let p = &mut self.peers[n as usize];
                if !p.alive || p.http_ready != now {
                    return;
                }
                p.http_ready = NEVER;
                self.serve_http(n);
            }
            Ev::HttpPiece { n } => {
                let p = &mut self.peers[n as usize];
                let Some((body, from, last)) = p.http_piece.take() else {
                    return;
                };
                if !p.alive {
                    p.http.clear();
                    return;
                }
                if let Some(i) = p.cancelled.iter().position(|f| *f == body.fetch) {
                    p.cancelled.swap_remove(i);
                } else {
                    let fetch = swarmcdn_core::node::FetchId(body.fetch);
                    let data = self.zeros.slice(from as usize..body.next as usize);
                    if let Some(node) = self.node(n) {
                        let total = body.sized.then_some(body.total);
                        node.handle_http_data(Time(now), fetch, from, total, data);
                        self.drain(n);
                    }
                    // The data may have completed the segment, and the node cancelled the
                    // fetch that brought it.
                    let p = &mut self.peers[n as usize];
                    if let Some(i) = p.cancelled.iter().position(|f| *f == body.fetch) {
                        p.cancelled.swap_remove(i);
                    } else if last && let Some(node) = self.node(n) {
                        node.handle_http_done(Time(now), fetch, Ok(()));
                        self.drain(n);
                    }
                }
                self.serve_http(n);
            }
            Ev::HttpDone { n, fetch, status } => {
                let p = &mut self.peers[n as usize];
                if let Some(i) = p.cancelled.iter().position(|f| *f == fetch) {
                    p.cancelled.swap_remove(i);
                    return;
                }
                if let Some(node) = self.node(n) {
                    let result = if status == 200 {
                        Ok(())
                    } else {
                        Err(FetchError::Status(status))
                    };
                    node.handle_http_done(Time(now), swarmcdn_core::node::FetchId(fetch), result);
                    self.drain(n);
                }
            }
            Ev::Direct { n, seq, bytes } => {
                if self.peers[n as usize].alive {
                    self.deliver(n, seq, bytes, 0);
                }
            }
            Ev::Sample => self.sample(),
            Ev::Sweep => {
                for registry in &mut self.registries {
                    if let Some(t) = registry.poll_timeout()
                        && t.0 <= now
                    {
                        registry.handle_timeout(Time(now));
                    }
                }
                self.q.push(now + 1_000_000, Ev::Sweep);
            }
            Ev::Fault { index, start } => self.fault(index as usize, start),
        }
    }

    fn node(&mut self, n: u32) -> Option<&mut Node> {
        let p = &mut self.peers[n as usize];
        if !p.alive {
            return None;
        }
        p.node.as_deref_mut()
    }

    fn fault(&mut self, index: usize, start: bool) {
        let now = Time(self.now);
        match &self.sc.faults[index] {
            Fault::TrackerOutage { .. } => {
                self.tracker_up = !start;
                for n in 0..self.peers.len() as u32 {
                    let (channel, global) = (self.channel_of(n), self.peers[n as usize].global);
                    let Some(node) = self.node(n) else { continue };
                    if start {
                        node.handle_tracker_disconnected(now);
                    } else {
                        node.handle_tracker_connected(now);
                    }
                    if start {
                        self.registries[channel].handle_disconnect(ConnId(global));
                    }
                    self.drain(n);
                }
            }
            Fault::OriginSlowdown { factor, .. } => {
                self.ttfb_factor = if start { *factor } else { 1.0 };
            }
            Fault::Partition { regions, .. } => {
                self.partition_on = start;
                for (i, g) in self.sc.network.regions.iter().enumerate() {
                    self.partitioned[i] = start && regions.contains(&g.name);
                }
                if start {
                    // Connections across the cut die when ICE consent expires.
                    for n in 0..self.peers.len() as u32 {
                        let Some(node) = self.peers[n as usize].node.as_deref() else {
                            continue;
                        };
                        let across: Vec<u32> = node
                            .connected_peers()
                            .filter_map(|p| peer_index(&self.by_global, &p))
                            .filter(|m| self.cut(n, *m))
                            .collect();
                        for m in across {
                            self.q.push(self.now + CONSENT_TIMEOUT_US, Ev::Closed(n, m));
                        }
                    }
                }
            }
            Fault::CorruptPeers { .. } => {}
        }
    }

    // ---------------------------------------------------------------------------------------
    // The node's outputs.

    fn drain(&mut self, n: u32) {
        loop {
            let Some(node) = self.peers[n as usize].node.as_deref_mut() else {
                return;
            };
            let Some(t) = node.poll_transmit() else {
                break;
            };
            self.transmit(n, t);
        }
        loop {
            let Some(node) = self.peers[n as usize].node.as_deref_mut() else {
                return;
            };
            let Some(e) = node.poll_event() else {
                break;
            };
            self.event(n, e);
        }
        let p = &mut self.peers[n as usize];
        match p.node.as_deref().and_then(Node::poll_timeout) {
            Some(t) => {
                let t = t.0.max(self.now);
                p.wake_want = t;
                if t < p.wake {
                    p.wake = t;
                    self.q.push(t, Ev::Wake(n));
                }
            }
            None => p.wake_want = NEVER,
        }
    }

    fn transmit(&mut self, n: u32, t: Transmit) {
        let now = self.now;
        if let Some(want) = self.trace {
            let global = self.peers[n as usize].global;
            if want == global || want == u64::MAX {
                trace(now, global, &t);
            }
        }
        match t {
            Transmit::Announce {
                mut announce,
                offers,
            } => {
                for _ in 0..offers {
                    let p = &mut self.peers[n as usize];
                    p.offers += 1;
                    let mut id = [0u8; 20];
                    id[..8].copy_from_slice(&p.global.to_be_bytes());
                    id[8..16].copy_from_slice(&p.offers.to_be_bytes());
                    announce.offers.push(Offer {
                        offer_id: OfferId(id),
                        offer: SessionDescription::offer("v=0 sim"),
                    });
                }
                if self.tracker_up {
                    let at = now + self.tracker_delay(n);
                    self.q.push(
                        at,
                        Ev::ToTracker(n, Box::new(ToTracker::Announce(*announce))),
                    );
                }
            }
            Transmit::AcceptOffer(o) => {
                let answer = ToTracker::Answer(Answer {
                    info_hash: o.info_hash,
                    peer_id: peer_id(self.peers[n as usize].global),
                    to_peer_id: o.peer_id,
                    offer_id: o.offer_id,
                    answer: SessionDescription::answer("v=0 sim"),
                    ext: None,
                });
                if self.tracker_up {
                    let at = now + self.tracker_delay(n);
                    self.q.push(at, Ev::ToTracker(n, Box::new(answer)));
                }
            }
            Transmit::CompleteOffer(a) => {
                debug_assert_eq!(
                    a.offer_id.0[..8],
                    self.peers[n as usize].global.to_be_bytes()
                );
                let Some(other) = peer_index(&self.by_global, &a.peer_id) else {
                    return;
                };
                if !self.peers[other as usize].alive {
                    return;
                }
                self.counters.ice_attempts += 1;
                let net = &self.sc.network;
                let compatible = self.peers[n as usize]
                    .nat
                    .connects(self.peers[other as usize].nat)
                    && !self.cut(n, other);
                let channel = self.channel_of(n);
                let rng = &mut self.net[channel];
                let transient = rng.random::<f64>() < net.ice_transient_failure;
                if compatible && !transient {
                    let setup = model::lognormal(rng, net.ice_median_ms, net.ice_sigma);
                    let at = now + us(setup / 1e3) + self.one_way(n, other);
                    self.q.push(at, Ev::Open(n, other));
                    self.q.push(at, Ev::Open(other, n));
                } else {
                    self.counters.ice_failures += 1;
                    let at = now + us(net.ice_failure_secs);
                    self.q.push(at, Ev::Closed(n, other));
                    self.q.push(at, Ev::Closed(other, n));
                }
            }
            Transmit::DropOffer(_) => {}
            Transmit::Peer { peer, mut data } => {
                let Some(m) = peer_index(&self.by_global, &peer) else {
                    return;
                };
                if !self.peers[m as usize].alive {
                    return;
                }
                if self.peers[n as usize].corrupt {
                    data = corrupt(data);
                }
                let size = self.wire_size(&data);
                let p = &mut self.peers[n as usize];
                let start = p.up_free.max(now);
                let sent = start + size * 1_000_000 / p.up.max(1);
                p.up_free = sent;
                match p.queued.iter_mut().find(|(q, _)| *q == m) {
                    Some((_, b)) => *b += size,
                    None => p.queued.push((m, size)),
                }
                self.q.push(
                    sent,
                    Ev::Departed {
                        n,
                        to: m,
                        size: size as u32,
                    },
                );
                let mut arrive = sent + self.one_way(n, m);
                let channel = self.channel_of(n);
                if self.sc.network.loss > 0.0
                    && self.net[channel].random::<f64>() < self.sc.network.loss
                {
                    arrive += 2 * self.one_way(n, m);
                }
                // Peer messages are paced by the sender's uplink (the suite's uplinks are
                // several times slower than downlinks); only HTTP bodies queue on the
                // downlink (see the module docs).
                let done = arrive + size * 1_000_000 / self.peers[m as usize].down;
                self.q.push(
                    done,
                    Ev::Msg {
                        to: m,
                        from: n,
                        data,
                    },
                );
            }
            Transmit::ClosePeer(peer) => {
                if let Some(m) = peer_index(&self.by_global, &peer) {
                    let at = now + self.one_way(n, m);
                    self.q.push(at, Ev::Closed(m, n));
                }
            }
            Transmit::Http(req) => {
                let HttpTarget::Segment(seg) = req.target;
                let fetch = req.id.0;
                if !self.published(seg.sequence) {
                    let at = self.cdn_response_start(n);
                    self.counters.origin_errors += 1;
                    self.q.push(
                        at,
                        Ev::HttpDone {
                            n,
                            fetch,
                            status: 404,
                        },
                    );
                    return;
                }
                let swarm = self.peers[n as usize].swarm as usize;
                let total = self.swarms[swarm].segment_bytes;
                let range = req.range.clone().unwrap_or(0..total);
                let range = range.start.min(total)..range.end.min(total);
                self.counters.origin_requests += 1;
                let first = self.cdn_response_start(n);
                self.q.push(
                    first,
                    Ev::HttpStart {
                        n,
                        fetch,
                        seq: seg.sequence,
                        start: range.start,
                        end: range.end,
                        total,
                    },
                );
                // The digest sidecar comes with the segment, if the origin publishes one: of a
                // segment still being produced, once it is whole, unless the packager signs
                // each part's chunks as it goes (`stream.part_digests`).
                if self.sc.node.digests_from_origin.unwrap_or(true) {
                    let total = self.swarms[swarm].segment_bytes;
                    if self.produced(seg.sequence, total) == total || self.sc.stream.part_digests {
                        let digest = self.digest(swarm, seg.sequence);
                        if let Some(node) = self.node(n) {
                            node.handle_digest(Time(now), digest);
                        }
                    } else {
                        let whole = self.production_start(seg.sequence) + self.seg_us as i64;
                        self.q.push(
                            first.max(whole as u64),
                            Ev::OriginDigest {
                                n,
                                seq: seg.sequence,
                            },
                        );
                    }
                }
            }
            Transmit::CancelHttp(id) => {
                // A body on the downlink leaves it; one in service or yet to start is
                // dropped when its event comes.
                let p = &mut self.peers[n as usize];
                let queued = p.http.iter().position(|b| b.fetch == id.0);
                if let Some(i) = queued {
                    p.http.remove(i);
                }
                let in_service = p.http_piece.is_some_and(|(b, _, _)| b.fetch == id.0);
                if queued.is_none() || in_service {
                    p.cancelled.push(id.0);
                }
            }
        }
    }

    /// The time a message occupies the links, in scaled bytes: segment payload as it is,
    /// everything else (frame headers, digests, availability) divided by the byte scale, as
    /// those do not shrink with the segments.
    fn wire_size(&self, data: &Bytes) -> u64 {
        if self.scale == 1 {
            return data.len() as u64;
        }
        let payload = data_payload_len(data).unwrap_or(0);
        payload + (data.len() as u64 - payload).div_ceil(self.scale)
    }

    /// Sends the next piece of the HTTP bodies on `n`'s downlink, round-robin, unless one
    /// is crossing it now. The CDN sends what the downlink takes, so the origin is charged
    /// per piece and a cancelled body stops costing it.
    fn serve_http(&mut self, n: u32) {
        let piece = u64::from(self.chunk_size) * HTTP_PIECE_CHUNKS;
        if self.peers[n as usize].http_piece.is_some() {
            return;
        }
        // The next body in turn with bytes produced to send; the others wait for their parts.
        let mut found = None;
        let mut wait = NEVER;
        for _ in 0..self.peers[n as usize].http.len() {
            let Some(body) = self.peers[n as usize].http.pop_front() else {
                break;
            };
            let ready = self.produced(body.seq, body.total);
            if body.next < ready || body.next >= body.end {
                found = Some((body, ready));
                break;
            }
            wait = wait.min(self.produced_at(body.seq, body.next, body.total));
            self.peers[n as usize].http.push_back(body);
        }
        let p = &mut self.peers[n as usize];
        let Some((mut body, ready)) = found else {
            if wait < p.http_ready {
                p.http_ready = wait;
                self.q.push(wait, Ev::HttpReady { n });
            }
            return;
        };
        let from = body.next;
        body.next = (from + piece).min(body.end).min(ready).max(from);
        let last = body.next == body.end;
        if !last {
            p.http.push_back(body);
        }
        p.http_piece = Some((body, from, last));
        let at = self.now + (body.next - from) * 1_000_000 / p.down;
        self.q.push(at, Ev::HttpPiece { n });
        self.count_origin(body.next - from);
    }

    fn count_origin(&mut self, bytes: u64) {
        let real = bytes * self.scale;
        self.row.origin_bytes += real;
        if self.measuring() {
            self.counters.origin_bytes += real;
        }
    }

    /// The operator's signed digest of a segment (all segments are zeros: the chunk hashes
    /// are computed once; the signature is per segment).
    fn digest(&mut self, swarm: usize, seq: u64) -> SignedDigest {
        let s = &mut self.swarms[swarm];
        if let Some((_, d)) = s.digests.iter().find(|(q, _)| *q == seq) {
            return d.clone();
        }
        let len = s.segment_bytes;
        let chunks = len.div_ceil(u64::from(self.chunk_size));
        let mut hashes = vec![self.zero_chunk; chunks as usize];
        let tail = len % u64::from(self.chunk_size);
        if tail != 0 {
            hashes[chunks as usize - 1] = sha2_of_zeros(tail as usize);
        }
        let seg = SegmentRef {
            rendition: rendition(s.rung),
            sequence: seq,
        };
        let digest = SegmentDigest::from_parts(seg.in_swarm(s.id), len, self.chunk_size, hashes)
            .expect("geometry chosen within the limits");
        let signed = self.signer.sign(digest);
        if s.digests.len() >= 64 {
            s.digests.pop_front();
        }
        s.digests.push_back((seq, signed.clone()));
        signed
    }

    fn event(&mut self, n: u32, e: Event) {
        match e {
            Event::SegmentReady {
                segment,
                data,
                sources,
                ..
            } => {
                // Segments are zeros: a wrong byte is one a corrupt peer set; a chunk never
                // filled shows only in the byte count.
                if data.iter().any(|b| *b != 0) || sources.http + sources.p2p < data.len() as u64 {
                    self.counters.bad_segments += 1;
                }
                self.peers[n as usize].player.outstanding = false;
                self.deliver(
                    n,
                    segment.sequence,
                    sources.http * self.scale,
                    sources.p2p * self.scale,
                );
            }
            Event::SegmentFailed { .. } => {
                self.peers[n as usize].player.outstanding = false;
                self.schedule_tick(n, self.now + 500_000);
            }
            _ => {}
        }
    }

    // ---------------------------------------------------------------------------------------
    // The player.

    fn deliver(&mut self, n: u32, _seq: u64, http: u64, p2p: u64) {
        self.row.http_bytes += http;
        self.row.p2p_bytes += p2p;
        if self.measuring() {
            self.counters.http_bytes += http;
            self.counters.p2p_bytes += p2p;
        }
        self.advance_player(n);
        let p = &mut self.peers[n as usize].player;
        p.outstanding = false;
        p.buffered += 1;
        self.schedule_tick(n, self.now);
    }

    fn schedule_tick(&mut self, n: u32, at: u64) {
        let p = &mut self.peers[n as usize].player;
        if at < p.tick_at {
            p.tick_at = at;
            self.q.push(at, Ev::Tick(n));
        }
    }

    fn buffer_ahead(&self, p: &Player) -> u64 {
        (p.buffered * self.seg_us).saturating_sub(p.into)
    }

    fn advance_player(&mut self, n: u32) {
        let now = self.now;
        let seg = self.seg_us;
        let global = self.peers[n as usize].global;
        let p = &mut self.peers[n as usize].player;
        let mut dt = now.saturating_sub(p.last_advance);
        p.last_advance = now;
        if !p.started || p.ended {
            return;
        }
        while dt > 0 {
            if p.buffered == 0 {
                if p.playhead >= p.end {
                    p.ended = true;
                    return;
                }
                if !p.stalled {
                    p.stalled = true;
                    p.stalls += 1;
                    // Diagnostics: `SWARMCDN_SIM_STALLS=1` (docs/simulations.md).
                    if std::env::var_os("SWARMCDN_SIM_STALLS").is_some() {
                        eprintln!(
                            "STALL {:.3} n={} seg={}",
                            now as f64 / 1e6,
                            global,
                            p.playhead
                        );
                    }
                }
                p.stalled_us += dt;
                return;
            }
            p.stalled = false;
            let left = seg - p.into;
            if dt >= left {
                dt -= left;
                p.played_us += left;
                p.into = 0;
                p.buffered -= 1;
                p.playhead += 1;
            } else {
                p.into += dt;
                p.played_us += dt;
                dt = 0;
            }
        }
    }

    fn player_tick(&mut self, n: u32) {
        self.advance_player(n);
        let now = self.now;
        let last = if self.sc.stream.kind == StreamKind::Live {
            self.listed_last()
        } else {
            self.peers[n as usize].player.end.saturating_sub(1)
        };
        let seg = self.seg_us;
        let swarm = self.peers[n as usize].swarm as usize;
        let rend = rendition(self.swarms[swarm].rung);
        let p = &mut self.peers[n as usize].player;
        if !p.started && p.buffered >= STARTUP_SEGMENTS {
            p.started = true;
            p.start_at = now;
            p.last_advance = now;
            p.into = p.start_into;
        }
        let ahead = self.buffer_ahead(&self.peers[n as usize].player);
        let p = &mut self.peers[n as usize].player;
        let mut request = None;
        if !p.outstanding
            && ahead < TARGET_BUFFER_US
            && p.next_request <= last
            && p.next_request < p.end
        {
            request = Some(p.next_request);
            p.next_request += 1;
            p.outstanding = true;
        }
        let next = if p.started {
            now + ahead.min(seg).max(100_000)
        } else {
            now + 250_000
        };
        let playhead = p.playhead;
        self.schedule_tick(n, next);
        if self.opts.control {
            if let Some(seq) = request {
                let bytes = self.swarms[swarm].segment_bytes;
                self.counters.origin_requests += 1;
                self.count_origin(bytes);
                let first = self.cdn_response_start(n);
                // A segment still being produced comes no sooner than its last part.
                let produced = if self.produced(seq, bytes) < bytes {
                    let last_part = bytes * self.part_us / self.seg_us;
                    self.produced_at(seq, bytes - 1, bytes)
                        + last_part * 1_000_000 / self.peers[n as usize].down
                } else {
                    0
                };
                let peer = &mut self.peers[n as usize];
                let done =
                    (peer.down_free.max(first) + bytes * 1_000_000 / peer.down).max(produced);
                peer.down_free = done;
                self.q.push(
                    done,
                    Ev::Direct {
                        n,
                        seq,
                        bytes: bytes * self.scale,
                    },
                );
            }
            return;
        }
        if let Some(node) = self.node(n) {
            node.handle_player(
                Time(now),
                PlayerState {
                    rendition: rend,
                    playhead,
                    buffer_ahead: Duration::from_micros(ahead),
                },
            );
            if let Some(seq) = request {
                node.request_segment(
                    Time(now),
                    SegmentRef {
                        rendition: rend,
                        sequence: seq,
                    },
                );
            }
            self.drain(n);
        }
    }

    fn reload(&mut self, n: u32) {
        let swarm = self.peers[n as usize].swarm as usize;
        let rend = rendition(self.swarms[swarm].rung);
        let seg = Duration::from_micros(self.seg_us);
        let live = self.sc.stream.kind == StreamKind::Live;
        let edge = self.edge();
        let (first, last) = if live {
            (
                edge.saturating_sub(self.sc.stream.window_segments - 1),
                self.listed_last(),
            )
        } else {
            (0, self.peers[n as usize].player.end.saturating_sub(1))
        };
        let playlist = Playlist {
            rendition: rend,
            live,
            segments: (first..=last)
                .map(|sequence| SegmentMeta {
                    sequence,
                    duration: seg,
                    partial: live && sequence > edge,
                })
                .collect(),
        };
        let now = Time(self.now);
        if let Some(node) = self.node(n) {
            node.handle_playlist(now, playlist);
            self.drain(n);
        }
        if live && self.part_us > 0 {
            // LL-HLS: a blocking reload for the next part, answered as it comes out (the last
            // part of a segment lists the segment whole).
            let at = self.now - self.now % self.part_us + self.part_us;
            let delay = us(self.sc.network.rtt_intra_ms / 2e3) + self.peers[n as usize].access_us;
            self.q.push(at + delay, Ev::Reload(n));
        } else if live {
            // hls.js reloads a live playlist about once per target duration.
            self.q.push(self.now + self.seg_us, Ev::Reload(n));
        }
    }

    // ---------------------------------------------------------------------------------------
    // Measurements.

    fn sample(&mut self) {
        let t = self.now / 1_000_000;
        let mut row = std::mem::take(&mut self.row);
        row.t = t;
        let mut viewers = 0;
        for s in &self.swarms {
            let n = s.members.len() as u64;
            if n == 0 {
                continue;
            }
            viewers += n;
            // Real bytes per second of demand and of what peers could supply at most.
            let rate = s.rate * self.scale as f64;
            row.demand += n as f64 * rate;
            let up_bytes = s.class_up.map(|bps| bps / 8.0);
            row.supply +=
                model::bounds::class_peer_supply(rate, &s.class_count, &up_bytes, |i, j| {
                    NatClass::ALL[i].connects(NatClass::ALL[j])
                });
            row.copy_rate += rate;
        }
        row.viewers = viewers;
        self.counters.peak_viewers = self.counters.peak_viewers.max(viewers);
        if self.measuring() {
            self.counters.demand_bytes += row.demand;
            self.counters.supply_bytes += row.supply;
            self.counters.copy_bytes += row.copy_rate;
            self.counters.viewer_seconds += viewers;
        }
        self.counters.series.push(row);
        self.q.push(self.now + 1_000_000, Ev::Sample);
    }
}

/// The bytes of `Data` payloads in a message a node encoded, read from the frames' headers
/// (decoding the message would build every frame: a digest's hashes, an announcement's
/// bitmap); `None` if the frames do not parse.
fn data_payload_len(mut msg: &[u8]) -> Option<u64> {
    let mut total = 0;
    while !msg.is_empty() {
        let len = usize::try_from(varint::get(&mut msg).ok()?).ok()?;
        if len == 0 || len > msg.len() {
            return None;
        }
        let (frame, rest) = msg.split_at(len);
        msg = rest;
        if frame[0] == wire::kind::DATA {
            // Request id, rendition, sequence, offset, then the payload.
            let mut body = &frame[1..];
            varint::get(&mut body).ok()?;
            body = body.get(RENDITION_ID_LEN..)?;
            varint::get(&mut body).ok()?;
            varint::get(&mut body).ok()?;
            total += body.len() as u64;
        }
    }
    Some(total)
}

/// One line per frame or command a traced viewer sends.
fn trace(now: u64, n: u64, t: &Transmit) {
    let at = now as f64 / 1e6;
    match t {
        Transmit::Peer { peer, data } => {
            let to = global_of(peer);
            for f in wire::decode_message(data, wire::LARGE_MAX_MESSAGE).unwrap_or_default() {
                let what = match f {
                    Frame::Data {
                        segment,
                        offset,
                        payload,
                        ..
                    } => format!("Data {} @{offset} +{}", segment.sequence, payload.len()),
                    Frame::Digest(d) => format!("Digest {}", d.digest().segment().sequence),
                    other => format!("{other:?}"),
                };
                eprintln!("{at:.3} {n} -> {to:?}: {what}");
            }
        }
        Transmit::Http(r) => eprintln!("{at:.3} {n} HTTP {:?} {:?}", r.target, r.range),
        other => eprintln!("{at:.3} {n} {other:?}"),
    }
}

fn rendition(rung: usize) -> RenditionId {
    RenditionId([rung as u8 + 1; 8])
}

fn sha2_of_zeros(len: usize) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(vec![0u8; len]).into()
}

/// Flips bits in the payload of every Data frame of a message.
fn corrupt(data: Bytes) -> Bytes {
    let Ok(frames) = wire::decode_message(&data, wire::LARGE_MAX_MESSAGE) else {
        return data;
    };
    if !frames.iter().any(|f| matches!(f, Frame::Data { .. })) {
        return data;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use swarmcdn_core::wire::{Availability, RequestId};

    #[test]
    fn channel_parts_cover_the_shard_once_and_balance_popularity() {
        // Uniform: half the channels each.
        let p = channel_parts(10, 0.0, (0, 1), 2);
        assert_eq!(p.iter().filter(|x| **x == Some(0)).count(), 5);
        assert_eq!(p.iter().filter(|x| **x == Some(1)).count(), 5);
        // Only the shard's channels, each in one part.
        let p = channel_parts(10, 0.0, (1, 3), 2);
        for (c, part) in p.iter().enumerate() {
            assert_eq!(part.is_some(), c % 3 == 1, "channel {c}");
        }
        // Zipf: the expected viewers of the parts within a fifth of each other (at 0.8 over
        // 10 channels the heaviest has 28% of them; channel % 2 would give 58/42).
        let p = channel_parts(10, 0.8, (0, 1), 2);
        let mut load = [0.0; 2];
        for (c, part) in p.iter().enumerate() {
            load[part.unwrap() as usize] += 1.0 / ((c + 1) as f64).powf(0.8);
        }
        assert!(
            load[0].max(load[1]) / load[0].min(load[1]) < 1.2,
            "{load:?}"
        );
        // More parts than channels: some stay empty, none is out of range.
        let p = channel_parts(3, 0.0, (0, 1), 5);
        assert!(p.iter().all(|x| x.is_some_and(|j| j < 5)));
    }

    /// LL-HLS: a segment is listed from its first part on, and the origin has its parts as
    /// they come out (S7: 2 s segments, 0.5 s parts).
    #[test]
    fn parts_come_out_as_they_are_produced() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/s7-low-latency.toml");
        let sc = Scenario::load(&path).unwrap();
        let mut run = Run::new(&sc, Options::new(1, false)).unwrap();
        // This segment is produced from 4 s to 6 s into the run.
        let seq = LIVE_FIRST_SEQUENCE + 3;
        for (secs, listed, produced) in [
            (4.0, seq - 1, 0),
            (4.499, seq - 1, 0),
            (4.5, seq, 250),
            (5.0, seq, 500),
            (5.999, seq, 750),
            (6.0, seq, 1000),
            (6.499, seq, 1000),
            (6.5, seq + 1, 1000),
        ] {
            run.now = us(secs);
            assert_eq!(run.listed_last(), listed, "at {secs} s");
            assert_eq!(run.published(seq), listed >= seq, "at {secs} s");
            assert_eq!(run.produced(seq, 1000), produced, "at {secs} s");
        }
        for (byte, at) in [(0, 4.5), (249, 4.5), (250, 5.0), (999, 6.0)] {
            assert_eq!(run.produced_at(seq, byte, 1000), us(at), "byte {byte}");
        }
        // Without parts, a segment is listed and served whole once produced.
        let whole = Scenario::load_with(&path, &["stream.part_secs=2".into()]).unwrap();
        let mut run = Run::new(&whole, Options::new(1, false)).unwrap();
        run.now = us(5.9);
        assert_eq!(run.listed_last(), seq - 1);
        assert_eq!(run.produced(seq, 1000), 0);
        run.now = us(6.0);
        assert_eq!(run.produced(seq, 1000), 1000);
    }

    #[test]
    fn data_payloads_are_read_from_the_frame_headers() {
        let seg = |sequence| SegmentRef {
            rendition: RenditionId([7; RENDITION_ID_LEN]),
            sequence,
        };
        let signer = DigestSigner::from_secret(OPERATOR_SECRET);
        let body = vec![3u8; 5000];
        let digest = signer.sign(SegmentDigest::compute(
            seg(300).in_swarm(SwarmId([1; 20])),
            &body,
            MIN_CHUNK_SIZE,
        ));
        let data = |id, offset: u64, len: usize| Frame::Data {
            id: RequestId(id),
            segment: seg(300 + u64::from(id)),
            offset,
            payload: Bytes::from(vec![1u8; len]),
        };
        let messages = [
            vec![data(1, 0, 1024)],
            vec![
                Frame::Digest(Box::new(digest)),
                data(2, 1 << 40, 70_000),
                Frame::Have(Availability::from_sequences(seg(0).rendition, [5, 9])),
                data(300, 7, 0),
            ],
            vec![Frame::Chunks {
                segment: seg(1),
                bitmap: Bytes::from_static(&[0xff, 1]),
            }],
        ];
        for frames in messages {
            let msg = wire::encode_frames(&frames);
            let want: u64 = frames
                .iter()
                .map(|f| match f {
                    Frame::Data { payload, .. } => payload.len() as u64,
                    _ => 0,
                })
                .sum();
            assert_eq!(data_payload_len(&msg), Some(want));
            // A message cut short does not parse.
            assert_eq!(data_payload_len(&msg[..msg.len() - 1]), None);
        }
        assert_eq!(data_payload_len(&[]), Some(0));
        assert_eq!(data_payload_len(&[0]), None);
    }
}
