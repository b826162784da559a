//! Connection admission: which connections a node keeps when peers it does not know fill its
//! slots. Lighthouse's peer manager does the same job with the same ideas: inbound and outbound
//! connections are counted apart (our own dials, bootnodes among them, have slots of their own that
//! inbound peers cannot take), an IP address may hold only so many inbound connections, and when
//! the inbound slots are full a newcomer takes the slot of the connection that has been idle (no
//! sync stream) longest, if one has been idle for the grace; otherwise the newcomer is refused.
//! So an honest newcomer always finds room unless every slot is in use.
//!
//! Pending connections (TCP accepted, handshake not done) are a separate, earlier pool
//! ([`PendingPool`]): capped, and when full the oldest is dropped for the newcomer.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{FieldError, check};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// Inbound connections kept at most.
    pub max_inbound: usize,
    /// Outbound connections (our dials) kept at most.
    pub max_outbound: usize,
    /// Inbound connections from one IP address at most.
    pub max_inbound_per_ip: usize,
    /// Inbound connections from one /24 (IPv4) or /64 (IPv6) at most.
    pub max_inbound_per_subnet: usize,
    /// Whether loopback addresses are subject to the per-IP and per-subnet caps (off by default:
    /// local test networks run every node on 127.0.0.1).
    pub limit_loopback: bool,
    /// A connection without a sync stream for this long may be evicted for a newcomer.
    #[serde(with = "crate::util::millis")]
    pub idle_evict_after: Duration,
    /// Connections in their handshake (TCP accepted, noise and yamux not done) at most; when full,
    /// the oldest is dropped for the newcomer.
    pub max_pending: usize,
    /// An inbound connection must finish its handshake within this.
    #[serde(with = "crate::util::millis")]
    pub pending_timeout: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            max_inbound: 80,
            max_outbound: 32,
            max_inbound_per_ip: 8,
            max_inbound_per_subnet: 32,
            limit_loopback: false,
            idle_evict_after: Duration::from_secs(10),
            max_pending: 64,
            pending_timeout: Duration::from_secs(5),
        }
    }
}

impl AdmissionConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        for (name, v) in [
            ("max_inbound", self.max_inbound),
            ("max_outbound", self.max_outbound),
            ("max_inbound_per_ip", self.max_inbound_per_ip),
            ("max_inbound_per_subnet", self.max_inbound_per_subnet),
            ("max_pending", self.max_pending),
        ] {
            check(v == 0, name, "must be > 0")?;
        }
        check(
            self.max_inbound_per_subnet < self.max_inbound_per_ip,
            "max_inbound_per_subnet",
            "must be at least max_inbound_per_ip",
        )?;
        check(
            self.idle_evict_after.is_zero(),
            "idle_evict_after",
            "must be > 0",
        )?;
        check(
            self.pending_timeout.is_zero(),
            "pending_timeout",
            "must be > 0",
        )
    }
}

/// Why a connection was refused on arrival or evicted (closed set: `connections_refused_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    InboundFull,
    OutboundFull,
    PerIp,
    PerSubnet,
    /// Idle, and its slot went to a newcomer.
    Evicted,
    /// Banned peer.
    Banned,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::InboundFull,
        Refusal::OutboundFull,
        Refusal::PerIp,
        Refusal::PerSubnet,
        Refusal::Evicted,
        Refusal::Banned,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::InboundFull => "inbound_full",
            Refusal::OutboundFull => "outbound_full",
            Refusal::PerIp => "per_ip",
            Refusal::PerSubnet => "per_subnet",
            Refusal::Evicted => "evicted",
            Refusal::Banned => "banned",
        }
    }
}

/// The subnet an address counts against: its /24 (IPv4) or /64 (IPv6).
pub fn subnet_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            IpAddr::from([o[0], o[1], o[2], 0])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
    }
}

/// What to do with a connection that just came up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admit<K> {
    Keep,
    /// Keep it, and close this idle one to make room.
    KeepEvicting(K),
    Refuse(Refusal),
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    inbound: bool,
    ip: Option<IpAddr>,
    /// When it came up, or last held a sync stream.
    idle_since: Instant,
    /// Holds a sync stream now.
    busy: bool,
}

/// The admitted connections, keyed by `K` (the driver's (peer, connection) pair). Bounded by the
/// caps it enforces.
pub struct Admission<K> {
    cfg: AdmissionConfig,
    conns: HashMap<K, Entry>,
}

impl<K: Copy + Eq + Hash + Ord> Admission<K> {
    pub fn new(cfg: AdmissionConfig) -> Self {
        Admission {
            cfg,
            conns: HashMap::new(),
        }
    }

