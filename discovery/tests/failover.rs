//! Failover between the API source, DNS and the Service VIP, with both real clients and both
//! in-process servers.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use discovery::testkit::{Behaviour, FakeApiServer, FakeDns};
use discovery::{Discovery, Freshness, Host, Metrics, ServiceRef, Source};
use support::*;

fn greeter() -> ServiceRef {
    ServiceRef::new("org.apache.dubbo.demo.GreeterService")
}

const FQDN: &str = "greeter-service.demo.svc.cluster.local";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_with_the_api_down_serves_dns_then_switches_back() {
    init_tracing();
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    dns.set_headless_service(FQDN, Some("tri"), 50051, &[ip("10.244.1.1"), ip("10.244.1.2")], 1);
    apply(&api, "greeter-service-a", "greeter-service", &pods("greeter", 1, 3));
    api.stop();

    let d = Discovery::start(&api_config(&api, &dns), greeter(), Metrics::default()).await.expect("start");
    let s = wait_for(&d, 10, "dns fallback", |s| s.source == Source::Dns && s.endpoints.len() == 2).await;
    assert!(!s.pending);

    api.restart().await.expect("restart");
    let s = wait_for(&d, 15, "back on the API", |s| s.source == Source::Api).await;
    assert_eq!(s.endpoints.len(), 3);
    assert_eq!(s.freshness, Freshness::Live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_outage_goes_to_dns_after_max_stale_then_to_the_vip_when_dns_fails() {
    init_tracing();
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    dns.set_headless_service(FQDN, Some("tri"), 50051, &[ip("10.244.1.9")], 1);
    apply(&api, "greeter-service-a", "greeter-service", &pods("greeter", 1, 3));
    let mut cfg = api_config(&api, &dns);
    cfg.api.max_stale = Duration::from_millis(800);
    let d = Discovery::start(&cfg, greeter(), Metrics::default()).await.expect("start");
    wait_for(&d, 10, "api", |s| s.source == Source::Api && s.endpoints.len() == 3).await;

    api.stop();
    let s = wait_for(&d, 10, "stale api", |s| matches!(s.freshness, Freshness::Stale { .. })).await;
    assert_eq!((s.source, s.endpoints.len()), (Source::Api, 3), "last-known-good first");
    let s = wait_for(&d, 10, "dns after max_stale", |s| s.source == Source::Dns).await;
    assert_eq!(routable_keys(&s), ["10.244.1.9:50051"]);

    api.restart().await.expect("restart");
    wait_for(&d, 15, "api again", |s| s.source == Source::Api && s.freshness == Freshness::Live).await;

    // Both down from a cold start: the VIP (by name) is the last resort.
    api.stop();
    dns.set_behaviour(Behaviour::ServFail);
    let d2 = Discovery::start(&cfg, greeter(), Metrics::default()).await.expect("start");
    let s = wait_for(&d2, 10, "vip", |s| s.source == Source::Vip).await;
    assert_eq!(s.endpoints.len(), 1);
    assert_eq!(s.endpoints[0].host, Host::Name(FQDN.to_owned()));
    assert_eq!(s.endpoints[0].port, 50051);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_falls_back_at_once() {
    init_tracing();
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    dns.set_headless_service(FQDN, Some("tri"), 50051, &[ip("10.244.3.1")], 5);
    let api = FakeApiServer::start().await.expect("api");
    let mut cfg = api_config(&api, &dns);
    cfg.api.server = Some("http://127.0.0.1:1".into()); // nothing listens there
    let d = Discovery::start(&cfg, greeter(), Metrics::default()).await.expect("start");
    let s = wait_for(&d, 10, "dns answer", |s| s.source == Source::Dns && !s.pending).await;
    assert_eq!(routable_keys(&s), ["10.244.3.1:50051"]);
}
