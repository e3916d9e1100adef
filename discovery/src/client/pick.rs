//! Choosing an endpoint for one attempt: power of two choices by load (calls in flight divided by
//! weight), where a candidate is drawn uniformly and accepted with a probability equal to its
//! relative weight (SRV weight × slow-start ramp). Expected O(1) per pick with no allocation; a
//! bounded linear scan only when most candidates are excluded (tried in this call, or ejected).

use std::time::Instant;

use rand::Rng;

use crate::model::EndpointKey;

/// What a pick needs to know of an endpoint.
pub(crate) trait Candidate {
    fn key(&self) -> EndpointKey;
    /// Calls in flight.
    fn load(&self) -> usize;
    fn ejected(&self, now_ms: u64) -> bool;
    /// Relative weight in (0, 1]: SRV weight over the pool's largest, times the slow-start ramp.
    fn weight(&self, now: Instant) -> f64;
}

/// Draws before falling back to a scan.
const DRAWS: usize = 8;

/// The clock of one pick.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    pub now: Instant,
    pub now_ms: u64,
}

/// Picks among `list`, never one in `tried`; ejected ones only when nothing else is left.
pub(crate) fn pick<'a, C: Candidate>(
    list: &'a [C],
    tried: &[EndpointKey],
    clock: Clock,
    rng: &mut impl Rng,
) -> Option<&'a C> {
    let n = list.len();
    if n == 0 {
        return None;
    }
    let mut first: Option<(&C, f64)> = None;
    for _ in 0..DRAWS {
        let c = &list[rng.random_range(0..n)];
        if tried.contains(&c.key()) || c.ejected(clock.now_ms) {
            continue;
        }
        let w = c.weight(clock.now);
        if w < 1.0 && rng.random::<f64>() >= w {
            continue;
        }
        let load = c.load() as f64 / w;
        match first {
            None => first = Some((c, load)),
            Some((f, _)) if f.key() == c.key() => {}
            Some((f, fl)) => return Some(if load < fl { c } else { f }),
        }
    }
    if let Some((f, _)) = first {
        return Some(f);
    }
    scan(list, tried, clock)
}

/// The least loaded eligible candidate; ejected ones if nothing else is left (better a call to an
/// endpoint that failed recently than no call at all).
fn scan<'a, C: Candidate>(list: &'a [C], tried: &[EndpointKey], clock: Clock) -> Option<&'a C> {
    let mut best: Option<(&C, f64)> = None;
    let mut best_ejected: Option<(&C, f64)> = None;
    for c in list {
        if tried.contains(&c.key()) {
            continue;
        }
        let load = c.load() as f64 / c.weight(clock.now);
        let slot = if c.ejected(clock.now_ms) { &mut best_ejected } else { &mut best };
        if slot.is_none_or(|(_, l)| load < l) {
            *slot = Some((c, load));
        }
    }
    best.or(best_ejected).map(|(c, _)| c)
}

/// The slow-start factor of an endpoint added at `added` (`None`: not ramping): grows linearly from
/// `min` to 1 over `window`.
pub(crate) fn ramp(ramp_until: Option<Instant>, window: std::time::Duration, min: f64, now: Instant) -> f64 {
    match ramp_until {
        Some(until) if now < until && !window.is_zero() => {
            let left = until.duration_since(now).as_secs_f64() / window.as_secs_f64();
            (1.0 - left).max(min)
        }
        _ => 1.0,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    #[derive(Clone, Debug)]
    pub(crate) struct Fake {
        pub key: EndpointKey,
        pub load: usize,
        pub ejected: bool,
        pub weight: f64,
    }

    impl Candidate for Fake {
        fn key(&self) -> EndpointKey {
            self.key
        }
        fn load(&self) -> usize {
            self.load
        }
        fn ejected(&self, _: u64) -> bool {
            self.ejected
        }
        fn weight(&self, _: Instant) -> f64 {
            self.weight
        }
    }

    pub(crate) fn fake(i: u8) -> Fake {
        Fake { key: EndpointKey::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)), 1), load: 0, ejected: false, weight: 1.0 }
    }

    fn clock() -> Clock {
        Clock { now: Instant::now(), now_ms: 0 }
    }

    fn shares(list: &[Fake], n: usize) -> HashMap<u8, usize> {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut out = HashMap::new();
        for _ in 0..n {
            let c = pick(list, &[], clock(), &mut rng).expect("one");
            let last = match c.key.0.ip() {
                IpAddr::V4(v4) => v4.octets()[3],
                IpAddr::V6(_) => 0,
            };
            *out.entry(last).or_default() += 1;
        }
        out
    }

    #[test]
    fn picks_the_less_loaded_of_two() {
        let mut list: Vec<Fake> = (1..=2).map(fake).collect();
        list[0].load = 10;
        let got = shares(&list, 1000);
        assert!(got.get(&2).copied().unwrap_or(0) > 700, "{got:?}: the idle endpoint wins most pairs");
        let even: Vec<Fake> = (1..=4).map(fake).collect();
        let got = shares(&even, 4000);
        assert!(got.values().all(|n| (800..=1200).contains(n)), "equal loads spread evenly: {got:?}");
    }

    #[test]
    fn never_a_tried_endpoint_and_ejected_ones_last() {
        let list: Vec<Fake> = (1..=3).map(fake).collect();
        let mut rng = SmallRng::seed_from_u64(1);
        let tried = [list[0].key, list[1].key];
        for _ in 0..50 {
            assert_eq!(pick(&list, &tried, clock(), &mut rng).expect("one").key, list[2].key);
        }
        assert!(pick(&list, &[list[0].key, list[1].key, list[2].key], clock(), &mut rng).is_none());
        let mut list: Vec<Fake> = (1..=3).map(fake).collect();
        list[0].ejected = true;
        list[1].ejected = true;
        for _ in 0..50 {
            assert_eq!(pick(&list, &[], clock(), &mut rng).expect("one").key, list[2].key, "ejected are skipped");
        }
        list[2].ejected = true;
        assert!(pick(&list, &[], clock(), &mut rng).is_some(), "all ejected: still a call rather than none");
    }

    #[test]
    fn weights_set_the_share() {
        let mut list: Vec<Fake> = (1..=2).map(fake).collect();
        list[1].weight = 0.25;
        let got = shares(&list, 8000);
        let ratio = got[&2] as f64 / got[&1] as f64;
        assert!((0.15..=0.45).contains(&ratio), "a quarter weight gets about a quarter of the calls: {got:?}");
    }

    #[test]
    fn slow_start_ramps_linearly_from_the_minimum() {
        let window = Duration::from_secs(10);
        let t0 = Instant::now();
        let until = Some(t0 + window);
        assert_eq!(ramp(until, window, 0.1, t0), 0.1, "at first: the minimum share");
        assert!((ramp(until, window, 0.1, t0 + Duration::from_secs(5)) - 0.5).abs() < 1e-9);
        assert_eq!(ramp(until, window, 0.1, t0 + window), 1.0);
        assert_eq!(ramp(None, window, 0.1, t0), 1.0, "endpoints known at start do not ramp");
    }
}
