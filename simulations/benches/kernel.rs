//! The event queue against `std::collections::BinaryHeap` in the hold model: n events
//! pending, each pop schedules one event an exponential time (mean 1 s) later.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use swarmcdn_sim::kernel::EventQueue;

fn delays(n: usize) -> Vec<u64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            (-(1.0 - u).ln() * 1e6) as u64
        })
        .collect()
}

fn hold(c: &mut Criterion) {
    let mut g = c.benchmark_group("hold");
    g.sample_size(10);
    const OPS: usize = 1_000_000;
    for pending in [1_000usize, 100_000, 1_000_000] {
        let d = delays(OPS + pending);
        g.throughput(Throughput::Elements(OPS as u64));
        g.bench_with_input(
            BenchmarkId::new("wheel", pending),
            &pending,
            |b, &pending| {
                b.iter_batched_ref(
                    || {
                        let mut q = EventQueue::new();
                        for (i, t) in d[..pending].iter().enumerate() {
                            q.push(*t, i as u32);
                        }
                        q
                    },
                    |q| {
                        for t in &d[pending..] {
                            let (now, e) = q.pop().unwrap();
                            q.push(now + t, e);
                        }
                    },
                    criterion::BatchSize::LargeInput,
                );
            },
        );
        g.bench_with_input(
            BenchmarkId::new("binary_heap", pending),
            &pending,
            |b, &pending| {
                b.iter_batched_ref(
                    || {
                        let mut q = BinaryHeap::new();
                        for (i, t) in d[..pending].iter().enumerate() {
                            q.push(Reverse((*t, i as u64, i as u32)));
                        }
                        (q, pending as u64)
                    },
                    |(q, seq)| {
                        for t in &d[pending..] {
                            let Reverse((now, _, e)) = q.pop().unwrap();
                            *seq += 1;
                            q.push(Reverse((now + t, *seq, e)));
                        }
                    },
                    criterion::BatchSize::LargeInput,
                );
            },
        );
    }
    g.finish();
}

criterion_group!(benches, hold);
criterion_main!(benches);
