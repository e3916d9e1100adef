//! API mode: one list/watch of the `discovery.k8s.io/v1` EndpointSlices per namespace, selecting
//! the slices of every Service followed there (`kubernetes.io/service-name in (a,b,…)`) and listed
//! again when that set changes, so a process following ten Services holds one watch, not ten.
//! Events are routed to their Service by that label. Per Service, each wanted port gets a view: a
//! [`SliceTable`] and the set it publishes, sharing the table's map. An event costs O(the slice it
//! carries + what changed) per view; a re-list replaces everything in one publish.
//!
//! Propagation is measured as kube-proxy's network-programming SLI is: from the slice's
//! `endpoints.kubernetes.io/last-change-trigger-time` (stamped by the EndpointSlice controller) to
//! the publish of the snapshot that holds the change.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::listwatch::{Handler, ListWatch, Scope, Timings, Watcher};
use crate::metrics::Metrics;
use crate::model::{EndpointSet, Freshness, PortSpec, Source};
use crate::publish::{Meta, Publisher, Versions};
use crate::source::slices::{FamilyPolicy, Interner, ParsedSlice, Skip, SliceTable};
use crate::sync::lock;
use crate::wire::{SERVICE_NAME_LABEL, Slice};

struct View {
    table: SliceTable,
    publisher: Publisher,
    /// The view has been filled by a complete list.
    loaded: bool,
    /// The table was started afresh (after a panic, or for a new port): the next publish replaces
    /// the whole set.
    rebuild: bool,
}

/// One followed Service of the namespace.
struct Followed {
    what: String,
    /// A complete list has covered this Service.
    loaded: bool,
    views: Vec<View>,
    /// Per slice: the controller's last-change-trigger-time last seen (for the propagation SLI).
    triggers: HashMap<Arc<str>, SystemTime>,
    /// Changes published by the next publish, by their trigger time.
    pending_triggers: Vec<SystemTime>,
}

/// The list being received.
struct Listing {
    services: HashSet<Arc<str>>,
    seen: HashMap<Arc<str>, HashSet<Arc<str>>>,
}

struct State {
    namespace: String,
    family: FamilyPolicy,
    allow_loopback: bool,
    versions: Versions,
    metrics: Metrics,
    interner: Interner,
    services: HashMap<Arc<str>, Followed>,
    listing: Option<Listing>,
    failing_since: Option<Instant>,
}

impl State {
    fn meta(&self, view: &View) -> Meta {
        Meta {
            source: Source::Api,
            freshness: self.failing_since.map_or(Freshness::Live, |since| Freshness::Stale { since }),
            pending: !view.loaded,
            traffic: crate::model::TrafficDistribution::Any,
        }
    }

    /// Publishes every view: its table's changes, unless a list is being received for its Service
    /// (a list is published whole, when complete), and the freshness.
    fn publish_all(&mut self) {
        let listing: HashSet<Arc<str>> = self.listing.as_ref().map(|l| l.services.clone()).unwrap_or_default();
        let now = SystemTime::now();
        let failing_since = self.failing_since;
        let namespace = self.namespace.clone();
        let meta_of = |view: &View| Meta {
            source: Source::Api,
            freshness: failing_since.map_or(Freshness::Live, |since| Freshness::Stale { since }),
            pending: !view.loaded,
            traffic: crate::model::TrafficDistribution::Any,
        };
        for (name, f) in &mut self.services {
            f.views.retain(|v| !v.publisher.is_closed());
            let hold = listing.contains(name);
            let mut published = false;
            for v in &mut f.views {
                let meta = meta_of(v);
                if hold {
                    v.publisher.publish(Vec::new(), meta);
                } else if std::mem::take(&mut v.rebuild) {
                    v.table.commit();
                    published |= v.publisher.replace_content(v.table.chosen(), meta);
                } else {
                    let changes = v.table.commit();
                    published |= v.publisher.publish_shared(changes, v.table.chosen(), meta);
                }
            }
            if !hold {
                for t in f.pending_triggers.drain(..) {
                    // Clock skew between the controller's node and this one can make it negative.
                    let delay = now.duration_since(t).unwrap_or_default();
                    if published {
                        self.metrics.propagation(&format!("{namespace}/{name}"), delay.as_secs_f64());
                    }
                }
            }
        }
    }

    fn parse(&mut self, slice: &Slice) -> ParsedSlice {
        let parsed = ParsedSlice::parse(slice, self.allow_loopback, &mut self.interner);
        for (why, n, example) in &parsed.skipped {
            warn!(
                namespace = %self.namespace,
                slice = %parsed.name,
                reason = why.as_str(),
                skipped = n,
                example = %example,
                "skipped endpoints of an EndpointSlice; the rest are served"
            );
            self.metrics.skipped(why.as_str(), *n as u64);
        }
        parsed
    }

