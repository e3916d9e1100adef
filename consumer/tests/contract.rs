//! The balanced client's contract, against real providers (the provider crate's server, in process)
//! over real Triple on loopback: what is replayed and what never is, counted by the providers'
//! execution journals; a black-holed endpoint found and left; streams not cut by the default
//! deadline; options that would panic refused; a readiness flap that keeps its connection; a client
//! task that panics and carries on. Each test fails on the code of the round before.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use discovery::client::{Balanced, ClientOptions, MethodPolicy};
use discovery::config::{BackoffConfig, StaticEndpoint};
use discovery::{Discovery, DiscoveryConfig, Metrics, Mode, ServiceRef, ServiceWatch};
use provider::pb::greeter_service_client::GreeterServiceClient;
use provider::pb::{HelloRequest, HelloStreamRequest};
use provider::{Provider, ProviderConfig};
use testkit::{FakeApiServer, FakeDns, PodEndpoint, ResetProxy, endpoint_slice};

const SAY_HELLO: &str = consumer::config::SAY_HELLO;

fn greeter() -> ServiceRef {
    ServiceRef::new(provider::INTERFACE).with_version("1.0.0")
}

/// A real provider whose executions are journaled to a file of its own.
struct Journaled {
    provider: Provider,
    journal: PathBuf,
}

impl Drop for Journaled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.journal);
    }
}

async fn provider(name: &str) -> Journaled {
    let journal = std::env::temp_dir().join(format!("contract-{}-{name}-{}.log", std::process::id(), rand_suffix()));
    let provider = Provider::start(ProviderConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        version: "1.0.0".into(),
        instance: name.into(),
        ip: "127.0.0.1".into(),
        drain: Duration::from_millis(200),
        shutdown_timeout: Duration::from_secs(2),
        execution_log: Some(journal.clone()),
        ..ProviderConfig::default()
    })
    .await
    .expect("provider");
    Journaled { provider, journal }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Executions per request id over every journal: the ids executed more than once.
fn executed_twice(providers: &[&Journaled]) -> BTreeMap<String, usize> {
    let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
    for p in providers {
        for line in std::fs::read_to_string(&p.journal).unwrap_or_default().lines() {
            let id = line.split('\t').next().unwrap_or("-").to_owned();
            *by_id.entry(id).or_default() += 1;
        }
    }
    by_id.into_iter().filter(|(_, n)| *n > 1).collect()
}

fn executions(p: &Journaled) -> usize {
    std::fs::read_to_string(&p.journal).unwrap_or_default().lines().count()
}

async fn static_watch(addrs: &[SocketAddr]) -> ServiceWatch {
    let cfg = DiscoveryConfig::new(Mode::Static).with_static_endpoints(addrs.iter().map(|a| StaticEndpoint::ip(*a)));
    let hub = Discovery::new(&cfg, Metrics::default()).await.expect("hub");
    hub.service(greeter()).await.expect("watch")
}

fn options() -> ClientOptions {
    let mut o = ClientOptions::default().with_connect_timeout(Duration::from_millis(300)).with_client_id("contract");
    o.slow_start = Duration::ZERO;
    o.zone_aware = false;
    o
}

async fn client(addrs: &[SocketAddr], opts: ClientOptions) -> (GreeterServiceClient<Balanced>, Balanced) {
    let b = Balanced::from_watch(static_watch(addrs).await, None, opts).expect("valid options");
    assert!(b.ready(Duration::from_secs(5)).await);
    (GreeterServiceClient::new(b.clone()), b)
}

fn slow(name: &str, delay_ms: u32) -> tonic::Request<HelloRequest> {
    tonic::Request::new(HelloRequest { name: name.into(), delay_ms })
}

/// A call in flight on a connection that is reset once the provider has run it: for a method not
/// declared idempotent it fails with UNAVAILABLE saying it may have been processed, and no
/// provider executes it twice; declared idempotent, it is replayed and succeeds (executed twice,
/// which the declaration allows). The code of the last round replayed both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_may_have_been_processed_is_replayed_only_for_an_idempotent_method() {
    let (a, b) = (provider("a").await, provider("b").await);
    let (pa, pb) = (
        ResetProxy::start(a.provider.addr()).await.expect("proxy"),
        ResetProxy::start(b.provider.addr()).await.expect("proxy"),
    );
    for idempotent in [false, true] {
        let mut opts = options();
        if idempotent {
            opts = opts.method(SAY_HELLO, MethodPolicy::idempotent());
        }
        let (c, balanced) = client(&[pa.addr(), pb.addr()], opts).await;
        let (before_a, before_b) = (executions(&a), executions(&b));
        let call = tokio::spawn({
            let mut c = c.clone();
            async move { c.say_hello(slow(if idempotent { "idempotent" } else { "once" }, 400)).await }
        });
        // Once one provider runs the handler (it sleeps 400 ms), cut both connections.
        let until = Instant::now() + Duration::from_secs(5);
        while executions(&a) + executions(&b) == before_a + before_b && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(pa.reset_all() + pb.reset_all() >= 1, "a connection was cut");
        let result = call.await.expect("task");
        let twice = executed_twice(&[&a, &b]);
        if idempotent {
            let reply = result.expect("replayed on another connection");
            assert!(reply.into_inner().message.contains("idempotent"));
            assert_eq!(twice.len(), 1, "executed twice, as an idempotent method may be: {twice:?}");
            assert!(balanced.stats().retries >= 1);
        } else {
            let err = result.expect_err("not replayed");
            assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
            assert!(err.message().contains("may have been processed"), "{err:?}");
            assert_eq!(err.metadata().get("dubbo-k8s-cause").and_then(|v| v.to_str().ok()), Some("connection_lost"));
            assert!(twice.is_empty(), "at most once: {twice:?}");
            assert_eq!(balanced.stats().not_replayed, 1);
        }
    }
}

