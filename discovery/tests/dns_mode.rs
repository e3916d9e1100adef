//! DNS mode through the real hickory resolver against the in-process DNS server (UDP and TCP).

mod support;

use std::net::IpAddr;
use std::time::Duration;

use discovery::testkit::{Behaviour, FakeDns};
use discovery::{Discovery, Freshness, Metrics, PortSpec, ServiceRef, Source};
use support::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn greeter() -> ServiceRef {
    ServiceRef::new("org.apache.dubbo.demo.GreeterService")
}

const FQDN: &str = "greeter-service.demo.svc.cluster.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_gives_targets_and_port_and_ttl_expiry_picks_up_a_new_address() {
    init_tracing();
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    dns.set_headless_service(FQDN, Some("tri"), 50051, &[ip("10.244.1.1"), ip("10.244.1.4")], 1);
    let d = Discovery::start(&dns_config(&dns), greeter(), Metrics::default()).await.expect("start");
    let s = wait_for(&d, 10, "two from SRV", |s| s.endpoints.len() == 2).await;
    assert_eq!(s.source, Source::Dns);
    assert_eq!(routable_keys(&s), ["10.244.1.1:50051", "10.244.1.4:50051"]);
    assert_eq!(s.endpoints[0].name.as_deref(), Some("10-244-1-1.greeter-service.demo.svc.cluster.local"));

    // a new pod: seen once the 1 s TTL runs out (no failure needed to trigger re-resolution)
    dns.set_headless_service(FQDN, Some("tri"), 50051, &[ip("10.244.1.1"), ip("10.244.1.4"), ip("10.244.1.5")], 1);
    let s = wait_for(&d, 5, "third pod", |s| s.endpoints.len() == 3).await;
    assert!(routable_keys(&s).contains(&"10.244.1.5:50051".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_srv_uses_a_records_and_the_configured_port() {
    init_tracing();
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    dns.set_addresses(FQDN, &[ip("172.18.0.3"), ip("172.18.0.4"), ip("fd00::5")], 600);
    let mut cfg = dns_config(&dns);
    cfg.dns.srv = false; // Docker's embedded DNS: no SRV, TTL 600 s
    cfg.port = PortSpec::Number(50052);
    let d = Discovery::start(&cfg, greeter(), Metrics::default()).await.expect("start");
    let s = wait_for(&d, 10, "three A/AAAA", |s| s.endpoints.len() == 3).await;
    assert_eq!(routable_keys(&s), ["172.18.0.3:50052", "172.18.0.4:50052", "[fd00::5]:50052"]);

    // the ceiling (2 s) bounds the 600 s TTL
    dns.set_addresses(FQDN, &[ip("172.18.0.4")], 600);
    wait_for(&d, 6, "one left", |s| s.endpoints.len() == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_port_without_srv_record_falls_back_to_a_records() {
    init_tracing();
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    dns.set_headless_service(FQDN, None, 0, &[ip("10.244.2.1")], 5); // no named port: no SRV
    let mut cfg = dns_config(&dns);
    cfg.fallback_port = 6000;
    let d = Discovery::start(&cfg, greeter(), Metrics::default()).await.expect("start");
    let s = wait_for(&d, 10, "one", |s| s.endpoints.len() == 1).await;
    assert_eq!(routable_keys(&s), ["10.244.2.1:6000"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nxdomain_is_zero_endpoints_and_servfail_or_timeout_keep_the_last_answer() {
    init_tracing();
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    dns.set_headless_service(FQDN, Some("tri"), 50051, &[ip("10.244.1.1")], 1);
    let metrics = Metrics::default();
    let d = Discovery::start(&dns_config(&dns), greeter(), metrics).await.expect("start");
    wait_for(&d, 10, "one", |s| s.endpoints.len() == 1).await;

    dns.set_behaviour(Behaviour::ServFail);
    let s = wait_for(&d, 10, "stale on SERVFAIL", |s| matches!(s.freshness, Freshness::Stale { .. })).await;
    assert_eq!(s.endpoints.len(), 1, "SERVFAIL keeps the last good answer");

    dns.set_behaviour(Behaviour::Normal);
    wait_for(&d, 10, "live again", |s| s.freshness == Freshness::Live).await;

    dns.set_behaviour(Behaviour::Silent);
    let s = wait_for(&d, 10, "stale on timeout", |s| matches!(s.freshness, Freshness::Stale { .. })).await;
    assert_eq!(s.endpoints.len(), 1, "a timeout keeps the last good answer");

    dns.set_behaviour(Behaviour::Normal);
    dns.remove(FQDN);
    dns.remove(&format!("_tri._tcp.{FQDN}"));
    let s = wait_for(&d, 10, "empty on NXDOMAIN", |s| s.endpoints.is_empty()).await;
    assert_eq!(s.freshness, Freshness::Live, "an authoritative empty answer is an answer");
    assert!(!s.pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_ip_service_is_one_logical_endpoint() {
    init_tracing();
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    dns.set_cluster_ip_service(FQDN, "tri", 50051, ip("10.96.0.159"), 5);
    let d = Discovery::start(&dns_config(&dns), greeter(), Metrics::default()).await.expect("start");
    let s = wait_for(&d, 10, "vip", |s| !s.pending).await;
    assert_eq!(s.source, Source::Vip);
    assert_eq!(routable_keys(&s), ["10.96.0.159:50051"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_fallback_for_large_answers() {
    init_tracing();
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    // 120 SRV targets with A records in the additional section: far over 512 bytes of UDP
    let ips: Vec<IpAddr> = (1..=120).map(|i| ip(&format!("10.245.0.{i}"))).collect();
    dns.set_headless_service(FQDN, Some("tri"), 50051, &ips, 5);
    let d = Discovery::start(&dns_config(&dns), greeter(), Metrics::default()).await.expect("start");
    let s = wait_for(&d, 10, "120 endpoints", |s| s.endpoints.len() == 120).await;
    assert_eq!(s.routable().len(), 120);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
