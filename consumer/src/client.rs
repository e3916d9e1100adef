//! The Triple client: one tonic `Channel` (one HTTP/2 connection, reused) per routable endpoint,
//! kept in step with discovery's snapshots; each call picks the less loaded of two random endpoints,
//! and retries on UNAVAILABLE or a broken connection go to an endpoint not tried yet, within a
//! deadline and a retry budget. An empty endpoint set fails at once with an error that says why.
//!
//! Why not `tonic::transport::Channel::balance_channel`: it cannot send a retry away from the
//! endpoint that just failed, and with no endpoints a call waits for one forever. This pool keeps
//! the same connection model (one connection per endpoint) and adds both.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use discovery::{EndpointKey, EndpointSet, ServiceWatch};
use provider::pb::greeter_service_client::GreeterServiceClient;
use provider::pb::{HelloReply, HelloRequest};
use provider::{GROUP_HEADER, VERSION_HEADER};
use rand::Rng;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint as TonicEndpoint};
use tower::retry::budget::{Budget, TpsBudget};
use tracing::{debug, warn};

use crate::stats::Stats;

/// How calls are made.
#[derive(Clone, Copy, Debug)]
pub struct CallPolicy {
    /// Deadline of a whole call, retries included.
    pub deadline: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Retry budget as a share of calls (plus 10 retries/s).
    pub retry_budget: f32,
    /// Connect timeout per endpoint.
    pub connect_timeout: Duration,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Discovery knows no endpoint to route to.
    #[error(
        "no routable endpoint for {service} (target {target}, source {origin}, {known} known, none ready or \
         serving); check the pods' readiness and the mapping (`consumer resolve`, /debug/endpoints)"
    )]
    NoEndpoints {
        /// The Dubbo service.
        service: String,
        /// The Kubernetes Service it maps to.
        target: String,
        /// Where the (empty) set came from.
        origin: String,
        /// Endpoints known but not routable.
        known: usize,
    },
    /// Discovery had no answer within the deadline (cold start).
    #[error("no endpoint set for {service} within the {deadline:?} deadline (discovery still starting)")]
    NotReady {
        /// The Dubbo service.
        service: String,
        /// The deadline.
        deadline: Duration,
    },
    /// The deadline ran out.
    #[error("deadline of {deadline:?} exceeded calling {service} after {attempts} attempt(s)")]
    Deadline {
        /// The Dubbo service.
        service: String,
        /// The deadline.
        deadline: Duration,
        /// Attempts made.
        attempts: u32,
    },
    /// The provider (or the transport) answered with an error status.
    #[error("{service} at {endpoint} answered {}: {} (attempt {attempts})", .status.code(), .status.message())]
    Status {
        /// The Dubbo service.
        service: String,
        /// The endpoint of the last attempt.
        endpoint: EndpointKey,
        /// The status.
        status: tonic::Status,
        /// Attempts made.
        attempts: u32,
    },
}

impl CallError {
    /// The gRPC code this error maps to.
    pub fn code(&self) -> tonic::Code {
        match self {
            CallError::NoEndpoints { .. } | CallError::NotReady { .. } => tonic::Code::Unavailable,
            CallError::Deadline { .. } => tonic::Code::DeadlineExceeded,
            CallError::Status { status, .. } => status.code(),
        }
    }

    /// A short outcome label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            CallError::NoEndpoints { .. } => "no_endpoints",
            CallError::NotReady { .. } => "not_ready",
            CallError::Deadline { .. } => "deadline",
            CallError::Status { .. } => "error",
        }
    }
}

/// A successful call.
#[derive(Clone, Debug)]
pub struct Reply {
    /// What the provider said.
    pub reply: HelloReply,
    /// Which endpoint answered.
    pub endpoint: EndpointKey,
    /// Attempts it took.
    pub attempts: u32,
    /// Latency of the whole call.
    pub latency: Duration,
}

#[derive(Debug)]
struct Member {
    key: EndpointKey,
    channel: Channel,
    in_flight: AtomicUsize,
    /// Milliseconds since the pool's epoch until which this member is skipped after a connection error.
    ejected_until: AtomicU64,
}

#[derive(Debug)]
struct Pool {
    version: u64,
    members: Vec<Arc<Member>>,
}

/// How long an endpoint whose connection failed is passed over (if others are left).
const EJECTION: Duration = Duration::from_secs(1);

