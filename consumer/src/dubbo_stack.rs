//! The second client stack: the official `dubbo` crate (0.4), with providers from discovery's
//! `kubernetes://` registry extension, so dubbo-rust works against Kubernetes as it is.
//!
//! Its measured defects are contained here (see README, "The dubbo-crate client"):
//! - calls panic on a refused connection (an `unwrap` in its connector): each call is its own task,
//!   and a panicked task is counted as a failed call;
//! - a call with no provider hangs for ever and `with_timeout` is ignored: every call gets a tokio
//!   timeout of `CONSUMER_DEADLINE`;
//! - its futures are not `Send`: the stack runs on its own thread, a current-thread runtime with a
//!   `LocalSet`;
//! - it stamps every request `tri-service-version: dubbo-rust/0.1.0` and `tri-service-group: cluster`
//!   after copying the caller's headers, so a caller cannot say which version it wants; the
//!   version is chosen by discovery instead (the registry URL), and the provider reads that marker
//!   as "no identity asked" (see `provider::greeter::DUBBO_RUST_MARKER`);
//! - an error answered as trailers only (e.g. UNIMPLEMENTED) surfaces as "Missing response message".

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use discovery::EndpointKey;
use dubbo::codegen::{ClientBuilder, Metadata, Request, RpcInvocation, TripleClient};
use tokio::sync::{Semaphore, oneshot};
use tracing::{info, warn};

use crate::client::{CallError, Reply};
use crate::config::ConsumerConfig;
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
pub async fn say_hello(client: &mut TripleClient, cfg: &ConsumerConfig, name: &str) -> Result<HelloReply, String> {
    // The version and group were chosen by discovery (the registry URL); dubbo-rust 0.4 overwrites
    // the `tri-service-*` headers with its own constants whatever the request carries.
    let meta = Metadata::new();
    let invocation = RpcInvocation::default()
        .with_service_unique_name(cfg.service.interface.clone())
        .with_method_name("SayHello".into());
    let path = http::uri::PathAndQuery::try_from(format!("/{}/SayHello", cfg.service.interface))
        .map_err(|e| format!("bad path: {e}"))?;
    let req = Request::from_parts(meta, HelloRequest { name: name.to_owned() });
    client
        .unary::<HelloRequest, HelloReply>(req, path, invocation)
        .await
        .map(|r| r.into_parts().1)
        .map_err(|s| format!("{s:?}"))
}

/// The dubbo crate does not say which endpoint served a call.
fn registry_endpoint() -> EndpointKey {
    EndpointKey(std::net::SocketAddr::from(([0, 0, 0, 0], 0)))
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
        endpoint: registry_endpoint(),
        attempts: 1,
        latency: started.elapsed(),
    }
}

/// Steady traffic through the dubbo crate until `shutdown` completes.
pub async fn run(cfg: &ConsumerConfig, stats: Stats, shutdown: impl Future<Output = ()>) -> Result<(), crate::Error> {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
    let cfg = cfg.clone();
    let thread = std::thread::Builder::new()
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
            local.block_on(&rt, drive(cfg, stats, ready_tx, stop_rx));
        })
        .map_err(|e| crate::Error::Dubbo(format!("failed to start the dubbo client thread: {e}")))?;
    match ready_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(crate::Error::Dubbo(e)),
        Err(_) => return Err(crate::Error::Dubbo("the dubbo client thread ended at start".into())),
    }
    shutdown.await;
    let _ = stop_tx.send(());
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    Ok(())
}

async fn drive(
    cfg: ConsumerConfig,
    stats: Stats,
    ready: oneshot::Sender<Result<(), String>>,
    mut stop: oneshot::Receiver<()>,
) {
    // The registry serves every subscription through one hub; wait for discovery's first answer so
    // that the first call finds providers.
    let hub = match discovery::Discovery::new(&cfg.discovery, discovery::Metrics::default()).await {
        Ok(h) => h,
        Err(e) => {
            let _ = ready.send(Err(format!("discovery failed to start: {e}")));
            return;
        }
    };
    let watch = match hub.service(cfg.service.clone()).await {
        Ok(w) => w,
        Err(e) => {
            let _ = ready.send(Err(format!("discovery failed to start: {e}")));
            return;
        }
    };
    if watch.ready(cfg.discovery.api.cold_start_timeout + cfg.deadline).await.is_none() {
        warn!(service = %cfg.service, "no endpoint set yet; the first calls may wait for one");
    }
    if let Err(e) = discovery::adapter::dubbo::install(hub).await {
        let _ = ready.send(Err(format!("failed to register the kubernetes registry extension: {e}")));
        return;
    }
    let url = match registry_url(&cfg).parse() {
        Ok(u) => u,
        Err(e) => {
            let _ = ready.send(Err(format!("bad registry URL {}: {e}", registry_url(&cfg))));
            return;
        }
    };
    let client = TripleClient::new(ClientBuilder::new().with_registry(url));
    info!(registry = %registry_url(&cfg), "dubbo client stack started");
    let _ = ready.send(Ok(()));
    if cfg.rate <= 0.0 {
        let _ = stop.await;
        return;
    }
    let cfg = Arc::new(cfg);
    let permits = Arc::new(Semaphore::new(cfg.concurrency));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / cfg.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                let Ok(permit) = permits.clone().try_acquire_owned() else { continue };
                let (mut c, cfg, stats) = (client.clone(), cfg.clone(), stats.clone());
                tokio::task::spawn_local(async move {
                    let started = Instant::now();
                    // The call runs in its own task so that a panic inside the dubbo crate stays there.
                    let call = {
                        let cfg = cfg.clone();
                        tokio::task::spawn_local(async move {
                            tokio::time::timeout(cfg.deadline, say_hello(&mut c, &cfg, &cfg.name)).await
                        })
                    };
                    let service = cfg.service.to_string();
                    let result = match call.await {
                        Ok(Ok(Ok(reply))) => Ok(to_reply(reply, started)),
                        Ok(Ok(Err(e))) => Err(CallError::Status {
                            service,
                            endpoint: registry_endpoint(),
                            status: tonic::Status::unknown(e),
                            attempts: 1,
                        }),
                        Ok(Err(_elapsed)) => Err(CallError::Deadline { service, deadline: cfg.deadline, attempts: 1 }),
                        Err(join) => {
                            warn!(error = %join, "dubbo client call panicked (contained)");
                            Err(CallError::Status {
                                service,
                                endpoint: registry_endpoint(),
                                status: tonic::Status::internal(format!("dubbo client panicked: {join}")),
                                attempts: 1,
                            })
                        }
                    };
                    stats.record(&result, started.elapsed());
                    drop(permit);
                });
            }
        }
    }
}
