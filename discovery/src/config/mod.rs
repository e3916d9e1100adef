//! Configuration: defaults → optional file (`DISCOVERY_CONFIG_FILE`) → `DISCOVERY_*` environment
//! variables, read with the `config` crate, then validated once. Every error names the variable and
//! the values it accepts. Tests build [`DiscoveryConfig`] directly or pass an explicit variable map
//! to [`DiscoveryConfig::from_vars`]; nothing here mutates the process environment.

#[doc(hidden)]
pub mod env;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use self::env::{
    MAX_DURATION, format_duration, load_raw, parse_bool, parse_dns_server, parse_duration, parse_in_range,
    parse_nonzero_duration, parse_port_number, parse_port_spec, parse_var,
};
use crate::mapping::{Mapping, Template};
use crate::model::PortSpec;

/// Prefix of every variable this crate reads.
pub const ENV_PREFIX: &str = "DISCOVERY";

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
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
    #[error("failed to read configuration: {0}")]
    Read(#[source] config::ConfigError),
}

impl ConfigError {
    /// `variable` (the full name) holds `value`, which is not accepted because of `reason`.
    pub fn invalid(variable: impl Into<String>, value: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid { variable: variable.into(), value: value.into(), reason: reason.into() }
    }
}

/// How endpoints are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Watch EndpointSlices through the Kubernetes API (DNS, then the Service VIP, as failover).
    Api,
    /// Cluster DNS: SRV, then A/AAAA.
    Dns,
    /// A fixed list of addresses.
    Static,
}

/// Which address of a dual-stack pod is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpFamily {
    /// The family of this pod's own IP (`DISCOVERY_POD_IP`), else IPv4; a pod with only the other
    /// family is still used.
    Auto,
    /// IPv4 addresses only.
    Ipv4,
    /// IPv6 addresses only.
    Ipv6,
}

/// A static endpoint's host.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IP address.
    Ip(IpAddr),
    /// A host name, resolved by the system resolver (and again every `DISCOVERY_DNS_TTL_CEILING`).
    Name(String),
}

/// One entry of `DISCOVERY_STATIC_ENDPOINTS`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StaticEndpoint {
    /// IP or name.
    pub host: Host,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for StaticEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
            Host::Name(n) => write!(f, "{n}:{}", self.port),
        }
    }
}

/// Settings of the DNS source.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Name server to ask; `None` reads `/etc/resolv.conf`.
    pub server: Option<SocketAddr>,
    /// Cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// Ask SRV first for the port and targets (CoreDNS has SRV for named ports; Docker's DNS has none).
    pub srv: bool,
    /// Never re-resolve sooner than this, whatever the TTL.
    pub ttl_floor: Duration,
    /// Never wait longer than this, whatever the TTL (Docker's DNS says 600 s).
    pub ttl_ceiling: Duration,
    /// One query's timeout.
    pub timeout: Duration,
    /// Attempts per query (each within `timeout`).
    pub attempts: usize,
}

/// Settings of the API source and of failover.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// API server URL override (e.g. `http://127.0.0.1:8001` behind `kubectl proxy`); `None` infers
    /// in-cluster config, then kubeconfig.
    pub server: Option<String>,
    /// Look up Services by their `dubbo.apache.org/*` annotations (needs list/watch on services).
    pub annotations: bool,
    /// Check RBAC with SelfSubjectAccessReviews for each namespace watched.
    pub rbac_check: bool,
    /// Server-side timeout of one watch request.
    pub watch_timeout: Duration,
    /// A watch that delivers nothing (no event, no bookmark) for this long is restarted.
    pub watch_idle_timeout: Duration,
    /// Deadline of each request that is not a watch (list pages, access reviews, Node look-up), and
    /// of the wait for a watch to be accepted.
    pub request_timeout: Duration,
    /// How often the API server is asked `GET /readyz` while watches run (zero: never). When it stops
    /// answering at all (a frozen or unreachable server whose connections stay open), every watch is
    /// ended and the state listed again, without waiting for the idle timeout.
    pub probe_interval: Duration,
    /// List page size.
    pub page_size: u32,
    /// Fall back to DNS, then the Service VIP, when the API is unreachable.
    pub failover: bool,
    /// How long the last-known-good set is served while the API is unreachable before falling back.
    pub max_stale: Duration,
    /// How long a cold start waits for its first list before falling back.
    pub cold_start_timeout: Duration,
    /// How long the API must stay live after an outage before DNS failover stops (a failure within it
    /// continues the same outage).
    pub recovery_hold: Duration,
    /// Accept loopback addresses in EndpointSlices (the API server refuses them; for local test
    /// servers only).
    pub allow_loopback: bool,
}

