//! In-process libp2p nodes on 127.0.0.1 for the p2p and storm tests.

use std::sync::Arc;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use syncnet_node::chain::ChainSpec;
use syncnet_node::config::PayloadSize;
use syncnet_node::keys;
use syncnet_node::metrics::P2pMetrics;
use syncnet_node::p2p::{self, P2pConfig, P2pHandle};
use syncnet_node::producer::{Producer, generate_chain};
use syncnet_node::store::Store;
use syncnet_node::streams::StreamConfig;

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
    _store: Arc<Store>,
    _dir: tempfile::TempDir,
}

impl Node {
    pub fn id(&self) -> PeerId {
        self.h.local_peer_id
    }
}

pub async fn start(net: &Net, cfg: P2pConfig, blocks: u64) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open_or_init(&dir.path().join("chain.redb"), &net.spec).unwrap());
    if blocks > 0 {
        generate_chain(&store, &net.spec, &net.producer, blocks, 256, 1000, |_| {}).unwrap();
    }
    let metrics = P2pMetrics::default();
    let key = libp2p::identity::Keypair::generate_ed25519();
    let h = p2p::spawn(cfg, key, net.spec.clone(), store.clone(), metrics.clone())
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
        _store: store,
        _dir: dir,
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

pub fn cfg(bootnodes: Vec<Multiaddr>) -> P2pConfig {
    P2pConfig {
        bootnodes,
        streams: streams_cfg(),
        ..P2pConfig::default()
    }
}
