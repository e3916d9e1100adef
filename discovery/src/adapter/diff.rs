//! Turns successive snapshots into insert/remove changes of the routable endpoints, keyed by
//! `host:port`. A changed condition that keeps an endpoint routable is no change: connections stay.

use std::collections::BTreeMap;

use crate::model::{Endpoint, EndpointKey, EndpointSet};

/// One change of the routable set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Start routing to this endpoint.
    Insert(EndpointKey, Endpoint),
    /// Stop routing to this endpoint.
    Remove(EndpointKey),
}

/// The routable endpoints last reported downstream.
#[derive(Debug, Default)]
pub struct Differ {
    current: BTreeMap<EndpointKey, Endpoint>,
}

impl Differ {
    /// Nothing reported yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The changes that take downstream from the last reported set to `set`'s routable endpoints.
    /// A pending set (nothing known yet) changes nothing.
    pub fn update(&mut self, set: &EndpointSet) -> Vec<Change> {
        if set.pending {
            return Vec::new();
        }
        let next: BTreeMap<EndpointKey, Endpoint> = set.routable().into_iter().map(|e| (e.key(), e.clone())).collect();
        let mut changes: Vec<Change> =
            self.current.keys().filter(|k| !next.contains_key(*k)).map(|k| Change::Remove(k.clone())).collect();
        changes.extend(
            next.iter()
                .filter(|(k, _)| !self.current.contains_key(*k))
                .map(|(k, e)| Change::Insert(k.clone(), e.clone())),
        );
        self.current = next;
        changes
    }

    /// What downstream routes to now.
    pub fn current(&self) -> impl Iterator<Item = &Endpoint> {
        self.current.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Conditions, Host, Source};
    use std::sync::Arc;

    fn set(eps: &[(u8, bool)], pending: bool) -> EndpointSet {
        let endpoints: Vec<Endpoint> = eps
            .iter()
            .map(|(i, ready)| {
                let mut e = Endpoint::new(Host::Ip(format!("10.0.0.{i}").parse().expect("ip")), 1);
                e.conditions = Conditions { ready: *ready, serving: *ready, terminating: false };
                e
            })
            .collect();
        EndpointSet { endpoints: Arc::from(endpoints), pending, ..EndpointSet::pending(Source::Api) }
    }

    #[test]
    fn inserts_removes_and_ignores_pending() {
        let mut d = Differ::new();
        assert!(d.update(&set(&[(1, true)], true)).is_empty());
        let c = d.update(&set(&[(1, true), (2, true)], false));
        assert_eq!(c.len(), 2);
        let c = d.update(&set(&[(2, true), (3, true), (1, false)], false));
        assert_eq!(c[0], Change::Remove(EndpointKey("10.0.0.1:1".into())));
        assert!(matches!(&c[1], Change::Insert(k, _) if k.0 == "10.0.0.3:1"));
        assert_eq!(c.len(), 2);
        assert!(d.update(&set(&[(2, true), (3, true)], false)).is_empty(), "no change, no event");
        let c = d.update(&set(&[], false));
        assert_eq!(c.len(), 2, "scale to zero removes everything");
        assert_eq!(d.current().count(), 0);
    }
}
