//! The second client stack: the official `dubbo` crate (0.4), with providers from discovery's
//! `kubernetes://` registry extension, so dubbo-rust works against Kubernetes as it is.
//!
//! Its measured defects are contained here (see README, "The dubbo-crate client"):
//! - calls panic on a refused connection (an `unwrap` in its connector): each call is its own task,
//!   and a panicked task is counted as a failed call;
//! - a call with no provider hangs for ever and `with_timeout` is ignored: every call gets a tokio
//!   timeout of `CONSUMER_DEADLINE`;
//! - its futures are not `Send`, and its extension directory lives on the runtime that first
//!   touched it: the stack runs on its own thread, a current-thread runtime with a `LocalSet`, and
//!   takes calls over a channel (steady traffic, `/call`, `consumer call` alike);
//! - it stamps every request `tri-service-version: dubbo-rust/0.1.0` and `tri-service-group: cluster`
//!   after copying the caller's headers, so a caller cannot say which version it wants; the
//!   version is chosen by discovery instead (the registry URL), and the provider reads that marker
//!   as "no identity asked" (see `provider::greeter::DUBBO_RUST_MARKER`);
//! - an error answered as trailers only (e.g. UNIMPLEMENTED) surfaces as "Missing response message".
//!
//! The stack waits for discovery's first answer before it takes calls, so the first call finds
//! providers, and logs why calls failed (by cause, at most once a second), not only panics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use discovery::{Discovery, ServiceWatch};
use dubbo::codegen::{ClientBuilder, Metadata, Request, RpcInvocation, TripleClient};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::config::ConsumerConfig;
use crate::reply::Reply;
use crate::stats::Stats;

/// `HelloRequest` for the dubbo crate's prost 0.11 codec (same field numbers as the proto).
#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
pub struct HelloRequest {
    /// Name to greet.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `Instance` for the prost 0.11 codec.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
pub struct Instance {
    /// Pod name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Pod IP.
    #[prost(string, tag = "2")]
    pub ip: String,
    /// Version served.
    #[prost(string, tag = "3")]
    pub version: String,
    /// Group served.
    #[prost(string, tag = "4")]
    pub group: String,
}

/// `HelloReply` for the prost 0.11 codec.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
pub struct HelloReply {
    /// The greeting.
    #[prost(string, tag = "1")]
    pub message: String,
    /// Who served it.
    #[prost(message, optional, tag = "2")]
    pub served_by: Option<Instance>,
}

/// The registry URL for `cfg`: `kubernetes://<namespace>?version=…&group=…`.
pub fn registry_url(cfg: &ConsumerConfig) -> String {
    format!("kubernetes://{}?version={}&group={}", cfg.discovery.namespace, cfg.service.version, cfg.service.group)
}

/// One `SayHello` through the dubbo crate. Not `Send`: run it on a `LocalSet`.
pub async fn say_hello(client: &mut TripleClient, interface: &str, name: &str) -> Result<HelloReply, String> {
    // The version and group were chosen by discovery (the registry URL); dubbo-rust 0.4 overwrites
    // the `tri-service-*` headers with its own constants whatever the request carries.
    let invocation =
        RpcInvocation::default().with_service_unique_name(interface.to_owned()).with_method_name("SayHello".into());
    let path =
        http::uri::PathAndQuery::try_from(format!("/{interface}/SayHello")).map_err(|e| format!("bad path: {e}"))?;
    let req = Request::from_parts(Metadata::new(), HelloRequest { name: name.to_owned() });
    client
        .unary::<HelloRequest, HelloReply>(req, path, invocation)
        .await
        .map(|r| r.into_parts().1)
        .map_err(|s| format!("{s:?}"))
}

fn to_reply(r: HelloReply, started: Instant) -> Reply {
    Reply {
        reply: provider::pb::HelloReply {
            message: r.message,
            served_by: r.served_by.map(|i| provider::pb::Instance {
                name: i.name,
                ip: i.ip,
                version: i.version,
                group: i.group,
            }),
        },
        // The dubbo crate does not say which endpoint served a call.
        endpoint: None,
        attempts: 1,
        latency: started.elapsed(),
    }
}

type Job = (String, oneshot::Sender<Result<Reply, tonic::Status>>);

/// Stops the stack's thread when the last handle goes.
#[derive(Debug)]
struct Thread {
    stop: Option<oneshot::Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Thread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        // The thread ends promptly once told; do not block a runtime thread waiting for it.
        drop(self.handle.take());
    }
}

/// The dubbo-crate stack: a handle to its thread.
#[derive(Clone, Debug)]
pub struct DubboStack {
    jobs: mpsc::Sender<Job>,
    watch: ServiceWatch,
    stats: Stats,
    _thread: Arc<Thread>,
}

