//! Bad TLS input on the real binaries: certificates that are expired, not valid yet, from the wrong
//! CA, for the wrong name, a missing file, a key that does not match, garbage written during a
//! reload, a plaintext client on the TLS port and a TLS client on the plaintext port, and mutual-TLS
//! callers without a certificate or not allowed. Each must be a clear error naming the file or the
//! peer, counted, and never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use discovery::client::{Balanced, CAUSE_METADATA, ClientMetrics, ClientOptions};
use discovery::config::StaticEndpoint;
use discovery::tls::{ClientTlsOptions, FileRef, ServerIdentity, TlsFiles};
use discovery::{Discovery, DiscoveryConfig, Metrics, Mode, ServiceRef};
use prometheus_client::registry::Registry;
use provider::pb::HelloRequest;
use provider::pb::greeter_service_client::GreeterServiceClient;
use testkit::certs::{Leaf, Pair, SecretDir, TestCa};

use crate::report::Section;
use crate::util::{Helper, free_port, wait_tcp};

const NAME: &str = "greeter.faults.svc.cluster.local";
const CONSUMER_ID: &str = "spiffe://cluster.local/ns/faults/sa/consumer";

pub async fn run(provider_bin: &Path, consumer_bin: &Path) -> Section {
    let mut section = Section::new(
        "Bad TLS input",
        "Certificates and peers that are wrong, on the release binaries: at start (expected: exit code 2 and a \
         message naming the variable and the file) and while serving (expected: the call fails with a gRPC code and \
         a `dubbo-k8s-cause` naming the peer and the reason, or the last good certificate is kept; counted in the \
         metric shown; never a panic).",
        &["case", "side", "outcome", "message (first line, shortened)", "counted"],
    );
    let base = std::env::temp_dir().join(format!("dubbo-k8s-tls-faults-{}", std::process::id()));
    if let Err(e) = cases(provider_bin, consumer_bin, &base, &mut section).await {
        section.problem(e);
    }
    let _ = std::fs::remove_dir_all(&base);
    section
}

fn short(text: &str) -> String {
    let first = text.lines().next().unwrap_or_default();
    let t: String = first.chars().take(190).collect();
    if first.chars().count() > 190 { format!("{t}…") } else { t }
}

/// Writes a Secret-like directory with `pair` and `ca`.
fn secret(base: &Path, name: &str, pair: &Pair, ca: &str) -> Result<SecretDir, String> {
    let d = SecretDir::new(base.join(name))?;
    d.write(&[("tls.crt", &pair.cert_pem), ("tls.key", &pair.key_pem), ("ca.crt", ca)])?;
    Ok(d)
}

fn tls_env(d: &SecretDir, mutual: bool) -> Vec<(String, String)> {
    let mut env = vec![
        ("PROVIDER_TLS_CERT".to_owned(), d.file("tls.crt").display().to_string()),
        ("PROVIDER_TLS_KEY".to_owned(), d.file("tls.key").display().to_string()),
        ("PROVIDER_TLS_RELOAD_INTERVAL".to_owned(), "200ms".to_owned()),
    ];
    if mutual {
        env.push(("PROVIDER_TLS_CLIENT_CA".to_owned(), d.file("ca.crt").display().to_string()));
        env.push(("PROVIDER_TLS_ALLOW".to_owned(), CONSUMER_ID.to_owned()));
    }
    env
}

/// A provider binary serving with `env`, its log kept to look for panics.
struct Running {
    _helper: Helper,
    port: u16,
    admin: u16,
    log: PathBuf,
}

async fn provider(bin: &Path, base: &Path, name: &str, env: &[(String, String)]) -> Result<Running, String> {
    let (port, admin) = (free_port().map_err(|e| e.to_string())?, free_port().map_err(|e| e.to_string())?);
    let log = base.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(bin);
    cmd.env("PROVIDER_LISTEN", format!("127.0.0.1:{port}"))
        .env("PROVIDER_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("PROVIDER_INSTANCE", name)
        .env("PROVIDER_DRAIN", "0s")
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file);
    let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let helper = Helper { child };
    wait_tcp(([127, 0, 0, 1], admin).into(), Duration::from_secs(20)).await?;
    Ok(Running { _helper: helper, port, admin, log })
}

/// A metric's value from a provider's `/metrics` (the first series whose line starts with `series`).
async fn metric(admin: u16, series: &str) -> f64 {
    let Ok(text) = http_get(admin, "/metrics").await else { return 0.0 };
    value_in(&text, series)
}

