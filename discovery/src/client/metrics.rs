//! Prometheus metrics of the balanced clients, labelled by `service` (the Dubbo service key). The
//! counters of one client are resolved once when it starts (no label look-up per call); its gauge
//! series are removed when the client goes, so a dropped client never leaves a value behind.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::cause::Cause;

use crate::metrics::Labels;

/// `service="…"` plus `extra`.
fn labels(service: &str, extra: &[(&str, &str)]) -> Labels {
    let mut pairs = vec![("service", service)];
    pairs.extend_from_slice(extra);
    crate::metrics::labels(&pairs)
}

/// Prometheus metrics of the balanced clients.
#[derive(Clone, Debug, Default)]
pub struct ClientMetrics {
    calls: Family<Labels, Counter>,
    attempt_failures: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    not_replayed: Family<Labels, Counter>,
    budget_exhausted: Family<Labels, Counter>,
    ejections: Family<Labels, Counter>,
    zone_calls: Family<Labels, Counter>,
    members: Family<Labels, Gauge>,
    restarts: Family<Labels, Counter>,
    /// TLS reloads and handshakes (`discovery_client_tls_*`).
    #[cfg(feature = "tls")]
    pub(crate) tls: crate::tls::TlsMetrics,
}

impl ClientMetrics {
    /// New metrics registered under `discovery_client_*` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        #[allow(unused_mut)]
        let mut m = ClientMetrics::default();
        let r = registry.sub_registry_with_prefix("discovery_client");
        r.register("calls", "Calls by outcome (ok, or the cause of the failure)", m.calls.clone());
        r.register(
            "attempt_failures",
            "Failed attempts by cause (a retried attempt counts here too)",
            m.attempt_failures.clone(),
        );
        r.register("retries", "Attempts retried on another endpoint, by cause", m.retries.clone());
        r.register(
            "not_replayed",
            "Calls that failed after their request may have reached the provider and were not replayed because \
             their method is not declared idempotent, by cause",
            m.not_replayed.clone(),
        );
        r.register("retry_budget_exhausted", "Retries refused by the retry budget", m.budget_exhausted.clone());
        r.register(
            "ejections",
            "Outlier ejections (ejected) and ejections refused by the cap (capped)",
            m.ejections.clone(),
        );
        r.register("zone_calls", "Calls by the endpoint's zone and whether it is this client's", m.zone_calls.clone());
        r.register("members", "Endpoints in the client's pool (its subset)", m.members.clone());
        r.register(
            "updater_restarts",
            "Restarts of the task that keeps the client's pool in step with discovery, after a panic",
            m.restarts.clone(),
        );
        #[cfg(feature = "tls")]
        {
            m.tls = crate::tls::TlsMetrics::register(r);
        }
        m
    }

    /// The counters of the client of `service`, resolved once.
    pub(crate) fn for_service(&self, service: &str) -> ServiceMetrics {
        let counter = |family: &Family<Labels, Counter>, extra: &[(&str, &str)]| {
            family.get_or_create(&labels(service, extra)).clone()
        };
        let per_cause = |family: &Family<Labels, Counter>, label: &str| -> Vec<Counter> {
            Cause::all().iter().map(|c| counter(family, &[(label, c.as_str())])).collect()
        };
        ServiceMetrics {
            service: service.to_owned(),
            ok: counter(&self.calls, &[("outcome", "ok")]),
            failed: per_cause(&self.calls, "outcome"),
            attempt_failed: per_cause(&self.attempt_failures, "cause"),
            retried: per_cause(&self.retries, "cause"),
            not_replayed: per_cause(&self.not_replayed, "cause"),
            budget_exhausted: counter(&self.budget_exhausted, &[]),
            restarts: counter(&self.restarts, &[]),
            all: self.clone(),
        }
    }
}

/// One client's metrics.
#[derive(Debug)]
pub(crate) struct ServiceMetrics {
    service: String,
    pub ok: Counter,
    pub failed: Vec<Counter>,
    pub attempt_failed: Vec<Counter>,
    pub retried: Vec<Counter>,
    pub not_replayed: Vec<Counter>,
    pub budget_exhausted: Counter,
    pub restarts: Counter,
    all: ClientMetrics,
}

impl ServiceMetrics {
    pub(crate) fn ejection(&self, kind: &str) {
        self.all.ejections.get_or_create(&labels(&self.service, &[("kind", kind)])).inc();
    }

    pub(crate) fn members(&self, n: usize) {
        self.all.members.get_or_create(&labels(&self.service, &[])).set(n as i64);
    }

    pub(crate) fn zone_calls(&self, zone: &str, locality: &str) -> Counter {
        self.all.zone_calls.get_or_create(&labels(&self.service, &[("zone", zone), ("locality", locality)])).clone()
    }

    pub(crate) fn by_cause(counters: &[Counter], cause: Cause) -> &Counter {
        &counters[cause.index()]
    }
}

impl Drop for ServiceMetrics {
    fn drop(&mut self) {
        self.all.members.remove(&labels(&self.service, &[]));
    }
}