/// Retry pacing of every source.
#[derive(Clone, Copy, Debug)]
pub struct BackoffConfig {
    /// First delay.
    pub min: Duration,
    /// Largest delay.
    pub max: Duration,
}

/// Where this process runs, for zone-aware clients.
#[derive(Clone, Debug, Default)]
pub struct Locality {
    /// This process's zone (`DISCOVERY_ZONE`); wins over the node's label.
    pub zone: Option<String>,
    /// This pod's node (`DISCOVERY_NODE_NAME`, downward API `spec.nodeName`): its
    /// `topology.kubernetes.io/zone` label is read when `zone` is unset (needs `get` on nodes).
    pub node_name: Option<String>,
    /// This pod's IP (`DISCOVERY_POD_IP`, downward API `status.podIP`), for `DISCOVERY_IP_FAMILY=auto`.
    pub pod_ip: Option<IpAddr>,
}

/// The whole, validated configuration of the discovery crate.
#[derive(Clone, Debug)]
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

/// Every variable as text, as the `config` crate gathers it (lowercase keys without the prefix).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Raw {
    mode: Option<String>,
    namespace: Option<String>,
    port: Option<String>,
    fallback_port: Option<String>,
    mappings: Option<String>,
    service_template: Option<String>,
    static_endpoints: Option<String>,
    ip_family: Option<String>,
    dns_server: Option<String>,
    cluster_domain: Option<String>,
    dns_srv: Option<String>,
    dns_ttl_floor: Option<String>,
    dns_ttl_ceiling: Option<String>,
    dns_timeout: Option<String>,
    dns_attempts: Option<String>,
    api_server: Option<String>,
    annotations: Option<String>,
    rbac_check: Option<String>,
    watch_timeout: Option<String>,
    watch_idle_timeout: Option<String>,
    request_timeout: Option<String>,
    api_probe_interval: Option<String>,
    page_size: Option<String>,
    failover: Option<String>,
    max_stale: Option<String>,
    cold_start_timeout: Option<String>,
    recovery_hold: Option<String>,
    allow_loopback: Option<String>,
    backoff_min: Option<String>,
    backoff_max: Option<String>,
    zone: Option<String>,
    node_name: Option<String>,
    pod_ip: Option<String>,
}

/// Where the pod's namespace is mounted in a cluster.
const SA_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

fn var(name: &str) -> String {
    format!("{ENV_PREFIX}_{name}")
}

fn invalid(name: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::invalid(var(name), value, reason)
}

fn opt<T>(
    raw: Option<String>,
    name: &str,
    default: T,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    Ok(parse_var(raw, &var(name), parse)?.unwrap_or(default))
}

impl DiscoveryConfig {
    /// Reads the process environment (and `DISCOVERY_CONFIG_FILE` if set).
    pub fn from_env() -> Result<Self, ConfigError> {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_vars(&vars)
    }

