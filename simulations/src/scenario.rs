//! Scenario files: TOML, every field documented with its default (`docs/simulations.md` has
//! the full reference and `simulations/scenarios/` the suite).

use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// A scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, e.g. "S0".
    pub name: String,
    /// What it checks.
    #[serde(default)]
    pub description: String,
    /// Virtual seconds simulated.
    pub duration_secs: u64,
    /// Seconds at the start left out of the byte counts (start-up transient). Default 30.
    #[serde(default = "default_warmup")]
    pub warmup_secs: u64,
    /// Replications (seeds 1..=seeds) when the command line does not say. Default 3.
    #[serde(default = "default_seeds")]
    pub seeds: u64,
    /// Sizes and rates are divided by this (time is unchanged: a segment of B bytes over a
    /// link of R bytes/s takes B/R either way). Larger values are cheaper and coarser: at 64
    /// a 1.5 MB segment is 23 chunks of 1 KiB. Default: the largest power of two up to 64
    /// that keeps the lowest rung's segments at 8 KiB or more (8 chunks).
    #[serde(default)]
    pub byte_scale: Option<u64>,
    /// The stream(s).
    pub stream: Stream,
    /// The viewers.
    pub population: Population,
    /// Latencies, ICE and the CDN.
    #[serde(default)]
    pub network: Network,
    /// Overrides of the production node's defaults.
    #[serde(default)]
    pub node: NodeOverrides,
    /// Faults injected during the run.
    #[serde(default, rename = "fault")]
    pub faults: Vec<Fault>,
}

fn default_warmup() -> u64 {
    30
}
fn default_seeds() -> u64 {
    3
}

/// Live or VOD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// A live stream: a new segment every segment duration.
    Live,
    /// Video on demand: every segment exists from the start.
    Vod,
}

/// The content.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stream {
    /// Live or VOD.
    pub kind: StreamKind,
    /// Segment duration in seconds. Default 4.
    #[serde(default = "default_segment_secs")]
    pub segment_secs: f64,
    /// The bitrate ladder in Mbit/s, lowest first. Each rung of each channel is its own swarm.
    pub ladder: Vec<f64>,
    /// Live: the player starts this many segments behind the newest. Default 3.
    #[serde(default = "default_live_offset")]
    pub live_offset_segments: u64,
    /// Live: players start this far behind the live moment (the packager's clock), mid-segment,
    /// instead of `live_offset_segments` segments behind the newest; more than a segment
    /// duration, as players here play whole segments. Their latency at the end of each
    /// session is measured either way. Default none.
    #[serde(default)]
    pub target_latency_secs: Option<f64>,
    /// Live: LL-HLS parts of this duration (a divisor of `segment_secs`). The packager
    /// publishes each segment part by part while it produces it; the playlist lists the
    /// segment being produced from its first part on (its parts, and a preload hint for the
    /// rest, as byte ranges of the segment); the origin serves it as its parts appear, without
    /// a length (chunked transfer); players reload the playlist as each segment's first part
    /// appears (blocking reload). Default none: whole segments, each published once produced.
    #[serde(default)]
    pub part_secs: Option<f64>,
    /// Live, with parts: the packager signs each part's chunk hashes as it publishes the
    /// part, so a viewer that fetches a segment still being produced can verify (and relay)
    /// its chunks at once. The node has no such digests yet: the simulator hands it the
    /// segment's whole digest at its first part, which is what per-part digests would
    /// give. Default false: the digest of a segment comes once the segment is whole, as
    /// today's packager sidecar would.
    #[serde(default)]
    pub part_digests: bool,
    /// Live: segments listed in the playlist. Default 6.
    #[serde(default = "default_window")]
    pub window_segments: u64,
    /// VOD: the length of each title in seconds. Default 3600.
    #[serde(default = "default_vod_length")]
    pub vod_length_secs: u64,
    /// Channels (live) or titles (VOD). Default 1.
    #[serde(default = "one")]
    pub channels: u32,
    /// Zipf exponent of channel popularity; 0 is uniform. Default 0.
    #[serde(default)]
    pub zipf: f64,
}