/// The value of the first line of a Prometheus text exposition that starts with `series` (0: none).
fn value_in(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn http_get(port: u16, path: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.map_err(|e| e.to_string())?;
    Ok(out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// A balanced client of the provider at `port`, with its metrics registry.
async fn client(port: u16, tls: Option<ClientTlsOptions>) -> Result<(Balanced, Registry), String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let cfg = DiscoveryConfig::new(Mode::Static).with_static_endpoints([StaticEndpoint::ip(addr)]);
    let hub = Discovery::new(&cfg, Metrics::default()).await.map_err(|e| e.to_string())?;
    let mut registry = Registry::default();
    let mut opts = ClientOptions::default().with_metrics(ClientMetrics::register(&mut registry));
    opts.tls = tls;
    let b = Balanced::new(&hub, ServiceRef::new(provider::INTERFACE).with_version("1.0.0"), opts)
        .await
        .map_err(|e| e.to_string())?;
    b.wait_routable(Duration::from_secs(5)).await;
    Ok((b, registry))
}

/// The value of the first series of `registry` whose line starts with `series`.
fn series(registry: &Registry, series: &str) -> f64 {
    let mut text = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    value_in(&text, series)
}

fn trust(d: &SecretDir, with_cert: bool, server: &str) -> ClientTlsOptions {
    let mut files = TlsFiles::new().with_ca(FileRef::new("DISCOVERY_TLS_CA", d.file("ca.crt")));
    if with_cert {
        files = files.with_pair(
            FileRef::new("DISCOVERY_TLS_CERT", d.file("tls.crt")),
            FileRef::new("DISCOVERY_TLS_KEY", d.file("tls.key")),
        );
    }
    ClientTlsOptions::new(files).with_server(ServerIdentity::Dns(server.into()))
}

/// One call; the outcome as "CODE (cause)" and the message.
async fn call(b: &Balanced) -> (String, String) {
    let mut c = GreeterServiceClient::new(b.clone());
    let mut req = tonic::Request::new(HelloRequest { name: "faults".into(), ..Default::default() });
    req.set_timeout(Duration::from_secs(3));
    match c.say_hello(req).await {
        Ok(_) => ("OK".into(), String::new()),
        Err(s) => {
            let cause = s.metadata().get(CAUSE_METADATA).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
            (format!("{:?} ({cause})", s.code()), s.message().to_owned())
        }
    }
}

async fn cases(provider_bin: &Path, consumer_bin: &Path, base: &Path, section: &mut Section) -> Result<(), String> {
    std::fs::create_dir_all(base).map_err(|e| e.to_string())?;
    let ca = TestCa::new("faults CA")?;
    let other_ca = TestCa::new("another CA")?;
    let good = ca.issue(&Leaf::server(&[NAME]))?;
    let client_pair = ca.issue(&Leaf::client(CONSUMER_ID))?;

    // At start: the binaries refuse, naming the variable and the file.
    let expired = secret(base, "expired", &ca.issue(&Leaf::server(&[NAME]).valid(-7200, -3600))?, &ca.pem())?;
    let future = secret(base, "future", &ca.issue(&Leaf::server(&[NAME]).valid(3600, 7200))?, &ca.pem())?;
    let mismatch = SecretDir::new(base.join("mismatch"))?;
    let other = ca.issue(&Leaf::server(&[NAME]))?;
    mismatch.write(&[("tls.crt", &good.cert_pem), ("tls.key", &other.key_pem), ("ca.crt", &ca.pem())])?;
    let garbage = SecretDir::new(base.join("garbage"))?;
    garbage.write(&[("tls.crt", "garbage"), ("tls.key", "garbage"), ("ca.crt", "garbage")])?;
    let fine = secret(base, "fine", &good, &ca.pem())?;
    let missing = base.join("missing/tls.crt").display().to_string();
    let path = |d: &SecretDir, f: &str| d.file(f).display().to_string();
    type Vars<'a> = Vec<(&'a str, String)>;
    let start_cases: Vec<(&str, &Path, Vars, &str, &str)> = vec![
        (
            "missing certificate file",
            provider_bin,
            vec![("PROVIDER_TLS_CERT", missing.clone()), ("PROVIDER_TLS_KEY", path(&fine, "tls.key"))],
            "PROVIDER_TLS_CERT",
            "missing/tls.crt",
        ),
        (
            "expired certificate",
            provider_bin,
            vec![("PROVIDER_TLS_CERT", path(&expired, "tls.crt")), ("PROVIDER_TLS_KEY", path(&expired, "tls.key"))],
            "PROVIDER_TLS_CERT",
            "expired at",
        ),
        (
            "certificate not valid yet",
            provider_bin,
            vec![("PROVIDER_TLS_CERT", path(&future, "tls.crt")), ("PROVIDER_TLS_KEY", path(&future, "tls.key"))],
            "PROVIDER_TLS_CERT",
            "not valid before",
        ),
        (
            "key of another certificate",
            provider_bin,
            vec![("PROVIDER_TLS_CERT", path(&mismatch, "tls.crt")), ("PROVIDER_TLS_KEY", path(&mismatch, "tls.key"))],
            "PROVIDER_TLS_KEY",
            "does not match",
        ),
        (
            "garbage certificate",
            provider_bin,
            vec![("PROVIDER_TLS_CERT", path(&garbage, "tls.crt")), ("PROVIDER_TLS_KEY", path(&fine, "tls.key"))],
            "PROVIDER_TLS_CERT",
            "no usable certificate",
        ),
        (
            "garbage client CA",
            provider_bin,
            vec![
                ("PROVIDER_TLS_CERT", path(&fine, "tls.crt")),
                ("PROVIDER_TLS_KEY", path(&fine, "tls.key")),
                ("PROVIDER_TLS_CLIENT_CA", path(&garbage, "ca.crt")),
            ],
            "PROVIDER_TLS_CLIENT_CA",
            "no usable CA certificate",
        ),
        (
            "missing CA file",
            consumer_bin,
            vec![("DISCOVERY_TLS_CA", missing.replace("tls.crt", "ca.crt"))],
            "DISCOVERY_TLS_CA",
            "missing/ca.crt",
        ),
        (
            "client key of another certificate",
            consumer_bin,
            vec![
                ("DISCOVERY_TLS_CA", path(&fine, "ca.crt")),
                ("DISCOVERY_TLS_CERT", path(&mismatch, "tls.crt")),
                ("DISCOVERY_TLS_KEY", path(&mismatch, "tls.key")),
            ],
            "DISCOVERY_TLS_KEY",
            "does not match",
        ),
    ];
    for (what, bin, env, var, words) in start_cases {
        let is_consumer = bin == consumer_bin;
        let mut cmd = Command::new(bin);
        if is_consumer {
            cmd.args(["resolve", "--timeout", "1s"])
                .env("DISCOVERY_MODE", "static")
                .env("DISCOVERY_STATIC_ENDPOINTS", "127.0.0.1:1");
        } else {
            cmd.env("PROVIDER_LISTEN", "127.0.0.1:0").env("PROVIDER_ADMIN_LISTEN", "127.0.0.1:0");
        }
        let out = cmd.envs(env).env("RUST_LOG", "off").stdin(Stdio::null()).output().map_err(|e| e.to_string())?;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out.status.code();
        let side = if is_consumer { "consumer (start)" } else { "provider (start)" };
        section.row(vec![
            what.into(),
            side.into(),
            format!("exit {}", code.map_or("signal".into(), |c| c.to_string())),
            short(&err),
            "exit code 2".into(),
        ]);
        if code != Some(2) || !err.contains(var) || !err.contains(words) || err.contains("panicked") {
            section.problem(format!("{what}: exit {code:?}, expected 2 naming {var} and {words:?}: {}", short(&err)));
        }
    }

    // While serving.
    let tls_dir = secret(base, "serving", &good, &ca.pem())?;
    let tls_p = provider(provider_bin, base, "tls", &tls_env(&tls_dir, false)).await?;
    let mtls_dir = secret(base, "serving-mtls", &ca.issue(&Leaf::server(&[NAME]))?, &ca.pem())?;
    let mtls_p = provider(provider_bin, base, "mtls", &tls_env(&mtls_dir, true)).await?;
    let plain_p = provider(provider_bin, base, "plain", &[]).await?;
    let short_dir = secret(base, "short-lived", &ca.issue(&Leaf::server(&[NAME]).valid(-60, 2))?, &ca.pem())?;
    let short_p = provider(provider_bin, base, "short-lived", &tls_env(&short_dir, false)).await?;
    let trusting = secret(base, "client", &client_pair, &ca.pem())?;
    let wrong_trust = secret(base, "client-wrong-ca", &client_pair, &other_ca.pem())?;
    let stranger = secret(
        base,
        "client-stranger",
        &ca.issue(&Leaf::client("spiffe://cluster.local/ns/x/sa/stranger"))?,
        &ca.pem(),
    )?;
    let rogue = secret(base, "client-rogue", &other_ca.issue(&Leaf::client(CONSUMER_ID))?, &ca.pem())?;
    tokio::time::sleep(Duration::from_secs(3)).await; // the short-lived certificate expires

    let runtime: Vec<(&str, &Running, Option<ClientTlsOptions>, &str, &str)> = vec![
        (
            "provider's CA not trusted",
            &tls_p,
            Some(trust(&wrong_trust, false, NAME)),
            "tls_unknown_ca",
            "client unknown_ca",
        ),
        (
            "wrong server name",
            &tls_p,
            Some(trust(&trusting, false, "other.faults.svc")),
            "tls_name_mismatch",
            "client name_mismatch",
        ),
        (
            "provider's certificate expired while served",
            &short_p,
            Some(trust(&trusting, false, NAME)),
            "tls_expired",
            "client expired",
        ),
        (
            "TLS client on the plaintext port",
            &plain_p,
            Some(trust(&trusting, false, NAME)),
            "tls_handshake",
            "client not_tls",
        ),
        ("plaintext client on the TLS port", &tls_p, None, "Unauthenticated", "refused plaintext"),
        (
            "mutual TLS, no client certificate",
            &mtls_p,
            Some(trust(&trusting, false, NAME)),
            "Unauthenticated",
            "refused no_certificate",
        ),
        (
            "mutual TLS, name not allowed",
            &mtls_p,
            Some(trust(&stranger, true, NAME)),
            "PermissionDenied",
            "refused not_allowed",
        ),
        (
            "mutual TLS, client certificate of an unknown CA",
            &mtls_p,
            Some(trust(&rogue, true, NAME)),
            "tls_handshake",
            "server unknown_ca",
        ),
    ];
    for (what, p, tls, want, count) in &runtime {
        let (b, registry) = client(p.port, tls.clone()).await?;
        let (outcome, message) = call(&b).await;
        let (kind, label) = count.split_once(' ').unwrap_or_default();
        let name = match kind {
            "client" => format!("discovery_client_tls_handshake_failures_total{{role=\"client\",cause=\"{label}\"}}"),
            "refused" => format!("provider_tls_refused_calls_total{{reason=\"{label}\"}}"),
            _ => format!("provider_tls_handshake_failures_total{{role=\"server\",cause=\"{label}\"}}"),
        };
        let value = if kind == "client" { series(&registry, &name) } else { metric(p.admin, &name).await };
        let counted = format!("`{name}` {value}");
        section.row(vec![
            (*what).into(),
            "client ⇄ provider".into(),
            outcome.clone(),
            short(&message),
            counted.clone(),
        ]);
        let names_peer = !outcome.contains("tls") || message.contains("127.0.0.1");
        // A refused client certificate: the alert, or (when our request crossed it) the close with
        // the hint.
        let hinted = *want == "tls_handshake" && message.contains("refuse our client certificate");
        if !(outcome.contains(want) || hinted) || message.is_empty() || !names_peer {
            section.problem(format!("{what}: expected {want} naming the peer, got {outcome}: {}", short(&message)));
        }
        if value < 1.0 {
            section.problem(format!("{what}: not counted ({counted})"));
        }
    }

    // Garbage written during a reload: the last good pair is kept, with a warning and a count.
    tls_dir.write(&[("tls.crt", "garbage"), ("tls.key", &good.key_pem), ("ca.crt", &ca.pem())])?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = http_get(tls_p.admin, "/debug/tls").await?;
    let v: serde_json::Value = serde_json::from_str(&status).map_err(|e| format!("/debug/tls: {e}"))?;
    let failed = v["tls"]["failed_reloads"].as_u64().unwrap_or(0);
    let generation = v["tls"]["current"]["generation"].as_u64().unwrap_or(0);
    let last_error = v["tls"]["last_error"].as_str().unwrap_or_default().to_owned();
    let (b, _registry) = client(tls_p.port, Some(trust(&trusting, false, NAME))).await?;
    let (outcome, _) = call(&b).await;
    let reloads = metric(tls_p.admin, "provider_tls_reloads_total{role=\"server\",result=\"failed\"}").await;
    section.row(vec![
        "garbage written during a reload".into(),
        "provider".into(),
        format!("last good pair kept (generation {generation}); a new connection: {outcome}"),
        short(&last_error),
        format!("`provider_tls_reloads_total{{role=\"server\",result=\"failed\"}}` {reloads}"),
    ]);
    if failed != 1 || generation != 1 || outcome != "OK" || !last_error.contains("PROVIDER_TLS_CERT") || reloads < 1.0 {
        section.problem(format!(
            "garbage during a reload: failed_reloads {failed}, generation {generation}, call {outcome}, {last_error}"
        ));
    }

    for p in [&tls_p, &mtls_p, &plain_p, &short_p] {
        let log = std::fs::read_to_string(&p.log).unwrap_or_default();
        if log.contains("panicked") {
            section.problem(format!("a provider panicked: {}", p.log.display()));
        }
    }
    section.note(
        "Apache's Python Dubbo client (apache-dubbo 3.0.0b1 on PyPI) cannot take part: it has no TLS (its `ssl-enabled` \
         URL parameter only sets the `:scheme` header; the connection is opened without an SSL context). Python grpcio \
         does, and scripts/interop-grpcio runs it against the provider over TLS and mutual TLS.",
    );
    Ok(())
}
