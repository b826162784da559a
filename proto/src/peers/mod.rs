//! The peers core: everything the p2p driver decides about peers, without a socket. It owns
//!
//! - the **connections** of each peer and the rules on them: with two connections to a peer (both
//!   sides dialled at once), the one dialled by the lower peer id is kept, on both sides; a peer is
//!   reported *connected* to the stream manager only once it is **settled** (exactly one live
//!   connection and no dial of ours pending), so a sync stream is never opened on a connection about
//!   to close; a connection that ping found dead ends the peer's sessions at once;
//! - the **session table** (the sync streams that completed their handshake) and **request
//!   routing**: managed requests go through the request manager to an in-use session, direct ones
//!   straight to the peer's session, and every reply finds its caller exactly once, also when the
//!   session ends first;
//! - the [`StreamManager`], [`RequestManager`] and [`DialManager`] it composes, whose actions it
//!   turns into [`Output`]s.
//!
//! The driver (node `p2p`) feeds it swarm and session events with [`Peers::handle`], a request with
//! [`Peers::submit`] / [`Peers::submit_direct`], and executes [`Peers::poll_output`] until `None`.
//! Generic over the peer id `P`, the connection id `C` and the address `A` so the tests use plain
//! integers.

mod admission;
mod reputation;
#[cfg(test)]
mod tests;
mod types;

pub use admission::{Admission, AdmissionConfig, Admit, PendingPool, Refusal, subnet_of};
pub use reputation::{Offence, Reputation, ReputationConfig, Verdict};
pub use types::*;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::chain::ChainSpec;
use crate::dial::{DialDecision, DialManager, DialOutcome};
use crate::requests::{FailKind, ReqAction, ReqId, RequestManager};
use crate::streams::{
    Action as SmAction, Event as SmEvent, RemovalReason, Report, StreamManager, StreamStats,
};
use crate::wire::{ErrorReply, Request, Response};

#[derive(Debug)]
struct Session<P> {
    peer: P,
    in_use: bool,
    head_height: u64,
}

#[derive(Debug)]
struct Conn<P, C> {
    id: C,
    dialer: P,
    /// Ping found it dead; it stays listed until the driver reports it closed.
    dead: bool,
}

/// The peers core. See the module docs.
pub struct Peers<P, C, A> {
    local: P,
    spec: ChainSpec,
    cfg: PeersConfig,
    sm: StreamManager<P>,
    rm: RequestManager<P, Request>,
    dials: DialManager<P, A>,
    conns: HashMap<P, Vec<Conn<P, C>>>,
    /// Peers the stream manager was told are connected.
    reported: HashSet<P>,
    sessions: HashMap<SessionId, Session<P>>,
    /// Direct requests by id: the peer and the session they were written to (the only session
    /// whose end can fail them).
    direct: HashMap<ReqId, (P, SessionId)>,
    next_direct: ReqId,
    bootnodes: Vec<(P, A)>,
    counters: SetupCounters,
    isolated: bool,
    /// The local head height and when it last changed.
    head_seen: (u64, Instant),
    reputation: Reputation<P>,
    admission: Admission<(P, C)>,
    out: VecDeque<Output<P, C, A>>,
}

