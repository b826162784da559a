//! Downloader: brings the local chain from its head to the best verified head peers report, and keeps
//! it there. Sans-IO: the driver reports peer heads, fetched (already verified) segments, failures and
//! commits; the downloader answers with [`Action`]s.
//!
//! - The range `[local + 1, target]` is cut into batches sized by bytes (an EWMA of observed block
//!   sizes) and capped in blocks; up to `max_in_flight` batches are fetched at once, at most
//!   `max_per_peer` from one peer, preferring peers not yet tried for a batch.
//! - Received batches wait in a look-ahead buffer until they are next in line; the bytes buffered plus
//!   the bytes reserved by requests in flight never exceed `lookahead_bytes`.
//! - Batches are committed strictly in order, one at a time (one store transaction each).
//! - A bad batch (does not verify, does not link, empty from a peer that claimed the range) penalises
//!   its peer, who is then not asked again for `bad_peer_ttl`; the batch goes to another peer.
//! - Watchdog: if the head does not move for `watchdog` while a peer reports a higher verified head,
//!   everything in flight is abandoned, the peers serving the blocking batch are set aside, and the
//!   range is scheduled afresh. No code path waits on one peer forever.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::chain::{VerifiedBlock, VerifyError};
use crate::error::{FieldError, check};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DownloaderConfig {
    /// Target bytes per batch request.
    pub batch_bytes: u64,
    /// Most blocks in one batch (keep at or below the servers' `max_blocks_per_request`).
    pub max_batch_blocks: u32,
    pub max_in_flight: usize,
    pub max_per_peer: usize,
    /// Cap on bytes received but not yet committed plus bytes reserved by requests in flight.
    pub lookahead_bytes: u64,
    /// Most bytes of ready batches committed together (at least one batch always is).
    pub commit_bytes: u64,
    /// Within this many blocks of the target the downloader is in the short-range phase.
    pub short_range: u64,
    #[serde(with = "crate::util::millis")]
    pub batch_timeout: Duration,
    #[serde(with = "crate::util::millis")]
    pub watchdog: Duration,
    #[serde(with = "crate::util::millis")]
    pub bad_peer_ttl: Duration,
    /// Most peers tracked.
    pub max_peers: usize,
    /// In the short range, a block first announced less than this long ago is left to broadcast
    /// (IDA / gossipsub) before it is fetched; 0 fetches at once. Long range never waits.
    #[serde(with = "crate::util::millis")]
    pub tip_grace: Duration,
}

impl Default for DownloaderConfig {
    fn default() -> Self {
        DownloaderConfig {
            batch_bytes: 4 * 1024 * 1024,
            max_batch_blocks: 1024,
            max_in_flight: 8,
            max_per_peer: 3,
            lookahead_bytes: 128 * 1024 * 1024,
            commit_bytes: 32 * 1024 * 1024,
            short_range: 32,
            batch_timeout: Duration::from_secs(15),
            watchdog: Duration::from_secs(10),
            bad_peer_ttl: Duration::from_secs(120),
            max_peers: 256,
            tip_grace: Duration::ZERO,
        }
    }
}

impl DownloaderConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        for (name, v) in [
            ("batch_bytes", self.batch_bytes),
            ("commit_bytes", self.commit_bytes),
            ("max_batch_blocks", self.max_batch_blocks as u64),
            ("max_in_flight", self.max_in_flight as u64),
            ("max_per_peer", self.max_per_peer as u64),
            ("max_peers", self.max_peers as u64),
        ] {
            check(v == 0, name, "must be > 0")?;
        }
        check(
            self.lookahead_bytes < self.batch_bytes,
            "lookahead_bytes",
            "must be >= batch_bytes",
        )?;
        check(self.batch_timeout.is_zero(), "batch_timeout", "must be > 0")?;
        check(self.watchdog.is_zero(), "watchdog", "must be > 0")?;
        check(
            self.tip_grace >= self.watchdog,
            "tip_grace",
            "must be below watchdog",
        )
    }
}