    fn limited(&self, ip: Option<IpAddr>) -> Option<IpAddr> {
        ip.filter(|ip| self.cfg.limit_loopback || !ip.is_loopback())
    }

    /// A connection came up. `reserved` exempts it from the inbound caps (a bootnode or trusted
    /// peer dialling us).
    pub fn arrive(
        &mut self,
        key: K,
        inbound: bool,
        ip: Option<IpAddr>,
        reserved: bool,
        now: Instant,
    ) -> Admit<K> {
        let count = |f: &dyn Fn(&Entry) -> bool| self.conns.values().filter(|e| f(e)).count();
        if !inbound {
            if count(&|e| !e.inbound) >= self.cfg.max_outbound {
                return Admit::Refuse(Refusal::OutboundFull);
            }
            self.insert(key, false, ip, now);
            return Admit::Keep;
        }
        if !reserved && let Some(ip) = self.limited(ip) {
            if count(&|e| e.inbound && e.ip == Some(ip)) >= self.cfg.max_inbound_per_ip {
                return Admit::Refuse(Refusal::PerIp);
            }
            let net = subnet_of(ip);
            let in_net = count(&|e| e.inbound && e.ip.is_some_and(|i| subnet_of(i) == net));
            if in_net >= self.cfg.max_inbound_per_subnet {
                return Admit::Refuse(Refusal::PerSubnet);
            }
        }
        let mut decision = Admit::Keep;
        if count(&|e| e.inbound) >= self.cfg.max_inbound {
            match self.idlest(now) {
                Some(victim) => {
                    self.conns.remove(&victim);
                    decision = Admit::KeepEvicting(victim);
                }
                None if reserved => {}
                None => return Admit::Refuse(Refusal::InboundFull),
            }
        }
        self.insert(key, true, ip, now);
        decision
    }

    /// The inbound connection idle longest, if idle for the grace (ties: the lowest key, so the
    /// choice is deterministic).
    fn idlest(&self, now: Instant) -> Option<K> {
        let grace = self.cfg.idle_evict_after;
        self.conns
            .iter()
            .filter(|(_, e)| {
                e.inbound && !e.busy && now.saturating_duration_since(e.idle_since) >= grace
            })
            .min_by_key(|(k, e)| (e.idle_since, **k))
            .map(|(k, _)| *k)
    }

    fn insert(&mut self, key: K, inbound: bool, ip: Option<IpAddr>, now: Instant) {
        self.conns.insert(
            key,
            Entry {
                inbound,
                ip,
                idle_since: now,
                busy: false,
            },
        );
    }

    /// The connection closed.
    pub fn leave(&mut self, key: &K) {
        self.conns.remove(key);
    }

    /// Whether the connection holds a sync stream now: a busy one is never evicted, and its
    /// idleness starts over when it stops.
    pub fn set_busy(&mut self, key: &K, busy: bool, now: Instant) {
        if let Some(e) = self.conns.get_mut(key) {
            if e.busy && !busy {
                e.idle_since = now;
            }
            e.busy = busy;
        }
    }

    /// (inbound, outbound) connections admitted now.
    pub fn counts(&self) -> (usize, usize) {
        let inbound = self.conns.values().filter(|e| e.inbound).count();
        (inbound, self.conns.len() - inbound)
    }
}

/// Connections in their handshake: at most `cap`; a newcomer beyond it drops the oldest. 128 idle
/// TCP sockets (no crypto, no identity) once filled libp2p's pending cap and locked every new peer
/// out for as long as they stayed. Dropping the oldest lets an honest dialer, whose handshake takes
/// milliseconds, through unless `cap` newer sockets arrive within those milliseconds.
#[derive(Debug)]
pub struct PendingPool<H> {
    cap: usize,
    next: u64,
    live: VecDeque<(u64, H)>,
}

impl<H> PendingPool<H> {
    pub fn new(cap: usize) -> Self {
        PendingPool {
            cap: cap.max(1),
            next: 0,
            live: VecDeque::new(),
        }
    }

    /// Registers a new pending connection with its cancel handle; returns its ticket and the
    /// handle of the oldest one to cancel, if the pool was full.
    pub fn arrive(&mut self, handle: H) -> (u64, Option<H>) {
        let evicted = if self.live.len() >= self.cap {
            self.live.pop_front().map(|(_, h)| h)
        } else {
            None
        };
        let ticket = self.next;
        self.next += 1;
        self.live.push_back((ticket, handle));
        (ticket, evicted)
    }

