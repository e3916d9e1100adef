//! A `tower::discover::Change` stream over a [`Discovery`](crate::Discovery) watch, to feed a
//! balancer such as tonic's `Channel::balance_channel` or `tower::balance::p2c::Balance`. It never
//! yields an error (an error from a `Discover` kills the balancer): source failures are handled
//! upstream by serving the last-known-good set.

use std::collections::VecDeque;
use std::convert::Infallible;

use futures::Stream;
use tokio::sync::watch;
use tower::discover::Change;

use crate::adapter::diff::{self, Differ};
use crate::model::{Endpoint, EndpointKey, EndpointSet};

/// The changes of the routable endpoints, starting with an insert for each current one. Ends when the
/// watch's sender is gone (the `Discovery` was dropped).
pub fn changes(
    rx: watch::Receiver<EndpointSet>,
) -> impl Stream<Item = Result<Change<EndpointKey, Endpoint>, Infallible>> {
    let state = (rx, Differ::new(), VecDeque::new(), true);
    futures::stream::unfold(state, |(mut rx, mut differ, mut queue, mut first)| async move {
        loop {
            if let Some(change) = queue.pop_front() {
                return Some((Ok(change), (rx, differ, queue, first)));
            }
            if !first && rx.changed().await.is_err() {
                return None;
            }
            first = false;
            let set = rx.borrow_and_update().clone();
            queue.extend(differ.update(&set).into_iter().map(|c| match c {
                diff::Change::Insert(k, e) => Change::Insert(k, e),
                diff::Change::Remove(k) => Change::Remove(k),
            }));
        }
    })
}
