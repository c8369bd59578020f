//! The node loop: one task owns a `core::node::Node` for one stream and performs what it asks
//! (tracker messages, WebRTC connections, DataChannel messages, HTTP fetches), feeding back
//! what happens. Everything else talks to it through bounded channels.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use swarmcdn_core::ids::{PeerId, RenditionId, SwarmId};
use swarmcdn_core::node::{
    Event, FetchError, FetchId, HttpTarget, Node, NodeConfig, NodeStats, PeerEvent,
    PlayerRequestId, PlayerState, SourceBytes, Transmit,
};
use swarmcdn_core::time::Time;
use swarmcdn_core::tracker_proto::{
    Announce, Answer, Offer, OfferId, SessionDescription, ToTracker,
};
use swarmcdn_core::wire::SegmentRef;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hls::{Location, MediaPlaylist};
use crate::http::HttpClient;
use crate::rtc::{self, Dc, Pc, RtcConfig};
use crate::tracker::TrackerEvent;

/// A peer connection's id, unique within the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

/// A segment for the player: its bytes and where they came from.
pub type Delivery = Result<(Bytes, SourceBytes), FetchError>;

/// Everything the node loop reacts to.
pub enum Input {
    /// From the tracker connection.
    Tracker(TrackerEvent),
    /// Offers for an announce are ready.
    OffersMade {
        /// The announce to send.
        announce: Box<Announce>,
        /// The offers (failed ones left out).
        offers: Vec<(ConnId, Pc, Dc, String)>,
    },
    /// An answer to a relayed offer is ready (or failed: `None`).
    AnswerMade {
        /// The connection.
        conn: ConnId,
        /// The connection and the answer SDP.
        made: Option<(Pc, String)>,
    },
    /// The remote side's DataChannel arrived on a connection this side answered.
    Channel {
        /// The connection.
        conn: ConnId,
        /// The channel.
        dc: Dc,
    },
    /// A DataChannel event.
    Peer {
        /// The connection.
        conn: ConnId,
        /// What happened.
        ev: PeerEvent,
    },
    /// The connection failed or closed.
    ConnFailed {
        /// The connection.
        conn: ConnId,
    },
    /// Body bytes of an HTTP fetch, at `offset` within the segment.
    HttpData {
        /// The fetch.
        id: FetchId,
        /// Offset within the segment.
        offset: u64,
        /// The segment's length, if known.
        total: Option<u64>,
        /// The bytes.
        data: Bytes,
    },
    /// An HTTP fetch ended.
    HttpDone {
        /// The fetch.
        id: FetchId,
        /// How.
        result: Result<(), FetchError>,
    },
    /// A media playlist was (re)loaded.
    Playlist(MediaPlaylist),
    /// The player's state.
    Player(PlayerState),
    /// The player needs a segment.
    Request {
        /// The segment.
        seg: SegmentRef,
        /// Where to deliver it.
        reply: oneshot::Sender<Delivery>,
    },
    /// A snapshot of the counters.
    Stats(oneshot::Sender<NodeStats>),
}

/// Settings of the loop beyond the node's own.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Tracker URLs, in this swarm's rank order.
    pub trackers: Vec<String>,
    /// WebRTC settings.
    pub rtc: RtcConfig,
    /// How long an offer waits for its answer.
    pub offer_timeout: Duration,
    /// The seed mesh: segment fetches go through it instead of straight to the origin.
    pub mesh: Option<crate::mesh::Mesh>,
}

/// Counters the loop publishes for metrics (refreshed every second).
#[derive(Debug, Default)]
pub struct Published {
    /// The node's counters.
    pub stats: Mutex<NodeStats>,
    /// WebRTC offers waiting for an answer.
    pub pending_offers: Mutex<usize>,
}

/// A handle to a running node loop.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    inputs: mpsc::Sender<Input>,
    /// The stream's swarm.
    pub swarm: SwarmId,
    /// The published counters.
    pub published: Arc<Published>,
}

impl NodeHandle {
    /// The input channel (for the playlist puller).
    pub fn inputs(&self) -> mpsc::Sender<Input> {
        self.inputs.clone()
    }

