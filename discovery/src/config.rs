//! Configuration: defaults → optional file (`DISCOVERY_CONFIG_FILE`) → `DISCOVERY_*` environment
//! variables, read with the `config` crate, then validated once. Every error names the variable and
//! the values it accepts. Tests build [`DiscoveryConfig`] directly or pass an explicit variable map
//! to [`DiscoveryConfig::from_vars`]; nothing here mutates the process environment.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::mapping::{Mapping, Template};
use crate::model::{Endpoint, Host, PortSpec};

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
}

/// Settings of the API source and of failover.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// API server URL override (e.g. `http://127.0.0.1:8001` behind `kubectl proxy`); `None` infers
    /// in-cluster config, then kubeconfig.
    pub server: Option<String>,
    /// Look up a Service by its `dubbo.apache.org/*` annotations (needs list on services).
    pub annotations: bool,
    /// Check RBAC with a SelfSubjectAccessReview at start.
    pub rbac_check: bool,
    /// Server-side timeout of one watch request.
    pub watch_timeout: Duration,
    /// List page size.
    pub page_size: u32,
    /// Fall back to DNS, then the Service VIP, when the API is unreachable.
    pub failover: bool,
    /// How long the last-known-good set is served while the API is unreachable before falling back.
    pub max_stale: Duration,
    /// How long a cold start waits for its first list before falling back.
    pub cold_start_timeout: Duration,
}

/// Retry pacing of every source.
#[derive(Clone, Copy, Debug)]
pub struct BackoffConfig {
    /// First delay.
    pub min: Duration,
    /// Largest delay.
    pub max: Duration,
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
    /// Port number used when the port is a name and nothing maps it (no SRV record, VIP, static host
    /// without a port).
    pub fallback_port: u16,
    /// Explicit mappings, first match wins.
    pub mappings: Vec<Mapping>,
    /// Naming rule for the Service name.
    pub template: Template,
    /// Static endpoints (static mode).
    pub static_endpoints: Vec<Endpoint>,
    /// DNS settings.
    pub dns: DnsConfig,
    /// API settings.
    pub api: ApiConfig,
    /// Retry pacing.
    pub backoff: BackoffConfig,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            mode: Mode::Dns,
            namespace: "default".to_owned(),
            port: PortSpec::Name("tri".to_owned()),
            fallback_port: 50051,
            mappings: Vec::new(),
            template: Template::parse("{simple}").expect("default template is valid"),
            static_endpoints: Vec::new(),
            dns: DnsConfig {
                server: None,
                cluster_domain: "cluster.local".to_owned(),
                srv: true,
                ttl_floor: Duration::from_secs(5),
                ttl_ceiling: Duration::from_secs(30),
                timeout: Duration::from_secs(2),
            },
            api: ApiConfig {
                server: None,
                annotations: true,
                rbac_check: true,
                watch_timeout: Duration::from_secs(290),
                page_size: 500,
                failover: true,
                max_stale: Duration::from_secs(60),
                cold_start_timeout: Duration::from_secs(5),
            },
            backoff: BackoffConfig { min: Duration::from_millis(500), max: Duration::from_secs(30) },
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
    dns_server: Option<String>,
    cluster_domain: Option<String>,
    dns_srv: Option<String>,
    dns_ttl_floor: Option<String>,
    dns_ttl_ceiling: Option<String>,
    dns_timeout: Option<String>,
    api_server: Option<String>,
    annotations: Option<String>,
    rbac_check: Option<String>,
    watch_timeout: Option<String>,
    page_size: Option<String>,
    failover: Option<String>,
    max_stale: Option<String>,
    cold_start_timeout: Option<String>,
    backoff_min: Option<String>,
    backoff_max: Option<String>,
}

/// Where the pod's namespace is mounted in a cluster.
const SA_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

impl DiscoveryConfig {
    /// Reads the process environment (and `DISCOVERY_CONFIG_FILE` if set).
    pub fn from_env() -> Result<Self, ConfigError> {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_vars(&vars)
    }

