//! One hub per process: shared watches, mapping that follows Service annotations live (blue/green by
//! moving an annotation, a mapping added after start, a look-up that failed at start), precedence
//! and warnings, and the RBAC check of the namespace actually watched.

mod support;

use std::time::Duration;

use dubbo_k8s_discovery::{Discovery, Error, MappingRule, Metrics, ServiceRef, Source};
use support::*;
use testkit::{FakeApiServer, FakeDns, Misbehaviour, service_object};

fn greeter(version: &str) -> ServiceRef {
    ServiceRef::new("org.apache.dubbo.demo.GreeterService").with_version(version)
}

fn declares(version: &str) -> Vec<(&'static str, String)> {
    vec![
        ("dubbo.apache.org/interface", "org.apache.dubbo.demo.GreeterService".to_owned()),
        ("dubbo.apache.org/version", version.to_owned()),
    ]
}

fn annotated(name: &str, ann: &[(&str, String)]) -> serde_json::Value {
    let pairs: Vec<(&str, &str)> = ann.iter().map(|(k, v)| (*k, v.as_str())).collect();
    service_object(name, &pairs, None, ("tri", 50051))
}

async fn servers() -> (FakeApiServer, FakeDns) {
    init_tracing();
    (FakeApiServer::start().await.expect("api"), FakeDns::start(DOMAIN).await.expect("dns"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_sharing_a_kubernetes_service_share_one_watch() {
    let (api, dns) = servers().await;
    apply(&api, "greeter-service-a", "greeter-service", &pods("g", 1, 2));
    let mut cfg = api_config(&api, &dns);
    cfg.api.annotations = false;
    let hub = Discovery::new(&cfg, Metrics::default()).await.expect("hub");
    // Three identities, one Kubernetes Service (the naming rule {simple} ignores the version).
    let a = hub.service(greeter("1.0.0")).await.expect("a");
    let b = hub.service(greeter("1.1.0")).await.expect("b");
    let c = hub.service(greeter("")).await.expect("c");
    for w in [&a, &b, &c] {
        wait_for(w, 10, "two", |s| s.len() == 2).await;
    }
    assert_eq!(api.lists(), 1, "one list for the three of them");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.watches(), 1, "one watch for the three of them");
    apply(&api, "greeter-service-a", "greeter-service", &pods("g", 1, 3));
    for w in [&a, &b, &c] {
        wait_for(w, 10, "three", |s| s.len() == 3).await;
    }
    assert_eq!(api.watches(), 1);
    // The watch stops with the last subscriber.
    drop((a, b, c));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let d = hub.service(greeter("1.0.0")).await.expect("again");
    wait_for(&d, 10, "three", |s| s.len() == 3).await;
    assert_eq!(api.lists(), 2, "a new subscriber after the last one left starts a new watch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_annotation_retargets_a_running_subscriber() {
    let (api, dns) = servers().await;
    api.apply_service(NS, annotated("greeter-blue", &declares("1.0.0")));
    api.apply_service(NS, annotated("greeter-green", &[]));
    apply(&api, "greeter-blue-a", "greeter-blue", &pods("blue", 1, 2));
    apply(&api, "greeter-green-a", "greeter-green", &pods("green", 2, 3));
    let metrics = Metrics::default();
    let d = start(&api_config(&api, &dns), greeter("1.0.0"), metrics.clone()).await.expect("start");
    assert_eq!((d.target().service.as_str(), d.rule()), ("greeter-blue", MappingRule::Annotation));
    let s = wait_for(&d, 10, "blue", |s| s.len() == 2).await;
    let v_blue = s.version();
    let mut updates = d.updates();
    let first = updates.next().await.expect("reset");
    assert_eq!(first.set().len(), 2);

    // Blue/green: the annotation moves to green (added there, removed from blue).
    api.apply_service(NS, annotated("greeter-green", &declares("1.0.0")));
    api.apply_service(NS, annotated("greeter-blue", &[]));
    let s = wait_for(&d, 10, "green", |s| s.len() == 3).await;
    assert_eq!(d.target().service, "greeter-green");
    assert!(s.version() > v_blue, "versions keep increasing across a re-target");
    assert!(routable_keys(&s).iter().all(|k| k.starts_with("10.1.2.")));
    assert_eq!(metrics.retargets(&greeter("1.0.0").to_string()), 1);
    // Subscribers get the move as deltas, not a reset.
    let u = tokio::time::timeout(Duration::from_secs(5), updates.next()).await.expect("in time").expect("open");
    match u {
        dubbo_k8s_discovery::Update::Apply { deltas, set } => {
            assert_eq!(set.len(), 3);
            let (added, removed): (usize, usize) =
                deltas.iter().fold((0, 0), |(a, r), d| (a + d.added.len(), r + d.removed.len()));
            assert_eq!((added, removed), (3, 2));
        }
        other => panic!("expected deltas, got a reset: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_annotation_added_after_start_takes_over_from_the_naming_rule() {
    let (api, dns) = servers().await;
    apply(&api, "greeter-service-a", "greeter-service", &pods("rule", 1, 1));
    apply(&api, "greeter-v1-a", "greeter-v1", &pods("ann", 2, 2));
    let d = start(&api_config(&api, &dns), greeter("1.0.0"), Metrics::default()).await.expect("start");
    assert_eq!((d.target().service.as_str(), d.rule()), ("greeter-service", MappingRule::Template));
    wait_for(&d, 10, "rule's service", |s| s.len() == 1).await;
    api.apply_service(NS, annotated("greeter-v1", &declares("1.0.0")));
    wait_for(&d, 10, "annotated service", |s| s.len() == 2).await;
    assert_eq!((d.target().service.as_str(), d.rule()), ("greeter-v1", MappingRule::Annotation));
    // ... and when the Service goes, the naming rule applies again.
    assert!(api.delete_service(NS, "greeter-v1"));
    wait_for(&d, 10, "back to the rule", |s| s.len() == 1).await;
    assert_eq!(d.rule(), MappingRule::Template);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_that_failed_at_start_is_retried_in_the_background() {
    let (api, dns) = servers().await;
    api.apply_service(NS, annotated("greeter-v1", &declares("1.0.0")));
    apply(&api, "greeter-v1-a", "greeter-v1", &pods("ann", 2, 2));
    apply(&api, "greeter-service-a", "greeter-service", &pods("rule", 1, 1));
    let mut cfg = api_config(&api, &dns);
    cfg.api.cold_start_timeout = Duration::from_millis(600);
    cfg.api.request_timeout = Duration::from_millis(300);
    // The API answers access reviews but every list and watch hangs at start.
    api.set_misbehaviour(Misbehaviour::Silent);
    let started = std::time::Instant::now();
    let d = start(&cfg, greeter("1.0.0"), Metrics::default()).await.expect("start");
    assert!(started.elapsed() < Duration::from_secs(3), "start is bounded: {:?}", started.elapsed());
    assert_eq!(d.rule(), MappingRule::Template, "until Services can be read, the naming rule");
    api.set_misbehaviour(Misbehaviour::None);
    let s = wait_for(&d, 15, "the annotated Service, once listed", |s| s.len() == 2 && s.source() == Source::Api).await;
    assert!(routable_keys(&s).iter().all(|k| k.starts_with("10.1.2.")));
    assert_eq!(d.rule(), MappingRule::Annotation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_beats_wildcard_and_ties_and_bad_ports_are_warnings() {
    let (api, dns) = servers().await;
    let mut any = declares("*");
    any.push(("dubbo.apache.org/port", "grpc".into()));
    api.apply_service(NS, annotated("a-any-version", &any));
    api.apply_service(NS, annotated("z-exact", &declares("1.0.0")));
    apply(&api, "z-exact-a", "z-exact", &pods("exact", 1, 1));
    let metrics = Metrics::default();
    let d = start(&api_config(&api, &dns), greeter("1.0.0"), metrics.clone()).await.expect("start");
    assert_eq!(d.target().service, "z-exact", "an exact version beats * even when later by name");
    // A second exact match: a tie, first by name wins, counted once however often Services change.
    let mut twin = declares("1.0.0");
    twin.push(("dubbo.apache.org/port", "not a port!".into()));
    api.apply_service(NS, annotated("m-twin", &twin));
    tokio::time::timeout(Duration::from_secs(5), async {
        while d.target().service != "m-twin" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the tie resolves to the first by name");
    api.apply_service(NS, annotated("unrelated", &[]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(metrics.mapping_warnings("tie"), 1);
    assert_eq!(metrics.mapping_warnings("invalid_port"), 1, "the bad port annotation is reported");
    assert_eq!(d.target().port, dubbo_k8s_discovery::PortSpec::Name("tri".into()), "...and the default port used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_is_checked_in_the_namespace_an_explicit_mapping_points_to() {
    let (api, dns) = servers().await;
    api.deny_in("payments", "watch", "endpointslices");
    let mut cfg = api_config(&api, &dns);
    cfg.mappings =
        dubbo_k8s_discovery::mapping::parse_mappings("org.apache.dubbo.demo.GreeterService:1.0.0=payments/greeter")
            .expect("mapping");
    let hub = Discovery::new(&cfg, Metrics::default()).await.expect("the default namespace is allowed");
    let err = hub.service(greeter("1.0.0")).await.expect_err("denied in payments");
    assert!(matches!(&err, Error::Forbidden { namespace, .. } if namespace == "payments"), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("watch endpointslices.discovery.k8s.io") && msg.contains("\"payments\""), "{msg}");
    assert!(err.role().is_some_and(|r| r.contains("namespace: payments")));
    // Another identity in the default namespace is fine.
    hub.service(greeter("2.0.0")).await.expect("demo is allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_permission_on_services_the_naming_rule_applies_without_a_watch() {
    let (api, dns) = servers().await;
    api.deny("list", "services");
    api.apply_service(NS, annotated("greeter-v1", &declares("1.0.0")));
    apply(&api, "greeter-service-a", "greeter-service", &pods("rule", 1, 1));
    let d = start(&api_config(&api, &dns), greeter("1.0.0"), Metrics::default()).await.expect("start");
    assert_eq!(d.rule(), MappingRule::Template);
    wait_for(&d, 10, "rule", |s| s.len() == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.lists(), 1, "only the EndpointSlices are listed: no Service watch retrying a 403");
}

/// A zone look-up that fails for a transient reason (here: the API server does not answer in time)
/// is tried again, and the zone becomes known to whoever follows it. The code of the last round
/// cached "no zone" for the life of the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_lookup_that_timed_out_is_tried_again() {
    let (api, dns) = servers().await;
    api.apply_node("node-a", &[(dubbo_k8s_discovery::ZONE_LABEL, "zone-a")]);
    let mut cfg = api_config(&api, &dns);
    cfg.locality.node_name = Some("node-a".into());
    cfg.api.rbac_check = false;
    cfg.api.probe_interval = Duration::ZERO;
    cfg.api.request_timeout = Duration::from_millis(300);
    api.freeze();
    let hub = Discovery::new(&cfg, Metrics::default()).await.expect("hub");
    assert_eq!(hub.zone().await, None, "the first look-up timed out");
    api.thaw();
    let mut rx = hub.zone_watch();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|z| z.as_deref() == Some("zone-a")))
        .await
        .expect("the zone becomes known once the API answers")
        .expect("followed");
    assert_eq!(hub.zone().await.as_deref(), Some("zone-a"));
}

/// The gauges of a Service nobody follows any more are removed: a stale value above zero would page
/// someone for ever. (The code of the last round never removed a series.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_service_takes_its_gauges_with_it() {
    let (api, dns) = servers().await;
    apply(&api, "greeter-service-a", "greeter-service", &pods("g", 1, 2));
    let metrics = Metrics::default();
    let mut cfg = api_config(&api, &dns);
    cfg.api.annotations = false;
    let hub = Discovery::new(&cfg, metrics.clone()).await.expect("hub");
    let d = hub.service(greeter("1.0.0")).await.expect("watch");
    wait_for(&d, 10, "two", |s| s.len() == 2).await;
    let key = d.target().to_string();
    // The gauges follow the publication (the set is visible a moment before its metrics are).
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while !metrics.exports(&key) && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metrics.exports(&key), "exported while followed");
    drop(d);
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while metrics.exports(&key) && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!metrics.exports(&key), "removed once nobody follows {key}");
}

/// A reference that matches no explicit mapping and no annotation falls to the naming rule; when
/// that Service does not exist, it is said once, with the rule that chose it and what might have
/// been meant (here: a mapping and an annotated Service for version 1.0.0, asked without a
/// version). The code of the last round said nothing: calls just failed `no_endpoints`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_service_that_does_not_exist_is_explained() {
    let (api, dns) = servers().await;
    api.apply_service(NS, annotated("greeter-v1", &declares("1.0.0")));
    let metrics = Metrics::default();
    let mut cfg = api_config(&api, &dns);
    cfg.mappings =
        dubbo_k8s_discovery::mapping::parse_mappings("org.apache.dubbo.demo.GreeterService:1.0.0=greeter-v1")
            .expect("mapping");
    let d = start(&cfg, ServiceRef::new("org.apache.dubbo.demo.GreeterService"), metrics.clone()).await.expect("start");
    assert_eq!(d.rule(), MappingRule::Template);
    let problem = d.problem().expect("explained");
    for words in [
        "demo/greeter-service:tri does not exist",
        "naming rule",
        "DISCOVERY_MAPPINGS has org.apache.dubbo.demo.GreeterService:1.0.0 -> greeter-v1",
        "Service greeter-v1 declares it with version 1.0.0",
    ] {
        assert!(problem.contains(words), "{words:?} in {problem}");
    }
    assert_eq!(metrics.mapping_warnings("missing_service"), 1);
    // The Service appears: the problem goes.
    api.apply_service(NS, annotated("greeter-service", &[]));
    let mut binding = d.binding();
    tokio::time::timeout(Duration::from_secs(10), binding.wait_for(|b| b.problem.is_none()))
        .await
        .expect("cleared")
        .expect("open");
    assert_eq!(metrics.mapping_warnings("missing_service"), 1, "said once");
}
