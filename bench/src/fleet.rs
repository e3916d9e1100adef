//! Fleet: N consumer processes, each following the same Services, against one API server: what the
//! fleet costs the server (memory, CPU, watches held, lists made), how long one change takes to
//! reach every consumer, and how long all N take to have complete sets when they start at once (a
//! rollout, or every consumer coming back after an API outage). Side by side, the same fleet
//! written the way a user would without this library: a `kube_runtime::watcher` with a reflector
//! store per Service per process.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use discovery::client::{Balanced, ClientOptions};
use discovery::{Discovery, EndpointKey, Metrics, ServiceRef};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cluster::{Cluster, Ep, create, namespace_name, replace, slice};
use crate::report::{Section, f};
use crate::scale::Child;
use crate::util::{Summary, mib, own_cpu_ns, own_rss_kib, proc_cpu_ms, rss_kib};

const PER_SLICE: usize = 100;
const PORT: u16 = 50051;

/// What the section runs.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Fleet sizes (consumer processes).
    pub sizes: Vec<usize>,
    /// Services each consumer follows.
    pub services: usize,
    /// Endpoints per Service.
    pub endpoints: usize,
    /// One-endpoint changes timed to every consumer.
    pub changes: usize,
}

fn service(i: usize) -> String {
    format!("fleet-{i}")
}

fn interface(i: usize) -> String {
    format!("org.dubbo_k8s.bench.Fleet{i}")
}

fn ip(svc: usize, slice: usize, i: usize) -> String {
    format!("10.{}.{}.{}", 50 + svc, slice, i + 1)
}

fn slice_of(
    ns: &str,
    svc: usize,
    s: usize,
    first_ready: bool,
) -> Result<k8s_openapi::api::discovery::v1::EndpointSlice, String> {
    let mut eps: Vec<Ep> = (0..PER_SLICE).map(|i| Ep::ready(ip(svc, s, i))).collect();
    eps[0].ready = first_ready;
    eps[0].serving = first_ready;
    slice(ns, &format!("{}-{s:03}", service(svc)), &service(svc), PORT, &eps)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Discovery,
    Bare,
}

impl Kind {
    fn arg(self) -> &'static str {
        match self {
            Kind::Discovery => "discovery",
            Kind::Bare => "bare",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Kind::Discovery => "dubbo-k8s (hub + balanced client)",
            Kind::Bare => "bare kube_runtime watcher per Service",
        }
    }
}

/// The server's side, read from its `/metrics` and `/proc`.
#[derive(Clone, Copy, Debug, Default)]
struct Server {
    rss: f64,
    cpu_ms: f64,
    watches: f64,
    lists: f64,
}

async fn server(cluster: &Cluster) -> Result<Server, String> {
    let Some(envtest) = cluster.envtest.as_ref() else { return Err("no envtest server".into()) };
    let (api, _) = envtest.pids();
    let text = envtest.metrics().await?;
    let sum = |metric: &str, verb: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(metric) && l.contains(verb) && l.contains("resource=\"endpointslices\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Ok(Server {
        rss: rss_kib(api).unwrap_or(0) as f64 * 1024.0,
        cpu_ms: proc_cpu_ms(api).unwrap_or(0.0),
        watches: sum("apiserver_longrunning_requests{", "verb=\"WATCH\""),
        lists: sum("apiserver_request_total{", "verb=\"LIST\""),
    })
}

/// One fleet's figures.
#[derive(Debug)]
pub struct Run {
    pub cold_start: Duration,
    pub start_cpu_ms: f64,
    pub peak_growth: f64,
    pub settled_growth: f64,
    pub watches: f64,
    pub lists: f64,
    pub propagation: Summary,
    pub consumer_rss: f64,
    pub consumer_cpu_ms: f64,
}

/// A fleet size, which fleet, and its figures.
pub type Point = (usize, Kind, Run);

