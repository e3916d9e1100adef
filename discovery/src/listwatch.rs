//! One list/watch loop for every Kubernetes resource discovery follows (EndpointSlices of a
//! Service, Services of a namespace), with the health rules in one place:
//!
//! - **Health is earned.** The handler hears `live` only after a successful list, an event or a
//!   bookmark. A watch request the server accepts proves nothing (a server that accepts and then
//!   resets would otherwise keep the stale clock from ever running).
//! - **Silent watches end.** A watch that delivers nothing (no event, no bookmark; the API server
//!   sends a bookmark about once a minute) for `idle_timeout` is dropped and the state is listed
//!   again; the failure dates from the last data seen.
//! - **Every request has a deadline.** Each list page and each watch request must answer within
//!   `request_timeout`; nothing at start can block for minutes.
//! - **After a failure, list.** A list proves the server is back and replaces the state atomically;
//!   a 410 Gone lists at once; other failures back off with jitter (reset only once a watch delivers).
//! - **resourceVersion is opaque.** It is only handed back to the server (to resume a watch); it is
//!   never compared. Lists are consistent reads, so a list is current whatever its version says (an
//!   etcd restore moves versions backwards, and a client that refused "older" lists would never be
//!   live again).
//! - **A server that stops answering ends the watch.** A frozen or partitioned API server keeps its
//!   TCP connections open and silent; the hub's probe ([`crate::hub`]) notices it in seconds and every
//!   watch is ended and listed again. A silent watch on a server that still answers is listed again
//!   first, and only called failing if that list fails too (no false failover for one dead
//!   connection).

use std::fmt::Debug;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{debug, info};

use crate::backoff::Backoff;
use crate::config::BackoffConfig;
use crate::metrics::Metrics;

/// Timings of one loop.
#[derive(Clone, Debug)]
pub(crate) struct Timings {
    /// Server-side timeout of one watch request.
    pub watch_timeout: Duration,
    /// A watch silent for this long is restarted.
    pub idle_timeout: Duration,
    /// Deadline of each list page and watch request.
    pub request_timeout: Duration,
    /// List page size.
    pub page_size: u32,
    /// Retry pacing.
    pub backoff: BackoffConfig,
    /// The hub's probe: the API server's current failure to answer (`None`: it answers).
    pub probe: Option<watch::Receiver<Option<ProbeFailure>>>,
    /// The hub's one account of API outages.
    pub outage: crate::outage::OutageLog,
}

/// The hub's probe found the API server not answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProbeFailure {
    /// When the unanswered probe was sent: the failure dates from here.
    pub since: Instant,
    /// When the probe gave up on it.
    pub noticed: Instant,
}

/// What the loop tells its owner.
pub(crate) trait Handler<K>: Send {
    /// A complete, consistent list: replace everything with `items`.
    fn reset(&mut self, items: Vec<K>);
    /// An object was added or modified.
    fn apply(&mut self, object: K);
    /// An object was deleted.
    fn delete(&mut self, object: K);
    /// Data proved the server answers (a list, an event, a bookmark).
    fn live(&mut self);
    /// The server has not confirmed the state since `since`.
    fn failing(&mut self, since: Instant, error: &str);
    /// The loop panicked: what was being applied may be half done. Say the state is not confirmed
    /// and get ready to rebuild everything from the next list.
    fn recover(&mut self);
}

enum End {
    /// The server closed the watch (its timeout): watch again from the same version.
    Closed,
    /// The watch was silent too long: list again, and call the state failing only if that fails.
    Idle { since: Instant },
    /// List again now (410 Gone).
    Relist,
    /// List again after a backoff.
    Failed { since: Instant, error: String },
}

/// The list/watch loop of one resource selection.
pub(crate) struct ListWatch<K> {
    /// Which kind of task this is (`slices`, `services`), for supervision.
    pub kind: &'static str,
    pub api: Api<K>,
    pub selector: Option<String>,
    pub timings: Timings,
    /// What is watched, for logs (`endpointslices demo/greeter-v1`).
    pub what: String,
    pub metrics: Metrics,
}