    /// Asks for a segment; resolves when it is ready or failed.
    pub async fn request(&self, seg: SegmentRef) -> Delivery {
        let (reply, rx) = oneshot::channel();
        if self
            .inputs
            .send(Input::Request { seg, reply })
            .await
            .is_err()
        {
            return Err(FetchError::Network("node stopped".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(FetchError::Network("node stopped".into())))
    }

    /// Reports the player's state.
    pub async fn player(&self, state: PlayerState) {
        let _ = self.inputs.send(Input::Player(state)).await;
    }

    /// The node's counters now.
    pub async fn stats(&self) -> Option<NodeStats> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::Stats(tx)).await.ok()?;
        rx.await.ok()
    }
}

struct Conn {
    pc: Option<Pc>,
    dc: Option<Dc>,
    peer: Option<PeerId>,
    offer: Option<OfferId>,
    writer: Option<mpsc::Sender<Bytes>>,
    created: Instant,
}

struct Loop {
    node: Node,
    swarm: SwarmId,
    config: LoopConfig,
    start: Instant,
    inputs: mpsc::Sender<Input>,
    tracker: mpsc::Sender<String>,
    http: HttpClient,
    rng: Xoshiro256PlusPlus,
    next_conn: u64,
    conns: HashMap<ConnId, Conn>,
    by_peer: HashMap<PeerId, ConnId>,
    by_offer: HashMap<OfferId, ConnId>,
    fetches: HashMap<FetchId, AbortHandle>,
    locations: HashMap<SegmentRef, Location>,
    newest: HashMap<RenditionId, u64>,
    replies: HashMap<PlayerRequestId, oneshot::Sender<Delivery>>,
    published: Arc<Published>,
    tracker_task: tokio::task::JoinHandle<()>,
    /// The DataChannel writers and the closes of connections: awaited (for a while) at
    /// shutdown, so neighbours see the connections close instead of waiting for ICE to fail.
    closing: TaskTracker,
}

/// Longest wait at shutdown for the goodbye to the tracker and the connections' closes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Capacity of the node loop's input channel.
const INPUT_QUEUE: usize = 4096;

/// Segment locations kept behind the oldest one listed (the node may still fetch those).
const LOCATIONS_BEHIND: u64 = 64;

/// Starts the node loop for one stream. It runs until `shutdown`, then says goodbye to the
/// tracker and its neighbours and ends.
pub fn spawn(
    node_config: NodeConfig,
    config: LoopConfig,
    http: HttpClient,
    shutdown: CancellationToken,
) -> anyhow::Result<(NodeHandle, tokio::task::JoinHandle<()>)> {
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let seed = u64::from_le_bytes(seed);
    let start = Instant::now();
    let swarm = node_config.swarm;
    let node = Node::new(node_config, Time::ZERO, seed)?;
    let (inputs, rx) = mpsc::channel(INPUT_QUEUE);
    let (tracker_tx, tracker_rx) = mpsc::channel(256);
    let tracker_task = tokio::spawn(crate::tracker::run(
        config.trackers.clone(),
        None,
        tracker_rx,
        inputs.clone(),
    ));
    let published = Arc::new(Published::default());
    let lp = Loop {
        node,
        swarm,
        config,
        start,
        inputs: inputs.clone(),
        tracker: tracker_tx,
        http,
        rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5eed),
        next_conn: 0,
        conns: HashMap::new(),
        by_peer: HashMap::new(),
        by_offer: HashMap::new(),
        fetches: HashMap::new(),
        locations: HashMap::new(),
        newest: HashMap::new(),
        replies: HashMap::new(),
        published: published.clone(),
        tracker_task,
        closing: TaskTracker::new(),
    };
    let task = tokio::spawn(lp.run(rx, shutdown));
    Ok((
        NodeHandle {
            inputs,
            swarm,
            published,
        },
        task,
    ))
}