/// Each fleet gets a fresh kube-apiserver and etcd (envtest) holding the same Services, so that no
/// fleet starts on a server whose memory another fleet has grown (its Go heap keeps what it took).
pub async fn run(placement: &crate::util::Placement, plan: &Plan) -> (Section, Vec<Point>) {
    let mut section = Section::new(
        "Fleet",
        &format!(
            "N consumer processes started at once, each following {} Services of {} endpoints ({} per slice) in \
             one namespace, no traffic; then {} one-endpoint changes, each written once every consumer waits for \
             it. Two fleets per N, one after the other: dubbo-k8s (the hub and a balanced client per Service, \
             API mode, as the consumer binary runs them) and the same written without it (a \
             `kube_runtime::watcher` with a reflector store per Service, default settings: its lists are \
             consistent reads, `ListSemantic::MostRecent`, in pages of 500). Cold start: from \
             spawning all N to the last complete set (every Service at {} endpoints). Server CPU and peak: the \
             kube-apiserver's CPU time and highest resident memory (sampled every 50 ms) from the spawn to the \
             last complete set; settled: its resident memory once all are complete, less before the fleet. \
             Watches and lists: `apiserver_longrunning_requests{{verb=\"WATCH\"}}` and the growth of \
             `apiserver_request_total{{verb=\"LIST\"}}` for endpointslices on its `/metrics`. Propagation: from \
             the write to each consumer seeing the change, over all consumers and changes. Each fleet runs \
             against a kube-apiserver and etcd started for it (envtest) and filled with the same Services, so \
             no fleet inherits the memory another one made the server take.",
            plan.services, plan.endpoints, PER_SLICE, plan.changes, plan.endpoints
        ),
        &[
            "consumers",
            "fleet",
            "cold start s",
            "server CPU s (start)",
            "server peak",
            "server settled",
            "watches",
            "lists",
            "propagation p50 / p99 / max ms",
            "consumer resident (mean)",
            "consumer CPU ms (start)",
        ],
    );
    if let Err(why) = testkit::envtest::assets() {
        section.note(format!(
            "skipped: the fleet section needs kube-apiservers of its own (envtest) to read their process and \
             /metrics: {why}"
        ));
        return (section, Vec::new());
    }
    let mut results: Vec<Point> = Vec::new();
    let mut describe = String::new();
    for &n in &plan.sizes {
        for kind in [Kind::Discovery, Kind::Bare] {
            let outcome = async {
                let cluster = Cluster::envtest(placement).await?;
                describe.clone_from(&cluster.describe);
                let ns = namespace_name("fleet");
                populate(&cluster, &ns, plan).await?;
                let mut flips = vec![true; plan.services * plan.endpoints / PER_SLICE];
                fleet(&cluster, &ns, plan, n, kind, &mut flips).await
            };
            match outcome.await {
                Ok(r) => {
                    let p = &r.propagation;
                    section.row(vec![
                        n.to_string(),
                        kind.describe().into(),
                        f(r.cold_start.as_secs_f64(), 2),
                        f(r.start_cpu_ms / 1e3, 2),
                        format!("+{}", mib(r.peak_growth.max(0.0) as u64)),
                        format!("+{}", mib(r.settled_growth.max(0.0) as u64)),
                        f(r.watches, 0),
                        f(r.lists, 0),
                        format!("{} / {} / {}", f(p.p50, 1), f(p.p99, 1), f(p.max, 1)),
                        mib(r.consumer_rss as u64),
                        f(r.consumer_cpu_ms, 0),
                    ]);
                    results.push((n, kind, r));
                }
                Err(e) => section.problem(format!("{n} consumers, {}: {e}", kind.describe())),
            }
        }
    }
    section.note(format!("API server (one per fleet): {describe}"));
    for &n in &plan.sizes {
        let of = |k: Kind| results.iter().find(|(m, kind, _)| *m == n && *kind == k).map(|(_, _, r)| r);
        if let (Some(d), Some(b)) = (of(Kind::Discovery), of(Kind::Bare)) {
            section.note(format!(
                "{n} consumers, dubbo-k8s against the bare watchers: cold start {:.2}×, server CPU at start {:.2}×, \
                 server memory settled {:.2}×, watches {:.2}×",
                d.cold_start.as_secs_f64() / b.cold_start.as_secs_f64().max(1e-9),
                d.start_cpu_ms / b.start_cpu_ms.max(1e-9),
                d.settled_growth.max(0.0) / b.settled_growth.max(1.0),
                d.watches / b.watches.max(1.0),
            ));
        }
    }
    for (n, kind, r) in &results {
        if *kind == Kind::Discovery {
            section.target(
                &format!("{n} consumers hold one watch each (not one per Service)"),
                r.watches <= *n as f64,
                format!("{} watches", f(r.watches, 0)),
            );
        }
    }
    (section, results)
}

