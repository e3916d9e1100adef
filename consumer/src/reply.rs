//! [`Reply`]: what a successful call brings back, whichever client stack made it.

use std::time::Duration;

use discovery::EndpointKey;
use provider::pb::HelloReply;

/// A successful call.
#[derive(Clone, Debug)]
pub struct Reply {
    /// What the provider said.
    pub reply: HelloReply,
    /// Which endpoint answered (`None` when the stack cannot say, e.g. the dubbo crate).
    pub endpoint: Option<EndpointKey>,
    /// Attempts it took.
    pub attempts: u32,
    /// Latency of the whole call.
    pub latency: Duration,
}
