//! The client's endpoints: one [`Member`] (one lazily connected channel) per endpoint of the subset,
//! kept in step with discovery by an updater task that applies its deltas. Calls read an immutable
//! [`Members`] snapshot swapped atomically on each change: no lock on the call path.
//!
//! An endpoint that leaves the routable set is kept aside, connection, ejection history and
//! slow-start state included, for [`super::ClientOptions::departed_grace`]: a readiness flap shorter
//! than that brings back the same member (no new connection, no second slow start).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint as TonicEndpoint};
use tracing::{debug, info, warn};

use super::cause::{COUNT, Cause};
use super::pick::{Candidate, ramp};
use super::shared::Shared;
use super::subset::Subset;
use super::zone::{self, ZoneMode};
use crate::adapter::{Routable, RoutableChange};
use crate::model::{Endpoint, EndpointKey, EndpointSet, Source};
use crate::service::{ServiceWatch, Updates};

/// Calls by zone of one member: the client-wide counter of its zone and locality, and its
/// Prometheus twin (swapped when this client's zone becomes known or changes).
pub(crate) struct ZoneStat {
    pub calls: Arc<AtomicU64>,
    pub counter: Counter,
}

/// One endpoint the client may call.
pub(crate) struct Member {
    pub key: EndpointKey,
    pub endpoint: ArcSwap<Endpoint>,
    pub channel: Channel,
    pub in_flight: AtomicUsize,
    pub health: super::health::Health,
    /// Until when a new endpoint ramps up (`None`: known since the client started).
    pub ramp_until: Option<Instant>,
    /// SRV weight over the pool's largest, in (0, 1], as f64 bits.
    pub relative_weight: AtomicU64,
    pub calls: AtomicU64,
    /// When it last answered anything (milliseconds since the client's epoch; 0: never).
    pub answered_ms: AtomicU64,
    /// Failures since the last log line, by cause.
    pub unlogged: [AtomicU64; COUNT],
    pub zone: ArcSwap<ZoneStat>,
    /// Copied from the options: the slow-start window and minimum share.
    pub slow_start: (Duration, f64),
    /// When the client took it in.
    pub since: Instant,
    /// A TLS alert its connection received after the handshake (a provider refusing our
    /// certificate says so on the first read; HTTP/2 keeps only the text of such errors).
    #[cfg(feature = "tls")]
    pub tls_alert: Option<Arc<super::tls_connector::AlertSlot>>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").field("key", &self.key).field("in_flight", &self.in_flight).finish()
    }
}

