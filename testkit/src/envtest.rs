//! A real `kube-apiserver` and `etcd` on loopback for one test run, the way kubebuilder's envtest
//! runs them: the binaries come from the directory named by `KUBEBUILDER_ASSETS`; certificates are
//! made fresh for each server; clients authenticate with bearer tokens from a static token file.
//!
//! What it is for: what the in-process server ([`crate::FakeApiServer`]) can only imitate: the real
//! watch cache, label selection, validation of objects, pagination and resource versions, RBAC and
//! SelfSubjectAccessReview, the refusal of streaming lists by etcd 3.4, and the server's own memory
//! and CPU. What it cannot do on demand (reset a connection, fall silent, answer 410 at will) stays
//! the in-process server's job.
//!
//! Facts of the pair this project ships for CI (Kubernetes 1.32, etcd 3.4): no controller-manager
//! runs (nothing turns pods into EndpointSlices; a deleted namespace stays `Terminating`, so use a
//! fresh namespace per test), loopback addresses are refused in EndpointSlices, streaming lists are
//! refused.

use std::fmt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};

/// The environment variable naming the directory with `kube-apiserver` and `etcd` (envtest's).
pub const ASSETS_VAR: &str = "KUBEBUILDER_ASSETS";

/// The token of the built-in administrator (group `system:masters`).
const ADMIN: &str = "admin";

/// Users that exist on every server, for RBAC tests: authenticated, with no permission until a Role
/// grants one. `token_for(user)` gives their token.
pub const USERS: [&str; 4] = ["discovery", "bench", "fleet", "stranger"];

/// The directory of the binaries, or why there is none (a line a skipped test can print).
pub fn assets() -> Result<PathBuf, String> {
    let dir = std::env::var_os(ASSETS_VAR).ok_or_else(|| {
        format!(
            "{ASSETS_VAR} is not set: no real kube-apiserver for this run (scripts/test sets it up; see README, Tests)"
        )
    })?;
    let dir = PathBuf::from(dir);
    for bin in ["kube-apiserver", "etcd"] {
        if !dir.join(bin).is_file() {
            return Err(format!("{ASSETS_VAR}={} holds no {bin}", dir.display()));
        }
    }
    Ok(dir)
}

/// A running kube-apiserver with its etcd; both are killed, and their files removed, on drop.
pub struct KubeApiServer {
    dir: PathBuf,
    url: String,
    etcd: Child,
    apiserver: Child,
    started_in: Duration,
}

impl fmt::Debug for KubeApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeApiServer").field("url", &self.url).field("dir", &self.dir).finish()
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn cert_error(e: rcgen::Error) -> String {
    format!("cannot make the test certificates: {e}")
}

/// A CA, the server's certificate for 127.0.0.1 and `localhost`, and the service-account key pair.
fn certificates(dir: &Path) -> Result<(), String> {
    let ca_key = KeyPair::generate().map_err(cert_error)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "dubbo-k8s envtest CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca, ca_key).map_err(cert_error)?;

    let key = KeyPair::generate().map_err(cert_error)?;
    let mut server = CertificateParams::new(vec!["localhost".to_owned()]).map_err(cert_error)?;
    server.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
    server.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    let server = server.signed_by(&key, &ca).map_err(cert_error)?;

    let sa = KeyPair::generate().map_err(cert_error)?;
    write(&dir.join("ca.crt"), &ca.pem())?;
    write(&dir.join("apiserver.crt"), &server.pem())?;
    write(&dir.join("apiserver.key"), &key.serialize_pem())?;
    write(&dir.join("sa.key"), &sa.serialize_pem())?;
    write(&dir.join("sa.pub"), &sa.public_key_pem())
}

/// `token,user,uid,"groups"`: the administrator and the unprivileged test users.
fn tokens(dir: &Path) -> Result<(), String> {
    let mut csv = format!("{ADMIN}-token,{ADMIN},uid-{ADMIN},\"system:masters\"\n");
    for user in USERS {
        csv += &format!("{user}-token,{user},uid-{user}\n");
    }
    write(&dir.join("tokens.csv"), &csv)
}

fn spawn(mut cmd: Command, log: &Path, what: &str) -> Result<Child, String> {
    let out = std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    cmd.spawn().map_err(|e| format!("cannot start {what} ({:?}): {e}", cmd.get_program()))
}

