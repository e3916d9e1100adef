//! Zone awareness: which endpoints count as local for a client in zone `Z`, with the safeguards
//! kube-proxy applies to topology hints, decided once per change of the pool (not per call):
//!
//! - hints on every endpoint (`hints.forZones`, set by the EndpointSlice controller for
//!   topology-aware Services) → local = the endpoints hinted for `Z`;
//! - hints on some endpoints only → no preference (the controller is mid-update, or hints were
//!   withdrawn: kube-proxy ignores them too);
//! - no hints, but the Service says `trafficDistribution: PreferClose` → local = the endpoints
//!   whose zone is `Z`;
//! - otherwise, or when `Z` is unknown, or when no endpoint is local → no preference.
//!
//! Per call, the local endpoints are tried first; a call goes to all zones when every local
//! endpoint is ejected or already tried, or when the local pick is overloaded (see
//! [`crate::client::ClientOptions::zone_spill_in_flight`]).

use std::sync::Arc;

use serde::Serialize;

use crate::model::Endpoint;

/// How the pool prefers zones now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", content = "detail", rename_all = "snake_case")]
pub enum ZoneMode {
    /// All zones alike, and why.
    Off(String),
    /// Local = endpoints hinted for this zone.
    Hints,
    /// Local = endpoints in this zone (PreferClose without hints).
    SameZone,
}

/// The zone mode and, per endpoint, whether it is local.
pub(crate) fn classify(
    zone: Option<&str>,
    endpoints: &[&Arc<Endpoint>],
    prefer_close: bool,
    enabled: bool,
) -> (ZoneMode, Vec<bool>) {
    let none = |why: String| (ZoneMode::Off(why), vec![false; endpoints.len()]);
    if !enabled {
        return none("zone awareness disabled".into());
    }
    let Some(zone) = zone else {
        return none("this client's zone is unknown (DISCOVERY_ZONE, DISCOVERY_NODE_NAME)".into());
    };
    let hinted = endpoints.iter().filter(|e| e.zone_hints.is_some()).count();
    let (mode, local): (ZoneMode, Vec<bool>) = if hinted > 0 {
        if hinted < endpoints.len() {
            return none(format!("hints missing on {} of {} endpoints", endpoints.len() - hinted, endpoints.len()));
        }
        let local = endpoints.iter().map(|e| e.zone_hints.iter().flatten().any(|z| z == zone)).collect();
        (ZoneMode::Hints, local)
    } else if prefer_close {
        (ZoneMode::SameZone, endpoints.iter().map(|e| e.zone.as_deref() == Some(zone)).collect())
    } else {
        return none("the Service has no topology hints and no trafficDistribution: PreferClose".into());
    };
    if !local.contains(&true) {
        return none(format!("no routable endpoint for zone {zone}"));
    }
    (mode, local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn ep(last: u8, zone: &str, hints: Option<&[&str]>) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            zone: Some(zone.into()),
            zone_hints: hints.map(|h| h.iter().map(|z| (*z).to_owned()).collect()),
            ..Endpoint::new(SocketAddr::from(([10, 0, 0, last], 1)))
        })
    }

    fn run(zone: Option<&str>, eps: &[Arc<Endpoint>], prefer_close: bool) -> (ZoneMode, Vec<bool>) {
        let refs: Vec<&Arc<Endpoint>> = eps.iter().collect();
        classify(zone, &refs, prefer_close, true)
    }

    #[test]
    fn hints_choose_the_local_endpoints() {
        let eps = [ep(1, "a", Some(&["a"])), ep(2, "b", Some(&["b"])), ep(3, "b", Some(&["a", "b"]))];
        let (mode, local) = run(Some("a"), &eps, false);
        assert_eq!(mode, ZoneMode::Hints);
        assert_eq!(local, [true, false, true], "an endpoint hinted for two zones serves both");
    }

    #[test]
    fn prefer_close_without_hints_uses_the_endpoint_zone() {
        let eps = [ep(1, "a", None), ep(2, "b", None)];
        assert_eq!(run(Some("b"), &eps, true), (ZoneMode::SameZone, vec![false, true]));
        assert!(matches!(run(Some("b"), &eps, false).0, ZoneMode::Off(_)), "no hints, no PreferClose: all zones");
    }

    #[test]
    fn each_safeguard_turns_the_preference_off() {
        let partial = [ep(1, "a", Some(&["a"])), ep(2, "b", None)];
        assert!(matches!(run(Some("a"), &partial, true).0, ZoneMode::Off(w) if w.contains("hints missing")));
        let elsewhere = [ep(1, "b", Some(&["b"]))];
        assert!(
            matches!(run(Some("a"), &elsewhere, false).0, ZoneMode::Off(w) if w.contains("no routable endpoint for zone a"))
        );
        let eps = [ep(1, "a", Some(&["a"]))];
        assert!(matches!(run(None, &eps, true).0, ZoneMode::Off(w) if w.contains("unknown")));
        let refs: Vec<&Arc<Endpoint>> = eps.iter().collect();
        assert!(matches!(classify(Some("a"), &refs, true, false).0, ZoneMode::Off(w) if w.contains("disabled")));
        let (_, local) = run(None, &eps, true);
        assert_eq!(local, [false], "off means nothing is local");
    }
}