/// The server's settled memory and the p99 propagation against the fleet's size, for both fleets.
pub fn plots(points: &[Point]) -> Vec<(&'static str, crate::plot::Plot)> {
    use crate::plot::{Plot, Series};
    let series = |k: Kind, f: fn(&Run) -> f64| {
        Series::new(
            k.describe(),
            points.iter().filter(|(_, kind, _)| *kind == k).map(|(n, _, r)| (*n as f64, f(r))).collect(),
        )
    };
    let both = |f: fn(&Run) -> f64| vec![series(Kind::Discovery, f), series(Kind::Bare, f)];
    vec![
        (
            "fleet-server-memory.svg",
            Plot {
                title: "Fleet: kube-apiserver memory grown by the fleet (settled)".into(),
                x_label: "consumer processes".into(),
                y_label: "MB".into(),
                log_x: true,
                log_y: false,
                series: both(|r| r.settled_growth.max(0.0) / 1e6),
            },
        ),
        (
            "fleet-propagation.svg",
            Plot {
                title: "Fleet: one change to every consumer, p99".into(),
                x_label: "consumer processes".into(),
                y_label: "ms".into(),
                log_x: true,
                log_y: false,
                series: both(|r| r.propagation.p99),
            },
        ),
    ]
}

async fn populate(cluster: &Cluster, ns: &str, plan: &Plan) -> Result<(), String> {
    cluster.create_namespace(ns).await?;
    let api = cluster.slices(ns);
    let per = plan.endpoints / PER_SLICE;
    let writes = futures::stream::iter((0..plan.services).flat_map(|svc| (0..per).map(move |s| (svc, s))))
        .map(|(svc, s)| {
            let api = api.clone();
            async move { create(&api, &slice_of(ns, svc, s, true)?).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    writes.into_iter().find(Result::is_err).unwrap_or(Ok(String::new())).map(|_| ())
}

async fn fleet(
    cluster: &Cluster,
    ns: &str,
    plan: &Plan,
    n: usize,
    kind: Kind,
    flips: &mut [bool],
) -> Result<Run, String> {
    let before = server(cluster).await?;
    let (services, endpoints) = (plan.services.to_string(), plan.endpoints.to_string());
    let args =
        ["fleet-member", "--kind", kind.arg(), "--namespace", ns, "--services", &services, "--endpoints", &endpoints];
    // The server's memory, sampled while the fleet starts.
    let pid = cluster.envtest.as_ref().map(|e| e.pids().0).unwrap_or(0);
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut peak = 0u64;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid).unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        })
    };
    let started = Instant::now();
    let mut children = Vec::with_capacity(n);
    for _ in 0..n {
        children.push(Child::spawn(cluster, "fleet member", &args)?);
    }
    let ready = futures::future::join_all(children.iter_mut().map(Child::json)).await;
    let cold_start = started.elapsed();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.unwrap_or(0) as f64 * 1024.0;
    let ready: Vec<Value> = ready.into_iter().collect::<Result<_, _>>()?;
    let at_start = server(cluster).await?;
    // Settled: give the server a moment to finish what the start left behind.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = server(cluster).await?;
    let propagation = changes(cluster, ns, plan, &mut children, flips).await?;
    for c in &mut children {
        let _ = c.say("done\n").await;
    }
    for mut c in children {
        let _ = tokio::time::timeout(Duration::from_secs(10), c.process.wait()).await;
    }
    // The next fleet starts against a server whose watches of this one are gone.
    for _ in 0..100 {
        if server(cluster).await.is_ok_and(|s| s.watches <= before.watches) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mean =
        |key: &str| ready.iter().map(|r| r[key].as_f64().unwrap_or(0.0)).sum::<f64>() / ready.len().max(1) as f64;
    Ok(Run {
        cold_start,
        start_cpu_ms: at_start.cpu_ms - before.cpu_ms,
        peak_growth: peak - before.rss,
        settled_growth: settled.rss - before.rss,
        watches: settled.watches - before.watches,
        lists: at_start.lists - before.lists,
        propagation,
        consumer_rss: mean("rss_kib") * 1024.0,
        consumer_cpu_ms: mean("cpu_ns") / 1e6,
    })
}