fn default_segment_secs() -> f64 {
    4.0
}
fn default_live_offset() -> u64 {
    3
}
fn default_window() -> u64 {
    6
}
fn default_vod_length() -> u64 {
    3600
}
fn one() -> u32 {
    1
}

/// How viewers arrive.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Arrivals {
    /// `count` viewers join over the first `spread_secs` seconds (default 10) and stay.
    Static {
        /// Viewers.
        count: u64,
        /// Join spread in seconds.
        #[serde(default = "default_spread")]
        spread_secs: f64,
    },
    /// A Poisson process of `per_minute` arrivals per minute over all channels.
    Poisson {
        /// Mean arrivals per minute.
        per_minute: f64,
    },
    /// A flash crowd: the arrival rate rises linearly to reach `peak` concurrent viewers
    /// (if none left) after `ramp_secs`, then Poisson at `after_per_minute`.
    Flash {
        /// Viewers arriving during the ramp.
        peak: u64,
        /// Ramp length in seconds.
        ramp_secs: f64,
        /// Arrivals per minute after the ramp. Default 0.
        #[serde(default)]
        after_per_minute: f64,
    },
}

fn default_spread() -> f64 {
    10.0
}

/// How long a viewer stays.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Session {
    /// Until the end of the run.
    Forever,
    /// Exponential.
    Exponential {
        /// Mean seconds.
        mean_secs: f64,
    },
    /// Log-normal.
    Lognormal {
        /// Median seconds.
        median_secs: f64,
        /// Sigma of the underlying normal.
        sigma: f64,
    },
    /// Weibull.
    Weibull {
        /// Shape (below 1: many short sessions, a long tail).
        shape: f64,
        /// Median seconds.
        median_secs: f64,
    },
    /// VOD: a Beta(a, b) fraction of the title is watched.
    WatchFraction {
        /// Alpha.
        a: f64,
        /// Beta.
        b: f64,
    },
    /// A mixture.
    Mixture {
        /// The parts with their weights.
        parts: Vec<MixturePart>,
    },
}

/// One part of a session mixture.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixturePart {
    /// Relative weight.
    pub weight: f64,
    /// The distribution.
    pub session: Session,
}

/// Access capacities.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Capacity {
    /// Every viewer alike: usable upload is `up_over_r` times the lowest rung's bitrate.
    Homogeneous {
        /// Usable upload over the stream rate.
        up_over_r: f64,
        /// Download in Mbit/s. Default 100.
        #[serde(default = "default_down")]
        down_mbps: f64,
    },
    /// A named profile of access classes (`RES-US-2024`, `RES-EU-FTTH`, `MOBILE-HEAVY`,
    /// `LEGACY-2008`; see `docs/simulations.md`).
    Profile {
        /// The profile.
        name: String,
    },
}

fn default_down() -> f64 {
    100.0
}

/// NAT behaviour.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Nat {
    /// Everyone reachable.
    Open,
    /// A fraction `restricted` of peers cannot connect to each other (only to open peers).
    TwoClass {
        /// The restricted fraction.
        restricted: f64,
    },
    /// A named mix (`NAT-RES`, `NAT-MOBILE`, `NAT-HOSTILE`, `NAT-FRIENDLY`).
    Mix {
        /// The mix.
        name: String,
    },
}

/// The viewers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Population {
    /// Arrivals.
    pub arrivals: Arrivals,
    /// Session lengths. Default forever.
    #[serde(default = "forever")]
    pub session: Session,
    /// Access capacities.
    pub capacity: Capacity,
    /// NAT behaviour. Default open.
    #[serde(default = "open")]
    pub nat: Nat,
    /// Share of the uplink a viewer gives to P2P. Default 0.5 (1.0 for homogeneous capacity,
    /// whose figure is already the usable upload).
    #[serde(default)]
    pub upload_cap: Option<f64>,
    /// Probability that a leaving viewer switches to another channel at once (zapping).
    /// Default 0.
    #[serde(default)]
    pub channel_switch: f64,
}

