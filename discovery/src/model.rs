//! The vocabulary: what is looked up ([`ServiceRef`] → [`Target`]) and what is found ([`EndpointSet`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

/// A Dubbo service identity: interface, group and version together name one service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ServiceRef {
    /// Fully qualified interface, e.g. `org.apache.dubbo.demo.GreeterService`.
    pub interface: String,
    /// Dubbo group; empty means "no group".
    pub group: String,
    /// Dubbo version; empty means "no version".
    pub version: String,
}

impl ServiceRef {
    /// A service with no group and no version.
    pub fn new(interface: impl Into<String>) -> Self {
        Self { interface: interface.into(), group: String::new(), version: String::new() }
    }

    /// Sets the group.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// Sets the version.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// The last dot-separated segment of the interface (`GreeterService`).
    pub fn simple_name(&self) -> &str {
        self.interface.rsplit('.').next().unwrap_or(&self.interface)
    }
}

/// Dubbo's service key form: `group/interface:version`, parts omitted when empty.
impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.group.is_empty() {
            write!(f, "{}/", self.group)?;
        }
        f.write_str(&self.interface)?;
        if !self.version.is_empty() {
            write!(f, ":{}", self.version)?;
        }
        Ok(())
    }
}

/// Which port of the pods speaks Triple.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum PortSpec {
    /// A named port (Service port name, which EndpointSlices carry, and the SRV record label).
    Name(String),
    /// A port number (the pods' target port).
    Number(u16),
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::Name(n) => f.write_str(n),
            PortSpec::Number(n) => write!(f, "{n}"),
        }
    }
}

/// Where a [`ServiceRef`] lives in Kubernetes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Target {
    /// Namespace of the Service.
    pub namespace: String,
    /// Kubernetes Service name (a DNS-1035 label).
    pub service: String,
    /// The port that speaks Triple.
    pub port: PortSpec,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)
    }
}

/// An endpoint's host: an address, or a name left to the connector to resolve (static and VIP modes).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum Host {
    /// An IP address.
    Ip(IpAddr),
    /// A host name.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// The EndpointSlice conditions, with the API's defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Conditions {
    /// Ready to receive new traffic (unset in a slice means true).
    pub ready: bool,
    /// Serving (unset means the same as `ready`); may be true while terminating.
    pub serving: bool,
    /// Terminating (unset means false).
    pub terminating: bool,
}

impl Conditions {
    /// A plainly ready endpoint (DNS and static answers carry no conditions).
    pub const READY: Conditions = Conditions { ready: true, serving: true, terminating: false };

    /// Applies the documented defaults of `discovery.k8s.io/v1` to optional conditions.
    pub fn from_api(ready: Option<bool>, serving: Option<bool>, terminating: Option<bool>) -> Self {
        let ready = ready.unwrap_or(true);
        Conditions { ready, serving: serving.unwrap_or(ready), terminating: terminating.unwrap_or(false) }
    }

    /// How good a duplicate is: ready beats serving beats neither.
    pub(crate) fn rank(self) -> u8 {
        match (self.ready, self.serving) {
            (true, _) => 2,
            (false, true) => 1,
            (false, false) => 0,
        }
    }
}

/// Where an endpoint set came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Watching EndpointSlices through the Kubernetes API.
    Api,
    /// Cluster DNS (SRV, A/AAAA).
    Dns,
    /// The Service's virtual IP (one logical endpoint, balanced by kube-proxy).
    Vip,
    /// A fixed list from configuration.
    Static,
}

impl Source {
    /// Lowercase name, as used in metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Dns => "dns",
            Source::Vip => "vip",
            Source::Static => "static",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One provider instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// Address or host name.
    pub host: Host,
    /// Port that speaks Triple.
    pub port: u16,
    /// Pod name (API mode: `targetRef.name`), or the DNS target / hostname.
    pub name: Option<String>,
    /// Node the pod runs on (API mode).
    pub node: Option<String>,
    /// Zone (API mode).
    pub zone: Option<String>,
    /// Conditions.
    pub conditions: Conditions,
}

impl Endpoint {
    /// A ready endpoint with no metadata.
    pub fn new(host: Host, port: u16) -> Self {
        Endpoint { host, port, name: None, node: None, zone: None, conditions: Conditions::READY }
    }

    /// `host:port`, the stable identity of an endpoint (IPv6 in brackets).
    pub fn key(&self) -> EndpointKey {
        EndpointKey(format!("{}:{}", self.host, self.port))
    }
}

/// `host:port`, usable as an authority in a URI.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct EndpointKey(pub String);

impl fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Is the source confirmed current, or serving a last-known-good answer?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// The source is healthy; the set is current.
    Live,
    /// The source has been failing since this instant; the set is the last known good one.
    Stale {
        /// When the source stopped confirming the set.
        since: Instant,
    },
}

