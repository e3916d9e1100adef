//! What one hub shares and builds on demand: the kube client and DNS resolver, one EndpointSlice
//! watch per Kubernetes Service, one Service index per namespace, one resolution per target (with
//! its failover), and the RBAC self-check once per namespace actually watched. Everything is held
//! weakly here and strongly by its subscribers, so it stops when the last one goes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use hickory_resolver::TokioResolver;
use kube::Client;
use tracing::warn;

use crate::config::DiscoveryConfig;
use crate::error::{Error, Result};
use crate::failover::Policy;
use crate::listwatch::Timings;
use crate::mapping::services::ServiceIndex;
use crate::metrics::Metrics;
use crate::model::{Source, Target};
use crate::publish::{Follower, Publisher, Versions};
use crate::rbac;
use crate::resolution::{ApiParts, DnsFactory, Resolution};
use crate::source::api::{NamespaceSlices, SliceWatch, SliceWatchSettings};
use crate::source::dns::DnsSource;
use crate::source::slices::FamilyPolicy;

#[derive(Default)]
struct State {
    slice_watches: HashMap<(String, String), Weak<SliceWatch>>,
    namespaces: HashMap<String, Weak<NamespaceSlices>>,
    resolutions: HashMap<Target, Weak<Resolution>>,
    indexes: HashMap<String, Weak<ServiceIndex>>,
    checked: HashSet<String>,
}

/// What a registry is made of.
pub(crate) struct Parts {
    pub cfg: DiscoveryConfig,
    pub metrics: Metrics,
    pub client: std::result::Result<Client, String>,
    pub resolver: std::result::Result<TokioResolver, String>,
    pub family: FamilyPolicy,
    pub timings: Timings,
    pub zone: super::zone::Zone,
    pub probe: Option<super::probe::Probe>,
}

/// The shared parts of one hub.
pub(crate) struct Registry {
    pub cfg: DiscoveryConfig,
    pub metrics: Metrics,
    pub versions: Versions,
    /// The kube client, or why there is none.
    pub client: std::result::Result<Client, String>,
    /// The DNS resolver, or why there is none.
    pub resolver: std::result::Result<TokioResolver, String>,
    pub family: FamilyPolicy,
    pub timings: Timings,
    state: Mutex<State>,
    /// Held here, not by the hub handle: a [`crate::ServiceWatch`] keeps them running too.
    pub(crate) zone: super::zone::Zone,
    _probe: Option<super::probe::Probe>,
}

impl Registry {
    pub(crate) fn new(parts: Parts) -> Self {
        let Parts { cfg, metrics, client, resolver, family, timings, zone, probe } = parts;
        Registry {
            cfg,
            metrics,
            versions: Versions::default(),
            client,
            resolver,
            family,
            timings,
            state: Mutex::new(State::default()),
            zone,
            _probe: probe,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
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
                missing: missing.iter().map(ToString::to_string).collect(),
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

    pub(crate) fn static_resolution(&self, target: &Target) -> Arc<Resolution> {
        if let Some(r) = self.shared(target) {
            return r;
        }
        let (publisher, rx) = Publisher::new(Source::Static, self.versions.clone());
        let task = crate::task::spawn(
            "static",
            target.to_string(),
            self.metrics.restarts("static"),
            crate::source::fixed::StaticLoop::new(
                self.cfg.static_endpoints.clone(),
                self.cfg.dns.ttl_ceiling,
                self.cfg.api.request_timeout,
                publisher,
            ),
        );
        self.remember(Resolution::of_task(target.clone(), rx, task, self.metrics.clone()))
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

    pub(crate) fn dns_resolution(&self, target: &Target) -> Result<Arc<Resolution>> {
        if let Some(r) = self.shared(target) {
            return Ok(r);
        }
        let source = self
            .dns_source(target)
            .ok_or_else(|| Error::Resolver(self.resolver.as_ref().err().cloned().unwrap_or_default().into()))?;
        let (rx, task) = source.spawn(&self.versions);
        Ok(self.remember(Resolution::of_task(target.clone(), rx, task, self.metrics.clone())))
    }

    /// The shared EndpointSlice watch of `namespace/service`: one per Service, all of a namespace
    /// served by that namespace's one watch.
    fn slice_watch(
        &self,
        client: &Client,
        target: &Target,
    ) -> (Arc<SliceWatch>, tokio::sync::watch::Receiver<crate::model::EndpointSet>) {
        let key = (target.namespace.clone(), target.service.clone());
        let mut s = self.lock();
        s.slice_watches.retain(|_, w| w.strong_count() > 0);
        s.namespaces.retain(|_, w| w.strong_count() > 0);
        if let Some(w) = s.slice_watches.get(&key).and_then(Weak::upgrade) {
            let view = w.view(&target.port);
            return (w, view);
        }
        let ns = match s.namespaces.get(&target.namespace).and_then(Weak::upgrade) {
            Some(ns) => ns,
            None => {
                let settings = SliceWatchSettings {
                    timings: self.timings.clone(),
                    family: self.family,
                    allow_loopback: self.cfg.api.allow_loopback,
                    versions: self.versions.clone(),
                    metrics: self.metrics.clone(),
                };
                let ns = NamespaceSlices::start(client.clone(), &target.namespace, settings);
                s.namespaces.insert(target.namespace.clone(), Arc::downgrade(&ns));
                ns
            }
        };
        let (w, view) = ns.follow(&target.service, &target.port);
        let w = Arc::new(w);
        s.slice_watches.insert(key, Arc::downgrade(&w));
        (w, view)
    }

    pub(crate) async fn api_resolution(&self, target: &Target) -> Arc<Resolution> {
        if let Some(r) = self.shared(target) {
            return r;
        }
        let (slices, view, failed_api) = match &self.client {
            Ok(client) => {
                let (w, view) = self.slice_watch(client, target);
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
                        traffic: crate::model::TrafficDistribution::Any,
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
}
