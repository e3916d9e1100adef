//! The shipped images end to end on a Docker network, through testcontainers (no cluster):
//!
//! - DNS mode: Docker's embedded DNS answers a network alias shared by the provider containers with
//!   one A record per container (a headless Service's behaviour: no SRV), so the consumer runs with
//!   `DISCOVERY_DNS_SRV=false` and a 1 s refresh ceiling;
//! - API mode: the in-process Kubernetes API server (testkit) listens on the network's gateway and
//!   holds EndpointSlices with the containers' addresses; the test changes them as the endpointslice
//!   controller would.
//!
//! In both, a provider is stopped and another started under traffic: the consumer must follow with
//! no failed call. Then TLS mode: mutual TLS with the Secrets' directories bind-mounted as kubelet
//! mounts them, certificates and a CA rotated under traffic (0 failed calls; when each side picked
//! the new material up is printed). Containers run as the manifests run pods: read-only root, no capabilities, no
//! privilege escalation, a non-root user. The images are the ones `scripts/build` makes from the
//! shipped Dockerfile (`IMAGE_PREFIX`/`TAG` as for it; default `dubbo-k8s/*:dev`); nothing is pulled.
//!
//! Ignored by default (it needs Docker and the built images): `scripts/test` runs it after
//! `scripts/build`, or run `cargo test -p consumer --test images -- --ignored --nocapture`.
//! The test reaches the containers at their addresses on the Docker network, as it can on Linux.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;
use testcontainers::bollard::Docker;
use testcontainers::bollard::models::{EndpointSettings, NetworkConnectRequest, NetworkDisconnectRequest};
use testcontainers::core::WaitFor;
use testcontainers::core::client::docker_client_instance;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use testkit::{FakeApiServer, PodEndpoint, endpoint_slice, service_object};

const NS: &str = "demo";
const V1_ALIAS: &str = "greeter-service-v1.demo.svc.cluster.local";
const V2_ALIAS: &str = "greeter-service-v2.demo.svc.cluster.local";

fn image(app: &str) -> (String, String) {
    let prefix = std::env::var("IMAGE_PREFIX").unwrap_or_else(|_| "dubbo-k8s".into());
    let tag = std::env::var("TAG").unwrap_or_else(|_| "dev".into());
    (format!("{prefix}/{app}"), tag)
}

/// The Docker network of one run, the containers on it, and what failed, for the report.
struct Run {
    docker: Docker,
    net: String,
    prefix: String,
    containers: Vec<(String, ContainerAsync<GenericImage>)>,
}

impl Run {
    async fn new() -> Run {
        let docker = docker_client_instance()
            .await
            .unwrap_or_else(|e| panic!("Docker is not reachable ({e}): start the Docker engine, or skip this test"));
        for app in ["provider", "consumer"] {
            let (name, tag) = image(app);
            if docker.inspect_image(&format!("{name}:{tag}")).await.is_err() {
                panic!("image {name}:{tag} not found: run scripts/build (or LOCAL_BASE=1 scripts/build) first");
            }
        }
        let id = std::process::id();
        Run { docker, net: format!("dubbo-k8s-images-{id}"), prefix: format!("dkimg-{id}"), containers: Vec::new() }
    }

    /// A container of `app` on the run's network, hardened as the manifests run pods.
    fn request(&self, app: &str, name: &str, env: &[(&str, &str)]) -> testcontainers::ContainerRequest<GenericImage> {
        let (image, tag) = image(app);
        let ready = match app {
            "provider" => WaitFor::message_on_stderr("provider serving"),
            _ => WaitFor::message_on_stderr("consumer started"),
        };
        let mut req = GenericImage::new(image, tag)
            .with_wait_for(ready)
            .with_network(&self.net)
            .with_container_name(format!("{}-{name}", self.prefix))
            .with_readonly_rootfs(true)
            .with_cap_drop("ALL")
            .with_security_opt("no-new-privileges")
            .with_user("65532:65532")
            .with_startup_timeout(Duration::from_secs(60));
        for (k, v) in env {
            req = req.with_env_var(*k, *v);
        }
        req
    }

    async fn start(&mut self, name: &str, req: testcontainers::ContainerRequest<GenericImage>) -> IpAddr {
        let c = req.start().await.unwrap_or_else(|e| panic!("start {name}: {e}"));
        let ip = self.ip_of(c.id()).await;
        self.containers.push((name.to_owned(), c));
        ip
    }

    /// A provider; with an alias, it is one more A record of that name in Docker's DNS.
    async fn provider(&mut self, name: &str, version: &str, alias: Option<&str>) -> IpAddr {
        self.provider_with(name, version, alias, &[], None).await
    }

