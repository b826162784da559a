//! Peer reputation: what a peer did wrong, remembered with decay, and the ban it earns.
//!
//! Every offence adds its weight to the peer's score; the score halves every `half_life`. A score
//! at or above `ban_threshold` bans the peer for `ban_base`, doubling with each ban (capped at
//! `ban_max`); a ban resets the score, so an offender that comes back gets one more chance before
//! the next, longer ban. Every offence also penalises the peer in the stream manager, which then
//! refuses its streams for the penalty cooldown whatever its id (the tie-break is for two clean
//! simultaneous opens only).
//!
//! Hand-rolled because what it decides is this protocol's policy (weights, the link to the stream
//! manager's cooldowns); the decaying score is a few lines (Lighthouse's peer manager keeps a
//! similar score for the same reason). Bounded: at most `max_tracked` peers; beyond it the entry with
//! the lowest score gives way, never a banned one unless all are.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{FieldError, check};

/// What a peer did (closed set: `peer_offences_total{offence}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Offence {
    /// A frame that does not decode, is oversize, or breaks the handshake.
    Malformed,
    /// An announce whose signature does not verify.
    BadAnnounce,
    /// The sync layer found its blocks invalid, misplaced or missing (a downloader penalty).
    SyncPenalty,
    /// Requests to it kept timing out (the request manager gave up on it).
    Unresponsive,
    /// It did not read our replies: its write queue stayed full past the grace.
    SlowReader,
    /// A frame in progress stalled past the read deadline.
    Stalled,
}

impl Offence {
    pub const ALL: [Offence; 6] = [
        Offence::Malformed,
        Offence::BadAnnounce,
        Offence::SyncPenalty,
        Offence::Unresponsive,
        Offence::SlowReader,
        Offence::Stalled,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Offence::Malformed => "malformed",
            Offence::BadAnnounce => "bad_announce",
            Offence::SyncPenalty => "sync_penalty",
            Offence::Unresponsive => "unresponsive",
            Offence::SlowReader => "slow_reader",
            Offence::Stalled => "stalled",
        }
    }

    /// Score added. Nothing an honest peer does by accident reaches a ban at once; three malformed
    /// frames or four bad announces within a half-life do. One offence per half-life, forever,
    /// converges to twice its weight: below the threshold for every kind.
    fn weight(self) -> f64 {
        match self {
            Offence::Malformed | Offence::SlowReader | Offence::Stalled => 45.0,
            Offence::SyncPenalty => 40.0,
            // 26, not 25: four must ban even after a few seconds of decay.
            Offence::BadAnnounce => 26.0,
            Offence::Unresponsive => 10.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReputationConfig {
    /// Score at which a peer is banned.
    pub ban_threshold: f64,
    /// The score halves every this long.
    #[serde(with = "crate::util::millis")]
    pub half_life: Duration,
    /// The first ban; each further one doubles.
    #[serde(with = "crate::util::millis")]
    pub ban_base: Duration,
    #[serde(with = "crate::util::millis")]
    pub ban_max: Duration,
    /// Peers remembered at most.
    pub max_tracked: usize,
}

impl Default for ReputationConfig {
    fn default() -> Self {
        ReputationConfig {
            ban_threshold: 100.0,
            half_life: Duration::from_secs(600),
            ban_base: Duration::from_secs(60),
            ban_max: Duration::from_secs(3600),
            max_tracked: 4096,
        }
    }
}

impl ReputationConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        check(
            !(self.ban_threshold > 0.0 && self.ban_threshold.is_finite()),
            "ban_threshold",
            "must be a positive number",
        )?;
        check(self.half_life.is_zero(), "half_life", "must be > 0")?;
        check(self.ban_base.is_zero(), "ban_base", "must be > 0")?;
        check(
            self.ban_max < self.ban_base,
            "ban_max",
            "must be at least ban_base",
        )?;
        check(self.max_tracked == 0, "max_tracked", "must be > 0")
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    score: f64,
    at: Instant,
    bans: u32,
    banned_until: Option<Instant>,
}

impl Entry {
    fn score_at(&self, now: Instant, half_life: Duration) -> f64 {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.score * 0.5f64.powf(dt / half_life.as_secs_f64())
    }
}

/// What an offence led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Penalised (the stream manager's penalty cooldown), not banned.
    Penalised,
    /// Banned until then: disconnect, refuse connections and streams.
    Banned(Instant),
}

/// Scores below this are forgotten. (Refusing a penalised peer's streams is the stream manager's
/// penalty cooldown, which is shorter; the score is what compounds into a ban.)
const FORGET_BELOW: f64 = 1.0;

pub struct Reputation<P> {
    cfg: ReputationConfig,
    peers: HashMap<P, Entry>,
}

impl<P: Copy + Eq + Hash> Reputation<P> {
    pub fn new(cfg: ReputationConfig) -> Self {
        Reputation {
            cfg,
            peers: HashMap::new(),
        }
    }

