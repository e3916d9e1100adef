//! EndpointSlices → one endpoint table, incrementally.
//!
//! A Service has many slices (≤ 100 endpoints each by default, one set per address family on
//! dual-stack clusters), and during a controller update the same pod may sit in two slices. The
//! table is kept in two levels so that one slice event costs O(that slice + what changed), never
//! O(every endpoint of the Service):
//!
//! 1. **per pod** (`targetRef`, else the address): the contributions of every slice that lists it;
//!    the one chosen is of the preferred address family ([`FamilyPolicy`]), then the best
//!    conditions (ready > serving > neither), then the smallest slice name. A dual-stack pod is one
//!    endpoint, not two.
//! 2. **per address:port**: the pods whose chosen endpoint has that key (normally one); the best
//!    conditions win.
//!
//! Changes accumulate until [`SliceTable::commit`], which returns the final state of every touched
//! key: a re-list applies many slices and commits once (an atomic swap, no half set is published).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::model::{Conditions, Endpoint, EndpointKey, PortSpec};

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// Which address of a dual-stack pod is used (`DISCOVERY_IP_FAMILY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyPolicy {
    /// Only this family; pods without an address of it are skipped.
    Only(Family),
    /// This family when the pod has it, else the other.
    Prefer(Family),
}

/// Why an endpoint or a slice was left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Skip {
    /// `addressType: FQDN` (or unknown): nothing to connect to by IP.
    AddressType,
    /// An address that is not an IP of the slice's family.
    InvalidAddress,
    /// A loopback address (the API server refuses them; see `DISCOVERY_ALLOW_LOOPBACK`).
    Loopback,
    /// An endpoint with no address.
    NoAddress,
    /// The slice has no port of the wanted name (or no ports at all).
    NoPort,
    /// A port number outside 1..=65535.
    InvalidPort,
}

impl Skip {
    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::AddressType => "address_type",
            Skip::InvalidAddress => "invalid_address",
            Skip::Loopback => "loopback",
            Skip::NoAddress => "no_address",
            Skip::NoPort => "no_port",
            Skip::InvalidPort => "invalid_port",
        }
    }
}

/// One endpoint of a slice, independent of which port is wanted.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SliceEndpoint {
    pub ip: IpAddr,
    /// The pod's identity across slices: `targetRef` uid, else its kind/namespace/name, else the IP.
    pub member: Arc<str>,
    pub name: Option<String>,
    pub node: Option<String>,
    pub zone: Option<String>,
    pub zone_hints: Option<Vec<String>>,
    pub node_hints: Option<Vec<String>>,
    pub conditions: Conditions,
}

/// A slice reduced to what discovery uses.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ParsedSlice {
    pub name: Arc<str>,
    /// `None` for FQDN (or unknown) address types: contributes nothing.
    pub family: Option<Family>,
    /// `(name, number)`; unnamed ports have an empty name, missing numbers are `None`.
    pub ports: Vec<(String, Option<i32>)>,
    pub endpoints: Vec<SliceEndpoint>,
    /// What was left out while parsing, with one example each.
    pub skipped: Vec<(Skip, usize, String)>,
}

fn note(skipped: &mut Vec<(Skip, usize, String)>, why: Skip, example: &str) {
    match skipped.iter_mut().find(|(s, _, _)| *s == why) {
        Some(entry) => entry.1 += 1,
        None => skipped.push((why, 1, example.to_owned())),
    }
}

