//! A balanced, zone-aware Triple client over live endpoints (feature `client`): a
//! `tower::Service<http::Request<tonic::body::Body>>` whose error is [`tonic::Status`], so any
//! tonic-generated client takes it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use dubbo_k8s_discovery::client::{Balanced, ClientOptions, MethodPolicy};
//! use dubbo_k8s_discovery::{Discovery, DiscoveryConfig, Metrics, ServiceRef};
//! let hub = Discovery::new(&DiscoveryConfig::from_env()?, Metrics::default()).await?;
//! let greeter = ServiceRef::new("org.apache.dubbo.demo.GreeterService").with_version("1.0.0");
//! let opts = ClientOptions::from_env()?.method(
//!     "/org.apache.dubbo.demo.GreeterService/SayHello",
//!     MethodPolicy::idempotent().with_deadline(Duration::from_secs(2)),
//! );
//! let channel = Balanced::new(&hub, greeter, opts).await?;
//! // let mut client = GreeterServiceClient::new(channel);
//! # let _ = channel; Ok(()) }
//! ```
//!
//! **The call contract.** A call runs **at most once** unless its method is declared idempotent
//! ([`ClientOptions::method`], [`MethodPolicy`]). What provably never reached the provider's
//! application (connection refused or timed out, REFUSED_STREAM, a GOAWAY above the stream, a
//! pooled connection found closed before the request was written) is replayed on another endpoint,
//! for any method, within the deadline, the retry count and the retry budget. What may have reached
//! it (a connection lost after the request was written, an UNAVAILABLE answer, an attempt timeout)
//! is replayed only for idempotent methods; otherwise the caller gets UNAVAILABLE whose message says
//! the call may have been processed. Every failure carries its [`Cause`] in the status metadata
//! `dubbo-k8s-cause`; every call carries a request id (`dubbo-k8s-request-id`), the same on each of
//! its attempts, so providers can count calls executed twice.
//!
//! **Deadlines.** The caller's own (`tonic::Request::set_timeout`), else its method's
//! [`MethodPolicy::deadline`], bounds the whole call, retries included, and is sent as
//! `grpc-timeout`. A call with neither is bounded only until its response starts, by
//! [`ClientOptions::default_deadline`], and sends no deadline: server streams are not cut.
//!
//! **Per endpoint**: one lazily connected channel (one HTTP/2 connection); consecutive failures (and
//! timeouts, when other endpoints answer meanwhile) eject it for a growing time (at most half the
//! pool at once by default); a new endpoint's share ramps up over [`ClientOptions::slow_start`]; an
//! endpoint that leaves is kept warm for [`ClientOptions::departed_grace`]; above
//! [`ClientOptions::subset_size`] endpoints, each client connects to a deterministic subset.

mod balanced;
mod body;
mod call;
mod cause;
mod grpc_timeout;
mod health;
mod metrics;
mod options;
mod pick;
mod policy;
mod pool;
mod shared;
mod stats;
mod subset;
#[cfg(feature = "tls")]
mod tls_connector;
mod zone;

pub use balanced::Balanced;
pub use cause::Cause;
pub use health::OutlierOptions;
pub use metrics::ClientMetrics;
pub use options::{ClientOptions, OptionsError};
pub use policy::MethodPolicy;
pub use stats::{ClientDebug, ClientStats, MemberDebug, Served};
pub use zone::ZoneMode;

/// Request header carrying the Dubbo version a Triple client asks for.
pub const VERSION_HEADER: &str = "tri-service-version";
/// Request header carrying the Dubbo group a Triple client asks for.
pub const GROUP_HEADER: &str = "tri-service-group";
/// Request header carrying the call's id, the same on every attempt of one call.
pub const REQUEST_ID_HEADER: &str = "dubbo-k8s-request-id";
/// Metadata of a failed call's status: its [`Cause`] (`Cause::as_str`).
pub const CAUSE_METADATA: &str = "dubbo-k8s-cause";
/// Metadata of a failed call's status: the attempts it made.
pub const ATTEMPTS_METADATA: &str = "dubbo-k8s-attempts";
