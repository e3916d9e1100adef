//! API mode: one list/watch of the `discovery.k8s.io/v1` EndpointSlices labelled
//! `kubernetes.io/service-name=<service>` per Kubernetes Service, shared by every subscriber that
//! maps to it. Each wanted port gets a view: a [`SliceTable`] and the set it publishes. An event
//! costs O(the slice it carries + what changed) per view; a re-list replaces everything in one
//! publish.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::Api;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::listwatch::{Handler, ListWatch, Timings, Watcher};
use crate::metrics::Metrics;
use crate::model::{EndpointSet, Freshness, PortSpec, Source};
use crate::publish::{Meta, Publisher, Versions};
use crate::source::slices::{FamilyPolicy, ParsedSlice, Skip, SliceTable};
use crate::sync::lock;

/// The label the EndpointSlice controller puts on every slice of a Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

struct View {
    port: PortSpec,
    table: SliceTable,
    publisher: Publisher,
    /// After a panic: the table was started afresh and the next commit must replace the whole set.
    rebuild: bool,
}

struct State {
    what: String,
    family: FamilyPolicy,
    allow_loopback: bool,
    versions: Versions,
    metrics: Metrics,
    slices: HashMap<Arc<str>, ParsedSlice>,
    loaded: bool,
    failing_since: Option<Instant>,
    views: Vec<View>,
}

impl State {
    fn meta(&self) -> Meta {
        Meta {
            source: Source::Api,
            freshness: self.failing_since.map_or(Freshness::Live, |since| Freshness::Stale { since }),
            pending: !self.loaded,
            traffic: crate::model::TrafficDistribution::Any,
        }
    }

    fn publish_all(&mut self) {
        let meta = self.meta();
        self.views.retain(|v| !v.publisher.is_closed());
        for v in &mut self.views {
            let changes = v.table.commit();
            if std::mem::take(&mut v.rebuild) {
                let set =
                    EndpointSet::of(Source::Api, changes.into_iter().filter_map(|(_, e)| e).map(|e| (*e).clone()));
                v.publisher.replace(&set, meta);
            } else {
                v.publisher.publish(changes, meta);
            }
        }
    }

    fn parse(&self, slice: &EndpointSlice) -> ParsedSlice {
        let parsed = ParsedSlice::parse(slice, self.allow_loopback);
        for (why, n, example) in &parsed.skipped {
            warn!(
                what = %self.what,
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

    fn upsert_views(&mut self, parsed: &ParsedSlice) {
        for v in &mut self.views {
            if let Some(Skip::NoPort | Skip::InvalidPort) = v.table.upsert(parsed) {
                warn!(
                    what = %self.what,
                    slice = %parsed.name,
                    port = %v.port,
                    ports = ?parsed.ports,
                    "the EndpointSlice has no usable port of that name; its endpoints are left out \
                     (check the Service's port names and DISCOVERY_PORT / dubbo.apache.org/port)"
                );
                self.metrics.skipped(Skip::NoPort.as_str(), parsed.endpoints.len() as u64);
            }
        }
    }
}

struct SliceHandler(Arc<Mutex<State>>);

impl Handler<EndpointSlice> for SliceHandler {
    fn reset(&mut self, items: Vec<EndpointSlice>) {
        let mut s = lock(&self.0);
        let parsed: Vec<ParsedSlice> = items.iter().map(|i| s.parse(i)).collect();
        let names: HashSet<Arc<str>> = parsed.iter().map(|p| p.name.clone()).collect();
        for p in &parsed {
            s.upsert_views(p);
        }
        for v in &mut s.views {
            v.table.retain(&names);
        }
        s.slices = parsed.into_iter().map(|p| (p.name.clone(), p)).collect();
        s.loaded = true;
        // Published by `live`, which follows at once: one atomic swap.
        debug!(what = %s.what, slices = s.slices.len(), "endpointslices listed");
    }

    fn apply(&mut self, object: EndpointSlice) {
        let mut s = lock(&self.0);
        let parsed = s.parse(&object);
        s.upsert_views(&parsed);
        s.slices.insert(parsed.name.clone(), parsed);
    }

    fn delete(&mut self, object: EndpointSlice) {
        let mut s = lock(&self.0);
        if let Some(name) = object.metadata.name.as_deref() {
            for v in &mut s.views {
                v.table.delete(name);
            }
            s.slices.remove(name);
        }
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
        s.slices.clear();
        let family = s.family;
        for v in &mut s.views {
            v.table = SliceTable::new(v.port.clone(), family);
            v.rebuild = true;
        }
        if s.failing_since.is_none() {
            s.failing_since = Some(Instant::now());
        }
        let meta = s.meta();
        for v in &mut s.views {
            v.publisher.publish(Vec::new(), meta);
        }
    }
}

/// The EndpointSlices of one Kubernetes Service; the watch stops when the last handle goes.
pub(crate) struct SliceWatch {
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for SliceWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SliceWatch").field("what", &lock(&self.state).what).finish()
    }
}

impl Drop for SliceWatch {
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

impl SliceWatch {
    /// Starts the list/watch of `namespace/service`'s slices.
    pub(crate) fn start(client: Client, namespace: &str, service: &str, settings: SliceWatchSettings) -> Self {
        let what = format!("endpointslices {namespace}/{service}");
        let state = Arc::new(Mutex::new(State {
            what: what.clone(),
            family: settings.family,
            allow_loopback: settings.allow_loopback,
            versions: settings.versions,
            metrics: settings.metrics.clone(),
            slices: HashMap::new(),
            loaded: false,
            failing_since: None,
            views: Vec::new(),
        }));
        let restarts = settings.metrics.restarts("slices");
        let lw = ListWatch {
            kind: "slices",
            api: Api::<EndpointSlice>::namespaced(client, namespace),
            selector: Some(format!("{SERVICE_NAME_LABEL}={service}")),
            timings: settings.timings,
            what: what.clone(),
            metrics: settings.metrics,
        };
        let handler = SliceHandler(state.clone());
        let task = crate::task::spawn("slices", what, restarts, Watcher { lw, handler });
        SliceWatch { state, task }
    }

    /// The set of the endpoints on `port`, kept current.
    pub(crate) fn view(&self, port: &PortSpec) -> watch::Receiver<EndpointSet> {
        let mut s = lock(&self.state);
        if let Some(v) = s.views.iter().find(|v| &v.port == port && !v.publisher.is_closed()) {
            return v.publisher.subscribe();
        }
        let mut table = SliceTable::new(port.clone(), s.family);
        for p in s.slices.values() {
            table.upsert(p);
        }
        let (mut publisher, rx) = Publisher::new(Source::Api, s.versions.clone());
        if s.loaded || s.failing_since.is_some() {
            let changes = table.commit();
            publisher.publish(changes, s.meta());
        }
        s.views.push(View { port: port.clone(), table, publisher, rebuild: false });
        rx
    }
}
