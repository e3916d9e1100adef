//! Failover between the API source and DNS (then the Service VIP), as a pure decision over the
//! sources' states and the clock, so it can be tested without time passing.
//!
//! - API live → API.
//! - API unreachable with a last-known-good set → that set, marked stale, for up to `max_stale`
//!   (DNS is started meanwhile so it is warm); after that → DNS, or the VIP when DNS has no answer.
//! - Cold start: wait up to `cold_start_timeout` for the first list; on an error or after the wait
//!   → DNS, then the VIP.
//! - API recovers → API again (DNS is stopped).
//!
//! An API answer with zero endpoints is an answer, not an outage: it is published as an empty set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::{Endpoint, Freshness, Source};
use crate::source::SourceState;

/// When to leave the API source.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Fail over at all.
    pub enabled: bool,
    /// How long a last-known-good API set may be served while the API is unreachable.
    pub max_stale: Duration,
    /// How long a cold start waits for its first list.
    pub cold_start_timeout: Duration,
}

/// What to serve.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    /// Where it comes from.
    pub source: Source,
    /// The endpoints; `None` while nothing is known yet.
    pub endpoints: Option<Arc<[Endpoint]>>,
    /// Live or stale.
    pub freshness: Freshness,
}

impl View {
    fn pending(source: Source) -> Self {
        View { source, endpoints: None, freshness: Freshness::Live }
    }

    /// A source's state as it is: its answer, stale while it fails, pending before its first answer.
    pub(crate) fn of(state: &SourceState) -> Self {
        View {
            source: state.source,
            endpoints: state.endpoints.clone(),
            freshness: match state.failing_since {
                Some(since) if state.endpoints.is_some() => Freshness::Stale { since },
                _ => Freshness::Live,
            },
        }
    }
}

/// The decision for this instant.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// What to serve.
    pub view: View,
    /// Whether the DNS source should be running.
    pub want_dns: bool,
    /// When the decision may change without any source changing (a deadline).
    pub wake_at: Option<Instant>,
}

/// Decides what to serve from the API state, the DNS state (if DNS runs) and the VIP endpoint.
pub fn decide(
    policy: &Policy,
    started: Instant,
    now: Instant,
    api: &SourceState,
    dns: Option<&SourceState>,
    vip: &Endpoint,
) -> Decision {
    let api_view = View::of(api);
    if !policy.enabled {
        return Decision { view: api_view, want_dns: false, wake_at: None };
    }
    match (api.endpoints.is_some(), api.failing_since) {
        (true, None) => Decision { view: api_view, want_dns: false, wake_at: None },
        (true, Some(since)) => {
            let deadline = since + policy.max_stale;
            if now < deadline {
                Decision { view: api_view, want_dns: true, wake_at: Some(deadline) }
            } else {
                let view = fallback(dns, vip, since).unwrap_or(api_view);
                Decision { view, want_dns: true, wake_at: None }
            }
        }
        (false, failing) => {
            let deadline = started + policy.cold_start_timeout;
            if failing.is_none() && now < deadline {
                return Decision { view: View::pending(Source::Api), want_dns: false, wake_at: Some(deadline) };
            }
            let since = failing.unwrap_or(deadline);
            let view = fallback(dns, vip, since).unwrap_or(View::pending(Source::Dns));
            Decision { view, want_dns: true, wake_at: None }
        }
    }
}

