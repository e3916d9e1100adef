//! The vocabulary: what is looked up ([`ServiceRef`] → [`Target`]) and what is found ([`EndpointSet`],
//! and the [`Delta`]s between two of them).
//!
//! An [`EndpointSet`] is a persistent map: cloning it is O(1) and a change copies only the path to the
//! entries it touches, so publishing one change never copies the whole table. Each set carries the
//! last few [`Delta`]s that led to it, so a subscriber that knows version `v` can catch up to the
//! current version by applying deltas ([`EndpointSet::deltas_since`]) instead of diffing snapshots.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

/// A Dubbo service identity: interface, group and version together name one service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[non_exhaustive]
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
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum PortSpec {
    /// A named port (Service port name, which EndpointSlices carry, and the SRV record label).
    Name(String),
    /// A port number (the pods' target port).
    Number(u16),
}

/// The value of the port called `name` among `ports` (`(name, value)`), as EndpointSlices and
/// Services carry them: by name; a single unnamed port serves any name (a one-port Service need
/// not name it).
pub(crate) fn named_port<'a, T: Copy + 'a>(ports: &'a [(impl AsRef<str> + 'a, T)], name: &str) -> Option<T> {
    match ports.iter().find(|(n, _)| n.as_ref() == name) {
        Some((_, v)) => Some(*v),
        None => match ports {
            [(only, v)] if only.as_ref().is_empty() => Some(*v),
            _ => None,
        },
    }
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
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[non_exhaustive]
pub struct Target {
    /// Namespace of the Service.
    pub namespace: String,
    /// Kubernetes Service name (a DNS-1035 label).
    pub service: String,
    /// The port that speaks Triple.
    pub port: PortSpec,
}

impl Target {
    /// The Service `service` in `namespace`, on `port`.
    pub fn new(namespace: impl Into<String>, service: impl Into<String>, port: PortSpec) -> Self {
        Target { namespace: namespace.into(), service: service.into(), port }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)
    }
}

/// The EndpointSlice conditions, with the API's defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
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
    pub fn rank(self) -> u8 {
        match (self.ready, self.serving) {
            (true, _) => 2,
            (false, true) => 1,
            (false, false) => 0,
        }
    }

    /// A fallback target when nothing is ready: still serving while terminating.
    pub fn serving_while_terminating(self) -> bool {
        !self.ready && self.serving && self.terminating
    }
}

/// How a Service asks traffic to be distributed (`spec.trafficDistribution`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TrafficDistribution {
    /// No preference (the field is unset, or holds a value this version does not know).
    #[default]
    Any,
    /// `PreferSameZone`, or its older name `PreferClose`: endpoints in the client's zone first.
    PreferSameZone,
    /// `PreferSameNode`: endpoints on the client's node first, then its zone, then any.
    PreferSameNode,
}

impl TrafficDistribution {
    /// From the Service's `spec.trafficDistribution`.
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("PreferClose" | "PreferSameZone") => TrafficDistribution::PreferSameZone,
            Some("PreferSameNode") => TrafficDistribution::PreferSameNode,
            _ => TrafficDistribution::Any,
        }
    }
}

/// Where an endpoint set came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
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

/// The identity of an endpoint: its socket address. Small and `Copy`; it is the key of every table
/// and of the client's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EndpointKey(pub SocketAddr);

impl EndpointKey {
    /// The key of `ip:port`.
    pub fn new(ip: IpAddr, port: u16) -> Self {
        EndpointKey(SocketAddr::new(ip, port))
    }
}

/// `ip:port`, IPv6 in brackets: usable as a URI authority.
impl fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One provider instance.
///
/// Strings are shared, not copied: node, zone and hint names are interned per Service watch (a
/// thousand pods on ten nodes hold ten node names), and the published sets, the tables behind them
/// and the clients hold the same `Arc<Endpoint>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Endpoint {
    /// Address and port that speak Triple.
    pub addr: SocketAddr,
    /// Pod name (API mode: `targetRef.name`), the DNS target, or the configured host name.
    pub name: Option<Arc<str>>,
    /// Node the pod runs on (API mode).
    pub node: Option<Arc<str>>,
    /// Zone of the pod (API mode: the slice's `zone`).
    pub zone: Option<Arc<str>>,
    /// Zones this endpoint should serve (`hints.forZones` of the slice), when the Service is
    /// topology-aware; `None` when the endpoint carries no hints.
    pub zone_hints: Option<Arc<[Arc<str>]>>,
    /// Nodes this endpoint should serve (`hints.forNodes`, for `trafficDistribution:
    /// PreferSameNode`); `None` when the endpoint carries no such hints.
    pub node_hints: Option<Arc<[Arc<str>]>>,
    /// Relative share of traffic (SRV weight; 1 otherwise). Zero is treated as the smallest share.
    pub weight: u32,
    /// Conditions.
    pub conditions: Conditions,
    /// Which pod this is, hashed (API mode; 0 elsewhere): the slice table's identity of a pod across
    /// slices, kept here so the table needs no second map from address to pod.
    #[serde(skip)]
    pub(crate) member: u64,
}

