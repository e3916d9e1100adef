//! Configuration: defaults → optional file (`DISCOVERY_CONFIG_FILE`) → `DISCOVERY_*` environment
//! variables, gathered by the `config` crate and deserialized with serde into typed fields
//! ([`vars`]), then validated once ([`DiscoveryConfig::validate`], which also checks a configuration
//! built in code). Every error names the variable and the values it accepts. Tests build
//! [`DiscoveryConfig`] directly or pass an explicit variable map to [`DiscoveryConfig::from_vars`];
//! nothing here mutates the process environment.

mod types;
mod validate;
pub mod vars;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

pub use self::types::{ApiConfig, BackoffConfig, DnsConfig, Host, IpFamily, Locality, Mode, StaticEndpoint};
use self::types::{NameServer, StaticList};
use self::vars::Var;
use crate::mapping::{Mapping, Mappings, Template};
use crate::model::PortSpec;

/// Prefix of every variable this crate reads.
pub const ENV_PREFIX: &str = "DISCOVERY";

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A variable holds a value outside what it accepts.
    #[error("invalid {variable}={value:?}: {reason}")]
    Invalid {
        /// The environment variable (or file key, upper-cased with the prefix).
        variable: String,
        /// The offending value.
        value: String,
        /// What is accepted.
        reason: String,
    },
    /// The configuration file or environment could not be read.
    #[error("failed to read configuration")]
    Read(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ConfigError {
    /// `variable` (the full name) holds `value`, which is not accepted because of `reason`.
    pub fn invalid(variable: impl Into<String>, value: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid { variable: variable.into(), value: value.into(), reason: reason.into() }
    }

    /// The variable at fault, when one is.
    pub fn variable(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { variable, .. } => Some(variable),
            ConfigError::Read(_) => None,
        }
    }
}

/// The whole, validated configuration of the discovery crate.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DiscoveryConfig {
    /// How endpoints are found.
    pub mode: Mode,
    /// Namespace of the target Services.
    pub namespace: String,
    /// Default port (name or number).
    pub port: PortSpec,
    /// Port number used when the port is a name and nothing maps it (no SRV record, no Service spec,
    /// static host without a port).
    pub fallback_port: u16,
    /// Explicit mappings, first match wins.
    pub mappings: Vec<Mapping>,
    /// Naming rule for the Service name.
    pub template: Template,
    /// Static endpoints (static mode).
    pub static_endpoints: Vec<StaticEndpoint>,
    /// Address family of dual-stack pods.
    pub ip_family: IpFamily,
    /// DNS settings.
    pub dns: DnsConfig,
    /// API settings.
    pub api: ApiConfig,
    /// Retry pacing.
    pub backoff: BackoffConfig,
    /// Where this process runs.
    pub locality: Locality,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            mode: Mode::Dns,
            namespace: "default".to_owned(),
            port: PortSpec::Name("tri".to_owned()),
            fallback_port: 50051,
            mappings: Vec::new(),
            template: Template::default(),
            static_endpoints: Vec::new(),
            ip_family: IpFamily::Auto,
            dns: DnsConfig {
                server: None,
                cluster_domain: "cluster.local".to_owned(),
                srv: true,
                ttl_floor: Duration::from_secs(5),
                ttl_ceiling: Duration::from_secs(30),
                timeout: Duration::from_secs(2),
                attempts: 2,
            },
            api: ApiConfig {
                server: None,
                annotations: true,
                rbac_check: true,
                watch_timeout: Duration::from_secs(290),
                watch_idle_timeout: Duration::from_secs(150),
                request_timeout: Duration::from_secs(5),
                probe_interval: Duration::from_secs(10),
                page_size: 500,
                streaming_lists: true,
                failover: true,
                max_stale: Duration::from_secs(60),
                cold_start_timeout: Duration::from_secs(5),
                recovery_hold: Duration::from_secs(10),
                allow_loopback: false,
            },
            backoff: BackoffConfig { min: Duration::from_millis(500), max: Duration::from_secs(30) },
            locality: Locality::default(),
        }
    }
}

