//! Prometheus metrics. The crate never owns a global registry: build [`Metrics`] and register it into
//! the application's `prometheus_client` registry, or use [`Metrics::default`] to count unexported.
//!
//! Sets are labelled by `k8s_service` (`namespace/service:port`, one per target, shared by every
//! Dubbo service bound to it); watches by `watch` (`endpointslices ns/svc`, `services ns`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::model::{EndpointSet, Source};

pub(crate) type Labels = Vec<(String, String)>;

/// Label pairs as prometheus-client families take them.
pub(crate) fn labels(pairs: &[(&str, &str)]) -> Labels {
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

/// Buckets from 5 ms to ~82 s for the propagation of an EndpointSlice change.
#[derive(Clone, Copy, Debug)]
struct PropagationBuckets;

impl PropagationBuckets {
    fn histogram() -> Histogram {
        Histogram::new(exponential_buckets(0.005, 2.0, 15))
    }
}

/// Every metric the crate records.
#[derive(Clone, Debug)]
pub struct Metrics {
    endpoints: Family<Labels, Gauge>,
    updates: Family<Labels, Counter>,
    watch_restarts: Family<Labels, Counter>,
    dns_lookup: Family<Labels, Histogram, DnsBuckets>,
    dns_failures: Family<Labels, Counter>,
    dns_empty_ignored: Family<Labels, Counter>,
    stale_seconds: Family<Labels, Gauge<f64, AtomicU64>>,
    active_source: Family<Labels, Gauge>,
    version: Family<Labels, Gauge>,
    skipped: Family<Labels, Counter>,
    mapping_warnings: Family<Labels, Counter>,
    retargets: Family<Labels, Counter>,
    task_restarts: Family<Labels, Counter>,
    propagation: Histogram,
    propagation_last: Family<Labels, Gauge<f64, AtomicU64>>,
    propagation_count: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            endpoints: Family::default(),
            updates: Family::default(),
            watch_restarts: Family::default(),
            dns_lookup: Family::new_with_constructor(DnsBuckets),
            dns_failures: Family::default(),
            dns_empty_ignored: Family::default(),
            stale_seconds: Family::default(),
            active_source: Family::default(),
            version: Family::default(),
            skipped: Family::default(),
            mapping_warnings: Family::default(),
            retargets: Family::default(),
            task_restarts: Family::default(),
            propagation: PropagationBuckets::histogram(),
            propagation_last: Family::default(),
            propagation_count: Family::default(),
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
            "Endpoints in the current set, by state (ready, serving_terminating, other)",
            m.endpoints.clone(),
        );
        r.register("updates", "Endpoint sets published, by source", m.updates.clone());
        r.register("watch_restarts", "Kubernetes watch restarts, by reason", m.watch_restarts.clone());
        r.register("dns_lookup_seconds", "Latency of one DNS resolution round", m.dns_lookup.clone());
        r.register("dns_failures", "DNS queries or rounds that failed, by kind", m.dns_failures.clone());
        r.register(
            "dns_empty_ignored",
            "Empty DNS answers set aside during an API outage in favour of a non-empty last-known-good set",
            m.dns_empty_ignored.clone(),
        );
        r.register(
            "snapshot_stale_seconds",
            "How long the served set has gone unconfirmed (0 while live)",
            m.stale_seconds.clone(),
        );
        r.register("active_source", "1 for the source the served set comes from", m.active_source.clone());
        r.register("snapshot_version", "Version of the latest published endpoint set", m.version.clone());
        r.register("skipped_endpoints", "Endpoints left out of EndpointSlices, by reason", m.skipped.clone());
        r.register(
            "mapping_warnings",
            "Mapping problems (tied annotations, invalid port annotations)",
            m.mapping_warnings.clone(),
        );
        r.register("retargets", "Dubbo services moved to another Kubernetes Service", m.retargets.clone());
        r.register(
            "task_restarts",
            "Background tasks restarted after a panic, by task (what they publish was marked stale meanwhile)",
            m.task_restarts.clone(),
        );
        r.register(
            "endpoints_propagation_seconds",
            "From an EndpointSlice change's endpoints.kubernetes.io/last-change-trigger-time (set by the \
             EndpointSlice controller) to the publish of the snapshot holding it (API mode)",
            m.propagation.clone(),
        );
        r.register(
            "endpoints_propagation_last_seconds",
            "The latest such delay, by Service (namespace/name)",
            m.propagation_last.clone(),
        );
        m
    }

    pub(crate) fn propagation(&self, service: &str, seconds: f64) {
        self.propagation.observe(seconds);
        let l = labels(&[("service", service)]);
        self.propagation_last.get_or_create(&l).set(seconds);
        self.propagation_count.get_or_create(&l).inc();
    }

    /// Changes of `service` (`namespace/name`) measured so far, and the latest delay in seconds, from
    /// the controller's trigger time to the snapshot (see `discovery_endpoints_propagation_seconds`).
    pub fn propagation_last(&self, service: &str) -> (u64, f64) {
        let l = labels(&[("service", service)]);
        // Read without creating: asking must not add a series to /metrics.
        let count = self.propagation_count.get(&l).map_or(0, |c| c.get());
        let last = self.propagation_last.get(&l).map_or(0.0, |g| g.get());
        (count, last)
    }

    pub(crate) fn published(&self, k8s_service: &str, set: &EndpointSet) {
        let c = set.counts();
        for (state, n) in [("ready", c.ready), ("serving_terminating", c.serving_terminating), ("other", c.other)] {
            self.endpoints.get_or_create(&labels(&[("k8s_service", k8s_service), ("state", state)])).set(n as i64);
        }
        self.updates.get_or_create(&labels(&[("k8s_service", k8s_service), ("source", set.source.as_str())])).inc();
        for s in [Source::Api, Source::Dns, Source::Vip, Source::Static] {
            let v = i64::from(s == set.source);
            self.active_source.get_or_create(&labels(&[("k8s_service", k8s_service), ("source", s.as_str())])).set(v);
        }
        self.version.get_or_create(&labels(&[("k8s_service", k8s_service)])).set(set.version as i64);
    }

    /// Removes the gauges of a target nobody follows any more: a dropped or re-targeted Service
    /// must not keep its last values for ever.
    pub(crate) fn forget(&self, k8s_service: &str) {
        for state in ["ready", "serving_terminating", "other"] {
            self.endpoints.remove(&labels(&[("k8s_service", k8s_service), ("state", state)]));
        }
        for s in [Source::Api, Source::Dns, Source::Vip, Source::Static] {
            self.active_source.remove(&labels(&[("k8s_service", k8s_service), ("source", s.as_str())]));
        }
        self.version.remove(&labels(&[("k8s_service", k8s_service)]));
        self.stale_seconds.remove(&labels(&[("k8s_service", k8s_service)]));
    }

    /// The restart counter of background tasks of `task`.
    pub(crate) fn restarts(&self, task: &str) -> Counter {
        self.task_restarts.get_or_create(&labels(&[("task", task)])).clone()
    }

    /// Restarts so far of tasks of `task` (`slices`, `resolution`, ...) after a panic.
    pub fn task_restarts(&self, task: &str) -> u64 {
        self.restarts(task).get()
    }

    /// Whether a gauge series of `k8s_service` is exported now (for tests of series removal).
    pub fn exports(&self, k8s_service: &str) -> bool {
        let mut text = String::new();
        let mut r = Registry::default();
        r.register("v", "", self.version.clone());
        let _ = prometheus_client::encoding::text::encode(&mut text, &r);
        text.contains(&format!("k8s_service=\"{k8s_service}\""))
    }

    pub(crate) fn stale(&self, k8s_service: &str, seconds: f64) {
        self.stale_seconds.get_or_create(&labels(&[("k8s_service", k8s_service)])).set(seconds);
    }

    pub(crate) fn watch_restart(&self, watch: &str, reason: &str) {
        self.watch_restarts.get_or_create(&labels(&[("watch", watch), ("reason", reason)])).inc();
    }

    pub(crate) fn dns_lookup(&self, k8s_service: &str, seconds: f64) {
        self.dns_lookup.get_or_create(&labels(&[("k8s_service", k8s_service)])).observe(seconds);
    }

    pub(crate) fn dns_failure(&self, k8s_service: &str, kind: &str) {
        self.dns_failures.get_or_create(&labels(&[("k8s_service", k8s_service), ("kind", kind)])).inc();
    }

    pub(crate) fn dns_empty_ignored(&self, k8s_service: &str) {
        self.dns_empty_ignored.get_or_create(&labels(&[("k8s_service", k8s_service)])).inc();
    }

    pub(crate) fn skipped(&self, reason: &str, n: u64) {
        self.skipped.get_or_create(&labels(&[("reason", reason)])).inc_by(n);
    }

    pub(crate) fn mapping_warning(&self, kind: &str) {
        self.mapping_warnings.get_or_create(&labels(&[("kind", kind)])).inc();
    }

    pub(crate) fn retarget(&self, service: &str) {
        self.retargets.get_or_create(&labels(&[("service", service)])).inc();
    }

    /// Watch restarts so far for `watch` (`endpointslices ns/svc`) and `reason` (for tests).
    pub fn watch_restarts(&self, watch: &str, reason: &str) -> u64 {
        self.watch_restarts.get_or_create(&labels(&[("watch", watch), ("reason", reason)])).get()
    }

    /// Endpoints skipped so far for `reason` (for tests).
    pub fn skipped_endpoints(&self, reason: &str) -> u64 {
        self.skipped.get_or_create(&labels(&[("reason", reason)])).get()
    }

    /// Empty DNS answers set aside so far for `k8s_service` (for tests).
    pub fn dns_empty_ignored_count(&self, k8s_service: &str) -> u64 {
        self.dns_empty_ignored.get_or_create(&labels(&[("k8s_service", k8s_service)])).get()
    }

    /// Mapping warnings so far of `kind` (`tie`, `invalid_port`) (for tests).
    pub fn mapping_warnings(&self, kind: &str) -> u64 {
        self.mapping_warnings.get_or_create(&labels(&[("kind", kind)])).get()
    }

    /// DNS failures so far for `k8s_service` and `kind` (`timeout`, `server`, `no_srv`, ...).
    pub fn dns_failures(&self, k8s_service: &str, kind: &str) -> u64 {
        self.dns_failures.get_or_create(&labels(&[("k8s_service", k8s_service), ("kind", kind)])).get()
    }

    /// Re-targets so far for the Dubbo `service` key (for tests).
    pub fn retargets(&self, service: &str) -> u64 {
        self.retargets.get_or_create(&labels(&[("service", service)])).get()
    }
}
