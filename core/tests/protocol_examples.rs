//! Every byte example and computed value in `docs/protocol.md`, checked against the code. If
//! one of these fails, the code and the spec disagree: fix whichever is wrong.

use bytes::Bytes;
use swarmcdn_core::ids::{PeerId, RenditionAttributes, RenditionId, SegmentId, StreamKey, SwarmId};
use swarmcdn_core::integrity::{DigestSigner, SegmentDigest, SignedDigest, TrustedKeys};
use swarmcdn_core::tracker_proto::{
    Announce, AnnounceEvent, Demand, FromTracker, Offer, OfferId, PeerInfo, RelayedOffer, Role,
    SessionDescription, Standby, ToTracker,
};
use swarmcdn_core::varint;
use swarmcdn_core::wire::{
    Availability, Capabilities, Frame, Handshake, RequestId, SegmentRef, decode_message,
    encode_frames,
};

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn one(f: Frame) -> String {
    let bytes = encode_frames(std::slice::from_ref(&f));
    assert_eq!(
        decode_message(&Bytes::from(bytes.clone()), 256 * 1024).unwrap(),
        [f]
    );
    hex(&bytes)
}

const R: RenditionId = RenditionId([0xaa; 8]);

fn seg(sequence: u64) -> SegmentRef {
    SegmentRef {
        rendition: R,
        sequence,
    }
}

#[test]
fn varints() {
    for (v, h) in [
        (0u64, "00"),
        (127, "7f"),
        (128, "80 01"),
        (300, "ac 02"),
        (65536, "80 80 04"),
    ] {
        let mut out = Vec::new();
        varint::put(&mut out, v);
        assert_eq!(hex(&out), h);
    }
}

#[test]
fn ids() {
    let r = RenditionId::from_attributes(&RenditionAttributes {
        bandwidth: Some(800_000),
        codecs: Some("avc1.4d401e,mp4a.40.2".into()),
        resolution: Some((640, 360)),
        frame_rate: Some(30.0),
        name: None,
    });
    assert_eq!(r.to_hex(), "169c78317ab5603d");
    let s = SwarmId::derive(StreamKey::ContentId("demo"), &[]);
    assert_eq!(s.to_hex(), "d4b59ff7ca3ee625c41ddad8342ba3cb116b8fab");
    let s = SwarmId::derive(
        StreamKey::PlaylistUrl("https://cdn.example/live/master.m3u8?token=abc"),
        &[r],
    );
    assert_eq!(s.to_hex(), "d240e812e5d7783bc6406177732454f1515313d1");
    let seg = SegmentId::new(SwarmId([0x11; 20]), R, 1000);
    assert_eq!(
        hex(&seg.to_bytes()),
        "11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 aa aa aa aa aa aa aa aa 00 00 00 00 00 00 03 e8"
    );
    assert_eq!(&PeerId::generate([0x42; 12]).0[..8], b"-SC0001-");
}

#[test]
fn tracker_messages() {
    let mut info_hash = [b'a'; 20];
    info_hash[0] = 0x00;
    info_hash[1] = 0x7f;
    info_hash[2] = 0x80;
    info_hash[3] = 0xff;
    let announce = ToTracker::Announce(Announce {
        event: Some(AnnounceEvent::Started),
        numwant: Some(1),
        uploaded: Some(0),
        downloaded: Some(0),
        offers: vec![Offer {
            offer_id: OfferId([b'o'; 20]),
            offer: SessionDescription::offer("v=0\r\n"),
        }]
        .into(),
        ext: Some(PeerInfo {
            role: Some(Role::Viewer),
            rendition: Some(R),
            position: Some(1000),
            ..PeerInfo::default()
        }),
        ..Announce::new(SwarmId(info_hash), PeerId(*b"-SC0001-abcdefghijkl"))
    });
    let json = announce.to_json();
    assert_eq!(
        json,
        "{\"action\":\"announce\",\"info_hash\":\"\\u0000\u{7f}\u{80}\u{ff}aaaaaaaaaaaaaaaa\",\"peer_id\":\"-SC0001-abcdefghijkl\",\"numwant\":1,\"uploaded\":0,\"downloaded\":0,\"event\":\"started\",\"offers\":[{\"offer_id\":\"oooooooooooooooooooo\",\"offer\":{\"type\":\"offer\",\"sdp\":\"v=0\\r\\n\"}}],\"swarmcdn\":{\"role\":\"viewer\",\"rendition\":\"aaaaaaaaaaaaaaaa\",\"position\":1000}}"
    );
    // On the wire U+0080 and U+00FF are two UTF-8 bytes each.
    assert_eq!(hex(&json.as_bytes()[34..42]), "5c 75 30 30 30 30 7f c2");
    assert_eq!(ToTracker::from_json(json.as_bytes()).unwrap(), announce);

    let relayed = FromTracker::Offer(RelayedOffer {
        info_hash: SwarmId([b'i'; 20]),
        peer_id: PeerId([b'p'; 20]),
        offer_id: OfferId([b'o'; 20]),
        offer: SessionDescription::offer("v=0\r\n"),
        ext: Some(PeerInfo {
            role: Some(Role::Seed),
            ..PeerInfo::default()
        }),
    });
    assert_eq!(
        relayed.to_json(),
        r#"{"action":"announce","info_hash":"iiiiiiiiiiiiiiiiiiii","peer_id":"pppppppppppppppppppp","offer":{"type":"offer","sdp":"v=0\r\n"},"offer_id":"oooooooooooooooooooo","swarmcdn":{"role":"seed"}}"#
    );
}

