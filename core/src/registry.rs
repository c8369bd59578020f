//! The tracker's swarm logic: membership, peer matching, offer relay and expiry.
//!
//! Synchronous and buffer-out: the tracker shell (or the simulator) hands each decoded client
//! message to [`Registry::handle_message`] with the current time and the connection it came
//! from, and sends what the registry pushed into `out`. The registry never does IO and never
//! reads a clock; [`Registry::poll_timeout`] says when [`Registry::handle_timeout`] is due.
//!
//! ```no_run
//! # use swarmcdn_core::registry::{ConnId, Registry, RegistryConfig};
//! # use swarmcdn_core::time::Time;
//! # use swarmcdn_core::tracker_proto::{FromTracker, ToTracker};
//! # fn now() -> Time { Time::ZERO }
//! # fn recv() -> (ConnId, ToTracker) { (ConnId(1), ToTracker::Scrape(Default::default())) }
//! # fn send(_: ConnId, _: FromTracker) {}
//! let mut registry = Registry::new(RegistryConfig::default(), 42).unwrap();
//! let mut out = Vec::new();
//! loop {
//!     let (conn, msg) = recv();
//!     registry.handle_message(now(), conn, msg, &mut out);
//!     for (to, reply) in out.drain(..) {
//!         send(to, reply);
//!     }
//!     if registry.poll_timeout().is_some_and(|t| t <= now()) {
//!         registry.handle_timeout(now());
//!     }
//! }
//! ```
//!
//! # Matching
//!
//! An announce with `k` offers sends them to `k` other peers of the swarm (never the announcer,
//! nor another peer on the same connection), chosen from a random sample of
//! [`RegistryConfig::match_sample`] peers plus every seed, ranked in this order:
//!
//! 1. the same rendition as the announcer;
//! 2. a close playback position (within [`RegistryConfig::position_window`] segments, then by
//!    distance);
//! 3. the same locality hint;
//! 4. NAT compatibility (pairs that cannot connect without a relay rank last);
//! 5. more free upload slots;
//!
//! with ties broken at random. In a thin swarm (at most [`RegistryConfig::thin_swarm_viewers`]
//! viewers) a viewer's offers always include a seed when the swarm has one.
//!
//! # Offers and answers
//!
//! Each relayed offer is remembered as pending for [`RegistryConfig::offer_ttl`]. An answer is
//! relayed only if it matches a pending offer that was sent to the answering peer; otherwise the
//! answerer gets a `failure reason`. A peer has at most
//! [`RegistryConfig::max_pending_offers_per_peer`] offers pending; offers beyond that are
//! dropped. Pending offers are kept with their offerer. An answered offer frees its places at
//! once. An offer that expires unanswered frees its offerer's place at the offerer's next
//! announce or at the next sweep (within [`RegistryConfig::sweep_interval`]), whichever comes
//! first, and its target's then too. An offerer that leaves withdraws its offers (they can no
//! longer be answered), but until they expire each keeps its target's place, and they count
//! against the next peer of the same connection in the swarm as if still its own: so leaving
//! and coming back gets round neither the cap on offers pending to one peer nor the caps on
//! one offerer's offers.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use foldhash::fast::FixedState;
use indexmap::IndexMap;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use crate::ids::{PeerId, SwarmId};
use crate::time::Time;
use crate::tracker_proto::{
    Announce, AnnounceEvent, AnnounceResponse, Answer, Demand, ErrorResponse, FromTracker, NatType,
    OfferId, PeerInfo, RelayedAnswer, RelayedOffer, Role, Scrape, ScrapeResponse, ScrapeStats,
    Standby, ToTracker,
};

/// The shell's id for one client connection (one WebSocket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Limits and timings of the registry. Every limit is configurable.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryConfig {
    /// The announce interval told to clients. Default 120 s, as bittorrent-tracker and aquatic.
    pub announce_interval: Duration,
    /// A peer that has not announced for this long is removed. Default 300 s: two missed
    /// announces and some slack.
    pub peer_timeout: Duration,
    /// An offer not answered within this time expires. Default 60 s: the bittorrent-tracker
    /// client gives up on its own offers after 50 s.
    pub offer_ttl: Duration,
    /// Offers used per announce; further offers are ignored. Default 10, as aquatic.
    pub max_offers_per_announce: usize,
    /// Peers per swarm; announces of new peers beyond it are refused. Default 100 000.
    pub max_peers_per_swarm: usize,
    /// Swarms one connection may join. Default 64.
    pub max_swarms_per_conn: usize,
    /// Offers of one peer pending at once. Default 50.
    pub max_pending_offers_per_peer: usize,
    /// Offers pending to one peer at once: a peer with this many unanswered offers is not
    /// matched again until it answers or they expire, so that others' offers cannot flood one
    /// victim's connection (and have it dropped as a slow reader). Default 64.
    pub max_pending_offers_to_peer: usize,
    /// Swarm ids one scrape may ask about (and swarms listed when it names none). Default 64.
    pub max_scrape_swarms: usize,
    /// How many peers (besides seeds) are ranked per announce, sampled at random from large
    /// swarms. Default 64: ranking is linear in it.
    pub match_sample: usize,
    /// A swarm with at most this many viewers is thin: its viewers are always offered a seed.
    /// Default 16.
    pub thin_swarm_viewers: usize,
    /// Playback positions within this many segments count as close. Default 3.
    pub position_window: u64,
    /// How often silent peers and expired offers are swept. Default 10 s.
    pub sweep_interval: Duration,
    /// Seeds on standby (`seed_standby`) at most; 0 turns the feature off. Default 64.
    pub max_standby_seeds: usize,
    /// A swarm without a seed asks a standby seed to join at most this often. Default 30 s.
    pub demand_interval: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            announce_interval: Duration::from_secs(120),
            peer_timeout: Duration::from_secs(300),
            offer_ttl: Duration::from_secs(60),
            max_offers_per_announce: 10,
            max_peers_per_swarm: 100_000,
            max_swarms_per_conn: 64,
            max_pending_offers_per_peer: 50,
            max_pending_offers_to_peer: 64,
            max_scrape_swarms: 64,
            match_sample: 64,
            thin_swarm_viewers: 16,
            position_window: 3,
            sweep_interval: Duration::from_secs(10),
            max_standby_seeds: 64,
            demand_interval: Duration::from_secs(30),
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A limit or duration that must be positive is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The peer timeout is not longer than the announce interval: every peer would expire.
    #[error("peer_timeout must be longer than announce_interval")]
    PeerTimeoutTooShort,
}

/// Why a message was refused (also the `failure reason` sent back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rejection {
    /// The swarm has [`RegistryConfig::max_peers_per_swarm`] peers.
    SwarmFull,
    /// The connection is in [`RegistryConfig::max_swarms_per_conn`] swarms.
    TooManySwarms,
    /// The peer id is used in this swarm by another connection.
    PeerIdInUse,
    /// The connection already has a peer (another peer id) in this swarm.
    SecondPeer,
    /// An answer from a peer that is not in the swarm on this connection.
    NotInSwarm,
    /// An answer to an offer that was not sent to the answerer, or has expired.
    UnknownOffer,
    /// A scrape naming more than [`RegistryConfig::max_scrape_swarms`] swarms.
    ScrapeTooLarge,
    /// A `seed_standby` beyond [`RegistryConfig::max_standby_seeds`].
    StandbyFull,
    /// An announce whose offers, decoded to be relayed, were malformed (the announce itself
    /// was taken: offers are decoded only when there is a peer to relay them to).
    MalformedOffers,
}

impl Rejection {
    /// Every rejection, for metrics.
    pub const ALL: [Self; 9] = [
        Self::SwarmFull,
        Self::TooManySwarms,
        Self::PeerIdInUse,
        Self::SecondPeer,
        Self::NotInSwarm,
        Self::UnknownOffer,
        Self::ScrapeTooLarge,
        Self::StandbyFull,
        Self::MalformedOffers,
    ];

    /// The `failure reason` text.
    pub fn reason(self) -> &'static str {
        match self {
            Self::SwarmFull => "swarm is full",
            Self::TooManySwarms => "too many swarms on this connection",
            Self::PeerIdInUse => "peer_id is in use in this swarm by another connection",
            Self::SecondPeer => {
                "this connection already has a peer in this swarm (send stopped to change peer_id)"
            }
            Self::NotInSwarm => "answer from a peer that has not announced in this swarm",
            Self::UnknownOffer => {
                "could not find the offer corresponding to your answer; it may have expired"
            }
            Self::ScrapeTooLarge => "scrape names too many swarms",
            Self::StandbyFull => "no room for another seed on standby",
            Self::MalformedOffers => "malformed offers: none was relayed",
        }
    }

    /// A short label, for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::SwarmFull => "swarm_full",
            Self::TooManySwarms => "too_many_swarms",
            Self::PeerIdInUse => "peer_id_in_use",
            Self::SecondPeer => "second_peer",
            Self::NotInSwarm => "not_in_swarm",
            Self::UnknownOffer => "unknown_offer",
            Self::ScrapeTooLarge => "scrape_too_large",
            Self::StandbyFull => "standby_full",
            Self::MalformedOffers => "malformed_offers",
        }
    }

    fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|r| *r == self)
            .expect("ALL lists every variant")
    }
}

/// Counters and gauges of the registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// Swarms with at least one peer.
    pub swarms: usize,
    /// Peers, over all swarms.
    pub peers: usize,
    /// Seeds (role seed), over all swarms.
    pub seeds: usize,
    /// Offers pending an answer.
    pub pending_offers: usize,
    /// Announces handled (including answers' enclosing messages: no).
    pub announces: u64,
    /// Offers relayed to a peer.
    pub offers_relayed: u64,
    /// Answers relayed back to an offerer.
    pub answers_relayed: u64,
    /// Scrapes answered.
    pub scrapes: u64,
    /// Offers that expired unanswered.
    pub offers_expired: u64,
    /// Peers removed because they stopped announcing.
    pub peers_expired: u64,
    /// Seeds on standby now.
    pub standby_seeds: usize,
    /// Requests sent to standby seeds to join a swarm.
    pub demands: u64,
    /// Rejections, indexed like [`Rejection::ALL`].
    pub rejections: [u64; Rejection::ALL.len()],
}

impl RegistryStats {
    /// A peer left its swarm.
    fn forget(&mut self, p: &Peer) {
        self.pending_offers -= p.pending.len();
        self.peers -= 1;
        if p.is_seed() {
            self.seeds -= 1;
        }
    }

    /// The count of one kind of rejection.
    pub fn rejected(&self, r: Rejection) -> u64 {
        self.rejections[r.index()]
    }
}

