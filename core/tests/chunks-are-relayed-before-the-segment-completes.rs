//! A segment still arriving is announced once its first chunk is in, and its verified chunks
//! are relayed to neighbours as they come, before the segment is complete (cut-through
//! instead of store-and-forward: each hop costs a chunk's time, not a segment's). A
//! neighbour that understands chunk maps is told which chunks are in.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{OPERATOR_SECRET, RENDITION, SWARM, watch_live};
use swarmcdn_core::ids::PeerId;
use swarmcdn_core::integrity::{DigestSigner, SegmentDigest, TrustedKeys};
use swarmcdn_core::node::{IntegrityMode, Node, NodeConfig, NodeRole, PeerEvent, Transmit};
use swarmcdn_core::time::Time;
use swarmcdn_core::wire::{
    Availability, Capabilities, Frame, Handshake, LARGE_MAX_MESSAGE, RequestId, SegmentRef,
    decode_message, encode_frames,
};

const UPSTREAM: PeerId = PeerId([0x55; 20]);
const DOWNSTREAM: PeerId = PeerId([0x66; 20]);
const CHUNK: u32 = 16 * 1024;
const SIZE: usize = 160 * 1024;

fn segment_bytes(seq: u64) -> Vec<u8> {
    (0..SIZE as u32)
        .map(|i| ((u64::from(i) * 7) ^ seq) as u8)
        .collect()
}

fn seg(sequence: u64) -> SegmentRef {
    SegmentRef {
        rendition: RENDITION,
        sequence,
    }
}

fn frames_to(node: &mut Node, who: PeerId) -> Vec<Frame> {
    let mut out = Vec::new();
    while let Some(t) = node.poll_transmit() {
        if let Transmit::Peer { peer, data } = t
            && peer == who
        {
            out.extend(decode_message(&data, LARGE_MAX_MESSAGE).unwrap());
        }
    }
    out
}

fn send(node: &mut Node, now: Time, from: PeerId, frames: &[Frame]) {
    node.handle_peer_event(
        now,
        from,
        PeerEvent::Message(Bytes::from(encode_frames(frames))),
    );
}

/// A node with an upstream neighbour that has segment 99 (whole, or the chunks of
/// `upstream_map`) and a downstream one that plays the rendition.
fn node(relay_partial: bool, downstream_maps: bool, upstream_map: Option<Bytes>) -> (Node, Time) {
    let signer = DigestSigner::from_secret(OPERATOR_SECRET);
    let mut config = NodeConfig::new(
        PeerId([1; 20]),
        SWARM,
        NodeRole::Viewer,
        IntegrityMode::Verify(TrustedKeys::new([signer.public_key()])),
    );
    config.relay_partial = relay_partial;
    let now = Time::from_secs(100);
    let mut node = Node::new(config, now, 9).unwrap();
    watch_live(&mut node, now, 98..106, 98);
    for p in [UPSTREAM, DOWNSTREAM] {
        let mut caps = Capabilities::UPLOAD;
        if p == DOWNSTREAM && downstream_maps {
            caps = caps.with(Capabilities::CHUNK_MAPS);
        }
        node.handle_peer_event(now, p, PeerEvent::Opened);
        send(
            &mut node,
            now,
            p,
            &[Frame::Handshake(Handshake::new(SWARM, caps))],
        );
    }
    // The downstream neighbour plays the rendition (it has segment 98).
    send(
        &mut node,
        now,
        DOWNSTREAM,
        &[Frame::Have(Availability::from_sequences(RENDITION, [98]))],
    );
    // Only the upstream neighbour has segment 99, with its digest.
    let d = SegmentDigest::compute(seg(99).in_swarm(SWARM), &segment_bytes(99), CHUNK);
    let mut frames = vec![Frame::Digest(Box::new(signer.sign(d)))];
    if let Some(bitmap) = upstream_map {
        frames.push(Frame::Chunks {
            segment: seg(99),
            bitmap,
        });
    }
    frames.push(Frame::Have(Availability::from_sequences(RENDITION, [99])));
    send(&mut node, now, UPSTREAM, &frames);
    (node, now)
}

