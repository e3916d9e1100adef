//! DNS mode: SRV `_<port>._tcp.<svc>.<ns>.svc.<domain>` for ports and targets, A/AAAA for
//! addresses (with the configured port when there is no SRV record). Re-resolves when the records'
//! TTL runs out (clamped to a floor and a ceiling, jittered), keeps the last good answer on timeout or
//! SERVFAIL, and takes an authoritative empty answer (NXDOMAIN, NOERROR with no data) as zero endpoints.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::backoff::{Backoff, jitter};
use crate::config::{BackoffConfig, DnsConfig};
use crate::metrics::Metrics;
use crate::model::{Endpoint, Host, PortSpec, Source, Target, normalize};
use crate::source::{SourceState, publish_failure, publish_ok};

/// A DNS round that could not be answered (the last good answer stays).
#[derive(Debug, thiserror::Error)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsAnswer {
    /// What was found (possibly nothing: an authoritative empty answer).
    pub endpoints: Vec<Endpoint>,
    /// The smallest TTL (or negative TTL) of the records used.
    pub ttl: Duration,
    /// The SRV target was the Service name itself: a ClusterIP Service, one virtual IP.
    pub vip: bool,
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
    opts.attempts = 1;
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

/// Resolves `target` once.
pub async fn resolve_once(
    resolver: &TokioResolver,
    target: &Target,
    cfg: &DnsConfig,
    fallback_port: u16,
) -> Result<DnsAnswer, DnsFailure> {
    let fqdn = service_fqdn(target, &cfg.cluster_domain);
    if let (true, PortSpec::Name(port_name)) = (cfg.srv, &target.port) {
        let srv_name = format!("_{port_name}._tcp.{fqdn}");
        match classify(&srv_name, resolver.lookup(srv_name.as_str(), RecordType::SRV).await)? {
            Outcome::Records(lookup) => return srv_answer(resolver, &lookup, &fqdn).await,
            Outcome::Empty(_) => debug!(name = %srv_name, "no SRV record; asking A/AAAA"),
        }
    }
    let port = match target.port {
        PortSpec::Number(n) => n,
        PortSpec::Name(_) => fallback_port,
    };
    let (a, aaaa) =
        tokio::join!(resolver.lookup(fqdn.as_str(), RecordType::A), resolver.lookup(fqdn.as_str(), RecordType::AAAA));
    let (a, aaaa) = (classify(&fqdn, a)?, classify(&fqdn, aaaa)?);
    let mut endpoints = Vec::new();
    let mut ttl: Option<u32> = None;
    for outcome in [a, aaaa] {
        match outcome {
            Outcome::Records(l) => {
                ttl = match (ttl, min_ttl(l.answers())) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                endpoints.extend(addresses(l.answers(), None).into_iter().map(|ip| Endpoint::new(Host::Ip(ip), port)));
            }
            Outcome::Empty(neg) => ttl = ttl.or(neg),
        }
    }
    Ok(DnsAnswer { endpoints: normalize(endpoints), ttl: Duration::from_secs(ttl.unwrap_or(0).into()), vip: false })
}

async fn srv_answer(resolver: &TokioResolver, lookup: &Lookup, fqdn: &str) -> Result<DnsAnswer, DnsFailure> {
    let mut endpoints = Vec::new();
    let mut ttl = min_ttl(lookup.answers()).unwrap_or(0);
    let mut vip = false;
    let mut seen = BTreeSet::new();
    for record in lookup.answers() {
        let RData::SRV(srv) = &record.data else { continue };
        let target = srv.target.to_ascii();
        if !seen.insert((target.clone(), srv.port)) {
            continue;
        }
        if target.eq_ignore_ascii_case(fqdn) {
            vip = true;
        }
        // CoreDNS puts the targets' A/AAAA records in the additional section; ask when it did not.
        let mut ips = addresses(lookup.additionals(), Some(&target));
        if ips.is_empty() {
            let (a, aaaa) = tokio::join!(
                resolver.lookup(target.as_str(), RecordType::A),
                resolver.lookup(target.as_str(), RecordType::AAAA)
            );
            for outcome in [classify(&target, a)?, classify(&target, aaaa)?] {
                if let Outcome::Records(l) = outcome {
                    ttl = ttl.min(min_ttl(l.answers()).unwrap_or(ttl));
                    ips.extend(addresses(l.answers(), None));
                }
            }
        }
        let name = target.trim_end_matches('.').to_owned();
        for ip in ips {
            let mut e = Endpoint::new(Host::Ip(ip), srv.port);
            e.name = Some(name.clone());
            endpoints.push(e);
        }
    }
    Ok(DnsAnswer { endpoints: normalize(endpoints), ttl: Duration::from_secs(ttl.into()), vip })
}

