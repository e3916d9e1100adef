//! One account of an API outage per hub, however many watches it has: one line when the outage
//! starts, a summary every [`SUMMARY_EVERY`] while it lasts, one line when it ends. Each watch's own
//! failures go to `debug`. (Before, every watch logged two warnings per retry.)

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

/// How often an ongoing outage is summed up.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Outage {
    since: Option<Instant>,
    failures: u64,
    watches: BTreeSet<String>,
    last_error: String,
    last_summary: Option<Instant>,
}

/// Shared by every list/watch loop of one hub.
#[derive(Clone, Debug, Default)]
pub(crate) struct OutageLog(Arc<Mutex<Outage>>);

impl OutageLog {
    fn lock(&self) -> MutexGuard<'_, Outage> {
        crate::sync::lock(&self.0)
    }

    /// A request of `what` failed.
    pub(crate) fn failed(&self, what: &str, reason: &str, error: &str) {
        let now = Instant::now();
        let mut o = self.lock();
        o.failures += 1;
        o.watches.insert(what.to_owned());
        error.clone_into(&mut o.last_error);
        debug!(what, reason, error, "kubernetes API request failed; keeping the last known state");
        match o.since {
            None => {
                o.since = Some(now);
                o.last_summary = Some(now);
                warn!(
                    what,
                    error,
                    "the Kubernetes API is unavailable; serving the last known state (failover after \
                     DISCOVERY_MAX_STALE) and retrying"
                );
            }
            Some(since) if o.last_summary.is_none_or(|l| now.duration_since(l) >= SUMMARY_EVERY) => {
                o.last_summary = Some(now);
                warn!(
                    for_s = since.elapsed().as_secs(),
                    failed_requests = o.failures,
                    watches = o.watches.len(),
                    last_error = %o.last_error,
                    "the Kubernetes API is still unavailable"
                );
            }
            Some(_) => {}
        }
    }

    /// Data from the API server proves it answers again.
    pub(crate) fn answered(&self) {
        let mut o = self.lock();
        if let Some(since) = o.since {
            info!(
                after_s = since.elapsed().as_secs_f64(),
                failed_requests = o.failures,
                watches = o.watches.len(),
                "the Kubernetes API answers again"
            );
            *o = Outage::default();
        }
    }

    /// Whether an outage is going on (for tests).
    #[cfg(test)]
    pub(crate) fn ongoing(&self) -> bool {
        self.lock().since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_outage_however_many_failures() {
        let log = OutageLog::default();
        assert!(!log.ongoing());
        for i in 0..10 {
            log.failed(if i % 2 == 0 { "endpointslices a" } else { "services demo" }, "list_failed", "refused");
        }
        assert!(log.ongoing());
        assert_eq!(log.lock().failures, 10);
        assert_eq!(log.lock().watches.len(), 2);
        log.answered();
        assert!(!log.ongoing());
        assert_eq!(log.lock().failures, 0);
    }
}
