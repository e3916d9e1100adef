//! The endpoints of one [`Target`]: its sources (the shared EndpointSlice view; DNS; the VIP) and,
//! in API mode, failover between them, published as one set. Every [`crate::ServiceWatch`] bound to
//! the same target shares one resolution.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, warn};

use crate::failover::{self, Choice, Fallbacks, Outage, Policy};
use crate::mapping::services::{IndexState, ServiceIndex};
use crate::metrics::Metrics;
use crate::model::{Endpoint, EndpointSet, Freshness, Source, Target};
use crate::publish::{Follower, Meta};
use crate::source::api::SliceWatch;
use crate::source::dns::service_fqdn;
use crate::wait;

/// One target's set; its tasks stop when the last handle goes.
#[derive(Debug)]
pub(crate) struct Resolution {
    pub target: Target,
    pub rx: watch::Receiver<EndpointSet>,
    task: JoinHandle<()>,
    /// Keeps the shared watches alive while this resolution is.
    _slices: Option<Arc<SliceWatch>>,
    _index: Option<Arc<ServiceIndex>>,
}

impl Drop for Resolution {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Resolution {
    /// A resolution whose set is published by an already running task (DNS or static mode).
    pub(crate) fn of_task(target: Target, rx: watch::Receiver<EndpointSet>, task: JoinHandle<()>) -> Self {
        Resolution { target, rx, task, _slices: None, _index: None }
    }

