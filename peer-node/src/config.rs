//! The seed node's configuration: TOML, every field optional with a documented default
//! (`peer-node seed --print-config` prints them all).
//!
//! ```toml
//! trackers = ["ws://tracker.example:8000"]
//! key_file = "seed.key"
//!
//! [[streams]]
//! url = "http://origin.example/live/master.m3u8"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, ensure};
use serde::{Deserialize, Serialize};
use swarmcdn_core::integrity::{PublicKey, TrustedKeys};

use crate::http::Timeouts;
use crate::rtc::RtcConfig;

/// The default log filter.
pub const DEFAULT_LOG: &str =
    "info,rtc=error,rtc_ice=error,rtc_dtls=error,rtc_sctp=error,webrtc=error";

/// The seed node's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Log filter (`tracing` env-filter syntax). Default [`DEFAULT_LOG`]: `info`, with the
    /// WebRTC stack's own chatter (benign warnings on every closed connection) at `error`.
    pub log: String,
    /// Tracker WebSocket URLs; each swarm uses the one chosen by rendezvous hashing (the
    /// same function every client uses), then the next ones on failure. Default none
    /// (origin pulling and signing only).
    pub trackers: Vec<String>,
    /// The ed25519 secret key file written by `peer-node keygen`. Required.
    pub key_file: PathBuf,
    /// Public keys (hex) of other seeds whose digests this one accepts too.
    pub trusted_keys: Vec<String>,
    /// `/metrics`, `/stats` and `/health` listen here. Default `127.0.0.1:9300`.
    pub metrics_listen: SocketAddr,
    /// The streams to follow from start.
    pub streams: Vec<StreamConfig>,
    /// WebRTC.
    pub webrtc: WebRtc,
    /// Memory cache.
    pub cache: Cache,
    /// Upload limits.
    pub upload: Upload,
    /// Origin requests.
    pub origin: Origin,
    /// Joining streams when a tracker asks.
    pub on_demand: OnDemand,
    /// The seed mesh over libp2p (off unless `mesh.listen` is set).
    pub mesh: Mesh,
}

/// Joining streams on demand: the seed stands by at every tracker; a tracker whose swarm has
/// viewers but no seed sends the stream's URL, and the seed follows it if the URL is under one
/// of `origins` and makes that swarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OnDemand {
    /// URL prefixes of the streams this seed may follow on demand (for example
    /// `"https://origin.example/live/"`). Empty (the default) turns on-demand joining off.
    pub origins: Vec<String>,
    /// Streams followed on demand at most. Default 16 (0 is read as the default).
    pub max_streams: usize,
    /// A join token for the all-zero swarm id, for trackers that require tokens: it admits
    /// the seed to standby and to the swarm of every stream it follows on demand.
    pub token: Option<String>,
    /// A stream followed on demand is let go once the seed has had no neighbour in it for
    /// this long (the tracker asks again when viewers come back). Default 120; 0 keeps every
    /// stream until the seed stops.
    pub idle_secs: u64,
}

impl Default for OnDemand {
    fn default() -> Self {
        Self {
            origins: Vec::new(),
            max_streams: 16,
            token: None,
            idle_secs: 120,
        }
    }
}

impl OnDemand {
    /// Whether a stream URL is one this seed may follow.
    pub fn allows(&self, url: &str) -> bool {
        // Compare the normalized URL (no `..` escapes the prefix).
        url::Url::parse(url).is_ok_and(|u| {
            self.origins
                .iter()
                .any(|o| u.as_str().starts_with(o.as_str()))
        })
    }

    /// The cap on streams followed on demand.
    pub fn max(&self) -> usize {
        if self.max_streams == 0 {
            16
        } else {
            self.max_streams
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            log: DEFAULT_LOG.into(),
            trackers: Vec::new(),
            key_file: PathBuf::from("seed.key"),
            trusted_keys: Vec::new(),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9300)),
            streams: Vec::new(),
            webrtc: WebRtc::default(),
            cache: Cache::default(),
            upload: Upload::default(),
            origin: Origin::default(),
            on_demand: OnDemand::default(),
            mesh: Mesh::default(),
        }
    }
}

/// A stream to follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// The master (or only) playlist.
    pub url: String,
    /// The operator's id for the stream (players must use the same); default: the URL
    /// without its query makes the swarm id.
    #[serde(default)]
    pub content_id: Option<String>,
    /// A join token for the stream's swarm, for trackers that require one
    /// (`swarmcdn-tracker token`). Streams followed on demand use `on_demand.token`.
    #[serde(default)]
    pub token: Option<String>,
}

/// WebRTC settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebRtc {
    /// Local UDP addresses for host candidates (`IP:0`: a port per connection). Default
    /// `["0.0.0.0:0"]`.
    pub udp: Vec<String>,
    /// STUN/TURN URLs. Default none.
    pub ice_servers: Vec<String>,
    /// Bytes a DataChannel may hold unsent. Default 4 MiB.
    pub send_buffer_bytes: usize,
    /// SCTP receive window. Default 4 MiB.
    pub receive_window_bytes: u32,
    /// Seconds an offer waits for an answer. Default 60.
    pub offer_timeout_secs: u64,
    /// Neighbours at most. Default 200.
    pub max_peers: usize,
}

