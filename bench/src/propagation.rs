//! API propagation: per EndpointSlice change, the time from the write's acknowledgement to the
//! discovery snapshot that reflects it, and in the same run to the event of a bare watch (the kube
//! client's raw watch stream, nothing on top) on the same server; the difference, change by change,
//! is what discovery adds.

use std::time::{Duration, Instant};

use discovery::{Discovery, DiscoveryConfig, EndpointKey, EndpointSet, Metrics, Mode, ServiceRef};
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use tokio::sync::mpsc;

use crate::cluster::{Cluster, Ep, create, namespace_name, replace, slice};
use crate::report::{Section, f};
use crate::util::{Summary, signed_ms};

const SERVICE: &str = "bench-greeter";
const INTERFACE: &str = "org.dubbo_k8s.bench.PropagationService";
const PORT: u16 = 50051;
const SLICES: usize = 4;
const PER_SLICE: usize = 10;
const WAIT: Duration = Duration::from_secs(10);

/// Discovery in API mode on `namespace` of `cluster`, `identity` (`interface[:version]`) mapped to
/// `service` port `tri`.
pub fn discovery_config(cluster: &Cluster, namespace: &str, identity: &str, service: &str) -> DiscoveryConfig {
    let mut cfg = DiscoveryConfig::new(Mode::Api).with_namespace(namespace);
    cfg.api.server = cluster.server_url.clone();
    cfg.api.allow_loopback = cluster.local;
    cfg.api.annotations = false;
    cfg.api.failover = false;
    cfg.mappings = discovery::mapping::parse_mappings(&format!("{identity}={service}:tri")).unwrap_or_default();
    // Never asked (failover is off), but set so no system resolver configuration is read.
    cfg.dns.server = Some(([127, 0, 0, 1], 9).into());
    cfg
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Add,
    FlipReady,
    FlipTerminating,
    Remove,
}

fn ip(slice: usize, n: usize) -> String {
    format!("10.250.{slice}.{}", n % 250 + 1)
}

/// The kube client's bare watch: every event's arrival time and resourceVersion.
async fn bare_watch(
    api: Api<EndpointSlice>,
    selector: String,
    mut rv: String,
    tx: mpsc::UnboundedSender<(Instant, String)>,
) {
    loop {
        let wp = WatchParams::default().labels(&selector).timeout(290);
        let stream = match api.watch(&wp, &rv).await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let at = Instant::now();
            match event {
                Ok(WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o)) => {
                    rv = o.metadata.resource_version.unwrap_or_default();
                    if tx.send((at, rv.clone())).is_err() {
                        return;
                    }
                }
                Ok(WatchEvent::Bookmark(b)) => rv = b.metadata.resource_version,
                Ok(WatchEvent::Error(_)) | Err(_) => {
                    if let Ok(list) = api.list(&ListParams::default().labels(&selector)).await {
                        rv = list.metadata.resource_version.unwrap_or_default();
                    }
                    break;
                }
            }
        }
    }
}

async fn recv_until<T>(
    rx: &mut mpsc::UnboundedReceiver<(Instant, T)>,
    mut done: impl FnMut(&T) -> bool,
) -> Option<Instant> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((at, v))) if done(&v) => return Some(at),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
}

fn drain<T>(rx: &mut mpsc::UnboundedReceiver<T>) {
    while rx.try_recv().is_ok() {}
}

pub async fn run(cluster: &Cluster, samples: usize) -> Section {
    let mut section = Section::new(
        "API propagation",
        &format!(
            "Per EndpointSlice change (add an endpoint, flip ready, flip terminating, remove; {SLICES} slices of ~{PER_SLICE} \
             endpoints), milliseconds from the write's acknowledgement to (1) the event on a bare kube watch and (2) \
             the discovery snapshot that reflects it, both watching the same server in the same process. Negative: \
             the event arrived before the write's response. Overhead: (2) − (1) for the same change. Server: {}.",
            cluster.describe
        ),
        &["observer", "changes", "p50 ms", "p90 ms", "p99 ms", "max ms"],
    );
    match measure(cluster, samples).await {
        Ok((bare, disc, overhead, missed)) => {
            for (name, s) in [
                ("bare watch (kube client, raw stream)", Summary::of(&bare)),
                ("discovery snapshot (ServiceWatch)", Summary::of(&disc)),
                ("overhead of discovery, per change", Summary::of(&overhead)),
            ] {
                section.row(vec![name.into(), s.n.to_string(), f(s.p50, 3), f(s.p90, 3), f(s.p99, 3), f(s.max, 3)]);
            }
            let o = Summary::of(&overhead);
            section.target("overhead ≤ 1 ms at p99", o.p99 <= 1.0, format!("{:.3} ms", o.p99));
            if missed > 0 {
                section.problem(format!("{missed} of {samples} changes were not observed by both within {WAIT:?}"));
            }
        }
        Err(e) => section.problem(e),
    }
    section
}