impl KubeApiServer {
    /// Starts etcd and kube-apiserver from [`assets`] and waits until `/readyz` answers `ok`
    /// (about 3 s). `extra_args` go to kube-apiserver (e.g. `--feature-gates=...`).
    pub async fn start(extra_args: &[&str]) -> Result<KubeApiServer, String> {
        let bin = assets()?;
        let dir = std::env::temp_dir().join(format!(
            "dubbo-k8s-envtest-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
        ));
        std::fs::create_dir_all(dir.join("etcd")).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        certificates(&dir)?;
        tokens(&dir)?;
        let t0 = Instant::now();
        let (client_port, peer_port, secure_port) = (free_port()?, free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Command::new(bin.join("etcd"));
        etcd.arg("--data-dir")
            .arg(dir.join("etcd"))
            .args(["--listen-client-urls", &etcd_url, "--advertise-client-urls", &etcd_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")]);
        let etcd = spawn(etcd, &dir.join("etcd.log"), "etcd")?;

        let p = |f: &str| dir.join(f).display().to_string();
        let mut api = Command::new(bin.join("kube-apiserver"));
        api.arg(format!("--etcd-servers={etcd_url}"))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={secure_port}"))
            .arg(format!("--cert-dir={}", p("certs")))
            .arg(format!("--tls-cert-file={}", p("apiserver.crt")))
            .arg(format!("--tls-private-key-file={}", p("apiserver.key")))
            .arg(format!("--client-ca-file={}", p("ca.crt")))
            .arg(format!("--token-auth-file={}", p("tokens.csv")))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!("--service-account-key-file={}", p("sa.pub")))
            .arg(format!("--service-account-signing-key-file={}", p("sa.key")))
            .args(["--service-cluster-ip-range=10.96.0.0/24", "--endpoint-reconciler-type=none"])
            .args(["--authorization-mode=RBAC", "--disable-admission-plugins=ServiceAccount"])
            .args(extra_args);
        let mut server = KubeApiServer {
            url: format!("https://127.0.0.1:{secure_port}"),
            etcd,
            apiserver: spawn(api, &dir.join("kube-apiserver.log"), "kube-apiserver")?,
            dir,
            started_in: Duration::ZERO,
        };
        server.wait_ready(t0).await?;
        server.started_in = t0.elapsed();
        server.write_kubeconfigs()?;
        Ok(server)
    }

    async fn wait_ready(&mut self, t0: Instant) -> Result<(), String> {
        let client = kube::Client::try_from(self.config_for(ADMIN).await?).map_err(|e| format!("kube client: {e}"))?;
        let deadline = t0 + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            let exited = [(&mut self.etcd, "etcd"), (&mut self.apiserver, "kube-apiserver")]
                .into_iter()
                .find_map(|(child, what)| child.try_wait().ok().flatten().map(|status| (what, status)));
            if let Some((what, status)) = exited {
                return Err(format!("{what} exited ({status}) before the server was ready:\n{}", self.tail(what)));
            }
            let req = http_request("/readyz");
            match tokio::time::timeout(Duration::from_secs(2), client.request_text(req)).await {
                Ok(Ok(body)) if body.trim() == "ok" => return Ok(()),
                Ok(Ok(body)) => last = body,
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "no answer in 2 s".into(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("kube-apiserver not ready after 60 s ({last}):\n{}", self.tail("kube-apiserver")))
    }

    /// The last lines of `etcd` or `kube-apiserver`'s log, for an error message.
    pub fn tail(&self, what: &str) -> String {
        let log = std::fs::read_to_string(self.dir.join(format!("{what}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How long the server took to answer `/readyz` with `ok`.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The PIDs of kube-apiserver and etcd (for their memory and CPU in `/proc`).
    pub fn pids(&self) -> (u32, u32) {
        (self.apiserver.id(), self.etcd.id())
    }

    /// The bearer token of `user` (`admin`, or one of [`USERS`]).
    pub fn token_for(&self, user: &str) -> String {
        format!("{user}-token")
    }

    /// A kubeconfig file for the administrator.
    pub fn kubeconfig(&self) -> PathBuf {
        self.kubeconfig_for(ADMIN)
    }

    /// A kubeconfig file for `user` (`admin`, or one of [`USERS`]).
    pub fn kubeconfig_for(&self, user: &str) -> PathBuf {
        self.dir.join(format!("kubeconfig-{user}.yaml"))
    }

    fn kubeconfig_text(&self, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: envtest\nclusters:\n- name: envtest\n  cluster:\n    \
             server: {}\n    certificate-authority: {}\nusers:\n- name: {user}\n  user:\n    token: {}\ncontexts:\n\
             - name: envtest\n  context:\n    cluster: envtest\n    user: {user}\n",
            self.url,
            self.dir.join("ca.crt").display(),
            self.token_for(user)
        )
    }

    fn write_kubeconfigs(&self) -> Result<(), String> {
        for user in std::iter::once(ADMIN).chain(USERS) {
            write(&self.kubeconfig_for(user), &self.kubeconfig_text(user))?;
        }
        Ok(())
    }

    /// A client configuration for the administrator.
    pub async fn config(&self) -> Result<kube::Config, String> {
        self.config_for(ADMIN).await
    }

    /// A client configuration for `user` (`admin`, or one of [`USERS`]).
    pub async fn config_for(&self, user: &str) -> Result<kube::Config, String> {
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_text(user)).map_err(|e| e.to_string())?;
        let opts = kube::config::KubeConfigOptions::default();
        kube::Config::from_custom_kubeconfig(kc, &opts).await.map_err(|e| e.to_string())
    }

    /// An administrator's client.
    pub async fn client(&self) -> Result<kube::Client, String> {
        kube::Client::try_from(self.config().await?).map_err(|e| format!("kube client: {e}"))
    }

    /// The server's `/metrics` text (as the administrator).
    pub async fn metrics(&self) -> Result<String, String> {
        self.client().await?.request_text(http_request("/metrics")).await.map_err(|e| format!("GET /metrics: {e}"))
    }
}

fn http_request(path: &str) -> http::Request<Vec<u8>> {
    let mut req = http::Request::new(Vec::new());
    *req.uri_mut() = path.parse().unwrap_or_default();
    req
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
