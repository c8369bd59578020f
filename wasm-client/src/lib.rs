//! SwarmCDN browser client: `core::node` driven by the browser's RTCPeerConnection /
//! RTCDataChannel, WebSocket, fetch and timers, exported to JavaScript as [`SwarmNode`].
//!
//! Single-threaded: the state lives in an `Rc<RefCell<Inner>>`; every browser callback holds a
//! `Weak` to it, feeds one input to the node, then [`pump`]s its outputs. No callback runs
//! while another holds the borrow (the browser calls back only from its event loop), and no
//! panic reaches JavaScript on bad input: network input goes through the core's decoders,
//! which return errors.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::Bytes;
use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use serde::Deserialize;
use swarmcdn_core::ids::{PeerId, RenditionAttributes, RenditionId, StreamKey, SwarmId};
use swarmcdn_core::integrity::{PublicKey, TrustedKeys};
use swarmcdn_core::master;
use swarmcdn_core::node::{
    DrainReports, Event, FetchError, FetchId, HttpTarget, IntegrityMode, MAX_SEGMENT_BYTES, Node,
    NodeConfig, NodeRole, PeerEvent, PlayerRequestId, PlayerState, Playlist, SegmentMeta, Transmit,
};
use swarmcdn_core::time::Time;
use swarmcdn_core::tracker_proto::{
    Answer, FromTracker, Offer, OfferId, SessionDescription, ToTracker,
};
use swarmcdn_core::wire::SegmentRef;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{
    AbortController, MessageEvent, RequestInit, Response, RtcConfiguration, RtcDataChannel,
    RtcDataChannelEvent, RtcDataChannelInit, RtcDataChannelType, RtcIceGatheringState,
    RtcPeerConnection, RtcPeerConnectionState, RtcSdpType, RtcSessionDescriptionInit, WebSocket,
};

/// The peer wire protocol version this client speaks (see `docs/protocol.md`).
#[wasm_bindgen(js_name = wireProtocolVersion)]
pub fn wire_protocol_version() -> u8 {
    swarmcdn_core::wire::PROTOCOL_VERSION
}

/// A rendition as the player's master playlist describes it (`EXT-X-STREAM-INF`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RenditionConfig {
    bandwidth: Option<u64>,
    codecs: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    frame_rate: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Config {
    trackers: Vec<String>,
    stream_url: String,
    #[serde(default)]
    content_id: Option<String>,
    /// The player's renditions (hls.js's levels, which leave out what the browser cannot
    /// play), in the player's order.
    renditions: Vec<RenditionConfig>,
    /// The playlist fetched from `streamUrl`, as text: the swarm id is derived from every
    /// rendition it lists, as a seed derives it (`core::master`), whatever the player kept.
    #[serde(default)]
    playlist: Option<String>,
    #[serde(default)]
    trusted_keys: Vec<String>,
    #[serde(default = "yes")]
    upload: bool,
    /// A join token for trackers that require one (docs/protocol.md §3.8).
    #[serde(default)]
    token: Option<String>,
    /// STUN/TURN servers, as `RTCIceServer` objects (`{ urls, username?, credential? }`):
    /// without them, browsers behind NAT reach only peers on their own network.
    #[serde(default)]
    ice_servers: Vec<IceServer>,
    /// How long an offer's connection waits for an answer, ms (default 60 000).
    #[serde(default)]
    offer_timeout_ms: Option<f64>,
}

