//! A run's verdicts from its samples: sync progress over all nodes, leaks per node and metric,
//! storms per node. The one place that maps a spec's thresholds onto the verdict library; the
//! local runner and the operator both call [`judge`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use syncnet_crds::{FaultAction, SyncNetworkSpec};

use crate::plan::FaultWindow;
use crate::scrape::{Sample, series};
use crate::verdict::{
    self, LeakConfig, LeakVerdict, ProgressConfig, ProgressVerdict, StormVerdict,
};

/// A site in the node's code and what it accounts for (filled in by the profile attribution of the
/// runner that has the node's binary and profiles).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Site {
    pub site: String,
    /// Heap: bytes grown (end minus warm-up). CPU: share of samples, 0–1.
    pub value: f64,
    /// The heaviest stack through the site, from its first frame outside the standard library
    /// (the site, or the dependency it called) towards the root.
    pub stack: Vec<String>,
}

/// Resources judged for leaks: the verdict's name and the series judged. Each one's budget
/// (units per hour) comes from the spec's `verdicts` ([`leak_config`]).
pub const LEAK_METRICS: &[(&str, &str)] = &[
    ("rss", "process_resident_memory_bytes"),
    ("fds", "process_open_fds"),
    ("threads", "process_threads"),
    ("cpu", CPU_RATE),
    ("cpu_per_request", CPU_PER_REQUEST),
];

/// How the spec judges one of [`LEAK_METRICS`] (by its name): the one mapping of the spec's
/// `soak` and `verdicts` onto the leak verdict, also used by the verdict benchmark.
pub fn leak_config(spec: &SyncNetworkSpec, name: &str) -> LeakConfig {
    let v = &spec.verdicts;
    LeakConfig {
        warmup_secs: spec.soak.warmup_secs as f64,
        restart_warmup_secs: v.restart_warmup_secs as f64,
        bucket_secs: v.leak_bucket_secs as f64,
        p_threshold: v.leak_p,
        slope_budget_per_hour: match name {
            "rss" => v.leak_slope_mib_per_hour * 1024.0 * 1024.0,
            "fds" => v.fds_per_hour,
            "threads" => v.threads_per_hour,
            "cpu" => v.cpu_cores_per_hour,
            "cpu_per_request" => v.cpu_ms_per_request_per_hour,
            other => unreachable!("no budget for {other}"),
        },
        limit: None,
        mean_windows: false,
    }
}

/// The unit a leak verdict of `name` reports in: the spec's unit for its budget.
pub fn unit_of(name: &str) -> &'static str {
    match name {
        "rss" => "MiB",
        "fds" => "fds",
        "threads" => "threads",
        "cpu" => "cores",
        "cpu_per_request" => "ms/request",
        other => unreachable!("no unit for {other}"),
    }
}

/// Measured units per reported unit ([`unit_of`]): memory is measured in bytes.
fn scale_of(name: &str) -> f64 {
    if name == "rss" { 1024.0 * 1024.0 } else { 1.0 }
}

/// A verdict's slopes from measured units into reported ones (÷ `k`).
fn rescale(v: &mut LeakVerdict, k: f64) {
    v.slope_per_hour /= k;
    v.slope_interval_per_hour = v.slope_interval_per_hour.map(|(a, b)| (a / k, b / k));
    v.floor_slope_per_hour /= k;
    v.late_slope_per_hour = v.late_slope_per_hour.map(|x| x / k);
}

/// Derived series: CPU cores in use, from `process_cpu_seconds_total`.
pub const CPU_RATE: &str = "cpu_cores";
/// Derived series: milliseconds of CPU per request served, per scrape interval that served any
/// (CPU the whole process used, over the requests it served then; see [`cpu_per_request`]).
pub const CPU_PER_REQUEST: &str = "cpu_ms_per_request";
/// Why a node has no CPU-per-request verdict: it served too little to judge (not "undecided").
pub const NOT_SERVING: &str = "served requests in too few windows (not judged)";
pub const CPU_TOTAL: &str = "process_cpu_seconds_total";
pub const HEIGHT: &str = "syncnet_chain_head_height";
/// The process's soft limit on open files (-1: unlimited): the fds verdict's limit.
pub const MAX_FDS: &str = "process_max_fds";
pub const SETUPS: &str = "syncnet_p2p_stream_setups_total{outcome=\"ok\"}";

#[derive(Clone, Debug, Serialize)]
pub struct NodeLeak {
    pub node: String,
    pub metric: &'static str,
    /// The unit of the verdict's slopes (per hour), of `budget_per_hour` and `limit`: the spec's
    /// units (`MiB` for memory, as `leakSlopeMibPerHour` and `memoryLimitMiB`; see [`unit_of`]).
    pub unit: &'static str,
    /// The spec's budget for the slope, `unit` per hour.
    pub budget_per_hour: f64,
    /// Where the resource hurts, in `unit`, when known: `memoryLimitMiB` for memory, the
    /// process's soft fd limit for fds, `cpuCores` for CPU. `verdict.time_to_limit_hours` follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<f64>,
    pub verdict: LeakVerdict,
    /// RSS only: MiB per unit of work, by work (`setup`, `request`, `block`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_unit: Vec<(&'static str, verdict::PerUnit)>,
    /// RSS only, with `verdicts.production.memoryLimitMiB`: when the node reaches it (MiB/h).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projection: Option<verdict::Projection>,
    /// RSS only, from the run's heap profiles: the top growing allocation sites (filled in by
    /// the report, which reads the profiles; empty without them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top_sites: Vec<Site>,
}