/// Each change: every consumer is told what to wait for and says it waits, the change is written,
/// and each consumer answers with the wall-clock time it saw it.
async fn changes(
    cluster: &Cluster,
    ns: &str,
    plan: &Plan,
    children: &mut [Child],
    flips: &mut [bool],
) -> Result<Summary, String> {
    let api = cluster.slices(ns);
    let per = plan.endpoints / PER_SLICE;
    let mut latencies = Vec::new();
    for c in 0..plan.changes {
        let svc = c % plan.services;
        let s = (c / plan.services) % per;
        let flip = &mut flips[svc * per + s];
        *flip = !*flip;
        let msg = format!("arm {svc} {} {}\n", ip(svc, s, 0), u8::from(*flip));
        for r in futures::future::join_all(children.iter_mut().map(|ch| {
            let msg = msg.clone();
            async move {
                ch.say(&msg).await?;
                ch.expect_ok().await
            }
        }))
        .await
        {
            r?;
        }
        let written = unix_ns();
        replace(&api, &slice_of(ns, svc, s, *flip)?).await?;
        for seen in futures::future::join_all(children.iter_mut().map(Child::json)).await {
            let seen = seen?["seen_ns"].as_f64().ok_or("a consumer answered without seen_ns")?;
            latencies.push((seen - written) / 1e6);
        }
    }
    Ok(Summary::of(&latencies))
}

fn unix_ns() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as f64).unwrap_or(0.0)
}

/// `dubbo-k8s-bench fleet-member`: one consumer of the fleet. Prints one JSON line once every
/// Service's set is complete; then, for each `arm <service> <ip> <0|1>`, answers `ok`, waits until
/// its view shows that readiness and prints the wall-clock time it saw it; ends on `done`.
pub async fn member(
    api: Option<String>,
    kind: &str,
    namespace: String,
    services: usize,
    endpoints: usize,
) -> Result<(), String> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    match kind {
        "discovery" => {
            let (_hub, _clients, mut rx) = follow(api, namespace, services, endpoints).await?;
            ready_line();
            while let Some((svc, ip, want)) = next_arm(&mut lines).await? {
                let key = EndpointKey::new(ip.parse().map_err(|e| format!("{ip}: {e}"))?, PORT);
                let rx = rx.get_mut(svc).ok_or("no such Service")?;
                wait(rx.wait_for(|s| s.get(&key).is_some_and(|e| e.conditions.ready == want))).await?;
                seen_line();
            }
        }
        "bare" => {
            let stores = bare(api, namespace, services, endpoints).await?;
            ready_line();
            while let Some((svc, ip, want)) = next_arm(&mut lines).await? {
                let (reader, generation) = stores.get(svc).ok_or("no such Service")?;
                let mut generation = generation.clone();
                let shows = || {
                    reader.state().iter().any(|s| {
                        s.endpoints.iter().any(|e| {
                            e.addresses.first() == Some(&ip)
                                && e.conditions.as_ref().and_then(|c| c.ready) == Some(want)
                        })
                    })
                };
                while !shows() {
                    wait(generation.changed()).await?;
                }
                seen_line();
            }
        }
        other => return Err(format!("unknown fleet kind {other:?}")),
    }
    Ok(())
}

async fn wait<T, E: std::fmt::Display>(fut: impl Future<Output = Result<T, E>>) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_secs(60), fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the change did not arrive within 60 s".into()),
    }
}

