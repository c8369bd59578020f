//! A neighbour serving one of our requests is alive: our other requests to it wait their turn
//! instead of being cancelled as stalled. (Found with the simulator: on uplinks near the
//! stream rate, requests queued behind one in progress were cancelled after the stall
//! timeout and re-issued elsewhere, over and over.)

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

const NEIGHBOUR: PeerId = PeerId([0x77; 20]);
const CHUNK: u32 = 16 * 1024;
const SIZE: usize = 160 * 1024;

fn segment_bytes(seq: u64) -> Vec<u8> {
    (0..SIZE as u32)
        .map(|i| (u64::from(i) ^ seq.wrapping_mul(31)) as u8)
        .collect()
}

fn seg(sequence: u64) -> SegmentRef {
    SegmentRef {
        rendition: RENDITION,
        sequence,
    }
}

/// A request the node sent: id, segment, offset, length.
type Sent = (RequestId, SegmentRef, u64, u64);

/// Requests and cancels the node sent to the neighbour.
fn sent(node: &mut Node) -> (Vec<Sent>, Vec<RequestId>) {
    let (mut requests, mut cancels) = (Vec::new(), Vec::new());
    while let Some(t) = node.poll_transmit() {
        if let Transmit::Peer { peer, data } = t {
            assert_eq!(peer, NEIGHBOUR);
            for f in decode_message(&data, LARGE_MAX_MESSAGE).unwrap() {
                match f {
                    Frame::Request {
                        id,
                        segment,
                        offset,
                        length,
                    } => requests.push((id, segment, offset, length)),
                    Frame::Cancel { id } => cancels.push(id),
                    _ => {}
                }
            }
        }
    }
    (requests, cancels)
}

#[test]
fn requests_queued_behind_one_in_progress_are_not_cancelled() {
    let signer = DigestSigner::from_secret(OPERATOR_SECRET);
    let keys = TrustedKeys::new([signer.public_key()]);
    let mut config = NodeConfig::new(
        PeerId([1; 20]),
        SWARM,
        NodeRole::Viewer,
        IntegrityMode::Verify(keys),
    );
    config.requests_per_peer = 2;
    let stall = config.request_stall_timeout;
    let mut now = Time::from_secs(100);
    let mut node = Node::new(config, now, 3).unwrap();
    watch_live(&mut node, now, 98..106, 98);
    node.handle_peer_event(now, NEIGHBOUR, PeerEvent::Opened);
    let mut hello = vec![Frame::Handshake(Handshake::new(
        SWARM,
        Capabilities::UPLOAD,
    ))];
    hello.push(Frame::Have(Availability::from_sequences(
        RENDITION,
        98..106,
    )));
    for s in 98..106 {
        let d = SegmentDigest::compute(seg(s).in_swarm(SWARM), &segment_bytes(s), CHUNK);
        hello.push(Frame::Digest(Box::new(signer.sign(d))));
    }
    node.handle_peer_event(
        now,
        NEIGHBOUR,
        PeerEvent::Message(Bytes::from(encode_frames(&hello))),
    );
    node.request_segment(now, seg(99));
    let (requests, cancels) = sent(&mut node);
    assert!(cancels.is_empty());
    assert!(
        requests.len() >= 2,
        "two requests in flight to the neighbour: {requests:?}"
    );
    let (first, first_seg, mut offset, length) = requests[0];
    let end = offset + length;
    let queued = requests[1].0;
    // The neighbour serves the first request slowly, a chunk every second (slower than the
    // stall timeout would allow a silent request), and the second only after it.
    let body = segment_bytes(first_seg.sequence);
    while offset < end {
        now += Duration::from_secs(1);
        assert!(Duration::from_secs(1) < stall * 2);
        let to = (offset + u64::from(CHUNK)).min(end);
        let data = Frame::Data {
            id: first,
            segment: first_seg,
            offset,
            payload: Bytes::copy_from_slice(&body[offset as usize..to as usize]),
        };
        node.handle_peer_event(
            now,
            NEIGHBOUR,
            PeerEvent::Message(Bytes::from(encode_frames(&[data]))),
        );
        node.handle_timeout(now);
        offset = to;
        let (_, cancels) = sent(&mut node);
        assert!(
            !cancels.contains(&queued),
            "the queued request was cancelled at {:?} while the neighbour was sending",
            now.saturating_since(Time::from_secs(100))
        );
    }
    // A neighbour that sends nothing at all still has its requests cancelled: after three
    // chunks' time at the rate it was measured at (a chunk a second), not after the
    // configured timeout, which is for neighbours not measured yet or fast ones.
    let last_data = now;
    now += stall + Duration::from_millis(10);
    node.handle_timeout(now);
    let (_, cancels) = sent(&mut node);
    assert!(
        !cancels.contains(&queued),
        "a neighbour measured at a chunk a second gets three seconds"
    );
    now = last_data + Duration::from_millis(3010);
    node.handle_timeout(now);
    let (_, cancels) = sent(&mut node);
    assert!(
        cancels.contains(&queued),
        "a silent neighbour's request is cancelled"
    );
}