fn forever() -> Session {
    Session::Forever
}
fn open() -> Nat {
    Nat::Open
}

/// Latencies, ICE and the CDN.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Network {
    /// Regions with their share of viewers. Default one region.
    pub regions: Vec<Region>,
    /// Round trip between two peers of one region, ms. Default 15.
    pub rtt_intra_ms: f64,
    /// Round trip between regions, ms. Default 80.
    pub rtt_inter_ms: f64,
    /// Access-link one-way latency is uniform in [0, this] ms on top. Default 5.
    pub access_jitter_ms: f64,
    /// Probability that a peer message needs a retransmission (one more round trip).
    /// Default 0.
    pub loss: f64,
    /// ICE setup time: log-normal median, ms. Default 800.
    pub ice_median_ms: f64,
    /// ICE setup time: sigma. Default 0.5.
    pub ice_sigma: f64,
    /// Probability that ICE fails between two compatible peers. Default 0.04.
    pub ice_transient_failure: f64,
    /// Time until a failed ICE attempt is reported, s. Default 5.
    pub ice_failure_secs: f64,
    /// CDN time to first byte: log-normal median, ms. Default 40.
    pub cdn_ttfb_median_ms: f64,
    /// CDN time to first byte: sigma. Default 0.5.
    pub cdn_ttfb_sigma: f64,
    /// One-way latency from peers to the tracker, ms. Default 20.
    pub tracker_latency_ms: f64,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            regions: vec![Region {
                name: "eu".into(),
                share: 1.0,
            }],
            rtt_intra_ms: 15.0,
            rtt_inter_ms: 80.0,
            access_jitter_ms: 5.0,
            loss: 0.0,
            ice_median_ms: 800.0,
            ice_sigma: 0.5,
            ice_transient_failure: 0.04,
            ice_failure_secs: 5.0,
            cdn_ttfb_median_ms: 40.0,
            cdn_ttfb_sigma: 0.5,
            tracker_latency_ms: 20.0,
        }
    }
}

/// A region.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Name (also the locality hint given to the tracker).
    pub name: String,
    /// Share of viewers.
    pub share: f64,
}

/// Overrides of the production node's defaults (`core::node::NodeConfig`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeOverrides {
    /// Neighbours at most.
    pub max_peers: Option<usize>,
    /// Upload slots.
    pub upload_slots: Option<usize>,
    /// Prefetch window, s.
    pub prefetch_secs: Option<f64>,
    /// A request to a neighbour that receives nothing for this long is re-issued elsewhere, s.
    pub request_stall_secs: Option<f64>,
    /// Relay the verified chunks of segments still arriving (the node's default).
    pub relay_partial: Option<bool>,
    /// Send chunk maps of segments still arriving (the node's default).
    pub chunk_maps: Option<bool>,
    /// A scarce uplink defers requests for chunks it has sent while others have not gone
    /// out (the node's default).
    pub first_copies_first: Option<bool>,
    /// One chunk per upload message (the node's default) or whole requests.
    pub chunk_messages: Option<bool>,
    /// Chunks per request to a neighbour.
    pub request_chunks: Option<usize>,
    /// Announce interval while under-connected, s (the tracker's interval turns it off).
    pub refill_secs: Option<f64>,
    /// HTTP safety margin, s.
    pub http_margin_secs: Option<f64>,
    /// A segment nobody has yet is fetched from the origin by its first scout within an
    /// eighth of this, by the others after one to two of it, s.
    pub scout_spread_secs: Option<f64>,
    /// A scout that is not first does not fetch a segment from the origin while its deadline
    /// is further than this, s.
    pub scout_step_in_secs: Option<f64>,
    /// A first scout that a member of the swarm it does not see likely outranks waits this
    /// much longer, s.
    pub scout_outranked_secs: Option<f64>,
    /// The measured uplink's time the send buffers may hold together, s.
    pub send_queue_secs: Option<f64>,
    /// Media kept in each viewer's cache, seconds. Default 60 (the node's own default of
    /// 256 MiB would hold the whole run and bound memory, not behaviour).
    pub cache_secs: Option<f64>,
    /// Check the operator's signature on every digest (costly at scale; chunk hashes are
    /// always checked). Default false.
    pub verify_signatures: bool,
    /// The origin publishes each segment's signed digest beside it, and a viewer's origin
    /// fetch brings it (default true). With false a viewer has a segment's digest only from
    /// a neighbour: in the default unverified mode a node signs what it fetched when the
    /// fetch completes, so the first copy of a segment is relayed only once whole, as real
    /// clients without a signer in reach do.
    pub digests_from_origin: Option<bool>,
}

