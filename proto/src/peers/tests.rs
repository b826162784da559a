//! The rules of the peers core, on a fake network and an injected clock: peer ids are `u32` (1
//! sorts below 2), connection ids and addresses are `u32`.

use std::time::{Duration, Instant};

use super::*;
use crate::chain::testkit::{key, spec_for};
use crate::dial::DialConfig;
use crate::requests::RequestConfig;
use crate::streams::StreamConfig;
use crate::wire::RequestKind;

type Core = Peers<u32, u32, u32>;
type Out = Output<u32, u32, u32>;
/// A reply a side received: (side, request, result).
type Replied = (u32, ReqId, Result<(u32, Response), RequestError>);

fn cfg() -> PeersConfig {
    PeersConfig {
        streams: StreamConfig {
            hard_low: 1,
            soft_low: 2,
            high: 4,
            ..StreamConfig::default()
        },
        requests: RequestConfig::default(),
        dials: DialConfig::default(),
        pace: (1_000_000, 1_000_000),
        max_direct: 16,
        reputation: ReputationConfig::default(),
        admission: AdmissionConfig::default(),
    }
}

fn core(local: u32, bootnodes: &[u32], t0: Instant) -> Core {
    let spec = spec_for(&key(1));
    let boot = bootnodes.iter().map(|&p| (p, 100 + p)).collect();
    Peers::new(local, spec, cfg(), boot, u64::from(local), 0, t0)
}

fn drain(c: &mut Core) -> Vec<Out> {
    std::iter::from_fn(|| c.poll_output())
        .filter(|o| !matches!(o, Output::Count(_)))
        .collect()
}

fn opens(out: &[Out]) -> usize {
    out.iter()
        .filter(|o| matches!(o, Output::OpenStream(_)))
        .count()
}

/// A network of two cores: outputs of one become inputs of both, as the swarm and the session
/// tasks would deliver them. Every dial makes a new connection, so two dials issued in one step are
/// two connections, like libp2p with a fresh port per dial. Requests are answered (empty hash
/// lists) unless `hold` is set.
struct Pair {
    a: Core,
    b: Core,
    /// Live connections: (id, dialler, other end).
    conns: Vec<(u32, u32, u32)>,
    next_conn: u32,
    /// Live sessions: (id, opener, other end).
    sessions: Vec<(SessionId, u32, u32)>,
    next_session: SessionId,
    hold: bool,
    /// Requests written, by side: (side, session, id).
    sent: Vec<(u32, SessionId, ReqId)>,
    replies: Vec<Replied>,
    closed_conns: Vec<(u32, u32)>,
    t: Instant,
}

/// The session task's report that a ready stream ended (EOF or error).
fn closed(peer: u32, session: SessionId) -> Input<u32, u32> {
    Input::SessionClosed {
        peer,
        session,
        offence: None,
    }
}

impl Pair {
    /// Both ends see the stream end at once (the test stands in for the network).
    fn end_session(&mut self, id: SessionId) {
        self.a.handle(closed(2, id), self.t);
        self.b.handle(closed(1, id), self.t);
        self.sessions.retain(|s| s.0 != id);
    }

    fn new(t0: Instant) -> Pair {
        Pair {
            a: core(1, &[2], t0),
            b: core(2, &[1], t0),
            conns: vec![],
            next_conn: 1,
            sessions: vec![],
            next_session: 1,
            hold: false,
            sent: vec![],
            replies: vec![],
            closed_conns: vec![],
            t: t0,
        }
    }

    fn side(&mut self, which: u32) -> &mut Core {
        if which == 1 { &mut self.a } else { &mut self.b }
    }

    fn remaining(&self, a: u32, b: u32) -> usize {
        self.conns
            .iter()
            .filter(|(_, x, y)| (*x == a && *y == b) || (*x == b && *y == a))
            .count()
    }

