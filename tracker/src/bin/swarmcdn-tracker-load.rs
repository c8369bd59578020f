//! `swarmcdn-tracker-load`: a load generator for WebTorrent WebSocket trackers.
//!
//! Opens `--connections` WebSocket connections spread over `--swarms` swarms. Each connection
//! announces with `--offers` offers, waits for the announce response, answers every offer
//! relayed to it, and announces again at once (a closed loop), for `--duration` seconds.
//! Reports announces/s, relayed offers/s, relayed answers/s, announce latency p50/p99, and, given
//! the server's pid, the server's CPU time (so responses per server CPU-second) and its memory
//! per connection while all connections are open and idle.
//!
//! It speaks only the WebTorrent protocol, so it measures any WebTorrent tracker the same way.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use std::sync::Mutex;
use swarmcdn_core::ids::{PeerId, SwarmId};
use swarmcdn_core::tracker_proto::{
    Announce, AnnounceEvent, Answer, FromTracker, Offer, OfferId, SessionDescription, ToTracker,
};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Debug, Parser)]
#[command(about = "Load generator for WebTorrent WebSocket trackers")]
struct Args {
    /// The tracker's WebSocket URL (ws://host:port[/path]).
    #[arg(long)]
    url: String,
    /// Connections (one peer each).
    #[arg(long, default_value_t = 500)]
    connections: usize,
    /// Swarms the peers spread over.
    #[arg(long, default_value_t = 50)]
    swarms: usize,
    /// Offers per announce.
    #[arg(long, default_value_t = 2)]
    offers: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 15)]
    duration: u64,
    /// The server's process id, to measure its CPU time and memory (Linux /proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// A name for the report.
    #[arg(long, default_value = "tracker")]
    name: String,
    /// Loopback source addresses to spread the connections over (127.0.0.1, 127.0.0.2, …):
    /// one address has about 28k ephemeral ports. Default: one per 20 000 connections.
    #[arg(long)]
    source_ips: Option<u8>,
    /// The tracker replies to each answer with an announce response as well (aquatic_ws): such
    /// responses are counted, but do not start the connection's next announce.
    #[arg(long)]
    answers_get_responses: bool,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
}