pub type BatchId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Idle,
    Long,
    Short,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Idle, Phase::Long, Phase::Short];

    pub fn label(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Long => "long",
            Phase::Short => "short",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FetchFailure {
    Timeout,
    /// The request failed (stream gone, refused, gave up).
    Error,
}

/// Why a peer was penalised (closed set, for metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Penalty {
    Invalid(VerifyError),
    /// A reply that verifies but starts at another height than asked, or holds more blocks.
    Misplaced,
    /// Blocks that verify but do not link to the local chain (another chain signed by the
    /// producer key: the store refused them).
    Unlinked,
    /// Claimed a head it then could not serve.
    CannotServe,
    /// Held up the chain until the watchdog fired.
    Stalled,
}

impl Penalty {
    /// One of each label value: every verify error, then the others.
    pub fn all() -> impl Iterator<Item = Penalty> {
        VerifyError::ALL.into_iter().map(Penalty::Invalid).chain([
            Penalty::Misplaced,
            Penalty::Unlinked,
            Penalty::CannotServe,
            Penalty::Stalled,
        ])
    }

    pub fn label(&self) -> &'static str {
        match self {
            Penalty::Invalid(e) => e.reason(),
            Penalty::Misplaced => "misplaced",
            Penalty::Unlinked => "unlinked",
            Penalty::CannotServe => "cannot_serve",
            Penalty::Stalled => "stalled",
        }
    }
}

#[derive(Debug)]
pub enum Event<P> {
    Tick,
    /// A peer's head, already checked against the producer key by the driver.
    PeerHead {
        peer: P,
        height: u64,
    },
    PeerGone(P),
    /// A batch reply whose blocks verified as a segment (signatures, payloads, internal links).
    Fetched {
        id: BatchId,
        peer: P,
        blocks: Vec<VerifiedBlock>,
    },
    /// A batch reply that did not verify.
    Invalid {
        id: BatchId,
        peer: P,
        why: VerifyError,
    },
    /// The peer has nothing in the range (NotFound / empty reply).
    Empty {
        id: BatchId,
        peer: P,
    },
    FetchFailed {
        id: BatchId,
        peer: P,
        why: FetchFailure,
    },
    /// The commit of [`Action::Insert`] `id` went through; the new local head.
    Inserted {
        id: BatchId,
        height: u64,
    },
    /// The commit of [`Action::Insert`] `id` did not go through (none of its blocks did).
    InsertFailed {
        id: BatchId,
        why: InsertFailure,
    },
    /// Someone else (the producer, IDA) committed blocks: the head is now `height`.
    LocalAdvanced {
        height: u64,
    },
}

/// Why a commit failed: only blocks that contradict the stored chain are the peer's doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertFailure {
    /// The block at `height` conflicts with or does not link to the stored chain (or to the
    /// block before it in the commit).
    Unlinked { height: u64 },
    /// The store failed (I/O, or the batch did not start at the head: a scheduling race here).
    Local,
}

#[derive(Debug)]
pub enum Action<P> {
    Fetch {
        id: BatchId,
        peer: P,
        from: u64,
        count: u32,
        max_bytes: u32,
    },
    /// Abandon a fetch: its reply, if it comes, will be ignored.
    Cancel {
        id: BatchId,
    },
    /// Commit these blocks (the next ones after the local head) in one transaction. They are
    /// every ready batch in a row from the head, up to `commit_bytes`: a commit costs a few
    /// fsyncs whatever its size, so when fetching outruns committing the commits grow instead
    /// of queueing. `id` is the first batch's.
    Insert {
        id: BatchId,
        blocks: Vec<VerifiedBlock>,
    },
    Penalise {
        peer: P,
        why: Penalty,
    },
    /// For metrics and logs.
    WatchdogFired,
    BatchRetry(Retry),
}

/// Why a batch goes back to be fetched again (`syncnet_sync_batch_retries_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Its peer's stream went away with the request in flight.
    PeerGone,
    /// The blocks did not verify.
    Invalid,
    /// The peer had none of them, or not the ones asked for.
    Empty,
    Misplaced,
    /// The request failed (transport error, error reply).
    FetchFailed,
    /// No reply within `batch_timeout`.
    Timeout,
    /// The watchdog saw no progress and took every request back.
    Watchdog,
    /// The commit it was part of failed.
    InsertFailed,
}

