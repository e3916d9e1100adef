//! Consumer configuration: `CONSUMER_*` variables (defaults → `CONSUMER_CONFIG_FILE` → environment)
//! on top of the discovery crate's `DISCOVERY_*`; validated once, errors name the variable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use discovery::client::{ClientMetrics, ClientOptions, MethodPolicy};
use discovery::config::ConfigError;
use discovery::config::env::{load_raw, parse_bool, parse_duration, parse_nonzero_duration, parse_var};
use discovery::{DiscoveryConfig, ServiceRef};
use provider::telemetry::LogFormat;
use serde::Deserialize;

/// The gRPC path of `SayHello`.
pub const SAY_HELLO: &str = "/org.apache.dubbo.demo.GreeterService/SayHello";
/// The gRPC path of `SayHelloStream`.
pub const SAY_HELLO_STREAM: &str = "/org.apache.dubbo.demo.GreeterService/SayHelloStream";

/// Which RPC stack makes the calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// tonic channels over discovery (default).
    Tonic,
    /// The official `dubbo` crate with the `kubernetes://` registry (feature `dubbo`).
    Dubbo,
}

/// Everything the consumer reads at start.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// The Dubbo service called.
    pub service: ServiceRef,
    /// Discovery settings.
    pub discovery: DiscoveryConfig,
    /// Demo traffic: calls per second (0: no steady traffic, admin only).
    pub rate: f64,
    /// Demo traffic: calls in flight at most.
    pub concurrency: usize,
    /// Per-call deadline, retries included.
    pub deadline: Duration,
    /// Retries after the first attempt, each to another endpoint.
    pub retries: u32,
    /// How long one attempt of `SayHello` may wait before the call moves on to another endpoint
    /// (`CONSUMER_ATTEMPT_TIMEOUT`; none by default: the deadline).
    pub attempt_timeout: Option<Duration>,
    /// How long steady traffic waits at start for a provider to call (`CONSUMER_START_WAIT`).
    pub start_wait: Duration,
    /// Retries allowed as a share of calls (on top of 10/s), e.g. 0.2.
    pub retry_budget: f32,
    /// Connect timeout of one endpoint.
    pub connect_timeout: Duration,
    /// Balancing (subset, slow start, outlier detection, zones) from `DISCOVERY_*`.
    pub balancing: ClientOptions,
    /// How often the per-instance distribution is logged.
    pub report_interval: Duration,
    /// Admin HTTP listen address.
    pub admin_listen: SocketAddr,
    /// Whether the admin port's `POST /call` may make calls (`CONSUMER_ADMIN_CALLS`; off by
    /// default: the admin port only reads unless told otherwise).
    pub admin_calls: bool,
    /// Name sent in demo calls.
    pub name: String,
    /// RPC stack.
    pub client: ClientKind,
    /// Log format.
    pub log_format: LogFormat,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            service: ServiceRef::new(provider::INTERFACE),
            discovery: DiscoveryConfig::default(),
            rate: 10.0,
            concurrency: 8,
            deadline: Duration::from_secs(2),
            retries: 2,
            attempt_timeout: None,
            start_wait: Duration::from_secs(60),
            retry_budget: 0.2,
            connect_timeout: Duration::from_secs(1),
            balancing: ClientOptions::default(),
            report_interval: Duration::from_secs(10),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            admin_calls: false,
            name: "dubbo-k8s".into(),
            client: ClientKind::Tonic,
            log_format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Raw {
    interface: Option<String>,
    version: Option<String>,
    group: Option<String>,
    rate: Option<String>,
    concurrency: Option<String>,
    deadline: Option<String>,
    retries: Option<String>,
    attempt_timeout: Option<String>,
    start_wait: Option<String>,
    retry_budget: Option<String>,
    connect_timeout: Option<String>,
    report_interval: Option<String>,
    admin_listen: Option<String>,
    admin_calls: Option<String>,
    name: Option<String>,
    client: Option<String>,
    log_format: Option<String>,
}

fn set<T>(
    v: Option<String>,
    var: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    parse_var(v, &format!("CONSUMER_{var}"), parse)
}

impl ConsumerConfig {
    /// The balanced client's options: the call policy of `CONSUMER_*`, the balancing of `DISCOVERY_*`,
    /// and what this application knows of its methods: `SayHello` and `SayHelloStream` only read,
    /// so they are idempotent (a call that may have reached a provider that then died is replayed on
    /// another); `SayHello` has the `CONSUMER_DEADLINE`, sent to the provider; the stream has none.
    pub fn client_options(&self, metrics: ClientMetrics) -> ClientOptions {
        let mut o = self.balancing.clone();
        o.default_deadline = self.deadline;
        o.retries = self.retries;
        o.retry_budget = f64::from(self.retry_budget);
        o.connect_timeout = self.connect_timeout;
        o.metrics = metrics;
        let mut say_hello = MethodPolicy::idempotent().with_deadline(self.deadline);
        if let Some(t) = self.attempt_timeout {
            say_hello = say_hello.with_attempt_timeout(t);
        }
        o.method(SAY_HELLO, say_hello).method(SAY_HELLO_STREAM, MethodPolicy::idempotent())
    }