type Map<K, V> = HashMap<K, V, FixedState>;

struct Peer {
    conn: ConnId,
    info: PeerInfo,
    seeder: bool,
    last_seen: Time,
    /// Its offers relayed and not yet answered, one per target: a peer is not offered again
    /// by the same offerer while one is pending (a node ignores offers from a neighbour it is
    /// connected to, and they would pile up at the target until they expire).
    pending: Vec<PendingOffer>,
    /// Offers to it pending its answer (from as many offerers).
    offers_in: usize,
}

impl Peer {
    fn is_seed(&self) -> bool {
        self.info.role == Some(Role::Seed)
    }
}

#[derive(Default)]
struct Swarm {
    peers: IndexMap<PeerId, Peer, FixedState>,
    /// The peers with role seed (few: the operator's).
    seeds: Vec<PeerId>,
    /// Peers with nothing left to download.
    complete: usize,
    /// `completed` events seen.
    downloaded: u64,
    /// Offers of peers that left, by the connection they came from: no longer answerable,
    /// they hold their targets' places until they expire, and count against that
    /// connection's next peer here.
    withdrawn: HashMap<ConnId, Vec<PendingOffer>, FixedState>,
}

impl Swarm {
    fn viewers(&self) -> usize {
        self.peers.len() - self.seeds.len()
    }

    /// Removes a peer; the offers it had pending are withdrawn: they hold their targets'
    /// places until they expire.
    fn remove(&mut self, id: &PeerId) -> Option<Peer> {
        let peer = self.peers.swap_remove(id)?;
        if !peer.pending.is_empty() {
            (self.withdrawn.entry(peer.conn).or_default()).extend_from_slice(&peer.pending);
        }
        if peer.seeder {
            self.complete -= 1;
        }
        if peer.is_seed() {
            self.seeds.retain(|s| s != id);
        }
        Some(peer)
    }

    /// An offer is no longer pending: its target, if still the peer it went to, has room for
    /// another.
    fn release_target(&mut self, o: &PendingOffer) {
        if let Some(p) = self.peers.get_mut(&o.to).filter(|p| p.conn == o.to_conn) {
            p.offers_in = p.offers_in.saturating_sub(1);
        }
    }

    /// Forgets the offers that expired at `now`, withdrawn ones included; returns how many
    /// of them were pending.
    fn expire_offers(&mut self, now: Time) -> usize {
        let mut expired = Vec::new();
        for p in self.peers.values_mut() {
            take_expired(&mut p.pending, now, &mut expired);
        }
        let pending = expired.len();
        self.withdrawn.retain(|_, list| {
            take_expired(list, now, &mut expired);
            !list.is_empty()
        });
        for o in &expired {
            self.release_target(o);
        }
        pending
    }

    /// Forgets the offers of `id` that expired at `now`; returns how many.
    fn expire_offers_of(&mut self, id: &PeerId, now: Time) -> usize {
        let mut expired = Vec::new();
        if let Some(p) = self.peers.get_mut(id) {
            take_expired(&mut p.pending, now, &mut expired);
        }
        for o in &expired {
            self.release_target(o);
        }
        expired.len()
    }
}

/// Moves the offers of `pending` that expired at `now` into `expired` (an emptied list gives
/// its room back).
fn take_expired(pending: &mut Vec<PendingOffer>, now: Time, expired: &mut Vec<PendingOffer>) {
    if pending.iter().all(|o| o.expires > now) {
        return;
    }
    pending.retain(|o| {
        let keep = o.expires > now;
        if !keep {
            expired.push(*o);
        }
        keep
    });
    if pending.is_empty() {
        *pending = Vec::new();
    }
}

/// An offer relayed and not yet answered, kept by its offerer (in its swarm).
#[derive(Debug, Clone, Copy)]
struct PendingOffer {
    offer_id: OfferId,
    /// The peer it went to, and that peer's connection: only that peer on that connection
    /// may answer (not another client that took its peer id after it left).
    to: PeerId,
    to_conn: ConnId,
    expires: Time,
}

/// The swarms of one tracker instance.
pub struct Registry {
    config: RegistryConfig,
    rng: Xoshiro256PlusPlus,
    swarms: Map<SwarmId, Swarm>,
    /// The (swarm, peer) pairs each connection announced.
    conns: Map<ConnId, Vec<(SwarmId, PeerId)>>,
    next_sweep: Option<Time>,
    stats: RegistryStats,
    /// Seeds on standby, by connection.
    standby: BTreeMap<ConnId, PeerId>,
    /// When each swarm last asked a standby seed to join.
    demanded: Map<SwarmId, Time>,
    /// Scratch space for ranking, reused across announces.
    scratch: Vec<(Score, PeerId)>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("swarms", &self.swarms.len())
            .field("conns", &self.conns.len())
            .field("pending_offers", &self.stats.pending_offers)
            .finish_non_exhaustive()
    }
}

/// Ranking key of a candidate: larger is better, compared field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Score {
    same_rendition: bool,
    close_position: bool,
    /// Negated distance in segments (so that closer is larger).
    neg_distance: i64,
    same_locality: bool,
    nat: u8,
    upload_slots: u32,
    random: u32,
}

