//! The client's endpoints: one [`Member`] (one lazily connected channel) per endpoint of the subset,
//! kept in step with discovery by an updater task that applies its deltas. Calls read an immutable
//! [`Members`] snapshot swapped atomically on each change: no lock on the call path.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint as TonicEndpoint};
use tracing::{debug, info, warn};

use super::call::Cause;
use super::pick::{Candidate, ramp};
use super::subset::Subset;
use super::zone::{self, ZoneMode};
use super::{ClientOptions, Shared};
use crate::adapter::{Routable, RoutableChange};
use crate::model::{Endpoint, EndpointKey, Source};
use crate::service::Updates;

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
    /// Failures since the last log line, by cause.
    pub unlogged: [AtomicU64; Cause::ALL.len()],
    /// Calls by zone: this endpoint's zone's counter, and its Prometheus twin.
    pub zone_calls: Arc<AtomicU64>,
    pub zone_counter: Counter,
    /// Copied from the pool: the slow-start window and minimum share.
    pub slow_start: (Duration, f64),
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
    /// The endpoints preferred for this client's zone (empty: no preference).
    pub local: Vec<Arc<Member>>,
    pub zone_mode: ZoneMode,
    /// For error messages: endpoints known (routable or not), where they came from, the target.
    pub known: usize,
    pub source: Source,
    pub target: String,
    /// Routable endpoints before subsetting.
    pub candidates: usize,
}

impl Members {
    pub(crate) fn pending(target: String) -> Self {
        Members {
            pending: true,
            all: Vec::new(),
            local: Vec::new(),
            zone_mode: ZoneMode::Off("discovery has not answered yet".into()),
            known: 0,
            source: Source::Api,
            target,
            candidates: 0,
        }
    }
}

/// Follows discovery's updates and rebuilds the snapshot; ends with the client.
pub(crate) struct Updater {
    pub shared: std::sync::Weak<Shared>,
    pub updates: Updates,
    pub answered: watch::Sender<bool>,
    pub zone: Option<String>,
}