#[test]
fn seeds_on_demand() {
    let standby = ToTracker::Standby(Standby {
        peer_id: PeerId(*b"-SC0001-seedseedseed"),
        ext: Some(PeerInfo {
            role: Some(Role::Seed),
            ..PeerInfo::default()
        }),
    });
    let json =
        r#"{"action":"seed_standby","peer_id":"-SC0001-seedseedseed","swarmcdn":{"role":"seed"}}"#;
    assert_eq!(standby.to_json(), json);
    assert_eq!(ToTracker::from_json(json.as_bytes()).unwrap(), standby);
    let demand = FromTracker::Demand(Demand {
        info_hash: SwarmId([b'i'; 20]),
        stream: "http://origin.example/live/master.m3u8".into(),
    });
    let json = r#"{"action":"seed_demand","info_hash":"iiiiiiiiiiiiiiiiiiii","stream":"http://origin.example/live/master.m3u8"}"#;
    assert_eq!(demand.to_json(), json);
    assert_eq!(FromTracker::from_json(json.as_bytes()).unwrap(), demand);
    // Both sections quote these messages.
    let doc = include_str!("../../docs/protocol.md");
    assert!(doc.contains(&standby.to_json()));
    assert!(doc.contains(&demand.to_json()));
    // A stream that is not an http(s) URL is refused.
    let bad = r#"{"action":"seed_demand","info_hash":"iiiiiiiiiiiiiiiiiiii","stream":"file:///etc/passwd"}"#;
    assert!(FromTracker::from_json(bad.as_bytes()).is_err());
}

#[test]
fn wire_frames() {
    let hs = Handshake {
        min_version: 1,
        max_version: 1,
        capabilities: Capabilities::LARGE_MESSAGES
            .with(Capabilities::UPLOAD)
            .with(Capabilities::DIGESTS),
        swarm: SwarmId([0x11; 20]),
    };
    assert_eq!(
        one(Frame::Handshake(hs)),
        "18 01 01 01 0b 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11"
    );
    assert_eq!(
        one(Frame::Have(Availability::from_sequences(
            R,
            [300, 301, 303, 310]
        ))),
        "0e 02 aa aa aa aa aa aa aa aa ac 02 02 0b 04"
    );
    assert_eq!(
        one(Frame::HaveDelta {
            rendition: R,
            added: vec![311],
            removed: vec![300, 301],
        }),
        "11 03 aa aa aa aa aa aa aa aa 01 b7 02 02 ac 02 ad 02"
    );
    assert_eq!(
        one(Frame::Request {
            id: RequestId(7),
            segment: seg(300),
            offset: 65536,
            length: 0,
        }),
        "10 04 07 aa aa aa aa aa aa aa aa ac 02 80 80 04 00"
    );
    assert_eq!(
        one(Frame::Data {
            id: RequestId(7),
            segment: seg(300),
            offset: 65536,
            payload: Bytes::from_static(b"hello"),
        }),
        "14 05 07 aa aa aa aa aa aa aa aa ac 02 80 80 04 68 65 6c 6c 6f"
    );
    assert_eq!(one(Frame::Cancel { id: RequestId(7) }), "02 06 07");
    assert_eq!(
        one(Frame::Absent {
            id: RequestId(7),
            segment: seg(300),
        }),
        "0c 07 07 aa aa aa aa aa aa aa aa ac 02"
    );
    assert_eq!(
        one(Frame::Busy {
            id: RequestId(7),
            retry_after_ms: 500,
        }),
        "04 08 07 f4 03"
    );
    assert_eq!(
        one(Frame::Goodbye {
            code: 2,
            reason: "bad".into(),
        }),
        "06 0a 02 03 62 61 64"
    );
    assert_eq!(
        one(Frame::Fetching { segment: seg(311) }),
        "0b 0b aa aa aa aa aa aa aa aa b7 02"
    );
    assert_eq!(
        one(Frame::Chunks {
            segment: seg(311),
            bitmap: Bytes::from_static(&[0x05, 0x80]),
        }),
        "0e 0c aa aa aa aa aa aa aa aa b7 02 02 05 80"
    );
    // Two frames in one message; an extension frame (kind 0x40) is skipped.
    let msg = Bytes::from_static(&[0x02, 0x06, 0x07, 0x03, 0x40, 0xde, 0xad]);
    assert_eq!(
        decode_message(&msg, 64 * 1024).unwrap(),
        [
            Frame::Cancel { id: RequestId(7) },
            Frame::Unknown { kind: 0x40 }
        ]
    );
}

