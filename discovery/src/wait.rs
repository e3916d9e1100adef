//! Branches of `tokio::select!` that may be switched off: with nothing to wait on they never finish.

use std::time::Instant;

use tokio::sync::watch;

/// `rx.changed()`, or never when there is no receiver.
pub(crate) async fn changed<T>(rx: Option<&mut watch::Receiver<T>>) -> Result<(), watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or for ever when there is no `at`.
pub(crate) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
