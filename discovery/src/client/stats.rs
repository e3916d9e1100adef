//! What a client tells about itself: counters ([`ClientStats`]), which endpoint served a call
//! ([`Served`]) and the pool as it sees it ([`ClientDebug`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::cause::{COUNT, Cause};
use super::zone::ZoneMode;
use crate::model::EndpointKey;

/// Counters kept for [`super::Balanced::stats`] (lock-free).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub calls: AtomicU64,
    pub ok: AtomicU64,
    pub retries: AtomicU64,
    pub not_replayed: AtomicU64,
    pub budget_exhausted: AtomicU64,
    pub failed: [AtomicU64; COUNT],
    /// Failures without an endpoint (no endpoints, not ready), since the last log line.
    pub unlogged: [AtomicU64; COUNT],
}

impl Counters {
    pub(crate) fn snapshot(&self, calls_by_zone: BTreeMap<String, u64>) -> ClientStats {
        ClientStats {
            calls: self.calls.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            failed: Cause::all()
                .iter()
                .map(|cause| (cause.as_str().to_owned(), self.failed[cause.index()].load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            retries: self.retries.load(Ordering::Relaxed),
            not_replayed: self.not_replayed.load(Ordering::Relaxed),
            budget_exhausted: self.budget_exhausted.load(Ordering::Relaxed),
            calls_by_zone,
        }
    }
}

/// A copy of a client's counters.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Calls started.
    pub calls: u64,
    /// Calls that ended with status OK.
    pub ok: u64,
    /// Calls that failed, by cause.
    pub failed: BTreeMap<String, u64>,
    /// Attempts retried on another endpoint.
    pub retries: u64,
    /// Calls that failed after their request may have reached the provider, not replayed because
    /// their method is not declared idempotent.
    pub not_replayed: u64,
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

/// Which endpoint served a call, after how many attempts, under which request id: in the
/// response's extensions (`tonic::Response::extensions().get::<Served>()`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Served {
    /// The endpoint that answered.
    pub endpoint: EndpointKey,
    /// Attempts made (1: no retry).
    pub attempts: u32,
    /// The request id sent with every attempt (`dubbo-k8s-request-id`), if any.
    pub request_id: Option<String>,
}

/// One endpoint as the client sees it (for `/debug/endpoints`).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct MemberDebug {
    /// `ip:port`.
    pub endpoint: String,
    /// Zone of the endpoint.
    pub zone: Option<String>,
    /// In this client's nearest preferred tier (its node's or zone's endpoints).
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
    /// Milliseconds since the client first took this endpoint in (kept across a readiness flap
    /// shorter than the departed grace).
    pub member_for_ms: u64,
}

/// The client's view of its pool.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ClientDebug {
    /// This client's zone.
    pub zone: Option<String>,
    /// How zones are preferred now, and why.
    pub zone_mode: ZoneMode,
    /// Routable endpoints discovery knows (before subsetting).
    pub candidates: usize,
    /// The subset this client connects to.
    pub members: Vec<MemberDebug>,
    /// Endpoints that left recently, kept warm for the departed grace.
    pub departed: Vec<String>,
    /// Calls by zone.
    pub calls_by_zone: BTreeMap<String, u64>,
}