impl Endpoint {
    /// A ready endpoint with no metadata and weight 1.
    pub fn new(addr: SocketAddr) -> Self {
        Endpoint {
            addr,
            name: None,
            node: None,
            zone: None,
            zone_hints: None,
            node_hints: None,
            weight: 1,
            conditions: Conditions::READY,
            member: 0,
        }
    }

    /// The endpoint's identity.
    pub fn key(&self) -> EndpointKey {
        EndpointKey(self.addr)
    }
}

/// Is the source confirmed current, or serving a last-known-good answer?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Freshness {
    /// The source is healthy; the set is current.
    Live,
    /// The source has been failing since this instant; the set is the last known good one.
    Stale {
        /// When the source stopped confirming the set.
        since: Instant,
    },
}

/// What changed between two versions of a set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delta {
    /// The version this delta applies to.
    pub from: u64,
    /// The version it produces.
    pub to: u64,
    /// Endpoints that were not in the set before.
    pub added: Vec<Arc<Endpoint>>,
    /// Endpoints whose data changed (conditions, zone, weight...); same key.
    pub updated: Vec<Arc<Endpoint>>,
    /// Endpoints that left the set.
    pub removed: Vec<EndpointKey>,
}

impl Delta {
    /// No endpoint changed (only the source or freshness may have).
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.updated.is_empty() && self.removed.is_empty()
    }

    /// Number of endpoints touched.
    pub fn len(&self) -> usize {
        self.added.len() + self.updated.len() + self.removed.len()
    }
}

/// Counts by condition, kept up to date incrementally.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Counts {
    /// Ready endpoints.
    pub ready: usize,
    /// Not ready, but serving while terminating (the fallback when nothing is ready).
    pub serving_terminating: usize,
    /// Everything else (not ready; or serving without terminating).
    pub other: usize,
}

impl Counts {
    fn add(&mut self, c: Conditions, sign: isize) {
        let slot = if c.ready {
            &mut self.ready
        } else if c.serving_while_terminating() {
            &mut self.serving_terminating
        } else {
            &mut self.other
        };
        *slot = slot.saturating_add_signed(sign);
    }
}

/// How many deltas a set remembers for late subscribers.
pub(crate) const DELTA_LOG: usize = 32;

/// A versioned, immutable snapshot of a service's endpoints. Cloning is O(1).
#[derive(Clone, Debug)]
pub struct EndpointSet {
    pub(crate) version: u64,
    pub(crate) source: Source,
    pub(crate) freshness: Freshness,
    pub(crate) published_at: SystemTime,
    pub(crate) pending: bool,
    pub(crate) traffic: TrafficDistribution,
    endpoints: imbl::OrdMap<EndpointKey, Arc<Endpoint>>,
    counts: Counts,
    log: imbl::Vector<Arc<Delta>>,
}

impl EndpointSet {
    /// The empty, not-yet-known set every watch starts from.
    pub fn pending(source: Source) -> Self {
        EndpointSet {
            version: 0,
            source,
            freshness: Freshness::Live,
            published_at: SystemTime::now(),
            pending: true,
            traffic: TrafficDistribution::Any,
            endpoints: imbl::OrdMap::new(),
            counts: Counts::default(),
            log: imbl::Vector::new(),
        }
    }

    /// A known set of `endpoints` (later duplicates of a key replace earlier ones), version 0.
    pub fn of(source: Source, endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        let mut set = EndpointSet { pending: false, ..EndpointSet::pending(source) };
        for e in endpoints {
            let e = Arc::new(e);
            if let Some(old) = set.endpoints.insert(e.key(), e.clone()) {
                set.counts.add(old.conditions, -1);
            }
            set.counts.add(e.conditions, 1);
        }
        set
    }

