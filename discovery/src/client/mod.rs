//! A balanced, zone-aware Triple client over live endpoints (feature `client`): a
//! `tower::Service<http::Request<tonic::body::Body>>`, so any tonic-generated client takes it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use dubbo_k8s_discovery::client::{Balanced, ClientOptions};
//! use dubbo_k8s_discovery::{Discovery, DiscoveryConfig, Metrics, ServiceRef};
//! let hub = Discovery::new(&DiscoveryConfig::from_env()?, Metrics::default()).await?;
//! let greeter = ServiceRef::new("org.apache.dubbo.demo.GreeterService").with_version("1.0.0");
//! let channel = Balanced::new(&hub, greeter, ClientOptions::from_env()?).await?;
//! // let mut client = GreeterServiceClient::new(channel);
//! # let _ = channel; Ok(()) }
//! ```
//!
//! Per call: `tri-service-version` / `tri-service-group` are set from the [`ServiceRef`]; the
//! deadline is the call's `grpc-timeout` (or [`ClientOptions::default_deadline`]), retries
//! included; the endpoint is the less loaded of two weighted random picks, local zone first; a
//! call whose request could be kept (unary, server-streaming) is retried, before any response
//! byte, on an endpoint not tried yet when the failure says the provider did not process it
//! ([`Cause::retryable`]), within the deadline and a retry budget. An empty set fails at once.
//!
//! Per endpoint: one lazily connected channel (one HTTP/2 connection); consecutive failures eject
//! it for a growing time (at most half the pool at once by default); a new endpoint's share ramps up
//! over [`ClientOptions::slow_start`]; above [`ClientOptions::subset_size`] endpoints, each client
//! connects to a deterministic subset.

mod call;
mod health;
mod options;
mod pick;
mod pool;
mod subset;
mod zone;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::HeaderValue;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::body::Body;
use tower::{Service, ServiceExt};
use tracing::warn;

pub use call::Cause;
pub use health::OutlierOptions;
pub use options::ClientOptions;
pub use zone::ZoneMode;

use call::{Outcome, RequestBody, Tracked};
use pick::Clock;
use pool::{InFlight, Member, Members, Updater, record_failure};

use crate::model::{EndpointKey, ServiceRef};
use crate::{Discovery, ServiceWatch};

/// The error type of [`Balanced`]: always a [`tonic::Status`] (tonic passes it to the caller as is).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Request header carrying the Dubbo version a Triple client asks for.
pub const VERSION_HEADER: &str = "tri-service-version";
/// Request header carrying the Dubbo group a Triple client asks for.
pub const GROUP_HEADER: &str = "tri-service-group";

// Header names made once, not parsed on every call.
const VERSION_NAME: http::HeaderName = http::HeaderName::from_static(VERSION_HEADER);
const GROUP_NAME: http::HeaderName = http::HeaderName::from_static(GROUP_HEADER);
const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

type Labels = Vec<(String, String)>;

/// Prometheus metrics of the balanced clients (labelled by `service`, the Dubbo service key).
#[derive(Clone, Debug, Default)]
pub struct ClientMetrics {
    calls: Family<Labels, Counter>,
    attempt_failures: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    budget_exhausted: Family<Labels, Counter>,
    ejections: Family<Labels, Counter>,
    zone_calls: Family<Labels, Counter>,
    members: Family<Labels, Gauge>,
}