/// Work counters the RSS is measured against (cumulative per process): the unit's name, the
/// series, and its production rate per hour in the spec.
const WORK: [(&str, &str); 3] = [
    ("setup", crate::scrape::SETUPS_ALL),
    ("request", crate::scrape::SERVED_ALL),
    ("block", HEIGHT),
];

fn production_rate(p: &syncnet_crds::ProductionSpec, unit: &str) -> Option<f64> {
    match unit {
        "setup" => p.setups_per_hour,
        "request" => p.requests_per_hour,
        "block" => p.blocks_per_hour,
        _ => None,
    }
}

/// RSS per unit of work, and the projection to the memory limit at production rates: the
/// fastest of the growth by time and the growth per unit of work times its production rate (the
/// pessimistic reading: the run cannot tell which one drives the growth when all rise together).
/// A work counter's series, one part per process of the node, by the unit's name ([`WORK`]).
type Work = (&'static str, Vec<Vec<(f64, f64)>>);

/// A resource against each kind of work, per unit and how significantly.
fn per_unit(
    works: &[Work],
    resource: &[Vec<(f64, f64)>],
    cfg: &LeakConfig,
) -> Vec<(&'static str, verdict::PerUnit)> {
    works
        .iter()
        .filter_map(|(unit, work)| verdict::per_unit(resource, work, cfg).map(|p| (*unit, p)))
        .collect()
}

/// When the node reaches its memory limit at production rates, from its RSS growth by time and
/// per unit of work.
fn rss_projection(
    spec: &SyncNetworkSpec,
    rss: &[Vec<(f64, f64)>],
    leak: &LeakVerdict,
    per: &[(&'static str, verdict::PerUnit)],
) -> Option<verdict::Projection> {
    let production = spec.verdicts.production.as_ref();
    production
        .and_then(|p| p.memory_limit_mib.map(|l| (p, l * 1024.0 * 1024.0)))
        .and_then(|(p, limit)| {
            let last = rss.iter().rev().find_map(|l| l.last())?.1;
            let mut candidates = vec![];
            if leak.undecided.is_none() {
                let (lo, hi) = leak
                    .slope_interval_per_hour
                    .unwrap_or((leak.slope_per_hour, leak.slope_per_hour));
                candidates.push(("time", leak.slope_per_hour, lo, hi));
            }
            for (unit, pu) in per {
                if let Some(rate) = production_rate(p, unit) {
                    candidates.push((*unit, pu.per_unit * rate, pu.low * rate, pu.high * rate));
                }
            }
            verdict::project(last, limit, &candidates)
        })
}

/// A node's storm verdicts: stream setups per minute (every one that reached a conclusion:
/// established, failed or refused, as the node's own storm bound counts them), and discovery
/// rounds per minute. Successful setups alone miss the storm where peers refuse it.
#[derive(Clone, Debug, Serialize)]
pub struct NodeStorm {
    pub node: String,
    pub verdict: StormVerdict,
    pub discovery: StormVerdict,
    /// Why streams ended and setups were refused in the worst minute of setups (largest first,
    /// nonzero only): where a storm comes from, e.g. `removed: stream_error` after stream faults,
    /// `refused: duplicate` when both ends open at once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StormCause>,
    /// From the run's CPU profile: the node's top CPU sites (filled in by the report).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top_sites: Vec<Site>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StormCause {
    pub what: &'static str,
    pub count: f64,
}

/// The node's counters behind [`StormCause`], by what the report calls them.
const STORM_CAUSES: [(&str, &str); 11] = [
    (
        "removed: stream_error",
        "syncnet_p2p_stream_removals_total{reason=\"stream_error\"}",
    ),
    (
        "removed: disconnected",
        "syncnet_p2p_stream_removals_total{reason=\"disconnected\"}",
    ),
    (
        "removed: conflict",
        "syncnet_p2p_stream_removals_total{reason=\"conflict\"}",
    ),
    (
        "removed: penalised",
        "syncnet_p2p_stream_removals_total{reason=\"penalised\"}",
    ),
    (
        "removed: evicted",
        "syncnet_p2p_stream_removals_total{reason=\"evicted\"}",
    ),
    (
        "reset: full",
        "syncnet_p2p_stream_resets_total{reason=\"full\"}",
    ),
    (
        "reset: duplicate",
        "syncnet_p2p_stream_resets_total{reason=\"duplicate\"}",
    ),
    (
        "reset: cooldown",
        "syncnet_p2p_stream_resets_total{reason=\"cooldown\"}",
    ),
    (
        "reset: conflict",
        "syncnet_p2p_stream_resets_total{reason=\"conflict\"}",
    ),
    (
        "reset: penalised",
        "syncnet_p2p_stream_resets_total{reason=\"penalised\"}",
    ),
    (
        "reset: evicted",
        "syncnet_p2p_stream_resets_total{reason=\"evicted\"}",
    ),
];

/// [`StormCause`]s over the storm window that ends at `at`.
fn storm_causes<'a>(
    samples: impl IntoIterator<Item = &'a Sample> + Clone,
    node: &str,
    at: f64,
) -> Vec<StormCause> {
    let mut out: Vec<StormCause> = STORM_CAUSES
        .iter()
        .map(|(what, key)| StormCause {
            what,
            count: verdict::increase(
                &series(samples.clone(), node, key),
                at - verdict::STORM_WINDOW_SECS,
                at,
            ),
        })
        .filter(|c| c.count > 0.0)
        .collect();
    out.sort_by(|a, b| b.count.total_cmp(&a.count));
    out
}

const DISCOVERY: [&str; 2] = [
    "syncnet_p2p_discovery_rounds_total{outcome=\"productive\"}",
    "syncnet_p2p_discovery_rounds_total{outcome=\"unproductive\"}",
];

/// Discovery rounds of either outcome, as one counter series.
fn discovery_rounds<'a>(
    samples: impl IntoIterator<Item = &'a Sample>,
    node: &str,
) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = samples
        .into_iter()
        .filter(|s| s.node == node)
        .filter(|s| DISCOVERY.iter().any(|k| s.values.contains_key(*k)))
        .map(|s| (s.t, DISCOVERY.iter().filter_map(|k| s.values.get(*k)).sum()))
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// A run's outcome: every verdict decided and passed, some verdict failed, or nothing failed
/// but something could not be decided (a node never judged, a run cut short). Never PASS with
/// an unjudged node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Inconclusive,
}

