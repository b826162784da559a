//! The gossipsub baseline's validation task: checks what gossipsub delivered (producer signature,
//! payload hash) and hands good blocks to the [`Inserter`]; gossipsub forwards a message only after
//! this verdict. The swarm side (configuration, topic) is `p2p::gossip`.

use libp2p::gossipsub::MessageAcceptance;
use tokio::sync::mpsc;
use tracing::debug;

use super::Inserter;
use crate::chain::{Block, ChainSpec, check_payload};
use crate::p2p::P2pHandle;
pub use crate::p2p::gossip::{GossipConfig, INBOUND_QUEUE, Inbound, topic};

/// Validates gossiped blocks (producer signature and payload hash, on the blocking pool) and
/// inserts good ones. Runs until the p2p layer stops.
pub async fn run(
    spec: ChainSpec,
    p2p: P2pHandle,
    mut inbound: mpsc::Receiver<Inbound>,
    mut inserter: Inserter,
) {
    while let Some(m) = inbound.recv().await {
        let spec2 = spec.clone();
        let checked = tokio::task::spawn_blocking(move || -> Result<Block, String> {
            let block: Block = postcard::from_bytes(&m.data).map_err(|e| e.to_string())?;
            spec2
                .verify_head(&block.header, &block.signature)
                .map_err(|e| e.to_string())?;
            check_payload(&block).map_err(|e| e.to_string())?;
            Ok(block)
        })
        .await;
        match checked {
            Ok(Ok(block)) => {
                p2p.gossip_verdict(m.id, m.source, MessageAcceptance::Accept);
                inserter.offer(block);
            }
            Ok(Err(e)) => {
                debug!(peer = %m.source, "invalid gossiped block: {e}");
                p2p.gossip_verdict(m.id, m.source, MessageAcceptance::Reject);
                p2p.penalise(m.source).await;
            }
            Err(_) => return, // runtime shutting down
        }
    }
}