    /// Reads the given variables (and the file named by `DISCOVERY_CONFIG_FILE` among them).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::validate(load_raw(vars, ENV_PREFIX)?)
    }

    fn validate(raw: Raw) -> Result<Self, ConfigError> {
        let d = DiscoveryConfig::default();
        let mode = match raw.mode.as_deref().map(str::trim) {
            None | Some("") => d.mode,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "api" => Mode::Api,
                "dns" => Mode::Dns,
                "static" => Mode::Static,
                _ => return Err(invalid("MODE", v, "expected one of: api, dns, static")),
            },
        };
        let namespace = match raw.namespace.filter(|s| !s.is_empty()) {
            Some(ns) => {
                crate::mapping::check_label(&ns, 63, false)
                    .map_err(|why| invalid("NAMESPACE", &ns, &format!("{why} (DNS-1123 label)")))?;
                ns
            }
            None => std::fs::read_to_string(SA_NAMESPACE_FILE)
                .map(|s| s.trim().to_owned())
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or(d.namespace),
        };
        let port = match raw.port.filter(|s| !s.is_empty()) {
            Some(p) => parse_port_spec(&p).map_err(|why| invalid("PORT", &p, &why))?,
            None => d.port,
        };
        let fallback_port = opt(raw.fallback_port, "FALLBACK_PORT", d.fallback_port, parse_port_number)?;
        let template = match raw.service_template.filter(|s| !s.is_empty()) {
            Some(t) => Template::parse(&t).map_err(|e| invalid("SERVICE_TEMPLATE", &t, &e.to_string()))?,
            None => d.template,
        };
        let mappings = match raw.mappings.filter(|s| !s.trim().is_empty()) {
            Some(m) => crate::mapping::parse_mappings(&m).map_err(|e| invalid("MAPPINGS", &m, &e.to_string()))?,
            None => Vec::new(),
        };
        let static_endpoints = match raw.static_endpoints.filter(|s| !s.trim().is_empty()) {
            Some(s) => parse_static(&s, fallback_port).map_err(|why| invalid("STATIC_ENDPOINTS", &s, &why))?,
            None => Vec::new(),
        };
        if mode == Mode::Static && static_endpoints.is_empty() {
            return Err(invalid(
                "STATIC_ENDPOINTS",
                "",
                "static mode needs at least one endpoint: a comma-separated list of host:port",
            ));
        }
        let dns = DnsConfig {
            server: match raw.dns_server.filter(|s| !s.is_empty()) {
                Some(s) => Some(parse_dns_server(&s).map_err(|why| invalid("DNS_SERVER", &s, &why))?),
                None => None,
            },
            cluster_domain: match raw.cluster_domain.filter(|s| !s.is_empty()) {
                Some(c) => {
                    let c = c.trim_end_matches('.').to_owned();
                    if c.split('.').any(|l| crate::mapping::check_label(l, 63, false).is_err()) {
                        return Err(invalid(
                            "CLUSTER_DOMAIN",
                            &c,
                            "expected dot-separated DNS labels, e.g. cluster.local",
                        ));
                    }
                    c
                }
                None => d.dns.cluster_domain,
            },
            srv: opt(raw.dns_srv, "DNS_SRV", d.dns.srv, parse_bool)?,
            ttl_floor: opt(raw.dns_ttl_floor, "DNS_TTL_FLOOR", d.dns.ttl_floor, parse_nonzero_duration)?,
            ttl_ceiling: opt(raw.dns_ttl_ceiling, "DNS_TTL_CEILING", d.dns.ttl_ceiling, parse_nonzero_duration)?,
            timeout: opt(raw.dns_timeout, "DNS_TIMEOUT", d.dns.timeout, parse_nonzero_duration)?,
        };
        if dns.ttl_ceiling < dns.ttl_floor {
            return Err(invalid(
                "DNS_TTL_CEILING",
                &format_duration(dns.ttl_ceiling),
                &format!("must not be below DISCOVERY_DNS_TTL_FLOOR ({})", format_duration(dns.ttl_floor)),
            ));
        }
        let api = ApiConfig {
            server: match raw.api_server.filter(|s| !s.is_empty()) {
                Some(s) => {
                    if !(s.starts_with("http://") || s.starts_with("https://")) || s.parse::<http::Uri>().is_err() {
                        return Err(invalid("API_SERVER", &s, "expected an http:// or https:// URL"));
                    }
                    Some(s)
                }
                None => None,
            },
            annotations: opt(raw.annotations, "ANNOTATIONS", d.api.annotations, parse_bool)?,
            rbac_check: opt(raw.rbac_check, "RBAC_CHECK", d.api.rbac_check, parse_bool)?,
            watch_timeout: opt(raw.watch_timeout, "WATCH_TIMEOUT", d.api.watch_timeout, |v| {
                let t = parse_nonzero_duration(v)?;
                if t.as_secs() == 0 { Err("expected at least 1s".to_owned()) } else { Ok(t) }
            })?,
            page_size: opt(raw.page_size, "PAGE_SIZE", d.api.page_size, |v| {
                v.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| "expected a whole number above 0".to_owned())
            })?,
            failover: opt(raw.failover, "FAILOVER", d.api.failover, parse_bool)?,
            max_stale: opt(raw.max_stale, "MAX_STALE", d.api.max_stale, parse_duration)?,
            cold_start_timeout: opt(
                raw.cold_start_timeout,
                "COLD_START_TIMEOUT",
                d.api.cold_start_timeout,
                parse_duration,
            )?,
        };
        let backoff = BackoffConfig {
            min: opt(raw.backoff_min, "BACKOFF_MIN", d.backoff.min, parse_nonzero_duration)?,
            max: opt(raw.backoff_max, "BACKOFF_MAX", d.backoff.max, parse_nonzero_duration)?,
        };
        if backoff.max < backoff.min {
            return Err(invalid(
                "BACKOFF_MAX",
                &format_duration(backoff.max),
                "must not be below DISCOVERY_BACKOFF_MIN",
            ));
        }
        Ok(DiscoveryConfig {
            mode,
            namespace,
            port,
            fallback_port,
            mappings,
            template,
            static_endpoints,
            dns,
            api,
            backoff,
        })
    }
}

