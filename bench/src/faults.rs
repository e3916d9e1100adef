//! The fault suite: steady traffic from the library's balanced client to real provider processes,
//! and, in sequence, the faults real clusters produce. Calls come in two classes, alternately: one
//! client declares `SayHello` idempotent (with an attempt timeout), the other does not (at most
//! once). Each call asks the provider to take `delay_ms`, so calls are really in flight when a fault
//! strikes. Per phase: calls issued, succeeded, failed and retried per class, calls executed twice
//! (from the providers' execution journals, joined across providers), calls in flight at the fault,
//! and how long the client took to reflect the change; each phase has a target and the suite fails
//! when one is missed. Calls of the at-most-once class executed twice must be 0 in every phase.
//!
//! The Kubernetes API server and DNS server are the in-process test servers (they speak the real
//! protocols on loopback and can be stopped, compacted and made to misbehave); the providers are the
//! provider binary; one of them is reached through a TCP proxy that can reset its connections.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use discovery::client::{Balanced, ClientOptions, MethodPolicy};
use discovery::config::BackoffConfig;
use discovery::{Discovery, DiscoveryConfig, EndpointKey, Freshness, Metrics, Mode, ServiceRef, Source};
use provider::pb::HelloRequest;
use provider::pb::greeter_service_client::GreeterServiceClient;
use testkit::{
    Behaviour, FakeApiServer, FakeDns, Misbehaviour, PodEndpoint, RecordType, ResetProxy, endpoint_slice,
    service_object,
};

use crate::report::{Section, f};
use crate::util::{Helper, Summary, start_provider};

const NS: &str = "faults";
const DOMAIN: &str = "cluster.local";
const TTL: u32 = 1;
const SAY_HELLO: &str = "/org.apache.dubbo.demo.GreeterService/SayHello";

type Client = GreeterServiceClient<Balanced>;

/// How long each timed fault lasts, and the traffic.
#[derive(Clone, Debug)]
pub struct Plan {
    pub rate: f64,
    /// What each call asks the provider to take.
    pub delay_ms: u32,
    pub api_outage: Duration,
    pub dns_fault: Duration,
    pub misbehaviour: Duration,
    pub freeze: Duration,
}

// ---------------------------------------------------------------------------------------------
// Traffic: two classes of calls

/// Which contract a call is made under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Idempotent,
    AtMostOnce,
}

impl Class {
    const BOTH: [Class; 2] = [Class::Idempotent, Class::AtMostOnce];

    /// Also the request's `name`, so the providers' journals say which class a call was.
    fn name(self) -> &'static str {
        match self {
            Class::Idempotent => "idempotent",
            Class::AtMostOnce => "at-most-once",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Default)]
struct Tally {
    issued: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicU64,
    fail_ms: Mutex<Vec<f64>>,
    messages: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

type Tallies = [Arc<Tally>; 2];

#[derive(Debug, Default)]
struct Seen {
    last: Option<Instant>,
    first_since_mark: Option<Instant>,
}

/// The two clients of one service (one per class), over the same hub.
#[derive(Clone)]
struct Clients {
    idempotent: Balanced,
    once: Balanced,
}

impl Clients {
    async fn new(hub: &Discovery, service: &ServiceRef) -> Result<Self, String> {
        let mut idem = options()
            .method(SAY_HELLO, MethodPolicy::idempotent().with_deadline(DEADLINE).with_attempt_timeout(ATTEMPT));
        idem.client_id = Some("faults-idempotent".into());
        let once = options().method(SAY_HELLO, MethodPolicy::at_most_once().with_deadline(DEADLINE));
        let c = Clients {
            idempotent: Balanced::new(hub, service.clone(), idem).await.map_err(|e| format!("client: {e}"))?,
            once: Balanced::new(hub, service.clone(), once).await.map_err(|e| format!("client: {e}"))?,
        };
        for b in [&c.idempotent, &c.once] {
            if !b.ready(Duration::from_secs(10)).await {
                return Err("a client got no endpoint set".into());
            }
        }
        Ok(c)
    }

    fn of(&self, class: Class) -> &Balanced {
        match class {
            Class::Idempotent => &self.idempotent,
            Class::AtMostOnce => &self.once,
        }
    }

    fn retries(&self) -> u64 {
        self.idempotent.stats().retries + self.once.stats().retries
    }

    /// Calls in flight to `key`, per class.
    fn in_flight(&self, key: EndpointKey) -> [u64; 2] {
        Class::BOTH.map(|c| self.of(c).in_flight().get(&key).copied().unwrap_or(0) as u64)
    }

    /// Whether `key` is a member either client may pick.
    fn member(&self, key: EndpointKey) -> bool {
        Class::BOTH.iter().any(|c| self.of(*c).in_flight().contains_key(&key))
    }

