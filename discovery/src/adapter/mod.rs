//! From [`Update`]s to what RPC stacks consume: the [`Routable`] tracker (insert / update / remove of
//! the endpoints calls may go to), a tower `Change` stream (feature `tower`), a `dubbo` crate
//! registry (feature `dubbo`).

#[cfg(feature = "dubbo")]
#[cfg_attr(docsrs, doc(cfg(feature = "dubbo")))]
pub mod dubbo;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{Endpoint, EndpointKey, EndpointSet, Update};

/// One change of the routable endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoutableChange {
    /// Start routing to this endpoint.
    Insert(Arc<Endpoint>),
    /// A routable endpoint's data changed (zone, hints, weight, conditions that keep it routable).
    Update(Arc<Endpoint>),
    /// Stop routing to this endpoint.
    Remove(EndpointKey),
}

/// A change of membership only: what balancers that hold one connection per endpoint need (an
/// update of an endpoint's data keeps its connection, so it is no change to them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Membership {
    Insert(Arc<Endpoint>),
    Remove(EndpointKey),
}

impl RoutableChange {
    pub(crate) fn membership(self) -> Option<Membership> {
        match self {
            RoutableChange::Insert(e) => Some(Membership::Insert(e)),
            RoutableChange::Remove(k) => Some(Membership::Remove(k)),
            RoutableChange::Update(_) => None,
        }
    }
}

/// The routable endpoints last reported downstream, kept in step with [`Update`]s: a delta costs
/// O(what it touches); only a reset, or the set switching between "ready endpoints" and "nothing
/// ready: serving-while-terminating ones", costs O(n).
#[derive(Debug, Default)]
pub struct Routable {
    reported: HashMap<EndpointKey, Arc<Endpoint>>,
    /// Whether the last set had ready endpoints (routability depends on it).
    ready_mode: Option<bool>,
}

impl Routable {
    /// Nothing reported yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The membership changes that take downstream to `update`'s routable endpoints.
    pub(crate) fn membership(&mut self, update: &Update) -> impl Iterator<Item = Membership> + use<> {
        self.apply(update).into_iter().filter_map(RoutableChange::membership)
    }

    /// The changes that take downstream to `update`'s routable endpoints.
    pub fn apply(&mut self, update: &Update) -> Vec<RoutableChange> {
        let set = update.set();
        let ready_mode = set.counts().ready > 0;
        let full = match update {
            Update::Reset(_) => true,
            Update::Apply { .. } => self.ready_mode != Some(ready_mode),
        };
        self.ready_mode = Some(ready_mode);
        if full {
            return self.resync(set);
        }
        let Update::Apply { deltas, .. } = update else { return Vec::new() };
        let mut out = Vec::new();
        for d in deltas {
            for e in d.added.iter().chain(&d.updated) {
                self.touch(set, e.key(), &mut out);
            }
            for k in &d.removed {
                self.touch(set, *k, &mut out);
            }
        }
        out
    }

    fn touch(&mut self, set: &EndpointSet, key: EndpointKey, out: &mut Vec<RoutableChange>) {
        let now = set.get(&key).filter(|e| set.is_routable(e));
        match (self.reported.get(&key), now) {
            (None, None) => {}
            (Some(_), None) => {
                self.reported.remove(&key);
                out.push(RoutableChange::Remove(key));
            }
            (None, Some(e)) => {
                self.reported.insert(key, e.clone());
                out.push(RoutableChange::Insert(e.clone()));
            }
            (Some(old), Some(e)) => {
                if !Arc::ptr_eq(old, e) && **old != **e {
                    self.reported.insert(key, e.clone());
                    out.push(RoutableChange::Update(e.clone()));
                }
            }
        }
    }

