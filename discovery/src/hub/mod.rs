//! [`Discovery`], one per process: one kube client, one DNS resolver, one EndpointSlice watch per
//! Kubernetes Service shared by every [`ServiceRef`] that maps to it, one Service watch per
//! namespace, the API server probe, and this process's zone.

mod kube_client;
mod probe;
pub(crate) mod registry;
mod zone;

use std::net::IpAddr;
use std::sync::Arc;

use kube::Client;
use tokio::sync::watch;
use tracing::{Instrument, info, info_span, warn};

use crate::config::{DiscoveryConfig, IpFamily, Mode};
use crate::error::{Error, Result};
use crate::listwatch::Timings;
use crate::mapping::{Mapper, MappingRule};
use crate::metrics::Metrics;
use crate::model::{ServiceRef, Target};
use crate::service::ServiceWatch;
use crate::source::dns::build_resolver;
use crate::source::slices::{Family, FamilyPolicy};

use probe::Probe;
use registry::Registry;
pub use zone::ZONE_LABEL;
use zone::Zone;

/// Service discovery for one process. Cheap to clone; everything it started stops when the last
/// clone and the last [`ServiceWatch`] are gone.
#[derive(Clone)]
pub struct Discovery {
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cfg = &self.registry.cfg;
        f.debug_struct("Discovery").field("mode", &cfg.mode).field("namespace", &cfg.namespace).finish()
    }
}

impl Discovery {
    /// Discovery as `cfg` says, after checking `cfg` ([`DiscoveryConfig::validate`]). In API mode
    /// the kube client comes from `DISCOVERY_API_SERVER`, else in-cluster config, else kubeconfig
    /// (the application chooses kube's TLS stack); the RBAC self-check of the default namespace
    /// runs here (bounded by `DISCOVERY_REQUEST_TIMEOUT`). Must run within a Tokio runtime.
    pub async fn new(cfg: &DiscoveryConfig, metrics: Metrics) -> Result<Self> {
        cfg.validate()?;
        let client = match cfg.mode {
            Mode::Api => kube_client::make_client(cfg).await,
            Mode::Dns | Mode::Static => Err("no kubernetes client outside API mode".to_owned()),
        };
        Self::build(cfg, metrics, client).await
    }

    /// Like [`Discovery::new`], with the caller's kube client (used in API mode only).
    pub async fn with_client(cfg: &DiscoveryConfig, metrics: Metrics, client: Client) -> Result<Self> {
        cfg.validate()?;
        Self::build(cfg, metrics, Ok(client)).await
    }

    async fn build(
        cfg: &DiscoveryConfig,
        metrics: Metrics,
        client: std::result::Result<Client, String>,
    ) -> Result<Self> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime);
        }
        let resolver = match cfg.mode {
            Mode::Static => Err("static mode".to_owned()),
            Mode::Dns => Ok(build_resolver(&cfg.dns).map_err(|e| Error::Resolver(Box::new(e)))?),
            Mode::Api => build_resolver(&cfg.dns).map_err(|e| {
                warn!(error = %e, "no DNS resolver: failover goes straight from the last-known-good set to the Service VIP");
                e.to_string()
            }),
        };
        if let (Err(e), Mode::Api) = (&client, cfg.mode) {
            warn!(error = %e, "no kubernetes API client; serving from the failover sources");
        }
        let api_client = client.as_ref().ok().filter(|_| cfg.mode == Mode::Api);
        let probe = api_client.filter(|_| !cfg.api.probe_interval.is_zero()).map(|c| {
            Probe::start(c.clone(), cfg.api.probe_interval, cfg.api.request_timeout, metrics.restarts("probe"))
        });
        let timings = Timings {
            watch_timeout: cfg.api.watch_timeout,
            idle_timeout: cfg.api.watch_idle_timeout,
            request_timeout: cfg.api.request_timeout,
            page_size: cfg.api.page_size,
            streaming_lists: cfg.api.streaming_lists,
            backoff: cfg.backoff,
            probe: probe.as_ref().map(|p| p.rx.clone()),
            outage: crate::outage::OutageLog::default(),
        };
        let zone = Zone::start(cfg, api_client, metrics.restarts("zone"));
        let family = family_policy(cfg);
        let registry = Registry::new(registry::Parts {
            cfg: cfg.clone(),
            metrics,
            client,
            resolver,
            family,
            timings,
            zone,
            probe,
        });
        let hub = Discovery { registry: Arc::new(registry) };
        if cfg.mode == Mode::Api {
            hub.registry.check_namespace(&cfg.namespace).await?;
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
        let registry = &self.registry;
        let span = info_span!("discovery", service = %service, mode = ?registry.cfg.mode);
        let mut mapper = Mapper::from_config(&registry.cfg);
        if let Some(ns) = namespace {
            mapper = mapper.with_namespace(ns.to_owned());
        }
        follow(registry.clone(), service, mapper).instrument(span).await
    }

    /// The configuration.
    pub fn config(&self) -> &DiscoveryConfig {
        &self.registry.cfg
    }

    #[cfg(feature = "dubbo")]
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.registry.metrics
    }

    /// The kube client (API mode).
    pub fn kube_client(&self) -> Option<&Client> {
        self.registry.client.as_ref().ok()
    }

    /// This process's zone: `DISCOVERY_ZONE`, else the `topology.kubernetes.io/zone` label of the
    /// node named by `DISCOVERY_NODE_NAME` (needs `get` on nodes), else `None`. Waits for the first
    /// look-up (at most `DISCOVERY_REQUEST_TIMEOUT`); a look-up that failed for a transient reason
    /// is retried in the background, and [`Discovery::zone_watch`] follows it.
    pub async fn zone(&self) -> Option<String> {
        let mut tried = self.registry.zone.tried.clone();
        let wait = self.registry.cfg.api.request_timeout;
        let _ = tokio::time::timeout(wait, tried.wait_for(|t| *t)).await;
        self.registry.zone.rx.borrow().clone()
    }

    /// This process's zone as it becomes known (see [`Discovery::zone`]).
    pub fn zone_watch(&self) -> watch::Receiver<Option<String>> {
        self.registry.zone.rx.clone()
    }
}

