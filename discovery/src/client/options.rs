//! [`ClientOptions`]: call policy (deadline, retries, budget, connect timeout), set by the
//! application, and balancing (subset, slow start, outlier detection, zones), also read from
//! `DISCOVERY_*` variables so every service using the client is tuned the same way.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use super::ClientMetrics;
use super::health::OutlierOptions;
use crate::config::ConfigError;
use crate::config::env::{load_raw, parse_bool, parse_duration, parse_in_range, parse_nonzero_duration, parse_var};

/// How a [`super::Balanced`] client calls and balances.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Deadline of a call that carries none (`grpc-timeout`), retries included.
    pub default_deadline: Duration,
    /// Retries after the first attempt, each to an endpoint not tried yet.
    pub retries: u32,
    /// Retries allowed as a share of calls ...
    pub retry_budget: f64,
    /// ... plus this many per second.
    pub retry_min_per_sec: u32,
    /// Connect timeout of one endpoint.
    pub connect_timeout: Duration,
    /// Largest request kept for replay (unary and server-streaming requests are one message).
    pub max_replay_bytes: usize,
    /// Endpoints each client connects to at most (`DISCOVERY_SUBSET_SIZE`; 0: all). Above it, a
    /// deterministic subset by rendezvous hashing of [`ClientOptions::client_id`].
    pub subset_size: usize,
    /// This client's identity for subsetting (`DISCOVERY_CLIENT_ID`; default: the host name, which
    /// is the pod name in Kubernetes).
    pub client_id: String,
    /// Ramp a new endpoint's share up over this window (`DISCOVERY_SLOW_START`; 0: off).
    pub slow_start: Duration,
    /// The share a new endpoint starts at, relative to the others.
    pub slow_start_min_weight: f64,
    /// Outlier detection (`DISCOVERY_OUTLIER_*`).
    pub outlier: OutlierOptions,
    /// Prefer endpoints of this client's zone when the Service asks for it (`DISCOVERY_ZONE_AWARE`).
    pub zone_aware: bool,
    /// This client's zone; `None`: from the hub (`DISCOVERY_ZONE`, or the node's label).
    pub zone: Option<String>,
    /// A local pick with at least this many calls in flight spills to another zone when a pick
    /// there is less loaded (`DISCOVERY_ZONE_SPILL_IN_FLIGHT`).
    pub zone_spill_in_flight: usize,
    /// Where metrics go.
    pub metrics: ClientMetrics,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            default_deadline: Duration::from_secs(2),
            retries: 2,
            retry_budget: 0.2,
            retry_min_per_sec: 10,
            connect_timeout: Duration::from_secs(1),
            max_replay_bytes: 1 << 20,
            subset_size: 100,
            client_id: default_client_id(),
            slow_start: Duration::from_secs(5),
            slow_start_min_weight: 0.1,
            outlier: OutlierOptions::default(),
            zone_aware: true,
            zone: None,
            zone_spill_in_flight: 32,
            metrics: ClientMetrics::default(),
        }
    }
}