#[test]
fn signed_digest() {
    let signer = DigestSigner::from_secret([9; 32]);
    assert_eq!(
        signer.public_key().to_string(),
        "fd1724385aa0c75b64fb78cd602fa1d991fdebf76b13c58ed702eac835e9f618"
    );
    let segment = SegmentId::new(SwarmId([1; 20]), RenditionId([2; 8]), 42);
    let data = vec![b'a'; 2500];
    let digest = SegmentDigest::compute(segment, &data, 1024);
    assert_eq!(digest.chunk_count(), 3);
    assert_eq!(
        hex(digest.root()),
        "58 22 a8 1e 04 34 0c 9c d9 ad 84 05 b3 f8 9a 6b 72 26 ea 14 dd a6 72 a2 98 a5 8f 08 5f e2 66 03"
    );
    let signed = signer.sign(digest);
    let mut enc = Vec::new();
    signed.encode(&mut enc);
    assert_eq!(enc.len(), 36 + 2 + 2 + 3 * 32 + 32 + 64);
    assert_eq!(hex(&enc[36..40]), "c4 13 80 08");
    assert_eq!(
        hex(signed.signature()),
        "14 18 30 f4 36 ff ba 66 73 90 29 de cf 22 96 36 a5 ad f1 7b f9 fa b3 39 20 9c c6 31 50 02 33 df e8 55 7d ae 07 0a b8 de 7b 88 0e 80 de ce 7f 5b eb 39 22 4c 41 3c 6f 27 34 0c 0d 45 db 3a 57 07"
    );
    let back = SignedDigest::decode(&enc).unwrap();
    let v = back
        .verify(&TrustedKeys::new([signer.public_key()]))
        .unwrap();
    v.verify_chunk(2, &data[2048..]).unwrap();
}

#[test]
fn rendezvous() {
    use swarmcdn_core::rendezvous::{pick, weight};
    let s = SwarmId([0x11; 20]);
    assert_eq!(
        format!("{:016x}", weight(&s, "wss://t1.example")),
        "a52901a237d0e7e1"
    );
    let trackers = ["wss://t1.example", "wss://t2.example", "wss://t3.example"];
    assert_eq!(trackers[pick(&s, &trackers).unwrap()], "wss://t2.example");
}

#[test]
fn section_6_mesh_request_example() {
    use swarmcdn_core::mesh_proto::FetchRequest;
    let req = FetchRequest {
        segment: SegmentId::new(SwarmId([0x11; 20]), RenditionId([0x22; 8]), 5),
        range: None,
        url: "http://o/s.m4s".into(),
        resource_range: None,
    };
    let bytes = req.encode();
    assert_eq!(
        hex(&bytes),
        "01 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 \
         22 22 22 22 22 22 22 22 00 00 00 00 00 00 00 05 00 \
         0e 68 74 74 70 3a 2f 2f 6f 2f 73 2e 6d 34 73 00"
    );
    assert_eq!(FetchRequest::decode(&bytes).unwrap(), req);
}
