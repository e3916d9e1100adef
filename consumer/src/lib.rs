//! The demo's Dubbo Triple consumer: a thin user of the discovery library. Its calls go through
//! [`discovery::client::Balanced`] (or, with `CONSUMER_CLIENT=dubbo`, the `dubbo` crate over
//! discovery's `kubernetes://` registry).
//!
//! `main.rs` is thin: parse the command line, load [`ConsumerConfig`], init telemetry, then [`run`]
//! (steady traffic + admin port) or `resolve` / `call`.

pub mod admin;
pub mod config;
#[cfg(feature = "dubbo")]
pub mod dubbo_stack;
pub mod greeter;
pub mod reply;
pub mod resolve;
pub mod stats;
pub mod traffic;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use discovery::client::{Balanced, ClientMetrics};
use discovery::{Discovery, ServiceWatch};
use prometheus_client::registry::Registry;
use tracing::{info, warn};

pub use config::{ClientKind, ConsumerConfig};
pub use greeter::Greeter;
pub use reply::Reply;
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
    /// The Role to apply, when RBAC is what is missing.
    pub fn role(&self) -> Option<&str> {
        match self {
            Error::Discovery(e) => e.role(),
            _ => None,
        }
    }

    /// Exit code: 2 for what configuration can fix, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Discovery(e) if e.is_configuration() => 2,
            Error::Dubbo(e) if e.contains("--features dubbo") => 2,
            _ => 1,
        }
    }
}

/// The configured client stack.
#[derive(Clone, Debug)]
pub enum Stack {
    /// tonic's generated client over discovery's balanced client.
    Tonic(Greeter),
    /// The `dubbo` crate over discovery's `kubernetes://` registry.
    #[cfg(feature = "dubbo")]
    Dubbo(dubbo_stack::DubboStack),
}

impl Stack {
    /// One `SayHello`.
    pub async fn say_hello(&self, name: &str) -> Result<Reply, tonic::Status> {
        match self {
            Stack::Tonic(g) => g.say_hello(name).await,
            #[cfg(feature = "dubbo")]
            Stack::Dubbo(d) => d.say_hello(name).await,
        }
    }

    /// The service followed.
    pub fn service(&self) -> &ServiceWatch {
        match self {
            Stack::Tonic(g) => g.balanced().service(),
            #[cfg(feature = "dubbo")]
            Stack::Dubbo(d) => d.service(),
        }
    }

    /// The balanced client (tonic stack only).
    pub fn balanced(&self) -> Option<&Balanced> {
        match self {
            Stack::Tonic(g) => Some(g.balanced()),
            #[cfg(feature = "dubbo")]
            Stack::Dubbo(_) => None,
        }
    }

    /// The counters, with the balanced client's retries, causes and zones.
    pub fn stats(&self) -> StatsSnapshot {
        match self {
            Stack::Tonic(g) => {
                let mut s = g.stats().snapshot();
                let c = g.balanced().stats();
                s.retries = c.retries;
                s.not_replayed = c.not_replayed;
                s.budget_exhausted = c.budget_exhausted;
                s.causes = c.failed;
                s.calls_by_zone = c.calls_by_zone;
                s
            }
            #[cfg(feature = "dubbo")]
            Stack::Dubbo(d) => d.stats().snapshot(),
        }
    }

    /// Which stack this is.
    pub fn kind(&self) -> ClientKind {
        match self {
            Stack::Tonic(_) => ClientKind::Tonic,
            #[cfg(feature = "dubbo")]
            Stack::Dubbo(_) => ClientKind::Dubbo,
        }
    }
}

/// Starts discovery and the configured client stack, with metrics registered in `registry`.
pub async fn connect(cfg: &ConsumerConfig, registry: &mut Registry) -> Result<Stack, Error> {
    let metrics = discovery::Metrics::register(registry);
    let stats = Stats::register(registry);
    let hub = Discovery::new(&cfg.discovery, metrics).await?;
    match cfg.client {
        ClientKind::Tonic => {
            let opts = cfg.client_options(ClientMetrics::register(registry));
            let balanced = Balanced::new(&hub, cfg.service.clone(), opts).await?;
            if !balanced.ready(cfg.discovery.api.cold_start_timeout + cfg.deadline).await {
                warn!(service = %cfg.service, "no endpoint set yet; calls wait for one within their deadline");
            }
            Ok(Stack::Tonic(Greeter::new(balanced, stats)))
        }
        #[cfg(feature = "dubbo")]
        ClientKind::Dubbo => Ok(Stack::Dubbo(dubbo_stack::DubboStack::start(cfg, hub, stats).await?)),
        #[cfg(not(feature = "dubbo"))]
        ClientKind::Dubbo => {
            let _ = stats;
            Err(Error::Dubbo("CONSUMER_CLIENT=dubbo needs a consumer built with `--features dubbo`".to_owned()))
        }
    }
}

/// Runs the demo until `shutdown` completes: admin port, and steady traffic on the configured stack.
pub async fn run(cfg: ConsumerConfig, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
    let mut registry = Registry::default();
    let stack = connect(&cfg, &mut registry).await?;
    let listener = tokio::net::TcpListener::bind(cfg.admin_listen)
        .await
        .map_err(|source| Error::Bind { addr: cfg.admin_listen, source })?;
    let state = admin::AdminState { stack: stack.clone(), registry: Arc::new(registry), calls: cfg.admin_calls };
    let admin = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, admin::router(state)).await {
            warn!(error = %e, "admin server failed");
        }
    });
    info!(
        service = %cfg.service,
        k8s_service = %stack.service().target(),
        admin = %cfg.admin_listen,
        client = ?cfg.client,
        "consumer started"
    );
    let plan = traffic::Plan {
        name: cfg.name.clone(),
        rate: cfg.rate,
        concurrency: cfg.concurrency,
        report_every: cfg.report_interval,
        start_wait: cfg.start_wait,
    };
    traffic::run(stack, plan, shutdown).await;
    admin.abort();
    Ok(())
}