    fn resync(&mut self, set: &EndpointSet) -> Vec<RoutableChange> {
        let mut out = Vec::new();
        let keys: Vec<EndpointKey> = self.reported.keys().copied().collect();
        for k in keys {
            if set.get(&k).is_none_or(|e| !set.is_routable(e)) {
                self.reported.remove(&k);
                out.push(RoutableChange::Remove(k));
            }
        }
        for e in set.routable() {
            self.touch(set, e.key(), &mut out);
        }
        out
    }

    /// What downstream routes to now.
    pub fn current(&self) -> impl Iterator<Item = &Arc<Endpoint>> {
        self.reported.values()
    }

    /// How many endpoints downstream routes to.
    pub fn len(&self) -> usize {
        self.reported.len()
    }

    /// Nothing to route to.
    pub fn is_empty(&self) -> bool {
        self.reported.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Conditions, Source};
    use std::net::SocketAddr;

    fn ep(last: u8, c: Conditions) -> Endpoint {
        Endpoint { conditions: c, ..Endpoint::new(SocketAddr::from(([10, 0, 0, last], 1))) }
    }

    const NOT_READY: Conditions = Conditions { ready: false, serving: false, terminating: false };
    const DRAINING: Conditions = Conditions { ready: false, serving: true, terminating: true };

    /// Builds successive sets with real deltas, as a publisher would.
    struct Sets(EndpointSet, u64);

    impl Sets {
        fn new() -> Self {
            let mut s = EndpointSet::pending(Source::Api);
            s.pending = false;
            Sets(s, 0)
        }
        fn next(&mut self, changes: Vec<(EndpointKey, Option<Endpoint>)>) -> Update {
            let from = self.0.version;
            self.1 += 1;
            let d = self.0.apply(self.1, changes.into_iter().map(|(k, e)| (k, e.map(Arc::new))));
            self.0.remember(d);
            Update::Apply { set: self.0.clone(), deltas: self.0.deltas_since(from).expect("chain") }
        }
    }

    fn keys(changes: &[RoutableChange]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                RoutableChange::Insert(e) => format!("+{}", e.key()),
                RoutableChange::Update(e) => format!("~{}", e.key()),
                RoutableChange::Remove(k) => format!("-{k}"),
            })
            .collect()
    }

    #[test]
    fn follows_deltas_and_the_ready_fallback_switch() {
        let mut sets = Sets::new();
        let mut r = Routable::new();
        let a = ep(1, Conditions::READY);
        let b = ep(2, Conditions::READY);
        let u = sets.next(vec![(a.key(), Some(a.clone())), (b.key(), Some(b.clone()))]);
        assert_eq!(keys(&r.apply(&Update::Reset(u.set().clone()))), ["+10.0.0.1:1", "+10.0.0.2:1"], "sorted by key");
        // b not ready: removed; a's zone changes: an update
        let mut a2 = a.clone();
        a2.zone = Some("z".into());
        let u = sets.next(vec![(b.key(), Some(ep(2, NOT_READY))), (a.key(), Some(a2))]);
        let mut got = keys(&r.apply(&u));
        got.sort();
        assert_eq!(got, ["-10.0.0.2:1", "~10.0.0.1:1"]);
        // a starts draining: nothing is ready, so draining endpoints become the targets (full resync)
        let u = sets.next(vec![(a.key(), Some(ep(1, DRAINING)))]);
        assert_eq!(keys(&r.apply(&u)), ["~10.0.0.1:1"], "a stays routable as the serving fallback");
        // a comes back ready and b too: both routable
        let u = sets.next(vec![(a.key(), Some(a.clone())), (b.key(), Some(b.clone()))]);
        let mut got = keys(&r.apply(&u));
        got.sort();
        assert_eq!(got, ["+10.0.0.2:1", "~10.0.0.1:1"]);
        assert_eq!(r.len(), 2);
        // scale to zero
        let u = sets.next(vec![(a.key(), None), (b.key(), None)]);
        assert_eq!(r.apply(&u).len(), 2);
        assert!(r.is_empty());
    }
}
