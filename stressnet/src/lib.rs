//! stressnet: runs a `SyncNetwork` spec as a network of `syncnode` processes and decides verdicts.
//! The verdict logic ([`verdict`]) is sans-IO and is the one copy the operator uses too.

pub mod attribution;
pub mod cluster;
pub mod compare;
pub mod exec;
pub mod judge;
pub mod local;
pub mod node_http;
pub mod plan;
pub mod report;
pub mod run_dir;
pub mod scrape;
pub mod verdict;