    /// Delivers every output, both ways, until both cores are quiet. Outputs of one step are
    /// delivered together: two dials (or two opens) issued at once cross on the wire.
    fn settle(&mut self) {
        let now = self.t;
        for _ in 0..200 {
            let mut outs = vec![];
            for me in [1u32, 2] {
                while let Some(o) = self.side(me).poll_output() {
                    outs.push((me, o));
                }
            }
            if outs.is_empty() {
                return;
            }
            let mut established = vec![];
            let mut opened = vec![];
            for (me, o) in outs {
                let other = 3 - me;
                match o {
                    Output::Dial { .. } => {
                        let id = self.next_conn;
                        self.next_conn += 1;
                        self.conns.push((id, me, other));
                        established.push((id, me, other));
                    }
                    Output::CloseConnection { conn, .. } => {
                        if let Some(i) = self.conns.iter().position(|c| c.0 == conn) {
                            let (id, x, y) = self.conns.remove(i);
                            self.closed_conns.push((me, id));
                            let left = self.remaining(x, y);
                            for (side, peer) in [(x, y), (y, x)] {
                                let input = Input::ConnectionClosed {
                                    peer,
                                    conn: id,
                                    remaining: left,
                                };
                                self.side(side).handle(input, now);
                            }
                        }
                    }
                    Output::Disconnect(_) => unreachable!("no isolation here"),
                    Output::Discover => self.side(me).handle(Input::DiscoveryFinished, now),
                    Output::OpenStream(_) => {
                        let id = self.next_session;
                        self.next_session += 1;
                        opened.push((id, me, other));
                    }
                    Output::Send {
                        session, id, req, ..
                    } => {
                        self.sent.push((me, session, id));
                        if !self.hold && self.sessions.iter().any(|s| s.0 == session) {
                            assert!(matches!(req, Request::GetBlockHashes { .. }));
                            let resp = Response::BlockHashes(vec![]);
                            let input = Input::Response {
                                peer: other,
                                id,
                                resp,
                            };
                            self.side(me).handle(input, now);
                        }
                    }
                    Output::DropSession(id) => {
                        if let Some(i) = self.sessions.iter().position(|s| s.0 == id) {
                            let (id, x, y) = self.sessions.remove(i);
                            let (other_side, peer) = if me == x { (y, x) } else { (x, y) };
                            let input = Input::SessionClosed {
                                peer,
                                session: id,
                                offence: None,
                            };
                            self.side(other_side).handle(input, now);
                        }
                    }
                    Output::Reply { id, result } => self.replies.push((me, id, result)),
                    Output::DirectReply { .. } | Output::Net(_) | Output::Count(_) => {}
                }
            }
            for (id, dialler, other) in established {
                for (side, peer, we) in [(dialler, other, true), (other, dialler, false)] {
                    let input = Input::ConnectionEstablished {
                        peer,
                        conn: id,
                        we_dialled: we,
                        ip: None,
                    };
                    self.side(side).handle(input, now);
                }
            }
            for (id, opener, other) in &opened {
                self.sessions.push((*id, *opener, *other));
            }
            // Both ends of every stream opened in this step learn of it before either learns
            // how the other's went (a simultaneous open).
            for (id, opener, other) in opened.iter().copied() {
                let input = Input::SessionReady {
                    peer: opener,
                    session: id,
                    outbound: false,
                    head_height: 0,
                };
                self.side(other).handle(input, now);
            }
            for (id, opener, other) in opened {
                let input = Input::SessionReady {
                    peer: other,
                    session: id,
                    outbound: true,
                    head_height: 0,
                };
                self.side(opener).handle(input, now);
            }
        }
        panic!("the pair did not settle");
    }

    fn advance(&mut self, d: Duration) {
        self.t += d;
        let now = self.t;
        self.a.handle(Input::Tick, now);
        self.b.handle(Input::Tick, now);
        self.settle();
    }
}

#[test]
fn simultaneous_dials_keep_the_connection_the_lower_id_dialled_on_both_sides() {
    let t0 = Instant::now();
    let mut p = Pair::new(t0);
    // Both cores dial each other at start (each other's bootnode): two connections cross.
    p.settle();
    assert_eq!(p.conns.len(), 1, "one connection survives: {:?}", p.conns);
    let (kept, dialler, _) = p.conns[0];
    assert_eq!(
        dialler, 1,
        "the connection dialled by the lower peer id is kept"
    );
    // Both sides closed the same (other) connection, so neither closed the kept one.
    assert!(
        p.closed_conns.iter().all(|(_, c)| *c != kept),
        "{:?}",
        p.closed_conns
    );
    assert_eq!(p.a.connections(), 1);
    assert_eq!(p.b.connections(), 1);
    // And exactly one sync stream came up over it, on both sides.
    assert_eq!(p.a.stream_peers(), vec![2]);
    assert_eq!(p.b.stream_peers(), vec![1]);
    assert_eq!(p.sessions.len(), 1, "{:?}", p.sessions);
}