/// What provably never reached a provider (a refused connection) is replayed for any method, and
/// each call runs exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_never_reached_a_provider_is_replayed_for_any_method() {
    let a = provider("a").await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    }; // nothing listens there any more
    let (c, balanced) = client(&[closed, a.provider.addr()], options()).await;
    for i in 0..40 {
        c.clone().say_hello(slow(&format!("n{i}"), 0)).await.expect("replayed after the refusal");
    }
    let stats = balanced.stats();
    assert!(stats.retries >= 1, "the closed port was picked and the call replayed: {stats:?}");
    assert_eq!(executions(&a), 40);
    assert!(executed_twice(&[&a]).is_empty());
}

/// A server that accepts connections and never answers (a frozen process): timeouts count against
/// it while the other endpoint answers, so it is ejected and left; an idempotent method with an
/// attempt timeout loses no call at all. The code of the last round never counted a timeout against
/// an endpoint: every call sent there burnt its deadline, for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_endpoint_is_found_and_left() {
    let good = provider("good").await;
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hole_addr = hole.local_addr().expect("addr");
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = hole.accept().await {
            h.lock().expect("lock").push(s); // accepted, never read, never answered
        }
    });
    for idempotent in [false, true] {
        let mut opts = options();
        opts.outlier.consecutive_failures = 3;
        opts.outlier.base_ejection = Duration::from_secs(30);
        let policy = if idempotent {
            MethodPolicy::idempotent()
                .with_deadline(Duration::from_secs(2))
                .with_attempt_timeout(Duration::from_millis(150))
        } else {
            MethodPolicy::at_most_once().with_deadline(Duration::from_millis(300))
        };
        let (c, balanced) = client(&[hole_addr, good.provider.addr()], opts.method(SAY_HELLO, policy)).await;
        let mut failed = 0;
        for i in 0..60 {
            if c.clone().say_hello(slow(&format!("h{i}"), 0)).await.is_err() {
                failed += 1;
            }
        }
        let debug = balanced.debug();
        let hole_member =
            debug.members.iter().find(|m| m.endpoint == hole_addr.to_string()).expect("the hole is a member");
        assert!(hole_member.ejected_for_ms > 0, "ejected after its timeouts: {debug:?}");
        if idempotent {
            assert_eq!(failed, 0, "each attempt there timed out and moved on");
        } else {
            assert!((1..=4).contains(&failed), "failures bounded by the ejection threshold: {failed}");
        }
        let calls_there = hole_member.calls;
        for i in 0..30 {
            c.clone().say_hello(slow(&format!("after{i}"), 0)).await.expect("the good endpoint answers");
        }
        let now = balanced.debug().members.iter().find(|m| m.endpoint == hole_addr.to_string()).map(|m| m.calls);
        assert_eq!(now, Some(calls_there), "no call is sent to an ejected endpoint");
    }
}

/// A call with no deadline of its own is bounded only until its response starts: a 5 s server
/// stream goes through the default 2 s, and no grpc-timeout is sent for it. The code of the last
/// round cut it at 2 s (and told the provider to).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streams_are_not_cut_by_the_default_deadline() {
    let a = provider("a").await;
    let (mut c, _) = client(&[a.provider.addr()], options()).await;
    let started = Instant::now();
    let req = HelloStreamRequest { name: "long".into(), count: 5, interval_ms: 1000 };
    let mut stream = c.say_hello_stream(req).await.expect("stream starts").into_inner();
    let mut n = 0;
    while let Some(reply) = stream.message().await.expect("no cut") {
        assert!(reply.message.contains("long"));
        n += 1;
    }
    assert_eq!(n, 5);
    assert!(started.elapsed() >= Duration::from_secs(4), "{:?}", started.elapsed());
    // A unary call with no deadline still gets no answer past the default wait for a response.
    let (mut c, _) = client(&[a.provider.addr()], options().with_default_deadline(Duration::from_millis(300))).await;
    let err = c.say_hello(slow("too slow", 2000)).await.expect_err("bounded");
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
}

