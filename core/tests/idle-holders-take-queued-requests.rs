//! A request queued at one holder behind another of ours moves to a holder that has nothing
//! of ours to send and is at least as fast: the idle uplink starts on it at once instead of
//! after the first holder's current request. (Found with the simulator: on uplinks near the
//! stream rate, most of the time a holder's uplink sat idle, every chunk it could give was
//! queued for its neighbours at another holder; decision 0014.)

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{OPERATOR_SECRET, RENDITION, SWARM, ms, watch_live};
use swarmcdn_core::ids::PeerId;
use swarmcdn_core::integrity::{DigestSigner, SegmentDigest, TrustedKeys};
use swarmcdn_core::node::{IntegrityMode, Node, NodeConfig, NodeRole, PeerEvent, Transmit};
use swarmcdn_core::time::Time;
use swarmcdn_core::wire::{
    Availability, Capabilities, Frame, Handshake, LARGE_MAX_MESSAGE, RequestId, SegmentRef,
    decode_message, encode_frames,
};

const A: PeerId = PeerId([0xaa; 20]);
const H: PeerId = PeerId([0xbb; 20]);
const CHUNK: u32 = 16 * 1024;
const SIZE: usize = 160 * 1024;

fn segment_bytes(seq: u64) -> Vec<u8> {
    (0..SIZE as u32)
        .map(|i| ((u64::from(i) * 13) ^ seq) as u8)
        .collect()
}

fn seg(sequence: u64) -> SegmentRef {
    SegmentRef {
        rendition: RENDITION,
        sequence,
    }
}

/// A request the node sent: to whom, id, segment, offset, length.
type Sent = (PeerId, RequestId, SegmentRef, u64, u64);

/// Requests and cancels (to whom, id) the node sent.
fn sent(node: &mut Node) -> (Vec<Sent>, Vec<(PeerId, RequestId)>) {
    let (mut requests, mut cancels) = (Vec::new(), Vec::new());
    while let Some(t) = node.poll_transmit() {
        if let Transmit::Peer { peer, data } = t {
            for f in decode_message(&data, LARGE_MAX_MESSAGE).unwrap() {
                match f {
                    Frame::Request {
                        id,
                        segment,
                        offset,
                        length,
                    } => requests.push((peer, id, segment, offset, length)),
                    Frame::Cancel { id } => cancels.push((peer, id)),
                    _ => {}
                }
            }
        }
    }
    (requests, cancels)
}

fn send(node: &mut Node, now: Time, from: PeerId, frames: &[Frame]) {
    node.handle_peer_event(
        now,
        from,
        PeerEvent::Message(Bytes::from(encode_frames(frames))),
    );
}

/// Answers a request in full, a chunk per frame.
fn serve(node: &mut Node, now: Time, (from, id, segment, offset, length): Sent) {
    let body = segment_bytes(segment.sequence);
    let mut at = offset;
    while at < offset + length {
        let to = (at + u64::from(CHUNK)).min(offset + length);
        let payload = Bytes::copy_from_slice(&body[at as usize..to as usize]);
        send(
            node,
            now,
            from,
            &[Frame::Data {
                id,
                segment,
                offset: at,
                payload,
            }],
        );
        at = to;
    }
}

