//! What a run measures: raw counters (summable, so shards merge exactly), the per-second
//! series, and the derived summary.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::scenario::{Arrivals, Scenario};
use crate::sim::Options;

/// A histogram of durations in 50 ms buckets up to 60 s (one overflow bucket beyond).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Histogram {
    /// Counts per bucket.
    pub buckets: Vec<u64>,
}

const BUCKET_US: u64 = 50_000;
const BUCKETS: usize = 1201;

impl Histogram {
    /// Records a duration in µs.
    pub fn record(&mut self, us: u64) {
        let i = ((us / BUCKET_US) as usize).min(BUCKETS - 1);
        if self.buckets.len() <= i {
            self.buckets.resize(i + 1, 0);
        }
        self.buckets[i] += 1;
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The q-quantile in seconds (bucket upper bound), if any sample.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut acc = 0;
        for (i, c) in self.buckets.iter().enumerate() {
            acc += c;
            if acc >= want {
                return Some((i as u64 + 1) as f64 * BUCKET_US as f64 / 1e6);
            }
        }
        None
    }

    fn merge(&mut self, other: &Self) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
    }
}

/// One second of a run (bytes are real bytes, not scaled).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Row {
    /// Virtual second.
    pub t: u64,
    /// Viewers present.
    pub viewers: u64,
    /// Bytes the CDN sent.
    pub origin_bytes: u64,
    /// Segment bytes players got from peers.
    pub p2p_bytes: u64,
    /// Segment bytes players got over HTTP.
    pub http_bytes: u64,
    /// Messages to and from the tracker.
    pub tracker_messages: u64,
    /// Bytes per second the viewers' playback consumes.
    pub demand: f64,
    /// The most bytes per second peers could supply each other (fluid and NAT bounds).
    pub supply: f64,
    /// One copy per second per non-empty swarm (the CDN's floor).
    pub copy_rate: f64,
}

/// Raw counters of one run (or the sum of a run's shards).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// CDN-only control run.
    pub control: bool,
    /// Shards summed in.
    pub shards: Vec<(u32, u32)>,
    /// Virtual seconds.
    pub duration_secs: u64,
    /// Seconds left out of byte counts.
    pub warmup_secs: u64,
    /// Viewer sessions started.
    pub sessions: u64,
    /// Peak concurrent viewers.
    pub peak_viewers: u64,
    /// Sum over measured seconds of viewers present.
    pub viewer_seconds: u64,
    /// Segment bytes delivered from peers (after warmup).
    pub p2p_bytes: u64,
    /// Segment bytes delivered over HTTP (after warmup).
    pub http_bytes: u64,
    /// Bytes the CDN sent (after warmup).
    pub origin_bytes: u64,
    /// CDN requests (all).
    pub origin_requests: u64,
    /// CDN requests for segments not yet published (all).
    pub origin_errors: u64,
    /// Bytes peers uploaded.
    pub uploaded_bytes: u64,
    /// Sum over measured seconds of the playback demand, bytes.
    pub demand_bytes: f64,
    /// Sum over measured seconds of the peers' maximal supply, bytes.
    pub supply_bytes: f64,
    /// Sum over measured seconds of one segment copy per non-empty swarm, bytes.
    pub copy_bytes: f64,
    /// Start-up times.
    pub startup: Histogram,
    /// Live: how far behind the packager each viewer played when its session ended (time
    /// stalled adds to it: players do not catch up).
    #[serde(default)]
    pub live_latency: Histogram,
    /// Sessions that left before playback started.
    pub never_started: u64,
    /// Stalls.
    pub stalls: u64,
    /// Time stalled, µs.
    pub stalled_us: u64,
    /// Time playing, µs.
    pub played_us: u64,
    /// ICE attempts.
    pub ice_attempts: u64,
    /// ICE failures.
    pub ice_failures: u64,
    /// P2P bytes received and thrown away.
    pub aborted_p2p_bytes: u64,
    /// HTTP fetches forced by a near deadline.
    pub deadline_fallbacks: u64,
    /// Segments delivered after their deadline.
    pub late_segments: u64,
    /// Chunks that failed verification.
    pub integrity_failures: u64,
    /// Segments delivered to players with a wrong byte.
    pub bad_segments: u64,
    /// HTTP requests made by nodes.
    pub http_requests: u64,
    /// Channel switches.
    pub channel_switches: u64,
    /// Peers created.
    pub peers_created: u64,
    /// Events processed.
    pub events: u64,
    /// Events processed, by kind (`msg`: a peer message arriving, `departed`: one leaving
    /// its sender's uplink, `wake`: a node's timer, ...).
    #[serde(default)]
    pub events_by_kind: BTreeMap<String, u64>,
    /// Wall-clock seconds.
    pub wall_seconds: f64,
    /// Segment bytes the nodes held in their caches at the end (scaled bytes), each node's
    /// copy counted: what the peers would hold.
    #[serde(default)]
    pub cached_bytes_at_end: u64,
    /// Bytes the nodes held for segments still arriving at the end (their downloads'
    /// buffers): segment data, not yet shared between nodes.
    #[serde(default)]
    pub arriving_bytes_at_end: u64,
    /// Segment bytes the simulator's memory held at the end: the nodes share equal copies
    /// (`core::node::SegmentPool`), so each segment counts once.
    #[serde(default)]
    pub segment_bytes_held_at_end: u64,
    /// Poisson occupancy (arrival rate x mean session) per swarm, if the arrivals are
    /// Poisson with a finite mean session and a single channel and rung.
    pub occupancy: Option<f64>,
    /// Per-second series.
    pub series: Vec<Row>,
}

