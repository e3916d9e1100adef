//! API mode under exactly the Role shipped in k8s/ (list and watch on endpointslices and services),
//! enforced by the test API server as a real one enforces RBAC: it works, with annotations; taking
//! a permission away is reported with the verb and resource that are missing.

mod support;

use dubbo_k8s_discovery::{Error, Metrics, ServiceRef};
use support::*;
use testkit::{FakeApiServer, FakeDns, PodEndpoint, service_object};

const SHIPPED: &[(&str, &str, &[&str])] =
    &[("discovery.k8s.io", "endpointslices", &["list", "watch"]), ("", "services", &["list", "watch"])];

fn greeter() -> ServiceRef {
    ServiceRef::new("org.apache.dubbo.demo.GreeterService").with_version("1.0.0")
}

async fn servers() -> (FakeApiServer, FakeDns) {
    init_tracing();
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    api.apply_service(
        NS,
        service_object(
            "greeter-v1",
            &[
                ("dubbo.apache.org/interface", "org.apache.dubbo.demo.GreeterService"),
                ("dubbo.apache.org/version", "1.0.0"),
            ],
            None,
            ("tri", 50051),
        ),
    );
    apply(&api, "greeter-v1-a", "greeter-v1", &[PodEndpoint::ready("10.7.0.1", "g-1")]);
    (api, dns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_mode_works_with_exactly_the_shipped_role() {
    let (api, dns) = servers().await;
    api.enforce_role(Some(SHIPPED));
    let d = start(&api_config(&api, &dns), greeter(), Metrics::default()).await.expect("start under the shipped Role");
    let s = wait_for(&d, 10, "the annotated Service's endpoint", |s| s.len() == 1).await;
    assert_eq!(d.target().service, "greeter-v1", "annotation mapping works: services are listed and watched");
    assert_eq!(routable_keys(&s), ["10.7.0.1:50051"]);
    apply(&api, "greeter-v1-a", "greeter-v1", &[PodEndpoint::ready("10.7.0.2", "g-2")]);
    wait_for(&d, 10, "a change through the watch", |s| routable_keys(s) == ["10.7.0.2:50051"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_permission_is_named_with_its_verb_and_resource() {
    let (api, dns) = servers().await;
    api.enforce_role(Some(&[("discovery.k8s.io", "endpointslices", &["list"]), ("", "services", &["list", "watch"])]));
    let err = start(&api_config(&api, &dns), greeter(), Metrics::default()).await.expect_err("watch is missing");
    match &err {
        Error::Forbidden { missing, namespace, role } => {
            assert_eq!(namespace, NS);
            let missing = missing.join(", ");
            assert!(missing.contains("watch endpointslices"), "{missing}");
            assert!(!missing.contains("list"), "only what is missing is named: {missing}");
            assert!(role.contains("kind: Role") && role.contains("endpointslices"), "{role}");
        }
        other => panic!("expected Forbidden, got {other}"),
    }
    let text = err.to_string();
    assert!(text.contains("watch endpointslices") && text.contains(NS), "{text}");
    assert!(!text.contains('\n'), "the message is one line; the Role comes from Error::role: {text}");
    assert!(err.role().is_some_and(|r| r.contains("kind: RoleBinding")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_services_the_naming_rule_still_works() {
    let (api, dns) = servers().await;
    api.enforce_role(Some(&[("discovery.k8s.io", "endpointslices", &["list", "watch"])]));
    apply(&api, "greeter-service-a", "greeter-service", &[PodEndpoint::ready("10.7.1.1", "rule-1")]);
    let d = start(&api_config(&api, &dns), greeter(), Metrics::default()).await.expect("start without services");
    let s = wait_for(&d, 10, "the rule's Service", |s| s.len() == 1).await;
    assert_eq!(d.target().service, "greeter-service", "annotations need services; the rule {{simple}} applies");
    assert_eq!(routable_keys(&s), ["10.7.1.1:50051"]);
}
