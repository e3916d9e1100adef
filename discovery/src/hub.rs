//! [`Discovery`], one per process: one kube client, one DNS resolver, one EndpointSlice watch per
//! Kubernetes Service shared by every [`ServiceRef`] that maps to it, one Service watch per
//! namespace, and the RBAC self-check once per namespace actually watched.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::Api;
use tokio::sync::OnceCell;
use tracing::{Instrument, info, info_span, warn};

use crate::config::{DiscoveryConfig, IpFamily, Mode};
use crate::failover::Policy;
use crate::listwatch::{ProbeFailure, Timings};
use crate::mapping::services::ServiceIndex;
use crate::mapping::{Mapper, MappingError, MappingRule};
use crate::metrics::Metrics;
use crate::model::{ServiceRef, Source, Target};
use crate::publish::{Follower, Publisher, Versions};
use crate::rbac;
use crate::resolution::{ApiParts, DnsFactory, Resolution};
use crate::service::ServiceWatch;
use crate::source::api::{SliceWatch, SliceWatchSettings};
use crate::source::dns::{DnsSource, build_resolver};
use crate::source::slices::{Family, FamilyPolicy};

/// The label that says which zone a node is in.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Why discovery could not start, or could not follow a service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The identity cannot be mapped to a Service.
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// No DNS resolver could be built (DNS mode).
    #[error("failed to build the DNS resolver: {0}; set DISCOVERY_DNS_SERVER")]
    Resolver(String),
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
    /// Static mode: not one of `DISCOVERY_STATIC_ENDPOINTS` resolves to an address.
    #[error(
        "none of DISCOVERY_STATIC_ENDPOINTS resolves: {0}; give IP addresses or names this process can resolve \
         (/etc/hosts or DNS)"
    )]
    StaticHosts(String),
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) struct HubInner {
    pub cfg: DiscoveryConfig,
    pub metrics: Metrics,
    pub versions: Versions,
    client: std::result::Result<Client, String>,
    resolver: std::result::Result<TokioResolver, String>,
    family: FamilyPolicy,
    timings: Timings,
    state: Mutex<HubState>,
    zone: OnceCell<Option<String>>,
    _probe: Option<Probe>,
}

/// Asks the API server `GET /readyz` every interval while the hub lives. Any HTTP answer (even an
/// error status, or a 403 where the path is not public) means the server answers; only silence or a
/// transport error means it does not. Publishes since when it has not answered.
struct Probe {
    rx: tokio::sync::watch::Receiver<Option<ProbeFailure>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Probe {
    fn start(client: Client, every: Duration, timeout: Duration) -> Self {
        let (tx, rx) = tokio::sync::watch::channel(None);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let sent = std::time::Instant::now();
                let req = match http::Request::get("/readyz").body(Vec::new()) {
                    Ok(r) => r,
                    Err(_) => return,
                };
                let answered = match tokio::time::timeout(timeout.min(every), client.request_text(req)).await {
                    Ok(Ok(_)) | Ok(Err(kube::Error::Api(_))) => true,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "API server probe failed");
                        false
                    }
                    Err(_) => false,
                };
                tx.send_if_modified(|failure| match (answered, *failure) {
                    (true, Some(_)) => {
                        info!("the API server answers its probe again");
                        *failure = None;
                        true
                    }
                    (false, None) => {
                        warn!(?timeout, "the API server does not answer its probe (GET /readyz); ending the watches");
                        *failure = Some(ProbeFailure { since: sent, noticed: std::time::Instant::now() });
                        true
                    }
                    _ => false,
                });
            }
        });
        Probe { rx, task }
    }
}

#[derive(Default)]
struct HubState {
    slice_watches: HashMap<(String, String), Weak<SliceWatch>>,
    resolutions: HashMap<Target, Weak<Resolution>>,
    indexes: HashMap<String, Weak<ServiceIndex>>,
    checked: HashSet<String>,
}

/// Service discovery for one process. Cheap to clone; everything it started stops when the last
/// clone and the last [`ServiceWatch`] are gone.
#[derive(Clone)]
pub struct Discovery {
    pub(crate) inner: Arc<HubInner>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("mode", &self.inner.cfg.mode)
            .field("namespace", &self.inner.cfg.namespace)
            .finish()
    }
}