impl ParsedSlice {
    /// Parses a slice; never fails: what cannot be used is counted in `skipped`.
    pub(crate) fn parse(slice: &EndpointSlice, allow_loopback: bool) -> Self {
        let name: Arc<str> = Arc::from(slice.metadata.name.as_deref().unwrap_or(""));
        let mut skipped = Vec::new();
        let family = match slice.address_type.as_str() {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            other => {
                note(&mut skipped, Skip::AddressType, other);
                None
            }
        };
        let ports =
            slice.ports.iter().flatten().map(|p| (p.name.clone().unwrap_or_default(), p.port)).collect::<Vec<_>>();
        let mut endpoints = Vec::new();
        if let Some(family) = family {
            for ep in &slice.endpoints {
                // The API calls the further addresses of one endpoint fungible: the first is used.
                let Some(text) = ep.addresses.first() else {
                    note(&mut skipped, Skip::NoAddress, "");
                    continue;
                };
                let ip = match text.parse::<IpAddr>() {
                    Ok(ip) if family_of(ip) == family => ip,
                    _ => {
                        note(&mut skipped, Skip::InvalidAddress, text);
                        continue;
                    }
                };
                if ip.is_loopback() && !allow_loopback {
                    note(&mut skipped, Skip::Loopback, text);
                    continue;
                }
                let member: Arc<str> = match &ep.target_ref {
                    Some(r) => match (&r.uid, &r.name) {
                        (Some(uid), _) if !uid.is_empty() => Arc::from(uid.as_str()),
                        (_, Some(n)) => Arc::from(format!(
                            "{}/{}/{}",
                            r.kind.as_deref().unwrap_or(""),
                            r.namespace.as_deref().unwrap_or(""),
                            n
                        )),
                        _ => Arc::from(text.as_str()),
                    },
                    None => Arc::from(text.as_str()),
                };
                let c = ep.conditions.as_ref();
                endpoints.push(SliceEndpoint {
                    ip,
                    member,
                    name: ep.target_ref.as_ref().and_then(|r| r.name.clone()).or_else(|| ep.hostname.clone()),
                    node: ep.node_name.clone(),
                    zone: ep.zone.clone(),
                    zone_hints: ep
                        .hints
                        .as_ref()
                        .and_then(|h| h.for_zones.as_ref())
                        .map(|z| z.iter().map(|z| z.name.clone()).collect()),
                    node_hints: ep
                        .hints
                        .as_ref()
                        .and_then(|h| h.for_nodes.as_ref())
                        .map(|n| n.iter().map(|n| n.name.clone()).collect()),
                    conditions: Conditions::from_api(
                        c.and_then(|c| c.ready),
                        c.and_then(|c| c.serving),
                        c.and_then(|c| c.terminating),
                    ),
                });
            }
        }
        ParsedSlice { name, family, ports, endpoints, skipped }
    }

    /// The port number of `spec` in this slice. A named port is looked up by name (the slice
    /// carries the Service port's name); a slice with a single unnamed port serves any name.
    pub(crate) fn port(&self, spec: &PortSpec) -> Result<u16, Skip> {
        let number = match spec {
            PortSpec::Number(n) => return Ok(*n),
            PortSpec::Name(name) => crate::model::named_port(&self.ports, name).ok_or(Skip::NoPort)?,
        };
        number.and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0).ok_or(Skip::InvalidPort)
    }
}

fn family_of(ip: IpAddr) -> Family {
    if ip.is_ipv4() { Family::V4 } else { Family::V6 }
}

type Contribution = (Arc<str>, Arc<Endpoint>, Family);
/// `(member, endpoint)`: a pod whose chosen endpoint has a given key.
type Claim = (Arc<str>, Arc<Endpoint>);

#[derive(Debug, Default)]
struct MemberEntry {
    /// `(slice, endpoint, family)` for every slice listing this pod.
    from: Vec<Contribution>,
    chosen: Option<Arc<Endpoint>>,
}

/// The merged table of one Service for one wanted port.
#[derive(Debug)]
pub(crate) struct SliceTable {
    port: PortSpec,
    family: FamilyPolicy,
    /// Per slice: `(member, endpoint, family)` it contributes.
    slices: HashMap<Arc<str>, Vec<Contribution>>,
    members: HashMap<Arc<str>, MemberEntry>,
    /// Per key: `(member, endpoint)` of every pod whose chosen endpoint has this key.
    keys: HashMap<EndpointKey, Vec<Claim>>,
    /// Keys touched since the last commit.
    touched: HashSet<EndpointKey>,
}

impl SliceTable {
    pub(crate) fn new(port: PortSpec, family: FamilyPolicy) -> Self {
        SliceTable {
            port,
            family,
            slices: HashMap::new(),
            members: HashMap::new(),
            keys: HashMap::new(),
            touched: HashSet::new(),
        }
    }

    /// Number of slices held.
    #[cfg(test)]
    pub(crate) fn slices(&self) -> usize {
        self.slices.len()
    }

