//! Scale: 1,000 to 100,000 endpoints (100 per slice) written through the API, each size measured in
//! a fresh child process (`dubbo-k8s-bench scale-point`) so its memory and CPU time are its own:
//! time to the first complete snapshot, memory growth, CPU time per one-slice change (the parent
//! writes each change, the child reports when its snapshot shows it), the balanced client's pick
//! cost and the connections it may hold (subsetting).

use std::process::Stdio;
use std::time::{Duration, Instant};

use discovery::client::{Balanced, ClientOptions};
use discovery::{Discovery, DiscoveryConfig, EndpointKey, Metrics, Mode, ServiceRef};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::cluster::{Cluster, Ep, create, namespace_name, replace, slice};
use crate::report::{Section, f};
use crate::util::{mib, own_cpu_ns, own_rss_kib};

const PER_SLICE: usize = 100;
const SERVICE: &str = "scale";
const INTERFACE: &str = "org.dubbo_k8s.bench.ScaleService";
const PORT: u16 = 50051;

fn ip(slice: usize, i: usize) -> String {
    format!("10.{}.{}.{}", 100 + slice / 250, slice % 250, i + 1)
}

fn slice_of(ns: &str, s: usize, first_ready: bool) -> Result<k8s_openapi::api::discovery::v1::EndpointSlice, String> {
    let mut eps: Vec<Ep> = (0..PER_SLICE).map(|i| Ep::ready(ip(s, i))).collect();
    eps[0].ready = first_ready;
    eps[0].serving = first_ready;
    slice(ns, &format!("{SERVICE}-{s:04}"), SERVICE, PORT, &eps)
}

/// One size's figures, as the table and the plot use them.
#[derive(Clone, Debug)]
pub struct Point {
    pub endpoints: usize,
    pub first_snapshot_ms: f64,
    /// Resident set after the first snapshot minus before the hub started, bytes.
    pub grown: f64,
    /// The highest resident set while the first list arrived, minus before, bytes.
    pub peak: f64,
    /// The process's whole resident set after the first snapshot, bytes.
    pub resident: f64,
    pub cpu_us: f64,
    pub bare_cpu_us: f64,
    pub bare_first_list_ms: f64,
    pub pick_ns: f64,
    pub members: u64,
}

