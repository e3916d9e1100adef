//! Steady demo traffic: `rate` calls per second with at most `concurrency` in flight, and a periodic
//! log line of calls per provider instance.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::Stack;

/// The steady traffic to make.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Name sent in calls.
    pub name: String,
    /// Calls per second (0: none).
    pub rate: f64,
    /// Calls in flight at most.
    pub concurrency: usize,
    /// Period of the per-instance log line (0: none).
    pub report_every: Duration,
    /// How long to wait at start for a provider to call before calling anyway.
    pub start_wait: Duration,
}

/// Runs until `shutdown` completes. Calls that would exceed `concurrency` are skipped and counted
/// (the rate is a target, not a queue). Traffic starts once a provider can be called (or after
/// `start_wait`): a consumer rolled out with its providers holds its first calls rather than fail
/// them while no provider is ready yet.
pub async fn run(client: Stack, plan: Plan, shutdown: impl std::future::Future<Output = ()>) {
    let Plan { name, rate, concurrency, report_every, start_wait } = plan;
    let mut shutdown = std::pin::pin!(shutdown);
    if rate <= 0.0 {
        info!("CONSUMER_RATE=0: no steady traffic");
        shutdown.await;
        return;
    }
    if let Some(b) = client.balanced() {
        tokio::select! {
            () = &mut shutdown => return,
            routable = b.wait_routable(start_wait) => {
                if routable {
                    info!("a provider can be called; steady traffic starts");
                } else {
                    warn!(?start_wait, "no provider to call yet; steady traffic starts anyway (calls fail until one is ready)");
                }
            }
        }
    }
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report =
        tokio::time::interval(if report_every.is_zero() { Duration::from_secs(3600) } else { report_every });
    report.tick().await;
    let mut last = client.stats();
    let mut skipped = 0u64;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    skipped += 1;
                    continue;
                };
                let (c, n) = (client.clone(), name.clone());
                tokio::spawn(async move {
                    // Failures are counted by cause and logged by the client, at most about once a
                    // second per cause and endpoint: not one line per failed call.
                    let _ = c.say_hello(&n).await;
                    drop(permit);
                });
            }
            _ = report.tick(), if !report_every.is_zero() => {
                let now = client.stats();
                let per_instance: BTreeMap<&String, u64> = now
                    .by_instance
                    .iter()
                    .map(|(k, v)| (k, v - last.by_instance.get(k).copied().unwrap_or(0)))
                    .filter(|(_, v)| *v > 0)
                    .collect();
                let set = client.service().current();
                info!(
                    ok = now.ok - last.ok,
                    failed = now.failed - last.failed,
                    retries = now.retries - last.retries,
                    causes = ?now.causes,
                    skipped,
                    endpoints = set.routable_len(),
                    source = %set.source(),
                    per_instance = ?per_instance,
                    "calls per provider instance"
                );
                last = now;
                skipped = 0;
            }
        }
    }
    // Let in-flight calls finish (bounded by their deadlines).
    let _ = permits.acquire_many(u32::try_from(concurrency).unwrap_or(u32::MAX)).await;
}