    /// Increases on every published change (endpoints, source or freshness). Versions come from
    /// one process-wide counter, so they also increase when a service is re-targeted.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Where the endpoints came from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// Live or stale.
    pub fn freshness(&self) -> Freshness {
        self.freshness
    }

    /// When this snapshot was published (wall clock, for display).
    pub fn published_at(&self) -> SystemTime {
        self.published_at
    }

    /// Since when the source has failed to confirm this set (`None`: live).
    pub fn stale_since(&self) -> Option<Instant> {
        match self.freshness {
            Freshness::Stale { since } => Some(since),
            Freshness::Live => None,
        }
    }

    /// True until the first answer from any source: "not known yet", as opposed to "known empty".
    pub fn is_pending(&self) -> bool {
        self.pending
    }

    /// How the Service asks traffic to be distributed (`spec.trafficDistribution`; API mode with
    /// Service access only).
    pub fn traffic(&self) -> TrafficDistribution {
        self.traffic
    }

    /// Number of endpoints (routable or not).
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// No endpoint at all.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Every endpoint, sorted by key; includes non-ready ones (see [`EndpointSet::routable`]).
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Endpoint>> + '_ {
        self.endpoints.values()
    }

    /// The endpoint with this key.
    pub fn get(&self, key: &EndpointKey) -> Option<&Arc<Endpoint>> {
        self.endpoints.get(key)
    }

    /// Counts by condition.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Whether `e` is a call target in this set: ready; or, when nothing is ready, serving while
    /// terminating (so a Service whose every pod is being replaced still answers).
    pub fn is_routable(&self, e: &Endpoint) -> bool {
        routable_in(self.counts, e.conditions)
    }

    /// The endpoints calls should go to (see [`EndpointSet::is_routable`]).
    pub fn routable(&self) -> impl Iterator<Item = &Arc<Endpoint>> + '_ {
        let counts = self.counts;
        self.endpoints.values().filter(move |e| routable_in(counts, e.conditions))
    }

    /// How many endpoints are routable.
    pub fn routable_len(&self) -> usize {
        if self.counts.ready > 0 { self.counts.ready } else { self.counts.serving_terminating }
    }

    /// How long the set has been stale (zero while live).
    pub fn stale_for(&self, now: Instant) -> Duration {
        match self.freshness {
            Freshness::Live => Duration::ZERO,
            Freshness::Stale { since } => now.saturating_duration_since(since),
        }
    }

    /// Whether the source is failing and this is a last-known-good set.
    pub fn is_stale(&self) -> bool {
        matches!(self.freshness, Freshness::Stale { .. })
    }

    /// The deltas that lead from version `from` to this set, oldest first; empty when `from` is
    /// this version; `None` when this set no longer remembers that far back (or never came from
    /// `from`): the subscriber must start over from this snapshot.
    pub fn deltas_since(&self, from: u64) -> Option<Vec<Arc<Delta>>> {
        if from == self.version {
            return Some(Vec::new());
        }
        let mut out = Vec::new();
        let mut want = self.version;
        for d in self.log.iter().rev() {
            if d.to != want {
                return None;
            }
            out.push(d.clone());
            if d.from == from {
                out.reverse();
                return Some(out);
            }
            want = d.from;
        }
        None
    }

    /// Applies `changes` (the final state of each touched key: `Some` to insert or replace, `None` to
    /// remove) as version `to`; returns the delta (empty when nothing actually changed, in which case
    /// the endpoints are untouched but the version still moves).
    pub(crate) fn apply(
        &mut self,
        to: u64,
        changes: impl IntoIterator<Item = (EndpointKey, Option<Arc<Endpoint>>)>,
    ) -> Delta {
        let mut writes = Vec::new();
        let delta = self.account(to, changes, |key, next| writes.push((key, next)));
        for (key, next) in writes {
            match next {
                Some(e) => {
                    self.endpoints.insert(key, e);
                }
                None => {
                    self.endpoints.remove(&key);
                }
            }
        }
        delta
    }

    /// Like [`EndpointSet::apply`], but the endpoints after the changes are `content`, which the
    /// caller keeps in step with them (a slice table's map, a followed set's): shared, not copied.
    pub(crate) fn adopt(
        &mut self,
        to: u64,
        changes: impl IntoIterator<Item = (EndpointKey, Option<Arc<Endpoint>>)>,
        content: &imbl::OrdMap<EndpointKey, Arc<Endpoint>>,
    ) -> Delta {
        let delta = self.account(to, changes, |_, _| {});
        self.endpoints = content.clone();
        debug_assert_eq!(self.endpoints.len(), self.counts.ready + self.counts.serving_terminating + self.counts.other);
        delta
    }

    /// The delta and counts of `changes` against the current endpoints; `write` applies each.
    fn account(
        &mut self,
        to: u64,
        changes: impl IntoIterator<Item = (EndpointKey, Option<Arc<Endpoint>>)>,
        mut write: impl FnMut(EndpointKey, Option<Arc<Endpoint>>),
    ) -> Delta {
        let mut delta = Delta { from: self.version, to, ..Delta::default() };
        for (key, next) in changes {
            match (self.endpoints.get(&key).cloned(), next) {
                (None, None) => {}
                (Some(old), None) => {
                    self.counts.add(old.conditions, -1);
                    delta.removed.push(key);
                    write(key, None);
                }
                (None, Some(new)) => {
                    self.counts.add(new.conditions, 1);
                    delta.added.push(new.clone());
                    write(key, Some(new));
                }
                (Some(old), Some(new)) => {
                    if Arc::ptr_eq(&old, &new) || *old == *new {
                        continue;
                    }
                    self.counts.add(old.conditions, -1);
                    self.counts.add(new.conditions, 1);
                    delta.updated.push(new.clone());
                    write(key, Some(new));
                }
            }
        }
        self.version = to;
        self.published_at = SystemTime::now();
        delta
    }

    /// The endpoints by key (shared structure).
    pub(crate) fn content(&self) -> &imbl::OrdMap<EndpointKey, Arc<Endpoint>> {
        &self.endpoints
    }

    /// The changes that turn this set's endpoints into `next`'s (O(n); for source switches and
    /// re-lists, never per event).
    pub(crate) fn changes_to<'a>(
        &'a self,
        next: impl IntoIterator<Item = &'a Arc<Endpoint>>,
    ) -> Vec<(EndpointKey, Option<Arc<Endpoint>>)> {
        if self.endpoints.is_empty() {
            // The first answer: everything is added, and no set of seen keys is needed (at 100,000
            // endpoints that set was a transient 4 MB the allocator kept as resident memory).
            return next.into_iter().map(|e| (e.key(), Some(e.clone()))).collect();
        }
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for e in next {
            let key = e.key();
            seen.insert(key);
            match self.endpoints.get(&key) {
                Some(old) if Arc::ptr_eq(old, e) || **old == **e => {}
                _ => out.push((key, Some(e.clone()))),
            }
        }
        out.extend(self.endpoints.keys().filter(|k| !seen.contains(*k)).map(|k| (*k, None)));
        out
    }

    /// Records `delta` in the log (bounded), so subscribers can catch up with it.
    pub(crate) fn remember(&mut self, delta: Delta) -> Arc<Delta> {
        let d = Arc::new(delta);
        self.log.push_back(d.clone());
        while self.log.len() > DELTA_LOG {
            self.log.pop_front();
        }
        d
    }
}

