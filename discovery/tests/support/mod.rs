//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use dubbo_k8s_discovery::config::BackoffConfig;
use dubbo_k8s_discovery::{Discovery, DiscoveryConfig, EndpointSet, Metrics, Mode, ServiceRef, ServiceWatch};
use testkit::{FakeApiServer, FakeDns, PodEndpoint, endpoint_slice};

pub const NS: &str = "demo";
pub const DOMAIN: &str = "cluster.local";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TEST_LOG").unwrap_or_else(|_| "off".into()))
        .with_test_writer()
        .try_init();
}

/// API mode against `api`, DNS failover against `dns`, short timings.
pub fn api_config(api: &FakeApiServer, dns: &FakeDns) -> DiscoveryConfig {
    let mut c = DiscoveryConfig::new(Mode::Api).with_namespace(NS);
    c.api.server = Some(api.url());
    c.api.max_stale = Duration::from_secs(30);
    c.api.cold_start_timeout = Duration::from_secs(2);
    c.api.watch_timeout = Duration::from_secs(30);
    c.api.request_timeout = Duration::from_secs(2);
    c.api.recovery_hold = Duration::from_millis(300);
    c.api.allow_loopback = true;
    c.dns.server = Some(dns.addr());
    c.dns.ttl_floor = Duration::from_millis(200);
    c.dns.ttl_ceiling = Duration::from_secs(2);
    c.dns.timeout = Duration::from_millis(300);
    c.backoff = BackoffConfig::new(Duration::from_millis(50), Duration::from_millis(400));
    c
}

/// DNS mode against `dns`.
pub fn dns_config(dns: &FakeDns) -> DiscoveryConfig {
    let mut c = DiscoveryConfig::new(Mode::Dns).with_namespace(NS);
    c.dns.server = Some(dns.addr());
    c.dns.ttl_floor = Duration::from_millis(200);
    c.dns.ttl_ceiling = Duration::from_secs(2);
    c.dns.timeout = Duration::from_millis(300);
    c.backoff = BackoffConfig::new(Duration::from_millis(50), Duration::from_millis(400));
    c
}

/// A hub for `cfg` and the watch of `service` through it.
pub async fn start(
    cfg: &DiscoveryConfig,
    service: ServiceRef,
    metrics: Metrics,
) -> dubbo_k8s_discovery::Result<ServiceWatch> {
    let hub = Discovery::new(cfg, metrics).await?;
    hub.service(service).await
}

/// Waits until `pred` holds for the published set; panics with the last set after `secs`.
pub async fn wait_for(d: &ServiceWatch, secs: u64, what: &str, pred: impl Fn(&EndpointSet) -> bool) -> EndpointSet {
    let mut rx = d.watch();
    let result = tokio::time::timeout(Duration::from_secs(secs), rx.wait_for(|s| pred(s))).await;
    match result {
        Ok(Ok(s)) => s.clone(),
        _ => {
            let cur = d.current();
            panic!(
                "timed out after {secs}s waiting for {what}; last set: version {} source {} pending {} freshness {:?} endpoints {:?}",
                cur.version(),
                cur.source(),
                cur.is_pending(),
                cur.freshness(),
                cur.iter().map(|e| (e.key().to_string(), e.conditions)).collect::<Vec<_>>()
            )
        }
    }
}

pub fn routable_keys(s: &EndpointSet) -> Vec<String> {
    let mut k: Vec<String> = s.routable().map(|e| e.key().to_string()).collect();
    k.sort();
    k
}

/// `n` ready pods `10.1.<third>.<i>` named `<prefix>-<i>`.
pub fn pods(prefix: &str, third: u8, n: usize) -> Vec<PodEndpoint> {
    (0..n).map(|i| PodEndpoint::ready(format!("10.1.{third}.{}", i + 1), format!("{prefix}-{third}-{i}"))).collect()
}

/// Applies one slice of `service` with a `tri` port 50051.
pub fn apply(api: &FakeApiServer, name: &str, service: &str, pods: &[PodEndpoint]) {
    api.apply_slice(NS, endpoint_slice(name, service, "IPv4", &[("tri", 50051)], pods));
}

/// An EndpointSlice of `greeter-v1` as the endpointslice controller writes one, for the tests on a
/// real API server: `(address, ready)` per endpoint, a pod per endpoint, and the controller's
/// `endpoints.kubernetes.io/last-change-trigger-time` when given.
pub fn real_slice(
    name: &str,
    endpoints: &[(&str, bool)],
    trigger: Option<&str>,
) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    let eps: Vec<_> = endpoints
        .iter()
        .enumerate()
        .map(|(i, (ip, ready))| {
            serde_json::json!({"addresses": [ip], "conditions": {"ready": ready}, "targetRef": {"kind": "Pod", "name": format!("{name}-{i}"), "namespace": NS}})
        })
        .collect();
    let annotations = trigger
        .map(|t| serde_json::json!({ "endpoints.kubernetes.io/last-change-trigger-time": t }))
        .unwrap_or(serde_json::json!({}));
    serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "greeter-v1"}, "annotations": annotations},
        "addressType": "IPv4",
        "ports": [{"name": "tri", "port": 50051, "protocol": "TCP"}],
        "endpoints": eps,
    }))
    .expect("slice")
}

/// On a real API server: namespace `NS` and Service `greeter-v1` annotated for the greeter 1.0.0.
pub async fn real_namespace_and_service(client: &kube::Client) {
    use k8s_openapi::api::core::v1::{Namespace, Service};
    use kube::api::{Api, PostParams};
    let pp = PostParams::default();
    Api::<Namespace>::all(client.clone())
        .create(&pp, &serde_json::from_value(serde_json::json!({"metadata": {"name": NS}})).expect("ns"))
        .await
        .expect("namespace");
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "greeter-v1", "annotations": {
            "dubbo.apache.org/interface": "org.apache.dubbo.demo.GreeterService",
            "dubbo.apache.org/version": "1.0.0"}},
        "spec": {"ports": [{"name": "tri", "port": 50051, "targetPort": 50051}]},
    }))
    .expect("service");
    Api::<Service>::namespaced(client.clone(), NS).create(&pp, &service).await.expect("service");
}
