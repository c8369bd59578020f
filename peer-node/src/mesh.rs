//! The seed mesh: the operator's seeds act as one origin shield.
//!
//! Seeds find each other over libp2p (bootstrap addresses, Kademlia, identify; QUIC, and TCP
//! with noise and yamux as the fallback). On each followed stream's gossipsub topic
//! ([`mesh_proto::topic`]) they say hello every `hello_interval_ms`, signed with the operator
//! key, and announce the segments they hold with their signed digests.
//!
//! For every segment the live seeds rank by rendezvous hashing ([`mesh_proto::owner_rank`]).
//! The owner pulls it from the origin; the others ask the owner with a request-response
//! [`FetchRequest`] and verify the [`FetchResponse`] against its signed digest before keeping
//! a byte. An owner asked for a segment it has not listed yet pulls it through at once, so the
//! seeds' playlist timers do not add up. When the owner does not deliver within
//! `fetch_timeout_ms` (gone, slow, or sending bytes that fail verification) the seed pulls the
//! segment from the origin itself. A seed whose bytes fail verification, or whose announced
//! digest differs from the digest of the bytes this seed verified, is banned: it no longer
//! counts as live and is never asked again.
//!
//! [`Mesh::segment`] is what the node loop calls instead of an HTTP fetch.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, gossipsub, identify, identity, kad, noise, request_response,
    tcp, yamux,
};
use swarmcdn_core::ids::{SegmentId, SwarmId};
use swarmcdn_core::integrity::{
    DEFAULT_CHUNK_SIZE, DigestSigner, SegmentDigest, SignedDigest, TrustedKeys,
};
use swarmcdn_core::mesh_proto::{
    self, FetchRequest, FetchResponse, Gossip, Presence, PresenceError, PresenceKind,
};
use swarmcdn_core::node::FetchError;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config;
use crate::hls::Location;
use crate::http::HttpClient;

/// The identify protocol version of seeds (peers saying anything else are not added to
/// Kademlia).
const IDENTIFY_PROTOCOL: &str = "/swarmcdn/mesh/1";

/// The request-response protocol.
const FETCH_PROTOCOL: StreamProtocol = StreamProtocol::new("/swarmcdn/segment/1");

/// The Kademlia protocol (our own, so that seeds never join another DHT).
const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/swarmcdn/kad/1");

/// Digests announced by others, kept per stream for segments this seed does not hold yet.
const CLAIMS_KEPT: usize = 512;

/// Segments per rendition announced again when a seed joins a stream.
const REANNOUNCED: usize = 10;

/// How far a hello's or bye's time may be from this seed's clock (replays older than this are
/// rejected; seeds' clocks must agree within it).
const PRESENCE_WINDOW_MS: u64 = 10_000;

/// How long a seed stays banned after failing verification.
const BAN: Duration = Duration::from_secs(300);

/// Requests from other seeds served at once; more are refused as busy.
const SERVING: usize = 64;

/// A segment as the mesh holds it: bytes and their signed digest.
#[derive(Debug)]
pub struct Held {
    /// The whole segment.
    pub data: Bytes,
    /// Its digest, signed by the seed that pulled it from the origin or by this one.
    pub digest: SignedDigest,
}

/// The mesh's counters.
#[derive(Debug, Default)]
pub struct MeshStats {
    /// Segment requests this seed made to the origin for the mesh.
    pub origin_requests: AtomicU64,
    /// Segment bytes pulled from the origin.
    pub origin_bytes: AtomicU64,
    /// Segments fetched from other seeds.
    pub fetched: AtomicU64,
    /// Verified segment bytes received from other seeds.
    pub bytes_in: AtomicU64,
    /// Segment bytes sent to other seeds.
    pub bytes_out: AtomicU64,
    /// Segments pulled from the origin because their owner did not deliver in time.
    pub takeovers: AtomicU64,
    /// Segments pulled through for another seed before this one listed them.
    pub pulled_through: AtomicU64,
    /// Changes of the set of live seeds of a stream (each moves the ownership of the
    /// segments of the seed that joined or left).
    pub ownership_changes: AtomicU64,
    /// Responses or announcements from other seeds that failed verification.
    pub integrity_failures: AtomicU64,
}

/// What `/stats` shows of the mesh.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MeshView {
    /// This seed's mesh peer id.
    pub peer_id: String,
    /// The addresses it listens on (with `/p2p/<peer id>`).
    pub listen: Vec<String>,
    /// Connected mesh peers.
    pub connected: usize,
    /// Live seeds per stream (hex swarm id), this one included.
    pub members: HashMap<String, Vec<String>>,
    /// Banned seeds.
    pub banned: Vec<String>,
    /// Segments held per stream: sequence numbers by rendition (hex).
    pub held: HashMap<String, HashMap<String, Vec<u64>>>,
}

enum Command {
    Follow {
        swarm: SwarmId,
    },
    Unfollow {
        swarm: SwarmId,
    },
    Publish {
        swarm: SwarmId,
        data: Vec<u8>,
    },
    Fetch {
        peer: PeerId,
        request: FetchRequest,
        reply: oneshot::Sender<Result<FetchResponse, String>>,
    },
    Respond {
        channel: request_response::ResponseChannel<FetchResponse>,
        response: FetchResponse,
    },
}

#[derive(Default)]
struct Stream {
    /// Scheme, host and port of the stream's origin: the only place pulled through.
    origin: String,
    /// Live seeds and when each last said hello.
    members: HashMap<PeerId, Instant>,
    /// Digest roots other seeds announced, for segments not held yet.
    claims: HashMap<SegmentId, Vec<(PeerId, Fingerprint)>>,
    claim_order: VecDeque<SegmentId>,
}

/// An acquisition's result, once it has one.
type Outcome = Option<Result<Arc<Held>, FetchError>>;

enum Slot {
    Pending(watch::Receiver<Outcome>),
    Ready(Arc<Held>),
}

#[derive(Default)]
struct Store {
    slots: HashMap<SegmentId, Slot>,
    order: VecDeque<SegmentId>,
    bytes: u64,
}

struct Shared {
    local: PeerId,
    secret: [u8; 32],
    signer: DigestSigner,
    trusted: TrustedKeys,
    http: HttpClient,
    fetch_timeout: Duration,
    member_timeout: Duration,
    hello_interval: Duration,
    joins: bool,
    store_bytes: u64,
    lie_bytes: bool,
    lie_digests: bool,
    cmds: mpsc::Sender<Command>,
    streams: Mutex<HashMap<SwarmId, Stream>>,
    store: Mutex<Store>,
    banned: Mutex<HashMap<PeerId, Instant>>,
    serving: Arc<Semaphore>,
    listen: Mutex<Vec<Multiaddr>>,
    connected: Mutex<HashSet<PeerId>>,
    stats: MeshStats,
}

