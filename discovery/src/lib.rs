//! Dubbo service discovery inside Kubernetes without a registry center: find the pods that serve a
//! Dubbo service and call them, balanced and zone-aware, through any tonic-generated client.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use dubbo_k8s_discovery::client::{Balanced, ClientOptions, MethodPolicy};
//! use dubbo_k8s_discovery::{Discovery, DiscoveryConfig, Metrics, ServiceRef};
//! // Any tonic-generated client; here the one of the demo's greeter contract.
//! use provider::pb::{HelloRequest, greeter_service_client::GreeterServiceClient};
//!
//! // One hub per process: DISCOVERY_MODE=api watches EndpointSlices, dns asks cluster DNS.
//! let hub = Discovery::new(&DiscoveryConfig::from_env()?, Metrics::default()).await?;
//! let greeter = ServiceRef::new("org.apache.dubbo.demo.GreeterService").with_version("1.0.0");
//! // What the application knows of its methods: SayHello only reads, so it may be replayed.
//! let opts = ClientOptions::from_env()?.method(
//!     "/org.apache.dubbo.demo.GreeterService/SayHello",
//!     MethodPolicy::idempotent().with_deadline(Duration::from_secs(2)),
//! );
//! let mut client = GreeterServiceClient::new(Balanced::new(&hub, greeter, opts).await?);
//! let reply = client.say_hello(HelloRequest { name: "dubbo".into(), ..Default::default() }).await?;
//! println!("{}", reply.into_inner().message);
//! # Ok(()) }
//! ```
//!
//! A [`ServiceRef`] (interface, group, version) is mapped to a Kubernetes Service ([`Target`]) by an
//! explicit mapping, the Service's `dubbo.apache.org/*` annotations (followed live), or a naming rule.
//! Its endpoints come from watching EndpointSlices (API mode), cluster DNS (DNS mode) or a fixed list
//! (static mode); API mode fails over to DNS and then to the Service VIP while the API server is
//! unreachable. One [`Discovery`] per process shares one watch per Kubernetes Service among every
//! subscriber.
//!
//! Every change is published as a versioned [`EndpointSet`] snapshot (a persistent map: O(1) to
//! clone) together with the [`Delta`]s that led to it; subscribers follow [`ServiceWatch::updates`]
//! and apply deltas instead of diffing snapshots:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use dubbo_k8s_discovery::{Discovery, DiscoveryConfig, Metrics, ServiceRef, Update};
//! let hub = Discovery::new(&DiscoveryConfig::from_env()?, Metrics::default()).await?;
//! let watch = hub.service(ServiceRef::new("com.example.OrderService").with_group("eu")).await?;
//! let mut updates = watch.updates();
//! while let Some(update) = updates.next().await {
//!     match update {
//!         Update::Apply { deltas, .. } => println!("{} change(s)", deltas.len()),
//!         other => println!("the whole set: {} endpoints", other.set().len()),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! - `client`: the balanced, zone-aware Triple client ([`client::Balanced`]).
//! - `tower` (default): a tower `Change` stream for tonic's balanced channel ([`adapter::tower`]).
//! - `tls`: TLS and mutual TLS for Triple with certificates reloaded from their files ([`tls`]); with
//!   `client`, [`client::ClientOptions::tls`] makes the balanced client verify providers by name.
//! - `dubbo`: a registry extension for the `dubbo` crate (`kubernetes://`, `adapter::dubbo`); slow
//!   to build.
//!
//! # What the application chooses
//!
//! The crate selects no Kubernetes API version of `k8s-openapi` (enable one of its `v1_*` features
//! in the application, as k8s-openapi asks), no TLS stack for kube (enable `kube/rustls-tls` or
//! `kube/openssl-tls`, and a crypto provider), no allocator, and never installs a tracing subscriber
//! or a global metrics registry. `testkit` (crate `dubbo-k8s-testkit`) holds in-process Kubernetes
//! API and DNS servers for the application's own tests.

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod adapter;
mod backoff;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
pub mod config;
mod error;
mod failover;
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub mod fault;
mod hub;
mod listwatch;
pub mod mapping;
pub mod metrics;
pub mod model;
mod outage;
mod publish;
mod rbac;
mod resolution;
mod service;
mod source;
mod sync;
mod task;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;
mod wait;
mod wire;

pub use config::{ConfigError, DiscoveryConfig, IpFamily, Mode};
pub use error::{Error, Result};
pub use hub::{Discovery, ZONE_LABEL};
pub use mapping::{MappingError, MappingRule};
pub use metrics::Metrics;
pub use model::{
    Conditions, Counts, Delta, Endpoint, EndpointKey, EndpointSet, Freshness, PortSpec, ServiceRef, Source, Target,
    TrafficDistribution, Update,
};
pub use service::{Binding, ServiceWatch, Updates};