    /// API mode: the slice view, DNS on demand, the VIP; failover between them.
    pub(crate) fn api(parts: ApiParts, follower: Follower) -> Self {
        let rx = follower.publisher.subscribe();
        let target = parts.target.clone();
        let slices = parts.slices.clone();
        let index = parts.index.clone();
        let span = tracing::info_span!("resolution", k8s_service = %target);
        let task = tokio::spawn(run_api(parts, follower).instrument(span));
        Resolution { target, rx, task, _slices: slices, _index: index }
    }
}

/// What an API-mode resolution follows.
pub(crate) struct ApiParts {
    pub target: Target,
    /// The shared watch (`None` without a kube client).
    pub slices: Option<Arc<SliceWatch>>,
    pub view: watch::Receiver<EndpointSet>,
    /// Without a kube client: the publisher of an API view that failed from the start.
    pub failed_api: Option<crate::publish::Publisher>,
    /// The namespace's Services (for the VIP), when they may be read.
    pub index: Option<Arc<ServiceIndex>>,
    /// Builds the DNS source when failover wants it; `None` when no resolver could be built.
    pub dns: Option<DnsFactory>,
    pub policy: Policy,
    pub fallback_port: u16,
    pub cluster_domain: String,
    pub request_timeout: Duration,
    pub metrics: Metrics,
}

/// Starts a DNS source of the target, publishing to a fresh channel.
pub(crate) type DnsFactory = Box<dyn Fn() -> (watch::Receiver<EndpointSet>, JoinHandle<()>) + Send + Sync>;

/// How often the system resolver is asked for a VIP when no Service spec can be read.
const VIP_LOOKUP_EVERY: Duration = Duration::from_secs(30);

async fn lookup_vip(
    target: &Target,
    cluster_domain: &str,
    fallback_port: u16,
    timeout: Duration,
) -> Option<SocketAddr> {
    let port = match &target.port {
        crate::model::PortSpec::Number(n) => *n,
        crate::model::PortSpec::Name(_) => fallback_port,
    };
    let host = service_fqdn(target, cluster_domain);
    let lookup = tokio::net::lookup_host((host.trim_end_matches('.').to_owned(), port));
    tokio::time::timeout(timeout, lookup).await.ok().and_then(Result::ok).and_then(|mut a| a.next())
}

const WHICH_API: u64 = 0;
const WHICH_DNS: u64 = 1;

async fn run_api(parts: ApiParts, mut out: Follower) {
    let ApiParts {
        target,
        mut view,
        failed_api,
        index,
        dns: dns_factory,
        policy,
        fallback_port,
        cluster_domain,
        request_timeout,
        metrics,
        ..
    } = parts;
    let _failed_api = failed_api;
    let key = target.to_string();
    let started = Instant::now();
    let mut outage = Outage::default();
    let mut dns: Option<(watch::Receiver<EndpointSet>, JoinHandle<()>)> = None;
    let mut index_rx = index.as_ref().map(|i| i.watch());
    let mut looked_up_vip: Option<(Instant, Option<SocketAddr>)> = None;
    let mut last_choice = Choice::Pending;
    let mut ignoring_empty_dns = false;
    loop {
        let api = view.borrow_and_update().clone();
        let now = Instant::now();
        let api_failing = match api.freshness {
            Freshness::Stale { since } => Some(since),
            Freshness::Live => None,
        };
        outage.observe(api_failing, now, policy.recovery_hold);
        let dns_set = dns.as_mut().map(|(rx, _)| rx.borrow_and_update().clone());
        let index_knows = index_rx.as_ref().is_some_and(|rx| rx.borrow().disabled.is_none());
        let (mut vip, prefer_close) = match index_rx.as_mut() {
            Some(rx) if index_knows => {
                let index = rx.borrow_and_update();
                let info = index.services.get(&target.service);
                (vip_from_index(&index, &target), info.is_some_and(|i| i.prefer_close))
            }
            _ => (looked_up_vip.and_then(|(_, v)| v), false),
        };
        let decide = |vip_available: bool| {
            let fallbacks = Fallbacks { dns: dns_set.as_ref(), dns_available: dns_factory.is_some(), vip_available };
            failover::decide(&policy, started, now, &api, &outage, fallbacks)
        };
        let mut d = decide(vip.is_some());
        let lookup_due = looked_up_vip.is_none_or(|(at, _)| now.duration_since(at) > VIP_LOOKUP_EVERY);
        if d.want_dns && !index_knows && lookup_due {
            // No Service spec to read: ask the system resolver for the Service's name (its VIP).
            vip = lookup_vip(&target, &cluster_domain, fallback_port, request_timeout).await;
            looked_up_vip = Some((now, vip));
            d = decide(vip.is_some());
        }

        if d.want_dns
            && dns.is_none()
            && let Some(make) = &dns_factory
        {
            info!(error = %stale_reason(&api), "API source unavailable; starting DNS failover");
            dns = Some(make());
            continue;
        }
        if !d.want_dns
            && let Some((_, task)) = dns.take()
        {
            info!("API source recovered and held for the recovery hold; stopping DNS failover");
            task.abort();
        }
        if d.ignored_empty_dns && !ignoring_empty_dns {
            warn!(
                "DNS answered with no endpoints during the API outage; keeping the last-known-good API set \
                 (CoreDNS follows the same API server and is usually just as blind)"
            );
            metrics.dns_empty_ignored(&key);
        }
        ignoring_empty_dns = d.ignored_empty_dns;

        let published = match d.choice {
            Choice::Pending => out.set_meta(Meta {
                source: out.publisher.current().source,
                freshness: d.freshness,
                pending: true,
                prefer_close,
            }),
            Choice::Api => out.follow(
                WHICH_API,
                &api,
                Meta { source: Source::Api, freshness: d.freshness, pending: false, prefer_close },
            ),
            Choice::Dns => match &dns_set {
                Some(set) => out.follow(
                    WHICH_DNS,
                    set,
                    Meta { source: set.source, freshness: set.freshness, pending: false, prefer_close },
                ),
                None => false,
            },
            Choice::Vip => match vip {
                Some(addr) => {
                    let one = EndpointSet::of(
                        Source::Vip,
                        [Endpoint { name: Some(target.service.clone()), ..Endpoint::new(addr) }],
                    );
                    out.replace(
                        &one,
                        Meta { source: Source::Vip, freshness: d.freshness, pending: false, prefer_close },
                    )
                }
                None => false,
            },
        };
        if d.choice != last_choice {
            info!(from = ?last_choice, to = ?d.choice, "endpoint source changed");
            last_choice = d.choice;
        }
        if published {
            let set = out.publisher.current();
            debug!(version = set.version, source = %set.source, endpoints = set.len(), stale = set.is_stale(), "endpoint set published");
            metrics.published(&key, set);
        }
        let stale = out.publisher.current().stale_for(Instant::now()).as_secs_f64();
        metrics.stale(&key, stale);

        let tick = (stale > 0.0).then(|| Instant::now() + Duration::from_secs(1));
        let wake = match (d.wake_at, tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            r = view.changed() => if r.is_err() { return },
            r = wait::changed(dns.as_mut().map(|(rx, _)| rx)) => if r.is_err() { dns = None },
            r = wait::changed(index_rx.as_mut()) => if r.is_err() { index_rx = None },
            () = wait::sleep_until(wake) => {}
            () = out.publisher.closed() => {
                if let Some((_, task)) = dns.take() { task.abort(); }
                return;
            }
        }
    }
}

fn stale_reason(api: &EndpointSet) -> String {
    match api.freshness {
        Freshness::Stale { since } => format!("failing for {:.1}s", since.elapsed().as_secs_f64()),
        Freshness::Live => "no answer yet".to_owned(),
    }
}

/// The Service's VIP and port for `target`, from the namespace's Service index.
fn vip_from_index(index: &IndexState, target: &Target) -> Option<SocketAddr> {
    let info = index.services.get(&target.service)?;
    let ip = info.cluster_ip?;
    Some(SocketAddr::new(ip, info.vip_port(&target.port)?))
}