fn routable_in(counts: Counts, c: Conditions) -> bool {
    if counts.ready > 0 { c.ready } else { c.serving_while_terminating() }
}

/// What a subscriber applies to follow a set (see `ServiceWatch::updates`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Update {
    /// Replace everything with this set: the first answer, a re-targeted service, or a subscriber
    /// that fell further behind than the set remembers.
    Reset(EndpointSet),
    /// Apply `deltas` in order to the previous state; `set` is the result.
    Apply {
        /// The snapshot after the deltas.
        set: EndpointSet,
        /// Oldest first; may be empty when only the source or freshness changed.
        deltas: Vec<Arc<Delta>>,
    },
}

impl Update {
    /// The snapshot after this update.
    pub fn set(&self) -> &EndpointSet {
        match self {
            Update::Reset(s) | Update::Apply { set: s, .. } => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn ep(last: u8, ready: bool, serving: bool, terminating: bool) -> Arc<Endpoint> {
        let mut e = Endpoint::new(SocketAddr::new(IpAddr::from([10, 0, 0, last]), 50051));
        e.conditions = Conditions { ready, serving, terminating };
        Arc::new(e)
    }

    fn key(last: u8) -> EndpointKey {
        EndpointKey::new(IpAddr::from([10, 0, 0, last]), 50051)
    }

    fn set_of(eps: Vec<Arc<Endpoint>>) -> EndpointSet {
        let mut s = EndpointSet { pending: false, ..EndpointSet::pending(Source::Api) };
        let d = s.apply(1, eps.into_iter().map(|e| (e.key(), Some(e))));
        s.remember(d);
        s
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
        let s = set_of(vec![ep(1, true, true, false), ep(2, false, true, true)]);
        assert_eq!(s.routable().map(|e| e.key()).collect::<Vec<_>>(), [key(1)]);
        assert_eq!(s.routable_len(), 1);

        let s = set_of(vec![ep(2, false, true, true), ep(3, false, false, false)]);
        assert_eq!(s.routable().map(|e| e.key()).collect::<Vec<_>>(), [key(2)], "only serving+terminating");
        let s = set_of(vec![ep(3, false, false, false), ep(4, false, true, false)]);
        assert_eq!(s.routable().count(), 0, "serving but not terminating is not a fallback");
        assert_eq!(s.counts(), Counts { ready: 0, serving_terminating: 0, other: 2 });
    }

    #[test]
    fn apply_classifies_and_keeps_counts() {
        let mut s = set_of(vec![ep(1, true, true, false), ep(2, true, true, false)]);
        let d = s.apply(
            2,
            vec![
                (key(1), None),                           // removed
                (key(2), Some(ep(2, false, true, true))), // updated
                (key(3), Some(ep(3, true, true, false))), // added
                (key(9), None),                           // absent: nothing
            ],
        );
        assert_eq!((d.from, d.to), (1, 2));
        assert_eq!(d.removed, [key(1)]);
        assert_eq!(d.updated.iter().map(|e| e.key()).collect::<Vec<_>>(), [key(2)]);
        assert_eq!(d.added.iter().map(|e| e.key()).collect::<Vec<_>>(), [key(3)]);
        assert_eq!(s.counts(), Counts { ready: 1, serving_terminating: 1, other: 0 });
        // the same content again is no change
        let d = s.apply(3, vec![(key(3), Some(ep(3, true, true, false)))]);
        assert!(d.is_empty());
        assert_eq!(s.version, 3);
    }

    #[test]
    fn deltas_since_walks_the_log_or_says_start_over() {
        let mut s = set_of(vec![ep(1, true, true, false)]);
        for v in 2..=5u8 {
            let d = s.apply(u64::from(v), vec![(key(v), Some(ep(v, true, true, false)))]);
            s.remember(d);
        }
        let ds = s.deltas_since(3).expect("remembered");
        assert_eq!(ds.iter().map(|d| (d.from, d.to)).collect::<Vec<_>>(), [(3, 4), (4, 5)]);
        assert_eq!(s.deltas_since(5).expect("current").len(), 0);
        assert!(s.deltas_since(42).is_none(), "never came from 42");
        for v in 6..(6 + DELTA_LOG as u8) {
            let d = s.apply(u64::from(v), vec![(key(v), Some(ep(v, true, true, false)))]);
            s.remember(d);
        }
        assert!(s.deltas_since(3).is_none(), "fell behind further than the log");
    }

    #[test]
    fn clones_share_structure_and_diverge() {
        let a = set_of((1..=200).map(|i| ep(i, true, true, false)).collect());
        let mut b = a.clone();
        let d = b.apply(2, vec![(key(7), None)]);
        assert_eq!(d.removed.len(), 1);
        assert_eq!((a.len(), b.len()), (200, 199), "the original snapshot is untouched");
        let changes = a.changes_to(b.iter());
        assert_eq!(changes, vec![(key(7), None)]);
    }

    #[test]
    fn ipv6_keys_are_bracketed() {
        let k = EndpointKey::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 7);
        assert_eq!(k.to_string(), "[::1]:7");
    }

    #[test]
    fn service_key_display() {
        let r = ServiceRef::new("a.b.Greeter").with_group("g").with_version("1.0.0");
        assert_eq!(r.to_string(), "g/a.b.Greeter:1.0.0");
        assert_eq!(ServiceRef::new("a.b.Greeter").to_string(), "a.b.Greeter");
        assert_eq!(r.simple_name(), "Greeter");
    }

    /// Any snapshot still within the delta log, plus the deltas since it, is the newest set; one
    /// that fell behind the log gets `None` (a reset), never a wrong answer.
    mod delta_properties {
        use super::*;
        use proptest::prelude::*;

        /// `(key, conditions or removed)`.
        type Batch = Vec<(u8, Option<(bool, bool, bool)>)>;

        /// One batch: the final state of each touched key (a key appears once, as `apply` requires).
        fn changes() -> impl Strategy<Value = Batch> {
            prop::collection::btree_map(
                0u8..12,
                prop::option::weighted(0.7, (any::<bool>(), any::<bool>(), any::<bool>())),
                0..6,
            )
            .prop_map(|m| m.into_iter().collect())
        }

        fn replay(old: &EndpointSet, deltas: &[Arc<Delta>]) -> Vec<(EndpointKey, Conditions)> {
            let mut m: std::collections::BTreeMap<EndpointKey, Conditions> =
                old.iter().map(|e| (e.key(), e.conditions)).collect();
            for d in deltas {
                for k in &d.removed {
                    m.remove(k);
                }
                for e in d.added.iter().chain(&d.updated) {
                    m.insert(e.key(), e.conditions);
                }
            }
            m.into_iter().collect()
        }

        fn conditions() -> impl Strategy<Value = Conditions> {
            (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(ready, serving, terminating)| Conditions {
                ready,
                serving,
                terminating,
            })
        }

        proptest! {
            /// The routing policy over any mix of conditions: with a ready endpoint only ready ones
            /// are routable; with none, exactly those still serving while terminating; the counts
            /// kept incrementally agree.
            #[test]
            fn routable_follows_the_condition_policy(cs in prop::collection::vec(conditions(), 0..12)) {
                let eps: Vec<Endpoint> = cs.iter().enumerate().map(|(i, c)| {
                    let mut e = Endpoint::new(SocketAddr::new(IpAddr::from([10, 0, 1, i as u8]), 50051));
                    e.conditions = *c;
                    e
                }).collect();
                let set = EndpointSet::of(Source::Api, eps);
                let any_ready = cs.iter().any(|c| c.ready);
                let expected = cs.iter().filter(|c| if any_ready { c.ready } else { c.serving_while_terminating() }).count();
                prop_assert_eq!(set.routable_len(), expected);
                prop_assert_eq!(set.routable().count(), expected);
                prop_assert!(set.routable().all(|e| set.is_routable(e)));
            }

            /// The API's defaults: unset ready is ready, unset serving follows ready, unset
            /// terminating is false; a ready endpoint always ranks above one that is not.
            #[test]
            fn api_defaults_and_rank(r in any::<Option<bool>>(), s in any::<Option<bool>>(), t in any::<Option<bool>>()) {
                let c = Conditions::from_api(r, s, t);
                prop_assert_eq!(c.ready, r.unwrap_or(true));
                prop_assert_eq!(c.serving, s.unwrap_or(c.ready));
                prop_assert_eq!(c.terminating, t.unwrap_or(false));
                let (ready, not_ready) = (Conditions { ready: true, ..c }, Conditions { ready: false, ..c });
                prop_assert!(ready.rank() > not_ready.rank(), "ready ranks above not ready");
            }

            #[test]
            fn old_snapshot_plus_deltas_is_the_newest(steps in prop::collection::vec(changes(), 1..(DELTA_LOG + 12))) {
                let mut set = EndpointSet { pending: false, ..EndpointSet::pending(Source::Api) };
                let mut snapshots = vec![set.clone()];
                for (i, step) in steps.iter().enumerate() {
                    let changes = step.iter().map(|(k, c)| {
                        (key(*k), c.map(|(r, s, t)| ep(*k, r, s, t)))
                    });
                    let d = set.apply(i as u64 + 1, changes);
                    set.remember(d);
                    snapshots.push(set.clone());
                }
                let newest: Vec<(EndpointKey, Conditions)> = set.iter().map(|e| (e.key(), e.conditions)).collect();
                for old in &snapshots {
                    match set.deltas_since(old.version) {
                        Some(deltas) => prop_assert_eq!(replay(old, &deltas), newest.clone()),
                        None => prop_assert!(set.version - old.version > DELTA_LOG as u64, "only a snapshot beyond the log resets"),
                    }
                }
            }
        }
    }
}