    pub fn offend(&mut self, peer: P, o: Offence, now: Instant) -> Verdict {
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.cfg.max_tracked {
            self.evict(now);
        }
        let hl = self.cfg.half_life;
        let e = self.peers.entry(peer).or_insert(Entry {
            score: 0.0,
            at: now,
            bans: 0,
            banned_until: None,
        });
        if let Some(until) = e.banned_until.filter(|u| *u > now) {
            // Already banned (offences in flight when the ban began): nothing more to decide.
            return Verdict::Banned(until);
        }
        e.score = e.score_at(now, hl) + o.weight();
        e.at = now;
        if e.score >= self.cfg.ban_threshold {
            e.bans = e.bans.saturating_add(1);
            let ban = self
                .cfg
                .ban_base
                .saturating_mul(1u32 << (e.bans - 1).min(20))
                .min(self.cfg.ban_max);
            let until = now + ban;
            e.banned_until = Some(until);
            e.score = 0.0;
            return Verdict::Banned(until);
        }
        Verdict::Penalised
    }

    pub fn banned_until(&self, peer: &P, now: Instant) -> Option<Instant> {
        self.peers
            .get(peer)
            .and_then(|e| e.banned_until)
            .filter(|u| *u > now)
    }

    pub fn is_banned(&self, peer: &P, now: Instant) -> bool {
        self.banned_until(peer, now).is_some()
    }

    /// The peer's decayed score now (0 when unknown).
    pub fn score(&self, peer: &P, now: Instant) -> f64 {
        self.peers
            .get(peer)
            .map_or(0.0, |e| e.score_at(now, self.cfg.half_life))
    }

    pub fn banned_count(&self, now: Instant) -> usize {
        self.peers
            .values()
            .filter(|e| e.banned_until.is_some_and(|u| u > now))
            .count()
    }

    pub fn tracked(&self) -> usize {
        self.peers.len()
    }

    /// Forgets peers with nothing left against them (no ban, score decayed away). Bans are
    /// remembered until their memory (a half-life after they end) runs out, so repeat offences
    /// compound.
    pub fn expire(&mut self, now: Instant) {
        let hl = self.cfg.half_life;
        self.peers.retain(|_, e| {
            let ban_remembered = e.banned_until.is_some_and(|u| u + hl > now);
            ban_remembered || e.score_at(now, hl) >= FORGET_BELOW
        });
    }

    fn evict(&mut self, now: Instant) {
        self.expire(now);
        if self.peers.len() < self.cfg.max_tracked {
            return;
        }
        let hl = self.cfg.half_life;
        let victim = self
            .peers
            .iter()
            .min_by(|a, b| {
                let key =
                    |e: &Entry| (e.banned_until.is_some_and(|u| u > now), e.score_at(now, hl));
                let (ka, kb) = (key(a.1), key(b.1));
                ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
            })
            .map(|(p, _)| *p);
        if let Some(p) = victim {
            self.peers.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep() -> Reputation<u32> {
        Reputation::new(ReputationConfig::default())
    }

    #[test]
    fn three_malformed_frames_ban_and_the_ban_ends() {
        let mut r = rep();
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(r.offend(1, Offence::Malformed, t0), Verdict::Penalised);
        }
        assert!(!r.is_banned(&1, t0));
        let v = r.offend(1, Offence::Malformed, t0 + Duration::from_secs(1));
        let until = t0 + Duration::from_secs(61);
        assert_eq!(v, Verdict::Banned(until));
        assert!(r.is_banned(&1, t0 + Duration::from_secs(60)));
        assert!(!r.is_banned(&1, until));
        assert!(!r.is_banned(&2, t0));
    }

    #[test]
    fn scores_decay_so_rare_offences_never_ban() {
        let mut r = rep();
        let mut t = Instant::now();
        for _ in 0..100 {
            assert_eq!(r.offend(7, Offence::Malformed, t), Verdict::Penalised);
            t += Duration::from_secs(600); // one half-life: converges to 90
        }
        assert!(r.score(&7, t) < 50.0);
    }

    #[test]
    fn repeated_bans_double_up_to_the_cap() {
        let mut r = rep();
        let mut t = Instant::now();
        let mut bans = vec![];
        for _ in 0..10 {
            r.offend(3, Offence::Malformed, t);
            r.offend(3, Offence::Malformed, t);
            match r.offend(3, Offence::Malformed, t) {
                Verdict::Banned(u) => {
                    bans.push((u - t).as_secs());
                    t = u;
                }
                v => panic!("{v:?}"),
            }
        }
        assert_eq!(&bans[..4], &[60, 120, 240, 480]);
        assert_eq!(*bans.last().unwrap(), 3600);
    }

    #[test]
    fn memory_is_capped_and_keeps_the_banned() {
        let mut r = Reputation::new(ReputationConfig {
            max_tracked: 4,
            ..ReputationConfig::default()
        });
        let t = Instant::now();
        for _ in 0..3 {
            r.offend(0, Offence::Malformed, t); // banned at the third
        }
        for p in 1..100 {
            r.offend(p, Offence::Unresponsive, t);
            assert!(r.tracked() <= 4);
        }
        assert!(r.is_banned(&0, t));
    }

    #[test]
    fn expire_forgets_the_forgiven() {
        let mut r = rep();
        let t = Instant::now();
        r.offend(1, Offence::Unresponsive, t);
        r.expire(t + Duration::from_secs(600 * 5)); // 10 / 32 < 1
        assert_eq!(r.tracked(), 0);
    }
}