fn ready_line() {
    println!(
        "{}",
        json!({"rss_kib": own_rss_kib().unwrap_or(0), "cpu_ns": own_cpu_ns().unwrap_or(0), "pid": std::process::id()})
    );
}

fn seen_line() {
    println!("{}", json!({"seen_ns": unix_ns()}));
}

async fn next_arm(
    lines: &mut tokio::io::Lines<BufReader<tokio::io::Stdin>>,
) -> Result<Option<(usize, String, bool)>, String> {
    let Ok(Some(line)) = lines.next_line().await else { return Ok(None) };
    let parts: Vec<&str> = line.split_whitespace().collect();
    match parts.as_slice() {
        ["arm", svc, ip, ready] => {
            let svc = svc.parse().map_err(|e| format!("{svc}: {e}"))?;
            println!("ok");
            Ok(Some((svc, (*ip).to_owned(), *ready == "1")))
        }
        ["done"] => Ok(None),
        _ => Err(format!("unexpected line {line:?}")),
    }
}

type Followed = (Discovery, Vec<Balanced>, Vec<tokio::sync::watch::Receiver<discovery::EndpointSet>>);

/// The hub following every Service, a balanced client on each, all sets complete.
async fn follow(api: Option<String>, namespace: String, services: usize, endpoints: usize) -> Result<Followed, String> {
    let mappings: Vec<String> = (0..services).map(|i| format!("{}={}:tri", interface(i), service(i))).collect();
    let cfg = crate::scale::child_config(api, namespace, &mappings.join(","))?;
    let hub = Discovery::new(&cfg, Metrics::default()).await.map_err(|e| format!("discovery: {e}"))?;
    // As an application does at start: every reference at once.
    let watches = futures::future::join_all((0..services).map(|i| hub.service(ServiceRef::new(interface(i))))).await;
    let mut clients = Vec::new();
    let mut views = Vec::new();
    for w in watches {
        let w = w.map_err(|e| format!("discovery: {e}"))?;
        let mut rx = w.watch();
        wait(rx.wait_for(|s| s.len() == endpoints)).await?;
        let opts = ClientOptions::default().with_client_id("fleet");
        clients.push(Balanced::from_watch(w, None, opts).map_err(|e| e.to_string())?);
        views.push(rx);
    }
    Ok((hub, clients, views))
}

type Store = (
    kube::runtime::reflector::Store<k8s_openapi::api::discovery::v1::EndpointSlice>,
    tokio::sync::watch::Receiver<u64>,
);

/// A watcher and reflector store per Service, the way the kube-rs documentation shows it; all
/// complete.
async fn bare(api: Option<String>, namespace: String, services: usize, endpoints: usize) -> Result<Vec<Store>, String> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let config = match api {
        Some(url) => kube::Config::new(url.parse().map_err(|e| format!("{url}: {e}"))?),
        None => kube::Config::infer().await.map_err(|e| e.to_string())?,
    };
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    let slices: kube::Api<EndpointSlice> = kube::Api::namespaced(client, &namespace);
    let mut stores = Vec::new();
    for i in 0..services {
        let (reader, writer) = reflector::store::<EndpointSlice>();
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        let cfg = watcher::Config::default().labels(&format!("kubernetes.io/service-name={}", service(i)));
        let stream = watcher(slices.clone(), cfg).default_backoff().reflect(writer).applied_objects();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while stream.next().await.is_some() {
                tx.send_modify(|g| *g += 1);
            }
        });
        stores.push((reader, rx));
    }
    for (reader, _) in &stores {
        wait(async { reader.wait_until_ready().await.map_err(|e| e.to_string()) }).await?;
        let count = || reader.state().iter().map(|s| s.endpoints.len()).sum::<usize>();
        let mut tries = 0;
        while count() < endpoints && tries < 600 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            tries += 1;
        }
        if count() < endpoints {
            return Err(format!("a store holds {} of {endpoints} endpoints", count()));
        }
    }
    Ok(stores)
}
