//! Property tests of every codec: each message round-trips, and every decoder returns an error
//! (never a panic) on arbitrary bytes and on mutations of valid messages.

use bytes::Bytes;
use proptest::prelude::*;
use swarmcdn_core::ids::{PeerId, RenditionId, SegmentId, SwarmId};
use swarmcdn_core::integrity::{DigestSigner, SegmentDigest, SignedDigest};
use swarmcdn_core::tracker_proto::*;
use swarmcdn_core::wire::*;

fn swarm() -> impl Strategy<Value = SwarmId> {
    any::<[u8; 20]>().prop_map(SwarmId)
}

fn peer() -> impl Strategy<Value = PeerId> {
    any::<[u8; 20]>().prop_map(PeerId)
}

fn offer_id() -> impl Strategy<Value = OfferId> {
    any::<[u8; 20]>().prop_map(OfferId)
}

fn rendition() -> impl Strategy<Value = RenditionId> {
    any::<[u8; 8]>().prop_map(RenditionId)
}

fn sdp() -> impl Strategy<Value = SessionDescription> {
    (prop_oneof!["offer", "answer", "pranswer"], any::<String>())
        .prop_map(|(kind, sdp)| SessionDescription::new(&kind, &sdp))
}

fn peer_info() -> impl Strategy<Value = Option<PeerInfo>> {
    let role = prop_oneof![Just(Role::Viewer), Just(Role::Seed), Just(Role::Unknown)];
    let nat = prop_oneof![
        Just(NatType::Open),
        Just(NatType::FullCone),
        Just(NatType::Restricted),
        Just(NatType::PortRestricted),
        Just(NatType::Symmetric),
        Just(NatType::Unknown),
    ];
    proptest::option::of(
        (
            proptest::option::of(role),
            proptest::option::of(rendition()),
            proptest::option::of(any::<u64>()),
            proptest::option::of("[a-z0-9-]{0,64}"),
            proptest::option::of(nat),
            proptest::option::of(any::<u32>()),
            proptest::option::of("[0-9a-f]{0,256}"),
            proptest::option::of(stream_url()),
        )
            .prop_map(
                |(role, rendition, position, locality, nat, upload_slots, token, stream)| {
                    PeerInfo {
                        role,
                        rendition,
                        position,
                        locality,
                        nat,
                        upload_slots,
                        token,
                        stream,
                    }
                },
            ),
    )
}

fn stream_url() -> impl Strategy<Value = String> {
    "https?://[a-z0-9.]{1,20}(:[0-9]{1,5})?/[ -~]{0,60}"
}

fn event() -> impl Strategy<Value = Option<AnnounceEvent>> {
    proptest::option::of(prop_oneof![
        Just(AnnounceEvent::Started),
        Just(AnnounceEvent::Stopped),
        Just(AnnounceEvent::Completed),
        Just(AnnounceEvent::Paused),
        Just(AnnounceEvent::Update),
    ])
}

fn to_tracker() -> impl Strategy<Value = ToTracker> {
    let announce = (
        (swarm(), peer(), event(), proptest::option::of(any::<u32>())),
        (
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
        ),
        proptest::collection::vec(
            (offer_id(), sdp()).prop_map(|(offer_id, offer)| Offer { offer_id, offer }),
            0..6,
        ),
        proptest::option::of(any::<String>()),
        peer_info(),
    )
        .prop_map(
            |(
                (info_hash, peer_id, event, numwant),
                (uploaded, downloaded, left),
                offers,
                tracker_id,
                ext,
            )| {
                ToTracker::Announce(Announce {
                    info_hash,
                    peer_id,
                    event,
                    numwant,
                    uploaded,
                    downloaded,
                    left,
                    offers: offers.into(),
                    tracker_id,
                    ext,
                })
            },
        );
    let answer = (swarm(), peer(), peer(), offer_id(), sdp(), peer_info()).prop_map(
        |(info_hash, peer_id, to_peer_id, offer_id, answer, ext)| {
            ToTracker::Answer(Answer {
                info_hash,
                peer_id,
                to_peer_id,
                offer_id,
                answer,
                ext,
            })
        },
    );
    let scrape = proptest::collection::vec(swarm(), 0..5)
        .prop_map(|info_hashes| ToTracker::Scrape(Scrape { info_hashes }));
    let standby = (peer(), peer_info())
        .prop_map(|(peer_id, ext)| ToTracker::Standby(Standby { peer_id, ext }));
    prop_oneof![announce, answer, scrape, standby]
}

