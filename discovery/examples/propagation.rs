//! Propagation latency: how long after a change the new endpoint is in the published snapshot, for
//! the API source (EndpointSlice watch through the real kube client) and the DNS source (re-resolution
//! on TTL through the real hickory resolver), side by side in one run, against the in-process servers
//! on loopback.
//!
//! ```text
//! cargo run --release -p discovery --features testkit --example propagation -- [api-samples] [dns-samples]
//! ```
//!
//! DNS runs with CoreDNS's default TTL, 5 s (also the floor), unless DNS_TTL is set (seconds); each
//! change lands at a random point of the refresh window, so its latency is what a real change sees:
//! on average half the TTL, at worst the whole of it (plus CoreDNS's own cache in a cluster).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use discovery::testkit::{FakeApiServer, FakeDns, PodEndpoint, endpoint_slice};
use discovery::{Discovery, DiscoveryConfig, Metrics, Mode, ServiceRef, ServiceWatch};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<28} n={:<5} p50={:>9.3} ms  p90={:>9.3} ms  p99={:>9.3} ms  max={:>9.3} ms",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.90)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap_or(&Duration::ZERO)),
    );
}

async fn until_seen(d: &ServiceWatch, key: &str) -> Duration {
    let started = Instant::now();
    let mut rx = d.watch();
    let _ =
        tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|s| s.iter().any(|e| e.key().to_string() == key)))
            .await;
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let api_n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);
    let dns_n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let ttl: u32 = std::env::var("DNS_TTL").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let service = ServiceRef::new("org.apache.dubbo.demo.GreeterService");
    let api = FakeApiServer::start().await.expect("api server");
    let dns = FakeDns::start("cluster.local").await.expect("dns server");
    let fqdn = "greeter-service.demo.svc.cluster.local";
    dns.set_headless_service(fqdn, Some("tri"), 50051, &["10.9.0.1".parse().expect("ip")], ttl);
    api.apply_slice(
        "demo",
        endpoint_slice("s", "greeter-service", "IPv4", &[("tri", 50051)], &[PodEndpoint::ready("10.9.0.1", "p")]),
    );

    let mut cfg = DiscoveryConfig { mode: Mode::Api, namespace: "demo".into(), ..DiscoveryConfig::default() };
    cfg.api.server = Some(api.url());
    cfg.dns.server = Some(dns.addr());
    cfg.api.allow_loopback = true;
    let api_hub = Discovery::new(&cfg, Metrics::default()).await.expect("api discovery");
    let api_d = api_hub.service(service.clone()).await.expect("api discovery");
    let mut dns_cfg = cfg.clone();
    dns_cfg.mode = Mode::Dns;
    dns_cfg.dns.ttl_floor = Duration::from_secs(u64::from(ttl));
    let dns_hub = Discovery::new(&dns_cfg, Metrics::default()).await.expect("dns discovery");
    let dns_d = dns_hub.service(service).await.expect("dns discovery");
    api_d.ready(Duration::from_secs(10)).await.expect("api ready");
    dns_d.ready(Duration::from_secs(10)).await.expect("dns ready");

    println!("propagation latency, change → published EndpointSet (loopback, in-process servers)");
    let mut samples = Vec::with_capacity(api_n);
    for i in 0..api_n {
        let ip = format!("10.10.{}.{}", i / 250, i % 250 + 1);
        let started = Instant::now();
        api.apply_slice(
            "demo",
            endpoint_slice("s", "greeter-service", "IPv4", &[("tri", 50051)], &[PodEndpoint::ready(ip.clone(), "p")]),
        );
        let _ = until_seen(&api_d, &format!("{ip}:50051")).await;
        samples.push(started.elapsed());
    }
    report("api (EndpointSlice watch)", samples);

    let mut samples = Vec::with_capacity(dns_n);
    for i in 0..dns_n {
        let ip: IpAddr = format!("10.11.0.{}", i + 1).parse().expect("ip");
        // Land the change at a uniformly random point of the refresh window, as real changes do.
        let wait = rand::random_range(0..u64::from(ttl) * 1000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let started = Instant::now();
        dns.set_headless_service(fqdn, Some("tri"), 50051, &[ip], ttl);
        let _ = until_seen(&dns_d, &format!("{ip}:50051")).await;
        samples.push(started.elapsed());
    }
    report(&format!("dns (TTL {ttl} s, floor {ttl} s)"), samples);
}