    /// A provider with more variables, and a host directory mounted read-only at `TLS_DIR`.
    async fn provider_with(
        &mut self,
        name: &str,
        version: &str,
        alias: Option<&str>,
        extra: &[(&str, &str)],
        tls: Option<&std::path::Path>,
    ) -> IpAddr {
        let mut env = vec![
            ("POD_NAME", name),
            ("PROVIDER_VERSION", version),
            ("PROVIDER_DRAIN", "2s"),
            ("PROVIDER_SHUTDOWN_TIMEOUT", "5s"),
        ];
        env.extend_from_slice(extra);
        let mut req = self.request("provider", name, &env);
        if let Some(dir) = tls {
            req = req.with_mount(secret_mount(dir));
        }
        let ip = self.start(name, req).await;
        if let Some(alias) = alias {
            self.alias(name, alias).await;
        }
        ip
    }

    /// testcontainers has no network-alias option: reconnect the container with one.
    async fn alias(&self, name: &str, alias: &str) {
        let id = self.container(name).id().to_owned();
        let disconnect = NetworkDisconnectRequest { container: id.clone(), force: Some(true) };
        self.docker.disconnect_network(&self.net, disconnect).await.expect("disconnect for the alias");
        let connect = NetworkConnectRequest {
            container: id,
            endpoint_config: Some(EndpointSettings { aliases: Some(vec![alias.to_owned()]), ..Default::default() }),
        };
        self.docker.connect_network(&self.net, connect).await.expect("reconnect with the alias");
    }

    async fn consumer(&mut self, name: &str, env: &[(&str, &str)]) -> SocketAddr {
        self.consumer_with(name, env, None).await
    }

    async fn consumer_with(&mut self, name: &str, env: &[(&str, &str)], tls: Option<&std::path::Path>) -> SocketAddr {
        let mut all = vec![
            ("CONSUMER_VERSION", "1.0.0"),
            ("CONSUMER_RATE", "50"),
            ("CONSUMER_REPORT_INTERVAL", "2s"),
            ("DISCOVERY_NAMESPACE", NS),
        ];
        all.extend_from_slice(env);
        let mut req = self.request("consumer", name, &all);
        if let Some(dir) = tls {
            req = req.with_mount(secret_mount(dir));
        }
        let ip = self.start(name, req).await;
        SocketAddr::new(ip, 8081)
    }

    fn container(&self, name: &str) -> &ContainerAsync<GenericImage> {
        &self.containers.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no container {name}")).1
    }

    async fn ip_of(&self, id: &str) -> IpAddr {
        let info = self.docker.inspect_container(id, None).await.expect("inspect container");
        let ip = info
            .network_settings
            .and_then(|s| s.networks)
            .and_then(|n| n.get(&self.net).and_then(|e| e.ip_address.clone()))
            .unwrap_or_default();
        ip.parse().unwrap_or_else(|_| panic!("container {id} has no address on {}: '{ip}'", self.net))
    }

    /// A provider container's admin address.
    async fn admin_of(&self, name: &str) -> SocketAddr {
        SocketAddr::new(self.ip_of(self.container(name).id()).await, 8080)
    }

    async fn gateway(&self) -> IpAddr {
        let net = self.docker.inspect_network(&self.net, None).await.expect("inspect network");
        let gw =
            net.ipam.and_then(|i| i.config).and_then(|c| c.into_iter().find_map(|c| c.gateway)).unwrap_or_default();
        gw.parse().unwrap_or_else(|_| panic!("network {} has no IPv4 gateway: '{gw}'", self.net))
    }

    /// `docker stop` (SIGTERM → drain → exit), then: no call reaches it any more.
    async fn stop_under_traffic(&self, admin: SocketAddr, name: &str) -> Result<(), String> {
        self.container(name).stop_with_timeout(Some(20)).await.map_err(|e| format!("stop {name}: {e}"))?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = served_by(&stats(admin).await?, name);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = served_by(&stats(admin).await?, name);
        if before != after {
            return Err(format!("{name} still gets calls after it stopped ({before} -> {after})"));
        }
        println!("    ok: {name} stopped; it served {after} calls, none after");
        Ok(())
    }