impl Default for WebRtc {
    fn default() -> Self {
        let r = RtcConfig::default();
        Self {
            udp: r.udp_addrs,
            ice_servers: r.ice_servers,
            send_buffer_bytes: r.send_buffer_limit,
            receive_window_bytes: r.receive_window,
            offer_timeout_secs: 60,
            max_peers: 200,
        }
    }
}

impl WebRtc {
    /// As the WebRTC layer takes it.
    pub fn rtc(&self) -> RtcConfig {
        RtcConfig {
            udp_addrs: self.udp.clone(),
            ice_servers: self.ice_servers.clone(),
            send_buffer_limit: self.send_buffer_bytes,
            receive_window: self.receive_window_bytes,
            ..RtcConfig::default()
        }
    }
}

/// The memory cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cache {
    /// Bytes of segments kept per stream. Default 1 GiB.
    pub max_bytes: u64,
}

impl Default for Cache {
    fn default() -> Self {
        Self { max_bytes: 1 << 30 }
    }
}

/// Upload limits per stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Upload {
    /// Viewers served at once. Default 64.
    pub slots: usize,
    /// Cap in bytes per second, 0 for none. Default 0.
    pub rate_bytes_per_sec: u64,
}

impl Default for Upload {
    fn default() -> Self {
        Self {
            slots: 64,
            rate_bytes_per_sec: 0,
        }
    }
}

/// The seed mesh: the operator's seeds find each other over libp2p, and each segment is pulled
/// from the origin by one of them (its owner, by rendezvous hashing over the live seeds) and
/// fetched from it by the others (see `docs/architecture.md`, "Seed mesh").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mesh {
    /// libp2p listen addresses, e.g. `["/ip4/0.0.0.0/udp/4001/quic-v1",
    /// "/ip4/0.0.0.0/tcp/4001"]` (QUIC, and TCP with noise and yamux as the fallback). Default
    /// none: the mesh is off and this seed pulls every segment from the origin itself.
    pub listen: Vec<String>,
    /// Addresses of other seeds to join through (`/p2p/<peer id>` optional); the rest are found
    /// with Kademlia. Default none.
    pub bootstrap: Vec<String>,
    /// A secret key file (as written by `peer-node keygen`) for this seed's mesh identity, so
    /// that its peer id survives restarts. Default none: a new identity at every start.
    pub key_file: Option<PathBuf>,
    /// Milliseconds a seed waits for a segment's owner before pulling it from the origin itself.
    /// Default 3000.
    pub fetch_timeout_ms: u64,
    /// Milliseconds between a seed's hellos on each stream's topic. Default 1000.
    pub hello_interval_ms: u64,
    /// Milliseconds without a hello after which a seed no longer counts as live. Default 3500.
    pub member_timeout_ms: u64,
    /// Bytes of whole segments the mesh keeps to serve other seeds. Default 128 MiB.
    pub store_bytes: u64,
    /// Test helper (`peer-node seed --mesh-lie-bytes`): serve corrupt bytes to other seeds.
    #[serde(skip)]
    pub lie_bytes: bool,
    /// Test helper (`peer-node seed --mesh-lie-digests`): announce wrong digests.
    #[serde(skip)]
    pub lie_digests: bool,
}

impl Default for Mesh {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            bootstrap: Vec::new(),
            key_file: None,
            fetch_timeout_ms: 3000,
            hello_interval_ms: 1000,
            member_timeout_ms: 3500,
            store_bytes: 128 << 20,
            lie_bytes: false,
            lie_digests: false,
        }
    }
}

/// Origin requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Origin {
    /// Milliseconds until a response's head. Default 10000.
    pub first_byte_timeout_ms: u64,
    /// Milliseconds a body may pause. Default 10000.
    pub idle_timeout_ms: u64,
}

impl Default for Origin {
    fn default() -> Self {
        let t = Timeouts::default();
        Self {
            first_byte_timeout_ms: u64::try_from(t.first_byte.as_millis()).unwrap_or(10_000),
            idle_timeout_ms: u64::try_from(t.idle.as_millis()).unwrap_or(10_000),
        }
    }
}

