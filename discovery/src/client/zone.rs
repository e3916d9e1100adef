//! Locality: which endpoints a client prefers, in tiers, decided once per change of the pool (not
//! per call), with the safeguards kube-proxy applies to topology hints:
//!
//! - **node** (the Service says `trafficDistribution: PreferSameNode` and the client's node is
//!   known): the endpoints hinted for this node (`hints.forNodes`) when every endpoint carries node
//!   hints; the endpoints whose node is this one when none does; no node tier when only some do
//!   (the controller is mid-update);
//! - **zone**: the endpoints hinted for this zone (`hints.forZones`) when every endpoint carries
//!   zone hints (topology-aware Services); no zone tier when only some do; without hints, when the
//!   Service says `PreferSameZone` (or its older name `PreferClose`) or `PreferSameNode`, the
//!   endpoints whose zone is this one;
//! - a tier with no routable endpoint is skipped; no tier at all means no preference.
//!
//! Per call the tiers are tried in order; a call goes further when every endpoint of a tier is
//! ejected or already tried, or when the tier's pick is overloaded (see
//! [`crate::client::ClientOptions::zone_spill_in_flight`]).

use std::sync::Arc;

use serde::Serialize;

use crate::model::{Endpoint, TrafficDistribution};

/// How the pool prefers endpoints now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ZoneMode {
    /// All endpoints alike, and why.
    Off(String),
    /// Endpoints hinted for this zone.
    Hints,
    /// Endpoints in this zone (no hints; the Service prefers the same zone).
    SameZone,
    /// Endpoints hinted for this node first, then this zone's.
    NodeHints,
    /// Endpoints on this node first (no node hints), then this zone's.
    SameNode,
}

/// Where this client runs.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Here<'a> {
    pub zone: Option<&'a str>,
    pub node: Option<&'a str>,
}

/// The mode and the tiers: for each tier, best first, the indices of its endpoints.
pub(crate) fn classify(
    here: Here<'_>,
    endpoints: &[&Arc<Endpoint>],
    traffic: TrafficDistribution,
    enabled: bool,
) -> (ZoneMode, Vec<Vec<usize>>) {
    let none = |why: String| (ZoneMode::Off(why), Vec::new());
    if !enabled {
        return none("zone awareness disabled".into());
    }
    let (node_tier, node_mode) = match (traffic, here.node) {
        (TrafficDistribution::PreferSameNode, Some(node)) => node_tier(node, endpoints),
        _ => (Vec::new(), None),
    };
    let (zone_tier, zone_why) = match here.zone {
        Some(zone) => zone_tier(zone, endpoints, traffic),
        None => (Vec::new(), "this client's zone is unknown (DISCOVERY_ZONE, DISCOVERY_NODE_NAME)".to_owned()),
    };
    let mode = match (node_mode, zone_tier.is_empty()) {
        (Some(m), _) => m,
        (None, false) if endpoints.iter().any(|e| e.zone_hints.is_some()) => ZoneMode::Hints,
        (None, false) => ZoneMode::SameZone,
        (None, true) => return none(zone_why),
    };
    let tiers = [node_tier, zone_tier].into_iter().filter(|t| !t.is_empty()).collect();
    (mode, tiers)
}

fn node_tier(node: &str, endpoints: &[&Arc<Endpoint>]) -> (Vec<usize>, Option<ZoneMode>) {
    let hinted = endpoints.iter().filter(|e| e.node_hints.is_some()).count();
    let (tier, mode): (Vec<usize>, ZoneMode) = if hinted == endpoints.len() && hinted > 0 {
        let tier = (0..endpoints.len())
            .filter(|i| endpoints[*i].node_hints.as_deref().unwrap_or_default().iter().any(|n| &**n == node))
            .collect();
        (tier, ZoneMode::NodeHints)
    } else if hinted == 0 {
        let tier = (0..endpoints.len()).filter(|i| endpoints[*i].node.as_deref() == Some(node)).collect();
        (tier, ZoneMode::SameNode)
    } else {
        return (Vec::new(), None);
    };
    if tier.is_empty() { (tier, None) } else { (tier, Some(mode)) }
}