fn from_tracker() -> impl Strategy<Value = FromTracker> {
    let opt_u32 = || proptest::option::of(any::<u32>());
    let opt_u64 = || proptest::option::of(any::<u64>());
    let resp = (
        swarm(),
        opt_u32(),
        opt_u32(),
        opt_u64(),
        opt_u64(),
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<String>()),
    )
        .prop_map(
            |(info_hash, interval, min_interval, complete, incomplete, tracker_id, warning)| {
                FromTracker::AnnounceResponse(AnnounceResponse {
                    info_hash,
                    interval,
                    min_interval,
                    complete,
                    incomplete,
                    tracker_id,
                    warning,
                })
            },
        );
    let offer = (swarm(), peer(), offer_id(), sdp(), peer_info()).prop_map(
        |(info_hash, peer_id, offer_id, offer, ext)| {
            FromTracker::Offer(RelayedOffer {
                info_hash,
                peer_id,
                offer_id,
                offer,
                ext,
            })
        },
    );
    let answer = (swarm(), peer(), offer_id(), sdp(), peer_info()).prop_map(
        |(info_hash, peer_id, offer_id, answer, ext)| {
            FromTracker::Answer(RelayedAnswer {
                info_hash,
                peer_id,
                offer_id,
                answer,
                ext,
            })
        },
    );
    let stats = (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
        |(complete, incomplete, downloaded)| ScrapeStats {
            complete,
            incomplete,
            downloaded,
        },
    );
    let scrape = (
        proptest::collection::btree_map(swarm(), stats, 0..4),
        opt_u32(),
    )
        .prop_map(|(files, min_request_interval)| {
            FromTracker::Scrape(ScrapeResponse {
                files,
                min_request_interval,
            })
        });
    let error = (
        any::<String>(),
        proptest::option::of(prop_oneof!["announce", "scrape", "seed_standby"]),
        proptest::option::of(swarm()),
    )
        .prop_map(|(failure_reason, action, info_hash)| {
            FromTracker::Error(ErrorResponse {
                failure_reason,
                action,
                info_hash,
            })
        });
    let demand = (swarm(), stream_url())
        .prop_map(|(info_hash, stream)| FromTracker::Demand(Demand { info_hash, stream }));
    prop_oneof![resp, offer, answer, scrape, error, demand]
}

fn segment_ref() -> impl Strategy<Value = SegmentRef> {
    (rendition(), any::<u64>()).prop_map(|(rendition, sequence)| SegmentRef {
        rendition,
        sequence,
    })
}

fn signed_digest() -> impl Strategy<Value = SignedDigest> {
    (
        swarm(),
        rendition(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..20_000),
        1024u32..8192,
        any::<[u8; 32]>(),
    )
        .prop_map(|(s, r, n, data, chunk, secret)| {
            DigestSigner::from_secret(secret).sign(SegmentDigest::compute(
                SegmentId::new(s, r, n),
                &data,
                chunk,
            ))
        })
}

