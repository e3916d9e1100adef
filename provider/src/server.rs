//! Start, serve, drain, stop.
//!
//! On shutdown: readiness turns 503 and gRPC health NOT_SERVING at once, the server keeps serving for
//! `drain` while Kubernetes removes the endpoint and consumers stop picking it, then it stops
//! accepting, lets in-flight calls finish (HTTP/2 GOAWAY) for up to `shutdown_timeout`, and returns.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tracing::{info, warn};

use crate::admin::{self, AdminState};
use crate::config::ProviderConfig;
use crate::executions::Executions;
use crate::greeter::{CallMetrics, Greeter, identity_check};
use crate::pb::Instance;
use crate::pb::greeter_service_server::GreeterServiceServer;
use crate::tls::{TlsCallMetrics, caller_check};
use discovery::tls::{Authorizer, ServerTls, TlsError, TlsMetrics};

/// The gRPC health service name for liveness probes (SERVING until the process exits).
pub const LIVENESS: &str = "liveness";

/// Why the provider could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A port could not be bound.
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The execution log cannot be opened for appending.
    #[error("failed to open PROVIDER_EXECUTION_LOG={path:?}: {source}")]
    ExecutionLog {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS files cannot be used.
    #[error("{0}")]
    Tls(#[from] discovery::tls::TlsError),
    /// The Triple server failed.
    #[error("triple server failed: {0}")]
    Serve(#[source] tonic::transport::Error),
}

impl Error {
    /// Exit code: 2 for what configuration can fix, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::ExecutionLog { .. } | Error::Tls(_) => 2,
            _ => 1,
        }
    }
}

/// A running provider.
#[derive(Debug)]
pub struct Provider {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    draining: Arc<AtomicBool>,
    health: tonic_health::server::HealthReporter,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    admin: JoinHandle<()>,
    cfg: ProviderConfig,
    tls: Option<ServerTls>,
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.server.abort();
        self.admin.abort();
    }
}

impl Provider {
    /// Binds both ports and starts serving.
    pub async fn start(cfg: ProviderConfig) -> Result<Self, Error> {
        let listener =
            TcpListener::bind(cfg.listen).await.map_err(|source| Error::Bind { addr: cfg.listen, source })?;
        let admin_listener =
            admin::bind(cfg.admin_listen).await.map_err(|source| Error::Bind { addr: cfg.admin_listen, source })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind { addr: cfg.listen, source })?;
        let admin_addr =
            admin_listener.local_addr().map_err(|source| Error::Bind { addr: cfg.admin_listen, source })?;

        let mut registry = Registry::default();
        let metrics = CallMetrics::register(&mut registry);
        let executions = Executions::new(cfg.duplicate_window, cfg.execution_log.as_deref(), &mut registry)
            .map_err(|source| Error::ExecutionLog { path: cfg.execution_log.clone().unwrap_or_default(), source })?;
        let draining = Arc::new(AtomicBool::new(false));
        let instance = Instance {
            name: cfg.instance.clone(),
            ip: cfg.ip.clone(),
            version: cfg.version.clone(),
            group: cfg.group.clone(),
        };
        let greeter = GreeterServiceServer::new(Greeter::new(instance, metrics.clone(), executions))
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip);
        let tls = match cfg.tls() {
            Some(opts) => {
                let metrics = TlsMetrics::register(registry.sub_registry_with_prefix("provider"));
                Some(ServerTls::start(opts, metrics)?)
            }
            None => None,
        };
        let allow = Authorizer::new(&cfg.tls_allow).map_err(|reason| {
            Error::Tls(TlsError::Missing { what: "a valid PROVIDER_TLS_ALLOW".into(), why: reason })
        })?;
        let mut caller = caller_check(tls.clone(), allow, TlsCallMetrics::register(&mut registry));
        let mut identity = identity_check(cfg.version.clone(), cfg.group.clone(), metrics);
        let greeter = InterceptedService::new(greeter, move |req| identity(caller(req)?));
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<GreeterServiceServer<Greeter>>().await;
        // Liveness stays SERVING through the drain: a draining provider is alive, only not ready.
        health.set_service_status(LIVENESS, tonic_health::ServingStatus::Serving).await;

        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let incoming = crate::tls::incoming(listener, tls.clone());
        let server = tokio::spawn(
            Server::builder().add_service(health_service).add_service(greeter).serve_with_incoming_shutdown(
                incoming,
                async {
                    let _ = stop_rx.await;
                },
            ),
        );
        let state = AdminState { registry: Arc::new(registry), draining: draining.clone(), tls: tls.clone() };
        let admin = tokio::spawn(async move {
            if let Err(e) = axum::serve(admin_listener, admin::router(state)).await {
                warn!(error = %e, "admin server failed");
            }
        });
        let mode = match &tls {
            Some(t) if t.mutual() => "mutual TLS",
            Some(_) => "TLS",
            None => "plaintext",
        };
        info!(%addr, %admin_addr, version = %cfg.version, group = %cfg.group, instance = %cfg.instance, mode, "provider serving");
        Ok(Provider { addr, admin_addr, draining, health, stop: Some(stop_tx), server, admin, cfg, tls })
    }

    /// The Triple address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TLS state (what is loaded, reloads), when TLS is on.
    pub fn tls_status(&self) -> Option<discovery::tls::TlsStatus> {
        self.tls.as_ref().map(ServerTls::status)
    }

    /// The admin HTTP address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Drains, then stops: see the module documentation. Returns once the server has stopped or the
    /// shutdown timeout has passed.
    pub async fn drain_and_stop(mut self) -> Result<(), Error> {
        let started = Instant::now();
        self.draining.store(true, Ordering::Relaxed);
        self.health.set_not_serving::<GreeterServiceServer<Greeter>>().await;
        self.health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
        info!(drain = ?self.cfg.drain, "draining: NOT_SERVING, still answering calls");
        tokio::time::sleep(self.cfg.drain).await;
        info!("drain over: no new connections; finishing in-flight calls");
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = match tokio::time::timeout(self.cfg.shutdown_timeout, &mut self.server).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(Error::Serve(e)),
            Ok(Err(_join)) => Ok(()),
            Err(_) => {
                warn!(timeout = ?self.cfg.shutdown_timeout, "in-flight calls did not finish in time; exiting anyway");
                Ok(())
            }
        };
        info!(elapsed = ?started.elapsed(), "provider stopped");
        result
    }
}

/// Serves until `shutdown` completes, then drains and stops.
pub async fn run(cfg: ProviderConfig, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let provider = Provider::start(cfg).await?;
    shutdown.await;
    provider.drain_and_stop().await
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("SIGINT received"),
        () = term => info!("SIGTERM received"),
    }
}
