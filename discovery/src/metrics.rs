//! Prometheus metrics. The crate never owns a global registry: build [`Metrics`] and register it into
//! the application's `prometheus_client` registry, or use [`Metrics::default`] to count unexported.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::model::{EndpointSet, Source};

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// Buckets from 100 µs to ~3.3 s for DNS lookups.
#[derive(Clone, Copy, Debug)]
struct DnsBuckets;

impl MetricConstructor<Histogram> for DnsBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.0001, 2.0, 16))
    }
}

/// Every metric the crate records, labelled by `service` (the Dubbo service key).
#[derive(Clone, Debug)]
pub struct Metrics {
    endpoints: Family<Labels, Gauge>,
    updates: Family<Labels, Counter>,
    watch_restarts: Family<Labels, Counter>,
    dns_lookup: Family<Labels, Histogram, DnsBuckets>,
    dns_failures: Family<Labels, Counter>,
    stale_seconds: Family<Labels, Gauge<f64, AtomicU64>>,
    active_source: Family<Labels, Gauge>,
    version: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            endpoints: Family::default(),
            updates: Family::default(),
            watch_restarts: Family::default(),
            dns_lookup: Family::new_with_constructor(DnsBuckets),
            dns_failures: Family::default(),
            stale_seconds: Family::default(),
            active_source: Family::default(),
            version: Family::default(),
        }
    }
}

impl Metrics {
    /// New metrics registered under `discovery_*` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        let r = registry.sub_registry_with_prefix("discovery");
        r.register(
            "endpoints",
            "Endpoints in the current set, by state (ready, serving, not_ready)",
            m.endpoints.clone(),
        );
        r.register("updates", "Endpoint sets published, by source", m.updates.clone());
        r.register("watch_restarts", "EndpointSlice watch restarts, by reason", m.watch_restarts.clone());
        r.register("dns_lookup_seconds", "Latency of one DNS resolution round", m.dns_lookup.clone());
        r.register("dns_failures", "DNS resolution rounds that failed, by kind", m.dns_failures.clone());
        r.register(
            "snapshot_stale_seconds",
            "How long the served set has gone unconfirmed (0 while live)",
            m.stale_seconds.clone(),
        );
        r.register("active_source", "1 for the source the served set comes from", m.active_source.clone());
        r.register("snapshot_version", "Version of the latest published endpoint set", m.version.clone());
        m
    }

    pub(crate) fn published(&self, service: &str, set: &EndpointSet) {
        let (ready, serving, not_ready) = set.counts();
        for (state, n) in [("ready", ready), ("serving", serving), ("not_ready", not_ready)] {
            self.endpoints.get_or_create(&labels(&[("service", service), ("state", state)])).set(n as i64);
        }
        self.updates.get_or_create(&labels(&[("service", service), ("source", set.source.as_str())])).inc();
        for s in [Source::Api, Source::Dns, Source::Vip, Source::Static] {
            let v = i64::from(s == set.source);
            self.active_source.get_or_create(&labels(&[("service", service), ("source", s.as_str())])).set(v);
        }
        self.version.get_or_create(&labels(&[("service", service)])).set(set.version as i64);
    }

    pub(crate) fn stale(&self, service: &str, seconds: f64) {
        self.stale_seconds.get_or_create(&labels(&[("service", service)])).set(seconds);
    }

    pub(crate) fn watch_restart(&self, service: &str, reason: &str) {
        self.watch_restarts.get_or_create(&labels(&[("service", service), ("reason", reason)])).inc();
    }

    pub(crate) fn dns_lookup(&self, service: &str, seconds: f64) {
        self.dns_lookup.get_or_create(&labels(&[("service", service)])).observe(seconds);
    }

    pub(crate) fn dns_failure(&self, service: &str, kind: &str) {
        self.dns_failures.get_or_create(&labels(&[("service", service), ("kind", kind)])).inc();
    }

    /// Watch restarts so far for `service` and `reason` (for tests and benchmarks).
    pub fn watch_restarts(&self, service: &str, reason: &str) -> u64 {
        self.watch_restarts.get_or_create(&labels(&[("service", service), ("reason", reason)])).get()
    }
}
