//! The gossipsub baseline's swarm side: its configuration for large blocks, the topic
//! `/syncnet/<network>/blocks/1`, and the messages handed to the validation task
//! (`broadcast::gossip`). gossipsub runs inside the swarm (`p2p::Behaviour`).
//!
//! Configured explicitly for large blocks (gossipsub's defaults are for small messages): the
//! transmit cap is raised above the largest block, publishing goes to the mesh only (no flood
//! publish), and queued messages live long enough for a mesh's worth of 2 MiB sends at 100 Mbit/s.
//! Messages are anonymous with content ids: blocks carry the producer's signature already, and
//! gossipsub only forwards a message after the validation task accepts it (`validate_messages`).
//!
//! The default protocol ids are kept so gossipsub v1.2's IDONTWANT (duplicate suppression for
//! large messages) stays on; the topic name carries the network id.

use std::time::Duration;

use libp2p::PeerId;
use libp2p::gossipsub::{self, MessageId};

pub use crate::config::GossipConfig;

/// The gossipsub configuration for `cfg`; gossipsub's own checks run here, so an error names the
/// fields it could be about.
pub fn build(cfg: &GossipConfig) -> Result<gossipsub::Config, String> {
    let this = cfg;
    gossipsub::ConfigBuilder::default()
        .mesh_n(this.mesh_n)
        .mesh_n_low(this.mesh_n_low)
        .mesh_n_high(this.mesh_n_high)
        .mesh_outbound_min((this.mesh_n_low / 3).min(this.mesh_n / 2))
        .max_transmit_size(this.max_transmit_bytes)
        .heartbeat_interval(Duration::from_millis(this.heartbeat_ms))
        .publish_queue_duration(Duration::from_millis(this.queue_ms))
        .forward_queue_duration(Duration::from_millis(this.queue_ms))
        .flood_publish(false)
        .validate_messages()
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .message_id_fn(|m: &gossipsub::Message| MessageId::new(blake3::hash(&m.data).as_bytes()))
        .build()
        .map_err(|e| format!("mesh_n / mesh_n_low / mesh_n_high / max_transmit_bytes: {e}"))
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
