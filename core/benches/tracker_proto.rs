//! Cost of decoding tracker messages: an announce with ten offers (the shape of the tracker
//! benchmark's load, and of a real client's first announce) and an answer; encoding a relayed
//! offer and an announce response.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use swarmcdn_core::ids::{PeerId, SwarmId};
use swarmcdn_core::tracker_proto::{
    Announce, AnnounceResponse, Answer, FromTracker, Offer, OfferId, RelayedOffer,
    SessionDescription, ToTracker,
};

/// Ids as real clients make them: random bytes, so some need escapes on the wire.
fn id(seed: u64) -> [u8; 20] {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    std::array::from_fn(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    })
}

fn sdp(i: u64) -> String {
    format!(
        "v=0\r\no=- {i} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         a=msid-semantic: WMS\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
         c=IN IP4 0.0.0.0\r\na=ice-ufrag:{i:08x}\r\na=ice-pwd:0123456789abcdef01234567\r\n\
         a=ice-options:trickle\r\na=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:\
         CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\na=setup:actpass\r\n\
         a=mid:0\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n\
         a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n"
    )
}

fn bench(c: &mut Criterion) {
    let announce = ToTracker::Announce(Announce {
        numwant: Some(10),
        offers: (0..10)
            .map(|k| Offer {
                offer_id: OfferId(id(100 + k)),
                offer: SessionDescription::offer(sdp(k)),
            })
            .collect(),
        ..Announce::new(SwarmId(id(1)), PeerId(id(2)))
    })
    .to_json();
    let answer = ToTracker::Answer(Answer {
        info_hash: SwarmId(id(1)),
        peer_id: PeerId(id(2)),
        to_peer_id: PeerId(id(3)),
        offer_id: OfferId(id(4)),
        answer: SessionDescription::answer(sdp(7)),
        ext: None,
    })
    .to_json();

    let mut g = c.benchmark_group("tracker_proto");
    for (name, json) in [("announce_10_offers", &announce), ("answer", &answer)] {
        g.throughput(Throughput::Bytes(json.len() as u64));
        g.bench_function(format!("decode_{name}"), |b| {
            b.iter(|| ToTracker::from_json_str(std::hint::black_box(json)).unwrap())
        });
    }
    let relayed = FromTracker::Offer(RelayedOffer {
        info_hash: SwarmId(id(1)),
        peer_id: PeerId(id(2)),
        offer_id: OfferId(id(4)),
        offer: SessionDescription::offer(sdp(7)),
        ext: None,
    });
    let response = FromTracker::AnnounceResponse(AnnounceResponse {
        info_hash: SwarmId(id(1)),
        interval: Some(120),
        min_interval: Some(15),
        complete: Some(3),
        incomplete: Some(40),
        tracker_id: None,
        warning: None,
    });
    for (name, msg) in [
        ("relayed_offer", &relayed),
        ("announce_response", &response),
    ] {
        g.throughput(Throughput::Bytes(msg.to_json().len() as u64));
        g.bench_function(format!("encode_{name}"), |b| {
            b.iter(|| std::hint::black_box(msg).to_json())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