impl Updater {
    pub(crate) async fn run(mut self) {
        let Some(shared) = self.shared.upgrade() else { return };
        let mut routable = Routable::new();
        let mut subset = Subset::new(&shared.opts.client_id, shared.opts.subset_size);
        drop(shared);
        let mut endpoints: HashMap<EndpointKey, Arc<Endpoint>> = HashMap::new();
        let mut members: HashMap<EndpointKey, Arc<Member>> = HashMap::new();
        let mut initialized = false;
        let mut flush = tokio::time::interval(Duration::from_secs(1));
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let update = tokio::select! {
                u = self.updates.next() => match u { Some(u) => u, None => return },
                _ = flush.tick() => {
                    match self.shared.upgrade() {
                        Some(shared) => shared.log_failures(members.values()),
                        None => return,
                    }
                    continue;
                }
            };
            let Some(shared) = self.shared.upgrade() else { return };
            let set = update.set().clone();
            let mut weights_changed = false;
            for change in routable.apply(&update) {
                match change {
                    RoutableChange::Insert(e) => {
                        subset.insert(e.key());
                        endpoints.insert(e.key(), e);
                        weights_changed = true;
                    }
                    RoutableChange::Update(e) => {
                        if let Some(m) = members.get(&e.key()) {
                            m.endpoint.store(e.clone());
                        }
                        weights_changed |=
                            endpoints.insert(e.key(), e.clone()).is_none_or(|old| old.weight != e.weight);
                    }
                    RoutableChange::Remove(k) => {
                        subset.remove(&k);
                        endpoints.remove(&k);
                        weights_changed = true;
                    }
                }
            }
            let (entered, left) = subset.rebalance();
            for k in &left {
                if let Some(m) = members.remove(k) {
                    shared.log_failures(std::iter::once(&m));
                    debug!(endpoint = %k, "endpoint left the pool");
                }
            }
            for k in entered {
                let Some(e) = endpoints.get(&k) else { continue };
                match self.member(&shared, e.clone(), initialized) {
                    Ok(m) => {
                        members.insert(k, Arc::new(m));
                    }
                    Err(error) => warn!(endpoint = %k, %error, "endpoint is not a valid URI authority; skipped"),
                }
            }
            initialized = true;
            if weights_changed {
                let max = members.values().map(|m| m.endpoint.load().weight.max(1)).max().unwrap_or(1);
                for m in members.values() {
                    let w = f64::from(m.endpoint.load().weight.max(1)) / f64::from(max);
                    m.relative_weight.store(w.to_bits(), Ordering::Relaxed);
                }
            }
            let mut all: Vec<Arc<Member>> = members.values().cloned().collect();
            all.sort_by_key(|m| m.key);
            let snapshot: Vec<Arc<Endpoint>> = all.iter().map(|m| m.endpoint.load_full()).collect();
            let refs: Vec<&Arc<Endpoint>> = snapshot.iter().collect();
            let (zone_mode, local_flags) =
                zone::classify(self.zone.as_deref(), &refs, set.prefer_close, shared.opts.zone_aware);
            let local: Vec<Arc<Member>> =
                all.iter().zip(&local_flags).filter(|(_, l)| **l).map(|(m, _)| m.clone()).collect();
            let previous = shared.members.load();
            if previous.zone_mode != zone_mode {
                info!(zone = self.zone.as_deref().unwrap_or("-"), mode = ?zone_mode, local = local.len(), "zone preference changed");
            }
            shared.metrics.members(&shared.key, all.len());
            shared.members.store(Arc::new(Members {
                pending: set.pending,
                all,
                local,
                zone_mode,
                known: set.len(),
                source: set.source,
                target: shared.watch.target().to_string(),
                candidates: subset.candidates(),
            }));
            if !set.pending {
                self.answered.send_replace(true);
            }
        }
    }

    fn member(&self, shared: &Shared, e: Arc<Endpoint>, initialized: bool) -> Result<Member, String> {
        let opts: &ClientOptions = &shared.opts;
        let channel = TonicEndpoint::from_shared(format!("http://{}", e.key()))
            .map_err(|err| err.to_string())?
            .connect_timeout(opts.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .connect_lazy();
        let zone = e.zone.clone().unwrap_or_else(|| "unknown".to_owned());
        let locality = match self.zone.as_deref() {
            Some(z) if z == zone => "local",
            Some(_) => "remote",
            None => "unknown",
        };
        let (zone_calls, zone_counter) = shared.zone_counters(&zone, locality);
        let ramp_until = (initialized && !opts.slow_start.is_zero()).then(|| Instant::now() + opts.slow_start);
        Ok(Member {
            key: e.key(),
            endpoint: ArcSwap::new(e),
            channel,
            in_flight: AtomicUsize::new(0),
            health: super::health::Health::default(),
            ramp_until,
            relative_weight: AtomicU64::new(1f64.to_bits()),
            calls: AtomicU64::new(0),
            unlogged: std::array::from_fn(|_| AtomicU64::new(0)),
            zone_calls,
            zone_counter,
            slow_start: (opts.slow_start, opts.slow_start_min_weight),
        })
    }
}

/// Consecutive-failure bookkeeping shared by every call: a member failed with `cause`.
pub(crate) fn record_failure(shared: &Shared, m: &Member, cause: Cause, now_ms: u64) {
    m.unlogged[cause.index()].fetch_add(1, Ordering::Relaxed);
    if !cause.endpoint_fault() || !m.health.failure(&shared.opts.outlier) {
        return;
    }
    let members = shared.members.load();
    let ejected = members.all.iter().filter(|o| o.health.is_ejected(now_ms)).count();
    if super::health::may_eject(ejected, members.all.len(), &shared.opts.outlier) {
        let time = m.health.eject(now_ms, &shared.opts.outlier);
        shared.metrics.ejection(&shared.key, "ejected");
        warn!(service = %shared.key, endpoint = %m.key, ?time, cause = cause.as_str(), "endpoint ejected after consecutive failures");
    } else {
        shared.metrics.ejection(&shared.key, "capped");
        debug!(service = %shared.key, endpoint = %m.key, ejected, "not ejected: the cap on the share ejected is reached");
    }
}
