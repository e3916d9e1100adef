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
//! - **After a failure, list.** A list proves the server is back and replaces the state atomically
//!   (nothing is published until the whole list is in); a 410 Gone lists at once; other failures
//!   back off with jitter (reset only once a watch delivers).
//! - **Lists come from the server's cache, never older than what was seen.** The first list asks
//!   for `resourceVersion=0` (the watch cache answers; etcd is not read), later ones for
//!   `resourceVersionMatch=NotOlderThan` the newest version seen; neither is paginated (the cache
//!   ignores limits; a limit would send the list to etcd). A server that has not reached that
//!   version (an etcd restore moves versions backwards) answers "too large resource version": the
//!   list is then made again as a consistent read (from etcd, paginated). resourceVersion stays
//!   opaque otherwise: handed back, never compared.
//! - **Streaming lists where the server offers them.** A watch with `sendInitialEvents=true` lists
//!   and watches in one request, one object at a time; a server that refuses it (etcd 3.4 lacks what
//!   it needs; older servers lack the feature) is asked for plain lists from then on.
//! - **Lists are decoded as they arrive** ([`crate::wire::list`]): item by item, lean objects.
//! - **The selection can change.** Whoever owns the loop may change its label selector (one watch
//!   per namespace follows the set of Services wanted there); the loop then lists again with it.
//! - **A server that stops answering ends the watch.** A frozen or partitioned API server keeps its
//!   TCP connections open and silent; the hub's probe ([`crate::hub`]) notices it in seconds and every
//!   watch is ended and listed again. A silent watch on a server that still answers is listed again
//!   first, and only called failing if that list fails too (no false failover for one dead
//!   connection).

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{ListParams, VersionMatch, WatchEvent, WatchParams};
use tokio::sync::watch;
use tracing::{debug, info};

use crate::backoff::Backoff;
use crate::config::BackoffConfig;
use crate::metrics::Metrics;
use crate::wire::Object;

/// Timings of one loop.
#[derive(Clone, Debug)]
pub(crate) struct Timings {
    /// Server-side timeout of one watch request.
    pub watch_timeout: Duration,
    /// A watch silent for this long is restarted.
    pub idle_timeout: Duration,
    /// Deadline of each list page and watch request.
    pub request_timeout: Duration,
    /// Page size of consistent lists (the only paginated ones).
    pub page_size: u32,
    /// Retry pacing.
    pub backoff: BackoffConfig,
    /// Ask for streaming lists (`sendInitialEvents`) first.
    pub streaming_lists: bool,
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

/// What one loop follows: a label selector, and what it stands for (for the handler).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scope {
    pub label_selector: Option<String>,
    /// The Services the selector selects (empty when it selects by something else).
    pub services: Vec<std::sync::Arc<str>>,
}

/// What the loop tells its owner.
pub(crate) trait Handler<K>: Send {
    /// A complete, consistent list of `scope` begins (again, if one was cut short: start over).
    fn begin_list(&mut self, scope: &Scope);
    /// One object of the list.
    fn list_item(&mut self, item: K);
    /// The list is complete: what it did not hold is gone.
    fn end_list(&mut self);
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
    /// The selection changed: list again with it.
    Rescoped,
    /// The server refused a streaming list: list the plain way.
    StreamingRefused(String),
    /// The server has not reached the version asked for (an etcd restore): forget it, list again.
    TooLarge(String),
    /// List again after a backoff.
    Failed { since: Instant, error: String },
}

/// The annotation of the bookmark that ends a streaming list's initial events.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// The list/watch loop of one resource selection.
pub(crate) struct ListWatch<K> {
    /// Which kind of task this is (`slices`, `services`), for supervision.
    pub kind: &'static str,
    pub client: kube::Client,
    /// The collection's URL path (`/apis/discovery.k8s.io/v1/namespaces/demo/endpointslices`).
    pub path: String,
    /// What to follow; `None`: nothing for now (the loop waits).
    pub scope: watch::Receiver<Option<Scope>>,
    pub timings: Timings,
    /// What is watched, for logs (`endpointslices demo`).
    pub what: String,
    pub metrics: Metrics,
    pub _kind: PhantomData<fn() -> K>,
}

