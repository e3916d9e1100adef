//! API mode: list then watch `discovery.k8s.io/v1` EndpointSlices labelled
//! `kubernetes.io/service-name=<service>`, merge every slice of the Service, and keep the merged set
//! current. A 410 Gone re-lists and swaps the whole set at once; every other error backs off with
//! jitter and retries for ever, serving the last-known-good set meanwhile.

use std::collections::BTreeMap;
use std::net::IpAddr;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::config::{ApiConfig, BackoffConfig};
use crate::metrics::Metrics;
use crate::model::{Conditions, Endpoint, Host, PortSpec, Source, Target, normalize};
use crate::source::{SourceState, publish_failure, publish_healthy, publish_ok};

/// The label the EndpointSlice controller puts on every slice of a Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Merges every slice of one Service into one endpoint list: resolves the port per slice (named
/// ports are looked up in each slice's `ports`, as pods behind one Service may use different
/// numbers), takes the first address of each endpoint (the API calls the rest fungible), applies
/// the condition defaults, skips FQDN slices, and keeps one entry per `address:port` (the best
/// conditions win when a pod appears in two slices during a controller update).
pub fn merge_slices<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>, port: &PortSpec) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for slice in slices {
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            continue;
        }
        let number = match port {
            PortSpec::Number(n) => Some(*n),
            PortSpec::Name(name) => slice.ports.iter().flatten().find_map(|p| {
                (p.name.as_deref() == Some(name.as_str()))
                    .then_some(p.port)
                    .flatten()
                    .and_then(|n| u16::try_from(n).ok())
            }),
        };
        let Some(number) = number else {
            debug!(slice = slice.metadata.name.as_deref().unwrap_or(""), port = %port, "slice has no such port");
            continue;
        };
        for ep in &slice.endpoints {
            let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else { continue };
            let c = ep.conditions.as_ref();
            out.push(Endpoint {
                host: Host::Ip(ip),
                port: number,
                name: ep.target_ref.as_ref().and_then(|r| r.name.clone()).or_else(|| ep.hostname.clone()),
                node: ep.node_name.clone(),
                zone: ep.zone.clone(),
                conditions: Conditions::from_api(
                    c.and_then(|c| c.ready),
                    c.and_then(|c| c.serving),
                    c.and_then(|c| c.terminating),
                ),
            });
        }
    }
    normalize(out)
}

/// Why a watch ended.
enum WatchEnd {
    /// The server closed the stream (timeout): watch again from the last version.
    Closed,
    /// 410 Gone: the version is compacted; list again.
    Gone,
    /// The connection failed: back off, watch again from the last version.
    Failed(String),
    /// The server sent another ERROR event: back off, list again.
    Error(String),
}

/// The EndpointSlice list/watch loop of one Service.
pub(crate) struct ApiSource {
    pub client: Client,
    pub target: Target,
    pub cfg: ApiConfig,
    pub backoff: BackoffConfig,
    pub metrics: Metrics,
    pub key: String,
}

