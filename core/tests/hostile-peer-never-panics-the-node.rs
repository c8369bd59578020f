//! A hostile neighbour sends arbitrary sequences of frames (valid encodings with adversarial
//! contents, and raw garbage): the node never panics, never delivers a byte that is not the
//! origin's, and keeps its memory budget. The session with the offender may close; that is
//! all.

mod common;

use bytes::Bytes;
use common::{OPERATOR_SECRET, RENDITION, SWARM};
use proptest::prelude::*;
use swarmcdn_core::ids::PeerId;
use swarmcdn_core::integrity::{DigestSigner, SegmentDigest, TrustedKeys};
use swarmcdn_core::node::{
    Event, IntegrityMode, Node, NodeConfig, NodeRole, PeerEvent, PlayerState, Playlist,
    SegmentMeta, Transmit,
};
use swarmcdn_core::time::Time;
use swarmcdn_core::wire::{
    Availability, Capabilities, Frame, Handshake, RequestId, SegmentRef, encode_frames,
};

const HOSTILE: PeerId = PeerId([0x66; 20]);

fn segment_bytes(seq: u64) -> Vec<u8> {
    (0..150_000u32)
        .map(|i| (i as u64).wrapping_mul(seq + 7) as u8)
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    Frames(Vec<Frame>),
    Garbage(Vec<u8>),
    Advance(u16),
    Drained(u32),
    Request(u8),
}

fn seq() -> impl Strategy<Value = u64> {
    prop_oneof![98u64..106, any::<u64>()]
}

