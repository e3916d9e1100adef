//! An in-process HTTP server that speaks the Kubernetes list/watch protocol for EndpointSlices and
//! Services, as kube-apiserver 1.32 does on the wire (see `shared/k8s-wire/`):
//!
//! - lists carry `metadata.resourceVersion`, honour `labelSelector`, `limit` and `continue` (a
//!   consistent snapshot per paginated list);
//! - a watch from a resourceVersion streams `{"type","object"}` JSON lines over a chunked HTTP/1.1
//!   (or HTTP/2) response: ADDED / MODIFIED / DELETED, BOOKMARK objects with only
//!   `metadata.resourceVersion` (for slices `addressType:""`, `endpoints:null`, `ports:null`), one
//!   more BOOKMARK at `timeoutSeconds` before the server closes the stream;
//! - a watch from a compacted version gets HTTP 200 then an ERROR event whose object is a Status
//!   `reason: Expired, code: 410`, and the stream ends; a paginated list from an expired continue
//!   token gets HTTP 410;
//! - SelfSubjectAccessReviews answer `status.allowed`; forbidden calls get a 403 Status naming the
//!   user, verb, resource, group and namespace; Nodes can be read (for zone labels).
//!
//! It can be stopped (connections cut, port closed), restarted on the same port with its state (as
//! etcd keeps it), compacted, told to expire running watches, to fail requests, to forbid, to
//! misbehave ([`Misbehaviour`]: accept a request and then reset it, or accept and stay silent), and
//! rolled back to an older state ([`FakeApiServer::snapshot`] / [`FakeApiServer::restore`]: a
//! lagging replica or a restored etcd). Objects can be written through its methods or over HTTP
//! (`POST`/`PUT`/`DELETE` on the paths a real API server has), so scripts can drive it with curl.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

type Body = BoxBody<Bytes, std::io::Error>;

const SLICE_API: &str = "discovery.k8s.io/v1";
const USER: &str = "system:serviceaccount:demo:consumer";

/// The resources this server holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Res {
    Slices,
    Services,
}

impl Res {
    fn kind(self) -> &'static str {
        match self {
            Res::Slices => "EndpointSlice",
            Res::Services => "Service",
        }
    }
    fn api_version(self) -> &'static str {
        match self {
            Res::Slices => SLICE_API,
            Res::Services => "v1",
        }
    }
    fn resource(self) -> &'static str {
        match self {
            Res::Slices => "endpointslices",
            Res::Services => "services",
        }
    }
    fn group(self) -> &'static str {
        match self {
            Res::Slices => "discovery.k8s.io",
            Res::Services => "",
        }
    }
}

/// How the server treats list and watch requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Answers properly.
    None,
    /// Sends the response headers (200), then resets the connection before any data: a server that
    /// accepts and then fails.
    AcceptThenReset,
    /// Sends the response headers, then nothing at all, ever (no events, no bookmarks): a half-open
    /// connection.
    Silent,
}

#[derive(Clone, Debug)]
struct Event {
    rv: u64,
    kind: &'static str,
    res: Res,
    namespace: String,
    object: Value,
}

/// A copy of the stored objects and version, to roll the server back to later.
#[derive(Clone, Debug)]
pub struct StoreSnapshot {
    rv: u64,
    objects: BTreeMap<(Res, String, String), Value>,
}

impl StoreSnapshot {
    /// The resourceVersion it was taken at.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }
}

#[derive(Debug)]
struct Store {
    rv: u64,
    compacted: u64,
    objects: BTreeMap<(Res, String, String), Value>,
    nodes: BTreeMap<String, Value>,
    namespaces: BTreeMap<String, Value>,
    history: Vec<Event>,
    pages: HashMap<String, (u64, Vec<Value>)>,
    next_page: u64,
    denied: Vec<(Option<String>, String, String)>,
    /// When set, only these `(group, resource, verb)` are allowed, on requests and in reviews.
    role: Option<Vec<(String, String, String)>>,
    forbidden: bool,
    fail_next: u32,
    bookmark_interval: Option<Duration>,
    misbehaviour: Misbehaviour,
    watch_misbehaviour: Misbehaviour,
    frozen: bool,
    /// Whether streaming lists (`sendInitialEvents`) are served; off, they are refused as
    /// kube-apiserver over etcd 3.4 refuses them.
    streaming_lists: bool,
    list_kinds: Vec<ListKind>,
}

/// How a list asked for its data (`resourceVersion` / `resourceVersionMatch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListKind {
    /// No resourceVersion: a consistent read (from etcd on servers without consistent cache reads).
    Consistent,
    /// `resourceVersion=0`: any version, from the watch cache.
    Cached,
    /// `resourceVersionMatch=NotOlderThan` with a version: from the cache, at least that new.
    NotOlderThan,
}

#[derive(Debug)]
struct Shared {
    store: Mutex<Store>,
    events: broadcast::Sender<Event>,
    expire: broadcast::Sender<()>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    lists: AtomicU64,
    watches: AtomicU64,
}

/// Events kept for watches that resume from a resourceVersion (like etcd's compaction window).
const HISTORY: usize = 20_000;

