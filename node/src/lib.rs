//! The syncnet node: the drivers that run the protocol cores of [`syncnet_proto`] over libp2p,
//! tokio and redb, the store, the metrics and control HTTP API, and the `syncnode` runtime. See
//! docs/architecture.md for where each concept lives.
//!
//! The public surface: the runtime ([`node::run`]), the p2p layer ([`p2p::spawn`],
//! [`p2p::P2pHandle`]), the sync and broadcast tasks, the store, metrics, network emulation and
//! offline chain generation. The control API and the canaries are internal (reached through
//! `PUT /faults`). The protocol modules are re-exported under their own names
//! (`syncnet_node::chain` is `syncnet_proto::chain`), so a user of the node needs one dependency.

pub mod broadcast;
mod canary;
mod control;
pub mod logthrottle;
pub mod metrics;
pub mod netem;
pub mod node;
pub mod p2p;
pub mod producer;
pub mod profile;
pub mod store;
pub mod sync;

pub use syncnet_proto::{
    chain, config, dial, downloader, error, faults, ida, keys, peers, ratelimit, requests, streams,
    util, wire,
};
