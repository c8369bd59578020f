//! Small numeric helpers: a token bucket for upload rate caps and a throughput estimator.

use std::time::Duration;

use crate::time::Time;

/// A token bucket: `rate` bytes per second, holding at most `burst` bytes.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: u64,
    burst: u64,
    tokens: u64,
    updated: Time,
}

impl TokenBucket {
    pub(crate) fn new(rate: u64, burst: u64, now: Time) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            updated: now,
        }
    }

    fn refill(&mut self, now: Time) {
        if self.rate == 0 {
            self.updated = now;
            return;
        }
        let elapsed = now.saturating_since(self.updated);
        let add = (u128::from(self.rate) * elapsed.as_micros() / 1_000_000) as u64;
        if self.tokens + add >= self.burst {
            self.tokens = self.burst;
            self.updated = now;
        } else if add > 0 {
            self.tokens += add;
            // Advance by exactly the time those tokens took, keeping the remainder.
            let used = u128::from(add) * 1_000_000 / u128::from(self.rate);
            self.updated += Duration::from_micros(used as u64);
        }
    }

    /// Whether `bytes` may be sent now.
    pub(crate) fn available(&mut self, now: Time) -> u64 {
        self.refill(now);
        self.tokens
    }

    pub(crate) fn take(&mut self, bytes: u64) {
        self.tokens = self.tokens.saturating_sub(bytes);
    }

    /// When at least `bytes` (capped at the burst) will be available.
    pub(crate) fn ready_at(&mut self, now: Time, bytes: u64) -> Time {
        self.refill(now);
        let want = bytes.min(self.burst);
        if self.tokens >= want || self.rate == 0 {
            return now;
        }
        let missing = want - self.tokens;
        let micros = (u128::from(missing) * 1_000_000).div_ceil(u128::from(self.rate));
        self.updated + Duration::from_micros(micros as u64 + 1)
    }
}

/// An exponentially weighted estimate of a throughput, in bytes per second.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Throughput {
    bytes_per_sec: f64,
    samples: u32,
}

impl Throughput {
    pub(crate) fn new(initial: f64) -> Self {
        Self {
            bytes_per_sec: initial,
            samples: 0,
        }
    }

    /// Adds a sample of `bytes` transferred in `elapsed`.
    pub(crate) fn sample(&mut self, bytes: u64, elapsed: Duration) {
        let secs = elapsed.as_secs_f64().max(0.001);
        let rate = bytes as f64 / secs;
        let alpha = if self.samples == 0 { 1.0 } else { 0.3 };
        self.bytes_per_sec = alpha * rate + (1.0 - alpha) * self.bytes_per_sec;
        self.samples = self.samples.saturating_add(1);
    }

    /// Halves the estimate (a stall or a timeout).
    pub(crate) fn penalize(&mut self) {
        self.bytes_per_sec /= 2.0;
    }

    pub(crate) fn get(&self) -> f64 {
        self.bytes_per_sec
    }

    pub(crate) fn is_proven(&self) -> bool {
        self.samples > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_its_rate() {
        let mut b = TokenBucket::new(1000, 500, Time::ZERO);
        assert_eq!(b.available(Time::ZERO), 500);
        b.take(500);
        assert_eq!(b.available(Time::ZERO), 0);
        assert_eq!(b.ready_at(Time::ZERO, 100), Time::from_micros(100_001));
        assert_eq!(b.available(Time::from_millis(100)), 100);
        assert_eq!(b.available(Time::from_secs(10)), 500);
    }

    #[test]
    fn throughput_converges() {
        let mut t = Throughput::new(1e6);
        assert!(!t.is_proven());
        t.sample(2_000_000, Duration::from_secs(1));
        assert!((t.get() - 2e6).abs() < 1.0);
        for _ in 0..30 {
            t.sample(1_000_000, Duration::from_secs(1));
        }
        assert!((t.get() - 1e6).abs() < 1e4);
        t.penalize();
        assert!(t.get() < 6e5);
    }
}