/// Options that would index past an array, overflow or divide by zero are refused with the field's
/// name when the client is built; the code of the last round accepted them and panicked per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_that_would_panic_are_refused_when_the_client_is_built() {
    let a = provider("a").await;
    let watch = static_watch(&[a.provider.addr()]).await;
    let mut many = options();
    many.retries = 11;
    let mut zero_weight = options();
    zero_weight.slow_start_min_weight = 0.0;
    let not_idempotent =
        options().method(SAY_HELLO, MethodPolicy::at_most_once().with_attempt_timeout(Duration::from_millis(100)));
    for (opts, field) in
        [(many, "retries"), (zero_weight, "slow_start_min_weight"), (not_idempotent, "attempt_timeout")]
    {
        let err = Balanced::from_watch(watch.clone(), None, opts).expect_err(field);
        assert!(err.to_string().contains(field), "{err}");
    }
    let err = std::thread::spawn(move || Balanced::from_watch(watch, None, options()).map(|_| ()))
        .join()
        .expect("no panic outside a runtime");
    assert!(err.expect_err("needs a runtime").to_string().contains("Tokio runtime"));
}

/// An endpoint that goes not ready for a moment and comes back keeps its connection, its history
/// and gets no second slow start. The code of the last round dropped it at once: a new connection
/// and a fresh 10 % share after a 1 s flap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readiness_flap_keeps_the_member_warm() {
    let a = provider("a").await;
    let b = provider("b").await;
    let (pa, pb) = (
        ResetProxy::start(a.provider.addr()).await.expect("proxy"),
        ResetProxy::start(b.provider.addr()).await.expect("proxy"),
    );
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start("cluster.local").await.expect("dns");
    let slice =
        |pod_a: PodEndpoint| endpoint_slice("greeter-a", "greeter", "IPv4", &[("tri", pa.addr().port())], &[pod_a]);
    api.apply_slice("demo", slice(PodEndpoint::ready("127.0.0.1", "a")));
    api.apply_slice(
        "demo",
        endpoint_slice(
            "greeter-b",
            "greeter",
            "IPv4",
            &[("tri", pb.addr().port())],
            &[PodEndpoint::ready("127.0.0.1", "b")],
        ),
    );
    let mut cfg = DiscoveryConfig::new(Mode::Api).with_namespace("demo");
    cfg.api.server = Some(api.url());
    cfg.api.allow_loopback = true;
    cfg.api.annotations = false;
    cfg.dns.server = Some(dns.addr());
    cfg.mappings =
        discovery::mapping::parse_mappings(&format!("{}:1.0.0=greeter:tri", provider::INTERFACE)).expect("mapping");
    cfg.backoff = BackoffConfig::new(Duration::from_millis(50), Duration::from_millis(500));
    let hub = Discovery::new(&cfg, Metrics::default()).await.expect("hub");
    let mut opts = options().method(SAY_HELLO, MethodPolicy::idempotent());
    opts.slow_start = Duration::from_secs(30);
    let balanced = Balanced::new(&hub, greeter(), opts).await.expect("client");
    let c = GreeterServiceClient::new(balanced.clone());
    let until = Instant::now() + Duration::from_secs(5);
    while balanced.debug().members.len() < 2 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..20 {
        c.clone().say_hello(slow(&format!("warm{i}"), 0)).await.expect("ok");
    }
    let member = |b: &Balanced| b.debug().members.into_iter().find(|m| m.endpoint == pa.addr().to_string());
    let before = member(&balanced).expect("a is a member");
    assert_eq!(pa.accepted(), 1, "one connection to a");

    // a flaps: not ready for a moment, then ready again.
    api.apply_slice("demo", slice(PodEndpoint::ready("127.0.0.1", "a").not_ready()));
    let until = Instant::now() + Duration::from_secs(5);
    while member(&balanced).is_some() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(member(&balanced).is_none(), "a left the pool while not ready");
    assert_eq!(balanced.debug().departed, [pa.addr().to_string()], "kept warm meanwhile");
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.apply_slice("demo", slice(PodEndpoint::ready("127.0.0.1", "a")));
    let until = Instant::now() + Duration::from_secs(5);
    while member(&balanced).is_none() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = member(&balanced).expect("a is back");
    assert!(after.member_for_ms >= before.member_for_ms, "the same member: {before:?} then {after:?}");
    assert_eq!(after.weight, 1.0, "no second slow start: {after:?}");
    assert!(after.calls >= before.calls, "its history is kept");
    for i in 0..20 {
        c.clone().say_hello(slow(&format!("again{i}"), 0)).await.expect("ok");
    }
    assert_eq!(pa.accepted(), 1, "the same connection carried on");
}