/// A fault.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// The tracker is unreachable from `at_secs` for `duration_secs`.
    TrackerOutage {
        /// Start.
        at_secs: f64,
        /// Length.
        duration_secs: f64,
    },
    /// The CDN's time to first byte is multiplied by `factor`.
    OriginSlowdown {
        /// Start.
        at_secs: f64,
        /// Length.
        duration_secs: f64,
        /// Multiplier.
        factor: f64,
    },
    /// A fraction of viewers corrupt every chunk they upload.
    CorruptPeers {
        /// The fraction.
        fraction: f64,
    },
    /// Peers of the first `regions` cannot reach peers of the others.
    Partition {
        /// Start.
        at_secs: f64,
        /// Length.
        duration_secs: f64,
        /// The regions cut off from the rest.
        regions: Vec<String>,
    },
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        Self::load_with(path, &[])
    }

    /// Reads a scenario file, applies `key.path=value` overrides (values in TOML syntax, e.g.
    /// `population.arrivals.count=50` or `network.regions=[{name="eu",share=1.0}]`), checks it.
    pub fn load_with(path: &Path, overrides: &[String]) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let mut doc: toml::Table =
            toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        for o in overrides {
            set(&mut doc, o).with_context(|| format!("override {o:?}"))?;
        }
        let s: Self = doc
            .try_into()
            .with_context(|| format!("parse {}", path.display()))?;
        s.check()?;
        Ok(s)
    }

    /// Cross-field checks.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.duration_secs == 0 || self.warmup_secs >= self.duration_secs {
            bail!("duration_secs must exceed warmup_secs");
        }
        if self.byte_scale == Some(0) {
            bail!("byte_scale must be at least 1");
        }
        if self.stream.ladder.is_empty() || self.stream.ladder.iter().any(|r| *r <= 0.0) {
            bail!("stream.ladder needs at least one positive bitrate");
        }
        if self.stream.segment_secs <= 0.0 {
            bail!("stream.segment_secs must be positive");
        }
        if self.stream.channels == 0 {
            bail!("stream.channels must be at least 1");
        }
        let live = self.stream.kind == StreamKind::Live;
        if let Some(part) = self.stream.part_secs {
            let parts = self.stream.segment_secs / part;
            if !live || part <= 0.0 || parts < 1.0 - 1e-9 || (parts - parts.round()).abs() > 1e-6 {
                bail!("stream.part_secs must divide a live stream's segment_secs");
            }
        }
        if let Some(latency) = self.stream.target_latency_secs
            && (!live
                || latency <= self.stream.segment_secs
                || latency >= self.stream.window_segments as f64 * self.stream.segment_secs)
        {
            bail!(
                "stream.target_latency_secs must exceed a live stream's segment_secs and stay \
                 within its playlist (window_segments x segment_secs)"
            );
        }
        if self.stream.kind == StreamKind::Live && self.stream.window_segments == 0 {
            bail!("stream.window_segments must be at least 1");
        }
        if live
            && self.stream.target_latency_secs.is_none()
            && self.stream.live_offset_segments >= self.stream.window_segments
        {
            // Players would start on a segment the playlist no longer lists.
            bail!(
                "stream.live_offset_segments ({}) must be below stream.window_segments ({})",
                self.stream.live_offset_segments,
                self.stream.window_segments
            );
        }
        let scaled = self.lowest_segment_bytes() / self.scale() as f64;
        if scaled < 2048.0 {
            bail!(
                "byte_scale {} leaves the lowest rung's segments {scaled:.0} bytes: below 2 KiB \
                 (two chunks) the node's scheduling no longer resembles the real one",
                self.scale()
            );
        }
        if self.network.regions.is_empty() {
            bail!("network.regions needs at least one region");
        }
        crate::model::CapacityModel::new(&self.population.capacity, self.stream.ladder[0])?;
        crate::model::NatModel::new(&self.population.nat)?;
        Ok(())
    }
}

