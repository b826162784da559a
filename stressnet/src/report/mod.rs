//! A run's verdicts and report from its directory alone (so `stressnet report RUN_DIR` re-renders
//! what `run` wrote): `summary.json`, `report.html` with inline SVG charts made by plotters, and
//! the same charts as `charts/*.svg`.

use std::path::Path;

use serde::Serialize;

use crate::attribution;
use crate::judge;
use crate::run_dir::{self, Event, EventKind, RunInfo};
use crate::scrape::Sample;

mod charts;
mod html;
pub mod svgcheck;

pub use charts::{ChartOptions, charts, render};
pub use html::html;

/// What `summary.json` holds: the verdicts and the run's figures (what `compare` reads).
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub name: String,
    /// PASS only when every verdict was decided and passed; INCONCLUSIVE when nothing failed but
    /// something was not judged or the run was interrupted.
    pub outcome: judge::Outcome,
    /// `outcome == pass`.
    pub pass: bool,
    /// Named failed verdicts: those of [`judge::Summary`] plus `crash:<node>` for a node that
    /// exited on its own.
    pub failed: Vec<String>,
    /// What could not be decided: the verdict names of [`judge::Summary::undecided`], and
    /// `run:interrupted` for a run cut short.
    pub undecided: Vec<String>,
    pub interrupted: bool,
    pub seed: u64,
    pub nodes: usize,
    pub planned_secs: u64,
    /// Seconds from the first to the last scrape.
    pub ran_secs: f64,
    pub head: u64,
    /// Head growth over the run, blocks per second.
    pub blocks_per_sec: f64,
    /// Slowest catch-up after any fault, seconds (None: no fault ended, or a node never caught up).
    pub worst_catch_up_secs: Option<f64>,
    pub faults: usize,
    pub kills: usize,
    pub crashes: usize,
    pub verdicts: judge::Summary,
    /// When each failed verdict would first have failed (run seconds), earliest first: a crash
    /// at its event, the others from the samples ([`judge::detections`]).
    pub detected: Vec<judge::Detection>,
    /// What the nodes' profiles name: top growing allocation sites, top CPU sites, per node
    /// ([`attribution`]); empty for runs without profiles.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attribution: Vec<attribution::NodeAttribution>,
    /// Why the profiles could not be read, if they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attribution_error: Option<String>,
}

/// One line of a chart: node name, region index, points.
pub type Line = (String, usize, Vec<(f64, f64)>);

/// One chart's data: what the SVG draws, kept so tests can check every node has a series.
#[derive(Clone, Debug)]
pub struct Chart {
    pub file: &'static str,
    pub title: &'static str,
    pub y_label: &'static str,
    pub series: Vec<Line>,
    /// Drawn per region (the lowest and highest node) instead of per node: heads overlap.
    pub by_region: bool,
    /// What the chart's verdict is judged against: the warm-up, bounds, trend and budget.
    pub marks: Vec<Mark>,
    /// Nodes the chart's verdict flagged, drawn on top and thick.
    pub flagged: Vec<String>,
}

impl Chart {
    /// The lowest and highest value of the chart's data (None: no data): what its y-axis must
    /// cover ([`svgcheck::problems`]).
    pub fn data_range(&self) -> Option<(f64, f64)> {
        let ys = self.series.iter().flat_map(|s| s.2.iter().map(|p| p.1));
        ys.filter(|y| y.is_finite()).fold(None, |r, y| {
            Some(r.map_or((y, y), |(a, b): (f64, f64)| (a.min(y), b.max(y))))
        })
    }
}

/// A line a chart draws besides its data.
#[derive(Clone, Debug, PartialEq)]
pub enum Mark {
    /// A time (the warm-up's end).
    Vertical { x: f64, label: String },
    /// A level (a storm bound, the CPU bound, the catch-up distance).
    Bound { y: f64, label: String },
    /// A segment: a node's fitted trend, or its budget from the same start (dashed).
    Line {
        from: (f64, f64),
        to: (f64, f64),
        label: String,
        dashed: bool,
    },
}

