//! Provider configuration: `PROVIDER_*` variables (defaults → `PROVIDER_CONFIG_FILE` → environment),
//! validated once; errors name the variable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use discovery::config::ConfigError;
use discovery::config::vars::{self, Var};
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
    /// Serve Triple over TLS with this certificate chain (`PROVIDER_TLS_CERT`, a Secret's `tls.crt`).
    pub tls_cert: Option<PathBuf>,
    /// Its key (`PROVIDER_TLS_KEY`, `tls.key`).
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: callers must present a certificate signed by these CAs (`PROVIDER_TLS_CLIENT_CA`,
    /// `ca.crt`).
    pub tls_client_ca: Option<PathBuf>,
    /// Mutual TLS: the names (DNS or URI SANs; `*` ends a prefix) a caller's certificate must carry
    /// one of (`PROVIDER_TLS_ALLOW`, comma-separated; empty: any certificate the CA signed).
    pub tls_allow: Vec<String>,
    /// How often the TLS files are read again (`PROVIDER_TLS_RELOAD_INTERVAL`).
    pub tls_reload_interval: Duration,
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
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_allow: Vec::new(),
            tls_reload_interval: discovery::tls::DEFAULT_RELOAD_INTERVAL,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Raw {
    listen: Option<Var<SocketAddr>>,
    admin_listen: Option<Var<SocketAddr>>,
    version: Option<Var<String>>,
    group: Option<Var<String>>,
    instance: Option<Var<String>>,
    ip: Option<Var<String>>,
    drain: Option<Var<Duration>>,
    shutdown_timeout: Option<Var<Duration>>,
    duplicate_window: Option<Var<usize>>,
    execution_log: Option<Var<PathBuf>>,
    log_format: Option<Var<LogFormat>>,
    tls_cert: Option<Var<PathBuf>>,
    tls_key: Option<Var<PathBuf>>,
    tls_client_ca: Option<Var<PathBuf>>,
    tls_allow: Option<Var<String>>,
    tls_reload_interval: Option<Var<Duration>>,
}

fn set<T>(slot: &mut T, given: Option<Var<T>>) {
    if let Some(Var(v)) = given {
        *slot = v;
    }
}

impl ProviderConfig {
    /// From the process environment. `POD_NAME` and `POD_IP` (downward API) fill the instance name
    /// and IP when `PROVIDER_INSTANCE` / `PROVIDER_IP` are unset.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// From the given variables: typed as they are read, checked afterwards.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let raw: Raw = vars::load("PROVIDER", vars)?;
        let mut c = ProviderConfig::default();
        let from_env = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
        set(&mut c.listen, raw.listen);
        set(&mut c.admin_listen, raw.admin_listen);
        set(&mut c.version, raw.version);
        set(&mut c.group, raw.group);
        c.instance = raw
            .instance
            .map(|v| v.0)
            .or_else(|| from_env("POD_NAME"))
            .or_else(|| from_env("HOSTNAME"))
            .unwrap_or(c.instance);
        c.ip = raw.ip.map(|v| v.0).or_else(|| from_env("POD_IP")).unwrap_or(c.ip);
        set(&mut c.drain, raw.drain);
        set(&mut c.shutdown_timeout, raw.shutdown_timeout);
        set(&mut c.duplicate_window, raw.duplicate_window);
        c.execution_log = raw.execution_log.map(|v| v.0).or(c.execution_log);
        set(&mut c.log_format, raw.log_format);
        c.tls_cert = raw.tls_cert.map(|v| v.0);
        c.tls_key = raw.tls_key.map(|v| v.0);
        c.tls_client_ca = raw.tls_client_ca.map(|v| v.0);
        c.tls_allow = raw
            .tls_allow
            .map(|v| v.0.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        set(&mut c.tls_reload_interval, raw.tls_reload_interval);
        c.validate()?;
        Ok(c)
    }

    /// Checks the values: each error names the variable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.duplicate_window > 10_000_000 {
            let n = self.duplicate_window.to_string();
            return Err(ConfigError::invalid("PROVIDER_DUPLICATE_WINDOW", n, "expected 0 to 10000000"));
        }
        let shown = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "PROVIDER_TLS_KEY",
                    "",
                    "is required with PROVIDER_TLS_CERT (tls.key)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "PROVIDER_TLS_CERT",
                    "",
                    "is required with PROVIDER_TLS_KEY (tls.crt)",
                ));
            }
            _ => {}
        }
        if self.tls_cert.is_none() && self.tls_client_ca.is_some() {
            return Err(ConfigError::invalid(
                "PROVIDER_TLS_CLIENT_CA",
                shown(&self.tls_client_ca),
                "needs TLS: set PROVIDER_TLS_CERT and PROVIDER_TLS_KEY too",
            ));
        }
        if self.tls_client_ca.is_none() && !self.tls_allow.is_empty() {
            return Err(ConfigError::invalid(
                "PROVIDER_TLS_ALLOW",
                self.tls_allow.join(","),
                "needs mutual TLS: set PROVIDER_TLS_CLIENT_CA (the CA of the callers' certificates)",
            ));
        }
        if let Err(reason) = discovery::tls::Authorizer::new(&self.tls_allow) {
            return Err(ConfigError::invalid("PROVIDER_TLS_ALLOW", self.tls_allow.join(","), reason));
        }
        let every = self.tls_reload_interval;
        if !discovery::tls::reload_interval_ok(every) {
            let reason = format!("expected a duration {}", discovery::tls::RELOAD_INTERVAL_RANGE);
            return Err(ConfigError::invalid("PROVIDER_TLS_RELOAD_INTERVAL", format!("{every:?}"), reason));
        }
        Ok(())
    }

    /// The TLS options, when TLS is on; the files are read by [`discovery::tls::ServerTls::start`].
    pub fn tls(&self) -> Option<discovery::tls::ServerTlsOptions> {
        use discovery::tls::{FileRef, ServerTlsOptions, TlsFiles};
        let (cert, key) = (self.tls_cert.as_ref()?, self.tls_key.as_ref()?);
        let mut files = TlsFiles::new()
            .with_pair(FileRef::new("PROVIDER_TLS_CERT", cert), FileRef::new("PROVIDER_TLS_KEY", key))
            .with_reload_interval(self.tls_reload_interval);
        if let Some(ca) = &self.tls_client_ca {
            files = files.with_ca(FileRef::new("PROVIDER_TLS_CLIENT_CA", ca));
        }
        Some(ServerTlsOptions::new(files))
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