async fn measure(cluster: &Cluster, samples: usize) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>, usize), String> {
    let ns = namespace_name("propagation");
    cluster.create_namespace(&ns).await?;
    let result = measure_in(cluster, &ns, samples).await;
    cluster.delete_namespace(&ns).await;
    result
}

async fn measure_in(
    cluster: &Cluster,
    ns: &str,
    samples: usize,
) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>, usize), String> {
    let api = cluster.slices(ns);
    let mut model: Vec<Vec<Ep>> = (0..SLICES).map(|s| (0..PER_SLICE).map(|i| Ep::ready(ip(s, i))).collect()).collect();
    let mut next: Vec<usize> = vec![PER_SLICE; SLICES];
    for (s, eps) in model.iter().enumerate() {
        create(&api, &slice(ns, &format!("{SERVICE}-{s}"), SERVICE, PORT, eps)?).await?;
    }
    let selector = format!("kubernetes.io/service-name={SERVICE}");
    let list = api.list(&ListParams::default().labels(&selector)).await.map_err(|e| format!("list slices: {e}"))?;
    let (bare_tx, mut bare_rx) = mpsc::unbounded_channel();
    let bare =
        tokio::spawn(bare_watch(api.clone(), selector, list.metadata.resource_version.unwrap_or_default(), bare_tx));

    let cfg = discovery_config(cluster, ns, INTERFACE, SERVICE);
    let hub = Discovery::with_client(&cfg, Metrics::default(), cluster.client.clone())
        .await
        .map_err(|e| format!("discovery: {e}"))?;
    let watch = hub.service(ServiceRef::new(INTERFACE)).await.map_err(|e| format!("discovery: {e}"))?;
    let mut rx = watch.watch();
    tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|s| s.len() == SLICES * PER_SLICE))
        .await
        .map_err(|_| format!("discovery did not see the {} endpoints within 30 s", SLICES * PER_SLICE))?
        .map_err(|_| "discovery stopped".to_owned())?;
    let (disc_tx, mut disc_rx) = mpsc::unbounded_channel::<(Instant, EndpointSet)>();
    let observer = tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let at = Instant::now();
            let set = rx.borrow_and_update().clone();
            if disc_tx.send((at, set)).is_err() {
                return;
            }
        }
    });

    let warmup = 20;
    let (mut bare_ms, mut disc_ms, mut overhead, mut missed) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for i in 0..warmup + samples {
        let s = i % SLICES;
        let kind = [Kind::Add, Kind::FlipReady, Kind::FlipTerminating, Kind::Remove][(i / SLICES) % 4];
        let eps = &mut model[s];
        let changed = match kind {
            Kind::Add => {
                next[s] += 1;
                eps.push(Ep::ready(ip(s, next[s])));
                eps.len() - 1
            }
            Kind::FlipReady => {
                let e = &mut eps[0];
                e.ready = !e.ready;
                e.serving = e.ready;
                0
            }
            Kind::FlipTerminating => {
                let e = &mut eps[1];
                e.terminating = !e.terminating;
                e.ready = !e.terminating;
                e.serving = true;
                1
            }
            Kind::Remove => eps.len() - 1,
        };
        let key = EndpointKey::new(eps[changed].ip.parse().map_err(|e| format!("{e}"))?, PORT);
        let expect = match kind {
            Kind::Remove => None,
            _ => Some(eps[changed].clone()),
        };
        if let Kind::Remove = kind {
            eps.pop();
        }
        let obj = slice(ns, &format!("{SERVICE}-{s}"), SERVICE, PORT, eps)?;
        drain(&mut bare_rx);
        drain(&mut disc_rx);
        let rv = replace(&api, &obj).await?;
        let acked = Instant::now();
        let seen_bare = recv_until(&mut bare_rx, |v: &String| *v == rv);
        let seen_disc = recv_until(&mut disc_rx, |set: &EndpointSet| match (&expect, set.get(&key)) {
            (None, None) => true,
            (Some(want), Some(got)) => {
                let c = got.conditions;
                (c.ready, c.serving, c.terminating) == (want.ready, want.serving, want.terminating)
            }
            _ => false,
        });
        let (b, d) = tokio::join!(seen_bare, seen_disc);
        if i < warmup {
            continue;
        }
        match (b, d) {
            (Some(b), Some(d)) => {
                bare_ms.push(signed_ms(acked, b));
                disc_ms.push(signed_ms(acked, d));
                overhead.push(signed_ms(b, d));
            }
            _ => missed += 1,
        }
    }
    observer.abort();
    bare.abort();
    Ok((bare_ms, disc_ms, overhead, missed))
}
