//! Stream manager: decides which peers we hold a sync stream with, when to discover, and when to
//! back off. Sans-IO: the driver feeds [`Event`]s with the current time and executes [`Action`]s;
//! [`StreamManager::poll_timeout`] says when to call back with [`Event::Tick`].
//!
//! What makes the original storm (both peers opening at once, every failure triggering discovery)
//! impossible here:
//! - a peer opens a sync stream only while it is below `soft_low` (inbound streams are accepted up to
//!   `high`); when both peers open at once, the stream the lower id opened survives and the other is
//!   reset — the same decision on both sides, so exactly one stream remains;
//! - discovery runs on a timer only, never as a reaction to a removal; an unproductive round doubles
//!   the interval (with jitter) up to a cap;
//! - a peer whose setup failed is not tried again for `failed_peer_ttl`;
//! - a removed peer gets a cooldown that doubles with repeated removals, up to a cap; a lost
//!   connection (the peer restarted, or the link was cut) forgives all but penalties, down to
//!   the base period;
//! - setups in flight are bounded.
//!
//! What makes a network cut off from new blocks impossible (found by stressnet: with 5% of served
//! requests resetting the stream, every node's compounded cooldown shut the producer out for
//! minutes while the nodes, each with enough streams to each other, heard of nothing new):
//! - while the driver reports the local head *stale* (no progress for `stale_after`), the manager
//!   wants streams up to `high` and runs discovery as if below `soft_low`;
//! - while stale or below `hard_low`, every cooldown is capped at `removal_cooldown_base`, for
//!   outbound and inbound setups alike; below `soft_low`, for inbound setups. Storms stay bounded:
//!   at most one setup per peer per base period, `max_concurrent_setups` at a time.
//!
//! `storm_canary` switches all of that off on purpose, so stressnet can prove it detects the storm.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

pub type StreamId = u64;

