//! Sources of endpoints. Each runs as a task that owns a `watch::Sender<SourceState>` and never
//! ends on error: it retries with jittered backoff and reports its health in the state instead.

pub mod api;
pub mod dns;

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use crate::model::{Endpoint, Source};

/// What one source knows right now.
#[derive(Clone, Debug)]
pub struct SourceState {
    /// The kind of answer (the DNS source reports [`Source::Vip`] for a ClusterIP Service).
    pub source: Source,
    /// The last good answer; `None` until the source has answered once.
    pub endpoints: Option<Arc<[Endpoint]>>,
    /// Set while the source cannot confirm its answer (API unreachable, DNS timeout, ...).
    pub failing_since: Option<Instant>,
    /// The latest error, for logs and `/debug/endpoints`.
    pub last_error: Option<String>,
}

impl SourceState {
    /// No answer yet.
    pub fn new(source: Source) -> Self {
        SourceState { source, endpoints: None, failing_since: None, last_error: None }
    }
}

/// Records a good answer; returns whether anything visible changed.
pub(crate) fn publish_ok(tx: &watch::Sender<SourceState>, source: Source, endpoints: Vec<Endpoint>) {
    tx.send_if_modified(|s| {
        let same = s.source == source
            && s.failing_since.is_none()
            && s.endpoints.as_deref().is_some_and(|old| old == endpoints.as_slice());
        if same {
            return false;
        }
        s.source = source;
        s.endpoints = Some(Arc::from(endpoints));
        s.failing_since = None;
        s.last_error = None;
        true
    });
}

/// Confirms the current answer is current again without changing it.
pub(crate) fn publish_healthy(tx: &watch::Sender<SourceState>) {
    tx.send_if_modified(|s| {
        if s.failing_since.is_none() || s.endpoints.is_none() {
            return false;
        }
        s.failing_since = None;
        s.last_error = None;
        true
    });
}

/// Records a failure, keeping the last good answer.
pub(crate) fn publish_failure(tx: &watch::Sender<SourceState>, error: String) {
    tx.send_modify(|s| {
        if s.failing_since.is_none() {
            s.failing_since = Some(Instant::now());
        }
        s.last_error = Some(error);
    });
}
