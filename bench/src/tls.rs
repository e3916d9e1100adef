//! The cost of TLS: calls per second over TLS against plaintext for (a) a plain tonic client (tonic's
//! own rustls TLS) and (b) the library's balanced client (its own TLS connector, verifying the
//! Service's name), each on one connection to one provider binary; and the cost of a new connection
//! (TCP, TLS handshake, HTTP/2 set-up, first call) with and without TLS.

use std::path::Path;
use std::time::{Duration, Instant};

use discovery::client::{Balanced, ClientOptions};
use discovery::config::StaticEndpoint;
use discovery::tls::{ClientTlsOptions, FileRef, ServerIdentity, TlsFiles};
use discovery::{Discovery, DiscoveryConfig, Metrics, Mode, ServiceRef};
use provider::pb::greeter_service_client::GreeterServiceClient;
use testkit::certs::{Leaf, SecretDir, TestCa};

use crate::calls::{Call, Plan, Row, bench_options, rounds, tonic_call};
use crate::report::{Section, f};
use crate::util::{Placement, Summary, start_provider};

const NAME: &str = "greeter-bench.bench.svc.cluster.local";

pub async fn run(provider_bin: &Path, placement: &Placement, plan: &Plan, handshakes: usize) -> Section {
    let mut section = Section::new(
        "TLS cost",
        "Closed loop, unary `SayHello` to one provider binary (pinned to the provider core) on one connection, over \
         plaintext and over TLS 1.3 (ECDSA P-256 certificates from a test CA, rustls with ring on both sides). (a) a \
         plain tonic client (tonic's own TLS, `ClientTlsConfig`); (b) discovery's balanced client with that provider \
         as its whole Service (its own TLS connector, verifying the certificate against the Service's DNS name, not \
         the pod address). calls/s: median over the rounds. Then new connections one after another: connect (TCP, \
         TLS handshake, HTTP/2 set-up) and one call, each on a fresh channel.",
        &["client", "in flight", "calls/s", "p50 ms", "p99 ms", "failed", "vs same client plaintext"],
    );
    if let Err(e) = measure(provider_bin, placement, plan, handshakes, &mut section).await {
        section.problem(e);
    }
    section
}

