//! The gossipsub baseline: whole blocks published on one topic, `/syncnet/<network>/blocks/1`.
//! gossipsub runs inside the swarm (`p2p::Behaviour`); this module holds its configuration and the
//! task that validates what arrives and hands good blocks to the [`Inserter`].
//!
//! Configured explicitly for large blocks (gossipsub's defaults are for small messages): the
//! transmit cap is raised above the largest block, publishing goes to the mesh only (no flood
//! publish), and queued messages live long enough for a mesh's worth of 2 MiB sends at 100 Mbit/s.
//! Messages are anonymous with content ids: blocks carry the producer's signature already, and
//! gossipsub only forwards a message after this task accepts it (`validate_messages`).
//!
//! The default protocol ids are kept so gossipsub v1.2's IDONTWANT (duplicate suppression for
//! large messages) stays on; the topic name carries the network id.

use std::time::Duration;

use libp2p::PeerId;
use libp2p::gossipsub::{self, MessageAcceptance, MessageId};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::debug;

use super::P2pHandle;
use crate::broadcast::Inserter;
use crate::chain::{Block, ChainSpec, check_payload};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GossipConfig {
    /// Target mesh degree D (gossipsub's default, 6, is for small messages; 8 = IDA's neighbours).
    pub mesh_n: usize,
    pub mesh_n_low: usize,
    pub mesh_n_high: usize,
    /// Largest message (a whole block plus framing).
    pub max_transmit_bytes: usize,
    pub heartbeat_ms: u64,
    /// How long a publish or forward may wait in a connection's queue before gossipsub drops it
    /// (its defaults, 5 s and 1 s, drop large blocks on slow links).
    pub queue_ms: u64,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            mesh_n: 8,
            mesh_n_low: 6,
            mesh_n_high: 12,
            max_transmit_bytes: 10 * 1024 * 1024,
            heartbeat_ms: 1000,
            queue_ms: 30_000,
        }
    }
}

impl GossipConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat_ms == 0 || self.queue_ms == 0 {
            return Err("heartbeat_ms and queue_ms must be > 0".into());
        }
        // gossipsub 0.50 checks these only for per-topic settings, not for the defaults used here.
        if !(1 <= self.mesh_n_low
            && self.mesh_n_low <= self.mesh_n
            && self.mesh_n <= self.mesh_n_high)
        {
            return Err(format!(
                "mesh_n: needs 1 <= mesh_n_low ({}) <= mesh_n ({}) <= mesh_n_high ({})",
                self.mesh_n_low, self.mesh_n, self.mesh_n_high
            ));
        }
        if self.max_transmit_bytes < 1024 {
            return Err("max_transmit_bytes: at least 1024".into());
        }
        self.build().map(|_| ())
    }

    pub fn build(&self) -> Result<gossipsub::Config, String> {
        gossipsub::ConfigBuilder::default()
            .mesh_n(self.mesh_n)
            .mesh_n_low(self.mesh_n_low)
            .mesh_n_high(self.mesh_n_high)
            .mesh_outbound_min((self.mesh_n_low / 3).min(self.mesh_n / 2))
            .max_transmit_size(self.max_transmit_bytes)
            .heartbeat_interval(Duration::from_millis(self.heartbeat_ms))
            .publish_queue_duration(Duration::from_millis(self.queue_ms))
            .forward_queue_duration(Duration::from_millis(self.queue_ms))
            .flood_publish(false)
            .validate_messages()
            .validation_mode(gossipsub::ValidationMode::Anonymous)
            .message_id_fn(|m: &gossipsub::Message| {
                MessageId::new(blake3::hash(&m.data).as_bytes())
            })
            .build()
            .map_err(|e| format!("mesh_n / mesh_n_low / mesh_n_high / max_transmit_bytes: {e}"))
    }
}

pub fn topic(network: &str) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("/syncnet/{network}/blocks/1"))
}

/// A message gossipsub delivered, waiting for this node's verdict before it is forwarded.
pub struct Inbound {
    pub id: MessageId,
    pub source: PeerId,
    pub data: Vec<u8>,
}

/// Inbound messages queued for validation; beyond it they are ignored (not forwarded, no penalty).
pub const INBOUND_QUEUE: usize = 64;

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