/// One STUN/TURN server (`urls` is always a list here: `swarmcdn.js` makes one of a string).
#[derive(Debug, Clone, Deserialize)]
struct IceServer {
    urls: Vec<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    credential: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
struct SegmentInput {
    sn: f64,
    duration: f64,
    url: String,
    #[serde(default)]
    start: Option<f64>,
    #[serde(default)]
    end: Option<f64>,
}

struct Loc {
    url: String,
    range: Option<(u64, u64)>,
}

struct Conn {
    pc: RtcPeerConnection,
    dc: Option<RtcDataChannel>,
    peer: Option<PeerId>,
    offer: Option<OfferId>,
    /// When its offer went to the tracker (ms, `now_ms`), while no answer has come.
    offered_at: Option<f64>,
    closures: Handlers,
    /// The `Drained` reports owed to the node for the channel.
    drain: DrainReports,
}

/// An offer no answer came for is given up after this long (ms; `offerTimeoutMs`): as a
/// tracker forgets it (60 s), and so that unanswered offers do not pile up peer connections
/// until the browser refuses new ones.
const OFFER_TIMEOUT_MS: f64 = 60_000.0;

impl Conn {
    /// Closes the channel and the connection, first unhooking the handlers, which are
    /// dropped with `self` (a close event after that would call a freed closure).
    fn close(self) {
        if let Some(dc) = &self.dc {
            dc.set_onopen(None);
            dc.set_onmessage(None);
            dc.set_onclose(None);
            dc.set_onbufferedamountlow(None);
            dc.close();
        }
        self.pc.set_onconnectionstatechange(None);
        self.pc.close();
    }
}

struct Inner {
    node: Node,
    start: f64,
    swarm: SwarmId,
    peer_id: PeerId,
    renditions: Vec<RenditionId>,
    trackers: Vec<String>,
    tracker_index: usize,
    /// The tracker socket now open reached the open state.
    ws_opened: bool,
    ws: Option<WebSocket>,
    ws_closures: Handlers,
    reconnect_ms: u32,
    conns: HashMap<u64, Conn>,
    by_peer: HashMap<PeerId, u64>,
    by_offer: HashMap<OfferId, u64>,
    next_conn: u64,
    fetches: HashMap<FetchId, AbortController>,
    locations: HashMap<SegmentRef, Loc>,
    replies: HashMap<PlayerRequestId, (SegmentRef, Function, Function)>,
    timer: Option<i32>,
    timer_closure: Option<Closure<dyn FnMut()>>,
    on_event: Option<Function>,
    low_threshold: u32,
    /// Connections sent to since their buffers were last looked at (see [`pump`]).
    sent_to: Vec<u64>,
    ice_servers: Vec<IceServer>,
    offer_timeout_ms: f64,
    destroyed: bool,
}

type Shared = Rc<RefCell<Inner>>;

/// Event handlers kept alive as long as what they listen to.
type Handlers = Vec<Closure<dyn FnMut(JsValue)>>;

fn window() -> web_sys::Window {
    web_sys::window().expect("a window")
}

fn now_ms() -> f64 {
    window().performance().map_or(0.0, |p| p.now())
}

fn random_bytes<const N: usize>() -> Result<[u8; N], JsValue> {
    let mut b = [0u8; N];
    window().crypto()?.get_random_values_with_u8_array(&mut b)?;
    Ok(b)
}

fn err(msg: impl std::fmt::Display) -> JsValue {
    js_sys::Error::new(&msg.to_string()).into()
}

/// One stream's peer: give it the playlists and the player's state, ask it for segments.
#[wasm_bindgen]
pub struct SwarmNode {
    inner: Shared,
    /// Player level -> the stream's rendition index.
    level_map: Vec<Option<u32>>,
    /// The stream's renditions' media playlist URIs, as written.
    variant_uris: Vec<Option<String>>,
}

#[wasm_bindgen]
impl SwarmNode {
    /// `config`: `{ trackers: [url], streamUrl, contentId?, renditions: [{ bandwidth, codecs,
    /// width, height, frameRate }], playlist?, trustedKeys: [hex], upload?, token?, iceServers?,
    /// offerTimeoutMs? }`. Connects to the tracker
    /// chosen for the swarm.
    #[wasm_bindgen(constructor)]
    pub fn new(config: JsValue) -> Result<Self, JsValue> {
        let c: Config = serde_wasm_bindgen::from_value(config).map_err(err)?;
        let levels: Vec<RenditionId> = c
            .renditions
            .iter()
            .map(|r| {
                RenditionId::from_attributes(&RenditionAttributes {
                    bandwidth: r.bandwidth,
                    codecs: r.codecs.clone(),
                    resolution: r.width.zip(r.height),
                    frame_rate: r.frame_rate,
                    name: None,
                })
            })
            .collect();
        // The stream's renditions are the playlist's; if it does not parse (a seed could not
        // follow the stream either), the player's levels are, as they are.
        let variants = c
            .playlist
            .as_deref()
            .and_then(|t| master::variants(t.as_bytes()).ok());
        let (renditions, variant_uris): (Vec<RenditionId>, Vec<Option<String>>) = match variants {
            Some(v) => v.into_iter().map(|v| (v.id, v.uri)).unzip(),
            None => (levels.clone(), vec![None; levels.len()]),
        };
        let level_map = levels
            .iter()
            .map(|l| {
                renditions
                    .iter()
                    .position(|r| r == l)
                    .and_then(|i| u32::try_from(i).ok())
            })
            .collect();
        let key = match &c.content_id {
            Some(id) => StreamKey::ContentId(id),
            None => StreamKey::PlaylistUrl(&c.stream_url),
        };
        let swarm = SwarmId::derive(key, &renditions);
        let keys: Vec<PublicKey> = c
            .trusted_keys
            .iter()
            .map(|k| {
                k.parse()
                    .map_err(|e| err(format!("trustedKeys: {k:?}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let integrity = if keys.is_empty() {
            IntegrityMode::Unverified
        } else {
            IntegrityMode::Verify(TrustedKeys::new(keys))
        };
        let peer_id = PeerId::generate(random_bytes()?);
        let mut nc = NodeConfig::new(peer_id, swarm, NodeRole::Viewer, integrity);
        nc.upload.enabled = c.upload;
        nc.join_token = c.token;
        nc.stream = Some(swarmcdn_core::ids::strip_query(&c.stream_url).to_string());
        let low_threshold = u32::try_from(nc.send_buffer_low).unwrap_or(u32::MAX);
        let seed = u64::from_le_bytes(random_bytes()?);
        let node = Node::new(nc, Time::ZERO, seed).map_err(err)?;
        let trackers = swarmcdn_core::rendezvous::rank(&swarm, &c.trackers)
            .into_iter()
            .cloned()
            .collect();
        let inner = Rc::new(RefCell::new(Inner {
            node,
            start: now_ms(),
            swarm,
            peer_id,
            renditions,
            trackers,
            tracker_index: 0,
            ws_opened: false,
            ws: None,
            ws_closures: Vec::new(),
            reconnect_ms: 1000,
            conns: HashMap::new(),
            by_peer: HashMap::new(),
            by_offer: HashMap::new(),
            next_conn: 0,
            fetches: HashMap::new(),
            locations: HashMap::new(),
            replies: HashMap::new(),
            timer: None,
            timer_closure: None,
            on_event: None,
            low_threshold,
            sent_to: Vec::new(),
            ice_servers: c.ice_servers,
            offer_timeout_ms: c.offer_timeout_ms.unwrap_or(OFFER_TIMEOUT_MS),
            destroyed: false,
        }));
        connect_tracker(&inner);
        Ok(Self {
            inner,
            level_map,
            variant_uris,
        })
    }

    /// The index among the stream's renditions (the `index` of `setPlaylist`, `request`, …) of
    /// the player's rendition `level` (its index in `renditions`), matched by attributes;
    /// `undefined` if none matches.
    #[wasm_bindgen(js_name = renditionOf)]
    pub fn rendition_of(&self, level: u32) -> Option<u32> {
        self.level_map.get(level as usize).copied().flatten()
    }

    /// The number of the stream's renditions.
    #[wasm_bindgen(getter, js_name = renditionCount)]
    pub fn rendition_count(&self) -> u32 {
        u32::try_from(self.variant_uris.len()).unwrap_or(u32::MAX)
    }

    /// The media playlist URI of the stream's rendition `index`, as the playlist writes it
    /// (relative to the playlist's URL); `undefined` for a stream whose playlist is its only
    /// media playlist, or whose renditions are the player's.
    #[wasm_bindgen(js_name = variantUri)]
    pub fn variant_uri(&self, index: u32) -> Option<String> {
        self.variant_uris.get(index as usize).cloned().flatten()
    }

    /// The swarm id, hex.
    #[wasm_bindgen(getter)]
    pub fn swarm(&self) -> String {
        self.inner.borrow().swarm.to_hex()
    }

    /// This peer's id, hex.
    #[wasm_bindgen(getter, js_name = peerId)]
    pub fn peer_id(&self) -> String {
        self.inner.borrow().peer_id.to_hex()
    }

    /// Calls `f(event)` for each event: `{ type: "peer-connected" | "peer-closed" |
    /// "integrity-failure", peer }`.
    #[wasm_bindgen(js_name = onEvent)]
    pub fn on_event(&self, f: Function) {
        self.inner.borrow_mut().on_event = Some(f);
    }

    /// The current media playlist of rendition `index`: `live`, and `segments`:
    /// `[{ sn, duration (s), url, start?, end? (byte range, end exclusive) }]`.
    #[wasm_bindgen(js_name = setPlaylist)]
    pub fn set_playlist(&self, index: u32, live: bool, segments: JsValue) -> Result<(), JsValue> {
        let segs: Vec<SegmentInput> = serde_wasm_bindgen::from_value(segments).map_err(err)?;
        let rc = &self.inner;
        {
            let mut i = rc.borrow_mut();
            let rendition = *i
                .renditions
                .get(index as usize)
                .ok_or_else(|| err("no such rendition"))?;
            let mut metas = Vec::with_capacity(segs.len());
            for s in &segs {
                if !(s.sn >= 0.0 && s.duration.is_finite() && s.duration >= 0.0) {
                    return Err(err("bad segment"));
                }
                let seg = SegmentRef {
                    rendition,
                    sequence: s.sn as u64,
                };
                let range = match (s.start, s.end) {
                    (Some(a), Some(b)) if b > a && a >= 0.0 => Some((a as u64, b as u64)),
                    _ => None,
                };
                i.locations.insert(
                    seg,
                    Loc {
                        url: s.url.clone(),
                        range,
                    },
                );
                metas.push(SegmentMeta {
                    sequence: s.sn as u64,
                    duration: Duration::from_secs_f64(s.duration.min(3600.0)),
                    partial: false,
                });
            }
            if let Some(first) = metas.first().map(|m| m.sequence) {
                i.locations
                    .retain(|k, _| k.rendition != rendition || k.sequence + 64 >= first);
            }
            let now = now_of(&i);
            i.node.handle_playlist(
                now,
                Playlist {
                    rendition,
                    live,
                    segments: metas,
                },
            );
        }
        pump(rc);
        Ok(())
    }

    /// The player's state: the rendition playing, the sequence number under the playhead and
    /// the seconds buffered ahead of it.
    #[wasm_bindgen(js_name = setPlayer)]
    pub fn set_player(&self, index: u32, playhead: f64, buffer_ahead: f64) -> Result<(), JsValue> {
        {
            let mut i = self.inner.borrow_mut();
            let rendition = *i
                .renditions
                .get(index as usize)
                .ok_or_else(|| err("no such rendition"))?;
            let now = now_of(&i);
            i.node.handle_player(
                now,
                PlayerState {
                    rendition,
                    playhead: playhead.max(0.0) as u64,
                    buffer_ahead: Duration::from_secs_f64(buffer_ahead.clamp(0.0, 3600.0)),
                },
            );
        }
        pump(&self.inner);
        Ok(())
    }

    /// A segment: resolves with `{ data: Uint8Array, http, p2p }` (bytes from each source), or
    /// rejects when the origin fails.
    pub fn request(&self, index: u32, sn: f64) -> Promise {
        let rc = self.inner.clone();
        Promise::new(&mut |resolve, reject| {
            let mut i = rc.borrow_mut();
            let Some(&rendition) = i.renditions.get(index as usize) else {
                let _ = reject.call1(&JsValue::NULL, &err("no such rendition"));
                return;
            };
            let now = now_of(&i);
            let seg = SegmentRef {
                rendition,
                sequence: sn.max(0.0) as u64,
            };
            let id = i.node.request_segment(now, seg);
            i.replies.insert(id, (seg, resolve, reject));
            drop(i);
            pump(&rc);
        })
    }

    /// The player no longer wants a segment (hls.js aborted its load): its pending requests
    /// reject with "aborted", and the node stops fetching it unless it is still prefetching
    /// it for itself.
    pub fn cancel(&self, index: u32, sn: f64) {
        let mut i = self.inner.borrow_mut();
        let Some(&rendition) = i.renditions.get(index as usize) else {
            return;
        };
        let seg = SegmentRef {
            rendition,
            sequence: sn.max(0.0) as u64,
        };
        let ids: Vec<PlayerRequestId> = i
            .replies
            .iter()
            .filter(|(_, (s, _, _))| *s == seg)
            .map(|(id, _)| *id)
            .collect();
        let now = now_of(&i);
        let mut rejects = Vec::with_capacity(ids.len());
        for id in ids {
            i.node.cancel_request(now, id);
            if let Some((_, _, reject)) = i.replies.remove(&id) {
                rejects.push(reject);
            }
        }
        drop(i);
        // Outside the borrow: a rejection's handlers may call back into the node.
        for reject in rejects {
            let _ = reject.call1(&JsValue::NULL, &err("aborted"));
        }
        pump(&self.inner);
    }

    /// Counters: `{ httpBytes, p2pBytesDown, p2pBytesUp, peers, integrityFailures,
    /// segmentsDelivered, cacheBytes, httpRequests, deadlineFallbacks, abortedP2pBytes,
    /// uplinkBytesPerSec, uploadSlots, originBytesPerSec, originTtfbMs }` (`uplinkBytesPerSec`
    /// and `originBytesPerSec` are 0 until measured).
    pub fn stats(&self) -> JsValue {
        let i = self.inner.borrow();
        let s = i.node.stats();
        let o = Object::new();
        for (k, v) in [
            ("rtcConnections", i.conns.len() as f64),
            ("offersWaiting", i.by_offer.len() as f64),
            ("httpBytes", s.http_bytes as f64),
            ("p2pBytesDown", s.p2p_bytes_down as f64),
            ("p2pBytesUp", s.p2p_bytes_up as f64),
            ("peers", s.peers as f64),
            ("integrityFailures", s.integrity_failures as f64),
            ("segmentsDelivered", s.segments_delivered as f64),
            ("cacheBytes", s.cache_bytes as f64),
            ("httpRequests", s.http_requests as f64),
            ("deadlineFallbacks", s.deadline_fallbacks as f64),
            ("abortedP2pBytes", s.aborted_p2p_bytes as f64),
            ("uplinkBytesPerSec", s.uplink_rate.unwrap_or(0) as f64),
            ("uploadSlots", s.upload_slots as f64),
            ("originBytesPerSec", s.origin_rate.unwrap_or(0) as f64),
            ("originTtfbMs", s.origin_ttfb.as_millis() as f64),
        ] {
            let _ = Reflect::set(&o, &k.into(), &v.into());
        }
        o.into()
    }

    /// Leaves: tells the tracker and the neighbours, closes everything.
    pub fn destroy(&self) {
        {
            let mut i = self.inner.borrow_mut();
            if i.destroyed {
                return;
            }
            let now = now_of(&i);
            i.node.shutdown(now);
        }
        pump(&self.inner);
        let mut i = self.inner.borrow_mut();
        i.destroyed = true;
        for (_, c) in i.conns.drain() {
            c.close();
        }
        for (_, a) in i.fetches.drain() {
            a.abort();
        }
        if let Some(t) = i.timer.take() {
            window().clear_timeout_with_handle(t);
        }
        if let Some(ws) = i.ws.take() {
            unhook(&ws);
            let _ = ws.close();
        }
        for (_, (_, _, reject)) in i.replies.drain() {
            let _ = reject.call1(&JsValue::NULL, &err("destroyed"));
        }
    }
}

fn now_of(i: &Inner) -> Time {
    Time::from_micros(((now_ms() - i.start).max(0.0) * 1000.0) as u64)
}

/// Runs `f` with the state and the current time, then pumps; does nothing once destroyed or
/// dropped.
fn input(weak: &Weak<RefCell<Inner>>, f: impl FnOnce(&mut Inner, Time)) {
    let Some(rc) = weak.upgrade() else { return };
    {
        let mut i = rc.borrow_mut();
        if i.destroyed {
            return;
        }
        let now = now_of(&i);
        f(&mut i, now);
        forget_stale_offers(&mut i);
    }
    pump(&rc);
}

/// Performs what the node asks, delivers its events, and re-arms the timer.
fn pump(rc: &Shared) {
    loop {
        loop {
            let t = rc.borrow_mut().node.poll_transmit();
            match t {
                Some(t) => transmit(rc, t),
                None => break,
            }
        }
        // The browser counts what was queued at once: the channels sent to that are already
        // at or under the low mark say so now (no `bufferedamountlow` will fire), which may
        // let the node send more.
        let mut i = rc.borrow_mut();
        let sent_to = std::mem::take(&mut i.sent_to);
        let mut reported = false;
        for conn in sent_to {
            reported |= check_drain(&mut i, conn);
        }
        if !reported {
            break;
        }
    }
    loop {
        let e = rc.borrow_mut().node.poll_event();
        match e {
            Some(e) => event(rc, e),
            None => break,
        }
    }
    arm_timer(rc);
}

fn arm_timer(rc: &Shared) {
    let mut i = rc.borrow_mut();
    if i.destroyed {
        return;
    }
    if let Some(t) = i.timer.take() {
        window().clear_timeout_with_handle(t);
    }
    let Some(at) = i.node.poll_timeout() else {
        return;
    };
    let now = now_of(&i);
    let ms = at.saturating_since(now).as_millis().min(60_000) as i32;
    let weak = Rc::downgrade(rc);
    let cb = Closure::<dyn FnMut()>::new(move || {
        input(&weak, |i, now| {
            i.timer = None;
            i.node.handle_timeout(now);
        });
    });
    i.timer = window()
        .set_timeout_with_callback_and_timeout_and_arguments_0(cb.as_ref().unchecked_ref(), ms)
        .ok();
    i.timer_closure = Some(cb);
}

fn emit(rc: &Shared, kind: &str, peer: &PeerId) {
    let f = rc.borrow().on_event.clone();
    if let Some(f) = f {
        let o = Object::new();
        let _ = Reflect::set(&o, &"type".into(), &kind.into());
        let _ = Reflect::set(&o, &"peer".into(), &peer.to_hex().into());
        let _ = f.call1(&JsValue::NULL, &o);
    }
}

fn event(rc: &Shared, e: Event) {
    match e {
        Event::SegmentReady {
            request,
            data,
            sources,
            ..
        } => {
            let reply = rc.borrow_mut().replies.remove(&request);
            if let Some((_, resolve, _)) = reply {
                let o = Object::new();
                let _ = Reflect::set(&o, &"data".into(), &Uint8Array::from(&data[..]).into());
                let _ = Reflect::set(&o, &"http".into(), &(sources.http as f64).into());
                let _ = Reflect::set(&o, &"p2p".into(), &(sources.p2p as f64).into());
                let _ = resolve.call1(&JsValue::NULL, &o);
            }
        }
        Event::SegmentFailed { request, error, .. } => {
            let reply = rc.borrow_mut().replies.remove(&request);
            if let Some((_, _, reject)) = reply {
                // The origin's status goes to hls.js, whose retry rules read it (a 5xx is
                // retried, a 404 is not).
                let e = err(&error);
                if let FetchError::Status(status) = error {
                    let _ = Reflect::set(&e, &"status".into(), &f64::from(status).into());
                }
                let _ = reject.call1(&JsValue::NULL, &e);
            }
        }
        Event::PeerConnected { peer, .. } => emit(rc, "peer-connected", &peer),
        Event::PeerDropped { peer, .. } => emit(rc, "peer-closed", &peer),
        Event::IntegrityFailure { peer, .. } => emit(rc, "integrity-failure", &peer),
        _ => {}
    }
}

fn send_tracker(i: &Inner, msg: &ToTracker) {
    if let Some(ws) = &i.ws
        && ws.ready_state() == WebSocket::OPEN
    {
        let _ = ws.send_with_str(&msg.to_json());
    }
}

fn connect_tracker(rc: &Shared) {
    let mut i = rc.borrow_mut();
    if i.destroyed || i.trackers.is_empty() {
        return;
    }
    let url = i.trackers[i.tracker_index % i.trackers.len()].clone();
    i.ws_opened = false;
    let Ok(ws) = WebSocket::new(&url) else {
        // A URL the browser refuses: the next one, after the usual delay.
        i.tracker_index += 1;
        let delay = i.reconnect_ms;
        i.reconnect_ms = (delay * 2).min(30_000);
        drop(i);
        reconnect_after(rc, delay);
        return;
    };
    let weak = Rc::downgrade(rc);
    let on_open = Closure::<dyn FnMut(JsValue)>::new(move |_| {
        input(&weak, |i, now| {
            i.reconnect_ms = 1000;
            i.ws_opened = true;
            i.node.handle_tracker_connected(now);
        });
    });
    let weak = Rc::downgrade(rc);
    let on_message = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
        let Some(text) = e
            .dyn_ref::<MessageEvent>()
            .and_then(|m| m.data().as_string())
        else {
            return;
        };
        // A bad message is ignored (the tracker is not trusted to be well-formed).
        if let Ok(msg) = FromTracker::from_json(text.as_bytes()) {
            input(&weak, |i, now| i.node.handle_tracker_msg(now, msg));
        }
    });
    let weak = Rc::downgrade(rc);
    let on_close = Closure::<dyn FnMut(JsValue)>::new(move |_| {
        let Some(rc) = weak.upgrade() else { return };
        let delay = {
            let mut i = rc.borrow_mut();
            if i.destroyed {
                return;
            }
            let now = now_of(&i);
            i.node.handle_tracker_disconnected(now);
            i.ws = None;
            // A tracker that never answered: the next in rank. One that did and dropped us:
            // the swarm's own (first-ranked) tracker again, where the other peers are, and the
            // others only if it stays down.
            if i.ws_opened {
                i.tracker_index = 0;
            } else {
                i.tracker_index += 1;
            }
            let d = i.reconnect_ms;
            i.reconnect_ms = (d * 2).min(30_000);
            d
        };
        reconnect_after(&rc, delay);
    });
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    i.ws_closures = vec![on_open, on_message, on_close];
    i.ws = Some(ws);
}

/// The `RTCConfiguration` of every peer connection: the configured STUN/TURN servers.
/// Connects to a tracker again in `delay` ms.
fn reconnect_after(rc: &Shared, delay: u32) {
    let weak = Rc::downgrade(rc);
    let again = Closure::once_into_js(move || {
        if let Some(rc) = weak.upgrade() {
            connect_tracker(&rc);
        }
    });
    let _ = window()
        .set_timeout_with_callback_and_timeout_and_arguments_0(again.unchecked_ref(), delay as i32);
}

/// Unhooks a tracker socket's handlers (they are dropped with the socket's closures; its
/// close event comes later).
fn unhook(ws: &WebSocket) {
    ws.set_onopen(None);
    ws.set_onmessage(None);
    ws.set_onclose(None);
}

fn rtc_config(servers: &[IceServer]) -> RtcConfiguration {
    let c = RtcConfiguration::new();
    if !servers.is_empty() {
        let list = Array::new();
        for s in servers {
            let o = Object::new();
            let urls: Array = s.urls.iter().map(JsValue::from).collect();
            let _ = Reflect::set(&o, &"urls".into(), &urls);
            if let Some(u) = &s.username {
                let _ = Reflect::set(&o, &"username".into(), &u.into());
            }
            if let Some(p) = &s.credential {
                let _ = Reflect::set(&o, &"credential".into(), &p.into());
            }
            list.push(&o);
        }
        c.set_ice_servers(&list);
    }
    c
}

/// Resolves once ICE gathering is complete (non-trickle), or 5 s after `since` (`now_ms`; by
/// the clock, not by polls: a background tab's timers run late).
async fn gathered(pc: &RtcPeerConnection, since: f64) {
    loop {
        if pc.ice_gathering_state() == RtcIceGatheringState::Complete
            || now_ms() - since >= GATHER_CAP_MS
        {
            return;
        }
        let p = Promise::new(&mut |resolve, _| {
            let _ = window().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 50);
        });
        let _ = JsFuture::from(p).await;
    }
}

/// The longest wait for ICE gathering (ms).
const GATHER_CAP_MS: f64 = 5000.0;

fn local_sdp(pc: &RtcPeerConnection) -> Option<String> {
    pc.local_description().map(|d| d.sdp())
}

/// Creates an offer and sets it as the local description, which starts ICE gathering.
async fn start_offer(pc: &RtcPeerConnection) -> Result<(), JsValue> {
    let offer = JsFuture::from(pc.create_offer()).await?;
    let sdp = Reflect::get(&offer, &"sdp".into())?
        .as_string()
        .ok_or_else(|| err("offer without SDP"))?;
    let init = RtcSessionDescriptionInit::new(RtcSdpType::Offer);
    init.set_sdp(&sdp);
    JsFuture::from(pc.set_local_description(&init)).await?;
    Ok(())
}

async fn make_answer(pc: &RtcPeerConnection, offer: String) -> Result<String, JsValue> {
    let remote = RtcSessionDescriptionInit::new(RtcSdpType::Offer);
    remote.set_sdp(&offer);
    JsFuture::from(pc.set_remote_description(&remote)).await?;
    let answer = JsFuture::from(pc.create_answer()).await?;
    let sdp = Reflect::get(&answer, &"sdp".into())?
        .as_string()
        .ok_or_else(|| err("answer without SDP"))?;
    let init = RtcSessionDescriptionInit::new(RtcSdpType::Answer);
    init.set_sdp(&sdp);
    JsFuture::from(pc.set_local_description(&init)).await?;
    gathered(pc, now_ms()).await;
    local_sdp(pc).ok_or_else(|| err("no local description"))
}

/// A peer connection whose state changes go to the node under `conn`.
fn new_pc(rc: &Shared, conn: u64) -> Result<(RtcPeerConnection, Handlers), JsValue> {
    let pc = RtcPeerConnection::new_with_configuration(&rtc_config(&rc.borrow().ice_servers))?;
    let weak = Rc::downgrade(rc);
    let pc2 = pc.clone();
    let on_state = Closure::<dyn FnMut(JsValue)>::new(move |_| {
        if matches!(
            pc2.connection_state(),
            RtcPeerConnectionState::Failed | RtcPeerConnectionState::Closed
        ) {
            input(&weak, |i, now| conn_gone(i, now, conn));
        }
    });
    pc.set_onconnectionstatechange(Some(on_state.as_ref().unchecked_ref()));
    Ok((pc, vec![on_state]))
}

/// Wires a DataChannel's events to the node.
fn attach_channel(rc: &Shared, conn: u64, dc: &RtcDataChannel) -> Handlers {
    dc.set_binary_type(RtcDataChannelType::Arraybuffer);
    let low = rc.borrow().low_threshold;
    dc.set_buffered_amount_low_threshold(low);
    let peer_event = move |weak: &Weak<RefCell<Inner>>, ev: PeerEvent| {
        input(weak, |i, now| {
            if let Some(peer) = i.conns.get(&conn).and_then(|c| c.peer) {
                let closed = ev == PeerEvent::Closed;
                i.node.handle_peer_event(now, peer, ev);
                if closed {
                    forget(i, conn);
                }
            }
        });
    };
    let w = Rc::downgrade(rc);
    let on_open = Closure::<dyn FnMut(JsValue)>::new(move |_| peer_event(&w, PeerEvent::Opened));
    let w = Rc::downgrade(rc);
    let on_message = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
        let data = e
            .dyn_ref::<MessageEvent>()
            .map(|m| m.data())
            .filter(|d| d.is_instance_of::<js_sys::ArrayBuffer>())
            .map(|d| Bytes::from(Uint8Array::new(&d).to_vec()))
            // Text is not the wire protocol: an empty message, which the core rejects.
            .unwrap_or_default();
        peer_event(&w, PeerEvent::Message(data));
    });
    let w = Rc::downgrade(rc);
    let on_close = Closure::<dyn FnMut(JsValue)>::new(move |_| peer_event(&w, PeerEvent::Closed));
    let w = Rc::downgrade(rc);
    let on_low = Closure::<dyn FnMut(JsValue)>::new(move |_| {
        input(&w, |i, _| {
            check_drain(i, conn);
        });
    });
    dc.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    dc.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    dc.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    dc.set_onbufferedamountlow(Some(on_low.as_ref().unchecked_ref()));
    vec![on_open, on_message, on_close, on_low]
}