impl Discovery {
    /// Discovery as `cfg` says. In API mode the kube client comes from `DISCOVERY_API_SERVER`, else
    /// in-cluster config, else kubeconfig; the RBAC self-check of the default namespace runs here
    /// (bounded by `DISCOVERY_REQUEST_TIMEOUT`).
    pub async fn new(cfg: &DiscoveryConfig, metrics: Metrics) -> Result<Self> {
        let client = match cfg.mode {
            Mode::Api => make_client(cfg).await,
            Mode::Dns | Mode::Static => Err("no kubernetes client outside API mode".to_owned()),
        };
        Self::build(cfg, metrics, client).await
    }

    /// Like [`Discovery::new`], with the caller's kube client (used in API mode only).
    pub async fn with_client(cfg: &DiscoveryConfig, metrics: Metrics, client: Client) -> Result<Self> {
        Self::build(cfg, metrics, Ok(client)).await
    }

    async fn build(
        cfg: &DiscoveryConfig,
        metrics: Metrics,
        client: std::result::Result<Client, String>,
    ) -> Result<Self> {
        let resolver = match cfg.mode {
            Mode::Static => Err("static mode".to_owned()),
            Mode::Dns | Mode::Api => build_resolver(&cfg.dns).map_err(|e| e.to_string()),
        };
        match (&resolver, cfg.mode) {
            (Err(e), Mode::Dns) => return Err(Error::Resolver(e.clone())),
            (Err(e), Mode::Api) => {
                warn!(error = %e, "no DNS resolver: failover goes straight from the last-known-good set to the Service VIP")
            }
            _ => {}
        }
        if let (Err(e), Mode::Api) = (&client, cfg.mode) {
            warn!(error = %e, "no kubernetes API client; serving from the failover sources");
        }
        let preferred = match (cfg.ip_family, cfg.locality.pod_ip) {
            (IpFamily::Auto, Some(IpAddr::V6(_))) => Family::V6,
            _ => Family::V4,
        };
        let family = match cfg.ip_family {
            IpFamily::Auto => FamilyPolicy::Prefer(preferred),
            IpFamily::Ipv4 => FamilyPolicy::Only(Family::V4),
            IpFamily::Ipv6 => FamilyPolicy::Only(Family::V6),
        };
        let probe = match (&client, cfg.mode) {
            (Ok(c), Mode::Api) if !cfg.api.probe_interval.is_zero() => {
                Some(Probe::start(c.clone(), cfg.api.probe_interval, cfg.api.request_timeout))
            }
            _ => None,
        };
        let timings = Timings {
            watch_timeout: cfg.api.watch_timeout,
            idle_timeout: cfg.api.watch_idle_timeout,
            request_timeout: cfg.api.request_timeout,
            page_size: cfg.api.page_size,
            backoff: cfg.backoff,
            probe: probe.as_ref().map(|p| p.rx.clone()),
        };
        let hub = Discovery {
            inner: Arc::new(HubInner {
                cfg: cfg.clone(),
                metrics,
                versions: Versions::default(),
                client,
                resolver,
                family,
                timings,
                state: Mutex::new(HubState::default()),
                zone: OnceCell::new(),
                _probe: probe,
            }),
        };
        if cfg.mode == Mode::Api {
            hub.inner.check_namespace(&cfg.namespace).await?;
        }
        Ok(hub)
    }

    /// Starts following `service`: maps it to its Kubernetes Service (and, in API mode with
    /// annotations, keeps following the mapping), shares the watch of that Service with every other
    /// subscriber of this hub.
    pub async fn service(&self, service: ServiceRef) -> Result<ServiceWatch> {
        self.service_in(None, service).await
    }

    /// Like [`Discovery::service`], with `namespace` instead of the configured one (for the naming
    /// rule and annotation look-ups; explicit mappings keep theirs).
    pub async fn service_in(&self, namespace: Option<&str>, service: ServiceRef) -> Result<ServiceWatch> {
        let span = info_span!("discovery", service = %service, mode = ?self.inner.cfg.mode);
        let mut mapper = Mapper::from_config(&self.inner.cfg);
        if let Some(ns) = namespace {
            mapper = mapper.with_namespace(ns.to_owned());
        }
        self.inner.clone().service(service, mapper).instrument(span).await
    }

