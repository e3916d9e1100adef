//! Sources of endpoints. Each runs as a task that owns the [`Publisher`](crate::publish::Publisher)
//! of its set and never ends on error: it retries with jittered backoff and reports its health in
//! the set's freshness instead (stale since the first failure; pending until the first answer).

pub(crate) mod api;
pub mod dns;
pub(crate) mod fixed;
pub(crate) mod slices;