/// Looks at a channel's buffered amount and makes the `Drained` report owed, if any (see
/// [`DrainReports`]); sets the threshold so that `bufferedamountlow` fires at the next one.
/// Returns whether it reported.
fn check_drain(i: &mut Inner, conn: u64) -> bool {
    let low = u64::from(i.low_threshold);
    let Some(c) = i.conns.get_mut(&conn) else {
        return false;
    };
    let (Some(dc), Some(peer)) = (&c.dc, c.peer) else {
        return false;
    };
    let report = c.drain.check(u64::from(dc.buffered_amount()), low);
    let threshold = u32::try_from(c.drain.threshold(low)).unwrap_or(u32::MAX);
    if dc.buffered_amount_low_threshold() != threshold {
        dc.set_buffered_amount_low_threshold(threshold);
    }
    match report {
        Some(ev) => {
            let now = now_of(i);
            i.node.handle_peer_event(now, peer, ev);
            true
        }
        None => false,
    }
}

fn conn_gone(i: &mut Inner, now: Time, conn: u64) {
    if let Some(peer) = i.conns.get(&conn).and_then(|c| c.peer) {
        i.node.handle_peer_event(now, peer, PeerEvent::Closed);
    }
    forget(i, conn);
}

/// Closes the connections of offers that got no answer in time (`Inner::offer_timeout_ms`).
fn forget_stale_offers(i: &mut Inner) {
    let now = now_ms();
    let timeout = i.offer_timeout_ms;
    let stale: Vec<u64> = i
        .conns
        .iter()
        .filter(|(_, c)| c.offered_at.is_some_and(|t| now - t > timeout))
        .map(|(id, _)| *id)
        .collect();
    for conn in stale {
        forget(i, conn);
    }
}