impl Outcome {
    pub fn of(failed: &[String], undecided: &[String]) -> Outcome {
        if !failed.is_empty() {
            Outcome::Fail
        } else if !undecided.is_empty() {
            Outcome::Inconclusive
        } else {
            Outcome::Pass
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Inconclusive => "INCONCLUSIVE",
        }
    }
}

/// A node's CPU level (cores in use) over its life, against `verdicts.cpuCores`.
#[derive(Clone, Debug, Serialize)]
pub struct NodeCpu {
    pub node: String,
    pub verdict: verdict::LevelVerdict,
    /// From the run's CPU profile: the node's top CPU sites (filled in by the report).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top_sites: Vec<Site>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub outcome: Outcome,
    /// `outcome == Pass`.
    pub pass: bool,
    /// Named failed verdicts: `sync_progress`, `leak:<node>:<metric>`, `cpu:<node>`,
    /// `storm:<node>`.
    pub failed: Vec<String>,
    /// Verdicts that had too little data to decide, by the same names.
    pub undecided: Vec<String>,
    pub progress: ProgressVerdict,
    pub leaks: Vec<NodeLeak>,
    pub cpu: Vec<NodeCpu>,
    pub storms: Vec<NodeStorm>,
}

/// A node's processes (incarnations), oldest first: a restart resets the CPU counter, so a drop in
/// `process_cpu_seconds_total` starts a new one. Found once per node; any of its series is then
/// split the same way.
pub struct Lives {
    cpu: Vec<(f64, f64)>,
    starts: Vec<f64>,
}

impl Lives {
    /// When each restarted process's samples begin (soak clock), oldest first.
    pub fn starts(&self) -> &[f64] {
        &self.starts
    }

    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>, node: &str) -> Lives {
        let cpu = series(samples, node, CPU_TOTAL);
        let starts = cpu
            .windows(2)
            .filter(|w| w[1].1 < w[0].1)
            .map(|w| w[1].0)
            .collect();
        Lives { cpu, starts }
    }

    /// `metric` of the node, one part per incarnation; empty parts stay, so every metric's k-th
    /// part is the same process. The CPU rate is computed within each part.
    pub fn split<'a>(
        &self,
        samples: impl IntoIterator<Item = &'a Sample> + Clone,
        node: &str,
        metric: &str,
    ) -> Vec<Vec<(f64, f64)>> {
        let split = |s: &[(f64, f64)]| {
            let mut parts: Vec<Vec<(f64, f64)>> = vec![vec![]; self.starts.len() + 1];
            for &p in s {
                parts[self.starts.partition_point(|&b| b <= p.0)].push(p);
            }
            parts
        };
        if metric == CPU_RATE {
            split(&self.cpu).iter().map(|part| cpu_rate(part)).collect()
        } else if metric == CPU_PER_REQUEST {
            let served = split(&series(samples, node, crate::scrape::SERVED_ALL));
            split(&self.cpu)
                .iter()
                .zip(&served)
                .map(|(c, s)| cpu_per_request(c, s))
                .collect()
        } else {
            split(&series(samples, node, metric))
        }
    }
}

/// CPU cores in use from a `process_cpu_seconds_total` series, between consecutive scrapes; the
/// step across a restart (the counter drops) is left out.
pub fn cpu_rate(cpu_total: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = vec![];
    let Some(&first) = cpu_total.first() else {
        return out;
    };
    let mut prev = first;
    for &p in &cpu_total[1..] {
        if p.1 < prev.1 {
            // A restart: the new process's counter starts over.
            prev = p;
        } else if p.0 > prev.0 {
            out.push((p.0, (p.1 - prev.1) / (p.0 - prev.0)));
            prev = p;
        }
    }
    out
}