/// A handle to the running mesh.
#[derive(Clone)]
pub struct Mesh {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("peer_id", &self.shared.local)
            .finish_non_exhaustive()
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    fetch: request_response::Behaviour<FetchCodec>,
}

impl Mesh {
    /// Starts the mesh: binds the listen addresses and dials the bootstrap seeds. It runs
    /// until `shutdown`, saying bye on every stream's topic first.
    pub fn start(
        config: &config::Mesh,
        secret: [u8; 32],
        trusted: TrustedKeys,
        http: HttpClient,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let keypair = match &config.key_file {
            Some(p) => identity::Keypair::ed25519_from_bytes(config::read_secret(p)?)
                .context("mesh.key_file")?,
            None => identity::Keypair::generate_ed25519(),
        };
        let local = keypair.public().to_peer_id();
        let signer = DigestSigner::from_secret(secret);
        let trusted = TrustedKeys::new(trusted.keys().chain([signer.public_key()]));
        let fetch_timeout = Duration::from_millis(config.fetch_timeout_ms);
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_quic()
            .with_behaviour(|key| {
                let gossip_config = gossipsub::ConfigBuilder::default()
                    .heartbeat_interval(Duration::from_millis(500))
                    .validation_mode(gossipsub::ValidationMode::Strict)
                    // Forwarded only once this seed has checked them (signatures, members).
                    .validate_messages()
                    .max_transmit_size(mesh_proto::MAX_GOSSIP_LEN + 1024)
                    .build()
                    .map_err(|e| anyhow::anyhow!("gossipsub config: {e}"))?;
                let gossipsub = gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(key.clone()),
                    gossip_config,
                )
                .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?;
                let mut kad = kad::Behaviour::with_config(
                    local,
                    kad::store::MemoryStore::new(local),
                    kad::Config::new(KAD_PROTOCOL),
                );
                kad.set_mode(Some(kad::Mode::Server));
                Ok(Behaviour {
                    identify: identify::Behaviour::new(identify::Config::new(
                        IDENTIFY_PROTOCOL.into(),
                        key.public(),
                    )),
                    kad,
                    gossipsub,
                    fetch: request_response::Behaviour::with_codec(
                        FetchCodec,
                        [(FETCH_PROTOCOL, request_response::ProtocolSupport::Full)],
                        request_response::Config::default()
                            // Requesters keep their own deadline (`fetch_timeout`); this bounds
                            // the transfer of a large segment, both ways.
                            .with_request_timeout(fetch_timeout + Duration::from_secs(30))
                            .with_max_concurrent_streams(256),
                    ),
                })
            })
            .map_err(|e| anyhow::anyhow!("mesh behaviour: {e}"))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
            .build();
        for a in &config.listen {
            let addr: Multiaddr = a.parse().with_context(|| format!("mesh.listen {a:?}"))?;
            swarm
                .listen_on(addr)
                .with_context(|| format!("mesh.listen {a:?}"))?;
        }
        for a in &config.bootstrap {
            let addr: Multiaddr = a.parse().with_context(|| format!("mesh.bootstrap {a:?}"))?;
            if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() {
                swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
            }
            if let Err(e) = swarm.dial(addr) {
                tracing::warn!(addr = %a, error = %e, "cannot dial a mesh bootstrap address");
            }
        }
        let (cmds, rx) = mpsc::channel(1024);
        let shared = Arc::new(Shared {
            local,
            secret,
            signer,
            trusted,
            http,
            fetch_timeout,
            member_timeout: Duration::from_millis(config.member_timeout_ms),
            hello_interval: Duration::from_millis(config.hello_interval_ms),
            joins: !config.bootstrap.is_empty(),
            store_bytes: config.store_bytes,
            lie_bytes: config.lie_bytes,
            lie_digests: config.lie_digests,
            cmds,
            streams: Mutex::new(HashMap::new()),
            store: Mutex::new(Store::default()),
            banned: Mutex::new(HashMap::new()),
            serving: Arc::new(Semaphore::new(SERVING)),
            listen: Mutex::new(Vec::new()),
            connected: Mutex::new(HashSet::new()),
            stats: MeshStats::default(),
        });
        tracing::info!(peer_id = %local, "seed mesh starting");
        let task = SwarmTask {
            swarm,
            shared: shared.clone(),
            followed: HashMap::new(),
            pending: HashMap::new(),
            hello_interval: Duration::from_millis(config.hello_interval_ms),
            member_timeout: Duration::from_millis(config.member_timeout_ms),
        };
        tokio::spawn(task.run(rx, shutdown));
        Ok(Self { shared })
    }

    /// This seed's mesh peer id.
    pub fn peer_id(&self) -> PeerId {
        self.shared.local
    }

    /// The counters.
    pub fn stats(&self) -> &MeshStats {
        &self.shared.stats
    }

    /// Takes part in the mesh for a stream whose playlists are at `stream_url`. A seed that
    /// joins through bootstrap addresses waits (up to `member_timeout_ms`) to hear another seed
    /// of the stream, so that it does not pull the current window from the origin alone.
    pub async fn follow(&self, swarm: SwarmId, stream_url: &url::Url) {
        let origin = stream_url.origin().ascii_serialization();
        self.shared
            .streams
            .lock()
            .expect("not poisoned")
            .entry(swarm)
            .or_default()
            .origin = origin;
        let _ = self.shared.cmds.send(Command::Follow { swarm }).await;
        if self.shared.joins {
            // Until the set of live seeds has been stable for 1.5 hello intervals: a seed that
            // starts pulling with half a view pulls segments that others own.
            let start = Instant::now();
            let until = start + 2 * self.shared.member_timeout;
            let quiet = self.shared.hello_interval * 3 / 2;
            let mut last = self.shared.members(&swarm);
            let mut since = start;
            while Instant::now() < until && (last.len() < 2 || since.elapsed() < quiet) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let now = self.shared.members(&swarm);
                if now != last {
                    last = now;
                    since = Instant::now();
                }
            }
        }
    }

    /// Leaves the mesh of a stream: says bye on its topic, unsubscribes, and forgets its
    /// members and claims (segments held stay in the store until they age out).
    pub async fn unfollow(&self, swarm: SwarmId) {
        let _ = self.shared.cmds.send(Command::Unfollow { swarm }).await;
        self.shared
            .streams
            .lock()
            .expect("not poisoned")
            .remove(&swarm);
    }

    /// The segment `key`, located at `loc` at the origin: from the mesh store, from its owner,
    /// or from the origin. Concurrent calls for one segment share one acquisition, which goes
    /// on even if the caller stops waiting.
    pub async fn segment(&self, key: SegmentId, loc: Location) -> Result<Arc<Held>, FetchError> {
        self.shared.clone().segment(key, loc, false).await
    }

    /// Fetches `range` of a segment (all of it for `None`) from one seed, and verifies it.
    /// Returns the bytes of exactly `range`.
    pub async fn fetch_from(
        &self,
        peer: PeerId,
        key: SegmentId,
        loc: &Location,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Bytes, FetchError> {
        self.shared.fetch_remote(peer, key, loc, range).await
    }

    /// Live seeds of a stream, this one included, in peer id order.
    pub fn members(&self, swarm: &SwarmId) -> Vec<PeerId> {
        self.shared.members(swarm)
    }

    /// What `/stats` shows.
    pub fn view(&self) -> MeshView {
        let s = &self.shared;
        let p2p = libp2p::multiaddr::Protocol::P2p(s.local);
        let listen = s
            .listen
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|a| a.clone().with(p2p.clone()).to_string())
            .collect();
        let swarms: Vec<SwarmId> = s
            .streams
            .lock()
            .expect("not poisoned")
            .keys()
            .copied()
            .collect();
        let members = swarms
            .iter()
            .map(|sw| {
                (
                    sw.to_hex(),
                    s.members(sw).iter().map(ToString::to_string).collect(),
                )
            })
            .collect();
        let mut held: HashMap<String, HashMap<String, Vec<u64>>> = HashMap::new();
        for (k, slot) in &s.store.lock().expect("not poisoned").slots {
            if matches!(slot, Slot::Ready(_)) {
                held.entry(k.swarm.to_hex())
                    .or_default()
                    .entry(k.rendition.to_string())
                    .or_default()
                    .push(k.sequence);
            }
        }
        for r in held.values_mut().flat_map(|m| m.values_mut()) {
            r.sort_unstable();
        }
        MeshView {
            peer_id: s.local.to_string(),
            listen,
            connected: s.connected.lock().expect("not poisoned").len(),
            members,
            banned: s.banned_now().iter().map(ToString::to_string).collect(),
            held,
        }
    }

    /// Live seeds over all streams (for the gauge), this one counted once per stream.
    pub fn member_count(&self) -> usize {
        let swarms: Vec<SwarmId> = self
            .shared
            .streams
            .lock()
            .expect("not poisoned")
            .keys()
            .copied()
            .collect();
        swarms.iter().map(|s| self.shared.members(s).len()).sum()
    }

    /// Banned seeds.
    pub fn banned_count(&self) -> usize {
        self.shared.banned_now().len()
    }

    /// Connected mesh peers.
    pub fn connected_count(&self) -> usize {
        self.shared.connected.lock().expect("not poisoned").len()
    }
}

