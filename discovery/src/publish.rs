//! The one owner of an [`EndpointSet`] watch channel: applies changes, stamps versions from the
//! process-wide counter, remembers each delta in the set's log and publishes, only when something
//! visible changed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use crate::model::{Endpoint, EndpointKey, EndpointSet, Freshness, Source, TrafficDistribution};

/// Versions shared by every set of one [`crate::Discovery`], so that a version seen by a subscriber
/// is never seen again, even across re-targeting.
#[derive(Clone, Debug, Default)]
pub(crate) struct Versions(Arc<AtomicU64>);

impl Versions {
    pub(crate) fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// What a set says besides its endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub source: Source,
    pub freshness: Freshness,
    pub pending: bool,
    pub traffic: TrafficDistribution,
}

impl Meta {
    /// What `set` says.
    pub(crate) fn of(set: &EndpointSet) -> Self {
        Meta { source: set.source, freshness: set.freshness, pending: set.pending, traffic: set.traffic }
    }
}

/// Writes one watch channel of sets.
#[derive(Debug)]
pub(crate) struct Publisher {
    state: EndpointSet,
    tx: watch::Sender<EndpointSet>,
    versions: Versions,
}

impl Publisher {
    /// A publisher whose channel starts with a pending set of `source`.
    pub(crate) fn new(source: Source, versions: Versions) -> (Self, watch::Receiver<EndpointSet>) {
        let state = EndpointSet::pending(source);
        let (tx, rx) = watch::channel(state.clone());
        (Publisher { state, tx, versions }, rx)
    }

    /// The last published set.
    pub(crate) fn current(&self) -> &EndpointSet {
        &self.state
    }

    /// A new receiver of this channel.
    pub(crate) fn subscribe(&self) -> watch::Receiver<EndpointSet> {
        self.tx.subscribe()
    }

    /// Whether every receiver is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Completes when every receiver is gone.
    pub(crate) async fn closed(&self) {
        self.tx.closed().await
    }

    /// Applies `changes` (final state per key) and `meta`; publishes when either changed. Returns
    /// whether it published.
    pub(crate) fn publish(&mut self, changes: Vec<(EndpointKey, Option<Arc<Endpoint>>)>, meta: Meta) -> bool {
        let meta_changed = self.meta() != meta;
        if changes.is_empty() && !meta_changed {
            return false;
        }
        let mut next = self.state.clone();
        let delta = next.apply(self.versions.next(), changes);
        self.commit(next, delta, meta, meta_changed)
    }

    /// Publishes `next` (with `delta` remembered and `meta` applied) unless nothing changed.
    fn commit(&mut self, mut next: EndpointSet, delta: crate::model::Delta, meta: Meta, meta_changed: bool) -> bool {
        if delta.is_empty() && !meta_changed {
            return false;
        }
        next.source = meta.source;
        next.freshness = meta.freshness;
        next.pending = meta.pending;
        next.traffic = meta.traffic;
        next.remember(delta);
        self.state = next;
        self.tx.send_replace(self.state.clone());
        true
    }

    /// Like [`Publisher::publish`], when the content after `changes` is `content` (kept in step by
    /// the caller): the published set shares it instead of copying it.
    pub(crate) fn publish_shared(
        &mut self,
        changes: Vec<(EndpointKey, Option<Arc<Endpoint>>)>,
        content: &imbl::OrdMap<EndpointKey, Arc<Endpoint>>,
        meta: Meta,
    ) -> bool {
        let meta_changed = self.meta() != meta;
        if changes.is_empty() && !meta_changed {
            return false;
        }
        let mut next = self.state.clone();
        let delta = next.adopt(self.versions.next(), changes, content);
        self.commit(next, delta, meta, meta_changed)
    }

    /// Replaces the whole content with `endpoints`' (an O(n) diff: for re-lists and source
    /// switches), sharing its structure.
    pub(crate) fn replace(&mut self, endpoints: &EndpointSet, meta: Meta) -> bool {
        self.replace_content(endpoints.content(), meta)
    }

    /// Replaces the whole content with `content` (an O(n) diff), sharing its structure.
    pub(crate) fn replace_content(&mut self, content: &imbl::OrdMap<EndpointKey, Arc<Endpoint>>, meta: Meta) -> bool {
        let changes = self.state.changes_to(content.values());
        self.publish_shared(changes, content, meta)
    }

    fn meta(&self) -> Meta {
        Meta::of(&self.state)
    }
}

/// Republishes the set of whichever source it currently follows: the source's own deltas while it
/// follows the same one (O(changes)), an O(n) diff when it switches to another (failover, a
/// re-targeted service) or falls behind the source's log.
#[derive(Debug)]
pub(crate) struct Follower {
    pub publisher: Publisher,
    /// `(which source, its version)` last followed.
    last: Option<(u64, u64)>,
}

impl Follower {
    pub(crate) fn new(publisher: Publisher) -> Self {
        Follower { publisher, last: None }
    }