    /// Each container's first and last log lines, for a failure's report.
    async fn report(&self) -> String {
        let mut out = String::new();
        for (name, c) in &self.containers {
            let log = String::from_utf8_lossy(&c.stderr_to_vec().await.unwrap_or_default()).into_owned();
            let lines: Vec<&str> = log.lines().collect();
            out += &format!("\n--- {name} ({} lines) ---\n", lines.len());
            for l in lines.iter().take(6) {
                out += &format!("{l}\n");
            }
            if lines.len() > 18 {
                out += "    ...\n";
            }
            for l in lines.iter().skip(6.max(lines.len().saturating_sub(12))) {
                out += &format!("{l}\n");
            }
        }
        out
    }
}

/// The consumer's `/stats`.
async fn stats(admin: SocketAddr) -> Result<Value, String> {
    get_json(admin, "/stats").await
}

/// One admin endpoint as JSON (the test needs no HTTP client crate: one HTTP/1.1 request).
async fn get_json(admin: SocketAddr, path: &str) -> Result<Value, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(admin).await?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let raw = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| format!("GET http://{admin}{path}: no answer in 5 s"))?
        .map_err(|e| format!("GET http://{admin}{path}: {e}"))?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    serde_json::from_str(body).map_err(|e| format!("GET http://{admin}{path}: not JSON ({e}): {raw}"))
}

/// Calls served per instance name (`by_instance` keys are "<instance> <address>").
fn served(s: &Value) -> Vec<(String, u64)> {
    let Some(by) = s["by_instance"].as_object() else { return Vec::new() };
    by.iter().map(|(k, n)| (k.split(' ').next().unwrap_or_default().to_owned(), n.as_u64().unwrap_or(0))).collect()
}

fn served_by(s: &Value, name: &str) -> u64 {
    served(s).iter().filter(|(n, _)| n == name).map(|(_, c)| c).sum()
}

/// Waits until calls reach every one of `want` and none of `absent`.
async fn until_served(admin: SocketAddr, secs: u64, want: &[&str], absent: &[&str]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Ok(s) = stats(admin).await {
            let got: BTreeSet<String> = served(&s).into_iter().filter(|(_, n)| *n > 0).map(|(k, _)| k).collect();
            if want.iter().all(|w| got.contains(*w)) && !absent.iter().any(|a| got.contains(*a)) {
                println!("    ok: calls reach {want:?}, none reach {absent:?}");
                return Ok(());
            }
            last = s;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("after {secs} s, calls do not reach {want:?} (or do reach {absent:?}): {last}"))
}

async fn no_failures(admin: SocketAddr, mode: &str) -> Result<(), String> {
    let s = stats(admin).await?;
    match s["failed"].as_u64() {
        Some(0) => {
            println!("    {mode} mode: {s}");
            Ok(())
        }
        _ => Err(format!("{mode} mode: calls failed: {s}")),
    }
}

/// Where the TLS Secret's directory is mounted in the containers, as the tls overlay mounts it.
const TLS_DIR: &str = "/etc/dubbo-k8s/tls";

fn secret_mount(dir: &std::path::Path) -> testcontainers::core::Mount {
    testcontainers::core::Mount::bind_mount(dir.display().to_string(), TLS_DIR)
        .with_access_mode(testcontainers::core::AccessMode::ReadOnly)
}

fn step(text: &str) {
    println!("\n==> {text}");
}

async fn dns_mode(run: &mut Run) -> Result<(), String> {
    step("Providers: p1, p2 (1.0.0) and p-v2 (2.0.0) behind DNS aliases");
    run.provider("p1", "1.0.0", Some(V1_ALIAS)).await;
    run.provider("p2", "1.0.0", Some(V1_ALIAS)).await;
    run.provider("p-v2", "2.0.0", Some(V2_ALIAS)).await;

    step("DNS mode through Docker's embedded DNS");
    let env = [
        ("DISCOVERY_MODE", "dns"),
        ("DISCOVERY_SERVICE_TEMPLATE", "{simple}-v{major}"),
        ("DISCOVERY_DNS_SRV", "false"),
        ("DISCOVERY_PORT", "50051"),
        ("DISCOVERY_DNS_TTL_FLOOR", "500ms"),
        ("DISCOVERY_DNS_TTL_CEILING", "1s"),
    ];
    let admin = run.consumer("consumer-dns", &env).await;
    until_served(admin, 30, &["p1", "p2"], &["p-v2"]).await?;

    step("DNS mode: p3 started, p1 stopped, under traffic");
    run.provider("p3", "1.0.0", Some(V1_ALIAS)).await;
    until_served(admin, 30, &["p3"], &[]).await?;
    run.stop_under_traffic(admin, "p1").await?;
    no_failures(admin, "DNS").await
}

fn slice(name: &str, pod: &str, ip: IpAddr) -> Value {
    endpoint_slice(name, "greeter-v1", "IPv4", &[("tri", 50051)], &[PodEndpoint::ready(ip.to_string(), pod)])
}