impl ClientMetrics {
    /// New metrics registered under `discovery_client_*` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = ClientMetrics::default();
        let r = registry.sub_registry_with_prefix("discovery_client");
        r.register("calls", "Calls by outcome (ok, or the cause of the failure)", m.calls.clone());
        r.register(
            "attempt_failures",
            "Failed attempts by cause (a retried attempt counts here too)",
            m.attempt_failures.clone(),
        );
        r.register("retries", "Attempts retried on another endpoint", m.retries.clone());
        r.register("retry_budget_exhausted", "Retries refused by the retry budget", m.budget_exhausted.clone());
        r.register(
            "ejections",
            "Outlier ejections (ejected) and ejections refused by the cap (capped)",
            m.ejections.clone(),
        );
        r.register("zone_calls", "Calls by the endpoint's zone and whether it is this client's", m.zone_calls.clone());
        r.register("members", "Endpoints in the client's pool (its subset)", m.members.clone());
        m
    }

    fn labels(service: &str, extra: &[(&str, &str)]) -> Labels {
        std::iter::once(("service".to_owned(), service.to_owned()))
            .chain(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
            .collect()
    }

    fn ejection(&self, service: &str, kind: &str) {
        self.ejections.get_or_create(&Self::labels(service, &[("kind", kind)])).inc();
    }

    fn members(&self, service: &str, n: usize) {
        self.members.get_or_create(&Self::labels(service, &[])).set(n as i64);
    }
}

/// Counters kept for [`Balanced::stats`] (lock-free).
#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    ok: AtomicU64,
    retries: AtomicU64,
    budget_exhausted: AtomicU64,
    failed: [AtomicU64; Cause::ALL.len()],
    /// Failures without an endpoint (no endpoints, not ready), since the last log line.
    unlogged: [AtomicU64; Cause::ALL.len()],
}

/// A copy of a client's counters.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ClientStats {
    /// Calls started.
    pub calls: u64,
    /// Calls that ended with status OK.
    pub ok: u64,
    /// Calls that failed, by cause.
    pub failed: BTreeMap<String, u64>,
    /// Attempts retried on another endpoint.
    pub retries: u64,
    /// Retries refused by the budget.
    pub budget_exhausted: u64,
    /// Calls by the endpoint's zone (`local`/`remote` relative to this client).
    pub calls_by_zone: BTreeMap<String, u64>,
}

impl ClientStats {
    /// Failed calls of every cause.
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }
}

/// Which endpoint served a call, and after how many attempts: in the response's extensions
/// (`tonic::Response::extensions().get::<Served>()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    /// The endpoint that answered.
    pub endpoint: EndpointKey,
    /// Attempts made (1: no retry).
    pub attempts: u32,
}

/// One endpoint as the client sees it (for `/debug/endpoints`).
#[derive(Clone, Debug, Serialize)]
pub struct MemberDebug {
    /// `ip:port`.
    pub endpoint: String,
    /// Zone of the endpoint.
    pub zone: Option<String>,
    /// Preferred for this client's zone.
    pub local: bool,
    /// Calls in flight.
    pub in_flight: usize,
    /// Calls made to it.
    pub calls: u64,
    /// Relative weight now (SRV weight × slow-start ramp), 0 to 1.
    pub weight: f64,
    /// Consecutive failures.
    pub consecutive_failures: u32,
    /// Milliseconds of ejection left (0: not ejected).
    pub ejected_for_ms: u64,
}

/// The client's view of its pool.
#[derive(Clone, Debug, Serialize)]
pub struct ClientDebug {
    /// This client's zone.
    pub zone: Option<String>,
    /// How zones are preferred now, and why.
    pub zone_mode: ZoneMode,
    /// Routable endpoints discovery knows (before subsetting).
    pub candidates: usize,
    /// The subset this client connects to.
    pub members: Vec<MemberDebug>,
    /// Calls by zone.
    pub calls_by_zone: BTreeMap<String, u64>,
}

pub(crate) struct Shared {
    key: String,
    watch: ServiceWatch,
    opts: ClientOptions,
    members: ArcSwap<Members>,
    answered: watch::Receiver<bool>,
    version_header: Option<HeaderValue>,
    group_header: Option<HeaderValue>,
    budget: health::RetryBudget,
    counters: Counters,
    metrics: ClientMetrics,
    /// Outcome and failure counters resolved once (no label look-up per call).
    ok_counter: Counter,
    failed_counters: Vec<Counter>,
    attempt_counters: Vec<Counter>,
    retry_counter: Counter,
    budget_counter: Counter,
    zones: Mutex<HashMap<String, Arc<AtomicU64>>>,
    zone: Option<String>,
    epoch: Instant,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            t.abort();
        }
    }
}

