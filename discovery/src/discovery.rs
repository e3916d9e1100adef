//! The running lookup of one Dubbo service: mapping, then the sources of the configured mode, then
//! failover, published as versioned [`EndpointSet`] snapshots on a watch channel.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, ListParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{Instrument, info, info_span, warn};

use crate::config::{DiscoveryConfig, Mode};
use crate::failover::{self, Policy, View};
use crate::mapping::{Mapper, MappingError, MappingRule};
use crate::metrics::Metrics;
use crate::model::{Endpoint, EndpointSet, Freshness, Host, PortSpec, ServiceRef, Source, Target, normalize};
use crate::rbac;
use crate::source::api::ApiSource;
use crate::source::dns::{DnsSource, service_fqdn};
use crate::source::{SourceState, publish_failure};

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The identity cannot be mapped to a Service.
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// No DNS resolver could be built (DNS mode).
    #[error("failed to build the DNS resolver: {0}; set DISCOVERY_DNS_SERVER")]
    Resolver(#[source] hickory_resolver::net::NetError),
    /// The ServiceAccount lacks what the EndpointSlice watch needs.
    #[error(
        "the kubernetes identity may not {missing} in namespace {namespace:?} (checked with a \
         SelfSubjectAccessReview); apply this Role and bind it to the pod's ServiceAccount:\n{role}"
    )]
    Forbidden {
        /// The namespace.
        namespace: String,
        /// What is missing, comma-separated.
        missing: String,
        /// The Role and RoleBinding to apply.
        role: String,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Aborts the tasks when the last handle goes.
#[derive(Debug)]
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

#[derive(Debug)]
struct Inner {
    service: ServiceRef,
    target: Target,
    rule: MappingRule,
    rx: watch::Receiver<EndpointSet>,
    _tasks: Tasks,
}

/// A live view of one service's providers. Cheap to clone; the background work stops when the last
/// clone is dropped.
#[derive(Clone, Debug)]
pub struct Discovery {
    inner: Arc<Inner>,
}

impl Discovery {
    /// Maps `service` to its Kubernetes Service and starts finding its endpoints as `cfg` says. In
    /// API mode the kube client comes from `DISCOVERY_API_SERVER`, else in-cluster config, else
    /// kubeconfig.
    pub async fn start(cfg: &DiscoveryConfig, service: ServiceRef, metrics: Metrics) -> Result<Self> {
        let client = match cfg.mode {
            Mode::Api => Some(make_client(cfg).await),
            Mode::Dns | Mode::Static => None,
        };
        Self::start_inner(cfg, service, metrics, client).await
    }

    /// Like [`Discovery::start`], with the caller's kube client for API mode (ignored otherwise).
    pub async fn start_with_client(
        cfg: &DiscoveryConfig,
        service: ServiceRef,
        metrics: Metrics,
        client: Client,
    ) -> Result<Self> {
        Self::start_inner(cfg, service, metrics, Some(Ok(client))).await
    }

    async fn start_inner(
        cfg: &DiscoveryConfig,
        service: ServiceRef,
        metrics: Metrics,
        client: Option<Result<Client, String>>,
    ) -> Result<Self> {
        let key = service.to_string();
        let span = info_span!("discovery", service = %key, mode = ?cfg.mode);
        let mapper = Mapper::from_config(cfg);
        let (out_tx, out_rx) = watch::channel(EndpointSet::pending(match cfg.mode {
            Mode::Api => Source::Api,
            Mode::Dns => Source::Dns,
            Mode::Static => Source::Static,
        }));
        let publisher = Publisher { tx: out_tx, metrics: metrics.clone(), key: key.clone() };
        let mut tasks = Vec::new();
        let (target, rule) = match cfg.mode {
            Mode::Static => {
                let (target, rule) = mapper.resolve(&service).unwrap_or_else(|_| {
                    let t = Target {
                        namespace: mapper.namespace().to_owned(),
                        service: "static".into(),
                        port: mapper.port().clone(),
                    };
                    (t, MappingRule::Explicit)
                });
                let view = View {
                    source: Source::Static,
                    endpoints: Some(Arc::from(normalize(cfg.static_endpoints.clone()))),
                    freshness: Freshness::Live,
                };
                publisher.publish(&view);
                // The sender must outlive this call: park it in a task that ends with the handle.
                tasks.push(tokio::spawn(async move { publisher.tx.closed().await }));
                (target, rule)
            }
            Mode::Dns => {
                let (target, rule) = mapper.resolve(&service)?;
                let source =
                    DnsSource::new(cfg, target.clone(), metrics.clone(), key.clone()).map_err(Error::Resolver)?;
                let (tx, rx) = watch::channel(SourceState::new(Source::Dns));
                tasks.push(tokio::spawn(source.run(tx).instrument(span.clone())));
                tasks.push(tokio::spawn(run_dns_mode(rx, publisher).instrument(span.clone())));
                (target, rule)
            }
            Mode::Api => {
                let client = client.unwrap_or_else(|| Err("no kubernetes client".to_owned()));
                if let (Ok(client), true) = (&client, cfg.api.rbac_check) {
                    check_rbac(client, &mapper, &key).instrument(span.clone()).await?;
                }
                let mut found = mapper.explicit(&service).map(|t| (t, MappingRule::Explicit, None));
                if let (None, Ok(client), true) = (&found, &client, cfg.api.annotations) {
                    found = lookup_annotations(client, &mapper, &service, cfg.api.cold_start_timeout)
                        .instrument(span.clone())
                        .await;
                }
                let (target, rule, cluster_ip) = match found {
                    Some(f) => f,
                    None => {
                        let (t, r) = mapper.resolve(&service)?;
                        (t, r, None)
                    }
                };
                let (api_tx, api_rx) = watch::channel(SourceState::new(Source::Api));
                match client {
                    Ok(client) => {
                        let source = ApiSource {
                            client,
                            target: target.clone(),
                            cfg: cfg.api.clone(),
                            backoff: cfg.backoff,
                            metrics: metrics.clone(),
                            key: key.clone(),
                        };
                        tasks.push(tokio::spawn(source.run(api_tx).instrument(span.clone())));
                    }
                    Err(e) => {
                        warn!(parent: &span, error = %e, "no kubernetes API client; serving from the failover sources");
                        publish_failure(&api_tx, e);
                        // Keep the sender so the coordinator sees a failing source, not a closed one.
                        tasks.push(tokio::spawn(async move { api_tx.closed().await }));
                    }
                }
                let dns = match DnsSource::new(cfg, target.clone(), metrics.clone(), key.clone()) {
                    Ok(source) => Some(source),
                    Err(e) => {
                        warn!(parent: &span, error = %e, "no DNS resolver: failover goes straight to the Service VIP");
                        None
                    }
                };
                let vip_port = match target.port {
                    PortSpec::Number(n) => n,
                    PortSpec::Name(_) => cfg.fallback_port,
                };
                let vip_host = match cluster_ip {
                    Some(ip) => Host::Ip(ip),
                    None => Host::Name(service_fqdn(&target, &cfg.dns.cluster_domain).trim_end_matches('.').to_owned()),
                };
                let policy = Policy {
                    enabled: cfg.api.failover,
                    max_stale: cfg.api.max_stale,
                    cold_start_timeout: cfg.api.cold_start_timeout,
                };
                let vip = Endpoint::new(vip_host, vip_port);
                tasks.push(tokio::spawn(run_api_mode(policy, api_rx, dns, vip, publisher).instrument(span.clone())));
                (target, rule)
            }
        };
        info!(parent: &span, target = %target, rule = ?rule, "discovery started");
        Ok(Discovery { inner: Arc::new(Inner { service, target, rule, rx: out_rx, _tasks: Tasks(tasks) }) })
    }

    /// The latest snapshot.
    pub fn current(&self) -> EndpointSet {
        self.inner.rx.borrow().clone()
    }

    /// A receiver of every new snapshot; its current value counts as unseen.
    pub fn watch(&self) -> watch::Receiver<EndpointSet> {
        self.inner.rx.clone()
    }

    /// Waits until the first answer (possibly empty) is known, up to `timeout`.
    pub async fn ready(&self, timeout: Duration) -> Option<EndpointSet> {
        let mut rx = self.watch();
        tokio::time::timeout(timeout, rx.wait_for(|s| !s.pending)).await.ok()?.ok().map(|s| s.clone())
    }

    /// The Dubbo identity.
    pub fn service(&self) -> &ServiceRef {
        &self.inner.service
    }

    /// The Kubernetes Service it maps to.
    pub fn target(&self) -> &Target {
        &self.inner.target
    }

    /// How the target was chosen.
    pub fn rule(&self) -> MappingRule {
        self.inner.rule
    }
}

async fn make_client(cfg: &DiscoveryConfig) -> Result<Client, String> {
    let mut config = match &cfg.api.server {
        Some(url) => {
            let uri = url.parse().map_err(|e| format!("failed to parse DISCOVERY_API_SERVER={url:?}: {e}"))?;
            kube::Config::new(uri)
        }
        None => kube::Config::infer().await.map_err(|e| {
            format!("failed to find kubernetes credentials (in-cluster service account or kubeconfig): {e}")
        })?,
    };
    config.connect_timeout = Some(Duration::from_secs(5));
    // A watch lasts up to watch_timeout; the read timeout must not cut it first.
    config.read_timeout = Some(cfg.api.watch_timeout + Duration::from_secs(30));
    Client::try_from(config).map_err(|e| {
        let hint = if e.to_string().contains("No CA certificates") {
            " (the TLS connector loads the system CA certificates even for http://: install ca-certificates in the image)"
        } else {
            ""
        };
        format!("failed to build the kubernetes client: {e}{hint}")
    })
}

async fn check_rbac(client: &Client, mapper: &Mapper, key: &str) -> Result<()> {
    let ns = mapper.namespace();
    let mut missing = Vec::new();
    for p in &rbac::REQUIRED {
        match rbac::allowed(client, ns, p).await {
            Ok(true) => {}
            Ok(false) => missing.push(p.to_string()),
            Err(e) => {
                warn!(service = %key, error = %e, "could not check RBAC (API unreachable?); going on");
                return Ok(());
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Forbidden { namespace: ns.to_owned(), missing: missing.join(", "), role: rbac::role_yaml(ns, true) })
}

async fn lookup_annotations(
    client: &Client,
    mapper: &Mapper,
    service: &ServiceRef,
    timeout: Duration,
) -> Option<(Target, MappingRule, Option<std::net::IpAddr>)> {
    let api: Api<Service> = Api::namespaced(client.clone(), mapper.namespace());
    let list = match tokio::time::timeout(timeout, api.list(&ListParams::default())).await {
        Ok(Ok(list)) => list,
        Ok(Err(kube::Error::Api(s))) if s.code == 403 => {
            warn!(
                namespace = mapper.namespace(),
                "may not list services: annotation mapping skipped, the naming rule applies \
                 (grant list on services, or set DISCOVERY_ANNOTATIONS=false to silence this)"
            );
            return None;
        }
        Ok(Err(e)) => {
            warn!(error = %e, "failed to list services for annotation mapping; the naming rule applies");
            return None;
        }
        Err(_) => {
            warn!(?timeout, "listing services for annotation mapping timed out; the naming rule applies");
            return None;
        }
    };
    let empty = Default::default();
    let pairs = list
        .items
        .iter()
        .filter_map(|s| Some((s.metadata.name.as_deref()?, s.metadata.annotations.as_ref().unwrap_or(&empty))));
    let (target, n) = mapper.by_annotations(service, pairs)?;
    if n > 1 {
        warn!(%service, chosen = %target.service, matches = n, "several Services declare this service; using the first by name");
    }
    let cluster_ip = list
        .items
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(target.service.as_str()))
        .and_then(|s| s.spec.as_ref()?.cluster_ip.as_deref()?.parse().ok());
    Some((target, MappingRule::Annotation, cluster_ip))
}

/// Publishes views as versioned snapshots, only when something visible changed.
struct Publisher {
    tx: watch::Sender<EndpointSet>,
    metrics: Metrics,
    key: String,
}

impl Publisher {
    fn publish(&self, view: &View) {
        let pending = view.endpoints.is_none();
        let endpoints = view.endpoints.clone().unwrap_or_else(|| Arc::from(Vec::new()));
        let changed = self.tx.send_if_modified(|cur| {
            if cur.source == view.source
                && cur.freshness == view.freshness
                && cur.pending == pending
                && *cur.endpoints == *endpoints
            {
                return false;
            }
            *cur = EndpointSet {
                version: cur.version + 1,
                source: view.source,
                endpoints: endpoints.clone(),
                freshness: view.freshness,
                published_at: SystemTime::now(),
                pending,
            };
            true
        });
        if changed {
            let set = self.tx.borrow();
            let (ready, serving, not_ready) = set.counts();
            info!(
                version = set.version,
                source = %set.source,
                pending = set.pending,
                ready,
                serving,
                not_ready,
                stale = matches!(set.freshness, Freshness::Stale { .. }),
                "endpoint set updated"
            );
            self.metrics.published(&self.key, &set);
        }
        let stale = match view.freshness {
            Freshness::Live => 0.0,
            Freshness::Stale { since } => since.elapsed().as_secs_f64(),
        };
        self.metrics.stale(&self.key, stale);
    }
}

/// While stale, wake every second to keep the staleness gauge current.
fn stale_tick(view: &View) -> Option<tokio::time::Instant> {
    matches!(view.freshness, Freshness::Stale { .. }).then(|| tokio::time::Instant::now() + Duration::from_secs(1))
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn run_dns_mode(mut rx: watch::Receiver<SourceState>, publisher: Publisher) {
    loop {
        let state = rx.borrow_and_update().clone();
        let view = failover::View::of(&state);
        publisher.publish(&view);
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            () = sleep_until_opt(stale_tick(&view)) => {}
            () = publisher.tx.closed() => return,
        }
    }
}

async fn run_api_mode(
    policy: Policy,
    mut api_rx: watch::Receiver<SourceState>,
    dns_source: Option<DnsSource>,
    vip: Endpoint,
    publisher: Publisher,
) {
    let started = Instant::now();
    // The DNS source runs only while failover wants it; it is cloned from `dns_source` each time.
    let mut dns: Option<(watch::Receiver<SourceState>, JoinHandle<()>)> = None;
    loop {
        let api = api_rx.borrow_and_update().clone();
        let dns_state = dns.as_mut().map(|(rx, _)| rx.borrow_and_update().clone());
        let d = failover::decide(&policy, started, Instant::now(), &api, dns_state.as_ref(), &vip);
        if d.want_dns
            && dns.is_none()
            && let Some(src) = dns_source.clone()
        {
            info!(error = api.last_error.as_deref().unwrap_or(""), "API source unavailable; starting DNS failover");
            let (tx, rx) = watch::channel(SourceState::new(Source::Dns));
            dns = Some((rx, tokio::spawn(src.run(tx).in_current_span())));
            continue;
        }
        if !d.want_dns
            && let Some((_, task)) = dns.take()
        {
            info!("API source recovered; stopping DNS failover");
            task.abort();
        }
        publisher.publish(&d.view);
        let wake = match (d.wake_at.map(tokio::time::Instant::from_std), stale_tick(&d.view)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            r = api_rx.changed() => if r.is_err() { return },
            r = async {
                match dns.as_mut() {
                    Some((rx, _)) => rx.changed().await,
                    None => std::future::pending().await,
                }
            } => if r.is_err() { dns = None },
            () = sleep_until_opt(wake) => {}
            () = publisher.tx.closed() => {
                if let Some((_, task)) = dns.take() { task.abort(); }
                return;
            }
        }
    }
}
