//! The driver task: one loop that waits for the next swarm event, session event, command, fault
//! change or timer, reads the clock once, turns what happened into inputs of the peers core and
//! executes the core's outputs. It decides nothing about peers itself; what it owns is I/O: the
//! swarm, the session channels, the callers' reply channels, kad queries and metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, identify, kad, ping};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::handle::{Command, FaultsRx};
use super::session::{self, CloseReason, SessionCtx, SessionEvent, SetupError};
use super::swarm::{Behaviour, BehaviourEvent};
use super::{NetEvent, NetState, RequestError, gate, gossip, network_version};
use crate::canary::CanarySet;
use crate::config::split_peer;
use crate::metrics::{Discovery, FrameError, P2pMetrics, RateLimitDirection, Refused, Tracked};
use crate::netem::Netem;
use crate::peers::{Count, Input, Offence, Output, Peers, SessionId};
use crate::requests::ReqId;
use crate::wire::{self, Message, Response};

/// Most direct (unmanaged) requests awaiting replies at once.
pub(super) const MAX_DIRECT: usize = 4096;
/// Period of housekeeping (rate limiter pruning, gauges).
pub(super) const HOUSEKEEPING: Duration = Duration::from_secs(10);

type ManagedReply = oneshot::Sender<Result<(PeerId, Response), RequestError>>;
type DirectReply = oneshot::Sender<Result<Response, RequestError>>;

/// A ready session's channels (the peers core holds its state).
pub(super) struct SessionIo {
    tx: mpsc::Sender<Vec<u8>>,
    /// Dropped with the session, which closes the stream.
    _close: oneshot::Sender<()>,
}

/// What woke the loop.
enum Turn {
    /// Boxed: a swarm event is ~5x the size of the others.
    Swarm(Box<SwarmEvent<BehaviourEvent>>),
    Session(SessionEvent),
    Command(Command),
    Faults,
    Timer,
    Stop(Option<oneshot::Sender<()>>),
}

pub(super) struct Driver {
    pub swarm: Swarm<Behaviour>,
    pub peers: Peers<PeerId, ConnectionId, Multiaddr>,
    pub ctx: Arc<SessionCtx>,
    pub metrics: P2pMetrics,
    pub protocol: StreamProtocol,
    pub control: libp2p_stream::Control,
    pub sessions: HashMap<SessionId, SessionIo>,
    pub next_stream_id: Arc<AtomicU64>,
    pub session_tx: mpsc::Sender<SessionEvent>,
    pub pending: HashMap<ReqId, ManagedReply>,
    pub direct: HashMap<ReqId, DirectReply>,
    pub discovery_query: Option<kad::QueryId>,
    pub state_tx: watch::Sender<NetState>,
    pub listen_addrs: Vec<Multiaddr>,
    pub next_housekeeping: Instant,
    pub net_events: mpsc::Sender<NetEvent>,
    pub gossip_tx: mpsc::Sender<gossip::Inbound>,
    /// The block topic, built once (the state is published after every loop iteration).
    pub gossip_topic: gossipsub::TopicHash,
    pub faults: FaultsRx,
    pub applied: watch::Sender<u64>,
    pub netem: Option<Arc<Netem>>,
    /// Aborted when the driver stops, so nothing keeps the store open after shutdown.
    pub accept_loop: tokio::task::JoinHandle<()>,
}

