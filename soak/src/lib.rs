//! The soak library: what turns a `SyncNetwork` spec into a judged run, without the runner.
//!
//! - [`plan`]: the spec → node configs and the fault schedule (seeded, reproducible);
//! - [`exec`]: which fault set each node holds at each moment of the schedule;
//! - [`node_http`]: the node's control API and metrics endpoint, as a client;
//! - [`scrape`]: Prometheus text → samples, and the samples file;
//! - [`verdict`] and [`judge`]: sans-IO verdicts (sync progress, statistical leak detection,
//!   discovery storms) over the samples.
//!
//! Both runners use it: the stressnet CLI (local processes, report) and the operator (pods on a
//! cluster). Neither the node runtime nor plotting is linked here.

pub mod exec;
#[doc(hidden)]
pub mod fuzzing;
pub mod judge;
pub mod node_http;
pub mod plan;
pub mod scrape;
pub mod verdict;
