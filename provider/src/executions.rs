//! Executions counted by request id: a client that follows the call contract sends the same
//! `dubbo-k8s-request-id` on every attempt of one call, so an id seen twice here is a call executed
//! twice on this instance. The ids of the last `window` executions are kept (as 64-bit hashes: 16
//! bytes each, not the text) and `provider_executions_repeated_total` counts repeats.
//!
//! A repeat across two instances (run here, then replayed on another) is invisible to either alone:
//! the optional journal (`PROVIDER_EXECUTION_LOG`) appends one line per execution, written before
//! the reply (it survives a kill -9), so an audit can join the journals of every instance.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::warn;

/// The request header carrying a call's id (see the discovery client's contract).
pub const REQUEST_ID_HEADER: &str = "dubbo-k8s-request-id";

type Labels = Vec<(String, String)>;

#[derive(Debug, Default)]
struct Window {
    seen: HashMap<u64, u32>,
    order: VecDeque<u64>,
}

#[derive(Debug)]
struct Inner {
    window: Mutex<Window>,
    capacity: usize,
    hasher: std::collections::hash_map::RandomState,
    repeated: Family<Labels, Counter>,
    tracked: Gauge,
    journal: Option<Mutex<File>>,
}

/// Execution counting of one provider instance.
#[derive(Clone, Debug)]
pub struct Executions {
    inner: Arc<Inner>,
}

impl Executions {
    /// Counting over the last `capacity` ids (0: off), with `journal` appended to if given, and
    /// metrics registered as `provider_executions_*` in `registry`.
    pub fn new(capacity: usize, journal: Option<&Path>, registry: &mut Registry) -> std::io::Result<Self> {
        let journal = match journal {
            Some(p) => Some(Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(p)?)),
            None => None,
        };
        let inner = Inner {
            window: Mutex::new(Window::default()),
            capacity,
            hasher: std::collections::hash_map::RandomState::new(),
            repeated: Family::default(),
            tracked: Gauge::default(),
            journal,
        };
        registry.register(
            "provider_executions_repeated",
            "Executions whose request id this instance had already executed (calls run more than once)",
            inner.repeated.clone(),
        );
        registry.register("provider_executions_tracked", "Request ids in the duplicate window", inner.tracked.clone());
        Ok(Executions { inner: Arc::new(inner) })
    }

    fn window(&self) -> MutexGuard<'_, Window> {
        self.inner.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one execution of `method` under `id`; returns how many times this instance has now
    /// executed that id (1: the first).
    pub fn record(&self, id: Option<&str>, method: &str, detail: &str) -> u32 {
        if let Some(journal) = &self.inner.journal {
            let line = format!("{}\t{method}\t{detail}\n", id.unwrap_or("-"));
            let mut file = journal.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(e) = file.write_all(line.as_bytes()) {
                warn!(error = %e, "failed to append to PROVIDER_EXECUTION_LOG");
            }
        }
        let (Some(id), true) = (id, self.inner.capacity > 0) else { return 1 };
        let mut h = self.inner.hasher.build_hasher();
        h.write(id.as_bytes());
        let key = h.finish();
        let mut w = self.window();
        let n = {
            let n = w.seen.entry(key).or_insert(0);
            *n += 1;
            *n
        };
        if n == 1 {
            w.order.push_back(key);
            while w.order.len() > self.inner.capacity {
                if let Some(old) = w.order.pop_front() {
                    w.seen.remove(&old);
                }
            }
            self.inner.tracked.set(w.order.len() as i64);
        } else {
            self.inner.repeated.get_or_create(&vec![("method".to_owned(), method.to_owned())]).inc();
        }
        n
    }

    /// Repeated executions so far of `method`.
    pub fn repeated(&self, method: &str) -> u64 {
        self.inner.repeated.get_or_create(&vec![("method".to_owned(), method.to_owned())]).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_counted_within_the_window() {
        let mut r = Registry::default();
        let e = Executions::new(2, None, &mut r).expect("no journal");
        assert_eq!(e.record(Some("a"), "SayHello", ""), 1);
        assert_eq!(e.record(Some("a"), "SayHello", ""), 2);
        assert_eq!(e.record(None, "SayHello", ""), 1, "no id: not counted");
        e.record(Some("b"), "SayHello", "");
        e.record(Some("c"), "SayHello", "");
        assert_eq!(e.record(Some("a"), "SayHello", ""), 1, "a left the window of 2");
        assert_eq!(e.repeated("SayHello"), 1);
    }

    #[test]
    fn the_journal_has_a_line_per_execution() {
        let path = std::env::temp_dir().join(format!("executions-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut r = Registry::default();
        let e = Executions::new(10, Some(&path), &mut r).expect("journal");
        e.record(Some("id-1"), "SayHello", "faults/idempotent");
        e.record(Some("id-1"), "SayHello", "faults/idempotent");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().filter(|l| l.starts_with("id-1\tSayHello\tfaults/idempotent")).count(), 2);
        let _ = std::fs::remove_file(&path);
    }
}