impl Store {
    fn remember(&mut self, ev: Event) {
        self.history.push(ev);
        if self.history.len() > HISTORY {
            let drop = self.history.len() - HISTORY;
            self.compacted = self.history[drop - 1].rv;
            self.history.drain(..drop);
        }
    }
}

impl Shared {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits while the server is frozen.
    async fn unfrozen(&self) {
        while self.store().frozen {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn track(&self, task: JoinHandle<()>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }
}

/// The server. Dropping it stops it.
#[derive(Debug)]
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl FakeApiServer {
    /// Starts on `127.0.0.1:<free port>`.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts on `addr`.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store {
                rv: 100,
                compacted: 0,
                objects: BTreeMap::new(),
                nodes: BTreeMap::new(),
                namespaces: BTreeMap::new(),
                history: Vec::new(),
                pages: HashMap::new(),
                next_page: 0,
                denied: Vec::new(),
                role: None,
                forbidden: false,
                fail_next: 0,
                bookmark_interval: Some(Duration::from_secs(1)),
                misbehaviour: Misbehaviour::None,
                watch_misbehaviour: Misbehaviour::None,
                frozen: false,
                streaming_lists: true,
                list_kinds: Vec::new(),
            }),
            events: broadcast::channel(4096).0,
            expire: broadcast::channel(16).0,
            tasks: Mutex::new(Vec::new()),
            lists: AtomicU64::new(0),
            watches: AtomicU64::new(0),
        });
        let server = FakeApiServer { addr, shared, accept: Mutex::new(None) };
        server.serve(listener);
        Ok(server)
    }

    fn serve(&self, listener: TcpListener) {
        let shared = self.shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let conn_shared = shared.clone();
                let conn = tokio::spawn(async move {
                    let svc_shared = conn_shared.clone();
                    let svc = service_fn(move |req| {
                        let s = svc_shared.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(s, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                shared.track(conn);
            }
        });
        *self.accept.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(accept);
    }

    /// `http://127.0.0.1:<port>`, for `DISCOVERY_API_SERVER`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops: the port closes and every open connection (watches included) is cut.
    pub fn stop(&self) {
        if let Some(a) = self.accept.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            a.abort();
        }
        for t in self.shared.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain(..) {
            t.abort();
        }
    }

    /// Starts again on the same port, with the same objects and history (etcd keeps them).
    pub async fn restart(&self) -> std::io::Result<()> {
        self.stop();
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries > 50 => return Err(e),
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.serve(listener);
        Ok(())
    }

    /// Cuts every open connection (watches included) without closing the port: clients reconnect
    /// at once.
    pub fn drop_connections(&self) {
        for t in self.shared.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain(..) {
            t.abort();
        }
    }

    /// Forgets all history up to now: watches from older versions get 410 Gone.
    pub fn compact(&self) {
        let mut s = self.shared.store();
        s.compacted = s.rv;
        s.history.clear();
        s.pages.clear();
    }

    /// Compacts and ends every running watch with an ERROR 410 event, as a server does when a
    /// watcher falls too far behind.
    pub fn expire_watches(&self) {
        self.compact();
        let _ = self.shared.expire.send(());
    }

    /// Answers the next `n` requests with HTTP 500.
    pub fn fail_next(&self, n: u32) {
        self.shared.store().fail_next = n;
    }

    /// Forbids (403) listing and watching EndpointSlices.
    pub fn set_forbidden(&self, forbidden: bool) {
        self.shared.store().forbidden = forbidden;
    }

    /// Makes SelfSubjectAccessReviews deny `verb` on `resource` (`endpointslices`, `services`, `nodes`)
    /// in every namespace.
    pub fn deny(&self, verb: &str, resource: &str) {
        self.shared.store().denied.push((None, verb.to_owned(), resource.to_owned()));
    }

    /// Enforces RBAC as a real API server does for an identity bound to exactly these rules
    /// (`(group, resource, verbs)`, as in a Role): every other list, watch or get answers 403 Forbidden,
    /// and SelfSubjectAccessReviews answer accordingly. `None`: everything is allowed.
    pub fn enforce_role(&self, rules: Option<&[(&str, &str, &[&str])]>) {
        self.shared.store().role = rules.map(|rules| {
            rules
                .iter()
                .flat_map(|(g, r, verbs)| {
                    verbs.iter().map(move |v| ((*g).to_owned(), (*r).to_owned(), (*v).to_owned()))
                })
                .collect()
        });
    }

    /// Like [`FakeApiServer::deny`], in `namespace` only.
    pub fn deny_in(&self, namespace: &str, verb: &str, resource: &str) {
        self.shared.store().denied.push((Some(namespace.to_owned()), verb.to_owned(), resource.to_owned()));
    }

    /// How often running watches get a BOOKMARK (`None`: never).
    pub fn set_bookmark_interval(&self, every: Option<Duration>) {
        self.shared.store().bookmark_interval = every;
    }

    /// Makes every later list and watch request misbehave (or behave again). Running watches are
    /// cut so that clients meet the new behaviour at once.
    pub fn set_misbehaviour(&self, m: Misbehaviour) {
        self.shared.store().misbehaviour = m;
        self.drop_connections();
    }

    /// Like [`FakeApiServer::set_misbehaviour`], for watch requests only (lists answer properly).
    pub fn set_watch_misbehaviour(&self, m: Misbehaviour) {
        self.shared.store().watch_misbehaviour = m;
        self.drop_connections();
    }

    /// Freezes the server as `docker pause` does to a control plane: connections are still accepted
    /// and stay open, but no request is answered and open watches say nothing, until [`thaw`](Self::thaw).
    pub fn freeze(&self) {
        self.shared.store().frozen = true;
    }

    /// Ends a [`freeze`](Self::freeze): held requests are answered, watches resume.
    pub fn thaw(&self) {
        self.shared.store().frozen = false;
    }

    /// Serves streaming lists (`sendInitialEvents=true`, the default), or refuses them with the error
    /// event kube-apiserver 1.32 over etcd 3.4 sends.
    pub fn set_streaming_lists(&self, served: bool) {
        self.shared.store().streaming_lists = served;
    }

    /// How each plain list request so far asked for its data, oldest first.
    pub fn list_kinds(&self) -> Vec<ListKind> {
        self.shared.store().list_kinds.clone()
    }

    /// List requests served so far (EndpointSlices and Services), streaming lists included.
    pub fn lists(&self) -> u64 {
        self.shared.lists.load(Ordering::Relaxed)
    }

    /// Watch requests served so far.
    pub fn watches(&self) -> u64 {
        self.shared.watches.load(Ordering::Relaxed)
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().rv
    }

    /// A copy of the objects and version, for [`FakeApiServer::restore`].
    pub fn snapshot(&self) -> StoreSnapshot {
        let s = self.shared.store();
        StoreSnapshot { rv: s.rv, objects: s.objects.clone() }
    }

    /// Rolls back to `snap` (objects and resourceVersion; history is lost, as after an etcd restore)
    /// and cuts every connection.
    pub fn restore(&self, snap: &StoreSnapshot) {
        {
            let mut s = self.shared.store();
            s.rv = snap.rv;
            s.objects = snap.objects.clone();
            s.compacted = snap.rv;
            s.history.clear();
            s.pages.clear();
        }
        self.drop_connections();
    }

    /// Creates or replaces an EndpointSlice (ADDED or MODIFIED), as the endpointslice controller does.
    pub fn apply_slice(&self, namespace: &str, slice: Value) {
        self.shared.apply(Res::Slices, namespace, slice);
    }

    /// Deletes an EndpointSlice (DELETED). Returns whether it existed.
    pub fn delete_slice(&self, namespace: &str, name: &str) -> bool {
        self.shared.delete(Res::Slices, namespace, name).is_some()
    }

    /// Creates or replaces a Service (ADDED or MODIFIED).
    pub fn apply_service(&self, namespace: &str, service: Value) {
        self.shared.apply(Res::Services, namespace, service);
    }

    /// Deletes a Service (DELETED). Returns whether it existed.
    pub fn delete_service(&self, namespace: &str, name: &str) -> bool {
        self.shared.delete(Res::Services, namespace, name).is_some()
    }

    /// Creates or replaces a Node with these labels.
    pub fn apply_node(&self, name: &str, labels: &[(&str, &str)]) {
        let labels: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
        let mut s = self.shared.store();
        s.rv += 1;
        let node = json!({"kind": "Node", "apiVersion": "v1", "metadata": {"name": name, "labels": labels, "resourceVersion": s.rv.to_string()}});
        s.nodes.insert(name.to_owned(), node);
    }
}

