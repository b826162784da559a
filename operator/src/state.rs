//! What the operator remembers of one running network between reconciles, and the status it
//! derives from it. Sans-IO: the reconciler feeds it the clock, the pods it listed and what it
//! scraped; tests drive it with plain values.
//!
//! Memory is bounded: at most `max_samples` scrape records per network, split evenly over its
//! nodes (the oldest of a node's records go first), so a 1,000-node network keeps a shorter
//! window per node than a 9-node one, never more memory.

use std::collections::{BTreeMap, VecDeque};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use soak::exec::Executor;
use soak::judge::{self, Outcome, Summary};
use soak::plan::FaultWindow;
use soak::scrape::Sample;
use syncnet_crds::{Phase, RegionStatus, SyncNetworkSpec, SyncNetworkStatus};

/// Per network at most this many samples by default (≈ 1 KiB each).
pub const DEFAULT_MAX_SAMPLES: usize = 200_000;
/// For all networks together at most this many by default: ~400 MiB within the chart's 512Mi
/// memory limit. Networks running at once share it evenly.
pub const DEFAULT_MAX_SAMPLES_TOTAL: usize = 400_000;

/// One network's share: its own cap, or an even part of the operator-wide one.
pub fn sample_budget(per_network: usize, total: usize, networks: usize) -> usize {
    per_network.min(total / networks.max(1))
}
/// Names listed per region in status (leaks, storms): status stays small.
const MAX_LISTED: usize = 16;

pub struct NetState {
    pub generation: i64,
    pub exec: Executor,
    nodes: Vec<String>,
    samples: BTreeMap<String, VecDeque<Sample>>,
    per_node: usize,
    /// Highest head seen and when it last rose (seconds since the start).
    head: u64,
    head_rose_at: f64,
}

impl NetState {
    /// State for a network whose soak started `t` seconds ago; a schedule already under way
    /// (`t > 0`: the operator restarted, or the spec changed) is resumed without replaying it.
    pub fn new(
        spec: &SyncNetworkSpec,
        generation: i64,
        windows: Vec<FaultWindow>,
        t: f64,
        max_samples: usize,
    ) -> NetState {
        let nodes = crate::render::node_names(spec);
        let mut exec = Executor::new(&spec.faults, windows, nodes.len());
        if t > 0.0 {
            exec.resume(t);
        }
        NetState {
            generation,
            exec,
            per_node: (max_samples / nodes.len().max(1)).max(2),
            samples: BTreeMap::new(),
            nodes,
            head: 0,
            head_rose_at: t,
        }
    }

    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    pub fn sample_count(&self) -> usize {
        self.samples.values().map(VecDeque::len).sum()
    }

    /// Holds at most `max_samples` from now on (split over the nodes), dropping each node's
    /// oldest beyond its share at once: another network started and the operator-wide cap is
    /// shared by more.
    pub fn set_budget(&mut self, max_samples: usize) {
        self.per_node = (max_samples / self.nodes.len().max(1)).max(2);
        for q in self.samples.values_mut() {
            while q.len() > self.per_node {
                q.pop_front();
            }
        }
    }

    /// Adds one scrape of node `i` at `t` seconds. A sample no newer than the node's last is
    /// dropped: Prometheus answers two reconciles with the same scrape when it scrapes less often
    /// than the operator asks, and a series must not hold one moment twice.
    pub fn record(&mut self, i: usize, t: f64, values: BTreeMap<String, f64>) {
        let Some(node) = self.nodes.get(i) else {
            return;
        };
        if self
            .samples
            .get(node)
            .and_then(|q| q.back())
            .is_some_and(|last| last.t >= t)
        {
            return;
        }
        if let Some(h) = values.get(judge::HEIGHT) {
            let h = *h as u64;
            if h > self.head {
                self.head = h;
                self.head_rose_at = t;
            }
        }
        let q = self.samples.entry(node.clone()).or_default();
        while q.len() >= self.per_node {
            q.pop_front();
        }
        q.push_back(Sample {
            t,
            node: node.clone(),
            values,
        });
    }