impl Shared {
    fn members(&self, swarm: &SwarmId) -> Vec<PeerId> {
        let banned = self.banned_now();
        let mut v: Vec<PeerId> = self
            .streams
            .lock()
            .expect("not poisoned")
            .get(swarm)
            .map(|s| {
                s.members
                    .keys()
                    .filter(|p| !banned.contains(p))
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        v.push(self.local);
        v.sort();
        v
    }

    fn ban(&self, peer: PeerId, why: &str) {
        self.stats
            .integrity_failures
            .fetch_add(1, Ordering::Relaxed);
        let until = Instant::now() + BAN;
        if self
            .banned
            .lock()
            .expect("not poisoned")
            .insert(peer, until)
            .is_none_or(|old| old <= Instant::now())
        {
            tracing::warn!(%peer, why, "seed banned from the mesh for {} s", BAN.as_secs());
            let mut streams = self.streams.lock().expect("not poisoned");
            for s in streams.values_mut() {
                if s.members.remove(&peer).is_some() {
                    self.stats.ownership_changes.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn is_banned(&self, peer: &PeerId) -> bool {
        self.banned
            .lock()
            .expect("not poisoned")
            .get(peer)
            .is_some_and(|until| *until > Instant::now())
    }

    /// Seeds banned now (expired bans are dropped).
    fn banned_now(&self) -> HashSet<PeerId> {
        let now = Instant::now();
        let mut banned = self.banned.lock().expect("not poisoned");
        banned.retain(|_, until| *until > now);
        banned.keys().copied().collect()
    }

    /// Whether `peer` is a live seed of `swarm`.
    fn is_member(&self, swarm: &SwarmId, peer: &PeerId) -> bool {
        !self.is_banned(peer)
            && self
                .streams
                .lock()
                .expect("not poisoned")
                .get(swarm)
                .is_some_and(|s| s.members.contains_key(peer))
    }

    async fn segment(
        self: Arc<Self>,
        key: SegmentId,
        loc: Location,
        from_origin: bool,
    ) -> Result<Arc<Held>, FetchError> {
        let mut rx = {
            let mut store = self.store.lock().expect("not poisoned");
            match store.slots.get(&key) {
                Some(Slot::Ready(h)) => return Ok(h.clone()),
                Some(Slot::Pending(rx)) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    store.slots.insert(key, Slot::Pending(rx.clone()));
                    drop(store);
                    let me = self.clone();
                    tokio::spawn(async move {
                        let mut guard = Settle {
                            shared: me.clone(),
                            key,
                            tx: Some(tx),
                        };
                        let r = me.acquire(key, loc, from_origin).await;
                        guard.done(r);
                    });
                    rx
                }
            }
        };
        match rx.wait_for(Option::is_some).await {
            Ok(r) => r
                .clone()
                .unwrap_or_else(|| Err(FetchError::Network("lost".into()))),
            Err(_) => Err(FetchError::Network("mesh acquisition ended".into())),
        }
    }

    /// Records the outcome of an acquisition in the store.
    fn settle(&self, key: SegmentId, r: &Result<Arc<Held>, FetchError>) {
        let mut store = self.store.lock().expect("not poisoned");
        match r {
            Ok(h) => {
                store.slots.insert(key, Slot::Ready(h.clone()));
                store.order.push_back(key);
                store.bytes += h.data.len() as u64;
                while store.bytes > self.store_bytes && store.order.len() > 1 {
                    let Some(old) = store.order.pop_front() else {
                        break;
                    };
                    if let Some(Slot::Ready(h)) = store.slots.remove(&old) {
                        store.bytes -= h.data.len() as u64;
                    }
                }
            }
            Err(_) => {
                store.slots.remove(&key);
            }
        }
    }

    async fn acquire(
        self: Arc<Self>,
        key: SegmentId,
        loc: Location,
        from_origin: bool,
    ) -> Result<Arc<Held>, FetchError> {
        if !from_origin {
            // Seeds that announced it, then the owner and the next ranks: all of it within
            // one `fetch_timeout`.
            let deadline = Instant::now() + self.fetch_timeout;
            for holder in self.claimants(&key) {
                if let Ok(Ok(data)) =
                    tokio::time::timeout_at(deadline, self.fetch_remote(holder, key, &loc, None))
                        .await
                {
                    let digest =
                        self.signer
                            .sign(SegmentDigest::compute(key, &data, DEFAULT_CHUNK_SIZE));
                    self.stats.fetched.fetch_add(1, Ordering::Relaxed);
                    return Ok(self.keep(key, data, digest).await);
                }
            }
            // The owner first; when it fails, the next seed in rank order (which pulls the
            // segment through), and so on down to this seed, which pulls it from the origin.
            let members = self.members(&key.swarm);
            let bytes = members_bytes(&members);
            let ranked: Vec<PeerId> = mesh_proto::owner_rank(&key, &bytes)
                .into_iter()
                .filter_map(|b| members.iter().find(|m| m.to_bytes() == *b).copied())
                .collect();
            let mut failed = false;
            for (i, seed) in ranked.into_iter().enumerate() {
                if seed == self.local {
                    break;
                }
                if i > 0 && !self.members(&key.swarm).contains(&seed) {
                    continue;
                }
                match tokio::time::timeout_at(deadline, self.fetch_remote(seed, key, &loc, None))
                    .await
                {
                    Ok(Ok(data)) => {
                        // Verified against the sender's signed digest in `fetch_remote`; this
                        // seed vouches for it with its own signature from here on.
                        let digest = self.signer.sign(SegmentDigest::compute(
                            key,
                            &data,
                            DEFAULT_CHUNK_SIZE,
                        ));
                        self.stats.fetched.fetch_add(1, Ordering::Relaxed);
                        if failed {
                            self.stats.takeovers.fetch_add(1, Ordering::Relaxed);
                        }
                        return Ok(self.keep(key, data, digest).await);
                    }
                    Ok(Err(e)) => {
                        failed = true;
                        tracing::info!(%seed, segment = %key, error = %e, "seed did not deliver: trying the next one");
                    }
                    Err(_) => {
                        failed = true;
                        tracing::info!(%seed, segment = %key, "seed did not deliver in time: pulling from the origin");
                        break;
                    }
                }
            }
            if failed {
                self.stats.takeovers.fetch_add(1, Ordering::Relaxed);
            }
        }
        let data = fetch_whole(&self.http, &loc).await?;
        self.stats.origin_requests.fetch_add(1, Ordering::Relaxed);
        self.stats
            .origin_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let digest = self
            .signer
            .sign(SegmentDigest::compute(key, &data, DEFAULT_CHUNK_SIZE));
        Ok(self.keep(key, data, digest).await)
    }

    /// Checks other seeds' claims against a verified segment and announces it.
    async fn keep(&self, key: SegmentId, data: Bytes, digest: SignedDigest) -> Arc<Held> {
        let mine = Fingerprint::of(&digest);
        let claims = self
            .streams
            .lock()
            .expect("not poisoned")
            .get_mut(&key.swarm)
            .and_then(|s| s.claims.remove(&key))
            .unwrap_or_default();
        for (peer, claimed) in claims {
            if mine.contradicts(&claimed) {
                self.ban(peer, "announced a wrong digest");
            }
        }
        let announced = if self.lie_digests {
            let mut bad = data.to_vec();
            corrupt(&mut bad);
            self.signer
                .sign(SegmentDigest::compute(key, &bad, DEFAULT_CHUNK_SIZE))
        } else {
            digest.clone()
        };
        let _ = self
            .cmds
            .send(Command::Publish {
                swarm: key.swarm,
                data: Gossip::Have(Box::new(announced)).encode(),
            })
            .await;
        Arc::new(Held { data, digest })
    }

    async fn fetch_remote(
        &self,
        peer: PeerId,
        key: SegmentId,
        loc: &Location,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Bytes, FetchError> {
        let request = FetchRequest {
            segment: key,
            range: range.clone(),
            url: loc.url.to_string(),
            resource_range: loc.range.clone(),
        };
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Command::Fetch {
                peer,
                request,
                reply,
            })
            .await
            .map_err(|_| FetchError::Network("mesh stopped".into()))?;
        let response = rx
            .await
            .map_err(|_| FetchError::Network("mesh stopped".into()))?
            .map_err(FetchError::Network)?;
        let (digest, offset, data) = match response {
            FetchResponse::Found {
                digest,
                offset,
                data,
            } => (digest, offset, data),
            FetchResponse::NotFound => {
                return Err(FetchError::Network(format!("{peer} does not have it")));
            }
            FetchResponse::Refused(why) => {
                return Err(FetchError::Network(format!("{peer} refused: {why}")));
            }
        };
        match verify(&self.trusted, key, range.as_ref(), &digest, offset, &data) {
            Ok(bytes) => {
                self.stats
                    .bytes_in
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                Ok(bytes)
            }
            Err(e) => {
                self.ban(peer, &e);
                Err(FetchError::BadResponse(format!(
                    "{peer} sent bytes that fail verification: {e}"
                )))
            }
        }
    }

    /// Answers another seed's request.
    async fn serve(self: Arc<Self>, peer: PeerId, req: FetchRequest) -> FetchResponse {
        let key = req.segment;
        // Only live seeds of the stream (their hellos carry an operator key's signature) are
        // served: their URLs are trusted as far as their digests are.
        if !self.is_member(&key.swarm, &peer) {
            return FetchResponse::Refused("not a live seed of this stream".into());
        }
        let held = {
            let store = self.store.lock().expect("not poisoned");
            match store.slots.get(&key) {
                Some(Slot::Ready(h)) => Some(h.clone()),
                _ => None,
            }
        };
        let held = match held {
            Some(h) => h,
            None => {
                let origin = self
                    .streams
                    .lock()
                    .expect("not poisoned")
                    .get(&key.swarm)
                    .map(|s| s.origin.clone());
                let Some(origin) = origin else {
                    return FetchResponse::Refused("stream not followed".into());
                };
                let Ok(url) = url::Url::parse(&req.url) else {
                    return FetchResponse::Refused("bad url".into());
                };
                if url.origin().ascii_serialization() != origin {
                    return FetchResponse::Refused("url outside the stream's origin".into());
                }
                let loc = Location {
                    url,
                    range: req.resource_range.clone(),
                };
                // Pending here, or not listed yet: pull it through (or join the pull).
                let pulled = self
                    .store
                    .lock()
                    .expect("not poisoned")
                    .slots
                    .contains_key(&key);
                let pulled = !pulled;
                match tokio::time::timeout(self.fetch_timeout, self.clone().segment(key, loc, true))
                    .await
                {
                    Ok(Ok(h)) => {
                        if pulled {
                            self.stats.pulled_through.fetch_add(1, Ordering::Relaxed);
                        }
                        h
                    }
                    _ => return FetchResponse::NotFound,
                }
            }
        };
        let len = held.data.len() as u64;
        let cover = match &req.range {
            Some(r) => {
                if r.end > len {
                    return FetchResponse::Refused("range beyond the segment".into());
                }
                mesh_proto::aligned_cover(r, len, held.digest.digest().chunk_size())
            }
            None => 0..len,
        };
        let mut data = held.data.slice(
            usize::try_from(cover.start).unwrap_or(0)..usize::try_from(cover.end).unwrap_or(0),
        );
        if self.lie_bytes {
            let mut bad = data.to_vec();
            corrupt(&mut bad);
            data = Bytes::from(bad);
        }
        self.stats
            .bytes_out
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        FetchResponse::Found {
            digest: Box::new(held.digest.clone()),
            offset: cover.start,
            data,
        }
    }

    /// A message on a stream's topic from `source`: whether to forward it, and whether
    /// `source` just became a live seed of the stream.
    fn gossip(&self, swarm: SwarmId, source: PeerId, msg: Gossip) -> (Verdict, bool) {
        if self.is_banned(&source) {
            return (Verdict::Ignore, false);
        }
        match msg {
            Gossip::Presence(p) => {
                if let Err(e) = p.verify(
                    &self.trusted,
                    &source.to_bytes(),
                    &swarm,
                    now_ms(),
                    PRESENCE_WINDOW_MS,
                ) {
                    tracing::debug!(%source, error = %e, "hello or bye that does not verify: ignored");
                    let verdict = match e {
                        PresenceError::Stale { .. } => Verdict::Ignore,
                        _ => Verdict::Reject,
                    };
                    return (verdict, false);
                }
                let mut streams = self.streams.lock().expect("not poisoned");
                let Some(s) = streams.get_mut(&swarm) else {
                    return (Verdict::Accept, false);
                };
                match p.kind {
                    PresenceKind::Hello => {
                        if s.members.insert(source, Instant::now()).is_none() {
                            tracing::info!(peer = %source, swarm = %swarm.to_hex(), "seed joined the stream's mesh");
                            self.stats.ownership_changes.fetch_add(1, Ordering::Relaxed);
                            return (Verdict::Accept, true);
                        }
                    }
                    PresenceKind::Bye => {
                        if s.members.remove(&source).is_some() {
                            tracing::info!(peer = %source, swarm = %swarm.to_hex(), "seed left the stream's mesh");
                            self.stats.ownership_changes.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                (Verdict::Accept, false)
            }
            Gossip::Have(d) => {
                let key = d.digest().segment();
                if key.swarm != swarm || d.verify(&self.trusted).is_err() {
                    tracing::debug!(%source, "announced digest does not verify: ignored");
                    return (Verdict::Reject, false);
                }
                // Only live seeds' claims count (and are kept).
                if !self.is_member(&swarm, &source) {
                    return (Verdict::Ignore, false);
                }
                let claimed = Fingerprint::of(&d);
                let held = match self.store.lock().expect("not poisoned").slots.get(&key) {
                    Some(Slot::Ready(h)) => Some(Fingerprint::of(&h.digest)),
                    _ => None,
                };
                match held {
                    Some(h) if h.contradicts(&claimed) => {
                        self.ban(source, "announced a wrong digest");
                        return (Verdict::Reject, false);
                    }
                    Some(_) => {}
                    None => {
                        let mut streams = self.streams.lock().expect("not poisoned");
                        let Some(s) = streams.get_mut(&swarm) else {
                            return (Verdict::Accept, false);
                        };
                        if !s.claims.contains_key(&key) {
                            s.claim_order.push_back(key);
                            if s.claim_order.len() > CLAIMS_KEPT
                                && let Some(old) = s.claim_order.pop_front()
                            {
                                s.claims.remove(&old);
                            }
                        }
                        let claims = s.claims.entry(key).or_default();
                        if !claims.iter().any(|(p, _)| *p == source) {
                            claims.push((source, claimed));
                        }
                    }
                }
                (Verdict::Accept, false)
            }
        }
    }

    /// Digests of the newest segments held of a stream (up to `per_rendition` of each
    /// rendition): re-announced when a seed joins, so that it fetches them rather than pull
    /// what it now owns from the origin again.
    fn recent_digests(&self, swarm: &SwarmId, per_rendition: usize) -> Vec<SignedDigest> {
        let store = self.store.lock().expect("not poisoned");
        let mut by_rendition: HashMap<_, Vec<(u64, SignedDigest)>> = HashMap::new();
        for (k, slot) in &store.slots {
            if k.swarm == *swarm
                && let Slot::Ready(h) = slot
            {
                by_rendition
                    .entry(k.rendition)
                    .or_default()
                    .push((k.sequence, h.digest.clone()));
            }
        }
        let mut out = Vec::new();
        for mut v in by_rendition.into_values() {
            v.sort_by_key(|(s, _)| std::cmp::Reverse(*s));
            out.extend(v.into_iter().take(per_rendition).map(|(_, d)| d));
        }
        out
    }

    /// Live seeds that announced holding `key`, in owner rank order.
    fn claimants(&self, key: &SegmentId) -> Vec<PeerId> {
        let members = self.members(&key.swarm);
        let claimed: Vec<PeerId> = self
            .streams
            .lock()
            .expect("not poisoned")
            .get(&key.swarm)
            .and_then(|s| s.claims.get(key))
            .map(|c| c.iter().map(|(p, _)| *p).collect())
            .unwrap_or_default();
        let live: Vec<PeerId> = members
            .into_iter()
            .filter(|m| *m != self.local && claimed.contains(m))
            .collect();
        let bytes = members_bytes(&live);
        mesh_proto::owner_rank(key, &bytes)
            .into_iter()
            .filter_map(|b| live.iter().find(|m| m.to_bytes() == *b).copied())
            .collect()
    }

    /// A peer is gone (no connection left): it no longer counts as live anywhere.
    fn gone(&self, peer: PeerId) {
        let mut streams = self.streams.lock().expect("not poisoned");
        for (swarm, s) in streams.iter_mut() {
            if s.members.remove(&peer).is_some() {
                tracing::info!(%peer, swarm = %swarm.to_hex(), "seed disconnected: left the stream's mesh");
                self.stats.ownership_changes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Seeds not heard from within `timeout` no longer count as live.
    fn expire(&self, timeout: Duration) {
        let now = Instant::now();
        let mut streams = self.streams.lock().expect("not poisoned");
        for (swarm, s) in streams.iter_mut() {
            s.members.retain(|peer, seen| {
                let live = now.duration_since(*seen) <= timeout;
                if !live {
                    tracing::info!(%peer, swarm = %swarm.to_hex(), "seed silent: left the stream's mesh");
                    self.stats.ownership_changes.fetch_add(1, Ordering::Relaxed);
                }
                live
            });
        }
    }
}

/// Settles an acquisition in the store, also when its task panics or is dropped: the slot
/// is then removed and its waiters get an error, so a later call starts afresh.
struct Settle {
    shared: Arc<Shared>,
    key: SegmentId,
    tx: Option<watch::Sender<Outcome>>,
}

impl Settle {
    fn done(&mut self, r: Result<Arc<Held>, FetchError>) {
        self.shared.settle(self.key, &r);
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Some(r));
        }
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        if self.tx.is_some() {
            self.done(Err(FetchError::Network("mesh acquisition failed".into())));
        }
    }
}

/// What a seed makes of a gossip message (forwarded by gossipsub only when accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Accept,
    Ignore,
    Reject,
}

/// What two digests of one segment are compared by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    length: u64,
    chunk_size: u32,
    root: [u8; 32],
}

impl Fingerprint {
    fn of(d: &SignedDigest) -> Self {
        Self {
            length: d.digest().length(),
            chunk_size: d.digest().chunk_size(),
            root: *d.digest().root(),
        }
    }

    /// Whether the two cannot be digests of the same bytes. Digests cut in different chunk
    /// sizes (seeds of different versions) are not compared beyond the length.
    fn contradicts(&self, other: &Self) -> bool {
        self.length != other.length
            || (self.chunk_size == other.chunk_size && self.root != other.root)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn members_bytes(members: &[PeerId]) -> Vec<Vec<u8>> {
    members.iter().map(|m| m.to_bytes()).collect()
}

/// Checks a response against its signed digest and returns exactly the bytes asked for.
fn verify(
    trusted: &TrustedKeys,
    key: SegmentId,
    range: Option<&std::ops::Range<u64>>,
    digest: &SignedDigest,
    offset: u64,
    data: &Bytes,
) -> Result<Bytes, String> {
    let verified = digest.verify(trusted).map_err(|e| format!("digest: {e}"))?;
    if digest.digest().segment() != key {
        return Err("digest of another segment".into());
    }
    let len = digest.digest().length();
    let Some(range) = range else {
        if offset != 0 {
            return Err("whole segment asked, part sent".into());
        }
        verified
            .verify_segment(data)
            .map_err(|e| format!("segment: {e}"))?;
        return Ok(data.clone());
    };
    let cs = u64::from(digest.digest().chunk_size());
    let want = mesh_proto::aligned_cover(range, len, digest.digest().chunk_size());
    if range.end > len || offset != want.start || data.len() as u64 != want.end - want.start {
        return Err(format!(
            "range {}..{} answered with {} bytes at {offset}",
            range.start,
            range.end,
            data.len()
        ));
    }
    let first = usize::try_from(want.start / cs).unwrap_or(usize::MAX);
    for (i, chunk) in data.chunks(cs as usize).enumerate() {
        verified
            .verify_chunk(first + i, chunk)
            .map_err(|e| format!("chunk: {e}"))?;
    }
    let from = usize::try_from(range.start - want.start).unwrap_or(0);
    let to = usize::try_from(range.end - want.start).unwrap_or(0);
    Ok(data.slice(from..to))
}

/// Flips a byte in every KiB (the lying test helpers).
fn corrupt(data: &mut [u8]) {
    for b in data.iter_mut().step_by(1024) {
        *b ^= 0x5a;
    }
}

/// Pulls a whole segment from the origin.
async fn fetch_whole(http: &HttpClient, loc: &Location) -> Result<Bytes, FetchError> {
    let mut body = http.get(&loc.url, loc.range.clone()).await?;
    let want = loc.range.as_ref().map(|r| r.end - r.start);
    if want.is_some_and(|w| w > mesh_proto::MAX_DATA_LEN) {
        return Err(FetchError::BadResponse(
            "segment too large for the mesh".into(),
        ));
    }
    // A 200 to a ranged request carries the whole resource: keep the segment's part.
    let skip = match (&loc.range, body.status) {
        (Some(r), 200) => r.start,
        _ => 0,
    };
    let mut out = BytesMut::new();
    let mut pos = 0u64;
    while let Some(piece) = body.next().await? {
        let start = pos;
        pos += piece.len() as u64;
        let from = skip.max(start);
        let to = want.map_or(pos, |w| pos.min(skip + w));
        if from < to {
            out.extend_from_slice(
                &piece[usize::try_from(from - start).unwrap_or(0)
                    ..usize::try_from(to - start).unwrap_or(0)],
            );
        }
        if out.len() as u64 > mesh_proto::MAX_DATA_LEN {
            return Err(FetchError::BadResponse(
                "segment too large for the mesh".into(),
            ));
        }
        if want.is_some_and(|w| out.len() as u64 >= w) {
            break;
        }
    }
    if let Some(w) = want
        && (out.len() as u64) < w
    {
        return Err(FetchError::BadResponse(format!(
            "body ended at byte {}, expected {w}",
            out.len()
        )));
    }
    Ok(out.freeze())
}

struct SwarmTask {
    swarm: libp2p::Swarm<Behaviour>,
    shared: Arc<Shared>,
    followed: HashMap<gossipsub::TopicHash, (SwarmId, gossipsub::IdentTopic)>,
    pending: HashMap<
        request_response::OutboundRequestId,
        oneshot::Sender<Result<FetchResponse, String>>,
    >,
    hello_interval: Duration,
    member_timeout: Duration,
}

impl SwarmTask {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        let mut hello = tokio::time::interval(self.hello_interval);
        hello.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut discover = tokio::time::interval(Duration::from_secs(10));
        discover.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.event(ev),
                cmd = rx.recv() => match cmd {
                    Some(c) => self.command(c),
                    None => break,
                },
                _ = hello.tick() => {
                    self.hello();
                    self.shared.expire(self.member_timeout);
                }
                _ = discover.tick() => {
                    if self.swarm.connected_peers().next().is_some() {
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    }
                }
                () = shutdown.cancelled() => break,
            }
        }
        // Say bye, and give the messages a moment to leave.
        let topics: Vec<(SwarmId, gossipsub::IdentTopic)> =
            self.followed.values().cloned().collect();
        let local = self.shared.local.to_bytes();
        for (swarm, t) in topics {
            let bye = Presence::sign(
                PresenceKind::Bye,
                &self.shared.secret,
                &local,
                &swarm,
                now_ms(),
            );
            let _ = self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(t, Gossip::Presence(bye).encode());
        }
        let _ = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                let ev = self.swarm.select_next_some().await;
                self.event(ev);
            }
        })
        .await;
    }

    fn hello(&mut self) {
        let local = self.shared.local.to_bytes();
        let topics: Vec<(SwarmId, gossipsub::IdentTopic)> =
            self.followed.values().cloned().collect();
        for (swarm, t) in topics {
            let h = Presence::sign(
                PresenceKind::Hello,
                &self.shared.secret,
                &local,
                &swarm,
                now_ms(),
            );
            // No subscribed peer yet is the normal state of a lone seed.
            let _ = self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(t, Gossip::Presence(h).encode());
        }
    }

    /// Announces the newest held segments of a stream again (a seed joined it).
    fn reannounce(&mut self, swarm: SwarmId) {
        let t = gossipsub::IdentTopic::new(mesh_proto::topic(&swarm));
        for d in self.shared.recent_digests(&swarm, REANNOUNCED) {
            let _ = self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(t.clone(), Gossip::Have(Box::new(d)).encode());
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Follow { swarm } => {
                let t = gossipsub::IdentTopic::new(mesh_proto::topic(&swarm));
                if let Err(e) = self.swarm.behaviour_mut().gossipsub.subscribe(&t) {
                    tracing::warn!(error = %e, "cannot subscribe to the stream's mesh topic");
                }
                self.followed.insert(t.hash(), (swarm, t));
                self.hello();
            }
            Command::Unfollow { swarm } => {
                let t = gossipsub::IdentTopic::new(mesh_proto::topic(&swarm));
                if self.followed.remove(&t.hash()).is_none() {
                    return;
                }
                let bye = Presence::sign(
                    PresenceKind::Bye,
                    &self.shared.secret,
                    &self.shared.local.to_bytes(),
                    &swarm,
                    now_ms(),
                );
                let gossip = &mut self.swarm.behaviour_mut().gossipsub;
                let _ = gossip.publish(t.clone(), Gossip::Presence(bye).encode());
                let _ = gossip.unsubscribe(&t);
            }
            Command::Publish { swarm, data } => {
                let t = gossipsub::IdentTopic::new(mesh_proto::topic(&swarm));
                let _ = self.swarm.behaviour_mut().gossipsub.publish(t, data);
            }
            Command::Fetch {
                peer,
                request,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .fetch
                    .send_request(&peer, request);
                self.pending.insert(id, reply);
            }
            Command::Respond { channel, response } => {
                // The requester may be gone: nothing to do then.
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .fetch
                    .send_response(channel, response);
            }
        }
    }

    fn event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "seed mesh listening");
                self.shared
                    .listen
                    .lock()
                    .expect("not poisoned")
                    .push(address);
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                self.shared
                    .connected
                    .lock()
                    .expect("not poisoned")
                    .insert(peer_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.shared
                    .connected
                    .lock()
                    .expect("not poisoned")
                    .remove(&peer_id);
                self.shared.gone(peer_id);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) if info.protocol_version == IDENTIFY_PROTOCOL => {
                for a in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, a);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, ..
            })) if peer != self.shared.local && !self.swarm.is_connected(&peer) => {
                let _ = self.swarm.dial(peer);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let (verdict, joined) = match (message.source, self.followed.get(&message.topic)) {
                    (Some(source), Some((swarm, _))) => {
                        let swarm = *swarm;
                        match Gossip::decode(&message.data) {
                            Ok(g) => {
                                let (v, joined) = self.shared.gossip(swarm, source, g);
                                (v, joined.then_some(swarm))
                            }
                            Err(e) => {
                                tracing::debug!(%source, error = %e, "bad mesh gossip: rejected");
                                (Verdict::Reject, None)
                            }
                        }
                    }
                    _ => (Verdict::Ignore, None),
                };
                let acceptance = match verdict {
                    Verdict::Accept => gossipsub::MessageAcceptance::Accept,
                    Verdict::Ignore => gossipsub::MessageAcceptance::Ignore,
                    Verdict::Reject => gossipsub::MessageAcceptance::Reject,
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
                if let Some(swarm) = joined {
                    self.reannounce(swarm);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Fetch(ev)) => self.fetch_event(ev),
            _ => {}
        }
    }

    fn fetch_event(&mut self, ev: request_response::Event<FetchRequest, FetchResponse>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let Ok(permit) = self.shared.serving.clone().try_acquire_owned() else {
                        let busy = FetchResponse::Refused("busy".into());
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .fetch
                            .send_response(channel, busy);
                        return;
                    };
                    let shared = self.shared.clone();
                    tokio::spawn(async move {
                        let response = shared.clone().serve(peer, request).await;
                        drop(permit);
                        let _ = shared
                            .cmds
                            .send(Command::Respond { channel, response })
                            .await;
                    });
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(r) = self.pending.remove(&request_id) {
                        let _ = r.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(r) = self.pending.remove(&request_id) {
                    let _ = r.send(Err(error.to_string()));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "mesh request from a seed failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}

/// Frames [`FetchRequest`] and [`FetchResponse`] on a libp2p stream: a varint-free u32 length
/// (big-endian), then the `mesh_proto` encoding.
#[derive(Debug, Clone, Copy, Default)]
struct FetchCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: u64) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u64::from(u32::from_be_bytes(len));
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("mesh frame of {len} bytes exceeds {max}"),
        ));
    }
    // Grows as bytes arrive: the length alone commits no memory.
    let mut buf = Vec::with_capacity(len.min(64 * 1024) as usize);
    io.take(len).read_to_end(&mut buf).await?;
    if (buf.len() as u64) < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "mesh frame ended early",
        ));
    }
    Ok(buf)
}

