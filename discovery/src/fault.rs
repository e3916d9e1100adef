//! **Tests only** (feature `fault-injection`): make a background task panic on purpose, to prove
//! that supervision marks its set stale and restarts it. Never enable this feature in production.

use std::sync::Mutex;

static PENDING: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The next time a task of `kind` reaches a checkpoint, it panics. Kinds: `slices`, `services`,
/// `resolution`, `dns`, `static`, `follow`, `client`, `zone`, `probe`, `dubbo`.
pub fn panic_next(kind: &str) {
    crate::sync::lock(&PENDING).push(kind.to_owned());
}

/// Whether a panic is pending for `kind` (and takes it).
pub(crate) fn take(kind: &str) -> bool {
    let mut pending = crate::sync::lock(&PENDING);
    match pending.iter().position(|k| k == kind) {
        Some(i) => {
            pending.swap_remove(i);
            true
        }
        None => false,
    }
}
