//! stressnet: runs a `SyncNetwork` spec as a network of `syncnode` processes and decides verdicts.
//! The plan, fault execution, scraping and verdicts are the soak library (`soak`), the one copy the
//! operator uses too; this crate adds the local runner, profile attribution, the report and
//! run comparison.

pub mod attribution;
pub mod cluster;
pub mod compare;
pub mod local;
pub mod report;
pub mod run_dir;

pub use soak::{exec, judge, node_http, plan, scrape, verdict};