#[test]
fn a_peer_is_reported_only_once_its_connections_settle() {
    let t0 = Instant::now();
    let mut a = core(1, &[2], t0);
    let out = drain(&mut a);
    assert!(out.contains(&Output::Dial {
        peer: 2,
        addrs: vec![102]
    }));
    // The peer's own dial lands first, while ours is still pending: not settled.
    a.handle(
        Input::ConnectionEstablished {
            peer: 2,
            conn: 10,
            we_dialled: false,
            ip: None,
        },
        t0,
    );
    assert_eq!(opens(&drain(&mut a)), 0, "a dial of ours to it is pending");
    // Ours lands: two connections. The one we (the lower id) dialled is kept.
    a.handle(
        Input::ConnectionEstablished {
            peer: 2,
            conn: 11,
            we_dialled: true,
            ip: None,
        },
        t0,
    );
    let out = drain(&mut a);
    assert_eq!(
        out,
        vec![Output::CloseConnection { peer: 2, conn: 10 }],
        "close the duplicate and wait"
    );
    // Only when the duplicate is gone is the peer settled: now the stream opens.
    a.handle(
        Input::ConnectionClosed {
            peer: 2,
            conn: 10,
            remaining: 1,
        },
        t0,
    );
    assert_eq!(drain(&mut a), vec![Output::OpenStream(2)]);
    // A second report of the same settled state opens nothing more.
    a.handle(Input::Tick, t0 + Duration::from_millis(1));
    assert_eq!(opens(&drain(&mut a)), 0);
}

#[test]
fn a_higher_id_keeps_the_connection_the_peer_dialled() {
    let t0 = Instant::now();
    let mut b = core(2, &[], t0);
    for (conn, we_dialled) in [(20, true), (21, false)] {
        b.handle(
            Input::ConnectionEstablished {
                peer: 1,
                conn,
                we_dialled,
                ip: None,
            },
            t0,
        );
    }
    let closes: Vec<Out> = drain(&mut b)
        .into_iter()
        .filter(|o| matches!(o, Output::CloseConnection { .. }))
        .collect();
    assert_eq!(
        closes,
        vec![Output::CloseConnection { peer: 1, conn: 20 }],
        "peer 1 is lower: the one it dialled (21) stays"
    );
}

#[test]
fn simultaneous_stream_opens_end_with_one_stream_on_one_connection() {
    let t0 = Instant::now();
    let mut p = Pair::new(t0);
    p.settle();
    // Drop the stream from both sides at once: both reopen after their cooldowns, at the same
    // instant, so the opens cross.
    let sid = p.sessions[0].0;
    p.end_session(sid);
    for _ in 0..40 {
        p.advance(Duration::from_millis(500));
    }
    assert_eq!(p.a.stream_peers(), vec![2]);
    assert_eq!(p.b.stream_peers(), vec![1]);
    assert_eq!(p.sessions.len(), 1, "one stream survives: {:?}", p.sessions);
    assert_eq!(p.conns.len(), 1);
}

#[test]
fn a_request_queued_when_its_session_closes_goes_out_on_the_next_one() {
    let t0 = Instant::now();
    let mut p = Pair::new(t0);
    p.settle();
    let first = p.sessions[0].0;
    // The only session ends; a request submitted now waits in the queue.
    p.end_session(first);
    let req = Request::GetBlockHashes { from: 1, count: 8 };
    let id = p.a.submit(req, None, p.t).unwrap();
    p.settle();
    assert!(p.sent.is_empty(), "nothing to send it on yet");
    assert_eq!(p.a.requests_queued(), 1);
    // The stream comes back after the cooldown; the queued request goes out on it, once, and
    // its caller hears exactly one reply.
    for _ in 0..40 {
        p.advance(Duration::from_millis(500));
    }
    let second = p.sessions[0].0;
    assert_ne!(second, first);
    assert_eq!(p.sent, vec![(1, second, id)]);
    assert_eq!(p.replies.len(), 1);
    assert!(matches!(&p.replies[0], (1, i, Ok((2, Response::BlockHashes(_)))) if *i == id));
}