    /// The configuration.
    pub fn config(&self) -> &DiscoveryConfig {
        &self.inner.cfg
    }

    /// The kube client (API mode).
    pub fn kube_client(&self) -> Option<&Client> {
        self.inner.client.as_ref().ok()
    }

    /// This process's zone: `DISCOVERY_ZONE`, else the `topology.kubernetes.io/zone` label of the
    /// node named by `DISCOVERY_NODE_NAME` (read once; needs `get` on nodes), else `None`.
    pub async fn zone(&self) -> Option<String> {
        self.inner.zone.get_or_init(|| self.inner.find_zone()).await.clone()
    }
}

impl HubInner {
    async fn service(self: Arc<Self>, service: ServiceRef, mapper: Mapper) -> Result<ServiceWatch> {
        match self.cfg.mode {
            Mode::Static => {
                let (target, rule) = mapper.resolve(&service).unwrap_or_else(|_| {
                    let t = Target {
                        namespace: mapper.namespace().to_owned(),
                        service: "static".into(),
                        port: mapper.port().clone(),
                    };
                    (t, MappingRule::Explicit)
                });
                crate::source::fixed::check_resolvable(&self.cfg.static_endpoints, self.cfg.api.request_timeout)
                    .await?;
                let res = self.static_resolution(&target);
                Ok(ServiceWatch::fixed(service, target, rule, res))
            }
            Mode::Dns => {
                let (target, rule) = mapper.resolve(&service)?;
                let res = self.dns_resolution(&target)?;
                info!(k8s_service = %target, rule = ?rule, "discovery started");
                Ok(ServiceWatch::fixed(service, target, rule, res))
            }
            Mode::Api => {
                if let Some(target) = mapper.explicit(&service) {
                    self.check_namespace(&target.namespace).await?;
                    let res = self.api_resolution(&target).await;
                    info!(k8s_service = %target, rule = ?MappingRule::Explicit, "discovery started");
                    return Ok(ServiceWatch::fixed(service, target, MappingRule::Explicit, res));
                }
                let namespace = mapper.namespace().to_owned();
                self.check_namespace(&namespace).await?;
                let index = match (&self.client, self.cfg.api.annotations) {
                    (Ok(_), true) => Some(self.index(&namespace).await),
                    _ => None,
                };
                match index {
                    Some(index) => ServiceWatch::follow_annotations(self.clone(), service, mapper, index).await,
                    None => {
                        let (target, rule) = mapper.resolve(&service)?;
                        let res = self.api_resolution(&target).await;
                        info!(k8s_service = %target, rule = ?rule, "discovery started");
                        Ok(ServiceWatch::fixed(service, target, rule, res))
                    }
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks once per namespace that EndpointSlices may be listed and watched there. An API that
    /// cannot answer is not a denial: the check is tried again for the next subscriber.
    pub(crate) async fn check_namespace(&self, namespace: &str) -> Result<()> {
        let Ok(client) = &self.client else { return Ok(()) };
        if !self.cfg.api.rbac_check || self.lock().checked.contains(namespace) {
            return Ok(());
        }
        match rbac::missing(client, namespace, &rbac::FOR_SLICES, self.cfg.api.request_timeout).await {
            Ok(missing) if missing.is_empty() => {
                self.lock().checked.insert(namespace.to_owned());
                Ok(())
            }
            Ok(missing) => Err(Error::Forbidden {
                namespace: namespace.to_owned(),
                missing: missing.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                role: rbac::role_yaml(namespace, self.cfg.api.annotations),
            }),
            Err(e) => {
                warn!(namespace, error = %e, "could not check RBAC (API unreachable?); going on");
                Ok(())
            }
        }
    }

    /// The namespace's Service index (shared); disabled when Services may not be read.
    pub(crate) async fn index(&self, namespace: &str) -> Arc<ServiceIndex> {
        if let Some(i) = self.lock().indexes.get(namespace).and_then(Weak::upgrade) {
            return i;
        }
        let index = match &self.client {
            Err(e) => ServiceIndex::disabled(e.clone()),
            Ok(client) => {
                let denied = if self.cfg.api.rbac_check {
                    rbac::missing(client, namespace, &rbac::FOR_SERVICES, self.cfg.api.request_timeout)
                        .await
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                if denied.is_empty() {
                    ServiceIndex::start(client.clone(), namespace, self.timings.clone(), self.metrics.clone())
                } else {
                    let why = format!(
                        "may not {} in namespace {namespace:?}: annotation mapping is skipped and the naming rule \
                         applies (grant get/list/watch on services, or set DISCOVERY_ANNOTATIONS=false)",
                        denied.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                    );
                    warn!(namespace, "{why}");
                    ServiceIndex::disabled(why)
                }
            }
        };
        let index = Arc::new(index);
        let mut s = self.lock();
        // Another subscriber may have built one meanwhile: keep the first.
        if let Some(i) = s.indexes.get(namespace).and_then(Weak::upgrade) {
            return i;
        }
        s.indexes.insert(namespace.to_owned(), Arc::downgrade(&index));
        index
    }

    fn shared(&self, target: &Target) -> Option<Arc<Resolution>> {
        let mut s = self.lock();
        s.resolutions.retain(|_, w| w.strong_count() > 0);
        s.resolutions.get(target).and_then(Weak::upgrade)
    }

    fn remember(&self, res: Resolution) -> Arc<Resolution> {
        let res = Arc::new(res);
        let mut s = self.lock();
        if let Some(existing) = s.resolutions.get(&res.target).and_then(Weak::upgrade) {
            return existing;
        }
        s.resolutions.insert(res.target.clone(), Arc::downgrade(&res));
        res
    }

    fn static_resolution(&self, target: &Target) -> Arc<Resolution> {
        if let Some(r) = self.shared(target) {
            return r;
        }
        let (publisher, rx) = Publisher::new(Source::Static, self.versions.clone());
        let task = tokio::spawn(crate::source::fixed::run_static(
            self.cfg.static_endpoints.clone(),
            self.cfg.dns.ttl_ceiling,
            self.cfg.api.request_timeout,
            publisher,
        ));
        self.remember(Resolution::of_task(target.clone(), rx, task))
    }

    fn dns_source(&self, target: &Target) -> Option<DnsSource> {
        let resolver = self.resolver.as_ref().ok()?.clone();
        Some(DnsSource {
            resolver,
            target: target.clone(),
            cfg: self.cfg.dns.clone(),
            fallback_port: self.cfg.fallback_port,
            backoff: self.cfg.backoff,
            metrics: self.metrics.clone(),
            key: target.to_string(),
        })
    }

    fn dns_resolution(&self, target: &Target) -> Result<Arc<Resolution>> {
        if let Some(r) = self.shared(target) {
            return Ok(r);
        }
        let source = self
            .dns_source(target)
            .ok_or_else(|| Error::Resolver(self.resolver.as_ref().err().cloned().unwrap_or_default()))?;
        let (rx, task) = source.spawn(&self.versions);
        Ok(self.remember(Resolution::of_task(target.clone(), rx, task)))
    }

    /// The shared EndpointSlice watch of `namespace/service`.
    fn slice_watch(&self, client: &Client, target: &Target) -> Arc<SliceWatch> {
        let key = (target.namespace.clone(), target.service.clone());
        let mut s = self.lock();
        s.slice_watches.retain(|_, w| w.strong_count() > 0);
        if let Some(w) = s.slice_watches.get(&key).and_then(Weak::upgrade) {
            return w;
        }
        let settings = SliceWatchSettings {
            timings: self.timings.clone(),
            family: self.family,
            allow_loopback: self.cfg.api.allow_loopback,
            versions: self.versions.clone(),
            metrics: self.metrics.clone(),
        };
        let w = Arc::new(SliceWatch::start(client.clone(), &target.namespace, &target.service, settings));
        s.slice_watches.insert(key, Arc::downgrade(&w));
        w
    }

    pub(crate) async fn api_resolution(&self, target: &Target) -> Arc<Resolution> {
        if let Some(r) = self.shared(target) {
            return r;
        }
        let (slices, view, failed_api) = match &self.client {
            Ok(client) => {
                let w = self.slice_watch(client, target);
                let view = w.view(&target.port);
                (Some(w), view, None)
            }
            Err(_) => {
                // No client: an API view that failed from the start, so failover serves at once.
                let (mut p, rx) = Publisher::new(Source::Api, self.versions.clone());
                let since = std::time::Instant::now();
                p.publish(
                    Vec::new(),
                    crate::publish::Meta {
                        source: Source::Api,
                        freshness: crate::model::Freshness::Stale { since },
                        pending: true,
                        prefer_close: false,
                    },
                );
                (None, rx, Some(p))
            }
        };
        let index = match (&self.client, self.cfg.api.annotations) {
            (Ok(_), true) => Some(self.index(&target.namespace).await),
            _ => None,
        };
        let dns: Option<DnsFactory> = self.dns_source(target).map(|source| {
            let versions = self.versions.clone();
            Box::new(move || source.clone().spawn(&versions)) as DnsFactory
        });
        let parts = ApiParts {
            target: target.clone(),
            slices,
            view,
            failed_api,
            index,
            dns,
            policy: Policy {
                enabled: self.cfg.api.failover,
                max_stale: self.cfg.api.max_stale,
                cold_start_timeout: self.cfg.api.cold_start_timeout,
                recovery_hold: self.cfg.api.recovery_hold,
            },
            fallback_port: self.cfg.fallback_port,
            cluster_domain: self.cfg.dns.cluster_domain.clone(),
            request_timeout: self.cfg.api.request_timeout,
            metrics: self.metrics.clone(),
        };
        let (publisher, _) = Publisher::new(Source::Api, self.versions.clone());
        self.remember(Resolution::api(parts, Follower::new(publisher)))
    }

    async fn find_zone(&self) -> Option<String> {
        if let Some(z) = &self.cfg.locality.zone {
            return Some(z.clone());
        }
        let node = self.cfg.locality.node_name.as_ref()?;
        let Ok(client) = &self.client else {
            warn!(node, "DISCOVERY_NODE_NAME is set but there is no kubernetes client (API mode only); zone unknown");
            return None;
        };
        let api: Api<Node> = Api::all(client.clone());
        match tokio::time::timeout(self.cfg.api.request_timeout, api.get(node)).await {
            Ok(Ok(n)) => {
                let zone = n.metadata.labels.and_then(|l| l.get(ZONE_LABEL).cloned());
                match &zone {
                    Some(z) => info!(node, zone = %z, "zone read from the node's label"),
                    None => warn!(node, "the node has no {ZONE_LABEL} label; zone awareness is off"),
                }
                zone
            }
            Ok(Err(kube::Error::Api(s))) if s.code == 403 => {
                warn!(
                    node,
                    "may not get nodes: zone unknown, zone awareness is off (apply the zone overlay's ClusterRole, \
                     or set DISCOVERY_ZONE)"
                );
                None
            }
            Ok(Err(e)) => {
                warn!(node, error = %e, "failed to read the node; zone awareness is off");
                None
            }
            Err(_) => {
                warn!(node, timeout = ?self.cfg.api.request_timeout, "reading the node timed out; zone awareness is off");
                None
            }
        }
    }
}

async fn make_client(cfg: &DiscoveryConfig) -> std::result::Result<Client, String> {
    let infer = async {
        match &cfg.api.server {
            Some(url) => {
                let uri = url.parse().map_err(|e| format!("failed to parse DISCOVERY_API_SERVER={url:?}: {e}"))?;
                Ok(kube::Config::new(uri))
            }
            None => kube::Config::infer().await.map_err(|e| {
                format!("failed to find kubernetes credentials (in-cluster service account or kubeconfig): {e}")
            }),
        }
    };
    let mut config = match tokio::time::timeout(cfg.api.request_timeout, infer).await {
        Ok(c) => c?,
        Err(_) => return Err(format!("finding kubernetes credentials took over {:?}", cfg.api.request_timeout)),
    };
    config.connect_timeout = Some(cfg.api.request_timeout.min(Duration::from_secs(5)));
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