async fn api_mode(run: &mut Run) -> Result<(), String> {
    let gateway = run.gateway().await;
    step(&format!("API mode: the test's Kubernetes API server on the gateway {gateway}"));
    let api = FakeApiServer::start_on(SocketAddr::new(gateway, 0))
        .await
        .map_err(|e| format!("bind the API server on the gateway {gateway}: {e}"))?;
    let ann =
        [("dubbo.apache.org/interface", "org.apache.dubbo.demo.GreeterService"), ("dubbo.apache.org/version", "1.0.0")];
    api.apply_service(NS, service_object("greeter-v1", &ann, None, ("tri", 50051)));
    let p2 = run.ip_of(run.container("p2").id()).await;
    let p3 = run.ip_of(run.container("p3").id()).await;
    api.apply_slice(NS, slice("greeter-v1-p2", "p2", p2));
    api.apply_slice(NS, slice("greeter-v1-p3", "p3", p3));
    let admin = run.consumer("consumer-api", &[("DISCOVERY_MODE", "api"), ("DISCOVERY_API_SERVER", &api.url())]).await;
    until_served(admin, 30, &["p2", "p3"], &["p1", "p-v2"]).await?;

    step("API mode: p4 added, p2 terminating then stopped, under traffic");
    let p4 = run.provider("p4", "1.0.0", None).await;
    api.apply_slice(NS, slice("greeter-v1-p4", "p4", p4));
    until_served(admin, 30, &["p4"], &[]).await?;
    let leaving = PodEndpoint::ready(p2.to_string(), "p2").terminating();
    api.apply_slice(NS, endpoint_slice("greeter-v1-p2", "greeter-v1", "IPv4", &[("tri", 50051)], &[leaving]));
    run.stop_under_traffic(admin, "p2").await?;
    api.delete_slice(NS, "greeter-v1-p2");
    no_failures(admin, "API").await
}

const TLS_ALIAS: &str = "greeter-tls-v1.demo.svc.cluster.local";
const CONSUMER_ID: &str = "spiffe://cluster.local/ns/demo/sa/consumer";

/// The serial of the certificate in use (and the number of CAs trusted) from `/debug/tls`.
async fn tls_state(admin: SocketAddr) -> Result<(String, usize), String> {
    let v = get_json(admin, "/debug/tls").await?;
    let current = &v["tls"]["current"];
    let serial = current["cert"]["serial"].as_str().unwrap_or_default().to_owned();
    Ok((serial, current["cas"].as_array().map_or(0, Vec::len)))
}