impl DubboStack {
    /// Installs the registry with `hub`, waits for discovery's first answer, starts the thread.
    pub async fn start(cfg: &ConsumerConfig, hub: Discovery, stats: Stats) -> Result<Self, crate::Error> {
        let watch = hub.service(cfg.service.clone()).await?;
        if watch.ready(cfg.discovery.api.cold_start_timeout + cfg.deadline).await.is_none() {
            warn!(service = %cfg.service, "no endpoint set yet; the first calls may wait for one");
        }
        let (jobs, rx) = mpsc::channel::<Job>(cfg.concurrency.max(1) * 2);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
        let (url, interface, deadline) = (registry_url(cfg), cfg.service.interface.clone(), cfg.deadline);
        let handle = std::thread::Builder::new()
            .name("dubbo-client".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, drive(hub, url, interface, deadline, ready_tx, rx, stop_rx));
            })
            .map_err(|e| crate::Error::Dubbo(format!("failed to start the dubbo client thread: {e}")))?;
        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(crate::Error::Dubbo(e)),
            Err(_) => return Err(crate::Error::Dubbo("the dubbo client thread ended at start".into())),
        }
        let thread = Thread { stop: Some(stop_tx), handle: Some(handle) };
        Ok(DubboStack { jobs, watch, stats, _thread: Arc::new(thread) })
    }

    /// One `SayHello` through the dubbo crate.
    pub async fn say_hello(&self, name: &str) -> Result<Reply, tonic::Status> {
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        let result = match self.jobs.send((name.to_owned(), tx)).await {
            Ok(()) => {
                rx.await.unwrap_or_else(|_| Err(tonic::Status::internal("the dubbo client thread dropped the call")))
            }
            Err(_) => Err(tonic::Status::unavailable("the dubbo client thread has stopped")),
        };
        self.stats.record(&result, started.elapsed());
        result
    }

    /// The service followed.
    pub fn service(&self) -> &ServiceWatch {
        &self.watch
    }

    /// Call statistics.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

async fn drive(
    hub: Discovery,
    url: String,
    interface: String,
    deadline: Duration,
    ready: oneshot::Sender<Result<(), String>>,
    mut jobs: mpsc::Receiver<Job>,
    mut stop: oneshot::Receiver<()>,
) {
    if let Err(e) = discovery::adapter::dubbo::install(hub).await {
        let _ = ready.send(Err(format!("failed to register the kubernetes registry extension: {e}")));
        return;
    }
    let parsed = match url.parse() {
        Ok(u) => u,
        Err(e) => {
            let _ = ready.send(Err(format!("bad registry URL {url}: {e}")));
            return;
        }
    };
    let client = TripleClient::new(ClientBuilder::new().with_registry(parsed));
    info!(registry = %url, "dubbo client stack started");
    let _ = ready.send(Ok(()));
    let interface = Arc::new(interface);
    // Failures by cause since the last log line, with one example each.
    let failures = Arc::new(std::sync::Mutex::new(BTreeMap::<&'static str, (u64, String)>::new()));
    let mut flush = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = flush.tick() => {
                let batch = std::mem::take(&mut *failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
                for (cause, (n, example)) in batch {
                    warn!(cause, failures = n, example = %example, "dubbo crate calls failed in the last second");
                }
            }
            job = jobs.recv() => {
                let Some((name, reply)) = job else { return };
                let (mut c, interface, failures) = (client.clone(), interface.clone(), failures.clone());
                tokio::task::spawn_local(async move {
                    let started = Instant::now();
                    // The call runs in its own task so that a panic inside the dubbo crate stays there.
                    let call = {
                        let interface = interface.clone();
                        tokio::task::spawn_local(async move { tokio::time::timeout(deadline, say_hello(&mut c, &interface, &name)).await })
                    };
                    let result = match call.await {
                        Ok(Ok(Ok(r))) => Ok(to_reply(r, started)),
                        Ok(Ok(Err(e))) => Err(("error", tonic::Status::unknown(e))),
                        Ok(Err(_elapsed)) => Err((
                            "deadline",
                            tonic::Status::deadline_exceeded(format!("no answer within {deadline:?} (the dubbo crate waits for ever without providers)")),
                        )),
                        Err(join) => Err(("panicked", tonic::Status::internal(format!("dubbo client panicked: {join}")))),
                    };
                    let result = result.map_err(|(cause, status)| {
                        let mut f = failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        let entry = f.entry(cause).or_insert_with(|| (0, status.message().to_owned()));
                        entry.0 += 1;
                        status
                    });
                    let _ = reply.send(result);
                });
            }
        }
    }
}