/// Milliseconds of CPU per request served between consecutive scrapes of one process, for the
/// intervals that served any: the whole process's CPU, so a node that serves little shows a high
/// and noisy figure, which the leak verdict's window medians and floor absorb; what it must not
/// absorb is a cost per request that keeps rising with uptime.
pub fn cpu_per_request(cpu_total: &[(f64, f64)], served: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let served: HashMap<u64, f64> = served.iter().map(|p| (p.0.to_bits(), p.1)).collect();
    let mut out = vec![];
    let mut prev: Option<(f64, f64)> = None;
    for &(t, cpu) in cpu_total {
        let Some(&s) = served.get(&t.to_bits()) else {
            continue;
        };
        if let Some((c0, s0)) = prev
            && cpu >= c0
            && s > s0
        {
            out.push((t, (cpu - c0) * 1000.0 / (s - s0)));
        }
        prev = Some((cpu, s));
    }
    out
}

/// A node's concluded stream setups (any outcome), the counter the storm verdict judges; runs
/// scraped before that series existed fall back to successful ones.
pub fn setups<'a>(
    samples: impl IntoIterator<Item = &'a Sample> + Clone,
    node: &str,
) -> Vec<(f64, f64)> {
    let all = series(samples.clone(), node, crate::scrape::SETUPS_ALL);
    if all.is_empty() {
        series(samples, node, SETUPS)
    } else {
        all
    }
}

/// Who may lag during a window: the nodes a kill or a partition cuts off; everyone when that
/// includes the producer (nothing new reaches the others either); nobody for the other actions.
fn excused(spec: &SyncNetworkSpec, nodes: &[String], w: &FaultWindow) -> Option<Vec<usize>> {
    match w.action {
        FaultAction::KillRestart | FaultAction::Partition => {
            let producer_name = crate::plan::producer_name(spec);
            let producer = nodes.iter().position(|n| *n == producer_name);
            if producer.is_some_and(|p| w.targets.contains(&p)) {
                None
            } else {
                Some(w.targets.clone())
            }
        }
        _ => Some(vec![]),
    }
}