/// Waits until every admin endpoint reports `want` (serial changed from `before`, CA count); returns
/// how long each took, for the summary.
async fn picked_up(
    sides: &[(&str, SocketAddr)],
    before: &[(String, usize)],
    cas: usize,
    since: Instant,
) -> Result<String, String> {
    let mut took = Vec::new();
    for ((name, admin), (old_serial, _)) in sides.iter().zip(before) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (serial, n) = tls_state(*admin).await?;
            if serial != *old_serial && n == cas {
                took.push(format!("{name} {} ms", since.elapsed().as_millis()));
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{name} did not pick up the new certificate (serial {serial}, {n} CA(s))"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(took.join(", "))
}

/// TLS and mutual TLS on the images: Secrets' directories bind-mounted as kubelet mounts them, the
/// consumer in DNS mode verifying the providers by the Service's DNS name, then the certificates and
/// the CA rotated under traffic (new serials; a new CA trusted beside the old, then signing, then
/// alone), a provider replaced after each CA step so that new handshakes prove the new material.
async fn tls_mode(run: &mut Run) -> Result<(), String> {
    use testkit::certs::{Leaf, SecretDir, TestCa};
    let base = std::env::temp_dir().join(format!("dubbo-k8s-images-tls-{}", std::process::id()));
    let (pd, cd) = (SecretDir::new(base.join("greeter"))?, SecretDir::new(base.join("consumer"))?);
    let issue = |ca: &TestCa, bundle: &str, leaf: Leaf, dir: &SecretDir| -> Result<(), String> {
        let p = ca.issue(&leaf)?;
        dir.write(&[("tls.crt", &p.cert_pem), ("tls.key", &p.key_pem), ("ca.crt", bundle)])
    };
    let server = || Leaf::server(&[TLS_ALIAS]);
    let client = || Leaf::client(CONSUMER_ID);
    let ca1 = TestCa::new("images CA 1")?;
    issue(&ca1, &ca1.pem(), server(), &pd)?;
    issue(&ca1, &ca1.pem(), client(), &cd)?;
    let (crt, key, ca) = (format!("{TLS_DIR}/tls.crt"), format!("{TLS_DIR}/tls.key"), format!("{TLS_DIR}/ca.crt"));
    let provider_env = [
        ("PROVIDER_TLS_CERT", crt.as_str()),
        ("PROVIDER_TLS_KEY", key.as_str()),
        ("PROVIDER_TLS_CLIENT_CA", ca.as_str()),
        ("PROVIDER_TLS_ALLOW", CONSUMER_ID),
        ("PROVIDER_TLS_RELOAD_INTERVAL", "500ms"),
    ];

    step("TLS: providers t1, t2 with mutual TLS behind a DNS alias; the consumer verifies them by the Service name");
    for name in ["t1", "t2"] {
        let ip = run.provider_with(name, "1.0.0", Some(TLS_ALIAS), &provider_env, Some(pd.path())).await;
        println!("    {name} at {ip}");
    }
    let env = [
        ("DISCOVERY_MODE", "dns"),
        ("DISCOVERY_SERVICE_TEMPLATE", "greeter-tls-v{major}"),
        ("DISCOVERY_DNS_SRV", "false"),
        ("DISCOVERY_PORT", "50051"),
        ("DISCOVERY_DNS_TTL_FLOOR", "500ms"),
        ("DISCOVERY_DNS_TTL_CEILING", "1s"),
        ("DISCOVERY_TLS_CA", ca.as_str()),
        ("DISCOVERY_TLS_CERT", crt.as_str()),
        ("DISCOVERY_TLS_KEY", key.as_str()),
        ("DISCOVERY_TLS_RELOAD_INTERVAL", "500ms"),
    ];
    let admin = run.consumer_with("consumer-tls", &env, Some(cd.path())).await;
    until_served(admin, 30, &["t1", "t2"], &[]).await?;
    let mut providers = vec![("t1".to_owned(), run.admin_of("t1").await), ("t2".to_owned(), run.admin_of("t2").await)];
    let mut summary = Vec::new();

    // Each step: write, wait until every side has the new material, then (CA steps) replace a
    // provider under traffic so that fresh handshakes use it.
    let ca2 = TestCa::new("images CA 2")?;
    let both = format!("{}{}", ca1.pem(), ca2.pem());
    let steps: [(&str, &TestCa, String, usize); 4] = [
        ("new certificates, same CA", &ca1, ca1.pem(), 1),
        ("CA 2 trusted beside CA 1", &ca1, both.clone(), 2),
        ("certificates of CA 2", &ca2, both.clone(), 2),
        ("CA 1 retired", &ca2, ca2.pem(), 1),
    ];
    for (next, (what, signer, bundle, cas)) in (3..).zip(steps) {
        step(&format!("TLS rotation under traffic: {what}"));
        let mut sides: Vec<(&str, SocketAddr)> = providers.iter().map(|(n, a)| (n.as_str(), *a)).collect();
        sides.push(("consumer", admin));
        let mut before = Vec::new();
        for (_, a) in &sides {
            before.push(tls_state(*a).await?);
        }
        let t = Instant::now();
        issue(signer, &bundle, server(), &pd)?;
        issue(signer, &bundle, client(), &cd)?;
        let took = picked_up(&sides, &before, cas, t).await?;
        println!("    picked up: {took}");
        let name = format!("t{next}");
        run.provider_with(&name, "1.0.0", Some(TLS_ALIAS), &provider_env, Some(pd.path())).await;
        until_served(admin, 30, &[name.as_str()], &[]).await?;
        let old = providers.remove(0);
        run.stop_under_traffic(admin, &old.0).await?;
        providers.push((name.clone(), run.admin_of(&name).await));
        summary.push(format!("{what}: {took}; new provider {name} served, {} stopped", old.0));
    }
    println!("\n    TLS rotation summary:");
    for line in &summary {
        println!("    - {line}");
    }
    no_failures(admin, "TLS").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Docker and the images of scripts/build: scripts/test runs it, or cargo test -p consumer --test images -- --ignored"]
async fn the_images_follow_providers_in_dns_and_api_mode() {
    let mut run = Run::new().await;
    let outcome = match dns_mode(&mut run).await {
        Ok(()) => api_mode(&mut run).await,
        Err(e) => Err(e),
    };
    let outcome = match outcome {
        Ok(()) => tls_mode(&mut run).await,
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        panic!("{e}\n{}", run.report().await);
    }
    step("Container end-to-end passed (DNS, API and TLS mode with rotation)");
}
