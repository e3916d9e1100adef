//! This process's zone: `DISCOVERY_ZONE`, else the `topology.kubernetes.io/zone` label of the node
//! named by `DISCOVERY_NODE_NAME`. Only definite answers are kept for good (a label, no label, a
//! 403); a timeout or an unreachable API server is retried with backoff, and the zone becomes known
//! to every client as soon as a look-up succeeds (they follow it).

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::Api;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::config::{BackoffConfig, DiscoveryConfig};

/// The label that says which zone a node is in.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The zone as known now, and whether a first look-up has ended (either way).
pub(crate) struct Zone {
    pub rx: watch::Receiver<Option<String>>,
    pub tried: watch::Receiver<bool>,
    task: Option<JoinHandle<()>>,
}

impl Drop for Zone {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// What one look-up found.
enum Lookup {
    /// The answer for good: the label's value, or none.
    Definite(Option<String>),
    /// Try again later.
    Transient(String),
}

struct Follower {
    node: String,
    client: Client,
    timeout: Duration,
    backoff: Backoff,
    tx: watch::Sender<Option<String>>,
    tried: watch::Sender<bool>,
}

impl crate::task::Supervised for Follower {
    async fn run(&mut self) {
        let mut warned = false;
        loop {
            crate::task::checkpoint("zone");
            match self.lookup().await {
                Lookup::Definite(zone) => {
                    self.tx.send_replace(zone);
                    self.tried.send_replace(true);
                    return;
                }
                Lookup::Transient(why) => {
                    self.tried.send_replace(true);
                    let delay = self.backoff.next_delay();
                    if !warned {
                        warn!(node = %self.node, error = %why, retry_in = ?delay, "could not read this node's zone yet; zone awareness is off until it can be read (retrying)");
                        warned = true;
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn recover(&mut self) {}
}

impl Follower {
    async fn lookup(&self) -> Lookup {
        let api: Api<Node> = Api::all(self.client.clone());
        let node = &self.node;
        match tokio::time::timeout(self.timeout, api.get(node)).await {
            Ok(Ok(n)) => {
                let zone = n.metadata.labels.and_then(|l| l.get(ZONE_LABEL).cloned());
                match &zone {
                    Some(z) => info!(node, zone = %z, "zone read from the node's label"),
                    None => warn!(node, "the node has no {ZONE_LABEL} label; zone awareness is off"),
                }
                Lookup::Definite(zone)
            }
            Ok(Err(kube::Error::Api(s))) if s.code == 403 => {
                warn!(
                    node,
                    "may not get nodes: zone unknown, zone awareness is off (apply the zone overlay's ClusterRole, \
                     or set DISCOVERY_ZONE)"
                );
                Lookup::Definite(None)
            }
            Ok(Err(kube::Error::Api(s))) if s.code == 404 => {
                warn!(node, "no such node (check DISCOVERY_NODE_NAME); zone awareness is off");
                Lookup::Definite(None)
            }
            Ok(Err(e)) => Lookup::Transient(e.to_string()),
            Err(_) => Lookup::Transient(format!("no answer within {:?}", self.timeout)),
        }
    }
}

impl Zone {
    pub(crate) fn start(cfg: &DiscoveryConfig, client: Option<&Client>, restarts: Counter) -> Self {
        let known = |zone: Option<String>| {
            let (_tx, rx) = watch::channel(zone);
            let (_t, tried) = watch::channel(true);
            Zone { rx, tried, task: None }
        };
        if let Some(z) = &cfg.locality.zone {
            return known(Some(z.clone()));
        }
        let Some(node) = cfg.locality.node_name.clone() else { return known(None) };
        let Some(client) = client.cloned() else {
            warn!(node, "DISCOVERY_NODE_NAME is set but there is no kubernetes client (API mode only); zone unknown");
            return known(None);
        };
        let (tx, rx) = watch::channel(None);
        let (tried_tx, tried) = watch::channel(false);
        let backoff = Backoff::new(BackoffConfig { min: cfg.backoff.min, max: cfg.backoff.max });
        let follower =
            Follower { node: node.clone(), client, timeout: cfg.api.request_timeout, backoff, tx, tried: tried_tx };
        let task = crate::task::spawn("zone", node, restarts, follower);
        Zone { rx, tried, task: Some(task) }
    }
}
