//! DNS mode: SRV `_<port>._tcp.<svc>.<ns>.svc.<domain>` for ports and targets, A/AAAA for
//! addresses (with the configured port when there is no SRV record). Re-resolves when the records'
//! TTL runs out (clamped to a floor and a ceiling, jittered, never below the floor), keeps the last
//! good answer on timeout or SERVFAIL, and takes an authoritative empty answer (NXDOMAIN, NOERROR
//! with no data) as zero endpoints.
//!
//! A and AAAA are asked independently: one failing (an IPv6-less server answering AAAA with
//! SERVFAIL) does not fail the round. SRV priorities are honoured (the lowest that has addresses
//! wins; the others are backups) and weights are carried on the endpoints.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use tracing::{debug, info, warn};

use crate::backoff::{Backoff, jitter};
use crate::config::{BackoffConfig, DnsConfig};
use crate::metrics::Metrics;
use crate::model::{Endpoint, EndpointSet, Freshness, PortSpec, Source, Target};
use crate::publish::{Meta, Publisher};

/// A DNS round that could not be answered (the last good answer stays).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsFailure {
    /// The server did not answer in time.
    #[error("failed to resolve {name}: timed out")]
    Timeout {
        /// The queried name.
        name: String,
    },
    /// The server answered with an error code (SERVFAIL, REFUSED, ...).
    #[error("failed to resolve {name}: server answered {code}")]
    Server {
        /// The queried name.
        name: String,
        /// The response code.
        code: String,
    },
    /// Anything else (no connection, bad packet, ...).
    #[error("failed to resolve {name}: {error}")]
    Other {
        /// The queried name.
        name: String,
        /// What went wrong.
        error: String,
    },
}

impl DnsFailure {
    fn kind(&self) -> &'static str {
        match self {
            DnsFailure::Timeout { .. } => "timeout",
            DnsFailure::Server { .. } => "server",
            DnsFailure::Other { .. } => "other",
        }
    }
}

/// One successful resolution.
#[derive(Clone, Debug)]
pub struct DnsAnswer {
    /// What was found (possibly nothing: an authoritative empty answer).
    pub endpoints: Vec<Endpoint>,
    /// The smallest TTL (or negative TTL) of the records used.
    pub ttl: Duration,
    /// The SRV target was the Service name itself: a ClusterIP Service, one virtual IP.
    pub vip: bool,
    /// A named port was asked but the server has no SRV record for it: the fallback port was used.
    pub no_srv: bool,
    /// Queries that failed while others answered (e.g. AAAA SERVFAIL with A fine).
    pub partial: Vec<DnsFailure>,
}

/// Builds a resolver: the configured server (UDP, with TCP on truncation), else `/etc/resolv.conf`.
/// Caching is left to the server: every round asks afresh so TTLs are the server's.
pub fn build_resolver(cfg: &DnsConfig) -> Result<TokioResolver, NetError> {
    let mut builder = match cfg.server {
        Some(addr) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
            let rc = ResolverConfig::from_parts(None, Vec::new(), vec![ns]);
            TokioResolver::builder_with_config(rc, TokioRuntimeProvider::default())
        }
        None => TokioResolver::builder(TokioRuntimeProvider::default())?,
    };
    let opts = builder.options_mut();
    opts.timeout = cfg.timeout;
    opts.attempts = cfg.attempts;
    opts.cache_size = 0;
    opts.ndots = 0;
    opts.try_tcp_on_error = true;
    builder.build()
}

/// Fully qualified Service name: `<svc>.<ns>.svc.<domain>.`
pub fn service_fqdn(target: &Target, cluster_domain: &str) -> String {
    format!("{}.{}.svc.{}.", target.service, target.namespace, cluster_domain)
}

enum Outcome {
    Records(Lookup),
    /// Authoritative: the name or the type does not exist. Negative TTL if the SOA gave one.
    Empty(Option<u32>),
}

