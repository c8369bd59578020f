//! Per-input cost of `Node`: a live swarm of one seed and 30 viewers (so each viewer has up to
//! 20 neighbours and the seed 30) runs for 30 s of virtual time in the scenario harness; the
//! figure is wall time divided by the inputs handed to nodes (peer messages, HTTP data,
//! timeouts, player and playlist updates). It includes the harness's own work (and, with real
//! segment sizes, SHA-256 of every chunk and the copies of the data), so it is an upper bound
//! on the node's cost.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use swarmcdn_core::node::NodeRole;
use swarmcdn_core::time::Time;

fn swarm(viewers: usize, segment_bytes: usize) -> Harness {
    let spec = StreamSpec {
        segment_bytes,
        ..StreamSpec::live()
    };
    let mut h = Harness::new(spec, 11);
    let seed = h.config(0, NodeRole::Seed);
    h.add(
        seed,
        Link {
            up: 100_000_000,
            down: 100_000_000,
            ..Link::default()
        },
    );
    for i in 1..=viewers {
        let c = h.config(i, NodeRole::Viewer);
        h.add(c, Link::default());
    }
    h
}

fn run(viewers: usize, segment_bytes: usize) -> Harness {
    let mut h = swarm(viewers, segment_bytes);
    h.run_until(Time::from_secs(30));
    h
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("node");
    g.sample_size(10);
    // Small segments: the cost of the control path (scheduling, framing, bookkeeping).
    let inputs = run(30, 16_000).node_inputs;
    g.throughput(Throughput::Elements(inputs));
    g.bench_function("live_30_viewers_16KB_segments_per_input", |b| {
        b.iter(|| run(30, 16_000))
    });
    // Realistic segments (500 KB, 64 KiB chunks): adds hashing every chunk and copying data.
    let inputs = run(30, 500_000).node_inputs;
    g.throughput(Throughput::Elements(inputs));
    g.bench_function("live_30_viewers_500KB_segments_per_input", |b| {
        b.iter(|| run(30, 500_000))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
