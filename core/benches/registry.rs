//! Cost of the registry's announce handling: a peer re-announcing with 5 offers in a swarm of
//! 1 000 peers (ranking a sample of 64 candidates, relaying 5 offers), and an announce without
//! offers.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use swarmcdn_core::ids::{PeerId, RenditionId, SwarmId};
use swarmcdn_core::registry::{ConnId, Registry, RegistryConfig};
use swarmcdn_core::time::Time;
use swarmcdn_core::tracker_proto::{
    Announce, AnnounceEvent, Offer, OfferId, PeerInfo, Role, SessionDescription, ToTracker,
};

const SWARM: SwarmId = SwarmId([7; 20]);

fn peer(i: u32) -> PeerId {
    let mut id = [0u8; 20];
    id[..4].copy_from_slice(&i.to_be_bytes());
    PeerId(id)
}

fn info(i: u32) -> PeerInfo {
    PeerInfo {
        role: Some(Role::Viewer),
        rendition: Some(RenditionId([(i % 3) as u8; 8])),
        position: Some(1000 + u64::from(i % 10)),
        upload_slots: Some(i % 5),
        ..PeerInfo::default()
    }
}

fn populated(n: u32) -> Registry {
    // Offers expire at once, so that they do not pile up across iterations (virtual time
    // advances 1 µs per iteration).
    let config = RegistryConfig {
        offer_ttl: std::time::Duration::from_micros(1),
        ..RegistryConfig::default()
    };
    let mut r = Registry::new(config, 1).unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let a = Announce {
            event: Some(AnnounceEvent::Started),
            ext: Some(info(i)),
            ..Announce::new(SWARM, peer(i))
        };
        r.handle_message(
            Time::ZERO,
            ConnId(u64::from(i)),
            ToTracker::Announce(a),
            &mut out,
        );
        out.clear();
    }
    r
}

fn bench(c: &mut Criterion) {
    let sdp = SessionDescription::offer("v=0\r\n".repeat(40));
    let mut g = c.benchmark_group("registry");
    g.bench_function("announce_5_offers_swarm_1000", |b| {
        let mut r = populated(1000);
        let mut out = Vec::with_capacity(16);
        let mut round = 0u32;
        b.iter_batched(
            || {
                round = round.wrapping_add(1);
                let offers = (0..5u8)
                    .map(|k| {
                        let mut id = [k; 20];
                        id[..4].copy_from_slice(&round.to_be_bytes());
                        Offer {
                            offer_id: OfferId(id),
                            offer: sdp.clone(),
                        }
                    })
                    .collect();
                let i = round % 1000;
                let a = Announce {
                    offers,
                    ext: Some(info(i)),
                    ..Announce::new(SWARM, peer(i))
                };
                (round, a)
            },
            |(round, a)| {
                let now = Time::from_micros(u64::from(round));
                let conn = ConnId(u64::from(round % 1000));
                r.handle_message(now, conn, ToTracker::Announce(a), &mut out);
                out.clear();
                r.handle_timeout(now);
            },
            BatchSize::SmallInput,
        );
    });
    g.bench_function("announce_no_offers_swarm_1000", |b| {
        let mut r = populated(1000);
        let mut out = Vec::with_capacity(4);
        let mut i = 0u32;
        b.iter(|| {
            i = (i + 1) % 1000;
            let a = Announce {
                ext: Some(info(i)),
                ..Announce::new(SWARM, peer(i))
            };
            r.handle_message(
                Time::ZERO,
                ConnId(u64::from(i)),
                ToTracker::Announce(a),
                &mut out,
            );
            out.clear();
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
