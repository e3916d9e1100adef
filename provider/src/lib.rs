//! The demo's Dubbo Triple provider, and the service contract both applications share.
//!
//! `main.rs` is thin: load [`ProviderConfig`], init telemetry, [`run`] until SIGTERM/SIGINT.

pub mod admin;
pub mod config;
pub mod executions;
pub mod greeter;
pub mod server;
pub mod telemetry;
pub mod tls;

/// Generated from `proto/greeter.proto`: messages, server and client of
/// `org.apache.dubbo.demo.GreeterService`.
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod pb {
    tonic::include_proto!("org.apache.dubbo.demo");
}

pub use config::ProviderConfig;
pub use server::{Provider, run};

/// The Dubbo interface served (package + service name of the proto).
pub const INTERFACE: &str = "org.apache.dubbo.demo.GreeterService";
/// Request header carrying the Dubbo version a Triple client asks for.
pub const VERSION_HEADER: &str = "tri-service-version";
/// Request header carrying the Dubbo group a Triple client asks for.
pub const GROUP_HEADER: &str = "tri-service-group";