fn forget(i: &mut Inner, conn: u64) {
    let Some(c) = i.conns.remove(&conn) else {
        return;
    };
    if let Some(p) = c.peer
        && i.by_peer.get(&p) == Some(&conn)
    {
        i.by_peer.remove(&p);
    }
    if let Some(o) = c.offer
        && i.by_offer.get(&o) == Some(&conn)
    {
        i.by_offer.remove(&o);
    }
    c.close();
}

fn transmit(rc: &Shared, t: Transmit) {
    match t {
        Transmit::Announce { announce, offers } => {
            if offers == 0 {
                send_tracker(&rc.borrow(), &ToTracker::Announce(*announce));
                return;
            }
            let weak = Rc::downgrade(rc);
            let rc2 = rc.clone();
            spawn_local(async move {
                // Every offer's ICE gathering starts before any is waited for: they gather
                // at once (with an unreachable STUN server, each waits the 5 s cap).
                let mut started = Vec::new();
                for _ in 0..offers {
                    let conn = {
                        let mut i = rc2.borrow_mut();
                        if i.destroyed {
                            break;
                        }
                        i.next_conn += 1;
                        i.next_conn
                    };
                    let Ok((pc, closures)) = new_pc(&rc2, conn) else {
                        continue;
                    };
                    let init = RtcDataChannelInit::new();
                    init.set_ordered(true);
                    let dc = pc.create_data_channel_with_data_channel_dict("swarmcdn", &init);
                    match start_offer(&pc).await {
                        Ok(()) => started.push((conn, pc, dc, closures)),
                        Err(_) => pc.close(),
                    }
                }
                let since = now_ms();
                let mut made = Vec::new();
                for (conn, pc, dc, mut closures) in started {
                    gathered(&pc, since).await;
                    match local_sdp(&pc) {
                        Some(sdp) => {
                            closures.extend(attach_channel(&rc2, conn, &dc));
                            made.push((conn, pc, dc, closures, sdp));
                        }
                        None => pc.close(),
                    }
                }
                // Destroyed meanwhile: these connections are nobody's.
                if rc2.borrow().destroyed {
                    for (_, pc, dc, closures, _) in made {
                        Conn {
                            pc,
                            dc: Some(dc),
                            peer: None,
                            offer: None,
                            offered_at: None,
                            closures,
                            drain: DrainReports::default(),
                        }
                        .close();
                    }
                    return;
                }
                drop(rc2);
                input(&weak, move |i, _| {
                    let mut announce = announce;
                    let mut offered = 0u32;
                    for (conn, pc, dc, closures, sdp) in made {
                        let Ok(id) = random_bytes::<20>() else {
                            continue;
                        };
                        let offer_id = OfferId(id);
                        i.conns.insert(
                            conn,
                            Conn {
                                pc,
                                dc: Some(dc),
                                peer: None,
                                offer: Some(offer_id),
                                offered_at: Some(now_ms()),
                                closures,
                                drain: DrainReports::default(),
                            },
                        );
                        i.by_offer.insert(offer_id, conn);
                        announce.offers.push(Offer {
                            offer_id,
                            offer: SessionDescription::offer(sdp),
                        });
                        offered += 1;
                    }
                    announce.numwant = Some(offered);
                    send_tracker(i, &ToTracker::Announce(*announce));
                });
            });
        }
        Transmit::AcceptOffer(o) => {
            let conn = {
                let mut i = rc.borrow_mut();
                i.next_conn += 1;
                i.next_conn
            };
            let Ok((pc, mut closures)) = new_pc(rc, conn) else {
                return;
            };
            let weak = Rc::downgrade(rc);
            let on_dc = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
                let Some(dc) = e.dyn_ref::<RtcDataChannelEvent>().map(|e| e.channel()) else {
                    return;
                };
                let Some(rc) = weak.upgrade() else { return };
                let closures = attach_channel(&rc, conn, &dc);
                if let Some(c) = rc.borrow_mut().conns.get_mut(&conn) {
                    c.dc = Some(dc);
                    c.closures.extend(closures);
                }
            });
            pc.set_ondatachannel(Some(on_dc.as_ref().unchecked_ref()));
            closures.push(on_dc);
            {
                let mut i = rc.borrow_mut();
                if let Some(old) = i.by_peer.insert(o.peer_id, conn) {
                    forget(&mut i, old);
                }
                i.conns.insert(
                    conn,
                    Conn {
                        pc: pc.clone(),
                        dc: None,
                        peer: Some(o.peer_id),
                        offer: Some(o.offer_id),
                        offered_at: None,
                        closures,
                        drain: DrainReports::default(),
                    },
                );
            }
            let weak = Rc::downgrade(rc);
            spawn_local(async move {
                let answer = make_answer(&pc, o.offer.sdp()).await;
                input(&weak, move |i, now| match answer {
                    Ok(sdp) if i.conns.contains_key(&conn) => {
                        let a = Answer {
                            info_hash: i.swarm,
                            peer_id: i.peer_id,
                            to_peer_id: o.peer_id,
                            offer_id: o.offer_id,
                            answer: SessionDescription::answer(sdp),
                            ext: None,
                        };
                        send_tracker(i, &ToTracker::Answer(a));
                    }
                    _ => conn_gone(i, now, conn),
                });
            });
        }
        Transmit::CompleteOffer(a) => {
            let mut i = rc.borrow_mut();
            let Some(conn) = i.by_offer.remove(&a.offer_id) else {
                let now = now_of(&i);
                i.node.handle_peer_event(now, a.peer_id, PeerEvent::Closed);
                return;
            };
            if let Some(old) = i.by_peer.insert(a.peer_id, conn) {
                forget(&mut i, old);
            }
            let Some(c) = i.conns.get_mut(&conn) else {
                return;
            };
            c.peer = Some(a.peer_id);
            c.offered_at = None;
            let pc = c.pc.clone();
            drop(i);
            let weak = Rc::downgrade(rc);
            spawn_local(async move {
                let init = RtcSessionDescriptionInit::new(RtcSdpType::Answer);
                init.set_sdp(&a.answer.sdp());
                if JsFuture::from(pc.set_remote_description(&init))
                    .await
                    .is_err()
                {
                    input(&weak, |i, now| conn_gone(i, now, conn));
                }
            });
        }
        Transmit::DropOffer(offer) => {
            let mut i = rc.borrow_mut();
            if let Some(conn) = i.by_offer.get(&offer).copied() {
                forget(&mut i, conn);
            }
        }
        Transmit::Peer { peer, data } => {
            let mut i = rc.borrow_mut();
            let Some(dc) = i
                .by_peer
                .get(&peer)
                .and_then(|c| i.conns.get(c))
                .and_then(|c| c.dc.clone())
            else {
                return;
            };
            if dc.send_with_u8_array(&data).is_err() {
                let now = now_of(&i);
                i.node.handle_peer_event(now, peer, PeerEvent::Closed);
                if let Some(conn) = i.by_peer.get(&peer).copied() {
                    forget(&mut i, conn);
                }
                return;
            }
            // Its buffer is looked at once the node has nothing more to send (`pump`): a
            // report now would drop from the node's count what it queued and has not handed
            // over yet.
            if let Some(&conn) = i.by_peer.get(&peer) {
                if let Some(c) = i.conns.get_mut(&conn) {
                    c.drain.sent();
                }
                if !i.sent_to.contains(&conn) {
                    i.sent_to.push(conn);
                }
            }
        }
        Transmit::ClosePeer(peer) => {
            let mut i = rc.borrow_mut();
            if let Some(conn) = i.by_peer.get(&peer).copied() {
                forget(&mut i, conn);
            }
        }
        Transmit::Http(req) => {
            let HttpTarget::Segment(seg) = req.target;
            let id = req.id;
            let loc = {
                let i = rc.borrow();
                i.locations.get(&seg).map(|l| (l.url.clone(), l.range))
            };
            let Some((url, base)) = loc else {
                let mut i = rc.borrow_mut();
                let now = now_of(&i);
                i.node.handle_http_done(
                    now,
                    id,
                    Err(FetchError::BadResponse("segment no longer listed".into())),
                );
                return;
            };
            let Ok(abort) = AbortController::new() else {
                return;
            };
            rc.borrow_mut().fetches.insert(id, abort.clone());
            let weak = Rc::downgrade(rc);
            spawn_local(async move {
                // The body goes to the node as it comes: its chunks can be served to
                // neighbours before the last byte is in, and the node measures the origin
                // from the first byte.
                let mut deliver = |offset, total, data| {
                    input(&weak, |i, now| {
                        if i.fetches.contains_key(&id) {
                            i.node.handle_http_data(now, id, offset, total, data);
                        }
                    });
                };
                let result = fetch(&url, base, req.range, &abort, &mut deliver).await;
                input(&weak, move |i, now| {
                    if i.fetches.remove(&id).is_some() {
                        i.node.handle_http_done(now, id, result);
                    }
                });
            });
        }
        Transmit::CancelHttp(id) => {
            if let Some(a) = rc.borrow_mut().fetches.remove(&id) {
                a.abort();
            }
        }
    }
}

