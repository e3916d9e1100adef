//! The official `dubbo` crate's client calling the provider, with providers found by discovery's
//! `kubernetes://` registry extension fed by the in-process Kubernetes API server.
#![cfg(feature = "dubbo")]

use std::time::Duration;

use consumer::config::ClientKind;
use consumer::{ConsumerConfig, Stats};

use discovery::config::BackoffConfig;
use discovery::{DiscoveryConfig, Mode, ServiceRef};
use provider::{Provider, ProviderConfig};
use testkit::{FakeApiServer, FakeDns, PodEndpoint, endpoint_slice};

async fn provider(name: &str) -> Provider {
    Provider::start(ProviderConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        instance: name.into(),
        ..ProviderConfig::default()
    })
    .await
    .expect("provider")
}

// One test only: dubbo-rust's global extension directory lives on the runtime that first touched it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dubbo_client_through_the_kubernetes_registry() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("TEST_LOG").unwrap_or_else(|_| "off".into()))
        .with_test_writer()
        .try_init();
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start("cluster.local").await.expect("dns");
    let (a, b) = (provider("dubbo-a").await, provider("dubbo-b").await);
    for (slice, p, pod) in [("s-a", &a, "dubbo-a"), ("s-b", &b, "dubbo-b")] {
        api.apply_slice(
            "demo",
            endpoint_slice(
                slice,
                "greeter-service",
                "IPv4",
                &[("tri", p.addr().port())],
                &[PodEndpoint::ready("127.0.0.1", pod)],
            ),
        );
    }
    let mut d = DiscoveryConfig::new(Mode::Api).with_namespace("demo");
    d.api.server = Some(api.url());
    d.dns.server = Some(dns.addr());
    d.api.allow_loopback = true;
    d.backoff = BackoffConfig::new(Duration::from_millis(50), Duration::from_millis(400));
    let cfg = ConsumerConfig {
        service: ServiceRef::new(provider::INTERFACE).with_version("1.0.0"),
        discovery: d,
        rate: 40.0,
        concurrency: 4,
        deadline: Duration::from_millis(800),
        client: ClientKind::Dubbo,
        ..ConsumerConfig::default()
    };
    let stats = Stats::default();
    let hub = discovery::Discovery::new(&cfg.discovery, discovery::Metrics::default()).await.expect("hub");
    let stack = consumer::dubbo_stack::DubboStack::start(&cfg, hub, stats.clone()).await.expect("start");
    // The stack waited for discovery's first answer: the very first call finds the providers.
    let first = stack.say_hello("first").await.expect("the first call after start");
    assert!(first.reply.served_by.is_some_and(|i| i.name.starts_with("dubbo-")));
    let stop = tokio::sync::oneshot::channel::<()>();
    let traffic = {
        let s = consumer::Stack::Dubbo(stack.clone());
        tokio::spawn(consumer::traffic::run(
            s,
            consumer::traffic::Plan {
                name: "dubbo".into(),
                rate: 40.0,
                concurrency: 4,
                report_every: Duration::ZERO,
                start_wait: Duration::from_secs(5),
            },
            async {
                let _ = stop.1.await;
            },
        ))
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let served = stats.snapshot();
    eprintln!("dubbo crate via kubernetes://: {served:?}");
    assert!(served.ok >= 20, "calls served through the dubbo crate: {served:?}");
    assert_eq!(served.failed, 0, "{served:?}");
    assert!(served.by_instance.keys().all(|k| k.starts_with("dubbo-")), "{served:?}");

    // Scale to zero: the dubbo crate would wait for ever; the per-call timeout turns that into failures.
    api.apply_slice("demo", endpoint_slice("s-a", "greeter-service", "IPv4", &[("tri", 1)], &[]));
    api.apply_slice("demo", endpoint_slice("s-b", "greeter-service", "IPv4", &[("tri", 1)], &[]));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = stats.snapshot();
    eprintln!("after scale to zero: {after:?}");
    assert!(
        after.failures.get("deadline_exceeded").copied().unwrap_or(0) > 0,
        "hangs are cut at the deadline: {after:?}"
    );
    let _ = stop.0.send(());
    tokio::time::timeout(Duration::from_secs(10), traffic).await.expect("traffic stops").expect("join");
}