    /// Whether both clients have ejected `key`.
    fn ejected(&self, key: EndpointKey) -> bool {
        Class::BOTH
            .iter()
            .all(|c| self.of(*c).debug().members.iter().any(|m| m.endpoint == key.to_string() && m.ejected_for_ms > 0))
    }
}

/// The deadline of every call, sent to the provider.
const DEADLINE: Duration = Duration::from_secs(2);
/// The idempotent class's attempt timeout: a frozen provider costs this, then the call moves on.
const ATTEMPT: Duration = Duration::from_millis(500);

fn options() -> ClientOptions {
    let mut o = ClientOptions::default().with_client_id("faults");
    o.outlier.base_ejection = Duration::from_secs(3);
    o
}

struct Traffic {
    clients: Mutex<Clients>,
    tallies: Mutex<Tallies>,
    served: Mutex<HashMap<String, Seen>>,
    stop: AtomicBool,
}

impl Traffic {
    fn start(clients: Clients, rate: f64, delay_ms: u32) -> Arc<Traffic> {
        let t = Arc::new(Traffic {
            clients: Mutex::new(clients),
            tallies: Mutex::new(Default::default()),
            served: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
        });
        let me = t.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0usize;
            while !me.stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let class = Class::BOTH[n % 2];
                n += 1;
                let tally = lock(&me.tallies)[class.index()].clone();
                let client = Client::new(lock(&me.clients).of(class).clone());
                tokio::spawn(me.clone().call(client, class, tally, delay_ms));
            }
        });
        t
    }

    async fn call(self: Arc<Self>, mut client: Client, class: Class, tally: Arc<Tally>, delay_ms: u32) {
        tally.issued.fetch_add(1, Ordering::Relaxed);
        tally.in_flight.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let request = HelloRequest { name: class.name().into(), delay_ms };
        let result = client.say_hello(tonic::Request::new(request)).await;
        let now = Instant::now();
        match result {
            Ok(r) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                let name = r.into_inner().served_by.map(|i| i.name).unwrap_or_default();
                let mut served = lock(&self.served);
                let seen = served.entry(name).or_default();
                seen.last = Some(now);
                seen.first_since_mark.get_or_insert(now);
            }
            Err(status) => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                lock(&tally.fail_ms).push((now - started).as_secs_f64() * 1e3);
                let msg: String =
                    format!("{}: {:?}: {}", class.name(), status.code(), status.message()).chars().take(170).collect();
                *lock(&tally.messages).entry(msg).or_default() += 1;
            }
        }
        tally.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn clients(&self) -> Clients {
        lock(&self.clients).clone()
    }

    fn switch(&self, clients: Clients) {
        *lock(&self.clients) = clients;
    }

    /// Forgets when `name` was first seen, so the next call it serves is timed from now.
    fn mark(&self, name: &str) {
        if let Some(s) = lock(&self.served).get_mut(name) {
            s.first_since_mark = None;
        }
    }

    fn first_since_mark(&self, name: &str) -> Option<Instant> {
        lock(&self.served).get(name).and_then(|s| s.first_since_mark)
    }

    fn last(&self, name: &str) -> Option<Instant> {
        lock(&self.served).get(name).and_then(|s| s.last)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// The world: API server, DNS server, provider processes and their journals

struct Prov {
    port: u16,
    helper: Option<Helper>,
}

struct World {
    api: FakeApiServer,
    dns: FakeDns,
    bin: PathBuf,
    journals: PathBuf,
    providers: BTreeMap<String, Prov>,
    /// The provider reached through a proxy that can reset connections, and that proxy.
    proxied: Option<(String, ResetProxy)>,
}

impl World {
    async fn provider(&mut self, name: &str) -> Result<(), String> {
        let journal = self.journals.join(format!("{name}.log"));
        let journal = journal.to_string_lossy().into_owned();
        let env = [("PROVIDER_DRAIN", "1s"), ("PROVIDER_SHUTDOWN_TIMEOUT", "3s"), ("PROVIDER_EXECUTION_LOG", &journal)];
        let (helper, port) = start_provider(Command::new(&self.bin), name, &env).await?;
        self.providers.insert(name.to_owned(), Prov { port, helper: Some(helper) });
        Ok(())
    }

    /// The port clients reach `name` on (the proxy's, for the proxied one).
    fn port(&self, name: &str) -> u16 {
        match &self.proxied {
            Some((p, proxy)) if p == name => proxy.addr().port(),
            _ => self.providers.get(name).map_or(0, |p| p.port),
        }
    }

    fn key(&self, name: &str) -> EndpointKey {
        EndpointKey::new([127, 0, 0, 1].into(), self.port(name))
    }

    fn pid(&self, name: &str) -> Result<u32, String> {
        self.providers.get(name).and_then(|p| p.helper.as_ref()).map(Helper::pid).ok_or_else(|| format!("no {name}"))
    }

    /// The slice of `name` in `service`, as the endpointslice controller writes one per pod here
    /// (each provider has its own port on loopback).
    fn slice(&self, service: &str, name: &str, pod: PodEndpoint) {
        let s = endpoint_slice(&format!("{service}-{name}"), service, "IPv4", &[("tri", self.port(name))], &[pod]);
        self.api.apply_slice(NS, s);
    }

    fn unslice(&self, service: &str, name: &str) {
        self.api.delete_slice(NS, &format!("{service}-{name}"));
    }

    fn srv_target(&self, service: &str, name: &str) -> String {
        format!("{name}.{service}.{NS}.svc.{DOMAIN}")
    }

    /// DNS as CoreDNS would serve `service` with `names` ready: SRV per pod, A records.
    fn dns_serves(&self, service: &str, names: &[&str]) {
        let fqdn = format!("{service}.{NS}.svc.{DOMAIN}");
        let lo: IpAddr = [127, 0, 0, 1].into();
        let targets: Vec<(String, u16)> = names.iter().map(|n| (self.srv_target(service, n), self.port(n))).collect();
        for (t, _) in &targets {
            self.dns.set_addresses(t, &[lo], TTL);
        }
        let srv: Vec<(u16, u16, u16, &str)> = targets.iter().map(|(t, p)| (0, 10, *p, t.as_str())).collect();
        self.dns.set_srv_records(&format!("_tri._tcp.{fqdn}"), &srv, TTL);
        self.dns.set_addresses(&fqdn, &[lo], TTL);
    }

    fn signal(&self, name: &str, signal: &str) -> Result<(), String> {
        let pid = self.pid(name)?;
        let ok = Command::new("kill").args([signal, &pid.to_string()]).status().map_err(|e| e.to_string())?.success();
        if ok { Ok(()) } else { Err(format!("kill {signal} {pid} failed")) }
    }

    fn kill9(&mut self, name: &str) {
        if let Some(p) = self.providers.get_mut(name) {
            p.helper = None; // Helper's drop is SIGKILL and reap
        }
    }

    async fn exited(&mut self, name: &str, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            let done = match self.providers.get_mut(name).and_then(|p| p.helper.as_mut()) {
                Some(h) => h.child.try_wait().ok().flatten().is_some(),
                None => true,
            };
            if done {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Calls executed more than once so far, per class, over every provider's journal.
    fn executed_twice(&self) -> [u64; 2] {
        let mut by_id: HashMap<String, (u32, Option<Class>)> = HashMap::new();
        let files = std::fs::read_dir(&self.journals).into_iter().flatten().flatten();
        for file in files {
            for line in std::fs::read_to_string(file.path()).unwrap_or_default().lines() {
                let mut cols = line.split('\t');
                let (Some(id), Some(_method), Some(name)) = (cols.next(), cols.next(), cols.next()) else { continue };
                let class = Class::BOTH.into_iter().find(|c| c.name() == name);
                let e = by_id.entry(id.to_owned()).or_insert((0, class));
                e.0 += 1;
            }
        }
        let mut twice = [0u64; 2];
        for (n, class) in by_id.values() {
            if let (true, Some(c)) = (*n > 1, class) {
                twice[c.index()] += 1;
            }
        }
        twice
    }
}

fn annotated(service: &str, yes: bool) -> serde_json::Value {
    let ann: &[(&str, &str)] = if yes {
        &[("dubbo.apache.org/interface", provider::INTERFACE), ("dubbo.apache.org/version", "1.0.0")]
    } else {
        &[]
    };
    service_object(service, ann, None, ("tri", 50051))
}

// ---------------------------------------------------------------------------------------------
// Phases

struct Phase {
    name: String,
    tallies: Tallies,
    retries_at_start: u64,
    twice_at_start: [u64; 2],
    reflect: Option<Duration>,
    in_flight_at_fault: Option<[u64; 2]>,
    notes: Vec<String>,
}

/// One row of the table.
struct Row {
    phase: Phase,
    retries: u64,
    twice: [u64; 2],
    target: String,
    passed: bool,
}

struct Suite {
    traffic: Arc<Traffic>,
    world: World,
    watch: discovery::ServiceWatch,
    clients: Clients,
    /// The API-mode configuration; the DNS phases reuse it in DNS mode.
    cfg: DiscoveryConfig,
    rows: Vec<Row>,
    /// The tallies calls go to while the last phase's calls finish: the next phase's.
    next: Option<Tallies>,
}

/// What a phase must show besides "no call of the at-most-once class executed twice".
type Check = Box<dyn FnOnce(&Tallies) -> bool>;

fn zero_failed() -> Check {
    Box::new(|t| Class::BOTH.iter().all(|c| t[c.index()].failed() == 0 && t[c.index()].ok.load(Ordering::Relaxed) > 0))
}

impl Suite {
    fn begin(&mut self, name: &str) -> Phase {
        let tallies = self.next.take().unwrap_or_default();
        *lock(&self.traffic.tallies) = tallies.clone();
        eprintln!("faults: {name}");
        Phase {
            name: name.to_owned(),
            tallies,
            retries_at_start: self.traffic.clients().retries(),
            twice_at_start: self.world.executed_twice(),
            reflect: None,
            in_flight_at_fault: None,
            notes: Vec::new(),
        }
    }

    /// Ends `p` when its calls have all finished; `target` says what passing means besides no call
    /// of the at-most-once class executed twice, `check` whether it did.
    async fn end(&mut self, p: Phase, target: &str, check: Check) {
        // New calls go to the next phase's tallies (every call counts in some phase); wait for this
        // phase's to end (deadline 2 s).
        let next: Tallies = Default::default();
        *lock(&self.traffic.tallies) = next.clone();
        self.next = Some(next);
        let until = Instant::now() + Duration::from_secs(5);
        while p.tallies.iter().any(|t| t.in_flight.load(Ordering::Relaxed) > 0) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let retries = self.traffic.clients().retries().saturating_sub(p.retries_at_start);
        let now = self.world.executed_twice();
        let twice = [0, 1].map(|i| now[i].saturating_sub(p.twice_at_start[i]));
        let passed = twice[Class::AtMostOnce.index()] == 0 && check(&p.tallies);
        self.rows.push(Row { phase: p, retries, twice, target: target.to_owned(), passed });
    }
}

/// Waits for `cond` (checked every 10 ms) up to `within`; the time it took.
async fn until(within: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if cond() {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

fn ms_or(d: Option<Duration>, none: &str) -> String {
    d.map_or_else(|| none.to_owned(), |d| d.as_millis().to_string())
}

pub async fn run(bin: &Path, plan: &Plan) -> Section {
    let mut section = Section::new(
        "Faults under load",
        &format!(
            "Open-loop traffic at {} calls/s (each taking {} ms at the provider, so calls are in flight at every fault) \
             from two balanced clients to provider processes on loopback, alternately: `SayHello` declared idempotent \
             (attempt timeout {} ms) and not (at most once); deadline {} s, up to 2 retries. Discovery in API mode with \
             DNS failover (`DISCOVERY_MAX_STALE` 5 s), then in DNS mode for the DNS faults. Calls are counted in the \
             phase that issued them; failed and executed twice are given as idempotent / at-most-once. Executed twice: \
             request ids found more than once in the providers' execution journals (`PROVIDER_EXECUTION_LOG`), joined \
             across providers. Reflected: from the change to the first (or last) call that shows the client followed \
             it. In flight at the fault: per class, the larger of the clients' counts just before and just after it. \
             Every target includes: at-most-once calls executed twice = 0.",
            plan.rate,
            plan.delay_ms,
            ATTEMPT.as_millis(),
            DEADLINE.as_secs()
        ),
        &[
            "phase",
            "issued",
            "ok",
            "failed",
            "retried",
            "executed twice",
            "in flight at fault",
            "reflected in",
            "target",
            "result",
        ],
    );
    match suite(bin, plan).await {
        Ok(rows) => {
            for r in rows {
                report_row(&mut section, r);
            }
        }
        Err(e) => section.problem(e),
    }
    section
}

fn report_row(section: &mut Section, r: Row) {
    let t = &r.phase.tallies;
    let sum = |f: fn(&Tally) -> &AtomicU64| t.iter().map(|t| f(t).load(Ordering::Relaxed)).sum::<u64>();
    let pair = |a: u64, b: u64| format!("{a} / {b}");
    let (i, o) = (Class::Idempotent.index(), Class::AtMostOnce.index());
    section.row(vec![
        r.phase.name.clone(),
        sum(|t| &t.issued).to_string(),
        sum(|t| &t.ok).to_string(),
        pair(t[i].failed(), t[o].failed()),
        r.retries.to_string(),
        pair(r.twice[i], r.twice[o]),
        r.phase.in_flight_at_fault.map_or_else(|| "—".into(), |f| pair(f[i], f[o])),
        r.phase.reflect.map_or_else(|| "—".into(), |d| format!("{} ms", f(d.as_secs_f64() * 1e3, 0))),
        r.target.clone(),
        if r.passed { "pass".into() } else { "FAIL".into() },
    ]);
    for n in &r.phase.notes {
        section.note(format!("{}: {n}", r.phase.name));
    }
    for tally in t {
        for (msg, n) in lock(&tally.messages).iter() {
            section.note(format!("{}: {n} × {msg}", r.phase.name));
        }
    }
    if !r.passed {
        section.problem(format!("{}: missed its target ({})", r.phase.name, r.target));
    }
}

async fn suite(bin: &Path, plan: &Plan) -> Result<Vec<Row>, String> {
    let mut s = setup(bin, plan).await?;
    baseline(&mut s).await;
    drain(&mut s).await?;
    kill9(&mut s).await;
    scale_up(&mut s).await?;
    not_ready_then_back(&mut s).await;
    terminating_then_back(&mut s).await;
    reset_mid_call(&mut s).await;
    frozen_provider(&mut s, plan.freeze).await?;
    api_down(&mut s, plan.api_outage).await?;
    watches_reset(&mut s, plan.misbehaviour).await;
    watches_silent(&mut s).await;
    compaction(&mut s).await?;
    annotations_moved(&mut s).await;
    dns_faults(&mut s, plan.dns_fault).await?;
    scale_to_zero(&mut s).await;
    let p = s.begin("after scale-up");
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.end(p, "0 failed", zero_failed()).await;
    s.traffic.stop.store(true, Ordering::Relaxed);
    Ok(s.rows)
}

async fn setup(bin: &Path, plan: &Plan) -> Result<Suite, String> {
    let api = FakeApiServer::start().await.map_err(|e| format!("API server: {e}"))?;
    let dns = FakeDns::start(DOMAIN).await.map_err(|e| format!("DNS server: {e}"))?;
    let journals = std::env::temp_dir().join(format!("dubbo-k8s-faults-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&journals);
    std::fs::create_dir_all(&journals).map_err(|e| format!("{}: {e}", journals.display()))?;
    let mut w = World { api, dns, bin: bin.to_owned(), journals, providers: BTreeMap::new(), proxied: None };
    for p in ["p1", "p2", "p3", "p6"] {
        w.provider(p).await?;
    }
    // p6 is reached through a proxy that can reset its connections mid-call.
    let target = SocketAddr::from(([127, 0, 0, 1], w.providers["p6"].port));
    w.proxied = Some(("p6".into(), ResetProxy::start(target).await.map_err(|e| format!("proxy: {e}"))?));
    for p in ["p1", "p2", "p3", "p6"] {
        w.slice("greeter-a", p, PodEndpoint::ready("127.0.0.1", p));
    }
    w.api.apply_service(NS, annotated("greeter-a", true));
    w.api.apply_service(NS, annotated("greeter-b", false));
    w.dns_serves("greeter-a", &["p1", "p2", "p3", "p6"]);

    let mut cfg = DiscoveryConfig::new(Mode::Api).with_namespace(NS);
    cfg.api.server = Some(w.api.url());
    cfg.api.allow_loopback = true;
    cfg.api.max_stale = Duration::from_secs(5);
    cfg.api.recovery_hold = Duration::from_secs(1);
    cfg.api.watch_idle_timeout = Duration::from_secs(3);
    cfg.api.request_timeout = Duration::from_secs(2);
    cfg.api.probe_interval = Duration::from_secs(1);
    cfg.dns.server = Some(w.dns.addr());
    cfg.dns.ttl_floor = Duration::from_secs(1);
    cfg.dns.timeout = Duration::from_millis(500);
    cfg.backoff = BackoffConfig::new(Duration::from_millis(100), Duration::from_secs(1));
    let hub = Discovery::new(&cfg, Metrics::default()).await.map_err(|e| format!("discovery: {e}"))?;
    let clients = Clients::new(&hub, &service()).await?;
    let watch = clients.idempotent.service().clone();
    let traffic = Traffic::start(clients.clone(), plan.rate, plan.delay_ms);
    Ok(Suite { traffic, world: w, watch, clients, cfg, rows: Vec::new(), next: None })
}

fn service() -> ServiceRef {
    ServiceRef::new(provider::INTERFACE).with_version("1.0.0")
}

async fn baseline(s: &mut Suite) {
    let p = s.begin("baseline, 4 providers");
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.end(p, "0 failed", zero_failed()).await;
}

/// The pod is deleted: the controller marks it terminating as the kubelet sends SIGTERM.
async fn drain(s: &mut Suite) -> Result<(), String> {
    let mut p = s.begin("SIGTERM p1 (drain)");
    s.world.slice("greeter-a", "p1", PodEndpoint::ready("127.0.0.1", "p1").terminating());
    let (c, key) = (s.clients.clone(), s.world.key("p1"));
    p.reflect = until(Duration::from_secs(5), || !c.member(key)).await;
    s.world.signal("p1", "-TERM")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut draining = PodEndpoint::ready("127.0.0.1", "p1").terminating();
    draining.serving = Some(false);
    s.world.slice("greeter-a", "p1", draining);
    let gone = s.world.exited("p1", Duration::from_secs(10)).await;
    s.world.unslice("greeter-a", "p1");
    s.world.dns_serves("greeter-a", &["p2", "p3", "p6"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    p.notes.push(format!("p1 {} after its drain", if gone { "exited" } else { "did NOT exit" }));
    s.end(p, "0 failed", zero_failed()).await;
    Ok(())
}

/// kill -9 with calls in flight: the endpoint stays listed until the kubelet and the controller
/// notice (1 s here). Calls in flight to it may have run: the at-most-once ones fail (at most as
/// many as were in flight), the idempotent ones are replayed elsewhere.
async fn kill9(s: &mut Suite) {
    let mut p = s.begin("kill -9 p2, calls in flight");
    let key = s.world.key("p2");
    let c = s.clients.clone();
    // An at-most-once call at p2, given a few milliseconds to be written and reach its handler.
    let _ = until(Duration::from_secs(3), || c.in_flight(key)[Class::AtMostOnce.index()] > 0).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let before = s.clients.in_flight(key);
    s.world.kill9("p2");
    let in_flight = at_the_fault(before, s.clients.in_flight(key));
    p.in_flight_at_fault = Some(in_flight);
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.world.slice("greeter-a", "p2", PodEndpoint::ready("127.0.0.1", "p2").not_ready());
    p.reflect = until(Duration::from_secs(5), || !c.member(key)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.world.unslice("greeter-a", "p2");
    s.world.dns_serves("greeter-a", &["p3", "p6"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    p.notes.push(format!(
        "{} idempotent and {} at-most-once calls were in flight to p2 when it was killed; calls that picked it \
         before its endpoint went not-ready 1 s later found the port refused and were replayed (never reached it)",
        in_flight[0], in_flight[1]
    ));
    let bound = in_flight[Class::AtMostOnce.index()];
    let target = format!("idempotent 0 failed; at-most-once failed ≤ {bound} (in flight at the kill)");
    s.end(
        p,
        &target,
        Box::new(move |t| t[Class::Idempotent.index()].failed() == 0 && t[Class::AtMostOnce.index()].failed() <= bound),
    )
    .await;
}

async fn scale_up(s: &mut Suite) -> Result<(), String> {
    let mut p = s.begin("add p4, p5");
    s.world.provider("p4").await?;
    s.world.provider("p5").await?;
    let t0 = Instant::now();
    s.world.slice("greeter-a", "p4", PodEndpoint::ready("127.0.0.1", "p4"));
    s.world.slice("greeter-a", "p5", PodEndpoint::ready("127.0.0.1", "p5"));
    s.world.dns_serves("greeter-a", &["p3", "p4", "p5", "p6"]);
    let t = s.traffic.clone();
    let seen = until(Duration::from_secs(10), || t.last("p4").is_some() && t.last("p5").is_some()).await;
    p.reflect = seen.map(|_| {
        ["p4", "p5"]
            .iter()
            .filter_map(|n| t.first_since_mark(n))
            .max()
            .map_or(Duration::ZERO, |f| f.saturating_duration_since(t0))
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let both = seen.is_some();
    let check = zero_failed();
    s.end(p, "0 failed, both take calls", Box::new(move |t| both && check(t))).await;
    Ok(())
}

async fn not_ready_then_back(s: &mut Suite) {
    let mut p = s.begin("p3 not ready, then back");
    s.world.slice("greeter-a", "p3", PodEndpoint::ready("127.0.0.1", "p3").not_ready());
    let (c, key) = (s.clients.clone(), s.world.key("p3"));
    let stopped = until(Duration::from_secs(5), || !c.member(key)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.traffic.mark("p3");
    let t1 = Instant::now();
    s.world.slice("greeter-a", "p3", PodEndpoint::ready("127.0.0.1", "p3"));
    let t = s.traffic.clone();
    let back = until(Duration::from_secs(10), || t.first_since_mark("p3").is_some()).await;
    p.reflect = stopped;
    p.notes.push(format!(
        "p3 out of the pool {} ms after not-ready; its calls resumed {} ms after ready",
        ms_or(stopped, "?"),
        back.map_or("never".into(), |_| t.first_since_mark("p3").map_or(0, |f| (f - t1).as_millis()).to_string())
    ));
    let resumed = back.is_some();
    let check = zero_failed();
    s.end(p, "0 failed, resumes", Box::new(move |t| resumed && check(t))).await;
}

async fn terminating_then_back(s: &mut Suite) {
    let mut p = s.begin("p3 terminating (serving), then back");
    s.world.slice("greeter-a", "p3", PodEndpoint::ready("127.0.0.1", "p3").terminating());
    let (c, key) = (s.clients.clone(), s.world.key("p3"));
    p.reflect = until(Duration::from_secs(5), || !c.member(key)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.traffic.mark("p3");
    s.world.slice("greeter-a", "p3", PodEndpoint::ready("127.0.0.1", "p3"));
    let t = s.traffic.clone();
    let resumed = until(Duration::from_secs(10), || t.first_since_mark("p3").is_some()).await.is_some();
    let check = zero_failed();
    s.end(p, "0 failed, resumes", Box::new(move |t| resumed && check(t))).await;
}

/// The calls in flight at a fault, per class: the larger of a sample just before it and one just
/// after it. One sample before undercounts: a call can pick the endpoint between that sample and
/// the fault (seen in CI: 1 counted, 2 in flight), and one written into a connection whose reset
/// the client has not read yet is in flight at the fault too. Calls end only after the fault, when
/// the client's tasks read it, so the sample after still holds them.
fn at_the_fault(before: [u64; 2], after: [u64; 2]) -> [u64; 2] {
    [before[0].max(after[0]), before[1].max(after[1])]
}

/// Every connection to p6 is reset (RST) with calls in flight, as a middlebox dropping its state or
/// a node's network failing would: what was in flight may have run there.
async fn reset_mid_call(s: &mut Suite) {
    let mut p = s.begin("connections to p6 reset mid-call");
    let key = s.world.key("p6");
    let c = s.clients.clone();
    let _ = until(Duration::from_secs(3), || c.in_flight(key)[Class::AtMostOnce.index()] > 0).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let before = s.clients.in_flight(key);
    let reset = s.world.proxied.as_ref().map_or(0, |(_, proxy)| proxy.reset_all());
    let in_flight = at_the_fault(before, s.clients.in_flight(key));
    p.in_flight_at_fault = Some(in_flight);
    tokio::time::sleep(Duration::from_secs(2)).await;
    p.notes.push(format!("{reset} connections reset; p6 takes calls again on new ones"));
    let bound = in_flight[Class::AtMostOnce.index()];
    let target = format!("idempotent 0 failed; at-most-once failed ≤ {bound} (in flight at the reset)");
    s.end(
        p,
        &target,
        Box::new(move |t| t[Class::Idempotent.index()].failed() == 0 && t[Class::AtMostOnce.index()].failed() <= bound),
    )
    .await;
}

/// One provider frozen (SIGSTOP: it accepts connections and answers nothing, as a frozen process
/// or a half-dead node), then thawed. The idempotent class moves on after its attempt timeout; the
/// at-most-once class waits out its deadline. Timeouts count against the frozen endpoint while the
/// others answer, so both clients eject it and stop sending calls there.
async fn frozen_provider(s: &mut Suite, freeze: Duration) -> Result<(), String> {
    let mut p = s.begin(&format!("p3 frozen (SIGSTOP) {} s", freeze.as_secs()));
    let key = s.world.key("p3");
    let c = s.clients.clone();
    let _ = until(Duration::from_secs(3), || c.in_flight(key).iter().sum::<u64>() > 0).await;
    let in_flight = s.clients.in_flight(key);
    s.world.signal("p3", "-STOP")?;
    p.in_flight_at_fault = Some(in_flight);
    let left = until(freeze, || c.ejected(key)).await;
    p.reflect = left;
    tokio::time::sleep(freeze.saturating_sub(left.unwrap_or(freeze))).await;
    s.traffic.mark("p3");
    let thawed = Instant::now();
    s.world.signal("p3", "-CONT")?;
    let t = s.traffic.clone();
    let back = until(Duration::from_secs(15), || t.first_since_mark("p3").is_some()).await;
    p.notes.push(format!(
        "both clients ejected p3 {} ms after it froze (no call was sent there after that until the ejection \
         ended); it served calls again {} ms after SIGCONT",
        ms_or(left, "never"),
        back.map_or("never".into(), |_| t.first_since_mark("p3").map_or(0, |f| (f - thawed).as_millis()).to_string())
    ));
    // At most once: the calls in flight at the freeze, and those that picked p3 before the ejection
    // (consecutive timeouts eject after 5; an ejection that ends while it is still frozen costs up to 5 more).
    let bound = in_flight[Class::AtMostOnce.index()] + 15;
    let target = format!("idempotent 0 failed; at-most-once failed ≤ {bound}; ejected; back after SIGCONT");
    let (ejected, resumed) = (left.is_some(), back.is_some());
    s.end(
        p,
        &target,
        Box::new(move |t| {
            ejected
                && resumed
                && t[Class::Idempotent.index()].failed() == 0
                && t[Class::AtMostOnce.index()].failed() <= bound
        }),
    )
    .await;
    Ok(())
}

async fn api_down(s: &mut Suite, outage: Duration) -> Result<(), String> {
    let mut p = s.begin(&format!("API server down {} s", outage.as_secs()));
    let t0 = Instant::now();
    s.world.api.stop();
    let wt = s.watch.clone();
    let stale = until(outage, || wt.current().freshness() != Freshness::Live).await;
    let dns_at = until(outage, || wt.current().source() == Source::Dns).await.map(|_| t0.elapsed());
    tokio::time::sleep(outage.saturating_sub(t0.elapsed())).await;
    s.world.api.restart().await.map_err(|e| format!("API server restart: {e}"))?;
    let back = until(Duration::from_secs(30), || {
        let c = wt.current();
        c.source() == Source::Api && c.freshness() == Freshness::Live
    })
    .await;
    p.reflect = back;
    p.notes.push(format!(
        "stale after {} ms, DNS from {} s, API again {} ms after the restart",
        ms_or(stale, "never"),
        dns_at.map_or("never".into(), |d| f(d.as_secs_f64(), 1)),
        ms_or(back, "never")
    ));
    let ok = stale.is_some() && dns_at.is_some() && back.is_some();
    let check = zero_failed();
    s.end(p, "0 failed; DNS then API again", Box::new(move |t| ok && check(t))).await;
    Ok(())
}

/// Watches accepted then reset; a change made meanwhile must still arrive (through re-lists).
async fn watches_reset(s: &mut Suite, misbehaviour: Duration) {
    let mut p = s.begin("watches accepted then reset");
    s.world.api.set_watch_misbehaviour(Misbehaviour::AcceptThenReset);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    s.world.slice("greeter-a", "p3", PodEndpoint::ready("127.0.0.1", "p3").not_ready());
    let (wt, key) = (s.watch.clone(), s.world.key("p3"));
    p.reflect = until(Duration::from_secs(15), || wt.current().get(&key).is_some_and(|e| !e.conditions.ready)).await;
    tokio::time::sleep(misbehaviour.saturating_sub(t0.elapsed())).await;
    s.world.api.set_watch_misbehaviour(Misbehaviour::None);
    let seen = p.reflect.is_some();
    let check = zero_failed();
    s.end(p, "0 failed; the change arrives", Box::new(move |t| seen && check(t))).await;
}

/// Watches accepted then silent (half-open): the idle timeout restarts them.
async fn watches_silent(s: &mut Suite) {
    let mut p = s.begin("watches silent (half-open)");
    let watches = s.world.api.watches();
    s.world.api.set_watch_misbehaviour(Misbehaviour::Silent);
    // Write only once the client sits on a silent watch: the change must come through its recovery.
    let api = &s.world.api;
    if until(Duration::from_secs(10), || api.watches() > watches).await.is_none() {
        p.notes.push("the client opened no new watch".into());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.world.slice("greeter-a", "p3", PodEndpoint::ready("127.0.0.1", "p3"));
    let (wt, key) = (s.watch.clone(), s.world.key("p3"));
    p.reflect = until(Duration::from_secs(15), || wt.current().get(&key).is_some_and(|e| e.conditions.ready)).await;
    p.notes.push("idle timeout 3 s: the list that follows a restarted watch brings the change".into());
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.world.api.set_watch_misbehaviour(Misbehaviour::None);
    let seen = p.reflect.is_some();
    let check = zero_failed();
    s.end(p, "0 failed; the change arrives", Box::new(move |t| seen && check(t))).await;
}

/// Compaction while disconnected: the watch resumes with a compacted resourceVersion (410).
async fn compaction(s: &mut Suite) -> Result<(), String> {
    let mut p = s.begin("compaction while disconnected (410)");
    s.world.api.stop();
    s.world.slice("greeter-a", "p3", PodEndpoint::ready("127.0.0.1", "p3").not_ready());
    s.world.api.compact();
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.world.api.restart().await.map_err(|e| format!("API server restart: {e}"))?;
    let (wt, key) = (s.watch.clone(), s.world.key("p3"));
    p.reflect = until(Duration::from_secs(15), || wt.current().get(&key).is_some_and(|e| !e.conditions.ready)).await;
    s.world.slice("greeter-a", "p3", PodEndpoint::ready("127.0.0.1", "p3"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = p.reflect.is_some();
    let check = zero_failed();
    s.end(p, "0 failed; re-listed", Box::new(move |t| seen && check(t))).await;
    Ok(())
}

/// The annotations move to another Service (blue/green): p4 and p5 only.
async fn annotations_moved(s: &mut Suite) {
    let mut p = s.begin("annotations moved to greeter-b");
    s.world.slice("greeter-b", "p4", PodEndpoint::ready("127.0.0.1", "p4"));
    s.world.slice("greeter-b", "p5", PodEndpoint::ready("127.0.0.1", "p5"));
    s.world.dns_serves("greeter-b", &["p4", "p5"]);
    let t0 = Instant::now();
    s.world.api.apply_service(NS, annotated("greeter-b", true));
    s.world.api.apply_service(NS, annotated("greeter-a", false));
    let (c, wt, key3) = (s.clients.clone(), s.watch.clone(), s.world.key("p3"));
    let moved = until(Duration::from_secs(15), || wt.target().service == "greeter-b" && !c.member(key3)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    p.reflect = moved;
    let late = s.traffic.last("p3").is_some_and(|l| l > t0 + moved.unwrap_or_default() + Duration::from_millis(100));
    p.notes.push(format!(
        "target greeter-b and p3 (greeter-a only) out of the pool {} ms after the annotations moved{}",
        ms_or(moved, "never"),
        if late { "; p3 still served calls after that" } else { "" }
    ));
    let ok = moved.is_some() && !late;
    let check = zero_failed();
    s.end(p, "0 failed; re-targeted", Box::new(move |t| ok && check(t))).await;
}

/// DNS faults, with clients in DNS mode on greeter-b: the last good answer is kept (marked stale)
/// whenever a failed query is what makes an answer empty or short.
async fn dns_faults(s: &mut Suite, len: Duration) -> Result<(), String> {
    let mut dcfg = s.cfg.clone();
    dcfg.mode = Mode::Dns;
    dcfg.mappings = discovery::mapping::parse_mappings(&format!("{}:1.0.0=greeter-b:tri", provider::INTERFACE))
        .map_err(|e| e.to_string())?;
    let hub = Discovery::new(&dcfg, Metrics::default()).await.map_err(|e| format!("DNS discovery: {e}"))?;
    let srv_clients = Clients::new(&hub, &service()).await?;
    s.traffic.switch(srv_clients.clone());
    let p4_target = s.world.srv_target("greeter-b", "p4");
    let cases: [(&str, Fault); 4] = [
        ("DNS timing out", Fault::All(Behaviour::Silent)),
        ("DNS SERVFAIL", Fault::All(Behaviour::ServFail)),
        ("DNS AAAA failing, A answering", Fault::Type(RecordType::AAAA, Behaviour::ServFail)),
        ("DNS: one SRV target's address look-up timing out", Fault::Name(p4_target.clone(), Behaviour::Silent)),
    ];
    for (name, fault) in cases {
        dns_phase(s, name, &srv_clients, fault, len, 2).await;
    }
    // A and AAAA only (no SRV, as Docker's DNS): one endpoint on a numeric port. A timing out while
    // AAAA answers NODATA (every IPv4 cluster) must not publish a live, empty set.
    let mut acfg = dcfg.clone();
    acfg.dns.srv = false;
    let p5 = s.world.port("p5");
    acfg.mappings = discovery::mapping::parse_mappings(&format!("{}:1.0.0=greeter-b:{p5}", provider::INTERFACE))
        .map_err(|e| e.to_string())?;
    let a_hub = Discovery::new(&acfg, Metrics::default()).await.map_err(|e| format!("DNS discovery: {e}"))?;
    let a_clients = Clients::new(&a_hub, &service()).await?;
    s.traffic.switch(a_clients.clone());
    let a_timeout = Fault::Type(RecordType::A, Behaviour::Silent);
    dns_phase(s, "DNS A timing out, AAAA answering NODATA", &a_clients, a_timeout, len, 1).await;
    s.traffic.switch(s.clients.clone());
    Ok(())
}

#[derive(Clone)]
enum Fault {
    All(Behaviour),
    Type(RecordType, Behaviour),
    Name(String, Behaviour),
}

async fn dns_phase(s: &mut Suite, name: &str, clients: &Clients, fault: Fault, len: Duration, endpoints: usize) {
    let mut p = s.begin(name);
    let dns = &s.world.dns;
    match &fault {
        Fault::All(b) => dns.set_behaviour(*b),
        Fault::Type(t, b) => dns.set_type_behaviour(*t, *b),
        Fault::Name(n, b) => dns.set_name_behaviour(n, *b),
    }
    let watch = clients.idempotent.service().clone();
    let went_stale = until(len.max(Duration::from_secs(3)), || watch.current().is_stale()).await;
    tokio::time::sleep(len.saturating_sub(went_stale.unwrap_or_default())).await;
    let kept = watch.current().len();
    dns.set_behaviour(Behaviour::Normal);
    for t in [RecordType::A, RecordType::AAAA] {
        dns.set_type_behaviour(t, Behaviour::Normal);
    }
    if let Fault::Name(n, _) = &fault {
        dns.set_name_behaviour(n, Behaviour::Normal);
    }
    p.reflect = went_stale;
    p.notes.push(format!(
        "{kept} endpoint(s) held through the fault (last good answer kept, stale after {} ms)",
        ms_or(went_stale, "never")
    ));
    let check = zero_failed();
    let target = format!("0 failed; the {endpoints} endpoint(s) kept, marked stale");
    s.end(p, &target, Box::new(move |t| kept == endpoints && went_stale.is_some() && check(t))).await;
}

/// Scale to zero and back (API mode, greeter-b).
async fn scale_to_zero(s: &mut Suite) {
    let mut p = s.begin("scale to zero, then back to two");
    s.world.unslice("greeter-b", "p4");
    s.world.unslice("greeter-b", "p5");
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.traffic.mark("p4");
    s.traffic.mark("p5");
    s.world.slice("greeter-b", "p4", PodEndpoint::ready("127.0.0.1", "p4"));
    s.world.slice("greeter-b", "p5", PodEndpoint::ready("127.0.0.1", "p5"));
    let t = s.traffic.clone();
    let back = until(Duration::from_secs(10), || t.first_since_mark("p4").or(t.first_since_mark("p5")).is_some()).await;
    p.reflect = back;
    let fail_ms: Vec<f64> = p.tallies.iter().flat_map(|t| lock(&t.fail_ms).clone()).collect();
    let fails = Summary::of(&fail_ms);
    p.notes.push(format!(
        "{} calls failed while there was no endpoint, answered in p50 {:.1} ms, p99 {:.1} ms; calls succeed again {} ms \
         after the endpoints return",
        fails.n,
        fails.p50,
        fails.p99,
        ms_or(back, "never")
    ));
    let fast = fails.n > 0 && fails.p99 < 50.0;
    let clear = p.tallies.iter().all(|t| lock(&t.messages).keys().all(|m| m.contains("no routable endpoint")));
    let recovered = back.is_some();
    s.end(p, "fails fast (p99 < 50 ms) with a clear message; recovers", Box::new(move |_| fast && clear && recovered))
        .await;
}
