//! The models around the production code: access capacities, NAT classes, churn, and the
//! random streams that draw them. Every draw comes from a stream derived from (run seed,
//! entity, purpose), so a viewer's attributes do not depend on what else happened in the run:
//! the CDN-only control run sees the same viewers arrive at the same times.

use anyhow::bail;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use swarmcdn_core::tracker_proto::NatType;

use crate::scenario::{Arrivals, Capacity, Nat, Session};

/// Purposes of random streams.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum Stream {
    /// Arrival times and channels.
    Arrivals = 1,
    /// A viewer's attributes (capacity, NAT, region, session length).
    Viewer = 2,
    /// Network randomness (ICE, loss, TTFB).
    Network = 3,
    /// The node's own seed.
    Node = 4,
    /// The tracker's seed.
    Tracker = 5,
    /// Whether a departing viewer switches channel, and to which.
    Zap = 6,
}

/// A random stream for (seed, purpose, entity).
pub fn rng(seed: u64, purpose: Stream, entity: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(mix(mix(seed ^ (purpose as u64) << 56) ^ entity))
}

/// SplitMix64's finalizer.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in (0, 1].
fn unit(r: &mut Xoshiro256PlusPlus) -> f64 {
    1.0 - r.random::<f64>()
}

/// Exponential with the given mean.
pub fn exponential(r: &mut Xoshiro256PlusPlus, mean: f64) -> f64 {
    -unit(r).ln() * mean
}

/// Standard normal (Box-Muller).
pub fn normal(r: &mut Xoshiro256PlusPlus) -> f64 {
    let u1 = unit(r);
    let u2 = r.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Log-normal with the given median.
pub fn lognormal(r: &mut Xoshiro256PlusPlus, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(r)).exp()
}