impl Registry {
    /// A registry. `rng_seed` seeds its random choices (and its hash maps' keys): the shell
    /// passes a random seed, tests a fixed one.
    pub fn new(config: RegistryConfig, rng_seed: u64) -> Result<Self, ConfigError> {
        for (value, name) in [
            (config.max_offers_per_announce, "max_offers_per_announce"),
            (config.max_peers_per_swarm, "max_peers_per_swarm"),
            (config.max_swarms_per_conn, "max_swarms_per_conn"),
            (config.max_scrape_swarms, "max_scrape_swarms"),
            (
                config.max_pending_offers_to_peer,
                "max_pending_offers_to_peer",
            ),
            (config.match_sample, "match_sample"),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        for (value, name) in [
            (config.announce_interval, "announce_interval"),
            (config.offer_ttl, "offer_ttl"),
            (config.sweep_interval, "sweep_interval"),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if config.peer_timeout <= config.announce_interval {
            return Err(ConfigError::PeerTimeoutTooShort);
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(rng_seed);
        let hasher = FixedState::with_seed(rng.random());
        Ok(Self {
            config,
            rng,
            swarms: HashMap::with_hasher(hasher.clone()),
            conns: HashMap::with_hasher(hasher.clone()),
            next_sweep: None,
            stats: RegistryStats::default(),
            standby: BTreeMap::new(),
            demanded: HashMap::with_hasher(hasher),
            scratch: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Counters and gauges, in constant time (peers and seeds are counted as they come and
    /// go: `/metrics` must not walk every swarm on the worker). Debug builds check the counts
    /// against a walk of every swarm.
    pub fn stats(&self) -> RegistryStats {
        debug_assert_eq!(
            self.stats.peers,
            self.swarms.values().map(|s| s.peers.len()).sum::<usize>()
        );
        debug_assert_eq!(
            self.stats.seeds,
            self.swarms.values().map(|s| s.seeds.len()).sum::<usize>()
        );
        debug_assert_eq!(
            self.stats.pending_offers,
            self.swarms
                .values()
                .flat_map(|s| s.peers.values())
                .map(|p| p.pending.len())
                .sum::<usize>()
        );
        // A peer's count of offers to it is at most the offers, pending or withdrawn, that
        // went to it (fewer only when it left and came back on the same connection under the
        // same id).
        #[cfg(debug_assertions)]
        for s in self.swarms.values() {
            let mut to: HashMap<(PeerId, ConnId), usize> = HashMap::new();
            let all = s.peers.values().flat_map(|p| &p.pending);
            for o in all.chain(s.withdrawn.values().flatten()) {
                *to.entry((o.to, o.to_conn)).or_default() += 1;
            }
            for (id, p) in &s.peers {
                let to_it = to.get(&(*id, p.conn)).copied().unwrap_or(0);
                debug_assert!(p.offers_in <= to_it, "{} > {to_it}", p.offers_in);
            }
        }
        RegistryStats {
            swarms: self.swarms.len(),
            standby_seeds: self.standby.len(),
            ..self.stats.clone()
        }
    }

    /// Number of peers in `swarm`.
    pub fn swarm_len(&self, swarm: &SwarmId) -> usize {
        self.swarms.get(swarm).map_or(0, |s| s.peers.len())
    }

    /// Handles one message from connection `conn`; replies and relayed messages go to `out`.
    pub fn handle_message(
        &mut self,
        now: Time,
        conn: ConnId,
        msg: ToTracker,
        out: &mut Vec<(ConnId, FromTracker)>,
    ) {
        match msg {
            ToTracker::Announce(a) => self.handle_announce(now, conn, a, out),
            ToTracker::Answer(a) => self.handle_answer(now, conn, a, out),
            ToTracker::Scrape(s) => self.handle_scrape(conn, s, out),
            ToTracker::Standby(st) => self.handle_standby(conn, st, out),
        }
    }

    /// A seed offers to join swarms on demand: while its connection lasts, swarms without a
    /// seed whose viewers name their stream ask it (one seed per swarm, by rendezvous hashing
    /// of the swarm id over the standby seeds' peer ids, so a repeated demand goes to the same
    /// seed).
    pub fn handle_standby(
        &mut self,
        conn: ConnId,
        st: Standby,
        out: &mut Vec<(ConnId, FromTracker)>,
    ) {
        if !self.standby.contains_key(&conn) && self.standby.len() >= self.config.max_standby_seeds
        {
            self.reject(conn, Rejection::StandbyFull, "seed_standby", None, out);
            return;
        }
        self.standby.insert(conn, st.peer_id);
    }

    fn maybe_demand(
        &mut self,
        now: Time,
        swarm_id: SwarmId,
        a: &Announce,
        out: &mut Vec<(ConnId, FromTracker)>,
    ) {
        if self.standby.is_empty() {
            return;
        }
        let Some(stream) = a.ext.as_ref().and_then(|e| e.stream.as_ref()) else {
            return;
        };
        if self
            .swarms
            .get(&swarm_id)
            .is_none_or(|s| !s.seeds.is_empty())
        {
            return;
        }
        if self
            .demanded
            .get(&swarm_id)
            .is_some_and(|t| now.saturating_since(*t) < self.config.demand_interval)
        {
            return;
        }
        let Some((&seed_conn, _)) = self
            .standby
            .iter()
            .max_by_key(|(_, id)| crate::rendezvous::weight(&swarm_id, &id.to_hex()))
        else {
            return;
        };
        self.demanded.insert(swarm_id, now);
        self.stats.demands += 1;
        out.push((
            seed_conn,
            FromTracker::Demand(Demand {
                info_hash: swarm_id,
                stream: stream.clone(),
            }),
        ));
    }

    /// Handles an announce: joins, refreshes or leaves the swarm, and relays its offers.
    pub fn handle_announce(
        &mut self,
        now: Time,
        conn: ConnId,
        a: Announce,
        out: &mut Vec<(ConnId, FromTracker)>,
    ) {
        self.stats.announces += 1;
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + self.config.sweep_interval);
        }
        let swarm_id = a.info_hash;

        if a.event == Some(AnnounceEvent::Stopped) {
            self.remove_peer(conn, swarm_id, a.peer_id);
            let resp = self.announce_response(swarm_id);
            out.push((conn, resp));
            return;
        }

        if let Err(r) = self.upsert_peer(now, conn, &a) {
            self.reject(conn, r, "announce", Some(swarm_id), out);
            return;
        }
        let resp = self.announce_response(swarm_id);
        out.push((conn, resp));
        self.maybe_demand(now, swarm_id, &a, out);

        if !a.offers.is_empty() {
            self.relay_offers(now, conn, swarm_id, a, out);
        }
    }

    fn upsert_peer(&mut self, now: Time, conn: ConnId, a: &Announce) -> Result<(), Rejection> {
        let swarm_full = self
            .swarms
            .get(&a.info_hash)
            .is_some_and(|s| s.peers.len() >= self.config.max_peers_per_swarm);
        let conn_swarms = self.conns.get(&conn).map_or(0, Vec::len);
        let info = relayable(a.ext.as_ref());
        let seeder = a.left == Some(0) || a.event == Some(AnnounceEvent::Completed);

        let swarm = self.swarms.entry(a.info_hash).or_default();
        match swarm.peers.get_mut(&a.peer_id) {
            Some(peer) if peer.conn != conn => return Err(Rejection::PeerIdInUse),
            Some(peer) => {
                let was_seed = peer.is_seed();
                if peer.seeder != seeder {
                    if seeder {
                        swarm.complete += 1;
                    } else {
                        swarm.complete -= 1;
                    }
                }
                peer.seeder = seeder;
                peer.last_seen = now;
                // An update without the extension keeps what the peer said before.
                if a.ext.is_some() {
                    peer.info = info;
                }
                let is_seed = peer.is_seed();
                if was_seed != is_seed {
                    if is_seed {
                        swarm.seeds.push(a.peer_id);
                        self.stats.seeds += 1;
                    } else {
                        swarm.seeds.retain(|s| *s != a.peer_id);
                        self.stats.seeds -= 1;
                    }
                }
            }
            None => {
                let second = self.conns.get(&conn).is_some_and(|entries| {
                    entries.iter().any(|(swarm_id, _)| *swarm_id == a.info_hash)
                });
                let err = if second {
                    Some(Rejection::SecondPeer)
                } else if swarm_full {
                    Some(Rejection::SwarmFull)
                } else if conn_swarms >= self.config.max_swarms_per_conn {
                    Some(Rejection::TooManySwarms)
                } else {
                    None
                };
                if let Some(err) = err {
                    if swarm.peers.is_empty() {
                        self.swarms.remove(&a.info_hash);
                    }
                    return Err(err);
                }
                let peer = Peer {
                    conn,
                    info,
                    seeder,
                    last_seen: now,
                    pending: Vec::new(),
                    offers_in: 0,
                };
                if peer.is_seed() {
                    swarm.seeds.push(a.peer_id);
                    self.stats.seeds += 1;
                }
                self.stats.peers += 1;
                if seeder {
                    swarm.complete += 1;
                }
                swarm.peers.insert(a.peer_id, peer);
                // Most connections announce in one swarm: no room for four up front.
                self.conns
                    .entry(conn)
                    .or_insert_with(|| Vec::with_capacity(1))
                    .push((a.info_hash, a.peer_id));
            }
        }
        if a.event == Some(AnnounceEvent::Completed) {
            swarm.downloaded += 1;
        }
        Ok(())
    }

    fn announce_response(&self, swarm_id: SwarmId) -> FromTracker {
        let (complete, total) = self
            .swarms
            .get(&swarm_id)
            .map_or((0, 0), |s| (s.complete, s.peers.len()));
        FromTracker::AnnounceResponse(AnnounceResponse {
            info_hash: swarm_id,
            interval: Some(
                u32::try_from(self.config.announce_interval.as_secs()).unwrap_or(u32::MAX),
            ),
            min_interval: None,
            complete: Some(complete as u64),
            incomplete: Some((total - complete) as u64),
            tracker_id: None,
            warning: None,
        })
    }

    fn relay_offers(
        &mut self,
        now: Time,
        conn: ConnId,
        swarm_id: SwarmId,
        a: Announce,
        out: &mut Vec<(ConnId, FromTracker)>,
    ) {
        let Some(swarm) = self.swarms.get_mut(&swarm_id) else {
            return;
        };
        // Its own expired offers free its places, and their targets', now.
        let expired = swarm.expire_offers_of(&a.peer_id, now);
        self.stats.pending_offers -= expired;
        self.stats.offers_expired += expired as u64;
        let Some(me) = swarm.peers.get(&a.peer_id) else {
            return;
        };
        // Offers its connection's earlier peers here left behind count as its own.
        let left_behind = swarm
            .withdrawn
            .get(&me.conn)
            .map_or(0, |w| w.iter().filter(|o| o.expires > now).count());
        let room = self
            .config
            .max_pending_offers_per_peer
            .saturating_sub(me.pending.len() + left_behind);
        // Offers are decoded only when someone could get one.
        if room == 0 || swarm.peers.len() < 2 {
            return;
        }
        let Ok(mut offers) = a.offers.into_vec() else {
            self.reject(
                conn,
                Rejection::MalformedOffers,
                "announce",
                Some(swarm_id),
                out,
            );
            return;
        };
        offers.truncate(self.config.max_offers_per_announce);
        let wanted = offers.len().min(room);
        if wanted == 0 {
            return;
        }
        let Some(swarm) = self.swarms.get_mut(&swarm_id) else {
            return;
        };
        let Some(me) = swarm.peers.get(&a.peer_id) else {
            return;
        };
        let me_conn = me.conn;
        let me_info = me.info.clone();
        let me_is_viewer = !me.is_seed();

        let mut ranked = std::mem::take(&mut self.scratch);
        ranked.clear();
        rank_candidates(
            &self.config,
            &mut self.rng,
            now,
            swarm,
            a.peer_id,
            me_conn,
            &me_info,
            &mut ranked,
        );
        let mut chosen: Vec<PeerId> = ranked.iter().take(wanted).map(|(_, id)| *id).collect();

        // Thin swarms: a viewer always gets a seed among its offers.
        let thin = swarm.viewers() <= self.config.thin_swarm_viewers;
        if me_is_viewer && thin && !chosen.is_empty() {
            let has_seed = chosen.iter().any(|id| swarm.seeds.contains(id));
            let best_seed = ranked
                .iter()
                .find(|(_, id)| swarm.seeds.contains(id))
                .map(|(_, id)| *id);
            if let (false, Some(seed)) = (has_seed, best_seed) {
                let last = chosen.len() - 1;
                chosen[last] = seed;
            }
        }
        self.scratch = ranked;

        let expires = now + self.config.offer_ttl;
        let mut sent = Vec::with_capacity(chosen.len());
        for (offer, to) in offers.into_iter().zip(chosen) {
            let own = &swarm.peers[&a.peer_id].pending;
            if own
                .iter()
                .chain(&sent)
                .any(|o| o.offer_id == offer.offer_id)
            {
                // An id of its own still pending: not relayed (repeating one would get round
                // the caps on pending offers).
                continue;
            }
            let target = swarm
                .peers
                .get_mut(&to)
                .expect("a ranked candidate is in the swarm");
            target.offers_in += 1;
            out.push((
                target.conn,
                FromTracker::Offer(RelayedOffer {
                    info_hash: swarm_id,
                    peer_id: a.peer_id,
                    offer_id: offer.offer_id,
                    offer: offer.offer,
                    ext: Some(me_info.clone()),
                }),
            ));
            sent.push(PendingOffer {
                offer_id: offer.offer_id,
                to,
                to_conn: target.conn,
                expires,
            });
        }
        self.stats.offers_relayed += sent.len() as u64;
        self.stats.pending_offers += sent.len();
        if let Some(me) = swarm.peers.get_mut(&a.peer_id) {
            me.pending.extend(sent);
        }
    }

    /// Handles an answer: relays it to the offerer if it answers an offer sent to this peer.
    pub fn handle_answer(
        &mut self,
        now: Time,
        conn: ConnId,
        a: Answer,
        out: &mut Vec<(ConnId, FromTracker)>,
    ) {
        let Some(swarm) = self.swarms.get_mut(&a.info_hash) else {
            self.reject(
                conn,
                Rejection::NotInSwarm,
                "announce",
                Some(a.info_hash),
                out,
            );
            return;
        };
        // Only a valid answer keeps the answerer alive (below): bogus answers must not hold a
        // peer in a swarm whose announces it no longer makes (or may no longer make: a
        // refused join token).
        let answerer_info = match swarm.peers.get(&a.peer_id) {
            Some(p) if p.conn == conn => {
                if a.ext.is_some() {
                    // Its role is the one its announces claimed (and had checked).
                    PeerInfo {
                        role: p.info.role,
                        ..relayable(a.ext.as_ref())
                    }
                } else {
                    p.info.clone()
                }
            }
            _ => {
                self.reject(
                    conn,
                    Rejection::NotInSwarm,
                    "announce",
                    Some(a.info_hash),
                    out,
                );
                return;
            }
        };
        // The offer, pending with its offerer (gone with it if it left).
        let pending = swarm.peers.get(&a.to_peer_id).and_then(|offerer| {
            offerer.pending.iter().position(|o| {
                o.offer_id == a.offer_id
                    && o.to == a.peer_id
                    && o.to_conn == conn
                    && o.expires > now
            })
        });
        let Some(i) = pending else {
            self.reject(
                conn,
                Rejection::UnknownOffer,
                "announce",
                Some(a.info_hash),
                out,
            );
            return;
        };
        let offerer = swarm.peers.get_mut(&a.to_peer_id).expect("found above");
        offerer.pending.swap_remove(i);
        if offerer.pending.is_empty() {
            offerer.pending = Vec::new();
        }
        let offerer_conn = offerer.conn;
        self.stats.pending_offers -= 1;
        if let Some(p) = swarm.peers.get_mut(&a.peer_id) {
            p.last_seen = now;
            p.offers_in = p.offers_in.saturating_sub(1);
        }
        out.push((
            offerer_conn,
            FromTracker::Answer(RelayedAnswer {
                info_hash: a.info_hash,
                peer_id: a.peer_id,
                offer_id: a.offer_id,
                answer: a.answer,
                ext: Some(answerer_info),
            }),
        ));
        self.stats.answers_relayed += 1;
    }

    /// Handles a scrape.
    pub fn handle_scrape(&mut self, conn: ConnId, s: Scrape, out: &mut Vec<(ConnId, FromTracker)>) {
        if s.info_hashes.len() > self.config.max_scrape_swarms {
            self.reject(conn, Rejection::ScrapeTooLarge, "scrape", None, out);
            return;
        }
        let stats = |sw: &Swarm| ScrapeStats {
            complete: sw.complete as u64,
            incomplete: (sw.peers.len() - sw.complete) as u64,
            downloaded: sw.downloaded,
        };
        let files = if s.info_hashes.is_empty() {
            self.swarms
                .iter()
                .take(self.config.max_scrape_swarms)
                .map(|(id, sw)| (*id, stats(sw)))
                .collect()
        } else {
            s.info_hashes
                .iter()
                .map(|id| (*id, self.swarms.get(id).map(stats).unwrap_or_default()))
                .collect()
        };
        self.stats.scrapes += 1;
        out.push((
            conn,
            FromTracker::Scrape(ScrapeResponse {
                files,
                min_request_interval: None,
            }),
        ));
    }

    /// Whether the connection has a peer in some swarm, or is on standby.
    pub fn holds_peers(&self, conn: ConnId) -> bool {
        self.standby.contains_key(&conn) || self.conns.get(&conn).is_some_and(|e| !e.is_empty())
    }

    /// The connection closed: its peers leave every swarm (as `stopped` would).
    pub fn handle_disconnect(&mut self, conn: ConnId) {
        self.standby.remove(&conn);
        let Some(entries) = self.conns.remove(&conn) else {
            return;
        };
        for (swarm_id, peer_id) in entries {
            if let Some(swarm) = self.swarms.get_mut(&swarm_id) {
                if swarm.peers.get(&peer_id).is_some_and(|p| p.conn == conn)
                    && let Some(p) = swarm.remove(&peer_id)
                {
                    self.stats.forget(&p);
                }
                if swarm.peers.is_empty() {
                    self.swarms.remove(&swarm_id);
                }
            }
        }
    }

    /// When [`Registry::handle_timeout`] is next due, if anything is pending.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.next_sweep
    }

    /// Expires offers and peers that are due (both at the sweeps, every
    /// [`RegistryConfig::sweep_interval`]).
    pub fn handle_timeout(&mut self, now: Time) {
        self.handle_timeout_emptying(now, &mut Vec::new());
    }

    /// [`Registry::handle_timeout`], and adds to `emptied` the connections whose last peer
    /// expired (not on standby): they hold nothing any more.
    pub fn handle_timeout_emptying(&mut self, now: Time, emptied: &mut Vec<ConnId>) {
        if self.next_sweep.is_some_and(|t| t <= now) {
            self.sweep_peers(now, emptied);
            self.next_sweep = if self.swarms.is_empty() {
                None
            } else {
                Some(now + self.config.sweep_interval)
            };
        }
    }

    fn sweep_peers(&mut self, now: Time, emptied: &mut Vec<ConnId>) {
        let interval = self.config.demand_interval;
        self.demanded
            .retain(|_, t| now.saturating_since(*t) < interval);
        let timeout = self.config.peer_timeout;
        let mut expired = Vec::new();
        let mut offers_expired = 0;
        let mut offers_withdrawn = 0;
        self.swarms.retain(|swarm_id, swarm| {
            offers_expired += swarm.expire_offers(now);
            let before = swarm.peers.len();
            let stale: Vec<PeerId> = swarm
                .peers
                .iter()
                .filter(|(_, p)| now.saturating_since(p.last_seen) >= timeout)
                .map(|(id, _)| *id)
                .collect();
            for id in stale {
                if let Some(p) = swarm.remove(&id) {
                    offers_withdrawn += p.pending.len();
                    expired.push((p.conn, *swarm_id, id, p.is_seed()));
                }
            }
            debug_assert!(swarm.peers.len() <= before);
            !swarm.peers.is_empty()
        });
        self.stats.offers_expired += offers_expired as u64;
        self.stats.pending_offers -= offers_expired + offers_withdrawn;
        self.stats.peers_expired += expired.len() as u64;
        for (conn, swarm_id, peer_id, seed) in expired {
            self.stats.peers -= 1;
            if seed {
                self.stats.seeds -= 1;
            }
            if let Some(entries) = self.conns.get_mut(&conn) {
                entries.retain(|e| *e != (swarm_id, peer_id));
                if entries.is_empty() {
                    self.conns.remove(&conn);
                    if !self.standby.contains_key(&conn) {
                        emptied.push(conn);
                    }
                }
            }
        }
    }

    fn remove_peer(&mut self, conn: ConnId, swarm_id: SwarmId, peer_id: PeerId) {
        let Some(swarm) = self.swarms.get_mut(&swarm_id) else {
            return;
        };
        if swarm.peers.get(&peer_id).is_none_or(|p| p.conn != conn) {
            return;
        }
        if let Some(p) = swarm.remove(&peer_id) {
            self.stats.forget(&p);
        }
        if swarm.peers.is_empty() {
            self.swarms.remove(&swarm_id);
        }
        if let Some(entries) = self.conns.get_mut(&conn) {
            entries.retain(|e| *e != (swarm_id, peer_id));
            if entries.is_empty() {
                self.conns.remove(&conn);
            }
        }
    }

    fn reject(
        &mut self,
        conn: ConnId,
        r: Rejection,
        action: &str,
        info_hash: Option<SwarmId>,
        out: &mut Vec<(ConnId, FromTracker)>,
    ) {
        self.stats.rejections[r.index()] += 1;
        out.push((
            conn,
            FromTracker::Error(ErrorResponse {
                failure_reason: r.reason().to_owned(),
                action: Some(action.to_owned()),
                info_hash,
            }),
        ));
    }
}

/// Whether two peers can connect directly, as a rank: 2 surely, 1 unknown, 0 surely not.
fn nat_rank(a: Option<NatType>, b: Option<NatType>) -> u8 {
    use NatType::*;
    match (a.unwrap_or(Unknown), b.unwrap_or(Unknown)) {
        (Unknown, _) | (_, Unknown) => 1,
        (Symmetric, Symmetric) | (Symmetric, PortRestricted) | (PortRestricted, Symmetric) => 0,
        _ => 2,
    }
}

/// What of a peer's extension the registry keeps and passes on to other peers: everything but
/// its join token, which proves the peer's admission to the tracker and is no one else's
/// business (a token not bound to a peer id would let whoever sees it join).
fn relayable(ext: Option<&PeerInfo>) -> PeerInfo {
    ext.map_or_else(PeerInfo::default, |e| PeerInfo {
        token: None,
        ..e.clone()
    })
}

/// Ranks a sample of the swarm's peers (plus all seeds) for `me`, best first, into `out`.
#[allow(clippy::too_many_arguments)]
fn rank_candidates(
    config: &RegistryConfig,
    rng: &mut Xoshiro256PlusPlus,
    now: Time,
    swarm: &Swarm,
    me: PeerId,
    me_conn: ConnId,
    me_info: &PeerInfo,
    out: &mut Vec<(Score, PeerId)>,
) {
    let n = swarm.peers.len();
    // A random window of the peer map (its order is shuffled over time by swap_remove) of up
    // to `match_sample` candidates, then every seed.
    let start = if n > config.match_sample {
        rng.random_range(0..n)
    } else {
        0
    };
    let mut score = |peer: &Peer| {
        let (close, distance) = match (me_info.position, peer.info.position) {
            (Some(a), Some(b)) => {
                let d = a.abs_diff(b);
                (d <= config.position_window, d)
            }
            _ => (false, u64::MAX),
        };
        Score {
            same_rendition: me_info.rendition.is_some() && me_info.rendition == peer.info.rendition,
            close_position: close,
            neg_distance: -(i64::try_from(distance).unwrap_or(i64::MAX)),
            same_locality: me_info.locality.is_some() && me_info.locality == peer.info.locality,
            nat: nat_rank(me_info.nat, peer.info.nat),
            upload_slots: peer.info.upload_slots.unwrap_or(1),
            random: rng.random(),
        }
    };
    let busy: &[PendingOffer] = swarm.peers.get(&me).map_or(&[], |p| &p.pending);
    let left_behind: &[PendingOffer] = swarm.withdrawn.get(&me_conn).map_or(&[], |w| w);
    let eligible = |id: &PeerId, peer: &Peer| {
        *id != me
            && peer.conn != me_conn
            && peer.offers_in < config.max_pending_offers_to_peer
            && !busy
                .iter()
                .chain(left_behind.iter().filter(|o| o.expires > now))
                .any(|o| o.to == *id)
    };
    for i in 0..n {
        if out.len() == config.match_sample {
            break;
        }
        let (id, peer) = swarm
            .peers
            .get_index((start + i) % n)
            .expect("index below the map's length");
        if eligible(id, peer) {
            out.push((score(peer), *id));
        }
    }
    for id in &swarm.seeds {
        let peer = &swarm.peers[id];
        if eligible(id, peer) && !out.iter().any(|(_, o)| o == id) {
            out.push((score(peer), *id));
        }
    }
    out.sort_unstable_by_key(|c| std::cmp::Reverse(c.0));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RenditionId;
    use crate::tracker_proto::{Offer, SessionDescription};

    fn pid(n: u8) -> PeerId {
        PeerId([n; 20])
    }

    fn oid(n: u8, k: u8) -> OfferId {
        let mut id = [n; 20];
        id[19] = k;
        OfferId(id)
    }

    const SWARM: SwarmId = SwarmId([0x55; 20]);

    fn announce(peer: u8, offers: u8, ext: Option<PeerInfo>) -> Announce {
        Announce {
            offers: (0..offers)
                .map(|k| Offer {
                    offer_id: oid(peer, k),
                    offer: SessionDescription::offer(format!("sdp {peer}/{k}")),
                })
                .collect(),
            ext,
            event: Some(AnnounceEvent::Started),
            ..Announce::new(SWARM, pid(peer))
        }
    }

    fn viewer(rendition: u8, position: u64) -> Option<PeerInfo> {
        Some(PeerInfo {
            role: Some(Role::Viewer),
            rendition: Some(RenditionId([rendition; 8])),
            position: Some(position),
            ..PeerInfo::default()
        })
    }

    fn offers_to(out: &[(ConnId, FromTracker)]) -> Vec<ConnId> {
        out.iter()
            .filter(|(_, m)| matches!(m, FromTracker::Offer(_)))
            .map(|(c, _)| *c)
            .collect()
    }

    fn registry(config: RegistryConfig) -> Registry {
        Registry::new(config, 7).unwrap()
    }

    /// An announce as it comes from the wire, with `offers` as JSON text.
    fn wire_announce(peer: u8, offers: &str) -> Announce {
        let mut a = announce(peer, 0, None);
        let json = ToTracker::Announce(a.clone()).to_json();
        let json = json.replace(r#""offers":[]"#, &format!(r#""offers":{offers}"#));
        match ToTracker::from_json_str(&json).unwrap() {
            ToTracker::Announce(wire) => a.offers = wire.offers,
            other => panic!("{other:?}"),
        }
        a
    }

    /// Offers are decoded only to be relayed: malformed ones are refused (the announce itself
    /// stands) when there is a peer to relay to, and cost nothing when there is none.
    #[test]
    fn malformed_offers_are_refused_when_relayed() {
        let mut r = registry(RegistryConfig::default());
        let mut out = Vec::new();
        let bad = r#"[{"offer_id":"oooooooooooooooooooo","offer":{"type":"offer"}}]"#;
        r.handle_announce(Time::ZERO, ConnId(1), wire_announce(1, bad), &mut out);
        assert!(
            matches!(&out[..], [(ConnId(1), FromTracker::AnnounceResponse(_))]),
            "{out:?}"
        );
        out.clear();
        r.handle_announce(Time::ZERO, ConnId(2), wire_announce(2, bad), &mut out);
        assert!(offers_to(&out).is_empty(), "{out:?}");
        assert!(
            matches!(&out[..], [
                (ConnId(2), FromTracker::AnnounceResponse(_)),
                (ConnId(2), FromTracker::Error(e)),
            ] if e.failure_reason.contains("malformed offers")),
            "{out:?}"
        );
        assert_eq!(r.stats().rejected(Rejection::MalformedOffers), 1);
        assert_eq!(r.stats().peers, 2, "the announce itself was taken");
        out.clear();
        let good = ToTracker::Announce(announce(2, 1, None)).to_json();
        let offers = &good[good.find("[{").unwrap()..=good.rfind("}]").unwrap() + 1];
        r.handle_announce(Time::ZERO, ConnId(2), wire_announce(2, offers), &mut out);
        assert_eq!(offers_to(&out), [ConnId(1)]);
    }

    #[test]
    fn offers_are_relayed_and_answers_come_back_once() {
        let mut r = registry(RegistryConfig::default());
        let mut out = Vec::new();
        r.handle_announce(Time::ZERO, ConnId(1), announce(1, 0, None), &mut out);
        out.clear();
        r.handle_announce(Time::ZERO, ConnId(2), announce(2, 3, None), &mut out);
        // The response, then one offer to the only other peer (3 offers, 1 candidate).
        assert!(matches!(
            out[0],
            (ConnId(2), FromTracker::AnnounceResponse(_))
        ));
        assert_eq!(offers_to(&out), [ConnId(1)]);
        let FromTracker::Offer(o) = &out[1].1 else {
            panic!()
        };
        assert_eq!(o.peer_id, pid(2));

        let answer = Answer {
            info_hash: SWARM,
            peer_id: pid(1),
            to_peer_id: pid(2),
            offer_id: o.offer_id,
            answer: SessionDescription::answer("a"),
            ext: None,
        };
        out.clear();
        r.handle_answer(Time::from_secs(1), ConnId(1), answer.clone(), &mut out);
        assert!(matches!(&out[..], [(ConnId(2), FromTracker::Answer(_))]));
        // A second answer to the same offer is refused.
        out.clear();
        r.handle_answer(Time::from_secs(1), ConnId(1), answer, &mut out);
        assert!(matches!(&out[..], [(ConnId(1), FromTracker::Error(_))]));
        assert_eq!(r.stats().rejected(Rejection::UnknownOffer), 1);
        assert_eq!(r.stats().answers_relayed, 1);
    }

    /// A peer's join token stays with the tracker: its offers and answers carry the rest of
    /// its extension, without the token.
    #[test]
    fn join_tokens_are_not_passed_on_to_other_peers() {
        let with_token = |rendition| {
            viewer(rendition, 10).map(|info| PeerInfo {
                token: Some(format!("secret-{rendition}")),
                ..info
            })
        };
        let mut r = registry(RegistryConfig::default());
        let mut out = Vec::new();
        r.handle_announce(
            Time::ZERO,
            ConnId(1),
            announce(1, 0, with_token(1)),
            &mut out,
        );
        out.clear();
        r.handle_announce(
            Time::ZERO,
            ConnId(2),
            announce(2, 1, with_token(1)),
            &mut out,
        );
        let Some((_, FromTracker::Offer(o))) = out.iter().find(|(c, _)| *c == ConnId(1)) else {
            panic!("an offer to peer 1: {out:?}")
        };
        let ext = o.ext.as_ref().expect("the offerer's info");
        assert_eq!((ext.token.as_deref(), ext.position), (None, Some(10)));
        let answer = |ext| Answer {
            info_hash: SWARM,
            peer_id: pid(1),
            to_peer_id: pid(2),
            offer_id: OfferId::default(),
            answer: SessionDescription::answer("a"),
            ext,
        };
        // An answer with its own extension, and one relying on the announced one (to a new
        // offer, made once the first is answered: one offer to a peer is pending at a time).
        let mut offer_id = o.offer_id;
        for (k, ext) in [with_token(1), None].into_iter().enumerate() {
            let a = answer(ext);
            let mut out = Vec::new();
            r.handle_answer(Time::ZERO, ConnId(1), Answer { offer_id, ..a }, &mut out);
            let [(ConnId(2), FromTracker::Answer(relayed))] = &out[..] else {
                panic!("the answer relayed to peer 2: {out:?}")
            };
            let ext = relayed.ext.as_ref().expect("the answerer's info");
            assert_eq!((ext.token.as_deref(), ext.position), (None, Some(10)));
            let mut next = announce(2, 1, with_token(1));
            next.offers = (next.offers.into_vec().unwrap().into_iter())
                .map(|mut o| {
                    o.offer_id.0[0] = 50 + k as u8;
                    o
                })
                .collect();
            out.clear();
            r.handle_announce(Time::ZERO, ConnId(2), next, &mut out);
            offer_id = out
                .iter()
                .find_map(|(c, m)| match m {
                    FromTracker::Offer(o) if *c == ConnId(1) => Some(o.offer_id),
                    _ => None,
                })
                .expect("a new offer to peer 1");
        }
    }

    #[test]
    fn answers_only_from_the_peer_the_offer_was_sent_to() {
        let mut r = registry(RegistryConfig::default());
        let mut out = Vec::new();
        r.handle_announce(Time::ZERO, ConnId(1), announce(1, 0, None), &mut out);
        r.handle_announce(Time::ZERO, ConnId(3), announce(3, 0, None), &mut out);
        out.clear();
        let a = announce(2, 1, None);
        r.handle_announce(Time::ZERO, ConnId(2), a, &mut out);
        let (target, offer_id) = match &out[1] {
            (c, FromTracker::Offer(o)) => (*c, o.offer_id),
            _ => panic!(),
        };
        let other = if target == ConnId(1) { 3 } else { 1 };
        out.clear();
        r.handle_answer(
            Time::ZERO,
            ConnId(u64::from(other)),
            Answer {
                info_hash: SWARM,
                peer_id: pid(other),
                to_peer_id: pid(2),
                offer_id,
                answer: SessionDescription::answer("x"),
                ext: None,
            },
            &mut out,
        );
        assert!(matches!(&out[..], [(_, FromTracker::Error(_))]));
    }

    fn answer(from: u8, to: u8, offer_id: OfferId) -> Answer {
        Answer {
            info_hash: SWARM,
            peer_id: pid(from),
            to_peer_id: pid(to),
            offer_id,
            answer: SessionDescription::answer("x"),
            ext: None,
        }
    }

    #[test]
    fn a_client_taking_the_peer_id_of_one_that_left_cannot_answer_its_offers() {
        let mut r = registry(RegistryConfig::default());
        let mut out = Vec::new();
        r.handle_announce(Time::ZERO, ConnId(1), announce(1, 0, None), &mut out);
        out.clear();
        r.handle_announce(Time::ZERO, ConnId(2), announce(2, 1, None), &mut out);
        let offer_id = match &out[1] {
            (ConnId(1), FromTracker::Offer(o)) => o.offer_id,
            other => panic!("{other:?}"),
        };
        // Peer 1 leaves; an impostor announces with its id and answers the offer it saw.
        r.handle_disconnect(ConnId(1));
        r.handle_announce(Time::ZERO, ConnId(9), announce(1, 0, None), &mut out);
        out.clear();
        r.handle_answer(Time::ZERO, ConnId(9), answer(1, 2, offer_id), &mut out);
        assert!(
            matches!(&out[..], [(ConnId(9), FromTracker::Error(e))] if e.failure_reason == Rejection::UnknownOffer.reason()),
            "{out:?}"
        );
    }

    #[test]
    fn offers_pending_to_one_peer_are_capped() {
        let mut r = registry(RegistryConfig {
            max_pending_offers_to_peer: 2,
            ..RegistryConfig::default()
        });
        let mut out = Vec::new();
        // The victim, then offerers whose only candidate is the victim (each offerer's own
        // offers go to the victim and to the offerers before it).
        r.handle_announce(Time::ZERO, ConnId(1), announce(1, 0, None), &mut out);
        for peer in 2..=4 {
            r.handle_announce(
                Time::ZERO,
                ConnId(u64::from(peer)),
                announce(peer, 0, None),
                &mut out,
            );
        }
        out.clear();
        let mut to_victim = Vec::new();
        for peer in 2..=4 {
            r.handle_announce(
                Time::ZERO,
                ConnId(u64::from(peer)),
                announce(peer, 3, None),
                &mut out,
            );
            for (c, m) in out.drain(..) {
                if let (ConnId(1), FromTracker::Offer(o)) = (c, m) {
                    to_victim.push((o.peer_id, o.offer_id));
                }
            }
        }
        assert_eq!(
            to_victim.len(),
            2,
            "offers relayed to the victim: {to_victim:?}"
        );
        // Its answer makes room for one more.
        let (offerer, offer_id) = to_victim[0];
        r.handle_answer(
            Time::ZERO,
            ConnId(1),
            answer(1, offerer.0[0], offer_id),
            &mut out,
        );
        assert!(matches!(&out[..], [(_, FromTracker::Answer(_))]), "{out:?}");
        out.clear();
        // (Peer 4 found the victim full: its offer ids went elsewhere and are pending, so new
        // ones.)
        let mut again = announce(4, 3, None);
        again.offers = (again.offers.into_vec().unwrap().into_iter())
            .map(|mut o| {
                o.offer_id.0[0] = 77;
                o
            })
            .collect();
        r.handle_announce(Time::ZERO, ConnId(4), again, &mut out);
        assert_eq!(
            offers_to(&out).iter().filter(|c| **c == ConnId(1)).count(),
            1
        );
        // Expired offers make room too.
        out.clear();
        let later = Time::ZERO + RegistryConfig::default().offer_ttl + Duration::from_secs(1);
        r.handle_timeout(later);
        r.handle_announce(later, ConnId(2), announce(2, 3, None), &mut out);
        assert_eq!(
            offers_to(&out).iter().filter(|c| **c == ConnId(1)).count(),
            1
        );
    }

    #[test]
    fn peer_and_seed_counts_follow_every_way_in_and_out() {
        // `stats()` checks its running counts (peers, seeds, pending offers) against a walk
        // of the swarms (debug builds).
        let mut r = registry(RegistryConfig::default());
        let mut out = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut now = Time::ZERO;
        let mut offers: Vec<(ConnId, RelayedOffer)> = Vec::new();
        let (mut relayed, mut answered) = (0, 0);
        for round in 0..5000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let peer = (x % 12) as u8 + 1;
            let conn = ConnId(u64::from(peer % 6));
            let swarm = SwarmId([(x >> 8) as u8 % 3; 20]);
            let role = if (x >> 16).is_multiple_of(3) {
                Role::Seed
            } else {
                Role::Viewer
            };
            match (x >> 24) % 8 {
                0 => {
                    let stop = Announce {
                        event: Some(AnnounceEvent::Stopped),
                        ..Announce::new(swarm, pid(peer))
                    };
                    r.handle_announce(now, conn, stop, &mut out);
                }
                1 => r.handle_disconnect(conn),
                2 => {
                    now += Duration::from_secs(10 * ((x >> 32) % 4));
                    r.handle_timeout(now);
                }
                3 if !offers.is_empty() => {
                    // An answer to an offer relayed earlier, by whoever holds the connection
                    // it went to now.
                    let back = (x >> 32) as usize % offers.len().min(4);
                    let (to_conn, o) = offers.remove(offers.len() - 1 - back);
                    let a = Answer {
                        info_hash: o.info_hash,
                        peer_id: pid((to_conn.0 as u8) + 6 * ((x >> 40) as u8 % 2)),
                        to_peer_id: o.peer_id,
                        offer_id: o.offer_id,
                        answer: SessionDescription::answer("x"),
                        ext: None,
                    };
                    r.handle_answer(now, to_conn, a, &mut out);
                    answered += out
                        .iter()
                        .filter(|(_, m)| matches!(m, FromTracker::Answer(_)))
                        .count();
                }
                _ => {
                    let a = Announce {
                        ext: Some(PeerInfo {
                            role: Some(role),
                            ..PeerInfo::default()
                        }),
                        offers: (0..(x >> 48) % 4)
                            .map(|k| Offer {
                                offer_id: OfferId([(round % 251) as u8 + k as u8; 20]),
                                offer: SessionDescription::offer("o"),
                            })
                            .collect(),
                        ..Announce::new(swarm, pid(peer))
                    };
                    r.handle_announce(now, conn, a, &mut out);
                }
            }
            for (c, m) in out.drain(..) {
                if let FromTracker::Offer(o) = m {
                    relayed += 1;
                    offers.push((c, o));
                }
            }
            let _ = r.stats();
        }
        // The walk went through offers and answers, not only joins and leaves.
        assert!(relayed > 1000 && answered > 100, "{relayed} {answered}");
    }

    #[test]
    fn offers_pending_per_peer_are_capped_and_each_target_gets_one_at_a_time() {
        let mut r = registry(RegistryConfig {
            max_pending_offers_per_peer: 3,
            ..RegistryConfig::default()
        });
        let mut out = Vec::new();
        for p in 10..16 {
            r.handle_announce(
                Time::ZERO,
                ConnId(u64::from(p)),
                announce(p, 0, None),
                &mut out,
            );
        }
        let fresh = |round: u8| {
            let mut a = announce(1, 2, None);
            a.offers = (a.offers.into_vec().unwrap().into_iter())
                .map(|mut o| {
                    o.offer_id.0[0] = round;
                    o
                })
                .collect();
            a
        };
        let mut targets = Vec::new();
        for round in 0..4 {
            out.clear();
            r.handle_announce(Time::ZERO, ConnId(1), fresh(round), &mut out);
            targets.extend(offers_to(&out));
        }
        assert_eq!(targets.len(), 3, "pending offers per peer: {targets:?}");
        targets.sort();
        targets.dedup();
        assert_eq!(targets.len(), 3, "a target offered twice");
        // The same offer ids again, while pending: not relayed (they would get round the caps).
        out.clear();
        r.handle_timeout(Time::ZERO + RegistryConfig::default().offer_ttl);
        r.handle_announce(Time::ZERO, ConnId(1), fresh(0), &mut out);
        r.handle_announce(Time::ZERO, ConnId(1), fresh(0), &mut out);
        assert_eq!(offers_to(&out).len(), 2, "{out:?}");
    }

    #[test]
    fn a_connection_has_one_peer_per_swarm() {
        let mut r = registry(RegistryConfig::default());
        let mut out = Vec::new();
        r.handle_announce(Time::ZERO, ConnId(1), announce(1, 0, None), &mut out);
        out.clear();
        r.handle_announce(Time::ZERO, ConnId(1), announce(2, 0, None), &mut out);
        assert!(
            matches!(&out[..], [(_, FromTracker::Error(e))] if e.failure_reason == Rejection::SecondPeer.reason()),
            "{out:?}"
        );
        assert_eq!(r.swarm_len(&SWARM), 1);
        // After `stopped`, the connection may come back under another id.
        let stop = Announce {
            event: Some(AnnounceEvent::Stopped),
            ..announce(1, 0, None)
        };
        r.handle_announce(Time::ZERO, ConnId(1), stop, &mut out);
        out.clear();
        r.handle_announce(Time::ZERO, ConnId(1), announce(2, 0, None), &mut out);
        assert!(
            matches!(&out[..], [(_, FromTracker::AnnounceResponse(_))]),
            "{out:?}"
        );
        assert_eq!(r.stats().rejected(Rejection::SecondPeer), 1);
    }

    #[test]
    fn offers_expire() {
        let config = RegistryConfig::default();
        let ttl = config.offer_ttl;
        let mut r = registry(config);
        let mut out = Vec::new();
        r.handle_announce(Time::ZERO, ConnId(1), announce(1, 0, None), &mut out);
        out.clear();
        r.handle_announce(Time::ZERO, ConnId(2), announce(2, 1, None), &mut out);
        let FromTracker::Offer(o) = &out[1].1 else {
            panic!()
        };
        let offer_id = o.offer_id;
        assert_eq!(r.stats().pending_offers, 1);
        let due = r.poll_timeout().unwrap();
        assert!(due <= Time::ZERO + ttl);
        r.handle_timeout(Time::ZERO + ttl);
        assert_eq!(r.stats().pending_offers, 0);
        assert_eq!(r.stats().offers_expired, 1);
        out.clear();
        r.handle_answer(
            Time::ZERO + ttl,
            ConnId(1),
            Answer {
                info_hash: SWARM,
                peer_id: pid(1),
                to_peer_id: pid(2),
                offer_id,
                answer: SessionDescription::answer("late"),
                ext: None,
            },
            &mut out,
        );
        assert!(matches!(&out[..], [(ConnId(1), FromTracker::Error(_))]));
    }

    #[test]
    fn offers_free_their_places_when_expired_or_withdrawn() {
        let config = RegistryConfig::default();
        let (ttl, sweep) = (config.offer_ttl, config.sweep_interval);
        let mut r = registry(config);
        let mut out = Vec::new();
        let offers_in = |r: &Registry, p: u8| r.swarms[&SWARM].peers[&pid(p)].offers_in;
        let pending = |r: &Registry, p: u8| r.swarms[&SWARM].peers[&pid(p)].pending.len();
        r.handle_announce(Time::ZERO, ConnId(1), announce(1, 0, None), &mut out);
        r.handle_announce(Time::ZERO, ConnId(2), announce(2, 1, None), &mut out);
        r.handle_announce(Time::ZERO, ConnId(3), announce(3, 2, None), &mut out);
        assert_eq!((offers_in(&r, 1), offers_in(&r, 2)), (2, 1));
        assert_eq!(r.stats().pending_offers, 3);

        // Peer 3 leaves: its offers are withdrawn (no longer pending), but hold their
        // targets' places until they expire.
        r.handle_disconnect(ConnId(3));
        assert_eq!((offers_in(&r, 1), offers_in(&r, 2)), (2, 1));
        assert_eq!(r.stats().pending_offers, 1);

        // The offers expire: until the sweep they hold their places.
        let late = Time::ZERO + ttl;
        assert_eq!((offers_in(&r, 1), pending(&r, 2)), (2, 1));
        let mut at = Time::ZERO;
        while at < late {
            at = r.poll_timeout().unwrap();
            // Peers 1 and 2 stay by announcing (without offers).
            r.handle_announce(at, ConnId(1), announce(1, 0, None), &mut out);
            r.handle_announce(at, ConnId(2), announce(2, 0, None), &mut out);
            r.handle_timeout(at);
        }
        assert!(at < late + sweep);
        assert_eq!(
            (offers_in(&r, 1), offers_in(&r, 2), pending(&r, 2)),
            (0, 0, 0)
        );
        assert_eq!(r.stats().pending_offers, 0);
        assert_eq!(
            r.stats().offers_expired,
            1,
            "withdrawn offers are not counted"
        );
        assert!(r.swarms[&SWARM].withdrawn.is_empty());

        // Leaving and coming back gets round neither the caps on one offerer's offers (one per
        // target, three in all here) nor the cap on offers pending to one peer.
        let mut r = registry(RegistryConfig {
            max_pending_offers_per_peer: 3,
            ..RegistryConfig::default()
        });
        r.handle_announce(Time::ZERO, ConnId(1), announce(1, 0, None), &mut out);
        for p in 3..=6 {
            r.handle_announce(Time::ZERO, ConnId(p), announce(p as u8, 0, None), &mut out);
        }
        let mut targets = Vec::new();
        for round in 0..5u8 {
            let mut a = announce(2, 1, None);
            a.offers = (a.offers.into_vec().unwrap().into_iter())
                .map(|mut o| {
                    o.offer_id.0[0] = round;
                    o
                })
                .collect();
            out.clear();
            r.handle_announce(Time::ZERO, ConnId(2), a, &mut out);
            targets.extend(offers_to(&out));
            let stop = Announce {
                event: Some(AnnounceEvent::Stopped),
                ..announce(2, 0, None)
            };
            r.handle_announce(Time::ZERO, ConnId(2), stop, &mut out);
        }
        assert_eq!(targets.len(), 3, "{targets:?}");
        targets.sort();
        targets.dedup();
        assert_eq!(targets.len(), 3, "a target offered twice: {targets:?}");
        assert_eq!(r.stats().pending_offers, 0);
        // Once they expire, the connection may offer again.
        out.clear();
        r.handle_announce(Time::ZERO + ttl, ConnId(2), announce(2, 3, None), &mut out);
        assert_eq!(offers_to(&out).len(), 3);
        let mut r = registry(RegistryConfig {
            max_pending_offers_to_peer: 2,
            ..RegistryConfig::default()
        });
        r.handle_announce(Time::ZERO, ConnId(1), announce(1, 0, None), &mut out);
        for p in 2..=4u8 {
            out.clear();
            r.handle_announce(
                Time::ZERO,
                ConnId(u64::from(p)),
                announce(p, 1, None),
                &mut out,
            );
            let stop = Announce {
                event: Some(AnnounceEvent::Stopped),
                ..announce(p, 0, None)
            };
            let sent = offers_to(&out);
            r.handle_announce(Time::ZERO, ConnId(u64::from(p)), stop, &mut out);
            assert_eq!(sent.len(), usize::from(p < 4), "peer {p}: {sent:?}");
        }

        // An offerer's own expired offers free their places at its next announce, before
        // the sweep.
        let mut r = registry(RegistryConfig {
            max_pending_offers_per_peer: 1,
            ..RegistryConfig::default()
        });
        r.handle_announce(Time::ZERO, ConnId(1), announce(1, 0, None), &mut out);
        r.handle_announce(Time::ZERO, ConnId(2), announce(2, 0, None), &mut out);
        r.handle_announce(Time::ZERO, ConnId(3), announce(3, 1, None), &mut out);
        assert_eq!(pending(&r, 3), 1);
        out.clear();
        let mut again = announce(3, 1, None);
        again.offers = (again.offers.into_vec().unwrap().into_iter())
            .map(|mut o| {
                o.offer_id.0[0] = 0xee;
                o
            })
            .collect();
        r.handle_announce(Time::ZERO, ConnId(3), again.clone(), &mut out);
        assert!(offers_to(&out).is_empty(), "one pending at a time");
        out.clear();
        r.handle_announce(Time::ZERO + ttl, ConnId(3), again, &mut out);
        assert_eq!(offers_to(&out).len(), 1);
        assert_eq!(r.stats().offers_expired, 1);
        assert_eq!(r.stats().pending_offers, 1);
        assert_eq!(offers_in(&r, 1) + offers_in(&r, 2), 1);
    }

    #[test]
    fn matching_prefers_rendition_then_position_then_locality() {
        let mut r = registry(RegistryConfig::default());
        let mut out = Vec::new();
        // Peer 10: other rendition, same position. Peer 11: same rendition, far position.
        // Peer 12: same rendition, close position. Peer 13: same as 12 plus same locality.
        let mut with_locality = viewer(1, 101).unwrap();
        with_locality.locality = Some("eu-west".into());
        r.handle_announce(
            Time::ZERO,
            ConnId(10),
            announce(10, 0, viewer(2, 100)),
            &mut out,
        );
        r.handle_announce(
            Time::ZERO,
            ConnId(11),
            announce(11, 0, viewer(1, 50)),
            &mut out,
        );
        r.handle_announce(
            Time::ZERO,
            ConnId(12),
            announce(12, 0, viewer(1, 102)),
            &mut out,
        );
        r.handle_announce(
            Time::ZERO,
            ConnId(13),
            announce(13, 0, Some(with_locality)),
            &mut out,
        );
        let mut me = viewer(1, 100).unwrap();
        me.locality = Some("eu-west".into());
        for (k, expected) in [
            (1, vec![ConnId(13)]),
            (2, vec![ConnId(13), ConnId(12)]),
            (3, vec![ConnId(13), ConnId(12), ConnId(11)]),
        ] {
            out.clear();
            let mut a = announce(1, k, Some(me.clone()));
            // Fresh offer ids per round.
            a.offers = (a.offers.into_vec().unwrap().into_iter())
                .map(|mut o| {
                    o.offer_id.0[0] = 100 + k;
                    o
                })
                .collect();
            // Each round after the last one's offers expired (a peer is offered once at a
            // time by one offerer).
            let now = Time::ZERO
                + (RegistryConfig::default().offer_ttl + Duration::from_secs(1)) * u32::from(k);
            r.handle_timeout(now);
            r.handle_announce(now, ConnId(1), a, &mut out);
            assert_eq!(offers_to(&out), expected, "{k} offers");
        }
    }

    #[test]
    fn nat_incompatible_peers_rank_last() {
        let mut r = registry(RegistryConfig::default());
        let mut out = Vec::new();
        let nat = |n| {
            Some(PeerInfo {
                nat: Some(n),
                ..PeerInfo::default()
            })
        };
        r.handle_announce(
            Time::ZERO,
            ConnId(10),
            announce(10, 0, nat(NatType::Symmetric)),
            &mut out,
        );
        r.handle_announce(
            Time::ZERO,
            ConnId(11),
            announce(11, 0, nat(NatType::Open)),
            &mut out,
        );
        out.clear();
        r.handle_announce(
            Time::ZERO,
            ConnId(1),
            announce(1, 1, nat(NatType::Symmetric)),
            &mut out,
        );
        assert_eq!(offers_to(&out), [ConnId(11)]);
    }

    #[test]
    fn thin_swarms_always_get_a_seed() {
        let mut r = registry(RegistryConfig::default());
        let mut out = Vec::new();
        let seed = Some(PeerInfo {
            role: Some(Role::Seed),
            upload_slots: Some(0),
            ..PeerInfo::default()
        });
        r.handle_announce(Time::ZERO, ConnId(99), announce(99, 0, seed), &mut out);
        for p in 10..15 {
            r.handle_announce(
                Time::ZERO,
                ConnId(u64::from(p)),
                announce(p, 0, viewer(1, 100)),
                &mut out,
            );
        }
        out.clear();
        // Same rendition and position as the viewers: the seed (no rendition, no slots) ranks
        // last, yet one of the two offers goes to it.
        r.handle_announce(
            Time::ZERO,
            ConnId(1),
            announce(1, 2, viewer(1, 100)),
            &mut out,
        );
        let to = offers_to(&out);
        assert_eq!(to.len(), 2);
        assert!(to.contains(&ConnId(99)), "{to:?}");
    }

    #[test]
    fn never_offers_to_self_or_own_connection() {
        let mut r = registry(RegistryConfig::default());
        let mut out = Vec::new();
        r.handle_announce(Time::ZERO, ConnId(1), announce(1, 0, None), &mut out);
        out.clear();
        r.handle_announce(Time::ZERO, ConnId(1), announce(2, 5, None), &mut out);
        assert!(offers_to(&out).is_empty());
    }

    #[test]
    fn limits_hold() {
        let config = RegistryConfig {
            max_peers_per_swarm: 2,
            max_swarms_per_conn: 1,
            max_offers_per_announce: 2,
            max_pending_offers_per_peer: 3,
            max_scrape_swarms: 2,
            ..RegistryConfig::default()
        };
        let mut r = registry(config);
        let mut out = Vec::new();
        r.handle_announce(Time::ZERO, ConnId(1), announce(1, 0, None), &mut out);
        r.handle_announce(Time::ZERO, ConnId(2), announce(2, 0, None), &mut out);
        out.clear();
        r.handle_announce(Time::ZERO, ConnId(3), announce(3, 0, None), &mut out);
        assert!(matches!(&out[..], [(ConnId(3), FromTracker::Error(_))]));
        assert_eq!(r.stats().rejected(Rejection::SwarmFull), 1);

        // A second swarm on connection 1.
        out.clear();
        let mut other = announce(1, 0, None);
        other.info_hash = SwarmId([1; 20]);
        r.handle_announce(Time::ZERO, ConnId(1), other, &mut out);
        assert_eq!(r.stats().rejected(Rejection::TooManySwarms), 1);
        assert_eq!(r.stats().swarms, 1, "the refused swarm is not kept");

        // Offers per announce: 5 offered, 1 candidate, which gets one (one pending offer per
        // target; pending offers per peer: below).
        let mut sent = 0;
        for round in 0..4u8 {
            out.clear();
            let mut a = announce(2, 5, None);
            a.offers = (a.offers.into_vec().unwrap().into_iter())
                .map(|mut o| {
                    o.offer_id.0[0] = round;
                    o
                })
                .collect();
            r.handle_announce(Time::ZERO, ConnId(2), a, &mut out);
            sent += offers_to(&out).len();
        }
        assert_eq!(sent, 1);

        out.clear();
        r.handle_scrape(
            ConnId(9),
            Scrape {
                info_hashes: vec![SwarmId([1; 20]), SwarmId([2; 20]), SwarmId([3; 20])],
            },
            &mut out,
        );
        assert_eq!(r.stats().rejected(Rejection::ScrapeTooLarge), 1);
    }

    #[test]
    fn peer_id_cannot_be_taken_over() {
        let mut r = registry(RegistryConfig::default());
        let mut out = Vec::new();
        r.handle_announce(Time::ZERO, ConnId(1), announce(1, 0, None), &mut out);
        out.clear();
        r.handle_announce(Time::ZERO, ConnId(2), announce(1, 0, None), &mut out);
        assert!(matches!(&out[..], [(ConnId(2), FromTracker::Error(_))]));
        // Nor removed by another connection's stop.
        let mut stop = announce(1, 0, None);
        stop.event = Some(AnnounceEvent::Stopped);
        r.handle_announce(Time::ZERO, ConnId(2), stop, &mut out);
        assert_eq!(r.swarm_len(&SWARM), 1);
    }

    #[test]
    fn stop_disconnect_and_expiry_remove_peers() {
        let config = RegistryConfig::default();
        let timeout = config.peer_timeout;
        let mut r = registry(config);
        let mut out = Vec::new();
        for p in 1..=3 {
            r.handle_announce(
                Time::ZERO,
                ConnId(u64::from(p)),
                announce(p, 0, None),
                &mut out,
            );
        }
        let mut stop = announce(1, 0, None);
        stop.event = Some(AnnounceEvent::Stopped);
        r.handle_announce(Time::ZERO, ConnId(1), stop, &mut out);
        assert_eq!(r.swarm_len(&SWARM), 2);
        r.handle_disconnect(ConnId(2));
        assert_eq!(r.swarm_len(&SWARM), 1);
        // Peer 3 stops announcing and expires; nothing is left.
        let mut now = Time::ZERO;
        while let Some(t) = r.poll_timeout() {
            assert!(t >= now);
            now = t;
            r.handle_timeout(now);
            if now > Time::ZERO + timeout * 2 {
                break;
            }
        }
        assert_eq!(r.stats().swarms, 0);
        assert_eq!(r.stats().peers_expired, 1);
        assert_eq!(r.poll_timeout(), None);
    }

    /// A connection whose last peer expires is reported as emptied (the tracker closes it if
    /// it does not join again); one with a peer left, or on standby, is not.
    #[test]
    fn connections_whose_last_peer_expires_are_reported() {
        let config = RegistryConfig::default();
        let timeout = config.peer_timeout;
        let mut r = registry(config);
        let mut out = Vec::new();
        let other = SwarmId([8; 20]);
        // Connection 1: one peer, silent. Connection 2: peers in two swarms, one kept alive.
        r.handle_announce(Time::ZERO, ConnId(1), announce(1, 0, None), &mut out);
        r.handle_announce(Time::ZERO, ConnId(2), announce(2, 0, None), &mut out);
        let mut elsewhere = announce(2, 0, None);
        elsewhere.info_hash = other;
        r.handle_announce(Time::ZERO, ConnId(2), elsewhere.clone(), &mut out);
        let mut emptied = Vec::new();
        let mut now = Time::ZERO;
        while now < Time::ZERO + timeout * 3 {
            now += timeout / 4;
            r.handle_announce(now, ConnId(2), elsewhere.clone(), &mut out);
            r.handle_timeout_emptying(now, &mut emptied);
        }
        assert_eq!(r.stats().peers_expired, 2);
        assert_eq!(emptied, [ConnId(1)]);
        assert!(!r.holds_peers(ConnId(1)));
        assert!(r.holds_peers(ConnId(2)));
    }

    /// Answers to offers that do not exist do not keep a peer that stopped announcing in its
    /// swarm (a peer refused a join token could otherwise stay, and get offers, for ever).
    #[test]
    fn bogus_answers_do_not_keep_a_peer_alive() {
        let config = RegistryConfig::default();
        let timeout = config.peer_timeout;
        let mut r = registry(config);
        let mut out = Vec::new();
        r.handle_announce(Time::ZERO, ConnId(1), announce(1, 0, None), &mut out);
        let bogus = Answer {
            info_hash: SWARM,
            peer_id: pid(1),
            to_peer_id: pid(9),
            offer_id: OfferId([7; 20]),
            answer: SessionDescription::answer("a"),
            ext: None,
        };
        let mut now = Time::ZERO;
        for _ in 0..10 {
            now += timeout / 4;
            out.clear();
            r.handle_answer(now, ConnId(1), bogus.clone(), &mut out);
            r.handle_timeout(now);
        }
        assert_eq!(r.swarm_len(&SWARM), 0, "the peer outlived its announces");
        assert_eq!(r.stats().peers_expired, 1);
    }

    #[test]
    fn scrape_counts() {
        let mut r = registry(RegistryConfig::default());
        let mut out = Vec::new();
        r.handle_announce(Time::ZERO, ConnId(1), announce(1, 0, None), &mut out);
        let mut done = announce(2, 0, None);
        done.event = Some(AnnounceEvent::Completed);
        done.left = Some(0);
        r.handle_announce(Time::ZERO, ConnId(2), done, &mut out);
        out.clear();
        r.handle_scrape(
            ConnId(3),
            Scrape {
                info_hashes: vec![SWARM],
            },
            &mut out,
        );
        let FromTracker::Scrape(s) = &out[0].1 else {
            panic!()
        };
        assert_eq!(
            s.files[&SWARM],
            ScrapeStats {
                complete: 1,
                incomplete: 1,
                downloaded: 1
            }
        );
    }

    #[test]
    fn large_swarms_rank_a_bounded_sample() {
        let config = RegistryConfig {
            match_sample: 8,
            ..RegistryConfig::default()
        };
        let mut r = registry(config);
        let mut out = Vec::new();
        for p in 0..200u32 {
            let mut a = announce(0, 0, None);
            a.peer_id = PeerId([
                (p % 256) as u8,
                (p / 256) as u8,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
            ]);
            r.handle_announce(Time::ZERO, ConnId(u64::from(p)), a, &mut out);
        }
        out.clear();
        r.handle_announce(Time::ZERO, ConnId(1000), announce(9, 10, None), &mut out);
        assert_eq!(offers_to(&out).len(), 8);
        assert!(r.scratch.len() <= 8);
    }

    #[test]
    fn offer_ids_are_per_swarm_and_a_returning_peer_can_reuse_them() {
        let mut r = registry(RegistryConfig::default());
        let mut out = Vec::new();
        // Peer 2 offers in swarm A; the offer stays unanswered and peer 2 disconnects.
        r.handle_announce(Time::ZERO, ConnId(1), announce(1, 0, None), &mut out);
        r.handle_announce(Time::ZERO, ConnId(2), announce(2, 1, None), &mut out);
        r.handle_disconnect(ConnId(2));
        // The same offer id in another swarm is relayed.
        let mut other = announce(3, 0, None);
        other.info_hash = SwarmId([9; 20]);
        r.handle_announce(Time::ZERO, ConnId(3), other, &mut out);
        let mut again = announce(2, 1, None);
        again.info_hash = SwarmId([9; 20]);
        out.clear();
        r.handle_announce(Time::ZERO, ConnId(4), again, &mut out);
        assert_eq!(offers_to(&out), [ConnId(3)]);
        // And peer 2, back in swarm A on a new connection, can reuse it there too.
        out.clear();
        r.handle_announce(Time::ZERO, ConnId(5), announce(2, 1, None), &mut out);
        assert_eq!(offers_to(&out), [ConnId(1)]);
    }

    #[test]
    fn config_is_validated() {
        assert!(matches!(
            Registry::new(
                RegistryConfig {
                    match_sample: 0,
                    ..RegistryConfig::default()
                },
                1
            ),
            Err(ConfigError::Zero("match_sample"))
        ));
        assert!(matches!(
            Registry::new(
                RegistryConfig {
                    peer_timeout: Duration::from_secs(10),
                    ..RegistryConfig::default()
                },
                1
            ),
            Err(ConfigError::PeerTimeoutTooShort)
        ));
    }

    fn demands(out: &[(ConnId, FromTracker)]) -> Vec<(ConnId, String)> {
        out.iter()
            .filter_map(|(c, m)| match m {
                FromTracker::Demand(d) => {
                    assert_eq!(d.info_hash, SWARM);
                    Some((*c, d.stream.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn with_stream(role: Role) -> Option<PeerInfo> {
        Some(PeerInfo {
            role: Some(role),
            stream: Some("http://origin.example/live/master.m3u8".into()),
            ..PeerInfo::default()
        })
    }

    #[test]
    fn a_swarm_without_a_seed_asks_one_standby_seed_once_per_interval() {
        let mut r = registry(RegistryConfig::default());
        let mut out = Vec::new();
        // No standby seed: nothing to ask.
        r.handle_announce(
            Time::ZERO,
            ConnId(1),
            announce(1, 0, with_stream(Role::Viewer)),
            &mut out,
        );
        assert!(demands(&out).is_empty());
        for (conn, peer) in [(10, 100), (11, 101), (12, 102)] {
            r.handle_message(
                Time::ZERO,
                ConnId(conn),
                ToTracker::Standby(Standby {
                    peer_id: pid(peer),
                    ext: None,
                }),
                &mut out,
            );
        }
        assert_eq!(r.stats().standby_seeds, 3);
        out.clear();
        r.handle_announce(
            Time::from_secs(1),
            ConnId(2),
            announce(2, 0, with_stream(Role::Viewer)),
            &mut out,
        );
        let d = demands(&out);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].1, "http://origin.example/live/master.m3u8");
        let chosen = d[0].0;
        // Within the interval: not again.
        out.clear();
        r.handle_announce(
            Time::from_secs(5),
            ConnId(3),
            announce(3, 0, with_stream(Role::Viewer)),
            &mut out,
        );
        assert!(demands(&out).is_empty());
        // After it, the same seed is asked (rendezvous hashing).
        out.clear();
        r.handle_announce(
            Time::from_secs(40),
            ConnId(3),
            announce(3, 0, with_stream(Role::Viewer)),
            &mut out,
        );
        assert_eq!(demands(&out).first().map(|d| d.0), Some(chosen));
        // Once a seed is in the swarm, nobody is asked.
        r.handle_announce(
            Time::from_secs(41),
            chosen,
            announce(100, 0, with_stream(Role::Seed)),
            &mut out,
        );
        out.clear();
        r.handle_announce(
            Time::from_secs(90),
            ConnId(4),
            announce(4, 0, with_stream(Role::Viewer)),
            &mut out,
        );
        assert!(demands(&out).is_empty());
        assert_eq!(r.stats().demands, 2);
        // A standby seed that disconnects is no longer asked.
        r.handle_disconnect(ConnId(11));
        assert_eq!(r.stats().standby_seeds, 2);
    }

    #[test]
    fn announces_without_a_stream_ask_nobody_and_standby_is_bounded() {
        let mut r = registry(RegistryConfig {
            max_standby_seeds: 1,
            ..RegistryConfig::default()
        });
        let mut out = Vec::new();
        for conn in [10, 11] {
            r.handle_message(
                Time::ZERO,
                ConnId(conn),
                ToTracker::Standby(Standby {
                    peer_id: pid(100),
                    ext: None,
                }),
                &mut out,
            );
        }
        assert_eq!(r.stats().standby_seeds, 1);
        assert_eq!(r.stats().rejected(Rejection::StandbyFull), 1);
        assert!(matches!(&out[..], [(ConnId(11), FromTracker::Error(_))]));
        out.clear();
        r.handle_announce(
            Time::ZERO,
            ConnId(1),
            announce(1, 0, viewer(0, 0)),
            &mut out,
        );
        assert!(demands(&out).is_empty());
    }
}
