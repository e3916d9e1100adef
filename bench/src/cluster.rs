//! The API server the benchmarks write to and discovery watches: a real kube-apiserver with etcd
//! started for the run (envtest, from `KUBEBUILDER_ASSETS`), the in-process test server run as a
//! helper process, or any cluster given by a kubeconfig. Either way every write goes through the real
//! kube client over HTTP, and the benchmarks clean up their own namespaces.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use crate::util::{Helper, Placement, free_port, start_provider, wait_tcp};

/// Label the benchmarks put on what they write, so a real endpointslice controller leaves it alone
/// (it only manages slices labelled as its own).
pub const MANAGED_BY: &str = "dubbo-k8s-bench";

pub struct Cluster {
    pub client: kube::Client,
    /// `DISCOVERY_API_SERVER` for the in-process server; `None` for a kubeconfig (the hub is given
    /// the client).
    pub server_url: Option<String>,
    pub describe: String,
    /// The in-process server accepts loopback addresses (the providers of the call benchmark run on
    /// loopback); a real API server refuses them.
    pub local: bool,
    /// A kubeconfig for child processes (`KUBECONFIG`), when the server needs credentials.
    pub kubeconfig: Option<PathBuf>,
    /// The real server started for this run, when it is one (its PIDs give its memory and CPU).
    pub envtest: Option<testkit::envtest::KubeApiServer>,
    _helper: Option<Helper>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("describe", &self.describe).finish()
    }
}

impl Cluster {
    /// The in-process test API server as a helper process (`dubbo-k8s-bench serve-api`).
    pub async fn local(placement: &Placement) -> Result<Cluster, String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let mut cmd = placement.command(&exe);
        cmd.args(["serve-api", "--listen", &format!("127.0.0.1:{port}")]);
        let helper = Helper::spawn("api server", cmd)?;
        let addr = ([127, 0, 0, 1], port).into();
        wait_tcp(addr, Duration::from_secs(20)).await?;
        let url = format!("http://127.0.0.1:{port}");
        let config = kube::Config::new(url.parse().map_err(|e| format!("bad URL {url}: {e}"))?);
        let client = kube::Client::try_from(config).map_err(|e| format!("kube client for {url}: {e}"))?;
        Ok(Cluster {
            client,
            server_url: Some(url.clone()),
            describe: format!("in-process test API server as a helper process at {url}"),
            local: true,
            kubeconfig: None,
            envtest: None,
            _helper: Some(helper),
        })
    }

    /// A real kube-apiserver and etcd from `KUBEBUILDER_ASSETS`, started for this run, on the helper
    /// cores (away from the measuring process and its children).
    pub async fn envtest(placement: &Placement) -> Result<Cluster, String> {
        let server = testkit::envtest::KubeApiServer::start(&[]).await?;
        let (api, etcd) = server.pids();
        placement.pin(api)?;
        placement.pin(etcd)?;
        let client = server.client().await?;
        let version =
            client.apiserver_version().await.map_err(|e| format!("the envtest server does not answer: {e}"))?;
        Ok(Cluster {
            client,
            server_url: None,
            describe: format!(
                "kube-apiserver {} with etcd, started for this run from {} (envtest; ready in {:.1} s)",
                version.git_version,
                testkit::envtest::assets().map(|p| p.display().to_string()).unwrap_or_default(),
                server.started_in().as_secs_f64()
            ),
            local: false,
            kubeconfig: Some(server.kubeconfig()),
            envtest: Some(server),
            _helper: None,
        })
    }

    /// The resident memory of the real API server started for this run (kube-apiserver, etcd), KiB.
    pub fn server_rss_kib(&self) -> Option<(u64, u64)> {
        let (api, etcd) = self.envtest.as_ref()?.pids();
        Some((crate::util::rss_kib(api)?, crate::util::rss_kib(etcd)?))
    }

    /// How a child process reaches this server: `--api URL`, or `KUBECONFIG`.
    pub fn child_access(&self, cmd: &mut tokio::process::Command) -> Result<(), String> {
        match (&self.server_url, &self.kubeconfig) {
            (Some(url), _) => {
                cmd.args(["--api", url]);
            }
            (None, Some(path)) => {
                cmd.env("KUBECONFIG", path);
            }
            (None, None) => return Err("no way for a child process to reach this API server".into()),
        }
        Ok(())
    }

    /// The cluster of a kubeconfig file (its current context).
    pub async fn from_kubeconfig(path: &Path) -> Result<Cluster, String> {
        let kubeconfig = kube::config::Kubeconfig::read_from(path)
            .map_err(|e| format!("cannot read the kubeconfig {}: {e}", path.display()))?;
        let context = kubeconfig.current_context.clone().unwrap_or_default();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| format!("the kubeconfig {} has no usable current context: {e}", path.display()))?;
        let server = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).map_err(|e| format!("kube client for {server}: {e}"))?;
        let version = client
            .apiserver_version()
            .await
            .map_err(|e| format!("the API server {server} (context {context}) does not answer: {e}"))?;
        Ok(Cluster {
            client,
            server_url: None,
            describe: format!(
                "{server} (kubeconfig {}, context {context}, Kubernetes {})",
                path.display(),
                version.git_version
            ),
            local: false,
            kubeconfig: Some(path.to_path_buf()),
            envtest: None,
            _helper: None,
        })
    }

    /// Creates `name` (a fresh namespace for one benchmark).
    pub async fn create_namespace(&self, name: &str) -> Result<(), String> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}}}),
        )
        .map_err(|e| e.to_string())?;
        api.create(&PostParams::default(), &ns).await.map_err(|e| format!("cannot create namespace {name}: {e}"))?;
        Ok(())
    }

    /// Deletes `name` and what is in it.
    pub async fn delete_namespace(&self, name: &str) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        if let Err(e) = api.delete(name, &DeleteParams::default()).await {
            eprintln!("warning: could not delete namespace {name}: {e}");
        }
    }

    pub fn slices(&self, namespace: &str) -> Api<EndpointSlice> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Three provider processes on loopback, `{instance}-p0..2`, each started by `command()`, and a fresh
    /// namespace `ns` where each is the one endpoint of its own slice `{service}-{i}` of Service
    /// `service`. The helpers (keep them alive while the providers are needed) and their Triple ports.
    pub async fn three_providers(
        &self,
        ns: &str,
        service: &str,
        instance: &str,
        mut command: impl FnMut() -> Command,
    ) -> Result<(Vec<Helper>, Vec<u16>), String> {
        let mut providers = Vec::new();
        let mut ports = Vec::new();
        for i in 0..3 {
            let (helper, port) = start_provider(command(), &format!("{instance}-p{i}"), &[]).await?;
            providers.push(helper);
            ports.push(port);
        }
        self.create_namespace(ns).await?;
        let api = self.slices(ns);
        for (i, port) in ports.iter().enumerate() {
            let ep = Ep::of_pod("127.0.0.1".into(), format!("{instance}-p{i}"));
            create(&api, &slice(ns, &format!("{service}-{i}"), service, *port, &[ep])?).await?;
        }
        Ok((providers, ports))
    }
}