impl Candidate for Arc<Member> {
    fn key(&self) -> EndpointKey {
        self.key
    }
    fn load(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
    fn ejected(&self, now_ms: u64) -> bool {
        self.health.is_ejected(now_ms)
    }
    fn weight(&self, now: Instant) -> f64 {
        let w = f64::from_bits(self.relative_weight.load(Ordering::Relaxed));
        w * ramp(self.ramp_until, self.slow_start.0, self.slow_start.1, now)
    }
}

/// Keeps a call's claim on an endpoint; dropping it (the call ended, or its future was dropped)
/// releases the endpoint.
pub(crate) struct InFlight(pub Arc<Member>);

impl InFlight {
    pub(crate) fn new(m: Arc<Member>) -> Self {
        m.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(m)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What calls read: an immutable snapshot of the pool.
#[derive(Debug)]
pub(crate) struct Members {
    /// Discovery has not answered yet.
    pub pending: bool,
    pub all: Vec<Arc<Member>>,
    /// The endpoints preferred for where this client runs, best tier first (node, then zone;
    /// empty: no preference).
    pub tiers: Vec<Vec<Arc<Member>>>,
    pub zone_mode: ZoneMode,
    /// For error messages: endpoints known (routable or not), where they came from, the target.
    pub known: usize,
    pub source: Source,
    pub target: String,
    /// Routable endpoints before subsetting.
    pub candidates: usize,
    /// Endpoints kept warm after they left (for `/debug`).
    pub departed: Vec<EndpointKey>,
}

impl Members {
    pub(crate) fn pending(target: String) -> Self {
        Members {
            pending: true,
            all: Vec::new(),
            tiers: Vec::new(),
            zone_mode: ZoneMode::Off("discovery has not answered yet".into()),
            known: 0,
            source: Source::Api,
            target,
            candidates: 0,
            departed: Vec::new(),
        }
    }
}

/// Where this client's zone comes from.
pub(crate) enum ZoneSource {
    /// Given (or none).
    Fixed(Option<String>),
    /// Followed from the hub (`DISCOVERY_ZONE` or the node's label, retried until definite).
    Hub(watch::Receiver<Option<String>>),
}

/// Follows discovery's updates and rebuilds the snapshot; ends with the client.
pub(crate) struct Updater {
    pub shared: std::sync::Weak<Shared>,
    pub watch: ServiceWatch,
    pub updates: Updates,
    pub answered: watch::Sender<bool>,
    /// Whether the pool holds an endpoint to call.
    pub routable: watch::Sender<bool>,
    pub zone: ZoneSource,
    pub state: PoolState,
}

/// What the updater keeps between updates.
pub(crate) struct PoolState {
    routable: Routable,
    subset: Subset,
    endpoints: HashMap<EndpointKey, Arc<Endpoint>>,
    members: HashMap<EndpointKey, Arc<Member>>,
    /// Members that left, with when they did.
    departed: HashMap<EndpointKey, (Arc<Member>, Instant)>,
    initialized: bool,
}

impl PoolState {
    pub(crate) fn new(subset: Subset) -> Self {
        PoolState {
            routable: Routable::new(),
            subset,
            endpoints: HashMap::new(),
            members: HashMap::new(),
            departed: HashMap::new(),
            initialized: false,
        }
    }
}

impl crate::task::Supervised for Updater {
    async fn run(&mut self) {
        let mut flush = tokio::time::interval(Duration::from_secs(1));
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                u = self.updates.next() => Event::Update(u),
                changed = zone_changed(&mut self.zone) => Event::Zone(changed),
                _ = flush.tick() => Event::Tick,
            };
            if matches!(event, Event::Update(Some(_))) {
                crate::task::checkpoint("client");
            }
            let Some(shared) = self.shared.upgrade() else { return };
            match event {
                Event::Update(Some(update)) => self.apply(&shared, &update),
                Event::Update(None) => return,
                Event::Zone(open) => {
                    if !open {
                        self.zone = ZoneSource::Fixed(self.zone());
                    }
                    self.rezone(&shared);
                }
                Event::Tick => {
                    shared.log_failures(self.state.members.values());
                    self.forget_departed(&shared);
                }
            }
        }
    }

    /// The pool's state may be half-updated: start again from a reset, keeping the members (their
    /// connections) that calls are using.
    fn recover(&mut self) {
        self.updates = self.watch.updates();
        let mut fresh = PoolState::new(self.state.subset.emptied());
        fresh.members = std::mem::take(&mut self.state.members);
        fresh.departed = std::mem::take(&mut self.state.departed);
        fresh.initialized = self.state.initialized;
        self.state = fresh;
    }
}

enum Event {
    Update(Option<crate::model::Update>),
    /// The hub's zone changed (`false`: its channel closed).
    Zone(bool),
    Tick,
}

async fn zone_changed(zone: &mut ZoneSource) -> bool {
    match zone {
        ZoneSource::Hub(rx) => rx.changed().await.is_ok(),
        ZoneSource::Fixed(_) => std::future::pending().await,
    }
}

impl Updater {
    fn zone(&self) -> Option<String> {
        match &self.zone {
            ZoneSource::Fixed(z) => z.clone(),
            ZoneSource::Hub(rx) => rx.borrow().clone(),
        }
    }