    /// The latest value of `metric` per node (absent for nodes never scraped).
    pub fn latest(&self, metric: &str) -> Vec<Option<f64>> {
        self.nodes
            .iter()
            .map(|n| {
                self.samples
                    .get(n)
                    .and_then(|q| q.iter().rev().find_map(|s| s.values.get(metric).copied()))
            })
            .collect()
    }

    /// The shared verdicts over the kept window (read in place, not copied), with the windows
    /// begun by `t`.
    pub fn judge(&self, spec: &SyncNetworkSpec, t: f64) -> Summary {
        let samples = self.samples.values().flatten();
        let begun: Vec<FaultWindow> = self
            .exec
            .windows()
            .iter()
            .filter(|w| (w.start as f64) <= t)
            .cloned()
            .collect();
        judge::judge(spec, &self.nodes, samples, &begun)
    }

    /// Seconds since the head last rose.
    pub fn head_idle(&self, t: f64) -> f64 {
        t - self.head_rose_at
    }

    /// When the head last rose, in seconds into the soak.
    pub fn head_rose_at(&self) -> f64 {
        self.head_rose_at
    }
}

/// One pod as the reconciler saw it in the pod list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodView {
    pub ready: bool,
}

/// Inputs of a status besides the state.
pub struct StatusInput<'a> {
    pub spec: &'a SyncNetworkSpec,
    pub generation: i64,
    pub phase: Phase,
    pub start_time: Option<String>,
    /// Seconds since the start (0 before).
    pub t: f64,
    /// Per node (stressnet order): the pod, if it exists.
    pub pods: &'a [Option<PodView>],
    pub summary: Option<&'a Summary>,
    /// Why the phase is what it is, for the Ready condition when not ready.
    pub message: Option<String>,
    pub previous: Option<&'a SyncNetworkStatus>,
    pub now: Time,
}

