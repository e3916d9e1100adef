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
//! no failed call. Containers run as the manifests run pods: read-only root, no capabilities, no
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
        let env = [
            ("POD_NAME", name),
            ("PROVIDER_VERSION", version),
            ("PROVIDER_DRAIN", "2s"),
            ("PROVIDER_SHUTDOWN_TIMEOUT", "5s"),
        ];
        let req = self.request("provider", name, &env);
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
        let mut all = vec![
            ("CONSUMER_VERSION", "1.0.0"),
            ("CONSUMER_RATE", "50"),
            ("CONSUMER_REPORT_INTERVAL", "2s"),
            ("DISCOVERY_NAMESPACE", NS),
        ];
        all.extend_from_slice(env);
        let req = self.request("consumer", name, &all);
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

/// The consumer's `/stats` (the test needs no HTTP client crate: one HTTP/1.1 request).
async fn stats(admin: SocketAddr) -> Result<Value, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(admin).await?;
        s.write_all(b"GET /stats HTTP/1.1\r\nHost: consumer\r\nConnection: close\r\n\r\n").await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let raw = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| format!("GET http://{admin}/stats: no answer in 5 s"))?
        .map_err(|e| format!("GET http://{admin}/stats: {e}"))?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    serde_json::from_str(body).map_err(|e| format!("GET http://{admin}/stats: not JSON ({e}): {raw}"))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Docker and the images of scripts/build: scripts/test runs it, or cargo test -p consumer --test images -- --ignored"]
async fn the_images_follow_providers_in_dns_and_api_mode() {
    let mut run = Run::new().await;
    let outcome = match dns_mode(&mut run).await {
        Ok(()) => api_mode(&mut run).await,
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        panic!("{e}\n{}", run.report().await);
    }
    step("Container end-to-end passed (DNS and API mode)");
}