/// Gamma(shape, 1) (Marsaglia and Tsang).
fn gamma(r: &mut Xoshiro256PlusPlus, shape: f64) -> f64 {
    if shape < 1.0 {
        return gamma(r, shape + 1.0) * unit(r).powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(r);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = unit(r);
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// Beta(a, b).
pub fn beta(r: &mut Xoshiro256PlusPlus, a: f64, b: f64) -> f64 {
    let x = gamma(r, a);
    let y = gamma(r, b);
    x / (x + y)
}

/// A session length in seconds (`None`: stays to the end). `title_secs` is the VOD title
/// length, for watch fractions.
pub fn session_secs(r: &mut Xoshiro256PlusPlus, s: &Session, title_secs: f64) -> Option<f64> {
    match s {
        Session::Forever => None,
        Session::Exponential { mean_secs } => Some(exponential(r, *mean_secs)),
        Session::Lognormal { median_secs, sigma } => Some(lognormal(r, *median_secs, *sigma)),
        Session::Weibull { shape, median_secs } => {
            // Median m = scale * ln(2)^(1/k).
            let scale = median_secs / std::f64::consts::LN_2.powf(1.0 / shape);
            Some(scale * (-unit(r).ln()).powf(1.0 / shape))
        }
        Session::WatchFraction { a, b } => Some(beta(r, *a, *b) * title_secs),
        Session::Mixture { parts } => {
            let total: f64 = parts.iter().map(|p| p.weight).sum();
            let mut x = r.random::<f64>() * total;
            for p in parts {
                if x < p.weight {
                    return session_secs(r, &p.session, title_secs);
                }
                x -= p.weight;
            }
            parts
                .last()
                .and_then(|p| session_secs(r, &p.session, title_secs))
        }
    }
}

/// The mean of a session distribution in seconds (`None` for forever), for the occupancy
/// bound.
pub fn session_mean(s: &Session, title_secs: f64) -> Option<f64> {
    match s {
        Session::Forever => None,
        Session::Exponential { mean_secs } => Some(*mean_secs),
        Session::Lognormal { median_secs, sigma } => {
            Some(median_secs * (sigma * sigma / 2.0).exp())
        }
        Session::Weibull { shape, median_secs } => {
            let scale = median_secs / std::f64::consts::LN_2.powf(1.0 / shape);
            Some(scale * gamma_fn(1.0 + 1.0 / shape))
        }
        Session::WatchFraction { a, b } => Some(a / (a + b) * title_secs),
        Session::Mixture { parts } => {
            let total: f64 = parts.iter().map(|p| p.weight).sum();
            parts
                .iter()
                .map(|p| session_mean(&p.session, title_secs).map(|m| m * p.weight / total))
                .sum()
        }
    }
}

/// The gamma function (Lanczos).
fn gamma_fn(x: f64) -> f64 {
    const G: [f64; 8] = [
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        return std::f64::consts::PI / ((std::f64::consts::PI * x).sin() * gamma_fn(1.0 - x));
    }
    let x = x - 1.0;
    let mut a = 0.999_999_999_999_809_9;
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate() {
        a += g / (x + i as f64 + 1.0);
    }
    (std::f64::consts::TAU).sqrt() * t.powf(x + 0.5) * (-t).exp() * a
}

/// The arrival process: the time of the next arrival after `t` (seconds), or `None`.
pub fn next_arrival(r: &mut Xoshiro256PlusPlus, a: &Arrivals, t: f64, index: u64) -> Option<f64> {
    match a {
        Arrivals::Static { count, spread_secs } => (index < *count)
            .then(|| *spread_secs * (index as f64 + r.random::<f64>()) / *count as f64),
        Arrivals::Poisson { per_minute } => {
            (*per_minute > 0.0).then(|| t + exponential(r, 60.0 / per_minute))
        }
        Arrivals::Flash {
            peak,
            ramp_secs,
            after_per_minute,
        } => {
            if index < *peak {
                // Rate rising linearly: the i-th arrival at ramp * sqrt(i / peak).
                let u = (index as f64 + r.random::<f64>()) / *peak as f64;
                Some(ramp_secs * u.sqrt())
            } else if *after_per_minute > 0.0 {
                Some(t.max(*ramp_secs) + exponential(r, 60.0 / after_per_minute))
            } else {
                None
            }
        }
    }
}

/// Zipf popularity over `n` items: cumulative weights for sampling.
pub struct Popularity {
    cdf: Vec<f64>,
}

impl Popularity {
    /// Zipf with exponent `s` (0: uniform) over `n` items.
    pub fn new(n: u32, s: f64) -> Self {
        let mut acc = 0.0;
        let cdf = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        Self { cdf }
    }

    /// An item index.
    pub fn sample(&self, r: &mut Xoshiro256PlusPlus) -> u32 {
        let total = *self.cdf.last().expect("at least one item");
        let x = r.random::<f64>() * total;
        self.cdf
            .partition_point(|c| *c <= x)
            .min(self.cdf.len() - 1) as u32
    }
}

/// A viewer's access link and policy.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    /// Usable P2P upload, bits/s (line rate times the P2P cap); 0 if upload is off.
    pub up_bps: f64,
    /// The uplink for the P2P connections' control traffic when upload is off, bits/s.
    pub line_up_bps: f64,
    /// Download, bits/s.
    pub down_bps: f64,
}

/// A class of access link in a profile.
#[derive(Debug, Clone, Copy)]
struct AccessClass {
    share: f64,
    up: Dist,
    down: Dist,
    /// Probability that P2P upload is enabled.
    p2p: f64,
}

#[derive(Debug, Clone, Copy)]
enum Dist {
    LogN(f64, f64),
    Uniform(f64, f64),
    Fixed(f64),
}

impl Dist {
    fn sample(self, r: &mut Xoshiro256PlusPlus) -> f64 {
        match self {
            Self::LogN(m, s) => lognormal(r, m, s),
            Self::Uniform(a, b) => a + (b - a) * r.random::<f64>(),
            Self::Fixed(x) => x,
        }
    }
}

/// Draws access links.
#[derive(Debug, Clone)]
pub struct CapacityModel {
    classes: Vec<AccessClass>,
    /// Share of the line rate given to P2P.
    cap: f64,
}

const FIXED_P2P: f64 = 0.9;

impl CapacityModel {
    /// The model for a scenario; `lowest_mbps` is the ladder's lowest rung.
    pub fn new(c: &Capacity, lowest_mbps: f64) -> anyhow::Result<Self> {
        use Dist::{Fixed, LogN, Uniform};
        let class = |share, up, down, p2p| AccessClass {
            share,
            up,
            down,
            p2p,
        };
        let (classes, cap) = match c {
            Capacity::Homogeneous {
                up_over_r,
                down_mbps,
            } => (
                vec![class(
                    1.0,
                    Fixed(up_over_r * lowest_mbps),
                    Fixed(*down_mbps),
                    1.0,
                )],
                1.0,
            ),
            Capacity::Profile { name } => {
                let us = vec![
                    class(0.30, LogN(100.0, 0.6), LogN(300.0, 0.5), FIXED_P2P),
                    class(0.45, LogN(15.0, 0.5), LogN(300.0, 0.5), FIXED_P2P),
                    class(0.10, Uniform(1.0, 5.0), Uniform(10.0, 50.0), FIXED_P2P),
                    class(0.05, LogN(20.0, 0.7), LogN(150.0, 0.6), FIXED_P2P),
                    class(0.10, LogN(9.0, 0.6), LogN(50.0, 0.7), 0.0),
                ];
                match name.as_str() {
                    "RES-US-2024" => (us, 0.5),
                    "RES-EU-FTTH" => (
                        vec![
                            class(0.60, LogN(200.0, 0.6), LogN(500.0, 0.5), FIXED_P2P),
                            class(0.25, LogN(30.0, 0.5), LogN(300.0, 0.5), FIXED_P2P),
                            class(0.10, Uniform(1.0, 10.0), Uniform(10.0, 80.0), FIXED_P2P),
                            class(0.05, LogN(9.0, 0.6), LogN(50.0, 0.7), 0.0),
                        ],
                        0.5,
                    ),
                    "MOBILE-HEAVY" => {
                        let mut v: Vec<AccessClass> = us[..4]
                            .iter()
                            .map(|c| AccessClass {
                                share: c.share / 0.9 * 0.4,
                                ..*c
                            })
                            .collect();
                        v.push(class(0.60, LogN(9.0, 0.6), LogN(50.0, 0.7), 0.0));
                        (v, 0.5)
                    }
                    "LEGACY-2008" => (
                        vec![
                            class(0.50, Fixed(0.128), Fixed(2.0), 1.0),
                            class(0.30, Fixed(0.384), Fixed(4.0), 1.0),
                            class(0.15, Fixed(1.0), Fixed(8.0), 1.0),
                            class(0.05, Fixed(10.0), Fixed(50.0), 1.0),
                        ],
                        1.0,
                    ),
                    other => bail!(
                        "unknown capacity profile {other:?} (RES-US-2024, RES-EU-FTTH, MOBILE-HEAVY, LEGACY-2008)"
                    ),
                }
            }
        };
        Ok(Self { classes, cap })
    }

    /// With the scenario's P2P share of the uplink.
    pub fn with_cap(mut self, cap: Option<f64>) -> Self {
        if let Some(c) = cap {
            self.cap = c;
        }
        self
    }

    /// Draws one viewer's access.
    pub fn sample(&self, r: &mut Xoshiro256PlusPlus) -> Access {
        let total: f64 = self.classes.iter().map(|c| c.share).sum();
        let mut x = r.random::<f64>() * total;
        let mut class = self.classes[self.classes.len() - 1];
        for c in &self.classes {
            if x < c.share {
                class = *c;
                break;
            }
            x -= c.share;
        }
        let up = class.up.sample(r) * 1e6 * self.cap;
        let down = class.down.sample(r) * 1e6;
        let enabled = r.random::<f64>() < class.p2p;
        Access {
            up_bps: if enabled { up } else { 0.0 },
            line_up_bps: up.max(64e3),
            down_bps: down,
        }
    }
}

/// NAT classes (RFC 4787 mapping and filtering behaviour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatClass {
    /// Public address.
    Open,
    /// Full cone.
    FullCone,
    /// Address-restricted cone.
    AddrRestricted,
    /// Port-restricted cone.
    PortRestricted,
    /// Symmetric (endpoint-dependent mapping), carrier-grade NAT.
    Symmetric,
    /// UDP blocked: no WebRTC at all without TURN.
    UdpBlocked,
}

