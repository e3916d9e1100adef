//! Prometheus metrics of TLS: reloads by outcome, the loaded certificates' expiry and load time,
//! handshake failures by cause.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::{Labels, labels};

/// TLS metrics of one process side (a provider's server, or the balanced clients).
#[derive(Clone, Debug, Default)]
pub struct TlsMetrics {
    reloads: Family<Labels, Counter>,
    expiry: Family<Labels, Gauge>,
    loaded: Family<Labels, Gauge>,
    handshake_failures: Family<Labels, Counter>,
}

impl TlsMetrics {
    /// New metrics registered under `tls_*` in `registry` (give it a prefixed sub-registry).
    pub fn register(registry: &mut Registry) -> Self {
        let m = TlsMetrics::default();
        let r = registry.sub_registry_with_prefix("tls");
        r.register(
            "reloads",
            "TLS file reloads by result (ok: new material in use; failed: the last good kept)",
            m.reloads.clone(),
        );
        r.register(
            "certificate_expiry_timestamp_seconds",
            "When the loaded certificate (file=cert) or the earliest CA of the bundle (file=ca) expires",
            m.expiry.clone(),
        );
        r.register(
            "loaded_timestamp_seconds",
            "When the material in use was loaded (a rotation shows here)",
            m.loaded.clone(),
        );
        r.register("handshake_failures", "Failed TLS handshakes by cause", m.handshake_failures.clone());
        m
    }

    pub(crate) fn reload(&self, role: &str, result: &str) {
        self.reloads.get_or_create(&labels(&[("role", role), ("result", result)])).inc();
    }

    pub(crate) fn loaded(&self, role: &str, at: i64, cert_expiry: Option<i64>, ca_expiry: Option<i64>) {
        self.loaded.get_or_create(&labels(&[("role", role)])).set(at);
        for (file, expiry) in [("cert", cert_expiry), ("ca", ca_expiry)] {
            if let Some(t) = expiry {
                self.expiry.get_or_create(&labels(&[("role", role), ("file", file)])).set(t);
            }
        }
    }

    /// One failed handshake of `cause` (a `TlsCause` label, or the server's own).
    pub(crate) fn handshake_failed(&self, role: &str, cause: &str) {
        self.handshake_failures.get_or_create(&labels(&[("role", role), ("cause", cause)])).inc();
    }
}
