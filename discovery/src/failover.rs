//! Failover between the API source, DNS and the Service VIP, as a pure decision over the sources'
//! sets and the clock, so it is tested without time passing.
//!
//! - API live → API.
//! - API unreachable with a last-known-good set → that set, marked stale, for up to `max_stale`
//!   (DNS is started meanwhile so it is warm); after that → DNS; when DNS cannot answer (its
//!   resolver could not be built, or it fails) → the Service VIP; when there is no VIP either (a
//!   headless Service) → still the stale API set.
//! - An authoritative empty DNS answer during an API outage does not replace a non-empty
//!   last-known-good API set: CoreDNS is fed by the same API server and is usually just as blind.
//!   A live API saying "zero endpoints" is still an empty set.
//! - Cold start: wait up to `cold_start_timeout` for the first list; on an error or after the wait
//!   → DNS, then the VIP.
//! - Recovery: the API's data is served as soon as it is live again, but the outage only ends (and
//!   DNS only stops) once the API has stayed live for `recovery_hold`; a failure within the hold
//!   continues the same outage (DNS stays warm). What is served is decided by the API set's own
//!   age: health is earned only by a list, an event or a bookmark, so a server that flaps and still
//!   answers lists gives current data, served until it is `max_stale` old, instead of swinging the
//!   pool between the API's set and DNS's at every relapse; a server that accepts requests and
//!   answers nothing never makes the set fresh.

use std::time::{Duration, Instant};

use crate::model::{EndpointSet, Freshness};

/// When to leave the API source.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    pub enabled: bool,
    pub max_stale: Duration,
    pub cold_start_timeout: Duration,
    pub recovery_hold: Duration,
}

/// The current API outage, with its recovery hysteresis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Outage {
    /// When the current outage started (the first failure of it).
    pub since: Option<Instant>,
    /// When the API became live again, while the hold runs.
    pub recovered_at: Option<Instant>,
}

impl Outage {
    /// Follows the API's health: `failing_since` is the API set's staleness.
    pub(crate) fn observe(&mut self, failing_since: Option<Instant>, now: Instant, hold: Duration) {
        match failing_since {
            Some(f) => {
                self.since = Some(self.since.map_or(f, |s| s.min(f)));
                self.recovered_at = None;
            }
            None if self.since.is_some() => {
                let recovered = *self.recovered_at.get_or_insert(now);
                if now >= recovered + hold {
                    *self = Outage::default();
                }
            }
            None => {}
        }
    }

    /// When the hold ends, while it runs.
    fn hold_ends(&self, hold: Duration) -> Option<Instant> {
        self.recovered_at.map(|r| r + hold)
    }
}

/// What to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Choice {
    /// Nothing known yet.
    Pending,
    /// The API set.
    Api,
    /// The DNS set.
    Dns,
    /// The Service VIP.
    Vip,
}

/// The decision for this instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    pub choice: Choice,
    /// Freshness to publish (for `Api` and `Vip`; DNS keeps its own).
    pub freshness: Freshness,
    /// Whether the DNS source should run.
    pub want_dns: bool,
    /// When the decision may change without any source changing.
    pub wake_at: Option<Instant>,
    /// An empty DNS answer was set aside in favour of the last-known-good API set.
    pub ignored_empty_dns: bool,
}

/// What failover can fall back to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fallbacks<'a> {
    /// The DNS set while DNS runs; `None` while it does not.
    pub dns: Option<&'a EndpointSet>,
    /// DNS can run at all (its resolver was built).
    pub dns_available: bool,
    /// A VIP endpoint is known (a ClusterIP Service).
    pub vip_available: bool,
}

/// Decides what to serve.
pub(crate) fn decide(
    policy: &Policy,
    started: Instant,
    now: Instant,
    api: &EndpointSet,
    outage: &Outage,
    fb: Fallbacks<'_>,
) -> Decision {
    let mut d = Decision {
        choice: Choice::Api,
        freshness: api.freshness,
        want_dns: false,
        wake_at: None,
        ignored_empty_dns: false,
    };
    if !policy.enabled {
        if api.pending {
            d.choice = Choice::Pending;
        }
        return d;
    }
    let hold_ends = outage.hold_ends(policy.recovery_hold);
    match (api.pending, api.freshness) {
        (false, Freshness::Live) => {
            // Live data; DNS keeps running through the recovery hold.
            d.want_dns = outage.since.is_some();
            d.wake_at = hold_ends;
        }
        (false, Freshness::Stale { since }) => {
            // The API set's own age decides: a list that succeeded during the outage made it fresh
            // again (an answered list is current data, whatever the watches do), so it is served
            // until it is `max_stale` old; going back to DNS at every watch failure would swing the
            // pool between two sources.
            let deadline = since + policy.max_stale;
            d.want_dns = true;
            d.freshness = Freshness::Stale { since };
            if now < deadline {
                d.wake_at = Some(deadline);
            } else {
                fall_back(&mut d, api, since, fb);
            }
        }
        (true, freshness) => {
            let deadline = started + policy.cold_start_timeout;
            if freshness == Freshness::Live && now < deadline {
                d.choice = Choice::Pending;
                d.wake_at = Some(deadline);
                return d;
            }
            let since = match freshness {
                Freshness::Stale { since } => outage.since.unwrap_or(since).min(since),
                Freshness::Live => deadline,
            };
            d.want_dns = true;
            d.choice = Choice::Pending;
            d.freshness = Freshness::Stale { since };
            fall_back(&mut d, api, since, fb);
        }
    }
    d
}

