//! Counters for every call outcome, per provider instance, retries and budget, kept both as Prometheus
//! metrics and as a snapshot for logs, `/stats` and tests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::client::{CallError, Reply};

type Labels = Vec<(String, String)>;

/// A copy of the counters.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Successful calls.
    pub ok: u64,
    /// Failed calls.
    pub failed: u64,
    /// Retries made.
    pub retries: u64,
    /// Retries refused by the budget.
    pub budget_exhausted: u64,
    /// Successful calls by provider instance (`name version`).
    pub by_instance: BTreeMap<String, u64>,
    /// Failed calls by outcome.
    pub failures: BTreeMap<String, u64>,
}

#[derive(Debug)]
struct Inner {
    snapshot: Mutex<StatsSnapshot>,
    calls: Family<Labels, Counter>,
    by_instance: Family<Labels, Counter>,
    retries: Counter,
    budget_exhausted: Counter,
    latency: Histogram,
    seq: AtomicU64,
}

/// Shared call statistics.
#[derive(Clone, Debug)]
pub struct Stats {
    inner: Arc<Inner>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            inner: Arc::new(Inner {
                snapshot: Mutex::new(StatsSnapshot::default()),
                calls: Family::default(),
                by_instance: Family::default(),
                retries: Counter::default(),
                budget_exhausted: Counter::default(),
                latency: Histogram::new(exponential_buckets(0.0002, 2.0, 16)),
                seq: AtomicU64::new(0),
            }),
        }
    }
}

impl Stats {
    /// Statistics whose metrics are registered as `consumer_*` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let s = Stats::default();
        let r = registry.sub_registry_with_prefix("consumer");
        r.register("calls", "Calls by outcome (ok, error, deadline, no_endpoints, not_ready)", s.inner.calls.clone());
        r.register("calls_by_instance", "Successful calls by provider instance", s.inner.by_instance.clone());
        r.register("retries", "Retries on another endpoint", s.inner.retries.clone());
        r.register("retry_budget_exhausted", "Retries refused by the retry budget", s.inner.budget_exhausted.clone());
        r.register("call_seconds", "Latency of whole calls, retries included", s.inner.latency.clone());
        s
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatsSnapshot> {
        self.inner.snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one call's result.
    pub fn record(&self, result: &Result<Reply, CallError>, latency: Duration) {
        self.inner.seq.fetch_add(1, Ordering::Relaxed);
        self.inner.latency.observe(latency.as_secs_f64());
        let outcome = match result {
            Ok(r) => {
                let instance = r
                    .reply
                    .served_by
                    .as_ref()
                    .map(|i| format!("{} {}", i.name, i.version))
                    .unwrap_or_else(|| r.endpoint.to_string());
                self.inner.by_instance.get_or_create(&vec![("instance".into(), instance.clone())]).inc();
                let mut s = self.lock();
                s.ok += 1;
                *s.by_instance.entry(instance).or_default() += 1;
                "ok"
            }
            Err(e) => {
                let mut s = self.lock();
                s.failed += 1;
                *s.failures.entry(e.outcome().to_owned()).or_default() += 1;
                e.outcome()
            }
        };
        self.inner.calls.get_or_create(&vec![("outcome".into(), outcome.into())]).inc();
    }

    pub(crate) fn retried(&self) {
        self.inner.retries.inc();
        self.lock().retries += 1;
    }

    pub(crate) fn budget_exhausted(&self) {
        self.inner.budget_exhausted.inc();
        self.lock().budget_exhausted += 1;
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.lock().clone()
    }
}