impl Counters {
    /// Empty counters for a run.
    pub fn new(sc: &Scenario, opts: Options) -> Self {
        let occupancy = match sc.population.arrivals {
            Arrivals::Poisson { per_minute } if sc.stream.channels == 1 => {
                crate::model::session_mean(&sc.population.session, sc.stream.vod_length_secs as f64)
                    .map(|m| per_minute / 60.0 * m)
            }
            _ => None,
        };
        Self {
            scenario: sc.name.clone(),
            seed: opts.seed,
            control: opts.control,
            shards: vec![opts.shard],
            duration_secs: sc.duration_secs,
            warmup_secs: sc.warmup_secs,
            occupancy,
            ..Default::default()
        }
    }

    /// Adds another shard of the same run.
    pub fn merge(&mut self, o: &Self) {
        self.shards.extend(&o.shards);
        self.sessions += o.sessions;
        self.peak_viewers += o.peak_viewers;
        self.viewer_seconds += o.viewer_seconds;
        self.p2p_bytes += o.p2p_bytes;
        self.http_bytes += o.http_bytes;
        self.origin_bytes += o.origin_bytes;
        self.origin_requests += o.origin_requests;
        self.origin_errors += o.origin_errors;
        self.uploaded_bytes += o.uploaded_bytes;
        self.demand_bytes += o.demand_bytes;
        self.supply_bytes += o.supply_bytes;
        self.copy_bytes += o.copy_bytes;
        self.startup.merge(&o.startup);
        self.live_latency.merge(&o.live_latency);
        self.never_started += o.never_started;
        self.stalls += o.stalls;
        self.stalled_us += o.stalled_us;
        self.played_us += o.played_us;
        self.ice_attempts += o.ice_attempts;
        self.ice_failures += o.ice_failures;
        self.aborted_p2p_bytes += o.aborted_p2p_bytes;
        self.deadline_fallbacks += o.deadline_fallbacks;
        self.late_segments += o.late_segments;
        self.integrity_failures += o.integrity_failures;
        self.bad_segments += o.bad_segments;
        self.http_requests += o.http_requests;
        self.channel_switches += o.channel_switches;
        self.peers_created += o.peers_created;
        self.events += o.events;
        for (k, n) in &o.events_by_kind {
            *self.events_by_kind.entry(k.clone()).or_default() += n;
        }
        self.wall_seconds += o.wall_seconds;
        self.cached_bytes_at_end += o.cached_bytes_at_end;
        self.arriving_bytes_at_end += o.arriving_bytes_at_end;
        self.segment_bytes_held_at_end += o.segment_bytes_held_at_end;
        if self.series.len() < o.series.len() {
            self.series.resize(o.series.len(), Row::default());
        }
        for (a, b) in self.series.iter_mut().zip(&o.series) {
            a.t = b.t;
            a.viewers += b.viewers;
            a.origin_bytes += b.origin_bytes;
            a.p2p_bytes += b.p2p_bytes;
            a.http_bytes += b.http_bytes;
            a.tracker_messages += b.tracker_messages;
            a.demand += b.demand;
            a.supply += b.supply;
            a.copy_rate += b.copy_rate;
        }
        // The shards peak at different times: the whole run's peak is that of the summed
        // per-second series (the same samples a single run takes its peak from).
        if let Some(peak) = self.series.iter().map(|r| r.viewers).max() {
            self.peak_viewers = peak;
        }
    }

