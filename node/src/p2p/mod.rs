//! libp2p driver: owns the swarm and feeds the sans-IO cores (stream manager, request manager, dial
//! manager) with events, executing their actions. One task, one loop; sessions run in their own
//! tasks and talk to the loop over bounded channels.
//!
//! Connection rules (see docs/protocol.md):
//! - every dial goes through the dial manager and uses a fresh port (`allocate_new_port`), so two
//!   peers dialling each other at once get two TCP connections instead of one broken one;
//! - with two connections to a peer, the one dialled by the lower peer id is kept, on both sides;
//! - the stream manager hears "connected" only once a peer has exactly one connection and no dial
//!   of ours to it is pending, so the sync stream is never opened on a connection about to close.

mod dial;
mod gate;
pub mod gossip;
pub mod ida;
pub mod session;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Transport;
use libp2p::gossipsub::{self, MessageAcceptance, MessageId};
use libp2p::kad::{self, store::MemoryStore};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, identify, identity, noise, ping, tcp, yamux,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

pub use dial::{DialConfig, DialDecision, DialManager};

use crate::chain::ChainSpec;
use crate::metrics::P2pMetrics;
use crate::netem::{Netem, NetemConfig, PartitionSet, validate_region};
use crate::ratelimit::{RateLimitConfig, ServerLimiter};
use crate::requests::{FailKind, GiveUp, ReqAction, ReqId, RequestConfig, RequestManager};
use crate::store::Store;
use crate::streams::{
    self, Action as SmAction, Event as SmEvent, RemovalReason, Report, StreamConfig, StreamManager,
    StreamStats,
};
use crate::wire::{self, ErrorReply, Limits, Message, Request, Response};
use session::{CloseReason, SessionCtx, SessionEvent, SetupError};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct P2pConfig {
    /// Multiaddrs to listen on.
    pub listen: Vec<Multiaddr>,
    /// Multiaddrs of bootnodes, each ending in `/p2p/<peer id>`.
    pub bootnodes: Vec<Multiaddr>,
    /// Node identity key (`syncnode keygen --kind node`); default `<data_dir>/node.key`, created
    /// on first start.
    pub key_file: Option<std::path::PathBuf>,
    pub streams: StreamConfig,
    pub requests: RequestConfig,
    pub rate_limit: RateLimitConfig,
    pub max_frame_bytes: usize,
    pub max_blocks_per_request: u32,
    pub max_bytes_per_response: u32,
    pub max_connections: usize,
    /// libp2p ping period per connection; a ping unanswered within `ping_timeout` marks the
    /// connection dead (its streams end at once, see `Driver::connection_dead`).
    #[serde(with = "crate::util::millis")]
    pub ping_interval: Duration,
    #[serde(with = "crate::util::millis")]
    pub ping_timeout: Duration,
    /// This node's region (a label; `/status` shows it; network emulation keys on it).
    pub region: Option<String>,
    /// In-process emulation of region latency, upload bandwidth and partitions; off when absent.
    /// Must be set on every node of a network or on none (the connection preamble differs).
    pub netem: Option<NetemConfig>,
    /// gossipsub (the broadcast baseline) runs only when set; set from `broadcast` by the node.
    #[serde(skip)]
    pub gossipsub: Option<gossip::GossipConfig>,
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid")],
            bootnodes: vec![],
            key_file: None,
            streams: StreamConfig::default(),
            requests: RequestConfig::default(),
            rate_limit: RateLimitConfig::default(),
            max_frame_bytes: wire::DEFAULT_MAX_FRAME,
            max_blocks_per_request: 1024,
            max_bytes_per_response: 8 * 1024 * 1024,
            max_connections: 128,
            ping_interval: Duration::from_secs(15),
            ping_timeout: Duration::from_secs(20),
            region: None,
            netem: None,
            gossipsub: None,
        }
    }
}

impl P2pConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.streams
            .validate()
            .map_err(|e| format!("p2p.streams: {e}"))?;
        self.requests
            .validate()
            .map_err(|e| format!("p2p.requests: {e}"))?;
        self.rate_limit
            .validate()
            .map_err(|e| format!("p2p.rate_limit: {e}"))?;
        if self.listen.is_empty() {
            return Err("p2p.listen: at least one address is needed".into());
        }
        for (i, b) in self.bootnodes.iter().enumerate() {
            if peer_of(b).is_none() {
                return Err(format!(
                    "p2p.bootnodes[{i}]: {b} does not end in /p2p/<peer id>"
                ));
            }
        }
        if !(1024..=256 * 1024 * 1024).contains(&self.max_frame_bytes) {
            return Err("p2p.max_frame_bytes: must be within 1 KiB..=256 MiB".into());
        }
        if self.max_bytes_per_response as usize + 4096 > self.max_frame_bytes {
            return Err(
                "p2p.max_bytes_per_response: must leave 4 KiB of room below max_frame_bytes".into(),
            );
        }
        if self.max_blocks_per_request == 0 || self.max_connections < 2 {
            return Err("p2p.max_blocks_per_request must be > 0 and max_connections >= 2".into());
        }
        if self.ping_interval.is_zero() || self.ping_timeout.is_zero() {
            return Err("p2p.ping_interval, p2p.ping_timeout: must be > 0".into());
        }
        if let Some(r) = &self.region {
            validate_region(r).map_err(|e| format!("p2p.region: {e}"))?;
        }
        if let Some(n) = &self.netem {
            let Some(region) = &self.region else {
                return Err(
                    "p2p.netem: needs p2p.region (which row of the matrix is this node)".into(),
                );
            };
            n.validate(region).map_err(|e| format!("p2p.netem.{e}"))?;
        }
        Ok(())
    }
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(p)) => Some(p),
        _ => None,
    }
}

pub fn sync_protocol(network: &str) -> StreamProtocol {
    StreamProtocol::try_from_owned(format!("/syncnet/{network}/sync/1")).expect("starts with /")
}

/// The identify protocol version; peers announcing another one are refused.
pub fn network_version(network: &str) -> String {
    format!("/syncnet/{network}/1")
}

/// Loads the node identity from `path`, creating it if missing.
pub fn load_or_create_identity(path: &Path) -> anyhow::Result<identity::Keypair> {
    if !path.exists() {
        crate::keys::write(path, &crate::keys::generate(), "node", false)
            .with_context(|| format!("creating node key {}", path.display()))?;
    }
    let key = crate::keys::read(path).map_err(anyhow::Error::msg)?;
    Ok(identity_of(&key))
}