    /// The followed Service a slice belongs to, and its name.
    fn route(&self, slice: &Slice) -> Option<Arc<str>> {
        let service = slice.service()?;
        self.services.get_key_value(service).map(|(k, _)| k.clone())
    }

    /// Applies one slice to its Service's views; `listed`: part of a list (else a watch event).
    fn upsert(&mut self, slice: &Slice, listed: bool) {
        let Some(service) = self.route(slice) else { return };
        let parsed = self.parse(slice);
        let trigger = slice.trigger_time();
        let metrics = self.metrics.clone();
        let Some(f) = self.services.get_mut(&service) else { return };
        let cold = !f.loaded;
        if let Some(t) = trigger {
            let before = f.triggers.insert(parsed.name.clone(), t);
            // A change this process has not seen yet; the first list of a Service is not one.
            if !cold && before != Some(t) {
                f.pending_triggers.push(t);
            }
        }
        for v in &mut f.views {
            if let Some(Skip::NoPort | Skip::InvalidPort) = v.table.upsert(&parsed) {
                warn!(
                    what = %f.what,
                    slice = %parsed.name,
                    port = %v.table.port(),
                    ports = ?parsed.ports,
                    "the EndpointSlice has no usable port of that name; its endpoints are left out \
                     (check the Service's port names and DISCOVERY_PORT / dubbo.apache.org/port)"
                );
                metrics.skipped(Skip::NoPort.as_str(), parsed.endpoints.len() as u64);
            }
        }
        if let Some(l) = self.listing.as_mut().filter(|_| listed) {
            l.seen.entry(service).or_default().insert(parsed.name);
        }
    }

    fn delete(&mut self, slice: &Slice) {
        let (Some(service), Some(name)) = (self.route(slice), slice.metadata.name.as_deref()) else { return };
        if let Some(f) = self.services.get_mut(&service) {
            f.triggers.remove(name);
            for v in &mut f.views {
                v.table.delete(name);
            }
        }
    }

    /// The label selector of the Services followed, sorted (`None`: none).
    fn scope(&self) -> Option<Scope> {
        let mut names: Vec<Arc<str>> = self.services.keys().cloned().collect();
        if names.is_empty() {
            return None;
        }
        names.sort();
        let list = names.iter().map(|n| &**n).collect::<Vec<_>>().join(",");
        Some(Scope { label_selector: Some(format!("{SERVICE_NAME_LABEL} in ({list})")), services: names })
    }
}

struct NamespaceHandler(Arc<Mutex<State>>);

impl Handler<Slice> for NamespaceHandler {
    fn begin_list(&mut self, scope: &Scope) {
        let mut s = lock(&self.0);
        s.listing = Some(Listing { services: scope.services.iter().cloned().collect(), seen: HashMap::new() });
    }

    fn list_item(&mut self, item: Slice) {
        lock(&self.0).upsert(&item, true);
    }

    fn end_list(&mut self) {
        let mut s = lock(&self.0);
        let Some(mut listing) = s.listing.take() else { return };
        for (name, f) in &mut s.services {
            if !listing.services.contains(name) {
                continue;
            }
            let seen = listing.seen.remove(name).unwrap_or_default();
            f.loaded = true;
            f.triggers.retain(|slice, _| seen.contains(slice));
            for v in &mut f.views {
                v.table.retain(&seen);
                v.loaded = true;
            }
        }
        s.interner.prune();
        // Published by `live`, which follows at once: one atomic swap per view.
        debug!(namespace = %s.namespace, services = listing.services.len(), "endpointslices listed");
    }

    fn apply(&mut self, object: Slice) {
        lock(&self.0).upsert(&object, false);
    }

    fn delete(&mut self, object: Slice) {
        lock(&self.0).delete(&object);
    }

    fn live(&mut self) {
        let mut s = lock(&self.0);
        s.failing_since = None;
        s.publish_all();
    }

    fn failing(&mut self, since: Instant, _error: &str) {
        let mut s = lock(&self.0);
        if s.failing_since.is_none() {
            s.failing_since = Some(since);
        }
        s.publish_all();
    }

    fn recover(&mut self) {
        let mut s = lock(&self.0);
        // Half an update may be in the tables: start them afresh; the next list fills them and
        // replaces each view's set in one publish. Until then the last set is served, stale.
        s.listing = None;
        let family = s.family;
        for f in s.services.values_mut() {
            f.triggers.clear();
            f.pending_triggers.clear();
            for v in &mut f.views {
                v.table = SliceTable::new(v.table.port().clone(), family);
                v.rebuild = true;
            }
        }
        if s.failing_since.is_none() {
            s.failing_since = Some(Instant::now());
        }
        let metas: Vec<Meta> = s.services.values().flat_map(|f| f.views.iter().map(|v| s.meta(v))).collect();
        let mut metas = metas.into_iter();
        for f in s.services.values_mut() {
            for v in &mut f.views {
                if let Some(meta) = metas.next() {
                    v.publisher.publish(Vec::new(), meta);
                }
            }
        }
    }
}