    fn apply(&mut self, shared: &Shared, update: &crate::model::Update) {
        let set = update.set().clone();
        let mut weights_changed = false;
        let st = &mut self.state;
        for change in st.routable.apply(update) {
            match change {
                RoutableChange::Insert(e) => {
                    st.subset.insert(e.key());
                    st.endpoints.insert(e.key(), e);
                    weights_changed = true;
                }
                RoutableChange::Update(e) => {
                    if let Some(m) = st.members.get(&e.key()) {
                        m.endpoint.store(e.clone());
                    }
                    weights_changed |= st.endpoints.insert(e.key(), e.clone()).is_none_or(|old| old.weight != e.weight);
                }
                RoutableChange::Remove(k) => {
                    st.subset.remove(&k);
                    st.endpoints.remove(&k);
                    weights_changed = true;
                }
            }
        }
        let (entered, left) = st.subset.rebalance();
        let now = Instant::now();
        for k in &left {
            if let Some(m) = st.members.remove(k) {
                shared.log_failures(std::iter::once(&m));
                debug!(endpoint = %k, "endpoint left the pool; kept warm for the departed grace");
                if !shared.opts.departed_grace.is_zero() {
                    st.departed.insert(*k, (m, now));
                }
            }
        }
        let zone = self.zone();
        for k in entered {
            let Some(e) = self.state.endpoints.get(&k).cloned() else { continue };
            if let Some((m, _)) = self.state.departed.remove(&k) {
                debug!(endpoint = %k, "endpoint came back within the departed grace: same connection, no slow start");
                m.endpoint.store(e);
                self.state.members.insert(k, m);
                continue;
            }
            match member(shared, e, self.state.initialized, zone.as_deref()) {
                Ok(m) => {
                    self.state.members.insert(k, Arc::new(m));
                }
                Err(error) => warn!(endpoint = %k, %error, "endpoint is not a valid URI authority; skipped"),
            }
        }
        self.state.initialized = true;
        if weights_changed {
            let members = &self.state.members;
            let max = members.values().map(|m| m.endpoint.load().weight.max(1)).max().unwrap_or(1);
            for m in members.values() {
                let w = f64::from(m.endpoint.load().weight.max(1)) / f64::from(max);
                m.relative_weight.store(w.to_bits(), Ordering::Relaxed);
            }
        }
        self.publish(shared, &set);
    }

    /// This client's zone changed (became known, or the node moved): every member's locality with it.
    fn rezone(&mut self, shared: &Shared) {
        let zone = self.zone();
        for m in self.state.members.values().chain(self.state.departed.values().map(|(m, _)| m)) {
            let endpoint_zone = m.endpoint.load().zone.clone();
            m.zone.store(Arc::new(zone_stat(shared, endpoint_zone.as_deref(), zone.as_deref())));
        }
        info!(zone = zone.as_deref().unwrap_or("-"), "this client's zone is known now");
        let set = self.watch.current();
        self.publish(shared, &set);
    }

    fn forget_departed(&mut self, shared: &Shared) {
        let grace = shared.opts.departed_grace;
        self.state.departed.retain(|k, (_, since)| {
            let keep = since.elapsed() < grace;
            if !keep {
                debug!(endpoint = %k, "departed endpoint forgotten after the grace");
            }
            keep
        });
    }