impl Retry {
    pub const ALL: [Retry; 8] = [
        Retry::PeerGone,
        Retry::Invalid,
        Retry::Empty,
        Retry::Misplaced,
        Retry::FetchFailed,
        Retry::Timeout,
        Retry::Watchdog,
        Retry::InsertFailed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Retry::PeerGone => "peer_gone",
            Retry::Invalid => "invalid",
            Retry::Empty => "empty",
            Retry::Misplaced => "misplaced",
            Retry::FetchFailed => "fetch_failed",
            Retry::Timeout => "timeout",
            Retry::Watchdog => "watchdog",
            Retry::InsertFailed => "insert_failed",
        }
    }
}

#[derive(Debug)]
enum State<P> {
    Pending,
    InFlight {
        peer: P,
        deadline: Instant,
        reserved: u64,
    },
    Ready {
        blocks: Vec<VerifiedBlock>,
        bytes: u64,
        peer: P,
    },
    Inserting {
        bytes: u64,
        peer: P,
    },
}

#[derive(Debug)]
struct Batch<P> {
    id: BatchId,
    from: u64,
    count: u32,
    state: State<P>,
    tried: Vec<P>,
}

#[derive(Debug, Default)]
struct PeerInfo {
    head: u64,
    in_flight: usize,
    /// Fetches ever assigned: spreads batches round-robin among equally busy peers.
    assigned: u64,
    bad_until: Option<Instant>,
}

/// Snapshot for metrics and `/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DownloaderStats {
    pub local: u64,
    pub target: u64,
    pub phase: Phase,
    pub batches: usize,
    pub in_flight: usize,
    pub buffered_bytes: u64,
    pub peers: usize,
}

pub struct Downloader<P> {
    cfg: DownloaderConfig,
    local: u64,
    target: u64,
    peers: HashMap<P, PeerInfo>,
    /// Keyed by first height; together they cover `[local + 1, scheduled_to]` without gaps.
    batches: BTreeMap<u64, Batch<P>>,
    scheduled_to: u64,
    next_id: BatchId,
    avg_block_bytes: f64,
    buffered: u64,
    last_progress: Instant,
    actions: VecDeque<Action<P>>,
    /// Target raises younger than `tip_grace`, oldest first: (the target before, when).
    fresh: VecDeque<(u64, Instant)>,
}

/// Target raises remembered for the tip grace; older ones count as aged.
const FRESH_CAP: usize = 1024;

const INITIAL_BLOCK_BYTES: f64 = 16.0 * 1024.0;

impl<P: Clone + Eq + Hash + Ord + std::fmt::Debug> Downloader<P> {
    pub fn new(cfg: DownloaderConfig, local_height: u64, now: Instant) -> Self {
        Downloader {
            cfg,
            local: local_height,
            target: local_height,
            peers: HashMap::new(),
            batches: BTreeMap::new(),
            scheduled_to: local_height,
            next_id: 1,
            avg_block_bytes: INITIAL_BLOCK_BYTES,
            buffered: 0,
            last_progress: now,
            actions: VecDeque::new(),
            fresh: VecDeque::new(),
        }
    }

    /// Highest height the downloader may fetch now: the target, except that in the short range
    /// heights announced less than `tip_grace` ago are left to broadcast.
    fn ready_target(&mut self, now: Instant) -> u64 {
        let grace = self.cfg.tip_grace;
        while let Some(&(_, t)) = self.fresh.front() {
            if t + grace <= now || self.fresh.len() > FRESH_CAP {
                self.fresh.pop_front();
            } else {
                break;
            }
        }
        if grace.is_zero() || self.target.saturating_sub(self.local) > self.cfg.short_range {
            return self.target;
        }
        match self.fresh.front() {
            Some(&(before, _)) => before.min(self.target),
            None => self.target,
        }
    }

