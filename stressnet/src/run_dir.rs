//! The files of a run directory, shared by the runner (which writes them) and `stressnet report` /
//! `compare` (which read them). Everything is plain JSON or JSON lines:
//!
//! | file | what |
//! | --- | --- |
//! | `run.json` | name, seed, the resolved spec, the nodes, the fault schedule |
//! | `metrics.jsonl` | one line per node and scrape ([`Sample`](crate::scrape::Sample)) |
//! | `events.jsonl` | starts, kills, restarts, crashes, fault windows ([`Event`]) |
//! | `summary.json` | verdicts and figures ([`crate::report`]) |
//! | `report.html`, `charts/*.svg` | the report |
//! | `profiles/` | pprof heap and CPU profiles of each node, `index.json` ([`crate::attribution`]) |
//! | `nodes/<name>/` | each node's config, store and `node.log` |

use std::fs::File;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use syncnet_crds::SyncNetworkSpec;

use crate::plan::FaultWindow;

pub const INFO: &str = "run.json";
pub const METRICS: &str = "metrics.jsonl";
pub const EVENTS: &str = "events.jsonl";
pub const SUMMARY: &str = "summary.json";
pub const REPORT: &str = "report.html";
pub const CHARTS: &str = "charts";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub region: String,
    pub producer: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunInfo {
    pub name: String,
    pub seed: u64,
    pub spec: SyncNetworkSpec,
    pub nodes: Vec<NodeInfo>,
    pub schedule: Vec<FaultWindow>,
    pub started_unix_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Started,
    FaultBegan,
    FaultEnded,
    FaultApplied,
    ApplyFailed,
    Killed,
    Restarted,
    Crashed,
    Interrupted,
    Finished,
    /// Profiles were asked of the nodes (`profiles/`).
    Profiled,
    ProfileFailed,
}

impl EventKind {
    pub fn label(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::FaultBegan => "fault began",
            EventKind::FaultEnded => "fault ended",
            EventKind::FaultApplied => "faults set",
            EventKind::ApplyFailed => "faults failed",
            EventKind::Killed => "killed",
            EventKind::Restarted => "restarted",
            EventKind::Crashed => "CRASHED",
            EventKind::Interrupted => "interrupted",
            EventKind::Finished => "finished",
            EventKind::Profiled => "profiling",
            EventKind::ProfileFailed => "profile failed",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    /// Seconds since the soak started (negative: during start-up).
    pub t: f64,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub detail: String,
}

pub fn write_info(dir: &Path, info: &RunInfo) -> anyhow::Result<()> {
    std::fs::write(dir.join(INFO), serde_json::to_vec_pretty(info)?)?;
    Ok(())
}

pub fn read_info(dir: &Path) -> anyhow::Result<RunInfo> {
    let p = dir.join(INFO);
    let text = std::fs::read(&p)
        .with_context(|| format!("{}: not a run directory (no {INFO})", dir.display()))?;
    serde_json::from_slice(&text).with_context(|| p.display().to_string())
}

/// Reads `events.jsonl`; a torn last line is ignored (the runner was killed mid-write).
pub fn read_events(dir: &Path) -> anyhow::Result<Vec<Event>> {
    let p = dir.join(EVENTS);
    match File::open(&p) {
        Ok(f) => crate::scrape::read_records(std::io::BufReader::new(f), &p.display().to_string())
            .map_err(anyhow::Error::msg),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(e).context(p.display().to_string()),
    }
}

pub fn read_samples(dir: &Path) -> anyhow::Result<Vec<crate::scrape::Sample>> {
    let p = dir.join(METRICS);
    match File::open(&p) {
        Ok(f) => crate::scrape::read_jsonl(std::io::BufReader::new(f)).map_err(anyhow::Error::msg),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(e).context(p.display().to_string()),
    }
}