    /// The derived figures.
    pub fn summary(&self) -> Summary {
        let delivered = (self.p2p_bytes + self.http_bytes) as f64;
        let offload = if delivered > 0.0 {
            self.p2p_bytes as f64 / delivered
        } else {
            0.0
        };
        let bound = if self.demand_bytes > 0.0 {
            (self.supply_bytes / self.demand_bytes).min(1.0)
        } else {
            0.0
        };
        let occupancy_bound = self.occupancy.map(crate::model::bounds::occupancy);
        let measured: Vec<&Row> = self
            .series
            .iter()
            .filter(|r| r.t > self.warmup_secs)
            .collect();
        let mut egress: Vec<f64> = measured
            .iter()
            .map(|r| r.origin_bytes as f64 * 8.0 / 1e6)
            .collect();
        egress.sort_by(f64::total_cmp);
        let mean = |v: &[f64]| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let p95 = |v: &[f64]| {
            if v.is_empty() {
                0.0
            } else {
                v[((v.len() as f64 * 0.95).ceil() as usize).clamp(1, v.len()) - 1]
            }
        };
        let tracker: Vec<f64> = self
            .series
            .iter()
            .map(|r| r.tracker_messages as f64)
            .collect();
        let watch = (self.played_us + self.stalled_us) as f64;
        Summary {
            offload,
            offload_bound: bound,
            offload_ratio: if bound > 0.0 { offload / bound } else { 0.0 },
            occupancy_bound,
            origin_egress_mbps_mean: mean(&egress),
            origin_egress_mbps_p95: p95(&egress),
            origin_copies_per_segment: if self.copy_bytes > 0.0 {
                self.origin_bytes as f64 / self.copy_bytes
            } else {
                0.0
            },
            rebuffering_ratio: if watch > 0.0 {
                self.stalled_us as f64 / watch
            } else {
                0.0
            },
            stalls_per_hour: if self.played_us > 0 {
                self.stalls as f64 / (self.played_us as f64 / 3.6e9)
            } else {
                0.0
            },
            startup_p50_secs: self.startup.quantile(0.5).unwrap_or(0.0),
            startup_p95_secs: self.startup.quantile(0.95).unwrap_or(0.0),
            live_latency_p50_secs: self.live_latency.quantile(0.5).unwrap_or(0.0),
            live_latency_p95_secs: self.live_latency.quantile(0.95).unwrap_or(0.0),
            mean_viewers: if measured.is_empty() {
                0.0
            } else {
                self.viewer_seconds as f64 / measured.len() as f64
            },
            peak_viewers: self.peak_viewers,
            sessions: self.sessions,
            tracker_messages_per_sec_mean: mean(&tracker),
            tracker_messages_per_sec_peak: tracker.iter().copied().fold(0.0, f64::max),
            ice_failure_ratio: if self.ice_attempts > 0 {
                self.ice_failures as f64 / self.ice_attempts as f64
            } else {
                0.0
            },
            ice_failures: self.ice_failures,
            aborted_p2p_bytes: self.aborted_p2p_bytes,
            deadline_fallbacks: self.deadline_fallbacks,
            integrity_failures: self.integrity_failures,
            bad_segments: self.bad_segments,
            events: self.events,
            events_per_sec: if self.wall_seconds > 0.0 {
                self.events as f64 / self.wall_seconds
            } else {
                0.0
            },
            wall_seconds: self.wall_seconds,
            speedup: if self.wall_seconds > 0.0 {
                self.duration_secs as f64 / self.wall_seconds
            } else {
                0.0
            },
        }
    }

