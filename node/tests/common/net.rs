//! In-process libp2p nodes on 127.0.0.1 for the p2p, sync and storm tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use syncnet_node::chain::ChainSpec;
use syncnet_node::config::PayloadSize;
use syncnet_node::downloader::DownloaderConfig;
use syncnet_node::keys;
use syncnet_node::metrics::P2pMetrics;
use syncnet_node::metrics::SyncMetrics;
use syncnet_node::p2p::{self, P2pConfig, P2pHandle};
use syncnet_node::producer::{Producer, generate_chain};
use syncnet_node::store::Store;
use syncnet_node::streams::StreamConfig;
use tokio::sync::watch;

pub struct Net {
    pub spec: ChainSpec,
    pub producer: Producer,
}

impl Net {
    pub fn new(id: &str) -> Net {
        let key = keys::generate();
        let spec = ChainSpec::new(id, &keys::public_key(&key), 1_700_000_000_000).unwrap();
        Net {
            spec,
            producer: Producer::new(key, PayloadSize::fixed(16 * 1024), 1),
        }
    }
}

pub struct Node {
    pub h: P2pHandle,
    pub addr: Multiaddr,
    pub metrics: P2pMetrics,
    pub store: Arc<Store>,
    pub dir: Arc<tempfile::TempDir>,
    key: libp2p::identity::Keypair,
}

impl Node {
    pub fn id(&self) -> PeerId {
        self.h.local_peer_id
    }
}

pub async fn start(net: &Net, cfg: P2pConfig, blocks: u64) -> Node {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    start_in(
        net,
        cfg,
        blocks,
        dir,
        libp2p::identity::Keypair::generate_ed25519(),
    )
    .await
}

/// Starts a node on an existing data dir and identity (a restart).
/// The store in `dir`, once the tasks of a stopped instance have released it.
pub async fn reopen(dir: &tempfile::TempDir, spec: &syncnet_proto::ChainSpec) -> Store {
    let path = dir.path().join("chain.redb");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open_or_init(&path, spec) {
            Err(syncnet_node::store::StoreError::Locked(_))
                if std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            r => break r.unwrap(),
        }
    }
}

pub async fn start_in(
    net: &Net,
    cfg: P2pConfig,
    blocks: u64,
    dir: Arc<tempfile::TempDir>,
    key: libp2p::identity::Keypair,
) -> Node {
    let store = Arc::new(reopen(&dir, &net.spec).await);
    if blocks > 0 {
        generate_chain(&store, &net.spec, &net.producer, blocks, 256, 1000, |_| {}).unwrap();
    }
    let metrics = P2pMetrics::default();
    let h = p2p::spawn(
        cfg,
        key.clone(),
        net.spec.clone(),
        store.clone(),
        metrics.clone(),
    )
    .await
    .unwrap();
    let s = h
        .wait_for(Duration::from_secs(10), |s| !s.listen_addrs.is_empty())
        .await
        .unwrap();
    let addr = format!("{}/p2p/{}", s.listen_addrs[0], h.local_peer_id)
        .parse()
        .unwrap();
    Node {
        h,
        addr,
        metrics,
        store,
        dir,
        key,
    }
}

/// A node with its sync task running.
pub struct Full {
    pub node: Node,
    pub sync: SyncMetrics,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Full {
    pub fn head(&self) -> u64 {
        self.node.store.head().height
    }

    /// Stops sync and p2p; returns what a restart needs (data dir, identity).
    pub async fn stop(self) -> (Arc<tempfile::TempDir>, libp2p::identity::Keypair) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.node.h.shutdown().await;
        (self.node.dir, self.node.key)
    }
}

pub async fn start_full(net: &Net, cfg: P2pConfig, sync: DownloaderConfig, blocks: u64) -> Full {
    let node = start(net, cfg, blocks).await;
    attach_sync(net, node, sync)
}

pub fn attach_sync(net: &Net, node: Node, cfg: DownloaderConfig) -> Full {
    let sync = SyncMetrics::default();
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(syncnet_node::sync::run(
        cfg,
        net.spec.clone(),
        node.store.clone(),
        node.h.clone(),
        sync.clone(),
        rx,
    ));
    Full {
        node,
        sync,
        stop,
        task,
    }
}

/// Produces a block every `interval` on `node`'s store and announces it, until aborted.
pub fn spawn_producer(net: &Net, node: &Node, interval: Duration) -> tokio::task::JoinHandle<()> {
    let (producer, spec, store, h) = (
        net.producer.clone(),
        net.spec.clone(),
        node.store.clone(),
        node.h.clone(),
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let head = store.head();
            let ts = head.header.timestamp_ms + 1000;
            let block = producer.next_block(&head.header, ts);
            let v = spec.verify(block, &head.header).unwrap();
            let head = store.insert_batch(&[v]).unwrap();
            h.announce(head.header.clone(), head.signature);
        }
    })
}

/// Polls `f` every 50 ms until it holds; panics with `what` after `timeout`.
pub async fn eventually(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    eventually_or(timeout, f, || what.to_owned()).await
}

/// `eventually`, with a failure message built only on timeout (a dump of the state, say).
pub async fn eventually_or(
    timeout: Duration,
    mut f: impl FnMut() -> bool,
    what: impl FnOnce() -> String,
) {
    let deadline = std::time::Instant::now() + timeout;
    while !f() {
        if std::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?}: {}", what());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The downloader settings of the multi-node tests: short timeouts, so stalls show quickly.
pub fn sync_cfg() -> DownloaderConfig {
    DownloaderConfig {
        batch_bytes: 1024 * 1024,
        max_batch_blocks: 256,
        max_in_flight: 8,
        max_per_peer: 3,
        lookahead_bytes: 64 * 1024 * 1024,
        commit_bytes: 32 * 1024 * 1024,
        short_range: 32,
        batch_timeout: Duration::from_secs(5),
        watchdog: Duration::from_secs(3),
        bad_peer_ttl: Duration::from_secs(5),
        max_peers: 64,
        tip_grace: Duration::ZERO,
    }
}

pub fn streams_cfg() -> StreamConfig {
    StreamConfig {
        hard_low: 1,
        soft_low: 2,
        high: 4,
        discovery_interval: Duration::from_secs(1),
        discovery_backoff_max: Duration::from_secs(8),
        discovery_round_timeout: Duration::from_secs(5),
        setup_timeout: Duration::from_secs(5),
        max_concurrent_setups: 4,
        failed_peer_ttl: Duration::from_secs(10),
        removal_cooldown_base: Duration::from_secs(1),
        removal_cooldown_max: Duration::from_secs(30),
        ..StreamConfig::default()
    }
}

/// A server that only accepts streams. Below soft_low it would also open its own stream to a new
/// client; when both open at once the tie rule may replace the client's first stream a moment after
/// the client started using it, which direct (unmanaged) requests cannot survive. A node whose head
/// has not moved for `stale_after` wants `high` streams and opens them too, so it must not turn
/// stale within a test (it did at 15 s under CI load).
pub fn accept_only(mut c: P2pConfig) -> P2pConfig {
    c.streams.soft_low = 0;
    c.streams.hard_low = 0;
    c.streams.stale_after = Duration::from_secs(3600);
    c
}

pub fn cfg(bootnodes: Vec<Multiaddr>) -> P2pConfig {
    P2pConfig {
        bootnodes,
        streams: streams_cfg(),
        ..P2pConfig::default()
    }
}
