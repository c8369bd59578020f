//! `peer-node bench-datachannels`: DataChannel throughput of this build on loopback, with the
//! node's WebRTC settings: one sender (the seed side) streaming 64 KiB messages to N receivers
//! (the viewer side) in the same process. Prints aggregate egress, per-connection memory and
//! CPU. Used by `cargo xtask bench seed`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use swarmcdn_core::node::PeerEvent;
use tokio::sync::mpsc;

use crate::driver::{ConnId, Input};
use crate::rtc::{self, RtcConfig};

/// What a run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    /// Receivers.
    pub connections: usize,
    /// Seconds of sending measured.
    pub seconds: f64,
    /// Bytes received over all connections.
    pub bytes: u64,
    /// Aggregate throughput in Mbit/s.
    pub mbit_per_s: f64,
    /// Setup time for all connections, seconds.
    pub setup_seconds: f64,
    /// Resident memory added per connected pair (both ends), KiB.
    pub rss_per_pair_kib: f64,
    /// Process CPU seconds per second of sending (2.0 = both cores busy).
    pub cpu_per_s: f64,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_seconds() -> f64 {
    // utime and stime, fields 14 and 15 of /proc/self/stat, in clock ticks (100 per second
    // on Linux).
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            let u: f64 = f.get(11)?.parse().ok()?;
            let k: f64 = f.get(12)?.parse().ok()?;
            Some((u + k) / 100.0)
        })
        .unwrap_or(0.0)
}

/// Connects `n` pairs and streams for `seconds`.
pub async fn run(n: usize, seconds: u64, message: usize) -> anyhow::Result<BenchResult> {
    let config = RtcConfig {
        udp_addrs: vec!["127.0.0.1:0".into()],
        ..RtcConfig::default()
    };
    let (tx, mut rx) = mpsc::channel::<Input>(65536);
    let rss0 = rss_kib();
    let setup = Instant::now();
    let mut senders = Vec::new();
    let mut answers = HashMap::new();
    for i in 0..n {
        let a = ConnId(i as u64 * 2);
        let b = ConnId(i as u64 * 2 + 1);
        let (pc_a, dc_a, offer) = rtc::make_offer(&config, a, tx.clone()).await?;
        let (pc_b, answer) = rtc::make_answer(&config, b, tx.clone(), offer).await?;
        rtc::apply_answer(&pc_a, answer).await?;
        senders.push((pc_a, dc_a));
        answers.insert(b, pc_b);
    }
    // Receivers' channels arrive as Input::Channel; senders' open events on their own poll.
    let mut open = 0;
    let mut channels = Vec::new();
    let writers = tokio_util::task::TaskTracker::new();
    while open < n {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(Input::Channel { conn, dc })) => {
                if let Some(pc) = answers.get(&conn) {
                    channels.push(rtc::start_channel(
                        conn,
                        pc.clone(),
                        dc,
                        tx.clone(),
                        128 << 10,
                        false,
                        &writers,
                    ));
                    open += 1;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => anyhow::bail!("only {open} of {n} DataChannels opened"),
        }
    }
    // Wait for each sender's channel to be open.
    for (_, dc) in &senders {
        for _ in 0..300 {
            if dc.ready_state().await? == webrtc::data_channel::RTCDataChannelState::Open {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let setup_seconds = setup.elapsed().as_secs_f64();
    let rss1 = rss_kib();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for (_, dc) in &senders {
        let dc = dc.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let payload = vec![0x5au8; message];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if dc.send(BytesMut::from(&payload[..])).await.is_err() {
                    break;
                }
            }
        });
    }
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut bytes = 0u64;
    // Skip the first second (windows opening), then count.
    let warm = start + Duration::from_secs(1);
    let mut counted_from = None;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        match tokio::time::timeout(end - now, rx.recv()).await {
            Ok(Some(Input::Peer {
                ev: PeerEvent::Message(m),
                ..
            })) => {
                if Instant::now() >= warm {
                    counted_from.get_or_insert_with(Instant::now);
                    bytes += m.len() as u64;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let measured = counted_from.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let cpu = (cpu_seconds() - cpu0) / start.elapsed().as_secs_f64();
    drop(channels);
    for (pc, _) in senders {
        let _ = pc.close().await;
    }
    Ok(BenchResult {
        connections: n,
        seconds: measured,
        bytes,
        mbit_per_s: if measured > 0.0 {
            bytes as f64 * 8.0 / measured / 1e6
        } else {
            0.0
        },
        setup_seconds,
        rss_per_pair_kib: rss1.saturating_sub(rss0) as f64 / n.max(1) as f64,
        cpu_per_s: cpu,
    })
}