/// Every variable, typed: a value that does not parse is an error naming it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Raw {
    mode: Option<Var<Mode>>,
    namespace: Option<Var<String>>,
    port: Option<Var<PortSpec>>,
    fallback_port: Option<Var<u16>>,
    mappings: Option<Var<Mappings>>,
    service_template: Option<Var<Template>>,
    static_endpoints: Option<Var<StaticList>>,
    ip_family: Option<Var<IpFamily>>,
    dns_server: Option<Var<NameServer>>,
    cluster_domain: Option<Var<String>>,
    dns_srv: Option<Var<bool>>,
    dns_ttl_floor: Option<Var<Duration>>,
    dns_ttl_ceiling: Option<Var<Duration>>,
    dns_timeout: Option<Var<Duration>>,
    dns_attempts: Option<Var<usize>>,
    api_server: Option<Var<String>>,
    annotations: Option<Var<bool>>,
    rbac_check: Option<Var<bool>>,
    watch_timeout: Option<Var<Duration>>,
    watch_idle_timeout: Option<Var<Duration>>,
    request_timeout: Option<Var<Duration>>,
    api_probe_interval: Option<Var<Duration>>,
    page_size: Option<Var<u32>>,
    streaming_lists: Option<Var<bool>>,
    failover: Option<Var<bool>>,
    max_stale: Option<Var<Duration>>,
    cold_start_timeout: Option<Var<Duration>>,
    recovery_hold: Option<Var<Duration>>,
    allow_loopback: Option<Var<bool>>,
    backoff_min: Option<Var<Duration>>,
    backoff_max: Option<Var<Duration>>,
    zone: Option<Var<String>>,
    node_name: Option<Var<String>>,
    pod_ip: Option<Var<IpAddr>>,
}

/// Where the pod's namespace is mounted in a cluster.
const SA_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Replaces `slot` with the value given, if any.
pub(crate) fn set<T>(slot: &mut T, given: Option<Var<T>>) {
    if let Some(Var(v)) = given {
        *slot = v;
    }
}

fn set_some<T>(slot: &mut Option<T>, given: Option<Var<T>>) {
    if let Some(Var(v)) = given {
        *slot = Some(v);
    }
}

impl DiscoveryConfig {
    /// The defaults in `mode`.
    pub fn new(mode: Mode) -> Self {
        DiscoveryConfig { mode, ..DiscoveryConfig::default() }
    }

    /// The same, in `namespace`.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The same, with these static endpoints (static mode).
    pub fn with_static_endpoints(mut self, endpoints: impl IntoIterator<Item = StaticEndpoint>) -> Self {
        self.static_endpoints = endpoints.into_iter().collect();
        self
    }

    /// Reads the process environment (and `DISCOVERY_CONFIG_FILE` if set).
    pub fn from_env() -> Result<Self, ConfigError> {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_vars(&vars)
    }

