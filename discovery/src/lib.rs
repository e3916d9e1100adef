//! Dubbo service discovery inside Kubernetes without a registry center.
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
//! and apply deltas instead of diffing snapshots. Adapters turn them into a tower `Change` stream
//! (feature `tower`), a `dubbo` crate registry (feature `dubbo`), or a balanced, zone-aware Triple
//! client any tonic-generated client can use (feature `client`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use dubbo_k8s_discovery::{Discovery, DiscoveryConfig, Metrics, ServiceRef};
//! let cfg = DiscoveryConfig::from_env()?;
//! let hub = Discovery::new(&cfg, Metrics::default()).await?;
//! let greeter = hub.service(ServiceRef::new("org.apache.dubbo.demo.GreeterService").with_version("1.0.0")).await?;
//! for e in greeter.current().routable() {
//!     println!("{}", e.key());
//! }
//! # Ok(()) }
//! ```

pub mod adapter;
mod backoff;
#[cfg(feature = "client")]
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
mod task;
mod wait;

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
