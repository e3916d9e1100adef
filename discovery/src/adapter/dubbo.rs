//! A Kubernetes registry for the `dubbo` crate (dubbo-rust 0.4): `kubernetes://` registry URLs whose
//! subscriptions are fed by [`Discovery`] instead of a registry center.
//!
//! ```no_run
//! # async fn demo() -> Result<(), dubbo::StdError> {
//! let cfg = discovery::DiscoveryConfig::from_env()?;
//! discovery::adapter::dubbo::install(cfg, discovery::Metrics::default()).await?;
//! let url = "kubernetes://demo?version=1.0.0".parse()?;
//! let builder = dubbo::codegen::ClientBuilder::new().with_registry(url);
//! # let _ = builder; Ok(()) }
//! ```
//!
//! Registry URL: `kubernetes://[<namespace>][?version=…&group=…&namespace=…]`. The host part (or the
//! `namespace` parameter) overrides `DISCOVERY_NAMESPACE`; `version` and `group` complete the
//! interface that dubbo subscribes with into a [`ServiceRef`]. Providers need not register: a pod
//! behind the Service is registered by Kubernetes, so `register`/`unregister` do nothing.

use std::collections::HashMap;
use std::sync::OnceLock;

use async_trait::async_trait;
use dubbo::extension::registry_extension::{DiscoverStream, Registry, RegistryExtension, ServiceChange};
use dubbo::extension::{EXTENSIONS, Extension};
use dubbo::params::registry_param::{InterfaceName, RegistryUrl};
use dubbo::url::UrlParam;
use dubbo::{StdError, Url};
use tokio::sync::{Mutex, mpsc};
use tracing::{debug, info};

use crate::adapter::diff::{Change, Differ};
use crate::{Discovery, DiscoveryConfig, EndpointKey, Metrics, ServiceRef};

/// The URL scheme (and dubbo extension name).
pub const SCHEME: &str = "kubernetes";

static DEFAULTS: OnceLock<(DiscoveryConfig, Metrics)> = OnceLock::new();

/// Registers the `kubernetes` registry extension with dubbo, using `cfg` for every registry created
/// from a `kubernetes://` URL. The first call's configuration wins.
pub async fn install(cfg: DiscoveryConfig, metrics: Metrics) -> Result<(), StdError> {
    let _ = DEFAULTS.set((cfg, metrics));
    EXTENSIONS.register::<RegistryExtension<KubernetesRegistry>>().await
}

/// The provider URL dubbo expects for one endpoint (`host:port`):
/// `tri://host:port/<interface>?interface=<interface>`. Inserts and removals must use the same one.
pub fn provider_url(endpoint: &EndpointKey, interface: &str) -> String {
    format!("tri://{endpoint}/{interface}?interface={interface}")
}

/// A dubbo `Registry` backed by Kubernetes discovery.
#[derive(Debug)]
pub struct KubernetesRegistry {
    url: Url,
    cfg: DiscoveryConfig,
    metrics: Metrics,
    version: String,
    group: String,
    subscriptions: Mutex<HashMap<String, Discovery>>,
}

impl KubernetesRegistry {
    /// A registry for `url` (`kubernetes://…`) with `cfg` as the base configuration.
    pub fn new(url: Url, mut cfg: DiscoveryConfig, metrics: Metrics) -> Self {
        let namespace =
            url.query_param_by_key("namespace").or_else(|| url.host().filter(|h| !h.is_empty()).map(str::to_owned));
        if let Some(ns) = namespace {
            cfg.namespace = ns;
        }
        KubernetesRegistry {
            version: url.query_param_by_key("version").unwrap_or_default(),
            group: url.query_param_by_key("group").unwrap_or_default(),
            url,
            cfg,
            metrics,
            subscriptions: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl Registry for KubernetesRegistry {
    async fn register(&self, url: Url) -> Result<(), StdError> {
        debug!(%url, "register: nothing to do, Kubernetes registers pods behind their Service");
        Ok(())
    }

    async fn unregister(&self, url: Url) -> Result<(), StdError> {
        debug!(%url, "unregister: nothing to do");
        Ok(())
    }

    async fn subscribe(&self, url: Url) -> Result<DiscoverStream, StdError> {
        let interface = url
            .query::<InterfaceName>()
            .map(|i| i.value())
            .ok_or_else(|| format!("subscribe URL {url} has no interface parameter"))?;
        let service =
            ServiceRef::new(interface.clone()).with_group(self.group.clone()).with_version(self.version.clone());
        let discovery = Discovery::start(&self.cfg, service.clone(), self.metrics.clone()).await?;
        info!(%service, target = %discovery.target(), "kubernetes registry subscribed");
        let (tx, rx) = mpsc::channel(64);
        let mut watch = discovery.watch();
        self.subscriptions.lock().await.insert(interface.clone(), discovery);
        tokio::spawn(async move {
            let mut differ = Differ::new();
            loop {
                let set = watch.borrow_and_update().clone();
                for change in differ.update(&set) {
                    let msg = match change {
                        Change::Insert(key, _) => ServiceChange::Insert(provider_url(&key, &interface), ()),
                        Change::Remove(key) => ServiceChange::Remove(provider_url(&key, &interface)),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
                if watch.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    async fn unsubscribe(&self, url: Url) -> Result<(), StdError> {
        if let Some(interface) = url.query::<InterfaceName>().map(|i| i.value()) {
            self.subscriptions.lock().await.remove(&interface);
        }
        Ok(())
    }

    fn url(&self) -> &Url {
        &self.url
    }
}

#[async_trait]
impl Extension for KubernetesRegistry {
    type Target = Box<dyn Registry + Send + Sync + 'static>;

    fn name() -> String {
        SCHEME.to_owned()
    }

    async fn create(url: Url) -> Result<Self::Target, StdError> {
        // dubbo hands over `extension://…?registry=kubernetes://…`; the registry URL is a parameter.
        let registry_url = url.query::<RegistryUrl>().map(|r| r.value()).unwrap_or(url);
        let (cfg, metrics) = match DEFAULTS.get() {
            Some((c, m)) => (c.clone(), m.clone()),
            None => (DiscoveryConfig::from_env()?, Metrics::default()),
        };
        Ok(Box::new(KubernetesRegistry::new(registry_url, cfg, metrics)))
    }
}
