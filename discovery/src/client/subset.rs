//! Deterministic subsetting by rendezvous hashing: each client keeps the `size` endpoints that score
//! highest for its identity. Every client computes its own subset with no coordination; an
//! endpoint's expected share of clients is `size / endpoints`, and when one endpoint comes or goes a
//! client's subset changes by at most one member (only clients that rank it in their top `size`
//! notice at all), which is the least any even spread allows.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::model::EndpointKey;

/// A stable 64-bit hash (FNV-1a, then a SplitMix64 finaliser): the same on every machine and
/// release, unlike the standard library's hasher.
fn stable_hash(bytes: impl IntoIterator<Item = u8>, seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn key_bytes(key: &EndpointKey) -> impl Iterator<Item = u8> {
    let ip: Vec<u8> = match key.0.ip() {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    ip.into_iter().chain(key.0.port().to_be_bytes())
}

/// The subset of one client.
#[derive(Debug)]
pub(crate) struct Subset {
    seed: u64,
    size: usize,
    /// Every candidate, by score.
    ranked: BTreeSet<(u64, EndpointKey)>,
    scores: HashMap<EndpointKey, u64>,
    chosen: HashSet<EndpointKey>,
}

impl Subset {
    /// A subset of `size` (0: everything) for the client named `identity`.
    pub(crate) fn new(identity: &str, size: usize) -> Self {
        Subset {
            seed: stable_hash(identity.bytes(), 0),
            size,
            ranked: BTreeSet::new(),
            scores: HashMap::new(),
            chosen: HashSet::new(),
        }
    }

    /// A subset of `size` for a client with no stable identity: random per client.
    pub(crate) fn random(size: usize) -> Self {
        Subset { seed: rand::random(), ..Subset::new("", size) }
    }

    /// The same identity and size, with no candidates but the chosen ones remembered (so that the
    /// next rebalance reports only real changes).
    pub(crate) fn emptied(&self) -> Self {
        Subset { chosen: self.chosen.clone(), ..Subset::new("", self.size) }.with_seed(self.seed)
    }

    fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    fn score(&self, key: &EndpointKey) -> u64 {
        stable_hash(key_bytes(key), self.seed)
    }

    /// Adds a candidate.
    pub(crate) fn insert(&mut self, key: EndpointKey) {
        if self.scores.contains_key(&key) {
            return;
        }
        let s = self.score(&key);
        self.scores.insert(key, s);
        self.ranked.insert((s, key));
    }

    /// Removes a candidate.
    pub(crate) fn remove(&mut self, key: &EndpointKey) {
        if let Some(s) = self.scores.remove(key) {
            self.ranked.remove(&(s, *key));
        }
    }

    /// Recomputes the chosen set; returns `(entered, left)`. O(size), not O(candidates).
    pub(crate) fn rebalance(&mut self) -> (Vec<EndpointKey>, Vec<EndpointKey>) {
        let limit = if self.size == 0 { usize::MAX } else { self.size };
        let next: HashSet<EndpointKey> = self.ranked.iter().rev().take(limit).map(|(_, k)| *k).collect();
        let entered = next.iter().filter(|k| !self.chosen.contains(*k)).copied().collect();
        let left = self.chosen.iter().filter(|k| !next.contains(*k)).copied().collect();
        self.chosen = next;
        (entered, left)
    }

    /// Whether `key` is in the subset now.
    #[cfg(test)]
    pub(crate) fn contains(&self, key: &EndpointKey) -> bool {
        self.chosen.contains(key)
    }

    /// How many candidates there are.
    pub(crate) fn candidates(&self) -> usize {
        self.scores.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn key(i: u32) -> EndpointKey {
        EndpointKey::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 50051)
    }

    fn subsets(clients: usize, endpoints: u32, size: usize) -> Vec<Subset> {
        (0..clients)
            .map(|c| {
                let mut s = Subset::new(&format!("consumer-{c}"), size);
                for i in 0..endpoints {
                    s.insert(key(i));
                }
                s.rebalance();
                s
            })
            .collect()
    }

    #[test]
    fn a_small_service_is_used_whole() {
        let mut s = Subset::new("me", 100);
        for i in 0..40 {
            s.insert(key(i));
        }
        let (entered, left) = s.rebalance();
        assert_eq!((entered.len(), left.len()), (40, 0));
        let mut all = Subset::new("me", 0);
        for i in 0..500 {
            all.insert(key(i));
        }
        assert_eq!(all.rebalance().0.len(), 500, "size 0 disables subsetting");
    }

    #[test]
    fn spread_is_even_across_clients() {
        let (clients, endpoints, size) = (300, 1000u32, 100);
        let all = subsets(clients, endpoints, size);
        let mut per_endpoint = vec![0usize; endpoints as usize];
        for s in &all {
            assert_eq!(s.chosen.len(), size);
            for i in 0..endpoints {
                if s.contains(&key(i)) {
                    per_endpoint[i as usize] += 1;
                }
            }
        }
        let mean = clients * size / endpoints as usize; // 30
        let max = *per_endpoint.iter().max().expect("some");
        let min = *per_endpoint.iter().min().expect("some");
        assert!(max <= mean * 2 && min >= mean / 4, "clients per endpoint within [{min}, {max}] around {mean}");
        assert!(per_endpoint.iter().all(|n| *n > 0), "every endpoint serves some clients");
    }

    #[test]
    fn adding_or_removing_one_endpoint_moves_few_clients_by_one_member() {
        let (clients, endpoints, size) = (300, 1000u32, 100);
        let mut all = subsets(clients, endpoints, size);
        let mut moved = 0;
        for s in &mut all {
            s.insert(key(5000));
            let (entered, left) = s.rebalance();
            assert!(entered.len() <= 1 && left.len() <= 1, "at most one member swapped");
            if !entered.is_empty() {
                assert_eq!(entered, [key(5000)], "only the new endpoint enters");
                moved += 1;
            }
        }
        // Expected clients * size / endpoints = 30 take the new endpoint: that many must, for it
        // to get its fair share; no more.
        assert!((10..=60).contains(&moved), "{moved} of {clients} clients changed one member");
        let mut moved = 0;
        for s in &mut all {
            s.remove(&key(17));
            let (entered, left) = s.rebalance();
            assert!(entered.len() <= 1 && left.len() <= 1);
            moved += usize::from(!left.is_empty());
        }
        assert!(moved <= 60, "{moved} clients lost a member");
    }

    #[test]
    fn the_same_identity_gets_the_same_subset() {
        let a = subsets(1, 1000, 50).remove(0);
        let b = subsets(1, 1000, 50).remove(0);
        assert_eq!(a.chosen, b.chosen);
        // Pinned: subsets must not move when the toolchain or the machine changes.
        assert_eq!(stable_hash("consumer-1".bytes(), 0), 0x8b41_606d_1a1f_619a);
    }
}
