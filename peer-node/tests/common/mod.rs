//! End-to-end harness: the test origin and the tracker in this process (their counters are
//! read directly), seed nodes and headless viewers as real `peer-node` processes, all on
//! loopback.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use swarmcdn_tests::origin::{LiveClock, Origin, OriginConfig, default_media_dir, serve};
use tokio_util::sync::CancellationToken;

/// The end-to-end tests run one at a time: each runs a swarm of processes on two cores.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Harness {
    pub dir: PathBuf,
    pub origin: Arc<Origin>,
    pub origin_addr: SocketAddr,
    pub tracker_addr: SocketAddr,
    pub public_key: String,
    shutdown: CancellationToken,
    _rt: tokio::runtime::Runtime,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Played {
    pub sequence: u64,
    pub sha256: String,
    pub http_bytes: u64,
    pub p2p_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Report {
    pub startup_ms: Option<u64>,
    pub stalls: u64,
    pub stall_ms: u64,
    pub played_ms: u64,
    pub skipped_segments: u64,
    pub failed_requests: u64,
    pub http_bytes: u64,
    pub p2p_bytes: u64,
    pub uploaded_bytes: u64,
    pub integrity_failures: u64,
    pub segments: Vec<Played>,
}

impl Report {
    pub fn p2p_share(&self) -> f64 {
        self.p2p_bytes as f64 / (self.http_bytes + self.p2p_bytes).max(1) as f64
    }
}

pub fn peer_node() -> &'static str {
    env!("CARGO_BIN_EXE_peer-node")
}

impl Harness {
    pub fn start(name: &str) -> Self {
        Self::start_with(name, |_| {})
    }

    /// A harness whose tracker's configuration `tracker` adjusts first.
    pub fn start_with(name: &str, tracker: impl FnOnce(&mut swarmcdn_tracker::Config)) -> Self {
        let dir = std::env::temp_dir().join(format!("swarmcdn-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let shutdown = CancellationToken::new();
        let origin = Arc::new(
            Origin::new(
                OriginConfig {
                    media_dir: default_media_dir(),
                    segment_duration: 2,
                    window: 6,
                    // Start with a full window published.
                    live_start_offset: 12.0,
                    static_dir: None,
                    pace_bytes_per_sec: None,
                },
                LiveClock::Real(tokio::time::Instant::now()),
            )
            .unwrap(),
        );
        let (origin_addr, tracker_addr) = rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let origin_addr = l.local_addr().unwrap();
            tokio::spawn(serve(origin.clone(), l, shutdown.clone()));
            let mut config = swarmcdn_tracker::Config {
                listen: "127.0.0.1:0".parse().unwrap(),
                ..Default::default()
            };
            // A swarm left by its seed asks for one again within seconds, not half a minute.
            config.swarm.demand_interval_secs = 3;
            tracker(&mut config);
            let t = swarmcdn_tracker::Tracker::bind(config).await.unwrap();
            let tracker_addr = t.local_addr();
            tokio::spawn(t.run(shutdown.clone()));
            (origin_addr, tracker_addr)
        });
        let out = Command::new(peer_node())
            .args(["keygen", "--out"])
            .arg(dir.join("seed.key"))
            .output()
            .unwrap();
        assert!(out.status.success(), "keygen failed");
        let public_key = String::from_utf8(out.stdout).unwrap().trim().to_string();
        Self {
            dir,
            origin,
            origin_addr,
            tracker_addr,
            public_key,
            shutdown,
            _rt: rt,
        }
    }

    pub fn stream_url(&self) -> String {
        format!("http://{}/live/master.m3u8", self.origin_addr)
    }

    pub fn tracker_url(&self) -> String {
        format!("ws://{}", self.tracker_addr)
    }

    /// Starts a seed following the live stream; returns once its metrics endpoint is up.
    pub fn seed(&self, name: &str) -> (Proc, SocketAddr) {
        self.seed_with(name, "")
    }

    /// A seed with more configuration (TOML sections appended).
    pub fn seed_with(&self, name: &str, extra: &str) -> (Proc, SocketAddr) {
        let streams = format!("\n[[streams]]\nurl = {:?}\n", self.stream_url());
        self.seed_config(name, &format!("{streams}{extra}"))
    }

    /// A seed that follows no stream until a tracker asks (origins: this origin's `/live/`).
    pub fn seed_on_demand(&self, name: &str) -> (Proc, SocketAddr) {
        self.seed_on_demand_with(name, "")
    }

    /// A seed on standby with more `[on_demand]` settings (TOML lines).
    pub fn seed_on_demand_with(&self, name: &str, settings: &str) -> (Proc, SocketAddr) {
        let extra = format!(
            "\n[on_demand]\norigins = [\"http://{}/live/\"]\n{settings}",
            self.origin_addr
        );
        self.seed_config(name, &extra)
    }