/// The libp2p identity of a node key (its peer id is what bootnode addresses end in).
pub fn identity_of(key: &ed25519_dalek::SigningKey) -> identity::Keypair {
    identity::Keypair::ed25519_from_bytes(key.to_bytes()).expect("32 bytes")
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: libp2p::connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: gate::DialGate<kad::Behaviour<MemoryStore>>,
    stream: gate::DialGate<libp2p_stream::Behaviour>,
    gossipsub: Toggle<gossipsub::Behaviour>,
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

/// Counters the tests and `/status` read without scraping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SetupCounters {
    pub started: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub removed: u64,
    pub discovery_rounds: u64,
}

/// Snapshot of the p2p layer, published after every loop turn that changed something.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NetState {
    #[serde(serialize_with = "ser_display_vec")]
    pub listen_addrs: Vec<Multiaddr>,
    #[serde(serialize_with = "ser_display_vec")]
    pub stream_peers: Vec<PeerId>,
    pub connections: usize,
    pub stats: StreamStats,
    pub counters: SetupCounters,
    pub ready_for_sync: bool,
    /// Highest verified head height reported by a peer with a stream.
    pub best_peer_height: u64,
    /// Managed requests queued or in flight.
    pub requests_outstanding: usize,
    /// Peers subscribed to the gossipsub block topic (0 without gossipsub).
    pub gossip_peers: usize,
}

fn ser_display_vec<S: serde::Serializer, T: std::fmt::Display>(
    v: &[T],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|x| x.to_string()))
}

/// What the sync layer needs to hear from the p2p layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetEvent {
    /// A peer with a sync stream has (at least) this verified head.
    PeerHead { peer: PeerId, height: u64 },
    /// The peer's sync stream is gone.
    PeerGone(PeerId),
}

/// Queued net events before new ones are dropped (the consumer re-learns heads from announces).
const NET_EVENTS: usize = 4096;

enum Command {
    Request {
        req: Request,
        only: Option<Vec<PeerId>>,
        reply: oneshot::Sender<Result<(PeerId, Response), RequestError>>,
    },
    Direct {
        peer: PeerId,
        req: Request,
        reply: oneshot::Sender<Result<Response, RequestError>>,
    },
    Dial(Multiaddr),
    Announce(Box<wire::Announce>),
    Penalise(PeerId),
    /// Faults the swarm task applies itself; `done` fires once they hold.
    SwarmFaults {
        isolate: bool,
        forced_discovery: Option<Duration>,
        storm_canary: bool,
        done: oneshot::Sender<()>,
    },
    Publish(Vec<u8>),
    GossipVerdict(MessageId, PeerId, MessageAcceptance),
    Shutdown(oneshot::Sender<()>),
}

/// Handle to a running p2p layer. Cheap to clone.
#[derive(Clone)]
pub struct P2pHandle {
    tx: mpsc::Sender<Command>,
    state: watch::Receiver<NetState>,
    ctx: Arc<SessionCtx>,
    events: Arc<std::sync::Mutex<Option<mpsc::Receiver<NetEvent>>>>,
    gossip_in: Arc<std::sync::Mutex<Option<mpsc::Receiver<gossip::Inbound>>>>,
    ida_faults: Arc<ida::IdaFaults>,
    pub local_peer_id: PeerId,
    region: Option<String>,
    netem: Option<Arc<Netem>>,
    control: libp2p_stream::Control,
}

impl P2pHandle {
    /// Sends a request through the request manager (pacing, retries, stream choice).
    pub async fn request(
        &self,
        req: Request,
        only: Option<Vec<PeerId>>,
    ) -> Result<(PeerId, Response), RequestError> {
        self.ask(|reply| Command::Request { req, only, reply })
            .await
    }

    /// Sends a request straight onto the stream to `peer`, bypassing pacing, retries and
    /// rate-limit handling. For tools and tests (e.g. a deliberately misbehaving client).
    pub async fn request_direct(
        &self,
        peer: PeerId,
        req: Request,
    ) -> Result<Response, RequestError> {
        self.ask(|reply| Command::Direct { peer, req, reply }).await
    }