impl Shared {
    fn zone_counters(&self, zone: &str, locality: &str) -> (Arc<AtomicU64>, Counter) {
        let label = format!("{zone} ({locality})");
        let atomic =
            self.zones.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(label).or_default().clone();
        let counter = self
            .metrics
            .zone_calls
            .get_or_create(&ClientMetrics::labels(&self.key, &[("zone", zone), ("locality", locality)]))
            .clone();
        (atomic, counter)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// One log line per (cause, endpoint) that failed since the last one: at most one per second.
    fn log_failures<'a>(&self, members: impl IntoIterator<Item = &'a Arc<Member>>) {
        for m in members {
            for cause in Cause::ALL {
                let n = m.unlogged[cause.index()].swap(0, Ordering::Relaxed);
                if n > 0 {
                    warn!(service = %self.key, endpoint = %m.key, cause = cause.as_str(), failures = n, "attempts failed in the last second");
                }
            }
        }
        for cause in Cause::ALL {
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
    fn call_ended(&self, result: Result<(), Cause>) {
        match result {
            Ok(()) => {
                self.counters.ok.fetch_add(1, Ordering::Relaxed);
                self.ok_counter.inc();
            }
            Err(cause) => {
                self.counters.failed[cause.index()].fetch_add(1, Ordering::Relaxed);
                self.failed_counters[cause.index()].inc();
            }
        }
    }

    fn no_endpoint(&self, cause: Cause, message: String) -> BoxError {
        self.counters.unlogged[cause.index()].fetch_add(1, Ordering::Relaxed);
        self.call_ended(Err(cause));
        Box::new(tonic::Status::new(cause.code(), message))
    }
}

/// The balanced client of one Dubbo service. Cheap to clone; its work stops with the last clone.
#[derive(Clone)]
pub struct Balanced {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Balanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balanced").field("service", &self.shared.key).finish()
    }
}

impl Balanced {
    /// A client of `service`, its endpoints followed through `hub`.
    pub async fn new(hub: &Discovery, service: ServiceRef, opts: ClientOptions) -> crate::Result<Self> {
        let watch = hub.service(service).await?;
        let zone = match &opts.zone {
            Some(z) => Some(z.clone()),
            None if opts.zone_aware => hub.zone().await,
            None => None,
        };
        Ok(Self::from_watch(watch, zone, opts))
    }

    /// A client of an already followed service, in `zone`.
    pub fn from_watch(watch: ServiceWatch, zone: Option<String>, opts: ClientOptions) -> Self {
        let id = watch.service().clone();
        let key = id.to_string();
        let header = |v: &str| if v.is_empty() { None } else { HeaderValue::from_str(v).ok() };
        let metrics = opts.metrics.clone();
        let counter = |family: &Family<Labels, Counter>, extra: &[(&str, &str)]| {
            family.get_or_create(&ClientMetrics::labels(&key, extra)).clone()
        };
        let (answered_tx, answered) = watch::channel(false);
        let shared = Arc::new(Shared {
            ok_counter: counter(&metrics.calls, &[("outcome", "ok")]),
            failed_counters: Cause::ALL.iter().map(|c| counter(&metrics.calls, &[("outcome", c.as_str())])).collect(),
            attempt_counters: Cause::ALL
                .iter()
                .map(|c| counter(&metrics.attempt_failures, &[("cause", c.as_str())]))
                .collect(),
            retry_counter: counter(&metrics.retries, &[]),
            budget_counter: counter(&metrics.budget_exhausted, &[]),
            members: ArcSwap::new(Arc::new(Members::pending(watch.target().to_string()))),
            answered,
            version_header: header(&id.version),
            group_header: header(&id.group),
            budget: health::RetryBudget::new(opts.retry_budget, opts.retry_min_per_sec),
            counters: Counters::default(),
            metrics,
            zones: Mutex::new(HashMap::new()),
            zone: zone.clone(),
            epoch: Instant::now(),
            task: Mutex::new(None),
            key,
            watch: watch.clone(),
            opts,
        });
        let updater =
            Updater { shared: Arc::downgrade(&shared), updates: watch.updates(), answered: answered_tx, zone };
        let task = tokio::spawn(updater.run());
        *shared.task.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
        Balanced { shared }
    }

