//! Adapters from [`EndpointSet`](crate::EndpointSet) snapshots to what RPC stacks consume.

pub mod diff;
#[cfg(feature = "dubbo")]
pub mod dubbo;
#[cfg(feature = "tower")]
pub mod tower;
