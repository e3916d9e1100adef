//! Locks that outlive a panic: every value guarded by a mutex in this crate stays consistent
//! between statements, so a lock whose holder panicked is taken as it is (and the task that
//! panicked is recovered by its supervisor, see `task`).

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, recovering it if a holder panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