fn family_policy(cfg: &DiscoveryConfig) -> FamilyPolicy {
    let preferred = match (cfg.ip_family, cfg.locality.pod_ip) {
        (IpFamily::Auto, Some(IpAddr::V6(_))) => Family::V6,
        _ => Family::V4,
    };
    match cfg.ip_family {
        IpFamily::Ipv4 => FamilyPolicy::Only(Family::V4),
        IpFamily::Ipv6 => FamilyPolicy::Only(Family::V6),
        _ => FamilyPolicy::Prefer(preferred),
    }
}

/// Maps `service` and follows it, as the mode says.
async fn follow(registry: Arc<Registry>, service: ServiceRef, mapper: Mapper) -> Result<ServiceWatch> {
    match registry.cfg.mode {
        Mode::Static => {
            let (target, rule) = mapper.resolve(&service).unwrap_or_else(|_| {
                let t = Target {
                    namespace: mapper.namespace().to_owned(),
                    service: "static".into(),
                    port: mapper.port().clone(),
                };
                (t, MappingRule::Explicit)
            });
            crate::source::fixed::check_resolvable(&registry.cfg.static_endpoints, registry.cfg.api.request_timeout)
                .await?;
            let res = registry.static_resolution(&target);
            Ok(ServiceWatch::fixed(registry.clone(), service, target, rule, res))
        }
        Mode::Dns => {
            let (target, rule) = mapper.resolve(&service)?;
            let res = registry.dns_resolution(&target)?;
            info!(k8s_service = %target, rule = ?rule, "discovery started");
            Ok(ServiceWatch::fixed(registry.clone(), service, target, rule, res))
        }
        Mode::Api => {
            if let Some(target) = mapper.explicit(&service) {
                registry.check_namespace(&target.namespace).await?;
                let res = registry.api_resolution(&target).await;
                info!(k8s_service = %target, rule = ?MappingRule::Explicit, "discovery started");
                return Ok(ServiceWatch::fixed(registry.clone(), service, target, MappingRule::Explicit, res));
            }
            let namespace = mapper.namespace().to_owned();
            registry.check_namespace(&namespace).await?;
            let index = match (&registry.client, registry.cfg.api.annotations) {
                (Ok(_), true) => Some(registry.index(&namespace).await),
                _ => None,
            };
            match index {
                Some(index) => ServiceWatch::follow_annotations(registry, service, mapper, index).await,
                None => {
                    let (target, rule) = mapper.resolve(&service)?;
                    let res = registry.api_resolution(&target).await;
                    info!(k8s_service = %target, rule = ?rule, "discovery started");
                    Ok(ServiceWatch::fixed(registry.clone(), service, target, rule, res))
                }
            }
        }
    }
}
