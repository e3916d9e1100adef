//! Call path: calls per second and latency, closed loop at 1 and 64 calls in flight, for (a) a plain
//! tonic client to one provider, (b) the library's balanced client over three providers, (c) the
//! dubbo crate's client through discovery's `kubernetes://` registry. The providers are the real
//! provider binary; with pinning they share one core in every case, so calls/s compare per provider
//! core. Rounds alternate the clients so machine noise hits them alike.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use consumer::config::ClientKind;
use consumer::{ConsumerConfig, Stats};
use discovery::client::{Balanced, ClientOptions};
use discovery::{Discovery, Metrics, ServiceRef};
use provider::pb::HelloRequest;
use provider::pb::greeter_service_client::GreeterServiceClient;

use crate::cluster::{Cluster, Ep, create, namespace_name, slice};
use crate::propagation::discovery_config;
use crate::report::{Section, f};
use crate::util::{Placement, Summary, cpu_busy, cpu_jiffies, median};

/// How long and how often.
#[derive(Clone, Debug)]
pub struct Plan {
    pub rounds: usize,
    pub warmup: Duration,
    pub measure: Duration,
    pub in_flight: Vec<usize>,
}

#[derive(Debug, Default)]
pub(crate) struct Load {
    calls_per_sec: f64,
    latencies_ms: Vec<f64>,
    failed: u64,
    /// Busy share of each CPU over the measuring window.
    cpu_busy: Vec<f64>,
}

/// Closed loop: `in_flight` workers call back to back; calls that end inside the measuring window
/// count.
async fn load<F, Fut>(in_flight: usize, warmup: Duration, measure: Duration, call: F) -> Load
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let start = Instant::now();
    let (from, until) = (start + warmup, start + warmup + measure);
    let failed = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        let before = cpu_jiffies();
        tokio::time::sleep_until(until.into()).await;
        cpu_busy(&before, &cpu_jiffies())
    });
    let workers: Vec<_> = (0..in_flight)
        .map(|_| {
            let (call, failed) = (call.clone(), failed.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let t = Instant::now();
                    let ok = call().await;
                    let now = Instant::now();
                    if now >= from && now < until {
                        lat.push((now - t).as_secs_f64() * 1e3);
                        if !ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if now >= until {
                        return lat;
                    }
                }
            })
        })
        .collect();
    let mut latencies_ms = Vec::new();
    for w in workers {
        if let Ok(l) = w.await {
            latencies_ms.extend(l);
        }
    }
    Load {
        calls_per_sec: latencies_ms.len() as f64 / measure.as_secs_f64(),
        latencies_ms,
        failed: failed.load(Ordering::Relaxed),
        cpu_busy: sampler.await.unwrap_or_default(),
    }
}

fn request() -> tonic::Request<HelloRequest> {
    tonic::Request::new(HelloRequest { name: "bench".into(), ..Default::default() })
}

/// One benchmark call: `true` when it succeeded.
pub(crate) type Call = Arc<dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// `SayHello` through a tonic-generated client over any channel (plain, balanced, tonic's own).
pub(crate) fn tonic_call<T>(client: GreeterServiceClient<T>) -> Call
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + Sync + 'static,
    T::Future: Send,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    Arc::new(move || {
        let mut c = client.clone();
        Box::pin(async move { c.say_hello(request()).await.is_ok() })
    })
}

pub async fn run(cluster: &Cluster, provider_bin: &Path, placement: &Placement, plan: &Plan) -> Section {
    let mut section = Section::new(
        "Call path",
        "Closed loop, unary `SayHello` over real Triple (gRPC over HTTP/2) on loopback to the provider binary. (a) \
         a plain tonic client on one connection to one provider; (b1) discovery's balanced client with the same \
         single provider as its whole Service (the client's own cost); (b) discovery's balanced client (`Balanced` under \
         the tonic-generated client) over three providers found through the API server; (c) the dubbo crate's \
         Triple client through discovery's `kubernetes://` registry over the same three. calls/s: median over \
         the rounds; latency percentiles over every call of every round.",
        &["client", "in flight", "calls/s", "p50 ms", "p99 ms", "failed", "vs (a)", "CPU busy (per CPU)"],
    );
    match measure(cluster, provider_bin, placement, plan, &mut section).await {
        Ok(()) => {}
        Err(e) => section.problem(e),
    }
    section
}

async fn measure(
    cluster: &Cluster,
    provider_bin: &Path,
    placement: &Placement,
    plan: &Plan,
    section: &mut Section,
) -> Result<(), String> {
    if !cluster.local {
        return Err("the call benchmark needs the local API server (its providers are on loopback)".into());
    }
    let ns = namespace_name("calls");
    let bench = Bench::set_up(cluster, &ns, provider_bin, placement, plan).await?;
    let clients = selected(bench.clients());
    let results = rounds(&clients, plan).await;
    report(section, &clients, &results, plan);
    let spread = bench
        .balanced
        .debug()
        .members
        .iter()
        .map(|m| format!("{} {}", m.endpoint, m.calls))
        .collect::<Vec<_>>()
        .join(", ");
    section.note(format!("(b) spread over the providers: {spread}"));
    section.note(format!(
        "{} rounds × {:?} measured after {:?} warm-up per client and concurrency; {}",
        plan.rounds,
        plan.measure,
        plan.warmup,
        placement.describe()
    ));
    drop(bench.dubbo);
    cluster.delete_namespace(&ns).await;
    drop(bench.providers);
    Ok(())
}

