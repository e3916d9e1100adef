//! Garbage from the API server and from DNS, through the real kube client and the real hickory
//! resolver: nothing panics, every skipped item is counted (and logged), and the rest is served.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use dubbo_k8s_discovery::{Metrics, ServiceRef};
use serde_json::json;
use support::*;
use testkit::{FakeApiServer, FakeDns, PodEndpoint, endpoint_slice, service_object};

fn greeter() -> ServiceRef {
    ServiceRef::new("org.apache.dubbo.demo.GreeterService").with_version("1.0.0")
}

fn slice_with(
    name: &str,
    address_type: &str,
    ports: serde_json::Value,
    endpoints: serde_json::Value,
) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "greeter-service"}, "futureField": {"x": 1}},
        "addressType": address_type,
        "ports": ports,
        "endpoints": endpoints,
        "somethingNew": [1, 2, 3],
    })
}

fn ep(ip: &str, pod: &str, ready: bool) -> serde_json::Value {
    json!({"addresses": [ip], "conditions": {"ready": ready, "serving": ready, "terminating": false},
           "targetRef": {"kind": "Pod", "namespace": "demo", "name": pod}, "unknownEndpointField": true})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_slices_are_skipped_one_by_one_and_the_rest_is_served() {
    init_tracing();
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    let tri = json!([{"name": "tri", "port": 50051, "protocol": "TCP"}]);
    // The good ones, with unknown fields everywhere (a newer API server).
    api.apply_slice(NS, slice_with("good", "IPv4", tri.clone(), json!([ep("10.1.0.1", "good-1", true)])));
    // No ports at all; only unnamed ports; the named port twice (the first wins, no panic).
    api.apply_slice(NS, slice_with("no-ports", "IPv4", json!([]), json!([ep("10.1.1.1", "np", true)])));
    api.apply_slice(NS, slice_with("null-ports", "IPv4", json!(null), json!([ep("10.1.1.2", "nullp", true)])));
    api.apply_slice(NS, slice_with("unnamed", "IPv4", json!([{"port": 9000}]), json!([ep("10.1.1.3", "un", true)])));
    api.apply_slice(
        NS,
        slice_with(
            "dup-port",
            "IPv4",
            json!([{"name": "tri", "port": 50051}, {"name": "tri", "port": 50052}]),
            json!([ep("10.1.2.1", "dup", true)]),
        ),
    );
    // Bad addresses: not an IP, the wrong family, loopback (refused unless allowed), none at all.
    api.apply_slice(
        NS,
        slice_with(
            "bad-addresses",
            "IPv4",
            tri.clone(),
            json!([
                ep("not-an-ip", "bad-1", true),
                ep("fd00::1", "bad-2", true),
                ep("127.0.0.1", "bad-3", true),
                {"addresses": [], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "bad-4"}},
                ep("10.1.3.1", "fine-among-bad", true),
            ]),
        ),
    );
    // FQDN address type: nothing to connect to by IP here.
    api.apply_slice(NS, slice_with("fqdn", "FQDN", tri.clone(), json!([ep("greeter.example.com", "fq", true)])));
    // An empty endpoint list, and no endpoints field at all.
    api.apply_slice(NS, slice_with("empty", "IPv4", tri.clone(), json!([])));
    api.apply_slice(NS, json!({"metadata": {"name": "bare", "labels": {"kubernetes.io/service-name": "greeter-service"}}, "addressType": "IPv4"}));
    // A 1,000-endpoint slice (the API server's maximum).
    let big: Vec<PodEndpoint> = (0..1000)
        .map(|i| PodEndpoint::ready(format!("10.2.{}.{}", i / 250, i % 250 + 1), format!("big-{i}")))
        .collect();
    api.apply_slice(NS, endpoint_slice("big", "greeter-service", "IPv4", &[("tri", 50051)], &big));
    // The same pod in two slices with different conditions (a controller moving it): served once,
    // with its best conditions.
    api.apply_slice(NS, slice_with("move-a", "IPv4", tri.clone(), json!([ep("10.1.4.1", "moving", false)])));
    api.apply_slice(NS, slice_with("move-b", "IPv4", tri.clone(), json!([ep("10.1.4.1", "moving", true)])));

    let mut cfg = api_config(&api, &dns);
    cfg.api.allow_loopback = false;
    let metrics = Metrics::default();
    let d = start(&cfg, greeter(), metrics.clone()).await.expect("start despite the garbage");
    // good (1) + unnamed (1: a slice's only port, unnamed, is the Service's single port) + dup-port
    // (1) + fine-among-bad (1) + big (1000) + moving (1)
    let s = wait_for(&d, 10, "the usable endpoints", |s| s.len() == 1005).await;
    for want in
        ["10.1.0.1:50051", "10.1.1.3:9000", "10.1.2.1:50051", "10.1.3.1:50051", "10.1.4.1:50051", "10.2.3.250:50051"]
    {
        assert!(s.iter().any(|e| e.key().to_string() == want), "{want} is served");
    }
    let moving = s.iter().find(|e| e.key().to_string() == "10.1.4.1:50051").expect("moving");
    assert!(moving.conditions.ready, "the pod in two slices keeps its best conditions");
    for (reason, at_least) in
        [("no_port", 2), ("invalid_address", 2), ("loopback", 1), ("no_address", 1), ("address_type", 1)]
    {
        let n = metrics.skipped_endpoints(reason);
        assert!(n >= at_least, "skipped for {reason}: {n}, expected at least {at_least}");
    }

    // Deleted while the list is being paged: the end state is still exact.
    let mut cfg = api_config(&api, &dns);
    cfg.api.allow_loopback = false;
    cfg.api.page_size = 1;
    let paged = start(&cfg, greeter(), Metrics::default());
    let deleting = async {
        for name in ["move-a", "move-b", "good"] {
            api.delete_slice(NS, name);
            tokio::task::yield_now().await;
        }
    };
    let (paged, ()) = tokio::join!(paged, deleting);
    let paged = paged.expect("start");
    let s = wait_for(&paged, 10, "the deletions", |s| s.len() == 1003).await;
    assert!(!s.iter().any(|e| e.key().to_string() == "10.1.0.1:50051"));
    assert!(!s.iter().any(|e| e.key().to_string() == "10.1.4.1:50051"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_annotations_warn_and_the_other_services_still_map() {
    init_tracing();
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    let iface = ("dubbo.apache.org/interface", "org.apache.dubbo.demo.GreeterService");
    // A Service whose port annotation is garbage, one with an empty interface list, one with a
    // version wildcard and a port name that no slice has; and the right one.
    api.apply_service(
        NS,
        service_object(
            "broken-port",
            &[iface, ("dubbo.apache.org/version", "1.0.0"), ("dubbo.apache.org/port", "Not A Port!")],
            None,
            ("tri", 50051),
        ),
    );
    api.apply_service(
        NS,
        service_object(
            "empty-iface",
            &[("dubbo.apache.org/interface", " , ,"), ("dubbo.apache.org/version", "1.0.0")],
            None,
            ("tri", 50051),
        ),
    );
    api.apply_service(
        NS,
        service_object(
            "weird",
            &[iface, ("dubbo.apache.org/version", "\u{0}\u{7f}"), ("dubbo.apache.org/group", "")],
            None,
            ("tri", 50051),
        ),
    );
    apply(&api, "broken-port-a", "broken-port", &[PodEndpoint::ready("10.3.0.1", "b-1")]);
    let metrics = Metrics::default();
    let d = start(&api_config(&api, &dns), greeter(), metrics.clone()).await.expect("start");
    // broken-port is the only exact match: it is used, on the default port, with a warning.
    let s = wait_for(&d, 10, "broken-port's endpoint", |s| s.len() == 1).await;
    assert_eq!(d.target().service, "broken-port");
    assert_eq!(routable_keys(&s), ["10.3.0.1:50051"]);
    assert!(metrics.mapping_warnings("invalid_port") >= 1, "the bad port annotation is counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_dns_keeps_the_last_good_answer_or_what_is_usable() {
    init_tracing();
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    let fqdn = "greeter-service.demo.svc.cluster.local";
    let srv = format!("_tri._tcp.{fqdn}");
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    // SRV targets: one with an address, one without any address record, one a CNAME-less dangling
    // name; zero TTLs throughout.
    dns.set_srv_records(&srv, &[(0, 10, 50051, "a.example.test"), (0, 10, 50052, "no-address.example.test")], 0);
    dns.set_addresses("a.example.test", &[ip("10.4.0.1")], 0);
    dns.set_addresses(fqdn, &[ip("10.4.0.1")], 0);
    let mut cfg = dns_config(&dns);
    cfg.dns.ttl_floor = Duration::from_millis(200);
    let metrics = Metrics::default();
    let d = start(&cfg, ServiceRef::new("org.apache.dubbo.demo.GreeterService"), metrics.clone()).await.expect("start");
    let s = wait_for(&d, 10, "the target that has an address", |s| s.len() == 1).await;
    assert_eq!(routable_keys(&s), ["10.4.0.1:50051"], "the SRV target without addresses is left out");

    // A huge answer: 400 SRV targets (truncated over UDP, retried over TCP by the resolver).
    let targets: Vec<String> = (0..400).map(|i| format!("t{i}.example.test")).collect();
    for (i, t) in targets.iter().enumerate() {
        dns.set_addresses(t, &[ip(&format!("10.5.{}.{}", i / 250, i % 250 + 1))], 0);
    }
    let recs: Vec<(u16, u16, u16, &str)> = targets.iter().map(|t| (0, 10, 50051, t.as_str())).collect();
    dns.set_srv_records(&srv, &recs, 0);
    wait_for(&d, 20, "400 targets", |s| s.len() == 400).await;

    // A CNAME chain to the addresses (an SRV target that is an alias of an alias).
    dns.set_srv_records(&srv, &[(0, 10, 50051, "alias.example.test")], 0);
    dns.set_cname("alias.example.test", "alias2.example.test", 0);
    dns.set_cname("alias2.example.test", "real.example.test", 0);
    dns.set_addresses("real.example.test", &[ip("10.6.0.1")], 0);
    let s = wait_for(&d, 10, "the address behind the CNAME chain", |s| s.len() == 1).await;
    assert_eq!(routable_keys(&s), ["10.6.0.1:50051"]);
    // A CNAME loop: no address, no hang, no panic; the round fails and the last answer stays.
    dns.set_srv_records(&srv, &[(0, 10, 50051, "loop-a.example.test")], 0);
    dns.set_cname("loop-a.example.test", "loop-b.example.test", 0);
    dns.set_cname("loop-b.example.test", "loop-a.example.test", 0);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(d.current().len() <= 1, "a looping alias adds nothing");
    dns.set_srv_records(&srv, &recs, 0);
    wait_for(&d, 20, "400 targets again", |s| s.len() == 400).await;

    // Garbage afterwards (SERVFAIL): the last good answer stays.
    dns.set_behaviour(testkit::Behaviour::ServFail);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(d.current().len(), 400, "a failing server does not empty the set");
}