impl NatClass {
    /// Every class, in declaration order ([`Self::index`]).
    pub const ALL: [Self; 6] = [
        Self::Open,
        Self::FullCone,
        Self::AddrRestricted,
        Self::PortRestricted,
        Self::Symmetric,
        Self::UdpBlocked,
    ];

    /// The class's place in [`Self::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether two peers can connect directly.
    pub fn connects(self, other: Self) -> bool {
        use NatClass::{PortRestricted, Symmetric, UdpBlocked};
        if self == UdpBlocked || other == UdpBlocked {
            return false;
        }
        let hard = |a: Self, b: Self| a == Symmetric && matches!(b, Symmetric | PortRestricted);
        !(hard(self, other) || hard(other, self))
    }

    /// As the tracker protocol says it.
    pub fn wire(self) -> NatType {
        match self {
            Self::Open => NatType::Open,
            Self::FullCone => NatType::FullCone,
            Self::AddrRestricted => NatType::Restricted,
            Self::PortRestricted => NatType::PortRestricted,
            Self::Symmetric => NatType::Symmetric,
            Self::UdpBlocked => NatType::Unknown,
        }
    }

    /// For the NAT bound: peers that can reach "open" peers only.
    pub fn restricted(self) -> bool {
        self == Self::Symmetric
    }
}