fn zone_tier(zone: &str, endpoints: &[&Arc<Endpoint>], traffic: TrafficDistribution) -> (Vec<usize>, String) {
    let hinted = endpoints.iter().filter(|e| e.zone_hints.is_some()).count();
    let tier: Vec<usize> = if hinted > 0 {
        if hinted < endpoints.len() {
            let why = format!("hints missing on {} of {} endpoints", endpoints.len() - hinted, endpoints.len());
            return (Vec::new(), why);
        }
        (0..endpoints.len())
            .filter(|i| endpoints[*i].zone_hints.as_deref().unwrap_or_default().iter().any(|z| &**z == zone))
            .collect()
    } else if traffic != TrafficDistribution::Any {
        (0..endpoints.len()).filter(|i| endpoints[*i].zone.as_deref() == Some(zone)).collect()
    } else {
        return (Vec::new(), "the Service has no topology hints and no trafficDistribution".to_owned());
    };
    if tier.is_empty() {
        return (tier, format!("no routable endpoint for zone {zone}"));
    }
    (tier, String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn ep(last: u8, zone: &str, hints: Option<&[&str]>) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            zone: Some(zone.into()),
            node: Some(format!("node-{last}").into()),
            zone_hints: hints.map(|h| h.iter().map(|z| std::sync::Arc::<str>::from(*z)).collect()),
            ..Endpoint::new(SocketAddr::from(([10, 0, 0, last], 1)))
        })
    }

    fn run(zone: Option<&str>, eps: &[Arc<Endpoint>], traffic: TrafficDistribution) -> (ZoneMode, Vec<Vec<usize>>) {
        run_at(Here { zone, node: None }, eps, traffic)
    }

    fn run_at(here: Here<'_>, eps: &[Arc<Endpoint>], traffic: TrafficDistribution) -> (ZoneMode, Vec<Vec<usize>>) {
        let refs: Vec<&Arc<Endpoint>> = eps.iter().collect();
        classify(here, &refs, traffic, true)
    }

    const CLOSE: TrafficDistribution = TrafficDistribution::PreferSameZone;
    const NODE: TrafficDistribution = TrafficDistribution::PreferSameNode;

    #[test]
    fn hints_choose_the_local_endpoints() {
        let eps = [ep(1, "a", Some(&["a"])), ep(2, "b", Some(&["b"])), ep(3, "b", Some(&["a", "b"]))];
        let (mode, tiers) = run(Some("a"), &eps, TrafficDistribution::Any);
        assert_eq!(mode, ZoneMode::Hints);
        assert_eq!(tiers, [vec![0, 2]], "an endpoint hinted for two zones serves both");
    }

    #[test]
    fn prefer_same_zone_without_hints_uses_the_endpoint_zone() {
        let eps = [ep(1, "a", None), ep(2, "b", None)];
        assert_eq!(run(Some("b"), &eps, CLOSE), (ZoneMode::SameZone, vec![vec![1]]));
        assert!(matches!(run(Some("b"), &eps, TrafficDistribution::Any).0, ZoneMode::Off(_)));
        assert_eq!(TrafficDistribution::parse(Some("PreferClose")), CLOSE);
        assert_eq!(TrafficDistribution::parse(Some("PreferSameZone")), CLOSE, "its name from 1.34");
        assert_eq!(TrafficDistribution::parse(Some("Whatever")), TrafficDistribution::Any);
    }

    #[test]
    fn prefer_same_node_goes_node_then_zone_then_any() {
        let eps = [ep(1, "a", None), ep(2, "a", None), ep(3, "b", None)];
        // On node-2 in zone a: node-2's endpoint, then zone a's.
        let (mode, tiers) = run_at(Here { zone: Some("a"), node: Some("node-2") }, &eps, NODE);
        assert_eq!((mode, tiers), (ZoneMode::SameNode, vec![vec![1], vec![0, 1]]));
        // On a node with no endpoint: zone a's only.
        let (mode, tiers) = run_at(Here { zone: Some("a"), node: Some("node-9") }, &eps, NODE);
        assert_eq!((mode, tiers), (ZoneMode::SameZone, vec![vec![0, 1]]));
        // Node unknown: the zone; zone unknown too: any.
        assert_eq!(run_at(Here { zone: Some("b"), node: None }, &eps, NODE).1, [vec![2]]);
        assert!(matches!(run_at(Here::default(), &eps, NODE).0, ZoneMode::Off(_)));
        // PreferSameZone ignores the node.
        assert_eq!(run_at(Here { zone: Some("a"), node: Some("node-2") }, &eps, CLOSE).1, [vec![0, 1]]);
    }

    #[test]
    fn node_hints_are_used_when_every_endpoint_has_them() {
        let hinted = |last: u8, zone: &str, nodes: &[&str]| {
            let mut e = (*ep(last, zone, None)).clone();
            e.node_hints = Some(nodes.iter().map(|n| std::sync::Arc::<str>::from(*n)).collect());
            Arc::new(e)
        };
        let eps = [hinted(1, "a", &["node-1", "node-7"]), hinted(2, "a", &["node-2"])];
        let (mode, tiers) = run_at(Here { zone: Some("a"), node: Some("node-7") }, &eps, NODE);
        assert_eq!((mode, tiers[0].clone()), (ZoneMode::NodeHints, vec![0]), "hinted for node-7");
        // Hints on some endpoints only: no node tier (the controller is mid-update).
        let partial = [hinted(1, "a", &["node-7"]), ep(2, "a", None)];
        let (mode, tiers) = run_at(Here { zone: Some("a"), node: Some("node-7") }, &partial, NODE);
        assert_eq!((mode, tiers), (ZoneMode::SameZone, vec![vec![0, 1]]));
    }

    #[test]
    fn each_safeguard_turns_the_preference_off() {
        let partial = [ep(1, "a", Some(&["a"])), ep(2, "b", None)];
        assert!(matches!(run(Some("a"), &partial, CLOSE).0, ZoneMode::Off(w) if w.contains("hints missing")));
        let elsewhere = [ep(1, "b", Some(&["b"]))];
        assert!(
            matches!(run(Some("a"), &elsewhere, TrafficDistribution::Any).0, ZoneMode::Off(w) if w.contains("no routable endpoint for zone a"))
        );
        let eps = [ep(1, "a", Some(&["a"]))];
        assert!(matches!(run(None, &eps, CLOSE).0, ZoneMode::Off(w) if w.contains("unknown")));
        let refs: Vec<&Arc<Endpoint>> = eps.iter().collect();
        assert!(
            matches!(classify(Here { zone: Some("a"), node: None }, &refs, CLOSE, false).0, ZoneMode::Off(w) if w.contains("disabled"))
        );
        assert!(run(None, &eps, CLOSE).1.is_empty(), "off means no tier");
    }
}