    /// The per-second series as CSV.
    pub fn csv(&self) -> String {
        let mut s =
            String::from("t,viewers,origin_mbps,p2p_mbps,http_mbps,offload,tracker_msgs,bound\n");
        for r in &self.series {
            let total = (r.p2p_bytes + r.http_bytes) as f64;
            let offload = if total > 0.0 {
                r.p2p_bytes as f64 / total
            } else {
                0.0
            };
            let bound = if r.demand > 0.0 {
                (r.supply / r.demand).min(1.0)
            } else {
                0.0
            };
            s.push_str(&format!(
                "{},{},{:.3},{:.3},{:.3},{:.4},{},{:.4}\n",
                r.t,
                r.viewers,
                r.origin_bytes as f64 * 8e-6,
                r.p2p_bytes as f64 * 8e-6,
                r.http_bytes as f64 * 8e-6,
                offload,
                r.tracker_messages,
                bound
            ));
        }
        s
    }
}

/// The figures of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// P2P bytes / all segment bytes delivered to players (after warmup).
    pub offload: f64,
    /// The most offload the viewers present could have reached: at each second, what peers
    /// could supply each other (upload, NAT classes, one copy per swarm from the CDN) over
    /// what playback consumed, summed over the run (`docs/simulations.md`).
    pub offload_bound: f64,
    /// offload / offload_bound.
    pub offload_ratio: f64,
    /// The Poisson occupancy bound (bound 4), where it applies.
    pub occupancy_bound: Option<f64>,
    /// CDN egress, Mbit/s, mean over measured seconds.
    pub origin_egress_mbps_mean: f64,
    /// CDN egress, Mbit/s, 95th percentile over measured seconds.
    pub origin_egress_mbps_p95: f64,
    /// CDN bytes over one copy per second of media per non-empty swarm.
    pub origin_copies_per_segment: f64,
    /// Stalled time / (played + stalled).
    pub rebuffering_ratio: f64,
    /// Stalls per hour played.
    pub stalls_per_hour: f64,
    /// Start-up time, median.
    pub startup_p50_secs: f64,
    /// Start-up time, 95th percentile.
    pub startup_p95_secs: f64,
    /// Live: latency behind the packager at the end of sessions, median (0 for VOD).
    #[serde(default)]
    pub live_latency_p50_secs: f64,
    /// Live: the same, 95th percentile.
    #[serde(default)]
    pub live_latency_p95_secs: f64,
    /// Mean concurrent viewers (measured seconds).
    pub mean_viewers: f64,
    /// Peak concurrent viewers.
    pub peak_viewers: u64,
    /// Sessions.
    pub sessions: u64,
    /// Tracker messages per second, mean.
    pub tracker_messages_per_sec_mean: f64,
    /// Tracker messages per second, peak.
    pub tracker_messages_per_sec_peak: f64,
    /// ICE failures / attempts.
    pub ice_failure_ratio: f64,
    /// ICE failures.
    pub ice_failures: u64,
    /// P2P bytes received and thrown away.
    pub aborted_p2p_bytes: u64,
    /// HTTP fetches forced by a near deadline.
    pub deadline_fallbacks: u64,
    /// Chunks that failed verification.
    pub integrity_failures: u64,
    /// Segments delivered to players with a wrong byte (must be 0).
    pub bad_segments: u64,
    /// Events processed.
    pub events: u64,
    /// Events per wall-clock second.
    pub events_per_sec: f64,
    /// Wall-clock seconds.
    pub wall_seconds: f64,
    /// Virtual seconds per wall-clock second.
    pub speedup: f64,
}

/// Mean and 95% confidence half-width (Student's t) of samples.
pub fn mean_ci(v: &[f64]) -> (f64, f64) {
    let n = v.len();
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    // Two-sided 97.5% quantiles of Student's t for 1..=30 degrees of freedom.
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    let t = T.get(n - 2).copied().unwrap_or(1.96);
    (mean, t * (var / n as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::default();
        for ms in [100, 200, 300, 400, 10_000] {
            h.record(ms * 1000);
        }
        assert_eq!(h.quantile(0.5), Some(0.35));
        assert_eq!(h.quantile(0.95), Some(10.05));
        h.record(1_000_000_000);
        assert_eq!(h.quantile(1.0), Some(60.05));
    }

    #[test]
    fn confidence_interval_of_known_samples() {
        let (m, ci) = mean_ci(&[1.0, 2.0, 3.0]);
        assert!((m - 2.0).abs() < 1e-12);
        // sd 1, n 3: 4.303 / sqrt(3).
        assert!((ci - 2.484).abs() < 0.001, "{ci}");
    }
}
