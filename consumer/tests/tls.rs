//! TLS and mutual TLS between the real provider and the balanced client over Triple on loopback:
//! callers refused with the reason, TLS failures classified without a retry storm, certificates and
//! CAs rotated under traffic through a directory that changes as a mounted Secret does, and garbage
//! written during a reload.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use discovery::client::{Balanced, CAUSE_METADATA, ClientOptions, MethodPolicy};
use discovery::config::StaticEndpoint;
use discovery::tls::{ClientTlsOptions, FileRef, ServerIdentity, TlsFiles};
use discovery::{Discovery, DiscoveryConfig, Metrics, Mode, ServiceRef};
use provider::pb::HelloRequest;
use provider::pb::greeter_service_client::GreeterServiceClient;
use provider::{Provider, ProviderConfig};
use testkit::certs::{Leaf, Pair, SecretDir, TestCa};

const NAME: &str = "greeter.tls-test.svc.cluster.local";
const CONSUMER_ID: &str = "spiffe://cluster.local/ns/tls-test/sa/consumer";
const SAY_HELLO: &str = "/org.apache.dubbo.demo.GreeterService/SayHello";

fn dir(name: &str) -> SecretDir {
    let path = std::env::temp_dir().join(format!("dubbo-k8s-tls-{}-{name}", std::process::id()));
    SecretDir::new(path).expect("secret dir")
}

fn write(d: &SecretDir, pair: Option<&Pair>, ca: &str) {
    let mut files = vec![("ca.crt", ca)];
    if let Some(p) = pair {
        files.push(("tls.crt", &p.cert_pem));
        files.push(("tls.key", &p.key_pem));
    }
    d.write(&files).expect("write secret");
}

/// A provider serving TLS from `d` (mutual TLS with `allow` when `mutual`).
async fn provider(d: &SecretDir, mutual: bool, allow: &[&str]) -> Provider {
    let mut cfg = ProviderConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        drain: Duration::ZERO,
        tls_cert: Some(d.file("tls.crt")),
        tls_key: Some(d.file("tls.key")),
        tls_reload_interval: Duration::from_millis(100),
        ..ProviderConfig::default()
    };
    if mutual {
        cfg.tls_client_ca = Some(d.file("ca.crt"));
        cfg.tls_allow = allow.iter().map(|s| (*s).to_owned()).collect();
    }
    Provider::start(cfg).await.expect("provider starts")
}

fn tls_options(d: &SecretDir, with_cert: bool, server: ServerIdentity) -> ClientOptions {
    let mut files = TlsFiles::new()
        .with_ca(FileRef::new("DISCOVERY_TLS_CA", d.file("ca.crt")))
        .with_reload_interval(Duration::from_millis(100));
    if with_cert {
        files = files.with_pair(
            FileRef::new("DISCOVERY_TLS_CERT", d.file("tls.crt")),
            FileRef::new("DISCOVERY_TLS_KEY", d.file("tls.key")),
        );
    }
    ClientOptions::default()
        .with_tls(ClientTlsOptions::new(files).with_server(server))
        .method(SAY_HELLO, MethodPolicy::idempotent())
}

async fn balanced(addrs: &[SocketAddr], opts: ClientOptions) -> Balanced {
    let cfg = DiscoveryConfig::new(Mode::Static).with_static_endpoints(addrs.iter().map(|a| StaticEndpoint::ip(*a)));
    let hub = Discovery::new(&cfg, Metrics::default()).await.expect("hub");
    let watch = hub.service(ServiceRef::new(provider::INTERFACE).with_version("1.0.0")).await.expect("watch");
    let b = Balanced::from_watch(watch, None, opts).expect("client");
    assert!(b.ready(Duration::from_secs(5)).await);
    b
}

async fn hello(b: &Balanced) -> Result<String, tonic::Status> {
    let mut c = GreeterServiceClient::new(b.clone());
    let mut req = tonic::Request::new(HelloRequest { name: "tls".into(), ..Default::default() });
    req.set_timeout(Duration::from_secs(3));
    c.say_hello(req).await.map(|r| r.into_inner().served_by.map(|i| i.name).unwrap_or_default())
}

fn cause(s: &tonic::Status) -> String {
    s.metadata().get(CAUSE_METADATA).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned()
}