#[test]
fn a_request_written_to_a_closed_channel_is_requeued_not_lost() {
    let t0 = Instant::now();
    let mut p = Pair::new(t0);
    p.settle();
    p.hold = true;
    let req = Request::GetBlockHashes { from: 1, count: 8 };
    let id = p.a.submit(req, None, p.t).unwrap();
    p.settle();
    let (_, session, sent_id) = p.sent[0];
    assert_eq!(sent_id, id);
    // The driver found the session's channel closed (its task ended; the close report is on
    // the way): the session ends now and the request goes back to the queue.
    p.a.handle(
        Input::SendFailed {
            peer: 2,
            session,
            id,
            closed: true,
        },
        p.t,
    );
    let out = drain(&mut p.a);
    assert!(out.contains(&Output::DropSession(session)), "{out:?}");
    assert!(out.contains(&Output::Net(NetEvent::PeerGone(2))), "{out:?}");
    assert!(
        !out.iter().any(|o| matches!(o, Output::Reply { .. })),
        "the caller is not failed: {out:?}"
    );
    assert_eq!(p.a.requests_in_flight() + p.a.requests_queued(), 1);
    // The session's own close report arrives later and changes nothing.
    p.a.handle(closed(2, session), p.t);
    assert!(drain(&mut p.a).is_empty());
}

#[test]
fn direct_requests_fail_once_when_their_session_ends() {
    let t0 = Instant::now();
    let mut p = Pair::new(t0);
    p.settle();
    assert_eq!(
        p.a.submit_direct(3).unwrap_err(),
        RequestError::NoStream,
        "no session with that peer"
    );
    let (id, session) = p.a.submit_direct(2).unwrap();
    assert!(id.is_direct());
    let (id2, _) = p.a.submit_direct(2).unwrap();
    assert_ne!(id, id2);
    // A reply from another peer does not answer it.
    p.a.handle(
        Input::Response {
            peer: 9,
            id,
            resp: Response::BlockHashes(vec![]),
        },
        p.t,
    );
    assert!(drain(&mut p.a).is_empty());
    // The first is answered; the second fails when the session ends, exactly once.
    p.a.handle(
        Input::Response {
            peer: 2,
            id,
            resp: Response::BlockHashes(vec![]),
        },
        p.t,
    );
    assert_eq!(
        drain(&mut p.a),
        vec![Output::DirectReply {
            id,
            result: Ok(Response::BlockHashes(vec![]))
        }]
    );
    p.a.handle(closed(2, session), p.t);
    let out = drain(&mut p.a);
    let failed: Vec<&Out> = out
        .iter()
        .filter(|o| matches!(o, Output::DirectReply { .. }))
        .collect();
    assert_eq!(
        failed,
        vec![&Output::DirectReply {
            id: id2,
            result: Err(RequestError::NoStream)
        }]
    );
    p.a.handle(closed(2, session), p.t);
    assert!(drain(&mut p.a).is_empty(), "a second close finds nothing");
}

#[test]
fn a_dead_connection_ends_its_sessions_at_once_and_blocks_new_ones_until_it_is_gone() {
    let t0 = Instant::now();
    let mut p = Pair::new(t0);
    p.settle();
    let (conn, ..) = p.conns[0];
    let session = p.sessions[0].0;
    p.a.handle(Input::ConnectionDead { peer: 2, conn }, p.t);
    let out = drain(&mut p.a);
    assert_eq!(out[0], Output::CloseConnection { peer: 2, conn });
    assert!(out.contains(&Output::DropSession(session)), "{out:?}");
    assert!(out.contains(&Output::Net(NetEvent::PeerGone(2))), "{out:?}");
    assert!(p.a.stream_peers().is_empty());
    // The close takes as long as the dead path holds it: no stream opens meanwhile, however
    // long we wait, and a second ping failure changes nothing.
    for _ in 0..10 {
        p.t += Duration::from_secs(1);
        p.a.handle(Input::Tick, p.t);
    }
    p.a.handle(Input::ConnectionDead { peer: 2, conn }, p.t);
    let out = drain(&mut p.a);
    assert_eq!(opens(&out), 0, "{out:?}");
    assert!(
        !out.iter().any(|o| matches!(o, Output::Dial { .. })),
        "{out:?}"
    );
    // Once it is gone a new connection settles and a stream opens.
    p.a.handle(
        Input::ConnectionClosed {
            peer: 2,
            conn,
            remaining: 0,
        },
        p.t,
    );
    p.a.handle(
        Input::ConnectionEstablished {
            peer: 2,
            conn: 99,
            we_dialled: false,
            ip: None,
        },
        p.t,
    );
    let out = drain(&mut p.a);
    assert_eq!(opens(&out), 1, "{out:?}");
}