impl Shared {
    fn apply(&self, res: Res, namespace: &str, mut object: Value) -> Value {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let mut s = self.store();
        s.rv += 1;
        let rv = s.rv;
        let k = (res, namespace.to_owned(), name);
        let generation = s.objects.get(&k).and_then(|o| o["metadata"]["generation"].as_u64()).unwrap_or(0) + 1;
        let kind = if s.objects.contains_key(&k) { "MODIFIED" } else { "ADDED" };
        object["kind"] = json!(res.kind());
        object["apiVersion"] = json!(res.api_version());
        let meta = &mut object["metadata"];
        meta["namespace"] = json!(namespace);
        meta["resourceVersion"] = json!(rv.to_string());
        meta["generation"] = json!(generation);
        // The uid is the object's for life, as on a real server; only a new object gets one.
        let uid = s.objects.get(&k).and_then(|o| o["metadata"]["uid"].as_str().map(str::to_owned));
        meta["uid"] = json!(uid.unwrap_or_else(|| format!("00000000-0000-0000-0000-{rv:012}")));
        meta["creationTimestamp"] = json!("2026-11-26T12:22:18Z");
        s.objects.insert(k, object.clone());
        let ev = Event { rv, kind, res, namespace: namespace.to_owned(), object: object.clone() };
        s.remember(ev.clone());
        let _ = self.events.send(ev);
        object
    }

    fn delete(&self, res: Res, namespace: &str, name: &str) -> Option<Value> {
        let mut s = self.store();
        let mut obj = s.objects.remove(&(res, namespace.to_owned(), name.to_owned()))?;
        s.rv += 1;
        let rv = s.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let ev = Event { rv, kind: "DELETED", res, namespace: namespace.to_owned(), object: obj.clone() };
        s.remember(ev.clone());
        let _ = self.events.send(ev);
        Some(obj)
    }
}

