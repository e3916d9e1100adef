//! Static mode: a fixed list of `host:port`. IPs are used as they are; names are resolved by the
//! system resolver (`/etc/hosts`, then DNS) and again every `DISCOVERY_DNS_TTL_CEILING`, keeping a
//! name's last good addresses when a resolution fails (docker-compose service names, VMs).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tracing::{debug, warn};

use crate::config::{Host, StaticEndpoint};
use crate::model::{Endpoint, EndpointSet, Freshness, Source};
use crate::publish::{Meta, Publisher};

const LIVE: Meta = Meta {
    source: Source::Static,
    freshness: Freshness::Live,
    pending: false,
    traffic: crate::model::TrafficDistribution::Any,
};

/// At start: when every entry is a name and not one of them resolves, the list cannot be what was
/// meant (a typo, a missing /etc/hosts entry); say so instead of serving nothing for ever. One name
/// that resolves is enough: the others keep being retried.
pub(crate) async fn check_resolvable(entries: &[StaticEndpoint], timeout: Duration) -> Result<(), crate::Error> {
    let mut failures = Vec::new();
    for entry in entries {
        let Host::Name(name) = &entry.host else { return Ok(()) };
        match super::lookup_host(name, entry.port, timeout).await {
            Ok(_) => return Ok(()),
            Err(why) => failures.push(format!("{name} ({why})")),
        }
    }
    if failures.is_empty() { Ok(()) } else { Err(crate::Error::StaticHosts { failures }) }
}

/// The static source: resolves names again every `refresh`, until every receiver is gone.
pub(crate) struct StaticLoop {
    pub entries: Vec<StaticEndpoint>,
    pub refresh: Duration,
    pub timeout: Duration,
    pub publisher: Publisher,
    resolved: HashMap<StaticEndpoint, Vec<SocketAddr>>,
}

impl StaticLoop {
    pub(crate) fn new(
        entries: Vec<StaticEndpoint>,
        refresh: Duration,
        timeout: Duration,
        publisher: Publisher,
    ) -> Self {
        StaticLoop { entries, refresh, timeout, publisher, resolved: HashMap::new() }
    }

    async fn resolve(&mut self) {
        for entry in &self.entries {
            let addrs = match &entry.host {
                Host::Ip(ip) => vec![SocketAddr::new(*ip, entry.port)],
                Host::Name(name) => match super::lookup_host(name, entry.port, self.timeout).await {
                    Ok(found) => {
                        debug!(host = %name, addresses = ?found, "static host resolved");
                        found
                    }
                    Err(why) => {
                        warn!(host = %name, error = %why, "failed to resolve a static host; keeping its last addresses");
                        continue;
                    }
                },
            };
            self.resolved.insert(entry.clone(), addrs);
        }
    }
}

impl crate::task::Supervised for StaticLoop {
    async fn run(&mut self) {
        loop {
            crate::task::checkpoint("static");
            self.resolve().await;
            let endpoints = self.entries.iter().flat_map(|entry| {
                let name = match &entry.host {
                    Host::Name(n) => Some(std::sync::Arc::<str>::from(n.as_str())),
                    Host::Ip(_) => None,
                };
                self.resolved
                    .get(entry)
                    .into_iter()
                    .flatten()
                    .map(move |addr| Endpoint { name: name.clone(), ..Endpoint::new(*addr) })
            });
            let set = EndpointSet::of(Source::Static, endpoints);
            self.publisher.replace(&set, LIVE);
            if self.entries.iter().all(|e| matches!(e.host, Host::Ip(_))) {
                self.publisher.closed().await;
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(self.refresh) => {}
                () = self.publisher.closed() => return,
            }
        }
    }

    fn recover(&mut self) {
        let current = self.publisher.current().clone();
        let meta = Meta { freshness: Freshness::Stale { since: std::time::Instant::now() }, ..LIVE };
        self.publisher.replace(&current, meta);
    }
}
