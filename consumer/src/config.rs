//! Consumer configuration: `CONSUMER_*` variables (defaults → `CONSUMER_CONFIG_FILE` → environment)
//! on top of the discovery crate's `DISCOVERY_*`; validated once, errors name the variable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use discovery::client::{ClientMetrics, ClientOptions, MethodPolicy};
use discovery::config::ConfigError;
use discovery::config::vars::{self, FromVar, Var};
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
    pub retry_budget: f64,
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
    interface: Option<Var<Interface>>,
    version: Option<Var<String>>,
    group: Option<Var<String>>,
    rate: Option<Var<f64>>,
    concurrency: Option<Var<usize>>,
    deadline: Option<Var<Duration>>,
    retries: Option<Var<u32>>,
    attempt_timeout: Option<Var<Duration>>,
    start_wait: Option<Var<Duration>>,
    retry_budget: Option<Var<f64>>,
    connect_timeout: Option<Var<Duration>>,
    report_interval: Option<Var<Duration>>,
    admin_listen: Option<Var<SocketAddr>>,
    admin_calls: Option<Var<bool>>,
    name: Option<Var<String>>,
    client: Option<Var<ClientKind>>,
    log_format: Option<Var<LogFormat>>,
}

/// A fully qualified Dubbo interface name.
#[derive(Debug)]
struct Interface(String);

impl FromVar for Interface {
    fn from_var(s: &str) -> Result<Self, String> {
        if s.contains(char::is_whitespace) || s.starts_with('.') || s.ends_with('.') {
            return Err("expected a fully qualified interface name, e.g. org.apache.dubbo.demo.GreeterService".into());
        }
        Ok(Interface(s.to_owned()))
    }
}

/// `tonic` or `dubbo` (any case).
impl FromVar for ClientKind {
    fn from_var(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "tonic" => Ok(ClientKind::Tonic),
            "dubbo" => Ok(ClientKind::Dubbo),
            _ => Err("expected tonic or dubbo".to_owned()),
        }
    }
}

fn set<T>(slot: &mut T, given: Option<Var<T>>) {
    if let Some(Var(v)) = given {
        *slot = v;
    }
}

fn invalid(var: &str, value: impl ToString, reason: &str) -> ConfigError {
    ConfigError::invalid(format!("CONSUMER_{var}"), value.to_string(), reason)
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
        o.retry_budget = self.retry_budget;
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

    /// From the given variables (`CONSUMER_*`, and discovery's `DISCOVERY_*`): typed as they are
    /// read, checked afterwards.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let raw: Raw = vars::load("CONSUMER", vars)?;
        let mut c = ConsumerConfig {
            discovery: DiscoveryConfig::from_vars(vars)?,
            balancing: ClientOptions::from_vars(vars)?,
            ..ConsumerConfig::default()
        };
        if let Some(Var(i)) = raw.interface {
            c.service.interface = i.0;
        }
        c.service = c
            .service
            .with_version(raw.version.map(|v| v.0).unwrap_or_default())
            .with_group(raw.group.map(|v| v.0).unwrap_or_default());
        set(&mut c.rate, raw.rate);
        set(&mut c.concurrency, raw.concurrency);
        set(&mut c.deadline, raw.deadline);
        set(&mut c.retries, raw.retries);
        c.attempt_timeout = raw.attempt_timeout.map(|v| v.0);
        set(&mut c.start_wait, raw.start_wait);
        set(&mut c.retry_budget, raw.retry_budget);
        set(&mut c.connect_timeout, raw.connect_timeout);
        set(&mut c.report_interval, raw.report_interval);
        set(&mut c.admin_listen, raw.admin_listen);
        set(&mut c.admin_calls, raw.admin_calls);
        set(&mut c.name, raw.name);
        set(&mut c.client, raw.client);
        set(&mut c.log_format, raw.log_format);
        c.validate()?;
        Ok(c)
    }

    /// Checks the values: each error names the variable and what it accepts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=100_000.0).contains(&self.rate) {
            return Err(invalid("RATE", self.rate, "expected calls per second, 0 to 100000"));
        }
        if !(1..=10_000).contains(&self.concurrency) {
            return Err(invalid("CONCURRENCY", self.concurrency, "expected 1 to 10000"));
        }
        if self.retries > 10 {
            return Err(invalid("RETRIES", self.retries, "expected 0 to 10"));
        }
        if !(0.0..=1000.0).contains(&self.retry_budget) {
            return Err(invalid("RETRY_BUDGET", self.retry_budget, "expected a ratio of calls, e.g. 0.2"));
        }
        for (var, d) in [("DEADLINE", self.deadline), ("CONNECT_TIMEOUT", self.connect_timeout)]
            .into_iter()
            .chain(self.attempt_timeout.map(|t| ("ATTEMPT_TIMEOUT", t)))
        {
            if d.is_zero() {
                return Err(invalid(var, "0s", "expected a duration above zero"));
            }
        }
        if self.client == ClientKind::Dubbo && self.balancing.tls.is_some() {
            return Err(invalid(
                "CLIENT",
                "dubbo",
                "the dubbo crate's client here has no TLS: unset DISCOVERY_TLS_* or use CONSUMER_CLIENT=tonic",
            ));
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
    fn the_dubbo_stack_refuses_tls_instead_of_calling_in_plaintext() {
        let dir = std::env::temp_dir().join(format!("dubbo-k8s-consumer-cfg-{}", std::process::id()));
        let ca = testkit::certs::TestCa::new("cfg CA").expect("ca");
        let secret = testkit::certs::SecretDir::new(&dir).expect("dir");
        secret.write(&[("ca.crt", &ca.pem())]).expect("write");
        let ca_path = secret.file("ca.crt").display().to_string();
        let tls = [("DISCOVERY_TLS_CA", ca_path.as_str())];
        assert!(ConsumerConfig::from_vars(&vars(&tls)).is_ok(), "the tonic stack takes TLS");
        let e = ConsumerConfig::from_vars(&vars(&[tls[0], ("CONSUMER_CLIENT", "dubbo")])).expect_err("refused");
        assert!(e.to_string().contains("CONSUMER_CLIENT") && e.to_string().contains("DISCOVERY_TLS"), "{e}");
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
            ("CONSUMER_RATE", "fast", "number"),
            ("CONSUMER_RATE", "-3", "calls per second"),
            ("CONSUMER_CONCURRENCY", "0", "1 to 10000"),
            ("CONSUMER_DEADLINE", "1", "unit"),
            ("CONSUMER_CLIENT", "grpc-go", "tonic or dubbo"),
            ("CONSUMER_RETRIES", "99", "0 to 10"),
            ("DISCOVERY_MODE", "zk", "api, dns, static"),
            ("DISCOVERY_SUBSET_SIZE", "many", "whole number"),
        ] {
            let e = ConsumerConfig::from_vars(&vars(&[(var, val)])).expect_err(var).to_string();
            assert!(e.contains(var) && e.contains(hint), "{e}");
        }
    }
}