    /// Reads the given variables (and the file named by `DISCOVERY_CONFIG_FILE` among them).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_raw(load_raw(vars, ENV_PREFIX)?)
    }

    fn from_raw(raw: Raw) -> Result<Self, ConfigError> {
        let d = DiscoveryConfig::default();
        let mode = opt(raw.mode, "MODE", d.mode, |v| match v.to_ascii_lowercase().as_str() {
            "api" => Ok(Mode::Api),
            "dns" => Ok(Mode::Dns),
            "static" => Ok(Mode::Static),
            _ => Err("expected one of: api, dns, static".to_owned()),
        })?;
        let namespace = match parse_var(raw.namespace, &var("NAMESPACE"), |ns| {
            crate::mapping::check_label(ns, 63, false).map_err(|why| format!("{why} (DNS-1123 label)"))?;
            Ok(ns.to_owned())
        })? {
            Some(ns) => ns,
            None => std::fs::read_to_string(SA_NAMESPACE_FILE)
                .map(|s| s.trim().to_owned())
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or(d.namespace),
        };
        let port = opt(raw.port, "PORT", d.port, parse_port_spec)?;
        let fallback_port = opt(raw.fallback_port, "FALLBACK_PORT", d.fallback_port, parse_port_number)?;
        let template = opt(raw.service_template, "SERVICE_TEMPLATE", d.template, |t| {
            Template::parse(t).map_err(|e| e.to_string())
        })?;
        let mappings = opt(raw.mappings, "MAPPINGS", Vec::new(), |m| {
            crate::mapping::parse_mappings(m).map_err(|e| e.to_string())
        })?;
        let static_endpoints =
            opt(raw.static_endpoints, "STATIC_ENDPOINTS", Vec::new(), |s| parse_static(s, fallback_port))?;
        let ip_family = opt(raw.ip_family, "IP_FAMILY", d.ip_family, |v| match v.to_ascii_lowercase().as_str() {
            "auto" => Ok(IpFamily::Auto),
            "ipv4" => Ok(IpFamily::Ipv4),
            "ipv6" => Ok(IpFamily::Ipv6),
            _ => Err("expected auto, ipv4 or ipv6".to_owned()),
        })?;
        let dns = DnsConfig {
            server: parse_var(raw.dns_server, &var("DNS_SERVER"), parse_dns_server)?,
            cluster_domain: opt(raw.cluster_domain, "CLUSTER_DOMAIN", d.dns.cluster_domain, |c| {
                let c = c.trim_end_matches('.');
                if c.split('.').any(|l| crate::mapping::check_label(l, 63, false).is_err()) {
                    return Err("expected dot-separated DNS labels, e.g. cluster.local".to_owned());
                }
                Ok(c.to_owned())
            })?,
            srv: opt(raw.dns_srv, "DNS_SRV", d.dns.srv, parse_bool)?,
            ttl_floor: opt(raw.dns_ttl_floor, "DNS_TTL_FLOOR", d.dns.ttl_floor, parse_nonzero_duration)?,
            ttl_ceiling: opt(raw.dns_ttl_ceiling, "DNS_TTL_CEILING", d.dns.ttl_ceiling, parse_nonzero_duration)?,
            timeout: opt(raw.dns_timeout, "DNS_TIMEOUT", d.dns.timeout, parse_nonzero_duration)?,
            attempts: opt(raw.dns_attempts, "DNS_ATTEMPTS", d.dns.attempts, |v| parse_in_range(v, 1, 10))?,
        };
        let api = ApiConfig {
            server: parse_var(raw.api_server, &var("API_SERVER"), |s| {
                if !(s.starts_with("http://") || s.starts_with("https://")) || s.parse::<http::Uri>().is_err() {
                    return Err("expected an http:// or https:// URL".to_owned());
                }
                Ok(s.to_owned())
            })?,
            annotations: opt(raw.annotations, "ANNOTATIONS", d.api.annotations, parse_bool)?,
            rbac_check: opt(raw.rbac_check, "RBAC_CHECK", d.api.rbac_check, parse_bool)?,
            watch_timeout: opt(raw.watch_timeout, "WATCH_TIMEOUT", d.api.watch_timeout, |v| {
                let t = parse_duration(v)?;
                if t < Duration::from_secs(1) { Err("expected at least 1s".to_owned()) } else { Ok(t) }
            })?,
            watch_idle_timeout: opt(
                raw.watch_idle_timeout,
                "WATCH_IDLE_TIMEOUT",
                d.api.watch_idle_timeout,
                parse_nonzero_duration,
            )?,
            request_timeout: opt(
                raw.request_timeout,
                "REQUEST_TIMEOUT",
                d.api.request_timeout,
                parse_nonzero_duration,
            )?,
            probe_interval: opt(raw.api_probe_interval, "API_PROBE_INTERVAL", d.api.probe_interval, parse_duration)?,
            page_size: opt(raw.page_size, "PAGE_SIZE", d.api.page_size, |v| parse_in_range(v, 1, 100_000))?,
            failover: opt(raw.failover, "FAILOVER", d.api.failover, parse_bool)?,
            max_stale: opt(raw.max_stale, "MAX_STALE", d.api.max_stale, parse_duration)?,
            cold_start_timeout: opt(
                raw.cold_start_timeout,
                "COLD_START_TIMEOUT",
                d.api.cold_start_timeout,
                parse_duration,
            )?,
            recovery_hold: opt(raw.recovery_hold, "RECOVERY_HOLD", d.api.recovery_hold, parse_duration)?,
            allow_loopback: opt(raw.allow_loopback, "ALLOW_LOOPBACK", d.api.allow_loopback, parse_bool)?,
        };
        let backoff = BackoffConfig {
            min: opt(raw.backoff_min, "BACKOFF_MIN", d.backoff.min, parse_nonzero_duration)?,
            max: opt(raw.backoff_max, "BACKOFF_MAX", d.backoff.max, parse_nonzero_duration)?,
        };
        let locality = Locality {
            zone: opt(raw.zone, "ZONE", None, |z| {
                if z.len() > 63 || z.chars().any(char::is_whitespace) {
                    return Err("expected a zone name as in topology.kubernetes.io/zone, e.g. us-east-1a".to_owned());
                }
                Ok(Some(z.to_owned()))
            })?,
            node_name: opt(raw.node_name, "NODE_NAME", None, |n| {
                crate::mapping::check_subdomain(n).map_err(|why| format!("{why} (a node name)"))?;
                Ok(Some(n.to_owned()))
            })?,
            pod_ip: opt(raw.pod_ip, "POD_IP", None, |ip| {
                ip.parse::<IpAddr>()
                    .map(Some)
                    .map_err(|_| "expected an IP address (downward API status.podIP)".to_owned())
            })?,
        };
        let cfg = DiscoveryConfig {
            mode,
            namespace,
            port,
            fallback_port,
            mappings,
            template,
            static_endpoints,
            ip_family,
            dns,
            api,
            backoff,
            locality,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks a configuration however it was made (environment, file, or code): every value in its
    /// range, and nothing that would make a loop spin or a deadline overflow. The error names the
    /// variable that sets the value. [`crate::Discovery::new`] calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ms = Duration::from_millis;
        let within = |name: &str, d: Duration, min: Duration| -> Result<(), ConfigError> {
            if d < min || d > MAX_DURATION {
                let accepted = format!("expected {} to 24h", format_duration(min));
                return Err(invalid(name, &format_duration(d), &accepted));
            }
            Ok(())
        };
        crate::mapping::check_label(&self.namespace, 63, false)
            .map_err(|why| invalid("NAMESPACE", &self.namespace, &format!("{why} (DNS-1123 label)")))?;
        if self.fallback_port == 0 {
            return Err(invalid("FALLBACK_PORT", "0", "expected a port number 1-65535"));
        }
        if self.mode == Mode::Static && self.static_endpoints.is_empty() {
            return Err(invalid(
                "STATIC_ENDPOINTS",
                "",
                "static mode needs at least one endpoint: a comma-separated list of host:port",
            ));
        }
        let dns = &self.dns;
        within("DNS_TTL_FLOOR", dns.ttl_floor, ms(100))?;
        within("DNS_TTL_CEILING", dns.ttl_ceiling, ms(100))?;
        if dns.ttl_ceiling < dns.ttl_floor {
            return Err(invalid(
                "DNS_TTL_CEILING",
                &format_duration(dns.ttl_ceiling),
                &format!("must not be below DISCOVERY_DNS_TTL_FLOOR ({})", format_duration(dns.ttl_floor)),
            ));
        }
        within("DNS_TIMEOUT", dns.timeout, ms(10))?;
        if !(1..=10).contains(&dns.attempts) {
            return Err(invalid("DNS_ATTEMPTS", &dns.attempts.to_string(), "expected a whole number from 1 to 10"));
        }
        let api = &self.api;
        within("WATCH_TIMEOUT", api.watch_timeout, Duration::from_secs(1))?;
        within("REQUEST_TIMEOUT", api.request_timeout, ms(10))?;
        within("WATCH_IDLE_TIMEOUT", api.watch_idle_timeout, ms(10))?;
        if api.watch_idle_timeout <= api.request_timeout {
            return Err(invalid(
                "WATCH_IDLE_TIMEOUT",
                &format_duration(api.watch_idle_timeout),
                &format!(
                    "must be above DISCOVERY_REQUEST_TIMEOUT ({}); the API server sends a bookmark about once a \
                     minute, so keep it well above 60s in a cluster",
                    format_duration(api.request_timeout)
                ),
            ));
        }
        if !api.probe_interval.is_zero() {
            within("API_PROBE_INTERVAL", api.probe_interval, ms(100))?;
        }
        if !(1..=100_000).contains(&api.page_size) {
            return Err(invalid("PAGE_SIZE", &api.page_size.to_string(), "expected a whole number from 1 to 100000"));
        }
        within("MAX_STALE", api.max_stale, Duration::ZERO)?;
        within("COLD_START_TIMEOUT", api.cold_start_timeout, Duration::ZERO)?;
        within("RECOVERY_HOLD", api.recovery_hold, Duration::ZERO)?;
        within("BACKOFF_MIN", self.backoff.min, ms(10))?;
        within("BACKOFF_MAX", self.backoff.max, ms(10))?;
        if self.backoff.max < self.backoff.min {
            return Err(invalid(
                "BACKOFF_MAX",
                &format_duration(self.backoff.max),
                "must not be below DISCOVERY_BACKOFF_MIN",
            ));
        }
        Ok(())
    }
}

