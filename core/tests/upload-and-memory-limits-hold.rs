//! The upload rate cap, the upload volume budget and the memory budget hold, and playback
//! does not suffer from them (HTTP fills in).

mod common;

use common::*;
use swarmcdn_core::node::NodeRole;
use swarmcdn_core::time::Time;
use swarmcdn_core::wire;

#[test]
fn upload_rate_cap_holds() {
    let mut h = Harness::new(StreamSpec::live(), 6);
    let rate = 400_000;
    let mut seed = h.config(0, NodeRole::Seed);
    seed.upload.rate = Some(rate);
    let seed = h.add(
        seed,
        Link {
            up: 50_000_000,
            ..Link::default()
        },
    );
    // Viewers that do not upload: the seed is everyone's source, so demand exceeds the cap.
    for i in 1..=4 {
        let mut c = h.config(i, NodeRole::Viewer);
        c.upload.enabled = false;
        h.add(
            c,
            Link {
                up: 50_000,
                ..Link::default()
            },
        );
    }
    let mut last = 0;
    for t in 1..=90u64 {
        h.run_until(Time::from_secs(t));
        let up = h.nodes[seed].node.stats().p2p_bytes_up;
        // Over any second: at most the rate plus the bucket's burst.
        let burst = (rate / 4).max(wire::LARGE_MAX_MESSAGE as u64);
        assert!(up - last <= rate + burst, "second {t}: {} bytes", up - last);
        last = up;
    }
    let up = h.nodes[seed].node.stats().p2p_bytes_up;
    assert!(up <= rate * 90 + rate, "{up} bytes in 90 s");
    assert!(up >= rate * 60, "the cap is used, not just respected: {up}");
    assert_eq!(h.total_stalls(), 0, "{}", h.summary());
    assert_eq!(h.bad_bytes(), 0);
}

#[test]
fn upload_volume_budget_holds() {
    let mut h = Harness::new(StreamSpec::live(), 7);
    let budget = 3_000_000;
    let mut first = h.config(0, NodeRole::Viewer);
    first.upload.volume_budget = Some(budget);
    let first = h.add(first, Link::default());
    h.run_for(secs(3));
    for i in 1..=3 {
        let c = h.config(i, NodeRole::Viewer);
        h.add(c, Link::default());
    }
    h.run_until(Time::from_secs(120));
    println!("{}", h.summary());
    let up = h.nodes[first].node.stats().p2p_bytes_up;
    assert!(
        up <= budget + wire::LARGE_MAX_MESSAGE as u64,
        "uploaded {up}"
    );
    assert!(up >= budget - 500_000, "the budget is used: {up}");
    // The others still share among themselves.
    let others: u64 = (1..=3).map(|i| h.nodes[i].node.stats().p2p_bytes_up).sum();
    assert!(others > 10_000_000, "{}", h.summary());
    assert_eq!(h.total_stalls(), 0, "{}", h.summary());
}

#[test]
fn memory_budget_holds() {
    let mut h = Harness::new(StreamSpec::live(), 8);
    let seed = h.config(0, NodeRole::Seed);
    h.add(
        seed,
        Link {
            up: 50_000_000,
            ..Link::default()
        },
    );
    let budget = 2_000_000;
    let mut small = h.config(1, NodeRole::Viewer);
    small.cache_bytes = budget;
    let small = h.add(small, Link::default());
    let c = h.config(2, NodeRole::Viewer);
    h.add(c, Link::default());
    for t in 1..=90u64 {
        h.run_until(Time::from_secs(t));
        let st = h.nodes[small].node.stats();
        assert!(
            st.cache_bytes <= budget,
            "t={t}: {} bytes cached",
            st.cache_bytes
        );
    }
    let st = h.nodes[small].node.stats();
    assert!(st.cached_segments <= 4);
    let p = h.nodes[small].player.as_ref().unwrap();
    assert_eq!(p.stalls, 0, "{}", h.summary());
    assert!(p.delivered.len() >= 45);
}

/// What a node remembers per segment (digests, and per neighbour what it has and which
/// digests it was sent) stays bounded over a long live session: it does not grow with the
/// number of segments the stream has had.
#[test]
fn per_segment_records_do_not_grow_with_time() {
    let mut h = Harness::new(StreamSpec::live(), 9);
    let mut seed = h.config(0, NodeRole::Seed);
    seed.cache_bytes = 6_000_000;
    h.add(
        seed,
        Link {
            up: 50_000_000,
            ..Link::default()
        },
    );
    for i in 1..=3 {
        let mut c = h.config(i, NodeRole::Viewer);
        c.cache_bytes = 3_000_000;
        h.add(c, Link::default());
    }
    let records = |h: &Harness| -> Vec<usize> {
        h.nodes
            .iter()
            .map(|n| n.node.stats().segment_records)
            .collect()
    };
    h.run_until(Time::from_secs(150));
    let half = records(&h);
    h.run_until(Time::from_secs(300));
    let end = records(&h);
    println!("segment records at 150 s {half:?}, at 300 s {end:?}");
    for n in &h.nodes {
        assert!(n.dropped.is_empty(), "{:?}", n.dropped);
    }
    for (n, (a, b)) in half.iter().zip(&end).enumerate() {
        assert!(
            *b <= a + a / 4 + 8,
            "node {n}: {a} records at 150 s, {b} at 300 s\n{}",
            h.summary()
        );
    }
    assert_eq!(h.total_stalls(), 0, "{}", h.summary());
}