/// The status to write: per-region progress and verdicts, phase, and the five conditions.
pub fn status(state: Option<&NetState>, i: &StatusInput) -> SyncNetworkStatus {
    let spec = i.spec;
    let heights: Vec<Option<f64>> = state.map_or_else(
        || vec![None; spec.total_nodes() as usize],
        |s| s.latest(judge::HEIGHT),
    );
    let head = heights.iter().flatten().fold(0.0f64, |a, b| a.max(*b)) as u64;
    let mut regions = vec![];
    let mut k = 0;
    for r in &spec.regions {
        let range = k..k + r.replicas as usize;
        k += r.replicas as usize;
        let names: Vec<&str> = state.map_or(vec![], |s| {
            s.nodes()[range.clone()]
                .iter()
                .map(String::as_str)
                .collect()
        });
        let ready = i.pods[range.clone()]
            .iter()
            .filter(|p| p.as_ref().is_some_and(|p| p.ready))
            .count() as u32;
        let region_head = heights[range.clone()]
            .iter()
            .flatten()
            .fold(0.0f64, |a, b| a.max(*b)) as u64;
        // A node never scraped counts as height 0: it has not synced anything we know of.
        let max_lag = heights[range.clone()]
            .iter()
            .map(|h| head.saturating_sub(h.unwrap_or(0.0) as u64))
            .max()
            .unwrap_or(0);
        let (mut leaks, mut storms) = (vec![], vec![]);
        if let Some(sum) = i.summary {
            for l in sum
                .leaks
                .iter()
                .filter(|l| l.verdict.leak && names.contains(&l.node.as_str()))
            {
                leaks.push(format!("{}:{}", l.node, l.metric));
            }
            for s in sum.storms.iter().filter(|s| {
                (s.verdict.storm || s.discovery.storm) && names.contains(&s.node.as_str())
            }) {
                storms.push(s.node.clone());
            }
        }
        leaks.truncate(MAX_LISTED);
        storms.truncate(MAX_LISTED);
        regions.push(RegionStatus {
            name: r.name.clone(),
            ready,
            replicas: r.replicas,
            head: region_head,
            max_lag,
            leaks,
            storms,
        });
    }
    let all_ready = regions.iter().all(|r| r.ready == r.replicas);
    let max_lag = regions.iter().map(|r| r.max_lag).max().unwrap_or(0);
    let completed = i.phase == Phase::Completed;
    // At most MAX_LISTED names: a 1,000-node network can leave every node undecided.
    let listed = |names: &[String]| {
        let mut l = names[..names.len().min(MAX_LISTED)].join(", ");
        if names.len() > MAX_LISTED {
            l += &format!(" and {} more", names.len() - MAX_LISTED);
        }
        l
    };
    let verdict = i.summary.filter(|_| completed).map(|s| match s.outcome {
        Outcome::Pass => "pass".to_owned(),
        Outcome::Fail => format!("fail: {}", listed(&s.failed)),
        Outcome::Inconclusive => format!("inconclusive: {}", listed(&s.undecided)),
    });
    let stalled = i.summary.is_some_and(|s| !s.progress.pass);
    let leak = i
        .summary
        .is_some_and(|s| s.leaks.iter().any(|l| l.verdict.leak));
    let idle = state.map_or(0.0, |s| s.head_idle(i.t));
    let stall_after = (spec.producer.block_interval_ms as f64 / 1000.0) * 3.0
        + spec.verdicts.catch_up_secs as f64;
    let progressing = i.phase == Phase::Running && idle <= stall_after;

    fn cond(
        type_: &'static str,
        ok: bool,
        reason: &'static str,
        message: String,
    ) -> (&'static str, bool, &'static str, String) {
        (type_, ok, reason, message)
    }
    let conditions = [
        cond(
            "Ready",
            all_ready && matches!(i.phase, Phase::Running | Phase::Completed),
            if all_ready {
                "AllPodsReady"
            } else {
                "PodsNotReady"
            },
            i.message.clone().unwrap_or_else(|| {
                let ready: u32 = regions.iter().map(|r| r.ready).sum();
                format!("{ready}/{} pods ready", spec.total_nodes())
            }),
        ),
        cond(
            "Progressing",
            progressing,
            if progressing {
                "HeadAdvancing"
            } else {
                "HeadIdle"
            },
            // Times in messages are when something happened, never "N s ago": a status that
            // changes with the clock is written, and watched, on every reconcile.
            format!(
                "head {head}, last rose at {:.0} s into the soak",
                state.map_or(0.0, |s| s.head_rose_at())
            ),
        ),
        cond(
            "SyncStalled",
            stalled,
            if stalled { "NodesStuck" } else { "CatchingUp" },
            i.summary.map_or_else(
                || "not judged yet".to_owned(),
                |s| {
                    format!(
                        "{} stuck node(s); worst lag {max_lag}",
                        s.progress.stuck.len()
                    )
                },
            ),
        ),
        cond(
            "LeakSuspected",
            leak,
            if leak { "SignificantTrend" } else { "NoTrend" },
            i.summary.map_or_else(
                || "not judged yet".to_owned(),
                |s| {
                    let l: Vec<&str> = s
                        .failed
                        .iter()
                        .filter(|f| f.starts_with("leak:"))
                        .map(String::as_str)
                        .take(MAX_LISTED)
                        .collect();
                    if l.is_empty() {
                        "no significant growth".to_owned()
                    } else {
                        l.join(", ")
                    }
                },
            ),
        ),
        cond(
            "Completed",
            completed,
            if completed { "SoakOver" } else { "SoakRunning" },
            verdict.clone().unwrap_or_else(|| {
                format!("the soak runs {} s from startTime", spec.soak.duration_secs)
            }),
        ),
    ]
    .into_iter()
    .map(|(type_, ok, reason, message)| {
        let status = if ok { "True" } else { "False" };
        // The transition time moves only when the condition's status does.
        let since = i
            .previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == status)
            .map_or_else(|| i.now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: Some(i.generation),
            last_transition_time: since,
        }
    })
    .collect();
    SyncNetworkStatus {
        observed_generation: Some(i.generation),
        phase: i.phase,
        start_time: i.start_time.clone(),
        faults_begun: state.map_or(0, |s| s.exec.begun() as u32),
        fault_windows: state.map_or(0, |s| s.exec.windows().len() as u32),
        region_count: spec.regions.len() as u32,
        head,
        max_lag,
        verdict,
        regions,
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SyncNetworkSpec {
        const SPEC: &str = r#"
apiVersion: syncnet.dev/v1alpha1
kind: SyncNetwork
metadata: {name: t}
spec:
  regions: [{name: us, replicas: 2}, {name: eu, replicas: 2}]
  producer: {region: us, blockIntervalMs: 1000, payloadBytes: 1024}
  soak: {durationSecs: 600, warmupSecs: 60, scrapeIntervalSecs: 5}
"#;
        syncnet_crds::SyncNetwork::from_yaml(SPEC).unwrap().spec
    }

    fn height(h: f64) -> BTreeMap<String, f64> {
        [(judge::HEIGHT.to_owned(), h)].into()
    }

    #[test]
    fn each_node_keeps_its_share_of_the_cap_newest_first() {
        // 4 nodes share 12 samples: 3 each, whatever one node sends.
        let mut st = NetState::new(&spec(), 1, vec![], 0.0, 12);
        for k in 0..10 {
            st.record(0, f64::from(k), height(f64::from(k)));
        }
        st.record(1, 0.0, height(1.0));
        assert_eq!(st.sample_count(), 4);
        assert_eq!(st.latest(judge::HEIGHT)[0], Some(9.0));
        let kept: Vec<f64> = st.samples["us-0"].iter().map(|s| s.t).collect();
        assert_eq!(kept, [7.0, 8.0, 9.0]);
        // An index outside the network is ignored, not a panic.
        st.record(99, 1.0, height(1.0));
        assert_eq!(st.sample_count(), 4);
    }

    #[test]
    fn a_sample_no_newer_than_the_last_is_dropped() {
        let mut st = NetState::new(&spec(), 1, vec![], 0.0, 100);
        st.record(2, 10.0, height(5.0));
        st.record(2, 10.0, height(5.0)); // the same Prometheus scrape, asked for twice
        st.record(2, 8.0, height(4.0)); // an older one
        assert_eq!(st.sample_count(), 1);
        st.record(2, 12.0, height(6.0));
        assert_eq!(st.sample_count(), 2);
        assert_eq!(st.latest(judge::HEIGHT)[2], Some(6.0));
        assert_eq!(st.head_idle(20.0), 8.0, "the head last rose at 12 s");
    }

    #[test]
    fn a_smaller_budget_drops_each_nodes_oldest_samples_at_once() {
        assert_eq!(sample_budget(200_000, 400_000, 1), 200_000);
        assert_eq!(sample_budget(200_000, 400_000, 4), 100_000);
        assert_eq!(sample_budget(200_000, 400_000, 0), 200_000);
        let mut st = NetState::new(&spec(), 1, vec![], 0.0, 400);
        for k in 0..50 {
            for i in 0..4 {
                st.record(i, f64::from(k), BTreeMap::new());
            }
        }
        assert_eq!(st.sample_count(), 200);
        st.set_budget(40);
        assert_eq!(st.sample_count(), 40);
        // The newest ten of each node are what is left.
        assert!(st.samples.values().all(|q| q.front().unwrap().t == 40.0));
        st.record(0, 50.0, BTreeMap::new());
        assert_eq!(st.samples["us-0"].len(), 10);
    }
}