/// Gathers `<PREFIX>_*` variables as text into `T` (keys lowercased without the prefix), on top of the
/// file named by `<PREFIX>_CONFIG_FILE` if set: defaults (serde) → file → environment. Unrelated
/// variables are never read, so they cannot fail the parse.
pub fn load_raw<T: serde::de::DeserializeOwned>(
    vars: &HashMap<String, String>,
    prefix: &str,
) -> Result<T, ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(file) = vars.get(&format!("{prefix}_CONFIG_FILE")).filter(|f| !f.is_empty()) {
        builder = builder.add_source(config::File::from(PathBuf::from(file)).required(true));
    }
    let head = format!("{prefix}_");
    let ours: HashMap<String, String> = vars
        .iter()
        .filter(|(k, _)| k.starts_with(&head) && k.as_str() != format!("{prefix}_CONFIG_FILE"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    builder = builder.add_source(config::Environment::with_prefix(prefix).source(Some(ours)));
    builder.build().and_then(|c| c.try_deserialize()).map_err(ConfigError::Read)
}

impl ConfigError {
    /// `variable` (the full name) holds `value`, which is not accepted because of `reason`.
    pub fn invalid(variable: impl Into<String>, value: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid { variable: variable.into(), value: value.into(), reason: reason.into() }
    }
}

fn invalid(var: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid { variable: format!("{ENV_PREFIX}_{var}"), value: value.to_owned(), reason: reason.to_owned() }
}

/// Parses one variable's raw text with `parse`: surrounding spaces trimmed, absent or empty gives
/// `None`, an error names `variable` (its full name) and the value. Shared by every crate's config.
pub fn parse_var<T>(
    raw: Option<String>,
    variable: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    match raw.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(v) => parse(v).map(Some).map_err(|why| ConfigError::invalid(variable, v, why)),
        None => Ok(None),
    }
}

fn opt<T>(
    raw: Option<String>,
    var: &str,
    default: T,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    Ok(parse_var(raw, &format!("{ENV_PREFIX}_{var}"), parse)?.unwrap_or(default))
}

/// `true/false`, `1/0`, `yes/no`, `on/off`.
pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".to_owned()),
    }
}

/// A duration with a unit: `250ms`, `5s`, `2m`, `1h`, or combinations such as `1m30s`.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    const HINT: &str = "expected a duration with a unit, e.g. 500ms, 5s, 2m, 1h30m";
    let v = v.trim();
    if v.is_empty() {
        return Err(HINT.to_owned());
    }
    let mut total = Duration::ZERO;
    let mut rest = v;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(HINT.to_owned());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| HINT.to_owned())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(HINT.to_owned()),
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

/// A duration above zero.
pub fn parse_nonzero_duration(v: &str) -> Result<Duration, String> {
    let d = parse_duration(v)?;
    if d.is_zero() { Err("expected a duration above zero".to_owned()) } else { Ok(d) }
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.is_zero() { format!("{}ms", d.as_millis()) } else { format!("{}s", d.as_secs()) }
}