/// Draws NAT classes.
#[derive(Debug, Clone)]
pub struct NatModel {
    shares: Vec<(NatClass, f64)>,
}

impl NatModel {
    /// The model for a scenario.
    pub fn new(n: &Nat) -> anyhow::Result<Self> {
        use NatClass::*;
        let shares = match n {
            Nat::Open => vec![(Open, 1.0)],
            Nat::TwoClass { restricted } => {
                if !(0.0..=1.0).contains(restricted) {
                    bail!("nat.restricted must be within [0, 1]");
                }
                vec![(Open, 1.0 - restricted), (Symmetric, *restricted)]
            }
            Nat::Mix { name } => {
                let v = match name.as_str() {
                    "NAT-RES" => [0.10, 0.15, 0.15, 0.42, 0.15, 0.03],
                    "NAT-MOBILE" => [0.05, 0.15, 0.15, 0.25, 0.35, 0.05],
                    "NAT-HOSTILE" => [0.02, 0.05, 0.08, 0.30, 0.40, 0.15],
                    "NAT-FRIENDLY" => [0.30, 0.20, 0.15, 0.28, 0.06, 0.01],
                    other => bail!(
                        "unknown NAT mix {other:?} (NAT-RES, NAT-MOBILE, NAT-HOSTILE, NAT-FRIENDLY)"
                    ),
                };
                [
                    Open,
                    FullCone,
                    AddrRestricted,
                    PortRestricted,
                    Symmetric,
                    UdpBlocked,
                ]
                .into_iter()
                .zip(v)
                .collect()
            }
        };
        Ok(Self { shares })
    }

    /// Draws a class.
    pub fn sample(&self, r: &mut Xoshiro256PlusPlus) -> NatClass {
        let mut x = r.random::<f64>();
        for (c, s) in &self.shares {
            if x < *s {
                return *c;
            }
            x -= s;
        }
        self.shares[self.shares.len() - 1].0
    }

    /// The probability that two random peers connect directly.
    pub fn pairwise_success(&self) -> f64 {
        let mut p = 0.0;
        for (a, sa) in &self.shares {
            for (b, sb) in &self.shares {
                if a.connects(*b) {
                    p += sa * sb;
                }
            }
        }
        p
    }
}

/// Offload bounds of `docs/simulations.md` (from `../shared/simulation-research.md` §2).
pub mod bounds {
    /// Bound 1 (fluid, hybrid CDN): min(1 - 1/N, u/r).
    pub fn fluid(n: f64, u_over_r: f64) -> f64 {
        if n <= 1.0 {
            return 0.0;
        }
        (1.0 - 1.0 / n).min(u_over_r).max(0.0)
    }

    /// Bound 2 (NAT): a fraction f cannot reach each other.
    pub fn nat(n: f64, u_over_r: f64, f: f64) -> f64 {
        let peer = (1.0 - f) * u_over_r + (f * u_over_r).min(1.0 - f);
        fluid(n, 1.0).min(peer)
    }

    /// Bound 4 (Poisson occupancy): 1 - (1 - e^-rho) / rho.
    pub fn occupancy(rho: f64) -> f64 {
        if rho <= 0.0 {
            return 0.0;
        }
        1.0 - (1.0 - (-rho).exp()) / rho
    }