fn frame_len(len: usize) -> io::Result<[u8; 4]> {
    u32::try_from(len)
        .map(u32::to_be_bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "mesh frame too large"))
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

#[async_trait::async_trait]
impl request_response::Codec for FetchCodec {
    type Protocol = StreamProtocol;
    type Request = FetchRequest;
    type Response = FetchResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<FetchRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        let buf = read_frame(io, mesh_proto::MAX_REQUEST_LEN as u64).await?;
        FetchRequest::decode(&buf).map_err(invalid)
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<FetchResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let max = mesh_proto::MAX_DATA_LEN + mesh_proto::MAX_GOSSIP_LEN as u64 + 64;
        let buf = read_frame(io, max).await?;
        FetchResponse::decode(Bytes::from(buf)).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: FetchRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let buf = req.encode();
        io.write_all(&frame_len(buf.len())?).await?;
        io.write_all(&buf).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: FetchResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let head = res.encode_head();
        let data_len = match &res {
            FetchResponse::Found { data, .. } => data.len(),
            _ => 0,
        };
        io.write_all(&frame_len(head.len() + data_len)?).await?;
        io.write_all(&head).await?;
        if let FetchResponse::Found { data, .. } = &res {
            io.write_all(data).await?;
        }
        io.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarmcdn_core::ids::RenditionId;
    use swarmcdn_tests::origin::{LiveClock, Origin, OriginConfig, serve};

