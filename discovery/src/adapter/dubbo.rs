//! A Kubernetes registry for the `dubbo` crate (dubbo-rust 0.4): `kubernetes://` registry URLs whose
//! subscriptions are fed by a [`Discovery`] hub instead of a registry center. Every subscription
//! goes through the hub: one kube client, one watch per Kubernetes Service, however many
//! subscriptions dubbo makes (it makes one per directory it builds).
//!
//! ```no_run
//! # async fn demo() -> Result<(), dubbo::StdError> {
//! let cfg = dubbo_k8s_discovery::DiscoveryConfig::from_env()?;
//! let hub = dubbo_k8s_discovery::Discovery::new(&cfg, dubbo_k8s_discovery::Metrics::default()).await?;
//! dubbo_k8s_discovery::adapter::dubbo::install(hub).await?;
//! let url = "kubernetes://demo?version=1.0.0".parse()?;
//! let builder = dubbo::codegen::ClientBuilder::new().with_registry(url);
//! # let _ = builder; Ok(()) }
//! ```
//!
//! Registry URL: `kubernetes://[<namespace>][?version=…&group=…&namespace=…]`. The host part (or the
//! `namespace` parameter) overrides the hub's default namespace; `version` and `group` complete the
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
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::adapter::{Membership, Routable};
use crate::{Discovery, EndpointKey, ServiceRef, ServiceWatch};

/// The URL scheme (and dubbo extension name).
pub const SCHEME: &str = "kubernetes";

static HUB: OnceLock<Discovery> = OnceLock::new();

/// Registers the `kubernetes` registry extension with dubbo, serving every registry created from a
/// `kubernetes://` URL through `hub`. The first call's hub wins.
pub async fn install(hub: Discovery) -> Result<(), StdError> {
    let _ = HUB.set(hub);
    EXTENSIONS.register::<RegistryExtension<KubernetesRegistry>>().await
}

/// The provider URL dubbo expects for one endpoint: `tri://ip:port/<interface>?interface=<interface>`.
/// Inserts and removals must use the same one.
pub fn provider_url(endpoint: &EndpointKey, interface: &str) -> String {
    format!("tri://{endpoint}/{interface}?interface={interface}")
}

/// A dubbo `Registry` backed by a [`Discovery`] hub.
#[derive(Debug)]
pub struct KubernetesRegistry {
    url: Url,
    hub: Discovery,
    namespace: Option<String>,
    version: String,
    group: String,
    /// The forwarding task of each subscription, by subscription URL. Each task holds its own
    /// [`ServiceWatch`]: what keeps a subscription alive does not depend on the others.
    subscriptions: Mutex<HashMap<String, JoinHandle<()>>>,
}

impl Drop for KubernetesRegistry {
    fn drop(&mut self) {
        for (_, task) in self.subscriptions.get_mut().drain() {
            task.abort();
        }
    }
}

/// Forwards one subscription's routable changes to dubbo, until dubbo drops the stream.
struct Forward {
    /// Keeps the service followed for as long as this subscription lasts.
    watch: ServiceWatch,
    updates: crate::Updates,
    tx: mpsc::Sender<Result<ServiceChange, StdError>>,
    interface: String,
    routable: Routable,
}

impl crate::task::Supervised for Forward {
    async fn run(&mut self) {
        loop {
            crate::task::checkpoint("dubbo");
            let update = tokio::select! {
                u = self.updates.next() => match u { Some(u) => u, None => return },
                // dubbo dropped this subscription (it builds one per directory): stop.
                () = self.tx.closed() => return,
            };
            for change in self.routable.membership(&update) {
                let msg = match change {
                    Membership::Insert(e) => ServiceChange::Insert(provider_url(&e.key(), &self.interface), ()),
                    Membership::Remove(k) => ServiceChange::Remove(provider_url(&k, &self.interface)),
                };
                if self.tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Withdraws everything reported and starts over from a reset.
    fn recover(&mut self) {
        for e in self.routable.current() {
            let _ = self.tx.try_send(Ok(ServiceChange::Remove(provider_url(&e.key(), &self.interface))));
        }
        self.routable = Routable::new();
        self.updates = self.watch.updates();
    }
}

impl KubernetesRegistry {
    /// A registry for `url` (`kubernetes://…`) served by `hub`.
    pub fn new(url: Url, hub: Discovery) -> Self {
        let namespace =
            url.query_param_by_key("namespace").or_else(|| url.host().filter(|h| !h.is_empty()).map(str::to_owned));
        KubernetesRegistry {
            version: url.query_param_by_key("version").unwrap_or_default(),
            group: url.query_param_by_key("group").unwrap_or_default(),
            namespace,
            url,
            hub,
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
        let watch = self.hub.service_in(self.namespace.as_deref(), service.clone()).await?;
        debug!(%service, k8s_service = %watch.target(), %url, "kubernetes registry subscribed");
        let (tx, rx) = mpsc::channel(64);
        let forward = Forward { updates: watch.updates(), watch, tx, interface, routable: Routable::new() };
        let task = crate::task::spawn("dubbo", service.to_string(), self.hub.metrics().restarts("dubbo"), forward);
        // Keyed by the subscription URL: two subscriptions of one interface (dubbo makes one per
        // directory) are two entries, and unsubscribing one leaves the other alone.
        if let Some(old) = self.subscriptions.lock().await.insert(url.to_string(), task) {
            old.abort();
        }
        Ok(rx)
    }

    async fn unsubscribe(&self, url: Url) -> Result<(), StdError> {
        if let Some(task) = self.subscriptions.lock().await.remove(&url.to_string()) {
            task.abort();
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
        let hub = HUB.get().cloned().ok_or(
            "the kubernetes registry is not installed: call dubbo_k8s_discovery::adapter::dubbo::install(hub) first",
        )?;
        info!(registry = %registry_url, "kubernetes registry created");
        Ok(Box::new(KubernetesRegistry::new(registry_url, hub)))
    }
}