    /// Replaces what `slice` contributes. Returns why the slice contributes nothing, if so.
    pub(crate) fn upsert(&mut self, slice: &ParsedSlice) -> Option<Skip> {
        let (next, problem) = match (slice.family, slice.port(&self.port)) {
            (None, _) => (Vec::new(), Some(Skip::AddressType)),
            (Some(_), Err(why)) => (Vec::new(), Some(why)),
            (Some(family), Ok(port)) => (contributions(slice, family, port), None),
        };
        let old = self.slices.remove(&slice.name).unwrap_or_default();
        let mut kept: HashMap<&str, &Arc<Endpoint>> = HashMap::with_capacity(next.len());
        for (m, e, _) in &next {
            kept.insert(m, e);
        }
        for (member, endpoint, _) in &old {
            match kept.get(&**member) {
                Some(e) if **e == *endpoint => {}
                _ => self.withdraw(&slice.name, member),
            }
        }
        let previous: HashMap<&str, &Arc<Endpoint>> = old.iter().map(|(m, e, _)| (&**m, e)).collect();
        for (member, endpoint, family) in &next {
            if previous.get(&**member).is_some_and(|e| **e == *endpoint) {
                continue;
            }
            self.contribute(slice.name.clone(), member.clone(), endpoint.clone(), *family);
        }
        self.slices.insert(slice.name.clone(), next);
        problem
    }

    /// Removes every contribution of the slice `name`.
    pub(crate) fn delete(&mut self, name: &str) {
        if let Some(old) = self.slices.remove(name) {
            for (member, _, _) in &old {
                self.withdraw(name, member);
            }
        }
    }

    /// Deletes every slice not in `names` (after a re-list).
    pub(crate) fn retain(&mut self, names: &HashSet<Arc<str>>) {
        let gone: Vec<Arc<str>> = self.slices.keys().filter(|n| !names.contains(*n)).cloned().collect();
        for name in gone {
            self.delete(&name);
        }
    }

    /// The final state of every key touched since the last commit (`None`: removed).
    pub(crate) fn commit(&mut self) -> Vec<(EndpointKey, Option<Arc<Endpoint>>)> {
        let touched = std::mem::take(&mut self.touched);
        touched.into_iter().map(|k| (k, self.keys.get(&k).and_then(|from| best_of_key(from)))).collect()
    }

    fn contribute(&mut self, slice: Arc<str>, member: Arc<str>, endpoint: Arc<Endpoint>, family: Family) {
        let entry = self.members.entry(member.clone()).or_default();
        entry.from.retain(|(s, _, _)| *s != slice);
        entry.from.push((slice, endpoint, family));
        self.rechoose(&member);
    }

    fn withdraw(&mut self, slice: &str, member: &Arc<str>) {
        if let Some(entry) = self.members.get_mut(member) {
            entry.from.retain(|(s, _, _)| &**s != slice);
            self.rechoose(member);
        }
    }

    /// Recomputes a pod's chosen endpoint and moves it between keys when it changed.
    fn rechoose(&mut self, member: &Arc<str>) {
        let Some(entry) = self.members.get_mut(member) else { return };
        let next = choose(&entry.from, self.family);
        let same = match (&entry.chosen, &next) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if same {
            if entry.from.is_empty() {
                self.members.remove(member);
            }
            return;
        }
        let previous = std::mem::replace(&mut entry.chosen, next.clone());
        if entry.from.is_empty() {
            self.members.remove(member);
        }
        if let Some(old) = previous {
            let key = old.key();
            if let Some(from) = self.keys.get_mut(&key) {
                from.retain(|(m, _)| m != member);
                if from.is_empty() {
                    self.keys.remove(&key);
                }
            }
            self.touched.insert(key);
        }
        if let Some(new) = next {
            let key = new.key();
            self.keys.entry(key).or_default().push((member.clone(), new));
            self.touched.insert(key);
        }
    }
}

/// What a parsed slice contributes for `port`: one endpoint per member (a pod listed twice in one
/// slice keeps its best conditions).
fn contributions(slice: &ParsedSlice, family: Family, port: u16) -> Vec<Contribution> {
    let mut out: Vec<Contribution> = Vec::with_capacity(slice.endpoints.len());
    let mut index: HashMap<Arc<str>, usize> = HashMap::with_capacity(slice.endpoints.len());
    for e in &slice.endpoints {
        let endpoint = Arc::new(Endpoint {
            addr: SocketAddr::new(e.ip, port),
            name: e.name.clone(),
            node: e.node.clone(),
            zone: e.zone.clone(),
            zone_hints: e.zone_hints.clone(),
            node_hints: e.node_hints.clone(),
            weight: 1,
            conditions: e.conditions,
        });
        match index.get(&e.member) {
            Some(&i) if out[i].1.conditions.rank() >= endpoint.conditions.rank() => {}
            Some(&i) => out[i].1 = endpoint,
            None => {
                index.insert(e.member.clone(), out.len());
                out.push((e.member.clone(), endpoint, family));
            }
        }
    }
    out
}