    /// The service followed.
    pub fn service(&self) -> &ServiceWatch {
        &self.shared.watch
    }

    /// Waits until discovery has answered (possibly with no endpoint), up to `timeout`.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.answered.clone();
        tokio::time::timeout(timeout, rx.wait_for(|a| *a)).await.is_ok_and(|r| r.is_ok())
    }

    /// A copy of the counters.
    pub fn stats(&self) -> ClientStats {
        let c = &self.shared.counters;
        ClientStats {
            calls: c.calls.load(Ordering::Relaxed),
            ok: c.ok.load(Ordering::Relaxed),
            failed: Cause::ALL
                .iter()
                .map(|cause| (cause.as_str().to_owned(), c.failed[cause.index()].load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            retries: c.retries.load(Ordering::Relaxed),
            budget_exhausted: c.budget_exhausted.load(Ordering::Relaxed),
            calls_by_zone: self.zone_calls(),
        }
    }

    fn zone_calls(&self) -> BTreeMap<String, u64> {
        self.shared
            .zones
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(z, n)| (z.clone(), n.load(Ordering::Relaxed)))
            .collect()
    }

    /// The pool as the client sees it.
    pub fn debug(&self) -> ClientDebug {
        let members = self.shared.members.load();
        let now_ms = self.shared.now_ms();
        let now = Instant::now();
        ClientDebug {
            zone: self.shared.zone.clone(),
            zone_mode: members.zone_mode.clone(),
            candidates: members.candidates,
            members: members
                .all
                .iter()
                .map(|m| MemberDebug {
                    endpoint: m.key.to_string(),
                    zone: m.endpoint.load().zone.clone(),
                    local: members.local.iter().any(|l| l.key == m.key),
                    in_flight: m.in_flight.load(Ordering::Relaxed),
                    calls: m.calls.load(Ordering::Relaxed),
                    weight: pick::Candidate::weight(m, now),
                    consecutive_failures: m.health.consecutive_failures(),
                    ejected_for_ms: m.health.ejected_for(now_ms).as_millis() as u64,
                })
                .collect(),
            calls_by_zone: self.zone_calls(),
        }
    }

    /// The endpoint a call's first attempt would go to now, chosen exactly as a call chooses it but
    /// without calling; `None` while nothing is routable. For benchmarks of the pick and for
    /// debugging; calls never need it.
    #[doc(hidden)]
    pub fn pick_once(&self) -> Option<EndpointKey> {
        let members = self.shared.members.load();
        self.shared.pick(&members, &[], Instant::now()).map(|m| m.key)
    }

    /// Calls in flight per endpoint.
    pub fn in_flight(&self) -> HashMap<EndpointKey, usize> {
        self.shared.members.load().all.iter().map(|m| (m.key, m.in_flight.load(Ordering::Relaxed))).collect()
    }
}

impl Service<http::Request<Body>> for Balanced {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is per endpoint and decided per attempt.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(self.shared.clone().call(req))
    }
}

/// Reports the end of a call that got a response.
struct CallOutcome {
    shared: Arc<Shared>,
    _in_flight: InFlight,
}

impl Outcome for CallOutcome {
    fn finished(&self, code: Option<tonic::Code>) {
        let m = &self._in_flight.0;
        match code {
            Some(tonic::Code::Ok) => {
                m.health.success();
                self.shared.call_ended(Ok(()));
            }
            Some(tonic::Code::Unavailable) => {
                record_failure(&self.shared, m, Cause::Unavailable, self.shared.now_ms());
                self.shared.call_ended(Err(Cause::Unavailable));
            }
            Some(_) => {
                m.health.success(); // the endpoint answered: not an outlier
                self.shared.call_ended(Err(Cause::Status));
            }
            // Dropped by the caller before the end: nothing to say about the endpoint.
            None => {}
        }
    }
}