    /// From the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// From the given variables.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let raw: Raw = load_raw(vars, "CONSUMER")?;
        let d = ConsumerConfig::default();
        let interface = set(raw.interface, "INTERFACE", |s| {
            if s.contains(char::is_whitespace) || s.starts_with('.') || s.ends_with('.') {
                Err("expected a fully qualified interface name, e.g. org.apache.dubbo.demo.GreeterService".into())
            } else {
                Ok(s.to_owned())
            }
        })?
        .unwrap_or_else(|| d.service.interface.clone());
        let service = ServiceRef::new(interface)
            .with_version(raw.version.unwrap_or_default())
            .with_group(raw.group.unwrap_or_default());
        Ok(ConsumerConfig {
            service,
            discovery: DiscoveryConfig::from_vars(vars)?,
            rate: set(raw.rate, "RATE", |s| {
                s.parse::<f64>()
                    .ok()
                    .filter(|r| r.is_finite() && (0.0..=100_000.0).contains(r))
                    .ok_or_else(|| "expected calls per second, 0 to 100000".to_owned())
            })?
            .unwrap_or(d.rate),
            concurrency: set(raw.concurrency, "CONCURRENCY", |s| {
                s.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| "expected 1 to 10000".to_owned())
            })?
            .unwrap_or(d.concurrency),
            deadline: set(raw.deadline, "DEADLINE", parse_nonzero_duration)?.unwrap_or(d.deadline),
            retries: set(raw.retries, "RETRIES", |s| {
                s.parse::<u32>().ok().filter(|n| *n <= 10).ok_or_else(|| "expected 0 to 10".to_owned())
            })?
            .unwrap_or(d.retries),
            attempt_timeout: set(raw.attempt_timeout, "ATTEMPT_TIMEOUT", parse_nonzero_duration)?,
            start_wait: set(raw.start_wait, "START_WAIT", parse_duration)?.unwrap_or(d.start_wait),
            retry_budget: set(raw.retry_budget, "RETRY_BUDGET", |s| {
                s.parse::<f32>()
                    .ok()
                    .filter(|r| (0.0..=1000.0).contains(r))
                    .ok_or_else(|| "expected a ratio of calls, e.g. 0.2".to_owned())
            })?
            .unwrap_or(d.retry_budget),
            connect_timeout: set(raw.connect_timeout, "CONNECT_TIMEOUT", parse_nonzero_duration)?
                .unwrap_or(d.connect_timeout),
            balancing: ClientOptions::from_vars(vars)?,
            report_interval: set(raw.report_interval, "REPORT_INTERVAL", parse_duration)?.unwrap_or(d.report_interval),
            admin_listen: set(raw.admin_listen, "ADMIN_LISTEN", |s| {
                s.parse().map_err(|_| "expected ip:port, e.g. 0.0.0.0:8081".to_owned())
            })?
            .unwrap_or(d.admin_listen),
            admin_calls: set(raw.admin_calls, "ADMIN_CALLS", parse_bool)?.unwrap_or(d.admin_calls),
            name: raw.name.filter(|s| !s.is_empty()).unwrap_or(d.name),
            client: set(raw.client, "CLIENT", |s| match s.to_ascii_lowercase().as_str() {
                "tonic" => Ok(ClientKind::Tonic),
                "dubbo" => Ok(ClientKind::Dubbo),
                _ => Err("expected tonic or dubbo".to_owned()),
            })?
            .unwrap_or(d.client),
            log_format: set(raw.log_format, "LOG_FORMAT", |s| s.parse())?.unwrap_or(d.log_format),
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
    fn reads_and_names_bad_variables() {
        let c = ConsumerConfig::from_vars(&vars(&[
            ("CONSUMER_VERSION", "2.0.0"),
            ("CONSUMER_RATE", "50"),
            ("CONSUMER_DEADLINE", "300ms"),
            ("DISCOVERY_MODE", "static"),
            ("DISCOVERY_STATIC_ENDPOINTS", "127.0.0.1:50051"),
        ]))
        .expect("valid");
        assert_eq!(c.service.to_string(), "org.apache.dubbo.demo.GreeterService:2.0.0");
        assert_eq!(c.rate, 50.0);
        assert_eq!(c.deadline, Duration::from_millis(300));
        for (var, val, hint) in [
            ("CONSUMER_RATE", "fast", "calls per second"),
            ("CONSUMER_CONCURRENCY", "0", "1 to 10000"),
            ("CONSUMER_DEADLINE", "1", "unit"),
            ("CONSUMER_CLIENT", "grpc-go", "tonic or dubbo"),
            ("CONSUMER_RETRIES", "99", "0 to 10"),
            ("DISCOVERY_MODE", "zk", "api, dns, static"),
            ("DISCOVERY_SUBSET_SIZE", "many", "0 to 1000000"),
        ] {
            let e = ConsumerConfig::from_vars(&vars(&[(var, val)])).expect_err(var).to_string();
            assert!(e.contains(var) && e.contains(hint), "{e}");
        }
    }
}
