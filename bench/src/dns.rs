//! DNS freshness: the time from a record change to the snapshot that reflects it, for several TTLs,
//! through the real hickory resolver against the in-process DNS server. Each change lands at a
//! uniformly random point of the refresh window, as real changes do.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use discovery::{Discovery, DiscoveryConfig, EndpointKey, Metrics, Mode, ServiceRef};
use testkit::FakeDns;

use crate::report::{Section, f};
use crate::util::Summary;

const FQDN: &str = "greeter-service.demo.svc.cluster.local";

pub async fn run(plan: &[(u32, usize)]) -> Section {
    let mut section = Section::new(
        "DNS freshness",
        "Seconds from a DNS record change to the discovery snapshot that holds the new address (headless Service, \
         SRV + A as CoreDNS answers them, real hickory resolver over UDP), per TTL. Discovery asks again when the \
         TTL runs out (minus up to 10 % jitter, never below the floor, set to 1 s here), so a change waits on \
         average half the TTL and at most the whole of it; a fixed-interval poller would wait on its interval \
         whatever the TTL. In a cluster, CoreDNS's own cache (`cache 30`) comes on top.",
        &["TTL s", "changes", "p50 s", "p90 s", "max s", "p50 / TTL", "max / TTL"],
    );
    let dns = match FakeDns::start("cluster.local").await {
        Ok(d) => d,
        Err(e) => {
            section.problem(format!("DNS server: {e}"));
            return section;
        }
    };
    for &(ttl, n) in plan {
        match measure(&dns, ttl, n).await {
            Ok((lat, missed)) => {
                let s = Summary::of(&lat);
                let t = f64::from(ttl);
                section.row(vec![
                    ttl.to_string(),
                    s.n.to_string(),
                    f(s.p50, 2),
                    f(s.p90, 2),
                    f(s.max, 2),
                    f(s.p50 / t, 2),
                    f(s.max / t, 2),
                ]);
                if missed > 0 {
                    section.problem(format!("TTL {ttl} s: {missed} of {n} changes not seen within 3 × TTL + 5 s"));
                }
                if s.max > t * 2.0 + 2.0 {
                    section.problem(format!("TTL {ttl} s: a change took {:.2} s, far beyond its TTL", s.max));
                }
            }
            Err(e) => section.problem(format!("TTL {ttl} s: {e}")),
        }
    }
    section
        .note("expected: p50 / TTL near 0.5 and max / TTL at most about 1 for every TTL (the refresh follows the TTL)");
    section
}

async fn measure(dns: &FakeDns, ttl: u32, n: usize) -> Result<(Vec<f64>, usize), String> {
    let first: IpAddr = "10.11.0.1".parse().map_err(|e| format!("{e}"))?;
    dns.set_headless_service(FQDN, Some("tri"), 50051, &[first], ttl);
    let mut cfg = DiscoveryConfig::new(Mode::Dns).with_namespace("demo");
    cfg.dns.server = Some(dns.addr());
    cfg.dns.ttl_floor = Duration::from_secs(1);
    let hub = Discovery::new(&cfg, Metrics::default()).await.map_err(|e| format!("discovery: {e}"))?;
    let watch = hub
        .service(ServiceRef::new("org.apache.dubbo.demo.GreeterService"))
        .await
        .map_err(|e| format!("discovery: {e}"))?;
    let mut rx = watch.watch();
    let key = EndpointKey::new(first, 50051);
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.get(&key).is_some()))
        .await
        .map_err(|_| "no first answer within 10 s".to_owned())?
        .map_err(|_| "discovery stopped".to_owned())?;
    let (mut out, mut missed) = (Vec::with_capacity(n), 0);
    for i in 0..n {
        let ip: IpAddr = format!("10.11.{}.{}", ttl, i % 250 + 2).parse().map_err(|e| format!("{e}"))?;
        let wait = rand::random_range(0..u64::from(ttl) * 1000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let changed = Instant::now();
        dns.set_headless_service(FQDN, Some("tri"), 50051, &[ip], ttl);
        let key = EndpointKey::new(ip, 50051);
        let within = Duration::from_secs(u64::from(ttl) * 3 + 5);
        match tokio::time::timeout(within, rx.wait_for(|s| s.get(&key).is_some())).await {
            Ok(Ok(_)) => out.push(changed.elapsed().as_secs_f64()),
            _ => missed += 1,
        }
    }
    Ok((out, missed))
}