    /// Two meshes in this process over one transport, following one stream of a test origin.
    async fn pair(
        transport: &str,
        shutdown: &CancellationToken,
    ) -> (Mesh, Mesh, Arc<Origin>, url::Url, config::Mesh) {
        let origin = Arc::new(
            Origin::new(
                OriginConfig {
                    live_start_offset: 12.0,
                    ..OriginConfig::default()
                },
                LiveClock::Real(Instant::now()),
            )
            .unwrap(),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = url::Url::parse(&format!("http://{}/live/", l.local_addr().unwrap())).unwrap();
        tokio::spawn(serve(origin.clone(), l, shutdown.clone()));
        let http = HttpClient::new(crate::http::Timeouts::default());
        let config = config::Mesh {
            listen: vec![transport.into()],
            ..config::Mesh::default()
        };
        let trusted = TrustedKeys::default();
        let a = Mesh::start(
            &config,
            [7; 32],
            trusted.clone(),
            http.clone(),
            shutdown.clone(),
        )
        .unwrap();
        let a_addr = loop {
            if let Some(addr) = a.view().listen.first() {
                break addr.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let config = config::Mesh {
            bootstrap: vec![a_addr],
            ..config
        };
        let b = Mesh::start(&config, [7; 32], trusted, http, shutdown.clone()).unwrap();
        let swarm = SwarmId([1; 20]);
        let (_, ()) = tokio::join!(b.follow(swarm, &base), a.follow(swarm, &base));
        for m in [&a, &b] {
            assert_eq!(m.members(&swarm).len(), 2, "{:?}", m.view());
        }
        (a, b, origin, base, config)
    }

    fn loc_of(base: &url::Url, rendition: &str, n: u64) -> Location {
        Location {
            url: base.join(&format!("{rendition}/seg-{n}.m4s")).unwrap(),
            range: None,
        }
    }

    async fn ranges_and_pull_through_over(transport: &str) {
        let shutdown = CancellationToken::new();
        let (a, b, origin, base, config) = pair(transport, &shutdown).await;
        let rendition = origin.rendition_names()[0].clone();
        let n = origin.live_edge().unwrap();
        let want = origin.segment_bytes(&rendition, n).unwrap();
        let loc = Location {
            url: base.join(&format!("{rendition}/seg-{n}.m4s")).unwrap(),
            range: None,
        };
        // B asks A for a segment A never listed: A pulls it through from the origin.
        let range = 70_000..(want.len() as u64 - 1000);
        let got = b
            .fetch_from(a.peer_id(), key(n), &loc, Some(range.clone()))
            .await
            .unwrap();
        assert_eq!(got, want.slice(range.start as usize..range.end as usize));
        assert_eq!(a.stats().pulled_through.load(Ordering::Relaxed), 1);
        // The whole segment, now from A's store: no second origin request.
        let whole = b.fetch_from(a.peer_id(), key(n), &loc, None).await.unwrap();
        assert_eq!(whole, want);
        assert_eq!(a.stats().origin_requests.load(Ordering::Relaxed), 1);
        // Through `segment`, whoever owns it: one origin copy between the two.
        let m = n - 1;
        let loc = Location {
            url: base.join(&format!("{rendition}/seg-{m}.m4s")).unwrap(),
            range: None,
        };
        let (x, y) = tokio::join!(a.segment(key(m), loc.clone()), b.segment(key(m), loc));
        assert_eq!(
            x.unwrap().data,
            origin.segment_bytes(&rendition, m).unwrap()
        );
        assert_eq!(
            y.unwrap().data,
            origin.segment_bytes(&rendition, m).unwrap()
        );
        let pulls = |m: &Mesh| m.stats().origin_requests.load(Ordering::Relaxed);
        assert_eq!(pulls(&a) + pulls(&b), 2);
        // A URL outside the stream's origin is refused, not fetched.
        let elsewhere = Location {
            url: url::Url::parse("http://127.0.0.1:9/x.m4s").unwrap(),
            range: None,
        };
        let e = b
            .fetch_from(a.peer_id(), key(n + 100), &elsewhere, None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
        // A peer without an operator key is not a live seed: refused, nothing fetched.
        let http = HttpClient::new(crate::http::Timeouts::default());
        let stranger = Mesh::start(
            &config,
            [8; 32],
            TrustedKeys::default(),
            http,
            shutdown.clone(),
        )
        .unwrap();
        let e = stranger
            .fetch_from(
                a.peer_id(),
                key(n - 2),
                &loc_of(&base, &rendition, n - 2),
                None,
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not a live seed"), "{e}");
        assert_eq!(pulls(&a) + pulls(&b), 2);
        shutdown.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seeds_fetch_segments_and_ranges_from_each_other_over_quic() {
        ranges_and_pull_through_over("/ip4/127.0.0.1/udp/0/quic-v1").await;
    }

    /// A seed that stops following a stream says bye: the other stops counting it at once
    /// (not after `member_timeout`), and it can follow the stream again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_seed_that_unfollows_leaves_the_stream_and_can_come_back() {
        let shutdown = CancellationToken::new();
        let (a, b, _origin, base, _config) = pair("/ip4/127.0.0.1/tcp/0", &shutdown).await;
        let swarm = SwarmId([1; 20]);
        a.unfollow(swarm).await;
        assert_eq!(a.members(&swarm), vec![a.peer_id()], "A forgot the others");
        let start = Instant::now();
        while b.members(&swarm).len() != 1 {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "B still counts A: {:?}",
                b.members(&swarm)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        a.follow(swarm, &base).await;
        let start = Instant::now();
        while b.members(&swarm).len() != 2 || a.members(&swarm).len() != 2 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "A did not come back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        shutdown.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seeds_fetch_segments_and_ranges_from_each_other_over_tcp() {
        ranges_and_pull_through_over("/ip4/127.0.0.1/tcp/0").await;
    }

    fn key(n: u64) -> SegmentId {
        SegmentId::new(SwarmId([1; 20]), RenditionId([2; 8]), n)
    }

    #[test]
    fn responses_verify_whole_and_by_range_and_catch_corruption() {
        let signer = DigestSigner::from_secret([3; 32]);
        let trusted = TrustedKeys::new([signer.public_key()]);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let data = Bytes::from(data);
        let digest = signer.sign(SegmentDigest::compute(key(7), &data, 64 * 1024));
        assert_eq!(
            verify(&trusted, key(7), None, &digest, 0, &data).unwrap(),
            data
        );
        // A range: the responder sends the chunk-aligned cover, the requester keeps the range.
        let range = 70_000..140_000;
        let cover = mesh_proto::aligned_cover(&range, 200_000, 64 * 1024);
        let sent = data.slice(cover.start as usize..cover.end as usize);
        let got = verify(&trusted, key(7), Some(&range), &digest, cover.start, &sent).unwrap();
        assert_eq!(got, data.slice(70_000..140_000));
        // Corrupt bytes, a wrong segment, an untrusted signer: all refused.
        let mut bad = data.to_vec();
        corrupt(&mut bad);
        assert!(verify(&trusted, key(7), None, &digest, 0, &Bytes::from(bad)).is_err());
        assert!(verify(&trusted, key(8), None, &digest, 0, &data).is_err());
        let other = TrustedKeys::new([DigestSigner::from_secret([4; 32]).public_key()]);
        assert!(verify(&other, key(7), None, &digest, 0, &data).is_err());
        // A range answered with the wrong cover.
        assert!(verify(&trusted, key(7), Some(&range), &digest, 0, &sent).is_err());
    }
}
