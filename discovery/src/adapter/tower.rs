//! A `tower::discover::Change` stream over a service's [`Updates`], to feed a balancer such as
//! `tower::balance::p2c::Balance` or tonic's `Channel::balance_channel`. It never yields an error
//! (an error from a `Discover` kills the balancer): source failures are handled upstream by serving
//! the last-known-good set. Prefer [`crate::client::Balanced`] (feature `client`) for Triple calls:
//! it retries on other endpoints and fails fast on an empty set, which these balancers cannot.

use std::collections::VecDeque;
use std::convert::Infallible;

use futures::Stream;
use tower::discover::Change;

use crate::adapter::{Membership, Routable};
use crate::model::{Endpoint, EndpointKey};
use crate::service::Updates;

/// The changes of the routable endpoints, starting with an insert for each current one. A change of
/// data that keeps an endpoint routable (zone, conditions) is no change: its connection stays. Ends
/// with the [`Updates`] stream.
pub fn changes(updates: Updates) -> impl Stream<Item = Result<Change<EndpointKey, Endpoint>, Infallible>> {
    let state = (updates, Routable::new(), VecDeque::new());
    futures::stream::unfold(state, |(mut updates, mut routable, mut queue)| async move {
        loop {
            if let Some(change) = queue.pop_front() {
                return Some((Ok(change), (updates, routable, queue)));
            }
            let update = updates.next().await?;
            queue.extend(routable.membership(&update).map(|m| match m {
                Membership::Insert(e) => Change::Insert(e.key(), (*e).clone()),
                Membership::Remove(k) => Change::Remove(k),
            }));
        }
    })
}