    pub fn phase(&self) -> Phase {
        if self.target <= self.local {
            Phase::Idle
        } else if self.target - self.local <= self.cfg.short_range {
            Phase::Short
        } else {
            Phase::Long
        }
    }

    pub fn stats(&self) -> DownloaderStats {
        DownloaderStats {
            local: self.local,
            target: self.target,
            phase: self.phase(),
            batches: self.batches.len(),
            in_flight: self
                .batches
                .values()
                .filter(|b| matches!(b.state, State::InFlight { .. }))
                .count(),
            buffered_bytes: self.buffered,
            peers: self.peers.len(),
        }
    }

    /// Whether a batch handed out with [`Action::Insert`] awaits its result.
    pub fn inserting(&self) -> bool {
        self.batches
            .values()
            .any(|b| matches!(b.state, State::Inserting { .. }))
    }

    pub fn poll_action(&mut self) -> Option<Action<P>> {
        self.actions.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = None;
        for b in self.batches.values() {
            if let State::InFlight { deadline, .. } = b.state {
                t = Some(t.map_or(deadline, |x: Instant| x.min(deadline)));
            }
        }
        if self.target > self.local {
            let w = self.last_progress + self.cfg.watchdog;
            t = Some(t.map_or(w, |x: Instant| x.min(w)));
            if let Some(&(_, seen)) = self.fresh.front() {
                let g = seen + self.cfg.tip_grace;
                t = Some(t.map_or(g, |x: Instant| x.min(g)));
            }
        }
        for p in self.peers.values() {
            if let Some(u) = p.bad_until {
                t = Some(t.map_or(u, |x: Instant| x.min(u)));
            }
        }
        t
    }

    pub fn handle(&mut self, event: Event<P>, now: Instant) {
        match event {
            Event::Tick => {}
            Event::PeerHead { peer, height } => {
                if !self.peers.contains_key(&peer) && self.peers.len() >= self.cfg.max_peers {
                    return;
                }
                let info = self.peers.entry(peer).or_default();
                info.head = info.head.max(height);
                if height > self.target {
                    if self.target <= self.local {
                        // Idle until now: the watchdog measures from here.
                        self.last_progress = now;
                    }
                    if !self.cfg.tip_grace.is_zero() {
                        self.fresh.push_back((self.target.max(self.local), now));
                    }
                    self.target = height;
                }
            }
            Event::PeerGone(peer) => {
                self.peers.remove(&peer);
                let ids: Vec<u64> = self
                    .batches
                    .iter()
                    .filter(
                        |(_, b)| matches!(&b.state, State::InFlight { peer: p, .. } if *p == peer),
                    )
                    .map(|(k, _)| *k)
                    .collect();
                for k in ids {
                    self.requeue(k, true, Retry::PeerGone);
                }
                self.target = self
                    .peers
                    .values()
                    .map(|p| p.head)
                    .max()
                    .unwrap_or(self.local)
                    .max(self.local);
            }
            Event::Fetched { id, peer, blocks } => self.on_fetched(id, peer, blocks, now),
            Event::Invalid { id, peer, why } => {
                if let Some(k) = self.in_flight_key(id, &peer) {
                    self.penalise(peer, Penalty::Invalid(why), now);
                    self.requeue(k, false, Retry::Invalid);
                }
            }
            Event::Empty { id, peer } => {
                if let Some(k) = self.in_flight_key(id, &peer) {
                    let claimed = self.peers.get(&peer).map(|p| p.head).unwrap_or(0);
                    if claimed >= k {
                        self.penalise(peer, Penalty::CannotServe, now);
                    }
                    self.requeue(k, false, Retry::Empty);
                }
            }
            Event::FetchFailed { id, peer, .. } => {
                if let Some(k) = self.in_flight_key(id, &peer) {
                    self.requeue(k, false, Retry::FetchFailed);
                }
            }
            Event::Inserted { height, .. } => {
                // One commit at a time: every batch being inserted was in it.
                for k in self.inserting_keys() {
                    let b = self.batches.remove(&k).expect("listed");
                    if let State::Inserting { bytes, .. } = b.state {
                        self.buffered -= bytes;
                    }
                }
                if height > self.local {
                    self.local = height;
                    self.last_progress = now;
                }
                self.scheduled_to = self.scheduled_to.max(self.local);
                self.target = self.target.max(self.local);
            }
            Event::LocalAdvanced { height } => {
                if height > self.local {
                    // Everything scheduled was computed against the old head: start over from the new
                    // one (rare outside the producer, whose downloader is then simply idle).
                    let keys: Vec<u64> = self.batches.keys().copied().collect();
                    for k in keys {
                        let b = self.batches.remove(&k).expect("listed");
                        match b.state {
                            State::InFlight { peer, reserved, .. } => {
                                self.buffered -= reserved;
                                if let Some(p) = self.peers.get_mut(&peer) {
                                    p.in_flight = p.in_flight.saturating_sub(1);
                                }
                                self.actions.push_back(Action::Cancel { id: b.id });
                            }
                            State::Ready { bytes, .. } | State::Inserting { bytes, .. } => {
                                self.buffered -= bytes
                            }
                            State::Pending => {}
                        }
                    }
                    self.local = height;
                    self.scheduled_to = height;
                    self.target = self.target.max(height);
                    self.last_progress = now;
                }
            }
            Event::InsertFailed { why, .. } => {
                // Nothing of the commit went in: its batches are fetched again. Only the batch
                // holding the block that does not link is its peer's doing.
                let keys = self.inserting_keys();
                let culprit = match why {
                    InsertFailure::Unlinked { height } => keys
                        .iter()
                        .rev()
                        .find(|k| **k <= height)
                        .or(keys.first())
                        .copied(),
                    InsertFailure::Local => None,
                };
                for k in keys {
                    let b = self.batches.get_mut(&k).expect("listed");
                    if let State::Inserting { bytes, peer } = &b.state {
                        let (bytes, peer) = (*bytes, peer.clone());
                        self.buffered -= bytes;
                        b.state = State::Pending;
                        if Some(k) == culprit {
                            b.tried.push(peer.clone());
                            self.penalise(peer, Penalty::Unlinked, now);
                        }
                        self.actions
                            .push_back(Action::BatchRetry(Retry::InsertFailed));
                    }
                }
            }
        }
        self.drive(now);
    }