/// A versioned, immutable snapshot of a service's endpoints. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EndpointSet {
    /// Increases by one on every published change (endpoints, source or freshness).
    pub version: u64,
    /// Where the endpoints came from.
    pub source: Source,
    /// All known endpoints, sorted by key, each once; includes non-ready ones (see [`EndpointSet::routable`]).
    pub endpoints: Arc<[Endpoint]>,
    /// Live or stale.
    pub freshness: Freshness,
    /// When this snapshot was published (wall clock, for display).
    pub published_at: SystemTime,
    /// True until the first answer from any source: "not known yet", as opposed to "known empty".
    pub pending: bool,
}

impl EndpointSet {
    /// The empty, not-yet-known set every watch starts from.
    pub fn pending(source: Source) -> Self {
        EndpointSet {
            version: 0,
            source,
            endpoints: Arc::from(Vec::new()),
            freshness: Freshness::Live,
            published_at: SystemTime::now(),
            pending: true,
        }
    }

    /// The endpoints calls should go to: the ready ones; if none is ready, those still serving while
    /// terminating (so that a Service whose every pod is being replaced still answers).
    pub fn routable(&self) -> Vec<&Endpoint> {
        let ready: Vec<&Endpoint> = self.endpoints.iter().filter(|e| e.conditions.ready).collect();
        if !ready.is_empty() {
            return ready;
        }
        self.endpoints.iter().filter(|e| e.conditions.serving && e.conditions.terminating).collect()
    }

    /// How long the set has been stale (zero while live).
    pub fn stale_for(&self, now: Instant) -> Duration {
        match self.freshness {
            Freshness::Live => Duration::ZERO,
            Freshness::Stale { since } => now.saturating_duration_since(since),
        }
    }

    /// Counts by state: (ready, serving-but-not-ready, neither).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for e in self.endpoints.iter() {
            match e.conditions.rank() {
                2 => c.0 += 1,
                1 => c.1 += 1,
                _ => c.2 += 1,
            }
        }
        c
    }
}

/// Normalises a list of endpoints: one entry per `host:port` (the best-ranked duplicate wins), sorted.
pub fn normalize(endpoints: impl IntoIterator<Item = Endpoint>) -> Vec<Endpoint> {
    let mut by_key: BTreeMap<EndpointKey, Endpoint> = BTreeMap::new();
    for e in endpoints {
        let key = e.key();
        match by_key.get(&key) {
            Some(old) if old.conditions.rank() >= e.conditions.rank() => {}
            _ => {
                by_key.insert(key, e);
            }
        }
    }
    by_key.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn ep(ip: &str, ready: bool, serving: bool, terminating: bool) -> Endpoint {
        let mut e = Endpoint::new(Host::Ip(ip.parse().expect("ip")), 50051);
        e.conditions = Conditions { ready, serving, terminating };
        e
    }

    fn set(eps: Vec<Endpoint>) -> EndpointSet {
        EndpointSet { endpoints: Arc::from(eps), pending: false, ..EndpointSet::pending(Source::Api) }
    }

    #[test]
    fn conditions_follow_api_defaults() {
        assert_eq!(Conditions::from_api(None, None, None), Conditions::READY);
        let c = Conditions::from_api(Some(false), None, None);
        assert!(!c.ready && !c.serving && !c.terminating);
        let c = Conditions::from_api(Some(false), Some(true), Some(true));
        assert!(!c.ready && c.serving && c.terminating);
    }

    #[test]
    fn routable_prefers_ready_then_serving_terminating() {
        let s = set(vec![ep("10.0.0.1", true, true, false), ep("10.0.0.2", false, true, true)]);
        let r = s.routable();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].key().0, "10.0.0.1:50051");

        let s = set(vec![ep("10.0.0.2", false, true, true), ep("10.0.0.3", false, false, false)]);
        let r = s.routable();
        assert_eq!(r.len(), 1, "only the serving+terminating one is a fallback");
        assert_eq!(r[0].key().0, "10.0.0.2:50051");

        let s = set(vec![ep("10.0.0.3", false, false, false)]);
        assert!(s.routable().is_empty());
    }

    #[test]
    fn normalize_dedupes_keeping_the_best() {
        let out = normalize(vec![
            ep("10.0.0.2", false, false, false),
            ep("10.0.0.1", true, true, false),
            ep("10.0.0.2", true, true, false),
            ep("10.0.0.2", false, true, true),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].key().0, "10.0.0.1:50051");
        assert!(out[1].conditions.ready);
    }

    #[test]
    fn ipv6_keys_are_bracketed() {
        let e = Endpoint::new(Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)), 7);
        assert_eq!(e.key().0, "[::1]:7");
    }

    #[test]
    fn service_key_display() {
        let r = ServiceRef::new("a.b.Greeter").with_group("g").with_version("1.0.0");
        assert_eq!(r.to_string(), "g/a.b.Greeter:1.0.0");
        assert_eq!(ServiceRef::new("a.b.Greeter").to_string(), "a.b.Greeter");
        assert_eq!(r.simple_name(), "Greeter");
    }
}
