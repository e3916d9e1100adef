//! Consumer ↔ providers over real Triple on loopback, with discovery from a static list or from the
//! in-process Kubernetes API server (EndpointSlices pointing at the providers' loopback ports).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use consumer::{Greeter, Stats};
use discovery::client::{Balanced, ClientOptions};
use discovery::config::BackoffConfig;
use discovery::config::StaticEndpoint;
use discovery::{Discovery, DiscoveryConfig, Metrics, Mode, ServiceRef, ServiceWatch};
use provider::{Provider, ProviderConfig};
use testkit::{FakeApiServer, FakeDns, PodEndpoint, endpoint_slice};

const NS: &str = "demo";
const SVC: &str = "greeter-service";

fn greeter(version: &str) -> ServiceRef {
    ServiceRef::new(provider::INTERFACE).with_version(version)
}

async fn watch(cfg: &DiscoveryConfig, service: ServiceRef) -> ServiceWatch {
    let hub = Discovery::new(cfg, Metrics::default()).await.expect("discovery");
    hub.service(service).await.expect("discovery")
}

async fn provider(name: &str, version: &str) -> Provider {
    Provider::start(ProviderConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        version: version.into(),
        instance: name.into(),
        ip: "127.0.0.1".into(),
        drain: Duration::from_millis(400),
        shutdown_timeout: Duration::from_secs(3),
        ..ProviderConfig::default()
    })
    .await
    .expect("provider")
}

fn options() -> ClientOptions {
    let mut o = ClientOptions::default().with_retries(2).with_connect_timeout(Duration::from_millis(500));
    o.slow_start = Duration::ZERO;
    o
}

fn tweak(mut o: ClientOptions, f: impl FnOnce(&mut ClientOptions)) -> ClientOptions {
    f(&mut o);
    o
}

fn greeter_client(watch: ServiceWatch, opts: ClientOptions) -> Greeter {
    Greeter::new(Balanced::from_watch(watch, None, opts).expect("valid options"), Stats::default())
}

async fn static_client(providers: &[&Provider], version: &str) -> Greeter {
    let cfg = DiscoveryConfig::new(Mode::Static)
        .with_static_endpoints(providers.iter().map(|p| StaticEndpoint::ip(p.addr())));
    let d = watch(&cfg, greeter(version)).await;
    greeter_client(d, options())
}

/// One slice per provider: each listens on its own loopback port, and ports are per slice.
fn publish(api: &FakeApiServer, slice: &str, p: &Provider, pod: PodEndpoint) {
    api.apply_slice(NS, endpoint_slice(slice, SVC, "IPv4", &[("tri", p.addr().port())], &[pod]));
}

fn pod(name: &str) -> PodEndpoint {
    PodEndpoint::ready("127.0.0.1", name)
}

async fn api_client(api: &FakeApiServer, dns: &FakeDns, version: &str) -> Greeter {
    let mut cfg = DiscoveryConfig::new(Mode::Api).with_namespace(NS);
    cfg.api.server = Some(api.url());
    cfg.dns.server = Some(dns.addr());
    cfg.api.allow_loopback = true;
    cfg.backoff = BackoffConfig::new(Duration::from_millis(50), Duration::from_millis(400));
    let d = watch(&cfg, greeter(version)).await;
    d.ready(Duration::from_secs(10)).await.expect("first answer");
    greeter_client(d, options())
}