/// One endpoint of a slice, as the controller writes it for a pod.
#[derive(Clone, Debug)]
pub struct PodEndpoint {
    /// Pod IP.
    pub ip: String,
    /// Pod name (`targetRef.name`).
    pub pod: String,
    /// `conditions.ready` (`None`: left out, which means ready).
    pub ready: Option<bool>,
    /// `conditions.serving`.
    pub serving: Option<bool>,
    /// `conditions.terminating`.
    pub terminating: Option<bool>,
    /// `nodeName`.
    pub node: String,
    /// `zone`.
    pub zone: String,
    /// `hints.forZones` (`None`: no hints).
    pub hints: Option<Vec<String>>,
}

impl PodEndpoint {
    /// A ready pod on `node-a` in `zone-a`, conditions written out as the controller does.
    pub fn ready(ip: impl Into<String>, pod: impl Into<String>) -> Self {
        PodEndpoint {
            ip: ip.into(),
            pod: pod.into(),
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
            node: "node-a".into(),
            zone: "zone-a".into(),
            hints: None,
        }
    }

    /// Failing its readiness probe.
    pub fn not_ready(mut self) -> Self {
        (self.ready, self.serving, self.terminating) = (Some(false), Some(false), Some(false));
        self
    }

    /// Deleted gracefully, still serving.
    pub fn terminating(mut self) -> Self {
        (self.ready, self.serving, self.terminating) = (Some(false), Some(true), Some(true));
        self
    }

    /// On `node` in `zone`.
    pub fn located(mut self, node: &str, zone: &str) -> Self {
        node.clone_into(&mut self.node);
        zone.clone_into(&mut self.zone);
        self
    }

    /// With `hints.forZones` (as the controller sets them for topology-aware Services).
    pub fn hinted(mut self, zones: &[&str]) -> Self {
        self.hints = Some(zones.iter().map(|z| (*z).to_owned()).collect());
        self
    }
}