/// A TCP port number, 1–65535.
pub fn parse_port_number(v: &str) -> Result<u16, String> {
    match v.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        Ok(_) => Err("port out of range: expected 1-65535".to_owned()),
        Err(_) => Err("expected a port number 1-65535".to_owned()),
    }
}

/// A port name (IANA_SVC_NAME: ≤15 chars, lowercase letters, digits and '-', with a letter) or a number.
pub fn parse_port_spec(v: &str) -> Result<PortSpec, String> {
    if v.chars().all(|c| c.is_ascii_digit()) {
        return parse_port_number(v).map(PortSpec::Number);
    }
    let ok = v.len() <= 15
        && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && v.chars().any(|c| c.is_ascii_lowercase())
        && !v.starts_with('-')
        && !v.ends_with('-')
        && !v.contains("--");
    if ok {
        Ok(PortSpec::Name(v.to_owned()))
    } else {
        Err("expected a port number 1-65535 or a port name (up to 15 lowercase letters, digits, '-')".to_owned())
    }
}

/// An IP with an optional port (53 by default).
pub fn parse_dns_server(v: &str) -> Result<SocketAddr, String> {
    if let Ok(sa) = v.parse::<SocketAddr>() {
        return Ok(sa);
    }
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    Err("expected an IP address with an optional port, e.g. 10.96.0.10 or 127.0.0.1:5353 or [::1]:53".to_owned())
}

/// `host:port,host:port`; IPv6 in brackets; a host without a port gets `fallback_port`.
pub fn parse_static(v: &str, fallback_port: u16) -> Result<Vec<Endpoint>, String> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Ok(sa) = item.parse::<SocketAddr>() {
            out.push(Endpoint::new(Host::Ip(sa.ip()), sa.port()));
            continue;
        }
        if let Ok(ip) = item.trim_matches(['[', ']']).parse::<IpAddr>() {
            out.push(Endpoint::new(Host::Ip(ip), fallback_port));
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
        out.push(Endpoint::new(Host::Name(host.to_ascii_lowercase()), port));
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
    }

    #[test]
    fn errors_name_the_variable_and_the_accepted_values() {
        let e = err(&[("DISCOVERY_MODE", "consul")]);
        assert!(e.contains("DISCOVERY_MODE") && e.contains("api, dns, static"), "{e}");
        let e = err(&[("DISCOVERY_PORT", "70000")]);
        assert!(e.contains("DISCOVERY_PORT") && e.contains("1-65535"), "{e}");
        let e = err(&[("DISCOVERY_PORT", "Tri_Port")]);
        assert!(e.contains("DISCOVERY_PORT") && e.contains("port name"), "{e}");
        let e = err(&[("DISCOVERY_DNS_TTL_FLOOR", "5")]);
        assert!(e.contains("DISCOVERY_DNS_TTL_FLOOR") && e.contains("unit"), "{e}");
        let e = err(&[("DISCOVERY_SERVICE_TEMPLATE", "{nope}")]);
        assert!(e.contains("DISCOVERY_SERVICE_TEMPLATE") && e.contains("{interface}"), "{e}");
        let e = err(&[("DISCOVERY_MODE", "static")]);
        assert!(e.contains("DISCOVERY_STATIC_ENDPOINTS"), "{e}");
        let e = err(&[("DISCOVERY_DNS_TTL_FLOOR", "10s"), ("DISCOVERY_DNS_TTL_CEILING", "5s")]);
        assert!(e.contains("DISCOVERY_DNS_TTL_CEILING"), "{e}");
        let e = err(&[("DISCOVERY_API_SERVER", "127.0.0.1:6443")]);
        assert!(e.contains("DISCOVERY_API_SERVER") && e.contains("http"), "{e}");
        let e = err(&[("DISCOVERY_NAMESPACE", "Demo")]);
        assert!(e.contains("DISCOVERY_NAMESPACE"), "{e}");
        let e = err(&[("DISCOVERY_FAILOVER", "maybe")]);
        assert!(e.contains("true or false"), "{e}");
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
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5 days").is_err());
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
    }

    #[test]
    fn static_lists() {
        let eps = parse_static("10.0.0.1:1, [::1]:2,provider-a:3,provider-b", 50051).expect("valid");
        let keys: Vec<String> = eps.iter().map(|e| e.key().0).collect();
        assert_eq!(keys, vec!["10.0.0.1:1", "[::1]:2", "provider-a:3", "provider-b:50051"]);
        assert!(parse_static("a b:1", 1).is_err());
        assert!(parse_static("host:0", 1).is_err());
    }
}