/// The downstream neighbour asks for the chunk of segment 99 at `offset`.
fn ask_from_downstream(node: &mut Node, now: Time, offset: u64) {
    send(
        node,
        now,
        DOWNSTREAM,
        &[Frame::Request {
            id: RequestId(7),
            segment: seg(99),
            offset,
            length: u64::from(CHUNK),
        }],
    );
}

/// The first request for segment 99 the node sent upstream: its id, offset and length.
fn first_request_upstream(node: &mut Node) -> (RequestId, u64, u64) {
    let mut first = None;
    while let Some(t) = node.poll_transmit() {
        if let Transmit::Peer { peer, data } = t
            && peer == UPSTREAM
        {
            for f in decode_message(&data, LARGE_MAX_MESSAGE).unwrap() {
                if let Frame::Request {
                    id,
                    segment,
                    offset,
                    length,
                } = f
                    && segment == seg(99)
                    && first.is_none()
                {
                    first = Some((id, offset, length));
                }
            }
        }
    }
    first.expect("a request for segment 99 went upstream")
}

/// Serves the node's first request to the upstream neighbour with one chunk, then asks for
/// that chunk from downstream; returns what the node sent downstream and the chunk's offset
/// (requests start at a chunk drawn per download, not necessarily the first).
fn relay(relay_partial: bool, downstream_maps: bool) -> (Vec<Frame>, u64) {
    let (mut node, mut now) = node(relay_partial, downstream_maps, None);
    node.request_segment(now, seg(99));
    let (id, offset, _) = first_request_upstream(&mut node);
    let segment = seg(99);
    assert_eq!(offset % u64::from(CHUNK), 0, "requests start at a chunk");
    now += Duration::from_millis(200);
    let body = segment_bytes(99);
    let at = offset as usize;
    send(
        &mut node,
        now,
        UPSTREAM,
        &[Frame::Data {
            id,
            segment,
            offset,
            payload: Bytes::copy_from_slice(&body[at..at + CHUNK as usize]),
        }],
    );
    let mut got = frames_to(&mut node, DOWNSTREAM);
    now += Duration::from_millis(10);
    ask_from_downstream(&mut node, now, offset);
    got.extend(frames_to(&mut node, DOWNSTREAM));
    (got, offset)
}

#[test]
fn the_first_verified_chunk_is_announced_and_relayed() {
    let (got, at) = relay(true, false);
    assert!(
        got.iter()
            .any(|f| matches!(f, Frame::HaveDelta { added, .. } if added == &[99])),
        "segment 99 announced after its first chunk: {got:?}"
    );
    assert!(got.iter().any(|f| matches!(f, Frame::Digest(_))));
    let data: Vec<&Frame> = got
        .iter()
        .filter(|f| matches!(f, Frame::Data { .. }))
        .collect();
    let [
        Frame::Data {
            id,
            offset,
            payload,
            ..
        },
    ] = data.as_slice()
    else {
        panic!("one chunk relayed downstream: {got:?}");
    };
    assert_eq!((*id, *offset), (RequestId(7), at));
    let at = at as usize;
    assert_eq!(&payload[..], &segment_bytes(99)[at..at + CHUNK as usize]);
    // This neighbour does not understand chunk maps: none is sent to it.
    assert!(!got.iter().any(|f| matches!(f, Frame::Chunks { .. })));
}