fn classify(name: &str, r: Result<Lookup, NetError>) -> Result<Outcome, DnsFailure> {
    match r {
        Ok(l) => Ok(Outcome::Records(l)),
        Err(NetError::Dns(DnsError::NoRecordsFound(nr))) => Ok(Outcome::Empty(nr.negative_ttl)),
        Err(NetError::Timeout) => Err(DnsFailure::Timeout { name: name.to_owned() }),
        Err(NetError::Dns(DnsError::ResponseCode(code))) => {
            Err(DnsFailure::Server { name: name.to_owned(), code: code.to_string() })
        }
        Err(e) => {
            let error = e.to_string();
            if error.contains("timed out") {
                Err(DnsFailure::Timeout { name: name.to_owned() })
            } else {
                Err(DnsFailure::Other { name: name.to_owned(), error })
            }
        }
    }
}

fn min_ttl<'a>(records: impl IntoIterator<Item = &'a Record>) -> Option<u32> {
    records.into_iter().map(|r| r.ttl).min()
}

fn addresses<'a>(records: impl IntoIterator<Item = &'a Record>, owner: Option<&str>) -> Vec<IpAddr> {
    records
        .into_iter()
        .filter(|r| owner.is_none_or(|o| r.name.to_ascii().eq_ignore_ascii_case(o)))
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// Addresses and the smallest TTL of `name`, A and AAAA asked independently: an error in one of
/// them is reported in `partial` when the other brought addresses; when no address came and a
/// query failed, the whole fails (an AAAA NODATA beside an A timeout is not an empty Service).
async fn both_families(
    resolver: &TokioResolver,
    name: &str,
) -> Result<(Vec<IpAddr>, Option<u32>, Vec<DnsFailure>), DnsFailure> {
    let (a, aaaa) = tokio::join!(resolver.lookup(name, RecordType::A), resolver.lookup(name, RecordType::AAAA));
    let mut ips = Vec::new();
    let mut ttl: Option<u32> = None;
    let mut failures = Vec::new();
    for outcome in [classify(name, a), classify(name, aaaa)] {
        match outcome {
            Ok(Outcome::Records(l)) => {
                ttl = min_opt(ttl, min_ttl(l.answers()));
                ips.extend(addresses(l.answers(), None));
            }
            Ok(Outcome::Empty(neg)) => ttl = min_opt(ttl, neg),
            Err(e) => failures.push(e),
        }
    }
    // No address and a query that failed: the emptiness may be the failure's, not the Service's. Only
    // both families answering (records or an authoritative "none") make an empty answer.
    if ips.is_empty() && !failures.is_empty() {
        return Err(failures.swap_remove(0));
    }
    Ok((ips, ttl, failures))
}

fn min_opt(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Resolves `target` once.
pub async fn resolve_once(
    resolver: &TokioResolver,
    target: &Target,
    cfg: &DnsConfig,
    fallback_port: u16,
) -> Result<DnsAnswer, DnsFailure> {
    let fqdn = service_fqdn(target, &cfg.cluster_domain);
    let mut no_srv = false;
    if let (true, PortSpec::Name(port_name)) = (cfg.srv, &target.port) {
        let srv_name = format!("_{port_name}._tcp.{fqdn}");
        match classify(&srv_name, resolver.lookup(srv_name.as_str(), RecordType::SRV).await)? {
            Outcome::Records(lookup) => return srv_answer(resolver, &lookup, &fqdn).await,
            Outcome::Empty(_) => no_srv = true,
        }
    }
    let port = match target.port {
        PortSpec::Number(n) => n,
        PortSpec::Name(_) => fallback_port,
    };
    let (ips, ttl, partial) = both_families(resolver, &fqdn).await?;
    let endpoints = ips.into_iter().map(|ip| Endpoint::new(SocketAddr::new(ip, port))).collect();
    Ok(DnsAnswer { endpoints, ttl: Duration::from_secs(ttl.unwrap_or(0).into()), vip: false, no_srv, partial })
}

async fn srv_answer(resolver: &TokioResolver, lookup: &Lookup, fqdn: &str) -> Result<DnsAnswer, DnsFailure> {
    let mut ttl = min_ttl(lookup.answers()).unwrap_or(0);
    let mut vip = false;
    let mut partial = Vec::new();
    // Lowest priority first; within one, every target with its weight.
    let mut by_priority: BTreeMap<u16, Vec<(String, u16, u16)>> = BTreeMap::new();
    for record in lookup.answers() {
        let RData::SRV(srv) = &record.data else { continue };
        let target = srv.target.to_ascii();
        let group = by_priority.entry(srv.priority).or_default();
        if !group.iter().any(|(t, p, _)| *t == target && *p == srv.port) {
            group.push((target, srv.port, srv.weight));
        }
    }
    let mut endpoints = Vec::new();
    for (priority, targets) in by_priority {
        for (target, port, weight) in targets {
            if target.eq_ignore_ascii_case(fqdn) {
                vip = true;
            }
            // CoreDNS puts the targets' A/AAAA records in the additional section; ask when it did not.
            let mut ips = addresses(lookup.additionals(), Some(&target));
            if ips.is_empty() {
                // A target whose addresses could not be looked up fails the round: dropping it
                // would publish a set without that pod as if it were current.
                let (found, t, failures) = both_families(resolver, &target).await?;
                ttl = ttl.min(t.unwrap_or(ttl));
                ips = found;
                partial.extend(failures);
            }
            let name: std::sync::Arc<str> = std::sync::Arc::from(target.trim_end_matches('.'));
            for ip in ips {
                let mut e = Endpoint::new(SocketAddr::new(ip, port));
                e.name = Some(name.clone());
                e.weight = u32::from(weight);
                endpoints.push(e);
            }
        }
        if !endpoints.is_empty() {
            if priority > 0 {
                debug!(priority, "SRV targets of a lower priority have no address; using priority {priority}");
            }
            break;
        }
    }
    Ok(DnsAnswer { endpoints, ttl: Duration::from_secs(ttl.into()), vip, no_srv: false, partial })
}

/// When to ask again: the TTL clamped to `[floor, ceiling]`, minus up to 10 % jitter, and never
/// below the floor.
pub fn refresh_delay(ttl: Duration, cfg: &DnsConfig) -> Duration {
    jitter(ttl.clamp(cfg.ttl_floor, cfg.ttl_ceiling), 0.1).max(cfg.ttl_floor)
}

/// The resolve loop of one Service.
#[derive(Clone)]
pub(crate) struct DnsSource {
    pub resolver: TokioResolver,
    pub target: Target,
    pub cfg: DnsConfig,
    pub fallback_port: u16,
    pub backoff: BackoffConfig,
    pub metrics: Metrics,
    pub key: String,
}

impl DnsSource {
    /// Starts the loop on a supervised task of its own, publishing to a fresh channel.
    pub(crate) fn spawn(
        self,
        versions: &crate::publish::Versions,
    ) -> (tokio::sync::watch::Receiver<EndpointSet>, tokio::task::JoinHandle<()>) {
        let (publisher, rx) = Publisher::new(Source::Dns, versions.clone());
        let restarts = self.metrics.restarts("dns");
        let what = self.key.clone();
        let backoff = Backoff::new(self.backoff);
        let task =
            DnsLoop { source: self, publisher, backoff, warned_vip: false, warned_srv: false, failing_since: None };
        (rx, crate::task::spawn("dns", what, restarts, task))
    }
}

/// The resolve loop of one Service, with what it keeps between rounds.
struct DnsLoop {
    source: DnsSource,
    publisher: Publisher,
    backoff: Backoff,
    warned_vip: bool,
    warned_srv: bool,
    failing_since: Option<Instant>,
}

impl crate::task::Supervised for DnsLoop {
    async fn run(&mut self) {
        while !self.publisher.is_closed() {
            crate::task::checkpoint("dns");
            let started = Instant::now();
            let s = &self.source;
            let result = resolve_once(&s.resolver, &s.target, &s.cfg, s.fallback_port).await;
            s.metrics.dns_lookup(&s.key, started.elapsed().as_secs_f64());
            let delay = match result {
                Ok(answer) => self.answered(answer),
                Err(e) => self.failed(&e, started),
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.publisher.closed() => return,
            }
        }
        info!(service = %self.source.key, "dns source stopped");
    }

    fn recover(&mut self) {
        self.failed(
            &DnsFailure::Other { name: self.source.key.clone(), error: "the DNS task panicked".into() },
            Instant::now(),
        );
    }
}

impl DnsLoop {
    /// Publishes an answer; returns when to ask again.
    fn answered(&mut self, answer: DnsAnswer) -> Duration {
        let s = &self.source;
        self.backoff.reset();
        self.failing_since = None;
        if answer.vip && !self.warned_vip {
            self.warned_vip = true;
            warn!(
                service = %s.key,
                k8s_service = %s.target,
                "the Service has a ClusterIP: one virtual IP, balanced per connection by kube-proxy; \
                 per-pod balancing is lost (use a headless Service: clusterIP: None)"
            );
        }
        if answer.no_srv {
            s.metrics.dns_failure(&s.key, "no_srv");
            if !self.warned_srv {
                self.warned_srv = true;
                warn!(
                    service = %s.key,
                    k8s_service = %s.target,
                    fallback_port = s.fallback_port,
                    "no SRV record for the named port (is the Service port named? is the server \
                     CoreDNS?); using A/AAAA records with DISCOVERY_FALLBACK_PORT (set \
                     DISCOVERY_DNS_SRV=false or a numeric DISCOVERY_PORT to silence this)"
                );
            }
        }
        for failure in &answer.partial {
            s.metrics.dns_failure(&s.key, failure.kind());
            debug!(service = %s.key, error = %failure, "one query of the round failed; the others answered");
        }
        debug!(service = %s.key, endpoints = answer.endpoints.len(), ttl = ?answer.ttl, "dns answer");
        let source = if answer.vip { Source::Vip } else { Source::Dns };
        let next = EndpointSet::of(source, answer.endpoints);
        self.publisher.replace(
            &next,
            Meta {
                source,
                freshness: Freshness::Live,
                pending: false,
                traffic: crate::model::TrafficDistribution::Any,
            },
        );
        refresh_delay(answer.ttl, &s.cfg)
    }

    /// Keeps the last good answer, marked stale since the first failure; returns when to ask again.
    fn failed(&mut self, e: &DnsFailure, started: Instant) -> Duration {
        let s = &self.source;
        if self.failing_since.is_none() {
            warn!(service = %s.key, error = %e, "dns lookup failed; keeping the last good answer");
        } else {
            debug!(service = %s.key, error = %e, "dns lookup failed again");
        }
        s.metrics.dns_failure(&s.key, e.kind());
        let since = *self.failing_since.get_or_insert(started);
        let cur = self.publisher.current();
        let meta = Meta { freshness: Freshness::Stale { since }, ..Meta::of(cur) };
        self.publisher.publish(Vec::new(), meta);
        self.backoff.next_delay().min(s.cfg.ttl_ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_is_clamped_jittered_and_never_below_the_floor() {
        let cfg = crate::DiscoveryConfig::default().dns;
        for _ in 0..200 {
            let d = refresh_delay(Duration::from_secs(1), &cfg);
            assert_eq!(d, Duration::from_secs(5), "a TTL under the floor waits exactly the floor: {d:?}");
            let d = refresh_delay(Duration::from_secs(600), &cfg);
            assert!(d >= Duration::from_secs(27) && d <= Duration::from_secs(30), "ceiling 30 s: {d:?}");
            let d = refresh_delay(Duration::from_millis(5100), &cfg);
            assert!(d >= Duration::from_secs(5), "jitter never goes below the floor: {d:?}");
            let d = refresh_delay(Duration::from_secs(10), &cfg);
            assert!(d >= Duration::from_secs(9) && d <= Duration::from_secs(10), "ttl: {d:?}");
        }
    }

    #[test]
    fn fqdn() {
        let t = Target { namespace: "demo".into(), service: "greeter".into(), port: PortSpec::Number(1) };
        assert_eq!(service_fqdn(&t, "cluster.local"), "greeter.demo.svc.cluster.local.");
    }
}