impl<P, C, A> Peers<P, C, A>
where
    P: Copy + Ord + Hash + Debug,
    C: Copy + Eq + Hash + Ord + Debug,
    A: Clone + Eq + Debug,
{
    /// `seed` drives the stream manager's jitter; `head` is the local head height now.
    pub fn new(
        local: P,
        spec: ChainSpec,
        cfg: PeersConfig,
        bootnodes: Vec<(P, A)>,
        seed: u64,
        head: u64,
        now: Instant,
    ) -> Self {
        let mut p = Peers {
            local,
            spec,
            sm: StreamManager::new(cfg.streams.clone(), local, seed, now),
            rm: RequestManager::new(cfg.requests),
            dials: DialManager::new(cfg.dials),
            reputation: Reputation::new(cfg.reputation),
            admission: Admission::new(cfg.admission),
            cfg,
            conns: HashMap::new(),
            reported: HashSet::new(),
            sessions: HashMap::new(),
            direct: HashMap::new(),
            next_direct: ReqId::FIRST_DIRECT,
            bootnodes: bootnodes.into_iter().filter(|(p, _)| *p != local).collect(),
            counters: SetupCounters::default(),
            isolated: false,
            head_seen: (head, now),
            out: VecDeque::new(),
        };
        p.seed_bootnodes(now);
        p.process(now);
        p
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output<P, C, A>> {
        self.out.pop_front()
    }

    /// When the core wants [`Input::Tick`] at the latest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let stale_check =
            (!self.sm.is_stale()).then(|| self.head_seen.1 + self.sm.config().stale_after);
        [self.sm.poll_timeout(), self.rm.poll_timeout(), stale_check]
            .into_iter()
            .flatten()
            .min()
    }

    /// Every input runs the managers' resulting actions. Only `Tick` and `LocalHead` (the driver
    /// sends one per loop turn) also run the timers: the stream manager acts on its own events
    /// already, and timers need running once per turn, not once per input.
    pub fn handle(&mut self, input: Input<P, C>, now: Instant) {
        let timers = matches!(input, Input::Tick | Input::LocalHead(_));
        match input {
            Input::Tick => {}
            Input::ConnectionEstablished {
                peer,
                conn,
                we_dialled,
                ip,
            } => self.on_established(peer, conn, we_dialled, ip, now),
            Input::ConnectionClosed {
                peer,
                conn,
                remaining,
            } => {
                self.admission.leave(&(peer, conn));
                if let Some(list) = self.conns.get_mut(&peer) {
                    list.retain(|c| c.id != conn);
                }
                if remaining == 0 {
                    self.conns.remove(&peer);
                    if self.reported.remove(&peer) {
                        self.sm.handle(SmEvent::Disconnected(peer), now);
                    }
                } else {
                    self.maybe_report_connected(peer, now);
                }
            }
            Input::ConnectionDead { peer, conn } => self.connection_dead(peer, conn, now),
            Input::DialFailed(peer) => {
                self.count(Count::Dial(DialOutcome::Failed));
                self.dials.on_failed(&peer, now);
                if self.conns.contains_key(&peer) {
                    self.maybe_report_connected(peer, now);
                } else {
                    self.sm.handle(SmEvent::DialFailed(peer), now);
                }
            }
            Input::Discovered(peer) => {
                if !self.dials.is_blocked(&peer) {
                    self.sm.handle(SmEvent::Discovered(peer), now);
                }
            }
            Input::DiscoveryFinished => self.sm.handle(SmEvent::DiscoveryFinished, now),
            Input::Foreign(peer) => self.refuse_foreign(peer),
            Input::SessionReady {
                peer,
                session,
                outbound,
                head_height,
            } => {
                self.sessions.insert(
                    session,
                    Session {
                        peer,
                        in_use: false,
                        head_height,
                    },
                );
                let e = if outbound {
                    SmEvent::OutboundReady(peer, session)
                } else {
                    SmEvent::InboundReady(peer, session)
                };
                self.sm.handle(e, now);
            }
            Input::SessionFailed {
                peer,
                outbound,
                wrong_network,
                malformed,
            } => {
                if wrong_network {
                    self.refuse_foreign(peer);
                }
                if outbound {
                    self.sm.handle(SmEvent::OutboundFailed(peer), now);
                }
                if malformed {
                    self.offend(peer, Offence::Malformed, now);
                }
            }
            Input::SessionClosed {
                peer,
                session,
                offence,
            } => {
                if let Some(o) = offence {
                    // Closes the peer's sessions, this one included, as penalised.
                    self.offend(peer, o, now);
                } else {
                    self.close_session(peer, session, RemovalReason::StreamError, now);
                }
            }
            Input::SendFailed {
                peer,
                session,
                id,
                closed,
            } => {
                if id.is_direct() {
                    if self.direct.remove(&id).is_some() {
                        self.out.push_back(Output::DirectReply {
                            id,
                            result: Err(RequestError::NoStream),
                        });
                    }
                } else if closed {
                    // The session task has ended and its Closed event is still on the way (e.g.
                    // the remote reset the stream in a simultaneous-open conflict). Close it
                    // now: the request goes back to the queue for the next stream instead of
                    // burning every attempt on a dead channel.
                    self.close_session(peer, session, RemovalReason::StreamError, now);
                } else {
                    self.rm.on_failure(id, &peer, FailKind::Transport, now);
                }
            }
            Input::Response { peer, id, resp } => self.on_response(peer, id, resp, now),
            Input::Announce {
                peer,
                header,
                signature,
            } => {
                // A head no higher than the peer's known one tells nothing: no signature check
                // (a replayed announce costs a lookup, not an ed25519 verification).
                let known = self
                    .sessions
                    .values()
                    .filter(|s| s.peer == peer)
                    .map(|s| s.head_height)
                    .max();
                let news = known.is_none_or(|h| header.height > h);
                if news && !self.reputation.is_banned(&peer, now) {
                    if self.spec.verify_head(&header, &signature).is_ok() {
                        self.note_head(peer, header.height);
                    } else {
                        self.count(Count::BadAnnounce);
                        self.offend(peer, Offence::BadAnnounce, now);
                    }
                }
            }
            Input::Penalise(peer) => self.offend(peer, Offence::SyncPenalty, now),
            Input::Offence(peer, o) => self.offend(peer, o, now),
            Input::Served(peer) => self.sm.handle(SmEvent::Useful(peer), now),
            Input::Cancel(id) => {
                if id.is_direct() {
                    self.direct.remove(&id);
                } else {
                    self.rm.cancel(id, now);
                }
            }
            Input::LocalHead(h) => {
                if h != self.head_seen.0 {
                    self.head_seen = (h, now);
                }
            }
            Input::Faults {
                isolate,
                forced_discovery,
                storm_canary,
            } => {
                // Every fault set restates everything: only a change acts or is counted.
                if isolate != self.isolated {
                    self.isolated = isolate;
                    if isolate {
                        self.count(Count::Injected(Injected::Isolate));
                        let mut peers: Vec<P> = self.conns.keys().copied().collect();
                        peers.sort();
                        for p in peers {
                            self.out.push_back(Output::Disconnect(p));
                        }
                    } else {
                        self.seed_bootnodes(now);
                    }
                }
                // The faults come on top of the configured values (`p2p.streams`).
                let forced = forced_discovery.or(self.cfg.streams.forced_discovery);
                if forced != self.sm.config().forced_discovery {
                    self.sm.set_forced_discovery(forced, now);
                }
                self.sm
                    .set_storm_canary(storm_canary || self.cfg.streams.storm_canary);
            }
        }
        if timers {
            self.reputation.expire(now);
            self.check_stale(now);
            self.sm.handle(SmEvent::Tick, now);
            self.rm.tick(now);
        }
        self.process(now);
    }

    /// Adds an address to the dial book (unless the peer is blocked).
    pub fn add_address(&mut self, peer: P, addr: A) {
        if !self.dials.is_blocked(&peer) {
            self.dials.add_address(peer, addr);
        }
    }

    pub fn is_blocked(&self, peer: &P) -> bool {
        self.dials.is_blocked(peer)
    }

    /// Dials the peer (a behaviour asks for it, or the node was given its address).
    pub fn dial_requested(&mut self, peer: P, now: Instant) {
        self.dial(peer, now);
        self.process(now);
    }

    /// A managed request: paced, retried, sent to the best stream. The reply comes as
    /// [`Output::Reply`] with the returned id.
    pub fn submit(
        &mut self,
        req: Request,
        only: Option<Vec<P>>,
        now: Instant,
    ) -> Result<ReqId, RequestError> {
        let cost = req.cost();
        let id = self
            .rm
            .submit(req, cost, only, now)
            .map_err(|_| RequestError::QueueFull)?;
        self.process(now);
        Ok(id)
    }

    /// A direct request onto the peer's in-use session: the driver writes the returned
    /// [`Output::Send`]-like triple itself, and the reply comes as [`Output::DirectReply`].
    pub fn submit_direct(&mut self, peer: P) -> Result<(ReqId, SessionId), RequestError> {
        let session = self.session_of(&peer).ok_or(RequestError::NoStream)?;
        if self.direct.len() >= self.cfg.max_direct {
            return Err(RequestError::QueueFull);
        }
        let id = self.next_direct;
        self.next_direct = id.next();
        self.direct.insert(id, (peer, session));
        Ok((id, session))
    }

    /// The sessions in use (announces go to each).
    pub fn sessions_in_use(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.sessions
            .iter()
            .filter(|(_, s)| s.in_use)
            .map(|(id, _)| *id)
    }

    /// Re-adds the bootnodes to the dial book and the stream manager's candidates: the driver
    /// calls it when its routing table is empty at a discovery round.
    pub fn reseed_bootnodes(&mut self, now: Instant) {
        self.seed_bootnodes(now);
        self.process(now);
    }

    /// At start and when isolation ends.
    fn seed_bootnodes(&mut self, now: Instant) {
        for (peer, addr) in self.bootnodes.clone() {
            self.dials.add_address(peer, addr);
            self.sm.handle(SmEvent::Discovered(peer), now);
        }
    }

    pub fn bootnodes(&self) -> &[(P, A)] {
        &self.bootnodes
    }

    pub fn is_isolated(&self) -> bool {
        self.isolated
    }

    pub fn counters(&self) -> SetupCounters {
        self.counters
    }

    pub fn stream_stats(&self, now: Instant) -> StreamStats {
        self.sm.stats(now)
    }

    pub fn stream_peers(&self) -> Vec<P> {
        let mut v: Vec<P> = self.sm.streams().map(|(p, _)| *p).collect();
        v.sort();
        v
    }

    pub fn ready_for_sync(&self) -> bool {
        self.sm.ready_for_sync()
    }

    /// Highest head reported by a peer with an in-use stream.
    pub fn best_peer_height(&self) -> u64 {
        self.sessions
            .values()
            .filter(|s| s.in_use)
            .map(|s| s.head_height)
            .max()
            .unwrap_or(0)
    }

    pub fn connections(&self) -> usize {
        self.conns.values().map(Vec::len).sum()
    }

    pub fn requests_in_flight(&self) -> usize {
        self.rm.in_flight()
    }

    pub fn requests_queued(&self) -> usize {
        self.rm.queued()
    }

    /// Sizes of the tables this core holds (`tracked_entries{table}`).
    pub fn tracked(&self) -> [(Table, usize); 4] {
        // (Admission's table is bounded by its caps; its counts are `connections{direction}`.)
        [
            (Table::DialBook, self.dials.tracked_peers()),
            (Table::Reputation, self.reputation.tracked()),
            (Table::Sessions, self.sessions.len()),
            (Table::DirectRequests, self.direct.len()),
        ]
    }

    /// Whether the peer's connections hold a sync stream (admission never evicts those).
    fn mark_busy(&mut self, peer: P, busy: bool, now: Instant) {
        if let Some(list) = self.conns.get(&peer) {
            for c in list {
                self.admission.set_busy(&(peer, c.id), busy, now);
            }
        }
    }

    /// (inbound, outbound) connections admitted.
    pub fn connection_counts(&self) -> (usize, usize) {
        self.admission.counts()
    }

    /// The peer misbehaved: its streams close as penalised (or, holding none, it gets the penalty
    /// cooldown), and an offence that reaches the ban line disconnects it for the ban.
    fn offend(&mut self, peer: P, o: Offence, now: Instant) {
        self.count(Count::Offence(o));
        if self.reputation.is_banned(&peer, now) {
            return; // in flight when the ban began; its connections are closing
        }
        let verdict = self.reputation.offend(peer, o, now);
        if self.sessions.values().any(|s| s.peer == peer) {
            self.drop_peer_streams(peer, RemovalReason::Penalised, now);
        } else {
            self.sm.handle(SmEvent::Penalised(peer), now);
        }
        if let Verdict::Banned(_) = verdict {
            self.count(Count::Banned);
            self.out.push_back(Output::Disconnect(peer));
        }
    }

    /// Whether the peer is banned now (its connections are refused).
    pub fn is_banned(&self, peer: &P, now: Instant) -> bool {
        self.reputation.is_banned(peer, now)
    }

    pub fn banned_count(&self, now: Instant) -> usize {
        self.reputation.banned_count(now)
    }

    /// A peer of another network: blocked and disconnected.
    fn refuse_foreign(&mut self, peer: P) {
        self.count(Count::ForeignPeer);
        self.dials.block(peer);
        self.out.push_back(Output::Disconnect(peer));
    }

    fn count(&mut self, c: Count) {
        self.out.push_back(Output::Count(c));
    }

    fn session_of(&self, peer: &P) -> Option<SessionId> {
        self.sessions
            .iter()
            .find(|(_, s)| s.peer == *peer && s.in_use)
            .map(|(id, _)| *id)
    }

    fn on_established(
        &mut self,
        peer: P,
        conn: C,
        we_dialled: bool,
        ip: Option<std::net::IpAddr>,
        now: Instant,
    ) {
        if self.dials.is_blocked(&peer) || self.isolated {
            self.out.push_back(Output::CloseConnection { peer, conn });
            return;
        }
        if self.reputation.is_banned(&peer, now) {
            self.count(Count::Refused(Refusal::Banned));
            self.out.push_back(Output::CloseConnection { peer, conn });
            return;
        }
        // Bootnodes dialling us are exempt from the inbound caps (reserved slots).
        let reserved = self.bootnodes.iter().any(|(b, _)| *b == peer);
        match self
            .admission
            .arrive((peer, conn), !we_dialled, ip, reserved, now)
        {
            Admit::Keep => {}
            Admit::KeepEvicting((p, c)) => {
                self.count(Count::Refused(Refusal::Evicted));
                self.out
                    .push_back(Output::CloseConnection { peer: p, conn: c });
            }
            Admit::Refuse(why) => {
                self.count(Count::Refused(why));
                self.out.push_back(Output::CloseConnection { peer, conn });
                return;
            }
        }
        let dialer = if we_dialled {
            self.dials.on_connected(&peer);
            self.count(Count::Dial(DialOutcome::Connected));
            self.local
        } else {
            peer
        };
        let list = self.conns.entry(peer).or_default();
        list.push(Conn {
            id: conn,
            dialer,
            dead: false,
        });
        if list.iter().filter(|c| !c.dead).count() > 1 {
            // Keep the (first) live connection dialled by the lower peer id; close the other
            // live ones (dead ones are closing already). Both sides apply the same rule to the
            // same pair of connections, so they keep the same one.
            let lower = self.local.min(peer);
            let keep = list
                .iter()
                .position(|c| !c.dead && c.dialer == lower)
                .or_else(|| list.iter().position(|c| !c.dead))
                .unwrap_or(0);
            let close: Vec<C> = list
                .iter()
                .enumerate()
                .filter(|(i, c)| *i != keep && !c.dead)
                .map(|(_, c)| c.id)
                .collect();
            for conn in close {
                self.out.push_back(Output::CloseConnection { peer, conn });
            }
        }
        self.maybe_report_connected(peer, now);
    }

    /// Tells the stream manager about a peer once its connection set is settled: one live
    /// connection (libp2p-stream opens on any of a peer's connections, a closing one included).
    fn maybe_report_connected(&mut self, peer: P, now: Instant) {
        let settled = self
            .conns
            .get(&peer)
            .is_some_and(|l| l.len() == 1 && !l[0].dead)
            && !self.dials.is_dialing(&peer);
        if settled && self.reported.insert(peer) {
            self.sm.handle(SmEvent::Connected(peer), now);
        }
    }

    /// Ping found `conn` dead. Closing it waits for the dead path to take its last frames (a
    /// partition holds them for as long as it lasts), and the close is reported only then;
    /// until then its streams looked alive and requests sent on them waited out their timeouts.
    /// Found by the soak-s3 hour: after each 60 s partition of a region, its nodes spent their
    /// first 20 s asking peers over such connections (two 10 s stalls). Sessions live on a
    /// peer's one settled connection, so they end now and the peer counts as disconnected until
    /// the connection is gone (no new stream may land on it).
    fn connection_dead(&mut self, peer: P, conn: C, now: Instant) {
        self.out.push_back(Output::CloseConnection { peer, conn });
        let Some(c) = self
            .conns
            .get_mut(&peer)
            .and_then(|l| l.iter_mut().find(|c| c.id == conn))
        else {
            return;
        };
        if c.dead {
            return;
        }
        c.dead = true;
        if self.reported.remove(&peer) {
            self.drop_peer_streams(peer, RemovalReason::Disconnected, now);
            self.sm.handle(SmEvent::Disconnected(peer), now);
        }
    }

    /// Dials through the dial manager. Returns false if no dial is under way afterwards.
    fn dial(&mut self, peer: P, now: Instant) -> bool {
        if self.isolated {
            return false;
        }
        if self.conns.contains_key(&peer) {
            return true;
        }
        let decision = self.dials.request(&peer, now);
        self.count(Count::Dial(decision.outcome()));
        match decision {
            DialDecision::Dial(addrs) => {
                self.out.push_back(Output::Dial { peer, addrs });
                true
            }
            DialDecision::AlreadyDialing => true,
            _ => false,
        }
    }

    /// Tells the stream manager whether the local head has stopped moving: a node whose peers
    /// know nothing newer must go looking for streams instead of waiting out cooldowns.
    fn check_stale(&mut self, now: Instant) {
        let stale = now.saturating_duration_since(self.head_seen.1) >= self.sm.config().stale_after;
        if stale != self.sm.is_stale() {
            self.sm.set_stale(stale, now);
            self.count(Count::HeadStale(stale));
        }
    }

    fn note_head(&mut self, peer: P, height: u64) {
        let mut in_use = false;
        for s in self.sessions.values_mut().filter(|s| s.peer == peer) {
            s.head_height = s.head_height.max(height);
            in_use |= s.in_use;
        }
        if in_use {
            self.out
                .push_back(Output::Net(NetEvent::PeerHead { peer, height }));
        }
    }

    /// Removes a session, however it ended (closed, reset by the stream manager, its peer gone),
    /// and fails the direct requests written to it: nothing else would answer them.
    fn end_session(&mut self, id: SessionId, now: Instant) -> Option<Session<P>> {
        let s = self.sessions.remove(&id)?;
        if s.in_use && !self.sessions.values().any(|o| o.peer == s.peer && o.in_use) {
            self.mark_busy(s.peer, false, now);
        }
        self.out.push_back(Output::DropSession(id));
        let mut gone: Vec<ReqId> = self
            .direct
            .iter()
            .filter(|(_, (_, sid))| *sid == id)
            .map(|(req, _)| *req)
            .collect();
        gone.sort();
        for req in gone {
            self.direct.remove(&req);
            self.out.push_back(Output::DirectReply {
                id: req,
                result: Err(RequestError::NoStream),
            });
        }
        Some(s)
    }

    /// A session ended (its task reported it, or a send found its channel closed first): the
    /// request manager, direct callers and the stream manager learn once; a second report of the
    /// same session finds nothing to do.
    fn close_session(&mut self, peer: P, id: SessionId, reason: RemovalReason, now: Instant) {
        if let Some(s) = self.end_session(id, now) {
            if s.in_use {
                self.stream_gone(peer, now);
            }
            self.sm.handle(SmEvent::StreamClosed(peer, id, reason), now);
        }
    }

    /// Closes every session with `peer` and tells the managers why.
    fn drop_peer_streams(&mut self, peer: P, why: RemovalReason, now: Instant) {
        let mut ids: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        for id in ids {
            self.close_session(peer, id, why, now);
        }
    }

    /// An in-use stream ended: the request manager and the sync layer must know.
    fn stream_gone(&mut self, peer: P, now: Instant) {
        self.rm.remove_stream(&peer, now);
        self.out.push_back(Output::Net(NetEvent::PeerGone(peer)));
    }

    /// Only an answer to a request we sent makes the stream useful: unsolicited responses (any
    /// id) must not keep an idle peer's slot.
    fn on_response(&mut self, peer: P, id: ReqId, resp: Response, now: Instant) {
        if let Response::Error(ErrorReply::RateLimited { .. }) = &resp {
            self.count(Count::RateLimitedReceived);
        }
        if id.is_direct() {
            if self.direct.get(&id).is_some_and(|(p, _)| *p == peer) {
                self.direct.remove(&id);
                self.sm.handle(SmEvent::Useful(peer), now);
                self.out.push_back(Output::DirectReply {
                    id,
                    result: Ok(resp),
                });
            }
            return;
        }
        match resp {
            Response::Error(ErrorReply::RateLimited { retry_after_ms }) => {
                self.rm.on_rate_limited(
                    id,
                    &peer,
                    Duration::from_millis(retry_after_ms as u64),
                    now,
                );
            }
            Response::Error(e) => {
                // NotFound/TooLarge/Shutdown: this peer cannot serve it; try another. Counted
                // only as the answer to an attempt of ours.
                if let Some(kind) = self.rm.request(id, &peer).map(Request::kind) {
                    self.count(Count::Request {
                        kind,
                        outcome: RequestOutcome::Remote(e),
                    });
                }
                self.rm.on_failure(id, &peer, FailKind::Refused, now);
            }
            resp => {
                let kind = self.rm.request(id, &peer).map(Request::kind);
                if let (Some(kind), Some((_, latency))) = (kind, self.rm.on_success(id, &peer, now))
                {
                    self.sm.handle(SmEvent::Useful(peer), now);
                    if let Response::Status(s) = &resp
                        && self.spec.verify_head(&s.head, &s.head_signature).is_ok()
                    {
                        self.note_head(peer, s.head.height);
                    }
                    self.count(Count::Latency(kind, latency));
                    self.count(Count::Request {
                        kind,
                        outcome: RequestOutcome::Ok,
                    });
                    self.out.push_back(Output::Reply {
                        id,
                        result: Ok((peer, resp)),
                    });
                }
            }
        }
    }

    /// Runs the managers' actions until neither has any left.
    fn process(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(a) = self.sm.poll_action() {
                progressed = true;
                self.on_sm_action(a, now);
            }
            while let Some(a) = self.rm.poll_action() {
                progressed = true;
                self.on_rm_action(a, now);
            }
            if !progressed {
                break;
            }
        }
    }

    fn on_sm_action(&mut self, a: SmAction<P>, now: Instant) {
        match a {
            SmAction::Discover => {
                for (peer, _) in self.bootnodes.clone() {
                    self.sm.handle(SmEvent::Discovered(peer), now);
                }
                self.out.push_back(Output::Discover);
            }
            SmAction::Dial(peer) => {
                if !self.dial(peer, now) {
                    self.sm.handle(SmEvent::DialFailed(peer), now);
                }
            }
            SmAction::OpenStream(peer) => self.out.push_back(Output::OpenStream(peer)),
            SmAction::Use(peer, id) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.in_use = true;
                    let head = s.head_height;
                    self.mark_busy(peer, true, now);
                    self.rm.add_stream(peer, Some(self.cfg.pace), now);
                    self.out
                        .push_back(Output::Net(NetEvent::PeerHead { peer, height: head }));
                } else {
                    // The session ended between Ready and Use.
                    self.sm.handle(
                        SmEvent::StreamClosed(peer, id, RemovalReason::StreamError),
                        now,
                    );
                }
            }
            SmAction::Reset(peer, id, reason) => {
                self.count(Count::Reset(reason));
                if let Some(s) = self.end_session(id, now)
                    && s.in_use
                {
                    self.stream_gone(peer, now);
                }
            }
            SmAction::Report(r) => self.on_report(r),
        }
    }

    fn on_report(&mut self, r: Report) {
        let c = &mut self.counters;
        let count = match r {
            Report::SetupStarted => {
                c.started += 1;
                return;
            }
            Report::SetupSucceeded => {
                c.succeeded += 1;
                Count::Setup(Ok(()))
            }
            Report::SetupFailed(why) => {
                c.failed += 1;
                Count::Setup(Err(why))
            }
            Report::Removed(why) => {
                c.removed += 1;
                Count::Removal(why)
            }
            Report::DiscoveryRound { productive } => {
                c.discovery_rounds += 1;
                Count::DiscoveryRound { productive }
            }
            Report::PeerFound => Count::PeerFound,
            Report::Injected(kind) => Count::Injected(Injected::Round(kind)),
        };
        self.count(count);
    }

    fn on_rm_action(&mut self, a: ReqAction<P, Request>, now: Instant) {
        match a {
            ReqAction::Send { id, peer, req } => match self.session_of(&peer) {
                Some(session) => self.out.push_back(Output::Send {
                    peer,
                    session,
                    id,
                    req,
                }),
                None => self.rm.on_failure(id, &peer, FailKind::Transport, now),
            },
            ReqAction::Abandon { req, .. } => self.count(Count::Request {
                kind: req.kind(),
                outcome: RequestOutcome::Timeout,
            }),
            ReqAction::Failed { id, why, .. } => self.out.push_back(Output::Reply {
                id,
                result: Err(RequestError::GaveUp(why)),
            }),
            ReqAction::Penalise(peer) => self.offend(peer, Offence::Unresponsive, now),
        }
    }
}
