//! The demo's own counters: calls by outcome and by provider version (which only the replies can
//! tell) as Prometheus metrics, and by provider instance in the snapshot for logs, `/stats` and tests
//! (pod names change with every rollout and are chosen by the provider: they belong in logs and
//! debug output, never in metric labels). Failed calls made before the first success are counted
//! apart (`failed_at_start`): a consumer started with its providers may call before any is ready.
//! Retries and failure causes are the balanced client's (`discovery_client_*` metrics,
//! [`discovery::client::ClientStats`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::reply::Reply;

type Labels = Vec<(String, String)>;

/// A copy of the counters.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Successful calls.
    pub ok: u64,
    /// Failed calls.
    pub failed: u64,
    /// Of those, failed before the first successful call (no provider was ready yet, typically).
    pub failed_at_start: u64,
    /// Calls that failed after their request may have reached a provider and were not replayed
    /// (from the balanced client).
    pub not_replayed: u64,
    /// Retries on another endpoint (from the balanced client).
    pub retries: u64,
    /// Retries refused by the budget (from the balanced client).
    pub budget_exhausted: u64,
    /// Successful calls by provider instance (`name version`).
    pub by_instance: BTreeMap<String, u64>,
    /// Failed calls by gRPC code (`unavailable`, `deadline_exceeded`, ...).
    pub failures: BTreeMap<String, u64>,
    /// Failed calls by cause, as the balanced client saw them.
    pub causes: BTreeMap<String, u64>,
    /// Calls by the endpoint's zone (`zone (local|remote)`).
    pub calls_by_zone: BTreeMap<String, u64>,
}

#[derive(Debug)]
struct Inner {
    snapshot: Mutex<StatsSnapshot>,
    calls: Family<Labels, Counter>,
    by_version: Family<Labels, Counter>,
    latency: Histogram,
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
                by_version: Family::default(),
                latency: Histogram::new(exponential_buckets(0.0002, 2.0, 16)),
            }),
        }
    }
}

/// `DeadlineExceeded` → `deadline_exceeded`: the provider's labels, so both sides' metrics match.
pub use provider::greeter::code_label;

impl Stats {
    /// Statistics whose metrics are registered as `consumer_*` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let s = Stats::default();
        let r = registry.sub_registry_with_prefix("consumer");
        r.register("calls", "Calls by outcome (ok, or the gRPC code)", s.inner.calls.clone());
        r.register("calls_by_version", "Successful calls by the provider's Dubbo version", s.inner.by_version.clone());
        r.register("call_seconds", "Latency of whole calls, retries included", s.inner.latency.clone());
        s
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatsSnapshot> {
        self.inner.snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one call's result.
    pub fn record(&self, result: &Result<Reply, tonic::Status>, latency: Duration) {
        self.inner.latency.observe(latency.as_secs_f64());
        let outcome = match result {
            Ok(r) => {
                let instance = r
                    .reply
                    .served_by
                    .as_ref()
                    .map(|i| format!("{} {}", i.name, i.version))
                    .or_else(|| r.endpoint.map(|e| e.to_string()))
                    .unwrap_or_else(|| "unknown".to_owned());
                let version = r.reply.served_by.as_ref().map_or_else(|| "unknown".to_owned(), |i| i.version.clone());
                self.inner.by_version.get_or_create(&vec![("version".into(), version)]).inc();
                let mut s = self.lock();
                s.ok += 1;
                *s.by_instance.entry(instance).or_default() += 1;
                "ok".to_owned()
            }
            Err(status) => {
                let code = code_label(status.code());
                let mut s = self.lock();
                s.failed += 1;
                if s.ok == 0 {
                    s.failed_at_start += 1;
                }
                *s.failures.entry(code.clone()).or_default() += 1;
                code
            }
        };
        self.inner.calls.get_or_create(&vec![("outcome".into(), outcome)]).inc();
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_snake_case() {
        assert_eq!(code_label(tonic::Code::DeadlineExceeded), "deadline_exceeded");
        assert_eq!(code_label(tonic::Code::Unavailable), "unavailable");
    }
}