#[test]
fn isolation_disconnects_refuses_and_dials_nothing_until_lifted() {
    let t0 = Instant::now();
    let mut p = Pair::new(t0);
    p.settle();
    let isolate = |on| Input::Faults {
        isolate: on,
        forced_discovery: None,
        storm_canary: false,
    };
    p.a.handle(isolate(true), p.t);
    let out: Vec<Out> = std::iter::from_fn(|| p.a.poll_output()).collect();
    assert!(out.contains(&Output::Disconnect(2)), "{out:?}");
    assert!(out.contains(&Output::Count(Count::Injected(Injected::Isolate))));
    // Restating the same set counts nothing.
    p.a.handle(isolate(true), p.t);
    assert!(!std::iter::from_fn(|| p.a.poll_output()).any(|o| matches!(
        o,
        Output::Count(Count::Injected(Injected::Isolate)) | Output::Disconnect(_)
    )));
    p.a.handle(
        Input::ConnectionEstablished {
            peer: 2,
            conn: 50,
            we_dialled: false,
            ip: None,
        },
        p.t,
    );
    assert_eq!(
        drain(&mut p.a),
        vec![Output::CloseConnection { peer: 2, conn: 50 }]
    );
}

#[test]
fn fault_sets_add_to_the_configured_discovery_settings_and_do_not_clear_them() {
    let t0 = Instant::now();
    let mut c = cfg();
    c.streams.forced_discovery = Some(Duration::from_secs(1));
    let spec = spec_for(&key(1));
    let mut a: Core = Peers::new(1, spec, c, vec![], 1, 0, t0);
    // A fault set that leaves discovery alone (e.g. only a setup failure rate) keeps the
    // configured forced rounds going.
    a.handle(
        Input::Faults {
            isolate: false,
            forced_discovery: None,
            storm_canary: false,
        },
        t0,
    );
    let mut discover = 0;
    for s in 1..=10 {
        a.handle(Input::Tick, t0 + Duration::from_secs(s));
        for o in drain(&mut a) {
            if o == Output::Discover {
                discover += 1;
                a.handle(Input::DiscoveryFinished, t0 + Duration::from_secs(s));
            }
        }
    }
    assert!(
        discover >= 5,
        "forced rounds (every 1 s, jittered): {discover}"
    );
}

/// A core with one inbound connection from `peer` (it dialled us).
fn connected_core(local: u32, peer: u32, t0: Instant) -> Core {
    let mut c = core(local, &[], t0);
    c.handle(
        Input::ConnectionEstablished {
            peer,
            conn: 1,
            we_dialled: false,
            ip: None,
        },
        t0,
    );
    drain(&mut c);
    c
}

fn inbound_ready(c: &mut Core, peer: u32, session: SessionId, t: Instant) -> Vec<Out> {
    c.handle(
        Input::SessionReady {
            peer,
            session,
            outbound: false,
            head_height: 0,
        },
        t,
    );
    drain(c)
}

/// A lower id's stream once won every tie, a penalty's cooldown included: a peer whose id sorts
/// below ours reopened at once after each malformed frame and was accepted every time.
#[test]
fn a_peer_that_sent_a_malformed_frame_is_refused_on_reopen_whatever_its_id() {
    let t0 = Instant::now();
    let t = t0 + Duration::from_millis(10);
    for peer in [1u32, 9] {
        // After the handshake: a stream is up (ours, which the core opened on connecting), then
        // the peer sends a malformed frame and reopens at once.
        let mut c = connected_core(5, peer, t0);
        c.handle(
            Input::SessionReady {
                peer,
                session: 10,
                outbound: true,
                head_height: 0,
            },
            t0,
        );
        drain(&mut c);
        assert_eq!(c.stream_peers(), vec![peer]);
        c.handle(
            Input::SessionClosed {
                peer,
                session: 10,
                offence: Some(Offence::Malformed),
            },
            t0,
        );
        drain(&mut c);
        let out = inbound_ready(&mut c, peer, 11, t);
        assert!(
            out.contains(&Output::DropSession(11)),
            "peer {peer}: {out:?}"
        );
        assert!(c.stream_peers().is_empty(), "peer {peer}");

        // Before the handshake: a frame that is not one counts the same.
        let mut c = connected_core(5, peer, t0);
        c.handle(
            Input::SessionFailed {
                peer,
                outbound: false,
                wrong_network: false,
                malformed: true,
            },
            t0,
        );
        drain(&mut c);
        let out = inbound_ready(&mut c, peer, 12, t);
        assert!(
            out.contains(&Output::DropSession(12)),
            "peer {peer}: {out:?}"
        );
        assert!(c.stream_peers().is_empty(), "peer {peer}");
        // One offence is not a ban: after the penalty cooldown the peer is welcome again.
        assert!(!c.is_banned(&peer, t));
        let later = t0 + Duration::from_secs(60);
        c.handle(Input::Tick, later);
        let reopen = drain(&mut c).contains(&Output::OpenStream(peer));
        c.handle(
            Input::SessionReady {
                peer,
                session: 13,
                outbound: reopen,
                head_height: 0,
            },
            later,
        );
        drain(&mut c);
        assert_eq!(c.stream_peers(), vec![peer], "peer {peer}");
    }
}

