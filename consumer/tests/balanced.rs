//! discovery's balanced client under a tonic-generated client, over real Triple on loopback:
//! deadlines, cancellation, what is retried and what is not, outlier ejection, slow start, SRV
//! weights, subsetting, zone awareness with its safeguards, and streaming.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consumer::{Greeter, Stats};
use discovery::client::{Balanced, ClientOptions, MethodPolicy, ZoneMode};
use discovery::config::{BackoffConfig, StaticEndpoint};
use discovery::{Discovery, DiscoveryConfig, Metrics, Mode, ServiceRef, ServiceWatch};
use futures::{Stream, StreamExt};
use provider::pb::greeter_service_client::GreeterServiceClient;
use provider::pb::greeter_service_server::{GreeterService, GreeterServiceServer};
use provider::pb::{HelloReply, HelloRequest, HelloStreamRequest, Instance};
use testkit::{FakeApiServer, FakeDns, PodEndpoint, endpoint_slice, service_object};
use tokio_stream::wrappers::TcpListenerStream;

/// How a scripted server answers `SayHello`.
#[derive(Clone, Debug)]
enum Script {
    Ok,
    Sleep(Duration),
    Fail(tonic::Code, &'static str),
}

#[derive(Clone)]
struct Scripted {
    name: String,
    script: Arc<Mutex<Script>>,
    timeouts: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl GreeterService for Scripted {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        if let Some(t) = request.metadata().get("grpc-timeout").and_then(|v| v.to_str().ok()) {
            self.timeouts.lock().expect("lock").push(t.to_owned());
        }
        let script = self.script.lock().expect("lock").clone();
        match script {
            Script::Ok => {}
            Script::Sleep(d) => tokio::time::sleep(d).await,
            Script::Fail(code, msg) => return Err(tonic::Status::new(code, msg)),
        }
        Ok(tonic::Response::new(HelloReply {
            message: format!("hello from {}", self.name),
            served_by: Some(Instance {
                name: self.name.clone(),
                ip: "127.0.0.1".into(),
                version: "1.0.0".into(),
                group: String::new(),
            }),
        }))
    }

    type SayHelloStreamStream = Pin<Box<dyn Stream<Item = Result<HelloReply, tonic::Status>> + Send>>;

    async fn say_hello_stream(
        &self,
        request: tonic::Request<HelloStreamRequest>,
    ) -> Result<tonic::Response<Self::SayHelloStreamStream>, tonic::Status> {
        let req = request.into_inner();
        let name = self.name.clone();
        let s = futures::stream::iter(0..req.count).then(move |i| {
            let name = name.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(u64::from(req.interval_ms))).await;
                Ok(HelloReply { message: format!("#{i} from {name}"), served_by: None })
            }
        });
        Ok(tonic::Response::new(Box::pin(s)))
    }
}

struct Server {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    timeouts: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(name: &str, script: Script) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let svc = Scripted { name: name.to_owned(), script: Arc::new(Mutex::new(script)), timeouts: Arc::default() };
        let (script, timeouts) = (svc.script.clone(), svc.timeouts.clone());
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(GreeterServiceServer::new(svc))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        Server { addr, script, timeouts, task }
    }

    fn set(&self, s: Script) {
        *self.script.lock().expect("lock") = s;
    }
}

fn greeter() -> ServiceRef {
    ServiceRef::new(provider::INTERFACE).with_version("1.0.0")
}

fn options() -> ClientOptions {
    let mut o = ClientOptions::default()
        .with_default_deadline(Duration::from_secs(2))
        .with_connect_timeout(Duration::from_millis(500));
    o.slow_start = Duration::ZERO;
    o.zone_aware = false;
    o
}

fn tweak(mut o: ClientOptions, f: impl FnOnce(&mut ClientOptions)) -> ClientOptions {
    f(&mut o);
    o
}

/// `SayHello` declared idempotent: an UNAVAILABLE answer (which may come after the handler ran) is
/// replayed on another endpoint.
fn idempotent(o: ClientOptions) -> ClientOptions {
    o.method(consumer::config::SAY_HELLO, MethodPolicy::idempotent())
}