impl<K> ListWatch<K>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    /// Runs for ever (the owner aborts the task).
    pub(crate) async fn run(&self, handler: &mut impl Handler<K>) {
        let mut backoff = Backoff::new(self.timings.backoff);
        let mut last_data;
        // Set after an idle watch: a failing list then dates the failure from the last data seen.
        let mut suspect: Option<Instant> = None;
        'list: loop {
            crate::task::checkpoint(self.kind);
            let (items, mut rv) = match self.list().await {
                Ok(answer) => answer,
                Err(error) => {
                    let since = suspect.take().unwrap_or_else(Instant::now);
                    self.fail(handler, "list_failed", since, &error);
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            debug!(what = %self.what, items = items.len(), resource_version = %rv, "listed");
            suspect = None;
            handler.reset(items);
            handler.live();
            self.timings.outage.answered();
            last_data = Instant::now();
            loop {
                let end = self.watch(handler, &mut rv, &mut last_data, &mut backoff).await;
                match end {
                    End::Closed => debug!(what = %self.what, "watch closed by the server; watching again"),
                    End::Idle { since } => {
                        info!(what = %self.what, idle = ?self.timings.idle_timeout, "watch silent too long; listing again");
                        self.metrics.watch_restart(&self.what, "idle");
                        suspect = Some(since);
                        continue 'list;
                    }
                    End::Relist => {
                        info!(what = %self.what, "resourceVersion expired (410 Gone); listing again");
                        self.metrics.watch_restart(&self.what, "gone");
                        continue 'list;
                    }
                    End::Failed { since, error } => {
                        self.fail(handler, "watch_failed", since, &error);
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue 'list;
                    }
                }
            }
        }
    }

    fn fail(&self, handler: &mut impl Handler<K>, reason: &str, since: Instant, error: &str) {
        self.timings.outage.failed(&self.what, reason, error);
        self.metrics.watch_restart(&self.what, reason);
        handler.failing(since, error);
    }

    /// Lists every page, each within the request timeout.
    async fn list(&self) -> Result<(Vec<K>, String), String> {
        let mut lp = ListParams::default().limit(self.timings.page_size);
        if let Some(s) = &self.selector {
            lp = lp.labels(s);
        }
        let mut items = Vec::new();
        loop {
            let page = match tokio::time::timeout(self.timings.request_timeout, self.api.list(&lp)).await {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => return Err(describe(&e, "list", &self.what)),
                Err(_) => {
                    return Err(format!(
                        "failed to list {}: no answer within {:?} (DISCOVERY_REQUEST_TIMEOUT)",
                        self.what, self.timings.request_timeout
                    ));
                }
            };
            items.extend(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => lp = lp.continue_token(&token),
                None => return Ok((items, page.metadata.resource_version.unwrap_or_default())),
            }
        }
    }

    /// One watch request, from `rv` until it ends: open it, then deliver each event to the handler
    /// until the stream ends, falls silent, breaks, or the probe says the server stopped answering.
    async fn watch(
        &self,
        handler: &mut impl Handler<K>,
        rv: &mut String,
        last_data: &mut Instant,
        backoff: &mut Backoff,
    ) -> End {
        let stream = match self.open_watch(rv).await {
            Ok(stream) => stream,
            Err(end) => return end,
        };
        let mut stream = std::pin::pin!(stream);
        let opened = Instant::now();
        let mut delivered = false;
        let mut probe = self.timings.probe.clone();
        loop {
            let event = match self.next_event(&mut stream, &mut probe, *last_data).await {
                Ok(Some(event)) => event,
                Ok(None) => return self.stream_ended(opened, delivered),
                Err(end) => return end,
            };
            crate::task::checkpoint(self.kind);
            if let Some(end) = self.deliver(handler, rv, event) {
                return end;
            }
            delivered = true;
            *last_data = Instant::now();
            backoff.reset();
            handler.live();
        }
    }

    /// Sends the watch request from `rv`; the server must accept it within the request timeout.
    async fn open_watch(
        &self,
        rv: &str,
    ) -> Result<impl futures::Stream<Item = kube::Result<WatchEvent<K>>> + use<K>, End> {
        let secs = u32::try_from(self.timings.watch_timeout.as_secs()).unwrap_or(u32::MAX).max(1);
        let mut wp = WatchParams::default().timeout(secs);
        if let Some(s) = &self.selector {
            wp = wp.labels(s);
        }
        match tokio::time::timeout(self.timings.request_timeout, self.api.watch(&wp, rv)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(End::Failed { since: Instant::now(), error: describe(&e, "watch", &self.what) }),
            Err(_) => Err(End::Failed {
                since: Instant::now(),
                error: format!("failed to watch {}: no answer within {:?}", self.what, self.timings.request_timeout),
            }),
        }
    }

    /// The stream's next item (`None`: it ended), unless the watch stays silent past the idle timeout
    /// or the probe finds the server not answering first.
    async fn next_event<S>(
        &self,
        stream: &mut std::pin::Pin<&mut S>,
        probe: &mut Option<watch::Receiver<Option<ProbeFailure>>>,
        last_data: Instant,
    ) -> Result<Option<WatchEvent<K>>, End>
    where
        S: futures::Stream<Item = kube::Result<WatchEvent<K>>>,
    {
        tokio::select! {
            next = tokio::time::timeout(self.timings.idle_timeout, stream.next()) => match next {
                Err(_) => Err(End::Idle { since: last_data }),
                Ok(None) => Ok(None),
                Ok(Some(Ok(event))) => Ok(Some(event)),
                Ok(Some(Err(e))) => {
                    Err(End::Failed { since: Instant::now(), error: format!("watch of {} broke: {e}", self.what) })
                }
            },
            Some(since) = probe_failing(probe, last_data) => {
                self.metrics.watch_restart(&self.what, "probe");
                Err(End::Failed {
                    since,
                    error: format!("the API server has not answered a probe since {:?} ago", since.elapsed()),
                })
            }
        }
    }

    /// Why a watch stream ended. A server closes a watch at its timeout, with a bookmark first (we ask
    /// for them). One that ends at once with nothing said was cut: the kube client reports a reset
    /// mid-chunk as a clean end, and re-watching at once would spin.
    fn stream_ended(&self, opened: Instant, delivered: bool) -> End {
        if delivered || opened.elapsed() >= self.timings.watch_timeout.mul_f64(0.9) {
            return End::Closed;
        }
        // Dated now: the server answered this request (a frozen or silent one is caught by the probe
        // and the idle timeout, dated from the last data).
        End::Failed {
            since: Instant::now(),
            error: format!(
                "the watch of {} ended after {:?} without an event or a bookmark (connection reset?)",
                self.what,
                opened.elapsed()
            ),
        }
    }

    /// Hands one event to the handler and remembers its version; an error event ends the watch.
    fn deliver(&self, handler: &mut impl Handler<K>, rv: &mut String, event: WatchEvent<K>) -> Option<End> {
        match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                remember(rv, o.meta().resource_version.as_deref());
                handler.apply(o);
            }
            WatchEvent::Deleted(o) => {
                remember(rv, o.meta().resource_version.as_deref());
                handler.delete(o);
            }
            WatchEvent::Bookmark(b) => remember(rv, Some(&b.metadata.resource_version)),
            WatchEvent::Error(status) if status.code == 410 => return Some(End::Relist),
            WatchEvent::Error(status) => {
                return Some(End::Failed {
                    since: Instant::now(),
                    error: format!(
                        "watch of {} ended with an error: {} ({}, code {})",
                        self.what, status.message, status.reason, status.code
                    ),
                });
            }
        }
        None
    }
}