pub async fn run(cluster: &Cluster, sizes: &[usize], changes: usize, picks: usize) -> (Section, Vec<Point>) {
    let mut section = Section::new(
        "Scale",
        &format!(
            "One Service of N endpoints in N/{PER_SLICE} EndpointSlices, written through the API server; discovery \
             (API mode, real kube client) and a balanced client (default options: subset of 100) in a fresh \
             process per size, and beside it, against the same server and changes, a process holding a bare kube \
             watch (`kube::Api<EndpointSlice>`: a paged list, then a watch; each event decoded, nothing kept). \
             First snapshot: from the hub's start to the complete set (bare: its list). Memory: the process's \
             resident set after the first snapshot minus before the hub started (table, client, allocator); peak: \
             the highest resident set while the first list arrived (VmHWM), minus the same; bytes per endpoint: the \
             growth from the previous size divided by the endpoints added. CPU per change: each process's CPU time \
             over {changes} one-slice changes (one endpoint's readiness flipped), each written by the parent and \
             awaited until both processes have seen it, divided by {changes}. Pick: one pick as a call makes it \
             (P2C over the members), median over {picks} picks."
        ),
        &[
            "endpoints",
            "first snapshot ms (bare list)",
            "resident",
            "grown",
            "peak / grown",
            "bytes / endpoint (marginal)",
            "CPU µs / change",
            "bare watch CPU µs / change",
            "vs bare",
            "pick ns",
            "members",
        ],
    );
    let mut points: Vec<Point> = Vec::new();
    for &n in sizes {
        match point(cluster, n, changes, picks).await {
            Ok(r) => {
                let num = |k: &str| r[k].as_f64().unwrap_or(0.0);
                let before = num("rss_before_kib") * 1024.0;
                let p = Point {
                    endpoints: n,
                    first_snapshot_ms: num("first_snapshot_ms"),
                    grown: (num("rss_after_kib") * 1024.0 - before).max(0.0),
                    peak: (num("rss_peak_kib") * 1024.0 - before).max(0.0),
                    resident: num("rss_after_kib") * 1024.0,
                    cpu_us: num("cpu_ns") / changes as f64 / 1e3,
                    bare_cpu_us: num("bare_cpu_ns") / changes as f64 / 1e3,
                    bare_first_list_ms: num("bare_first_list_ms"),
                    pick_ns: num("pick_ns"),
                    members: r["members"].as_u64().unwrap_or(0),
                };
                let marginal = match points.last() {
                    Some(prev) if n > prev.endpoints => f((p.grown - prev.grown) / (n - prev.endpoints) as f64, 0),
                    _ => "—".into(),
                };
                section.row(vec![
                    n.to_string(),
                    format!("{} ({})", f(p.first_snapshot_ms, 0), f(p.bare_first_list_ms, 0)),
                    mib(p.resident as u64),
                    mib(p.grown as u64),
                    format!("{:.2}×", p.peak / p.grown.max(1.0)),
                    marginal,
                    f(p.cpu_us, 1),
                    f(p.bare_cpu_us, 1),
                    format!("{:.2}×", p.cpu_us / p.bare_cpu_us.max(f64::MIN_POSITIVE)),
                    f(p.pick_ns, 0),
                    p.members.to_string(),
                ]);
                for (who, key) in [("the child", "changes_seen"), ("the bare watch", "bare_changes_seen")] {
                    if r[key].as_u64() != Some(changes as u64) {
                        section.problem(format!("{n} endpoints: {who} saw {} of {changes} changes", r[key]));
                    }
                }
                points.push(p);
            }
            Err(e) => section.problem(format!("{n} endpoints: {e}")),
        }
    }
    section.note(format!("API server: {}", cluster.describe));
    if let Some((api, etcd)) = cluster.server_rss_kib() {
        section.note(format!(
            "resident memory after the run: kube-apiserver {}, etcd {}",
            mib(api * 1024),
            mib(etcd * 1024)
        ));
    }
    targets(&mut section, &points);
    (section, points)
}

/// Memory and CPU per change against endpoints, discovery beside the bare watch.
pub fn plots(points: &[Point]) -> Vec<(&'static str, crate::plot::Plot)> {
    use crate::plot::{Plot, Series};
    let at = |f: fn(&Point) -> f64| points.iter().map(|p| (p.endpoints as f64, f(p))).collect::<Vec<_>>();
    vec![
        (
            "scale-memory.svg",
            Plot {
                title: "Scale: resident memory grown by the first snapshot".into(),
                x_label: "endpoints".into(),
                y_label: "MB".into(),
                log_x: true,
                log_y: true,
                series: vec![Series::new("dubbo-k8s (discovery + balanced client)", at(|p| p.grown / 1e6))],
            },
        ),
        (
            "scale-cpu.svg",
            Plot {
                title: "Scale: CPU time per one-slice change".into(),
                x_label: "endpoints".into(),
                y_label: "µs".into(),
                log_x: true,
                log_y: false,
                series: vec![
                    Series::new("dubbo-k8s", at(|p| p.cpu_us)),
                    Series::new("bare kube watch (decode only)", at(|p| p.bare_cpu_us)),
                ],
            },
        ),
    ]
}