#[tokio::test]
async fn mutual_tls_admits_allowed_callers_and_refuses_others_saying_why() {
    let ca = TestCa::new("test CA").expect("ca");
    let sd = dir("mtls-provider");
    write(&sd, Some(&ca.issue(&Leaf::server(&[NAME])).expect("leaf")), &ca.pem());
    let p = provider(&sd, true, &[CONSUMER_ID]).await;
    let addr = [p.addr()];

    // An allowed caller.
    let allowed = dir("mtls-allowed");
    write(&allowed, Some(&ca.issue(&Leaf::client(CONSUMER_ID)).expect("leaf")), &ca.pem());
    let b = balanced(&addr, tls_options(&allowed, true, ServerIdentity::Dns(NAME.into()))).await;
    assert!(hello(&b).await.is_ok(), "an allowed caller is served");
    let status = b.tls_status().expect("tls on");
    assert_eq!(status.current.cert.as_ref().map(|c| c.uris.clone()), Some(vec![CONSUMER_ID.to_owned()]));

    // No certificate: UNAUTHENTICATED naming what is missing.
    let none = balanced(&addr, tls_options(&allowed, false, ServerIdentity::Dns(NAME.into()))).await;
    let e = hello(&none).await.expect_err("no certificate");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("no client certificate"), "{e:?}");

    // A certificate whose name is not allowed: PERMISSION_DENIED naming it.
    let stranger = dir("mtls-stranger");
    let other = "spiffe://cluster.local/ns/tls-test/sa/stranger";
    write(&stranger, Some(&ca.issue(&Leaf::client(other)).expect("leaf")), &ca.pem());
    let s = balanced(&addr, tls_options(&stranger, true, ServerIdentity::Dns(NAME.into()))).await;
    let e = hello(&s).await.expect_err("not allowed");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains(other) && e.message().contains(CONSUMER_ID), "{e:?}");

    // A certificate from a CA the provider does not trust: the handshake is refused, and the
    // client says the provider refused it.
    let rogue_ca = TestCa::new("rogue CA").expect("ca");
    let rogue = dir("mtls-rogue");
    let pair = rogue_ca.issue(&Leaf::client(CONSUMER_ID)).expect("leaf");
    rogue.write(&[("ca.crt", &ca.pem()), ("tls.crt", &pair.cert_pem), ("tls.key", &pair.key_pem)]).expect("write");
    let r = balanced(&addr, tls_options(&rogue, true, ServerIdentity::Dns(NAME.into()))).await;
    let e = hello(&r).await.expect_err("rogue CA");
    // The provider's alert; or, when our request crossed it and the reset discarded it, the close
    // with the hint (the cause stays the close's own: the request may have been processed).
    let refused = cause(&e) == "tls_handshake" || e.message().contains("refuse our client certificate");
    assert!(refused, "{e:?}");

    // A plaintext client on the TLS port: UNAUTHENTICATED saying TLS is required; its health probe
    // (what kubelet's gRPC probe does) is answered.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", p.addr())).expect("uri").connect_lazy();
    let mut plain = GreeterServiceClient::new(channel.clone());
    let e = plain.say_hello(HelloRequest::default()).await.expect_err("plaintext refused");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("requires TLS"), "{e:?}");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest { service: provider::INTERFACE.into() })
        .await
        .expect("health over plaintext");
    assert_eq!(answer.into_inner().status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
}

#[tokio::test]
async fn tls_failures_are_classified_and_tried_on_one_more_endpoint_at_most() {
    let ca = TestCa::new("test CA").expect("ca");
    let sd = dir("classify-provider");
    write(&sd, Some(&ca.issue(&Leaf::server(&[NAME])).expect("leaf")), &ca.pem());
    let (p1, p2) = (provider(&sd, false, &[]).await, provider(&sd, false, &[]).await);
    let addrs = [p1.addr(), p2.addr()];

    let other_ca = TestCa::new("another CA").expect("ca");
    let wrong_ca = dir("classify-wrong-ca");
    write(&wrong_ca, None, &other_ca.pem());
    let right_ca = dir("classify-right-ca");
    write(&right_ca, None, &ca.pem());

    for (what, opts, want) in [
        ("unknown CA", tls_options(&wrong_ca, false, ServerIdentity::Dns(NAME.into())), "tls_unknown_ca"),
        ("wrong name", tls_options(&right_ca, false, ServerIdentity::Dns("other.svc".into())), "tls_name_mismatch"),
        (
            "wrong URI SAN",
            tls_options(&right_ca, false, ServerIdentity::Uri("spiffe://cluster.local/ns/x/sa/greeter".into())),
            "tls_name_mismatch",
        ),
    ] {
        let b = balanced(&addrs, opts).await;
        for _ in 0..5 {
            let e = hello(&b).await.expect_err(what);
            assert_eq!(cause(&e), want, "{what}: {e:?}");
            assert!(e.message().contains("TLS configuration error"), "{what}: {e:?}");
            assert!(e.message().contains("127.0.0.1:"), "{what}: the message names the provider: {e:?}");
            let attempts = e.metadata().get("dubbo-k8s-attempts").and_then(|v| v.to_str().ok()).unwrap_or("-");
            assert_eq!(attempts, "2", "{what}: one more endpoint is tried, then no more (retries allow 3): {e:?}");
        }
        assert!(b.debug().members.iter().all(|m| m.ejected_for_ms == 0), "{what}: nothing ejected");
    }

    // A TLS client on a plaintext port.
    let plain = ProviderConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        drain: Duration::ZERO,
        ..ProviderConfig::default()
    };
    let plain = Provider::start(plain).await.expect("plaintext provider");
    let b = balanced(&[plain.addr()], tls_options(&right_ca, false, ServerIdentity::Dns(NAME.into()))).await;
    let e = hello(&b).await.expect_err("TLS to a plaintext port");
    assert_eq!(cause(&e), "tls_handshake", "{e:?}");
    assert!(e.message().contains("plaintext port"), "{e:?}");

    // A certificate that expires while it is served.
    let short = dir("classify-short");
    write(&short, Some(&ca.issue(&Leaf::server(&[NAME]).valid(-60, 2)).expect("leaf")), &ca.pem());
    let p3 = provider(&short, false, &[]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b = balanced(&[p3.addr()], tls_options(&right_ca, false, ServerIdentity::Dns(NAME.into()))).await;
    let e = hello(&b).await.expect_err("expired");
    assert_eq!(cause(&e), "tls_expired", "{e:?}");
}

