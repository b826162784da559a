//! The peers core's vocabulary: its configuration, inputs, outputs and metric events.

use std::time::Duration;

use serde::Serialize;

use super::admission::{AdmissionConfig, Refusal};
use super::reputation::{Offence, ReputationConfig};
use crate::chain::{Header, Sig};
use crate::dial::{DialConfig, DialOutcome};
use crate::faults::FaultKind;
use crate::requests::{GiveUp, ReqId, RequestConfig};
use crate::streams::{self, InjectedRound, RemovalReason, ResetReason, SetupFailure, StreamConfig};
use crate::wire::{ErrorReply, Request, RequestKind, Response};

/// A sync stream's id (the stream manager's `StreamId`).
pub type SessionId = streams::StreamId;

/// What the peers core needs to know.
#[derive(Clone, Debug)]
pub struct PeersConfig {
    pub streams: StreamConfig,
    pub requests: RequestConfig,
    pub dials: DialConfig,
    /// The pace (cost units per second, burst) a server grants one stream: every node runs the
    /// same rate-limit defaults, so ours stands for the peer's.
    pub pace: (u32, u32),
    /// Most direct (unmanaged) requests awaiting replies at once.
    pub max_direct: usize,
    pub reputation: ReputationConfig,
    pub admission: AdmissionConfig,
}

/// Counters the tests and `/status` read without scraping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SetupCounters {
    pub started: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub removed: u64,
    pub discovery_rounds: u64,
}

/// What the sync layer needs to hear from the p2p layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetEvent<P> {
    /// A peer with a sync stream has (at least) this verified head.
    PeerHead { peer: P, height: u64 },
    /// The peer's sync stream is gone.
    PeerGone(P),
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RequestError {
    #[error("request queue full")]
    QueueFull,
    #[error("gave up: {0:?}")]
    GaveUp(GiveUp),
    #[error("peer answered with an error: {0}")]
    Remote(ErrorReply),
    #[error("no sync stream to that peer")]
    NoStream,
    #[error("the p2p layer stopped")]
    Stopped,
}

/// One input to the core.
#[derive(Debug)]
pub enum Input<P, C> {
    /// Time passed; call at [`Peers::poll_timeout`] at the latest.
    Tick,
    /// A connection is up; `we_dialled` when it is our outbound one; `ip` the remote address's,
    /// when it has one (admission's per-IP caps).
    ConnectionEstablished {
        peer: P,
        conn: C,
        we_dialled: bool,
        ip: Option<std::net::IpAddr>,
    },
    /// A connection closed; `remaining` connections to the peer are left.
    ConnectionClosed { peer: P, conn: C, remaining: usize },
    /// Ping found the connection dead (the driver closes it; the close completes later).
    ConnectionDead { peer: P, conn: C },
    /// An outbound connection attempt failed, or the swarm refused to start one.
    DialFailed(P),
    /// A discovery mechanism found the peer.
    Discovered(P),
    /// The discovery round the core asked for ([`Output::Discover`]) is over.
    DiscoveryFinished,
    /// The peer belongs to another network: it is blocked and disconnected.
    Foreign(P),
    /// A sync stream finished its handshake.
    SessionReady {
        peer: P,
        session: SessionId,
        outbound: bool,
        head_height: u64,
    },
    /// A sync stream failed before it was ready; `malformed` when the peer broke the handshake
    /// (a frame that does not decode, or not a handshake).
    SessionFailed {
        peer: P,
        outbound: bool,
        wrong_network: bool,
        malformed: bool,
    },
    /// A ready sync stream ended; `offence` when it ended for the peer's misbehaviour (a frame
    /// that does not decode, replies it did not read, a frame it did not finish).
    SessionClosed {
        peer: P,
        session: SessionId,
        offence: Option<Offence>,
    },
    /// A [`Output::Send`] could not be queued: the session's channel is `closed` (its task
    /// ended and its `SessionClosed` is on the way) or full.
    SendFailed {
        peer: P,
        session: SessionId,
        id: ReqId,
        closed: bool,
    },
    /// A response arrived on a session.
    Response { peer: P, id: ReqId, resp: Response },
    /// A peer announced a new head.
    Announce {
        peer: P,
        header: Header,
        signature: Sig,
    },
    /// The sync layer drops the peer's streams as penalised.
    Penalise(P),
    /// A session served the peer a request (sent at most once a second per session): its stream
    /// is in use, not idle.
    Served(P),
    /// The driver or a session caught the peer misbehaving (slow reader, stalled frame).
    Offence(P, Offence),
    /// The caller of this request stopped waiting.
    Cancel(ReqId),
    /// The local head height (the store's), for the stream manager's staleness.
    LocalHead(u64),
    /// The faults this core applies: isolation, forced discovery, the storm canary (the last two
    /// on top of the configured `forced_discovery` / `storm_canary`).
    Faults {
        isolate: bool,
        forced_discovery: Option<Duration>,
        storm_canary: bool,
    },
}