    /// Keys of the batches in the commit under way, ascending.
    fn inserting_keys(&self) -> Vec<u64> {
        self.batches
            .iter()
            .filter(|(_, b)| matches!(b.state, State::Inserting { .. }))
            .map(|(k, _)| *k)
            .collect()
    }

    fn in_flight_key(&self, id: BatchId, peer: &P) -> Option<u64> {
        self.batches
            .iter()
            .find(|(_, b)| {
                b.id == id && matches!(&b.state, State::InFlight { peer: p, .. } if p == peer)
            })
            .map(|(k, _)| *k)
    }

    /// Back to pending; `cancel` tells the driver to drop the request.
    fn requeue(&mut self, key: u64, cancel: bool, why: Retry) {
        let Some(b) = self.batches.get_mut(&key) else {
            return;
        };
        if let State::InFlight { peer, reserved, .. } = &b.state {
            let (peer, reserved) = (peer.clone(), *reserved);
            self.buffered -= reserved;
            if let Some(p) = self.peers.get_mut(&peer) {
                p.in_flight = p.in_flight.saturating_sub(1);
            }
            b.tried.push(peer);
            b.state = State::Pending;
            if cancel {
                self.actions.push_back(Action::Cancel { id: b.id });
            }
            self.actions.push_back(Action::BatchRetry(why));
        }
    }

