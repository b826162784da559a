//! syncnet node engine. See docs/architecture.md for where each concept lives.

pub mod broadcast;
pub mod canary;
pub mod chain;
pub mod config;
pub mod control;
pub mod downloader;
pub mod faults;
pub mod ida;
pub mod keys;
pub mod metrics;
pub mod netem;
pub mod node;
pub mod p2p;
pub mod producer;
pub mod profile;
pub mod ratelimit;
pub mod requests;
pub mod store;
pub mod streams;
pub mod sync;
pub mod util;
pub mod wire;
