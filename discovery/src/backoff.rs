//! Exponential backoff with full jitter, so that many consumers restarting a watch at once do not
//! hit the API server in step.

use std::time::Duration;

use rand::Rng;

use crate::config::BackoffConfig;

/// Delays that double from `min` up to `max`; each delay is drawn uniformly from `[d/2, d]`.
#[derive(Clone, Debug)]
pub struct Backoff {
    cfg: BackoffConfig,
    next: Duration,
}

impl Backoff {
    /// Starts at `cfg.min`.
    pub fn new(cfg: BackoffConfig) -> Self {
        Backoff { cfg, next: cfg.min }
    }

    /// The next delay (jittered), advancing the sequence.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.cfg.max);
        jitter(ceiling, 0.5)
    }

    /// Back to `min` after a success.
    pub fn reset(&mut self) {
        self.next = self.cfg.min;
    }
}

/// A duration drawn uniformly from `[d * (1 - spread), d]`.
pub fn jitter(d: Duration, spread: f64) -> Duration {
    let spread = spread.clamp(0.0, 1.0);
    let low = d.mul_f64(1.0 - spread);
    if low >= d {
        return d;
    }
    let nanos = rand::rng().random_range(low.as_nanos()..=d.as_nanos());
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_with_jitter_and_resets() {
        let cfg = BackoffConfig { min: Duration::from_millis(100), max: Duration::from_millis(800) };
        let mut b = Backoff::new(cfg);
        let ceilings = [100, 200, 400, 800, 800, 800];
        for c in ceilings {
            let d = b.next_delay();
            let c = Duration::from_millis(c);
            assert!(d <= c && d >= c / 2, "{d:?} not within [{:?}, {c:?}]", c / 2);
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads() {
        let samples: Vec<Duration> = (0..200).map(|_| jitter(Duration::from_secs(10), 0.2)).collect();
        assert!(samples.iter().all(|d| *d >= Duration::from_secs(8) && *d <= Duration::from_secs(10)));
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 100, "jitter is random, got {} distinct values", distinct.len());
    }
}