/// The Triple client of one Dubbo service.
#[derive(Clone, Debug)]
pub struct GreeterClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    discovery: ServiceWatch,
    /// The Dubbo service key, for errors.
    service: String,
    /// `tri-service-version` / `tri-service-group` values, parsed once (absent when empty).
    version_header: Option<AsciiMetadataValue>,
    group_header: Option<AsciiMetadataValue>,
    policy: CallPolicy,
    pool: Mutex<Pool>,
    budget: TpsBudget,
    stats: Stats,
    epoch: Instant,
}

/// Is this failure one a retry on another endpoint can fix (the call did not reach a provider's
/// application code, or the provider refused it while shutting down)?
///
/// CANCELLED is always retried: this client never cancels its own calls through a status (its
/// deadline ends a call by other means), so a CANCELLED comes from the transport, e.g. hyper's
/// "operation was canceled" for a request still queued on a connection that a stopping provider
/// closed (seen in the container test when a drained provider stopped). Such a request never
/// reached the provider.
pub fn retryable(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled => true,
        tonic::Code::Unknown | tonic::Code::Internal => {
            let m = status.message().to_ascii_lowercase();
            ["transport error", "connection", "broken pipe", "h2 protocol error", "stream no longer needed"]
                .iter()
                .any(|s| m.contains(s))
        }
        _ => false,
    }
}

impl GreeterClient {
    /// A client of `discovery`'s service.
    pub fn new(discovery: ServiceWatch, policy: CallPolicy, stats: Stats) -> Self {
        let id = discovery.service();
        let header = |v: &str| if v.is_empty() { None } else { v.parse().ok() };
        let (service, version_header, group_header) = (id.to_string(), header(&id.version), header(&id.group));
        GreeterClient {
            inner: Arc::new(Inner {
                discovery,
                service,
                version_header,
                group_header,
                policy,
                pool: Mutex::new(Pool { version: u64::MAX, members: Vec::new() }),
                budget: TpsBudget::new(Duration::from_secs(10), 10, policy.retry_budget),
                stats,
                epoch: Instant::now(),
            }),
        }
    }

    /// The discovery behind it.
    pub fn discovery(&self) -> &ServiceWatch {
        &self.inner.discovery
    }

    /// Call statistics.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.inner.pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Brings the connection pool in step with `set` (new endpoints get a lazily connected channel,
    /// removed ones are dropped, which closes their connection).
    fn sync(&self, set: &EndpointSet) {
        let mut pool = self.lock();
        if pool.version == set.version {
            return;
        }
        pool.version = set.version;
        if set.pending {
            return;
        }
        let routable: std::collections::HashSet<EndpointKey> = set.routable().map(|e| e.key()).collect();
        pool.members.retain(|m| routable.contains(&m.key));
        for key in routable {
            if pool.members.iter().any(|m| m.key == key) {
                continue;
            }
            let uri = format!("http://{key}");
            match TonicEndpoint::from_shared(uri) {
                Ok(ep) => {
                    let channel = ep
                        .connect_timeout(self.inner.policy.connect_timeout)
                        .tcp_nodelay(true)
                        .http2_keep_alive_interval(Duration::from_secs(30))
                        .keep_alive_while_idle(true)
                        .connect_lazy();
                    debug!(endpoint = %key, "endpoint added");
                    pool.members.push(Arc::new(Member {
                        key,
                        channel,
                        in_flight: AtomicUsize::new(0),
                        ejected_until: AtomicU64::new(0),
                    }));
                }
                Err(e) => warn!(endpoint = %key, error = %e, "endpoint is not a valid URI authority; skipped"),
            }
        }
    }

    /// Power of two choices by in-flight calls, among members not tried yet and not ejected (ejected
    /// ones only when nothing else is left).
    fn pick(&self, tried: &[EndpointKey]) -> Option<Arc<Member>> {
        let pool = self.lock();
        let now_ms = self.inner.epoch.elapsed().as_millis() as u64;
        let fresh: Vec<&Arc<Member>> = pool.members.iter().filter(|m| !tried.contains(&m.key)).collect();
        let healthy: Vec<&Arc<Member>> =
            fresh.iter().copied().filter(|m| m.ejected_until.load(Ordering::Relaxed) <= now_ms).collect();
        let candidates = if healthy.is_empty() { fresh } else { healthy };
        match candidates.len() {
            0 => None,
            1 => Some(candidates[0].clone()),
            n => {
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                let mut b = rng.random_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                let (ma, mb) = (candidates[a], candidates[b]);
                let pick =
                    if mb.in_flight.load(Ordering::Relaxed) < ma.in_flight.load(Ordering::Relaxed) { mb } else { ma };
                Some(pick.clone())
            }
        }
    }