    /// Follows `set`, the current set of source `which`, published with `meta`.
    pub(crate) fn follow(&mut self, which: u64, set: &EndpointSet, meta: Meta) -> bool {
        let deltas = match self.last {
            Some((w, v)) if w == which => set.deltas_since(v),
            _ => None,
        };
        self.last = Some((which, set.version));
        // Either way the content becomes `set`'s, which it then shares.
        match deltas {
            Some(ds) => self.publisher.publish_shared(flatten(&ds), set.content(), meta),
            None => self.publisher.replace(set, meta),
        }
    }

    /// Publishes `meta` without following a set (pending, or a fixed endpoint list).
    pub(crate) fn set_meta(&mut self, meta: Meta) -> bool {
        self.publisher.publish(Vec::new(), meta)
    }

    /// Replaces the content with `set` and forgets what was followed.
    pub(crate) fn replace(&mut self, set: &EndpointSet, meta: Meta) -> bool {
        self.last = None;
        self.publisher.replace(set, meta)
    }
}

/// The final state of every key touched by `deltas` (applied in order).
fn flatten(deltas: &[Arc<crate::model::Delta>]) -> Vec<(EndpointKey, Option<Arc<Endpoint>>)> {
    if let [d] = deltas {
        let mut out = Vec::with_capacity(d.len());
        out.extend(d.added.iter().chain(&d.updated).map(|e| (e.key(), Some(e.clone()))));
        out.extend(d.removed.iter().map(|k| (*k, None)));
        return out;
    }
    let mut last: std::collections::HashMap<EndpointKey, Option<Arc<Endpoint>>> = std::collections::HashMap::new();
    for d in deltas {
        for e in d.added.iter().chain(&d.updated) {
            last.insert(e.key(), Some(e.clone()));
        }
        for k in &d.removed {
            last.insert(*k, None);
        }
    }
    last.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn ep(port: u16) -> Arc<Endpoint> {
        Arc::new(Endpoint::new(SocketAddr::from(([10, 0, 0, 1], port))))
    }

    #[test]
    fn publishes_only_visible_changes_with_increasing_versions() {
        let versions = Versions::default();
        let (mut p, mut rx) = Publisher::new(Source::Api, versions.clone());
        let live =
            Meta { source: Source::Api, freshness: Freshness::Live, pending: false, traffic: TrafficDistribution::Any };
        assert!(p.publish(vec![(ep(1).key(), Some(ep(1)))], live));
        let first = rx.borrow_and_update().clone();
        assert_eq!(first.len(), 1);
        assert!(!p.publish(vec![(ep(1).key(), Some(ep(1)))], live), "same content, same meta: nothing");
        assert!(!rx.has_changed().expect("open"));
        let _other = versions.next(); // another set of the same hub publishes meanwhile
        assert!(p.publish(vec![(ep(2).key(), Some(ep(2)))], live));
        let second = rx.borrow_and_update().clone();
        assert!(second.version > first.version + 1, "versions are process-wide: {second:?}");
        let deltas = second.deltas_since(first.version).expect("contiguous");
        assert_eq!(deltas.len(), 1);
        assert_eq!(deltas[0].added[0].addr.port(), 2);
        let stale = Meta { freshness: Freshness::Stale { since: std::time::Instant::now() }, ..live };
        assert!(p.publish(Vec::new(), stale), "a freshness change alone is published");
        assert!(rx.borrow_and_update().deltas_since(second.version).expect("kept").iter().all(|d| d.is_empty()));
    }

    #[test]
    fn a_follower_forwards_deltas_and_diffs_on_a_switch() {
        let versions = Versions::default();
        let live =
            Meta { source: Source::Api, freshness: Freshness::Live, pending: false, traffic: TrafficDistribution::Any };
        let (mut api, api_rx) = Publisher::new(Source::Api, versions.clone());
        let (out, mut rx) = Publisher::new(Source::Api, versions.clone());
        let mut f = Follower::new(out);
        api.publish(vec![(ep(1).key(), Some(ep(1))), (ep(2).key(), Some(ep(2)))], live);
        assert!(f.follow(0, &api_rx.borrow(), live));
        let v1 = rx.borrow_and_update().version;
        // two changes upstream before the follower looks: both deltas are applied, as one
        api.publish(vec![(ep(3).key(), Some(ep(3)))], live);
        api.publish(vec![(ep(1).key(), None)], live);
        assert!(f.follow(0, &api_rx.borrow(), live));
        let s = rx.borrow_and_update().clone();
        let ds = s.deltas_since(v1).expect("a delta, not a reset");
        assert_eq!((ds[0].added.len(), ds[0].removed.len()), (1, 1));
        // switching to another source: a diff against what was published
        let dns = EndpointSet::of(Source::Dns, [Endpoint::new(ep(3).addr)]);
        let meta = Meta { source: Source::Dns, ..live };
        assert!(f.follow(1, &dns, meta));
        let s2 = rx.borrow_and_update().clone();
        let ds = s2.deltas_since(s.version).expect("still a delta");
        assert_eq!(ds[0].removed.len(), 1, "only 2 goes; 3 stays (same endpoint)");
        assert_eq!(s2.source, Source::Dns);
    }
}
