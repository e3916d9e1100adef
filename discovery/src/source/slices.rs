//! EndpointSlices → one endpoint table, incrementally, each endpoint held once.
//!
//! A Service has many slices (≤ 100 endpoints each by default, one set per address family on
//! dual-stack clusters), and during a controller update the same pod may sit in two slices. The
//! table is kept in two levels so that one slice event costs O(that slice + what changed), never
//! O(every endpoint of the Service):
//!
//! 1. **per pod** (`targetRef`, else the address; hashed to a `u64`): the contribution of every
//!    slice that lists it; the one chosen is of the preferred address family ([`FamilyPolicy`]),
//!    then the best conditions (ready > serving > neither), then the smaller address. A dual-stack
//!    pod is one endpoint, not two.
//! 2. **per address:port**: the chosen endpoints, in the persistent map the published set shares
//!    (cloning it is O(1)); the rare address claimed by two pods is kept aside with every claim.
//!
//! Memory: an endpoint is one `Arc<Endpoint>` (its node, zone and hint names interned), one entry
//! of the per-pod map and one of the persistent map; a slice keeps only the list of its pods.
//! Changes accumulate until [`SliceTable::commit`], which returns the final state of every touched
//! key: a re-list applies many slices and commits once (an atomic swap, no half set is published).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use crate::model::{Conditions, Endpoint, EndpointKey, PortSpec};
use crate::wire;

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

/// Interns the strings many endpoints share: node and zone names, hint lists.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    strs: HashSet<Arc<str>>,
    lists: HashSet<Arc<[Arc<str>]>>,
}

impl Interner {
    pub(crate) fn str(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strs.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.strs.insert(a.clone());
        a
    }

    fn list(&mut self, names: &[wire::Named]) -> Arc<[Arc<str>]> {
        let v: Vec<Arc<str>> = names.iter().map(|n| self.str(&n.name)).collect();
        if let Some(a) = self.lists.get(&v[..]) {
            return a.clone();
        }
        let a: Arc<[Arc<str>]> = Arc::from(v);
        self.lists.insert(a.clone());
        a
    }

    /// Forgets what nothing else holds any more (nodes and zones gone from the cluster).
    pub(crate) fn prune(&mut self) {
        self.lists.retain(|a| Arc::strong_count(a) > 1);
        self.strs.retain(|a| Arc::strong_count(a) > 1);
    }
}

/// The pod identity of an endpoint, hashed: `targetRef` uid, else its kind/namespace/name, else
/// the address. One hasher per process (random keys), so every table agrees; two pods collide with
/// probability 2^-64 per pair.
fn member_of(ep: &wire::SliceEndpoint, address: &str) -> u64 {
    static HASHER: OnceLock<RandomState> = OnceLock::new();
    let h = HASHER.get_or_init(RandomState::new);
    match &ep.target_ref {
        Some(r) => match (&r.uid, &r.name) {
            (Some(uid), _) if !uid.is_empty() => h.hash_one(("uid", uid)),
            (_, Some(n)) => h.hash_one(("ref", r.kind.as_deref(), r.namespace.as_deref(), n)),
            _ => h.hash_one(("ip", address)),
        },
        None => h.hash_one(("ip", address)),
    }
}