/// Every verdict of a run: sync progress over all nodes, then leaks and storms per node.
///
/// Samples are grouped by node once: each node's dozen series are then read from its own share,
/// not from every sample of the run (at 1,000 nodes that was 18 s a judge; operator `judge` bench).
pub fn judge<'a>(
    spec: &SyncNetworkSpec,
    nodes: &[String],
    samples: impl IntoIterator<Item = &'a Sample>,
    faults: &[FaultWindow],
) -> Summary {
    let v = &spec.verdicts;
    let mut by_node: HashMap<&str, Vec<&Sample>> = HashMap::with_capacity(nodes.len());
    for s in samples {
        by_node.entry(s.node.as_str()).or_default().push(s);
    }
    let of = |node: &str| {
        by_node
            .get(node)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .copied()
    };
    let heights: Vec<Vec<(f64, f64)>> = nodes.iter().map(|n| series(of(n), n, HEIGHT)).collect();
    let windows: Vec<verdict::Window> = faults
        .iter()
        .map(|w| verdict::Window {
            start: w.start as f64,
            end: w.end as f64,
            excused: excused(spec, nodes, w),
        })
        .collect();
    let progress = verdict::progress(
        &heights,
        &windows,
        &ProgressConfig {
            within_blocks: v.catch_up_blocks,
            catch_up_secs: v.catch_up_secs as f64,
        },
    );
    let mut failed = vec![];
    if !progress.pass {
        failed.push("sync_progress".to_owned());
    }
    let mut undecided = vec![];
    let mut leaks = vec![];
    let mut cpu = vec![];
    let mut storms = vec![];
    let warmup = spec.soak.warmup_secs as f64;
    for node in nodes {
        let processes = Lives::of(of(node), node);
        // The work counters, split once per node: memory, fds and threads are judged against them.
        let works: Vec<Work> = WORK
            .iter()
            .map(|&(unit, metric)| (unit, processes.split(of(node), node, metric)))
            .collect();
        let max_fds = series(of(node), node, MAX_FDS)
            .last()
            .map(|p| p.1)
            .filter(|&l| l > 0.0);
        for &(name, metric) in LEAK_METRICS {
            let mut cfg = leak_config(spec, name);
            cfg.limit = match name {
                "rss" => v
                    .production
                    .as_ref()
                    .and_then(|p| p.memory_limit_mib)
                    .map(|l| l * 1024.0 * 1024.0),
                "fds" => max_fds,
                "cpu" => Some(v.cpu_cores),
                _ => None,
            };
            // CPU comes in bursts: a window's median of per-scrape rates misses growth in how
            // much each burst uses; its mean is the CPU used over the window.
            cfg.mean_windows = metric == CPU_RATE;
            let lives = processes.split(of(node), node, metric);
            // Memory, fds and threads are also judged against the work done (a leak per setup
            // is a line against setups however the setups fall in time); CPU rates are not.
            let per = if matches!(name, "rss" | "fds" | "threads") {
                per_unit(&works, &lives, &cfg)
            } else {
                vec![]
            };
            let work_p: Vec<f64> = per.iter().map(|(_, p)| p.p).collect();
            let mut verdict = verdict::leak_with_work(&lives, &cfg, &work_p);
            // CPU per request exists only where requests are served: a node that served in too
            // few windows is not judged on it (its CPU level and trend still are), which must
            // not make the run inconclusive.
            if metric == CPU_PER_REQUEST && verdict.undecided.is_some() {
                verdict.undecided = Some(NOT_SERVING);
            }
            if verdict.leak {
                failed.push(format!("leak:{node}:{name}"));
            } else if verdict.undecided.is_some_and(|u| u != NOT_SERVING) {
                undecided.push(format!("leak:{node}:{name}"));
            }
            if metric == CPU_RATE {
                let level = verdict::level(&lives, &cfg, v.cpu_cores);
                if level.over {
                    failed.push(format!("cpu:{node}"));
                } else if level.undecided.is_some() {
                    undecided.push(format!("cpu:{node}"));
                }
                cpu.push(NodeCpu {
                    node: node.clone(),
                    verdict: level,
                    top_sites: vec![],
                });
            }
            // Per unit of work and the projection are reported for memory.
            let (mut per_unit, mut projection) = if name == "rss" {
                let projection = rss_projection(spec, &lives, &verdict, &per);
                (per, projection)
            } else {
                (vec![], None)
            };
            // Reported in the spec's units (computed in the measured ones).
            let k = scale_of(name);
            rescale(&mut verdict, k);
            for (_, p) in &mut per_unit {
                (p.per_unit, p.low, p.high) = (p.per_unit / k, p.low / k, p.high / k);
            }
            if let Some(p) = &mut projection {
                (p.per_hour, p.per_hour_low, p.per_hour_high) =
                    (p.per_hour / k, p.per_hour_low / k, p.per_hour_high / k);
            }
            leaks.push(NodeLeak {
                node: node.clone(),
                metric: name,
                unit: unit_of(name),
                budget_per_hour: cfg.slope_budget_per_hour / k,
                limit: cfg.limit.map(|l| l / k),
                verdict,
                per_unit,
                projection,
                top_sites: vec![],
            });
        }
        let verdict = verdict::storm(&setups(of(node), node), v.setups_per_minute, warmup);
        let discovery = verdict::storm(
            &discovery_rounds(of(node), node),
            v.setups_per_minute,
            warmup,
        );
        if verdict.storm || discovery.storm {
            failed.push(format!("storm:{node}"));
        }
        let causes = verdict
            .at
            .map_or(vec![], |at| storm_causes(of(node), node, at));
        storms.push(NodeStorm {
            node: node.clone(),
            verdict,
            discovery,
            causes,
            top_sites: vec![],
        });
    }
    let outcome = Outcome::of(&failed, &undecided);
    Summary {
        outcome,
        pass: outcome == Outcome::Pass,
        failed,
        undecided,
        progress,
        leaks,
        cpu,
        storms,
    }
}

/// When a failed verdict would first have failed: the run time of the earliest scrape by which
/// the samples up to it already fail it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Detection {
    pub verdict: String,
    pub at_secs: f64,
}

/// Most prefixes judged per node by [`detections`]: the answer is as fine as the run's length
/// over this (or the scrape interval, when coarser), and its cost bounded on long soaks.
const MAX_REPLAYS: usize = 120;