/// Storm canary only: the delay that stands in for the original discovery RPC's latency.
pub const STORM_REDISCOVERY: Duration = Duration::from_millis(100);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<P> {
    /// Time passed; call at [`StreamManager::poll_timeout`] at the latest.
    Tick,
    /// A discovery mechanism (kad, identify, bootnodes) found a peer.
    Discovered(P),
    /// The discovery round the manager asked for is over.
    DiscoveryFinished,
    /// The first connection to the peer is up.
    Connected(P),
    /// The last connection to the peer is gone.
    Disconnected(P),
    DialFailed(P),
    /// Our outbound stream is open and its handshake succeeded.
    OutboundReady(P, StreamId),
    /// Our outbound stream could not be opened or its handshake failed.
    OutboundFailed(P),
    /// The peer opened a stream to us and its handshake succeeded.
    InboundReady(P, StreamId),
    /// An established stream ended (error, reset, EOF).
    StreamClosed(P, StreamId, RemovalReason),
    /// A request was served or answered on the peer's stream: it is in use, not idle.
    Useful(P),
    /// The peer misbehaved without holding a stream (a malformed handshake, a bad announce): it
    /// gets the penalty cooldown a penalised stream would. With a stream, close it as
    /// [`RemovalReason::Penalised`] instead.
    Penalised(P),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<P> {
    Discover,
    Dial(P),
    OpenStream(P),
    /// Hand the stream to the sync layer.
    Use(P, StreamId),
    /// Reset a stream that is not (or no longer) wanted.
    Reset(P, StreamId, ResetReason),
    /// For metrics and logs only.
    Report(Report),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Report {
    SetupStarted,
    SetupSucceeded,
    SetupFailed(SetupFailure),
    Removed(RemovalReason),
    DiscoveryRound {
        productive: bool,
    },
    PeerFound,
    /// A discovery round that only a fault made happen (`faults_injected_total{kind}`).
    Injected(InjectedRound),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InjectedRound {
    /// Forced discovery while the stream count needed none.
    ForcedDiscovery,
    /// A round under the storm canary (no backoff, immediate rediscovery).
    StormCanary,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetupFailure {
    Dial,
    Open,
    Timeout,
    Disconnected,
    /// The stream came up but was reset at once (duplicate, full, cooldown, storm conflict).
    Refused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RemovalReason {
    /// Stream error, reset by the peer, or EOF.
    StreamError,
    Disconnected,
    /// Replaced or killed by a conflicting stream.
    Conflict,
    /// The sync layer dropped the peer (bad data, penalty).
    Penalised,
    /// Idle while another peer wanted its slot.
    Evicted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResetReason {
    Full,
    Duplicate,
    Cooldown,
    /// Storm canary: a simultaneous open killed both streams.
    Conflict,
    /// The peer is under a penalty cooldown: refused whatever its id.
    Penalised,
    /// Idle, and its slot went to a newcomer.
    Evicted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Dialing,
    Opening,
}

#[derive(Clone, Copy, Debug)]
struct Setup {
    stage: Stage,
    deadline: Instant,
}

#[derive(Clone, Copy, Debug)]
struct Cooldown {
    until: Instant,
    removals: u32,
    last: Instant,
    /// A penalty is among the remembered removals: a lost connection does not forgive it.
    penalised: bool,
}

#[derive(Clone, Copy, Debug)]
struct Established {
    id: StreamId,
    opened_by_us: bool,
    /// Established, or last useful (a request served or answered on it).
    last_useful: Instant,
}

#[derive(Debug)]
struct Discovery {
    running: bool,
    round_deadline: Instant,
    round_new: usize,
    next_at: Instant,
    backoff: Duration,
}

/// Snapshot of the manager's state for metrics and `/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StreamStats {
    pub streams: usize,
    pub setups_in_flight: usize,
    pub candidates: usize,
    pub failed_cached: usize,
    pub cooldowns_active: usize,
    pub discovery_running: bool,
    pub discovery_backoff_ms: u64,
}

pub struct StreamManager<P> {
    cfg: StreamConfig,
    local: P,
    rng: SmallRng,
    streams: HashMap<P, Established>,
    setups: HashMap<P, Setup>,
    connected: HashSet<P>,
    candidates: VecDeque<P>,
    failed: HashMap<P, Instant>,
    cooldown: HashMap<P, Cooldown>,
    /// Storm canary: our outbound open that must die when it lands, because an inbound one collided.
    doomed: HashSet<P>,
    discovery: Discovery,
    actions: VecDeque<Action<P>>,
    /// The local head has not moved for `stale_after` (reported by the driver).
    stale: bool,
    /// The time of the last [`StreamManager::handle`]: everything due by then has been acted on.
    handled_at: Instant,
}

impl<P: Clone + Eq + Hash + Ord + std::fmt::Debug> StreamManager<P> {
    pub fn new(cfg: StreamConfig, local: P, seed: u64, now: Instant) -> Self {
        let backoff = cfg.discovery_interval;
        StreamManager {
            cfg,
            local,
            rng: SmallRng::seed_from_u64(seed),
            streams: HashMap::new(),
            setups: HashMap::new(),
            connected: HashSet::new(),
            candidates: VecDeque::new(),
            failed: HashMap::new(),
            cooldown: HashMap::new(),
            doomed: HashSet::new(),
            // First round right away: a fresh node has nobody.
            discovery: Discovery {
                running: false,
                round_deadline: now,
                round_new: 0,
                next_at: now,
                backoff,
            },
            actions: VecDeque::new(),
            stale: false,
            handled_at: now,
        }
    }

    pub fn config(&self) -> &StreamConfig {
        &self.cfg
    }

    /// Runtime switch (fault injection).
    pub fn set_forced_discovery(&mut self, period: Option<Duration>, now: Instant) {
        self.cfg.forced_discovery = period;
        if let Some(p) = period {
            self.discovery.next_at = self.discovery.next_at.min(now + p);
        }
    }

    pub fn set_storm_canary(&mut self, on: bool) {
        self.cfg.storm_canary = on;
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    pub fn streams(&self) -> impl Iterator<Item = (&P, StreamId)> {
        self.streams.iter().map(|(p, e)| (p, e.id))
    }

    pub fn ready_for_sync(&self) -> bool {
        self.streams.len() >= self.cfg.hard_low.max(1)
    }

    pub fn stats(&self, now: Instant) -> StreamStats {
        StreamStats {
            streams: self.streams.len(),
            setups_in_flight: self.setups.len(),
            candidates: self.candidates.len(),
            failed_cached: self.failed.len(),
            cooldowns_active: self.cooldown.values().filter(|c| c.until > now).count(),
            discovery_running: self.discovery.running,
            discovery_backoff_ms: self.discovery.backoff.as_millis() as u64,
        }
    }

    pub fn poll_action(&mut self) -> Option<Action<P>> {
        self.actions.pop_front()
    }

    /// The next instant at which a [`Event::Tick`] may change something.
    ///
    /// Only deadlines after the last `handle` count: what was due by then has been acted on, and a
    /// deadline that has passed without changing anything (an ended cooldown kept for
    /// `removal_memory`, a candidate still in its failed TTL) would wake the driver at once, again
    /// and again — the busy loop the canary controls showed below `soft_low`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let after = self.handled_at;
        let mut consider = |x: Instant| {
            if x > after {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        if self.discovery.running {
            consider(self.discovery.round_deadline);
        } else if self.wants_discovery() {
            consider(self.discovery.next_at);
        }
        for s in self.setups.values() {
            consider(s.deadline);
        }
        // Expiries that can unblock a setup.
        if self.streams.len() < self.target() && !self.candidates.is_empty() {
            for x in self.failed.values() {
                consider(*x);
            }
            for p in self.cooldown.keys() {
                if let Some(u) = self.cooldown_until(p) {
                    consider(u);
                }
            }
        }
        t
    }

    fn wants_discovery(&self) -> bool {
        self.cfg.forced_discovery.is_some() || self.streams.len() < self.target()
    }

    /// How many streams we try to hold: `soft_low`, or `high` while the head is stale.
    fn target(&self) -> usize {
        if self.stale {
            self.cfg.high
        } else {
            self.cfg.soft_low
        }
    }

    /// The driver's report: the local head has (not) moved for `stale_after`. Turning stale
    /// brings the next discovery round forward to now (once per turn, so at most once per
    /// `stale_after`), past any backoff.
    pub fn set_stale(&mut self, stale: bool, now: Instant) {
        if stale && !self.stale {
            self.discovery.next_at = self.discovery.next_at.min(now);
        }
        self.stale = stale;
    }

    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// Stale, or below `hard_low`: cut off from what is new, or nearly.
    fn starving(&self) -> bool {
        self.stale || self.streams.len() < self.cfg.hard_low
    }

    /// When `p`'s cooldown ends: while starving, no later than the base period after its last
    /// removal (a node cut off from the producer must reach it even if it reset streams often).
    fn cooldown_until(&self, p: &P) -> Option<Instant> {
        self.cooldown_ends(p, self.starving())
    }

    /// When `p`'s cooldown ends, `capped` at the base period after its last removal.
    fn cooldown_ends(&self, p: &P, capped: bool) -> Option<Instant> {
        self.cooldown.get(p).map(|c| {
            if capped {
                c.until.min(c.last + self.cfg.removal_cooldown_base)
            } else {
                c.until
            }
        })
    }

    fn cooling(&self, p: &P, now: Instant) -> bool {
        self.cooldown_until(p).is_some_and(|u| u > now)
    }

    /// Whether an inbound setup from `p` is refused for its cooldown. Below `soft_low` the
    /// cooldown is capped at the base period as when starving: a node short of streams that
    /// refuses peers who want to sync from it can cut the network off from it. Found in a
    /// soak-s3 run: the producer held 2 streams (hard_low, so not starving), both to a region
    /// that had just been partitioned off; every other node, stale, asked it for a stream once a
    /// base period and was refused for its compounded cooldown (5% of served requests reset the
    /// stream), and no node but the producer moved for 50 s. The peer's own cooldown and the
    /// setup bounds still limit how often it asks.
    fn inbound_cooling(&self, p: &P, now: Instant) -> bool {
        let capped = self.starving() || self.streams.len() < self.cfg.soft_low;
        self.cooldown_ends(p, capped).is_some_and(|u| u > now)
    }

    /// Whether `p`'s cooldown holds a penalty and is running (capped as for inbound setups: the
    /// reputation's bans are what keep a repeat offender out for long).
    fn under_penalty(&self, p: &P, now: Instant) -> bool {
        self.cooldown.get(p).is_some_and(|c| c.penalised) && self.inbound_cooling(p, now)
    }

    /// Whether the stream `opener` opened wins a tie against the other one (the lower id's wins).
    fn opened_by_lower(&self, peer: &P, opened_by_us: bool) -> bool {
        if opened_by_us {
            self.local < *peer
        } else {
            *peer < self.local
        }
    }

    pub fn handle(&mut self, event: Event<P>, now: Instant) {
        match event {
            Event::Tick => {}
            Event::Discovered(p) => self.on_discovered(p),
            Event::DiscoveryFinished => self.finish_round(now),
            Event::Connected(p) => self.on_connected(p),
            Event::Disconnected(p) => self.on_disconnected(p, now),
            Event::DialFailed(p) => {
                if self
                    .setups
                    .get(&p)
                    .is_some_and(|s| s.stage == Stage::Dialing)
                {
                    self.setup_failed(p, SetupFailure::Dial, now);
                }
            }
            Event::OutboundReady(p, id) => self.on_outbound_ready(p, id, now),
            Event::OutboundFailed(p) => {
                self.doomed.remove(&p);
                if self
                    .setups
                    .get(&p)
                    .is_some_and(|s| s.stage == Stage::Opening)
                {
                    self.setup_failed(p, SetupFailure::Open, now);
                }
            }
            Event::InboundReady(p, id) => self.on_inbound_ready(p, id, now),
            Event::StreamClosed(p, id, reason) => {
                if self.streams.get(&p).is_some_and(|e| e.id == id) {
                    self.remove(p, reason, now);
                }
            }
            Event::Useful(p) => {
                if let Some(e) = self.streams.get_mut(&p) {
                    e.last_useful = now;
                }
            }
            Event::Penalised(p) => {
                if self.streams.contains_key(&p) {
                    self.remove(p, RemovalReason::Penalised, now);
                } else {
                    self.removal_side_effects(p, true, now);
                }
            }
        }
        self.drive(now);
        self.handled_at = self.handled_at.max(now);
    }

    fn on_discovered(&mut self, p: P) {
        if p == self.local {
            return;
        }
        // Storm canary: like the original code, a discovered peer is set up again even when a
        // stream exists, which is what made both ends send INIT.
        let streamed = self.streams.contains_key(&p) && !self.cfg.storm_canary;
        let known = streamed || self.setups.contains_key(&p) || self.candidates.contains(&p);
        if known {
            return;
        }
        if self.discovery.running && !self.failed.contains_key(&p) {
            self.discovery.round_new += 1;
        }
        if self.candidates.len() >= self.cfg.max_tracked_peers {
            self.candidates.pop_front();
        }
        self.candidates.push_back(p);
        self.actions.push_back(Action::Report(Report::PeerFound));
    }

    fn on_connected(&mut self, p: P) {
        if self.connected.len() < self.cfg.max_tracked_peers * 2 {
            self.connected.insert(p.clone());
        }
        match self.setups.get_mut(&p) {
            Some(s) if s.stage == Stage::Dialing => {
                s.stage = Stage::Opening;
                self.actions.push_back(Action::OpenStream(p));
            }
            Some(_) => {}
            None => {
                // A connection someone else made (kad, the peer): a candidate if we need streams.
                if !self.streams.contains_key(&p) || self.cfg.storm_canary {
                    self.on_discovered(p);
                }
            }
        }
    }

    fn on_disconnected(&mut self, p: P, now: Instant) {
        self.connected.remove(&p);
        self.forgive(&p);
        if self.streams.contains_key(&p) {
            self.remove(p.clone(), RemovalReason::Disconnected, now);
        }
        if self.setups.contains_key(&p) {
            self.setup_failed(p, SetupFailure::Disconnected, now);
        }
    }

    fn on_outbound_ready(&mut self, p: P, id: StreamId, now: Instant) {
        self.setups.remove(&p);
        if self.doomed.remove(&p) {
            // Storm canary: the inbound one collided with this; both die, like the original bug.
            self.refuse(p.clone(), id, ResetReason::Conflict);
            self.removal_side_effects(p, false, now);
            return;
        }
        if let Some(existing) = self.streams.get(&p).copied() {
            if self.cfg.storm_canary {
                self.kill_both(p, existing.id, id, now);
                return;
            }
            // Both opened: keep the stream the lower id opened, as the peer will.
            if self.opened_by_lower(&p, true) {
                self.actions.push_back(Action::Reset(
                    p.clone(),
                    existing.id,
                    ResetReason::Duplicate,
                ));
            } else {
                self.refuse(p, id, ResetReason::Duplicate);
                return;
            }
        } else if self.streams.len() >= self.cfg.high && !self.evict_idle(now) {
            self.refuse(p, id, ResetReason::Full);
            return;
        }
        self.establish(p, id, true, now);
    }

    fn on_inbound_ready(&mut self, p: P, id: StreamId, now: Instant) {
        // A penalty binds whatever the peer's id: the tie-break below is for two clean
        // simultaneous opens. (A lower id once reopened at once after every malformed frame.)
        if !self.cfg.storm_canary && self.under_penalty(&p, now) {
            self.refuse(p, id, ResetReason::Penalised);
            return;
        }
        if let Some(existing) = self.streams.get(&p).copied() {
            if self.cfg.storm_canary {
                self.kill_both(p, existing.id, id, now);
                return;
            }
            // The peer opened again (its old stream is dead on its side), or both opened at once
            // and theirs is the lower id's: replace. Otherwise ours stays.
            if !existing.opened_by_us || self.opened_by_lower(&p, false) {
                self.actions.push_back(Action::Reset(
                    p.clone(),
                    existing.id,
                    ResetReason::Duplicate,
                ));
                // Its idleness carries over: reopening must not make an idle peer look fresh.
                self.establish(p.clone(), id, false, now);
                if let Some(e) = self.streams.get_mut(&p) {
                    e.last_useful = existing.last_useful;
                }
            } else {
                self.refuse(p, id, ResetReason::Duplicate);
            }
            return;
        }
        if self
            .setups
            .get(&p)
            .is_some_and(|s| s.stage == Stage::Opening)
        {
            if self.cfg.storm_canary {
                // Both sent INIT at once: both setups fail.
                self.doomed.insert(p.clone());
                self.refuse(p, id, ResetReason::Conflict);
                return;
            }
            if self.opened_by_lower(&p, true) {
                // Ours is under way and wins the tie.
                self.refuse(p, id, ResetReason::Duplicate);
                return;
            }
            // Theirs wins; ours is reset when it lands.
        }
        let cooling = self.inbound_cooling(&p, now);
        if !self.cfg.storm_canary && cooling && !self.opened_by_lower(&p, false) {
            self.refuse(p, id, ResetReason::Cooldown);
            return;
        }
        if self.streams.len() >= self.cfg.high && !self.evict_idle(now) {
            self.refuse(p, id, ResetReason::Full);
            return;
        }
        // A cooldown never refuses the stream that wins ties (opened by the lower id): when both ends
        // open at once, the loser may see its own stream reset, record a removal and start a
        // cooldown before the winner's stream arrives; refusing that one too would leave neither.
        // The opener's own removal cooldown still bounds how often it reopens. (Checked above,
        // before a full table evicts anyone for it.)
        self.establish(p, id, false, now);
    }

    /// Full, and a stream wants in: evicts the inbound stream idle longest, if one has been idle
    /// for `idle_evict_after`. Streams we opened are ours to keep (we chose those peers); inbound
    /// ones that serve no purpose held every slot once (eight idle peers kept an honest syncer out
    /// for as long as they stayed). Returns whether a slot was freed.
    fn evict_idle(&mut self, now: Instant) -> bool {
        if self.cfg.storm_canary {
            return false;
        }
        let grace = self.cfg.idle_evict_after;
        let victim = self
            .streams
            .iter()
            .filter(|(_, e)| {
                !e.opened_by_us && now.saturating_duration_since(e.last_useful) >= grace
            })
            .min_by_key(|(_, e)| e.last_useful)
            .map(|(p, e)| (p.clone(), e.id));
        let Some((p, id)) = victim else {
            return false;
        };
        self.streams.remove(&p);
        self.actions
            .push_back(Action::Reset(p.clone(), id, ResetReason::Evicted));
        self.actions
            .push_back(Action::Report(Report::Removed(RemovalReason::Evicted)));
        self.removal_side_effects(p, false, now);
        true
    }

    /// Resets a stream that just came up, counting it as a refused setup.
    fn refuse(&mut self, p: P, id: StreamId, why: ResetReason) {
        self.actions.push_back(Action::Reset(p, id, why));
        self.actions
            .push_back(Action::Report(Report::SetupFailed(SetupFailure::Refused)));
    }

    fn establish(&mut self, p: P, id: StreamId, opened_by_us: bool, now: Instant) {
        self.candidates.retain(|c| *c != p);
        self.streams.insert(
            p.clone(),
            Established {
                id,
                opened_by_us,
                last_useful: now,
            },
        );
        self.actions
            .push_back(Action::Report(Report::SetupSucceeded));
        self.actions.push_back(Action::Use(p, id));
    }

    fn kill_both(&mut self, p: P, existing: StreamId, new: StreamId, now: Instant) {
        self.streams.remove(&p);
        self.actions
            .push_back(Action::Reset(p.clone(), existing, ResetReason::Conflict));
        self.refuse(p.clone(), new, ResetReason::Conflict);
        self.actions
            .push_back(Action::Report(Report::Removed(RemovalReason::Conflict)));
        self.removal_side_effects(p, false, now);
    }

    fn remove(&mut self, p: P, reason: RemovalReason, now: Instant) {
        self.streams.remove(&p);
        self.actions
            .push_back(Action::Report(Report::Removed(reason)));
        self.removal_side_effects(p, reason == RemovalReason::Penalised, now);
    }

    /// The connection to `p` is gone (it restarted, or the link was cut): what its streams did
    /// on that connection no longer compounds. Found by the soak-s3 hour: a node killed as a
    /// partition began came back to peers that held a cooldown compounded over the whole run
    /// (5% of served requests reset the stream) plus the kill's own removal; those with the lower
    /// id refused it for up to 40 s while the partition left it few others. A forgiven peer
    /// still waits out the base period after its last removal, and every reconnect costs a
    /// dial and a handshake; penalties are kept, so dropping the connection does not escape one.
    fn forgive(&mut self, p: &P) {
        let base = self.cfg.removal_cooldown_base;
        if let Some(c) = self.cooldown.get_mut(p).filter(|c| !c.penalised) {
            c.removals = 0;
            c.until = c.until.min(c.last + base);
        }
    }

    fn removal_side_effects(&mut self, p: P, penalty: bool, now: Instant) {
        if self.cfg.storm_canary {
            // The original bug: discovery right after every removal, and the peer retried.
            self.discovery.next_at = now + STORM_REDISCOVERY;
            if !self.candidates.contains(&p) {
                self.candidates.push_back(p);
            }
            return;
        }
        let (base, max, memory) = (
            self.cfg.removal_cooldown_base,
            self.cfg.removal_cooldown_max,
            self.cfg.removal_memory,
        );
        let (removals, penalised) = match self.cooldown.get(&p) {
            Some(c) if now.saturating_duration_since(c.last) < memory => {
                (c.removals.saturating_add(1), c.penalised || penalty)
            }
            _ => (1, penalty),
        };
        let cooldown = base.saturating_mul(1u32 << (removals - 1).min(20)).min(max);
        if !self.cooldown.contains_key(&p) && self.cooldown.len() >= self.cfg.max_tracked_peers {
            evict_earliest(&mut self.cooldown, |c| c.until);
        }
        self.cooldown.insert(
            p.clone(),
            Cooldown {
                until: now + cooldown,
                removals,
                last: now,
                penalised,
            },
        );
        // Eligible again after the cooldown, if still wanted.
        if !self.candidates.contains(&p) && self.candidates.len() < self.cfg.max_tracked_peers {
            self.candidates.push_back(p);
        }
    }

    /// The cooldown currently applied to `p`, if any (for tests and /status).
    pub fn cooldown_remaining(&self, p: &P, now: Instant) -> Option<Duration> {
        self.cooldown
            .get(p)
            .map(|c| c.until.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    fn setup_failed(&mut self, p: P, why: SetupFailure, now: Instant) {
        self.setups.remove(&p);
        self.actions
            .push_back(Action::Report(Report::SetupFailed(why)));
        if self.cfg.storm_canary {
            self.discovery.next_at = now + STORM_REDISCOVERY;
            return;
        }
        if !self.failed.contains_key(&p) && self.failed.len() >= self.cfg.max_tracked_peers {
            evict_earliest(&mut self.failed, |t| *t);
        }
        self.failed.insert(p, now + self.cfg.failed_peer_ttl);
    }

    fn may_setup(&self, p: &P, now: Instant) -> bool {
        if self.cfg.storm_canary {
            return true;
        }
        let failed = self.failed.get(p).is_some_and(|t| *t > now);
        !failed && !self.cooling(p, now)
    }

    fn start_setup(&mut self, p: P, stage: Stage, now: Instant) {
        self.actions.push_back(Action::Report(Report::SetupStarted));
        self.setups.insert(
            p,
            Setup {
                stage,
                deadline: now + self.cfg.setup_timeout,
            },
        );
    }

    fn finish_round(&mut self, now: Instant) {
        if !self.discovery.running {
            return;
        }
        self.discovery.running = false;
        let productive = self.discovery.round_new > 0 || self.streams.len() >= self.target();
        self.actions
            .push_back(Action::Report(Report::DiscoveryRound { productive }));
        let d = &mut self.discovery;
        d.backoff = if productive || self.cfg.storm_canary {
            self.cfg.discovery_interval
        } else {
            (d.backoff * 2).min(self.cfg.discovery_backoff_max)
        };
        let base = match self.cfg.forced_discovery {
            Some(f) => f,
            None => d.backoff,
        };
        if self.cfg.storm_canary {
            // The original bug: after a failed round, discover again "at once". The original's
            // discovery RPC took network time; STORM_REDISCOVERY stands in for it, so the storm shows
            // as stream churn rather than an event loop spinning on instant empty queries.
            // Every round kills the streams it finds (both ends open), which triggers the next.
            d.next_at = now + STORM_REDISCOVERY;
            return;
        }
        // ±20% jitter so nodes started together do not discover in lockstep.
        d.next_at = now + base.mul_f64(self.rng.random_range(0.8..1.2));
    }

    fn drive(&mut self, now: Instant) {
        // Setups past their deadline fail.
        let expired: Vec<P> = self
            .setups
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for p in expired {
            self.setup_failed(p, SetupFailure::Timeout, now);
        }
        self.failed.retain(|_, t| *t > now);
        let memory = self.cfg.removal_memory;
        self.cooldown
            .retain(|_, c| c.until > now || now.saturating_duration_since(c.last) < memory);

        // Discovery on its timer.
        if self.discovery.running && now >= self.discovery.round_deadline {
            self.finish_round(now);
        }
        if !self.discovery.running && self.wants_discovery() && now >= self.discovery.next_at {
            self.discovery.running = true;
            self.discovery.round_new = 0;
            self.discovery.round_deadline = now + self.cfg.discovery_round_timeout;
            self.actions.push_back(Action::Discover);
            let injected = if self.cfg.storm_canary {
                Some(InjectedRound::StormCanary)
            } else if self.streams.len() >= self.target() {
                // Only forcing makes a round start with enough streams (see `wants_discovery`).
                Some(InjectedRound::ForcedDiscovery)
            } else {
                None
            };
            if let Some(k) = injected {
                self.actions.push_back(Action::Report(Report::Injected(k)));
            }
        }

        // Setups towards the target from the candidates, bounded in concurrency.
        // Storm canary: every candidate is set up again, streamed or not (both ends send INIT).
        let target = self.target();
        let storm = self.cfg.storm_canary;
        let mut skipped = VecDeque::new();
        while (storm || self.streams.len() + self.setups.len() < target)
            && self.setups.len() < self.cfg.max_concurrent_setups
        {
            let Some(p) = self.candidates.pop_front() else {
                break;
            };
            if (self.streams.contains_key(&p) && !storm) || self.setups.contains_key(&p) {
                continue;
            }
            if !self.may_setup(&p, now) {
                skipped.push_back(p);
                continue;
            }
            if self.connected.contains(&p) {
                self.start_setup(p.clone(), Stage::Opening, now);
                self.actions.push_back(Action::OpenStream(p));
            } else {
                self.start_setup(p.clone(), Stage::Dialing, now);
                self.actions.push_back(Action::Dial(p));
            }
        }
        // Peers waiting out a TTL or cooldown stay candidates, in order.
        while let Some(p) = skipped.pop_back() {
            self.candidates.push_front(p);
        }
    }
}

fn evict_earliest<P: Clone + Eq + Hash, V>(map: &mut HashMap<P, V>, key: impl Fn(&V) -> Instant) {
    if let Some(p) = map
        .iter()
        .min_by_key(|(_, v)| key(v))
        .map(|(p, _)| p.clone())
    {
        map.remove(&p);
    }
}

mod config;
mod labels;
pub use labels::{setup_outcome, setup_outcomes};

pub use config::StreamConfig;
#[cfg(test)]
mod tests;