async fn measure(
    provider_bin: &Path,
    placement: &Placement,
    plan: &Plan,
    handshakes: usize,
    section: &mut Section,
) -> Result<(), String> {
    let ca = TestCa::new("bench CA")?;
    let pair = ca.issue(&Leaf::server(&[NAME]))?;
    let dir = SecretDir::new(std::env::temp_dir().join(format!("dubbo-k8s-bench-tls-{}", std::process::id())))?;
    dir.write(&[("tls.crt", &pair.cert_pem), ("tls.key", &pair.key_pem), ("ca.crt", &ca.pem())])?;
    let (crt, key) = (dir.file("tls.crt").display().to_string(), dir.file("tls.key").display().to_string());
    let (_plain_p, plain_port) = start_provider(placement.command(provider_bin), "bench-plain", &[]).await?;
    let tls_env = [("PROVIDER_TLS_CERT", crt.as_str()), ("PROVIDER_TLS_KEY", key.as_str())];
    let (_tls_p, tls_port) = start_provider(placement.command(provider_bin), "bench-tls", &tls_env).await?;

    let tonic_tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca.pem()))
        .domain_name(NAME);
    let plain_endpoint = endpoint("http", plain_port)?;
    let tls_endpoint = endpoint("https", tls_port)?.tls_config(tonic_tls.clone()).map_err(|e| e.to_string())?;
    let a_plain = GreeterServiceClient::new(plain_endpoint.connect().await.map_err(|e| format!("(a) connect: {e}"))?);
    let a_tls = GreeterServiceClient::new(tls_endpoint.connect().await.map_err(|e| format!("(a) TLS connect: {e}"))?);
    let tls_opts = ClientTlsOptions::new(TlsFiles::new().with_ca(FileRef::new("bench CA", dir.file("ca.crt"))))
        .with_server(ServerIdentity::Dns(NAME.into()));
    let b_plain = balanced(plain_port, bench_options()).await?;
    let b_tls = balanced(tls_port, bench_options().with_tls(tls_opts)).await?;

    let clients: Vec<(&'static str, Call)> = vec![
        ("(a) plain tonic, plaintext", tonic_call(a_plain)),
        ("(a) plain tonic, TLS", tonic_call(a_tls)),
        ("(b) balanced client, plaintext", tonic_call(GreeterServiceClient::new(b_plain))),
        ("(b) balanced client, TLS", tonic_call(GreeterServiceClient::new(b_tls))),
    ];
    let results = rounds(&clients, plan).await;
    let mut rates = std::collections::HashMap::new();
    for (c, per_n) in results.iter().enumerate() {
        let name = clients[c].0;
        for (k, loads) in per_n.iter().enumerate() {
            let n = plan.in_flight[k];
            let row = Row::of(loads);
            rates.insert((name, n), row.rate);
            let plaintext = name.replace("TLS", "plaintext");
            let vs = rates.get(&(plaintext.as_str(), n)).filter(|_| name.ends_with("TLS")).map(|p| row.rate / p);
            section.row(vec![
                name.into(),
                n.to_string(),
                f(row.rate, 0),
                f(row.latency.p50, 3),
                f(row.latency.p99, 3),
                row.failed.to_string(),
                vs.map_or("-".into(), |r| format!("{r:.2}×")),
            ]);
            if row.failed > 0 || row.calls == 0 {
                section.problem(format!("{name} at {n} in flight: {} calls, {} failed", row.calls, row.failed));
            }
        }
    }
    for &n in &plan.in_flight {
        let (a, b) = (rates[&("(a) plain tonic, TLS", n)], rates[&("(b) balanced client, TLS", n)]);
        let ratio = b / a.max(f64::MIN_POSITIVE);
        section.target(
            &format!("(b) over TLS ≥ 0.9 × (a) over TLS at {n} in flight"),
            ratio >= 0.9,
            format!("{ratio:.2}×"),
        );
    }

    // New connections, one after another: the handshake's cost, plaintext against TLS.
    let plain = connections(handshakes, || plain_endpoint.clone()).await?;
    let tls = connections(handshakes, || tls_endpoint.clone()).await?;
    let extra = tls.p50 - plain.p50;
    section.note(format!(
        "new connection and first call, {handshakes} in a row: plaintext p50 {} ms, p99 {} ms; TLS p50 {} ms, p99 {} \
         ms; the TLS handshake adds {} ms at the median",
        f(plain.p50, 3),
        f(plain.p99, 3),
        f(tls.p50, 3),
        f(tls.p99, 3),
        f(extra, 3)
    ));
    section.note(format!(
        "{} rounds × {:?} measured after {:?} warm-up per client and concurrency; {}",
        plan.rounds,
        plan.measure,
        plan.warmup,
        placement.describe()
    ));
    Ok(())
}

fn endpoint(scheme: &str, port: u16) -> Result<tonic::transport::Endpoint, String> {
    tonic::transport::Endpoint::from_shared(format!("{scheme}://127.0.0.1:{port}")).map_err(|e| e.to_string())
}

/// `n` fresh channels in a row, each connected and called once: milliseconds per connection.
async fn connections(n: usize, endpoint: impl Fn() -> tonic::transport::Endpoint) -> Result<Summary, String> {
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let channel = endpoint().connect().await.map_err(|e| format!("connect: {e}"))?;
        let mut client = GreeterServiceClient::new(channel);
        client.say_hello(provider::pb::HelloRequest::default()).await.map_err(|e| format!("first call: {e}"))?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Summary::of(&ms))
}

async fn balanced(port: u16, opts: ClientOptions) -> Result<Balanced, String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let cfg = DiscoveryConfig::new(Mode::Static).with_static_endpoints([StaticEndpoint::ip(addr)]);
    let hub = Discovery::new(&cfg, Metrics::default()).await.map_err(|e| format!("discovery: {e}"))?;
    let service = ServiceRef::new(provider::INTERFACE).with_version("1.0.0");
    let client = Balanced::new(&hub, service, opts).await.map_err(|e| format!("balanced client: {e}"))?;
    if !client.wait_routable(Duration::from_secs(10)).await {
        return Err("the balanced client found no provider".into());
    }
    Ok(client)
}