/// DNS's answer if it has one; the VIP once DNS has failed without ever answering.
fn fallback(dns: Option<&SourceState>, vip: &Endpoint, api_down_since: Instant) -> Option<View> {
    let dns = dns?;
    if dns.endpoints.is_some() {
        return Some(View::of(dns));
    }
    dns.failing_since.map(|since| View {
        source: Source::Vip,
        endpoints: Some(Arc::from(vec![vip.clone()])),
        freshness: Freshness::Stale { since: since.min(api_down_since) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Host;

    const S: Duration = Duration::from_secs(1);

    fn policy() -> Policy {
        Policy { enabled: true, max_stale: 60 * S, cold_start_timeout: 5 * S }
    }

    fn ep(last: u8) -> Endpoint {
        Endpoint::new(Host::Ip(format!("10.0.0.{last}").parse().expect("ip")), 50051)
    }

    fn state(source: Source, eps: Option<Vec<Endpoint>>, failing_since: Option<Instant>) -> SourceState {
        SourceState { source, endpoints: eps.map(Arc::from), failing_since, last_error: None }
    }

    fn vip() -> Endpoint {
        Endpoint::new(Host::Name("greeter.demo.svc.cluster.local".into()), 50051)
    }

    #[test]
    fn live_api_is_served() {
        let t0 = Instant::now();
        let api = state(Source::Api, Some(vec![ep(1)]), None);
        let d = decide(&policy(), t0, t0 + S, &api, None, &vip());
        assert_eq!(d.view.source, Source::Api);
        assert_eq!(d.view.freshness, Freshness::Live);
        assert!(!d.want_dns);
    }

    #[test]
    fn zero_endpoints_from_a_live_api_is_not_an_outage() {
        let t0 = Instant::now();
        let api = state(Source::Api, Some(vec![]), None);
        let dns = state(Source::Dns, Some(vec![ep(9)]), None);
        let d = decide(&policy(), t0, t0 + 100 * S, &api, Some(&dns), &vip());
        assert_eq!(d.view.source, Source::Api);
        assert_eq!(d.view.endpoints.as_deref().map(<[Endpoint]>::len), Some(0));
        assert!(!d.want_dns);
    }

    #[test]
    fn outage_serves_last_known_good_then_dns_then_recovers() {
        let t0 = Instant::now();
        let down = t0 + 10 * S;
        let api = state(Source::Api, Some(vec![ep(1), ep(2)]), Some(down));
        // within max_stale: stale API set, DNS warming up
        let d = decide(&policy(), t0, down + 30 * S, &api, None, &vip());
        assert_eq!(d.view.source, Source::Api);
        assert_eq!(d.view.freshness, Freshness::Stale { since: down });
        assert!(d.want_dns);
        assert_eq!(d.wake_at, Some(down + 60 * S));
        // past max_stale: DNS
        let dns = state(Source::Dns, Some(vec![ep(3)]), None);
        let d = decide(&policy(), t0, down + 61 * S, &api, Some(&dns), &vip());
        assert_eq!(d.view.source, Source::Dns);
        assert_eq!(d.view.endpoints.as_deref().map(<[Endpoint]>::len), Some(1));
        // past max_stale but DNS has not answered yet: keep the stale API set rather than nothing
        let dns_pending = state(Source::Dns, None, None);
        let d = decide(&policy(), t0, down + 61 * S, &api, Some(&dns_pending), &vip());
        assert_eq!(d.view.source, Source::Api);
        // the watch recovers
        let api = state(Source::Api, Some(vec![ep(1)]), None);
        let d = decide(&policy(), t0, down + 90 * S, &api, Some(&dns), &vip());
        assert_eq!(d.view.source, Source::Api);
        assert!(!d.want_dns, "DNS stops once the API is back");
    }

    #[test]
    fn dns_failing_too_falls_back_to_the_vip() {
        let t0 = Instant::now();
        let api = state(Source::Api, Some(vec![ep(1)]), Some(t0));
        let dns = state(Source::Dns, None, Some(t0 + S));
        let d = decide(&policy(), t0, t0 + 61 * S, &api, Some(&dns), &vip());
        assert_eq!(d.view.source, Source::Vip);
        assert_eq!(d.view.endpoints.as_deref(), Some(&[vip()][..]));
    }

    #[test]
    fn cold_start_waits_then_falls_back() {
        let t0 = Instant::now();
        let api = state(Source::Api, None, None);
        let d = decide(&policy(), t0, t0 + S, &api, None, &vip());
        assert!(d.view.endpoints.is_none(), "pending");
        assert!(!d.want_dns);
        assert_eq!(d.wake_at, Some(t0 + 5 * S));
        // the wait runs out
        let d = decide(&policy(), t0, t0 + 5 * S, &api, None, &vip());
        assert!(d.want_dns);
        // an error before the wait runs out falls back at once
        let api = state(Source::Api, None, Some(t0 + S));
        let dns = state(Source::Dns, Some(vec![ep(7)]), None);
        let d = decide(&policy(), t0, t0 + 2 * S, &api, Some(&dns), &vip());
        assert_eq!(d.view.source, Source::Dns);
        assert_eq!(d.view.freshness, Freshness::Live);
    }

    #[test]
    fn disabled_failover_only_ever_serves_the_api() {
        let t0 = Instant::now();
        let p = Policy { enabled: false, ..policy() };
        let api = state(Source::Api, Some(vec![ep(1)]), Some(t0));
        let d = decide(&p, t0, t0 + 1000 * S, &api, None, &vip());
        assert_eq!(d.view.source, Source::Api);
        assert_eq!(d.view.freshness, Freshness::Stale { since: t0 });
        assert!(!d.want_dns);
    }
}