    /// Sends a command that carries a reply channel and waits for the reply.
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, RequestError>>) -> Command,
    ) -> Result<T, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(command(reply))
            .await
            .map_err(|_| RequestError::Stopped)?;
        rx.await.map_err(|_| RequestError::Stopped)?
    }

    /// Dials an address ending in `/p2p/<peer id>` through the dial manager.
    pub async fn dial(&self, addr: Multiaddr) {
        let _ = self.tx.send(Command::Dial(addr)).await;
    }

    /// Faults held by the swarm task: isolation (drop every connection and refuse new ones),
    /// forced discovery rounds, and the storm canary. Returns once the swarm task has applied
    /// them, so a caller that reads metrics or state next sees their effect.
    pub async fn set_swarm_faults(
        &self,
        isolate: bool,
        forced_discovery: Option<Duration>,
        storm_canary: bool,
    ) {
        let (done, applied) = oneshot::channel();
        let cmd = Command::SwarmFaults {
            isolate,
            forced_discovery,
            storm_canary,
            done,
        };
        if self.tx.send(cmd).await.is_ok() {
            // An error means the swarm task stopped; there is nothing left to apply to.
            let _ = applied.await;
        }
    }

    pub fn set_setup_failure_rate(&self, p: f64) {
        self.ctx.set_setup_failure_rate(p);
    }

    /// Fault: corrupt every block this node serves.
    pub fn set_corrupt_served(&self, on: bool) {
        self.ctx.corrupt_served.store(on, Ordering::Relaxed);
    }

    /// Fault: delay every reply this node serves.
    pub fn set_stall(&self, d: Duration) {
        self.ctx
            .stall_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// Fault: answer this share of served requests with an injected error.
    pub fn set_request_error_rate(&self, p: f64) {
        session::set_rate(&self.ctx.request_error_rate, p);
    }

    /// Fault: reset the stream instead of serving this share of requests.
    pub fn set_stream_reset_rate(&self, p: f64) {
        session::set_rate(&self.ctx.stream_reset_rate, p);
    }

    /// CANARIES: planted memory, fd, thread and CPU defects (all capped; see `canary`).
    pub fn set_canaries(&self, set: crate::canary::CanarySet) {
        self.ctx.canaries.set(set);
    }

    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The network emulation state, when `p2p.netem` is on.
    pub fn netem(&self) -> Option<&Arc<Netem>> {
        self.netem.as_ref()
    }

    /// Fault: hold all traffic with these regions / peers (needs `p2p.netem`; a no-op without).
    pub fn set_partition(&self, set: PartitionSet) {
        if let Some(n) = &self.netem {
            n.set_partition(set);
        }
    }

    /// The stream of peer heads and departures, for the one sync task. `None` after the first call.
    pub fn take_events(&self) -> Option<mpsc::Receiver<NetEvent>> {
        self.events.lock().expect("not poisoned").take()
    }

    /// Tells every peer with a sync stream about a new head.
    pub fn announce(&self, header: crate::chain::Header, signature: crate::chain::Sig) {
        let a = Box::new(wire::Announce { header, signature });
        let _ = self.tx.try_send(Command::Announce(a));
    }

    /// Fault: probability that a received IDA chunk is dropped unread.
    pub fn set_chunk_drop_rate(&self, p: f64) {
        session::set_rate(&self.ida_faults.chunk_drop_rate, p);
    }

    /// Fault: this node corrupts every IDA chunk it sends (a malicious relay).
    pub fn set_corrupt_chunks(&self, on: bool) {
        self.ida_faults.corrupt_chunks.store(on, Ordering::Relaxed);
    }

    /// Counts one injected fault of this kind (a closed set of labels).
    pub fn fault_injected(&self, kind: &'static str) {
        self.ctx
            .metrics
            .faults_injected
            .get_or_create(&[("kind", kind)])
            .inc();
    }

    /// The largest frame this node sends or accepts (`p2p.max_frame_bytes`).
    pub fn max_frame(&self) -> usize {
        self.ctx.max_frame
    }

    /// Publishes an encoded block on the gossipsub topic (when gossipsub runs).
    pub fn publish_block(&self, data: Vec<u8>) {
        let _ = self.tx.try_send(Command::Publish(data));
    }

    /// The validation result for a gossiped message: only accepted ones are forwarded.
    pub fn gossip_verdict(&self, id: MessageId, source: PeerId, verdict: MessageAcceptance) {
        let _ = self
            .tx
            .try_send(Command::GossipVerdict(id, source, verdict));
    }

    /// Gossiped messages waiting for validation, for the one gossip task. `None` after the first
    /// call or without gossipsub.
    pub fn take_gossip(&self) -> Option<mpsc::Receiver<gossip::Inbound>> {
        self.gossip_in.lock().expect("not poisoned").take()
    }

    /// Drops the peer's sync stream as penalised (cooldown follows).
    pub async fn penalise(&self, peer: PeerId) {
        let _ = self.tx.send(Command::Penalise(peer)).await;
    }

    pub fn state(&self) -> NetState {
        self.state.borrow().clone()
    }

    /// Changes of the published state (e.g. the set of peers with sync streams).
    pub fn subscribe(&self) -> watch::Receiver<NetState> {
        self.state.clone()
    }

    /// Opens and accepts streams of other protocols (IDA) on this node's connections.
    pub fn stream_control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    /// Waits until `f` holds for the published state, or the timeout passes.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        f: impl Fn(&NetState) -> bool,
    ) -> Option<NetState> {
        let mut rx = self.state.clone();
        tokio::time::timeout(timeout, async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if f(&s) {
                        return s.clone();
                    }
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
        .ok()
    }

    /// Stops the p2p layer: sessions answer `Shutdown`, then everything closes.
    pub async fn shutdown(&self) {
        self.ctx.shutting_down.store(true, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

struct Session {
    peer: PeerId,
    tx: mpsc::Sender<Vec<u8>>,
    /// Dropped with the session, which closes the stream.
    _close: oneshot::Sender<()>,
    in_use: bool,
    head_height: u64,
}

struct ConnInfo {
    id: ConnectionId,
    dialer: PeerId,
    /// Ping found it dead; it stays listed until libp2p reports it closed.
    dead: bool,
}

type ManagedReply = oneshot::Sender<Result<(PeerId, Response), RequestError>>;
type DirectReply = oneshot::Sender<Result<Response, RequestError>>;

/// Most direct (unmanaged) requests awaiting replies at once.
const MAX_DIRECT: usize = 4096;
/// Period of housekeeping (rate limiter pruning, gauges).
const HOUSEKEEPING: Duration = Duration::from_secs(10);

struct Driver {
    swarm: Swarm<Behaviour>,
    local: PeerId,
    sm: StreamManager<PeerId>,
    rm: RequestManager<PeerId, Request>,
    dials: DialManager<PeerId, Multiaddr>,
    ctx: Arc<SessionCtx>,
    metrics: P2pMetrics,
    protocol: StreamProtocol,
    control: libp2p_stream::Control,
    sessions: HashMap<u64, Session>,
    next_stream_id: Arc<AtomicU64>,
    session_tx: mpsc::Sender<SessionEvent>,
    pending: HashMap<ReqId, ManagedReply>,
    /// Unmanaged requests by id: the peer and the session they were written to, which is the
    /// only session whose end can fail them.
    direct: HashMap<ReqId, (PeerId, u64, DirectReply)>,
    next_direct: ReqId,
    conns: HashMap<PeerId, Vec<ConnInfo>>,
    reported: HashSet<PeerId>,
    bootnodes: Vec<(PeerId, Multiaddr)>,
    discovery_query: Option<kad::QueryId>,
    counters: SetupCounters,
    state_tx: watch::Sender<NetState>,
    listen_addrs: Vec<Multiaddr>,
    next_housekeeping: Instant,
    /// The local head height and when it last changed (for the stream manager's staleness).
    head_seen: (u64, Instant),
    net_events: mpsc::Sender<NetEvent>,
    gossip_tx: mpsc::Sender<gossip::Inbound>,
    /// The block topic, built once (the state is published after every loop iteration).
    gossip_topic: gossipsub::TopicHash,
    isolated: bool,
    /// Aborted when the driver stops, so nothing keeps the store open after shutdown.
    accept_loop: tokio::task::JoinHandle<()>,
}

/// Starts the p2p layer on the current tokio runtime.
pub async fn spawn(
    cfg: P2pConfig,
    keypair: identity::Keypair,
    spec: ChainSpec,
    store: Arc<Store>,
    metrics: P2pMetrics,
) -> anyhow::Result<P2pHandle> {
    cfg.validate().map_err(anyhow::Error::msg)?;
    let local = keypair.public().to_peer_id();
    let network = spec.network_id.clone();
    let kad_protocol =
        StreamProtocol::try_from_owned(format!("/syncnet/{network}/kad/1")).expect("starts with /");
    let max_conns = cfg.max_connections as u32;
    let gossip_cfg = match &cfg.gossipsub {
        Some(g) => Some(
            g.build()
                .map_err(|e| anyhow::anyhow!("broadcast.gossipsub.{e}"))?,
        ),
        None => None,
    };
    let make_behaviour = |key: &identity::Keypair| {
        let mut kcfg = kad::Config::new(kad_protocol);
        kcfg.set_query_timeout(Duration::from_secs(10));
        // Discovery is the stream manager's decision (timer, backoff); kad never starts queries
        // on its own.
        kcfg.set_periodic_bootstrap_interval(None);
        let mut kad = kad::Behaviour::with_config(local, MemoryStore::new(local), kcfg);
        kad.set_mode(Some(kad::Mode::Server));
        let stream = libp2p_stream::Behaviour::new();
        Behaviour {
            limits: libp2p::connection_limits::Behaviour::new(
                libp2p::connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(max_conns))
                    .with_max_pending_incoming(Some(max_conns))
                    .with_max_pending_outgoing(Some(max_conns))
                    // Two: a simultaneous dial yields one each way; the rule closes one.
                    .with_max_established_per_peer(Some(2)),
            ),
            identify: identify::Behaviour::new(
                identify::Config::new(network_version(&network), key.public())
                    .with_agent_version(format!("syncnode/{}", env!("CARGO_PKG_VERSION"))),
            ),
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(cfg.ping_interval)
                    .with_timeout(cfg.ping_timeout),
            ),
            kad: gate::DialGate { inner: kad },
            stream: gate::DialGate { inner: stream },
            gossipsub: Toggle::from(gossip_cfg.clone().map(|c| {
                gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, c)
                    .expect("anonymous authenticity with content ids is a valid combination")
            })),
        }
    };
    let netem = match (&cfg.netem, &cfg.region) {
        (Some(n), Some(region)) => {
            let mut m = metrics.netem.clone();
            m.partition_holds = metrics
                .faults_injected
                .get_or_create(&[("kind", "partition")])
                .clone();
            Some(Arc::new(Netem::new(region.clone(), local, n.clone(), m)))
        }
        _ => None,
    };
    let builder = libp2p::SwarmBuilder::with_existing_identity(keypair).with_tokio();
    // QUIC in addition to TCP when built with `--features quic` (listen on /udp/0/quic-v1); QUIC
    // connections bypass network emulation.
    #[cfg(feature = "quic")]
    let builder = builder.with_quic();
    let mut swarm = builder
        .with_other_transport(|key| {
            tcp_transport(key, netem.clone())
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })?
        // `/dns4/<pod>.<service>/...` bootnodes: on Kubernetes a pod's IP changes with every
        // restart; its stable name is what the operator can write into the config.
        .with_dns()?
        .with_behaviour(make_behaviour)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    for a in &cfg.listen {
        swarm
            .listen_on(a.clone())
            .with_context(|| format!("p2p.listen: {a}"))?;
    }
    if let Some(g) = swarm.behaviour_mut().gossipsub.as_mut() {
        g.subscribe(&gossip::topic(&network))
            .map_err(|e| anyhow::anyhow!("subscribing to the block topic: {e}"))?;
    }
    let (gossip_tx, gossip_rx) = mpsc::channel(gossip::INBOUND_QUEUE);
    let control = swarm.behaviour().stream.inner.new_control();
    let stream_control = control.clone();
    let protocol = sync_protocol(&network);
    let mut incoming = control
        .clone()
        .accept(protocol.clone())
        .map_err(|e| anyhow::anyhow!("registering {protocol}: {e}"))?;

    let limits = Limits {
        max_blocks_per_request: cfg.max_blocks_per_request,
        max_bytes_per_response: cfg.max_bytes_per_response,
        peer_cost_per_sec: cfg.rate_limit.peer_cost_per_sec,
        peer_burst: cfg.rate_limit.peer_burst,
    };
    let ctx = Arc::new(SessionCtx {
        spec,
        store,
        limiter: ServerLimiter::new(&cfg.rate_limit),
        limits,
        max_frame: cfg.max_frame_bytes,
        metrics: metrics.clone(),
        setup_timeout: cfg.streams.setup_timeout,
        setup_failure_rate: AtomicU64::new(0f64.to_bits()),
        corrupt_served: AtomicBool::new(false),
        stall_ms: AtomicU64::new(0),
        request_error_rate: AtomicU64::new(0f64.to_bits()),
        stream_reset_rate: AtomicU64::new(0f64.to_bits()),
        canaries: crate::canary::Canaries::new(Instant::now()),
        shutting_down: AtomicBool::new(false),
    });
    let (session_tx, session_rx) = mpsc::channel(1024);
    let (net_events, net_events_rx) = mpsc::channel(NET_EVENTS);
    let next_stream_id = Arc::new(AtomicU64::new(1));

    // Accept loop: hand each inbound stream to its own task at once (libp2p-stream drops inbound
    // streams when this loop lags, its channel holds one).
    let accept_loop = {
        let (ctx, tx, ids) = (ctx.clone(), session_tx.clone(), next_stream_id.clone());
        tokio::spawn(async move {
            while let Some((peer, stream)) = incoming.next().await {
                let id = ids.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(session::run(
                    ctx.clone(),
                    peer,
                    id,
                    stream,
                    false,
                    tx.clone(),
                ));
            }
        })
    };

    let now = Instant::now();
    let seed = u64::from_le_bytes(
        local.to_bytes()[local.to_bytes().len() - 8..]
            .try_into()
            .expect("8"),
    );
    let mut driver = Driver {
        swarm,
        local,
        sm: StreamManager::new(cfg.streams.clone(), local, seed, now),
        rm: RequestManager::new(cfg.requests),
        dials: DialManager::new(DialConfig::default()),
        ctx: ctx.clone(),
        metrics,
        protocol,
        control,
        sessions: HashMap::new(),
        next_stream_id,
        session_tx,
        pending: HashMap::new(),
        direct: HashMap::new(),
        next_direct: 1 << 62,
        conns: HashMap::new(),
        reported: HashSet::new(),
        bootnodes: vec![],
        discovery_query: None,
        counters: SetupCounters::default(),
        state_tx: watch::channel(NetState::default()).0,
        listen_addrs: vec![],
        next_housekeeping: now + HOUSEKEEPING,
        head_seen: (ctx.store.head().height, now),
        net_events,
        isolated: false,
        accept_loop,
        gossip_tx,
        gossip_topic: gossip::topic(&network).hash(),
    };
    for b in &cfg.bootnodes {
        let peer = peer_of(b).expect("validated");
        let addr: Multiaddr = b
            .iter()
            .filter(|p| !matches!(p, Protocol::P2p(_)))
            .collect();
        driver.bootnodes.push((peer, addr));
    }
    driver.seed_bootnodes(now);
    let state = driver.state_tx.subscribe();
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(driver.run(rx, session_rx));
    info!(peer_id = %local, "p2p layer started");
    Ok(P2pHandle {
        tx,
        state,
        ctx,
        events: Arc::new(std::sync::Mutex::new(Some(net_events_rx))),
        gossip_in: Arc::new(std::sync::Mutex::new(
            cfg.gossipsub.is_some().then_some(gossip_rx),
        )),
        ida_faults: Arc::default(),
        local_peer_id: local,
        region: cfg.region.clone(),
        netem,
        control: stream_control,
    })
}