impl Loop {
    fn now(&self) -> Time {
        Time::from_micros(u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    fn instant(&self, t: Time) -> Instant {
        self.start + Duration::from_micros(t.as_micros())
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Input>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(64);
        loop {
            self.drain();
            let wake = self
                .node
                .poll_timeout()
                .map(|t| self.instant(t))
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                n = rx.recv_many(&mut batch, 64) => {
                    if n == 0 {
                        break;
                    }
                    for input in batch.drain(..) {
                        self.handle(input);
                    }
                }
                () = tokio::time::sleep_until(wake) => {
                    let now = self.now();
                    self.node.handle_timeout(now);
                }
                _ = tick.tick() => self.housekeeping(),
                () = shutdown.cancelled() => break,
            }
        }
        let now = self.now();
        self.node.shutdown(now);
        self.drain();
        for (_, h) in self.fetches.drain() {
            h.abort();
        }
        for (_, c) in self.conns.drain() {
            close_conn(c, &self.closing);
        }
        // Nothing reads the inputs any more: a writer reporting to the loop fails at once
        // instead of waiting for room, and goes on to close its connection.
        drop(rx);
        // Dropping the tracker queue ends the tracker task once it sent what is queued (the
        // `stopped` announce) and closed the WebSocket. Meanwhile the writers send what is
        // queued and close their connections (a neighbour then drops this node at once).
        let Self {
            tracker,
            tracker_task,
            closing,
            ..
        } = self;
        drop(tracker);
        closing.close();
        let _ = tokio::time::timeout(
            SHUTDOWN_GRACE,
            futures_util::future::join(tracker_task, closing.wait()),
        )
        .await;
    }

    fn housekeeping(&mut self) {
        *self.published.stats.lock().expect("not poisoned") = self.node.stats();
        // Offers nobody answered.
        let expired: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer.is_none() && c.created.elapsed() > self.config.offer_timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(c) = self.conns.remove(&id) {
                if let Some(o) = c.offer {
                    self.by_offer.remove(&o);
                }
                close_conn(c, &self.closing);
            }
        }
        *self.published.pending_offers.lock().expect("not poisoned") = self.by_offer.len();
    }

