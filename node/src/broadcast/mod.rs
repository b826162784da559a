//! Block broadcast: how a new block reaches every node right after it is produced — IDA gossip
//! ([`ida`], the default) or whole blocks over gossipsub ([`gossip`], the baseline) — and the one
//! place where a block received that way is inserted ([`Inserter`]). Sync stays the catch-up path
//! for whatever broadcast misses. Broadcast sits above the p2p layer: it uses `P2pHandle`, never
//! the other way round.

pub mod gossip;
pub mod ida;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tracing::debug;

use crate::chain::{Block, ChainSpec, H256};
use crate::metrics::{BlockOutcome, BroadcastMetrics};
use crate::p2p::P2pHandle;
use crate::store::Store;
pub use syncnet_proto::config::{BroadcastConfig, BroadcastMode, GossipConfig, IdaConfig};
pub use syncnet_proto::producer::produce;
use syncnet_proto::util::now_ms;

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
///
/// The broadcast tasks only hand blocks over ([`offer`](Self::offer) never blocks); verifying and
/// committing happen on a thread of their own, so a commit (an fsync or two) never stalls the
/// async workers that forward chunks for every other block.
pub struct Inserter {
    tx: std::sync::mpsc::SyncSender<Block>,
    metrics: BroadcastMetrics,
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
        // The queue holds what the pending map would: blocks beyond it are dropped as orphaned
        // (sync fetches them).
        let (tx, rx) = std::sync::mpsc::sync_channel(PENDING_BLOCKS);
        let delivered = broadcast::channel(256).0;
        let mut worker = Worker {
            spec,
            store,
            p2p,
            metrics: metrics.clone(),
            mode: mode.label(),
            pending: BTreeMap::new(),
            delivered: delivered.clone(),
        };
        // Ends when the last sender (this Inserter) is dropped.
        std::thread::Builder::new()
            .name("block-inserter".into())
            .spawn(move || {
                while let Ok(block) = rx.recv() {
                    worker.offer(block);
                }
            })
            .expect("spawning the block inserter thread");
        Inserter {
            tx,
            metrics,
            delivered,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Delivered> {
        self.delivered.subscribe()
    }

    pub fn sender(&self) -> broadcast::Sender<Delivered> {
        self.delivered.clone()
    }

    /// A complete block came in: queue it for the inserter thread. Returns false if the queue was
    /// full and the block was dropped.
    pub fn offer(&mut self, block: Block) -> bool {
        match self.tx.try_send(block) {
            Ok(()) => true,
            Err(_) => {
                self.metrics.block(BlockOutcome::Orphaned).inc();
                false
            }
        }
    }
}

/// The inserter thread's state.
struct Worker {
    spec: ChainSpec,
    store: Arc<Store>,
    p2p: P2pHandle,
    metrics: BroadcastMetrics,
    mode: &'static str,
    pending: BTreeMap<u64, Block>,
    delivered: broadcast::Sender<Delivered>,
}

impl Worker {
    fn offer(&mut self, block: Block) {
        let head = self.store.head().height;
        if block.header.height <= head || self.pending.contains_key(&block.header.height) {
            self.metrics.block(BlockOutcome::Stale).inc();
            return;
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
            self.metrics.block(BlockOutcome::Orphaned).inc();
        }
        self.drain();
    }

    /// Inserts whatever now follows the head; the rest waits for sync or earlier blocks.
    fn drain(&mut self) {
        loop {
            let head = self.store.head();
            let Some(b) = self.pending.remove(&(head.height + 1)) else {
                break;
            };
            match self.spec.verify(b, &head.header) {
                Ok(v) => match self.store.insert_batch(&[v]) {
                    Ok(h) => {
                        self.metrics.block(BlockOutcome::Inserted).inc();
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
