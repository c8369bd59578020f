//! A segment still arriving is announced once its first chunk is in, and its verified chunks
//! are relayed to neighbours as they come, before the segment is complete (cut-through
//! instead of store-and-forward: each hop costs a chunk's time, not a segment's).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{OPERATOR_SECRET, RENDITION, SWARM};
use swarmcdn_core::ids::PeerId;
use swarmcdn_core::integrity::{DigestSigner, SegmentDigest, TrustedKeys};
use swarmcdn_core::node::{
    IntegrityMode, Node, NodeConfig, NodeRole, PeerEvent, PlayerState, Playlist, SegmentMeta,
    Transmit,
};
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

fn node(relay_partial: bool) -> (Node, Time) {
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
    node.handle_playlist(
        now,
        Playlist {
            rendition: RENDITION,
            live: true,
            segments: (98..106)
                .map(|sequence| SegmentMeta {
                    sequence,
                    duration: Duration::from_secs(4),
                })
                .collect(),
        },
    );
    node.handle_player(
        now,
        PlayerState {
            rendition: RENDITION,
            playhead: 98,
            buffer_ahead: Duration::from_secs(30),
        },
    );
    for p in [UPSTREAM, DOWNSTREAM] {
        node.handle_peer_event(now, p, PeerEvent::Opened);
        send(
            &mut node,
            now,
            p,
            &[Frame::Handshake(Handshake::new(
                SWARM,
                Capabilities::UPLOAD,
            ))],
        );
    }
    // Only the upstream neighbour has segment 99, with its digest.
    let d = SegmentDigest::compute(seg(99).in_swarm(SWARM), &segment_bytes(99), CHUNK);
    send(
        &mut node,
        now,
        UPSTREAM,
        &[
            Frame::Have(Availability::from_sequences(RENDITION, [99])),
            Frame::Digest(Box::new(signer.sign(d))),
        ],
    );
    (node, now)
}

/// Serves the node's first request to the upstream neighbour with one chunk, then asks for
/// that chunk from downstream; returns what the node sent downstream.
fn relay(relay_partial: bool) -> Vec<Frame> {
    let (mut node, mut now) = node(relay_partial);
    node.request_segment(now, seg(99));
    let mut first = None;
    while let Some(t) = node.poll_transmit() {
        if let Transmit::Peer { peer, data } = t
            && peer == UPSTREAM
        {
            for f in decode_message(&data, LARGE_MAX_MESSAGE).unwrap() {
                if let Frame::Request {
                    id,
                    segment,
                    offset: 0,
                    ..
                } = f
                {
                    first = Some((id, segment));
                }
            }
        }
    }
    let (id, segment) = first.expect("a request for the start of the segment went upstream");
    now += Duration::from_millis(200);
    let body = segment_bytes(99);
    send(
        &mut node,
        now,
        UPSTREAM,
        &[Frame::Data {
            id,
            segment,
            offset: 0,
            payload: Bytes::copy_from_slice(&body[..CHUNK as usize]),
        }],
    );
    let mut got = frames_to(&mut node, DOWNSTREAM);
    now += Duration::from_millis(10);
    send(
        &mut node,
        now,
        DOWNSTREAM,
        &[Frame::Request {
            id: RequestId(7),
            segment: seg(99),
            offset: 0,
            length: u64::from(CHUNK),
        }],
    );
    got.extend(frames_to(&mut node, DOWNSTREAM));
    got
}

#[test]
fn the_first_verified_chunk_is_announced_and_relayed() {
    let got = relay(true);
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
    assert_eq!((*id, *offset), (RequestId(7), 0));
    assert_eq!(&payload[..], &segment_bytes(99)[..CHUNK as usize]);
}

#[test]
fn without_partial_relay_a_segment_is_offered_only_once_complete() {
    let got = relay(false);
    assert!(
        !got.iter().any(|f| matches!(f, Frame::Data { .. })),
        "{got:?}"
    );
    assert!(
        got.iter().any(|f| matches!(f, Frame::Absent { .. })),
        "{got:?}"
    );
}
