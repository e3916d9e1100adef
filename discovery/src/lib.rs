//! Dubbo service discovery inside Kubernetes without a registry center.
//!
//! A [`ServiceRef`] (interface, group, version) is mapped to a Kubernetes Service ([`Target`]) by an
//! explicit mapping, the Service's `dubbo.apache.org/*` annotations, or a naming rule. Its endpoints
//! come from watching EndpointSlices (API mode), cluster DNS (DNS mode) or a fixed list (static
//! mode); API mode fails over to DNS and then to the Service VIP while the API server is unreachable.
//! Every change is published as a versioned [`EndpointSet`] on a watch channel
//! ([`Discovery::watch`]); adapters turn it into a tower `Change` stream (feature `tower`) or a
//! `dubbo` crate registry (feature `dubbo`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use discovery::{Discovery, DiscoveryConfig, Metrics, ServiceRef};
//! let cfg = DiscoveryConfig::from_env()?;
//! let service = ServiceRef::new("org.apache.dubbo.demo.GreeterService").with_version("1.0.0");
//! let discovery = Discovery::start(&cfg, service, Metrics::default()).await?;
//! for e in discovery.current().routable() {
//!     println!("{}", e.key());
//! }
//! # Ok(()) }
//! ```

pub mod adapter;
pub mod backoff;
pub mod config;
mod discovery;
pub mod failover;
pub mod mapping;
pub mod metrics;
pub mod model;
pub mod rbac;
pub mod source;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use config::{ConfigError, DiscoveryConfig, Mode};
pub use discovery::{Discovery, Error, Result};
pub use mapping::{Mapper, MappingError, MappingRule};
pub use metrics::Metrics;
pub use model::{
    Conditions, Endpoint, EndpointKey, EndpointSet, Freshness, Host, PortSpec, ServiceRef, Source, Target,
};