    /// The connectivity oracle (`../shared/simulation-research.md` §2.3, "Bound 2 / LP
    /// max-flow"): the most bytes per second the peers of one swarm can deliver to each other
    /// at one instant, as a maximum flow over NAT classes. Class `i`'s peers upload `up[i]`
    /// bytes per second together, to peers of every class they connect to (their own class
    /// too when it has two peers or more); each peer takes at most `rate`; one copy must come
    /// from the CDN. Exact for the fluid model, where a class's upload splits freely among the
    /// peers it reaches; blocked classes (connecting to none) neither give nor take.
    pub fn class_peer_supply(
        rate: f64,
        count: &[u64; 6],
        up: &[f64; 6],
        connects: impl Fn(usize, usize) -> bool,
    ) -> f64 {
        const K: usize = 6;
        // Nodes: 0 source, 1..=K uploading classes, K+1..=2K receiving classes, 2K+1 sink.
        const V: usize = 2 * K + 2;
        let sink = V - 1;
        let mut cap = [[0.0f64; V]; V];
        let mut receivers = 0;
        for i in 0..K {
            if count[i] == 0 || !(0..K).any(|j| count[j] > 0 && connects(i, j)) {
                continue;
            }
            receivers += count[i];
            cap[0][1 + i] = up[i].max(0.0);
            cap[1 + K + i][sink] = count[i] as f64 * rate;
            for j in 0..K {
                let others = if i == j { count[j] >= 2 } else { count[j] > 0 };
                if others && connects(i, j) {
                    cap[1 + i][1 + K + j] = f64::INFINITY;
                }
            }
        }
        if receivers < 2 {
            return 0.0;
        }
        // Edmonds-Karp: shortest augmenting paths on a graph of 14 nodes.
        let mut flow = 0.0;
        loop {
            let mut prev = [usize::MAX; V];
            prev[0] = 0;
            let mut queue = std::collections::VecDeque::from([0]);
            while let Some(a) = queue.pop_front() {
                for b in 0..V {
                    if prev[b] == usize::MAX && cap[a][b] > 1e-9 {
                        prev[b] = a;
                        queue.push_back(b);
                    }
                }
            }
            if prev[sink] == usize::MAX {
                break;
            }
            let mut push = f64::INFINITY;
            let mut b = sink;
            while b != 0 {
                push = push.min(cap[prev[b]][b]);
                b = prev[b];
            }
            let mut b = sink;
            while b != 0 {
                let a = prev[b];
                cap[a][b] -= push;
                cap[b][a] += push;
                b = a;
            }
            flow += push;
        }
        flow.min((receivers - 1) as f64 * rate).max(0.0)
    }