impl Scenario {
    fn lowest_segment_bytes(&self) -> f64 {
        let lowest = self
            .stream
            .ladder
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        lowest * 1e6 / 8.0 * self.stream.segment_secs
    }

    /// The byte scale in use (see [`Scenario::byte_scale`]).
    pub fn scale(&self) -> u64 {
        self.byte_scale.unwrap_or_else(|| {
            let mut s = 64;
            while s > 1 && self.lowest_segment_bytes() / (s as f64) < 8192.0 {
                s /= 2;
            }
            s
        })
    }
}

/// Sets `a.b.c=value` in a TOML table.
fn set(doc: &mut toml::Table, assignment: &str) -> anyhow::Result<()> {
    let (path, value) = assignment
        .split_once('=')
        .context("expected key.path=value")?;
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
        Ok(mut t) => t.remove("v").context("value")?,
        // A bare word is a string.
        Err(_) => toml::Value::String(value.to_string()),
    };
    let keys: Vec<&str> = path.trim().split('.').collect();
    let (last, parents) = keys.split_last().context("empty key")?;
    let mut table = doc;
    for k in parents {
        table = table
            .entry(k.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .with_context(|| format!("{k} is not a table"))?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_of_the_suite_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 14, "the suite has S0-S13");
    }

    #[test]
    fn parts_and_latencies_are_checked() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/s7-low-latency.toml");
        let load = |o: &[&str]| {
            let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
            Scenario::load_with(&path, &o)
        };
        assert!(load(&[]).is_ok());
        for bad in [
            "stream.part_secs=0.3",
            "stream.part_secs=3",
            "stream.part_secs=0",
            "stream.target_latency_secs=2",
            "stream.target_latency_secs=12",
        ] {
            assert!(load(&[bad]).is_err(), "{bad} accepted");
        }
        assert!(load(&["stream.part_secs=1", "stream.target_latency_secs=11.5"]).is_ok());
        // Without a target latency, players start `live_offset_segments` behind the newest
        // listed segment, which must be listed.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/s0-calibration.toml");
        let load = |o: &[&str]| {
            let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
            Scenario::load_with(&path, &o)
        };
        assert!(load(&["stream.live_offset_segments=5"]).is_ok());
        assert!(load(&["stream.live_offset_segments=6"]).is_err());
        assert!(load(&["stream.live_offset_segments=8", "stream.window_segments=9"]).is_ok());
    }

    #[test]
    fn overrides_set_nested_values() {
        let mut doc: toml::Table =
            toml::from_str("[population]\narrivals = { kind = \"static\", count = 2 }").unwrap();
        set(&mut doc, "population.arrivals.count=50").unwrap();
        set(&mut doc, "population.nat.kind=open").unwrap();
        assert_eq!(
            doc["population"]["arrivals"]["count"].as_integer(),
            Some(50)
        );
        assert_eq!(doc["population"]["nat"]["kind"].as_str(), Some("open"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = r#"
            name = "x"
            duration_secs = 60
            bogus = 1
            [stream]
            kind = "live"
            ladder = [3.0]
            [population]
            arrivals = { kind = "static", count = 2 }
            capacity = { kind = "homogeneous", up_over_r = 1.0 }
        "#;
        let err = toml::from_str::<Scenario>(text).unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
    }
}
