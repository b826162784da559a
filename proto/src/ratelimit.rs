//! Server-side rate limiting of sync requests, weighted by cost (see [`crate::wire::Request::cost`]),
//! per peer and globally, on governor (GCRA). Over-limit requests are answered at once with
//! `RateLimited { retry_after_ms }` instead of being delayed: a slow reply would hold the peer's
//! stream slot and hide the limit from the client.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use crate::error::{FieldError, check};
use crate::wire::ErrorReply;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Cost units per second one peer may use (1 unit ≈ one block served).
    pub peer_cost_per_sec: u32,
    pub peer_burst: u32,
    /// Cost units per second for all peers together.
    pub global_cost_per_sec: u32,
    pub global_burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            peer_cost_per_sec: 20_000,
            peer_burst: 4_096,
            global_cost_per_sec: 100_000,
            global_burst: 16_384,
        }
    }
}

impl RateLimitConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        for (name, v) in [
            ("peer_cost_per_sec", self.peer_cost_per_sec),
            ("peer_burst", self.peer_burst),
            ("global_cost_per_sec", self.global_cost_per_sec),
            ("global_burst", self.global_burst),
        ] {
            check(v == 0, name, "must be > 0")?;
        }
        check(
            self.peer_burst > self.global_burst,
            "peer_burst",
            "must not exceed global_burst",
        )
    }
}

pub struct ServerLimiter<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    per_peer: RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<C::Instant>>,
    global: RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>,
    clock: C,
}

fn quota(per_sec: u32, burst: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(per_sec).expect("validated"))
        .allow_burst(NonZeroU32::new(burst).expect("validated"))
}

impl<K: Hash + Eq + Clone> ServerLimiter<K, DefaultClock> {
    pub fn new(cfg: &RateLimitConfig) -> Self {
        Self::with_clock(cfg, DefaultClock::default())
    }
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> ServerLimiter<K, C> {
    pub fn with_clock(cfg: &RateLimitConfig, clock: C) -> Self {
        ServerLimiter {
            per_peer: RateLimiter::dashmap_with_clock(
                quota(cfg.peer_cost_per_sec, cfg.peer_burst),
                clock.clone(),
            ),
            global: RateLimiter::direct_with_clock(
                quota(cfg.global_cost_per_sec, cfg.global_burst),
                clock.clone(),
            ),
            clock,
        }
    }

    /// Admits a request of `cost` from `peer`, or says when to retry. A cost larger than the peer's
    /// burst can never pass and is `TooLarge`. The peer's own budget is checked first, so a flooding
    /// peer is refused before it can drain the global budget.
    pub fn check(&self, peer: &K, cost: u32) -> Result<(), ErrorReply> {
        let n = NonZeroU32::new(cost.max(1)).expect("max(1)");
        let retry = |d: Duration| ErrorReply::RateLimited {
            retry_after_ms: (d.as_millis() as u32).max(1),
        };
        match self.per_peer.check_key_n(peer, n) {
            Err(_) => return Err(ErrorReply::TooLarge),
            Ok(Err(not_until)) => return Err(retry(not_until.wait_time_from(self.clock.now()))),
            Ok(Ok(())) => {}
        }
        match self.global.check_n(n) {
            Err(_) => Err(ErrorReply::TooLarge),
            Ok(Err(not_until)) => Err(retry(not_until.wait_time_from(self.clock.now()))),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Drops the state of peers that have been idle long enough to be indistinguishable from new
    /// ones. Call periodically, or the per-peer table grows with every peer ever seen.
    pub fn prune(&self) {
        self.per_peer.retain_recent();
        self.per_peer.shrink_to_fit();
    }

    pub fn tracked_peers(&self) -> usize {
        self.per_peer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limiter() -> (ServerLimiter<u32, FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let cfg = RateLimitConfig {
            peer_cost_per_sec: 100,
            peer_burst: 50,
            global_cost_per_sec: 150,
            global_burst: 80,
        };
        (ServerLimiter::with_clock(&cfg, clock.clone()), clock)
    }

    #[test]
    fn over_limit_gets_retry_after_and_recovers() {
        let (l, clock) = limiter();
        assert_eq!(l.check(&1, 50), Ok(()));
        let Err(ErrorReply::RateLimited { retry_after_ms }) = l.check(&1, 10) else {
            panic!("expected RateLimited");
        };
        // 10 units at 100/s: 100 ms.
        assert!((90..=110).contains(&retry_after_ms), "{retry_after_ms}");
        clock.advance(Duration::from_millis(retry_after_ms as u64));
        assert_eq!(l.check(&1, 10), Ok(()));
    }

    #[test]
    fn cost_beyond_burst_is_too_large() {
        let (l, _) = limiter();
        assert_eq!(l.check(&1, 51), Err(ErrorReply::TooLarge));
    }

    #[test]
    fn one_flooding_peer_does_not_starve_another() {
        let (l, _) = limiter();
        let mut refused = 0;
        for _ in 0..100 {
            if l.check(&1, 5).is_err() {
                refused += 1;
            }
        }
        assert_eq!(refused, 90); // burst 50 = 10 requests of 5
        // Global burst 80 - 50 used = 30 left for peer 2.
        assert_eq!(l.check(&2, 30), Ok(()));
    }

    #[test]
    fn pruning_forgets_idle_peers() {
        let (l, clock) = limiter();
        for p in 0..100 {
            let _ = l.check(&p, 1);
        }
        assert_eq!(l.tracked_peers(), 100);
        clock.advance(Duration::from_secs(5));
        l.prune();
        assert_eq!(l.tracked_peers(), 0);
    }
}