async fn static_watch(addrs: &[SocketAddr]) -> ServiceWatch {
    let cfg = DiscoveryConfig::new(Mode::Static).with_static_endpoints(addrs.iter().map(|a| StaticEndpoint::ip(*a)));
    let hub = Discovery::new(&cfg, Metrics::default()).await.expect("hub");
    hub.service(greeter()).await.expect("watch")
}

async fn client(addrs: &[SocketAddr], opts: ClientOptions) -> Greeter {
    let balanced = Balanced::from_watch(static_watch(addrs).await, None, opts).expect("valid options");
    assert!(balanced.ready(Duration::from_secs(5)).await);
    Greeter::new(balanced, Stats::default())
}

fn by_instance(g: &Greeter) -> BTreeMap<String, u64> {
    g.stats()
        .snapshot()
        .by_instance
        .into_iter()
        .map(|(k, v)| (k.split(' ').next().unwrap_or("").to_owned(), v))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calls_deadline_travels_as_grpc_timeout_and_bounds_the_call() {
    let slow = Server::start("slow", Script::Sleep(Duration::from_secs(5))).await;
    let g = client(&[slow.addr], options()).await;
    let mut c = GreeterServiceClient::new(g.balanced().clone());
    let mut req = tonic::Request::new(HelloRequest { name: "x".into(), ..Default::default() });
    req.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = c.say_hello(req).await.expect_err("too slow");
    let took = started.elapsed();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(took >= Duration::from_millis(280) && took < Duration::from_millis(1500), "{took:?}");
    let seen = slow.timeouts.lock().expect("lock").clone();
    let ms: u64 = seen[0].trim_end_matches('m').parse().expect("ms");
    assert!((200..=300).contains(&ms), "the provider is told the time left: {seen:?}");
    // no deadline on the request: the default one applies (and is sent)
    let g = client(
        &[slow.addr],
        tweak(options(), |o| {
            o.default_deadline = Duration::from_millis(200);
        }),
    )
    .await;
    let err = g.say_hello("x").await.expect_err("too slow");
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
    // A provider's CANCELLED at its deadline is reported as the caller's DEADLINE_EXCEEDED (the two
    // timers race under load); one well before the deadline is the provider's answer, passed on.
    slow.set(Script::Fail(tonic::Code::Cancelled, "cancelled by the application"));
    let mut req = tonic::Request::new(HelloRequest { name: "x".into(), ..Default::default() });
    req.set_timeout(Duration::from_secs(5));
    let err = c.say_hello(req).await.expect_err("cancelled");
    assert_eq!((err.code(), err.message()), (tonic::Code::Cancelled, "cancelled by the application"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_releases_its_endpoint() {
    let slow = Server::start("slow", Script::Sleep(Duration::from_secs(30))).await;
    let g = client(
        &[slow.addr],
        tweak(options(), |o| {
            o.default_deadline = Duration::from_secs(60);
        }),
    )
    .await;
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let g = g.clone();
            tokio::spawn(async move { g.say_hello("x").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(g.balanced().in_flight().values().sum::<usize>(), 5);
    for c in &calls {
        c.abort(); // the caller gives up: its future is dropped
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(g.balanced().in_flight().values().sum::<usize>(), 0, "dropped calls do not stay busy");
    // A streamed response dropped half-way releases it too.
    slow.set(Script::Ok);
    let mut c = GreeterServiceClient::new(g.balanced().clone());
    let mut stream = c
        .say_hello_stream(HelloStreamRequest { name: "s".into(), count: 50, interval_ms: 100 })
        .await
        .expect("stream")
        .into_inner();
    let first = stream.next().await.expect("one").expect("ok");
    assert_eq!(first.message, "#0 from slow");
    assert_eq!(g.balanced().in_flight().values().sum::<usize>(), 1, "a stream holds its endpoint while it runs");
    drop(stream);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(g.balanced().in_flight().values().sum::<usize>(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming_goes_through_and_ends_with_the_stream() {
    let a = Server::start("a", Script::Ok).await;
    let g = client(&[a.addr], options()).await;
    let mut c = GreeterServiceClient::new(g.balanced().clone());
    let replies: Vec<HelloReply> = c
        .say_hello_stream(HelloStreamRequest { name: "s".into(), count: 5, interval_ms: 0 })
        .await
        .expect("stream")
        .into_inner()
        .map(|r| r.expect("ok"))
        .collect()
        .await;
    assert_eq!(replies.len(), 5);
    assert_eq!(g.balanced().stats().ok, 1, "the call is counted when the stream ends OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_errors_are_never_retried_whatever_their_message() {
    let a = Server::start("a", Script::Fail(tonic::Code::Unknown, "connection reset by the database")).await;
    let b = Server::start("b", Script::Fail(tonic::Code::Internal, "transport error: broken pipe in app")).await;
    let g = client(&[a.addr, b.addr], options()).await;
    for _ in 0..10 {
        let err = g.say_hello("x").await.expect_err("application error");
        assert!(matches!(err.code(), tonic::Code::Unknown | tonic::Code::Internal), "{err:?}");
    }
    let c = g.balanced().stats();
    assert_eq!((c.retries, c.failed.get("status").copied()), (0, Some(10)), "{c:?}");
    // UNAVAILABLE may come after the handler ran: for a method not declared idempotent it is passed
    // on, never replayed, and the message says the call may have been processed.
    a.set(Script::Fail(tonic::Code::Unavailable, "shutting down"));
    b.set(Script::Fail(tonic::Code::Unavailable, "shutting down"));
    let err = g.say_hello("x").await.expect_err("not replayed");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("may have been processed") && err.message().contains("idempotent"), "{err:?}");
    assert_eq!(err.metadata().get("dubbo-k8s-cause").and_then(|v| v.to_str().ok()), Some("unavailable"));
    let c = g.balanced().stats();
    assert_eq!((c.retries, c.not_replayed), (0, 1), "{c:?}");
    // Declared idempotent, it is retried on the other endpoint (picks are random: call until `a`
    // has been picked at least once; 200 calls all missing it would mean `a` is never picked).
    let g = client(&[a.addr, b.addr], idempotent(options())).await;
    b.set(Script::Ok);
    let mut calls = 0;
    while g.balanced().stats().retries == 0 && calls < 200 {
        g.say_hello("x").await.expect("retried on b");
        calls += 1;
    }
    let c = g.balanced().stats();
    assert!(c.retries >= 1, "a was never picked in {calls} calls: {c:?}");
    assert_eq!(c.failed_total(), 0, "no call failed after the switch: {c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_keeps_failing_is_ejected_and_comes_back() {
    let good = Server::start("good", Script::Ok).await;
    let bad = Server::start("bad", Script::Fail(tonic::Code::Unavailable, "overloaded")).await;
    let mut opts = idempotent(options());
    opts.outlier.consecutive_failures = 3;
    opts.outlier.base_ejection = Duration::from_millis(800);
    opts.outlier.max_ejected_percent = 50;
    let g = client(&[good.addr, bad.addr], opts).await;
    for _ in 0..60 {
        g.say_hello("x").await.expect("retried on the good one");
    }
    let debug = g.balanced().debug();
    let bad_member = debug.members.iter().find(|m| m.endpoint == bad.addr.to_string()).expect("member");
    assert!(bad_member.ejected_for_ms > 0, "ejected: {debug:?}");
    let calls_to_bad = bad_member.calls;
    for _ in 0..60 {
        g.say_hello("x").await.expect("ok");
    }
    let after = g.balanced().debug().members.iter().find(|m| m.endpoint == bad.addr.to_string()).expect("member").calls;
    assert_eq!(after, calls_to_bad, "an ejected endpoint gets no calls");
    // It recovers; once the ejection ends it is used again.
    bad.set(Script::Ok);
    tokio::time::sleep(Duration::from_millis(900)).await;
    for _ in 0..60 {
        g.say_hello("x").await.expect("ok");
    }
    assert!(by_instance(&g).get("bad").copied().unwrap_or(0) > 0, "{:?}", by_instance(&g));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ejection_cap_keeps_calls_flowing_when_everything_fails() {
    let servers = [
        Server::start("a", Script::Fail(tonic::Code::Unavailable, "x")).await,
        Server::start("b", Script::Fail(tonic::Code::Unavailable, "x")).await,
    ];
    let mut opts = options();
    opts.outlier.consecutive_failures = 1;
    opts.outlier.max_ejected_percent = 50;
    let g = client(&[servers[0].addr, servers[1].addr], opts).await;
    for _ in 0..20 {
        let _ = g.say_hello("x").await;
    }
    let ejected = g.balanced().debug().members.iter().filter(|m| m.ejected_for_ms > 0).count();
    assert_eq!(ejected, 1, "at most half of two endpoints ejected at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_endpoint_ramps_up_slowly() {
    let (a, b) = (Server::start("a", Script::Ok).await, Server::start("b", Script::Ok).await);
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start("cluster.local").await.expect("dns");
    let slice = |name: &str, s: &Server, pod: &str| {
        api.apply_slice(
            "demo",
            endpoint_slice(
                name,
                "greeter-service",
                "IPv4",
                &[("tri", s.addr.port())],
                &[PodEndpoint::ready("127.0.0.1", pod)],
            ),
        )
    };
    slice("s-a", &a, "a");
    let mut cfg = DiscoveryConfig::new(Mode::Api).with_namespace("demo");
    cfg.api.server = Some(api.url());
    cfg.api.allow_loopback = true;
    cfg.dns.server = Some(dns.addr());
    let hub = Discovery::new(&cfg, Metrics::default()).await.expect("hub");
    let opts = tweak(options(), |o| {
        o.slow_start = Duration::from_secs(3);
        o.slow_start_min_weight = 0.05;
    });
    let balanced = Balanced::new(&hub, greeter(), opts).await.expect("client");
    assert!(balanced.ready(Duration::from_secs(5)).await);
    let g = Greeter::new(balanced, Stats::default());
    for _ in 0..50 {
        g.say_hello("warm").await.expect("ok");
    }
    slice("s-b", &b, "b");
    let added = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = by_instance(&g);
    // The first second of the 3 s window (its weight rises from 0.05 to about 0.37): bounded by time,
    // not by a number of calls, so a slow machine does not carry the count into the later ramp.
    let mut early_calls = 0;
    while early_calls < 400 && added.elapsed() < Duration::from_secs(1) {
        g.say_hello("x").await.expect("ok");
        early_calls += 1;
    }
    let early = by_instance(&g);
    let to_b = early.get("b").copied().unwrap_or(0) - before.get("b").copied().unwrap_or(0);
    assert!(early_calls >= 20, "too few calls to judge: {early_calls}");
    assert!(to_b * 10 < early_calls * 3, "a cold endpoint gets well under half at first: {to_b} of {early_calls}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mid = by_instance(&g);
    for _ in 0..400 {
        g.say_hello("x").await.expect("ok");
    }
    let late = by_instance(&g);
    let to_b = late.get("b").copied().unwrap_or(0) - mid.get("b").copied().unwrap_or(0);
    assert!((140..=260).contains(&to_b), "after the window, about half: {to_b} of 400");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_weights_set_the_share() {
    let (a, b) = (Server::start("a", Script::Ok).await, Server::start("b", Script::Ok).await);
    let dns = FakeDns::start("cluster.local").await.expect("dns");
    let fqdn = "greeter-service.demo.svc.cluster.local";
    dns.set_addresses("a.greeter-service.demo.svc.cluster.local", &["127.0.0.1".parse().expect("ip")], 30);
    dns.set_addresses("b.greeter-service.demo.svc.cluster.local", &["127.0.0.1".parse().expect("ip")], 30);
    dns.set_srv_records(
        &format!("_tri._tcp.{fqdn}"),
        &[
            (0, 75, a.addr.port(), "a.greeter-service.demo.svc.cluster.local"),
            (0, 25, b.addr.port(), "b.greeter-service.demo.svc.cluster.local"),
        ],
        30,
    );
    let mut cfg = DiscoveryConfig::new(Mode::Dns).with_namespace("demo");
    cfg.dns.server = Some(dns.addr());
    let hub = Discovery::new(&cfg, Metrics::default()).await.expect("hub");
    let balanced = Balanced::new(&hub, greeter(), options()).await.expect("client");
    assert!(balanced.ready(Duration::from_secs(5)).await);
    let g = Greeter::new(balanced, Stats::default());
    for _ in 0..800 {
        g.say_hello("x").await.expect("ok");
    }
    let got = by_instance(&g);
    let ratio = got["b"] as f64 / got["a"] as f64;
    assert!((0.2..=0.5).contains(&ratio), "weights 75:25 give about 3:1: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_service_is_reached_through_a_subset() {
    let mut servers = Vec::new();
    for i in 0..12 {
        servers.push(Server::start(&format!("p{i:02}"), Script::Ok).await);
    }
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let g = client(
        &addrs,
        tweak(options(), |o| {
            o.subset_size = 4;
            o.client_id = Some("consumer-a".into());
        }),
    )
    .await;
    for _ in 0..200 {
        g.say_hello("x").await.expect("ok");
    }
    assert_eq!(g.balanced().debug().members.len(), 4, "4 connections, not 12");
    assert_eq!(g.balanced().debug().candidates, 12);
    assert_eq!(by_instance(&g).len(), 4, "{:?}", by_instance(&g));
    // Other client identities get their own subsets. (The ports are random, so two identities share
    // a subset once in C(12,4) = 495 runs: three all alike would be once in 245,025.)
    let mut subsets = vec![members(&g)];
    for id in ["consumer-b", "consumer-c"] {
        let other = client(
            &addrs,
            tweak(options(), |o| {
                o.subset_size = 4;
                o.client_id = Some(id.into());
            }),
        )
        .await;
        other.say_hello("x").await.expect("ok");
        subsets.push(members(&other));
    }
    assert!(subsets.iter().any(|s| *s != subsets[0]), "different identities, different subsets: {subsets:?}");
}

fn members(g: &Greeter) -> Vec<String> {
    let mut m: Vec<String> = g.balanced().debug().members.into_iter().map(|m| m.endpoint).collect();
    m.sort();
    m
}

/// Two providers in zone-a, one in zone-b, served by the in-process API server with hints.
struct Zones {
    api: FakeApiServer,
    _dns: FakeDns,
    servers: Vec<Server>,
    hub: Discovery,
}

async fn zones(hints: bool, prefer_close: bool) -> Zones {
    let servers = vec![
        Server::start("a1", Script::Ok).await,
        Server::start("a2", Script::Ok).await,
        Server::start("b1", Script::Ok).await,
    ];
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start("cluster.local").await.expect("dns");
    let mut svc = service_object("greeter-service", &[], Some("10.96.0.9"), ("tri", 50051));
    if prefer_close {
        svc["spec"]["trafficDistribution"] = serde_json::json!("PreferClose");
    }
    api.apply_service("demo", svc);
    for (s, (name, zone)) in servers.iter().zip([("a1", "zone-a"), ("a2", "zone-a"), ("b1", "zone-b")]) {
        let mut pod = PodEndpoint::ready("127.0.0.1", name).located(&format!("node-{zone}"), zone);
        if hints {
            pod = pod.hinted(&[zone]);
        }
        api.apply_slice(
            "demo",
            endpoint_slice(&format!("s-{name}"), "greeter-service", "IPv4", &[("tri", s.addr.port())], &[pod]),
        );
    }
    api.apply_node("node-zone-a", &[("topology.kubernetes.io/zone", "zone-a")]);
    let mut cfg = DiscoveryConfig::new(Mode::Api).with_namespace("demo");
    cfg.api.server = Some(api.url());
    cfg.api.allow_loopback = true;
    cfg.dns.server = Some(dns.addr());
    cfg.backoff = BackoffConfig::new(Duration::from_millis(50), Duration::from_millis(400));
    cfg.locality.node_name = Some("node-zone-a".into()); // the zone comes from the node's label
    let hub = Discovery::new(&cfg, Metrics::default()).await.expect("hub");
    Zones { api, _dns: dns, servers, hub }
}

async fn zone_client(z: &Zones) -> Greeter {
    let mut opts = idempotent(tweak(options(), |o| {
        o.zone_aware = true;
    }));
    opts.outlier.consecutive_failures = 1;
    opts.outlier.max_ejected_percent = 100;
    let balanced = Balanced::new(&z.hub, greeter(), opts).await.expect("client");
    assert!(balanced.ready(Duration::from_secs(5)).await);
    Greeter::new(balanced, Stats::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_keep_calls_in_the_clients_zone_with_safeguards() {
    let z = zones(true, false).await;
    let g = zone_client(&z).await;
    // The zone is read from the node's label (followed: under load the first look-up may come late).
    let until = Instant::now() + Duration::from_secs(10);
    while g.balanced().debug().zone.is_none() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(g.balanced().debug().zone.as_deref(), Some("zone-a"), "read from the node's label");
    assert_eq!(g.balanced().debug().zone_mode, ZoneMode::Hints);
    for _ in 0..200 {
        g.say_hello("x").await.expect("ok");
    }
    let got = by_instance(&g);
    assert_eq!(got.get("b1"), None, "no call leaves the zone: {got:?}");
    assert!(got["a1"] > 50 && got["a2"] > 50, "{got:?}");
    let zones = g.balanced().stats().calls_by_zone;
    assert_eq!(zones.get("zone-a (local)").copied(), Some(200), "{zones:?}");

    // Safeguard: every local endpoint fails and is ejected → calls go to the other zone, none fails.
    z.servers[0].set(Script::Fail(tonic::Code::Unavailable, "draining"));
    z.servers[1].set(Script::Fail(tonic::Code::Unavailable, "draining"));
    for _ in 0..100 {
        g.say_hello("x").await.expect("spilled to zone-b");
    }
    assert!(by_instance(&g).get("b1").copied().unwrap_or(0) > 50, "{:?}", by_instance(&g));
    assert!(g.balanced().stats().calls_by_zone.get("zone-b (remote)").copied().unwrap_or(0) > 0);

    // Safeguard: hints missing on some endpoints → no zone preference at all.
    // Another address (never called: the mode alone is checked), so that it is not the same key as b1.
    let pod = PodEndpoint::ready("127.0.0.9", "a9").located("node-zone-a", "zone-a");
    z.api.apply_slice(
        "demo",
        endpoint_slice("s-a9", "greeter-service", "IPv4", &[("tri", z.servers[2].addr.port())], &[pod]),
    );
    tokio::time::timeout(Duration::from_secs(5), async {
        while !matches!(g.balanced().debug().zone_mode, ZoneMode::Off(ref why) if why.contains("hints missing")) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("zone preference turned off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_close_without_hints_uses_the_endpoints_zone_and_spills_when_overloaded() {
    let z = zones(false, true).await;
    let g = zone_client(&z).await;
    tokio::time::timeout(Duration::from_secs(5), async {
        while g.balanced().debug().zone_mode != ZoneMode::SameZone {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("PreferClose read from the Service");
    for _ in 0..100 {
        g.say_hello("x").await.expect("ok");
    }
    assert_eq!(by_instance(&g).get("b1"), None, "{:?}", by_instance(&g));
    // Overload: the local endpoints are slow; with many calls in flight, the remote one takes some.
    z.servers[0].set(Script::Sleep(Duration::from_millis(300)));
    z.servers[1].set(Script::Sleep(Duration::from_millis(300)));
    let opts = tweak(options(), |o| {
        o.zone_aware = true;
        o.zone_spill_in_flight = 4;
    });
    let balanced = Balanced::new(&z.hub, greeter(), opts).await.expect("client");
    assert!(balanced.ready(Duration::from_secs(5)).await);
    let busy = Greeter::new(balanced, Stats::default());
    let calls: Vec<_> = (0..40)
        .map(|_| {
            let g = busy.clone();
            tokio::spawn(async move { g.say_hello("x").await })
        })
        .collect();
    for c in calls {
        if let Err(e) = c.await.expect("join") {
            panic!("a call failed: {e:?}; pool: {:?}", busy.balanced().debug());
        }
    }
    assert!(
        by_instance(&busy).get("b1").copied().unwrap_or(0) > 0,
        "overloaded local endpoints spill: {:?}",
        by_instance(&busy)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_set_and_a_cold_start_fail_with_a_clear_error() {
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start("cluster.local").await.expect("dns");
    let mut cfg = DiscoveryConfig::new(Mode::Api).with_namespace("demo");
    cfg.api.server = Some(api.url());
    cfg.dns.server = Some(dns.addr());
    cfg.api.failover = false;
    api.set_misbehaviour(testkit::Misbehaviour::Silent); // no answer at all
    let hub = Discovery::new(&cfg, Metrics::default()).await.expect("hub");
    let balanced = Balanced::new(
        &hub,
        greeter(),
        tweak(options(), |o| {
            o.default_deadline = Duration::from_millis(300);
        }),
    )
    .await
    .expect("client");
    let g = Greeter::new(balanced, Stats::default());
    let started = Instant::now();
    let err = g.say_hello("x").await.expect_err("nothing known");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("discovery still starting"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(g.balanced().stats().failed.get("not_ready").copied(), Some(1));
}

/// `trafficDistribution: PreferSameNode`: calls stay on the client's node, then its zone, then go
/// anywhere (the code of the last round knew only PreferClose and ignored this).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_same_node_keeps_calls_on_the_node_then_in_the_zone() {
    let servers = [
        Server::start("a1", Script::Ok).await,
        Server::start("a2", Script::Ok).await,
        Server::start("b1", Script::Ok).await,
    ];
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start("cluster.local").await.expect("dns");
    let mut svc = service_object("greeter-service", &[], Some("10.96.0.9"), ("tri", 50051));
    svc["spec"]["trafficDistribution"] = serde_json::json!("PreferSameNode");
    api.apply_service("demo", svc);
    for (s, (name, zone)) in servers.iter().zip([("a1", "zone-a"), ("a2", "zone-a"), ("b1", "zone-b")]) {
        let pod = PodEndpoint::ready("127.0.0.1", name).located(&format!("node-{name}"), zone);
        api.apply_slice(
            "demo",
            endpoint_slice(&format!("s-{name}"), "greeter-service", "IPv4", &[("tri", s.addr.port())], &[pod]),
        );
    }
    api.apply_node("node-a1", &[("topology.kubernetes.io/zone", "zone-a")]);
    let mut cfg = DiscoveryConfig::new(Mode::Api).with_namespace("demo");
    cfg.api.server = Some(api.url());
    cfg.api.allow_loopback = true;
    cfg.dns.server = Some(dns.addr());
    cfg.locality.node_name = Some("node-a1".into());
    let hub = Discovery::new(&cfg, Metrics::default()).await.expect("hub");
    let mut opts = idempotent(tweak(options(), |o| o.zone_aware = true));
    opts.outlier.consecutive_failures = 1;
    opts.outlier.max_ejected_percent = 100;
    let g = Greeter::new(Balanced::new(&hub, greeter(), opts).await.expect("client"), Stats::default());
    let until = Instant::now() + Duration::from_secs(10);
    while g.balanced().debug().zone_mode != ZoneMode::SameNode && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(g.balanced().debug().zone_mode, ZoneMode::SameNode);
    for _ in 0..100 {
        g.say_hello("x").await.expect("ok");
    }
    assert_eq!(by_instance(&g).into_keys().collect::<Vec<_>>(), ["a1"], "all on this node");
    // This node's endpoint fails and is ejected: the zone's other one takes over, not zone-b's.
    servers[0].set(Script::Fail(tonic::Code::Unavailable, "draining"));
    for _ in 0..100 {
        g.say_hello("x").await.expect("the zone takes over");
    }
    let got = by_instance(&g);
    assert!(got.get("a2").copied().unwrap_or(0) >= 95, "{got:?}");
    assert_eq!(got.get("b1"), None, "never out of the zone while it has an endpoint: {got:?}");
}