    fn penalise(&mut self, peer: P, why: Penalty, now: Instant) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.bad_until = Some(now + self.cfg.bad_peer_ttl);
        }
        self.actions.push_back(Action::Penalise { peer, why });
    }

    fn on_fetched(&mut self, id: BatchId, peer: P, blocks: Vec<VerifiedBlock>, now: Instant) {
        let Some(k) = self.in_flight_key(id, &peer) else {
            return; // stale (cancelled or requeued)
        };
        if blocks.is_empty() {
            let claimed = self.peers.get(&peer).map(|p| p.head).unwrap_or(0);
            if claimed >= k {
                self.penalise(peer, Penalty::CannotServe, now);
            }
            self.requeue(k, false, Retry::Empty);
            return;
        }
        let b = self.batches.get(&k).expect("in flight");
        let n = blocks.len() as u64;
        if blocks[0].block().header.height != b.from || n > b.count as u64 {
            self.penalise(peer, Penalty::Misplaced, now);
            self.requeue(k, false, Retry::Misplaced);
            return;
        }
        let bytes: u64 = blocks
            .iter()
            .map(|v| v.block().payload.len() as u64 + 200)
            .sum();
        let avg = bytes as f64 / n as f64;
        self.avg_block_bytes = 0.7 * self.avg_block_bytes + 0.3 * avg;
        let mut b = self.batches.remove(&k).expect("in flight");
        let State::InFlight { reserved, .. } = b.state else {
            unreachable!()
        };
        self.buffered = self.buffered - reserved + bytes;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.in_flight = p.in_flight.saturating_sub(1);
        }
        if n < b.count as u64 {
            // Partial reply (byte cap): the rest becomes its own batch.
            let rest = Batch {
                id: self.next_id,
                from: b.from + n,
                count: b.count - n as u32,
                state: State::Pending,
                tried: vec![],
            };
            self.next_id += 1;
            self.batches.insert(rest.from, rest);
            b.count = n as u32;
        }
        b.state = State::Ready {
            blocks,
            bytes,
            peer,
        };
        self.batches.insert(k, b);
    }

    fn drive(&mut self, now: Instant) {
        // Timeouts.
        let expired: Vec<u64> = self
            .batches
            .iter()
            .filter(|(_, b)| matches!(b.state, State::InFlight { deadline, .. } if deadline <= now))
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            self.requeue(k, true, Retry::Timeout);
        }
        for p in self.peers.values_mut() {
            if p.bad_until.is_some_and(|u| u <= now) {
                p.bad_until = None;
            }
        }

        // Watchdog.
        if self.target > self.local
            && now.saturating_duration_since(self.last_progress) >= self.cfg.watchdog
        {
            self.fire_watchdog(now);
        }

        // Commit the ready batches in line, as one.
        if !self.inserting() {
            let mut next = self.local + 1;
            let mut commit: Option<(BatchId, Vec<VerifiedBlock>)> = None;
            let mut total = 0u64;
            while let Some(b) = self.batches.get_mut(&next)
                && let State::Ready { bytes, .. } = b.state
                && (commit.is_none() || total + bytes <= self.cfg.commit_bytes)
            {
                let State::Ready {
                    blocks,
                    bytes,
                    peer,
                } = std::mem::replace(&mut b.state, State::Pending)
                else {
                    unreachable!()
                };
                b.state = State::Inserting { bytes, peer };
                total += bytes;
                next += blocks.len() as u64;
                match &mut commit {
                    None => commit = Some((b.id, blocks)),
                    Some((_, all)) => all.extend(blocks),
                }
            }
            if let Some((id, blocks)) = commit {
                self.actions.push_back(Action::Insert { id, blocks });
            }
        }

        self.schedule(now);
    }

    fn fire_watchdog(&mut self, now: Instant) {
        self.actions.push_back(Action::WatchdogFired);
        // The peer(s) behind the blocking batch are set aside; everything in flight is abandoned.
        if let Some(b) = self.batches.get(&(self.local + 1)) {
            let culprit = match &b.state {
                State::InFlight { peer, .. } => Some(peer.clone()),
                _ => None,
            };
            if let Some(p) = culprit {
                self.penalise(p, Penalty::Stalled, now);
            }
        }
        let keys: Vec<u64> = self
            .batches
            .iter()
            .filter(|(_, b)| matches!(b.state, State::InFlight { .. }))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.requeue(k, true, Retry::Watchdog);
        }
        self.last_progress = now;
    }

    fn batch_blocks(&self) -> u32 {
        let by_bytes = (self.cfg.batch_bytes as f64 / self.avg_block_bytes.max(1.0)) as u64;
        by_bytes.clamp(1, self.cfg.max_batch_blocks as u64) as u32
    }

    fn schedule(&mut self, now: Instant) {
        // Create batches up to the target (bounded by the look-ahead through the reservations below).
        let ready = self.ready_target(now);
        while self.scheduled_to < ready && self.batches.len() < self.cfg.max_in_flight * 4 {
            let from = self.scheduled_to + 1;
            let count = (ready - self.scheduled_to).min(self.batch_blocks() as u64) as u32;
            let b = Batch {
                id: self.next_id,
                from,
                count,
                state: State::Pending,
                tried: vec![],
            };
            self.next_id += 1;
            self.batches.insert(from, b);
            self.scheduled_to = from + count as u64 - 1;
        }
        // Assign pending batches, lowest first.
        let pending: Vec<u64> = self
            .batches
            .iter()
            .filter(|(_, b)| matches!(b.state, State::Pending))
            .map(|(k, _)| *k)
            .collect();
        for k in pending {
            let in_flight = self
                .batches
                .values()
                .filter(|b| matches!(b.state, State::InFlight { .. }))
                .count();
            if in_flight >= self.cfg.max_in_flight {
                break;
            }
            let (from, count, tried) = {
                let b = &self.batches[&k];
                (b.from, b.count, b.tried.clone())
            };
            let est = (count as f64 * self.avg_block_bytes) as u64;
            let reserve = est
                .clamp(1, self.cfg.batch_bytes.max(1) * 2)
                .min(u32::MAX as u64);
            if self.buffered + reserve > self.cfg.lookahead_bytes {
                break;
            }
            let Some(peer) = self.pick_peer(from, &tried, now) else {
                continue;
            };
            let head = self.peers[&peer].head;
            let count = count.min((head - from + 1) as u32);
            let b = self.batches.get_mut(&k).expect("listed");
            if count < b.count {
                // This peer has only part of it: split off the rest.
                let rest = Batch {
                    id: self.next_id,
                    from: from + count as u64,
                    count: b.count - count,
                    state: State::Pending,
                    tried: b.tried.clone(),
                };
                b.count = count;
                self.next_id += 1;
                let id = b.id;
                b.state = State::InFlight {
                    peer: peer.clone(),
                    deadline: now + self.cfg.batch_timeout,
                    reserved: reserve,
                };
                self.batches.insert(rest.from, rest);
                self.start_fetch(id, peer, from, count, reserve);
            } else {
                b.state = State::InFlight {
                    peer: peer.clone(),
                    deadline: now + self.cfg.batch_timeout,
                    reserved: reserve,
                };
                let id = b.id;
                self.start_fetch(id, peer, from, count, reserve);
            }
        }
    }

    fn start_fetch(&mut self, id: BatchId, peer: P, from: u64, count: u32, reserve: u64) {
        self.buffered += reserve;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.in_flight += 1;
            p.assigned += 1;
        }
        self.actions.push_back(Action::Fetch {
            id,
            peer,
            from,
            count,
            max_bytes: reserve as u32,
        });
    }

    /// A peer that has `from`, is not set aside, has room; untried for this batch first; least busy.
    fn pick_peer(&self, from: u64, tried: &[P], now: Instant) -> Option<P> {
        let ok = |(_, p): &(&P, &PeerInfo)| {
            p.head >= from
                && p.in_flight < self.cfg.max_per_peer
                && p.bad_until.is_none_or(|u| u <= now)
        };
        let best = |fresh: bool| {
            self.peers
                .iter()
                .filter(ok)
                .filter(|(id, _)| !fresh || !tried.contains(id))
                // Deterministic: least busy, then least used, then lowest id.
                .min_by_key(|(id, p)| (p.in_flight, p.assigned, (*id).clone()))
                .map(|(id, _)| id.clone())
        };
        best(true).or_else(|| best(false))
    }
}

#[cfg(test)]
mod tests;