fn frame() -> impl Strategy<Value = Frame> {
    let handshake = (any::<u8>(), any::<u8>(), any::<u64>(), swarm()).prop_map(
        |(min_version, max_version, caps, swarm)| {
            Frame::Handshake(Handshake {
                min_version,
                max_version,
                capabilities: Capabilities(caps),
                swarm,
            })
        },
    );
    let have = (
        rendition(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(rendition, base, bitmap)| {
            Frame::Have(Availability {
                rendition,
                base,
                bitmap: Bytes::from(bitmap),
            })
        });
    let delta = (
        rendition(),
        proptest::collection::vec(any::<u64>(), 0..40),
        proptest::collection::vec(any::<u64>(), 0..40),
    )
        .prop_map(|(rendition, added, removed)| Frame::HaveDelta {
            rendition,
            added,
            removed,
        });
    let request = (any::<u32>(), segment_ref(), any::<u64>(), any::<u64>()).prop_map(
        |(id, segment, offset, length)| Frame::Request {
            id: RequestId(id),
            segment,
            offset,
            length,
        },
    );
    let data = (
        any::<u32>(),
        segment_ref(),
        0u64..u64::MAX / 2,
        proptest::collection::vec(any::<u8>(), 0..3000),
    )
        .prop_map(|(id, segment, offset, payload)| Frame::Data {
            id: RequestId(id),
            segment,
            offset,
            payload: Bytes::from(payload),
        });
    let cancel = any::<u32>().prop_map(|id| Frame::Cancel { id: RequestId(id) });
    let absent = (any::<u32>(), segment_ref()).prop_map(|(id, segment)| Frame::Absent {
        id: RequestId(id),
        segment,
    });
    let busy = (any::<u32>(), any::<u32>()).prop_map(|(id, retry_after_ms)| Frame::Busy {
        id: RequestId(id),
        retry_after_ms,
    });
    let digest = signed_digest().prop_map(|d| Frame::Digest(Box::new(d)));
    let goodbye =
        (any::<u8>(), "\\PC{0,60}").prop_map(|(code, reason)| Frame::Goodbye { code, reason });
    let fetching = segment_ref().prop_map(|segment| Frame::Fetching { segment });
    let chunks = (
        segment_ref(),
        proptest::collection::vec(any::<u8>(), 0..=MAX_CHUNK_MAP_BYTES),
    )
        .prop_map(|(segment, bitmap)| Frame::Chunks {
            segment,
            bitmap: Bytes::from(bitmap),
        });
    prop_oneof![
        handshake, have, delta, request, data, cancel, absent, busy, digest, goodbye, fetching,
        chunks
    ]
}

/// Flips, inserts or removes bytes of a valid encoding.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(pos, op, val) in edits {
        if bytes.is_empty() {
            bytes.push(val);
            continue;
        }
        let i = pos % bytes.len();
        match op % 3 {
            0 => bytes[i] ^= val | 1,
            1 => bytes.insert(i, val),
            _ => {
                bytes.remove(i);
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn to_tracker_round_trips(msg in to_tracker()) {
        let json = msg.to_json();
        prop_assert_eq!(ToTracker::from_json_str(&json).unwrap(), msg.clone());
        prop_assert_eq!(ToTracker::from_json(json.as_bytes()).unwrap(), msg);
    }

    #[test]
    fn session_descriptions_keep_their_fields(
        kind in prop_oneof!["offer", "answer", "pranswer"],
        sdp in any::<String>(),
    ) {
        let d = SessionDescription::new(&kind, &sdp);
        prop_assert_eq!((d.kind(), d.sdp()), (kind, sdp));
    }

    #[test]
    fn from_tracker_round_trips(msg in from_tracker()) {
        let json = msg.to_json();
        prop_assert_eq!(FromTracker::from_json(json.as_bytes()).unwrap(), msg.clone());
        // Written after what a buffer holds, the same text.
        let mut buf = b"head".to_vec();
        msg.write_json(&mut buf);
        prop_assert_eq!(&buf[4..], json.as_bytes());
    }

    #[test]
    fn frames_round_trip(frames in proptest::collection::vec(frame(), 1..6)) {
        let msg = Bytes::from(encode_frames(&frames));
        prop_assert_eq!(decode_message(&msg, LARGE_MAX_MESSAGE).unwrap(), frames);
    }

    #[test]
    fn tracker_decoders_never_panic(bytes: Vec<u8>) {
        let _ = ToTracker::from_json(&bytes);
        let _ = FromTracker::from_json(&bytes);
    }

    #[test]
    fn tracker_decoders_never_panic_on_mutated_messages(
        to in to_tracker(),
        from in from_tracker(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
    ) {
        let bytes = mutate(to.to_json().into_bytes(), &edits);
        let decoded = ToTracker::from_json(&bytes);
        // Offers are decoded when the tracker relays them.
        if let Ok(ToTracker::Announce(a)) = &decoded {
            let _ = a.offers.to_vec();
        }
        // The tracker decodes text: it must agree with the bytes' decoder.
        if let Ok(text) = std::str::from_utf8(&bytes) {
            match (&decoded, ToTracker::from_json_str(text)) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, &b),
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "bytes {:?}, text {:?}", a, b),
            }
        }
        let _ = FromTracker::from_json(&mutate(from.to_json().into_bytes(), &edits));
    }

    #[test]
    fn wire_decoder_never_panics(bytes: Vec<u8>) {
        let _ = decode_message(&Bytes::from(bytes), LARGE_MAX_MESSAGE);
    }

    #[test]
    fn wire_decoder_never_panics_on_mutated_messages(
        frames in proptest::collection::vec(frame(), 1..4),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
    ) {
        let msg = mutate(encode_frames(&frames), &edits);
        let _ = decode_message(&Bytes::from(msg), LARGE_MAX_MESSAGE);
    }

    #[test]
    fn digest_decoder_never_panics_on_mutated_digests(
        d in signed_digest(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
    ) {
        let mut enc = Vec::new();
        d.encode(&mut enc);
        let _ = SignedDigest::decode(&mutate(enc, &edits));
    }
}
