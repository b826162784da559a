//! Dial manager: the only place that decides to dial. Sans-IO: per-peer address book (bounded),
//! one dial in flight per peer, bounded dials overall, exponential per-peer backoff after failures,
//! and a bounded set of peers never to dial (other networks).

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct DialConfig {
    pub max_in_flight: usize,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub max_peers: usize,
    pub max_addrs_per_peer: usize,
}

impl Default for DialConfig {
    fn default() -> Self {
        DialConfig {
            max_in_flight: 8,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(120),
            max_peers: 1024,
            max_addrs_per_peer: 4,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DialDecision<A> {
    /// Dial these addresses; empty = dial by peer id and let the behaviours (kad) supply them.
    Dial(Vec<A>),
    AlreadyDialing,
    Backoff(Instant),
    TooMany,
    Blocked,
}

impl<A> DialDecision<A> {
    /// The decision's `dials_total{outcome}`.
    pub fn outcome(&self) -> DialOutcome {
        match self {
            DialDecision::Dial(_) => DialOutcome::Started,
            DialDecision::AlreadyDialing => DialOutcome::AlreadyDialing,
            DialDecision::Backoff(_) => DialOutcome::Backoff,
            DialDecision::TooMany => DialOutcome::TooMany,
            DialDecision::Blocked => DialOutcome::Blocked,
        }
    }
}

crate::label_enum! {
    /// `dials_total{outcome}`: a dial decision, then how a started dial ended.
    pub enum DialOutcome {
        Started => "started",
        AlreadyDialing => "already_dialing",
        Backoff => "backoff",
        TooMany => "too_many",
        Blocked => "blocked",
        Connected => "connected",
        Failed => "failed",
    }
}

#[derive(Debug)]
struct Backoff {
    until: Instant,
    failures: u32,
}

pub struct DialManager<P, A> {
    cfg: DialConfig,
    addrs: HashMap<P, VecDeque<A>>,
    order: VecDeque<P>,
    in_flight: HashSet<P>,
    backoff: HashMap<P, Backoff>,
    blocked: HashSet<P>,
    blocked_order: VecDeque<P>,
}

impl<P: Clone + Eq + Hash, A: Clone + PartialEq> DialManager<P, A> {
    pub fn new(cfg: DialConfig) -> Self {
        DialManager {
            cfg,
            addrs: HashMap::new(),
            order: VecDeque::new(),
            in_flight: HashSet::new(),
            backoff: HashMap::new(),
            blocked: HashSet::new(),
            blocked_order: VecDeque::new(),
        }
    }

    /// Remembers an address of `peer` (most recent first, bounded).
    pub fn add_address(&mut self, peer: P, addr: A) {
        if !self.addrs.contains_key(&peer) {
            if self.addrs.len() >= self.cfg.max_peers
                && let Some(old) = self.order.pop_front()
            {
                self.addrs.remove(&old);
            }
            self.order.push_back(peer.clone());
        }
        let list = self.addrs.entry(peer).or_default();
        list.retain(|a| *a != addr);
        list.push_front(addr);
        list.truncate(self.cfg.max_addrs_per_peer);
    }

    pub fn addresses(&self, peer: &P) -> Vec<A> {
        self.addrs
            .get(peer)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn is_dialing(&self, peer: &P) -> bool {
        self.in_flight.contains(peer)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub fn tracked_peers(&self) -> usize {
        self.addrs.len()
    }

    /// Never dial this peer again (it belongs to another network).
    pub fn block(&mut self, peer: P) {
        if self.blocked.insert(peer.clone()) {
            self.blocked_order.push_back(peer.clone());
            if self.blocked_order.len() > self.cfg.max_peers
                && let Some(old) = self.blocked_order.pop_front()
            {
                self.blocked.remove(&old);
            }
        }
        self.addrs.remove(&peer);
    }

    pub fn is_blocked(&self, peer: &P) -> bool {
        self.blocked.contains(peer)
    }

    /// Should we dial `peer` now? On `Dial`, the dial counts as in flight until `on_result`.
    pub fn request(&mut self, peer: &P, now: Instant) -> DialDecision<A> {
        if self.blocked.contains(peer) {
            return DialDecision::Blocked;
        }
        if self.in_flight.contains(peer) {
            return DialDecision::AlreadyDialing;
        }
        if let Some(b) = self.backoff.get(peer)
            && b.until > now
        {
            return DialDecision::Backoff(b.until);
        }
        if self.in_flight.len() >= self.cfg.max_in_flight {
            return DialDecision::TooMany;
        }
        self.in_flight.insert(peer.clone());
        DialDecision::Dial(self.addresses(peer))
    }

    /// A connection to `peer` came up (either direction): clears its backoff.
    pub fn on_connected(&mut self, peer: &P) {
        self.in_flight.remove(peer);
        self.backoff.remove(peer);
    }

    /// Our dial to `peer` failed.
    pub fn on_failed(&mut self, peer: &P, now: Instant) {
        self.in_flight.remove(peer);
        let failures = self
            .backoff
            .get(peer)
            .map_or(1, |b| b.failures.saturating_add(1));
        let d = self
            .cfg
            .backoff_base
            .saturating_mul(1u32 << (failures - 1).min(16))
            .min(self.cfg.backoff_max);
        if self.backoff.len() >= self.cfg.max_peers {
            self.backoff.retain(|_, b| b.until > now);
        }
        if self.backoff.len() < self.cfg.max_peers {
            self.backoff.insert(
                peer.clone(),
                Backoff {
                    until: now + d,
                    failures,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_dial_per_peer_with_backoff_after_failure() {
        let t = Instant::now();
        let mut d = DialManager::<u32, &str>::new(DialConfig::default());
        // No address known: dial by peer id (kad knows addresses the book does not).
        assert_eq!(d.request(&2, t), DialDecision::Dial(vec![]));
        d.add_address(1, "a");
        d.add_address(1, "b");
        assert_eq!(d.request(&1, t), DialDecision::Dial(vec!["b", "a"]));
        assert_eq!(d.request(&1, t), DialDecision::AlreadyDialing);
        d.on_failed(&1, t);
        assert_eq!(
            d.request(&1, t),
            DialDecision::Backoff(t + Duration::from_secs(1))
        );
        assert!(matches!(
            d.request(&1, t + Duration::from_secs(1)),
            DialDecision::Dial(_)
        ));
        d.on_failed(&1, t + Duration::from_secs(1));
        assert_eq!(
            d.request(&1, t + Duration::from_secs(2)),
            DialDecision::Backoff(t + Duration::from_secs(3))
        );
        d.on_connected(&1);
        assert!(matches!(
            d.request(&1, t + Duration::from_secs(2)),
            DialDecision::Dial(_)
        ));
    }

    #[test]
    fn bounded_everywhere() {
        let t = Instant::now();
        let cfg = DialConfig {
            max_in_flight: 2,
            max_peers: 3,
            max_addrs_per_peer: 2,
            ..Default::default()
        };
        let mut d = DialManager::<u32, u32>::new(cfg);
        for p in 0..10 {
            for a in 0..5 {
                d.add_address(p, a);
            }
        }
        assert_eq!(d.tracked_peers(), 3);
        assert_eq!(d.addresses(&9), vec![4, 3]);
        assert!(matches!(d.request(&9, t), DialDecision::Dial(_)));
        assert!(matches!(d.request(&8, t), DialDecision::Dial(_)));
        assert_eq!(d.request(&7, t), DialDecision::TooMany);
        d.block(9);
        assert_eq!(d.request(&9, t), DialDecision::Blocked);
    }
}
