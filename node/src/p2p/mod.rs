//! The libp2p driver of the peers core (`syncnet_proto::peers`): it owns the swarm, turns swarm
//! and session events into the core's inputs and executes the core's outputs. The rules (the
//! duplicate-connection rule, "settled" reporting, the session table, request routing) live in
//! the core, with their tests; see docs/protocol.md for the protocol itself.
//!
//! - [`handle`]: the [`P2pHandle`] the rest of the node uses, and the fault channel;
//! - [`swarm`]: the behaviours and transport (TCP + noise + yamux, network emulation), `spawn`;
//! - `driver`: the one task that runs the swarm and the core;
//! - `pending`: the transport's pool of inbound connections in their handshake;
//! - [`session`]: one sync stream's task (handshake, serving, the write queue);
//! - `frames`: the pool of reply frame buffers, capped in bytes;
//! - [`gossip`]: the gossipsub baseline's swarm side.
//!
//! Every dial goes through the dial manager and uses a fresh port (`allocate_new_port`), so two
//! peers dialling each other at once get two TCP connections instead of one broken one.

mod driver;
mod frames;
mod gate;
pub mod gossip;
mod handle;
mod pending;
pub mod session;
mod swarm;

use std::path::Path;

use anyhow::Context;
use libp2p::{Multiaddr, PeerId, StreamProtocol, identity};
use serde::Serialize;

pub use handle::{FaultsRx, P2pHandle};
pub use swarm::spawn;
pub use syncnet_proto::config::P2pConfig;
pub use syncnet_proto::dial::{DialConfig, DialDecision, DialManager};
pub use syncnet_proto::keys::identity_of;
pub use syncnet_proto::peers::{RequestError, SetupCounters};

use crate::streams::StreamStats;

/// What the sync layer hears from the p2p layer.
pub type NetEvent = syncnet_proto::peers::NetEvent<PeerId>;

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
