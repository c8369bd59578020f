//! End to end on loopback: seeds in the seed mesh (real `peer-node` processes over libp2p),
//! the test origin counting every request, the tracker and headless viewers.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Harness, metric, serial, stats};
use swarmcdn_core::ids::{RenditionId, SegmentId, SwarmId};
use swarmcdn_core::mesh_proto;

/// A seed's mesh listen addresses, once it has them.
fn mesh_listen(addr: SocketAddr) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let s = stats(addr);
        let listen: Vec<String> = s["mesh"]["listen"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if !listen.is_empty() {
            return listen;
        }
        assert!(Instant::now() < until, "no mesh listen address: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The stream's live seeds as one seed sees them.
fn members(addr: SocketAddr) -> Vec<String> {
    let s = stats(addr);
    s["mesh"]["members"]
        .as_object()
        .and_then(|m| m.values().next())
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until every seed counts `n` live seeds (itself included) and is connected to the
/// others directly.
fn wait_members(seeds: &[SocketAddr], n: usize) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = seeds.iter().all(|a| {
            members(*a).len() == n && stats(*a)["mesh"]["connected"].as_u64() == Some(n as u64 - 1)
        });
        if ok {
            return;
        }
        assert!(
            Instant::now() < until,
            "the mesh did not form: {:?}",
            seeds
                .iter()
                .map(|a| stats(*a)["mesh"].clone())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Segments a seed holds: sequence numbers by rendition (hex id).
fn held(addr: SocketAddr) -> HashMap<String, BTreeSet<u64>> {
    let s = stats(addr);
    let mut out = HashMap::new();
    if let Some(streams) = s["mesh"]["held"].as_object() {
        for renditions in streams.values() {
            for (r, seqs) in renditions.as_object().unwrap() {
                let set: BTreeSet<u64> = seqs
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect();
                out.insert(r.clone(), set);
            }
        }
    }
    out
}

/// Every seed holds every segment of `from..=to` (for every rendition any of them holds).
fn assert_all_hold(seeds: &[(&str, SocketAddr)], from: u64, to: u64) {
    let all: Vec<(&str, HashMap<String, BTreeSet<u64>>)> =
        seeds.iter().map(|(n, a)| (*n, held(*a))).collect();
    let renditions: BTreeSet<String> = all.iter().flat_map(|(_, h)| h.keys().cloned()).collect();
    assert!(!renditions.is_empty(), "no seed holds anything");
    for r in &renditions {
        for (name, h) in &all {
            let have = h.get(r).cloned().unwrap_or_default();
            let missing: Vec<u64> = (from..=to).filter(|s| !have.contains(s)).collect();
            assert!(
                missing.is_empty(),
                "{name} lacks segments {missing:?} of rendition {r} (holds {have:?})"
            );
        }
    }
}

fn sum_metric(seeds: &[SocketAddr], name: &str) -> f64 {
    seeds.iter().map(|a| metric(*a, name).unwrap_or(0.0)).sum()
}

#[test]
fn three_seeds_pull_each_segment_from_the_origin_about_once_and_all_hold_every_segment() {
    let _guard = serial();
    let h = Harness::start("mesh-three");
    let (_a, am) = h.mesh_seed("seed-a", &[], &[]);
    let boot = mesh_listen(am);
    // B and C know only A: C finds B through Kademlia.
    let (_b, bm) = h.mesh_seed("seed-b", &boot, &[]);
    let (_c, cm) = h.mesh_seed("seed-c", &boot, &[]);
    wait_members(&[am, bm, cm], 3);
    let first = h.origin.live_edge().unwrap();
    std::thread::sleep(Duration::from_secs(60));
    let last = h.origin.live_edge().unwrap();
    let (requests, bytes, distinct) = h.origin_copies();
    let copies = bytes as f64 / distinct as f64;
    let seeds = [am, bm, cm];
    let fetched = sum_metric(&seeds, "swarmcdn_mesh_fetched_total");
    let pulled = sum_metric(&seeds, "swarmcdn_mesh_origin_requests_total");
    let takeovers = sum_metric(&seeds, "swarmcdn_mesh_takeovers_total");
    eprintln!(
        "origin: {requests} segment requests, {copies:.3} copies per segment; mesh: {pulled} origin pulls, {fetched} fetches between seeds, {takeovers} takeovers; segments {first}..={last}"
    );
    for (path, (n, _)) in &h.origin.stats().snapshot().segments {
        if *n > 1 {
            eprintln!("{path}: {n} requests");
        }
    }
    for (name, a) in [("a", am), ("b", bm), ("c", cm)] {
        eprintln!(
            "seed {name}: origin pulls {:?}, fetched {:?}, pulled through {:?}",
            metric(a, "swarmcdn_mesh_origin_requests_total"),
            metric(a, "swarmcdn_mesh_fetched_total"),
            metric(a, "swarmcdn_mesh_pulled_through_total")
        );
    }
    for (name, a) in [("a", am), ("b", bm), ("c", cm)] {
        let own = metric(a, "swarmcdn_mesh_origin_requests_total").unwrap_or(0.0);
        assert!(own > 0.0, "seed {name} owned nothing");
    }
    // Without the mesh this is 3.0; the few extra copies come from the seconds around joins.
    assert!(copies <= 1.10, "origin served {copies} copies per segment");
    assert!(fetched >= 2.0 * (last - first) as f64, "fetched {fetched}");
    assert_eq!(
        sum_metric(&seeds, "swarmcdn_mesh_integrity_failures_total"),
        0.0
    );
    assert_all_hold(
        &[("seed-a", am), ("seed-b", bm), ("seed-c", cm)],
        first,
        last - 1,
    );
}

/// The owner of segment `seq` among `members`, as every seed computes it.
fn owner(swarm: &SwarmId, rendition: &RenditionId, seq: u64, members: &[String]) -> String {
    let ids: Vec<Vec<u8>> = members
        .iter()
        .map(|m| m.parse::<libp2p::PeerId>().unwrap().to_bytes())
        .collect();
    let seg = SegmentId::new(*swarm, *rendition, seq);
    let first = mesh_proto::owner_rank(&seg, &ids)[0];
    members[ids.iter().position(|i| i == first).unwrap()].clone()
}

fn parse_id<const N: usize>(hex_text: &str) -> [u8; N] {
    hex::decode(hex_text).unwrap().try_into().unwrap()
}

#[test]
fn killing_the_owner_of_the_next_segments_and_a_late_join_leave_no_gap_and_no_stall() {
    let _guard = serial();
    let h = Harness::start("mesh-kill");
    let (a, am) = h.mesh_seed("seed-a", &[], &[]);
    let boot = mesh_listen(am);
    let (b, bm) = h.mesh_seed("seed-b", &boot, &[]);
    let (c, cm) = h.mesh_seed("seed-c", &boot, &[]);
    wait_members(&[am, bm, cm], 3);
    let mut viewers: Vec<_> = (0..3)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(500));
            h.viewer(&format!("viewer{i}"), 45, &[])
        })
        .collect();
    std::thread::sleep(Duration::from_secs(15));
    // The seed that owns the next segment to be published.
    let s = stats(am);
    let swarm_hex = s["mesh"]["members"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let swarm = SwarmId(parse_id(&swarm_hex));
    let rendition_hex = held(am).keys().min().unwrap().clone();
    let rendition = RenditionId(parse_id(&rendition_hex));
    let next = h.origin.live_edge().unwrap() + 1;
    let names = members(am);
    let victim_id = owner(&swarm, &rendition, next, &names);
    let mut procs = [(a, am), (b, bm), (c, cm)];
    let victim = procs
        .iter()
        .position(|(_, m)| stats(*m)["mesh"]["peer_id"].as_str() == Some(victim_id.as_str()))
        .unwrap();
    eprintln!("killing {} (owns segment {next})", procs[victim].0.name);
    procs[victim].0.kill();
    let survivors: Vec<(&str, SocketAddr)> = procs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, (p, m))| (p.name.as_str(), *m))
        .collect();
    // A seed joining after the kill takes its share of ownership from its first segments on.
    std::thread::sleep(Duration::from_secs(6));
    let survivor_boot = mesh_listen(procs[(victim + 1) % 3].1);
    let (_d, dm) = h.mesh_seed("seed-d", &survivor_boot, &[]);
    let joined = h.origin.live_edge().unwrap() + 2;
    for v in &mut viewers {
        let r = h.report(v);
        let name = v.name.clone();
        eprintln!(
            "{name}: stalls {}, http {} p2p {} ({:.1}%)",
            r.stalls,
            r.http_bytes,
            r.p2p_bytes,
            r.p2p_share() * 100.0
        );
        assert_eq!(r.stalls, 0, "{name} stalled");
        assert!(r.played_ms >= 40_000, "{name} played {} ms", r.played_ms);
        h.check_segments(&name, &r);
    }
    let last = h.origin.live_edge().unwrap();
    // The survivors got every segment from the kill on: from each other or, for the dead
    // seed's segments, from the origin; the newcomer every segment from its join on.
    assert_all_hold(&survivors, next, last - 1);
    assert_all_hold(&[("seed-d", dm)], joined, last - 1);
    let d_own = metric(dm, "swarmcdn_mesh_origin_requests_total").unwrap_or(0.0);
    assert!(d_own > 0.0, "the new seed owned nothing");
    let mut addrs: Vec<SocketAddr> = survivors.iter().map(|(_, a)| *a).collect();
    addrs.push(dm);
    for a in &addrs {
        assert_eq!(
            members(*a).len(),
            3,
            "live seeds after the kill and the join: {:?}",
            members(*a)
        );
    }
    assert!(sum_metric(&addrs, "swarmcdn_mesh_ownership_changes_total") >= 2.0);
    let (_, bytes, distinct) = h.origin_copies();
    eprintln!(
        "origin: {:.3} copies per segment; takeovers {}",
        bytes as f64 / distinct as f64,
        sum_metric(&addrs, "swarmcdn_mesh_takeovers_total")
    );
}