    /// The most bytes per second peers of one swarm can deliver to each other at one instant:
    /// open peers upload to anyone reachable, restricted ones only to open ones, blocked ones
    /// neither give nor take, and one copy must come from the CDN (the two-class case of
    /// [`class_peer_supply`], in closed form).
    pub fn instant_peer_supply(
        rate: f64,
        open: u64,
        restricted: u64,
        up_open: f64,
        up_restricted: f64,
    ) -> f64 {
        let receivers = open + restricted;
        if receivers < 2 {
            return 0.0;
        }
        let supply = up_open + up_restricted.min(open as f64 * rate);
        supply.min((receivers - 1) as f64 * rate).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The class oracle agrees with the two-class closed form, and sees what it misses:
    /// port-restricted and symmetric peers do not connect.
    #[test]
    fn the_class_oracle_is_a_max_flow_over_nat_classes() {
        let connects = |i: usize, j: usize| NatClass::ALL[i].connects(NatClass::ALL[j]);
        let (open, sym) = (NatClass::Open.index(), NatClass::Symmetric.index());
        for (n_open, n_sym, u_open, u_sym) in [
            (10, 0, 3.0, 0.0),
            (3, 7, 1.0, 1.0),
            (1, 9, 2.0, 2.0),
            (5, 5, 0.5, 4.0),
            (0, 10, 0.0, 3.0),
            (1, 0, 9.0, 0.0),
        ] {
            let (mut count, mut up) = ([0u64; 6], [0.0f64; 6]);
            count[open] = n_open;
            count[sym] = n_sym;
            up[open] = n_open as f64 * u_open;
            up[sym] = n_sym as f64 * u_sym;
            let flow = bounds::class_peer_supply(1.0, &count, &up, connects);
            let closed = bounds::instant_peer_supply(1.0, n_open, n_sym, up[open], up[sym]);
            assert!(
                (flow - closed).abs() < 1e-6,
                "{n_open} open, {n_sym} symmetric: {flow} vs {closed}"
            );
        }
        // Ten port-restricted and ten symmetric peers, each uploading the stream rate: the
        // symmetric ones reach nobody here (as if blocked), and the port-restricted ones feed
        // each other all but the one copy from the CDN. The two-class form counts the
        // port-restricted as open and would say 19.
        let (mut count, mut up) = ([0u64; 6], [0.0f64; 6]);
        let pr = NatClass::PortRestricted.index();
        count[pr] = 10;
        count[sym] = 10;
        up[pr] = 10.0;
        up[sym] = 10.0;
        let flow = bounds::class_peer_supply(1.0, &count, &up, connects);
        assert!((flow - 9.0).abs() < 1e-6, "{flow}");
        assert!((bounds::instant_peer_supply(1.0, 10, 10, 10.0, 10.0) - 19.0).abs() < 1e-6);
        // Blocked peers neither give nor take.
        let mut with_blocked = count;
        with_blocked[NatClass::UdpBlocked.index()] = 50;
        let mut up_blocked = up;
        up_blocked[NatClass::UdpBlocked.index()] = 500.0;
        let same = bounds::class_peer_supply(1.0, &with_blocked, &up_blocked, connects);
        assert!((same - flow).abs() < 1e-6);
    }

    #[test]
    fn nat_mixes_reproduce_the_published_pairwise_success() {
        for (name, want) in [
            ("NAT-RES", 0.792),
            ("NAT-MOBILE", 0.605),
            ("NAT-HOSTILE", 0.322),
            ("NAT-FRIENDLY", 0.943),
        ] {
            let m = NatModel::new(&Nat::Mix { name: name.into() }).unwrap();
            let got = m.pairwise_success();
            assert!((got - want).abs() < 0.001, "{name}: {got}");
        }
    }

    #[test]
    fn bounds_match_the_tables() {
        assert!((bounds::fluid(5.0, 1.0) - 0.8).abs() < 1e-9);
        assert!((bounds::fluid(50.0, 0.5) - 0.5).abs() < 1e-9);
        assert!((bounds::nat(1000.0, 1.0, 0.7) - 0.6).abs() < 1e-9);
        assert!((bounds::nat(1000.0, 2.0, 0.8) - 0.6).abs() < 1e-9);
        assert!((bounds::nat(1000.0, 0.5, 0.9) - 0.15).abs() < 1e-9);
        assert!((bounds::occupancy(1.0) - 0.368).abs() < 0.001);
        assert!((bounds::occupancy(30.0) - 0.967).abs() < 0.001);
    }

    #[test]
    fn distributions_have_their_moments() {
        let mut r = rng(7, Stream::Viewer, 1);
        let n = 200_000;
        let mean = |f: &mut dyn FnMut() -> f64| (0..n).map(|_| f()).sum::<f64>() / n as f64;
        let e = mean(&mut || exponential(&mut r, 45.0));
        assert!((e - 45.0).abs() < 0.5, "{e}");
        let w = Session::Weibull {
            shape: 0.5,
            median_secs: 90.0,
        };
        let want = session_mean(&w, 0.0).unwrap();
        let got = mean(&mut || session_secs(&mut r, &w, 0.0).unwrap());
        assert!((got / want - 1.0).abs() < 0.05, "{got} vs {want}");
        let b = mean(&mut || beta(&mut r, 0.6, 0.9));
        assert!((b - 0.4).abs() < 0.005, "{b}");
        let l = Session::Lognormal {
            median_secs: 900.0,
            sigma: 1.2,
        };
        let want = session_mean(&l, 0.0).unwrap();
        let got = mean(&mut || session_secs(&mut r, &l, 0.0).unwrap());
        assert!((got / want - 1.0).abs() < 0.05, "{got} vs {want}");
    }

    #[test]
    fn zipf_favours_the_head() {
        let p = Popularity::new(100, 1.0);
        let mut r = rng(1, Stream::Arrivals, 0);
        let hits = (0..10_000).filter(|_| p.sample(&mut r) == 0).count();
        // 1 / H(100) = 0.193.
        assert!((1700..2200).contains(&hits), "{hits}");
    }
}