/// How long an origin request may wait for its response head, and for each piece of its body
/// (ms), as the seed node's default timeouts.
const HTTP_TIMEOUT_MS: i32 = 10_000;

/// `promise`'s outcome, or `None` if it has not settled after `ms`.
async fn within(promise: Promise, ms: i32) -> Option<Result<JsValue, JsValue>> {
    let expired = Object::new();
    let mut handle = None;
    let timer = {
        let expired = expired.clone();
        Promise::new(&mut |resolve, _| {
            handle = window()
                .set_timeout_with_callback_and_timeout_and_arguments_1(&resolve, ms, &expired)
                .ok();
        })
    };
    let race = Promise::race(&Array::of2(&promise, &timer));
    let outcome = JsFuture::from(race).await;
    if let Some(h) = handle {
        window().clear_timeout_with_handle(h);
    }
    match outcome {
        Ok(v) if Object::is(&v, &expired) => None,
        other => Some(other),
    }
}

/// Aborts its request when dropped, unless disarmed: every way out of [`fetch`] but success
/// stops the download.
struct AbortOnDrop<'a>(Option<&'a AbortController>);

impl Drop for AbortOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.0 {
            a.abort();
        }
    }
}

/// Body bytes handed to the node at once, at least (but for the first and the last): pieces
/// of a few kilobytes from the browser's stream are gathered, and the node schedules once per
/// batch.
const DELIVER_BYTES: usize = 32 * 1024;