fn targets(section: &mut Section, points: &[Point]) {
    if let [.., prev, last] = points {
        let marginal = (last.grown - prev.grown) / (last.endpoints - prev.endpoints).max(1) as f64;
        section.target(
            &format!("marginal resident memory ≤ 400 bytes per endpoint ({} → {})", prev.endpoints, last.endpoints),
            marginal <= 400.0,
            format!("{marginal:.0} bytes"),
        );
    }
    if let Some(p) = points.iter().find(|p| p.endpoints == 100_000) {
        section.target("≤ 80 MB resident at 100,000 endpoints", p.resident <= 80e6, mib(p.resident as u64));
        section.target(
            "first complete snapshot at 100,000 endpoints ≤ 1 s",
            p.first_snapshot_ms <= 1000.0,
            format!("{:.0} ms", p.first_snapshot_ms),
        );
    }
    if let Some(last) = points.last() {
        let ratio = last.peak / last.grown.max(1.0);
        section.target(
            &format!("peak while the first list arrives ≤ 1.5× settled ({})", last.endpoints),
            ratio <= 1.5,
            format!("{ratio:.2}×"),
        );
        let worst = points.iter().map(|p| p.cpu_us / p.bare_cpu_us.max(f64::MIN_POSITIVE)).fold(0.0, f64::max);
        section.target(
            "CPU per change ≤ 1.5× the bare watch's (every size)",
            worst <= 1.5,
            format!("{worst:.2}× at most"),
        );
        let max_cpu = points.iter().map(|p| p.cpu_us).fold(0.0, f64::max);
        section.target(
            "CPU per change of a 100-endpoint slice ≤ 150 µs (every size)",
            max_cpu <= 150.0,
            format!("{max_cpu:.0} µs at most"),
        );
    }
    if let (Some(first), Some(last)) = (points.first(), points.last())
        && last.endpoints > first.endpoints
    {
        let ratio = last.pick_ns / first.pick_ns.max(f64::MIN_POSITIVE);
        section.target(
            "pick cost flat across sizes (within 1.5×)",
            ratio <= 1.5,
            format!("{ratio:.2}× from {} to {}", first.endpoints, last.endpoints),
        );
    }
}

async fn point(cluster: &Cluster, n: usize, changes: usize, picks: usize) -> Result<Value, String> {
    let ns = namespace_name(&format!("scale{n}"));
    cluster.create_namespace(&ns).await?;
    let result = point_in(cluster, &ns, n, changes, picks).await;
    cluster.delete_namespace(&ns).await;
    result
}