#[tokio::test]
async fn a_failing_endpoint_among_good_ones_is_retried_elsewhere_and_ejected() {
    // One provider presents a certificate of a CA the client does not trust (a rotation gone wrong
    // on one pod): the others answer, so that endpoint is at fault, not the configuration.
    let ca = TestCa::new("test CA").expect("ca");
    let good = dir("one-bad-good");
    write(&good, Some(&ca.issue(&Leaf::server(&[NAME])).expect("leaf")), &ca.pem());
    let other_ca = TestCa::new("other CA").expect("ca");
    let bad = dir("one-bad-bad");
    write(&bad, Some(&other_ca.issue(&Leaf::server(&[NAME])).expect("leaf")), &other_ca.pem());
    let (g1, g2, x) =
        (provider(&good, false, &[]).await, provider(&good, false, &[]).await, provider(&bad, false, &[]).await);
    let client_dir = dir("one-bad-client");
    write(&client_dir, None, &ca.pem());
    let b =
        balanced(&[g1.addr(), g2.addr(), x.addr()], tls_options(&client_dir, false, ServerIdentity::Dns(NAME.into())))
            .await;
    // Warm the good connections first so that "others answered" holds.
    for _ in 0..200 {
        hello(&b).await.expect("served: a TLS failure on one endpoint is retried on another");
    }
    let debug = b.debug();
    let bad_member = debug.members.iter().find(|m| m.endpoint == x.addr().to_string()).expect("member");
    assert!(bad_member.ejected_for_ms > 0 || bad_member.consecutive_failures > 0, "{debug:?}");
    assert!(b.stats().retries > 0);
}

#[tokio::test]
async fn certificates_and_cas_rotate_under_traffic_without_a_failed_call() {
    let ca1 = TestCa::new("CA one").expect("ca");
    let (sd, cd) = (dir("rotate-provider"), dir("rotate-client"));
    write(&sd, Some(&ca1.issue(&Leaf::server(&[NAME])).expect("leaf")), &ca1.pem());
    write(&cd, Some(&ca1.issue(&Leaf::client(CONSUMER_ID)).expect("leaf")), &ca1.pem());
    let (p1, p2) = (provider(&sd, true, &[CONSUMER_ID]).await, provider(&sd, true, &[CONSUMER_ID]).await);
    let addrs = [p1.addr(), p2.addr()];
    let b = balanced(&addrs, tls_options(&cd, true, ServerIdentity::Dns(NAME.into()))).await;

    // Steady traffic on the long-lived client for the whole rotation.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (b, stop, ok, failed) = (b.clone(), stop.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match hello(&b).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("failed during rotation: {e:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let generation = |p: &Provider| p.tls_status().expect("tls").current.generation;
    let wait_both = |want: u64| {
        let (p1, p2) = (&p1, &p2);
        async move {
            for _ in 0..50 {
                if generation(p1) >= want && generation(p2) >= want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("providers did not reload to generation {want}");
        }
    };
    // A fresh client (new handshakes) must succeed after every step: the new material works.
    let fresh = |server: &'static str| {
        let cd = &cd;
        let addrs = &addrs;
        async move {
            let f = balanced(addrs, tls_options(cd, true, ServerIdentity::Dns(server.into()))).await;
            for _ in 0..4 {
                hello(&f).await.expect("a new connection after the step");
            }
        }
    };

    // 1. New leaf certificates, same CA.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let serial_before = p1.tls_status().expect("tls").current.cert.expect("cert").serial;
    write(&sd, Some(&ca1.issue(&Leaf::server(&[NAME])).expect("leaf")), &ca1.pem());
    write(&cd, Some(&ca1.issue(&Leaf::client(CONSUMER_ID)).expect("leaf")), &ca1.pem());
    wait_both(2).await;
    assert_ne!(p1.tls_status().expect("tls").current.cert.expect("cert").serial, serial_before);
    fresh(NAME).await;

    // 2. A new CA rolled in: first trusted beside the old one everywhere...
    let ca2 = TestCa::new("CA two").expect("ca");
    let both = format!("{}{}", ca1.pem(), ca2.pem());
    write(&sd, Some(&ca1.issue(&Leaf::server(&[NAME])).expect("leaf")), &both);
    write(&cd, Some(&ca1.issue(&Leaf::client(CONSUMER_ID)).expect("leaf")), &both);
    wait_both(3).await;
    fresh(NAME).await;
    // ... then certificates of the new CA...
    write(&sd, Some(&ca2.issue(&Leaf::server(&[NAME])).expect("leaf")), &both);
    write(&cd, Some(&ca2.issue(&Leaf::client(CONSUMER_ID)).expect("leaf")), &both);
    wait_both(4).await;
    fresh(NAME).await;
    // ... and the old CA retired.
    write(&sd, Some(&ca2.issue(&Leaf::server(&[NAME])).expect("leaf")), &ca2.pem());
    write(&cd, Some(&ca2.issue(&Leaf::client(CONSUMER_ID)).expect("leaf")), &ca2.pem());
    wait_both(5).await;
    fresh(NAME).await;
    let client_status = b.tls_status().expect("tls");
    assert_eq!(client_status.current.cas.len(), 1, "{client_status:?}");
    assert_eq!(client_status.current.cas[0].subject, "CN=CA two");

    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("rotation: {ok} calls, {failed} failed");
    assert!(ok > 100, "traffic ran: {ok}");
    assert_eq!(failed, 0, "no call failed during the rotation");
}