fn seg_ref() -> impl Strategy<Value = SegmentRef> {
    (
        prop_oneof![
            Just(RENDITION),
            any::<[u8; 8]>().prop_map(swarmcdn_core::ids::RenditionId)
        ],
        seq(),
    )
        .prop_map(|(rendition, sequence)| SegmentRef {
            rendition,
            sequence,
        })
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        proptest::collection::vec(seq(), 0..8).prop_map(|s| Frame::Have(
            Availability::from_sequences(RENDITION, s.into_iter().filter(|x| *x < 1 << 40))
        )),
        // Any base, up to u64::MAX, with any bitmap.
        (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..16)).prop_map(|(base, b)| {
            Frame::Have(Availability {
                rendition: RENDITION,
                base: u64::MAX - base % 64,
                bitmap: Bytes::from(b),
            })
        }),
        (
            proptest::collection::vec(seq(), 0..5),
            proptest::collection::vec(seq(), 0..5)
        )
            .prop_map(|(added, removed)| Frame::HaveDelta {
                rendition: RENDITION,
                added,
                removed
            }),
        (
            0u32..64,
            seg_ref(),
            0u64..200_000,
            proptest::collection::vec(any::<u8>(), 0..70_000)
        )
            .prop_map(|(id, segment, offset, p)| Frame::Data {
                id: RequestId(id),
                segment,
                offset,
                payload: Bytes::from(p)
            }),
        (any::<u32>(), seg_ref(), any::<u64>(), any::<u64>()).prop_map(
            |(id, segment, offset, length)| Frame::Request {
                id: RequestId(id),
                segment,
                offset,
                length
            }
        ),
        (0u32..64).prop_map(|id| Frame::Cancel { id: RequestId(id) }),
        (0u32..64, seg_ref()).prop_map(|(id, segment)| Frame::Absent {
            id: RequestId(id),
            segment
        }),
        (0u32..64, any::<u32>()).prop_map(|(id, retry_after_ms)| Frame::Busy {
            id: RequestId(id),
            retry_after_ms
        }),
        seg_ref().prop_map(|segment| Frame::Fetching { segment }),
        (seg_ref(), proptest::collection::vec(any::<u8>(), 0..20)).prop_map(|(segment, bitmap)| {
            Frame::Chunks {
                segment,
                bitmap: bitmap.into(),
            }
        }),
        // Digests: genuine ones (signed by the operator) for real or wrong data, and forged ones.
        (98u64..106, any::<bool>(), any::<bool>()).prop_map(|(s, honest_data, operator)| {
            let data = if honest_data {
                segment_bytes(s)
            } else {
                vec![1; 150_000]
            };
            let key = if operator { OPERATOR_SECRET } else { [3; 32] };
            let d = SegmentDigest::compute(
                SegmentRef {
                    rendition: RENDITION,
                    sequence: s,
                }
                .in_swarm(SWARM),
                &data,
                65536,
            );
            Frame::Digest(Box::new(DigestSigner::from_secret(key).sign(d)))
        }),
        Just(Frame::Handshake(Handshake::new(
            SWARM,
            Capabilities::UPLOAD
        ))),
        (any::<u8>(), "\\PC{0,20}").prop_map(|(code, reason)| Frame::Goodbye { code, reason }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(frame(), 1..4).prop_map(Op::Frames),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Op::Garbage),
        2 => (1u16..3000).prop_map(Op::Advance),
        1 => any::<u32>().prop_map(Op::Drained),
        1 => (98u8..106).prop_map(Op::Request),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn hostile_peer_never_panics_the_node(ops in proptest::collection::vec(op(), 1..40)) {
        let keys = TrustedKeys::new([DigestSigner::from_secret(OPERATOR_SECRET).public_key()]);
        let mut config = NodeConfig::new(PeerId([1; 20]), SWARM, NodeRole::Viewer, IntegrityMode::Verify(keys));
        config.cache_bytes = 400_000;
        let budget = config.cache_bytes;
        let mut now = Time::from_secs(100);
        let mut node = Node::new(config, now, 5).unwrap();
        node.handle_playlist(now, Playlist {
            rendition: RENDITION,
            live: true,
            segments: (98..106).map(|sequence| SegmentMeta { sequence, duration: std::time::Duration::from_secs(2), partial: false }).collect(),
        });
        node.handle_player(now, PlayerState { rendition: RENDITION, playhead: 98, buffer_ahead: std::time::Duration::from_secs(8) });
        node.handle_peer_event(now, HOSTILE, PeerEvent::Opened);
        let hello = Bytes::from(encode_frames(&[Frame::Handshake(Handshake::new(SWARM, Capabilities::UPLOAD.with(Capabilities::LARGE_MESSAGES)))]));
        node.handle_peer_event(now, HOSTILE, PeerEvent::Message(hello));
        let mut fetches = Vec::new();
        for op in ops {
            match op {
                Op::Frames(frames) => {
                    let msg = encode_frames(&frames);
                    if msg.len() <= 256 * 1024 {
                        node.handle_peer_event(now, HOSTILE, PeerEvent::Message(Bytes::from(msg)));
                    }
                }
                Op::Garbage(g) => node.handle_peer_event(now, HOSTILE, PeerEvent::Message(Bytes::from(g))),
                Op::Advance(ms) => {
                    now += std::time::Duration::from_millis(u64::from(ms));
                    node.handle_timeout(now);
                }
                Op::Drained(b) => node.handle_peer_event(now, HOSTILE, PeerEvent::Drained { buffered: u64::from(b) }),
                Op::Request(s) => {
                    node.request_segment(now, SegmentRef { rendition: RENDITION, sequence: u64::from(s) });
                }
            }
            while let Some(t) = node.poll_transmit() {
                if let Transmit::Http(req) = t {
                    fetches.push(req);
                }
            }
            // The origin answers every fetch at once, with the real bytes.
            let mut answered = 0;
            while let Some(req) = fetches.pop() {
                answered += 1;
                prop_assert!(answered < 100, "the node keeps re-fetching: {:?}", req);
                let swarmcdn_core::node::HttpTarget::Segment(seg) = req.target;
                let body = segment_bytes(seg.sequence);
                let range = req.range.clone().unwrap_or(0..body.len() as u64);
                let end = range.end.min(body.len() as u64);
                if range.start < end {
                    let data = Bytes::copy_from_slice(&body[range.start as usize..end as usize]);
                    node.handle_http_data(now, req.id, range.start, Some(body.len() as u64), data);
                }
                node.handle_http_done(now, req.id, Ok(()));
                while let Some(t) = node.poll_transmit() {
                    if let Transmit::Http(r) = t {
                        fetches.push(r);
                    }
                }
            }
            while let Some(e) = node.poll_event() {
                if let Event::SegmentReady { segment, data, .. } = e {
                    prop_assert_eq!(&data[..], &segment_bytes(segment.sequence)[..], "a bad byte reached the player");
                }
            }
            prop_assert!(node.stats().cache_bytes <= budget.max(150_000));
        }
    }
}