/// An EndpointSlice object as the controller writes it (`addressType` `IPv4`/`IPv6`, named ports).
pub fn endpoint_slice(
    name: &str,
    service: &str,
    address_type: &str,
    ports: &[(&str, u16)],
    pods: &[PodEndpoint],
) -> Value {
    let endpoints: Vec<Value> = pods
        .iter()
        .map(|p| {
            let mut conditions = serde_json::Map::new();
            for (k, v) in [("ready", p.ready), ("serving", p.serving), ("terminating", p.terminating)] {
                if let Some(v) = v {
                    conditions.insert(k.to_owned(), json!(v));
                }
            }
            let mut e = json!({
                "addresses": [p.ip],
                "conditions": conditions,
                "targetRef": {"kind": "Pod", "namespace": "demo", "name": p.pod},
                "nodeName": p.node,
                "zone": p.zone,
            });
            if let Some(h) = &p.hints {
                e["hints"] = json!({"forZones": h.iter().map(|z| json!({"name": z})).collect::<Vec<_>>()});
            }
            e
        })
        .collect();
    json!({
        "metadata": {
            "name": name,
            "generateName": format!("{service}-"),
            "labels": {
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                "kubernetes.io/service-name": service,
            },
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": ports.iter().map(|(n, p)| json!({"name": n, "protocol": "TCP", "port": p})).collect::<Vec<_>>(),
    })
}

/// A Service object with annotations, a named port and a cluster IP (`None` for headless).
pub fn service_object(name: &str, annotations: &[(&str, &str)], cluster_ip: Option<&str>, port: (&str, u16)) -> Value {
    let ann: serde_json::Map<String, Value> = annotations.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
    let ip = cluster_ip.unwrap_or("None");
    json!({
        "metadata": {"name": name, "annotations": ann},
        "spec": {
            "ports": [{"name": port.0, "protocol": "TCP", "port": port.1, "targetPort": port.0}],
            "clusterIP": ip,
            "clusterIPs": [ip],
            "type": "ClusterIP",
        },
        "status": {"loadBalancer": {}},
    })
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
}

fn full(body: Bytes) -> Body {
    Full::new(body).map_err(|never| match never {}).boxed()
}

fn json_response(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(full(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// Headers of a 200, then a body that resets or never ends, as `m` says.
fn misbehave(shared: &Shared, m: Misbehaviour) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
    let task = tokio::spawn(async move {
        if m == Misbehaviour::AcceptThenReset {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let _ = tx.send(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected reset"))).await;
        } else {
            std::future::pending::<()>().await;
            drop(tx);
        }
    });
    shared.track(task);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx))))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// Equality-based selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated (AND).
/// The terms of a label selector: split at commas outside parentheses (`k in (a,b),x=1`).
fn selector_terms(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(selector[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(selector[start..].trim());
    terms.into_iter().filter(|t| !t.is_empty()).collect()
}

/// `k in (a,b)` / `k notin (a,b)`: the key and the set, when `term` is one.
fn set_term<'a>(term: &'a str, op: &str) -> Option<(&'a str, Vec<&'a str>)> {
    let (k, rest) = term.split_once(op)?;
    let set = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some((k.trim(), set.split(',').map(str::trim).collect()))
}

fn selector_matches(selector: &str, labels: &Value) -> bool {
    selector_terms(selector).into_iter().all(|term| {
        if let Some((k, set)) = set_term(term, " notin ") {
            labels[k].as_str().is_none_or(|v| !set.contains(&v))
        } else if let Some((k, set)) = set_term(term, " in ") {
            labels[k].as_str().is_some_and(|v| set.contains(&v))
        } else if let Some((k, v)) = term.split_once("!=") {
            labels[k.trim()].as_str() != Some(v.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            labels[k.trim()].as_str() == Some(v.trim())
        } else if let Some(k) = term.strip_prefix('!') {
            labels.get(k.trim()).is_none()
        } else {
            labels.get(term).is_some()
        }
    })
}

fn strip_type_meta(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.remove("kind");
        m.remove("apiVersion");
    }
    v
}

fn forbidden(res: Res, verb: &str, ns: &str) -> Response<Body> {
    let group = res.group();
    let resource = if group.is_empty() { res.resource().to_owned() } else { format!("{}.{group}", res.resource()) };
    let msg = format!(
        "{resource} is forbidden: User \"{USER}\" cannot {verb} resource \"{}\" in API group \"{group}\" in the namespace \"{ns}\"",
        res.resource()
    );
    let mut st = status(403, "Forbidden", &msg);
    st["details"] = json!({"group": group, "kind": res.resource()});
    json_response(403, &st)
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    shared.unfrozen().await;
    let path: Vec<String> = req.uri().path().trim_matches('/').split('/').map(str::to_owned).collect();
    let q = query(&req);
    {
        let mut s = shared.store();
        if s.fail_next > 0 {
            s.fail_next -= 1;
            return json_response(500, &status(500, "InternalError", "injected failure"));
        }
    }
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    let read = match (req.method(), p.as_slice()) {
        (&Method::GET, ["apis", "discovery.k8s.io", "v1", "namespaces", ns, "endpointslices"]) => {
            Some((Res::Slices, *ns))
        }
        (&Method::GET, ["api", "v1", "namespaces", ns, "services"]) => Some((Res::Services, *ns)),
        _ => None,
    };
    if let Some((res, ns)) = read {
        let verb = if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) { "watch" } else { "list" };
        let (forbid, misbehaviour) = {
            let s = shared.store();
            let m = if verb == "watch" && s.watch_misbehaviour != Misbehaviour::None {
                s.watch_misbehaviour
            } else {
                s.misbehaviour
            };
            let by_role = s
                .role
                .as_ref()
                .is_some_and(|role| !role.iter().any(|(g, r, v)| g == res.group() && r == res.resource() && v == verb));
            ((s.forbidden && res == Res::Slices) || by_role, m)
        };
        if forbid {
            return forbidden(res, verb, ns);
        }
        let streaming = verb == "watch" && matches!(q.get("sendInitialEvents").map(String::as_str), Some("true"));
        if verb == "watch" {
            shared.watches.fetch_add(1, Ordering::Relaxed);
        }
        if verb == "list" || streaming {
            shared.lists.fetch_add(1, Ordering::Relaxed);
        }
        if misbehaviour != Misbehaviour::None {
            return misbehave(&shared, misbehaviour);
        }
        return if verb == "watch" { watch(shared, res, ns, &q).await } else { list(&shared, res, ns, &q).await };
    }
    match (req.method(), p.as_slice()) {
        (&Method::GET, ["readyz"]) => Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/plain; charset=utf-8")
            .body(full(Bytes::from_static(b"ok")))
            .unwrap_or_else(|_| Response::new(full(Bytes::new()))),
        (&Method::GET, ["api", "v1", "nodes", _])
            if shared
                .store()
                .role
                .as_ref()
                .is_some_and(|role| !role.iter().any(|(g, r, v)| g.is_empty() && r == "nodes" && v == "get")) =>
        {
            let msg = format!(
                "nodes is forbidden: User \"{USER}\" cannot get resource \"nodes\" in API group \"\" at the cluster scope"
            );
            json_response(403, &status(403, "Forbidden", &msg))
        }
        (&Method::GET, ["api", "v1", "nodes", name]) => match shared.store().nodes.get(*name) {
            Some(node) => json_response(200, node),
            None => json_response(404, &status(404, "NotFound", &format!("nodes \"{name}\" not found"))),
        },
        (&Method::POST, ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"]) => {
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let attrs = &review["spec"]["resourceAttributes"];
            let verb = attrs["verb"].as_str().unwrap_or_default();
            let resource = attrs["resource"].as_str().unwrap_or_default();
            let namespace = attrs["namespace"].as_str();
            let group = attrs["group"].as_str().unwrap_or_default();
            let denied = {
                let s = shared.store();
                s.denied
                    .iter()
                    .any(|(n, v, r)| v == verb && r == resource && n.as_deref().is_none_or(|n| Some(n) == namespace))
                    || s.role
                        .as_ref()
                        .is_some_and(|role| !role.iter().any(|(g, r, v)| g == group && r == resource && v == verb))
            };
            let status = if denied {
                json!({"allowed": false})
            } else {
                json!({"allowed": true, "reason": "RBAC: allowed by RoleBinding \"consumer-endpointslice-reader/demo\" of Role \"endpointslice-reader\" to ServiceAccount \"consumer/demo\""})
            };
            json_response(
                201,
                &json!({
                    "kind": "SelfSubjectAccessReview",
                    "apiVersion": "authorization.k8s.io/v1",
                    "metadata": {"creationTimestamp": null},
                    "spec": review["spec"],
                    "status": status,
                }),
            )
        }
        (&Method::POST, ["apis", "discovery.k8s.io", "v1", "namespaces", ns, "endpointslices"]) => {
            write(shared.clone(), Res::Slices, ns, None, req).await
        }
        (&Method::PUT, ["apis", "discovery.k8s.io", "v1", "namespaces", ns, "endpointslices", name]) => {
            write(shared.clone(), Res::Slices, ns, Some(name), req).await
        }
        (&Method::POST, ["api", "v1", "namespaces", ns, "services"]) => {
            write(shared.clone(), Res::Services, ns, None, req).await
        }
        (&Method::PUT, ["api", "v1", "namespaces", ns, "services", name]) => {
            write(shared.clone(), Res::Services, ns, Some(name), req).await
        }
        (&Method::POST, ["api", "v1", "namespaces"]) => create_namespace(&shared, req).await,
        (&Method::GET, ["api", "v1", "namespaces", name]) => match shared.store().namespaces.get(*name) {
            Some(ns) => json_response(200, ns),
            None => json_response(404, &status(404, "NotFound", &format!("namespaces \"{name}\" not found"))),
        },
        (&Method::DELETE, ["api", "v1", "namespaces", name]) => delete_namespace(&shared, name),
        (&Method::DELETE, ["apis", "discovery.k8s.io", "v1", "namespaces", ns, "endpointslices", name]) => {
            remove(&shared, Res::Slices, ns, name)
        }
        (&Method::DELETE, ["api", "v1", "namespaces", ns, "services", name]) => {
            remove(&shared, Res::Services, ns, name)
        }
        _ => json_response(404, &status(404, "NotFound", "the server could not find the requested resource")),
    }
}

/// A create (POST, `name` None) or an update (PUT of `name`), with a real server's rules: a create of
/// an existing name is 409 AlreadyExists, an update of a missing object 404, an update whose
/// `metadata.resourceVersion` is not the stored one 409 Conflict (no resourceVersion: unconditional),
/// a name in the body that differs from the path's 400.
async fn write(shared: Arc<Shared>, res: Res, ns: &str, name: Option<&str>, req: Request<Incoming>) -> Response<Body> {
    let obj = match read_object(req).await {
        Ok(obj) => obj,
        Err(resp) => return resp,
    };
    let body_name = obj["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let what =
        if res.group().is_empty() { res.resource().to_owned() } else { format!("{}.{}", res.resource(), res.group()) };
    let existing = shared.store().objects.get(&(res, ns.to_owned(), body_name.clone())).cloned();
    match (name, existing) {
        (None, Some(_)) => {
            let mut st = status(409, "AlreadyExists", &format!("{what} \"{body_name}\" already exists"));
            st["details"] = json!({"name": body_name, "group": res.group(), "kind": res.resource()});
            return json_response(409, &st);
        }
        (Some(path_name), _) if path_name != body_name => {
            let msg = format!("the name of the object ({body_name}) does not match the name on the URL ({path_name})");
            return json_response(400, &status(400, "BadRequest", &msg));
        }
        (Some(_), None) => {
            return json_response(404, &status(404, "NotFound", &format!("{what} \"{body_name}\" not found")));
        }
        (Some(_), Some(current)) => {
            let wanted = obj["metadata"]["resourceVersion"].as_str().filter(|v| !v.is_empty());
            if let Some(wanted) = wanted
                && Some(wanted) != current["metadata"]["resourceVersion"].as_str()
            {
                let msg = format!(
                    "Operation cannot be fulfilled on {what} \"{body_name}\": the object has been modified; please apply your changes to the latest version and try again"
                );
                return json_response(409, &status(409, "Conflict", &msg));
            }
        }
        (None, None) => {}
    }
    json_response(if name.is_none() { 201 } else { 200 }, &shared.apply(res, ns, obj))
}

async fn create_namespace(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let mut obj = match read_object(req).await {
        Ok(obj) => obj,
        Err(resp) => return resp,
    };
    let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let mut s = shared.store();
    if s.namespaces.contains_key(&name) {
        return json_response(409, &status(409, "AlreadyExists", &format!("namespaces \"{name}\" already exists")));
    }
    s.rv += 1;
    obj["kind"] = json!("Namespace");
    obj["apiVersion"] = json!("v1");
    obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
    obj["metadata"]["uid"] = json!(format!("00000000-0000-0000-0000-{:012}", s.rv));
    obj["status"] = json!({"phase": "Active"});
    s.namespaces.insert(name, obj.clone());
    json_response(201, &obj)
}

/// Deletes a namespace and, as the namespace controller does, everything in it (DELETED events).
fn delete_namespace(shared: &Shared, name: &str) -> Response<Body> {
    let Some(mut ns) = shared.store().namespaces.remove(name) else {
        return json_response(404, &status(404, "NotFound", &format!("namespaces \"{name}\" not found")));
    };
    let inside: Vec<(Res, String)> =
        shared.store().objects.keys().filter(|(_, n, _)| n == name).map(|(r, _, o)| (*r, o.clone())).collect();
    for (res, object) in inside {
        shared.delete(res, name, &object);
    }
    ns["status"] = json!({"phase": "Terminating"});
    json_response(200, &ns)
}

fn remove(shared: &Shared, res: Res, ns: &str, name: &str) -> Response<Body> {
    match shared.delete(res, ns, name) {
        Some(obj) => json_response(200, &obj),
        None => {
            let what = if res.group().is_empty() {
                res.resource().to_owned()
            } else {
                format!("{}.{}", res.resource(), res.group())
            };
            json_response(404, &status(404, "NotFound", &format!("{what} \"{name}\" not found")))
        }
    }
}

/// The request body as a JSON object with a `metadata.name`, or the 400/422 a server would answer.
async fn read_object(req: Request<Incoming>) -> Result<Value, Response<Body>> {
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let obj: Value = serde_json::from_slice(&body)
        .map_err(|e| json_response(400, &status(400, "BadRequest", &format!("invalid JSON: {e}"))))?;
    if obj["metadata"]["name"].as_str().is_none_or(str::is_empty) {
        return Err(json_response(422, &status(422, "Invalid", "metadata.name: Required value")));
    }
    Ok(obj)
}

async fn list(shared: &Shared, res: Res, ns: &str, q: &HashMap<String, String>) -> Response<Body> {
    // `resourceVersionMatch=NotOlderThan` with a version the server has not reached: kube-apiserver's
    // cache waits up to 3 s for it, then answers 504 "Too large resource version".
    if q.get("resourceVersionMatch").map(String::as_str) == Some("NotOlderThan")
        && let Some(asked) = q.get("resourceVersion").and_then(|v| v.parse::<u64>().ok())
        && let Some(refused) = too_large(shared, asked).await
    {
        return refused;
    }
    {
        let mut s = shared.store();
        s.list_kinds.push(match (q.get("resourceVersion").map(String::as_str), q.get("resourceVersionMatch")) {
            (None | Some(""), _) => ListKind::Consistent,
            (Some("0"), _) => ListKind::Cached,
            (Some(_), _) => ListKind::NotOlderThan,
        });
    }
    let mut s = shared.store();
    let (rv, mut items) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => match s.pages.remove(token) {
            Some(page) => page,
            None => {
                return json_response(
                    410,
                    &status(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ),
                );
            }
        },
        None => {
            let selector = q.get("labelSelector").cloned().unwrap_or_default();
            let items: Vec<Value> = s
                .objects
                .iter()
                .filter(|((r, n, _), v)| *r == res && n == ns && selector_matches(&selector, &v["metadata"]["labels"]))
                .map(|(_, v)| strip_type_meta(v.clone()))
                .collect();
            (s.rv, items)
        }
    };
    let limit = q.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(limit) = limit.filter(|l| *l < items.len()) {
        let rest = items.split_off(limit);
        s.next_page += 1;
        let token = format!("page-{}-{}", rv, s.next_page);
        metadata["continue"] = json!(token);
        metadata["remainingItemCount"] = json!(rest.len());
        s.pages.insert(token, (rv, rest));
    }
    json_response(
        200,
        &json!({"kind": format!("{}List", res.kind()), "apiVersion": res.api_version(), "metadata": metadata, "items": items}),
    )
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn bookmark(res: Res, rv: u64) -> Bytes {
    let mut object = json!({"kind": res.kind(), "apiVersion": res.api_version(), "metadata": {"resourceVersion": rv.to_string(), "creationTimestamp": null}});
    if res == Res::Slices {
        object["addressType"] = json!("");
        object["endpoints"] = Value::Null;
        object["ports"] = Value::Null;
    }
    line("BOOKMARK", &object)
}

async fn too_large(shared: &Shared, asked: u64) -> Option<Response<Body>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while shared.store().rv < asked {
        if tokio::time::Instant::now() >= deadline {
            let current = shared.store().rv;
            return Some(too_large_status(asked, current));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn too_large_status(asked: u64, current: u64) -> Response<Body> {
    let mut st = status(504, "Timeout", &format!("Too large resource version: {asked}, current: {current}"));
    st["details"] = json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1});
    json_response(504, &st)
}

/// What kube-apiserver 1.32 over etcd 3.4 answers a streaming list (first event of the watch).
const STREAMING_REFUSED: &str =
    "a watch stream was requested by the client but the required storage feature RequestWatchProgress is disabled";

/// The bookmark that ends a streaming list's initial events.
fn initial_events_end(res: Res, rv: u64) -> Bytes {
    let mut object = json!({"kind": res.kind(), "apiVersion": res.api_version(), "metadata": {
        "resourceVersion": rv.to_string(), "creationTimestamp": null,
        "annotations": {"k8s.io/initial-events-end": "true"}}});
    if res == Res::Slices {
        object["addressType"] = json!("");
        object["endpoints"] = Value::Null;
        object["ports"] = Value::Null;
    }
    line("BOOKMARK", &object)
}

fn expired() -> Bytes {
    line("ERROR", &status(410, "Expired", "The resourceVersion for the provided watch is too old."))
}

async fn watch(shared: Arc<Shared>, res: Res, ns: &str, q: &HashMap<String, String>) -> Response<Body> {
    let selector = q.get("labelSelector").cloned().unwrap_or_default();
    let bookmarks = matches!(q.get("allowWatchBookmarks").map(String::as_str), Some("true" | "1"));
    let timeout = q.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).map(Duration::from_secs);
    let from = q.get("resourceVersion").cloned().unwrap_or_default();
    let initial_events = matches!(q.get("sendInitialEvents").map(String::as_str), Some("true"));
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1024);
    let ns = ns.to_owned();
    let matches = move |e: &Event| {
        e.res == res && e.namespace == ns && selector_matches(&selector, &e.object["metadata"]["labels"])
    };
    // What kube-apiserver's watch cache does when asked for a version it has not reached (a
    // rolled-back or lagging server): wait up to 3 s for it, then 504.
    if let Ok(asked) = from.parse::<u64>()
        && let Some(refused) = too_large(&shared, asked).await
    {
        return refused;
    }
    // Under the store lock: the replay and the live subscription meet without a gap.
    let (replay, mut live, mut expire, start_rv, interval, refuse) = {
        let s = shared.store();
        let live = shared.events.subscribe();
        let expire = shared.expire.subscribe();
        // A streaming list starts from the current state whatever version it names (NotOlderThan).
        let from = if initial_events { "" } else { from.as_str() };
        let replay: Result<Vec<Event>, ()> = match from {
            "" | "0" => Ok(s
                .objects
                .iter()
                .map(|((r, n, _), o)| Event {
                    rv: s.rv,
                    kind: "ADDED",
                    res: *r,
                    namespace: n.clone(),
                    object: o.clone(),
                })
                .filter(|e| matches(e))
                .collect()),
            v => match v.parse::<u64>() {
                Ok(v) if v >= s.compacted => Ok(s.history.iter().filter(|e| e.rv > v && matches(e)).cloned().collect()),
                _ => Err(()),
            },
        };
        (replay, live, expire, s.rv, s.bookmark_interval, initial_events && !s.streaming_lists)
    };
    let producer_shared = shared.clone();
    let producer = tokio::spawn(async move {
        let send = |b: Bytes| {
            let tx = tx.clone();
            let shared = producer_shared.clone();
            async move {
                shared.unfrozen().await;
                tx.send(Ok(Frame::data(b))).await.is_ok()
            }
        };
        if refuse {
            let _ = send(line("ERROR", &status(500, "InternalError", STREAMING_REFUSED))).await;
            return;
        }
        let events = match replay {
            Ok(ev) => ev,
            Err(()) => {
                let _ = send(expired()).await;
                return;
            }
        };
        let mut last = start_rv;
        for e in events {
            if !send(line(e.kind, &e.object)).await {
                return;
            }
        }
        if initial_events && !send(initial_events_end(res, start_rv)).await {
            return;
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut tick = interval.map(|i| tokio::time::interval_at(tokio::time::Instant::now() + i, i));
        loop {
            let until_deadline = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let next_tick = async {
                match tick.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = live.recv() => match ev {
                    Ok(e) => {
                        if e.rv > last {
                            last = e.rv;
                        }
                        if e.rv > start_rv && matches(&e) && !send(line(e.kind, &e.object)).await {
                            return;
                        }
                    }
                    Err(_) => {
                        let _ = send(expired()).await;
                        return;
                    }
                },
                _ = expire.recv() => {
                    let _ = send(expired()).await;
                    return;
                }
                () = next_tick, if bookmarks => {
                    let rv = producer_shared.store().rv.max(last);
                    if !send(bookmark(res, rv)).await {
                        return;
                    }
                }
                () = until_deadline => {
                    if bookmarks {
                        let rv = producer_shared.store().rv.max(last);
                        let _ = send(bookmark(res, rv)).await;
                    }
                    return;
                }
            }
        }
    });
    shared.track(producer);
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let labels = json!({"kubernetes.io/service-name": "greeter", "x": "1"});
        assert!(selector_matches("kubernetes.io/service-name=greeter", &labels));
        assert!(selector_matches("kubernetes.io/service-name==greeter,x", &labels));
        assert!(!selector_matches("kubernetes.io/service-name=other", &labels));
        assert!(selector_matches("x!=2,!y", &labels));
        assert!(selector_matches("kubernetes.io/service-name in (a,greeter),x", &labels));
        assert!(!selector_matches("kubernetes.io/service-name in (a,b)", &labels));
        assert!(selector_matches("kubernetes.io/service-name notin (a,b)", &labels));
        assert!(!selector_matches("kubernetes.io/service-name notin (greeter)", &labels));
        assert_eq!(percent_decode("kubernetes.io%2Fservice-name%3Dgreeter"), "kubernetes.io/service-name=greeter");
    }
}
