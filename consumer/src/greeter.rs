//! The demo's calls: the tonic-generated `GreeterServiceClient` over discovery's balanced client.
//! Balancing, retries, deadlines, zones and failure accounting are the library's
//! ([`discovery::client::Balanced`]); this is what an application writes.

use std::time::Instant;

use discovery::client::{Balanced, Served};
use provider::pb::HelloRequest;
use provider::pb::greeter_service_client::GreeterServiceClient;

use crate::reply::Reply;
use crate::stats::Stats;

/// The Greeter service of one version/group.
#[derive(Clone, Debug)]
pub struct Greeter {
    balanced: Balanced,
    client: GreeterServiceClient<Balanced>,
    stats: Stats,
}

impl Greeter {
    /// Calls through `balanced`, counting in `stats`.
    pub fn new(balanced: Balanced, stats: Stats) -> Self {
        let client = GreeterServiceClient::new(balanced.clone());
        Greeter { balanced, client, stats }
    }

    /// The balanced client.
    pub fn balanced(&self) -> &Balanced {
        &self.balanced
    }

    /// Call statistics.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// One `SayHello`.
    pub async fn say_hello(&self, name: &str) -> Result<Reply, tonic::Status> {
        let started = Instant::now();
        let result =
            self.client.clone().say_hello(HelloRequest { name: name.to_owned(), ..Default::default() }).await.map(
                |r| {
                    let served = r.extensions().get::<Served>().cloned();
                    Reply {
                        reply: r.into_inner(),
                        endpoint: served.as_ref().map(|s| s.endpoint),
                        attempts: served.as_ref().map_or(1, |s| s.attempts),
                        latency: started.elapsed(),
                    }
                },
            );
        self.stats.record(&result, started.elapsed());
        result
    }
}
