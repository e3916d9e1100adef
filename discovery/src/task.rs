//! Background tasks that cannot stop silently. Every task discovery runs (a list/watch, a resolution
//! and its failover, DNS and static sources, the annotation follower, a client's updater, the zone
//! look-up) runs under [`spawn`]: when it panics, it is counted (`discovery_task_restarts`), logged,
//! told to [`Supervised::recover`] (which marks what it publishes stale, so failover engages and
//! subscribers can see it), and started again after a backoff. A task returns only when nobody
//! wants its work any more (every receiver of what it publishes is gone).

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use prometheus_client::metrics::counter::Counter;
use tokio::task::JoinHandle;
use tracing::{Instrument, error};

use crate::backoff::Backoff;
use crate::config::BackoffConfig;

/// A restartable background task.
pub(crate) trait Supervised: Send + 'static {
    /// Runs until its work is no longer wanted.
    fn run(&mut self) -> impl Future<Output = ()> + Send + '_;
    /// After `run` panicked: makes the state whole again and tells subscribers (the set is stale).
    fn recover(&mut self);
}

/// How soon a panicked task is started again (doubling, jittered).
const RESTART: BackoffConfig = BackoffConfig { min: Duration::from_millis(100), max: Duration::from_secs(30) };

/// Spawns `task` under supervision; `kind` and `what` name it in logs, `restarts` counts restarts.
pub(crate) fn spawn<T: Supervised>(kind: &'static str, what: String, restarts: Counter, mut task: T) -> JoinHandle<()> {
    let supervised = async move {
        let mut backoff = Backoff::new(RESTART);
        loop {
            match AssertUnwindSafe(task.run()).catch_unwind().await {
                Ok(()) => return,
                Err(panic) => {
                    restarts.inc();
                    let delay = backoff.next_delay();
                    error!(
                        task = kind,
                        what = %what,
                        panic = %message(&panic),
                        restart_in = ?delay,
                        "a discovery task panicked; what it publishes is marked stale and it is started again"
                    );
                    task.recover();
                    tokio::time::sleep(delay).await;
                }
            }
        }
    };
    tokio::spawn(supervised.in_current_span())
}

fn message(panic: &Box<dyn Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// A point in a task's loop where a test can make it panic (feature `fault-injection`).
#[inline]
pub(crate) fn checkpoint(kind: &'static str) {
    #[cfg(feature = "fault-injection")]
    if crate::fault::take(kind) {
        panic!("fault injection: {kind} task panics on purpose");
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = kind;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Flaky {
        runs: Arc<AtomicU32>,
        recovered: Arc<AtomicU32>,
    }

    impl Supervised for Flaky {
        async fn run(&mut self) {
            if self.runs.fetch_add(1, Ordering::SeqCst) < 2 {
                panic!("boom");
            }
        }
        fn recover(&mut self) {
            self.recovered.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_panicking_task_is_recovered_counted_and_restarted_until_it_ends() {
        let (runs, recovered) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let restarts = Counter::default();
        let t = Flaky { runs: runs.clone(), recovered: recovered.clone() };
        spawn("test", "flaky".into(), restarts.clone(), t).await.expect("the supervisor itself never panics");
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(recovered.load(Ordering::SeqCst), 2);
        assert_eq!(restarts.get(), 2);
    }
}