#[tokio::test]
async fn garbage_written_during_a_reload_keeps_the_last_good_pair() {
    let ca = TestCa::new("test CA").expect("ca");
    let sd = dir("garbage-provider");
    write(&sd, Some(&ca.issue(&Leaf::server(&[NAME])).expect("leaf")), &ca.pem());
    let p = provider(&sd, false, &[]).await;
    let cd = dir("garbage-client");
    write(&cd, None, &ca.pem());
    let opts = || tls_options(&cd, false, ServerIdentity::Dns(NAME.into()));

    let pair = |leaf: Leaf| ca.issue(&leaf).expect("leaf");
    let (a, b) = (pair(Leaf::server(&[NAME])), pair(Leaf::server(&[NAME])));
    let expired = pair(Leaf::server(&[NAME]).valid(-7200, -3600));
    let future = pair(Leaf::server(&[NAME]).valid(3600, 7200));
    type Files = Vec<(&'static str, String)>;
    let cases: Vec<(&str, Files, &str)> = vec![
        (
            "garbage",
            vec![("tls.crt", "not a certificate".into()), ("tls.key", "nor a key".into())],
            "PROVIDER_TLS_CERT",
        ),
        ("a key of another certificate", vec![("tls.crt", a.cert_pem), ("tls.key", b.key_pem)], "does not match"),
        ("an expired certificate", vec![("tls.crt", expired.cert_pem), ("tls.key", expired.key_pem)], "expired"),
        (
            "a certificate not valid yet",
            vec![("tls.crt", future.cert_pem), ("tls.key", future.key_pem)],
            "not valid before",
        ),
    ];
    let ca_pem = ca.pem();
    for (n, (what, files, words)) in cases.iter().enumerate() {
        let refs: Vec<(&str, &str)> =
            files.iter().map(|(k, v)| (*k, v.as_str())).chain([("ca.crt", ca_pem.as_str())]).collect();
        sd.write(&refs).expect("write");
        let mut status = p.tls_status().expect("tls");
        for _ in 0..50 {
            if status.failed_reloads > n as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            status = p.tls_status().expect("tls");
        }
        assert_eq!(status.failed_reloads, n as u64 + 1, "{what}: {status:?}");
        let error = status.last_error.clone().unwrap_or_default();
        assert!(error.contains(words), "{what}: {error}");
        assert_eq!(status.current.generation, 1, "{what}: the first pair is still in use");
        let b = balanced(&[p.addr()], opts()).await;
        hello(&b).await.unwrap_or_else(|e| panic!("{what}: new connections still get the last good pair: {e:?}"));
    }
    // A good pair again: taken.
    write(&sd, Some(&ca.issue(&Leaf::server(&[NAME])).expect("leaf")), &ca.pem());
    for _ in 0..50 {
        if p.tls_status().expect("tls").current.generation == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = p.tls_status().expect("tls");
    assert_eq!(status.current.generation, 2, "{status:?}");
    assert_eq!(status.last_error, None);
}