    /// Per-endpoint in-flight counts (for `/debug/endpoints`).
    pub fn in_flight(&self) -> HashMap<EndpointKey, usize> {
        self.lock().members.iter().map(|m| (m.key, m.in_flight.load(Ordering::Relaxed))).collect()
    }

    /// One `SayHello` call, with retries on other endpoints.
    pub async fn say_hello(&self, name: &str) -> Result<Reply, CallError> {
        let started = Instant::now();
        let result = self.call(name, started).await;
        self.inner.stats.record(&result, started.elapsed());
        result
    }

    async fn call(&self, name: &str, started: Instant) -> Result<Reply, CallError> {
        let policy = self.inner.policy;
        let deadline = started + policy.deadline;
        let service = || self.inner.service.clone();
        let mut set = self.inner.discovery.current();
        if set.pending {
            let mut rx = self.inner.discovery.watch();
            match tokio::time::timeout_at(deadline.into(), rx.wait_for(|s| !s.pending)).await {
                Ok(Ok(s)) => set = s.clone(),
                _ => return Err(CallError::NotReady { service: service(), deadline: policy.deadline }),
            }
        }
        self.sync(&set);
        self.inner.budget.deposit();
        let mut tried: Vec<EndpointKey> = Vec::new();
        let mut last: Option<CallError> = None;
        for attempt in 1..=policy.retries + 1 {
            if attempt > 1 {
                // Pick up what discovery learned meanwhile (e.g. the endpoint that failed is gone).
                self.sync(&self.inner.discovery.current());
            }
            let Some(member) = self.pick(&tried) else {
                return Err(last.unwrap_or_else(|| CallError::NoEndpoints {
                    service: service(),
                    target: self.inner.discovery.target().to_string(),
                    origin: set.source.to_string(),
                    known: set.len(),
                }));
            };
            tried.push(member.key);
            let now = Instant::now();
            if now >= deadline {
                return Err(CallError::Deadline {
                    service: service(),
                    deadline: policy.deadline,
                    attempts: attempt - 1,
                });
            }
            let mut req = tonic::Request::new(HelloRequest { name: name.to_owned() });
            req.set_timeout(deadline - now);
            if let Some(v) = &self.inner.version_header {
                req.metadata_mut().insert(VERSION_HEADER, v.clone());
            }
            if let Some(g) = &self.inner.group_header {
                req.metadata_mut().insert(GROUP_HEADER, g.clone());
            }
            member.in_flight.fetch_add(1, Ordering::Relaxed);
            let mut client = GreeterServiceClient::new(member.channel.clone());
            let outcome = tokio::time::timeout_at(deadline.into(), client.say_hello(req)).await;
            member.in_flight.fetch_sub(1, Ordering::Relaxed);
            match outcome {
                Ok(Ok(resp)) => {
                    return Ok(Reply {
                        reply: resp.into_inner(),
                        endpoint: member.key,
                        attempts: attempt,
                        latency: started.elapsed(),
                    });
                }
                Ok(Err(status)) => {
                    let retry = retryable(&status);
                    if retry {
                        let until = self.inner.epoch.elapsed() + EJECTION;
                        member.ejected_until.store(until.as_millis() as u64, Ordering::Relaxed);
                    }
                    debug!(endpoint = %member.key, code = ?status.code(), message = status.message(), attempt, retry, "call failed");
                    let err = CallError::Status { service: service(), endpoint: member.key, status, attempts: attempt };
                    if !retry || attempt > policy.retries {
                        return Err(err);
                    }
                    if !self.inner.budget.withdraw() {
                        self.inner.stats.budget_exhausted();
                        return Err(err);
                    }
                    self.inner.stats.retried();
                    last = Some(err);
                }
                Err(_) => {
                    return Err(CallError::Deadline {
                        service: service(),
                        deadline: policy.deadline,
                        attempts: attempt,
                    });
                }
            }
        }
        Err(last.unwrap_or(CallError::Deadline {
            service: service(),
            deadline: policy.deadline,
            attempts: policy.retries + 1,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_retried() {
        assert!(retryable(&tonic::Status::unavailable("tcp connect error: Connection refused")));
        assert!(retryable(&tonic::Status::cancelled("operation was canceled")));
        assert!(retryable(&tonic::Status::unknown("transport error")));
        assert!(retryable(&tonic::Status::internal("h2 protocol error: error reading a body from connection")));
        assert!(!retryable(&tonic::Status::unimplemented("version 2.0.0 is not served here")));
        assert!(!retryable(&tonic::Status::invalid_argument("count must be 1..=1000")));
        assert!(!retryable(&tonic::Status::unknown("application error")));
        assert!(!retryable(&tonic::Status::deadline_exceeded("deadline")));
    }
}
