//! [`Balanced`]: the client applications hold. A `tower::Service<http::Request<tonic::body::Body>>`
//! with [`tonic::Status`] as its error, so any tonic-generated client takes it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tonic::body::Body;
use tower::Service;

use super::options::ClientOptions;
use super::pick;
use super::pool::{Members, PoolState, Updater, ZoneSource};
use super::shared::{Shared, lock};
use super::stats::{ClientDebug, ClientStats, MemberDebug};
use super::subset::Subset;
use crate::model::{EndpointKey, ServiceRef};
use crate::{Discovery, Error, ServiceWatch};

/// The balanced client of one Dubbo service. Cheap to clone; its work stops with the last clone.
#[derive(Clone)]
pub struct Balanced {
    shared: Arc<Shared>,
    routable: watch::Receiver<bool>,
}

impl std::fmt::Debug for Balanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balanced").field("service", &self.shared.key).finish()
    }
}

impl Balanced {
    /// A client of `service`, its endpoints followed through `hub`. Fails when `opts` does not
    /// [`validate`](ClientOptions::validate), or the service cannot be followed.
    pub async fn new(hub: &Discovery, service: ServiceRef, mut opts: ClientOptions) -> crate::Result<Self> {
        opts.validate()?;
        if opts.node.is_none() {
            opts.node.clone_from(&hub.config().locality.node_name);
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut opts.tls
            && tls.cluster_domain.is_none()
        {
            tls.cluster_domain = Some(hub.config().dns.cluster_domain.clone());
        }
        let watch = hub.service(service).await?;
        let zone = match &opts.zone {
            Some(z) => ZoneSource::Fixed(Some(z.clone())),
            None if opts.zone_aware => {
                // The first look-up, at most a request timeout; later answers are followed.
                let _ = hub.zone().await;
                ZoneSource::Hub(hub.zone_watch())
            }
            None => ZoneSource::Fixed(None),
        };
        Self::start(watch, zone, opts)
    }

    /// A client of an already followed service, in `zone`. It starts a task, so it must be called
    /// within a Tokio runtime (an error says so otherwise).
    pub fn from_watch(watch: ServiceWatch, zone: Option<String>, opts: ClientOptions) -> crate::Result<Self> {
        opts.validate()?;
        Self::start(watch, ZoneSource::Fixed(zone), opts)
    }

    fn start(watch: ServiceWatch, zone: ZoneSource, opts: ClientOptions) -> crate::Result<Self> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime);
        }
        let subset = match &opts.client_id {
            Some(id) => Subset::new(id, opts.subset_size),
            None => Subset::random(opts.subset_size),
        };
        let (answered_tx, answered) = watch::channel(false);
        let (routable_tx, routable) = watch::channel(false);
        #[cfg(feature = "tls")]
        let tls = match &opts.tls {
            Some(t) => {
                let domain = t.cluster_domain.clone().unwrap_or_else(|| "cluster.local".to_owned());
                Some((crate::tls::ClientTls::start(t, opts.metrics.tls.clone())?, domain))
            }
            None => None,
        };
        #[allow(unused_mut)]
        let mut shared = Shared::new(watch.clone(), opts, answered);
        #[cfg(feature = "tls")]
        {
            shared.tls = tls;
        }
        let shared = Arc::new(shared);
        let updater = Updater {
            shared: Arc::downgrade(&shared),
            updates: watch.updates(),
            watch,
            answered: answered_tx,
            routable: routable_tx,
            zone,
            state: PoolState::new(subset),
        };
        let task = crate::task::spawn("client", shared.key.clone(), shared.metrics.restarts.clone(), updater);
        *lock(&shared.task) = Some(task);
        Ok(Balanced { shared, routable })
    }

    /// The service followed.
    pub fn service(&self) -> &ServiceWatch {
        &self.shared.watch
    }

    /// The TLS state (what is loaded, reloads), when the client uses TLS.
    #[cfg(feature = "tls")]
    pub fn tls_status(&self) -> Option<crate::tls::TlsStatus> {
        self.shared.tls.as_ref().map(|(t, _)| t.status())
    }

    /// Waits until discovery has answered (possibly with no endpoint), up to `timeout`.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.answered.clone();
        tokio::time::timeout(timeout, rx.wait_for(|a| *a)).await.is_ok_and(|r| r.is_ok())
    }

    /// Waits until the pool holds an endpoint to call, up to `timeout`. An application that starts
    /// with its providers (a rollout of both) can hold its first calls on this rather than fail them.
    pub async fn wait_routable(&self, timeout: Duration) -> bool {
        let mut rx = self.routable.clone();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r)).await.is_ok_and(|r| r.is_ok())
    }

    /// Whether the pool holds an endpoint to call now.
    pub fn is_routable(&self) -> bool {
        *self.routable.borrow()
    }

    /// A copy of the counters.
    pub fn stats(&self) -> ClientStats {
        self.shared.counters.snapshot(self.shared.zone_calls())
    }

    /// The pool as the client sees it.
    pub fn debug(&self) -> ClientDebug {
        let members: arc_swap::Guard<Arc<Members>> = self.shared.members.load();
        let now_ms = self.shared.now_ms();
        let now = Instant::now();
        ClientDebug {
            zone: (**self.shared.zone.load()).clone(),
            zone_mode: members.zone_mode.clone(),
            candidates: members.candidates,
            members: members
                .all
                .iter()
                .map(|m| MemberDebug {
                    endpoint: m.key.to_string(),
                    zone: m.endpoint.load().zone.as_deref().map(str::to_owned),
                    local: members.tiers.first().is_some_and(|t| t.iter().any(|l| l.key == m.key)),
                    in_flight: m.in_flight.load(Ordering::Relaxed),
                    calls: m.calls.load(Ordering::Relaxed),
                    weight: pick::Candidate::weight(m, now),
                    consecutive_failures: m.health.consecutive_failures(),
                    ejected_for_ms: m.health.ejected_for(now_ms).as_millis() as u64,
                    member_for_ms: m.since.elapsed().as_millis() as u64,
                })
                .collect(),
            departed: members.departed.iter().map(ToString::to_string).collect(),
            calls_by_zone: self.shared.zone_calls(),
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
    type Error = tonic::Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is per endpoint and decided per attempt.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(self.shared.clone().call(req))
    }
}
