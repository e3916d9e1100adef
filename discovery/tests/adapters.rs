//! The tower `Change` stream and the dubbo `Registry` extension, fed by the API source.

mod support;

use std::time::Duration;

use dubbo_k8s_discovery::{Metrics, ServiceRef};
use futures::StreamExt;
use support::*;
use testkit::{FakeApiServer, FakeDns, PodEndpoint};
use tower::discover::Change;

fn greeter() -> ServiceRef {
    ServiceRef::new("org.apache.dubbo.demo.GreeterService")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_changes_follow_the_routable_set() {
    init_tracing();
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    let a = PodEndpoint::ready("10.1.0.1", "a");
    let b = PodEndpoint::ready("10.1.0.2", "b");
    apply(&api, "s1", "greeter-service", &[a.clone(), b.clone()]);
    let d = start(&api_config(&api, &dns), greeter(), Metrics::default()).await.expect("start");
    wait_for(&d, 10, "two", |s| s.len() == 2).await;

    let mut changes = Box::pin(dubbo_k8s_discovery::adapter::tower::changes(d.updates()));
    let mut next = async || -> String {
        match tokio::time::timeout(Duration::from_secs(10), changes.next()).await {
            Ok(Some(Ok(Change::Insert(k, _)))) => format!("+{k}"),
            Ok(Some(Ok(Change::Remove(k)))) => format!("-{k}"),
            other => panic!("no change: {other:?}"),
        }
    };
    let mut first = vec![next().await, next().await];
    first.sort();
    assert_eq!(first, ["+10.1.0.1:50051", "+10.1.0.2:50051"]);

    apply(&api, "s1", "greeter-service", &[a.clone(), b.clone().not_ready()]);
    assert_eq!(next().await, "-10.1.0.2:50051");
    apply(&api, "s2", "greeter-service", &[PodEndpoint::ready("10.1.0.3", "c")]);
    assert_eq!(next().await, "+10.1.0.3:50051");
    // a slice rewritten without a visible change emits nothing: the next change is the one after it
    apply(&api, "s1", "greeter-service", &[a.clone(), b.clone().not_ready()]);
    apply(&api, "s2", "greeter-service", &[PodEndpoint::ready("10.1.0.3", "c"), PodEndpoint::ready("10.1.0.4", "d")]);
    assert_eq!(next().await, "+10.1.0.4:50051");
    // the stream ends when the Discovery is dropped
    drop(d);
    let end = tokio::time::timeout(Duration::from_secs(5), changes.next()).await.expect("ends in time");
    assert!(end.is_none());
}

#[cfg(feature = "dubbo")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dubbo_registry_subscription_lists_provider_urls() {
    use dubbo::extension::registry_extension::{Registry, ServiceChange};
    use dubbo_k8s_discovery::adapter::dubbo::KubernetesRegistry;

    init_tracing();
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    apply(&api, "s1", "greeter-service-v1", &[PodEndpoint::ready("10.1.0.1", "a")]);
    let mut cfg = api_config(&api, &dns);
    cfg.template = dubbo_k8s_discovery::mapping::Template::parse("{simple}-v{major}").expect("template");
    cfg.namespace = "elsewhere".into();
    let hub = dubbo_k8s_discovery::Discovery::new(&cfg, Metrics::default()).await.expect("hub");
    let registry = KubernetesRegistry::new("kubernetes://demo?version=1.0.0".parse().expect("url"), hub);
    let url =
        "consumer://127.0.0.1:8888/org.apache.dubbo.demo.GreeterService?interface=org.apache.dubbo.demo.GreeterService"
            .parse()
            .expect("url");
    let mut rx = registry.subscribe(url).await.expect("subscribe");
    let next = async |rx: &mut dubbo::extension::registry_extension::DiscoverStream| -> ServiceChange {
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("in time").expect("open").expect("ok")
    };
    match next(&mut rx).await {
        ServiceChange::Insert(u, ()) => assert_eq!(
            u,
            "tri://10.1.0.1:50051/org.apache.dubbo.demo.GreeterService?interface=org.apache.dubbo.demo.GreeterService"
        ),
        other => panic!("expected insert, got {other:?}"),
    }
    apply(&api, "s1", "greeter-service-v1", &[PodEndpoint::ready("10.1.0.2", "b")]);
    let mut got = vec![next(&mut rx).await, next(&mut rx).await];
    got.sort_by_key(|c| matches!(c, ServiceChange::Insert(..)));
    assert!(matches!(&got[0], ServiceChange::Remove(u) if u.contains("10.1.0.1:50051")), "{got:?}");
    assert!(matches!(&got[1], ServiceChange::Insert(u, ()) if u.contains("10.1.0.2:50051")), "{got:?}");
}

/// dubbo makes one subscription per directory: two subscriptions of one interface are two, and
/// unsubscribing one leaves the other updating. (The code of the last round kept subscriptions by
/// interface: the second replaced the first, whose stream then ended with annotations on, and the
/// one unsubscribe removed the shared entry.)
#[cfg(feature = "dubbo")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dubbo_subscriptions_of_one_interface_are_independent() {
    use dubbo::extension::registry_extension::{DiscoverStream, Registry, ServiceChange};
    use dubbo_k8s_discovery::adapter::dubbo::KubernetesRegistry;

    init_tracing();
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    api.apply_service(
        NS,
        testkit::service_object(
            "greeter-v1",
            &[
                ("dubbo.apache.org/interface", "org.apache.dubbo.demo.GreeterService"),
                ("dubbo.apache.org/version", "1.0.0"),
            ],
            None,
            ("tri", 50051),
        ),
    );
    apply(&api, "s1", "greeter-v1", &[PodEndpoint::ready("10.1.0.1", "a")]);
    let hub = dubbo_k8s_discovery::Discovery::new(&api_config(&api, &dns), Metrics::default()).await.expect("hub");
    let registry = KubernetesRegistry::new("kubernetes://demo?version=1.0.0".parse().expect("url"), hub);
    let url = |dir: &str| -> dubbo::Url {
        format!("consumer://127.0.0.1:8888/org.apache.dubbo.demo.GreeterService?interface=org.apache.dubbo.demo.GreeterService&dir={dir}")
            .parse()
            .expect("url")
    };
    let next = async |rx: &mut DiscoverStream| -> ServiceChange {
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("in time").expect("open").expect("ok")
    };
    let mut first = registry.subscribe(url("one")).await.expect("subscribe");
    let mut second = registry.subscribe(url("two")).await.expect("subscribe");
    for rx in [&mut first, &mut second] {
        assert!(matches!(next(rx).await, ServiceChange::Insert(u, ()) if u.contains("10.1.0.1:50051")));
    }
    registry.unsubscribe(url("two")).await.expect("unsubscribe");
    apply(&api, "s1", "greeter-v1", &[PodEndpoint::ready("10.1.0.1", "a"), PodEndpoint::ready("10.1.0.2", "b")]);
    assert!(
        matches!(next(&mut first).await, ServiceChange::Insert(u, ()) if u.contains("10.1.0.2:50051")),
        "the first subscription still follows the service"
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), second.recv()).await.expect("the second ends");
    assert!(ended.is_none(), "the unsubscribed one ended: {ended:?}");
}