#[derive(Default)]
struct Counters {
    announces: AtomicU64,
    offers: AtomicU64,
    answers: AtomicU64,
    /// Announce responses to answers (some trackers reply to every `announce` action, an
    /// answer included): sent by the server, so counted as responses, but not the response
    /// the closed loop waits for.
    other_responses: AtomicU64,
    /// Loops that waited [`STALLED`] for their announce's response and announced again.
    restarts: AtomicU64,
    /// Replies still due when a loop restarted: lost by the server (or very late).
    replies_lost: AtomicU64,
    failures: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

/// (utime + stime) in clock ticks, and resident memory in KiB.
fn proc_sample(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the ")" that ends the command name: state is field 3; utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((ticks, rss))
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Bytes read from a socket at once: a few messages.
const READ_BUFFER: usize = 16 * 1024;

/// A WebSocket connection to `server`, from `source` if given.
async fn connect(url: &str, server: SocketAddr, source: Option<IpAddr>) -> anyhow::Result<Ws> {
    let socket = match server {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    // tungstenite zeroes its whole read buffer (128 KiB by default) before each read: that
    // was a fifth of the load generator's CPU, which the server then did not get.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    Ok(ws)
}

fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// A distinct 20-byte id for each `(tag, n < 2^24, k < 2^32)`, its bytes spread like those of
/// real ids (SHA-1 info hashes, random offer and peer ids): on the wire, about one byte in
/// eight is a control character (`\u00XX`) and half are two UTF-8 bytes.
fn id20(tag: u8, n: u64, k: u64) -> [u8; 20] {
    // SplitMix64 from a seed unique to the triple; its first output is a bijection of the
    // seed, so distinct triples give distinct ids.
    let mut state = (u64::from(tag) << 56) | ((n & 0xff_ffff) << 32) | (k & 0xffff_ffff);
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut id = [0u8; 20];
    for chunk in id.chunks_mut(8) {
        let v = next().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    id
}

/// What the announce responses a connection receives reply to. Some trackers (aquatic_ws)
/// reply to each answer with an announce response as well as to each announce; a closed loop
/// that took those for its announce's response would announce once per answer, and announces
/// would multiply until the server's queues overflow. The server handles a connection's
/// messages in order, so the replies come in the order the messages were sent.
struct Replies {
    /// Whether answers get replies; if not, every announce response is the announce's.
    answers_get_responses: bool,
    /// Replies due, oldest first: true for our announce, false for an answer.
    due: std::collections::VecDeque<bool>,
}

impl Replies {
    /// The first announce is sent before the loop starts.
    fn new(answers_get_responses: bool) -> Self {
        Self {
            answers_get_responses,
            due: std::collections::VecDeque::from([true]),
        }
    }

    fn sent_announce(&mut self) {
        if self.answers_get_responses {
            self.due.push_back(true);
        }
    }

    fn sent_answer(&mut self) {
        if self.answers_get_responses {
            self.due.push_back(false);
        }
    }

    /// An announce response came: whether it replies to our announce (else to an answer).
    fn next_is_to_announce(&mut self) -> bool {
        !self.answers_get_responses || self.due.pop_front() != Some(false)
    }

    /// No reply for [`STALLED`]: a reply was lost (counting, a loop cannot tell which), so
    /// expect only the response to the announce about to be sent. Returns the replies that
    /// were still due.
    fn restart(&mut self) -> u64 {
        let lost = if self.answers_get_responses {
            self.due.len() as u64
        } else {
            1
        };
        self.due.clear();
        self.due.push_back(true);
        lost
    }
}

/// A loop that has had no reply for this long announces again (and counts it): a server that
/// drops a reply under load would otherwise leave the connection waiting for ever, or, when
/// it replies to answers too, make the loop take a later reply for the lost one.
const STALLED: Duration = Duration::from_secs(3);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let url = args.url.clone();
    let server: SocketAddr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .context("ws://host:port")?
        .parse()
        .context("the URL's host:port")?;
    let sources: Vec<IpAddr> = match server.ip() {
        IpAddr::V4(v4) if v4.is_loopback() => {
            let n = args
                .source_ips
                .unwrap_or_else(|| u8::try_from(args.connections.div_ceil(20_000)).unwrap_or(250))
                .clamp(1, 250);
            (1..=n)
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
                .collect()
        }
        _ => Vec::new(),
    };
    let counters = Arc::new(Counters::default());
    let running = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mem_before = args.server_pid.and_then(proc_sample).map(|s| s.1);

    // Connect everyone, and announce once (no offers): the idle state.
    let started = Instant::now();
    let mut opened: Vec<(usize, Ws)> = futures_util::stream::iter(0..args.connections)
        .map(|i| {
            let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
            let url = url.clone();
            async move {
                connect(&url, server, source)
                    .await
                    .with_context(|| format!("connection {i} (from {source:?})"))
                    .map(|ws| (i, ws))
            }
        })
        .buffer_unordered(args.connect_concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    opened.sort_by_key(|(i, _)| *i);
    let mut sockets: Vec<Ws> = opened.into_iter().map(|(_, ws)| ws).collect();
    eprintln!(
        "{} connections open in {:.1} s",
        sockets.len(),
        started.elapsed().as_secs_f64()
    );
    for (i, ws) in sockets.iter_mut().enumerate() {
        let a = ToTracker::Announce(Announce {
            event: Some(AnnounceEvent::Started),
            numwant: Some(0),
            ..Announce::new(
                SwarmId(id20(1, (i % args.swarms) as u64, 0)),
                PeerId(id20(2, i as u64, 0)),
            )
        });
        ws.send(Message::text(a.to_json())).await?;
    }
    for ws in &mut sockets {
        while let Some(m) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await? {
            if matches!(m?, Message::Text(_)) {
                break;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mem_idle = args.server_pid.and_then(proc_sample).map(|s| s.1);

    // The closed loop.
    let mut tasks = Vec::new();
    for (i, ws) in sockets.into_iter().enumerate() {
        let counters = counters.clone();
        let running = running.clone();
        let stop = stop.clone();
        let offers = args.offers;
        let answers_get_responses = args.answers_get_responses;
        let swarm = SwarmId(id20(1, (i % args.swarms) as u64, 0));
        let me = PeerId(id20(2, i as u64, 0));
        tasks.push(tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            let mut round: u64 = 0;
            let mut sent_at = Instant::now();
            // A tracker that answers each answer with an announce response too (aquatic_ws
            // does) must not make the loop announce once per answer.
            let mut replies = Replies::new(answers_get_responses);
            // One SDP per connection, as a browser's offers share their certificate and
            // candidates; made once, so that the load generator spends its CPU on the wire.
            let sdp = SessionDescription::offer(format!(
                "v=0\r\no=- {i} 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\na=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n"
            ));
            let answer_sdp = SessionDescription::answer("v=0\r\no=- answer\r\ns=-\r\nt=0 0\r\n");
            let announce = |round: u64| {
                ToTracker::Announce(Announce {
                    numwant: Some(offers as u32),
                    offers: (0..offers as u64)
                        .map(|k| Offer {
                            offer_id: OfferId(id20(3, i as u64, round * 64 + k)),
                            offer: sdp.clone(),
                        })
                        .collect(),
                    ..Announce::new(swarm, me)
                })
            };
            while !running.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if sink.send(Message::text(announce(round).to_json())).await.is_err() {
                return;
            }
            loop {
                let m = match tokio::time::timeout(STALLED, stream.next()).await {
                    Ok(Some(Ok(m))) => m,
                    Ok(_) => break,
                    Err(_) => {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        counters.restarts.fetch_add(1, Ordering::Relaxed);
                        counters
                            .replies_lost
                            .fetch_add(replies.restart(), Ordering::Relaxed);
                        round += 1;
                        sent_at = Instant::now();
                        if sink.send(Message::text(announce(round).to_json())).await.is_err() {
                            break;
                        }
                        continue;
                    }
                };
                let Message::Text(t) = m else { continue };
                let Ok(msg) = FromTracker::from_json(t.as_bytes()) else { continue };
                let measuring = !stop.load(Ordering::Relaxed);
                match msg {
                    FromTracker::AnnounceResponse(_) if !replies.next_is_to_announce() => {
                        if measuring {
                            counters.other_responses.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    FromTracker::AnnounceResponse(_) => {
                        if !measuring {
                            break;
                        }
                        counters.announces.fetch_add(1, Ordering::Relaxed);
                        let us = sent_at.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                        counters.latencies_us.lock().expect("not poisoned").push(us);
                        round += 1;
                        sent_at = Instant::now();
                        replies.sent_announce();
                        if sink.send(Message::text(announce(round).to_json())).await.is_err() {
                            break;
                        }
                    }
                    FromTracker::Offer(o) => {
                        if measuring {
                            counters.offers.fetch_add(1, Ordering::Relaxed);
                        }
                        let ans = ToTracker::Answer(Answer {
                            info_hash: o.info_hash,
                            peer_id: me,
                            to_peer_id: o.peer_id,
                            offer_id: o.offer_id,
                            answer: answer_sdp.clone(),
                            ext: None,
                        });
                        replies.sent_answer();
                        if sink.send(Message::text(ans.to_json())).await.is_err() {
                            break;
                        }
                    }
                    FromTracker::Answer(_) => {
                        if measuring {
                            counters.answers.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    FromTracker::Error(_) => {
                        counters.failures.fetch_add(1, Ordering::Relaxed);
                    }
                    FromTracker::Scrape(_) | FromTracker::Demand(_) => {}
                }
            }
        }));
    }
    let cpu_before = args.server_pid.and_then(proc_sample).map(|s| s.0);
    let start = Instant::now();
    running.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_after = args.server_pid.and_then(proc_sample).map(|s| s.0);
    let announces = counters.announces.load(Ordering::Relaxed);
    let offers = counters.offers.load(Ordering::Relaxed);
    let answers = counters.answers.load(Ordering::Relaxed);
    let other = counters.other_responses.load(Ordering::Relaxed);
    let restarts = counters.restarts.load(Ordering::Relaxed);
    let lost = counters.replies_lost.load(Ordering::Relaxed);
    let failures = counters.failures.load(Ordering::Relaxed);
    let mut lat = counters.latencies_us.lock().expect("not poisoned").clone();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        f64::from(lat[((lat.len() as f64 - 1.0) * p) as usize]) / 1000.0
    };
    let responses = announces + offers + answers + other;
    println!("== {}", args.name);
    println!(
        "connections {}  swarms {}  offers/announce {}  {:.1} s",
        args.connections, args.swarms, args.offers, elapsed
    );
    println!(
        "announces/s {:.0}  relayed offers/s {:.0}  relayed answers/s {:.0}  failures {failures}",
        announces as f64 / elapsed,
        offers as f64 / elapsed,
        answers as f64 / elapsed
    );
    println!(
        "announce latency p50 {:.2} ms  p99 {:.2} ms",
        pct(0.5),
        pct(0.99)
    );
    if other > 0 {
        println!(
            "announce responses to answers/s {:.0} (counted as responses)",
            other as f64 / elapsed
        );
    }
    if restarts > 0 {
        println!(
            "loops restarted after {} s without a reply {restarts}  replies lost {lost}",
            STALLED.as_secs()
        );
    }
    println!("responses/s {:.0}", responses as f64 / elapsed);
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        let cpu_s = (b - a) as f64 / clock_ticks() as f64;
        println!(
            "server CPU {:.2} s  responses per server CPU-second {:.0}",
            cpu_s,
            responses as f64 / cpu_s.max(1e-9)
        );
    }
    if let (Some(before), Some(idle)) = (mem_before, mem_idle) {
        println!(
            "server memory per idle connection {:.2} KiB (RSS {} -> {} KiB)",
            (idle.saturating_sub(before)) as f64 / args.connections as f64,
            before,
            idle
        );
    }
    for t in tasks {
        t.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_to_answers_do_not_count_as_the_announces() {
        // A tracker that replies to answers: announce, two answers, announce again.
        let mut r = Replies::new(true);
        r.sent_answer();
        r.sent_answer();
        assert!(r.next_is_to_announce());
        r.sent_announce();
        assert!(!r.next_is_to_announce());
        assert!(!r.next_is_to_announce());
        assert!(r.next_is_to_announce());
        // One that does not: every announce response is the announce's.
        let mut r = Replies::new(false);
        r.sent_answer();
        r.sent_answer();
        assert!(r.next_is_to_announce());
        r.sent_announce();
        assert!(r.next_is_to_announce());
        // A lost reply: the loop restarts expecting only its new announce's response.
        let mut r = Replies::new(true);
        r.sent_answer();
        r.sent_answer();
        assert!(r.next_is_to_announce());
        assert!(!r.next_is_to_announce());
        assert_eq!(r.restart(), 1);
        assert!(r.next_is_to_announce());
        assert_eq!(Replies::new(false).restart(), 1);
    }

    #[test]
    fn ids_are_distinct_and_look_random() {
        let mut seen = std::collections::HashSet::new();
        let mut control = 0;
        for tag in 1..=3 {
            for n in 0..100 {
                for k in 0..100 {
                    let id = id20(tag, n, k);
                    control += id.iter().filter(|&&b| b < 0x20).count();
                    assert!(seen.insert(id), "{tag} {n} {k}");
                }
            }
        }
        // 30 000 ids of 20 bytes: one byte in eight below 0x20 is 75 000.
        assert!((65_000..85_000).contains(&control), "{control}");
    }
}