#[test]
fn seeds_serving_corrupt_bytes_or_announcing_wrong_digests_are_banned_and_nothing_bad_is_played() {
    let _guard = serial();
    let h = Harness::start("mesh-liars");
    let (_a, am) = h.mesh_seed("seed-a", &[], &[]);
    let boot = mesh_listen(am);
    let (_b, bm) = h.mesh_seed("seed-b", &boot, &[]);
    // One serves corrupt bytes under true digests, the other true bytes under wrong digests.
    let (_l1, l1m) = h.mesh_seed("liar-bytes", &boot, &["--mesh-lie-bytes"]);
    let (_l2, l2m) = h.mesh_seed("liar-digests", &boot, &["--mesh-lie-digests"]);
    let mut liars: Vec<String> = [l1m, l2m]
        .iter()
        .map(|m| stats(*m)["mesh"]["peer_id"].as_str().unwrap().to_string())
        .collect();
    liars.sort();
    let mut viewer = h.viewer("viewer", 30, &[]);
    let r = h.report(&mut viewer);
    eprintln!(
        "viewer: stalls {}, http {} p2p {}, integrity failures {}",
        r.stalls, r.http_bytes, r.p2p_bytes, r.integrity_failures
    );
    assert_eq!(r.stalls, 0);
    h.check_segments("viewer", &r);
    // A seed bans a liar when it gets a bad segment or digest from it. It asks the seeds that
    // announced a segment before its owner, so one seed may get every segment a liar owns
    // from the other good seed and never meet that liar: between them, the good seeds ban
    // both liars, and each bans only liars and stops counting them as live.
    let mut banned_by_any: Vec<String> = Vec::new();
    for (name, a) in [("seed-a", am), ("seed-b", bm)] {
        let s = stats(a);
        let banned: Vec<String> = s["mesh"]["banned"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        assert!(!banned.is_empty(), "{name} banned nobody");
        assert!(
            banned.iter().all(|b| liars.contains(b)),
            "{name} banned {banned:?}, liars {liars:?}"
        );
        let live = members(a);
        assert_eq!(
            live.len(),
            4 - banned.len(),
            "{name} banned {banned:?} and counts {live:?} as live"
        );
        let failures = metric(a, "swarmcdn_mesh_integrity_failures_total").unwrap_or(0.0);
        assert!(
            failures >= banned.len() as f64,
            "{name}: {failures} failures"
        );
        banned_by_any.extend(banned);
    }
    banned_by_any.sort();
    banned_by_any.dedup();
    assert_eq!(banned_by_any, liars);
}