    fn handle(&mut self, input: Input) {
        let now = self.now();
        match input {
            Input::Tracker(TrackerEvent::Connected(_)) => self.node.handle_tracker_connected(now),
            Input::Tracker(TrackerEvent::Disconnected) => {
                self.node.handle_tracker_disconnected(now);
            }
            Input::Tracker(TrackerEvent::Message(m)) => {
                let m = *m;
                if let swarmcdn_core::tracker_proto::FromTracker::Error(e) = &m {
                    tracing::warn!(reason = %e.failure_reason, "tracker refused");
                }
                self.node.handle_tracker_msg(now, m);
            }
            Input::OffersMade {
                mut announce,
                offers,
            } => {
                let offered = u32::try_from(offers.len()).unwrap_or(u32::MAX);
                for (conn, pc, dc, sdp) in offers {
                    let offer_id = OfferId(self.rng.random());
                    self.conns.insert(
                        conn,
                        Conn {
                            pc: Some(pc),
                            dc: Some(dc),
                            peer: None,
                            offer: Some(offer_id),
                            writer: None,
                            created: Instant::now(),
                        },
                    );
                    self.by_offer.insert(offer_id, conn);
                    announce.offers.push(Offer {
                        offer_id,
                        offer: SessionDescription::offer(sdp),
                    });
                }
                announce.numwant = Some(offered);
                self.send_tracker(ToTracker::Announce(*announce));
            }
            Input::AnswerMade { conn, made } => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    // Dropped meanwhile (connect timeout).
                    if let Some((pc, _)) = made {
                        tokio::spawn(async move {
                            let _ = pc.close().await;
                        });
                    }
                    return;
                };
                match made {
                    Some((pc, sdp)) => {
                        c.pc = Some(pc);
                        let peer = c.peer.expect("answering connections know their peer");
                        let offer = c.offer.expect("answering connections know the offer");
                        let answer = Answer {
                            info_hash: self.node.config().swarm,
                            peer_id: self.node.config().peer_id,
                            to_peer_id: peer,
                            offer_id: offer,
                            answer: SessionDescription::answer(sdp),
                            ext: None,
                        };
                        self.send_tracker(ToTracker::Answer(answer));
                    }
                    None => self.conn_gone(now, conn),
                }
            }
            Input::Channel { conn, dc } => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                if c.dc.is_some() {
                    return;
                }
                c.dc = Some(dc.clone());
                if let Some(pc) = c.pc.clone() {
                    c.writer = Some(rtc::start_channel(
                        conn,
                        pc,
                        dc,
                        self.inputs.clone(),
                        low_threshold(self.node.config()),
                        self.config.rtc.corrupt_uploads,
                        &self.closing,
                    ));
                }
            }
            Input::Peer { conn, ev } => {
                let Some(peer) = self.conns.get(&conn).and_then(|c| c.peer) else {
                    return;
                };
                let closed = ev == PeerEvent::Closed;
                self.node.handle_peer_event(now, peer, ev);
                if closed {
                    self.forget_conn(conn);
                }
            }
            Input::ConnFailed { conn } => self.conn_gone(now, conn),
            Input::HttpData {
                id,
                offset,
                total,
                data,
            } => {
                if self.fetches.contains_key(&id) {
                    self.node.handle_http_data(now, id, offset, total, data);
                }
            }
            Input::HttpDone { id, result } => {
                if self.fetches.remove(&id).is_some() {
                    if let Err(e) = &result {
                        tracing::warn!(fetch = id.0, error = %e, "origin fetch failed");
                    }
                    self.node.handle_http_done(now, id, result);
                }
            }
            Input::Playlist(p) => {
                let first = p.segments.first().map(|s| s.sequence).unwrap_or(0);
                for s in &p.segments {
                    self.locations.insert(
                        SegmentRef {
                            rendition: p.rendition,
                            sequence: s.sequence,
                        },
                        s.location.clone(),
                    );
                }
                let r = p.rendition;
                let prev = self.newest.insert(r, first);
                if prev != Some(first) {
                    self.locations
                        .retain(|k, _| k.rendition != r || k.sequence + LOCATIONS_BEHIND >= first);
                }
                self.node.handle_playlist(now, p.to_core());
            }
            Input::Player(state) => self.node.handle_player(now, state),
            Input::Request { seg, reply } => {
                let id = self.node.request_segment(now, seg);
                self.replies.insert(id, reply);
            }
            Input::Stats(reply) => {
                let _ = reply.send(self.node.stats());
            }
        }
    }

    fn drain(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            self.transmit(t);
        }
        while let Some(e) = self.node.poll_event() {
            self.event(e);
        }
    }

    fn send_tracker(&mut self, msg: ToTracker) {
        if self.tracker.try_send(msg.to_json()).is_err() {
            tracing::warn!("tracker queue full or closed: message dropped");
        }
    }

    fn new_conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    fn transmit(&mut self, t: Transmit) {
        match t {
            Transmit::Announce { announce, offers } => {
                if offers == 0 {
                    self.send_tracker(ToTracker::Announce(*announce));
                    return;
                }
                let conns: Vec<ConnId> = (0..offers).map(|_| self.new_conn()).collect();
                let rtc_config = self.config.rtc.clone();
                let inputs = self.inputs.clone();
                tokio::spawn(async move {
                    let made = futures_util::future::join_all(conns.into_iter().map(|conn| {
                        let inputs = inputs.clone();
                        let rtc_config = rtc_config.clone();
                        async move {
                            match rtc::make_offer(&rtc_config, conn, inputs).await {
                                Ok((pc, dc, sdp)) => Some((conn, pc, dc, sdp)),
                                Err(e) => {
                                    tracing::warn!(error = %e, "cannot make a WebRTC offer");
                                    None
                                }
                            }
                        }
                    }))
                    .await;
                    let offers = made.into_iter().flatten().collect();
                    let _ = inputs.send(Input::OffersMade { announce, offers }).await;
                });
            }
            Transmit::AcceptOffer(o) => {
                let conn = self.new_conn();
                if let Some(old) = self.by_peer.insert(o.peer_id, conn) {
                    self.forget_conn(old);
                }
                self.conns.insert(
                    conn,
                    Conn {
                        pc: None,
                        dc: None,
                        peer: Some(o.peer_id),
                        offer: Some(o.offer_id),
                        writer: None,
                        created: Instant::now(),
                    },
                );
                let rtc_config = self.config.rtc.clone();
                let inputs = self.inputs.clone();
                tokio::spawn(async move {
                    let made =
                        match rtc::make_answer(&rtc_config, conn, inputs.clone(), o.offer.sdp())
                            .await
                        {
                            Ok(m) => Some(m),
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot answer a WebRTC offer");
                                None
                            }
                        };
                    let _ = inputs.send(Input::AnswerMade { conn, made }).await;
                });
            }
            Transmit::CompleteOffer(a) => {
                let Some(conn) = self.by_offer.remove(&a.offer_id) else {
                    // Expired: the node will see the connection time out.
                    let now = self.now();
                    self.node
                        .handle_peer_event(now, a.peer_id, PeerEvent::Closed);
                    return;
                };
                if let Some(old) = self.by_peer.insert(a.peer_id, conn) {
                    self.forget_conn(old);
                }
                let low = low_threshold(self.node.config());
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                c.peer = Some(a.peer_id);
                let (Some(pc), Some(dc)) = (c.pc.clone(), c.dc.clone()) else {
                    return;
                };
                c.writer = Some(rtc::start_channel(
                    conn,
                    pc.clone(),
                    dc,
                    self.inputs.clone(),
                    low,
                    self.config.rtc.corrupt_uploads,
                    &self.closing,
                ));
                let inputs = self.inputs.clone();
                tokio::spawn(async move {
                    if let Err(e) = rtc::apply_answer(&pc, a.answer.sdp()).await {
                        tracing::warn!(error = %e, "bad WebRTC answer");
                        let _ = inputs.send(Input::ConnFailed { conn }).await;
                    }
                });
            }
            Transmit::DropOffer(offer) => {
                if let Some(conn) = self.by_offer.remove(&offer)
                    && let Some(c) = self.conns.remove(&conn)
                {
                    close_conn(c, &self.closing);
                }
            }
            Transmit::Peer { peer, data } => {
                let Some(conn) = self.by_peer.get(&peer).copied() else {
                    return;
                };
                let full = match self.conns.get(&conn).and_then(|c| c.writer.as_ref()) {
                    Some(w) => w.try_send(data).is_err(),
                    None => false,
                };
                if full {
                    // The channel is not draining at all: give up on this neighbour.
                    tracing::warn!(peer = %peer.to_hex(), "DataChannel writer stuck: closing");
                    let now = self.now();
                    self.node.handle_peer_event(now, peer, PeerEvent::Closed);
                    self.forget_conn(conn);
                }
            }
            Transmit::ClosePeer(peer) => {
                if let Some(conn) = self.by_peer.get(&peer).copied() {
                    self.forget_conn(conn);
                }
            }
            Transmit::Http(req) => {
                let HttpTarget::Segment(seg) = req.target;
                let id = req.id;
                let Some(loc) = self.locations.get(&seg).cloned() else {
                    let now = self.now();
                    self.node.handle_http_done(
                        now,
                        id,
                        Err(FetchError::BadResponse("segment no longer listed".into())),
                    );
                    return;
                };
                let handle = match &self.config.mesh {
                    Some(mesh) => tokio::spawn(mesh_segment(
                        mesh.clone(),
                        seg.in_swarm(self.swarm),
                        loc,
                        req.range,
                        id,
                        self.inputs.clone(),
                    )),
                    None => tokio::spawn(fetch_segment(
                        self.http.clone(),
                        loc,
                        req.range,
                        id,
                        self.inputs.clone(),
                    )),
                };
                self.fetches.insert(id, handle.abort_handle());
            }
            Transmit::CancelHttp(id) => {
                if let Some(h) = self.fetches.remove(&id) {
                    h.abort();
                }
            }
        }
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::SegmentReady {
                request,
                data,
                sources,
                ..
            } => {
                if let Some(r) = self.replies.remove(&request) {
                    let _ = r.send(Ok((data, sources)));
                }
            }
            Event::SegmentFailed { request, error, .. } => {
                if let Some(r) = self.replies.remove(&request) {
                    let _ = r.send(Err(error));
                }
            }
            Event::PeerConnected { peer, seed } => {
                tracing::info!(peer = %peer.to_hex(), seed, "neighbour connected");
            }
            Event::PeerDropped { peer, reason } => {
                if reason == swarmcdn_core::node::DropReason::Integrity {
                    tracing::warn!(peer = %peer.to_hex(), "neighbour dropped and banned: it sent corrupt data");
                } else {
                    tracing::info!(peer = %peer.to_hex(), ?reason, "neighbour dropped");
                }
            }
            Event::IntegrityFailure { peer, segment } => {
                tracing::warn!(peer = %peer.to_hex(), sequence = segment.sequence, "neighbour sent a chunk that failed verification");
            }
            _ => {}
        }
    }

    /// The connection failed: tell the node if it was a neighbour.
    fn conn_gone(&mut self, now: Time, conn: ConnId) {
        if let Some(peer) = self.conns.get(&conn).and_then(|c| c.peer) {
            self.node.handle_peer_event(now, peer, PeerEvent::Closed);
        }
        self.forget_conn(conn);
    }

    fn forget_conn(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if let Some(p) = c.peer
            && self.by_peer.get(&p) == Some(&conn)
        {
            self.by_peer.remove(&p);
        }
        if let Some(o) = c.offer
            && self.by_offer.get(&o) == Some(&conn)
        {
            self.by_offer.remove(&o);
        }
        close_conn(c, &self.closing);
    }
}