/// One thing for the driver to do.
#[derive(Debug, PartialEq)]
pub enum Output<P, C, A> {
    /// Dial the peer at these addresses (and whatever the behaviours know); report a refusal
    /// or failure as [`Input::DialFailed`].
    Dial { peer: P, addrs: Vec<A> },
    /// Close this connection (a duplicate, a dead one, or one refused on arrival).
    CloseConnection { peer: P, conn: C },
    /// Close every connection to the peer.
    Disconnect(P),
    /// Run a discovery round and report [`Input::DiscoveryFinished`].
    Discover,
    /// Open a sync stream to the peer.
    OpenStream(P),
    /// Write this request on the session; report a failure as [`Input::SendFailed`].
    Send {
        peer: P,
        session: SessionId,
        id: ReqId,
        req: Request,
    },
    /// Drop the session's channels: its stream closes.
    DropSession(SessionId),
    /// The answer to a managed request ([`Peers::submit`]).
    Reply {
        id: ReqId,
        result: Result<(P, Response), RequestError>,
    },
    /// The answer to a direct request ([`Peers::submit_direct`]).
    DirectReply {
        id: ReqId,
        result: Result<Response, RequestError>,
    },
    /// For the sync layer.
    Net(NetEvent<P>),
    /// For metrics.
    Count(Count),
}

/// A metric event; every label is a closed enum's `label()`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Count {
    /// `dials_total{outcome}`: a dial decision, or `connected` / `failed`.
    Dial(DialOutcome),
    Setup(Result<(), SetupFailure>),
    Removal(RemovalReason),
    Reset(ResetReason),
    DiscoveryRound {
        productive: bool,
    },
    PeerFound,
    Injected(Injected),
    /// A rate-limited reply received.
    RateLimitedReceived,
    /// An attempt of a managed request ended: its kind and outcome.
    Request {
        kind: RequestKind,
        outcome: RequestOutcome,
    },
    /// A managed request's latency (a successful attempt), by its kind.
    Latency(RequestKind, Duration),
    ForeignPeer,
    BadAnnounce,
    /// `peer_offences_total{offence}`.
    Offence(Offence),
    /// A peer was banned (`peer_bans_total`).
    Banned,
    /// A connection was refused on arrival or evicted (`connections_refused_total{reason}`).
    Refused(Refusal),
    /// The local head is (not) stale.
    HeadStale(bool),
}

/// `faults_injected_total{kind}` of the faults this core applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injected {
    Isolate,
    Round(InjectedRound),
}

impl Injected {
    /// The fault injected (`faults_injected_total{kind}`).
    pub fn kind(self) -> FaultKind {
        match self {
            Injected::Isolate => FaultKind::Isolate,
            Injected::Round(r) => r.kind(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    Ok,
    Timeout,
    Remote(ErrorReply),
}

impl RequestOutcome {
    /// One of each label value.
    pub fn all() -> impl Iterator<Item = RequestOutcome> {
        [RequestOutcome::Ok, RequestOutcome::Timeout]
            .into_iter()
            .chain(ErrorReply::ALL.map(RequestOutcome::Remote))
    }

    pub fn label(self) -> &'static str {
        match self {
            RequestOutcome::Ok => "ok",
            RequestOutcome::Timeout => "timeout",
            RequestOutcome::Remote(e) => e.label(),
        }
    }
}

crate::label_enum! {
    /// The core's bounded tables (`tracked_entries{table}`, see [`super::Peers::tracked`]).
    pub enum Table {
        DialBook => "dial_book",
        Reputation => "reputation",
        Sessions => "sessions",
        DirectRequests => "direct_requests",
    }
}
