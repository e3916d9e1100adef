//! The endpoints of one [`Target`]: its sources (the shared EndpointSlice view; DNS; the VIP) and,
//! in API mode, failover between them, published as one set. Every [`crate::ServiceWatch`] bound to
//! the same target shares one resolution.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::failover::{self, Choice, Fallbacks, Outage, Policy};
use crate::mapping::services::{IndexState, ServiceIndex};
use crate::metrics::Metrics;
use crate::model::{Endpoint, EndpointSet, Freshness, Source, Target, TrafficDistribution};
use crate::publish::{Follower, Meta};
use crate::source::api::SliceWatch;
use crate::source::dns::service_fqdn;
use crate::wait;

/// One target's set; its tasks stop (and its gauges go) when the last handle goes.
#[derive(Debug)]
pub(crate) struct Resolution {
    pub target: Target,
    pub rx: watch::Receiver<EndpointSet>,
    task: JoinHandle<()>,
    metrics: Metrics,
    /// Keeps the shared watches alive while this resolution is.
    _slices: Option<Arc<SliceWatch>>,
    _index: Option<Arc<ServiceIndex>>,
}

impl Drop for Resolution {
    fn drop(&mut self) {
        self.task.abort();
        self.metrics.forget(&self.target.to_string());
    }
}

impl Resolution {
    /// A resolution whose set is published by an already running task (DNS or static mode).
    pub(crate) fn of_task(
        target: Target,
        rx: watch::Receiver<EndpointSet>,
        task: JoinHandle<()>,
        metrics: Metrics,
    ) -> Self {
        Resolution { target, rx, task, metrics, _slices: None, _index: None }
    }

    /// API mode: the slice view, DNS on demand, the VIP; failover between them.
    pub(crate) fn api(parts: ApiParts, follower: Follower) -> Self {
        let rx = follower.publisher.subscribe();
        let target = parts.target.clone();
        let slices = parts.slices.clone();
        let index = parts.index.clone();
        let metrics = parts.metrics.clone();
        let span = tracing::info_span!("resolution", k8s_service = %target);
        let state = ApiFailover::new(parts, follower);
        let task = {
            let _entered = span.enter();
            crate::task::spawn("resolution", target.to_string(), metrics.restarts("resolution"), state)
        };
        Resolution { target, rx, task, metrics, _slices: slices, _index: index }
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
    let found = crate::source::lookup_host(host.trim_end_matches('.'), port, timeout).await.ok()?;
    found.into_iter().next()
}

const WHICH_API: u64 = 0;
const WHICH_DNS: u64 = 1;

/// The failover loop of one API-mode target, with what it keeps between changes.
struct ApiFailover {
    target: Target,
    key: String,
    view: watch::Receiver<EndpointSet>,
    _failed_api: Option<crate::publish::Publisher>,
    index_rx: Option<watch::Receiver<IndexState>>,
    dns_factory: Option<DnsFactory>,
    policy: Policy,
    fallback_port: u16,
    cluster_domain: String,
    request_timeout: Duration,
    metrics: Metrics,
    out: Follower,
    started: Instant,
    outage: Outage,
    dns: Option<(watch::Receiver<EndpointSet>, JoinHandle<()>)>,
    looked_up_vip: Option<(Instant, Option<SocketAddr>)>,
    last_choice: Choice,
    ignoring_empty_dns: bool,
}

impl ApiFailover {
    fn new(parts: ApiParts, out: Follower) -> Self {
        ApiFailover {
            key: parts.target.to_string(),
            target: parts.target,
            view: parts.view,
            _failed_api: parts.failed_api,
            index_rx: parts.index.as_ref().map(|i| i.watch()),
            dns_factory: parts.dns,
            policy: parts.policy,
            fallback_port: parts.fallback_port,
            cluster_domain: parts.cluster_domain,
            request_timeout: parts.request_timeout,
            metrics: parts.metrics,
            out,
            started: Instant::now(),
            outage: Outage::default(),
            dns: None,
            looked_up_vip: None,
            last_choice: Choice::Pending,
            ignoring_empty_dns: false,
        }
    }
}

impl crate::task::Supervised for ApiFailover {
    async fn run(&mut self) {
        loop {
            crate::task::checkpoint("resolution");
            match self.step().await {
                Step::Again => continue,
                Step::Wait(wake) => {
                    if !self.wait(wake).await {
                        return;
                    }
                }
            }
        }
    }

