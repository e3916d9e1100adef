//! An API outage is told once, not once per watch and retry: one warning when it starts, one line
//! when it ends (and a summary a minute between). In its own test binary: it installs a subscriber
//! that captures the log. (The code of the last round logged two warnings per watch per retry: a
//! dozen in three seconds here.)

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dubbo_k8s_discovery::{Metrics, ServiceRef};
use support::*;
use testkit::{FakeApiServer, FakeDns};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self, level: &str, words: &str) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned();
        text.lines().filter(|l| l.contains(level) && l.contains(words)).count()
    }
    fn all(&self, level: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned();
        text.lines().filter(|l| l.contains(level)).map(str::to_owned).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_outage_is_one_line_when_it_starts_and_one_when_it_ends() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_env_filter("dubbo_k8s_discovery=info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    apply(&api, "greeter-service-a", "greeter-service", &pods("g", 1, 2));
    let ips = ["10.1.1.1".parse().expect("ip"), "10.1.1.2".parse().expect("ip")];
    dns.set_headless_service("greeter-service.demo.svc.cluster.local", Some("tri"), 50051, &ips, 1);
    let mut cfg = api_config(&api, &dns);
    cfg.api.probe_interval = Duration::ZERO;
    let d =
        start(&cfg, ServiceRef::new("org.apache.dubbo.demo.GreeterService"), Metrics::default()).await.expect("start");
    wait_for(&d, 10, "two", |s| s.len() == 2).await;
    let warnings_before = log.all("WARN").len();

    api.stop(); // two watches (EndpointSlices, Services), retrying every 50-400 ms for 3 s
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = log.all("WARN");
    let outage = &during[warnings_before..];
    assert_eq!(outage.len(), 1, "one warning for the whole outage: {outage:#?}");
    assert!(outage[0].contains("the Kubernetes API is unavailable"), "{}", outage[0]);

    api.restart().await.expect("restart");
    wait_for(&d, 10, "live again", |s| !s.is_stale()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(log.lines("INFO", "the Kubernetes API answers again"), 1, "{:#?}", log.all("INFO"));
}
