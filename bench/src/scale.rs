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

pub async fn run(cluster: &Cluster, sizes: &[usize], changes: usize, picks: usize) -> Section {
    let mut section = Section::new(
        "Scale",
        &format!(
            "One Service of N endpoints in N/{PER_SLICE} EndpointSlices, written through the API server; discovery \
             (API mode, real kube client) and a balanced client (default options: subset of 100) in a fresh \
             process per size. First snapshot: from the hub's start to the complete set. Memory: the process's \
             resident set after the first snapshot minus before the hub started (table, list buffers, client); \
             bytes per endpoint: the growth from the previous size divided by the endpoints added. \
             CPU per change: the process's CPU time over {changes} one-slice changes (one endpoint's readiness \
             flipped), each written by the parent and awaited until the child's snapshot shows it, divided by \
             {changes}. Pick: one pick as a call makes it (P2C over the members), median over {picks} picks."
        ),
        &[
            "endpoints",
            "slices",
            "first snapshot ms",
            "memory",
            "bytes / endpoint (marginal)",
            "CPU µs / change",
            "pick ns",
            "members (connections at most)",
        ],
    );
    let mut cpu = Vec::new();
    let mut pick = Vec::new();
    let mut previous: Option<(usize, f64)> = None;
    for &n in sizes {
        match point(cluster, n, changes, picks).await {
            Ok(r) => {
                let num = |k: &str| r[k].as_f64().unwrap_or(0.0);
                let grown = (num("rss_after_kib") - num("rss_before_kib")).max(0.0) * 1024.0;
                let per_change = num("cpu_ns") / changes as f64 / 1e3;
                cpu.push((n, per_change));
                pick.push((n, num("pick_ns")));
                let row_previous = previous;
                previous = Some((n, grown));
                let previous = row_previous;
                section.row(vec![
                    n.to_string(),
                    (n / PER_SLICE).to_string(),
                    f(num("first_snapshot_ms"), 0),
                    mib(grown as u64),
                    match previous {
                        Some((pn, pg)) if n > pn => f((grown - pg) / (n - pn) as f64, 0),
                        _ => "—".into(),
                    },
                    f(per_change, 1),
                    f(num("pick_ns"), 0),
                    format!("{}", r["members"].as_u64().unwrap_or(0)),
                ]);
                if r["changes_seen"].as_u64() != Some(changes as u64) {
                    section.problem(format!("{n} endpoints: the child saw {} of {changes} changes", r["changes_seen"]));
                }
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
    if let (Some(first), Some(last)) = (cpu.first(), cpu.last())
        && last.0 > first.0
    {
        let ratio = last.1 / first.1.max(f64::MIN_POSITIVE);
        section.target(
            &format!("CPU per change at {} within 2× of {}", last.0, first.0),
            ratio <= 2.0,
            format!("{ratio:.2}×"),
        );
    }
    if let (Some(first), Some(last)) = (pick.first(), pick.last())
        && last.0 > first.0
    {
        let ratio = last.1 / first.1.max(f64::MIN_POSITIVE);
        section.target(
            "pick cost flat across sizes (within 1.5×)",
            ratio <= 1.5,
            format!("{ratio:.2}× from {} to {}", first.0, last.0),
        );
    }
    section
}

async fn point(cluster: &Cluster, n: usize, changes: usize, picks: usize) -> Result<Value, String> {
    let ns = namespace_name(&format!("scale{n}"));
    cluster.create_namespace(&ns).await?;
    let result = point_in(cluster, &ns, n, changes, picks).await;
    cluster.delete_namespace(&ns).await;
    result
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
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("scale-point");
    cluster.child_access(&mut cmd)?;
    let mut child = cmd
        .args(["--namespace", ns, "--endpoints", &n.to_string(), "--picks", &picks.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the scale child: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let mut next_line = async || -> Result<String, String> {
        match tokio::time::timeout(Duration::from_secs(300), lines.next_line()).await {
            Ok(Ok(Some(l))) => Ok(l),
            Ok(Ok(None)) => Err("the scale child ended early (see its message above)".into()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the scale child did not answer within 300 s".into()),
        }
    };
    let ready: Value = serde_json::from_str(&next_line().await?).map_err(|e| e.to_string())?;
    let mut state = vec![true; slices];
    for c in 0..changes {
        let s = (c * 7919) % slices; // spread over the slices
        state[s] = !state[s];
        replace(&api, &slice_of(ns, s, state[s])?).await?;
        let msg = format!("expect {} {}\n", ip(s, 0), u8::from(state[s]));
        stdin.write_all(msg.as_bytes()).await.map_err(|e| e.to_string())?;
        let answer = next_line().await?;
        if answer != "ok" {
            return Err(format!("the scale child answered {answer:?}"));
        }
    }
    stdin.write_all(b"done\n").await.map_err(|e| e.to_string())?;
    let end: Value = serde_json::from_str(&next_line().await?).map_err(|e| e.to_string())?;
    let _ = child.wait().await;
    let mut out = ready;
    if let (Some(o), Some(e)) = (out.as_object_mut(), end.as_object()) {
        o.extend(e.clone());
    }
    Ok(out)
}

/// `dubbo-k8s-bench scale-point`: the child. Prints one JSON line when the set is complete, then
/// answers `ok` to each `expect <ip> <0|1>` once its snapshot shows that readiness, and prints its
/// CPU time on `done`.
pub async fn child(api: Option<String>, namespace: String, n: usize, picks: usize) -> Result<(), String> {
    let mut cfg = DiscoveryConfig::new(Mode::Api).with_namespace(namespace);
    // Without --api: the kubeconfig of KUBECONFIG.
    cfg.api.server = api;
    cfg.api.annotations = false;
    cfg.api.failover = false;
    cfg.api.request_timeout = Duration::from_secs(60);
    cfg.api.cold_start_timeout = Duration::from_secs(120);
    cfg.dns.server = Some(([127, 0, 0, 1], 9).into());
    cfg.mappings =
        discovery::mapping::parse_mappings(&format!("{INTERFACE}={SERVICE}:tri")).map_err(|e| e.to_string())?;
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
