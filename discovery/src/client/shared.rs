//! The state every clone of one [`super::Balanced`] shares: its options, the pool snapshot calls
//! read, counters and metrics, the retry budget, and the bookkeeping around them (failure logs,
//! outcome counting, the zone-aware pick).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use http::HeaderValue;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

use super::cause::Cause;
use super::health::RetryBudget;
use super::metrics::ServiceMetrics;
use super::options::ClientOptions;
use super::pick::{self, Clock};
use super::pool::{Member, Members};
use super::stats::Counters;
use crate::model::EndpointKey;
use crate::service::ServiceWatch;

pub(crate) use crate::sync::lock;

pub(crate) struct Shared {
    pub key: String,
    pub watch: ServiceWatch,
    pub opts: ClientOptions,
    pub members: ArcSwap<Members>,
    pub answered: watch::Receiver<bool>,
    pub version_header: Option<HeaderValue>,
    pub group_header: Option<HeaderValue>,
    pub budget: RetryBudget,
    pub counters: Counters,
    pub metrics: ServiceMetrics,
    zones: Mutex<HashMap<String, Arc<AtomicU64>>>,
    /// This client's zone as last known.
    pub zone: ArcSwap<Option<String>>,
    pub epoch: Instant,
    pub task: Mutex<Option<JoinHandle<()>>>,
    /// TLS to the providers, and the cluster domain of the Service names it verifies.
    #[cfg(feature = "tls")]
    pub tls: Option<(crate::tls::ClientTls, String)>,
    /// Request ids: a random prefix per client and a counter.
    id_prefix: u64,
    id_next: AtomicU64,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(t) = lock(&self.task).take() {
            t.abort();
        }
    }
}

impl Shared {
    pub(crate) fn new(watch: ServiceWatch, opts: ClientOptions, answered: watch::Receiver<bool>) -> Self {
        let id = watch.service().clone();
        let key = id.to_string();
        let header = |v: &str| if v.is_empty() { None } else { HeaderValue::from_str(v).ok() };
        Shared {
            members: ArcSwap::new(Arc::new(Members::pending(watch.target().to_string()))),
            answered,
            version_header: header(&id.version),
            group_header: header(&id.group),
            budget: RetryBudget::new(opts.retry_budget, opts.retry_min_per_sec),
            counters: Counters::default(),
            metrics: opts.metrics.for_service(&key),
            zones: Mutex::new(HashMap::new()),
            zone: ArcSwap::new(Arc::new(opts.zone.clone())),
            epoch: Instant::now(),
            task: Mutex::new(None),
            #[cfg(feature = "tls")]
            tls: None,
            id_prefix: rand::random(),
            id_next: AtomicU64::new(0),
            key,
            watch,
            opts,
        }
    }

    /// A fresh request id: 32 hex digits, unique per client and call.
    pub(crate) fn request_id(&self) -> HeaderValue {
        let n = self.id_next.fetch_add(1, Ordering::Relaxed);
        let text = format!("{:016x}{n:016x}", self.id_prefix);
        HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).unwrap_or_else(|_| HeaderValue::from_static("0"))
    }

    pub(crate) fn zone_counters(&self, zone: &str, locality: &str) -> (Arc<AtomicU64>, Counter) {
        let label = format!("{zone} ({locality})");
        let atomic = lock(&self.zones).entry(label).or_default().clone();
        (atomic, self.metrics.zone_calls(zone, locality))
    }

    pub(crate) fn zone_calls(&self) -> BTreeMap<String, u64> {
        lock(&self.zones).iter().map(|(z, n)| (z.clone(), n.load(Ordering::Relaxed))).collect()
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// One log line per (cause, endpoint) that failed since the last one: at most one per second.
    /// TLS failures are summed over the endpoints: one line per cause whatever the pool's size (a
    /// CA or name mistake fails them all alike).
    pub(crate) fn log_failures<'a>(&self, members: impl IntoIterator<Item = &'a Arc<Member>>) {
        let mut tls: BTreeMap<Cause, (u64, usize, EndpointKey)> = BTreeMap::new();
        for m in members {
            for cause in Cause::all() {
                let n = m.unlogged[cause.index()].swap(0, Ordering::Relaxed);
                if n > 0 && cause.is_tls() {
                    let e = tls.entry(*cause).or_insert((0, 0, m.key));
                    e.0 += n;
                    e.1 += 1;
                } else if n > 0 {
                    warn!(service = %self.key, endpoint = %m.key, cause = cause.as_str(), failures = n, "attempts failed in the last second");
                }
            }
        }
        for (cause, (failures, endpoints, example)) in tls {
            warn!(
                service = %self.key,
                cause = cause.as_str(),
                failures,
                endpoints,
                %example,
                "TLS handshakes failed in the last second (the calls' errors say why)"
            );
        }
        for cause in Cause::all() {
            let n = self.counters.unlogged[cause.index()].swap(0, Ordering::Relaxed);
            if n > 0 {
                let members = self.members.load();
                warn!(
                    service = %self.key,
                    k8s_service = %members.target,
                    cause = cause.as_str(),
                    calls = n,
                    source = %members.source,
                    known = members.known,
                    "calls failed in the last second without an endpoint to try"
                );
            }
        }
    }

    /// A call ended: count it by outcome.
    pub(crate) fn call_ended(&self, result: Result<(), Cause>) {
        match result {
            Ok(()) => {
                self.counters.ok.fetch_add(1, Ordering::Relaxed);
                self.metrics.ok.inc();
            }
            Err(cause) => {
                self.counters.failed[cause.index()].fetch_add(1, Ordering::Relaxed);
                ServiceMetrics::by_cause(&self.metrics.failed, cause).inc();
            }
        }
    }

    /// The nearest tier first (node, then zone); further when no endpoint of a tier is eligible,
    /// or its pick is overloaded and one further away is less loaded.
    pub(crate) fn pick(&self, members: &Members, tried: &[EndpointKey], now: Instant) -> Option<Arc<Member>> {
        let clock = Clock { now, now_ms: now.saturating_duration_since(self.epoch).as_millis() as u64 };
        let mut rng = rand::rng();
        let healthy = |m: &&Arc<Member>| !m.health.is_ejected(clock.now_ms);
        for tier in &members.tiers {
            let Some(near) = pick::pick(tier, tried, clock, &mut rng).filter(healthy) else { continue };
            let load = near.in_flight.load(Ordering::Relaxed);
            if load < self.opts.zone_spill_in_flight {
                return Some(near.clone());
            }
            let any = pick::pick(&members.all, tried, clock, &mut rng);
            return Some(match any {
                Some(other) if other.in_flight.load(Ordering::Relaxed) < load => other.clone(),
                _ => near.clone(),
            });
        }
        pick::pick(&members.all, tried, clock, &mut rng).cloned()
    }
}