/// Calls from `workers` tasks until `stop` is set; returns the failures seen.
fn load(client: &Greeter, workers: usize, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<String>> {
    let client = client.clone();
    tokio::spawn(async move {
        let mut handles = Vec::new();
        for _ in 0..workers {
            let (c, stop) = (client.clone(), stop.clone());
            handles.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = c.say_hello("load").await {
                        failures.push(e.to_string());
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                failures
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.expect("worker"));
        }
        all
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_across_all_providers_over_reused_connections() {
    let (a, b, c) = (provider("p-a", "1.0.0").await, provider("p-b", "1.0.0").await, provider("p-c", "1.0.0").await);
    let client = static_client(&[&a, &b, &c], "1.0.0").await;
    for _ in 0..300 {
        client.say_hello("balance").await.expect("call");
    }
    let s = client.stats().snapshot();
    assert_eq!(s.ok, 300);
    assert_eq!(s.by_instance.len(), 3, "{:?}", s.by_instance);
    for (instance, n) in &s.by_instance {
        assert!(*n >= 50, "{instance} got {n} of 300 calls: {:?}", s.by_instance);
    }
    eprintln!("distribution over 3 providers: {:?}", s.by_instance);
}

#[tokio::test]
async fn a_version_the_provider_does_not_serve_is_refused_not_retried() {
    let v1 = provider("p-v1", "1.0.0").await;
    let client = static_client(&[&v1], "2.0.0").await;
    let err = client.say_hello("x").await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    let c = client.balanced().stats();
    assert_eq!((c.retries, c.failed.get("status").copied()), (0, Some(1)), "a refusal is not retried: {c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_set_fails_fast_with_a_clear_error() {
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start("cluster.local").await.expect("dns");
    api.apply_slice(
        NS,
        endpoint_slice("s1", SVC, "IPv4", &[("tri", 50051)], &[PodEndpoint::ready("127.0.0.1", "x").not_ready()]),
    );
    let client = api_client(&api, &dns, "1.0.0").await;
    let started = Instant::now();
    let err = client.say_hello("x").await.expect_err("no endpoints");
    let took = started.elapsed();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("demo/greeter-service:tri") && err.message().contains("1 known"), "{err:?}");
    assert_eq!(client.balanced().stats().failed.get("no_endpoints").copied(), Some(1));
    assert!(took < Duration::from_millis(200), "fails fast, took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_killed_and_one_added_under_load() {
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start("cluster.local").await.expect("dns");
    let (a, b) = (provider("p-a", "1.0.0").await, provider("p-b", "1.0.0").await);
    publish(&api, "s-a", &a, pod("p-a"));
    publish(&api, "s-b", &b, pod("p-b"));
    let client = api_client(&api, &dns, "1.0.0").await;
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(&client, 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // kill -9 of p-a: its connections drop at once; the endpoint controller notices ~200 ms later
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(api.delete_slice(NS, "s-a"));
    let c = provider("p-c", "1.0.0").await;
    publish(&api, "s-c", &c, pod("p-c"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.store(true, Ordering::Relaxed);
    let failures = running.await.expect("load");
    let s = client.stats().snapshot();
    let c = client.balanced().stats();
    eprintln!(
        "kill under load: {} ok, {} failed, {} retries, by instance {:?}, failures {:?}",
        s.ok,
        failures.len(),
        c.retries,
        s.by_instance,
        failures.iter().take(3).collect::<Vec<_>>()
    );
    assert!(failures.is_empty(), "a killed provider costs retries, not failed calls: {failures:?}");
    assert!(c.retries >= 1, "calls in flight on the killed provider were retried elsewhere");
    assert!(
        s.by_instance.get("p-c 1.0.0").copied().unwrap_or(0) > 0,
        "the added provider takes traffic: {:?}",
        s.by_instance
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_with_drain_loses_no_request() {
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start("cluster.local").await.expect("dns");
    let (old1, old2) = (provider("old-1", "1.0.0").await, provider("old-2", "1.0.0").await);
    publish(&api, "s-old-1", &old1, pod("old-1"));
    publish(&api, "s-old-2", &old2, pod("old-2"));
    let client = api_client(&api, &dns, "1.0.0").await;
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(&client, 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Replace each old pod: new pod ready, old pod terminating (SIGTERM → drain), then gone.
    for (i, old) in [old1, old2].into_iter().enumerate() {
        let new = provider(&format!("new-{i}"), "1.0.0").await;
        publish(&api, &format!("s-new-{i}"), &new, pod(&format!("new-{i}")));
        publish(&api, &format!("s-old-{}", i + 1), &old, pod(&format!("old-{}", i + 1)).terminating());
        old.drain_and_stop().await.expect("drain");
        assert!(api.delete_slice(NS, &format!("s-old-{}", i + 1)));
        std::mem::forget(new); // keeps serving until the test ends
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let failures = running.await.expect("load");
    let s = client.stats().snapshot();
    let retries = client.balanced().stats().retries;
    eprintln!("rolling update: {} ok, {} failed, {} retries, {:?}", s.ok, failures.len(), retries, s.by_instance);
    assert!(failures.is_empty(), "no request lost: {failures:?}");
    let new_calls: u64 = s.by_instance.iter().filter(|(k, _)| k.starts_with("new-")).map(|(_, v)| *v).sum();
    assert!(new_calls > 0);
}

/// Kills the child when the test ends, passed or failed.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_watch_prints_changes() {
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start("cluster.local").await.expect("dns");
    api.apply_slice(
        NS,
        endpoint_slice("s1", SVC, "IPv4", &[("tri", 50051)], &[PodEndpoint::ready("10.244.1.1", "greeter-1")]),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_consumer"))
        .args(["resolve", "--version", "1.0.0", "--watch"])
        .env("DISCOVERY_MODE", "api")
        .env("DISCOVERY_NAMESPACE", NS)
        .env("DISCOVERY_API_SERVER", api.url())
        .env("DISCOVERY_DNS_SERVER", dns.addr().to_string())
        .env("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "off".into()))
        .stdout(Stdio::piped())
        .stderr(if std::env::var("TEST_LOG").is_ok() { Stdio::inherit() } else { Stdio::null() })
        .spawn()
        .expect("spawn consumer resolve");
    let stdout = child.stdout.take().expect("stdout");
    let _child = KillOnDrop(child);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let mut expect = async |needle: &str| {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if seen.iter().any(|l: &String| l.contains(needle)) {
                return;
            }
            match tokio::time::timeout_at(until.into(), rx.recv()).await {
                Ok(Some(l)) => seen.push(l),
                _ => panic!("no line with {needle:?}; output so far:\n{}", seen.join("\n")),
            }
        }
    };
    expect("org.apache.dubbo.demo.GreeterService:1.0.0 -> demo/greeter-service:tri").await;
    expect("10.244.1.1").await;
    api.apply_slice(
        NS,
        endpoint_slice(
            "s1",
            SVC,
            "IPv4",
            &[("tri", 50051)],
            &[PodEndpoint::ready("10.244.1.1", "greeter-1").not_ready(), PodEndpoint::ready("10.244.1.2", "greeter-2")],
        ),
    );
    expect("+ 10.244.1.2:50051 greeter-2").await;
    expect("~ 10.244.1.1:50051 ready=false").await;
}

#[tokio::test]
async fn bad_configuration_exits_2_naming_the_variable() {
    for (value, words) in [("lots", "expected a number"), ("-5", "calls per second")] {
        let out = Command::new(env!("CARGO_BIN_EXE_consumer")).env("CONSUMER_RATE", value).output().expect("run");
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("CONSUMER_RATE") && err.contains(words), "{err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_consumer")).env("DISCOVERY_MODE", "consul").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DISCOVERY_MODE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_bounded_and_each_goes_to_another_endpoint() {
    // Three ports nobody listens on (bound, then released): every attempt is refused.
    let dead: Vec<std::net::SocketAddr> =
        (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr")).collect();
    let cfg = DiscoveryConfig::new(Mode::Static).with_static_endpoints(dead.iter().map(|a| StaticEndpoint::ip(*a)));
    let d = watch(&cfg, greeter("1.0.0")).await;
    let client = greeter_client(d.clone(), options());
    let started = Instant::now();
    let err = client.say_hello("x").await.expect_err("all refused");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("connect_refused") && err.message().contains("attempt 3 of 3"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "refusals fail fast, within the deadline");
    let c = client.balanced().stats();
    assert_eq!(c.retries, 2, "first attempt + 2 retries, each on an endpoint not tried yet");
    assert_eq!(c.failed.get("connect_refused").copied(), Some(1));

    let no_retry = greeter_client(
        d,
        tweak(options(), |o| {
            o.retries = 0;
        }),
    );
    let err = no_retry.say_hello("x").await.expect_err("refused");
    assert!(err.message().contains("attempt 1 of 1"), "{err:?}");
    assert_eq!(no_retry.balanced().stats().retries, 0);
}

/// The keys of a JSON object in the order written, duplicates included (serde_json's own maps
/// would keep only the last of two equal keys).
fn json_keys(line: &str) -> Result<Vec<String>, serde_json::Error> {
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                        keys.push(k);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<Keys>(line).map(|k| k.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_each_key_once() {
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start("cluster.local").await.expect("dns");
    api.apply_slice(
        NS,
        endpoint_slice("s1", SVC, "IPv4", &[("tri", 50051)], &[PodEndpoint::ready("10.244.1.1", "g-1")]),
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_consumer"))
            .args(["resolve", "--version", "1.0.0"])
            .env("DISCOVERY_MODE", "api")
            .env("DISCOVERY_NAMESPACE", NS)
            .env("DISCOVERY_API_SERVER", api.url())
            .env("DISCOVERY_DNS_SERVER", dns.addr().to_string())
            .env("CONSUMER_LOG_FORMAT", "json")
            .env("RUST_LOG", "debug")
            .output()
            .expect("run consumer resolve")
    })
    .await
    .expect("join");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with('{')).collect();
    assert!(lines.len() > 5, "debug logs were written: {stderr}");
    for line in lines {
        let keys = json_keys(line).unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), keys.len(), "a key appears twice: {line}");
    }
}

/// Waits up to 20 s for the consumer's admin port to answer `/healthz`.
async fn wait_admin(admin: std::net::SocketAddr) {
    let until = Instant::now() + Duration::from_secs(20);
    while http_status(admin, "GET", "/healthz").await != 200 {
        assert!(Instant::now() < until, "the admin port did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status code of one HTTP/1.1 request to `addr` (the test needs no HTTP client crate).
async fn http_status(addr: std::net::SocketAddr, method: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return 0 };
    let req = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_makes_no_call_unless_told_to() {
    let p = provider("admin-p", "1.0.0").await;
    for (allowed, expect_post) in [(None, 403), (Some("true"), 200)] {
        let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_consumer"));
        cmd.env("DISCOVERY_MODE", "static")
            .env("DISCOVERY_STATIC_ENDPOINTS", p.addr().to_string())
            .env("CONSUMER_VERSION", "1.0.0")
            .env("CONSUMER_RATE", "0")
            .env("CONSUMER_ADMIN_LISTEN", admin.to_string())
            .env("RUST_LOG", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(v) = allowed {
            cmd.env("CONSUMER_ADMIN_CALLS", v);
        }
        let _child = KillOnDrop(cmd.spawn().expect("spawn consumer"));
        wait_admin(admin).await;
        assert_eq!(http_status(admin, "GET", "/call").await, 405, "GET never acts");
        assert_eq!(http_status(admin, "POST", "/call?name=x").await, expect_post, "CONSUMER_ADMIN_CALLS={allowed:?}");
        assert_eq!(http_status(admin, "GET", "/stats").await, 200);
    }
}

/// A consumer rolled out with its providers holds its steady traffic until a provider can be
/// called, rather than failing calls meanwhile (the walkthrough's summary on a real cluster once
/// read "82 calls, 65 failed" in a passing run: all made before any provider was ready).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_traffic_waits_for_a_provider_instead_of_failing() {
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start("cluster.local").await.expect("dns");
    let p = provider("late", "1.0.0").await;
    publish(&api, "late", &p, pod("late").not_ready());
    let vars: std::collections::HashMap<String, String> = [
        ("DISCOVERY_MODE", "api"),
        ("DISCOVERY_NAMESPACE", NS),
        ("DISCOVERY_API_SERVER", api.url().as_str()),
        ("DISCOVERY_DNS_SERVER", &dns.addr().to_string()),
        ("DISCOVERY_ALLOW_LOOPBACK", "true"),
        ("DISCOVERY_MAPPINGS", &format!("{}:1.0.0={SVC}:tri", provider::INTERFACE)),
        ("CONSUMER_VERSION", "1.0.0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let cfg = consumer::ConsumerConfig::from_vars(&vars).expect("config");
    let mut registry = prometheus_client::registry::Registry::default();
    let stack = consumer::connect(&cfg, &mut registry).await.expect("connect");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let plan = consumer::traffic::Plan {
        name: "late".into(),
        rate: 50.0,
        concurrency: 4,
        report_every: Duration::ZERO,
        start_wait: Duration::from_secs(20),
    };
    let traffic = tokio::spawn(consumer::traffic::run(stack.clone(), plan, async {
        let _ = stop_rx.await;
    }));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = stack.stats();
    assert_eq!((held.ok, held.failed), (0, 0), "no call while no provider can be called: {held:?}");
    publish(&api, "late", &p, pod("late"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop_tx.send(());
    traffic.await.expect("traffic");
    let s = stack.stats();
    assert!(s.ok > 10, "traffic started once the provider was ready: {s:?}");
    assert_eq!((s.failed, s.failed_at_start), (0, 0), "{s:?}");
}

/// The consumer's readiness reflects discovery: 503 while no provider can be called (the code of
/// the last round answered a constant "ok"), 200 once one can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_discovery() {
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start("cluster.local").await.expect("dns");
    let p = provider("ready-p", "1.0.0").await;
    publish(&api, "ready", &p, pod("ready").not_ready());
    let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_consumer"));
    cmd.env("DISCOVERY_MODE", "api")
        .env("DISCOVERY_NAMESPACE", NS)
        .env("DISCOVERY_API_SERVER", api.url())
        .env("DISCOVERY_DNS_SERVER", dns.addr().to_string())
        .env("DISCOVERY_ALLOW_LOOPBACK", "true")
        .env("DISCOVERY_MAPPINGS", format!("{}:1.0.0={SVC}:tri", provider::INTERFACE))
        .env("CONSUMER_VERSION", "1.0.0")
        .env("CONSUMER_RATE", "0")
        .env("CONSUMER_ADMIN_LISTEN", admin.to_string())
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _child = KillOnDrop(cmd.spawn().expect("spawn consumer"));
    wait_admin(admin).await;
    assert_eq!(http_status(admin, "GET", "/readyz").await, 503, "no provider ready yet");
    publish(&api, "ready", &p, pod("ready"));
    let until = Instant::now() + Duration::from_secs(10);
    while http_status(admin, "GET", "/readyz").await != 200 {
        assert!(Instant::now() < until, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