/// Completes with the instant the API server stopped answering, once the hub's probe says so and
/// noticed it after `answered` (the last data this loop got). After an outage the probe keeps saying
/// "failing" until its next tick; that verdict predates the list that just succeeded and must not end
/// the watch the list opened (it would date the fresh set back to the outage and send failover back
/// to DNS). Never, without a probe.
async fn probe_failing(
    probe: &mut Option<watch::Receiver<Option<ProbeFailure>>>,
    answered: Instant,
) -> Option<Instant> {
    let Some(rx) = probe.as_mut() else { return std::future::pending().await };
    let failure = rx.wait_for(|f| f.is_some_and(|f| f.noticed >= answered)).await.map(|f| *f);
    match failure {
        Ok(failure) => failure.map(|f| f.since),
        Err(_) => {
            *probe = None;
            std::future::pending().await
        }
    }
}

/// Resumes the next watch from the newest version seen (opaque: handed back, never compared).
fn remember(rv: &mut String, seen: Option<&str>) {
    if let Some(v) = seen.filter(|v| !v.is_empty()) {
        v.clone_into(rv);
    }
}

/// A list/watch loop and its handler, as one supervised task.
pub(crate) struct Watcher<K, H> {
    pub lw: ListWatch<K>,
    pub handler: H,
}

impl<K, H> crate::task::Supervised for Watcher<K, H>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    H: Handler<K> + 'static,
{
    async fn run(&mut self) {
        self.lw.run(&mut self.handler).await;
    }

    fn recover(&mut self) {
        self.handler.recover();
    }
}

/// An error message that says what to do for the common API failures.
pub(crate) fn describe(e: &kube::Error, verb: &str, what: &str) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => format!(
            "failed to {verb} {what}: forbidden ({}); grant get/list/watch on it to this ServiceAccount \
             (see README, \"Role for API mode\")",
            s.message
        ),
        kube::Error::Api(s) if s.code == 401 => {
            format!("failed to {verb} {what}: unauthorized ({}); check the token or kubeconfig", s.message)
        }
        other => format!("failed to {verb} {what}: {other}"),
    }
}