    /// Reads the given variables (and the file named by `DISCOVERY_CONFIG_FILE` among them), then
    /// validates the result.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let raw: Raw = vars::load(ENV_PREFIX, vars)?;
        let mut c = DiscoveryConfig::default();
        c.apply(raw);
        c.validate()?;
        Ok(c)
    }

    fn apply(&mut self, raw: Raw) {
        self.apply_dns(&raw);
        self.apply_api(&raw);
        set(&mut self.mode, raw.mode);
        self.namespace = raw
            .namespace
            .map(|v| v.0)
            .or_else(|| std::fs::read_to_string(SA_NAMESPACE_FILE).ok().map(|s| s.trim().to_owned()))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| self.namespace.clone());
        set(&mut self.port, raw.port);
        set(&mut self.fallback_port, raw.fallback_port);
        if let Some(Var(m)) = raw.mappings {
            self.mappings = m.0;
        }
        set(&mut self.template, raw.service_template);
        if let Some(Var(list)) = raw.static_endpoints {
            self.static_endpoints = list.with_fallback(self.fallback_port);
        }
        set(&mut self.ip_family, raw.ip_family);
        set(&mut self.backoff.min, raw.backoff_min);
        set(&mut self.backoff.max, raw.backoff_max);
        set_some(&mut self.locality.zone, raw.zone);
        set_some(&mut self.locality.node_name, raw.node_name);
        set_some(&mut self.locality.pod_ip, raw.pod_ip);
    }

    fn apply_dns(&mut self, raw: &Raw) {
        let d = &mut self.dns;
        d.server = raw.dns_server.map(|v| v.0.0).or(d.server);
        if let Some(Var(c)) = &raw.cluster_domain {
            c.trim_end_matches('.').clone_into(&mut d.cluster_domain);
        }
        set(&mut d.srv, raw.dns_srv);
        set(&mut d.ttl_floor, raw.dns_ttl_floor);
        set(&mut d.ttl_ceiling, raw.dns_ttl_ceiling);
        set(&mut d.timeout, raw.dns_timeout);
        set(&mut d.attempts, raw.dns_attempts);
    }

    fn apply_api(&mut self, raw: &Raw) {
        let a = &mut self.api;
        set_some(&mut a.server, raw.api_server.clone());
        set(&mut a.annotations, raw.annotations);
        set(&mut a.rbac_check, raw.rbac_check);
        set(&mut a.watch_timeout, raw.watch_timeout);
        set(&mut a.watch_idle_timeout, raw.watch_idle_timeout);
        set(&mut a.request_timeout, raw.request_timeout);
        set(&mut a.probe_interval, raw.api_probe_interval);
        set(&mut a.page_size, raw.page_size);
        set(&mut a.streaming_lists, raw.streaming_lists);
        set(&mut a.failover, raw.failover);
        set(&mut a.max_stale, raw.max_stale);
        set(&mut a.cold_start_timeout, raw.cold_start_timeout);
        set(&mut a.recovery_hold, raw.recovery_hold);
        set(&mut a.allow_loopback, raw.allow_loopback);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        DiscoveryConfig::from_vars(&vars(pairs)).expect_err("must fail").to_string()
    }

    #[test]
    fn defaults_without_variables() {
        let c = DiscoveryConfig::from_vars(&vars(&[("UNRELATED", "x")])).expect("defaults");
        assert_eq!(c.mode, Mode::Dns);
        assert_eq!(c.port, PortSpec::Name("tri".into()));
        assert_eq!(c.dns.ttl_floor, Duration::from_secs(5));
        assert_eq!(c.dns.cluster_domain, "cluster.local");
        assert_eq!(c.ip_family, IpFamily::Auto);
        assert_eq!(c.api.request_timeout, Duration::from_secs(5));
    }

    #[test]
    fn reads_variables() {
        let c = DiscoveryConfig::from_vars(&vars(&[
            ("DISCOVERY_MODE", "API"),
            ("DISCOVERY_NAMESPACE", "demo"),
            ("DISCOVERY_PORT", "50051"),
            ("DISCOVERY_DNS_SERVER", "127.0.0.1:5353"),
            ("DISCOVERY_DNS_TTL_CEILING", "1m30s"),
            ("DISCOVERY_MAX_STALE", "250ms"),
            ("DISCOVERY_DNS_SRV", "false"),
            ("DISCOVERY_MAPPINGS", "org.x.Greeter:1.0.0=demo/greeter-v1:tri"),
            ("DISCOVERY_IP_FAMILY", "ipv6"),
            ("DISCOVERY_ZONE", "zone-b"),
            ("DISCOVERY_NODE_NAME", "kind-worker2"),
            ("DISCOVERY_POD_IP", "fd00::7"),
            ("DISCOVERY_WATCH_IDLE_TIMEOUT", "3m"),
        ]))
        .expect("valid");
        assert_eq!(c.mode, Mode::Api);
        assert_eq!(c.namespace, "demo");
        assert_eq!(c.port, PortSpec::Number(50051));
        assert_eq!(c.dns.server, Some("127.0.0.1:5353".parse().expect("addr")));
        assert_eq!(c.dns.ttl_ceiling, Duration::from_secs(90));
        assert_eq!(c.api.max_stale, Duration::from_millis(250));
        assert!(!c.dns.srv);
        assert_eq!(c.mappings.len(), 1);
        assert_eq!(c.ip_family, IpFamily::Ipv6);
        assert_eq!(c.locality.zone.as_deref(), Some("zone-b"));
        assert_eq!(c.locality.node_name.as_deref(), Some("kind-worker2"));
        assert_eq!(c.api.watch_idle_timeout, Duration::from_secs(180));
    }

    #[test]
    fn errors_name_the_variable_and_the_accepted_values() {
        for (pairs, must) in [
            (&[("DISCOVERY_MODE", "consul")][..], &["DISCOVERY_MODE", "api, dns, static"][..]),
            (&[("DISCOVERY_PORT", "70000")], &["DISCOVERY_PORT", "1-65535"]),
            (&[("DISCOVERY_PORT", "Tri_Port")], &["DISCOVERY_PORT", "port name"]),
            (&[("DISCOVERY_DNS_TTL_FLOOR", "5")], &["DISCOVERY_DNS_TTL_FLOOR", "unit"]),
            (&[("DISCOVERY_SERVICE_TEMPLATE", "{nope}")], &["DISCOVERY_SERVICE_TEMPLATE", "{interface}"]),
            (&[("DISCOVERY_MODE", "static")], &["DISCOVERY_STATIC_ENDPOINTS"]),
            (
                &[("DISCOVERY_DNS_TTL_FLOOR", "10s"), ("DISCOVERY_DNS_TTL_CEILING", "5s")],
                &["DISCOVERY_DNS_TTL_CEILING"],
            ),
            (&[("DISCOVERY_API_SERVER", "127.0.0.1:6443")], &["DISCOVERY_API_SERVER", "http"]),
            (&[("DISCOVERY_NAMESPACE", "Demo")], &["DISCOVERY_NAMESPACE"]),
            (&[("DISCOVERY_FAILOVER", "maybe")], &["DISCOVERY_FAILOVER", "true or false"]),
            (&[("DISCOVERY_IP_FAMILY", "v4")], &["DISCOVERY_IP_FAMILY", "auto, ipv4 or ipv6"]),
            (&[("DISCOVERY_POD_IP", "pod")], &["DISCOVERY_POD_IP", "IP address"]),
            (&[("DISCOVERY_NODE_NAME", "Node_1")], &["DISCOVERY_NODE_NAME"]),
            (&[("DISCOVERY_DNS_ATTEMPTS", "0")], &["DISCOVERY_DNS_ATTEMPTS", "1 to 10"]),
            (&[("DISCOVERY_WATCH_IDLE_TIMEOUT", "1s")], &["DISCOVERY_WATCH_IDLE_TIMEOUT", "DISCOVERY_REQUEST_TIMEOUT"]),
            (&[("DISCOVERY_PAGE_SIZE", "-1")], &["DISCOVERY_PAGE_SIZE"]),
        ] {
            let e = err(pairs);
            for m in must {
                assert!(e.contains(m), "{pairs:?}: {e:?} should mention {m:?}");
            }
        }
    }

    #[test]
    fn config_file_then_environment() {
        let dir = std::env::temp_dir().join(format!("discovery-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("discovery.toml");
        std::fs::write(&file, "mode = \"api\"\nnamespace = \"from-file\"\ndns_ttl_floor = \"2s\"\n").expect("write");
        let c = DiscoveryConfig::from_vars(&vars(&[
            ("DISCOVERY_CONFIG_FILE", file.to_str().expect("utf8")),
            ("DISCOVERY_NAMESPACE", "from-env"),
        ]))
        .expect("valid");
        assert_eq!(c.mode, Mode::Api);
        assert_eq!(c.namespace, "from-env", "environment overrides the file");
        assert_eq!(c.dns.ttl_floor, Duration::from_secs(2));
        let missing = DiscoveryConfig::from_vars(&vars(&[("DISCOVERY_CONFIG_FILE", "/nonexistent/x.toml")]));
        assert!(missing.is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Every variable this crate reads.
    const VARIABLES: &[&str] = &[
        "MODE",
        "NAMESPACE",
        "PORT",
        "FALLBACK_PORT",
        "MAPPINGS",
        "SERVICE_TEMPLATE",
        "STATIC_ENDPOINTS",
        "IP_FAMILY",
        "DNS_SERVER",
        "CLUSTER_DOMAIN",
        "DNS_SRV",
        "DNS_TTL_FLOOR",
        "DNS_TTL_CEILING",
        "DNS_TIMEOUT",
        "DNS_ATTEMPTS",
        "API_SERVER",
        "ANNOTATIONS",
        "RBAC_CHECK",
        "WATCH_TIMEOUT",
        "WATCH_IDLE_TIMEOUT",
        "REQUEST_TIMEOUT",
        "API_PROBE_INTERVAL",
        "PAGE_SIZE",
        "STREAMING_LISTS",
        "FAILOVER",
        "MAX_STALE",
        "COLD_START_TIMEOUT",
        "RECOVERY_HOLD",
        "ALLOW_LOOPBACK",
        "BACKOFF_MIN",
        "BACKOFF_MAX",
        "ZONE",
        "NODE_NAME",
        "POD_IP",
    ];

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,24}",
            "[0-9]{1,22}(ms|s|m|h)?",
            Just("0s".to_owned()),
            Just("9999999999999999h".to_owned()),
            Just("api".to_owned()),
        ]
    }

    fn any_duration() -> impl Strategy<Value = Duration> {
        prop_oneof![Just(Duration::ZERO), Just(Duration::MAX), any::<u64>().prop_map(Duration::from_millis)]
    }

    proptest! {
        /// Any value of any variable: a configuration or an error naming the variable, never a panic.
        #[test]
        fn any_environment_parses_or_names_the_variable(var in 0..VARIABLES.len(), v in value()) {
            let name = format!("DISCOVERY_{}", VARIABLES[var]);
            let vars: HashMap<String, String> = [(name.clone(), v)].into_iter().collect();
            if let Err(e) = DiscoveryConfig::from_vars(&vars) {
                prop_assert!(e.to_string().contains("DISCOVERY_"), "{e}");
            }
        }

        /// A configuration built in code, with any durations: validation refuses what would make a
        /// loop spin (below its floor) or a deadline overflow; what it accepts can be added to now.
        #[test]
        fn any_configuration_in_code_is_checked(
            backoff_min in any_duration(),
            backoff_max in any_duration(),
            idle in any_duration(),
            request in any_duration(),
            probe in any_duration(),
            stale in any_duration(),
            floor in any_duration(),
            page in any::<u32>(),
        ) {
            let mut c = DiscoveryConfig { backoff: BackoffConfig { min: backoff_min, max: backoff_max }, ..DiscoveryConfig::default() };
            c.api.watch_idle_timeout = idle;
            c.api.request_timeout = request;
            c.api.probe_interval = probe;
            c.api.max_stale = stale;
            c.dns.ttl_floor = floor;
            c.api.page_size = page;
            if c.validate().is_ok() {
                prop_assert!(c.backoff.min >= Duration::from_millis(10), "no zero-delay retry loop");
                prop_assert!(c.api.watch_idle_timeout > c.api.request_timeout, "no relist loop");
                prop_assert!(c.dns.ttl_floor >= Duration::from_millis(100));
                prop_assert!(c.api.probe_interval.is_zero() || c.api.probe_interval >= Duration::from_millis(100));
                let now = std::time::Instant::now();
                prop_assert!(now.checked_add(c.api.max_stale).is_some() && now.checked_add(c.backoff.max).is_some());
            }
        }
    }
}
