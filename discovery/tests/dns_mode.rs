//! DNS mode through the real hickory resolver against the in-process DNS server (UDP and TCP).

mod support;

use std::net::IpAddr;
use std::time::Duration;

use dubbo_k8s_discovery::{Freshness, Metrics, PortSpec, ServiceRef, Source};
use support::*;
use testkit::{Behaviour, FakeDns, RecordType};

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
    let d = start(&dns_config(&dns), greeter(), Metrics::default()).await.expect("start");
    let s = wait_for(&d, 10, "two from SRV", |s| s.len() == 2).await;
    assert_eq!(s.source(), Source::Dns);
    assert_eq!(routable_keys(&s), ["10.244.1.1:50051", "10.244.1.4:50051"]);
    assert_eq!(
        s.iter().next().and_then(|e| e.name.as_deref()),
        Some("10-244-1-1.greeter-service.demo.svc.cluster.local")
    );

    // a new pod: seen once the 1 s TTL runs out (no failure needed to trigger re-resolution)
    dns.set_headless_service(FQDN, Some("tri"), 50051, &[ip("10.244.1.1"), ip("10.244.1.4"), ip("10.244.1.5")], 1);
    let s = wait_for(&d, 5, "third pod", |s| s.len() == 3).await;
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
    let d = start(&cfg, greeter(), Metrics::default()).await.expect("start");
    let s = wait_for(&d, 10, "three A/AAAA", |s| s.len() == 3).await;
    assert_eq!(routable_keys(&s), ["172.18.0.3:50052", "172.18.0.4:50052", "[fd00::5]:50052"]);

    // the ceiling (2 s) bounds the 600 s TTL
    dns.set_addresses(FQDN, &[ip("172.18.0.4")], 600);
    wait_for(&d, 6, "one left", |s| s.len() == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_port_without_srv_record_falls_back_to_a_records() {
    init_tracing();
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    dns.set_headless_service(FQDN, None, 0, &[ip("10.244.2.1")], 5); // no named port: no SRV
    let mut cfg = dns_config(&dns);
    cfg.fallback_port = 6000;
    let d = start(&cfg, greeter(), Metrics::default()).await.expect("start");
    let s = wait_for(&d, 10, "one", |s| s.len() == 1).await;
    assert_eq!(routable_keys(&s), ["10.244.2.1:6000"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nxdomain_is_zero_endpoints_and_servfail_or_timeout_keep_the_last_answer() {
    init_tracing();
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    dns.set_headless_service(FQDN, Some("tri"), 50051, &[ip("10.244.1.1")], 1);
    let metrics = Metrics::default();
    let d = start(&dns_config(&dns), greeter(), metrics).await.expect("start");
    wait_for(&d, 10, "one", |s| s.len() == 1).await;

    dns.set_behaviour(Behaviour::ServFail);
    let s = wait_for(&d, 10, "stale on SERVFAIL", |s| matches!(s.freshness(), Freshness::Stale { .. })).await;
    assert_eq!(s.len(), 1, "SERVFAIL keeps the last good answer");

    dns.set_behaviour(Behaviour::Normal);
    wait_for(&d, 10, "live again", |s| s.freshness() == Freshness::Live).await;

    dns.set_behaviour(Behaviour::Silent);
    let s = wait_for(&d, 10, "stale on timeout", |s| matches!(s.freshness(), Freshness::Stale { .. })).await;
    assert_eq!(s.len(), 1, "a timeout keeps the last good answer");

    dns.set_behaviour(Behaviour::Normal);
    dns.remove(FQDN);
    dns.remove(&format!("_tri._tcp.{FQDN}"));
    let s = wait_for(&d, 10, "empty on NXDOMAIN", |s| s.is_empty()).await;
    assert_eq!(s.freshness(), Freshness::Live, "an authoritative empty answer is an answer");
    assert!(!s.is_pending());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_ip_service_is_one_logical_endpoint() {
    init_tracing();
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    dns.set_cluster_ip_service(FQDN, "tri", 50051, ip("10.96.0.159"), 5);
    let d = start(&dns_config(&dns), greeter(), Metrics::default()).await.expect("start");
    let s = wait_for(&d, 10, "vip", |s| !s.is_pending()).await;
    assert_eq!(s.source(), Source::Vip);
    assert_eq!(routable_keys(&s), ["10.96.0.159:50051"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_fallback_for_large_answers() {
    init_tracing();
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    // 120 SRV targets with A records in the additional section: far over 512 bytes of UDP
    let ips: Vec<IpAddr> = (1..=120).map(|i| ip(&format!("10.245.0.{i}"))).collect();
    dns.set_headless_service(FQDN, Some("tri"), 50051, &ips, 5);
    let d = start(&dns_config(&dns), greeter(), Metrics::default()).await.expect("start");
    let s = wait_for(&d, 10, "120 endpoints", |s| s.len() == 120).await;
    assert_eq!(s.routable_len(), 120);
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aaaa_failing_does_not_fail_the_round_when_a_answers() {
    init_tracing();
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    dns.set_addresses(FQDN, &[ip("10.244.6.1"), ip("10.244.6.2")], 1);
    dns.set_type_behaviour(RecordType::AAAA, Behaviour::ServFail);
    let mut cfg = dns_config(&dns);
    cfg.dns.srv = false;
    cfg.port = PortSpec::Number(50051);
    let metrics = Metrics::default();
    let d = start(&cfg, greeter(), metrics.clone()).await.expect("start");
    let s = wait_for(&d, 10, "A records", |s| s.len() == 2).await;
    assert_eq!(s.freshness(), Freshness::Live, "one family failing is not a failed round");
    assert!(metrics.dns_failures("demo/greeter-service:50051", "server") >= 1, "the AAAA failure is counted");
    // A failing too: now the round fails and the last answer is kept, stale
    dns.set_type_behaviour(RecordType::A, Behaviour::ServFail);
    let s = wait_for(&d, 10, "stale", |s| s.is_stale()).await;
    assert_eq!(s.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_priority_and_weight_are_honoured() {
    init_tracing();
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    let srv = format!("_tri._tcp.{FQDN}");
    let (a, b, backup) = (
        "a.greeter-service.demo.svc.cluster.local",
        "b.greeter-service.demo.svc.cluster.local",
        "c.greeter-service.demo.svc.cluster.local",
    );
    dns.set_addresses(a, &[ip("10.244.7.1")], 5);
    dns.set_addresses(b, &[ip("10.244.7.2")], 5);
    dns.set_addresses(backup, &[ip("10.244.7.3")], 5);
    dns.set_srv_records(&srv, &[(10, 60, 50051, a), (10, 20, 50052, b), (20, 100, 50053, backup)], 1);
    let d = start(&dns_config(&dns), greeter(), Metrics::default()).await.expect("start");
    let s = wait_for(&d, 10, "priority 10", |s| s.len() == 2).await;
    let weights: Vec<(String, u32)> = s.iter().map(|e| (e.key().to_string(), e.weight)).collect();
    assert_eq!(weights, [("10.244.7.1:50051".to_owned(), 60), ("10.244.7.2:50052".to_owned(), 20)]);
    // the preferred targets lose their addresses: the backup priority takes over
    dns.remove(a);
    dns.remove(b);
    let s = wait_for(&d, 10, "backup priority", |s| s.len() == 1).await;
    assert_eq!(routable_keys(&s), ["10.244.7.3:50053"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_srv_record_is_counted_and_the_fallback_port_used() {
    init_tracing();
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    dns.set_addresses(FQDN, &[ip("10.244.8.1")], 0); // TTL 0: asked again at the 200 ms floor
    let mut cfg = dns_config(&dns);
    cfg.fallback_port = 6001;
    let metrics = Metrics::default();
    let d = start(&cfg, greeter(), metrics.clone()).await.expect("start");
    let s = wait_for(&d, 10, "A with the fallback port", |s| s.len() == 1).await;
    assert_eq!(routable_keys(&s), ["10.244.8.1:6001"]);
    tokio::time::sleep(Duration::from_millis(600)).await; // a few more rounds
    assert!(metrics.dns_failures("demo/greeter-service:tri", "no_srv") >= 2, "every round without SRV is counted");
}

/// A timing out while AAAA answers NODATA (every IPv4 cluster): the emptiness comes from the failed
/// query, not from the Service. The last good answer stays, marked stale; the code of the last round
/// published a live, empty set here and every call failed `no_endpoints`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_a_timeout_beside_an_aaaa_nodata_keeps_the_last_answer() {
    init_tracing();
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    dns.set_addresses(FQDN, &[ip("10.244.2.1"), ip("10.244.2.2")], 1);
    let mut cfg = dns_config(&dns);
    cfg.dns.srv = false;
    cfg.dns.timeout = Duration::from_millis(200);
    cfg.dns.attempts = 1;
    let d = start(&cfg, greeter(), Metrics::default()).await.expect("start");
    wait_for(&d, 10, "two", |s| s.len() == 2 && !s.is_stale()).await;
    dns.set_type_behaviour(RecordType::A, Behaviour::Silent);
    let s = wait_for(&d, 10, "stale", |s| s.is_stale()).await;
    assert_eq!(routable_keys(&s), ["10.244.2.1:50051", "10.244.2.2:50051"], "the last good answer stays");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = d.current();
    assert!(s.is_stale() && s.len() == 2, "never a live empty set: {s:?}");
    dns.set_type_behaviour(RecordType::A, Behaviour::Normal);
    wait_for(&d, 10, "live again", |s| !s.is_stale() && s.len() == 2).await;
}

/// One SRV target whose address look-up fails: the round fails (the last good answer stays,
/// stale) instead of publishing the set without that pod as if it were current.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_srv_target_whose_lookup_fails_fails_the_round() {
    init_tracing();
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    dns.set_headless_service(FQDN, Some("tri"), 50051, &[ip("10.244.3.1"), ip("10.244.3.2")], 1);
    let mut cfg = dns_config(&dns);
    cfg.dns.timeout = Duration::from_millis(200);
    cfg.dns.attempts = 1;
    let d = start(&cfg, greeter(), Metrics::default()).await.expect("start");
    wait_for(&d, 10, "two", |s| s.len() == 2 && !s.is_stale()).await;
    dns.set_name_behaviour(&format!("10-244-3-2.{FQDN}"), Behaviour::Silent);
    let s = wait_for(&d, 10, "stale", |s| s.is_stale()).await;
    assert_eq!(s.len(), 2, "the pod whose address could not be looked up is not dropped: {s:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(d.current().len(), 2);
    dns.set_name_behaviour(&format!("10-244-3-2.{FQDN}"), Behaviour::Normal);
    wait_for(&d, 10, "live again", |s| !s.is_stale() && s.len() == 2).await;
}
