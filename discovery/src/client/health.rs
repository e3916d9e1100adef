//! Per-endpoint outlier detection (after Envoy's): consecutive connection failures or UNAVAILABLE
//! answers eject an endpoint for `base × (times ejected)`, capped at `max`; the pool never ejects
//! more than `max_ejected_percent` of its endpoints at once (at least one). And the retry budget:
//! retries allowed as a share of calls plus a floor per second, lock-free.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Outlier detection settings.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct OutlierOptions {
    /// Consecutive failures that eject an endpoint (0: never eject).
    pub consecutive_failures: u32,
    /// First ejection time; the n-th ejection lasts n times as long.
    pub base_ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
    /// Most endpoints ejected at once, as a percentage of the pool (at least one is always allowed).
    pub max_ejected_percent: u8,
}

impl Default for OutlierOptions {
    fn default() -> Self {
        OutlierOptions {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(120),
            max_ejected_percent: 50,
        }
    }
}

/// One endpoint's health, updated with atomics from any call.
#[derive(Debug, Default)]
pub(crate) struct Health {
    consecutive: AtomicU32,
    /// Milliseconds since the pool's epoch until which the endpoint is ejected (0: not ejected).
    ejected_until: AtomicU64,
    ejections: AtomicU32,
}

impl Health {
    pub(crate) fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ms
    }

    /// How much longer the ejection lasts.
    pub(crate) fn ejected_for(&self, now_ms: u64) -> Duration {
        Duration::from_millis(self.ejected_until.load(Ordering::Relaxed).saturating_sub(now_ms))
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Ordering::Relaxed)
    }

    pub(crate) fn success(&self) {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failure; true when it reaches the threshold (the caller then asks the pool whether
    /// the cap allows an ejection).
    pub(crate) fn failure(&self, opts: &OutlierOptions) -> bool {
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        opts.consecutive_failures > 0 && n >= opts.consecutive_failures
    }

    /// Ejects now; returns for how long. The count of past ejections decays: one that ended more
    /// than `max_ejection` ago is forgotten.
    pub(crate) fn eject(&self, now_ms: u64, opts: &OutlierOptions) -> Duration {
        let last_until = self.ejected_until.load(Ordering::Relaxed);
        if last_until != 0 && now_ms.saturating_sub(last_until) > opts.max_ejection.as_millis() as u64 {
            self.ejections.store(0, Ordering::Relaxed);
        }
        let n = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let time = opts.base_ejection.saturating_mul(n).min(opts.max_ejection);
        self.ejected_until.store(now_ms + time.as_millis() as u64, Ordering::Relaxed);
        self.consecutive.store(0, Ordering::Relaxed);
        time
    }
}

/// Whether one more endpoint may be ejected when `ejected` of `pool` already are.
pub(crate) fn may_eject(ejected: usize, pool: usize, opts: &OutlierOptions) -> bool {
    let cap = (pool * usize::from(opts.max_ejected_percent) / 100).max(1);
    ejected < cap
}

/// Retries allowed as `ratio` of calls plus `min_per_sec`, as a token bucket in milli-tokens.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    per_call: i64,
    per_sec: i64,
    cap: i64,
    balance: AtomicI64,
    refilled_ms: AtomicU64,
    epoch: Instant,
}

impl RetryBudget {
    pub(crate) fn new(ratio: f64, min_per_sec: u32) -> Self {
        let per_sec = i64::from(min_per_sec) * 1000;
        RetryBudget {
            per_call: (ratio * 1000.0) as i64,
            per_sec,
            cap: per_sec * 10 + 100_000,
            balance: AtomicI64::new(per_sec),
            refilled_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// A call was made.
    pub(crate) fn deposit(&self) {
        if self.per_call > 0 {
            self.add(self.per_call);
        }
    }

    fn add(&self, milli: i64) {
        let _ = self.balance.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some((b + milli).min(self.cap)));
    }

    /// Takes one retry if the budget allows.
    pub(crate) fn withdraw(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.refilled_ms.load(Ordering::Relaxed);
        if now >= last + 100
            && self.refilled_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.add(self.per_sec * (now - last) as i64 / 1000);
        }
        self.balance.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| (b >= 1000).then_some(b - 1000)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_grows_caps_and_decays() {
        let opts = OutlierOptions {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            max_ejected_percent: 50,
        };
        let h = Health::default();
        assert!(!h.failure(&opts) && !h.failure(&opts));
        h.success();
        assert!(!h.failure(&opts) && !h.failure(&opts), "a success resets the count");
        assert!(h.failure(&opts), "the third consecutive failure");
        assert_eq!(h.eject(1_000, &opts), Duration::from_secs(10));
        assert!(h.is_ejected(10_999) && !h.is_ejected(11_000));
        assert_eq!(h.eject(20_000, &opts), Duration::from_secs(20), "the second ejection lasts twice as long");
        assert_eq!(h.eject(50_000, &opts), Duration::from_secs(25), "capped at max_ejection");
        // healthy for longer than max_ejection after the last one ended: forgotten
        assert_eq!(h.eject(75_000 + 25_001, &opts), Duration::from_secs(10));
        let never = OutlierOptions { consecutive_failures: 0, ..opts };
        assert!((0..100).all(|_| !h.failure(&never)), "0 disables ejection");
    }

    #[test]
    fn the_cap_limits_the_share_ejected_but_allows_one() {
        let opts = OutlierOptions { max_ejected_percent: 50, ..OutlierOptions::default() };
        assert!(may_eject(0, 10, &opts) && may_eject(4, 10, &opts));
        assert!(!may_eject(5, 10, &opts), "half of 10 at most");
        assert!(may_eject(0, 1, &opts), "one endpoint can always be ejected");
        assert!(!may_eject(1, 1, &opts));
        let strict = OutlierOptions { max_ejected_percent: 10, ..opts };
        assert!(may_eject(0, 3, &strict) && !may_eject(1, 3, &strict));
    }

    #[test]
    fn the_budget_allows_a_share_of_calls_plus_a_floor() {
        let b = RetryBudget::new(0.2, 0);
        assert!(!b.withdraw(), "nothing deposited yet");
        for _ in 0..10 {
            b.deposit();
        }
        assert!(b.withdraw() && b.withdraw(), "20% of 10 calls: 2 retries");
        assert!(!b.withdraw());
        let floor = RetryBudget::new(0.0, 10);
        let allowed = (0..100).filter(|_| floor.withdraw()).count();
        assert_eq!(allowed, 10, "the floor: 10 retries at once, then it refills over time");
    }
}