/// Fetches a segment (or `range` of it, relative to the segment, within the playlist's byte
/// range `base`), handing the body to `deliver` as it arrives: the offset of the bytes within
/// the segment, the segment's length if known, and the bytes. The first bytes go at once (the
/// node times the first byte), the rest in batches of [`DELIVER_BYTES`].
async fn fetch(
    url: &str,
    base: Option<(u64, u64)>,
    range: Option<std::ops::Range<u64>>,
    abort: &AbortController,
    deliver: &mut dyn FnMut(u64, Option<u64>, Bytes),
) -> Result<(), FetchError> {
    let net = |e: JsValue| FetchError::Network(format!("{e:?}"));
    let start = base.map_or(0, |b| b.0);
    let wanted = match (&range, base) {
        (Some(r), _) => Some((start + r.start, start + r.end)),
        (None, Some(b)) => Some(b),
        (None, None) => None,
    };
    let init = RequestInit::new();
    init.set_signal(Some(&abort.signal()));
    let headers = web_sys::Headers::new().map_err(net)?;
    if let Some((a, b)) = wanted {
        headers
            .set("Range", &format!("bytes={a}-{}", b.saturating_sub(1)))
            .map_err(net)?;
    }
    init.set_headers(&headers);
    // A stalled origin must not hold a segment until the player gives up: the response head
    // and each piece of the body have `HTTP_TIMEOUT_MS` each, as in the seed node.
    let timed_out = || {
        abort.abort();
        FetchError::Network(format!("no response for {} s", HTTP_TIMEOUT_MS / 1000))
    };
    let resp: Response = within(
        window().fetch_with_str_and_init(url, &init),
        HTTP_TIMEOUT_MS,
    )
    .await
    .ok_or_else(timed_out)?
    .map_err(net)?
    .dyn_into()
    .map_err(net)?;
    // Every way out but success stops the download (an error status, a bad body, a timeout).
    let mut guard = AbortOnDrop(Some(abort));
    let status = resp.status();
    if status != 200 && status != 206 {
        return Err(FetchError::Status(status));
    }
    let header = |name: &str| resp.headers().get(name).ok().flatten();
    // The bytes of the body to keep, and where to stop reading: a 200 to a ranged request
    // carries the whole resource, of which only the range is kept (and read no further); a
    // 206 is read to its end, but no more than the range's length of it is kept.
    let (keep_from, keep_to, stop_at) = match (status, wanted) {
        (200, Some((a, b))) => (a, b, b),
        (_, Some((a, b))) => (0, b - a, u64::MAX),
        _ => (0, u64::MAX, u64::MAX),
    };
    if status == 206
        && let Some((a, _)) = wanted
    {
        let first = header("content-range").and_then(|v| {
            let v = v.strip_prefix("bytes ")?;
            v.split('-').next()?.trim().parse::<u64>().ok()
        });
        if first != Some(a) {
            return Err(FetchError::BadResponse(format!(
                "206 starts at {first:?}, not {a}"
            )));
        }
    }
    // The segment's length when the playlist gives its byte range; else the node learns it
    // at the end (not from Content-Length: the browser decodes a compressed body, and hides
    // Content-Encoding from a cross-origin page that is not granted it).
    let total = base.map(|b| b.1 - b.0);
    let mut offset = range.as_ref().map_or(0, |r| r.start); // of `batch`, in the segment
    let mut kept = 0u64;
    let mut batch: Vec<u8> = Vec::new();
    let mut delivered_any = false;
    let mut finished = false; // the body was read to its end
    let mut at = 0u64; // position in the response body
    if let Some(stream) = resp.body() {
        let reader: web_sys::ReadableStreamDefaultReader = stream
            .get_reader()
            .dyn_into()
            .map_err(|o: Object| net(o.into()))?;
        while at < stop_at {
            let piece = within(reader.read(), HTTP_TIMEOUT_MS)
                .await
                .ok_or_else(timed_out)?
                .map_err(net)?;
            if Reflect::get(&piece, &"done".into()).is_ok_and(|d| d.is_truthy()) {
                finished = true;
                break;
            }
            let value: Uint8Array = Reflect::get(&piece, &"value".into())
                .map_err(net)?
                .dyn_into()
                .map_err(net)?;
            let len = u64::from(value.length());
            let (from, to) = (keep_from.max(at), keep_to.min(at + len));
            if from < to {
                kept += to - from;
                if kept > MAX_SEGMENT_BYTES {
                    return Err(FetchError::BadResponse(format!(
                        "body longer than {MAX_SEGMENT_BYTES} bytes"
                    )));
                }
                let piece = value.subarray((from - at) as u32, (to - at) as u32);
                let n = batch.len();
                batch.resize(n + (to - from) as usize, 0);
                piece.copy_to(&mut batch[n..]);
                if !delivered_any || batch.len() >= DELIVER_BYTES {
                    delivered_any = true;
                    let n = batch.len() as u64;
                    deliver(offset, total, Bytes::from(std::mem::take(&mut batch)));
                    offset += n;
                }
            }
            at += len;
            if at > keep_to.saturating_add(MAX_SEGMENT_BYTES) {
                return Err(FetchError::BadResponse(format!(
                    "body over {MAX_SEGMENT_BYTES} bytes longer than asked"
                )));
            }
        }
    } else {
        finished = true;
    }
    if !batch.is_empty() {
        deliver(offset, total, Bytes::from(batch));
    }
    if let Some((a, b)) = wanted
        && kept != b - a
    {
        return Err(FetchError::BadResponse(format!(
            "{kept} bytes for a range of {}",
            b - a
        )));
    }
    if finished {
        // Read to its end: nothing to stop.
        guard.0 = None;
    }
    Ok(())
}