    /// The connection finished its handshake, failed or was cancelled.
    pub fn leave(&mut self, ticket: u64) {
        if let Some(i) = self.live.iter().position(|(t, _)| *t == ticket) {
            self.live.remove(i);
        }
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AdmissionConfig {
        AdmissionConfig {
            max_inbound: 4,
            max_outbound: 2,
            max_inbound_per_ip: 2,
            max_inbound_per_subnet: 3,
            limit_loopback: true,
            ..AdmissionConfig::default()
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_newcomer_evicts_the_connection_idle_longest_once_past_the_grace() {
        let t0 = Instant::now();
        let mut a = Admission::new(cfg());
        for k in 1..=4u32 {
            let at = t0 + Duration::from_secs(u64::from(k));
            let addr = ip(&format!("10.0.{k}.1"));
            assert_eq!(a.arrive(k, true, addr, false, at), Admit::Keep);
        }
        a.set_busy(&1, true, t0);
        // Nobody idle for 10 s yet.
        let t = t0 + Duration::from_secs(11);
        assert_eq!(
            a.arrive(5, true, ip("10.0.5.1"), false, t),
            Admit::Refuse(Refusal::InboundFull)
        );
        // 2 and 3 are past the grace; 2 idles longest; 1 is busy.
        let t = t0 + Duration::from_secs(13);
        assert_eq!(
            a.arrive(5, true, ip("10.0.5.1"), false, t),
            Admit::KeepEvicting(2)
        );
        assert_eq!(a.counts(), (4, 0));
        // Our own dials have their own slots.
        assert_eq!(a.arrive(10, false, ip("10.1.0.1"), false, t), Admit::Keep);
        assert_eq!(a.arrive(11, false, ip("10.1.0.2"), false, t), Admit::Keep);
        assert_eq!(
            a.arrive(12, false, ip("10.1.0.3"), false, t),
            Admit::Refuse(Refusal::OutboundFull)
        );
        assert_eq!(a.counts(), (4, 2));
        // A reserved peer (bootnode) gets in even when nobody can be evicted.
        let full = t0 + Duration::from_secs(13);
        assert_eq!(
            a.arrive(20, true, ip("10.2.0.1"), true, full),
            Admit::KeepEvicting(3)
        );
        assert_eq!(a.arrive(21, true, ip("10.2.0.2"), true, full), Admit::Keep);
    }

    #[test]
    fn per_ip_and_per_subnet_caps_hold_and_loopback_is_exempt_by_default() {
        let t0 = Instant::now();
        let mut a = Admission::new(cfg());
        assert_eq!(a.arrive(1, true, ip("10.0.0.1"), false, t0), Admit::Keep);
        assert_eq!(a.arrive(2, true, ip("10.0.0.1"), false, t0), Admit::Keep);
        assert_eq!(
            a.arrive(3, true, ip("10.0.0.1"), false, t0),
            Admit::Refuse(Refusal::PerIp)
        );
        assert_eq!(a.arrive(3, true, ip("10.0.0.2"), false, t0), Admit::Keep);
        assert_eq!(
            a.arrive(4, true, ip("10.0.0.3"), false, t0),
            Admit::Refuse(Refusal::PerSubnet)
        );
        a.leave(&1);
        assert_eq!(a.arrive(4, true, ip("10.0.0.3"), false, t0), Admit::Keep);

        let mut a = Admission::new(AdmissionConfig {
            limit_loopback: false,
            ..cfg()
        });
        for k in 0..4 {
            assert_eq!(a.arrive(k, true, ip("127.0.0.1"), false, t0), Admit::Keep);
        }
    }

    #[test]
    fn a_connection_that_stops_streaming_idles_from_then() {
        let t0 = Instant::now();
        let mut a = Admission::new(AdmissionConfig {
            max_inbound: 1,
            ..cfg()
        });
        a.arrive(1, true, ip("10.0.0.1"), false, t0);
        a.set_busy(&1, true, t0);
        let t = t0 + Duration::from_secs(60);
        a.set_busy(&1, false, t);
        assert_eq!(
            a.arrive(2, true, ip("10.0.1.1"), false, t + Duration::from_secs(5)),
            Admit::Refuse(Refusal::InboundFull)
        );
        assert_eq!(
            a.arrive(2, true, ip("10.0.1.1"), false, t + Duration::from_secs(10)),
            Admit::KeepEvicting(1)
        );
    }

    #[test]
    fn the_pending_pool_drops_the_oldest_for_a_newcomer() {
        let mut p = PendingPool::new(2);
        assert_eq!(p.arrive('a'), (0, None));
        assert_eq!(p.arrive('b'), (1, None));
        assert_eq!(p.arrive('c'), (2, Some('a')));
        p.leave(1);
        assert_eq!(p.arrive('d'), (3, None));
        assert_eq!(p.len(), 2);
        p.leave(0); // already evicted: nothing
        assert_eq!(p.len(), 2);
    }
}