/// A slice reduced to what discovery uses; endpoints are ready to be published but for the port,
/// which each view resolves.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ParsedSlice {
    pub name: Arc<str>,
    /// `None` for FQDN (or unknown) address types: contributes nothing.
    pub family: Option<Family>,
    /// `(name, number)`; unnamed ports have an empty name, missing numbers are `None`.
    pub ports: Vec<(String, Option<i32>)>,
    /// Port 0 in each address, set by the view.
    pub endpoints: Vec<Endpoint>,
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
    pub(crate) fn parse(slice: &wire::Slice, allow_loopback: bool, interner: &mut Interner) -> Self {
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
            for ep in slice.endpoints.iter().flatten() {
                if let Some(e) = parse_endpoint(ep, family, allow_loopback, interner, &mut skipped) {
                    endpoints.push(e);
                }
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

fn parse_endpoint(
    ep: &wire::SliceEndpoint,
    family: Family,
    allow_loopback: bool,
    interner: &mut Interner,
    skipped: &mut Vec<(Skip, usize, String)>,
) -> Option<Endpoint> {
    // The API calls the further addresses of one endpoint fungible: the first is used.
    let Some(text) = ep.addresses.first() else {
        note(skipped, Skip::NoAddress, "");
        return None;
    };
    let ip = match text.parse::<IpAddr>() {
        Ok(ip) if family_of(ip) == family => ip,
        _ => {
            note(skipped, Skip::InvalidAddress, text);
            return None;
        }
    };
    if ip.is_loopback() && !allow_loopback {
        note(skipped, Skip::Loopback, text);
        return None;
    }
    let c = ep.conditions.unwrap_or_default();
    let hints = ep.hints.as_ref();
    let name = ep.target_ref.as_ref().and_then(|r| r.name.as_deref()).or(ep.hostname.as_deref());
    Some(Endpoint {
        addr: SocketAddr::new(ip, 0),
        name: name.map(Arc::from),
        node: ep.node_name.as_deref().map(|n| interner.str(n)),
        zone: ep.zone.as_deref().map(|z| interner.str(z)),
        zone_hints: hints.and_then(|h| h.for_zones.as_deref()).map(|z| interner.list(z)),
        node_hints: hints.and_then(|h| h.for_nodes.as_deref()).map(|n| interner.list(n)),
        weight: 1,
        conditions: Conditions::from_api(c.ready, c.serving, c.terminating),
        member: member_of(ep, text),
    })
}

fn family_of(ip: IpAddr) -> Family {
    if ip.is_ipv4() { Family::V4 } else { Family::V6 }
}

/// `(slice id, family, endpoint)`: what one slice says about one pod.
type Contribution = (u32, Family, Arc<Endpoint>);

/// A pod's contributions: nearly always one slice lists it.
#[derive(Debug)]
enum Contribs {
    One(Contribution),
    Many(Vec<Contribution>),
}

impl Contribs {
    fn as_slice(&self) -> &[Contribution] {
        match self {
            Contribs::One(c) => std::slice::from_ref(c),
            Contribs::Many(v) => v,
        }
    }

    /// Puts `c` in place of the same slice's contribution, or adds it.
    fn put(&mut self, c: Contribution) {
        match self {
            Contribs::One(old) if old.0 == c.0 => *old = c,
            Contribs::One(old) => {
                let first = old.clone();
                *self = Contribs::Many(vec![first, c]);
            }
            Contribs::Many(v) => match v.iter_mut().find(|o| o.0 == c.0) {
                Some(o) => *o = c,
                None => v.push(c),
            },
        }
    }

    /// Removes slice `id`'s contribution; `true` when none is left.
    fn remove(&mut self, id: u32) -> bool {
        let only = match self {
            Contribs::One(old) => return old.0 == id,
            Contribs::Many(v) => {
                v.retain(|o| o.0 != id);
                match v.len() {
                    0 => return true,
                    1 => v.pop(),
                    _ => None,
                }
            }
        };
        if let Some(only) = only {
            *self = Contribs::One(only);
        }
        false
    }

    fn of_slice(&self, id: u32) -> Option<&Arc<Endpoint>> {
        self.as_slice().iter().find(|c| c.0 == id).map(|c| &c.2)
    }
}

/// A slice in the table: its id and the pods it lists.
#[derive(Debug)]
struct SliceEntry {
    id: u32,
    members: Vec<u64>,
}

/// The merged table of one Service for one wanted port.
#[derive(Debug)]
pub(crate) struct SliceTable {
    port: PortSpec,
    family: FamilyPolicy,
    slices: HashMap<Arc<str>, SliceEntry>,
    next_id: u32,
    members: HashMap<u64, Contribs>,
    /// The chosen endpoint of every key: the content of the published set, which shares it.
    chosen: imbl::OrdMap<EndpointKey, Arc<Endpoint>>,
    /// Keys two or more pods claim (a reused address): every claim; the best is in `chosen`.
    contested: HashMap<EndpointKey, Vec<Arc<Endpoint>>>,
    /// Keys touched since the last commit.
    touched: HashSet<EndpointKey>,
}

impl SliceTable {
    pub(crate) fn new(port: PortSpec, family: FamilyPolicy) -> Self {
        SliceTable {
            port,
            family,
            slices: HashMap::new(),
            next_id: 0,
            members: HashMap::new(),
            chosen: imbl::OrdMap::new(),
            contested: HashMap::new(),
            touched: HashSet::new(),
        }
    }

    /// The port this table resolves.
    pub(crate) fn port(&self) -> &PortSpec {
        &self.port
    }

    /// Number of slices held.
    #[cfg(test)]
    pub(crate) fn slices(&self) -> usize {
        self.slices.len()
    }

    /// The chosen endpoints by key, as of the last change (share it: cloning is O(1)).
    pub(crate) fn chosen(&self) -> &imbl::OrdMap<EndpointKey, Arc<Endpoint>> {
        &self.chosen
    }

    /// Replaces what `slice` contributes. Returns why the slice contributes nothing, if so.
    pub(crate) fn upsert(&mut self, slice: &ParsedSlice) -> Option<Skip> {
        let (next, problem) = match (slice.family, slice.port(&self.port)) {
            (None, _) => (Vec::new(), Some(Skip::AddressType)),
            (Some(_), Err(why)) => (Vec::new(), Some(why)),
            (Some(family), Ok(port)) => (contributions(slice, family, port), None),
        };
        let id = match self.slices.get(&slice.name) {
            Some(entry) => entry.id,
            None => {
                self.next_id = self.next_id.wrapping_add(1);
                self.next_id
            }
        };
        let old = self.slices.remove(&slice.name).map(|e| e.members).unwrap_or_default();
        let kept: HashMap<u64, &Arc<Endpoint>> = next.iter().map(|(e, _)| (e.member, e)).collect();
        for member in &old {
            if !kept.contains_key(member) {
                self.withdraw(id, *member);
            }
        }
        let mut members = Vec::with_capacity(next.len());
        for (endpoint, family) in next {
            members.push(endpoint.member);
            let same = self
                .members
                .get(&endpoint.member)
                .and_then(|c| c.of_slice(id))
                .is_some_and(|e| Arc::ptr_eq(e, &endpoint) || **e == *endpoint);
            if !same {
                self.contribute((id, family, endpoint));
            }
        }
        self.slices.insert(slice.name.clone(), SliceEntry { id, members });
        problem
    }

    /// Removes every contribution of the slice `name`.
    pub(crate) fn delete(&mut self, name: &str) {
        if let Some(old) = self.slices.remove(name) {
            for member in &old.members {
                self.withdraw(old.id, *member);
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
        touched.into_iter().map(|k| (k, self.chosen.get(&k).cloned())).collect()
    }

    fn contribute(&mut self, c: Contribution) {
        let member = c.2.member;
        let before = self.members.get(&member).and_then(|m| choose(m.as_slice(), self.family));
        match self.members.get_mut(&member) {
            Some(m) => m.put(c),
            None => {
                self.members.insert(member, Contribs::One(c));
            }
        }
        let after = self.members.get(&member).and_then(|m| choose(m.as_slice(), self.family));
        self.rechosen(before, after);
    }

    fn withdraw(&mut self, id: u32, member: u64) {
        let Some(m) = self.members.get_mut(&member) else { return };
        let before = choose(m.as_slice(), self.family);
        let after = if m.remove(id) {
            self.members.remove(&member);
            None
        } else {
            choose(m.as_slice(), self.family)
        };
        self.rechosen(before, after);
    }

    /// A pod's chosen endpoint went from `before` to `after`: move its claim between keys.
    fn rechosen(&mut self, before: Option<Arc<Endpoint>>, after: Option<Arc<Endpoint>>) {
        match (&before, &after) {
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) => return,
            (None, None) => return,
            _ => {}
        }
        if let Some(old) = before {
            self.unclaim(&old);
        }
        if let Some(new) = after {
            self.claim(new);
        }
    }

    fn claim(&mut self, e: Arc<Endpoint>) {
        let key = e.key();
        self.touched.insert(key);
        if let Some(claims) = self.contested.get_mut(&key) {
            claims.retain(|c| c.member != e.member);
            claims.push(e);
            if let Some(best) = best_claim(claims) {
                self.chosen.insert(key, best);
            }
            return;
        }
        match self.chosen.get(&key) {
            Some(current) if current.member != e.member => {
                let claims = vec![current.clone(), e];
                if let Some(best) = best_claim(&claims) {
                    self.chosen.insert(key, best);
                }
                self.contested.insert(key, claims);
            }
            _ => {
                self.chosen.insert(key, e);
            }
        }
    }

    fn unclaim(&mut self, e: &Arc<Endpoint>) {
        let key = e.key();
        self.touched.insert(key);
        if let Some(claims) = self.contested.get_mut(&key) {
            claims.retain(|c| c.member != e.member);
            match best_claim(claims) {
                Some(best) => self.chosen.insert(key, best),
                None => self.chosen.remove(&key),
            };
            if claims.len() <= 1 {
                self.contested.remove(&key);
            }
            return;
        }
        if self.chosen.get(&key).is_some_and(|c| c.member == e.member) {
            self.chosen.remove(&key);
        }
    }
}

/// What a parsed slice contributes for `port`: one endpoint per pod (a pod listed twice in one
/// slice keeps its best conditions).
fn contributions(slice: &ParsedSlice, family: Family, port: u16) -> Vec<(Arc<Endpoint>, Family)> {
    let mut out: Vec<(Arc<Endpoint>, Family)> = Vec::with_capacity(slice.endpoints.len());
    let mut index: HashMap<u64, usize> = HashMap::with_capacity(slice.endpoints.len());
    for e in &slice.endpoints {
        let endpoint = Arc::new(Endpoint { addr: SocketAddr::new(e.addr.ip(), port), ..e.clone() });
        match index.get(&e.member) {
            Some(&i) if better(&out[i].0, &endpoint).is_ge() => {}
            Some(&i) => out[i].0 = endpoint,
            None => {
                index.insert(e.member, out.len());
                out.push((endpoint, family));
            }
        }
    }
    out
}

/// The pod's endpoint: of the preferred family, then the best conditions, then the smaller address
/// (a rule that does not depend on the order slices arrived in).
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
        .filter(|(_, f, _)| allowed(*f))
        .max_by(|(_, fa, a), (_, fb, b)| preferred(*fa).cmp(&preferred(*fb)).then_with(|| better(a, b)))
        .map(|(_, _, e)| e.clone())
}

/// A total order of two endpoints, greater is better: the conditions (ready, serving, not
/// terminating), then the smaller address, then the rest of the content. Total, so the choice never
/// depends on the order the slices arrived in.
fn better(a: &Endpoint, b: &Endpoint) -> std::cmp::Ordering {
    let c = |e: &Endpoint| (e.conditions.rank(), e.conditions.serving, !e.conditions.terminating);
    c(a).cmp(&c(b))
        .then_with(|| b.addr.cmp(&a.addr))
        .then_with(|| b.name.cmp(&a.name))
        .then_with(|| b.node.cmp(&a.node))
        .then_with(|| b.zone.cmp(&a.zone))
        .then_with(|| b.zone_hints.cmp(&a.zone_hints))
        .then_with(|| b.node_hints.cmp(&a.node_hints))
        .then_with(|| b.weight.cmp(&a.weight))
}

/// Of the pods claiming one address, the better endpoint, then the smaller pod id.
fn best_claim(claims: &[Arc<Endpoint>]) -> Option<Arc<Endpoint>> {
    claims.iter().max_by(|a, b| better(a, b).then(b.member.cmp(&a.member))).cloned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::EndpointSet;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::{Endpoint as ApiEndpoint, EndpointConditions, EndpointPort, EndpointSlice};
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

    /// The lean object discovery decodes from the same JSON.
    pub(crate) fn to_wire(s: &EndpointSlice) -> wire::Slice {
        serde_json::from_value(serde_json::to_value(s).expect("serializes")).expect("decodes")
    }

    fn parse(s: &EndpointSlice, allow_loopback: bool) -> ParsedSlice {
        ParsedSlice::parse(&to_wire(s), allow_loopback, &mut Interner::default())
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
            self.table.upsert(&parse(s, false));
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
        assert_eq!(f.table.upsert(&parse(&other, false)), Some(Skip::NoPort));
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
        let p = parse(&s, false);
        assert_eq!(p.endpoints.len(), 1);
        let mut skipped: Vec<(&str, usize)> = p.skipped.iter().map(|(k, n, _)| (k.as_str(), *n)).collect();
        skipped.sort();
        assert_eq!(skipped, [("invalid_address", 2), ("loopback", 1), ("no_address", 1)]);
        assert_eq!(parse(&s, true).endpoints.len(), 2, "loopback allowed for local runs");
        s.address_type = "FQDN".into();
        let p = parse(&s, false);
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
        f.table.upsert(&parse(&b, false));
        f.table.upsert(&parse(&c, false));
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
        let hints: Vec<&str> = e.zone_hints.as_deref().unwrap_or_default().iter().map(|z| &**z).collect();
        assert_eq!(hints, ["zone-a"]);
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
