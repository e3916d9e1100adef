//! Health and failover between the API source, DNS and the Service VIP, with the real kube client and
//! the real hickory resolver against both in-process servers, including their misbehaviours.

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dubbo_k8s_discovery::{Freshness, Metrics, ServiceRef, Source};
use support::*;
use testkit::{Behaviour, FakeApiServer, FakeDns, Misbehaviour, PodEndpoint, service_object};

fn greeter() -> ServiceRef {
    ServiceRef::new("org.apache.dubbo.demo.GreeterService")
}

const FQDN: &str = "greeter-service.demo.svc.cluster.local";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn stale_since(s: &dubbo_k8s_discovery::EndpointSet) -> Option<Instant> {
    s.stale_since()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_with_the_api_down_serves_dns_then_switches_back() {
    init_tracing();
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    dns.set_headless_service(FQDN, Some("tri"), 50051, &[ip("10.244.1.1"), ip("10.244.1.2")], 1);
    apply(&api, "greeter-service-a", "greeter-service", &pods("greeter", 1, 3));
    api.stop();

    let d = start(&api_config(&api, &dns), greeter(), Metrics::default()).await.expect("start");
    let s = wait_for(&d, 10, "dns fallback", |s| s.source() == Source::Dns && s.len() == 2).await;
    assert!(!s.is_pending());

    api.restart().await.expect("restart");
    let s = wait_for(&d, 15, "back on the API", |s| s.source() == Source::Api).await;
    assert_eq!(s.len(), 3);
    assert_eq!(s.freshness(), Freshness::Live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_outage_goes_to_dns_then_to_the_vip_on_the_services_own_port() {
    init_tracing();
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    dns.set_headless_service(FQDN, Some("tri"), 50051, &[ip("10.244.1.9")], 1);
    // A ClusterIP Service whose port "tri" is 8080 on the VIP (the pods listen on 50051).
    api.apply_service(NS, service_object("greeter-service", &[], Some("10.96.0.77"), ("tri", 8080)));
    apply(&api, "greeter-service-a", "greeter-service", &pods("greeter", 1, 3));
    let mut cfg = api_config(&api, &dns);
    cfg.api.max_stale = Duration::from_millis(800);
    let d = start(&cfg, greeter(), Metrics::default()).await.expect("start");
    wait_for(&d, 10, "api", |s| s.source() == Source::Api && s.len() == 3).await;

    api.stop();
    let s = wait_for(&d, 10, "stale api", |s| s.is_stale()).await;
    assert_eq!((s.source(), s.len()), (Source::Api, 3), "last-known-good first");
    let s = wait_for(&d, 10, "dns after max_stale", |s| s.source() == Source::Dns).await;
    assert_eq!(routable_keys(&s), ["10.244.1.9:50051"]);
    // DNS fails now too: its own last answer (recent pod IPs) is kept rather than the VIP
    dns.set_behaviour(Behaviour::ServFail);
    let s = wait_for(&d, 10, "dns stale", |s| s.is_stale()).await;
    assert_eq!((s.source(), routable_keys(&s)), (Source::Dns, vec!["10.244.1.9:50051".to_owned()]));

    api.restart().await.expect("restart");
    let s = wait_for(&d, 15, "api again", |s| s.source() == Source::Api && s.freshness() == Freshness::Live).await;
    assert_eq!(s.len(), 3);

    // DNS has never answered during this outage: the VIP, on the Service's own port (8080), not
    // DISCOVERY_FALLBACK_PORT.
    tokio::time::sleep(Duration::from_millis(500)).await; // past the recovery hold: DNS stopped
    api.stop();
    let s = wait_for(&d, 10, "vip", |s| s.source() == Source::Vip).await;
    assert_eq!(routable_keys(&s), ["10.96.0.77:8080"]);
    assert!(s.is_stale(), "the VIP is a degraded answer");
    dns.set_behaviour(Behaviour::Normal);
    wait_for(&d, 10, "dns answers again", |s| s.source() == Source::Dns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_falls_back_at_once() {
    init_tracing();
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    dns.set_headless_service(FQDN, Some("tri"), 50051, &[ip("10.244.3.1")], 5);
    let api = FakeApiServer::start().await.expect("api");
    let mut cfg = api_config(&api, &dns);
    cfg.api.server = Some("http://127.0.0.1:1".into()); // nothing listens there
    let started = Instant::now();
    let d = start(&cfg, greeter(), Metrics::default()).await.expect("start");
    let s = wait_for(&d, 10, "dns answer", |s| s.source() == Source::Dns && !s.is_pending()).await;
    assert_eq!(routable_keys(&s), ["10.244.3.1:50051"]);
    assert!(started.elapsed() < Duration::from_secs(5), "nothing at start blocks: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_accepts_then_resets_does_not_reset_the_stale_clock() {
    init_tracing();
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    dns.set_headless_service(FQDN, Some("tri"), 50051, &[ip("10.244.4.1")], 1);
    apply(&api, "greeter-service-a", "greeter-service", &pods("greeter", 1, 2));
    let mut cfg = api_config(&api, &dns);
    cfg.api.max_stale = Duration::from_millis(1500);
    let d = start(&cfg, greeter(), Metrics::default()).await.expect("start");
    wait_for(&d, 10, "api", |s| s.source() == Source::Api && s.len() == 2).await;

    // Every request is accepted (200) and then reset: no data ever comes.
    api.set_misbehaviour(Misbehaviour::AcceptThenReset);
    let first = wait_for(&d, 10, "stale", |s| s.is_stale()).await;
    let since = stale_since(&first).expect("stale");
    let lists = api.lists();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let later = d.current();
    assert!(api.lists() > lists, "the client keeps retrying");
    assert_eq!(stale_since(&later), Some(since), "accepted requests do not make the set live again");
    let s = wait_for(&d, 10, "dns after max_stale", |s| s.source() == Source::Dns).await;
    assert_eq!(routable_keys(&s), ["10.244.4.1:50051"]);

    api.set_misbehaviour(Misbehaviour::None);
    wait_for(&d, 15, "api again", |s| s.source() == Source::Api && !s.is_stale()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_watch_is_restarted_and_the_change_it_hid_is_seen() {
    init_tracing();
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    apply(&api, "greeter-service-a", "greeter-service", &pods("greeter", 1, 1));
    let mut cfg = api_config(&api, &dns);
    cfg.api.request_timeout = Duration::from_millis(500);
    cfg.api.watch_idle_timeout = Duration::from_millis(1200);
    let metrics = Metrics::default();
    let d = start(&cfg, greeter(), metrics.clone()).await.expect("start");
    wait_for(&d, 10, "one", |s| s.len() == 1).await;

    // Watches are accepted and then say nothing at all (no events, no bookmarks): half-open.
    api.set_watch_misbehaviour(Misbehaviour::Silent);
    tokio::time::sleep(Duration::from_millis(100)).await;
    apply(&api, "greeter-service-a", "greeter-service", &pods("greeter", 1, 2));
    let s = wait_for(&d, 10, "the change, found by the re-list", |s| s.len() == 2).await;
    assert_eq!(s.source(), Source::Api);
    assert!(metrics.watch_restarts("endpointslices demo", "idle") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_while_disconnected_recovers_with_fresh_state() {
    init_tracing();
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    apply(&api, "greeter-service-a", "greeter-service", &pods("greeter", 1, 3));
    let d = start(&api_config(&api, &dns), greeter(), Metrics::default()).await.expect("start");
    wait_for(&d, 10, "three", |s| s.len() == 3).await;
    api.stop();
    wait_for(&d, 10, "stale", |s| s.is_stale()).await;
    // Meanwhile: a slice deleted, another added, and the history compacted past the client's version.
    assert!(api.delete_slice(NS, "greeter-service-a"));
    apply(&api, "greeter-service-b", "greeter-service", &pods("greeter", 2, 2));
    api.compact();
    let mut rx = d.watch();
    api.restart().await.expect("restart");
    // Every set published from here: either the old stale one, or the fresh one; never a live old one.
    let fresh = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            rx.changed().await.expect("open");
            let s = rx.borrow_and_update().clone();
            if !s.is_stale() {
                return s;
            }
            assert_eq!(s.len(), 3, "while stale, the last-known-good set");
        }
    })
    .await
    .expect("recovers");
    assert_eq!(routable_keys(&fresh), ["10.1.2.1:50051", "10.1.2.2:50051"], "live means the current state");
}

/// resourceVersion is opaque: after an etcd restore the server's versions go backwards, and its
/// lists are still the current state. (The code of the last round compared versions and refused
/// such a list for ever: the set stayed stale with the pre-restore endpoints.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_etcd_restore_the_restored_state_is_live_after_one_list() {
    init_tracing();
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    apply(&api, "greeter-service-a", "greeter-service", &pods("greeter", 1, 1));
    let old = api.snapshot();
    let mut cfg = api_config(&api, &dns);
    cfg.api.failover = false;
    let d = start(&cfg, greeter(), Metrics::default()).await.expect("start");
    wait_for(&d, 10, "one", |s| s.len() == 1).await;
    apply(&api, "greeter-service-a", "greeter-service", &pods("greeter", 1, 3));
    wait_for(&d, 10, "three", |s| s.len() == 3).await;
    let lists = api.lists();

    // The server comes back from a backup: its state and its resourceVersions are older.
    api.restore(&old);
    let s = wait_for(&d, 10, "the restored state, live", |s| !s.is_stale() && s.len() == 1).await;
    assert_eq!(routable_keys(&s).len(), 1);
    assert!(api.lists() > lists, "the restored state came from a list");

    // Changes after the restore arrive as usual.
    apply(&api, "greeter-service-a", "greeter-service", &pods("greeter", 1, 2));
    let s = wait_for(&d, 10, "a change after the restore", |s| !s.is_stale() && s.len() == 2).await;
    assert_eq!(s.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_dns_answer_during_an_outage_keeps_the_last_known_good_set() {
    init_tracing();
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start(DOMAIN).await.expect("dns"); // knows nothing: NXDOMAIN for the Service
    apply(&api, "greeter-service-a", "greeter-service", &pods("greeter", 1, 3));
    let mut cfg = api_config(&api, &dns);
    cfg.api.max_stale = Duration::from_millis(500);
    let metrics = Metrics::default();
    let d = start(&cfg, greeter(), metrics.clone()).await.expect("start");
    wait_for(&d, 10, "api", |s| s.len() == 3).await;
    api.stop();
    wait_for(&d, 10, "stale", |s| s.is_stale()).await;
    let key = format!("{NS}/greeter-service:tri");
    tokio::time::timeout(Duration::from_secs(10), async {
        while metrics.dns_empty_ignored_count(&key) == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the empty answer is counted");
    let s = d.current();
    assert_eq!((s.source(), s.len()), (Source::Api, 3), "NXDOMAIN did not empty a non-empty last-known-good set");

    // A live API that says "zero endpoints" is obeyed.
    api.restart().await.expect("restart");
    apply(&api, "greeter-service-a", "greeter-service", &[]);
    let s = wait_for(&d, 10, "empty and live", |s| s.is_empty() && !s.is_stale()).await;
    assert_eq!(s.source(), Source::Api);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relapse_within_the_recovery_hold_serves_the_fresh_list_then_dns() {
    init_tracing();
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    dns.set_headless_service(FQDN, Some("tri"), 50051, &[ip("10.244.5.1")], 1);
    apply(&api, "greeter-service-a", "greeter-service", &[PodEndpoint::ready("10.1.0.1", "a")]);
    let mut cfg = api_config(&api, &dns);
    cfg.api.max_stale = Duration::from_millis(1500);
    cfg.api.recovery_hold = Duration::from_secs(5);
    let d = start(&cfg, greeter(), Metrics::default()).await.expect("start");
    wait_for(&d, 10, "api", |s| s.len() == 1).await;

    api.stop();
    let first = wait_for(&d, 10, "stale", |s| s.is_stale()).await;
    let outage_started = stale_since(&first).expect("stale");
    tokio::time::sleep(Duration::from_millis(600)).await;
    api.restart().await.expect("restart");
    wait_for(&d, 10, "briefly live", |s| !s.is_stale() && s.source() == Source::Api).await;
    // It fails again within the hold. What was listed a moment ago is current data: it is served
    // (stale from the relapse, not from the outage's start) until it is max_stale old, then DNS,
    // which was kept running through the hold and answers at once.
    api.stop();
    let relapsed = Instant::now();
    let s = wait_for(&d, 10, "stale again", |s| s.is_stale()).await;
    let since = stale_since(&s).expect("stale");
    assert!(since > outage_started, "the set listed after the restart is the one that ages");
    assert_eq!(s.source(), Source::Api, "fresh API data is served, not swapped for DNS at the relapse");
    let s = wait_for(&d, 6, "dns", |s| s.source() == Source::Dns).await;
    let waited = relapsed.elapsed();
    assert!(waited >= Duration::from_millis(1300), "DNS only once the API set is max_stale old: {waited:?}");
    assert_eq!(routable_keys(&s), ["10.244.5.1:50051"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_api_server_is_noticed_by_the_probe_not_the_idle_timeout() {
    init_tracing();
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    dns.set_headless_service(FQDN, Some("tri"), 50051, &[ip("10.244.9.1")], 1);
    apply(&api, "greeter-service-a", "greeter-service", &pods("greeter", 1, 3));
    let mut cfg = api_config(&api, &dns);
    cfg.api.probe_interval = Duration::from_millis(200);
    cfg.api.request_timeout = Duration::from_millis(300);
    cfg.api.watch_idle_timeout = Duration::from_secs(150); // far longer than this test
    cfg.api.max_stale = Duration::from_millis(1000);
    let d = start(&cfg, greeter(), Metrics::default()).await.expect("start");
    wait_for(&d, 10, "api", |s| s.source() == Source::Api && s.len() == 3).await;

    // As `docker pause` of the control plane: connections stay open, nothing answers.
    api.freeze();
    let frozen_at = Instant::now();
    let s = wait_for(&d, 5, "stale", |s| s.is_stale()).await;
    let noticed = frozen_at.elapsed();
    assert!(noticed < Duration::from_secs(2), "noticed in {noticed:?}");
    assert_eq!(s.len(), 3, "the last-known-good set is served meanwhile");
    let s = wait_for(&d, 10, "dns after max_stale", |s| s.source() == Source::Dns).await;
    assert_eq!(routable_keys(&s), ["10.244.9.1:50051"]);

    api.thaw();
    let thawed_at = Instant::now();
    wait_for(&d, 10, "api again", |s| s.source() == Source::Api && !s.is_stale()).await;
    eprintln!("frozen API: stale after {noticed:?}; back on the API {:?} after the thaw", thawed_at.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probes_old_verdict_does_not_undo_a_list_that_succeeded_after_it() {
    // Seen in CI: the API came back, the list succeeded and the watch it opened was ended at once
    // because the probe (next tick seconds away) still said "failing since the outage began"; the
    // fresh set was dated back to the outage and failover went back to DNS until the probe's tick.
    init_tracing();
    let api = FakeApiServer::start().await.expect("api");
    let dns = FakeDns::start(DOMAIN).await.expect("dns");
    dns.set_headless_service(FQDN, Some("tri"), 50051, &[ip("10.244.1.1")], 1);
    apply(&api, "greeter-service-a", "greeter-service", &pods("greeter", 1, 3));
    api.stop();
    let mut cfg = api_config(&api, &dns);
    cfg.api.probe_interval = Duration::from_secs(8); // its first tick (at start) fails; the next is far off
    cfg.api.max_stale = Duration::from_millis(500);
    let d = start(&cfg, greeter(), Metrics::default()).await.expect("start");
    wait_for(&d, 10, "dns fallback", |s| s.source() == Source::Dns).await;

    api.restart().await.expect("restart");
    let back =
        wait_for(&d, 5, "back on the API", |s| s.source() == Source::Api && s.freshness() == Freshness::Live).await;
    // Everything published for the next 3 s (well before the probe's next tick) stays live on the API.
    let mut rx = d.watch();
    rx.borrow_and_update();
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut seen = Vec::new();
    while let Ok(Ok(())) = tokio::time::timeout_at(until, rx.changed()).await {
        let s = rx.borrow_and_update().clone();
        seen.push((s.version(), s.source(), s.freshness()));
    }
    let now = d.current();
    assert_eq!(
        (now.source(), now.freshness(), now.len()),
        (Source::Api, Freshness::Live, 3),
        "published since: {seen:?}"
    );
    assert!(
        seen.iter().all(|(_, source, freshness)| *source == Source::Api && *freshness == Freshness::Live),
        "the set left the live API after version {}: {seen:?}",
        back.version()
    );
}
