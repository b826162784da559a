//! Block broadcast: how a new block reaches every node right after it is produced — IDA gossip
//! (`p2p::ida`, the default) or whole blocks over gossipsub (`p2p::gossip`, the baseline) — and
//! the one place where a block received that way is inserted ([`Inserter`]). Sync stays the
//! catch-up path for whatever broadcast misses.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::debug;

use crate::chain::{Block, ChainSpec, H256, Header};
use crate::ida::{Encoded, IdaParams};
use crate::metrics::BroadcastMetrics;
use crate::node::now_ms;
use crate::p2p::P2pHandle;
use crate::p2p::gossip::GossipConfig;
use crate::p2p::ida::IdaConfig;
use crate::producer::Producer;
use crate::store::Store;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BroadcastMode {
    /// Reed-Solomon chunks with Merkle proofs under the signed header (RapidChain's IDA gossip).
    #[default]
    Ida,
    /// Whole blocks over libp2p gossipsub (the baseline IDA is measured against).
    Gossipsub,
    /// No push: blocks travel by sync only.
    Off,
}

impl BroadcastMode {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            BroadcastMode::Ida => "ida",
            BroadcastMode::Gossipsub => "gossipsub",
            BroadcastMode::Off => "off",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BroadcastConfig {
    pub mode: BroadcastMode,
    pub ida: IdaConfig,
    pub gossipsub: GossipConfig,
    /// While a mode is on, sync leaves a block announced less than this long ago (in the short
    /// range) to broadcast before fetching it (`DownloaderConfig::tip_grace`).
    #[serde(with = "crate::util::millis")]
    pub sync_grace: Duration,
}

impl Default for BroadcastConfig {
    fn default() -> Self {
        BroadcastConfig {
            mode: BroadcastMode::default(),
            ida: IdaConfig::default(),
            gossipsub: GossipConfig::default(),
            sync_grace: Duration::from_millis(1500),
        }
    }
}

impl BroadcastConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.ida
            .validate()
            .map_err(|e| format!("broadcast.ida.{e}"))?;
        self.gossipsub
            .validate()
            .map_err(|e| format!("broadcast.gossipsub.{e}"))?;
        Ok(())
    }

    /// The sync grace that applies: none without a broadcast mode.
    pub fn tip_grace(&self) -> Duration {
        if self.mode == BroadcastMode::Off {
            Duration::ZERO
        } else {
            self.sync_grace
        }
    }

    /// IDA parameters the producer encodes with (None unless the mode is IDA).
    pub fn ida_params(&self) -> Option<IdaParams> {
        (self.mode == BroadcastMode::Ida).then_some(self.ida.params)
    }
}

/// The producer's next block: with an IDA root in its header when `ida` is set (the encoding is
/// returned too, so the chunks need not be computed twice).
pub fn produce(
    producer: &Producer,
    parent: &Header,
    timestamp_ms: u64,
    ida: Option<IdaParams>,
) -> (Block, Option<Arc<Encoded>>) {
    let height = parent.height + 1;
    let payload = producer.payload(height);
    match ida {
        None => (
            Block::produce(producer.key(), parent, timestamp_ms, payload),
            None,
        ),
        Some(params) => {
            let enc = Arc::new(crate::ida::encode(params, &payload));
            let block = Block::produce_with_root(
                producer.key(),
                parent,
                timestamp_ms,
                payload,
                Some(enc.root),
            );
            (block, Some(enc))
        }
    }
}

/// A block that arrived complete by broadcast (for benchmarks and tests).
#[derive(Clone, Debug)]
pub struct Delivered {
    pub height: u64,
    pub hash: H256,
    /// Header timestamp to complete here (wall clock; zero if the clocks disagree).
    pub latency: Duration,
    pub at: Instant,
}

/// Decoded blocks waiting for their parent before new ones are dropped (sync fetches those).
pub const PENDING_BLOCKS: usize = 64;

/// Inserts blocks that broadcast delivered, in height order: a block whose parent is not in the
/// store yet waits (bounded) for it, from broadcast or from sync.
pub struct Inserter {
    spec: ChainSpec,
    store: Arc<Store>,
    p2p: P2pHandle,
    metrics: BroadcastMetrics,
    mode: &'static str,
    pending: BTreeMap<u64, Block>,
    delivered: broadcast::Sender<Delivered>,
}

impl Inserter {
    pub fn new(
        spec: ChainSpec,
        store: Arc<Store>,
        p2p: P2pHandle,
        metrics: BroadcastMetrics,
        mode: BroadcastMode,
    ) -> Self {
        Inserter {
            spec,
            store,
            p2p,
            metrics,
            mode: mode.label(),
            pending: BTreeMap::new(),
            delivered: broadcast::channel(256).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Delivered> {
        self.delivered.subscribe()
    }

    pub fn sender(&self) -> broadcast::Sender<Delivered> {
        self.delivered.clone()
    }

    /// A complete block came in. Returns whether it was new here.
    pub fn offer(&mut self, block: Block) -> bool {
        let head = self.store.head().height;
        if block.header.height <= head || self.pending.contains_key(&block.header.height) {
            self.metrics
                .blocks
                .get_or_create(&[("outcome", "stale")])
                .inc();
            return false;
        }
        let latency = Duration::from_millis(now_ms().saturating_sub(block.header.timestamp_ms));
        self.metrics
            .delivery_seconds
            .get_or_create(&[("mode", self.mode)])
            .observe(latency.as_secs_f64());
        let _ = self.delivered.send(Delivered {
            height: block.header.height,
            hash: block.hash(),
            latency,
            at: Instant::now(),
        });
        self.pending.insert(block.header.height, block);
        while self.pending.len() > PENDING_BLOCKS {
            self.pending.pop_last();
            self.metrics
                .blocks
                .get_or_create(&[("outcome", "orphaned")])
                .inc();
        }
        self.drain();
        true
    }

    /// Inserts whatever now follows the head; the rest waits for sync or earlier blocks.
    pub fn drain(&mut self) {
        loop {
            let head = self.store.head();
            let Some(b) = self.pending.remove(&(head.height + 1)) else {
                break;
            };
            match self.spec.verify(b, &head.header) {
                Ok(v) => match self.store.insert_batch(&[v]) {
                    Ok(h) => {
                        self.metrics
                            .blocks
                            .get_or_create(&[("outcome", "inserted")])
                            .inc();
                        self.p2p.announce(h.header.clone(), h.signature);
                    }
                    Err(e) => {
                        debug!("broadcast block not committed: {e}");
                        break;
                    }
                },
                Err(e) => {
                    debug!("broadcast block does not extend the head: {e}");
                    break;
                }
            }
        }
        let head = self.store.head().height;
        self.pending.retain(|h, _| *h > head);
        self.metrics.pending_blocks.set(self.pending.len() as i64);
    }
}
