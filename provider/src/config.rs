//! Provider configuration: `PROVIDER_*` variables (defaults → `PROVIDER_CONFIG_FILE` → environment),
//! validated once; errors name the variable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use discovery::config::ConfigError;
use discovery::config::env::{load_raw, parse_duration, parse_in_range, parse_var};
use serde::Deserialize;

use crate::telemetry::LogFormat;

/// Everything the provider reads at start.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    /// Triple (gRPC) listen address.
    pub listen: SocketAddr,
    /// Admin HTTP listen address (`/metrics`, `/healthz`, `/readyz`).
    pub admin_listen: SocketAddr,
    /// Dubbo version served.
    pub version: String,
    /// Dubbo group served (empty: none).
    pub group: String,
    /// Instance name reported in replies (the pod name).
    pub instance: String,
    /// Instance IP reported in replies (the pod IP).
    pub ip: String,
    /// How long to keep serving after SIGTERM while discovery removes this endpoint.
    pub drain: Duration,
    /// How long in-flight calls may take to finish after the drain before exiting anyway.
    pub shutdown_timeout: Duration,
    /// Request ids kept to count calls executed twice (`PROVIDER_DUPLICATE_WINDOW`; 0: off).
    pub duplicate_window: usize,
    /// Append one line per execution here (`PROVIDER_EXECUTION_LOG`), for audits across instances.
    pub execution_log: Option<PathBuf>,
    /// Log format.
    pub log_format: LogFormat,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 50051)),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            version: "1.0.0".into(),
            group: String::new(),
            instance: "provider".into(),
            ip: String::new(),
            drain: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
            duplicate_window: 10_000,
            execution_log: None,
            log_format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Raw {
    listen: Option<String>,
    admin_listen: Option<String>,
    version: Option<String>,
    group: Option<String>,
    instance: Option<String>,
    ip: Option<String>,
    drain: Option<String>,
    shutdown_timeout: Option<String>,
    duplicate_window: Option<String>,
    execution_log: Option<String>,
    log_format: Option<String>,
}

impl ProviderConfig {
    /// From the process environment. `POD_NAME` and `POD_IP` (downward API) fill the instance name
    /// and IP when `PROVIDER_INSTANCE` / `PROVIDER_IP` are unset.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// From the given variables.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let raw: Raw = load_raw(vars, "PROVIDER")?;
        let d = ProviderConfig::default();
        let addr = |v: Option<String>, var: &str, default: SocketAddr| -> Result<SocketAddr, ConfigError> {
            let parse =
                |s: &str| s.parse().map_err(|_| "expected ip:port, e.g. 0.0.0.0:50051 or [::]:50051".to_owned());
            Ok(parse_var(v, var, parse)?.unwrap_or(default))
        };
        let dur = |v: Option<String>, var: &str, default: Duration| -> Result<Duration, ConfigError> {
            Ok(parse_var(v, var, parse_duration)?.unwrap_or(default))
        };
        let from_env = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
        Ok(ProviderConfig {
            listen: addr(raw.listen, "PROVIDER_LISTEN", d.listen)?,
            admin_listen: addr(raw.admin_listen, "PROVIDER_ADMIN_LISTEN", d.admin_listen)?,
            version: raw.version.unwrap_or(d.version),
            group: raw.group.unwrap_or(d.group),
            instance: raw
                .instance
                .filter(|s| !s.is_empty())
                .or_else(|| from_env("POD_NAME"))
                .or_else(|| from_env("HOSTNAME"))
                .unwrap_or(d.instance),
            ip: raw.ip.filter(|s| !s.is_empty()).or_else(|| from_env("POD_IP")).unwrap_or(d.ip),
            drain: dur(raw.drain, "PROVIDER_DRAIN", d.drain)?,
            shutdown_timeout: dur(raw.shutdown_timeout, "PROVIDER_SHUTDOWN_TIMEOUT", d.shutdown_timeout)?,
            duplicate_window: parse_var(raw.duplicate_window, "PROVIDER_DUPLICATE_WINDOW", |s| {
                parse_in_range(s, 0, 10_000_000)
            })?
            .unwrap_or(d.duplicate_window),
            execution_log: raw.execution_log.filter(|s| !s.is_empty()).map(PathBuf::from),
            log_format: parse_var(raw.log_format, "PROVIDER_LOG_FORMAT", str::parse)?.unwrap_or(d.log_format),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(p: &[(&str, &str)]) -> HashMap<String, String> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn reads_and_validates() {
        let c = ProviderConfig::from_vars(&vars(&[
            ("PROVIDER_VERSION", "2.0.0"),
            ("PROVIDER_DRAIN", "250ms"),
            ("POD_NAME", "greeter-v2-abc"),
            ("POD_IP", "10.244.0.7"),
        ]))
        .expect("valid");
        assert_eq!(c.version, "2.0.0");
        assert_eq!(c.drain, Duration::from_millis(250));
        assert_eq!((c.instance.as_str(), c.ip.as_str()), ("greeter-v2-abc", "10.244.0.7"));

        let e = ProviderConfig::from_vars(&vars(&[("PROVIDER_LISTEN", "50051")])).expect_err("bad").to_string();
        assert!(e.contains("PROVIDER_LISTEN") && e.contains("ip:port"), "{e}");
        let e = ProviderConfig::from_vars(&vars(&[("PROVIDER_DRAIN", "5")])).expect_err("bad").to_string();
        assert!(e.contains("PROVIDER_DRAIN"), "{e}");
        let e = ProviderConfig::from_vars(&vars(&[("PROVIDER_LOG_FORMAT", "xml")])).expect_err("bad").to_string();
        assert!(e.contains("PROVIDER_LOG_FORMAT") && e.contains("json"), "{e}");
    }
}