/// `host:port,host:port`; IPv6 in brackets; a host without a port gets `fallback_port`.
pub fn parse_static(v: &str, fallback_port: u16) -> Result<Vec<StaticEndpoint>, String> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Ok(sa) = item.parse::<SocketAddr>() {
            if sa.port() == 0 {
                return Err(format!("{item:?}: port out of range: expected 1-65535"));
            }
            out.push(StaticEndpoint { host: Host::Ip(sa.ip()), port: sa.port() });
            continue;
        }
        if let Ok(ip) = item.trim_matches(['[', ']']).parse::<IpAddr>() {
            out.push(StaticEndpoint { host: Host::Ip(ip), port: fallback_port });
            continue;
        }
        let (host, port) = match item.rsplit_once(':') {
            Some((h, p)) => (h, parse_port_number(p).map_err(|why| format!("{item:?}: {why}"))?),
            None => (item, fallback_port),
        };
        let valid_host = !host.is_empty()
            && host.len() <= 253
            && host
                .split('.')
                .all(|l| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !valid_host {
            return Err(format!("{item:?} is not host:port (host: an IP or a DNS name)"));
        }
        out.push(StaticEndpoint { host: Host::Name(host.to_ascii_lowercase()), port });
    }
    if out.is_empty() {
        return Err("expected a comma-separated list of host:port".to_owned());
    }
    Ok(out)
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

    #[test]
    fn static_lists() {
        let eps = parse_static("10.0.0.1:1, [::1]:2,provider-a:3,provider-b", 50051).expect("valid");
        let shown: Vec<String> = eps.iter().map(ToString::to_string).collect();
        assert_eq!(shown, vec!["10.0.0.1:1", "[::1]:2", "provider-a:3", "provider-b:50051"]);
        assert!(parse_static("a b:1", 1).is_err());
        assert!(parse_static("host:0", 1).is_err());
        assert!(parse_static("10.0.0.1:0", 1).is_err());
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
