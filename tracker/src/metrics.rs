//! Counters, exported as Prometheus text on `/metrics` and as JSON on `/stats`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use swarmcdn_core::registry::{RegistryStats, Rejection};

/// The tracker's own counters (the registry keeps the swarm counters).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open WebSocket connections.
    pub connections: AtomicU64,
    /// WebSocket connections accepted since start.
    pub connections_total: AtomicU64,
    /// Messages received.
    pub messages_in: AtomicU64,
    /// Messages sent.
    pub messages_out: AtomicU64,
    /// Refusals by the connection layer, by reason.
    rejections: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Counts a refusal.
    pub fn reject(&self, reason: &'static str) {
        *self
            .rejections
            .lock()
            .expect("not poisoned")
            .entry(reason)
            .or_default() += 1;
    }

    /// Refusals by reason, the connection layer's and the registry's.
    pub fn rejections(&self, registry: Option<&RegistryStats>) -> BTreeMap<&'static str, u64> {
        let mut all = self.rejections.lock().expect("not poisoned").clone();
        if let Some(r) = registry {
            for rej in Rejection::ALL {
                *all.entry(rej.label()).or_default() += r.rejected(rej);
            }
        }
        all
    }

    /// `/stats`.
    pub fn stats_json(&self, registry: Option<&RegistryStats>) -> String {
        let r = registry.cloned().unwrap_or_default();
        serde_json::json!({
            "connections": self.connections.load(Ordering::Relaxed),
            "connections_total": self.connections_total.load(Ordering::Relaxed),
            "messages_in": self.messages_in.load(Ordering::Relaxed),
            "messages_out": self.messages_out.load(Ordering::Relaxed),
            "swarms": r.swarms,
            "peers": r.peers,
            "seeds": r.seeds,
            "pending_offers": r.pending_offers,
            "announces": r.announces,
            "offers_relayed": r.offers_relayed,
            "answers_relayed": r.answers_relayed,
            "scrapes": r.scrapes,
            "offers_expired": r.offers_expired,
            "peers_expired": r.peers_expired,
            "standby_seeds": r.standby_seeds,
            "seed_demands": r.demands,
            "rejections": self.rejections(registry),
        })
        .to_string()
    }

    /// `/metrics`, in the Prometheus text exposition format.
    pub fn prometheus(&self, registry: Option<&RegistryStats>) -> String {
        let r = registry.cloned().unwrap_or_default();
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(s, "# HELP swarmcdn_tracker_{name} {help}");
            let _ = writeln!(s, "# TYPE swarmcdn_tracker_{name} {kind}");
            let _ = writeln!(s, "swarmcdn_tracker_{name} {value}");
        };
        metric(
            "connections",
            "gauge",
            "Open WebSocket connections.",
            self.connections.load(Ordering::Relaxed),
        );
        metric(
            "connections_total",
            "counter",
            "WebSocket connections accepted.",
            self.connections_total.load(Ordering::Relaxed),
        );
        metric(
            "messages_in_total",
            "counter",
            "Messages received from clients.",
            self.messages_in.load(Ordering::Relaxed),
        );
        metric(
            "messages_out_total",
            "counter",
            "Messages sent to clients.",
            self.messages_out.load(Ordering::Relaxed),
        );
        metric(
            "swarms",
            "gauge",
            "Swarms with at least one peer.",
            r.swarms as u64,
        );
        metric("peers", "gauge", "Peers over all swarms.", r.peers as u64);
        metric(
            "seeds",
            "gauge",
            "Seed peers over all swarms.",
            r.seeds as u64,
        );
        metric(
            "pending_offers",
            "gauge",
            "Relayed offers waiting for an answer.",
            r.pending_offers as u64,
        );
        metric(
            "announces_total",
            "counter",
            "Announces handled.",
            r.announces,
        );
        metric(
            "offers_relayed_total",
            "counter",
            "Offers relayed to peers.",
            r.offers_relayed,
        );
        metric(
            "answers_relayed_total",
            "counter",
            "Answers relayed to offerers.",
            r.answers_relayed,
        );
        metric("scrapes_total", "counter", "Scrapes answered.", r.scrapes);
        metric(
            "standby_seeds",
            "gauge",
            "Seeds on standby to join swarms on demand.",
            r.standby_seeds as u64,
        );
        metric(
            "seed_demands_total",
            "counter",
            "Requests to standby seeds to join a swarm without a seed.",
            r.demands,
        );
        metric(
            "offers_expired_total",
            "counter",
            "Offers that expired unanswered.",
            r.offers_expired,
        );
        metric(
            "peers_expired_total",
            "counter",
            "Peers removed for not announcing.",
            r.peers_expired,
        );
        let _ = writeln!(
            s,
            "# HELP swarmcdn_tracker_rejections_total Requests refused, by reason."
        );
        let _ = writeln!(s, "# TYPE swarmcdn_tracker_rejections_total counter");
        for (reason, n) in self.rejections(registry) {
            let _ = writeln!(
                s,
                "swarmcdn_tracker_rejections_total{{reason=\"{reason}\"}} {n}"
            );
        }
        s
    }
}