fn choose(from: &[Contribution], policy: FamilyPolicy) -> Option<Arc<Endpoint>> {
    let allowed = |f: Family| match policy {
        FamilyPolicy::Only(only) => f == only,
        FamilyPolicy::Prefer(_) => true,
    };
    let preferred = |f: Family| match policy {
        FamilyPolicy::Only(_) => true,
        FamilyPolicy::Prefer(p) => f == p,
    };
    from.iter()
        .filter(|(_, _, f)| allowed(*f))
        .max_by(|(sa, a, fa), (sb, b, fb)| {
            preferred(*fa).cmp(&preferred(*fb)).then(a.conditions.rank().cmp(&b.conditions.rank())).then(sb.cmp(sa)) // the smaller slice name wins a tie
        })
        .map(|(_, e, _)| e.clone())
}

fn best_of_key(from: &[Claim]) -> Option<Arc<Endpoint>> {
    from.iter()
        .max_by(|(ma, a), (mb, b)| a.conditions.rank().cmp(&b.conditions.rank()).then(mb.cmp(ma)))
        .map(|(_, e)| e.clone())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::EndpointSet;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::{Endpoint as ApiEndpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    pub(crate) fn api_ep(
        ip: &str,
        pod: &str,
        ready: Option<bool>,
        serving: Option<bool>,
        term: Option<bool>,
    ) -> ApiEndpoint {
        ApiEndpoint {
            addresses: vec![ip.to_owned()],
            conditions: Some(EndpointConditions { ready, serving, terminating: term }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some("demo".into()),
                name: Some(pod.to_owned()),
                ..Default::default()
            }),
            zone: Some("zone-a".into()),
            ..Default::default()
        }
    }

    pub(crate) fn slice(name: &str, family: &str, ports: &[(&str, i32)], endpoints: Vec<ApiEndpoint>) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta { name: Some(name.to_owned()), ..Default::default() },
            address_type: family.to_owned(),
            endpoints,
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort {
                        name: Some((*n).to_owned()),
                        port: Some(*p),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    fn tri() -> PortSpec {
        PortSpec::Name("tri".into())
    }

    /// A table and the set its commits produce.
    struct Fixture {
        table: SliceTable,
        set: EndpointSet,
        v: u64,
    }

    impl Fixture {
        fn new(port: PortSpec, family: FamilyPolicy) -> Self {
            Fixture { table: SliceTable::new(port, family), set: EndpointSet::pending(crate::Source::Api), v: 0 }
        }
        fn upsert(&mut self, s: &EndpointSlice) -> crate::model::Delta {
            self.table.upsert(&ParsedSlice::parse(s, false));
            self.commit()
        }
        fn delete(&mut self, name: &str) -> crate::model::Delta {
            self.table.delete(name);
            self.commit()
        }
        fn commit(&mut self) -> crate::model::Delta {
            self.v += 1;
            self.set.apply(self.v, self.table.commit())
        }
        fn keys(&self) -> Vec<String> {
            self.set.iter().map(|e| e.key().to_string()).collect()
        }
    }

    #[test]
    fn merges_all_slices_beyond_one_hundred() {
        let mut f = Fixture::new(tri(), FamilyPolicy::Prefer(Family::V4));
        for s in 0..3 {
            let eps = (0..100)
                .map(|i| api_ep(&format!("10.1.{s}.{i}"), &format!("p{s}-{i}"), Some(true), None, None))
                .collect();
            f.upsert(&slice(&format!("s{s}"), "IPv4", &[("tri", 50051)], eps));
        }
        assert_eq!(f.set.len(), 300);
        assert!(f.set.iter().all(|e| e.addr.port() == 50051 && e.conditions.ready));
    }

    #[test]
    fn one_event_touches_only_its_slice() {
        let mut f = Fixture::new(tri(), FamilyPolicy::Prefer(Family::V4));
        for s in 0..10 {
            let eps = (0..100)
                .map(|i| api_ep(&format!("10.2.{s}.{i}"), &format!("p{s}-{i}"), Some(true), None, None))
                .collect();
            f.upsert(&slice(&format!("s{s}"), "IPv4", &[("tri", 50051)], eps));
        }
        // slice s3 rewritten with one pod not ready and one gone
        let mut eps: Vec<ApiEndpoint> =
            (0..99).map(|i| api_ep(&format!("10.2.3.{i}"), &format!("p3-{i}"), Some(true), None, None)).collect();
        eps[5] = api_ep("10.2.3.5", "p3-5", Some(false), Some(false), Some(false));
        let d = f.upsert(&slice("s3", "IPv4", &[("tri", 50051)], eps));
        assert_eq!(d.removed.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.2.3.99:50051"]);
        assert_eq!(d.updated.len(), 1);
        assert!(!d.updated[0].conditions.ready);
        assert!(d.added.is_empty());
        assert_eq!(f.set.len(), 999);
        // the same slice again: no change at all
        let eps: Vec<ApiEndpoint> = (0..99)
            .map(|i| {
                let ready = if i == 5 { Some(false) } else { Some(true) };
                let serving = if i == 5 { Some(false) } else { None };
                api_ep(
                    &format!("10.2.3.{i}"),
                    &format!("p3-{i}"),
                    ready,
                    serving,
                    if i == 5 { Some(false) } else { None },
                )
            })
            .collect();
        assert!(f.upsert(&slice("s3", "IPv4", &[("tri", 50051)], eps)).is_empty());
    }

    #[test]
    fn dual_stack_pod_is_one_endpoint_of_the_chosen_family() {
        let v4 = slice("a-v4", "IPv4", &[("tri", 50051)], vec![api_ep("10.0.0.1", "pod-1", Some(true), None, None)]);
        let v6 = slice("a-v6", "IPv6", &[("tri", 50051)], vec![api_ep("fd00::1", "pod-1", Some(true), None, None)]);
        let only6 = slice("b-v6", "IPv6", &[("tri", 50051)], vec![api_ep("fd00::2", "pod-2", Some(true), None, None)]);
        let mut f = Fixture::new(tri(), FamilyPolicy::Prefer(Family::V4));
        f.upsert(&v4);
        f.upsert(&v6);
        f.upsert(&only6);
        assert_eq!(f.keys(), ["10.0.0.1:50051", "[fd00::2]:50051"], "one per pod; v4 preferred, v6-only pod kept");
        let mut f = Fixture::new(tri(), FamilyPolicy::Prefer(Family::V6));
        f.upsert(&v4);
        f.upsert(&v6);
        assert_eq!(f.keys(), ["[fd00::1]:50051"]);
        // the v6 slice goes: the pod falls back to its v4 address in one delta
        let d = f.delete("a-v6");
        assert_eq!((d.added.len(), d.removed.len()), (1, 1));
        assert_eq!(f.keys(), ["10.0.0.1:50051"]);
        let mut f = Fixture::new(tri(), FamilyPolicy::Only(Family::V4));
        f.upsert(&v6);
        f.upsert(&only6);
        assert!(f.set.is_empty(), "ipv4 only: IPv6 addresses are not used");
    }

    #[test]
    fn the_same_pod_in_two_slices_keeps_the_best_conditions() {
        let mut f = Fixture::new(tri(), FamilyPolicy::Prefer(Family::V4));
        f.upsert(&slice("old", "IPv4", &[("tri", 1)], vec![api_ep("10.0.0.2", "p", Some(false), Some(false), None)]));
        f.upsert(&slice("new", "IPv4", &[("tri", 1)], vec![api_ep("10.0.0.2", "p", Some(true), None, None)]));
        assert_eq!(f.set.len(), 1);
        assert!(f.set.iter().all(|e| e.conditions.ready));
        // the controller removes it from "new" before "old": the endpoint stays, now not ready
        let d = f.upsert(&slice("new", "IPv4", &[("tri", 1)], vec![]));
        assert_eq!(d.updated.len(), 1);
        assert!(!f.set.iter().next().expect("kept").conditions.ready);
        assert_eq!(f.delete("old").removed.len(), 1);
        assert!(f.set.is_empty());
    }

    #[test]
    fn same_address_listed_for_two_pods_is_one_endpoint() {
        let mut f = Fixture::new(tri(), FamilyPolicy::Prefer(Family::V4));
        f.upsert(&slice("a", "IPv4", &[("tri", 1)], vec![api_ep("10.0.0.3", "p1", Some(false), Some(false), None)]));
        f.upsert(&slice("b", "IPv4", &[("tri", 1)], vec![api_ep("10.0.0.3", "p2", Some(true), None, None)]));
        assert_eq!(f.set.len(), 1);
        assert!(f.set.iter().all(|e| e.conditions.ready));
        f.delete("b");
        assert_eq!(f.set.len(), 1, "the other pod still claims the address");
        assert!(!f.set.iter().next().expect("kept").conditions.ready);
    }

    #[test]
    fn ports_resolve_per_slice_by_name_or_number() {
        let a = slice("a", "IPv4", &[("tri", 50051)], vec![api_ep("10.0.0.1", "a", None, None, None)]);
        let b = slice("b", "IPv4", &[("tri", 6000)], vec![api_ep("10.0.0.2", "b", None, None, None)]);
        let other = slice("c", "IPv4", &[("metrics", 9090)], vec![api_ep("10.0.0.3", "c", None, None, None)]);
        let mut noports = slice("d", "IPv4", &[], vec![api_ep("10.0.0.4", "d", None, None, None)]);
        noports.ports = None;
        let unnamed = slice("e", "IPv4", &[("", 7070)], vec![api_ep("10.0.0.5", "e", None, None, None)]);
        let mut f = Fixture::new(tri(), FamilyPolicy::Prefer(Family::V4));
        for s in [&a, &b, &other, &noports, &unnamed] {
            f.upsert(s);
        }
        assert_eq!(f.keys(), ["10.0.0.1:50051", "10.0.0.2:6000", "10.0.0.5:7070"]);
        assert_eq!(f.table.upsert(&ParsedSlice::parse(&other, false)), Some(Skip::NoPort));
        let mut f = Fixture::new(PortSpec::Number(7000), FamilyPolicy::Prefer(Family::V4));
        f.upsert(&a);
        f.upsert(&noports);
        assert_eq!(f.set.len(), 2, "a numeric port needs no named port in the slice");
    }

    #[test]
    fn parsing_skips_garbage_and_counts_it() {
        let mut s = slice(
            "x",
            "IPv4",
            &[("tri", 1)],
            vec![
                api_ep("10.0.0.1", "ok", None, None, None),
                api_ep("not-an-ip", "bad", None, None, None),
                api_ep("fd00::1", "wrong-family", None, None, None),
                api_ep("127.0.0.1", "lo", None, None, None),
                ApiEndpoint { addresses: vec![], ..Default::default() },
            ],
        );
        let p = ParsedSlice::parse(&s, false);
        assert_eq!(p.endpoints.len(), 1);
        let mut skipped: Vec<(&str, usize)> = p.skipped.iter().map(|(k, n, _)| (k.as_str(), *n)).collect();
        skipped.sort();
        assert_eq!(skipped, [("invalid_address", 2), ("loopback", 1), ("no_address", 1)]);
        assert_eq!(ParsedSlice::parse(&s, true).endpoints.len(), 2, "loopback allowed for local runs");
        s.address_type = "FQDN".into();
        let p = ParsedSlice::parse(&s, false);
        assert!(p.endpoints.is_empty());
        assert_eq!(p.skipped[0].0, Skip::AddressType);
    }

    #[test]
    fn retain_after_relist_removes_missing_slices_in_one_commit() {
        let mut f = Fixture::new(tri(), FamilyPolicy::Prefer(Family::V4));
        f.upsert(&slice("a", "IPv4", &[("tri", 1)], vec![api_ep("10.0.0.1", "a", None, None, None)]));
        f.upsert(&slice("b", "IPv4", &[("tri", 1)], vec![api_ep("10.0.0.2", "b", None, None, None)]));
        // re-list: only "b" (changed) and "c" exist now
        let b = slice("b", "IPv4", &[("tri", 1)], vec![api_ep("10.0.0.2", "b", Some(false), Some(true), Some(true))]);
        let c = slice("c", "IPv4", &[("tri", 1)], vec![api_ep("10.0.0.3", "c", None, None, None)]);
        f.table.upsert(&ParsedSlice::parse(&b, false));
        f.table.upsert(&ParsedSlice::parse(&c, false));
        f.table.retain(&["b", "c"].into_iter().map(Arc::from).collect());
        let d = f.commit();
        assert_eq!((d.added.len(), d.updated.len(), d.removed.len()), (1, 1, 1));
        assert_eq!(f.table.slices(), 2);
    }

    #[test]
    fn hints_and_zone_are_carried() {
        let json = r#"{"metadata":{"name":"greeter-v1-m52pr"},"addressType":"IPv4",
          "endpoints":[{"addresses":["10.244.1.1"],"conditions":{"ready":true,"serving":true,"terminating":false},
            "hints":{"forZones":[{"name":"zone-a"}]},
            "targetRef":{"kind":"Pod","namespace":"demo","name":"greeter-v1-1","uid":"e742f7de"},"nodeName":"node-a","zone":"zone-a"}],
          "ports":[{"name":"tri","protocol":"TCP","port":50051}]}"#;
        let s: EndpointSlice = serde_json::from_str(json).expect("valid slice");
        let mut f = Fixture::new(tri(), FamilyPolicy::Prefer(Family::V4));
        f.upsert(&s);
        let e = f.set.iter().next().expect("one");
        assert_eq!(e.name.as_deref(), Some("greeter-v1-1"));
        assert_eq!((e.zone.as_deref(), e.node.as_deref()), (Some("zone-a"), Some("node-a")));
        assert_eq!(e.zone_hints.as_deref(), Some(&["zone-a".to_owned()][..]));
    }

    /// The incremental table (one slice at a time, deltas applied to a set) always equals a table
    /// built at once from the slices as they finally are: whatever the order of upserts and
    /// deletes, pods moving between slices, dual-stack pods, conditions and ports changing.
    mod merge_properties {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            Upsert { slice: usize, v6: bool, port: bool, eps: Vec<(usize, usize, bool, bool, bool)> },
            Delete(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            let ep = (0usize..6, 0usize..4, any::<bool>(), any::<bool>(), any::<bool>());
            prop_oneof![
                4 => (0usize..4, any::<bool>(), prop::bool::weighted(0.9), prop::collection::vec(ep, 0..5))
                    .prop_map(|(slice, v6, port, eps)| Op::Upsert { slice, v6, port, eps }),
                1 => (0usize..4).prop_map(Op::Delete),
            ]
        }

        /// Pod `pod` has address number `addr` in its family; conditions as given.
        fn build(n: usize, v6: bool, port: bool, eps: &[(usize, usize, bool, bool, bool)]) -> EndpointSlice {
            let endpoints = eps
                .iter()
                .map(|(pod, addr, r, s, t)| {
                    let ip = if v6 { format!("fd00::{pod}:{addr}") } else { format!("10.9.{pod}.{addr}") };
                    api_ep(&ip, &format!("pod-{pod}"), Some(*r), Some(*s), Some(*t))
                })
                .collect();
            let ports: &[(&str, i32)] = if port { &[("tri", 50051)] } else { &[("other", 9)] };
            slice(&format!("s{n}"), if v6 { "IPv6" } else { "IPv4" }, ports, endpoints)
        }

        fn snapshot(set: &EndpointSet) -> Vec<(String, Conditions)> {
            set.iter().map(|e| (e.key().to_string(), e.conditions)).collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
            #[test]
            fn incremental_equals_full_remerge(ops in prop::collection::vec(op(), 1..40), v6_first in any::<bool>()) {
                let family = FamilyPolicy::Prefer(if v6_first { Family::V6 } else { Family::V4 });
                let mut live = Fixture::new(tri(), family);
                let mut last: HashMap<usize, EndpointSlice> = HashMap::new();
                for op in &ops {
                    match op {
                        Op::Upsert { slice, v6, port, eps } => {
                            let s = build(*slice, *v6, *port, eps);
                            live.upsert(&s);
                            last.insert(*slice, s);
                        }
                        Op::Delete(slice) => {
                            live.delete(&format!("s{slice}"));
                            last.remove(slice);
                        }
                    }
                }
                let mut fresh = Fixture::new(tri(), family);
                let mut order: Vec<_> = last.keys().copied().collect();
                order.sort_unstable();
                for k in order {
                    fresh.upsert(&last[&k]);
                }
                prop_assert_eq!(snapshot(&live.set), snapshot(&fresh.set));
                // The counts kept incrementally match a recount.
                let recount = EndpointSet::of(crate::Source::Api, live.set.iter().map(|e| (**e).clone())).counts();
                prop_assert_eq!(live.set.counts(), recount);
            }
        }
    }
}