/// When each failed verdict of `summary` would first have failed.
///
/// Per-node verdicts (leaks, CPU, storms) are judged again on growing prefixes of that node's
/// samples, the one node alone (its verdicts read only its own series). Sync progress is read off
/// its verdict: a missed catch-up fails at its deadline, a stuck interval once it has lasted the
/// allowance.
pub fn detections<'a>(
    spec: &SyncNetworkSpec,
    samples: impl IntoIterator<Item = &'a Sample>,
    faults: &[FaultWindow],
    summary: &Summary,
) -> Vec<Detection> {
    let mut out = vec![];
    let allowance = spec.verdicts.catch_up_secs as f64;
    if !summary.progress.pass {
        let missed = summary
            .progress
            .catch_ups
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.fault_end + allowance);
        let stuck = summary.progress.stuck.iter().map(|s| s.from + allowance);
        if let Some(t) = missed.chain(stuck).min_by(f64::total_cmp) {
            out.push(Detection {
                verdict: "sync_progress".to_owned(),
                at_secs: t,
            });
        }
    }
    let node_of = |name: &str| {
        let mut parts = name.splitn(3, ':');
        match (parts.next(), parts.next()) {
            (Some("leak" | "cpu" | "storm"), Some(node)) => Some(node.to_owned()),
            _ => None,
        }
    };
    let mut by_node: std::collections::BTreeMap<String, Vec<&String>> = Default::default();
    for f in &summary.failed {
        if let Some(n) = node_of(f) {
            by_node.entry(n).or_default().push(f);
        }
    }
    if by_node.is_empty() {
        out.sort_by(|a, b| a.at_secs.total_cmp(&b.at_secs));
        return out;
    }
    let mut mine: HashMap<&str, Vec<&Sample>> = HashMap::new();
    for s in samples {
        if by_node.contains_key(&s.node) {
            mine.entry(s.node.as_str()).or_default().push(s);
        }
    }
    for (node, names) in &by_node {
        let Some(own) = mine.get_mut(node.as_str()) else {
            continue;
        };
        own.sort_by(|a, b| a.t.total_cmp(&b.t));
        let mut times: Vec<f64> = own.iter().map(|s| s.t).collect();
        times.dedup();
        let stride = times.len().div_ceil(MAX_REPLAYS).max(1);
        let mut cuts: Vec<f64> = times.iter().copied().step_by(stride).collect();
        if cuts.last() != times.last() {
            cuts.extend(times.last());
        }
        let mut left: Vec<&String> = names.clone();
        let one = [node.clone()];
        for t in cuts {
            let n = own.partition_point(|s| s.t <= t);
            let failed = judge(spec, &one, own[..n].iter().copied(), faults).failed;
            left.retain(|name| {
                let hit = failed.contains(name);
                if hit {
                    out.push(Detection {
                        verdict: (*name).clone(),
                        at_secs: t,
                    });
                }
                !hit
            });
            if left.is_empty() {
                break;
            }
        }
    }
    out.sort_by(|a, b| a.at_secs.total_cmp(&b.at_secs));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncnet_crds::SyncNetwork;

    const SPEC: &str = r#"
apiVersion: syncnet.dev/v1alpha1
kind: SyncNetwork
metadata: {name: t}
spec:
  regions: [{name: us, replicas: 3}]
  producer: {region: us, blockIntervalMs: 1000, payloadBytes: 1024}
  soak: {durationSecs: 3600, warmupSecs: 300, scrapeIntervalSecs: 10}
  verdicts: {leakSlopeMibPerHour: 1}