impl Origin {
    /// As the HTTP client takes them.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            first_byte: Duration::from_millis(self.first_byte_timeout_ms),
            idle: Duration::from_millis(self.idle_timeout_ms),
        }
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let c: Self =
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        c.check()?;
        Ok(c)
    }

    /// Cross-field checks.
    pub fn check(&self) -> anyhow::Result<()> {
        for t in &self.trackers {
            ensure!(
                t.starts_with("ws://") || t.starts_with("wss://"),
                "trackers: {t:?} is not a ws:// or wss:// URL"
            );
        }
        for s in &self.streams {
            url::Url::parse(&s.url).with_context(|| format!("streams: bad url {:?}", s.url))?;
        }
        ensure!(self.upload.slots > 0, "upload.slots must be at least 1");
        for a in self.mesh.listen.iter().chain(&self.mesh.bootstrap) {
            a.parse::<libp2p::Multiaddr>()
                .with_context(|| format!("mesh: bad multiaddr {a:?}"))?;
        }
        ensure!(
            self.mesh.hello_interval_ms > 0
                && self.mesh.member_timeout_ms > self.mesh.hello_interval_ms,
            "mesh.member_timeout_ms must exceed mesh.hello_interval_ms (> 0)"
        );
        ensure!(
            self.webrtc.max_peers > 0,
            "webrtc.max_peers must be at least 1"
        );
        ensure!(
            !self.webrtc.udp.is_empty(),
            "webrtc.udp must list an address"
        );
        ensure!(self.cache.max_bytes > 0, "cache.max_bytes must be positive");
        for o in &self.on_demand.origins {
            let u =
                url::Url::parse(o).with_context(|| format!("on_demand.origins: bad URL {o:?}"))?;
            ensure!(
                matches!(u.scheme(), "http" | "https") && o.ends_with('/'),
                "on_demand.origins: {o:?} must be an http(s) URL ending in '/'"
            );
        }
        ensure!(
            self.on_demand.origins.is_empty() || !self.trackers.is_empty(),
            "on_demand needs at least one tracker"
        );
        self.trusted()?;
        Ok(())
    }

    /// The other trusted keys.
    pub fn trusted(&self) -> anyhow::Result<TrustedKeys> {
        let keys: Vec<PublicKey> = self
            .trusted_keys
            .iter()
            .map(|k| {
                k.parse()
                    .map_err(|e| anyhow::anyhow!("trusted_keys: {k:?}: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(TrustedKeys::new(keys))
    }
}

/// Reads a secret key file (64 hex digits, surrounding whitespace ignored).
pub fn read_secret(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    let bytes = hex::decode(text.trim()).with_context(|| format!("{}: not hex", path.display()))?;
    bytes.try_into().map_err(|_| {
        anyhow::anyhow!(
            "{}: a secret key is 32 bytes (64 hex digits)",
            path.display()
        )
    })
}

/// Writes a new key pair: the secret to `path` (mode 0600), the public key to `path.pub`.
/// Returns the public key.
pub fn keygen(path: &Path) -> anyhow::Result<PublicKey> {
    ensure!(
        !path.exists(),
        "{} exists: not overwriting a key",
        path.display()
    );
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let public = swarmcdn_core::integrity::DigestSigner::from_secret(secret).public_key();
    write_private(path, &format!("{}\n", hex::encode(secret)))?;
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    std::fs::write(&pub_path, format!("{public}\n"))
        .with_context(|| format!("cannot write {}", PathBuf::from(&pub_path).display()))?;
    Ok(public)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_unknown_fields_fail() {
        let c = Config::default();
        let text = toml::to_string(&c).unwrap();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        assert!(toml::from_str::<Config>("colour = 1").is_err());
        assert!(toml::from_str::<Config>("[cache]\nmax = 1").is_err());
    }

    #[test]
    fn checks() {
        let mut c = Config {
            trackers: vec!["http://x".into()],
            ..Config::default()
        };
        assert!(c.check().unwrap_err().to_string().contains("ws://"));
        c.trackers = vec!["ws://x:1".into()];
        c.trusted_keys = vec!["zz".into()];
        assert!(c.check().unwrap_err().to_string().contains("trusted_keys"));
        c.trusted_keys.clear();
        c.upload.slots = 0;
        assert!(c.check().is_err());
    }

    #[test]
    fn on_demand_origins() {
        let od = OnDemand {
            origins: vec!["http://origin.example/live/".into()],
            ..OnDemand::default()
        };
        assert!(od.allows("http://origin.example/live/master.m3u8"));
        assert!(!od.allows("http://origin.example/vod/master.m3u8"));
        assert!(!od.allows("http://origin.example.evil/live/x.m3u8"));
        assert!(!od.allows("http://origin.example/live/../admin/x.m3u8"));
        assert!(!OnDemand::default().allows("http://origin.example/live/master.m3u8"));
        let mut c = Config {
            trackers: vec!["ws://t:1".into()],
            on_demand: OnDemand {
                origins: vec!["http://origin.example".into()],
                ..OnDemand::default()
            },
            ..Config::default()
        };
        assert!(c.check().unwrap_err().to_string().contains("ending in '/'"));
        c.on_demand.origins = vec!["http://origin.example/".into()];
        c.check().unwrap();
        c.trackers.clear();
        assert!(c.check().is_err());
    }

    #[test]
    fn keygen_writes_a_usable_pair() {
        let dir = std::env::temp_dir().join(format!("swarmcdn-keygen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("seed.key");
        let public = keygen(&path).unwrap();
        let secret = read_secret(&path).unwrap();
        assert_eq!(
            swarmcdn_core::integrity::DigestSigner::from_secret(secret).public_key(),
            public
        );
        let pub_text = std::fs::read_to_string(dir.join("seed.key.pub")).unwrap();
        assert_eq!(pub_text.trim().parse::<PublicKey>().unwrap(), public);
        assert!(keygen(&path).is_err(), "never overwrites");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