/// One endpoint as the benchmarks write it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ep {
    pub ip: String,
    /// The pod (`targetRef.name`); discovery merges an endpoint per pod.
    pub pod: String,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl Ep {
    /// A ready endpoint whose pod is named after its address.
    pub fn ready(ip: String) -> Ep {
        let pod = format!("pod-{}", ip.replace(['.', ':'], "-"));
        Ep { ip, pod, ready: true, serving: true, terminating: false }
    }

    /// A ready endpoint of pod `pod`.
    pub fn of_pod(ip: String, pod: String) -> Ep {
        Ep { pod, ..Ep::ready(ip) }
    }
}

/// An EndpointSlice of `service` as the endpointslice controller writes one (IPv4, port `tri`),
/// labelled as written by the benchmarks.
pub fn slice(namespace: &str, name: &str, service: &str, port: u16, endpoints: &[Ep]) -> Result<EndpointSlice, String> {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|e| {
            json!({
                "addresses": [e.ip],
                "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating},
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": e.pod},
            })
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service, "endpointslice.kubernetes.io/managed-by": MANAGED_BY},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "tri", "protocol": "TCP", "port": port}],
    }))
    .map_err(|e| format!("slice {name}: {e}"))
}

/// Writes a new slice; returns its resourceVersion.
pub async fn create(api: &Api<EndpointSlice>, s: &EndpointSlice) -> Result<String, String> {
    let name = s.metadata.name.clone().unwrap_or_default();
    let written = api.create(&PostParams::default(), s).await.map_err(|e| format!("create slice {name}: {e}"))?;
    Ok(written.metadata.resource_version.unwrap_or_default())
}

/// Replaces a slice (unconditionally); returns its resourceVersion.
pub async fn replace(api: &Api<EndpointSlice>, s: &EndpointSlice) -> Result<String, String> {
    let name = s.metadata.name.clone().unwrap_or_default();
    let written =
        api.replace(&name, &PostParams::default(), s).await.map_err(|e| format!("replace slice {name}: {e}"))?;
    Ok(written.metadata.resource_version.unwrap_or_default())
}

/// A namespace name of its own for one benchmark run.
pub fn namespace_name(what: &str) -> String {
    format!("dubbo-k8s-bench-{what}-{}-{:04x}", std::process::id() % 100_000, rand::random::<u16>())
}

/// `dubbo-k8s-bench serve-api`: the in-process test API server, until killed.
pub async fn serve(listen: std::net::SocketAddr) -> Result<(), String> {
    let server =
        testkit::FakeApiServer::start_on(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let _keep = server;
    std::future::pending::<()>().await;
    Ok(())
}