"#;

    /// One hour of scrapes every 10 s for three healthy nodes, with `tweak` applied per sample.
    fn run(
        tweak: impl Fn(usize, f64, &mut std::collections::BTreeMap<String, f64>),
    ) -> Vec<Sample> {
        let mut out = vec![];
        for i in 0..360 {
            let t = i as f64 * 10.0;
            for n in 0..3 {
                let wobble = ((i * 7 + n * 13) % 11) as f64;
                let mut values: std::collections::BTreeMap<String, f64> = [
                    (HEIGHT, t.floor()),
                    ("process_resident_memory_bytes", 100e6 + wobble * 1e5),
                    ("process_open_fds", 40.0 + (wobble % 3.0)),
                    ("process_threads", 12.0),
                    (CPU_TOTAL, 0.02 * t + wobble * 0.01),
                    (SETUPS, (t / 60.0).floor()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
                tweak(n, t, &mut values);
                out.push(Sample {
                    t,
                    node: format!("us-{n}"),
                    values,
                });
            }
        }
        out
    }

    fn names() -> Vec<String> {
        (0..3).map(|n| format!("us-{n}")).collect()
    }

    #[test]
    fn a_healthy_run_passes_and_a_leak_and_a_storm_are_named() {
        let spec = SyncNetwork::from_yaml(SPEC).unwrap().spec;
        let s = judge(&spec, &names(), &run(|_, _, _| {}), &[]);
        assert!(s.pass, "{:?}", s.failed);
        assert_eq!(s.leaks.len(), 3 * LEAK_METRICS.len());

        // us-1 leaks 20 MiB/h; us-2 sets up 200 streams a minute from minute 30.
        let bad = run(|n, t, v| {
            if n == 1 {
                *v.get_mut("process_resident_memory_bytes").unwrap() +=
                    20.0 * 1048576.0 * t / 3600.0;
            }
            if n == 2 && t > 1800.0 {
                *v.get_mut(SETUPS).unwrap() += 200.0 * (t - 1800.0) / 60.0;
                // Each setup ends in a stream error; a few of the peer's are refused as duplicates.
                v.insert(STORM_CAUSES[0].1.to_owned(), 200.0 * (t - 1800.0) / 60.0);
                v.insert(
                    STORM_CAUSES
                        .iter()
                        .find(|c| c.0 == "reset: duplicate")
                        .unwrap()
                        .1
                        .to_owned(),
                    (t - 1800.0) / 6.0,
                );
            }
        });
        let s = judge(&spec, &names(), &bad, &[]);
        assert!(!s.pass);
        assert_eq!(s.failed, ["leak:us-1:rss", "storm:us-2"]);
        // Where it comes from: the worst minute's removals and refusals, largest first.
        let causes = &s.storms[2].causes;
        assert_eq!(
            causes.iter().map(|c| c.what).collect::<Vec<_>>(),
            ["removed: stream_error", "reset: duplicate"]
        );
        assert!((causes[0].count - 200.0).abs() < 1e-9, "{causes:?}");
        assert!((causes[1].count - 10.0).abs() < 1e-9, "{causes:?}");
        assert!(s.storms[0].causes.is_empty());
        // Memory is reported in the spec's units (MiB/h), with its budget.
        let l = s
            .leaks
            .iter()
            .find(|l| l.node == "us-1" && l.metric == "rss")
            .unwrap();
        assert_eq!((l.unit, l.budget_per_hour), ("MiB", 1.0));
        assert!(
            (l.verdict.slope_per_hour - 20.0).abs() < 1.0,
            "{:?}",
            l.verdict
        );
        // When each would first have failed: the storm within its first minute (it starts at
        // 30 min), the leak after the warm-up and before the run's end.
        let d = detections(&spec, &bad, &[], &s);
        let at = |v: &str| d.iter().find(|d| d.verdict == v).map(|d| d.at_secs);
        let storm = at("storm:us-2").unwrap();
        assert!((1800.0..=1870.0).contains(&storm), "{d:?}");
        let leak = at("leak:us-1:rss").unwrap();
        assert!(leak > 300.0 && leak < 3590.0, "{d:?}");
        assert_eq!(d.len(), 2);
        // Prefixes up to the detection time fail it; the one judged before (360 scrapes over at
        // most 120 replays: every third, 30 s earlier) does not.
        let upto = |t: f64| bad.iter().filter(|x| x.t <= t).cloned().collect::<Vec<_>>();
        assert!(
            judge(&spec, &names(), &upto(storm), &[])
                .failed
                .contains(&"storm:us-2".into())
        );
        assert!(
            !judge(&spec, &names(), &upto(storm - 30.0), &[])
                .failed
                .contains(&"storm:us-2".into())
        );

        // A storm of discovery rounds whose setups all fail (peers refuse them) is one too.
        let refused = run(|n, t, v| {
            let rounds = if n == 0 && t > 1800.0 {
                10.0 * t // 600 rounds a minute
            } else {
                t / 10.0
            };
            v.insert(DISCOVERY[1].to_owned(), rounds);
        });
        let s = judge(&spec, &names(), &refused, &[]);
        assert_eq!(s.failed, ["storm:us-0"]);
        assert!(s.storms[0].discovery.max_per_minute > 500.0);
        assert!(s.storms[1].discovery.max_per_minute < 10.0);
    }

    #[test]
    fn fds_rising_toward_the_soft_limit_give_a_time_to_limit() {
        let spec = SyncNetwork::from_yaml(SPEC).unwrap().spec;
        // us-0 opens 100 fds an hour more, with a soft limit of 1024: (1024 - ~140) / 100 ≈ 9 h.
        let s = run(|n, t, v| {
            v.insert(MAX_FDS.to_owned(), 1024.0);
            if n == 0 {
                *v.get_mut("process_open_fds").unwrap() += 100.0 * t / 3600.0;
            }
        });
        let sum = judge(&spec, &names(), &s, &[]);
        let fds = |n: &str| {
            sum.leaks
                .iter()
                .find(|l| l.node == n && l.metric == "fds")
                .unwrap()
        };
        assert_eq!(fds("us-0").limit, Some(1024.0));
        let h = fds("us-0").verdict.time_to_limit_hours.unwrap();
        assert!((8.0..10.0).contains(&h), "{h}");
        // A flat node is not heading for it.
        assert!(
            fds("us-1")
                .verdict
                .time_to_limit_hours
                .is_none_or(|h| h > 100.0)
        );
    }

    #[test]
    fn every_storm_cause_is_a_kept_series() {
        for (_, key) in STORM_CAUSES {
            assert!(crate::scrape::KEPT.contains(&key), "{key}");
        }
        // ... and every reason the node gives is one (the node's closed sets).
        use syncnet_proto::streams::{RemovalReason, ResetReason};
        let causes: Vec<&str> = STORM_CAUSES.iter().map(|c| c.0).collect();
        for r in RemovalReason::ALL {
            assert!(
                causes.contains(&format!("removed: {}", r.label()).as_str()),
                "{r:?}"
            );
        }
        for r in ResetReason::ALL {
            assert!(
                causes.contains(&format!("reset: {}", r.label()).as_str()),
                "{r:?}"
            );
        }
    }

    #[test]
    fn cpu_per_request_that_grows_with_uptime_is_named() {
        let spec = SyncNetwork::from_yaml(SPEC).unwrap().spec;
        // Every node serves a request a second; us-1 burns 10 ms more per request for every
        // minute it has run (the CPU canary), 600 ms per request per hour against a budget of 60.
        let served = |burn: bool| {
            run(move |n, t, v| {
                v.insert(crate::scrape::SERVED_ALL.to_owned(), t);
                if burn && n == 1 {
                    *v.get_mut(CPU_TOTAL).unwrap() += 0.010 * t * t / 120.0;
                }
            })
        };
        let s = judge(&spec, &names(), &served(false), &[]);
        assert!(s.pass, "{:?} {:?}", s.failed, s.undecided);
        let per_request = |s: &Summary, n: &str| {
            s.leaks
                .iter()
                .find(|l| l.node == n && l.metric == "cpu_per_request")
                .unwrap()
                .verdict
                .clone()
        };
        // 0.02 cores over one request a second: 20 ms a request, flat.
        assert!(per_request(&s, "us-0").slope_per_hour.abs() < 5.0);
        let s = judge(&spec, &names(), &served(true), &[]);
        assert!(
            s.failed.contains(&"leak:us-1:cpu_per_request".to_owned()),
            "{:?}",
            s.failed
        );
        let v = per_request(&s, "us-1");
        assert!((v.slope_per_hour - 600.0).abs() < 30.0, "{v:?}");
        // A node that serves nothing has no such verdict, and the run is not inconclusive for it.
        let s = judge(&spec, &names(), &run(|_, _, _| {}), &[]);
        assert!(s.pass && s.undecided.is_empty(), "{:?}", s.undecided);
        assert_eq!(per_request(&s, "us-2").undecided, Some(NOT_SERVING));
    }

    #[test]
    fn cpu_per_request_is_per_interval_that_served_any() {
        let cpu = [
            (0.0, 1.0),
            (10.0, 1.5),
            (20.0, 1.6),
            (30.0, 2.6),
            (40.0, 0.1),
        ];
        let served = [
            (0.0, 5.0),
            (10.0, 15.0),
            (20.0, 15.0),
            (30.0, 115.0),
            (40.0, 1.0),
        ];
        // 0.5 s over 10 requests; nothing served 10-20 s; 1 s over 100; a restart at 40 s (the
        // counters drop: no interval).
        assert_eq!(
            cpu_per_request(&cpu, &served),
            vec![(10.0, 50.0), (30.0, 10.0)]
        );
    }

    #[test]
    fn cpu_rates_leave_out_the_step_across_a_restart() {
        // Between scrapes, across a restart (the counter drops at 20 s): the drop is no rate, and
        // the new process's rates count from its own start.
        let restarted = [
            (0.0, 0.0),
            (10.0, 1.0),
            (20.0, 0.1),
            (30.0, 0.6),
            (30.0, 0.7),
        ];
        assert_eq!(cpu_rate(&restarted), vec![(10.0, 0.1), (30.0, 0.05)]);
    }

    #[test]
    fn production_rates_project_memory_growth_to_the_limit() {
        let mut spec = SyncNetwork::from_yaml(SPEC).unwrap().spec;
        spec.verdicts.production = Some(syncnet_crds::ProductionSpec {
            blocks_per_hour: Some(7200.0),
            memory_limit_mib: Some(1024.0),
            ..Default::default()
        });
        // us-1 leaks 20 MiB/h; one block a second: 20 MiB/h over 3600 blocks/h = 5.69 KiB a
        // block, and production makes twice the blocks: 40 MiB/h, the faster growth.
        let s = run(|n, t, v| {
            if n == 1 {
                *v.get_mut("process_resident_memory_bytes").unwrap() +=
                    20.0 * 1048576.0 * t / 3600.0;
            }
        });
        let sum = judge(&spec, &names(), &s, &[]);
        let rss = |n: &str| {
            sum.leaks
                .iter()
                .find(|l| l.node == n && l.metric == "rss")
                .unwrap()
        };
        let l = rss("us-1");
        let (_, block) = l.per_unit.iter().find(|(u, _)| *u == "block").unwrap();
        // Reported in MiB, as the spec speaks.
        assert!((block.per_unit * 1024.0 - 5.69).abs() < 0.3, "{block:?}");
        let p = l.projection.as_ref().unwrap();
        assert_eq!(p.driver, "block");
        assert!((p.per_hour - 40.0).abs() < 2.0, "{p:?}");
        // ~115 MiB now, 1024 MiB limit: about 23 h.
        let h = p.hours.unwrap();
        assert!((20.0..26.0).contains(&h), "{h}");
        assert!(p.hours_soonest.unwrap() <= h && h <= p.hours_latest.unwrap_or(f64::INFINITY));
        // A flat node: no limit in sight at the estimate.
        assert!(
            rss("us-0")
                .projection
                .as_ref()
                .unwrap()
                .hours
                .is_none_or(|h| h > 1000.0)
        );
    }

    #[test]
    fn a_restart_splits_the_series_and_a_stuck_node_fails_progress() {
        let spec = SyncNetwork::from_yaml(SPEC).unwrap().spec;
        // us-0 is restarted at 30 min (its CPU counter and RSS start over); only the process
        // since the restart is judged. us-2 stops at 40 min: stuck, whatever its memory does.
        let s = run(|n, t, v| {
            if n == 0 && t >= 1800.0 {
                *v.get_mut(CPU_TOTAL).unwrap() -= 0.02 * 1800.0;
                *v.get_mut("process_resident_memory_bytes").unwrap() -= 50e6;
            }
            if n == 2 && t >= 2400.0 {
                *v.get_mut(HEIGHT).unwrap() = 2400.0;
            }
        });
        let kill = FaultWindow {
            fault: 0,
            name: "kill".into(),
            action: syncnet_crds::FaultAction::KillRestart,
            start: 1790,
            end: 1800,
            targets: vec![0],
        };
        let sum = judge(&spec, &names(), &s, &[kill]);
        assert_eq!(sum.failed, ["sync_progress"]);
        assert_eq!(sum.progress.stuck[0].node, 2);
    }
}