/// Judges the run in `dir` and writes `summary.json`, `report.html` and `charts/`.
pub fn finish(dir: &Path, opts: &ChartOptions) -> anyhow::Result<RunSummary> {
    let info = run_dir::read_info(dir)?;
    let samples = run_dir::read_samples(dir)?;
    let events = run_dir::read_events(dir)?;
    let mut summary = summarize(&info, &samples, &events);
    let names: Vec<String> = info.nodes.iter().map(|n| n.name.clone()).collect();
    match attribution::for_run(dir, &names) {
        Ok(a) => summary.attribution = a,
        Err(e) => summary.attribution_error = Some(e),
    }
    attach_sites(&mut summary);
    let charts = charts(&info, &samples, &summary.verdicts);
    std::fs::create_dir_all(dir.join(run_dir::CHARTS))?;
    let mut svgs = vec![];
    for c in &charts {
        let svg = render(c, &info, opts)?;
        std::fs::write(dir.join(run_dir::CHARTS).join(c.file), &svg)?;
        svgs.push(svg);
    }
    std::fs::write(
        dir.join(run_dir::SUMMARY),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    std::fs::write(
        dir.join(run_dir::REPORT),
        html(&info, &summary, &charts, &svgs, &events),
    )?;
    Ok(summary)
}

pub fn summarize(info: &RunInfo, samples: &[Sample], events: &[Event]) -> RunSummary {
    let names: Vec<String> = info.nodes.iter().map(|n| n.name.clone()).collect();
    let verdicts = judge::judge(&info.spec, &names, samples, &info.schedule);
    let mut failed = verdicts.failed.clone();
    let mut crashed: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == EventKind::Crashed)
        .filter_map(|e| e.node.as_deref())
        .collect();
    let crashes = crashed.len();
    crashed.sort_unstable();
    crashed.dedup();
    failed.extend(crashed.iter().map(|n| format!("crash:{n}")));
    let t0 = samples.iter().map(|s| s.t).fold(f64::INFINITY, f64::min);
    let t1 = samples
        .iter()
        .map(|s| s.t)
        .fold(f64::NEG_INFINITY, f64::max);
    let head_at = |t: f64| {
        samples
            .iter()
            .filter(|s| s.t == t)
            .filter_map(|s| s.values.get(judge::HEIGHT).copied())
            .fold(0.0, f64::max)
    };
    let (h0, h1) = if samples.is_empty() {
        (0.0, 0.0)
    } else {
        (head_at(t0), head_at(t1))
    };
    let ran = if samples.is_empty() { 0.0 } else { t1 - t0 };
    // Windows still open at the end of the run (e.g. canaries lasting the whole soak) have no
    // catch-up to report.
    let catch: Vec<_> = verdicts
        .progress
        .catch_ups
        .iter()
        .filter(|c| c.fault_end <= t1)
        .collect();
    let worst_catch_up_secs = if catch.iter().any(|c| c.worst_secs.is_none()) {
        None
    } else {
        catch
            .iter()
            .filter_map(|c| c.worst_secs)
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
    };
    let interrupted = events.iter().any(|e| e.kind == EventKind::Interrupted);
    let mut undecided = verdicts.undecided.clone();
    if interrupted {
        undecided.push("run:interrupted".to_owned());
    }
    let outcome = judge::Outcome::of(&failed, &undecided);
    let mut detected = judge::detections(&info.spec, samples, &info.schedule, &verdicts);
    for n in &crashed {
        let first = events
            .iter()
            .find(|e| e.kind == EventKind::Crashed && e.node.as_deref() == Some(n));
        if let Some(e) = first {
            detected.push(judge::Detection {
                verdict: format!("crash:{n}"),
                at_secs: e.t,
            });
        }
    }
    detected.sort_by(|a, b| a.at_secs.total_cmp(&b.at_secs));
    RunSummary {
        name: info.name.clone(),
        outcome,
        pass: outcome == judge::Outcome::Pass,
        failed,
        undecided,
        interrupted,
        seed: info.seed,
        nodes: info.nodes.len(),
        planned_secs: info.spec.soak.duration_secs,
        ran_secs: ran,
        head: h1 as u64,
        blocks_per_sec: if ran > 0.0 { (h1 - h0) / ran } else { 0.0 },
        worst_catch_up_secs,
        faults: info.schedule.len(),
        kills: events
            .iter()
            .filter(|e| e.kind == EventKind::Killed)
            .count(),
        crashes,
        verdicts,
        detected,
        attribution: vec![],
        attribution_error: None,
    }
}

/// Puts each node's top sites next to its verdicts: heap growth by the RSS leak verdict, CPU
/// sites by the CPU and storm verdicts.
pub fn attach_sites(s: &mut RunSummary) {
    let RunSummary {
        verdicts,
        attribution,
        ..
    } = s;
    let of = |node: &str| attribution.iter().find(|a| a.node == node);
    for l in verdicts.leaks.iter_mut().filter(|l| l.metric == "rss") {
        l.top_sites = of(&l.node)
            .map(|a| a.heap_growth.clone())
            .unwrap_or_default();
    }
    for c in &mut verdicts.cpu {
        c.top_sites = of(&c.node).map(|a| a.cpu.clone()).unwrap_or_default();
    }
    for st in &mut verdicts.storms {
        st.top_sites = of(&st.node).map(|a| a.cpu.clone()).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests;
