//! A client task that panics carries on: the updater that keeps a balanced client's pool in step
//! with discovery is supervised (feature `fault-injection` makes it panic on purpose). In a test
//! binary of its own: the injected panic is process-wide and must reach this test's client only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use discovery::client::{Balanced, ClientOptions};
use discovery::{Discovery, DiscoveryConfig, Metrics, Mode, ServiceRef};
use provider::pb::HelloRequest;
use provider::pb::greeter_service_client::GreeterServiceClient;
use provider::{Provider, ProviderConfig};
use testkit::{FakeApiServer, FakeDns, PodEndpoint, endpoint_slice};

async fn provider(name: &str) -> Provider {
    Provider::start(ProviderConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        version: "1.0.0".into(),
        instance: name.into(),
        ..ProviderConfig::default()
    })
    .await
    .expect("provider")
}

fn greeter() -> ServiceRef {
    ServiceRef::new(provider::INTERFACE).with_version("1.0.0")
}

/// The task that keeps the client's pool in step with discovery panics: it is counted, restarted,
/// and the client keeps calling and follows the next change. (Feature `fault-injection`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_carries_on_after_its_updater_panics() {
    let a = provider("a").await;
    let b = provider("b").await;
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start("cluster.local").await.expect("dns");
    let put = |name: &str, p: &Provider, ready: bool| {
        let pod = PodEndpoint::ready("127.0.0.1", name);
        let pod = if ready { pod } else { pod.not_ready() };
        api.apply_slice(
            "demo",
            endpoint_slice(&format!("greeter-{name}"), "greeter", "IPv4", &[("tri", p.addr().port())], &[pod]),
        );
    };
    put("a", &a, true);
    let mut cfg = DiscoveryConfig::new(Mode::Api).with_namespace("demo");
    cfg.api.server = Some(api.url());
    cfg.api.allow_loopback = true;
    cfg.api.annotations = false;
    cfg.dns.server = Some(dns.addr());
    cfg.mappings =
        discovery::mapping::parse_mappings(&format!("{}:1.0.0=greeter:tri", provider::INTERFACE)).expect("mapping");
    let hub = Discovery::new(&cfg, Metrics::default()).await.expect("hub");
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = discovery::client::ClientMetrics::register(&mut registry);
    let mut opts = ClientOptions::default().with_metrics(metrics);
    opts.slow_start = Duration::ZERO;
    let balanced = Balanced::new(&hub, greeter(), opts).await.expect("client");
    assert!(balanced.wait_routable(Duration::from_secs(5)).await);
    let stop = Arc::new(AtomicBool::new(false));
    let calls = tokio::spawn({
        let (c, stop) = (GreeterServiceClient::new(balanced.clone()), stop.clone());
        async move {
            let mut failed = 0;
            while !stop.load(Ordering::Relaxed) {
                if c.clone().say_hello(HelloRequest { name: "steady".into(), delay_ms: 0 }).await.is_err() {
                    failed += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            failed
        }
    });
    discovery::fault::panic_next("client");
    put("b", &b, true); // the next update reaches the updater's checkpoint: it panics there
    let until = Instant::now() + Duration::from_secs(10);
    while balanced.debug().members.len() < 2 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(balanced.debug().members.len(), 2, "the change came through the restarted updater");
    stop.store(true, Ordering::Relaxed);
    assert_eq!(calls.await.expect("task"), 0, "no call failed");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    assert!(
        text.contains(
            "discovery_client_updater_restarts_total{service=\"org.apache.dubbo.demo.GreeterService:1.0.0\"} 1"
        ),
        "{text}"
    );
}
