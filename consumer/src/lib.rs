//! The demo's Dubbo Triple consumer: finds providers with the discovery crate and calls them.
//!
//! `main.rs` is thin: parse the command line, load [`ConsumerConfig`], init telemetry, then [`run`]
//! (steady traffic + admin port) or `resolve` / `call`.

pub mod admin;
pub mod client;
pub mod config;
#[cfg(feature = "dubbo")]
pub mod dubbo_stack;
pub mod resolve;
pub mod stats;
pub mod traffic;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use discovery::Discovery;

use prometheus_client::registry::Registry;
use tracing::{info, warn};

pub use client::{CallError, CallPolicy, GreeterClient, Reply};
pub use config::{ClientKind, ConsumerConfig};
pub use stats::{Stats, StatsSnapshot};

/// Why the consumer could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Discovery could not start.
    #[error(transparent)]
    Discovery(#[from] discovery::Error),
    /// A port could not be bound.
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The dubbo client stack failed.
    #[error("dubbo client stack: {0}")]
    Dubbo(String),
}

impl Error {
    /// Exit code: 2 for what configuration can fix, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Discovery(discovery::Error::Mapping(_)) => 2,
            _ => 1,
        }
    }
}

/// The call policy of a configuration.
pub fn policy(cfg: &ConsumerConfig) -> CallPolicy {
    CallPolicy {
        deadline: cfg.deadline,
        retries: cfg.retries,
        retry_budget: cfg.retry_budget,
        connect_timeout: cfg.connect_timeout,
    }
}

/// Starts discovery and the client of `cfg.service`, with metrics registered in `registry`.
pub async fn connect(cfg: &ConsumerConfig, registry: &mut Registry) -> Result<GreeterClient, Error> {
    let metrics = discovery::Metrics::register(registry);
    let stats = Stats::register(registry);
    let hub = Discovery::new(&cfg.discovery, metrics).await?;
    let d = hub.service(cfg.service.clone()).await?;
    Ok(GreeterClient::new(d, policy(cfg), stats))
}

/// Runs the demo until `shutdown` completes: admin port, and steady traffic on the configured stack.
pub async fn run(cfg: ConsumerConfig, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
    let mut registry = Registry::default();
    let client = connect(&cfg, &mut registry).await?;
    let listener = tokio::net::TcpListener::bind(cfg.admin_listen)
        .await
        .map_err(|source| Error::Bind { addr: cfg.admin_listen, source })?;
    let state = admin::AdminState { client: client.clone(), registry: Arc::new(registry) };
    let admin = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, admin::router(state)).await {
            warn!(error = %e, "admin server failed");
        }
    });
    info!(service = %cfg.service, target = %client.discovery().target(), admin = %cfg.admin_listen, client = ?cfg.client, "consumer started");
    let result = match cfg.client {
        ClientKind::Tonic => {
            traffic::run(client, cfg.name.clone(), cfg.rate, cfg.concurrency, cfg.report_interval, shutdown).await;
            Ok(())
        }
        #[cfg(feature = "dubbo")]
        ClientKind::Dubbo => dubbo_stack::run(&cfg, client.stats().clone(), shutdown).await,
        #[cfg(not(feature = "dubbo"))]
        ClientKind::Dubbo => {
            Err(Error::Dubbo("CONSUMER_CLIENT=dubbo needs a consumer built with `--features dubbo`".to_owned()))
        }
    };
    admin.abort();
    result
}