fn default_client_id() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("client-{}", std::process::id()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Raw {
    subset_size: Option<String>,
    client_id: Option<String>,
    slow_start: Option<String>,
    outlier_failures: Option<String>,
    outlier_ejection: Option<String>,
    outlier_max_ejection: Option<String>,
    outlier_max_ejected_percent: Option<String>,
    zone_aware: Option<String>,
    zone_spill_in_flight: Option<String>,
}

impl ClientOptions {
    /// The defaults, with the balancing variables of the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// The defaults, with the balancing variables among `vars`: `DISCOVERY_SUBSET_SIZE`,
    /// `DISCOVERY_CLIENT_ID`, `DISCOVERY_SLOW_START`, `DISCOVERY_OUTLIER_FAILURES`,
    /// `DISCOVERY_OUTLIER_EJECTION`, `DISCOVERY_OUTLIER_MAX_EJECTION`,
    /// `DISCOVERY_OUTLIER_MAX_EJECTED_PERCENT`, `DISCOVERY_ZONE_AWARE`, `DISCOVERY_ZONE_SPILL_IN_FLIGHT`.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let raw: Raw = load_raw(vars, crate::config::ENV_PREFIX)?;
        let d = ClientOptions::default();
        let v = |name: &str| format!("DISCOVERY_{name}");
        let outlier = OutlierOptions {
            consecutive_failures: parse_var(raw.outlier_failures, &v("OUTLIER_FAILURES"), |s| {
                parse_in_range(s, 0, 1000)
            })?
            .unwrap_or(d.outlier.consecutive_failures),
            base_ejection: parse_var(raw.outlier_ejection, &v("OUTLIER_EJECTION"), parse_nonzero_duration)?
                .unwrap_or(d.outlier.base_ejection),
            max_ejection: parse_var(raw.outlier_max_ejection, &v("OUTLIER_MAX_EJECTION"), parse_nonzero_duration)?
                .unwrap_or(d.outlier.max_ejection),
            max_ejected_percent: parse_var(raw.outlier_max_ejected_percent, &v("OUTLIER_MAX_EJECTED_PERCENT"), |s| {
                parse_in_range(s, 0, 100)
            })?
            .unwrap_or(d.outlier.max_ejected_percent),
        };
        if outlier.max_ejection < outlier.base_ejection {
            return Err(ConfigError::invalid(
                v("OUTLIER_MAX_EJECTION"),
                crate::config::env::format_duration(outlier.max_ejection),
                "must not be below DISCOVERY_OUTLIER_EJECTION",
            ));
        }
        Ok(ClientOptions {
            subset_size: parse_var(raw.subset_size, &v("SUBSET_SIZE"), |s| parse_in_range(s, 0, 1_000_000))?
                .unwrap_or(d.subset_size),
            client_id: parse_var(raw.client_id, &v("CLIENT_ID"), |s| {
                if s.len() > 253 { Err("expected at most 253 characters".to_owned()) } else { Ok(s.to_owned()) }
            })?
            .unwrap_or(d.client_id),
            slow_start: parse_var(raw.slow_start, &v("SLOW_START"), parse_duration)?.unwrap_or(d.slow_start),
            outlier,
            zone_aware: parse_var(raw.zone_aware, &v("ZONE_AWARE"), parse_bool)?.unwrap_or(d.zone_aware),
            zone_spill_in_flight: parse_var(raw.zone_spill_in_flight, &v("ZONE_SPILL_IN_FLIGHT"), |s| {
                parse_in_range(s, 1, 1_000_000)
            })?
            .unwrap_or(d.zone_spill_in_flight),
            ..d
        })
    }

    /// Checks the call policy (for options built in code).
    pub fn validate(&self) -> Result<(), String> {
        if self.default_deadline.is_zero() || self.connect_timeout.is_zero() {
            return Err("default_deadline and connect_timeout must be above zero".into());
        }
        if !(0.0..=1000.0).contains(&self.retry_budget) || self.retries > 10 {
            return Err("retries must be 0 to 10 and retry_budget 0 to 1000".into());
        }
        if !(0.0..=1.0).contains(&self.slow_start_min_weight) || self.slow_start_min_weight == 0.0 {
            return Err("slow_start_min_weight must be in (0, 1]".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(p: &[(&str, &str)]) -> HashMap<String, String> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn reads_the_balancing_variables() {
        let o = ClientOptions::from_vars(&vars(&[
            ("DISCOVERY_SUBSET_SIZE", "0"),
            ("DISCOVERY_SLOW_START", "0s"),
            ("DISCOVERY_OUTLIER_FAILURES", "3"),
            ("DISCOVERY_OUTLIER_EJECTION", "2s"),
            ("DISCOVERY_ZONE_AWARE", "false"),
            ("DISCOVERY_CLIENT_ID", "consumer-7"),
        ]))
        .expect("valid");
        assert_eq!((o.subset_size, o.slow_start, o.outlier.consecutive_failures), (0, Duration::ZERO, 3));
        assert_eq!(o.outlier.base_ejection, Duration::from_secs(2));
        assert!(!o.zone_aware);
        assert_eq!(o.client_id, "consumer-7");
        for (var, val, hint) in [
            ("DISCOVERY_SUBSET_SIZE", "-1", "0 to 1000000"),
            ("DISCOVERY_OUTLIER_MAX_EJECTED_PERCENT", "150", "0 to 100"),
            ("DISCOVERY_OUTLIER_EJECTION", "5", "unit"),
            ("DISCOVERY_ZONE_AWARE", "sometimes", "true or false"),
            ("DISCOVERY_ZONE_SPILL_IN_FLIGHT", "0", "1 to 1000000"),
            ("DISCOVERY_OUTLIER_MAX_EJECTION", "1s", "DISCOVERY_OUTLIER_EJECTION"),
        ] {
            let e = ClientOptions::from_vars(&vars(&[(var, val)])).expect_err(var).to_string();
            assert!(e.contains(var) && e.contains(hint), "{e}");
        }
    }
}