#[test]
fn a_bad_announce_flood_bans_the_peer_and_its_connections_are_refused() {
    let t0 = Instant::now();
    let mut c = connected_core(5, 1, t0);
    inbound_ready(&mut c, 1, 10, t0);
    let spec = spec_for(&key(1));
    let mut header = spec.genesis().header.clone();
    let mut counts = vec![];
    let mut disconnected = false;
    for h in 1..=1000u64 {
        header.height = h;
        c.handle(
            Input::Announce {
                peer: 1,
                header: header.clone(),
                signature: crate::chain::Sig([7; 64]),
            },
            t0,
        );
        for o in std::iter::from_fn(|| c.poll_output()) {
            match o {
                Output::Count(Count::BadAnnounce) => counts.push(h),
                Output::Disconnect(1) => disconnected = true,
                _ => {}
            }
        }
    }
    // Four bad announces ban it; the rest are not even verified.
    assert_eq!(counts, vec![1, 2, 3, 4]);
    assert!(disconnected);
    assert!(c.is_banned(&1, t0));
    assert_eq!(c.banned_count(t0), 1);
    c.handle(
        Input::ConnectionClosed {
            peer: 1,
            conn: 1,
            remaining: 0,
        },
        t0,
    );
    c.handle(
        Input::ConnectionEstablished {
            peer: 1,
            conn: 2,
            we_dialled: false,
            ip: None,
        },
        t0 + Duration::from_secs(1),
    );
    let out = drain(&mut c);
    assert!(
        out.contains(&Output::CloseConnection { peer: 1, conn: 2 }),
        "{out:?}"
    );
}

/// Client-side request metrics name a request by its kind, the server's vocabulary
/// (`blocks_by_range`, not the reply's `blocks`), however the attempt ended; a reply that answers
/// no attempt of ours is not counted.
#[test]
fn request_counts_name_the_requests_kind_however_it_ends() {
    let t0 = Instant::now();
    let mut p = Pair::new(t0);
    p.settle();
    p.hold = true;
    let counts = |c: &mut Core| -> Vec<Count> {
        std::iter::from_fn(|| c.poll_output())
            .filter_map(|o| match o {
                Output::Count(k @ (Count::Request { .. } | Count::Latency(..))) => Some(k),
                _ => None,
            })
            .collect()
    };
    let send = |p: &mut Pair, req: Request| {
        let id = p.a.submit(req, None, p.t).unwrap();
        p.settle();
        assert_eq!(p.sent.last().map(|s| s.2), Some(id));
        id
    };
    let answer = |id, resp| Input::Response { peer: 2, id, resp };

    let range = Request::GetBlocksByRange {
        from: 1,
        count: 4,
        max_bytes: 1 << 20,
    };
    let id = send(&mut p, range);
    let later = p.t + Duration::from_millis(30);
    p.a.handle(answer(id, Response::Blocks(vec![])), later);
    assert_eq!(
        counts(&mut p.a),
        [
            Count::Latency(RequestKind::BlocksByRange, Duration::from_millis(30)),
            Count::Request {
                kind: RequestKind::BlocksByRange,
                outcome: RequestOutcome::Ok,
            },
        ]
    );
    // Answered already: a second reply is nobody's.
    p.a.handle(answer(id, Response::Blocks(vec![])), later);
    assert_eq!(counts(&mut p.a), []);

    let id = send(&mut p, Request::Status);
    let not_found = Response::Error(ErrorReply::NotFound);
    p.a.handle(answer(id, not_found), later);
    assert!(counts(&mut p.a).contains(&Count::Request {
        kind: RequestKind::Status,
        outcome: RequestOutcome::Remote(ErrorReply::NotFound),
    }));

    send(&mut p, Request::GetBlockHashes { from: 1, count: 8 });
    p.a.handle(Input::Tick, p.t + Duration::from_secs(11));
    assert!(counts(&mut p.a).contains(&Count::Request {
        kind: RequestKind::BlockHashes,
        outcome: RequestOutcome::Timeout,
    }));
}