/// DNS's answer if it has a usable one; the VIP once DNS cannot answer; else what `d` already holds
/// (the stale API set, or pending).
fn fall_back(d: &mut Decision, api: &EndpointSet, api_down_since: Instant, fb: Fallbacks<'_>) {
    if fb.dns_available {
        let Some(dns) = fb.dns else { return };
        if !dns.pending {
            if dns.is_empty() && !api.pending && !api.is_empty() {
                d.ignored_empty_dns = true;
                return;
            }
            d.choice = Choice::Dns;
            d.freshness = dns.freshness;
            return;
        }
        if !dns.is_stale() {
            return; // DNS is still asking for the first time
        }
    }
    if fb.vip_available {
        d.choice = Choice::Vip;
        d.freshness = Freshness::Stale { since: api_down_since };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, Source};
    use std::net::SocketAddr;

    const S: Duration = Duration::from_secs(1);

    fn policy() -> Policy {
        Policy { enabled: true, max_stale: 60 * S, cold_start_timeout: 5 * S, recovery_hold: 10 * S }
    }

    fn set(source: Source, n: u8, pending: bool, failing: Option<Instant>) -> EndpointSet {
        let eps = (1..=n).map(|i| Endpoint::new(SocketAddr::from(([10, 0, 0, i], 50051))));
        let mut s = EndpointSet::of(source, eps);
        s.pending = pending;
        s.freshness = failing.map_or(Freshness::Live, |since| Freshness::Stale { since });
        s
    }

    fn fb(dns: Option<&EndpointSet>) -> Fallbacks<'_> {
        Fallbacks { dns, dns_available: true, vip_available: true }
    }

    #[test]
    fn live_api_is_served() {
        let t0 = Instant::now();
        let api = set(Source::Api, 2, false, None);
        let d = decide(&policy(), t0, t0 + S, &api, &Outage::default(), fb(None));
        assert_eq!((d.choice, d.freshness, d.want_dns), (Choice::Api, Freshness::Live, false));
    }

    #[test]
    fn zero_endpoints_from_a_live_api_is_not_an_outage() {
        let t0 = Instant::now();
        let api = set(Source::Api, 0, false, None);
        let dns = set(Source::Dns, 1, false, None);
        let d = decide(&policy(), t0, t0 + 100 * S, &api, &Outage::default(), fb(Some(&dns)));
        assert_eq!((d.choice, d.want_dns), (Choice::Api, false));
    }

    #[test]
    fn outage_serves_last_known_good_then_dns() {
        let t0 = Instant::now();
        let down = t0 + 10 * S;
        let api = set(Source::Api, 2, false, Some(down));
        let mut outage = Outage::default();
        outage.observe(Some(down), down, 10 * S);
        let d = decide(&policy(), t0, down + 30 * S, &api, &outage, fb(None));
        assert_eq!((d.choice, d.freshness), (Choice::Api, Freshness::Stale { since: down }));
        assert!(d.want_dns);
        assert_eq!(d.wake_at, Some(down + 60 * S));
        let dns = set(Source::Dns, 1, false, None);
        let d = decide(&policy(), t0, down + 61 * S, &api, &outage, fb(Some(&dns)));
        assert_eq!(d.choice, Choice::Dns);
        // DNS has not answered yet: keep the stale API set rather than nothing
        let asking = set(Source::Dns, 0, true, None);
        assert_eq!(decide(&policy(), t0, down + 61 * S, &api, &outage, fb(Some(&asking))).choice, Choice::Api);
    }

    #[test]
    fn an_empty_dns_answer_does_not_replace_a_non_empty_api_set() {
        let t0 = Instant::now();
        let api = set(Source::Api, 3, false, Some(t0));
        let empty = set(Source::Dns, 0, false, None);
        let d = decide(&policy(), t0, t0 + 61 * S, &api, &Outage::default(), fb(Some(&empty)));
        assert_eq!(d.choice, Choice::Api);
        assert!(d.ignored_empty_dns);
        // ...but an empty API set (scaled to zero before the outage) lets DNS's empty answer through
        let api0 = set(Source::Api, 0, false, Some(t0));
        let d = decide(&policy(), t0, t0 + 61 * S, &api0, &Outage::default(), fb(Some(&empty)));
        assert_eq!((d.choice, d.ignored_empty_dns), (Choice::Dns, false));
    }

    #[test]
    fn dns_failing_or_missing_falls_back_to_the_vip() {
        let t0 = Instant::now();
        let api = set(Source::Api, 1, false, Some(t0));
        let failing = set(Source::Dns, 0, true, Some(t0 + S));
        let d = decide(&policy(), t0, t0 + 61 * S, &api, &Outage::default(), fb(Some(&failing)));
        assert_eq!((d.choice, d.freshness), (Choice::Vip, Freshness::Stale { since: t0 }));
        let no_resolver = Fallbacks { dns: None, dns_available: false, vip_available: true };
        let d = decide(&policy(), t0, t0 + 61 * S, &api, &Outage::default(), no_resolver);
        assert_eq!(d.choice, Choice::Vip, "no DNS resolver: straight to the VIP");
        let headless = Fallbacks { dns: None, dns_available: false, vip_available: false };
        let d = decide(&policy(), t0, t0 + 61 * S, &api, &Outage::default(), headless);
        assert_eq!(d.choice, Choice::Api, "no VIP either: the stale set is still the best answer");
    }

    #[test]
    fn cold_start_waits_then_falls_back() {
        let t0 = Instant::now();
        let api = set(Source::Api, 0, true, None);
        let d = decide(&policy(), t0, t0 + S, &api, &Outage::default(), fb(None));
        assert_eq!((d.choice, d.want_dns, d.wake_at), (Choice::Pending, false, Some(t0 + 5 * S)));
        let d = decide(&policy(), t0, t0 + 5 * S, &api, &Outage::default(), fb(None));
        assert!(d.want_dns);
        // an error before the wait runs out falls back at once
        let api = set(Source::Api, 0, true, Some(t0 + S));
        let dns = set(Source::Dns, 1, false, None);
        let d = decide(&policy(), t0, t0 + 2 * S, &api, &Outage::default(), fb(Some(&dns)));
        assert_eq!((d.choice, d.freshness), (Choice::Dns, Freshness::Live));
    }

    #[test]
    fn recovery_holds_dns_and_a_relapse_continues_the_outage() {
        let t0 = Instant::now();
        let hold = 10 * S;
        let mut outage = Outage::default();
        outage.observe(Some(t0), t0, hold);
        // the API answers again at t0+50: served live at once, DNS kept through the hold
        outage.observe(None, t0 + 50 * S, hold);
        let live = set(Source::Api, 2, false, None);
        let d = decide(&policy(), t0, t0 + 50 * S, &live, &outage, fb(None));
        assert_eq!((d.choice, d.freshness, d.want_dns), (Choice::Api, Freshness::Live, true));
        assert_eq!(d.wake_at, Some(t0 + 60 * S));
        // it fails again at t0+55, within the hold: the same outage goes on (DNS stays warm), but the
        // set listed at t0+50 is current data: it is served until it is max_stale old, not swapped
        // for DNS at every relapse
        outage.observe(Some(t0 + 55 * S), t0 + 55 * S, hold);
        assert_eq!(outage.since, Some(t0));
        let relapsed = set(Source::Api, 2, false, Some(t0 + 55 * S));
        let dns = set(Source::Dns, 1, false, None);
        let d = decide(&policy(), t0, t0 + 61 * S, &relapsed, &outage, fb(Some(&dns)));
        assert_eq!((d.choice, d.want_dns), (Choice::Api, true), "fresh API data beats DNS");
        assert_eq!(d.wake_at, Some(t0 + 115 * S));
        let d = decide(&policy(), t0, t0 + 115 * S, &relapsed, &outage, fb(Some(&dns)));
        assert_eq!(d.choice, Choice::Dns, "max_stale after its last data, DNS");
        // stable for the whole hold: the outage ends, DNS stops
        outage.observe(None, t0 + 70 * S, hold);
        outage.observe(None, t0 + 80 * S, hold);
        assert_eq!(outage, Outage::default());
        assert!(!decide(&policy(), t0, t0 + 80 * S, &live, &outage, fb(None)).want_dns);
    }

    #[test]
    fn disabled_failover_only_ever_serves_the_api() {
        let t0 = Instant::now();
        let p = Policy { enabled: false, ..policy() };
        let api = set(Source::Api, 1, false, Some(t0));
        let d = decide(&p, t0, t0 + 1000 * S, &api, &Outage::default(), fb(None));
        assert_eq!((d.choice, d.freshness, d.want_dns), (Choice::Api, Freshness::Stale { since: t0 }, false));
    }
}