/// A child process of the harness, driven over stdin/stdout.
pub(crate) struct Child {
    name: &'static str,
    pub(crate) process: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Child {
    pub(crate) fn spawn(cluster: &Cluster, name: &'static str, args: &[&str]) -> Result<Child, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg(args[0]);
        cluster.child_access(&mut cmd)?;
        let mut process = cmd
            .args(&args[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the {name}: {e}"))?;
        let stdin = process.stdin.take().ok_or("no stdin")?;
        let lines = BufReader::new(process.stdout.take().ok_or("no stdout")?).lines();
        Ok(Child { name, process, stdin, lines })
    }

    pub(crate) async fn line(&mut self) -> Result<String, String> {
        match tokio::time::timeout(Duration::from_secs(300), self.lines.next_line()).await {
            Ok(Ok(Some(l))) => Ok(l),
            Ok(Ok(None)) => Err(format!("the {} ended early (see its message above)", self.name)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("the {} did not answer within 300 s", self.name)),
        }
    }

    pub(crate) async fn json(&mut self) -> Result<Value, String> {
        let l = self.line().await?;
        serde_json::from_str(&l).map_err(|e| format!("the {} printed {l:?}: {e}", self.name))
    }

    pub(crate) async fn say(&mut self, msg: &str) -> Result<(), String> {
        self.stdin.write_all(msg.as_bytes()).await.map_err(|e| format!("{}: {e}", self.name))
    }

    pub(crate) async fn expect_ok(&mut self) -> Result<(), String> {
        match self.line().await?.as_str() {
            "ok" => Ok(()),
            other => Err(format!("the {} answered {other:?}", self.name)),
        }
    }
}

async fn point_in(cluster: &Cluster, ns: &str, n: usize, changes: usize, picks: usize) -> Result<Value, String> {
    let api = cluster.slices(ns);
    let slices = n / PER_SLICE;
    let writes = futures::stream::iter(0..slices)
        .map(|s| {
            let api = api.clone();
            async move { create(&api, &slice_of(ns, s, true)?).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    if let Some(Err(e)) = writes.into_iter().find(Result::is_err) {
        return Err(e);
    }
    let (size, picks) = (n.to_string(), picks.to_string());
    let mut discovery = Child::spawn(
        cluster,
        "scale child",
        &["scale-point", "--namespace", ns, "--endpoints", &size, "--picks", &picks],
    )?;
    let ready = discovery.json().await?;
    // The same changes, side by side: a process holding a bare kube watch that only decodes events.
    let mut bare = Child::spawn(cluster, "bare watch child", &["scale-bare", "--namespace", ns])?;
    let bare_ready = bare.json().await?;
    let mut state = vec![true; slices];
    for c in 0..changes {
        let s = (c * 7919) % slices; // spread over the slices
        state[s] = !state[s];
        replace(&api, &slice_of(ns, s, state[s])?).await?;
        let msg = format!("expect {} {}\n", ip(s, 0), u8::from(state[s]));
        discovery.say(&msg).await?;
        bare.say(&msg).await?;
        discovery.expect_ok().await?;
        bare.expect_ok().await?;
    }
    discovery.say("done\n").await?;
    bare.say("done\n").await?;
    let end = discovery.json().await?;
    let bare_end = bare.json().await?;
    let _ = discovery.process.wait().await;
    let _ = bare.process.wait().await;
    let mut out = ready;
    if let Some(o) = out.as_object_mut() {
        o.extend(end.as_object().cloned().unwrap_or_default());
        o.insert("bare_first_list_ms".into(), bare_ready["first_list_ms"].clone());
        o.insert("bare_cpu_ns".into(), bare_end["cpu_ns"].clone());
        o.insert("bare_changes_seen".into(), bare_end["changes_seen"].clone());
    }
    Ok(out)
}

/// `dubbo-k8s-bench scale-bare`: a bare kube watch of the namespace's slices, as a user would write
/// it with `kube::Api<EndpointSlice>` and nothing on top: list (paged) for a version, then watch;
/// every event decoded into `k8s-openapi`'s EndpointSlice and looked at only to answer the parent.
pub async fn bare_child(api: Option<String>, namespace: String) -> Result<(), String> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{ListParams, WatchEvent, WatchParams};
    let config = match api {
        Some(url) => kube::Config::new(url.parse().map_err(|e| format!("{url}: {e}"))?),
        None => kube::Config::infer().await.map_err(|e| e.to_string())?,
    };
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    let slices: kube::Api<EndpointSlice> = kube::Api::namespaced(client, &namespace);
    let started = Instant::now();
    let mut lp = ListParams::default().labels(&format!("kubernetes.io/service-name={SERVICE}")).limit(500);
    let rv = loop {
        let page = slices.list(&lp).await.map_err(|e| format!("list: {e}"))?;
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break page.metadata.resource_version.unwrap_or_default(),
        }
    };
    println!("{}", json!({"first_list_ms": started.elapsed().as_secs_f64() * 1e3}));
    let wp = WatchParams::default().labels(&format!("kubernetes.io/service-name={SERVICE}")).timeout(290);
    let mut stream = Box::pin(slices.watch(&wp, &rv).await.map_err(|e| format!("watch: {e}"))?);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let cpu0 = own_cpu_ns().unwrap_or(0);
    let mut seen = 0u64;
    while let Ok(Some(line)) = lines.next_line().await {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["expect", ip, ready] => {
                let want = *ready == "1";
                let shows = |s: &EndpointSlice| {
                    s.endpoints.iter().any(|e| {
                        e.addresses.first().map(String::as_str) == Some(*ip)
                            && e.conditions.as_ref().and_then(|c| c.ready) == Some(want)
                    })
                };
                loop {
                    let event = tokio::time::timeout(Duration::from_secs(30), stream.next())
                        .await
                        .map_err(|_| format!("{ip} never became ready={want} in the bare watch"))?;
                    match event {
                        Some(Ok(WatchEvent::Modified(s) | WatchEvent::Added(s))) if shows(&s) => break,
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(format!("watch: {e}")),
                        None => return Err("the watch ended".into()),
                    }
                }
                seen += 1;
                println!("ok");
            }
            ["done"] => break,
            _ => return Err(format!("unexpected line {line:?}")),
        }
    }
    let cpu = own_cpu_ns().unwrap_or(0).saturating_sub(cpu0);
    println!("{}", json!({"cpu_ns": cpu, "changes_seen": seen}));
    Ok(())
}

/// API mode as the benchmark's child processes run it: the server of `--api` (else the kubeconfig of
/// KUBECONFIG), explicit `mappings`, no annotations and no failover (nothing but the watch is
/// measured), timeouts long enough for 100,000 endpoints or 200 processes starting at once.
pub fn child_config(api: Option<String>, namespace: String, mappings: &str) -> Result<DiscoveryConfig, String> {
    let mut cfg = DiscoveryConfig::new(Mode::Api).with_namespace(namespace);
    cfg.api.server = api;
    cfg.api.annotations = false;
    cfg.api.failover = false;
    cfg.api.request_timeout = Duration::from_secs(60);
    cfg.api.cold_start_timeout = Duration::from_secs(240);
    cfg.dns.server = Some(([127, 0, 0, 1], 9).into());
    cfg.mappings = discovery::mapping::parse_mappings(mappings).map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// `dubbo-k8s-bench scale-point`: the child. Prints one JSON line when the set is complete, then
/// answers `ok` to each `expect <ip> <0|1>` once its snapshot shows that readiness, and prints its
/// CPU time on `done`.
pub async fn child(api: Option<String>, namespace: String, n: usize, picks: usize) -> Result<(), String> {
    let cfg = child_config(api, namespace, &format!("{INTERFACE}={SERVICE}:tri"))?;
    let rss_before = own_rss_kib().unwrap_or(0);
    let started = Instant::now();
    let hub = Discovery::new(&cfg, Metrics::default()).await.map_err(|e| format!("discovery: {e}"))?;
    let watch = hub.service(ServiceRef::new(INTERFACE)).await.map_err(|e| format!("discovery: {e}"))?;
    let mut rx = watch.watch();
    tokio::time::timeout(Duration::from_secs(240), rx.wait_for(|s| s.len() == n))
        .await
        .map_err(|_| format!("the set did not reach {n} endpoints within 240 s"))?
        .map_err(|_| "discovery stopped".to_owned())?;
    let first_snapshot = started.elapsed();
    let opts = ClientOptions::default().with_client_id("bench");
    let client = Balanced::from_watch(watch.clone(), None, opts).map_err(|e| e.to_string())?;
    if !client.ready(Duration::from_secs(30)).await {
        return Err("the balanced client did not get its first set".into());
    }
    // The client's updater builds its members from the same snapshot; wait until they are there.
    let want = n.min(100);
    for _ in 0..300 {
        if client.debug().members.len() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rss_after = own_rss_kib().unwrap_or(0);
    let rss_peak = crate::util::own_peak_rss_kib().unwrap_or(0);
    let mut pick_ns = Vec::with_capacity(20);
    for _ in 0..20 {
        let t = Instant::now();
        for _ in 0..picks / 20 {
            std::hint::black_box(client.pick_once());
        }
        pick_ns.push(t.elapsed().as_nanos() as f64 / (picks / 20).max(1) as f64);
    }
    let members = client.debug().members.len();
    let cpu0 = own_cpu_ns().unwrap_or(0);
    println!(
        "{}",
        json!({
            "first_snapshot_ms": first_snapshot.as_secs_f64() * 1e3,
            "rss_before_kib": rss_before,
            "rss_after_kib": rss_after,
            "rss_peak_kib": rss_peak,
            "pick_ns": crate::util::median(&pick_ns),
            "members": members,
            "pid": std::process::id(),
        })
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut seen = 0u64;
    while let Ok(Some(line)) = lines.next_line().await {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["expect", ip, ready] => {
                let key = EndpointKey::new(ip.parse().map_err(|e| format!("{e}"))?, PORT);
                let want = *ready == "1";
                let seen_it = tokio::time::timeout(
                    Duration::from_secs(30),
                    rx.wait_for(|s| s.get(&key).is_some_and(|e| e.conditions.ready == want)),
                )
                .await;
                if !matches!(seen_it, Ok(Ok(_))) {
                    return Err(format!("{ip} never became ready={want}"));
                }
                seen += 1;
                println!("ok");
            }
            ["done"] => break,
            _ => return Err(format!("unexpected line {line:?}")),
        }
    }
    let cpu = own_cpu_ns().unwrap_or(0).saturating_sub(cpu0);
    println!("{}", json!({"cpu_ns": cpu, "changes_seen": seen, "rss_end_kib": own_rss_kib().unwrap_or(0)}));
    drop(client);
    Ok(())
}