    /// What was published may be half-done: say it is stale (so failover and subscribers see it),
    /// stop DNS, and decide again from scratch.
    fn recover(&mut self) {
        if let Some((_, task)) = self.dns.take() {
            task.abort();
        }
        let current = self.out.publisher.current().clone();
        let meta = Meta { freshness: Freshness::Stale { since: Instant::now() }, ..Meta::of(&current) };
        self.out.replace(&current, meta);
        self.outage = Outage::default();
        self.last_choice = Choice::Pending;
    }
}

/// What the loop does after one decision.
enum Step {
    /// Decide again at once (DNS was just started).
    Again,
    /// Wait for a change, or until this instant.
    Wait(Option<Instant>),
}

impl ApiFailover {
    /// Looks at every source, decides what to serve, publishes it.
    async fn step(&mut self) -> Step {
        let api = self.view.borrow_and_update().clone();
        let now = Instant::now();
        let api_failing = match api.freshness {
            Freshness::Stale { since } => Some(since),
            Freshness::Live => None,
        };
        self.outage.observe(api_failing, now, self.policy.recovery_hold);
        let dns_set = self.dns.as_mut().map(|(rx, _)| rx.borrow_and_update().clone());
        let index_knows = self.index_rx.as_ref().is_some_and(|rx| rx.borrow().disabled.is_none());
        let (mut vip, traffic) = match self.index_rx.as_mut() {
            Some(rx) if index_knows => {
                let index = rx.borrow_and_update();
                let info = index.services.get(&self.target.service);
                (vip_from_index(&index, &self.target), info.map_or(TrafficDistribution::Any, |i| i.traffic))
            }
            _ => (self.looked_up_vip.and_then(|(_, v)| v), TrafficDistribution::Any),
        };
        let (policy, started, outage, dns_available) =
            (self.policy, self.started, self.outage, self.dns_factory.is_some());
        let decide = |vip_available: bool| {
            let fallbacks = Fallbacks { dns: dns_set.as_ref(), dns_available, vip_available };
            failover::decide(&policy, started, now, &api, &outage, fallbacks)
        };
        let mut d = decide(vip.is_some());
        let lookup_due = self.looked_up_vip.is_none_or(|(at, _)| now.duration_since(at) > VIP_LOOKUP_EVERY);
        if d.want_dns && !index_knows && lookup_due {
            // No Service spec to read: ask the system resolver for the Service's name (its VIP).
            vip = lookup_vip(&self.target, &self.cluster_domain, self.fallback_port, self.request_timeout).await;
            self.looked_up_vip = Some((now, vip));
            d = decide(vip.is_some());
        }

        if d.want_dns
            && self.dns.is_none()
            && let Some(make) = &self.dns_factory
        {
            info!(error = %stale_reason(&api), "API source unavailable; starting DNS failover");
            self.dns = Some(make());
            return Step::Again;
        }
        if !d.want_dns
            && let Some((_, task)) = self.dns.take()
        {
            info!("API source recovered and held for the recovery hold; stopping DNS failover");
            task.abort();
        }
        if d.ignored_empty_dns && !self.ignoring_empty_dns {
            warn!(
                "DNS answered with no endpoints during the API outage; keeping the last-known-good API set \
                 (CoreDNS follows the same API server and is usually just as blind)"
            );
            self.metrics.dns_empty_ignored(&self.key);
        }
        self.ignoring_empty_dns = d.ignored_empty_dns;
        self.publish(&d, &api, dns_set.as_ref(), vip, traffic);
        let stale = self.out.publisher.current().stale_for(Instant::now()).as_secs_f64();
        self.metrics.stale(&self.key, stale);
        let tick = (stale > 0.0).then(|| Instant::now() + Duration::from_secs(1));
        Step::Wait(match (d.wake_at, tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    fn publish(
        &mut self,
        d: &failover::Decision,
        api: &EndpointSet,
        dns_set: Option<&EndpointSet>,
        vip: Option<SocketAddr>,
        traffic: TrafficDistribution,
    ) {
        let out = &mut self.out;
        let published = match d.choice {
            Choice::Pending => out.set_meta(Meta {
                source: out.publisher.current().source,
                freshness: d.freshness,
                pending: true,
                traffic,
            }),
            Choice::Api => out.follow(
                WHICH_API,
                api,
                Meta { source: Source::Api, freshness: d.freshness, pending: false, traffic },
            ),
            Choice::Dns => match dns_set {
                Some(set) => out.follow(
                    WHICH_DNS,
                    set,
                    Meta { source: set.source, freshness: set.freshness, pending: false, traffic },
                ),
                None => false,
            },
            Choice::Vip => match vip {
                Some(addr) => {
                    let one = EndpointSet::of(
                        Source::Vip,
                        [Endpoint { name: Some(Arc::from(self.target.service.as_str())), ..Endpoint::new(addr) }],
                    );
                    out.replace(&one, Meta { source: Source::Vip, freshness: d.freshness, pending: false, traffic })
                }
                None => false,
            },
        };
        if d.choice != self.last_choice {
            info!(from = ?self.last_choice, to = ?d.choice, "endpoint source changed");
            self.last_choice = d.choice;
        }
        if published {
            let set = out.publisher.current();
            debug!(version = set.version, source = %set.source, endpoints = set.len(), stale = set.is_stale(), "endpoint set published");
            self.metrics.published(&self.key, set);
        }
    }

    /// Waits for any source to change, or `wake`; false once nobody follows this target.
    async fn wait(&mut self, wake: Option<Instant>) -> bool {
        tokio::select! {
            r = self.view.changed() => r.is_ok(),
            r = wait::changed(self.dns.as_mut().map(|(rx, _)| rx)) => {
                if r.is_err() { self.dns = None }
                true
            }
            r = wait::changed(self.index_rx.as_mut()) => {
                if r.is_err() { self.index_rx = None }
                true
            }
            () = wait::sleep_until(wake) => true,
            () = self.out.publisher.closed() => {
                if let Some((_, task)) = self.dns.take() { task.abort(); }
                false
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