/// How the loop stands between requests.
struct Cursor {
    /// The newest resourceVersion seen (from a list, an event, a bookmark).
    rv: Option<String>,
    /// When data last proved the server answers.
    last_data: Instant,
    backoff: Backoff,
    /// Still worth asking for streaming lists.
    streaming: bool,
    /// The last streaming list did not complete (silent, cut): the next list is a plain one.
    plain_next: bool,
}

impl<K: Object> ListWatch<K> {
    /// Runs for ever (the owner aborts the task).
    pub(crate) async fn run(&self, handler: &mut impl Handler<K>) {
        let mut cur = Cursor {
            rv: None,
            last_data: Instant::now(),
            backoff: Backoff::new(self.timings.backoff),
            streaming: self.timings.streaming_lists,
            plain_next: false,
        };
        // Set after an idle watch: a failing list then dates the failure from the last data seen.
        let mut suspect: Option<Instant> = None;
        let mut scope = self.scope.clone();
        'list: loop {
            crate::task::checkpoint(self.kind);
            let Some(current) = scope.borrow_and_update().clone() else {
                // Nothing to follow: wait for the owner to say what.
                if scope.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                continue;
            };
            let mut end = if cur.streaming && !std::mem::take(&mut cur.plain_next) {
                Some(self.watch(handler, &mut cur, &mut scope, Some(&current)).await)
            } else {
                None
            };
            if let Some(End::StreamingRefused(why)) = &end {
                info!(what = %self.what, reason = %why, "the API server refuses streaming lists; listing the plain way from now on");
                self.metrics.watch_restart(&self.what, "streaming_refused");
                cur.streaming = false;
                end = None;
            }
            if end.is_none() {
                if let Err(error) = self.list(handler, &current, &mut cur).await {
                    let since = suspect.take().unwrap_or_else(Instant::now);
                    self.fail(handler, "list_failed", since, &error);
                    tokio::time::sleep(cur.backoff.next_delay()).await;
                    continue;
                }
                suspect = None;
                handler.live();
                self.timings.outage.answered();
                cur.last_data = Instant::now();
            }
            loop {
                let end = match end.take() {
                    Some(end) => end,
                    None => self.watch(handler, &mut cur, &mut scope, None).await,
                };
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
                    End::Rescoped => {
                        debug!(what = %self.what, "the selection changed; listing again");
                        self.metrics.watch_restart(&self.what, "rescoped");
                        continue 'list;
                    }
                    End::StreamingRefused(_) => continue 'list,
                    End::TooLarge(answer) => {
                        info!(what = %self.what, answer = %answer, "the API server is behind the version this client saw (an etcd restore?); listing with a consistent read");
                        self.metrics.watch_restart(&self.what, "too_large");
                        cur.rv = None;
                        continue 'list;
                    }
                    End::Failed { since, error } => {
                        self.fail(handler, "watch_failed", since, &error);
                        tokio::time::sleep(cur.backoff.next_delay()).await;
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

    /// One complete list into the handler: from the watch cache (never older than what was seen),
    /// else, when the server is behind that, a consistent read.
    async fn list(&self, handler: &mut impl Handler<K>, scope: &Scope, cur: &mut Cursor) -> Result<(), String> {
        let cached = match cur.rv.as_deref() {
            None => ListParams::default().match_any(),
            Some(rv) => ListParams {
                resource_version: Some(rv.to_owned()),
                version_match: Some(VersionMatch::NotOlderThan),
                ..ListParams::default()
            },
        };
        match self.list_with(handler, scope, cached, cur).await {
            Err(ListError::TooLarge(msg)) => {
                info!(what = %self.what, answer = %msg, "the API server is behind the version this client saw (an etcd restore?); listing with a consistent read");
                let consistent = ListParams::default().limit(self.timings.page_size);
                self.list_with(handler, scope, consistent, cur).await.map_err(ListError::into_message)
            }
            Err(e) => {
                // A list that asked for "not older than" and failed may have met a server that waits
                // for a version it will not reach (with a client that retries its "too large"
                // answers, the answer never arrives): the next list asks for any version.
                cur.rv = None;
                Err(e.into_message())
            }
            Ok(()) => Ok(()),
        }
    }

    /// Every page of one list (only consistent lists have pages), each within the request timeout.
    async fn list_with(
        &self,
        handler: &mut impl Handler<K>,
        scope: &Scope,
        mut lp: ListParams,
        cur: &mut Cursor,
    ) -> Result<(), ListError> {
        if let Some(s) = &scope.label_selector {
            lp = lp.labels(s);
        }
        handler.begin_list(scope);
        let mut items = 0usize;
        loop {
            let req = kube::core::Request::new(&self.path).list(&lp).map_err(|e| ListError::Other(e.to_string()))?;
            let page = crate::wire::list::<K>(&self.client, req, |item| {
                items += 1;
                handler.list_item(item);
            });
            let meta = match tokio::time::timeout(self.timings.request_timeout.max(LIST_FLOOR), page).await {
                Ok(Ok(meta)) => meta,
                Ok(Err(e)) if too_large(&e) => return Err(ListError::TooLarge(e.to_string())),
                Ok(Err(e)) => return Err(ListError::Other(describe(&e, "list", &self.what))),
                Err(_) => {
                    return Err(ListError::Other(format!(
                        "failed to list {}: no complete answer within {:?} (DISCOVERY_REQUEST_TIMEOUT)",
                        self.what,
                        self.timings.request_timeout.max(LIST_FLOOR)
                    )));
                }
            };
            match meta.continue_.filter(|c| !c.is_empty()) {
                Some(token) => lp = lp.continue_token(&token),
                None => {
                    if let Some(rv) = meta.resource_version.filter(|v| !v.is_empty()) {
                        cur.rv = Some(rv);
                    }
                    debug!(what = %self.what, items, resource_version = ?cur.rv, "listed");
                    handler.end_list();
                    return Ok(());
                }
            }
        }
    }

    /// One watch request, from the newest version seen, until it ends: open it, then deliver each
    /// event to the handler until the stream ends, falls silent, breaks, the selection changes or
    /// the probe says the server stopped answering. With `initial`, a streaming list: the first
    /// events are the list of `initial`, up to the bookmark that ends them.
    async fn watch(
        &self,
        handler: &mut impl Handler<K>,
        cur: &mut Cursor,
        scope: &mut watch::Receiver<Option<Scope>>,
        initial: Option<&Scope>,
    ) -> End {
        let selector = match initial {
            Some(s) => s.label_selector.clone(),
            None => scope.borrow().as_ref().and_then(|s| s.label_selector.clone()),
        };
        // Until its initial events are all in, a streaming list that fails makes the next list a
        // plain one (a server whose watches go silent or wait must still be listable).
        cur.plain_next = initial.is_some();
        let stream =
            match self.open_watch(selector.as_deref(), cur.rv.as_deref().unwrap_or(""), initial.is_some()).await {
                Ok(stream) => stream,
                Err(end) => return end,
            };
        let mut stream = std::pin::pin!(stream);
        let opened = Instant::now();
        let mut delivered = false;
        let mut listing = initial;
        if let Some(s) = listing {
            handler.begin_list(s);
        }
        let mut probe = self.timings.probe.clone();
        loop {
            let event = match self.next_event(&mut stream, &mut probe, scope, cur.last_data).await {
                Ok(Some(event)) => event,
                Ok(None) if listing.is_some() => {
                    return End::StreamingRefused("the stream ended before its initial events did".into());
                }
                Ok(None) => return self.stream_ended(opened, delivered),
                Err(end) => return end,
            };
            crate::task::checkpoint(self.kind);
            if listing.is_some() {
                match self.deliver_initial(handler, cur, event) {
                    Initial::More => continue,
                    Initial::Done => {
                        listing = None;
                        cur.plain_next = false;
                        debug!(what = %self.what, resource_version = ?cur.rv, "streaming list complete");
                        handler.end_list();
                        self.timings.outage.answered();
                    }
                    Initial::Refused(why) => return End::StreamingRefused(why),
                }
            } else if let Some(end) = self.deliver(handler, cur, event) {
                return end;
            }
            delivered = true;
            cur.last_data = Instant::now();
            cur.backoff.reset();
            handler.live();
        }
    }

    /// Sends the watch request from `rv`; the server must accept it within the request timeout.
    async fn open_watch(
        &self,
        selector: Option<&str>,
        rv: &str,
        initial_events: bool,
    ) -> Result<impl futures::Stream<Item = kube::Result<WatchEvent<K>>> + use<K>, End> {
        let secs = u32::try_from(self.timings.watch_timeout.as_secs()).unwrap_or(u32::MAX).max(1);
        let mut wp = if initial_events { WatchParams::streaming_lists() } else { WatchParams::default() };
        wp = wp.timeout(secs);
        if let Some(s) = selector {
            wp = wp.labels(s);
        }
        let req = match kube::core::Request::new(&self.path).watch(&wp, rv) {
            Ok(req) => req,
            Err(e) => return Err(End::Failed { since: Instant::now(), error: e.to_string() }),
        };
        match tokio::time::timeout(self.timings.request_timeout, self.client.request_events::<K>(req)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(kube::Error::Api(s))) if initial_events && matches!(s.code, 400 | 422) => {
                Err(End::StreamingRefused(format!("{} ({})", s.message, s.code)))
            }
            Ok(Err(e)) if too_large(&e) => Err(End::TooLarge(e.to_string())),
            Ok(Err(e)) => Err(End::Failed { since: Instant::now(), error: describe(&e, "watch", &self.what) }),
            Err(_) => Err(End::Failed {
                since: Instant::now(),
                error: format!("failed to watch {}: no answer within {:?}", self.what, self.timings.request_timeout),
            }),
        }
    }

    /// The stream's next item (`None`: it ended), unless the watch stays silent past the idle timeout,
    /// the selection changes, or the probe finds the server not answering first.
    async fn next_event<S>(
        &self,
        stream: &mut std::pin::Pin<&mut S>,
        probe: &mut Option<watch::Receiver<Option<ProbeFailure>>>,
        scope: &mut watch::Receiver<Option<Scope>>,
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
            Ok(()) = scope.changed() => Err(End::Rescoped),
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

    /// One event of a streaming list's initial part.
    fn deliver_initial(&self, handler: &mut impl Handler<K>, cur: &mut Cursor, event: WatchEvent<K>) -> Initial {
        match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                remember(&mut cur.rv, o.resource_version());
                handler.list_item(o);
                Initial::More
            }
            // Not part of an initial state: a server that does not stream lists.
            WatchEvent::Deleted(_) => Initial::Refused("a DELETED event among the initial events".into()),
            WatchEvent::Bookmark(b) if b.metadata.annotations.get(INITIAL_EVENTS_END).is_some_and(|v| v == "true") => {
                remember(&mut cur.rv, Some(&b.metadata.resource_version));
                Initial::Done
            }
            WatchEvent::Bookmark(_) => Initial::Refused("a bookmark without the initial-events-end annotation".into()),
            WatchEvent::Error(status) => {
                Initial::Refused(format!("{} ({}, code {})", status.message, status.reason, status.code))
            }
        }
    }

    /// Hands one event to the handler and remembers its version; an error event ends the watch.
    fn deliver(&self, handler: &mut impl Handler<K>, cur: &mut Cursor, event: WatchEvent<K>) -> Option<End> {
        match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                remember(&mut cur.rv, o.resource_version());
                handler.apply(o);
            }
            WatchEvent::Deleted(o) => {
                remember(&mut cur.rv, o.resource_version());
                handler.delete(o);
            }
            WatchEvent::Bookmark(b) => remember(&mut cur.rv, Some(&b.metadata.resource_version)),
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

/// A streaming list's progress through its initial events.
enum Initial {
    More,
    Done,
    Refused(String),
}

/// A list from the cache is one response; it may take longer than a small request.
const LIST_FLOOR: Duration = Duration::from_secs(30);

enum ListError {
    /// The server has not reached the version asked for.
    TooLarge(String),
    Other(String),
}

impl ListError {
    fn into_message(self) -> String {
        match self {
            ListError::TooLarge(m) | ListError::Other(m) => m,
        }
    }
}

/// "Too large resource version" (504, cause `ResourceVersionTooLarge`; older servers: the message).
fn too_large(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            s.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "ResourceVersionTooLarge"))
                || s.message.contains("Too large resource version")
        }
        _ => false,
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

/// Resumes the next watch (and bounds the next list) from the newest version seen (opaque: handed
/// back, never compared).
fn remember(rv: &mut Option<String>, seen: Option<&str>) {
    if let Some(v) = seen.filter(|v| !v.is_empty()) {
        *rv = Some(v.to_owned());
    }
}

/// A list/watch loop and its handler, as one supervised task.
pub(crate) struct Watcher<K, H> {
    pub lw: ListWatch<K>,
    pub handler: H,
}

impl<K, H> crate::task::Supervised for Watcher<K, H>
where
    K: Object + Sync,
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