/// A viewer whose neighbours `A` and `H` both served it segment 98, `H` taking `h_delay` to
/// answer each request and `A` 100 ms (so both are measured). Then only `A` has segment 99:
/// returns the node, the time and the requests for 99 sent to `A`.
fn measured(h_delay: Duration) -> (Node, Time, Vec<Sent>) {
    let signer = DigestSigner::from_secret(OPERATOR_SECRET);
    let mut config = NodeConfig::new(
        PeerId([1; 20]),
        SWARM,
        NodeRole::Viewer,
        IntegrityMode::Verify(TrustedKeys::new([signer.public_key()])),
    );
    config.requests_per_peer = 2;
    config.request_chunks = 2;
    let mut now = Time::from_secs(100);
    let mut node = Node::new(config, now, 5).unwrap();
    watch_live(&mut node, now, 98..106, 98);
    let digest = |s: u64| {
        let d = SegmentDigest::compute(seg(s).in_swarm(SWARM), &segment_bytes(s), CHUNK);
        Frame::Digest(Box::new(signer.sign(d)))
    };
    for p in [A, H] {
        node.handle_peer_event(now, p, PeerEvent::Opened);
        let caps = Capabilities::UPLOAD.with(Capabilities::CHUNK_MAPS);
        send(
            &mut node,
            now,
            p,
            &[
                Frame::Handshake(Handshake::new(SWARM, caps)),
                digest(98),
                Frame::Have(Availability::from_sequences(RENDITION, [98])),
            ],
        );
    }
    node.request_segment(now, seg(98));
    // Both serve segment 98 until the node has it.
    for _ in 0..20 {
        let (requests, _) = sent(&mut node);
        if requests.is_empty() {
            break;
        }
        let (mut from_a, mut from_h): (Vec<Sent>, Vec<Sent>) =
            requests.into_iter().partition(|r| r.0 == A);
        from_a.retain(|r| r.2 == seg(98));
        from_h.retain(|r| r.2 == seg(98));
        let start = now;
        now = start + Duration::from_millis(100);
        for r in from_a {
            serve(&mut node, now, r);
        }
        now = start + h_delay.max(Duration::from_millis(100));
        for r in from_h {
            serve(&mut node, now, r);
        }
    }
    assert!(node.has_segment(&seg(98)), "segment 98 came from A and H");
    // Only A has segment 99: it gets two requests of two chunks.
    now += Duration::from_millis(10);
    send(
        &mut node,
        now,
        A,
        &[
            digest(99),
            Frame::Have(Availability::from_sequences(RENDITION, [99])),
        ],
    );
    let (requests, _) = sent(&mut node);
    let to_a: Vec<Sent> = requests
        .into_iter()
        .filter(|r| r.0 == A && r.2 == seg(99))
        .collect();
    assert_eq!(to_a.len(), 2, "two requests in flight to A: {to_a:?}");
    (node, now, to_a)
}

/// `H` announces segment 99 while it arrives, holding exactly the chunks of the request
/// queued at `A` behind the first. Returns what the node sent then.
fn h_announces_the_queued_chunks(
    node: &mut Node,
    now: Time,
    queued: Sent,
) -> (Vec<Sent>, Vec<(PeerId, RequestId)>) {
    let (_, _, _, offset, length) = queued;
    let first = (offset / u64::from(CHUNK)) as usize;
    let last = ((offset + length).div_ceil(u64::from(CHUNK))) as usize;
    let mut bitmap = vec![0u8; 2];
    for i in first..last {
        bitmap[i / 8] |= 1 << (i % 8);
    }
    send(
        node,
        now,
        H,
        &[
            Frame::Chunks {
                segment: seg(99),
                bitmap: Bytes::from(bitmap),
            },
            Frame::Have(Availability::from_sequences(RENDITION, [99])),
        ],
    );
    sent(node)
}

#[test]
fn a_queued_request_moves_to_an_idle_holder_as_fast() {
    let (mut node, now, to_a) = measured(Duration::from_millis(100));
    // Two chunks of ours are ahead of it at A: it has surely not left A's upload queue (a
    // request behind one chunk stays where it is; see `Node::steal_queued`).
    assert_eq!(to_a[0].4, 2 * u64::from(CHUNK), "{to_a:?}");
    let queued = to_a[1];
    let (requests, cancels) = h_announces_the_queued_chunks(&mut node, now + ms(10), queued);
    assert_eq!(
        cancels,
        [(A, queued.1)],
        "the queued request is taken from A"
    );
    let to_h: Vec<(u64, u64)> = requests
        .iter()
        .filter(|r| r.0 == H)
        .map(|r| (r.3, r.4))
        .collect();
    assert_eq!(to_h, [(queued.3, queued.4)], "and given to H");
    // The request A is sending stays with A.
    assert!(!cancels.iter().any(|c| c.1 == to_a[0].1));
}

#[test]
fn a_queued_request_stays_when_the_idle_holder_is_slower() {
    // H took half a second per request: a fifth of A's rate.
    let (mut node, now, to_a) = measured(Duration::from_millis(500));
    let (requests, cancels) = h_announces_the_queued_chunks(&mut node, now + ms(10), to_a[1]);
    assert!(cancels.is_empty(), "{cancels:?}");
    assert!(!requests.iter().any(|r| r.0 == H), "{requests:?}");
}
