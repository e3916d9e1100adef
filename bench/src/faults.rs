//! The fault suite: steady traffic from the library's balanced client to real provider processes,
//! and, in sequence, the faults real clusters produce. Per phase: calls issued, succeeded, failed,
//! retried, and how long the client took to reflect the change; each phase has a target and the
//! suite fails when one is missed.
//!
//! The Kubernetes API server and DNS server are the in-process test servers (they speak the real
//! protocols on loopback and can be stopped, compacted and made to misbehave); the providers are the
//! provider binary; the client is `Balanced` under the tonic-generated client, as the consumer uses it.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use discovery::client::{Balanced, ClientOptions};
use discovery::config::BackoffConfig;
use discovery::{Discovery, DiscoveryConfig, Freshness, Metrics, Mode, ServiceRef, Source};
use provider::pb::HelloRequest;
use provider::pb::greeter_service_client::GreeterServiceClient;
use testkit::{
    Behaviour, FakeApiServer, FakeDns, Misbehaviour, PodEndpoint, RecordType, endpoint_slice, service_object,
};

use crate::report::{Section, f};
use crate::util::{Helper, Summary, start_provider};

const NS: &str = "faults";
const DOMAIN: &str = "cluster.local";
const TTL: u32 = 1;

type Client = GreeterServiceClient<Balanced>;

/// How long each timed fault lasts.
#[derive(Clone, Debug)]
pub struct Plan {
    pub rate: f64,
    pub api_outage: Duration,
    pub dns_fault: Duration,
    pub misbehaviour: Duration,
}

// ---------------------------------------------------------------------------------------------
// Traffic

#[derive(Debug, Default)]
struct Tally {
    issued: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicU64,
    fail_ms: Mutex<Vec<f64>>,
    messages: Mutex<BTreeMap<String, u64>>,
}

#[derive(Debug, Default)]
struct Seen {
    last: Option<Instant>,
    first_since_mark: Option<Instant>,
    count: u64,
}

struct Traffic {
    client: Mutex<(Client, Balanced)>,
    tally: Mutex<Arc<Tally>>,
    served: Mutex<HashMap<String, Seen>>,
    stop: AtomicBool,
}

