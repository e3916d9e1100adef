//! API mode through the real kube client against the in-process Kubernetes API server.

mod support;

use std::time::Duration;

use dubbo_k8s_discovery::{Error, Freshness, Metrics, PortSpec, ServiceRef, Source};
use support::*;
use testkit::{FakeApiServer, FakeDns, PodEndpoint, service_object};

fn greeter() -> ServiceRef {
    ServiceRef::new("org.apache.dubbo.demo.GreeterService").with_version("1.0.0")
}

async fn servers() -> (FakeApiServer, FakeDns) {
    init_tracing();
    (FakeApiServer::start().await.expect("api server"), FakeDns::start(DOMAIN).await.expect("dns server"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_250_endpoints_over_3_slices_with_pagination() {
    let (api, dns) = servers().await;
    apply(&api, "greeter-service-a", "greeter-service", &pods("greeter", 1, 100));
    apply(&api, "greeter-service-b", "greeter-service", &pods("greeter", 2, 100));
    apply(&api, "greeter-service-c", "greeter-service", &pods("greeter", 3, 50));
    apply(&api, "other-x", "other", &pods("other", 9, 5));
    let mut cfg = api_config(&api, &dns);
    cfg.api.page_size = 2; // three slices in two pages: exercises `continue`
    let d = start(&cfg, greeter(), Metrics::default()).await.expect("start");
    assert_eq!(d.target().service, "greeter-service", "naming rule {{simple}}");
    let s = wait_for(&d, 10, "250 endpoints", |s| s.len() == 250).await;
    assert_eq!(s.source(), Source::Api);
    assert_eq!(s.routable_len(), 250);
    assert!(s.iter().all(|e| e.addr.port() == 50051 && e.zone.as_deref() == Some("zone-a")));
    assert!(!s.iter().any(|e| e.key().to_string().starts_with("10.1.9.")), "other Service's slice excluded by label");

    // a slice deleted: its 50 endpoints go, the rest stay
    assert!(api.delete_slice(NS, "greeter-service-c"));
    let s = wait_for(&d, 10, "200 endpoints after slice delete", |s| s.len() == 200).await;
    assert!(!s.iter().any(|e| e.key().to_string().starts_with("10.1.3.")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_not_ready_then_terminating_and_scale_to_zero_and_back() {
    let (api, dns) = servers().await;
    let a = PodEndpoint::ready("10.1.0.1", "greeter-1");
    let b = PodEndpoint::ready("10.1.0.2", "greeter-2");
    apply(&api, "greeter-service-a", "greeter-service", &[a.clone(), b.clone()]);
    let d = start(&api_config(&api, &dns), greeter(), Metrics::default()).await.expect("start");
    wait_for(&d, 10, "two ready", |s| s.routable_len() == 2).await;
    let v0 = d.current().version();

    // b fails its readiness probe: listed, not routable
    apply(&api, "greeter-service-a", "greeter-service", &[a.clone(), b.clone().not_ready()]);
    let s = wait_for(&d, 10, "b not ready", |s| routable_keys(s) == ["10.1.0.1:50051"]).await;
    assert_eq!(s.len(), 2, "not-ready endpoints stay visible with their conditions");
    assert!(s.version() > v0);

    // a is deleted (terminating, still serving) and b not ready: a is the serving fallback
    apply(&api, "greeter-service-a", "greeter-service", &[a.clone().terminating(), b.clone().not_ready()]);
    let s = wait_for(&d, 10, "terminating fallback", |s| s.iter().any(|e| e.conditions.terminating)).await;
    assert_eq!(routable_keys(&s), ["10.1.0.1:50051"], "no ready endpoint: route to serving-while-terminating");

    // scale to zero: an empty, live set from the API (not an outage, no failover)
    apply(&api, "greeter-service-a", "greeter-service", &[]);
    let s = wait_for(&d, 10, "zero endpoints", |s| s.is_empty()).await;
    assert_eq!(s.source(), Source::Api);
    assert_eq!(s.freshness(), Freshness::Live);
    assert!(!s.is_pending());

    // and back
    apply(&api, "greeter-service-a", "greeter-service", &[PodEndpoint::ready("10.1.0.7", "greeter-7")]);
    let s = wait_for(&d, 10, "scaled back", |s| routable_keys(s) == ["10.1.0.7:50051"]).await;
    assert_eq!(s.source(), Source::Api);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relists_on_410_during_a_watch_with_an_atomic_swap() {
    let (api, dns) = servers().await;
    apply(&api, "greeter-service-a", "greeter-service", &pods("greeter", 1, 3));
    let metrics = Metrics::default();
    let mut cfg = api_config(&api, &dns);
    cfg.api.annotations = false; // the EndpointSlice watch is the only one
    let d = start(&cfg, greeter(), metrics.clone()).await.expect("start");
    wait_for(&d, 10, "three", |s| s.len() == 3).await;
    // The watch must be open for a 410 to reach it.
    tokio::time::timeout(Duration::from_secs(5), async {
        while api.watches() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the client opens a watch");
    let lists_before = api.lists();

    // Record every snapshot published from here on: none may be partial.
    let mut rx = d.watch();
    let recorder = tokio::spawn(async move {
        let mut sizes = Vec::new();
        while rx.changed().await.is_ok() {
            let n = rx.borrow_and_update().len();
            sizes.push(n);
            if n == 5 {
                break;
            }
        }
        sizes
    });
    api.expire_watches();
    apply(&api, "greeter-service-b", "greeter-service", &pods("greeter", 2, 2));
    let s = wait_for(&d, 10, "five after relist", |s| s.len() == 5).await;
    assert_eq!(s.freshness(), Freshness::Live);
    let sizes = tokio::time::timeout(Duration::from_secs(5), recorder).await.expect("recorder").expect("join");
    assert!(sizes.iter().all(|n| *n == 3 || *n == 5), "no half-empty set was published: {sizes:?}");
    // The 410 and the ADDED event race on the wire; either way the client lists again.
    let relisted = tokio::time::timeout(Duration::from_secs(5), async {
        while api.lists() == lists_before || metrics.watch_restarts("endpointslices demo", "gone") == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(relisted.is_ok(), "a 410 makes the client list again (lists {} -> {})", lists_before, api.lists());
    assert_eq!(d.current().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_outage_keeps_last_known_good_then_recovers() {
    let (api, dns) = servers().await;
    apply(&api, "greeter-service-a", "greeter-service", &pods("greeter", 1, 3));
    let d = start(&api_config(&api, &dns), greeter(), Metrics::default()).await.expect("start");
    wait_for(&d, 10, "three", |s| s.len() == 3).await;

    api.stop();
    let s = wait_for(&d, 10, "stale", |s| matches!(s.freshness(), Freshness::Stale { .. })).await;
    assert_eq!(s.len(), 3, "last-known-good endpoints are kept");
    assert_eq!(s.source(), Source::Api);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = d.current();
    assert_eq!(s.len(), 3);
    assert!(s.stale_for(std::time::Instant::now()) >= Duration::from_millis(400), "age is exposed");

    // changes made while this client could not see them (another API server replica)
    apply(&api, "greeter-service-a", "greeter-service", &pods("greeter", 1, 4));
    api.restart().await.expect("restart");
    let s = wait_for(&d, 15, "recovered with 4", |s| s.freshness() == Freshness::Live && s.len() == 4).await;
    assert_eq!(s.source(), Source::Api);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotations_choose_the_service_and_its_port() {
    let (api, dns) = servers().await;
    api.apply_service(
        NS,
        service_object(
            "greeter-v2",
            &[
                ("dubbo.apache.org/interface", "org.apache.dubbo.demo.GreeterService"),
                ("dubbo.apache.org/version", "2.0.0"),
                ("dubbo.apache.org/port", "grpc"),
            ],
            Some("10.96.0.20"),
            ("grpc", 7000),
        ),
    );
    api.apply_service(
        NS,
        service_object(
            "greeter-v1",
            &[
                ("dubbo.apache.org/interface", "org.apache.dubbo.demo.GreeterService"),
                ("dubbo.apache.org/version", "1.0.0"),
            ],
            Some("10.96.0.10"),
            ("tri", 50051),
        ),
    );
    api.apply_slice(
        NS,
        testkit::endpoint_slice("greeter-v2-x", "greeter-v2", "IPv4", &[("grpc", 7000)], &pods("v2", 2, 2)),
    );
    apply(&api, "greeter-v1-x", "greeter-v1", &pods("v1", 1, 1));
    let v2 = greeter().with_version("2.0.0");
    let d = start(&api_config(&api, &dns), v2, Metrics::default()).await.expect("start");
    assert_eq!(d.target().service, "greeter-v2");
    assert_eq!(d.target().port, PortSpec::Name("grpc".into()));
    assert_eq!(d.rule(), dubbo_k8s_discovery::MappingRule::Annotation);
    let s = wait_for(&d, 10, "v2 endpoints", |s| s.len() == 2).await;
    assert!(s.iter().all(|e| e.addr.port() == 7000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_denial_fails_start_with_the_role_to_apply() {
    let (api, dns) = servers().await;
    api.deny("watch", "endpointslices");
    let err = start(&api_config(&api, &dns), greeter(), Metrics::default()).await.expect_err("denied");
    assert!(matches!(err, Error::Forbidden { .. }));
    let msg = err.to_string();
    assert!(msg.contains("watch endpointslices.discovery.k8s.io"), "{msg}");
    let role = err.role().expect("the Role to apply");
    assert!(role.contains("kind: Role") && role.contains("namespace: demo"), "{role}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_on_list_is_reported_with_what_to_grant() {
    let (api, dns) = servers().await;
    api.set_forbidden(true);
    let mut cfg = api_config(&api, &dns);
    cfg.api.rbac_check = false;
    cfg.api.failover = false;
    let d = start(&cfg, greeter(), Metrics::default()).await.expect("start");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(d.current().is_pending(), "nothing is known while forbidden");
    api.set_forbidden(false);
    apply(&api, "greeter-service-a", "greeter-service", &pods("greeter", 1, 1));
    wait_for(&d, 10, "allowed again", |s| s.len() == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_survives_server_side_timeouts_and_bookmarks() {
    let (api, dns) = servers().await;
    api.set_bookmark_interval(Some(Duration::from_millis(100)));
    apply(&api, "greeter-service-a", "greeter-service", &pods("greeter", 1, 1));
    let mut cfg = api_config(&api, &dns);
    cfg.api.watch_timeout = Duration::from_secs(1);
    let d = start(&cfg, greeter(), Metrics::default()).await.expect("start");
    wait_for(&d, 10, "one", |s| s.len() == 1).await;
    tokio::time::sleep(Duration::from_millis(2500)).await; // at least two watch timeouts
    assert!(api.watches() >= 3, "the client watches again after each timeout (watches: {})", api.watches());
    let lists = api.lists();
    apply(&api, "greeter-service-a", "greeter-service", &pods("greeter", 1, 2));
    wait_for(&d, 10, "two", |s| s.len() == 2).await;
    assert_eq!(api.lists(), lists, "an event is applied from the watch, never by listing again");
    assert_eq!(d.current().freshness(), Freshness::Live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_written_over_http_by_a_kube_client_are_seen() {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{Api, DeleteParams, PostParams};

    let (api, dns) = servers().await;
    let d = start(&api_config(&api, &dns), greeter(), Metrics::default()).await.expect("start");
    wait_for(&d, 10, "empty", |s| !s.is_pending() && s.is_empty()).await;

    let client = kube::Client::try_from(kube::Config::new(api.url().parse().expect("uri"))).expect("client");
    let slices: Api<EndpointSlice> = Api::namespaced(client, NS);
    let obj: EndpointSlice = serde_json::from_value(testkit::endpoint_slice(
        "written",
        "greeter-service",
        "IPv4",
        &[("tri", 50051)],
        &pods("w", 4, 2),
    ))
    .expect("slice");
    let created = slices.create(&PostParams::default(), &obj).await.expect("create");
    assert!(created.metadata.resource_version.is_some());
    wait_for(&d, 10, "two written", |s| s.len() == 2).await;
    slices.delete("written", &DeleteParams::default()).await.expect("delete");
    wait_for(&d, 10, "deleted", |s| s.is_empty()).await;
    let missing = slices.delete("written", &DeleteParams::default()).await;
    assert!(matches!(missing, Err(kube::Error::Api(s)) if s.code == 404));
}

/// The writes the benchmarks and the fault suite make follow a real server's rules: create of an
/// existing name 409, update of a missing object 404, stale resourceVersion 409, the uid kept for
/// life; deleting a namespace deletes what is in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_over_http_follow_the_api_servers_rules() {
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{Api, DeleteParams, PostParams};

    let (api, dns) = servers().await;
    let client = kube::Client::try_from(kube::Config::new(api.url().parse().expect("uri"))).expect("client");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": NS}})).expect("ns");
    namespaces.create(&PostParams::default(), &ns).await.expect("create namespace");
    let again = namespaces.create(&PostParams::default(), &ns).await;
    assert!(matches!(again, Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists"));
    let d = start(&api_config(&api, &dns), greeter(), Metrics::default()).await.expect("start");

    let slices: Api<EndpointSlice> = Api::namespaced(client, NS);
    let slice = |n: u8| -> EndpointSlice {
        serde_json::from_value(testkit::endpoint_slice(
            "written",
            "greeter-service",
            "IPv4",
            &[("tri", 50051)],
            &pods("w", n, 2),
        ))
        .expect("slice")
    };
    let missing = slices.replace("written", &PostParams::default(), &slice(1)).await;
    assert!(matches!(missing, Err(kube::Error::Api(ref s)) if s.code == 404), "PUT of a missing slice: {missing:?}");
    let first = slices.create(&PostParams::default(), &slice(1)).await.expect("create");
    let dup = slices.create(&PostParams::default(), &slice(1)).await;
    assert!(matches!(dup, Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists"));
    let second = slices.replace("written", &PostParams::default(), &slice(2)).await.expect("unconditional update");
    assert_eq!(first.metadata.uid, second.metadata.uid, "the uid is kept across updates");
    let stale = slices.replace("written", &PostParams::default(), &first).await;
    assert!(matches!(stale, Err(kube::Error::Api(ref s)) if s.code == 409 && s.reason == "Conflict"), "{stale:?}");
    wait_for(&d, 10, "the second write", |s| {
        s.len() == 2 && s.iter().all(|e| e.addr.ip().to_string().starts_with("10.1.2."))
    })
    .await;

    namespaces.delete(NS, &DeleteParams::default()).await.expect("delete namespace");
    wait_for(&d, 10, "the namespace's slices deleted with it", |s| s.is_empty()).await;
    let gone = namespaces.get(NS).await;
    assert!(matches!(gone, Err(kube::Error::Api(s)) if s.code == 404));
}

/// Where the server offers streaming lists (`sendInitialEvents`, Kubernetes 1.27+ with WatchList),
/// the first snapshot comes from one: no plain list is made. Where it refuses them (etcd 3.4, the
/// feature off), discovery lists from the watch cache instead (`resourceVersion=0`) and never
/// asks for a consistent read from etcd. Either way the set is complete and changes follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_lists_where_offered_and_cached_lists_where_refused() {
    for streaming in [true, false] {
        let (api, dns) = servers().await;
        api.set_streaming_lists(streaming);
        apply(&api, "greeter-service-a", "greeter-service", &pods("greeter", 1, 30));
        apply(&api, "greeter-service-b", "greeter-service", &pods("greeter", 2, 20));
        let d = start(&api_config(&api, &dns), greeter(), Metrics::default()).await.expect("start");
        wait_for(&d, 10, "50 endpoints", |s| s.len() == 50).await;
        let kinds = api.list_kinds();
        if streaming {
            assert!(kinds.is_empty(), "streaming list served: no plain list needed, made {kinds:?}");
        } else {
            assert_eq!(kinds.first(), Some(&testkit::ListKind::Cached), "refused: a list from the cache, {kinds:?}");
            assert!(!kinds.contains(&testkit::ListKind::Consistent), "never a consistent read: {kinds:?}");
        }
        apply(&api, "greeter-service-b", "greeter-service", &pods("greeter", 2, 10));
        wait_for(&d, 10, "a change after the first list", |s| s.len() == 40).await;
    }
}