impl ApiSource {
    /// Runs until the sender has no receivers.
    pub(crate) async fn run(self, tx: watch::Sender<SourceState>) {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.target.namespace);
        let selector = format!("{SERVICE_NAME_LABEL}={}", self.target.service);
        let mut backoff = Backoff::new(self.backoff);
        let mut slices: BTreeMap<String, EndpointSlice>;
        while !tx.is_closed() {
            let mut rv = match self.list(&api, &selector).await {
                Ok((fresh, rv)) => {
                    // Atomic swap: the whole set is replaced in one publish.
                    slices = fresh;
                    self.publish(&tx, &slices);
                    backoff.reset();
                    rv
                }
                Err(e) => {
                    self.failed(&tx, "list_failed", e);
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            loop {
                if tx.is_closed() {
                    return;
                }
                let secs = u32::try_from(self.cfg.watch_timeout.as_secs()).unwrap_or(u32::MAX).max(1);
                let wp = WatchParams::default().labels(&selector).timeout(secs);
                let stream = match api.watch(&wp, &rv).await {
                    Ok(s) => s,
                    Err(e) => {
                        self.failed(&tx, "watch_failed", e.to_string());
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                };
                // The server answered: what changed meanwhile is replayed from `rv`.
                publish_healthy(&tx);
                let end = self.consume(stream, &mut rv, &mut slices, &tx, &mut backoff).await;
                match end {
                    WatchEnd::Closed => debug!(service = %self.key, "watch closed by server; watching again"),
                    WatchEnd::Gone => {
                        info!(service = %self.key, "resourceVersion expired (410 Gone); listing again");
                        self.metrics.watch_restart(&self.key, "gone");
                        break;
                    }
                    WatchEnd::Failed(e) => {
                        self.failed(&tx, "watch_failed", e);
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                    WatchEnd::Error(e) => {
                        self.failed(&tx, "watch_error", e);
                        tokio::time::sleep(backoff.next_delay()).await;
                        break;
                    }
                }
            }
        }
    }

    async fn consume(
        &self,
        stream: impl futures::Stream<Item = kube::Result<WatchEvent<EndpointSlice>>>,
        rv: &mut String,
        slices: &mut BTreeMap<String, EndpointSlice>,
        tx: &watch::Sender<SourceState>,
        backoff: &mut Backoff,
    ) -> WatchEnd {
        let mut stream = std::pin::pin!(stream);
        loop {
            let closed = tx.closed();
            let next = tokio::select! {
                next = stream.next() => next,
                () = closed => return WatchEnd::Closed,
            };
            let event = match next {
                None => return WatchEnd::Closed,
                Some(Err(e)) => return WatchEnd::Failed(e.to_string()),
                Some(Ok(ev)) => ev,
            };
            backoff.reset();
            match event {
                WatchEvent::Added(s) | WatchEvent::Modified(s) => {
                    remember_version(rv, &s);
                    if let Some(name) = s.metadata.name.clone() {
                        slices.insert(name, s);
                        self.publish(tx, slices);
                    }
                }
                WatchEvent::Deleted(s) => {
                    remember_version(rv, &s);
                    if let Some(name) = &s.metadata.name {
                        slices.remove(name);
                        self.publish(tx, slices);
                    }
                }
                WatchEvent::Bookmark(b) => {
                    *rv = b.metadata.resource_version;
                }
                WatchEvent::Error(status) if status.code == 410 => return WatchEnd::Gone,
                WatchEvent::Error(status) => {
                    return WatchEnd::Error(format!("{} ({}, code {})", status.message, status.reason, status.code));
                }
            }
        }
    }

    /// Lists every page; returns the slices by name and the list's resourceVersion.
    async fn list(
        &self,
        api: &Api<EndpointSlice>,
        selector: &str,
    ) -> Result<(BTreeMap<String, EndpointSlice>, String), String> {
        let mut lp = ListParams::default().labels(selector).limit(self.cfg.page_size);
        let mut out = BTreeMap::new();
        loop {
            let page = api.list(&lp).await.map_err(|e| describe_kube_error(&e, &self.target))?;
            for s in page.items {
                if let Some(name) = s.metadata.name.clone() {
                    out.insert(name, s);
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => lp = lp.continue_token(&token),
                None => {
                    let rv = page.metadata.resource_version.unwrap_or_default();
                    return Ok((out, rv));
                }
            }
        }
    }

    fn publish(&self, tx: &watch::Sender<SourceState>, slices: &BTreeMap<String, EndpointSlice>) {
        let endpoints = merge_slices(slices.values(), &self.target.port);
        debug!(service = %self.key, slices = slices.len(), endpoints = endpoints.len(), "endpointslices merged");
        publish_ok(tx, Source::Api, endpoints);
    }

    fn failed(&self, tx: &watch::Sender<SourceState>, reason: &str, error: String) {
        warn!(service = %self.key, reason, error = %error, "kubernetes API unavailable; keeping last-known-good endpoints");
        self.metrics.watch_restart(&self.key, reason);
        publish_failure(tx, error);
    }
}

fn remember_version(rv: &mut String, s: &EndpointSlice) {
    if let Some(v) = &s.metadata.resource_version {
        rv.clone_from(v);
    }
}

/// An error message that says what to do for the common API failures.
pub(crate) fn describe_kube_error(e: &kube::Error, target: &Target) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => format!(
            "failed to list endpointslices in namespace {:?}: forbidden ({}); grant get/list/watch on \
             endpointslices.discovery.k8s.io to this ServiceAccount (see README, \"Role for API mode\")",
            target.namespace, s.message
        ),
        kube::Error::Api(s) if s.code == 401 => {
            format!("failed to list endpointslices: unauthorized ({}); check the token or kubeconfig", s.message)
        }
        other => format!("failed to list endpointslices: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint as ApiEndpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn ep(ip: &str, ready: Option<bool>, serving: Option<bool>, terminating: Option<bool>) -> ApiEndpoint {
        ApiEndpoint {
            addresses: vec![ip.to_owned()],
            conditions: Some(EndpointConditions { ready, serving, terminating }),
            ..Default::default()
        }
    }

    fn slice(name: &str, family: &str, port: Option<(&str, i32)>, endpoints: Vec<ApiEndpoint>) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta { name: Some(name.to_owned()), ..Default::default() },
            address_type: family.to_owned(),
            endpoints,
            ports: port.map(|(n, p)| {
                vec![EndpointPort {
                    name: Some(n.to_owned()),
                    port: Some(p),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]
            }),
        }
    }

    fn tri() -> PortSpec {
        PortSpec::Name("tri".into())
    }

    #[test]
    fn merges_all_slices_beyond_one_hundred() {
        let mut slices = Vec::new();
        for s in 0..3 {
            let eps = (0..100).map(|i| ep(&format!("10.1.{s}.{i}"), Some(true), None, None)).collect();
            slices.push(slice(&format!("s{s}"), "IPv4", Some(("tri", 50051)), eps));
        }
        let merged = merge_slices(&slices, &tri());
        assert_eq!(merged.len(), 300);
        assert!(merged.iter().all(|e| e.port == 50051 && e.conditions.ready));
    }

    #[test]
    fn dual_stack_and_duplicates() {
        let v4 = slice("a", "IPv4", Some(("tri", 50051)), vec![ep("10.0.0.1", Some(true), None, None)]);
        let v6 = slice("b", "IPv6", Some(("tri", 50051)), vec![ep("fd00::1", Some(true), None, None)]);
        // the same pod in two slices during a controller update: not-ready copy and ready copy
        let dup = slice("c", "IPv4", Some(("tri", 50051)), vec![ep("10.0.0.1", Some(false), Some(false), None)]);
        let fqdn = slice("d", "FQDN", Some(("tri", 50051)), vec![ep("example.com", None, None, None)]);
        let merged = merge_slices([&dup, &v4, &v6, &fqdn], &tri());
        let keys: Vec<String> = merged.iter().map(|e| e.key().0).collect();
        assert_eq!(keys, vec!["10.0.0.1:50051", "[fd00::1]:50051"]);
        assert!(merged[0].conditions.ready, "the ready duplicate wins");
    }

    #[test]
    fn ports_resolve_per_slice_by_name_or_number() {
        let a = slice("a", "IPv4", Some(("tri", 50051)), vec![ep("10.0.0.1", None, None, None)]);
        let b = slice("b", "IPv4", Some(("tri", 6000)), vec![ep("10.0.0.2", None, None, None)]);
        let other = slice("c", "IPv4", Some(("metrics", 9090)), vec![ep("10.0.0.3", None, None, None)]);
        let noports = slice("d", "IPv4", None, vec![ep("10.0.0.4", None, None, None)]);
        let merged = merge_slices([&a, &b, &other, &noports], &tri());
        let keys: Vec<String> = merged.iter().map(|e| e.key().0).collect();
        assert_eq!(keys, vec!["10.0.0.1:50051", "10.0.0.2:6000"]);
        let merged = merge_slices([&a, &noports], &PortSpec::Number(7000));
        assert_eq!(merged.len(), 2, "a numeric port needs no named port in the slice");
    }

    #[test]
    fn conditions_defaults_and_policy() {
        let s = slice(
            "a",
            "IPv4",
            Some(("tri", 1)),
            vec![
                ApiEndpoint { addresses: vec!["10.0.0.1".into()], conditions: None, ..Default::default() },
                ep("10.0.0.2", Some(false), None, None),
                ep("10.0.0.3", Some(false), Some(true), Some(true)),
            ],
        );
        let merged = merge_slices([&s], &tri());
        assert!(merged[0].conditions.ready, "unset ready means ready");
        assert!(!merged[1].conditions.serving, "unset serving follows ready");
        assert!(merged[2].conditions.serving && merged[2].conditions.terminating);
    }

    #[test]
    fn reads_the_captured_api_server_list() {
        // Shape of a real kube-apiserver 1.32 answer (see shared/k8s-wire/list-endpointslices.json).
        let json = r#"{"metadata":{"name":"greeter-v1-m52pr","namespace":"demo","labels":{"kubernetes.io/service-name":"greeter-v1"}},
          "addressType":"IPv4",
          "endpoints":[{"addresses":["10.244.1.1"],"conditions":{"ready":true,"serving":true,"terminating":false},
            "targetRef":{"kind":"Pod","namespace":"demo","name":"greeter-v1-1"},"nodeName":"node-a","zone":"zone-a"}],
          "ports":[{"name":"tri","protocol":"TCP","port":50051}]}"#;
        let s: EndpointSlice = serde_json::from_str(json).expect("valid slice");
        let merged = merge_slices([&s], &tri());
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].name.as_deref(), Some("greeter-v1-1"));
        assert_eq!(merged[0].zone.as_deref(), Some("zone-a"));
        assert_eq!(merged[0].node.as_deref(), Some("node-a"));
    }
}