impl Driver {
    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut sessions: mpsc::Receiver<SessionEvent>,
        now: Instant,
    ) {
        self.execute_outputs(now);
        let mut now = now;
        let shutdown_reply = loop {
            // While callers wait, wake at least every second to notice abandoned requests.
            let cancel_check = (!self.pending.is_empty() || !self.direct.is_empty())
                .then(|| now + Duration::from_secs(1));
            let deadline = [
                self.peers.poll_timeout(),
                Some(self.next_housekeeping),
                cancel_check,
            ]
            .into_iter()
            .flatten()
            .min()
            .expect("housekeeping is always set");
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
            let turn = tokio::select! {
                ev = self.swarm.select_next_some() => Turn::Swarm(Box::new(ev)),
                Some(ev) = sessions.recv() => Turn::Session(ev),
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown(reply)) => Turn::Stop(Some(reply)),
                    None => Turn::Stop(None),
                    Some(c) => Turn::Command(c),
                },
                Ok(()) = self.faults.changed() => Turn::Faults,
                _ = sleep => Turn::Timer,
            };
            now = Instant::now();
            match turn {
                Turn::Swarm(ev) => self.on_swarm(*ev, now),
                Turn::Session(ev) => self.on_session(ev, now),
                Turn::Command(c) => self.on_command(c, now),
                Turn::Faults => self.apply_faults(now),
                Turn::Timer => {}
                Turn::Stop(reply) => break reply,
            }
            self.cancel_abandoned(now);
            let head = self.ctx.store.head().height;
            self.peers.handle(Input::LocalHead(head), now);
            if now >= self.next_housekeeping {
                self.housekeeping(now);
            }
            self.execute_outputs(now);
            self.publish(now);
        };
        self.sessions.clear();
        self.accept_loop.abort();
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(RequestError::Stopped));
        }
        if let Some(r) = shutdown_reply {
            let _ = r.send(());
        }
    }

    /// A caller that dropped its request future cancels the request (queued or in flight).
    fn cancel_abandoned(&mut self, now: Instant) {
        let mut gone: Vec<ReqId> = self
            .pending
            .iter()
            .filter(|(_, r)| r.is_closed())
            .map(|(id, _)| *id)
            .collect();
        gone.extend(
            self.direct
                .iter()
                .filter(|(_, r)| r.is_closed())
                .map(|(id, _)| *id),
        );
        for id in gone {
            self.pending.remove(&id);
            self.direct.remove(&id);
            self.peers.handle(Input::Cancel(id), now);
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        self.next_housekeeping = now + HOUSEKEEPING;
        self.ctx.limiter.prune();
        let t = &self.metrics.tracked;
        t.get_or_create(&[("table", Tracked::RateLimiterPeers.label())])
            .set(self.ctx.limiter.tracked_peers() as i64);
        for (table, n) in self.peers.tracked() {
            t.get_or_create(&[("table", Tracked::Peers(table).label())])
                .set(n as i64);
        }
    }

    /// The fault set changed: the peers core, network emulation and the canaries take their
    /// parts (sessions and IDA read theirs from the channel), then callers hear it holds.
    fn apply_faults(&mut self, now: Instant) {
        let (generation, f) = {
            let current = self.faults.borrow_and_update();
            (current.0, current.1.clone())
        };
        self.peers.handle(
            Input::Faults {
                isolate: f.isolate,
                forced_discovery: f.forced_discovery_ms.map(Duration::from_millis),
                storm_canary: f.storm_canary,
            },
            now,
        );
        if let Some(n) = &self.netem {
            // Checked when the set was accepted (`Faults::check`).
            n.set_partition(f.partition_set(Some(n.config())).unwrap_or_default());
        }
        self.ctx.canaries.set(CanarySet::from(&*f));
        self.execute_outputs(now);
        self.applied.send_replace(generation);
    }

    /// Executes the core's outputs; executing one may feed the core an input (a refused dial, a
    /// failed send), whose outputs run in the same pass.
    fn execute_outputs(&mut self, now: Instant) {
        while let Some(o) = self.peers.poll_output() {
            self.execute(o, now);
        }
    }

    fn execute(&mut self, o: Output<PeerId, ConnectionId, Multiaddr>, now: Instant) {
        match o {
            Output::Dial { peer, addrs } => {
                // Our book's addresses plus whatever the behaviours (kad's routing table and
                // query results) know for this peer.
                let opts = DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .extend_addresses_through_behaviour()
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .allocate_new_port()
                    .build();
                if let Err(e) = self.swarm.dial(opts) {
                    debug!(%peer, "dial refused: {e}");
                    self.peers.handle(Input::DialFailed(peer), now);
                }
            }
            Output::CloseConnection { peer, conn } => {
                debug!(%peer, ?conn, "closing connection");
                self.swarm.close_connection(conn);
            }
            Output::Disconnect(peer) => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Output::Discover => {
                let kad = &mut self.swarm.behaviour_mut().kad.inner;
                if kad.kbuckets().next().is_none() {
                    for (peer, addr) in self.peers.bootnodes().to_vec() {
                        kad.add_address(&peer, addr);
                    }
                    self.peers.reseed_bootnodes(now);
                }
                let q = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .inner
                    .get_closest_peers(PeerId::random());
                self.discovery_query = Some(q);
            }
            Output::OpenStream(peer) => self.open_stream(peer),
            Output::Send {
                peer,
                session,
                id,
                req,
            } => {
                let sent = match (
                    self.sessions.get(&session),
                    wire::encode(&Message::Request { id, req }, self.ctx.max_frame),
                ) {
                    (None, _) => Err(true),
                    (Some(_), Err(_)) => Err(false),
                    (Some(s), Ok(f)) => {
                        s.tx.try_send(f)
                            .map_err(|e| matches!(e, mpsc::error::TrySendError::Closed(_)))
                    }
                };
                if let Err(closed) = sent {
                    let input = Input::SendFailed {
                        peer,
                        session,
                        id,
                        closed,
                    };
                    self.peers.handle(input, now);
                }
            }
            Output::DropSession(id) => {
                self.sessions.remove(&id);
            }
            Output::Reply { id, result } => {
                if let Some(reply) = self.pending.remove(&id) {
                    let _ = reply.send(result);
                }
            }
            Output::DirectReply { id, result } => {
                if let Some(reply) = self.direct.remove(&id) {
                    let _ = reply.send(result);
                }
            }
            Output::Net(ev) => {
                let _ = self.net_events.try_send(ev);
            }
            Output::Count(c) => self.count(c),
        }
    }

    fn open_stream(&mut self, peer: PeerId) {
        let id = self.next_stream_id.fetch_add(1, Ordering::Relaxed);
        let (ctx, tx, mut control, proto) = (
            self.ctx.clone(),
            self.session_tx.clone(),
            self.control.clone(),
            self.protocol.clone(),
        );
        tokio::spawn(async move {
            let open =
                tokio::time::timeout(ctx.setup_timeout, control.open_stream(peer, proto)).await;
            match open {
                Ok(Ok(stream)) => session::run(ctx, peer, id, stream, true, tx).await,
                _ => {
                    let _ = tx
                        .send(SessionEvent::SetupFailed {
                            peer,
                            id,
                            outbound: true,
                            why: SetupError::Open,
                        })
                        .await;
                }
            }
        });
    }

    fn count(&mut self, c: Count) {
        let m = &self.metrics;
        match c {
            Count::Dial(outcome) => {
                m.dials.get_or_create(&[("outcome", outcome.label())]).inc();
            }
            Count::Setup(r) => {
                m.setups
                    .get_or_create(&[("outcome", crate::streams::setup_outcome(r))])
                    .inc();
            }
            Count::Removal(r) => {
                m.removals.get_or_create(&[("reason", r.label())]).inc();
            }
            Count::Reset(r) => {
                m.resets.get_or_create(&[("reason", r.label())]).inc();
            }
            Count::DiscoveryRound { productive } => {
                m.discovery_rounds
                    .get_or_create(&[("outcome", Discovery::of(productive).label())])
                    .inc();
            }
            Count::PeerFound => {
                m.peers_found.inc();
            }
            Count::Injected(i) => {
                m.faults_injected
                    .get_or_create(&[("kind", i.kind().label())])
                    .inc();
            }
            Count::RateLimitedReceived => {
                m.rate_limited
                    .get_or_create(&[("direction", RateLimitDirection::Received.label())])
                    .inc();
            }
            Count::Request { kind, outcome } => {
                m.requests
                    .get_or_create(&[("kind", kind.label()), ("outcome", outcome.label())])
                    .inc();
            }
            Count::Latency(kind, d) => {
                m.request_duration
                    .get_or_create(&[("kind", kind.label())])
                    .observe(d.as_secs_f64());
            }
            Count::ForeignPeer => {
                m.foreign_peers.inc();
            }
            Count::BadAnnounce => {
                m.frame_errors
                    .get_or_create(&[("reason", FrameError::BadAnnounce.label())])
                    .inc();
            }
            Count::Offence(o) => {
                m.offences.get_or_create(&[("offence", o.label())]).inc();
            }
            Count::Banned => {
                m.bans.inc();
            }
            Count::Refused(why) => {
                m.refused
                    .get_or_create(&[("reason", Refused::Admission(why).label())])
                    .inc();
            }
            Count::HeadStale(stale) => {
                debug!(stale, "head staleness changed");
                m.head_stale.set(i64::from(stale));
            }
        }
    }

    fn on_command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Request { req, only, reply } => match self.peers.submit(req, only, now) {
                Ok(id) => {
                    self.pending.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Direct { peer, req, reply } => match self.peers.submit_direct(peer) {
                Ok((id, session)) => {
                    self.direct.insert(id, reply);
                    self.execute(
                        Output::Send {
                            peer,
                            session,
                            id,
                            req,
                        },
                        now,
                    );
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Dial(addr) => {
                if let Some((peer, a)) = split_peer(&addr) {
                    self.peers.add_address(peer, a);
                    self.peers.handle(Input::Discovered(peer), now);
                    self.peers.dial_requested(peer, now);
                }
            }
            Command::Announce(a) => {
                if let Ok(f) = wire::encode(&Message::Announce(a), self.ctx.max_frame) {
                    for id in self.peers.sessions_in_use() {
                        // Best effort: a full queue means the peer is busy; it hears the next one.
                        if let Some(s) = self.sessions.get(&id) {
                            let _ = s.tx.try_send(f.clone());
                        }
                    }
                }
            }
            Command::Penalise(peer) => self.peers.handle(Input::Penalise(peer), now),
            Command::Publish(data) => {
                let topic = self.gossip_topic.clone();
                match self.swarm.behaviour_mut().gossipsub.as_mut() {
                    Some(g) => {
                        if let Err(e) = g.publish(topic, data) {
                            warn!("gossipsub publish failed: {e}");
                        }
                    }
                    None => warn!("publish without gossipsub (broadcast.mode is not gossipsub)"),
                }
            }
            Command::GossipVerdict(id, source, verdict) => {
                if let Some(g) = self.swarm.behaviour_mut().gossipsub.as_mut() {
                    g.report_message_validation_result(&id, &source, verdict);
                }
            }
            Command::Shutdown(_) => unreachable!("handled in run"),
        }
    }

    fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>, now: Instant) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.listen_addrs.push(address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                self.metrics.connections.inc();
                let ip = endpoint.get_remote_address().iter().find_map(|p| match p {
                    libp2p::multiaddr::Protocol::Ip4(a) => Some(std::net::IpAddr::V4(a)),
                    libp2p::multiaddr::Protocol::Ip6(a) => Some(std::net::IpAddr::V6(a)),
                    _ => None,
                });
                let input = Input::ConnectionEstablished {
                    peer: peer_id,
                    conn: connection_id,
                    we_dialled: endpoint.is_dialer(),
                    ip,
                };
                self.peers.handle(input, now);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.metrics.connections.dec();
                let input = Input::ConnectionClosed {
                    peer: peer_id,
                    conn: connection_id,
                    remaining: num_established as usize,
                };
                self.peers.handle(input, now);
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                debug!(%peer, "dial failed: {error}");
                self.peers.handle(Input::DialFailed(peer), now);
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour(ev, now),
            _ => {}
        }
    }

    fn on_behaviour(&mut self, ev: BehaviourEvent, now: Instant) {
        match ev {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                let expected = network_version(&self.ctx.spec.network_id);
                if info.protocol_version != expected {
                    warn!(peer = %peer_id, theirs = %info.protocol_version, "refusing peer of another network");
                    self.swarm.behaviour_mut().kad.inner.remove_peer(&peer_id);
                    self.peers.handle(Input::Foreign(peer_id), now);
                    return;
                }
                for a in info.listen_addrs {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .inner
                        .add_address(&peer_id, a.clone());
                    self.peers.add_address(peer_id, a);
                }
            }
            BehaviourEvent::Kad(gate::Gated::DialRequest(peer))
            | BehaviourEvent::Stream(gate::Gated::DialRequest(peer)) => {
                self.peers.dial_requested(peer, now);
            }
            BehaviourEvent::Kad(gate::Gated::Inner(ev)) => self.on_kad(ev, now),
            BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result,
            }) => match result {
                Ok(rtt) => self.metrics.ping_rtt.observe(rtt.as_secs_f64()),
                // A peer without ping (a tool, a test client) is not dead.
                Err(ping::Failure::Unsupported) => {}
                Err(e) => {
                    // libp2p no longer closes connections on ping failure; a dead path (a
                    // partition, a frozen peer) would otherwise hold its stream forever.
                    debug!(%peer, "ping failed, closing the connection: {e}");
                    self.metrics.ping_failures.inc();
                    let input = Input::ConnectionDead {
                        peer,
                        conn: connection,
                    };
                    self.peers.handle(input, now);
                }
            },
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let m = gossip::Inbound {
                    id: message_id,
                    source: propagation_source,
                    data: message.data,
                };
                if let Err(e) = self.gossip_tx.try_send(m) {
                    // Validation is behind: neither forward nor penalise.
                    let m = e.into_inner();
                    if let Some(g) = self.swarm.behaviour_mut().gossipsub.as_mut() {
                        g.report_message_validation_result(
                            &m.id,
                            &m.source,
                            MessageAcceptance::Ignore,
                        );
                    }
                }
            }
            _ => {}
        }
    }

    fn on_kad(&mut self, ev: kad::Event, now: Instant) {
        match ev {
            kad::Event::RoutingUpdated {
                peer, addresses, ..
            } => {
                if self.peers.is_blocked(&peer) {
                    return;
                }
                for a in addresses.iter() {
                    self.peers.add_address(peer, a.clone());
                }
                self.peers.handle(Input::Discovered(peer), now);
            }
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => {
                let peers = match result {
                    kad::QueryResult::GetClosestPeers(Ok(ok)) => ok.peers,
                    kad::QueryResult::GetClosestPeers(Err(
                        kad::GetClosestPeersError::Timeout { peers, .. },
                    )) => peers,
                    _ => vec![],
                };
                for p in peers {
                    if self.peers.is_blocked(&p.peer_id) {
                        continue;
                    }
                    for a in p.addrs {
                        self.peers.add_address(p.peer_id, a);
                    }
                    self.peers.handle(Input::Discovered(p.peer_id), now);
                }
                if step.last && self.discovery_query == Some(id) {
                    self.discovery_query = None;
                    self.peers.handle(Input::DiscoveryFinished, now);
                }
            }
            _ => {}
        }
    }

    fn on_session(&mut self, ev: SessionEvent, now: Instant) {
        let input = match ev {
            SessionEvent::Ready {
                peer,
                id,
                outbound,
                status,
                tx,
                close,
            } => {
                self.sessions.insert(id, SessionIo { tx, _close: close });
                Input::SessionReady {
                    peer,
                    session: id,
                    outbound,
                    head_height: status.head.height,
                }
            }
            SessionEvent::SetupFailed {
                peer,
                outbound,
                why,
                ..
            } => {
                debug!(%peer, ?why, outbound, "stream setup failed");
                Input::SessionFailed {
                    peer,
                    outbound,
                    wrong_network: why == SetupError::WrongNetwork,
                    malformed: why == SetupError::Malformed,
                }
            }
            SessionEvent::Response {
                peer, req_id, resp, ..
            } => Input::Response {
                peer,
                id: req_id,
                resp,
            },
            SessionEvent::Announce { peer, announce } => Input::Announce {
                peer,
                header: announce.header,
                signature: announce.signature,
            },
            SessionEvent::Served { peer } => Input::Served(peer),
            SessionEvent::Closed { peer, id, why } => {
                debug!(%peer, session = id, why = ?why, "session closed");
                Input::SessionClosed {
                    peer,
                    session: id,
                    offence: match why {
                        CloseReason::Malformed => Some(Offence::Malformed),
                        CloseReason::SlowReader => Some(Offence::SlowReader),
                        CloseReason::Stalled => Some(Offence::Stalled),
                        CloseReason::Eof | CloseReason::Io => None,
                    },
                }
            }
        };
        self.peers.handle(input, now);
    }

    fn publish(&mut self, now: Instant) {
        let p = &self.peers;
        let stats = p.stream_stats(now);
        let m = &self.metrics;
        m.streams.set(stats.streams as i64);
        m.cooldowns_active.set(stats.cooldowns_active as i64);
        m.failed_peers_cached.set(stats.failed_cached as i64);
        m.candidates.set(stats.candidates as i64);
        m.requests_in_flight.set(p.requests_in_flight() as i64);
        m.requests_queued.set(p.requests_queued() as i64);
        m.banned.set(p.banned_count(now) as i64);
        m.serve_budget_used
            .set(i64::from(self.ctx.budget.used_kib()) * 1024);
        let state = NetState {
            listen_addrs: self.listen_addrs.clone(),
            stream_peers: p.stream_peers(),
            connections: p.connections(),
            stats,
            counters: p.counters(),
            ready_for_sync: p.ready_for_sync(),
            best_peer_height: p.best_peer_height(),
            requests_outstanding: p.requests_in_flight() + p.requests_queued(),
            gossip_peers: self.swarm.behaviour().gossipsub.as_ref().map_or(0, |g| {
                g.all_peers()
                    .filter(|(_, t)| t.contains(&&self.gossip_topic))
                    .count()
            }),
        };
        self.state_tx.send_if_modified(|s| {
            if *s != state {
                *s = state;
                true
            } else {
                false
            }
        });
    }
}