    fn publish(&self, shared: &Shared, set: &EndpointSet) {
        let st = &self.state;
        let mut all: Vec<Arc<Member>> = st.members.values().cloned().collect();
        all.sort_by_key(|m| m.key);
        let snapshot: Vec<Arc<Endpoint>> = all.iter().map(|m| m.endpoint.load_full()).collect();
        let refs: Vec<&Arc<Endpoint>> = snapshot.iter().collect();
        let zone = self.zone();
        let here = zone::Here { zone: zone.as_deref(), node: shared.opts.node.as_deref() };
        let (zone_mode, tier_indices) = zone::classify(here, &refs, set.traffic, shared.opts.zone_aware);
        let tiers: Vec<Vec<Arc<Member>>> =
            tier_indices.iter().map(|t| t.iter().map(|i| all[*i].clone()).collect()).collect();
        let previous = shared.members.load();
        if previous.zone_mode != zone_mode {
            let local = tiers.first().map_or(0, Vec::len);
            info!(zone = zone.as_deref().unwrap_or("-"), mode = ?zone_mode, local, "locality preference changed");
        }
        shared.metrics.members(all.len());
        shared.zone.store(Arc::new(zone));
        shared.members.store(Arc::new(Members {
            pending: set.pending,
            all,
            tiers,
            zone_mode,
            known: set.len(),
            source: set.source,
            target: self.watch.target().to_string(),
            candidates: st.subset.candidates(),
            departed: st.departed.keys().copied().collect(),
        }));
        let has_members = !st.members.is_empty();
        self.routable.send_if_modified(|r| std::mem::replace(r, has_members) != has_members);
        if !set.pending {
            self.answered.send_replace(true);
        }
    }
}

fn zone_stat(shared: &Shared, endpoint_zone: Option<&str>, client_zone: Option<&str>) -> ZoneStat {
    let zone = endpoint_zone.unwrap_or("unknown");
    let locality = match client_zone {
        Some(z) if z == zone => "local",
        Some(_) => "remote",
        None => "unknown",
    };
    let (calls, counter) = shared.zone_counters(zone, locality);
    ZoneStat { calls, counter }
}

fn member(shared: &Shared, e: Arc<Endpoint>, initialized: bool, zone: Option<&str>) -> Result<Member, String> {
    let opts = &shared.opts;
    let endpoint = TonicEndpoint::from_shared(format!("http://{}", e.key()))
        .map_err(|err| err.to_string())?
        .connect_timeout(opts.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    #[cfg(feature = "tls")]
    let (channel, tls_alert) = match &shared.tls {
        Some((tls, domain)) => {
            let t = shared.watch.target();
            let name = tls.server_name(&t.service, &t.namespace, domain);
            let connector = super::tls_connector::TlsConnector::new(tls.clone(), &name)?;
            let alert = connector.alerts();
            (endpoint.connect_with_connector_lazy(connector), Some(alert))
        }
        None => (endpoint.connect_lazy(), None),
    };
    #[cfg(not(feature = "tls"))]
    let channel = endpoint.connect_lazy();
    let stat = zone_stat(shared, e.zone.as_deref(), zone);
    let now = Instant::now();
    let ramp_until = (initialized && !opts.slow_start.is_zero()).then(|| now + opts.slow_start);
    Ok(Member {
        key: e.key(),
        endpoint: ArcSwap::new(e),
        channel,
        in_flight: AtomicUsize::new(0),
        health: super::health::Health::default(),
        ramp_until,
        relative_weight: AtomicU64::new(1f64.to_bits()),
        calls: AtomicU64::new(0),
        answered_ms: AtomicU64::new(0),
        unlogged: std::array::from_fn(|_| AtomicU64::new(0)),
        zone: ArcSwap::new(Arc::new(stat)),
        slow_start: (opts.slow_start, opts.slow_start_min_weight),
        since: now,
        #[cfg(feature = "tls")]
        tls_alert,
    })
}

/// Whether another member than `m` answered since `since_ms`.
pub(crate) fn others_answered(shared: &Shared, m: &Member, since_ms: u64) -> bool {
    shared.members.load().all.iter().any(|o| {
        let answered = o.answered_ms.load(Ordering::Relaxed);
        // 0: never answered (answers are stored as at least 1).
        o.key != m.key && answered > 0 && answered >= since_ms
    })
}

/// Consecutive-failure bookkeeping shared by every call: a member failed with `cause`. A timeout
/// counts against it only when another member answered since `others_since_ms` (about the time the
/// attempt took, before it began): a black-holed endpoint among healthy ones, not a deadline too
/// tight for the whole service, which is no one endpoint's fault.
pub(crate) fn record_failure(shared: &Shared, m: &Member, cause: Cause, others_since_ms: u64, now_ms: u64) {
    m.unlogged[cause.index()].fetch_add(1, Ordering::Relaxed);
    if !cause.endpoint_fault() {
        return;
    }
    if (cause.is_timeout() || cause.is_tls()) && !others_answered(shared, m, others_since_ms) {
        return;
    }
    let members = shared.members.load();
    if !m.health.failure(&shared.opts.outlier) {
        return;
    }
    let ejected = members.all.iter().filter(|o| o.health.is_ejected(now_ms)).count();
    if super::health::may_eject(ejected, members.all.len(), &shared.opts.outlier) {
        let time = m.health.eject(now_ms, &shared.opts.outlier);
        shared.metrics.ejection("ejected");
        warn!(service = %shared.key, endpoint = %m.key, ?time, cause = cause.as_str(), "endpoint ejected after consecutive failures");
    } else {
        shared.metrics.ejection("capped");
        debug!(service = %shared.key, endpoint = %m.key, ejected, "not ejected: the cap on the share ejected is reached");
    }
}
