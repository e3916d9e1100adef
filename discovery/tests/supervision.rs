//! Nothing stops silently: every background task of the hub is supervised. A panic (injected with
//! the `fault-injection` feature) marks the set it publishes stale, so subscribers and failover see
//! it, is counted in `discovery_task_restarts`, and the task is started again and catches up. In the
//! code of the last round the same panic left the last set live for ever, with no failover.
//! One test in its own binary: an injected panic is process-wide.

mod support;

use std::time::Duration;

use dubbo_k8s_discovery::fault::panic_next;
use dubbo_k8s_discovery::{Metrics, ServiceRef};
use support::*;
use testkit::{FakeApiServer, FakeDns, PodEndpoint};

fn greeter() -> ServiceRef {
    ServiceRef::new("org.apache.dubbo.demo.GreeterService")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_task_that_panics_marks_its_set_stale_and_carries_on() {
    init_tracing();
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    apply(&api, "greeter-service-a", "greeter-service", &[PodEndpoint::ready("10.9.0.1", "p1")]);
    let metrics = Metrics::default();
    let mut cfg = api_config(&api, &dns);
    cfg.api.failover = false;
    let d = start(&cfg, greeter(), metrics.clone()).await.expect("start");
    wait_for(&d, 10, "one", |s| s.len() == 1 && !s.is_stale()).await;
    let mut rx = d.watch();

    // The EndpointSlice watch panics on the next event; its set goes stale, then it lists again.
    panic_next("slices");
    apply(
        &api,
        "greeter-service-a",
        "greeter-service",
        &[PodEndpoint::ready("10.9.0.1", "p1"), PodEndpoint::ready("10.9.0.2", "p2")],
    );
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.is_stale())).await.expect("stale").expect("open");
    wait_for(&d, 10, "the change, live, after the restart", |s| s.len() == 2 && !s.is_stale()).await;
    assert_eq!(metrics.task_restarts("slices"), 1);

    // The resolution (failover) task panics on the next change.
    panic_next("resolution");
    apply(&api, "greeter-service-a", "greeter-service", &[PodEndpoint::ready("10.9.0.3", "p3")]);
    let mut rx = d.watch();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.is_stale())).await.expect("stale").expect("open");
    wait_for(&d, 10, "the change, live, after the restart", |s| s.len() == 1 && !s.is_stale()).await;
    assert_eq!(metrics.task_restarts("resolution"), 1);

    // DNS mode: the resolve loop panics on its next round; the last answer stays, stale, then live.
    let fqdn = "greeter-service.demo.svc.cluster.local";
    dns.set_headless_service(fqdn, Some("tri"), 50051, &["10.9.1.1".parse().expect("ip")], 1);
    let dns_metrics = Metrics::default();
    let d = start(&dns_config(&dns), greeter(), dns_metrics.clone()).await.expect("start");
    wait_for(&d, 10, "one", |s| s.len() == 1 && !s.is_stale()).await;
    let mut rx = d.watch();
    panic_next("dns");
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.is_stale())).await.expect("stale").expect("open");
    assert_eq!(d.current().len(), 1, "the last answer is kept");
    wait_for(&d, 10, "live again", |s| s.len() == 1 && !s.is_stale()).await;
    assert_eq!(dns_metrics.task_restarts("dns"), 1);
}