/// When to ask again: the TTL clamped to `[floor, ceiling]`, minus up to 10 % jitter.
pub fn refresh_delay(ttl: Duration, cfg: &DnsConfig) -> Duration {
    jitter(ttl.clamp(cfg.ttl_floor, cfg.ttl_ceiling), 0.1)
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
    /// The DNS source of `target` as `cfg` configures it, with its own resolver.
    pub(crate) fn new(
        cfg: &crate::DiscoveryConfig,
        target: Target,
        metrics: Metrics,
        key: String,
    ) -> Result<Self, hickory_resolver::net::NetError> {
        Ok(DnsSource {
            resolver: build_resolver(&cfg.dns)?,
            target,
            cfg: cfg.dns.clone(),
            fallback_port: cfg.fallback_port,
            backoff: cfg.backoff,
            metrics,
            key,
        })
    }

    /// Runs until the sender has no receivers.
    pub(crate) async fn run(self, tx: watch::Sender<SourceState>) {
        let mut backoff = Backoff::new(self.backoff);
        let mut warned_vip = false;
        while !tx.is_closed() {
            let started = Instant::now();
            let result = resolve_once(&self.resolver, &self.target, &self.cfg, self.fallback_port).await;
            self.metrics.dns_lookup(&self.key, started.elapsed().as_secs_f64());
            let delay = match result {
                Ok(answer) => {
                    backoff.reset();
                    if answer.vip && !warned_vip {
                        warned_vip = true;
                        warn!(
                            service = %self.key,
                            target = %self.target,
                            "the Service has a ClusterIP: one virtual IP, balanced per connection by kube-proxy; \
                             per-pod balancing is lost (use a headless Service: clusterIP: None)"
                        );
                    }
                    debug!(service = %self.key, endpoints = answer.endpoints.len(), ttl = ?answer.ttl, "dns answer");
                    let source = if answer.vip { Source::Vip } else { Source::Dns };
                    publish_ok(&tx, source, answer.endpoints);
                    refresh_delay(answer.ttl, &self.cfg)
                }
                Err(e) => {
                    warn!(service = %self.key, error = %e, "dns lookup failed; keeping the last good answer");
                    self.metrics.dns_failure(&self.key, e.kind());
                    publish_failure(&tx, e.to_string());
                    backoff.next_delay().min(self.cfg.ttl_ceiling)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = tx.closed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_is_clamped_and_jittered() {
        let cfg = crate::DiscoveryConfig::default().dns;
        let d = refresh_delay(Duration::from_secs(1), &cfg);
        assert!(d >= Duration::from_millis(4500) && d <= Duration::from_secs(5), "floor 5 s: {d:?}");
        let d = refresh_delay(Duration::from_secs(600), &cfg);
        assert!(d >= Duration::from_secs(27) && d <= Duration::from_secs(30), "ceiling 30 s: {d:?}");
        let d = refresh_delay(Duration::from_secs(10), &cfg);
        assert!(d >= Duration::from_secs(9) && d <= Duration::from_secs(10), "ttl: {d:?}");
    }

    #[test]
    fn fqdn() {
        let t = Target { namespace: "demo".into(), service: "greeter".into(), port: PortSpec::Number(1) };
        assert_eq!(service_fqdn(&t, "cluster.local"), "greeter.demo.svc.cluster.local.");
    }
}