impl Traffic {
    fn start(client: Client, balanced: Balanced, rate: f64) -> Arc<Traffic> {
        let t = Arc::new(Traffic {
            client: Mutex::new((client, balanced)),
            tally: Mutex::new(Arc::default()),
            served: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
        });
        let me = t.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !me.stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let tally = lock(&me.tally).clone();
                let mut client = lock(&me.client).0.clone();
                let me = me.clone();
                tally.issued.fetch_add(1, Ordering::Relaxed);
                tally.in_flight.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let started = Instant::now();
                    let result = client
                        .say_hello(tonic::Request::new(HelloRequest { name: "faults".into(), ..Default::default() }))
                        .await;
                    let now = Instant::now();
                    match result {
                        Ok(r) => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                            let name = r.into_inner().served_by.map(|i| i.name).unwrap_or_default();
                            let mut served = lock(&me.served);
                            let seen = served.entry(name).or_default();
                            seen.last = Some(now);
                            seen.count += 1;
                            seen.first_since_mark.get_or_insert(now);
                        }
                        Err(status) => {
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                            lock(&tally.fail_ms).push((now - started).as_secs_f64() * 1e3);
                            let msg: String =
                                format!("{:?}: {}", status.code(), status.message()).chars().take(160).collect();
                            *lock(&tally.messages).entry(msg).or_default() += 1;
                        }
                    }
                    tally.in_flight.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        t
    }

    fn balanced(&self) -> Balanced {
        lock(&self.client).1.clone()
    }

    fn switch(&self, client: Client, balanced: Balanced) {
        *lock(&self.client) = (client, balanced);
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
// The world: API server, DNS server, provider processes

struct Prov {
    port: u16,
    helper: Option<Helper>,
}

struct World {
    api: FakeApiServer,
    dns: FakeDns,
    bin: PathBuf,
    providers: BTreeMap<String, Prov>,
}

impl World {
    async fn provider(&mut self, name: &str) -> Result<(), String> {
        let env = [("PROVIDER_DRAIN", "1s"), ("PROVIDER_SHUTDOWN_TIMEOUT", "3s")];
        let (helper, port) = start_provider(Command::new(&self.bin), name, &env).await?;
        self.providers.insert(name.to_owned(), Prov { port, helper: Some(helper) });
        Ok(())
    }

    fn port(&self, name: &str) -> u16 {
        self.providers.get(name).map_or(0, |p| p.port)
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

    /// DNS as CoreDNS would serve `service` with `names` ready: SRV per pod, A records.
    fn dns_serves(&self, service: &str, names: &[&str]) {
        let fqdn = format!("{service}.{NS}.svc.{DOMAIN}");
        let lo: IpAddr = [127, 0, 0, 1].into();
        let targets: Vec<(String, u16)> = names.iter().map(|n| (format!("{n}.{fqdn}"), self.port(n))).collect();
        for (t, _) in &targets {
            self.dns.set_addresses(t, &[lo], TTL);
        }
        let srv: Vec<(u16, u16, u16, &str)> = targets.iter().map(|(t, p)| (0, 10, *p, t.as_str())).collect();
        self.dns.set_srv_records(&format!("_tri._tcp.{fqdn}"), &srv, TTL);
        self.dns.set_addresses(&fqdn, &[lo], TTL);
    }

    fn sigterm(&self, name: &str) -> Result<(), String> {
        let pid =
            self.providers.get(name).and_then(|p| p.helper.as_ref()).map(Helper::pid).ok_or("no such provider")?;
        let ok = Command::new("kill").args(["-TERM", &pid.to_string()]).status().map_err(|e| e.to_string())?.success();
        if ok { Ok(()) } else { Err(format!("kill -TERM {pid} failed")) }
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
}

fn annotated(service: &str, yes: bool) -> serde_json::Value {
    let ann: &[(&str, &str)] = if yes {
        &[("dubbo.apache.org/interface", provider::INTERFACE), ("dubbo.apache.org/version", "1.0.0")]
    } else {
        &[]
    };
    service_object(service, ann, None, ("tri", 50051))
}

fn options() -> ClientOptions {
    ClientOptions::default().with_client_id("faults")
}

// ---------------------------------------------------------------------------------------------
// Phases

struct Phase {
    name: String,
    tally: Arc<Tally>,
    retries_at_start: u64,
    reflect: Option<Duration>,
    notes: Vec<String>,
}

struct Suite {
    traffic: Arc<Traffic>,
    rows: Vec<(Phase, u64, String, bool)>,
}

impl Suite {
    fn begin(&self, name: &str) -> Phase {
        let tally: Arc<Tally> = Arc::default();
        *lock(&self.traffic.tally) = tally.clone();
        eprintln!("faults: {name}");
        Phase {
            name: name.to_owned(),
            tally,
            retries_at_start: self.traffic.balanced().stats().retries,
            reflect: None,
            notes: Vec::new(),
        }
    }

    /// Ends `p` when its calls have all finished; `target` says what passing means, `passed` whether
    /// it did (given the counts).
    async fn end(&mut self, p: Phase, target: &str, passed: impl FnOnce(&Tally) -> bool) {
        // The next phase's calls go to a new tally; wait for this one's to end (deadline 2 s).
        let next = self.begin_quiet();
        let until = Instant::now() + Duration::from_secs(5);
        while p.tally.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let retries = self.traffic.balanced().stats().retries.saturating_sub(p.retries_at_start);
        let ok = passed(&p.tally);
        drop(next);
        self.rows.push((p, retries, target.to_owned(), ok));
    }

    fn begin_quiet(&self) -> Arc<Tally> {
        let tally: Arc<Tally> = Arc::default();
        *lock(&self.traffic.tally) = tally.clone();
        tally
    }
}

fn zero_failed(t: &Tally) -> bool {
    t.failed.load(Ordering::Relaxed) == 0 && t.ok.load(Ordering::Relaxed) > 0
}

/// Whether the client's pool holds `port` on loopback as a member it may pick.
fn member(b: &Balanced, port: u16) -> bool {
    b.in_flight().contains_key(&discovery::EndpointKey::new([127, 0, 0, 1].into(), port))
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

pub async fn run(bin: &Path, plan: &Plan) -> Section {
    let mut section = Section::new(
        "Faults under load",
        &format!(
            "Open-loop traffic at {} calls/s (deadline 2 s, up to 2 retries on another endpoint) from the balanced \
             client to provider processes on loopback, discovery in API mode with DNS failover (`DISCOVERY_MAX_STALE` \
             5 s), then in DNS mode for the DNS faults. Calls are counted in the phase that issued them. Reflected: \
             from the change to the first (or last) call that shows the client followed it.",
            plan.rate
        ),
        &["phase", "issued", "ok", "failed", "retried", "reflected in", "target", "result"],
    );
    match suite(bin, plan).await {
        Ok(rows) => {
            for (p, retries, target, passed) in rows {
                let t = &p.tally;
                section.row(vec![
                    p.name.clone(),
                    t.issued.load(Ordering::Relaxed).to_string(),
                    t.ok.load(Ordering::Relaxed).to_string(),
                    t.failed.load(Ordering::Relaxed).to_string(),
                    retries.to_string(),
                    p.reflect.map_or_else(|| "—".into(), |d| format!("{} ms", f(d.as_secs_f64() * 1e3, 0))),
                    target.clone(),
                    if passed { "pass".into() } else { "FAIL".into() },
                ]);
                for n in &p.notes {
                    section.note(format!("{}: {n}", p.name));
                }
                for (msg, n) in lock(&t.messages).iter() {
                    section.note(format!("{}: {n} × {msg}", p.name));
                }
                if !passed {
                    section.problem(format!("{}: missed its target ({target})", p.name));
                }
            }
        }
        Err(e) => section.problem(e),
    }
    section
}

async fn suite(bin: &Path, plan: &Plan) -> Result<Vec<(Phase, u64, String, bool)>, String> {
    let api = FakeApiServer::start().await.map_err(|e| format!("API server: {e}"))?;
    let dns = FakeDns::start(DOMAIN).await.map_err(|e| format!("DNS server: {e}"))?;
    let mut w = World { api, dns, bin: bin.to_owned(), providers: BTreeMap::new() };
    for p in ["p1", "p2", "p3"] {
        w.provider(p).await?;
        w.slice("greeter-a", p, PodEndpoint::ready("127.0.0.1", p));
    }
    w.api.apply_service(NS, annotated("greeter-a", true));
    w.api.apply_service(NS, annotated("greeter-b", false));
    w.dns_serves("greeter-a", &["p1", "p2", "p3"]);

    let mut cfg = DiscoveryConfig { mode: Mode::Api, namespace: NS.into(), ..DiscoveryConfig::default() };
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
    cfg.backoff = BackoffConfig { min: Duration::from_millis(100), max: Duration::from_secs(1) };
    let service = ServiceRef::new(provider::INTERFACE).with_version("1.0.0");
    let hub = Discovery::new(&cfg, Metrics::default()).await.map_err(|e| format!("discovery: {e}"))?;
    let balanced = Balanced::new(&hub, service.clone(), options()).await.map_err(|e| format!("client: {e}"))?;
    if !balanced.ready(Duration::from_secs(10)).await {
        return Err("the client got no endpoint set".into());
    }
    let watch = balanced.service().clone();
    let traffic = Traffic::start(GreeterServiceClient::new(balanced.clone()), balanced.clone(), plan.rate);
    let mut s = Suite { traffic: traffic.clone(), rows: Vec::new() };

    // 1. Baseline.
    let p = s.begin("baseline, 3 providers");
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.end(p, "0 failed", zero_failed).await;

    // 2. Drain: the pod is deleted; the controller marks it terminating as the kubelet sends SIGTERM.
    let mut p = s.begin("SIGTERM p1 (drain)");
    w.slice("greeter-a", "p1", PodEndpoint::ready("127.0.0.1", "p1").terminating());
    let (b, port) = (balanced.clone(), w.port("p1"));
    p.reflect = until(Duration::from_secs(5), || !member(&b, port)).await;
    w.sigterm("p1")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut draining = PodEndpoint::ready("127.0.0.1", "p1").terminating();
    draining.serving = Some(false);
    w.slice("greeter-a", "p1", draining);
    let gone = w.exited("p1", Duration::from_secs(10)).await;
    w.unslice("greeter-a", "p1");
    w.dns_serves("greeter-a", &["p2", "p3"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    p.notes.push(format!("p1 {} after its drain", if gone { "exited" } else { "did NOT exit" }));
    s.end(p, "0 failed", zero_failed).await;

    // 3. kill -9: the endpoint stays listed until the kubelet and controller notice (1 s here).
    let mut p = s.begin("kill -9 p2");
    let key_p2 = discovery::EndpointKey::new([127, 0, 0, 1].into(), w.port("p2"));
    let in_flight = balanced.in_flight().get(&key_p2).copied().unwrap_or(0) as u64;
    w.kill9("p2");
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.slice("greeter-a", "p2", PodEndpoint::ready("127.0.0.1", "p2").not_ready());
    let (b, port) = (balanced.clone(), w.port("p2"));
    p.reflect = until(Duration::from_secs(5), || !member(&b, port)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.unslice("greeter-a", "p2");
    w.dns_serves("greeter-a", &["p3"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    p.notes.push(format!(
        "{in_flight} calls were in flight to p2 when it was killed; calls that picked it before its endpoint went \
         not-ready 1 s later were retried on another (reflected: not-ready to out of the pool)"
    ));
    let bound = in_flight;
    s.end(p, &format!("failed ≤ {bound} (in flight at the kill)"), move |t| {
        t.failed.load(Ordering::Relaxed) <= bound
    })
    .await;

    // 4. Scale up: two providers added.
    let mut p = s.begin("add p4, p5");
    w.provider("p4").await?;
    w.provider("p5").await?;
    let t0 = Instant::now();
    w.slice("greeter-a", "p4", PodEndpoint::ready("127.0.0.1", "p4"));
    w.slice("greeter-a", "p5", PodEndpoint::ready("127.0.0.1", "p5"));
    w.dns_serves("greeter-a", &["p3", "p4", "p5"]);
    let t = traffic.clone();
    let seen = until(Duration::from_secs(10), || t.last("p4").is_some() && t.last("p5").is_some()).await;
    p.reflect = seen.map(|_| {
        ["p4", "p5"]
            .iter()
            .filter_map(|n| traffic.first_since_mark(n))
            .max()
            .map_or(Duration::ZERO, |f| f.saturating_duration_since(t0))
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let both = seen.is_some();
    s.end(p, "0 failed, both take calls", move |t| both && zero_failed(t)).await;

    // 5. Not ready, then ready again; terminating (still serving), then ready again.
    let mut p = s.begin("p3 not ready, then back");
    w.slice("greeter-a", "p3", PodEndpoint::ready("127.0.0.1", "p3").not_ready());
    let (b, port3) = (balanced.clone(), w.port("p3"));
    let stopped = until(Duration::from_secs(5), || !member(&b, port3)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    traffic.mark("p3");
    let t1 = Instant::now();
    w.slice("greeter-a", "p3", PodEndpoint::ready("127.0.0.1", "p3"));
    let t = traffic.clone();
    let back = until(Duration::from_secs(10), || t.first_since_mark("p3").is_some()).await;
    p.reflect = stopped;
    p.notes.push(format!(
        "p3 out of the pool {} ms after not-ready; its calls resumed {} ms after ready",
        stopped.map_or("?".into(), |d| d.as_millis().to_string()),
        back.map_or("never".into(), |_| traffic.first_since_mark("p3").map_or(0, |f| (f - t1).as_millis()).to_string())
    ));
    let resumed = back.is_some();
    s.end(p, "0 failed, resumes", move |t| resumed && zero_failed(t)).await;

    let mut p = s.begin("p3 terminating (serving), then back");
    w.slice("greeter-a", "p3", PodEndpoint::ready("127.0.0.1", "p3").terminating());
    let b = balanced.clone();
    p.reflect = until(Duration::from_secs(5), || !member(&b, port3)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    traffic.mark("p3");
    w.slice("greeter-a", "p3", PodEndpoint::ready("127.0.0.1", "p3"));
    let t = traffic.clone();
    let back = until(Duration::from_secs(10), || t.first_since_mark("p3").is_some()).await;
    let resumed = back.is_some();
    s.end(p, "0 failed, resumes", move |t| resumed && zero_failed(t)).await;

    // 6. The API server stopped, then back.
    let mut p = s.begin(&format!("API server down {} s", plan.api_outage.as_secs()));
    let t0 = Instant::now();
    w.api.stop();
    let wt = watch.clone();
    let stale = until(plan.api_outage, || wt.current().freshness != Freshness::Live).await;
    let wt = watch.clone();
    let dns_at = until(plan.api_outage, || wt.current().source == Source::Dns).await.map(|_| t0.elapsed());
    tokio::time::sleep(plan.api_outage.saturating_sub(t0.elapsed())).await;
    w.api.restart().await.map_err(|e| format!("API server restart: {e}"))?;
    let wt = watch.clone();
    let back = until(Duration::from_secs(30), || {
        let c = wt.current();
        c.source == Source::Api && c.freshness == Freshness::Live
    })
    .await;
    p.reflect = back;
    p.notes.push(format!(
        "stale after {} ms, DNS from {} s, API again {} ms after the restart",
        stale.map_or("never".into(), |d| d.as_millis().to_string()),
        dns_at.map_or("never".into(), |d| f(d.as_secs_f64(), 1)),
        back.map_or("never".into(), |d| d.as_millis().to_string())
    ));
    let ok = stale.is_some() && dns_at.is_some() && back.is_some();
    s.end(p, "0 failed; DNS then API again", move |t| ok && zero_failed(t)).await;

    // 7. Watches accepted then reset; a change made meanwhile must still arrive (through re-lists).
    let mut p = s.begin("watches accepted then reset");
    w.api.set_watch_misbehaviour(Misbehaviour::AcceptThenReset);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    w.slice("greeter-a", "p3", PodEndpoint::ready("127.0.0.1", "p3").not_ready());
    let key_p3 = discovery::EndpointKey::new([127, 0, 0, 1].into(), w.port("p3"));
    let wt = watch.clone();
    p.reflect = until(Duration::from_secs(15), || wt.current().get(&key_p3).is_some_and(|e| !e.conditions.ready)).await;
    tokio::time::sleep(plan.misbehaviour.saturating_sub(t0.elapsed())).await;
    w.api.set_watch_misbehaviour(Misbehaviour::None);
    let seen = p.reflect.is_some();
    s.end(p, "0 failed; the change arrives", move |t| seen && zero_failed(t)).await;

    // 8. Watches accepted then silent (half-open): the idle timeout restarts them.
    let mut p = s.begin("watches silent (half-open)");
    let watches = w.api.watches();
    w.api.set_watch_misbehaviour(Misbehaviour::Silent);
    // Write only once the client sits on a silent watch: the change must come through its recovery.
    let api = &w.api;
    if until(Duration::from_secs(10), || api.watches() > watches).await.is_none() {
        p.notes.push("the client opened no new watch".into());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    w.slice("greeter-a", "p3", PodEndpoint::ready("127.0.0.1", "p3"));
    let wt = watch.clone();
    p.reflect = until(Duration::from_secs(15), || wt.current().get(&key_p3).is_some_and(|e| e.conditions.ready)).await;
    p.notes.push("idle timeout 3 s: the list that follows a restarted watch brings the change".into());
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.api.set_watch_misbehaviour(Misbehaviour::None);
    let seen = p.reflect.is_some();
    s.end(p, "0 failed; the change arrives", move |t| seen && zero_failed(t)).await;

    // 9. Compaction while disconnected: the watch resumes with a compacted resourceVersion (410).
    let mut p = s.begin("compaction while disconnected (410)");
    w.api.stop();
    w.slice("greeter-a", "p3", PodEndpoint::ready("127.0.0.1", "p3").not_ready());
    w.api.compact();
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.api.restart().await.map_err(|e| format!("API server restart: {e}"))?;
    let wt = watch.clone();
    p.reflect = until(Duration::from_secs(15), || wt.current().get(&key_p3).is_some_and(|e| !e.conditions.ready)).await;
    w.slice("greeter-a", "p3", PodEndpoint::ready("127.0.0.1", "p3"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = p.reflect.is_some();
    s.end(p, "0 failed; re-listed", move |t| seen && zero_failed(t)).await;

    // 10. The annotations move to another Service (blue/green): p4 and p5 only.
    let mut p = s.begin("annotations moved to greeter-b");
    w.slice("greeter-b", "p4", PodEndpoint::ready("127.0.0.1", "p4"));
    w.slice("greeter-b", "p5", PodEndpoint::ready("127.0.0.1", "p5"));
    w.dns_serves("greeter-b", &["p4", "p5"]);
    let t0 = Instant::now();
    w.api.apply_service(NS, annotated("greeter-b", true));
    w.api.apply_service(NS, annotated("greeter-a", false));
    let (b, wt) = (balanced.clone(), watch.clone());
    let moved = until(Duration::from_secs(15), || wt.target().service == "greeter-b" && !member(&b, port3)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    p.reflect = moved;
    let late = traffic.last("p3").is_some_and(|l| l > t0 + moved.unwrap_or_default() + Duration::from_millis(100));
    p.notes.push(format!(
        "target greeter-b and p3 (greeter-a only) out of the pool {} ms after the annotations moved{}",
        moved.map_or("never".into(), |d| d.as_millis().to_string()),
        if late { "; p3 still served calls after that" } else { "" }
    ));
    let ok = moved.is_some() && !late;
    s.end(p, "0 failed; re-targeted", move |t| ok && zero_failed(t)).await;

    // 11. DNS faults, with the client in DNS mode on greeter-b.
    let mut dcfg = cfg.clone();
    dcfg.mode = Mode::Dns;
    dcfg.mappings = discovery::mapping::parse_mappings(&format!("{}:1.0.0=greeter-b:tri", provider::INTERFACE))
        .map_err(|e| e.to_string())?;
    let dns_hub = Discovery::new(&dcfg, Metrics::default()).await.map_err(|e| format!("DNS discovery: {e}"))?;
    let dns_client = Balanced::new(&dns_hub, service.clone(), options()).await.map_err(|e| format!("client: {e}"))?;
    if !dns_client.ready(Duration::from_secs(10)).await {
        return Err("the DNS-mode client got no endpoint set".into());
    }
    let dns_watch = dns_client.service().clone();
    traffic.switch(GreeterServiceClient::new(dns_client.clone()), dns_client.clone());
    for (name, fault) in [
        ("DNS timing out", Some((None, Behaviour::Silent))),
        ("DNS SERVFAIL", Some((None, Behaviour::ServFail))),
        ("DNS AAAA failing, A answering", Some((Some(RecordType::AAAA), Behaviour::ServFail))),
    ] {
        let mut p = s.begin(name);
        match fault {
            Some((None, b)) => w.dns.set_behaviour(b),
            Some((Some(t), b)) => w.dns.set_type_behaviour(t, b),
            None => {}
        }
        tokio::time::sleep(plan.dns_fault).await;
        let kept = dns_watch.current().len();
        w.dns.set_behaviour(Behaviour::Normal);
        w.dns.set_type_behaviour(RecordType::AAAA, Behaviour::Normal);
        p.notes.push(format!("{kept} endpoints held through the fault (last good answer kept)"));
        s.end(p, "0 failed", move |t| kept == 2 && zero_failed(t)).await;
    }
    traffic.switch(GreeterServiceClient::new(balanced.clone()), balanced.clone());
    drop(dns_client);

    // 12. Scale to zero and back (API mode, greeter-b).
    let mut p = s.begin("scale to zero, then back to two");
    w.unslice("greeter-b", "p4");
    w.unslice("greeter-b", "p5");
    tokio::time::sleep(Duration::from_secs(2)).await;
    traffic.mark("p4");
    traffic.mark("p5");
    w.slice("greeter-b", "p4", PodEndpoint::ready("127.0.0.1", "p4"));
    w.slice("greeter-b", "p5", PodEndpoint::ready("127.0.0.1", "p5"));
    let t = traffic.clone();
    let back = until(Duration::from_secs(10), || t.first_since_mark("p4").or(t.first_since_mark("p5")).is_some()).await;
    p.reflect = back;
    let fails = Summary::of(&lock(&p.tally.fail_ms));
    p.notes.push(format!(
        "{} calls failed while there was no endpoint, answered in p50 {:.1} ms, p99 {:.1} ms; calls succeed again {} ms \
         after the endpoints return",
        fails.n,
        fails.p50,
        fails.p99,
        back.map_or("never".into(), |d| d.as_millis().to_string())
    ));
    let fast = fails.n > 0 && fails.p99 < 50.0;
    let clear = lock(&p.tally.messages).keys().all(|m| m.contains("no routable endpoint"));
    let recovered = back.is_some();
    s.end(p, "fails fast (p99 < 50 ms) with a clear message; recovers", move |_| fast && clear && recovered).await;

    let p = s.begin("after scale-up");
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.end(p, "0 failed", zero_failed).await;

    traffic.stop.store(true, Ordering::Relaxed);
    Ok(s.rows)
}