/// Connections give up if the preamble, noise and yamux are not done by then (a partitioned peer
/// never answers).
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(20);

type BoxedTransport = libp2p::core::transport::Boxed<(PeerId, StreamMuxerBox)>;

/// TCP + noise + yamux, like `SwarmBuilder::with_tcp`, with the emulation wrapper directly on the
/// socket when `netem` is on (so the handshakes are delayed too) and nothing extra when it is off.
fn tcp_transport(
    key: &identity::Keypair,
    netem: Option<Arc<Netem>>,
) -> Result<BoxedTransport, noise::Error> {
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let noise = noise::Config::new(key)?;
    Ok(match netem {
        None => secure(tcp, noise),
        Some(net) => secure(
            tcp.and_then(move |socket, _| crate::netem::stream::handshake(socket, net.clone())),
            noise,
        ),
    })
}

/// noise + yamux + the upgrade timeout over a raw stream transport.
fn secure<T>(raw: T, noise: noise::Config) -> BoxedTransport
where
    T: Transport + Send + Unpin + 'static,
    T::Output: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    raw.upgrade(libp2p::core::upgrade::Version::V1Lazy)
        .authenticate(noise)
        .multiplex(yamux::Config::default())
        .timeout(UPGRADE_TIMEOUT)
        .map(|(p, m), _| (p, StreamMuxerBox::new(m)))
        .boxed()
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut sessions: mpsc::Receiver<SessionEvent>,
    ) {
        let mut shutdown_reply = None;
        loop {
            // While callers wait, wake at least every second to notice abandoned requests.
            let cancel_check = (!self.pending.is_empty() || !self.direct.is_empty())
                .then(|| Instant::now() + Duration::from_secs(1));
            let stale_check =
                (!self.sm.is_stale()).then(|| self.head_seen.1 + self.sm.config().stale_after);
            let deadline = [
                self.sm.poll_timeout(),
                self.rm.poll_timeout(),
                Some(self.next_housekeeping),
                cancel_check,
                stale_check,
            ]
            .into_iter()
            .flatten()
            .min()
            .expect("housekeeping is always set");
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                Some(ev) = sessions.recv() => self.on_session(ev),
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown(reply)) => { shutdown_reply = Some(reply); break; }
                    None => break,
                    Some(c) => self.on_command(c),
                },
                _ = sleep => {}
            }
            let now = Instant::now();
            self.check_stale(now);
            self.sm.handle(SmEvent::Tick, now);
            self.cancel_abandoned(now);
            self.rm.tick(now);
            if now >= self.next_housekeeping {
                self.housekeeping(now);
            }
            self.process_actions();
            self.publish();
        }
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
        let gone: Vec<ReqId> = self
            .pending
            .iter()
            .filter(|(_, r)| r.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.pending.remove(&id);
            self.rm.cancel(id, now);
        }
        self.direct.retain(|_, (_, _, r)| !r.is_closed());
    }

    fn seed_bootnodes(&mut self, now: Instant) {
        for (peer, addr) in self.bootnodes.clone() {
            if peer == self.local {
                continue;
            }
            self.swarm
                .behaviour_mut()
                .kad
                .inner
                .add_address(&peer, addr.clone());
            self.dials.add_address(peer, addr);
            self.sm.handle(SmEvent::Discovered(peer), now);
        }
    }

    /// Tells the stream manager whether the local head has stopped moving: a node whose peers
    /// know nothing newer must go looking for streams instead of waiting out cooldowns.
    fn check_stale(&mut self, now: Instant) {
        let h = self.ctx.store.head().height;
        if h != self.head_seen.0 {
            self.head_seen = (h, now);
        }
        let stale = now.saturating_duration_since(self.head_seen.1) >= self.sm.config().stale_after;
        if stale != self.sm.is_stale() {
            debug!(stale, height = h, "head staleness changed");
            self.sm.set_stale(stale, now);
            self.metrics.head_stale.set(i64::from(stale));
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        self.next_housekeeping = now + HOUSEKEEPING;
        self.ctx.limiter.prune();
        let t = &self.metrics.tracked;
        t.get_or_create(&[("table", "rate_limiter_peers")])
            .set(self.ctx.limiter.tracked_peers() as i64);
        t.get_or_create(&[("table", "dial_book")])
            .set(self.dials.tracked_peers() as i64);
        t.get_or_create(&[("table", "sessions")])
            .set(self.sessions.len() as i64);
        t.get_or_create(&[("table", "direct_requests")])
            .set(self.direct.len() as i64);
    }

    fn on_command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Request { req, only, reply } => {
                let cost = req.cost();
                match self.rm.submit(req, cost, only, now) {
                    Ok(id) => {
                        self.pending.insert(id, reply);
                    }
                    Err(_) => {
                        let _ = reply.send(Err(RequestError::QueueFull));
                    }
                }
            }
            Command::Direct { peer, req, reply } => {
                let Some((&sid, s)) = self
                    .sessions
                    .iter()
                    .find(|(_, s)| s.peer == peer && s.in_use)
                else {
                    let _ = reply.send(Err(RequestError::NoStream));
                    return;
                };
                if self.direct.len() >= MAX_DIRECT {
                    let _ = reply.send(Err(RequestError::QueueFull));
                    return;
                }
                let id = self.next_direct;
                self.next_direct += 1;
                let frame = wire::encode(&Message::Request { id, req }, self.ctx.max_frame);
                match frame.map(|f| s.tx.try_send(f)) {
                    Ok(Ok(())) => {
                        self.direct.insert(id, (peer, sid, reply));
                    }
                    _ => {
                        let _ = reply.send(Err(RequestError::NoStream));
                    }
                }
            }
            Command::Dial(addr) => {
                if let Some(peer) = peer_of(&addr) {
                    let a: Multiaddr = addr
                        .iter()
                        .filter(|p| !matches!(p, Protocol::P2p(_)))
                        .collect();
                    self.dials.add_address(peer, a);
                    self.sm.handle(SmEvent::Discovered(peer), now);
                    self.dial(peer, now);
                }
            }
            Command::Announce(a) => {
                if let Ok(f) = wire::encode(&Message::Announce(a), self.ctx.max_frame) {
                    for s in self.sessions.values().filter(|s| s.in_use) {
                        // Best effort: a full queue means the peer is busy; it hears the next one.
                        let _ = s.tx.try_send(f.clone());
                    }
                }
            }
            Command::Penalise(peer) => self.drop_peer_streams(peer, RemovalReason::Penalised, now),
            Command::SwarmFaults {
                isolate,
                forced_discovery,
                storm_canary,
                done,
            } => {
                // Every PUT /faults restates the whole set: only a change acts or is counted.
                if isolate != self.isolated {
                    self.isolated = isolate;
                    if isolate {
                        self.metrics
                            .faults_injected
                            .get_or_create(&[("kind", "isolate")])
                            .inc();
                        let peers: Vec<PeerId> = self.conns.keys().copied().collect();
                        for p in peers {
                            let _ = self.swarm.disconnect_peer_id(p);
                        }
                    } else {
                        self.seed_bootnodes(now);
                    }
                }
                self.sm.set_forced_discovery(forced_discovery, now);
                self.sm.set_storm_canary(storm_canary);
                let _ = done.send(());
            }
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

    /// Dials through the dial manager. Returns false if no dial is under way afterwards.
    fn dial(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.isolated {
            return false;
        }
        if self.conns.contains_key(&peer) {
            return true;
        }
        let decision = self.dials.request(&peer, now);
        self.metrics
            .dials
            .get_or_create(&[("outcome", decision.label())])
            .inc();
        match decision {
            DialDecision::Dial(addrs) => {
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
                    self.dials.on_failed(&peer, now);
                    return false;
                }
                true
            }
            DialDecision::AlreadyDialing => true,
            _ => false,
        }
    }

    fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        let now = Instant::now();
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
                if self.dials.is_blocked(&peer_id) || self.isolated {
                    self.swarm.close_connection(connection_id);
                    return;
                }
                let dialer = if endpoint.is_dialer() {
                    self.dials.on_connected(&peer_id);
                    self.metrics
                        .dials
                        .get_or_create(&[("outcome", "connected")])
                        .inc();
                    self.local
                } else {
                    peer_id
                };
                let list = self.conns.entry(peer_id).or_default();
                list.push(ConnInfo {
                    id: connection_id,
                    dialer,
                    dead: false,
                });
                if list.iter().filter(|c| !c.dead).count() > 1 {
                    // Keep the (first) live connection dialled by the lower peer id; close the
                    // other live ones (dead ones are closing already).
                    let lower = self.local.min(peer_id);
                    let keep = list
                        .iter()
                        .position(|c| !c.dead && c.dialer == lower)
                        .or_else(|| list.iter().position(|c| !c.dead))
                        .unwrap_or(0);
                    let close: Vec<ConnectionId> = list
                        .iter()
                        .enumerate()
                        .filter(|(i, c)| *i != keep && !c.dead)
                        .map(|(_, c)| c.id)
                        .collect();
                    for id in close {
                        debug!(peer = %peer_id, ?id, "closing duplicate connection");
                        self.swarm.close_connection(id);
                    }
                }
                self.maybe_report_connected(peer_id, now);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.metrics.connections.dec();
                if let Some(list) = self.conns.get_mut(&peer_id) {
                    list.retain(|c| c.id != connection_id);
                }
                if num_established == 0 {
                    self.conns.remove(&peer_id);
                    if self.reported.remove(&peer_id) {
                        self.sm.handle(SmEvent::Disconnected(peer_id), now);
                    }
                } else {
                    self.maybe_report_connected(peer_id, now);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                debug!(%peer, "dial failed: {error}");
                self.metrics
                    .dials
                    .get_or_create(&[("outcome", "failed")])
                    .inc();
                self.dials.on_failed(&peer, now);
                if self.conns.contains_key(&peer) {
                    self.maybe_report_connected(peer, now);
                } else {
                    self.sm.handle(SmEvent::DialFailed(peer), now);
                }
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour(ev, now),
            _ => {}
        }
    }

    /// Tells the stream manager about a peer once its connection set is settled: one live
    /// connection (libp2p-stream opens on any of a peer's connections, a closing one included).
    fn maybe_report_connected(&mut self, peer: PeerId, now: Instant) {
        let settled = self
            .conns
            .get(&peer)
            .is_some_and(|l| l.len() == 1 && !l[0].dead)
            && !self.dials.is_dialing(&peer);
        if settled && self.reported.insert(peer) {
            self.sm.handle(SmEvent::Connected(peer), now);
        }
    }

    fn on_behaviour(&mut self, ev: BehaviourEvent, now: Instant) {
        match ev {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                let expected = network_version(&self.ctx.spec.network_id);
                if info.protocol_version != expected {
                    warn!(peer = %peer_id, theirs = %info.protocol_version, "refusing peer of another network");
                    self.metrics.foreign_peers.inc();
                    self.dials.block(peer_id);
                    self.swarm.behaviour_mut().kad.inner.remove_peer(&peer_id);
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                for a in info.listen_addrs {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .inner
                        .add_address(&peer_id, a.clone());
                    self.dials.add_address(peer_id, a);
                }
            }
            BehaviourEvent::Kad(gate::Gated::DialRequest(peer))
            | BehaviourEvent::Stream(gate::Gated::DialRequest(peer)) => {
                self.dial(peer, now);
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
                    self.swarm.close_connection(connection);
                    self.connection_dead(peer, connection, now);
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
                if self.dials.is_blocked(&peer) {
                    return;
                }
                for a in addresses.iter() {
                    self.dials.add_address(peer, a.clone());
                }
                self.sm.handle(SmEvent::Discovered(peer), now);
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
                    if self.dials.is_blocked(&p.peer_id) {
                        continue;
                    }
                    for a in p.addrs {
                        self.dials.add_address(p.peer_id, a);
                    }
                    self.sm.handle(SmEvent::Discovered(p.peer_id), now);
                }
                if step.last && self.discovery_query == Some(id) {
                    self.discovery_query = None;
                    self.sm.handle(SmEvent::DiscoveryFinished, now);
                }
            }
            _ => {}
        }
    }

    fn on_session(&mut self, ev: SessionEvent) {
        let now = Instant::now();
        match ev {
            SessionEvent::Ready {
                peer,
                id,
                outbound,
                status,
                tx,
                close,
            } => {
                self.sessions.insert(
                    id,
                    Session {
                        peer,
                        tx,
                        _close: close,
                        in_use: false,
                        head_height: status.head.height,
                    },
                );
                let e = if outbound {
                    SmEvent::OutboundReady(peer, id)
                } else {
                    SmEvent::InboundReady(peer, id)
                };
                self.sm.handle(e, now);
            }
            SessionEvent::SetupFailed {
                peer,
                outbound,
                why,
                ..
            } => {
                debug!(%peer, ?why, outbound, "stream setup failed");
                if why == SetupError::WrongNetwork {
                    self.metrics.foreign_peers.inc();
                    self.dials.block(peer);
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                if outbound {
                    self.sm.handle(SmEvent::OutboundFailed(peer), now);
                }
            }
            SessionEvent::Response {
                peer, req_id, resp, ..
            } => self.on_response(peer, req_id, resp, now),
            SessionEvent::Announce { peer, announce } => {
                if self
                    .ctx
                    .spec
                    .verify_head(&announce.header, &announce.signature)
                    .is_ok()
                {
                    self.note_head(peer, announce.header.height);
                } else {
                    self.metrics
                        .frame_errors
                        .get_or_create(&[("reason", "bad_announce")])
                        .inc();
                }
            }
            SessionEvent::Closed { peer, id, why } => {
                let reason = match why {
                    CloseReason::Malformed => RemovalReason::Penalised,
                    CloseReason::Eof | CloseReason::Io => RemovalReason::StreamError,
                };
                self.close_session(peer, id, reason, now);
            }
        }
    }

    /// A session ended (its task reported it, or we found its channel closed first): the
    /// request manager, direct callers and the stream manager learn once; a second report of the
    /// same session finds nothing to do.
    fn close_session(&mut self, peer: PeerId, id: u64, reason: RemovalReason, now: Instant) {
        if let Some(s) = self.end_session(id) {
            if s.in_use {
                self.stream_gone(peer, now);
            }
            self.sm.handle(SmEvent::StreamClosed(peer, id, reason), now);
        }
    }

    /// Ping found `conn` dead. Closing it waits for the dead path to take its last frames (a
    /// partition holds them for as long as it lasts, like TCP over a cut link), and libp2p reports
    /// it closed only then; until then its streams looked alive and requests sent on them waited
    /// out their timeouts. Found by the soak-s3 hour: after each 60 s partition of a region, its
    /// nodes spent their first 20 s asking peers over such connections (two 10 s stalls), and
    /// caught up 30 s after the partition instead of ~2. Sessions live on a peer's one settled
    /// connection, so they end now and the peer counts as disconnected until the connection is
    /// gone (no new stream may land on it).
    fn connection_dead(&mut self, peer: PeerId, conn: ConnectionId, now: Instant) {
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

    /// Closes every session with `peer` and tells the managers why.
    fn drop_peer_streams(&mut self, peer: PeerId, why: RemovalReason, now: Instant) {
        let ids: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(s) = self.end_session(id) {
                if s.in_use {
                    self.stream_gone(peer, now);
                }
                self.sm.handle(SmEvent::StreamClosed(peer, id, why), now);
            }
        }
    }

    /// An in-use stream ended: the request manager and the sync layer must know.
    fn stream_gone(&mut self, peer: PeerId, now: Instant) {
        self.rm.remove_stream(&peer, now);
        let _ = self.net_events.try_send(NetEvent::PeerGone(peer));
    }

    fn note_head(&mut self, peer: PeerId, height: u64) {
        let mut in_use = false;
        for s in self.sessions.values_mut().filter(|s| s.peer == peer) {
            s.head_height = s.head_height.max(height);
            in_use |= s.in_use;
        }
        if in_use {
            let _ = self
                .net_events
                .try_send(NetEvent::PeerHead { peer, height });
        }
    }

    /// Removes a session, however it ended (closed, reset by the stream manager, its peer
    /// gone), and fails the unmanaged requests written to it: nothing else would answer them.
    fn end_session(&mut self, id: u64) -> Option<Session> {
        let s = self.sessions.remove(&id)?;
        let ids: Vec<ReqId> = self
            .direct
            .iter()
            .filter(|(_, (_, sid, _))| *sid == id)
            .map(|(req, _)| *req)
            .collect();
        for req in ids {
            if let Some((_, _, r)) = self.direct.remove(&req) {
                let _ = r.send(Err(RequestError::NoStream));
            }
        }
        Some(s)
    }

    fn on_response(&mut self, peer: PeerId, req_id: ReqId, resp: Response, now: Instant) {
        if let Response::Error(ErrorReply::RateLimited { .. }) = &resp {
            self.metrics
                .rate_limited
                .get_or_create(&[("direction", "received")])
                .inc();
        }
        if let Some((p, sid, reply)) = self.direct.remove(&req_id) {
            if p == peer {
                let _ = reply.send(Ok(resp));
            } else {
                self.direct.insert(req_id, (p, sid, reply));
            }
            return;
        }
        match resp {
            Response::Error(ErrorReply::RateLimited { retry_after_ms }) => {
                self.rm.on_rate_limited(
                    req_id,
                    &peer,
                    Duration::from_millis(retry_after_ms as u64),
                    now,
                );
            }
            Response::Error(e) => {
                // NotFound/TooLarge/Shutdown: this peer cannot serve it; try another.
                self.rm.on_failure(req_id, &peer, FailKind::Refused, now);
                self.metrics
                    .requests
                    .get_or_create(&[("kind", "any"), ("outcome", e.label())])
                    .inc();
            }
            resp => {
                if let Some((_, latency)) = self.rm.on_success(req_id, &peer, now) {
                    if let Response::Status(s) = &resp
                        && self
                            .ctx
                            .spec
                            .verify_head(&s.head, &s.head_signature)
                            .is_ok()
                    {
                        self.note_head(peer, s.head.height);
                    }
                    let kind = response_kind(&resp);
                    self.metrics
                        .request_duration
                        .get_or_create(&[("kind", kind)])
                        .observe(latency.as_secs_f64());
                    self.metrics
                        .requests
                        .get_or_create(&[("kind", kind), ("outcome", "ok")])
                        .inc();
                    if let Some(reply) = self.pending.remove(&req_id) {
                        let _ = reply.send(Ok((peer, resp)));
                    }
                }
            }
        }
    }

    fn process_actions(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(a) = self.sm.poll_action() {
                progressed = true;
                self.on_sm_action(a);
            }
            while let Some(a) = self.rm.poll_action() {
                progressed = true;
                self.on_rm_action(a);
            }
            if !progressed {
                break;
            }
        }
    }

    fn on_sm_action(&mut self, a: SmAction<PeerId>) {
        let now = Instant::now();
        match a {
            SmAction::Discover => {
                if self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .inner
                    .kbuckets()
                    .next()
                    .is_none()
                {
                    self.seed_bootnodes(now);
                }
                for (peer, _) in self.bootnodes.clone() {
                    if peer != self.local {
                        self.sm.handle(SmEvent::Discovered(peer), now);
                    }
                }
                let q = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .inner
                    .get_closest_peers(PeerId::random());
                self.discovery_query = Some(q);
            }
            SmAction::Dial(peer) => {
                if !self.dial(peer, now) {
                    self.sm.handle(SmEvent::DialFailed(peer), now);
                }
            }
            SmAction::OpenStream(peer) => {
                let id = self.next_stream_id.fetch_add(1, Ordering::Relaxed);
                let (ctx, tx, mut control, proto) = (
                    self.ctx.clone(),
                    self.session_tx.clone(),
                    self.control.clone(),
                    self.protocol.clone(),
                );
                tokio::spawn(async move {
                    let open =
                        tokio::time::timeout(ctx.setup_timeout, control.open_stream(peer, proto))
                            .await;
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
            SmAction::Use(peer, id) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.in_use = true;
                    let head = s.head_height;
                    let pace = (
                        self.ctx.limits.peer_cost_per_sec,
                        self.ctx.limits.peer_burst,
                    );
                    self.rm.add_stream(peer, Some(pace), now);
                    let _ = self
                        .net_events
                        .try_send(NetEvent::PeerHead { peer, height: head });
                } else {
                    // The session ended between Ready and Use.
                    self.sm.handle(
                        SmEvent::StreamClosed(peer, id, RemovalReason::StreamError),
                        now,
                    );
                }
            }
            SmAction::Reset(peer, id, reason) => {
                self.metrics
                    .resets
                    .get_or_create(&[("reason", reset_label(reason))])
                    .inc();
                if let Some(s) = self.end_session(id)
                    && s.in_use
                {
                    self.stream_gone(peer, now);
                }
            }
            SmAction::Report(r) => self.on_report(r),
        }
    }

    fn on_report(&mut self, r: Report) {
        let m = &self.metrics;
        match r {
            Report::SetupStarted => self.counters.started += 1,
            Report::SetupSucceeded => {
                self.counters.succeeded += 1;
                m.setups.get_or_create(&[("outcome", "ok")]).inc();
            }
            Report::SetupFailed(why) => {
                self.counters.failed += 1;
                let label = match why {
                    streams::SetupFailure::Dial => "dial",
                    streams::SetupFailure::Open => "open",
                    streams::SetupFailure::Timeout => "timeout",
                    streams::SetupFailure::Disconnected => "disconnected",
                    streams::SetupFailure::Refused => "refused",
                };
                m.setups.get_or_create(&[("outcome", label)]).inc();
            }
            Report::Removed(why) => {
                self.counters.removed += 1;
                let label = match why {
                    RemovalReason::StreamError => "stream_error",
                    RemovalReason::Disconnected => "disconnected",
                    RemovalReason::Conflict => "conflict",
                    RemovalReason::Penalised => "penalised",
                };
                m.removals.get_or_create(&[("reason", label)]).inc();
            }
            Report::DiscoveryRound { productive } => {
                self.counters.discovery_rounds += 1;
                let label = if productive {
                    "productive"
                } else {
                    "unproductive"
                };
                m.discovery_rounds
                    .get_or_create(&[("outcome", label)])
                    .inc();
            }
            Report::PeerFound => {
                m.peers_found.inc();
            }
            Report::Injected(kind) => {
                let label = match kind {
                    streams::InjectedRound::ForcedDiscovery => "forced_discovery",
                    streams::InjectedRound::StormCanary => "storm_canary",
                };
                m.faults_injected.get_or_create(&[("kind", label)]).inc();
            }
        }
    }

    fn on_rm_action(&mut self, a: ReqAction<PeerId, Request>) {
        let now = Instant::now();
        match a {
            ReqAction::Send { id, peer, req } => {
                let session = self
                    .sessions
                    .iter()
                    .find(|(_, s)| s.peer == peer && s.in_use)
                    .map(|(sid, s)| (*sid, s.tx.clone()));
                let sent = session.as_ref().map(|(sid, tx)| {
                    match wire::encode(&Message::Request { id, req }, self.ctx.max_frame) {
                        Ok(f) => match tx.try_send(f) {
                            Ok(()) => Ok(()),
                            Err(mpsc::error::TrySendError::Closed(_)) => Err(Some(*sid)),
                            Err(mpsc::error::TrySendError::Full(_)) => Err(None),
                        },
                        Err(_) => Err(None),
                    }
                });
                match sent {
                    Some(Ok(())) => {}
                    // The session task has ended and its Closed event is still on the way
                    // (e.g. the remote reset the stream in a simultaneous-open conflict).
                    // Close it now: the request goes back to the queue for the next stream
                    // instead of burning every attempt on a dead channel.
                    Some(Err(Some(sid))) => {
                        self.close_session(peer, sid, RemovalReason::StreamError, now)
                    }
                    Some(Err(None)) | None => {
                        self.rm.on_failure(id, &peer, FailKind::Transport, now)
                    }
                }
            }
            ReqAction::Abandon { .. } => {
                self.metrics
                    .requests
                    .get_or_create(&[("kind", "any"), ("outcome", "timeout")])
                    .inc();
            }
            ReqAction::Failed { id, why, .. } => {
                if let Some(reply) = self.pending.remove(&id) {
                    let _ = reply.send(Err(RequestError::GaveUp(why)));
                }
            }
            ReqAction::Penalise(peer) => {
                self.drop_peer_streams(peer, RemovalReason::Penalised, now)
            }
        }
    }

    fn publish(&mut self) {
        let now = Instant::now();
        let stats = self.sm.stats(now);
        let m = &self.metrics;
        m.streams.set(stats.streams as i64);
        m.cooldowns_active.set(stats.cooldowns_active as i64);
        m.failed_peers_cached.set(stats.failed_cached as i64);
        m.candidates.set(stats.candidates as i64);
        m.requests_in_flight.set(self.rm.in_flight() as i64);
        m.requests_queued.set(self.rm.queued() as i64);
        let mut stream_peers: Vec<PeerId> = self.sm.streams().map(|(p, _)| *p).collect();
        stream_peers.sort();
        let best_peer_height = self
            .sessions
            .values()
            .filter(|s| s.in_use)
            .map(|s| s.head_height)
            .max()
            .unwrap_or(0);
        let state = NetState {
            listen_addrs: self.listen_addrs.clone(),
            stream_peers,
            connections: self.conns.values().map(Vec::len).sum(),
            stats,
            counters: self.counters,
            ready_for_sync: self.sm.ready_for_sync(),
            best_peer_height,
            requests_outstanding: self.rm.in_flight() + self.rm.queued(),
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

fn reset_label(r: streams::ResetReason) -> &'static str {
    match r {
        streams::ResetReason::Full => "full",
        streams::ResetReason::Duplicate => "duplicate",
        streams::ResetReason::Cooldown => "cooldown",
        streams::ResetReason::Conflict => "conflict",
    }
}

fn response_kind(r: &Response) -> &'static str {
    match r {
        Response::Status(_) => "status",
        Response::BlockHashes(_) => "block_hashes",
        Response::Blocks(_) => "blocks",
        Response::Error(_) => "error",
    }
}

impl ErrorReply {
    /// Closed set of label values for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ErrorReply::RateLimited { .. } => "rate_limited",
            ErrorReply::TooLarge => "too_large",
            ErrorReply::NotFound => "not_found",
            ErrorReply::Invalid => "invalid",
            ErrorReply::Shutdown => "shutdown",
        }
    }
}