impl Shared {
    async fn call(self: Arc<Self>, req: http::Request<Body>) -> Result<http::Response<Body>, BoxError> {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        let (mut parts, body) = req.into_parts();
        let timeout = parts
            .headers
            .get(&GRPC_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(call::parse_grpc_timeout)
            .unwrap_or(self.opts.default_deadline);
        let deadline = started + timeout;
        if let Some(v) = &self.version_header {
            parts.headers.insert(VERSION_NAME, v.clone());
        }
        if let Some(g) = &self.group_header {
            parts.headers.insert(GROUP_NAME, g.clone());
        }
        let method = parts.extensions.get::<tonic::GrpcMethod<'static>>().cloned();
        let mut body = RequestBody::new(body, self.opts.max_replay_bytes).map_err(|s| Box::new(s) as BoxError)?;

        // A cold start: wait for discovery's first answer, within the deadline.
        if self.members.load().pending {
            let mut answered = self.answered.clone();
            if tokio::time::timeout_at(deadline, answered.wait_for(|a| *a)).await.is_err() {
                let msg = format!(
                    "no endpoint set for {} within the {timeout:?} deadline (discovery still starting; target {})",
                    self.key,
                    self.members.load().target
                );
                return Err(self.no_endpoint(Cause::NotReady, msg));
            }
        }
        self.budget.deposit();
        let attempts = self.opts.retries + 1;
        // Endpoints tried by this call (retries are at most 10): no allocation.
        let mut tried = [EndpointKey(std::net::SocketAddr::from(([0, 0, 0, 0], 0))); 11];
        let mut last: Option<(Cause, String)> = None;
        // Extensions (the gRPC method, anything the caller set) go with the first attempt as they
        // are; a retry gets the method again.
        let mut extensions = Some(std::mem::take(&mut parts.extensions));
        for attempt in 1..=attempts {
            // One clock reading per attempt serves the pick and the deadline check.
            let now = tokio::time::Instant::now();
            let members = self.members.load();
            let Some(member) = self.pick(&members, &tried[..attempt as usize - 1], now.into_std()) else {
                if let Some((cause, msg)) = last {
                    self.call_ended(Err(cause));
                    return Err(Box::new(tonic::Status::new(cause.code(), msg)));
                }
                let msg = format!(
                    "no routable endpoint for {} (target {}, source {}, {} known, none ready or serving); check the \
                     pods' readiness and the mapping (`consumer resolve`, /debug/endpoints)",
                    self.key, members.target, members.source, members.known
                );
                return Err(self.no_endpoint(Cause::NoEndpoints, msg));
            };
            drop(members);
            tried[attempt as usize - 1] = member.key;
            if now >= deadline {
                self.call_ended(Err(Cause::Deadline));
                let msg =
                    format!("deadline of {timeout:?} exceeded calling {} after {} attempt(s)", self.key, attempt - 1);
                return Err(Box::new(tonic::Status::deadline_exceeded(msg)));
            }
            let Some(attempt_body) = body.next() else { break };
            let mut request = http::Request::new(attempt_body);
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = parts.uri.clone();
            *request.version_mut() = parts.version;
            *request.headers_mut() = parts.headers.clone();
            if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(call::format_grpc_timeout(deadline - now))) {
                request.headers_mut().insert(GRPC_TIMEOUT, v);
            }
            match extensions.take() {
                Some(first) => *request.extensions_mut() = first,
                None => {
                    if let Some(m) = &method {
                        request.extensions_mut().insert(m.clone());
                    }
                }
            }
            member.calls.fetch_add(1, Ordering::Relaxed);
            member.zone_calls.fetch_add(1, Ordering::Relaxed);
            member.zone_counter.inc();
            let guard = InFlight::new(member.clone());
            let mut channel = member.channel.clone();
            let sent = tokio::time::timeout_at(deadline, async {
                channel.ready().await?;
                channel.call(request).await
            })
            .await;
            let (cause, msg) = match sent {
                Err(_elapsed) => {
                    self.call_ended(Err(Cause::Deadline));
                    let msg = format!(
                        "deadline of {timeout:?} exceeded calling {} at {} (attempt {attempt})",
                        self.key, member.key
                    );
                    return Err(Box::new(tonic::Status::deadline_exceeded(msg)));
                }
                Ok(Ok(response)) => {
                    let status = call::grpc_status(response.headers());
                    if status == Some(tonic::Code::Cancelled)
                        && tokio::time::Instant::now() + call::GRPC_TIMEOUT_RESOLUTION >= deadline
                    {
                        // The provider gave up at the deadline it was sent (a tonic server answers
                        // CANCELLED "Timeout expired") a moment before our own timer fired: the
                        // caller's deadline it is, as grpc-java reports a cancel after the deadline.
                        drop(guard);
                        self.call_ended(Err(Cause::Deadline));
                        let msg = format!(
                            "deadline of {timeout:?} exceeded calling {} at {} (attempt {attempt}; the provider \
                             cancelled the call at the deadline)",
                            self.key, member.key
                        );
                        return Err(Box::new(tonic::Status::deadline_exceeded(msg)));
                    }
                    // A trailers-only UNAVAILABLE: the provider did not process the call.
                    if status == Some(tonic::Code::Unavailable) && body.replayable() && attempt < attempts {
                        (Cause::Unavailable, format!("{} at {} answered UNAVAILABLE", self.key, member.key))
                    } else {
                        let mut response = response;
                        response.extensions_mut().insert(Served { endpoint: member.key, attempts: attempt });
                        let outcome = Arc::new(CallOutcome { shared: self.clone(), _in_flight: guard });
                        if let Some(code) = status {
                            // Trailers-only: the call ends here.
                            outcome.finished(Some(code));
                            return Ok(response);
                        }
                        return Ok(response.map(|b| Body::new(Tracked::new(b, outcome))));
                    }
                }
                Ok(Err(error)) => {
                    let cause = call::classify(&error);
                    (cause, format!("{} at {}: {} ({error})", self.key, member.key, cause.as_str()))
                }
            };
            drop(guard);
            self.attempt_counters[cause.index()].inc();
            record_failure(&self, &member, cause, self.now_ms());
            let msg = format!("{msg} (attempt {attempt} of {attempts})");
            if !cause.retryable() || !body.replayable() || attempt == attempts {
                self.call_ended(Err(cause));
                return Err(Box::new(tonic::Status::new(cause.code(), msg)));
            }
            if !self.budget.withdraw() {
                self.counters.budget_exhausted.fetch_add(1, Ordering::Relaxed);
                self.budget_counter.inc();
                self.call_ended(Err(cause));
                return Err(Box::new(tonic::Status::new(cause.code(), format!("{msg}; retry budget exhausted"))));
            }
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            self.retry_counter.inc();
            last = Some((cause, msg));
        }
        let (cause, msg) = last.unwrap_or((Cause::Transport, format!("{}: no attempt could be made", self.key)));
        self.call_ended(Err(cause));
        Err(Box::new(tonic::Status::new(cause.code(), msg)))
    }

    /// Local zone first; all zones when no local endpoint is eligible or the local pick is
    /// overloaded and a remote one is less loaded.
    fn pick(&self, members: &Members, tried: &[EndpointKey], now: Instant) -> Option<Arc<Member>> {
        let clock = Clock { now, now_ms: now.saturating_duration_since(self.epoch).as_millis() as u64 };
        let mut rng = rand::rng();
        let healthy = |m: &&Arc<Member>| !m.health.is_ejected(clock.now_ms);
        if !members.local.is_empty()
            && let Some(local) = pick::pick(&members.local, tried, clock, &mut rng).filter(healthy)
        {
            let load = local.in_flight.load(Ordering::Relaxed);
            if load < self.opts.zone_spill_in_flight {
                return Some(local.clone());
            }
            let any = pick::pick(&members.all, tried, clock, &mut rng);
            return Some(match any {
                Some(other) if other.in_flight.load(Ordering::Relaxed) < load => other.clone(),
                _ => local.clone(),
            });
        }
        pick::pick(&members.all, tried, clock, &mut rng).cloned()
    }
}