    /// A seed in the seed mesh, listening on loopback (QUIC and TCP) and joining through
    /// `bootstrap` (multiaddrs); `args` go to `peer-node seed`.
    pub fn mesh_seed(&self, name: &str, bootstrap: &[String], args: &[&str]) -> (Proc, SocketAddr) {
        let extra = format!(
            "\n[[streams]]\nurl = {:?}\n\n[mesh]\nlisten = [\"/ip4/127.0.0.1/udp/0/quic-v1\", \"/ip4/127.0.0.1/tcp/0\"]\nbootstrap = {bootstrap:?}\n",
            self.stream_url()
        );
        self.seed_args(name, &extra, args)
    }

    fn seed_config(&self, name: &str, extra: &str) -> (Proc, SocketAddr) {
        self.seed_args(name, extra, &[])
    }

    fn seed_args(&self, name: &str, extra: &str, args: &[&str]) -> (Proc, SocketAddr) {
        let config = format!(
            "trackers = [{:?}]\nkey_file = {:?}\nmetrics_listen = \"127.0.0.1:0\"\n\n[webrtc]\nudp = [\"127.0.0.1:0\"]\n{extra}",
            self.tracker_url(),
            self.dir.join("seed.key"),
        );
        let path = self.dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(peer_node())
            .args(["seed", "--config"])
            .arg(&path)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log_file(&self.dir, name))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("seed printed {line:?}"))
            .parse()
            .unwrap();
        (
            Proc {
                child,
                name: name.into(),
            },
            addr,
        )
    }

    /// Starts a headless viewer playing for `secs`, trusting the harness's seed key.
    pub fn viewer(&self, name: &str, secs: u64, extra: &[&str]) -> Proc {
        let trust = ["--trusted-key", &self.public_key];
        self.spawn_viewer(name, secs, &[&trust, extra].concat())
    }

    /// A viewer that trusts no key: it takes each segment's digest from whoever serves it
    /// first (still checking every chunk against it), as it must where no seed signs.
    pub fn unverified_viewer(&self, name: &str, secs: u64, extra: &[&str]) -> Proc {
        self.spawn_viewer(name, secs, &[&["--unverified"], extra].concat())
    }

    fn spawn_viewer(&self, name: &str, secs: u64, args: &[&str]) -> Proc {
        let child = Command::new(peer_node())
            .arg("view")
            .arg(self.stream_url())
            .args(["--tracker", &self.tracker_url()])
            .args(["--udp", "127.0.0.1:0", "--duration", &secs.to_string()])
            .arg("--report")
            .arg(self.dir.join(format!("{name}.json")))
            .args(args)
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir, name))
            .spawn()
            .unwrap();
        Proc {
            child,
            name: name.into(),
        }
    }

    /// Waits for a viewer to finish and reads its report.
    pub fn report(&self, p: &mut Proc) -> Report {
        let status = p.child.wait().unwrap();
        let log =
            std::fs::read_to_string(self.dir.join(format!("{}.log", p.name))).unwrap_or_default();
        assert!(status.success(), "{} failed: {status}\n{log}", p.name);
        let text = std::fs::read_to_string(self.dir.join(format!("{}.json", p.name))).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// Checks every played segment against the origin's bytes.
    pub fn check_segments(&self, name: &str, r: &Report) {
        let rendition = &self.origin.rendition_names()[0];
        assert!(!r.segments.is_empty(), "{name} played nothing");
        for s in &r.segments {
            let want = self.origin.segment_bytes(rendition, s.sequence).unwrap();
            assert_eq!(
                s.sha256,
                hex::encode(Sha256::digest(&want)),
                "{name} played a wrong segment {}",
                s.sequence
            );
        }
    }

    /// Origin requests and bytes for the played rendition's segments, and the bytes of the
    /// distinct segments among them.
    pub fn origin_copies(&self) -> (u64, u64, u64) {
        let rendition = &self.origin.rendition_names()[0];
        let prefix = format!("live/{rendition}/");
        let snap = self.origin.stats().snapshot();
        let mut requests = 0;
        let mut bytes = 0;
        let mut distinct = 0;
        for (path, (n, b)) in &snap.segments {
            if let Some(rest) = path.strip_prefix(&prefix) {
                requests += n;
                bytes += b;
                let seq: u64 = rest
                    .trim_start_matches("seg-")
                    .trim_end_matches(".m4s")
                    .parse()
                    .unwrap();
                distinct += self.origin.segment_bytes(rendition, seq).unwrap().len() as u64;
            }
        }
        (requests, bytes, distinct)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if !std::thread::panicking() {
            if std::env::var_os("SWARMCDN_KEEP_LOGS").is_none() {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        } else {
            eprintln!("logs kept in {}", self.dir.display());
        }
    }
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::File::create(dir.join(format!("{name}.log"))).unwrap()
}

/// Fetches a seed's `/stats`.
pub fn stats(addr: SocketAddr) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("/stats: {e}: {body}"))
}

/// Fetches a seed's `/metrics` and returns the value of a series (first match).
pub fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