/// Everything the clients call: three providers, the Services that find them, and each client.
struct Bench {
    providers: Vec<crate::util::Helper>,
    plain: GreeterServiceClient<tonic::transport::Channel>,
    one: GreeterServiceClient<Balanced>,
    balanced: Balanced,
    tonic_balanced: GreeterServiceClient<tonic::transport::Channel>,
    dubbo: consumer::dubbo_stack::DubboStack,
}

impl Bench {
    async fn set_up(
        cluster: &Cluster,
        ns: &str,
        provider_bin: &Path,
        placement: &Placement,
        plan: &Plan,
    ) -> Result<Bench, String> {
        let (providers, ports) =
            cluster.three_providers(ns, "greeter-bench", "bench", || placement.command(provider_bin)).await?;
        let service = ServiceRef::new(provider::INTERFACE).with_version("1.0.0");
        let cfg = discovery_config(cluster, ns, &format!("{}:1.0.0", provider::INTERFACE), "greeter-bench");
        let hub = Discovery::with_client(&cfg, Metrics::default(), cluster.client.clone())
            .await
            .map_err(|e| format!("discovery: {e}"))?;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", ports[0]))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("plain tonic connect: {e}"))?;
        let balanced = balanced_over(&hub, &service, 3).await?;
        let consumer_cfg = ConsumerConfig {
            service: service.clone(),
            discovery: cfg.clone(),
            concurrency: plan.in_flight.iter().copied().max().unwrap_or(1),
            deadline: Duration::from_secs(5),
            client: ClientKind::Dubbo,
            ..ConsumerConfig::default()
        };
        let dubbo = consumer::dubbo_stack::DubboStack::start(&consumer_cfg, hub.clone(), Stats::default())
            .await
            .map_err(|e| format!("dubbo crate client: {e}"))?;

        // A second Service holding only the first provider: the balanced client's own cost, against
        // the same single provider as (a).
        let one_cfg = discovery_config(cluster, ns, &format!("{}:1.0.0", provider::INTERFACE), "greeter-bench-one");
        let one_ep = Ep::of_pod("127.0.0.1".into(), "bench-p0".into());
        let api = cluster.slices(ns);
        create(&api, &slice(ns, "greeter-bench-one-0", "greeter-bench-one", ports[0], &[one_ep])?).await?;
        let one_hub = Discovery::with_client(&one_cfg, Metrics::default(), cluster.client.clone())
            .await
            .map_err(|e| format!("discovery: {e}"))?;
        let one = balanced_over(&one_hub, &service, 1).await?;

        // tonic's own balanced channel (tower's power-of-two-choices) over the same three, a static
        // list: what a user would otherwise pick.
        let endpoints: Vec<tonic::transport::Endpoint> = ports
            .iter()
            .filter_map(|p| tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{p}")).ok())
            .collect();
        Ok(Bench {
            providers,
            plain: GreeterServiceClient::new(channel),
            one: GreeterServiceClient::new(one),
            balanced,
            tonic_balanced: GreeterServiceClient::new(tonic::transport::Channel::balance_list(endpoints.into_iter())),
            dubbo,
        })
    }

    fn clients(&self) -> Vec<(&'static str, Call)> {
        let dubbo = self.dubbo.clone();
        vec![
            ("(a) plain tonic, 1 provider", tonic_call(self.plain.clone())),
            ("(b1) balanced client, the same 1 provider", tonic_call(self.one.clone())),
            ("(b) balanced client, 3 providers", tonic_call(GreeterServiceClient::new(self.balanced.clone()))),
            ("(a3) tonic balance_list, 3 providers (static)", tonic_call(self.tonic_balanced.clone())),
            (
                "(c) dubbo crate via kubernetes://, 3 providers",
                Arc::new(move || {
                    let d = dubbo.clone();
                    Box::pin(async move { d.say_hello("bench").await.is_ok() })
                }),
            ),
        ]
    }
}

/// A balanced client that sees exactly `members` providers.
async fn balanced_over(hub: &Discovery, service: &ServiceRef, members: usize) -> Result<Balanced, String> {
    let client =
        Balanced::new(hub, service.clone(), bench_options()).await.map_err(|e| format!("balanced client: {e}"))?;
    if !client.ready(Duration::from_secs(10)).await || client.debug().members.len() != members {
        return Err(format!("the balanced client should see {members} providers: {:?}", client.debug().members));
    }
    Ok(client)
}

/// `BENCH_CLIENTS=a,b1` keeps only those clients (for profiling one of them).
fn selected(clients: Vec<(&'static str, Call)>) -> Vec<(&'static str, Call)> {
    match std::env::var("BENCH_CLIENTS") {
        Ok(only) => clients
            .into_iter()
            .filter(|(name, _)| only.split(',').any(|o| name.starts_with(&format!("({o})"))))
            .collect(),
        Err(_) => clients,
    }
}

/// Every round runs every concurrency for every client in turn, so noise hits them alike.
/// `results[client][in_flight index]` holds one load per round.
pub(crate) async fn rounds(clients: &[(&str, Call)], plan: &Plan) -> Vec<Vec<Vec<Load>>> {
    let mut results: Vec<Vec<Vec<Load>>> =
        clients.iter().map(|_| plan.in_flight.iter().map(|_| Vec::new()).collect()).collect();
    for _round in 0..plan.rounds {
        for (k, &n) in plan.in_flight.iter().enumerate() {
            for (c, (_, call)) in clients.iter().enumerate() {
                let call = call.clone();
                results[c][k].push(load(n, plan.warmup, plan.measure, move || call()).await);
            }
        }
    }
    results
}

/// One row per client and concurrency, the targets against (a), and (b) against tonic's balancer.
fn report(section: &mut Section, clients: &[(&str, Call)], results: &[Vec<Vec<Load>>], plan: &Plan) {
    let mut base = vec![0.0; plan.in_flight.len()];
    let mut rates: std::collections::HashMap<String, Vec<f64>> = std::collections::HashMap::new();
    for (client, per_n) in results.iter().enumerate() {
        let name = clients[client].0;
        let tag = name.split(' ').next().unwrap_or_default();
        for (k, loads) in per_n.iter().enumerate() {
            let n = plan.in_flight[k];
            let row = Row::of(loads);
            if client == 0 {
                base[k] = row.rate;
            }
            rates.entry(tag.to_owned()).or_default().push(row.rate);
            let ratio = if base[k] > 0.0 { row.rate / base[k] } else { 0.0 };
            section.row(vec![
                name.into(),
                n.to_string(),
                f(row.rate, 0),
                f(row.latency.p50, 3),
                f(row.latency.p99, 3),
                row.failed.to_string(),
                format!("{ratio:.2}×"),
                row.busy,
            ]);
            if row.failed > 0 {
                section.problem(format!("{name}: {} calls failed at {n} in flight", row.failed));
            }
            if row.calls == 0 {
                section.problem(format!("{name}: no call completed at {n} in flight"));
            }
            if tag == "(b1)" {
                section.target(&format!("(b1) ≥ 0.95 × (a) at {n} in flight"), ratio >= 0.95, format!("{ratio:.2}×"));
            }
        }
    }
    if let (Some(b), Some(a3)) = (rates.get("(b)"), rates.get("(a3)")) {
        for ((b, a3), n) in b.iter().zip(a3).zip(&plan.in_flight) {
            let ratio = b / a3.max(f64::MIN_POSITIVE);
            section.target(
                &format!("(b) ≥ 1.0 × tonic's balance_list over the same three providers (a3) at {n} in flight"),
                ratio >= 1.0,
                format!("{ratio:.2}×"),
            );
        }
        section.note(
            "with pinning, the three providers of (b) and (a3) share the one provider core that (a) has to itself, \
             so (b) is compared with (a3), not with (a)",
        );
    }
}

/// One client at one concurrency, over the rounds: median rate, latency over every call.
pub(crate) struct Row {
    pub rate: f64,
    pub latency: Summary,
    pub calls: usize,
    pub failed: u64,
    /// Median busy share of each CPU, "12% / 80%".
    pub busy: String,
}

impl Row {
    pub(crate) fn of(loads: &[Load]) -> Row {
        let lat: Vec<f64> = loads.iter().flat_map(|l| l.latencies_ms.iter().copied()).collect();
        let cpus = loads.first().map_or(0, |l| l.cpu_busy.len());
        let busy = (0..cpus)
            .map(|i| {
                let per_round: Vec<f64> = loads.iter().filter_map(|l| l.cpu_busy.get(i).copied()).collect();
                format!("{:.0}%", 100.0 * median(&per_round))
            })
            .collect::<Vec<_>>()
            .join(" / ");
        Row {
            rate: median(&loads.iter().map(|l| l.calls_per_sec).collect::<Vec<_>>()),
            latency: Summary::of(&lat),
            calls: lat.len(),
            failed: loads.iter().map(|l| l.failed).sum(),
            busy,
        }
    }
}

/// The balanced client as the benchmark runs it: a fixed identity, no slow start.
pub(crate) fn bench_options() -> ClientOptions {
    let mut o = ClientOptions::default().with_client_id("bench");
    o.slow_start = Duration::ZERO;
    o
}
