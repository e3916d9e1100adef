//! The API server probe: `GET /readyz` every interval while the hub lives. Any HTTP answer (even an
//! error status, or a 403 where the path is not public) means the server answers; only silence or a
//! transport error means it does not. It publishes since when the server has not answered, which
//! ends every watch at once ([`crate::listwatch`]): a frozen or partitioned API server keeps its
//! connections open and silent, and would otherwise be noticed only by the idle timeout.

use std::time::{Duration, Instant};

use kube::Client;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::listwatch::ProbeFailure;

/// The running probe; it stops when dropped.
pub(crate) struct Probe {
    pub rx: watch::Receiver<Option<ProbeFailure>>,
    task: JoinHandle<()>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Prober {
    client: Client,
    every: Duration,
    timeout: Duration,
    tx: watch::Sender<Option<ProbeFailure>>,
}

impl crate::task::Supervised for Prober {
    async fn run(&mut self) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            crate::task::checkpoint("probe");
            let sent = Instant::now();
            let answered = self.answers().await;
            self.tx.send_if_modified(|failure| match (answered, *failure) {
                (true, Some(_)) => {
                    info!("the API server answers its probe again");
                    *failure = None;
                    true
                }
                (false, None) => {
                    warn!(timeout = ?self.timeout, "the API server does not answer its probe (GET /readyz); ending the watches");
                    *failure = Some(ProbeFailure { since: sent, noticed: Instant::now() });
                    true
                }
                _ => false,
            });
        }
    }

    fn recover(&mut self) {}
}

impl Prober {
    async fn answers(&self) -> bool {
        let Ok(req) = http::Request::get("/readyz").body(Vec::new()) else { return true };
        match tokio::time::timeout(self.timeout.min(self.every), self.client.request_text(req)).await {
            Ok(Ok(_)) | Ok(Err(kube::Error::Api(_))) => true,
            Ok(Err(e)) => {
                debug!(error = %e, "API server probe failed");
                false
            }
            Err(_) => false,
        }
    }
}

impl Probe {
    pub(crate) fn start(client: Client, every: Duration, timeout: Duration, restarts: Counter) -> Self {
        let (tx, rx) = watch::channel(None);
        let task = crate::task::spawn("probe", "API server".into(), restarts, Prober { client, every, timeout, tx });
        Probe { rx, task }
    }
}