#[test]
fn a_neighbour_that_understands_chunk_maps_is_told_which_chunk_is_in() {
    let (got, at) = relay(true, true);
    let maps: Vec<&Frame> = got
        .iter()
        .filter(|f| matches!(f, Frame::Chunks { .. }))
        .collect();
    let [Frame::Chunks { segment, bitmap }] = maps.as_slice() else {
        panic!("one chunk map sent downstream: {got:?}");
    };
    assert_eq!(*segment, seg(99));
    let chunk = (at / u64::from(CHUNK)) as usize;
    let mut want = vec![0u8; (SIZE / CHUNK as usize).div_ceil(8)];
    want[chunk / 8] |= 1 << (chunk % 8);
    assert_eq!(&bitmap[..], &want[..], "only chunk {chunk} is in");
    // The map comes before the announcement, in the same message.
    let map_at = got.iter().position(|f| matches!(f, Frame::Chunks { .. }));
    let announced_at = got
        .iter()
        .position(|f| matches!(f, Frame::HaveDelta { added, .. } if added == &[99]));
    assert!(map_at < announced_at && announced_at.is_some(), "{got:?}");
}

#[test]
fn without_partial_relay_a_segment_is_offered_only_once_complete() {
    let (got, _) = relay(false, false);
    assert!(
        !got.iter().any(|f| matches!(f, Frame::Data { .. })),
        "{got:?}"
    );
    assert!(
        got.iter().any(|f| matches!(f, Frame::Absent { .. })),
        "{got:?}"
    );
}

#[test]
fn a_neighbour_with_a_chunk_map_is_asked_only_for_chunks_it_holds() {
    // The upstream neighbour holds chunks 3 and 4 of segment 99 so far.
    let map = Bytes::from_static(&[0b0001_1000, 0]);
    let (mut node, now) = node(true, false, Some(map));
    node.request_segment(now, seg(99));
    let mut asked = Vec::new();
    for f in frames_to(&mut node, UPSTREAM) {
        if let Frame::Request {
            segment,
            offset,
            length,
            ..
        } = f
            && segment == seg(99)
        {
            asked.push((offset, length));
        }
    }
    let chunk = u64::from(CHUNK);
    assert_eq!(
        asked,
        [(3 * chunk, 2 * chunk)],
        "chunks 3 and 4, in one request"
    );
}

/// A holder whose uplink is under twice the stream rate tells its neighbours of every chunk
/// of a segment still arriving while it has an upload slot free: they ask only for chunks
/// they know it has, and such an uplink must not sit idle. A faster uplink sends an update
/// every eighth of the segment (here every second chunk of ten).
#[test]
fn a_scarce_uplink_announces_every_chunk_while_a_slot_is_free() {
    // The stream: 160 KiB every 4 s, 40 KiB/s. One 16 KiB chunk drained in 1 s is 16 KiB/s
    // (scarce); in 150 ms, 107 KiB/s (not).
    for (drain_ms, update) in [(1000, true), (150, false)] {
        let (mut node, mut now) = node(true, true, None);
        node.request_segment(now, seg(99));
        let (id, offset, length) = first_request_upstream(&mut node);
        assert!(
            length >= 2 * u64::from(CHUNK),
            "two chunks asked of an unmeasured neighbour"
        );
        let body = segment_bytes(99);
        let chunk = |at: u64| {
            let at = at as usize;
            Bytes::copy_from_slice(&body[at..at + CHUNK as usize])
        };
        // The first chunk arrives and is announced with its map; the downstream neighbour
        // asks for it and the node sends it.
        now += Duration::from_millis(200);
        let data = |o: u64| Frame::Data {
            id,
            segment: seg(99),
            offset: o,
            payload: chunk(o),
        };
        send(&mut node, now, UPSTREAM, &[data(offset)]);
        ask_from_downstream(&mut node, now, offset);
        let got = frames_to(&mut node, DOWNSTREAM);
        assert!(
            got.iter().any(|f| matches!(f, Frame::Data { .. })),
            "{got:?}"
        );
        // The DataChannel reports its buffer empty: the uplink is measured.
        now += Duration::from_millis(drain_ms);
        node.handle_peer_event(now, DOWNSTREAM, PeerEvent::Drained { buffered: 0 });
        // The second chunk arrives.
        send(&mut node, now, UPSTREAM, &[data(offset + u64::from(CHUNK))]);
        let maps: Vec<Frame> = frames_to(&mut node, DOWNSTREAM)
            .into_iter()
            .filter(|f| matches!(f, Frame::Chunks { .. }))
            .collect();
        if update {
            let [Frame::Chunks { bitmap, .. }] = maps.as_slice() else {
                panic!("a map update for the second chunk: {maps:?}");
            };
            let held: u32 = bitmap.iter().map(|b| b.count_ones()).sum();
            assert_eq!(held, 2, "both chunks in the map");
        } else {
            assert!(maps.is_empty(), "no update before an eighth: {maps:?}");
        }
    }
}