fn low_threshold(c: &NodeConfig) -> u32 {
    u32::try_from(c.send_buffer_low).unwrap_or(u32::MAX)
}

/// Closes a connection: with a writer, after what is queued has left (the writer closes it);
/// otherwise at once.
fn close_conn(c: Conn, closing: &TaskTracker) {
    if c.writer.is_some() {
        drop(c.writer);
        return;
    }
    if let Some(pc) = c.pc {
        closing.spawn(async move {
            let _ = pc.close().await;
        });
    }
}

/// Fetches a segment (or `range` of it) and feeds the body to the node loop.
async fn fetch_segment(
    http: HttpClient,
    loc: Location,
    range: Option<std::ops::Range<u64>>,
    id: FetchId,
    inputs: mpsc::Sender<Input>,
) {
    let result = fetch_into(&http, &loc, range, id, &inputs).await;
    let _ = inputs.send(Input::HttpDone { id, result }).await;
}

/// Gets a segment through the seed mesh and feeds `range` of it (all of it for `None`) to the
/// node loop.
async fn mesh_segment(
    mesh: crate::mesh::Mesh,
    key: swarmcdn_core::ids::SegmentId,
    loc: Location,
    range: Option<std::ops::Range<u64>>,
    id: FetchId,
    inputs: mpsc::Sender<Input>,
) {
    let result = match mesh.segment(key, loc).await {
        Ok(held) => {
            let total = held.data.len() as u64;
            let part = match range {
                Some(r) if r.end > total || r.start >= r.end => {
                    Err(FetchError::BadResponse("range beyond the segment".into()))
                }
                Some(r) => Ok((
                    r.start,
                    held.data.slice(
                        usize::try_from(r.start).unwrap_or(0)..usize::try_from(r.end).unwrap_or(0),
                    ),
                )),
                None => Ok((0, held.data.clone())),
            };
            match part {
                Ok((offset, data)) => {
                    let input = Input::HttpData {
                        id,
                        offset,
                        total: Some(total),
                        data,
                    };
                    let _ = inputs.send(input).await;
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    let _ = inputs.send(Input::HttpDone { id, result }).await;
}

async fn fetch_into(
    http: &HttpClient,
    loc: &Location,
    range: Option<std::ops::Range<u64>>,
    id: FetchId,
    inputs: &mpsc::Sender<Input>,
) -> Result<(), FetchError> {
    // The segment's own bytes within the resource, and the part wanted.
    let base = loc.range.as_ref().map_or(0, |r| r.start);
    let seg_len = loc.range.as_ref().map(|r| r.end - r.start);
    let wanted = match (&range, seg_len) {
        (Some(r), Some(len)) if r.end > len => {
            return Err(FetchError::BadResponse("range beyond the segment".into()));
        }
        (Some(r), _) => Some(base + r.start..base + r.end),
        (None, Some(len)) => Some(base..base + len),
        (None, None) => None,
    };
    let mut body = http.get(&loc.url, wanted.clone()).await?;
    let total = seg_len.or(if loc.range.is_none() {
        body.total
    } else {
        None
    });
    // A 200 to a ranged request carries the whole resource: keep the wanted part.
    let mut pos = if body.status == 206 { body.start } else { 0 };
    let (lo, hi) = match &wanted {
        Some(w) => (w.start, w.end),
        None => (0, u64::MAX),
    };
    while let Some(piece) = body.next().await? {
        let start = pos;
        pos += piece.len() as u64;
        let from = lo.max(start);
        let to = hi.min(pos);
        if from < to {
            let data = piece.slice(
                usize::try_from(from - start).unwrap_or(0)
                    ..usize::try_from(to - start).unwrap_or(0),
            );
            let input = Input::HttpData {
                id,
                offset: from - base,
                total,
                data,
            };
            if inputs.send(input).await.is_err() {
                return Ok(());
            }
        }
        if pos >= hi {
            return Ok(());
        }
    }
    if hi != u64::MAX && pos < hi {
        return Err(FetchError::BadResponse(format!(
            "body ended at byte {pos}, expected {hi}"
        )));
    }
    Ok(())
}
