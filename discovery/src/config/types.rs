//! The parts of a [`super::DiscoveryConfig`], and how each is read from a variable's text.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::vars::FromVar;
use crate::model::PortSpec;

/// How endpoints are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Watch EndpointSlices through the Kubernetes API (DNS, then the Service VIP, as failover).
    Api,
    /// Cluster DNS: SRV, then A/AAAA.
    Dns,
    /// A fixed list of addresses.
    Static,
}

/// `api`, `dns` or `static` (any case).
impl FromVar for Mode {
    fn from_var(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "api" => Ok(Mode::Api),
            "dns" => Ok(Mode::Dns),
            "static" => Ok(Mode::Static),
            _ => Err("expected one of: api, dns, static".to_owned()),
        }
    }
}

/// Which address of a dual-stack pod is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpFamily {
    /// The family of this pod's own IP (`DISCOVERY_POD_IP`), else IPv4; a pod with only the other
    /// family is still used.
    Auto,
    /// IPv4 addresses only.
    Ipv4,
    /// IPv6 addresses only.
    Ipv6,
}

/// `auto`, `ipv4` or `ipv6` (any case).
impl FromVar for IpFamily {
    fn from_var(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "auto" => Ok(IpFamily::Auto),
            "ipv4" => Ok(IpFamily::Ipv4),
            "ipv6" => Ok(IpFamily::Ipv6),
            _ => Err("expected auto, ipv4 or ipv6".to_owned()),
        }
    }
}

/// A TCP port number, 1–65535.
pub(crate) fn port_number(v: &str) -> Result<u16, String> {
    match v.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        Ok(_) => Err("port out of range: expected 1-65535".to_owned()),
        Err(_) => Err("expected a port number 1-65535".to_owned()),
    }
}

/// A port name (IANA_SVC_NAME: ≤15 chars, lowercase letters, digits and '-', with a letter) or a
/// number.
impl FromVar for PortSpec {
    fn from_var(v: &str) -> Result<Self, String> {
        if v.chars().all(|c| c.is_ascii_digit()) {
            return port_number(v).map(PortSpec::Number);
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
}

/// A static endpoint's host.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Host {
    /// An IP address.
    Ip(IpAddr),
    /// A host name, resolved by the system resolver (and again every `DISCOVERY_DNS_TTL_CEILING`).
    Name(String),
}

/// One entry of `DISCOVERY_STATIC_ENDPOINTS`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct StaticEndpoint {
    /// IP or name.
    pub host: Host,
    /// Port.
    pub port: u16,
}

impl StaticEndpoint {
    /// An endpoint at an IP address.
    pub fn ip(addr: SocketAddr) -> Self {
        StaticEndpoint { host: Host::Ip(addr.ip()), port: addr.port() }
    }

    /// An endpoint by host name, resolved by the system resolver.
    pub fn name(host: impl Into<String>, port: u16) -> Self {
        StaticEndpoint { host: Host::Name(host.into()), port }
    }
}

impl std::fmt::Display for StaticEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
            Host::Name(n) => write!(f, "{n}:{}", self.port),
        }
    }
}

/// `DISCOVERY_STATIC_ENDPOINTS` as written: hosts with their port, if any (the fallback port fills
/// the others once it is known).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StaticList(pub Vec<(Host, Option<u16>)>);

/// `host:port,host:port`; IPv6 in brackets; a host without a port gets `DISCOVERY_FALLBACK_PORT`.
impl FromVar for StaticList {
    fn from_var(v: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if let Ok(sa) = item.parse::<SocketAddr>() {
                if sa.port() == 0 {
                    return Err(format!("{item:?}: port out of range: expected 1-65535"));
                }
                out.push((Host::Ip(sa.ip()), Some(sa.port())));
                continue;
            }
            if let Ok(ip) = item.trim_matches(['[', ']']).parse::<IpAddr>() {
                out.push((Host::Ip(ip), None));
                continue;
            }
            let (host, port) = match item.rsplit_once(':') {
                Some((h, p)) => (h, Some(port_number(p).map_err(|why| format!("{item:?}: {why}"))?)),
                None => (item, None),
            };
            let valid_host = !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|l| {
                    !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !valid_host {
                return Err(format!("{item:?} is not host:port (host: an IP or a DNS name)"));
            }
            out.push((Host::Name(host.to_ascii_lowercase()), port));
        }
        if out.is_empty() {
            return Err("expected a comma-separated list of host:port".to_owned());
        }
        Ok(StaticList(out))
    }
}

impl StaticList {
    pub(crate) fn with_fallback(self, fallback_port: u16) -> Vec<StaticEndpoint> {
        self.0.into_iter().map(|(host, port)| StaticEndpoint { host, port: port.unwrap_or(fallback_port) }).collect()
    }
}

/// A name server: an IP with an optional port (53 by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NameServer(pub SocketAddr);

impl FromVar for NameServer {
    fn from_var(v: &str) -> Result<Self, String> {
        if let Ok(sa) = v.parse::<SocketAddr>() {
            return Ok(NameServer(sa));
        }
        if let Ok(ip) = v.parse::<IpAddr>() {
            return Ok(NameServer(SocketAddr::new(ip, 53)));
        }
        Err("expected an IP address with an optional port, e.g. 10.96.0.10 or 127.0.0.1:5353 or [::1]:53".to_owned())
    }
}

/// Settings of the DNS source.
#[derive(Clone, Debug)]
#[non_exhaustive]
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
#[non_exhaustive]
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
    /// Page size of consistent lists (the ones that read etcd; lists from the server's cache are one
    /// response, decoded item by item as it arrives).
    pub page_size: u32,
    /// Ask for streaming lists (`sendInitialEvents`) first; a server that refuses them is asked
    /// for plain lists from then on.
    pub streaming_lists: bool,
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
#[non_exhaustive]
pub struct BackoffConfig {
    /// First delay.
    pub min: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl BackoffConfig {
    /// Delays from `min`, doubling up to `max`.
    pub const fn new(min: Duration, max: Duration) -> Self {
        BackoffConfig { min, max }
    }
}

/// Where this process runs, for zone-aware clients.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Locality {
    /// This process's zone (`DISCOVERY_ZONE`); wins over the node's label.
    pub zone: Option<String>,
    /// This pod's node (`DISCOVERY_NODE_NAME`, downward API `spec.nodeName`): its
    /// `topology.kubernetes.io/zone` label is read when `zone` is unset (needs `get` on nodes).
    pub node_name: Option<String>,
    /// This pod's IP (`DISCOVERY_POD_IP`, downward API `status.podIP`), for `DISCOVERY_IP_FAMILY=auto`.
    pub pod_ip: Option<IpAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_lists() {
        let eps =
            StaticList::from_var("10.0.0.1:1, [::1]:2,provider-a:3,provider-b").expect("valid").with_fallback(50051);
        let shown: Vec<String> = eps.iter().map(ToString::to_string).collect();
        assert_eq!(shown, vec!["10.0.0.1:1", "[::1]:2", "provider-a:3", "provider-b:50051"]);
        for bad in ["a b:1", "host:0", "10.0.0.1:0", ""] {
            assert!(StaticList::from_var(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports_and_name_servers() {
        assert_eq!(PortSpec::from_var("tri"), Ok(PortSpec::Name("tri".into())));
        assert!(PortSpec::from_var("0").is_err());
        assert!(PortSpec::from_var("has--dash").is_err());
        assert_eq!(NameServer::from_var("10.96.0.10"), Ok(NameServer("10.96.0.10:53".parse().expect("addr"))));
    }
}
