//! 100,000 endpoints in 1,000 EndpointSlices through the API source (real kube client, in-process
//! API server), then churn: the set must be complete and correct after every kind of change. Its
//! timing belongs to the benchmarks (`scripts/bench`), not to an assertion here.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dubbo_k8s_discovery::{Conditions, Metrics, ServiceRef};
use support::*;
use testkit::{FakeApiServer, FakeDns, PodEndpoint, endpoint_slice};

const SLICES: usize = 1000;
const PER_SLICE: usize = 100;

fn ip(slice: usize, i: usize) -> String {
    format!("10.{}.{}.{}", 100 + slice / 250, slice % 250, i + 1)
}

/// What the test wrote, slice by slice: `ip -> conditions`.
type Model = BTreeMap<usize, BTreeMap<String, (bool, bool, bool)>>;

fn write(api: &FakeApiServer, model: &mut Model, slice: usize, pods: Vec<PodEndpoint>) {
    model.insert(
        slice,
        pods.iter()
            .map(|p| {
                (p.ip.clone(), (p.ready.unwrap_or(true), p.serving.unwrap_or(true), p.terminating.unwrap_or(false)))
            })
            .collect(),
    );
    api.apply_slice(NS, endpoint_slice(&format!("big-{slice:04}"), "big", "IPv4", &[("tri", 50051)], &pods));
}

fn expected(model: &Model) -> BTreeMap<String, Conditions> {
    model
        .values()
        .flatten()
        .map(|(ip, (r, s, t))| (format!("{ip}:50051"), Conditions::from_api(Some(*r), Some(*s), Some(*t))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_thousand_endpoints_stay_complete_and_correct_through_churn() {
    init_tracing();
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    let mut model = Model::new();
    for s in 0..SLICES {
        let pods = (0..PER_SLICE).map(|i| PodEndpoint::ready(ip(s, i), format!("big-{s}-{i}"))).collect();
        write(&api, &mut model, s, pods);
    }
    let mut cfg = api_config(&api, &dns);
    cfg.api.annotations = false;
    cfg.api.request_timeout = Duration::from_secs(30);
    cfg.api.cold_start_timeout = Duration::from_secs(60);
    let started = Instant::now();
    let d = start(&cfg, ServiceRef::new("org.example.Big"), Metrics::default()).await.expect("start");
    let s = wait_for(&d, 120, "100,000 endpoints", |s| s.len() == SLICES * PER_SLICE).await;
    eprintln!("first complete set of {} endpoints after {:?}", s.len(), started.elapsed());
    assert_eq!(s.routable_len(), SLICES * PER_SLICE);

    // Churn, as a rollout makes it: pods flip not ready, then terminating, some go, new ones come,
    // slices are deleted and re-created; one watch event at a time.
    let churn_started = Instant::now();
    let mut events = 0;
    for round in 0..200usize {
        let slice = (round * 37) % SLICES;
        let mut pods: Vec<PodEndpoint> =
            (0..PER_SLICE).map(|i| PodEndpoint::ready(ip(slice, i), format!("big-{slice}-{i}"))).collect();
        match round % 4 {
            0 => pods[round % PER_SLICE] = pods[round % PER_SLICE].clone().not_ready(),
            1 => pods[(round + 1) % PER_SLICE] = pods[(round + 1) % PER_SLICE].clone().terminating(),
            2 => {
                pods.truncate(PER_SLICE - 10);
                pods.push(PodEndpoint::ready(
                    format!("10.99.{}.{}", round / 250, round % 250 + 1),
                    format!("new-{round}"),
                ));
            }
            _ => {
                assert!(api.delete_slice(NS, &format!("big-{slice:04}")));
                model.remove(&slice);
                events += 1;
            }
        }
        write(&api, &mut model, slice, pods);
        events += 1;
    }
    let want = expected(&model);
    let s = wait_for(&d, 60, "the churned set", |s| {
        s.len() == want.len() && s.iter().all(|e| want.get(&e.key().to_string()) == Some(&e.conditions))
    })
    .await;
    eprintln!("{events} events applied in {:?}; {} endpoints", churn_started.elapsed(), s.len());
    let counts = s.counts();
    let not_ready = want.values().filter(|c| !c.ready && !c.serving).count();
    let draining = want.values().filter(|c| c.serving_while_terminating()).count();
    assert_eq!((counts.other, counts.serving_terminating), (not_ready, draining), "counts kept incrementally");
    assert_eq!(counts.ready, want.len() - not_ready - draining);
}
