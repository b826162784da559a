//! The swarm: its behaviours (connection limits, identify, ping, kad and libp2p-stream behind the
//! dial gate, optional gossipsub), the transport (TCP + noise + yamux, with the network emulation
//! on the socket), and `spawn`, which builds them with the peers core and starts the driver.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Transport;
use libp2p::gossipsub;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{Multiaddr, PeerId, StreamProtocol, identify, identity, noise, ping, tcp, yamux};
use tokio::sync::{mpsc, watch};
use tracing::info;

use super::driver::{Driver, HOUSEKEEPING, MAX_DIRECT};
use super::handle::P2pHandle;
use super::session::{self, SessionCtx};
use super::{NetState, gate, gossip, network_version, sync_protocol};
use crate::chain::ChainSpec;
use crate::config::{P2pConfig, split_peer};
use crate::dial::DialConfig;
use crate::faults::{FaultKind, Faults};
use crate::metrics::{P2pMetrics, Refused};
use crate::netem::Netem;
use crate::peers::{Peers, PeersConfig};
use crate::ratelimit::ServerLimiter;
use crate::store::Store;
use crate::wire::Limits;

/// Queued net events before new ones are dropped (the consumer re-learns heads from announces).
const NET_EVENTS: usize = 4096;

#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    pub limits: libp2p::connection_limits::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub kad: gate::DialGate<kad::Behaviour<MemoryStore>>,
    pub stream: gate::DialGate<libp2p_stream::Behaviour>,
    pub gossipsub: Toggle<gossipsub::Behaviour>,
}

/// Starts the p2p layer on the current tokio runtime.
pub async fn spawn(
    cfg: P2pConfig,
    keypair: identity::Keypair,
    spec: ChainSpec,
    store: Arc<Store>,
    metrics: P2pMetrics,
) -> anyhow::Result<P2pHandle> {
    cfg.validate()
        .map_err(|e| anyhow::Error::msg(e.within("p2p")))?;
    let local = keypair.public().to_peer_id();
    let network = spec.network_id.clone();
    let kad_protocol =
        StreamProtocol::try_from_owned(format!("/syncnet/{network}/kad/1")).expect("starts with /");
    let max_conns = cfg.max_connections as u32;
    // Above the pending pool's cap: the pool, not libp2p, decides who waits.
    let max_pending = cfg.admission.max_pending as u32 * 2;
    let gossip_cfg = match &cfg.gossipsub {
        Some(g) => Some(gossip::build(g).map_err(|e| anyhow::anyhow!("broadcast.gossipsub.{e}"))?),
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
                // Hard caps behind the peers core's admission (which keeps inbound and outbound
                // below `max_connections`, so a newcomer is always let in to be judged) and the
                // transport's pending pool (which drops the oldest handshake for a newcomer).
                libp2p::connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(max_conns))
                    .with_max_pending_incoming(Some(max_pending))
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
                .get_or_create(&[("kind", FaultKind::Partition.label())])
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
            let refused = |why: Refused| {
                metrics
                    .refused
                    .get_or_create(&[("reason", why.label())])
                    .clone()
            };
            tcp_transport(key, netem.clone())
                .map(|t| {
                    super::pending::Pending::new(
                        t,
                        cfg.admission.max_pending,
                        cfg.admission.pending_timeout,
                        refused(Refused::PendingEvicted),
                        refused(Refused::PendingTimeout),
                    )
                })
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
    let (faults_tx, faults_rx) = watch::channel((0, Arc::new(Faults::default())));
    let (applied_tx, applied_rx) = watch::channel(0);
    let ctx = Arc::new(SessionCtx {
        spec,
        store,
        limiter: ServerLimiter::new(&cfg.rate_limit),
        limits,
        max_frame: cfg.max_frame_bytes,
        metrics: metrics.clone(),
        setup_timeout: cfg.streams.setup_timeout,
        faults: faults_tx.subscribe(),
        canaries: crate::canary::Canaries::new(Instant::now()),
        shutting_down: AtomicBool::new(false),
        budget: session::ServeBudget::new(&cfg),
        // Idle reply buffers: up to one stream's serve budget, one frame of the largest size each.
        frames: super::frames::FramePool::new(
            cfg.stream_serve_budget_bytes as usize,
            cfg.max_frame_bytes + 4,
            metrics.frame_pool_bytes.clone(),
        ),
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
    let bootnodes: Vec<(PeerId, Multiaddr)> = cfg
        .bootnodes
        .iter()
        .map(|b| split_peer(b).expect("validated"))
        .collect();
    let peers_cfg = PeersConfig {
        streams: cfg.streams.clone(),
        requests: cfg.requests,
        dials: DialConfig::default(),
        pace: (limits.peer_cost_per_sec, limits.peer_burst),
        max_direct: MAX_DIRECT,
        reputation: cfg.reputation,
        admission: cfg.admission,
    };
    let peers = Peers::new(
        local,
        ctx.spec.clone(),
        peers_cfg,
        bootnodes,
        seed,
        ctx.store.head().height,
        now,
    );
    let driver = Driver {
        swarm,
        peers,
        ctx: ctx.clone(),
        metrics,
        protocol,
        control,
        sessions: HashMap::new(),
        next_stream_id,
        session_tx,
        pending: HashMap::new(),
        direct: HashMap::new(),
        discovery_query: None,
        state_tx: watch::channel(NetState::default()).0,
        listen_addrs: vec![],
        next_housekeeping: now + HOUSEKEEPING,
        net_events,
        gossip_tx,
        gossip_topic: gossip::topic(&network).hash(),
        faults: faults_rx,
        applied: applied_tx,
        netem: netem.clone(),
        accept_loop,
    };
    let state = driver.state_tx.subscribe();
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(driver.run(rx, session_rx, now));
    info!(peer_id = %local, "p2p layer started");
    Ok(P2pHandle {
        tx,
        state,
        ctx,
        events: Arc::new(std::sync::Mutex::new(Some(net_events_rx))),
        gossip_in: Arc::new(std::sync::Mutex::new(
            cfg.gossipsub.is_some().then_some(gossip_rx),
        )),
        faults: Arc::new(faults_tx),
        applied: applied_rx,
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