/// The EndpointSlice watch of one namespace; it follows the Services its [`SliceWatch`]es ask for
/// and stops when the last one goes.
pub(crate) struct NamespaceSlices {
    state: Arc<Mutex<State>>,
    scope: watch::Sender<Option<Scope>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for NamespaceSlices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamespaceSlices").field("namespace", &lock(&self.state).namespace).finish()
    }
}

impl Drop for NamespaceSlices {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a slice watch needs besides the client.
pub(crate) struct SliceWatchSettings {
    pub timings: Timings,
    pub family: FamilyPolicy,
    pub allow_loopback: bool,
    pub versions: Versions,
    pub metrics: Metrics,
}

impl NamespaceSlices {
    /// Starts the (for now empty) watch of `namespace`'s slices.
    pub(crate) fn start(client: Client, namespace: &str, settings: SliceWatchSettings) -> Arc<Self> {
        let what = format!("endpointslices {namespace}");
        let state = Arc::new(Mutex::new(State {
            namespace: namespace.to_owned(),
            family: settings.family,
            allow_loopback: settings.allow_loopback,
            versions: settings.versions,
            metrics: settings.metrics.clone(),
            interner: Interner::default(),
            services: HashMap::new(),
            listing: None,
            failing_since: None,
        }));
        let (scope_tx, scope) = watch::channel(None);
        let restarts = settings.metrics.restarts("slices");
        let lw = ListWatch {
            kind: "slices",
            client,
            path: format!("/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"),
            scope,
            timings: settings.timings,
            what: what.clone(),
            metrics: settings.metrics,
            _kind: std::marker::PhantomData,
        };
        let handler = NamespaceHandler(state.clone());
        let task = crate::task::spawn("slices", what, restarts, Watcher { lw, handler });
        Arc::new(NamespaceSlices { state, scope: scope_tx, task })
    }

    /// Follows `service` (until the returned handle goes), with a first view on `port`: both are
    /// in place before the watch is told, so the list that follows fills the view.
    pub(crate) fn follow(
        self: &Arc<Self>,
        service: &str,
        port: &PortSpec,
    ) -> (SliceWatch, watch::Receiver<EndpointSet>) {
        let name: Arc<str> = Arc::from(service);
        let w = SliceWatch { ns: self.clone(), service: name.clone() };
        let mut s = lock(&self.state);
        if !s.services.contains_key(service) {
            let what = format!("endpointslices {}/{service}", s.namespace);
            let f = Followed {
                what,
                loaded: false,
                views: Vec::new(),
                triggers: HashMap::new(),
                pending_triggers: Vec::new(),
            };
            s.services.insert(name, f);
            let rx = w.add_view(&mut s, port);
            let scope = s.scope();
            self.scope.send_replace(scope);
            return (w, rx);
        }
        drop(s);
        let rx = w.view(port);
        (w, rx)
    }

    fn unfollow(&self, service: &str) {
        let mut s = lock(&self.state);
        if s.services.remove(service).is_some() {
            let scope = s.scope();
            self.scope.send_replace(scope);
        }
    }
}

/// The EndpointSlices of one Kubernetes Service, followed by its namespace's watch until this
/// handle goes.
pub(crate) struct SliceWatch {
    ns: Arc<NamespaceSlices>,
    service: Arc<str>,
}

impl std::fmt::Debug for SliceWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SliceWatch").field("service", &self.service).finish()
    }
}

impl Drop for SliceWatch {
    fn drop(&mut self) {
        self.ns.unfollow(&self.service);
    }
}

impl SliceWatch {
    /// The set of the endpoints on `port`, kept current.
    pub(crate) fn view(&self, port: &PortSpec) -> watch::Receiver<EndpointSet> {
        let mut s = lock(&self.ns.state);
        let Some(f) = s.services.get(&self.service) else {
            // Not followed (cannot happen while this handle lives): a view that never answers.
            return Publisher::new(Source::Api, s.versions.clone()).1;
        };
        if let Some(v) = f.views.iter().find(|v| v.table.port() == port && !v.publisher.is_closed()) {
            return v.publisher.subscribe();
        }
        let loaded = f.loaded;
        let rx = self.add_view(&mut s, port);
        if loaded {
            // The slices are not kept outside the tables: a new port of a Service already followed
            // is filled by listing again (from the server's cache).
            drop(s);
            self.ns.scope.send_modify(|_| {});
        }
        rx
    }

    fn add_view(&self, s: &mut State, port: &PortSpec) -> watch::Receiver<EndpointSet> {
        let (publisher, rx) = Publisher::new(Source::Api, s.versions.clone());
        let table = SliceTable::new(port.clone(), s.family);
        if let Some(f) = s.services.get_mut(&self.service) {
            f.views.push(View { table, publisher, loaded: false, rebuild: false });
        }
        rx
    }
}