/// A neighbour told of a segment while it arrived holds its chunk map until told otherwise:
/// once the segment is whole, every neighbour that plays the rendition hears so (a full
/// map), also one that holds the segment by then. Before, such a neighbour kept a stale
/// partial map for as long as the segment stayed cached: it took this node for missing chunks
/// it held, and kept the map's memory.
#[test]
fn a_segment_made_whole_is_announced_whole_to_neighbours_holding_it() {
    let (mut node, mut now) = node(true, true, None);
    node.request_segment(now, seg(99));
    let body = segment_bytes(99);
    let mut to_downstream = Vec::new();
    let mut complete_too_soon = false;
    for round in 0..100 {
        // Drain: requests are served at once (the downstream neighbour's too, once it holds
        // the segment), the other frames downstream are kept.
        let mut asked = Vec::new();
        while let Some(t) = node.poll_transmit() {
            if let Transmit::Peer { peer, data } = t {
                for f in decode_message(&data, LARGE_MAX_MESSAGE).unwrap() {
                    match f {
                        Frame::Request {
                            id,
                            segment,
                            offset,
                            length,
                        } if segment == seg(99) => {
                            asked.push((peer, id, offset, length));
                        }
                        f if peer == DOWNSTREAM => to_downstream.push(f),
                        _ => {}
                    }
                }
            }
        }
        if round == 1 {
            // The first chunk is in: the downstream neighbour got a partial map. Then it gets
            // the segment elsewhere and says so.
            assert!(
                to_downstream
                    .iter()
                    .any(|f| matches!(f, Frame::Chunks { .. })),
                "a partial map went downstream: {to_downstream:?}"
            );
            complete_too_soon = node.has_segment(&seg(99));
            to_downstream.clear();
            send(
                &mut node,
                now,
                DOWNSTREAM,
                &[Frame::HaveDelta {
                    rendition: RENDITION,
                    added: vec![99],
                    removed: vec![],
                }],
            );
        }
        if node.has_segment(&seg(99)) {
            break;
        }
        now += Duration::from_millis(50);
        for (peer, id, offset, length) in asked {
            let mut at = offset;
            while at < offset + length {
                let end = (at + u64::from(CHUNK)).min(offset + length);
                send(
                    &mut node,
                    now,
                    peer,
                    &[Frame::Data {
                        id,
                        segment: seg(99),
                        offset: at,
                        payload: Bytes::copy_from_slice(&body[at as usize..end as usize]),
                    }],
                );
                at = end;
            }
        }
    }
    assert!(!complete_too_soon);
    assert!(node.has_segment(&seg(99)), "the segment completed");
    let maps: Vec<&Frame> = to_downstream
        .iter()
        .filter(|f| matches!(f, Frame::Chunks { .. }))
        .collect();
    let [Frame::Chunks { segment, bitmap }] = maps.as_slice() else {
        panic!("one full map went downstream: {to_downstream:?}");
    };
    assert_eq!(*segment, seg(99));
    let chunks = SIZE / CHUNK as usize;
    let held: u32 = bitmap.iter().map(|b| b.count_ones()).sum();
    assert_eq!(held as usize, chunks, "every chunk in the map: {bitmap:?}");
}
