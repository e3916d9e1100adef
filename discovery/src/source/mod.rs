//! Sources of endpoints. Each runs as a task that owns the [`Publisher`](crate::publish::Publisher)
//! of its set and never ends on error: it retries with jittered backoff and reports its health in
//! the set's freshness instead (stale since the first failure; pending until the first answer).

pub(crate) mod api;
pub mod dns;
pub(crate) mod fixed;
pub(crate) mod slices;

use std::net::SocketAddr;
use std::time::Duration;

/// The system resolver's addresses for `host:port` (`/etc/hosts`, then DNS), within `timeout`; the
/// error says why there are none.
pub(crate) async fn lookup_host(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(found)) => {
            let found: Vec<SocketAddr> = found.collect();
            if found.is_empty() { Err("no address".to_owned()) } else { Ok(found) }
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}
