//! The sync-progress verdict: every node catches up within its bound after each fault, and no
//! node is stuck while its peers move on.

use serde::{Deserialize, Serialize};

use super::Point;

/// Thresholds of the sync-progress verdict.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProgressConfig {
    /// A node is caught up within this many blocks of the head.
    pub within_blocks: u64,
    /// ... and must be so this long after a fault ends; outside faults, lagging longer is "stuck".
    pub catch_up_secs: f64,
}

impl Default for ProgressConfig {
    fn default() -> Self {
        ProgressConfig {
            within_blocks: 2,
            catch_up_secs: 30.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CatchUp {
    /// When the fault ended.
    pub fault_end: f64,
    /// Slowest node's catch-up time, seconds: the first sample that shows it caught up (None:
    /// some node never caught up in the run).
    pub worst_secs: Option<f64>,
    /// The same node's last sample that showed it still behind, seconds after the fault: it
    /// caught up somewhere between this and `worst_secs` (None: its first sample showed it caught
    /// up).
    pub worst_behind_secs: Option<f64>,
    pub worst_node: Option<usize>,
    pub ok: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stuck {
    pub node: usize,
    pub from: f64,
    pub to: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProgressVerdict {
    pub catch_ups: Vec<CatchUp>,
    pub stuck: Vec<Stuck>,
    pub pass: bool,
}

/// The value of a step series at `t` (its last sample at or before `t`); `progress` walks a
/// [`Cursor`] instead, and the tests hold it to this.
#[cfg(test)]
pub(super) fn at(series: &[Point], t: f64) -> Option<f64> {
    let i = series.partition_point(|p| p.0 <= t);
    (i > 0).then(|| series[i - 1].1)
}

/// A fault window as the progress verdict sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub start: f64,
    pub end: f64,
    /// Nodes allowed to lag during the window and its catch-up allowance: those it cuts off (a
    /// killed node, a partitioned region). `None`: every node (e.g. the producer is cut off).
    /// Low-rate faults (errors, resets) excuse nobody: nodes must keep up through them.
    pub excused: Option<Vec<usize>>,
}

/// Sync progress from per-node height series (time-ordered) and fault windows: after each window
/// ends, every node must be within `within_blocks` of the head (the highest height any node
/// reports) within `catch_up_secs`; otherwise no node may lag for longer than that ("stuck"),
/// except the nodes a window excuses, during it and its catch-up allowance. A node with no samples
/// yet is not judged.
///
/// Cost: O(P log N) for the head over time plus O(N × T) cursor steps (P points, N nodes, T
/// distinct times). T is the number of scrape rounds when nodes are scraped together, and up to P
/// when each node has its own sample times (Prometheus): a 1,000-node network is judged on every
/// scrape, so nothing here may look the head up node by node (that was O(N² × T)).
pub fn progress(
    heights: &[Vec<Point>],
    faults: &[Window],
    cfg: &ProgressConfig,
) -> ProgressVerdict {
    let mut times: Vec<f64> = heights.iter().flatten().map(|p| p.0).collect();
    times.sort_by(f64::total_cmp);
    times.dedup();
    let heads = heads_at(heights, &times);
    let within = cfg.within_blocks as f64;
    let end = times.last().copied().unwrap_or(0.0);

    let mut catch_ups = vec![];
    for fault_end in faults.iter().map(|w| w.end) {
        let open = still_open(faults, fault_end);
        let mut worst: Option<(usize, Option<f64>, Option<f64>)> = None;
        // Late is what the samples show: behind at a sample at or past the bound. A node first
        // seen caught up 30.05 s after the fault, and behind at 20.05 s, caught up somewhere in
        // between; with samples 10 s apart, failing it read the 30 s bound as 20 s.
        let mut late = false;
        for (node, series) in heights.iter().enumerate() {
            let from = timed_from(&open, node, fault_end);
            let first = times.partition_point(|&t| t < from);
            let mut c = Cursor::new(series, times.get(first).copied());
            let (mut caught, mut behind) = (None, None);
            for ti in first..times.len() {
                match c.at(times[ti]) {
                    Some(h) if heads[ti] - h <= within => {
                        caught = Some(times[ti] - from);
                        break;
                    }
                    Some(_) => behind = Some(times[ti] - from),
                    None => {}
                }
            }
            if caught.is_none() && end - from < cfg.catch_up_secs {
                // Cut off until too near the end of the run to judge.
                continue;
            }
            late |= caught.is_some() && behind.is_some_and(|b| b >= cfg.catch_up_secs);
            let worse = match (&worst, caught) {
                (None, _) => true,
                (Some((_, None, _)), _) => false,
                (Some(_), None) => true,
                (Some((_, Some(w), _)), Some(c)) => c > *w,
            };
            if worse {
                worst = Some((node, caught, behind));
            }
            // A node that never catches up is as bad as it gets; the first such one is named.
            if matches!(worst, Some((_, None, _))) {
                break;
            }
        }
        let (worst_node, worst_secs, worst_behind_secs) = match worst {
            Some((n, s, b)) => (Some(n), s, b),
            None => (None, Some(0.0), None),
        };
        // A fault that ended too close to the end of the run to judge is not failed for it.
        let judged = end - fault_end >= cfg.catch_up_secs;
        let ok = match worst_secs {
            Some(_) => !late,
            None => !judged,
        };
        catch_ups.push(CatchUp {
            fault_end,
            worst_secs,
            worst_behind_secs,
            worst_node,
            ok,
        });
    }

    let excused = |node: usize, t: f64| {
        faults.iter().any(|w| {
            t >= w.start
                && t <= w.end + cfg.catch_up_secs
                && w.excused.as_ref().is_none_or(|n| n.contains(&node))
        })
    };
    let mut stuck = vec![];
    for (node, series) in heights.iter().enumerate() {
        let mut c = Cursor::new(series, None);
        let mut since: Option<f64> = None;
        for (ti, &t) in times.iter().enumerate() {
            let lag = c.at(t).is_some_and(|h| heads[ti] - h > within) && !excused(node, t);
            match (lag, since) {
                (true, None) => since = Some(t),
                (false, Some(s)) => {
                    if t - s > cfg.catch_up_secs {
                        stuck.push(Stuck {
                            node,
                            from: s,
                            to: t,
                        });
                    }
                    since = None;
                }
                _ => {}
            }
        }
        if let Some(s) = since
            && end - s > cfg.catch_up_secs
        {
            stuck.push(Stuck {
                node,
                from: s,
                to: end,
            });
        }
    }
    let pass = stuck.is_empty() && catch_ups.iter().all(|c| c.ok);
    ProgressVerdict {
        catch_ups,
        stuck,
        pass,
    }
}

/// The faults still under way at `t` (found once per fault end, not once per node).
pub(super) fn still_open(faults: &[Window], t: f64) -> Vec<&Window> {
    faults
        .iter()
        .filter(|v| v.start <= t && t < v.end)
        .collect()
}

/// When a node's catch-up after a fault that ended at `fault_end` is timed from: then, or, if
/// one of the faults still `open` then cuts the node off (a killed node of a partitioned
/// region), when that one ends.
pub(super) fn timed_from(open: &[&Window], node: usize, fault_end: f64) -> f64 {
    open.iter()
        .filter(|v| v.excused.as_ref().is_none_or(|n| n.contains(&node)))
        .map(|v| v.end)
        .fold(fault_end, f64::max)
}

/// A node's height at non-decreasing times, by walking its series once.
struct Cursor<'a> {
    series: &'a [Point],
    next: usize,
}

impl<'a> Cursor<'a> {
    /// Positioned for times from `from` on (`None`: from the start).
    fn new(series: &'a [Point], from: Option<f64>) -> Cursor<'a> {
        let next = from.map_or(0, |f| series.partition_point(|p| p.0 < f));
        Cursor { series, next }
    }
    /// The same as `at(series, t)`, for `t` no smaller than the last one asked.
    fn at(&mut self, t: f64) -> Option<f64> {
        while self.next < self.series.len() && self.series[self.next].0 <= t {
            self.next += 1;
        }
        (self.next > 0).then(|| self.series[self.next - 1].1)
    }
}

/// The head at each of `times` (sorted, distinct): the highest latest height of any node. One
/// sweep over every point in time order, keeping a count of each height nodes currently report
/// (a height can fall: a restarted node may start over).
fn heads_at(heights: &[Vec<Point>], times: &[f64]) -> Vec<f64> {
    // f64 -> an integer with the same order (total order; heights are finite).
    fn key(x: f64) -> i64 {
        let b = x.to_bits() as i64;
        b ^ (((b >> 63) as u64) >> 1) as i64
    }
    let mut points: Vec<(f64, usize, f64)> = heights
        .iter()
        .enumerate()
        .flat_map(|(n, s)| s.iter().map(move |p| (p.0, n, p.1)))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut current: Vec<Option<f64>> = vec![None; heights.len()];
    let mut counts: std::collections::BTreeMap<i64, (f64, usize)> = Default::default();
    let mut next = 0;
    times
        .iter()
        .map(|&t| {
            while next < points.len() && points[next].0 <= t {
                let (_, n, h) = points[next];
                if let Some(old) = current[n].replace(h) {
                    let k = key(old);
                    if let Some(e) = counts.get_mut(&k) {
                        e.1 -= 1;
                        if e.1 == 0 {
                            counts.remove(&k);
                        }
                    }
                }
                counts.entry(key(h)).or_insert((h, 0)).1 += 1;
                next += 1;
            }
            counts
                .last_key_value()
                .map_or(f64::NEG_INFINITY, |(_, (h, _))| *h)
        })
        .collect()
}
