//! The fault schedule as a state machine: given the time since the start, what each node should
//! be (up or killed) and which fault set it should run, and the steps that get it there. Sans-IO:
//! the runner feeds it the clock and what happened (a restart, a failed `PUT /faults`) and carries
//! out the steps; tests drive it with plain numbers.

use syncnet_crds::{FaultAction, FaultSpec};
use syncnet_proto::faults::Faults;

use crate::plan::FaultWindow;

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// A window opened or closed (for the event log and the progress line).
    Began(usize),
    Ended(usize),
    /// SIGKILL the node (a kill-restart window opened on it).
    Kill(usize),
    /// Start the node again (its last kill-restart window closed).
    Restart(usize),
    /// Replace the node's fault set (`PUT /faults`).
    Apply(usize, Faults),
}

pub struct Executor {
    windows: Vec<FaultWindow>,
    /// Parameters of each fault of the spec, indexed by `FaultWindow::fault`.
    specs: Vec<FaultSpec>,
    /// Per window: 0 not begun, 1 running, 2 ended.
    state: Vec<u8>,
    down: Vec<bool>,
    /// What each node runs as far as we know; `None` = unknown (just restarted, or a PUT failed),
    /// which makes the next poll send the wanted set even when it is the default.
    applied: Vec<Option<Faults>>,
    /// Nodes whose fault set is unknown and may not be the default (after [`Executor::resume`]):
    /// the next poll sends them the wanted set even when it is the default.
    resync: Vec<bool>,
}

impl Executor {
    pub fn new(specs: &[FaultSpec], windows: Vec<FaultWindow>, nodes: usize) -> Executor {
        Executor {
            state: vec![0; windows.len()],
            windows,
            specs: specs.to_vec(),
            down: vec![false; nodes],
            applied: vec![Some(Faults::default()); nodes],
            resync: vec![false; nodes],
        }
    }

    /// Picks up a schedule that was already running at `t` (the operator restarted): windows that
    /// began are running or over without replaying their steps (no second kill), and every node
    /// is sent its wanted fault set at the next poll, default or not.
    pub fn resume(&mut self, t: f64) {
        for (w, s) in self.windows.iter().zip(self.state.iter_mut()) {
            if t >= w.start as f64 {
                *s = if t >= w.end as f64 { 2 } else { 1 };
            }
        }
        self.down.fill(false);
        self.applied.fill(None);
        self.resync.fill(true);
    }

    /// Windows begun so far.
    pub fn begun(&self) -> usize {
        self.state.iter().filter(|s| **s > 0).count()
    }

    pub fn windows(&self) -> &[FaultWindow] {
        &self.windows
    }

    /// Windows running now.
    pub fn active(&self) -> impl Iterator<Item = &FaultWindow> {
        self.windows
            .iter()
            .zip(&self.state)
            .filter(|(_, s)| **s == 1)
            .map(|(w, _)| w)
    }

    pub fn is_down(&self, node: usize) -> bool {
        self.down[node]
    }

    /// The steps due at `t` seconds: window transitions first, then kills and restarts, then the
    /// fault sets of live nodes that differ from what they run. Faults of overlapping windows on
    /// one node are merged (the larger rate or delay wins; partitions add up).
    pub fn poll(&mut self, t: f64) -> Vec<Step> {
        let mut out = vec![];
        for i in 0..self.windows.len() {
            let (start, end) = (self.windows[i].start as f64, self.windows[i].end as f64);
            let kill = self.windows[i].action == FaultAction::KillRestart;
            if self.state[i] == 0 && t >= start {
                self.state[i] = 1;
                out.push(Step::Began(i));
                for &n in self.windows[i].targets.iter().filter(|_| kill) {
                    if !self.down[n] {
                        self.down[n] = true;
                        out.push(Step::Kill(n));
                    }
                }
            }
            // Checked right after the start, so a window shorter than the polling period (or a
            // downtime of 0) still kills and restarts.
            if self.state[i] == 1 && t >= end {
                self.state[i] = 2;
                out.push(Step::Ended(i));
                for &n in self.windows[i].targets.iter().filter(|_| kill) {
                    let still = self
                        .active()
                        .any(|w| w.action == FaultAction::KillRestart && w.targets.contains(&n));
                    if self.down[n] && !still {
                        self.down[n] = false;
                        // A fresh process runs no faults until told.
                        self.applied[n] = None;
                        out.push(Step::Restart(n));
                    }
                }
            }
        }
        for node in 0..self.down.len() {
            if self.down[node] {
                continue;
            }
            let want = self.wanted(node);
            if self.applied[node].as_ref() != Some(&want) {
                // A restarted node runs the default set; only a difference needs a PUT.
                if self.applied[node].is_none() && want == Faults::default() && !self.resync[node] {
                    self.applied[node] = Some(want);
                    continue;
                }
                self.applied[node] = Some(want.clone());
                self.resync[node] = false;
                out.push(Step::Apply(node, want));
            }
        }
        out
    }

    /// The fault set `node` should run now.
    pub fn wanted(&self, node: usize) -> Faults {
        let mut f = Faults::default();
        for w in self.active().filter(|w| w.targets.contains(&node)) {
            let s = &self.specs[w.fault];
            let rate = s.rate.unwrap_or(0.0);
            let ms = s.ms.unwrap_or(0);
            match w.action {
                FaultAction::KillRestart => {}
                FaultAction::Partition if s.regions.is_empty() => f.isolate = true,
                FaultAction::Partition => {
                    for r in &s.regions {
                        if !f.partition.regions.contains(r) {
                            f.partition.regions.push(r.clone());
                        }
                    }
                }
                FaultAction::ErrorRate => f.request_error_rate = f.request_error_rate.max(rate),
                FaultAction::StreamReset => f.stream_reset_rate = f.stream_reset_rate.max(rate),
                FaultAction::SetupFailure => f.setup_failure_rate = f.setup_failure_rate.max(rate),
                FaultAction::Stall => f.stall_ms = f.stall_ms.max(ms),
                FaultAction::CorruptBlocks => f.corrupt_blocks = true,
                FaultAction::ChunkDrop => f.chunk_drop_rate = f.chunk_drop_rate.max(rate),
                FaultAction::CorruptChunks => f.corrupt_chunks = true,
                FaultAction::DiscoveryPeriod => {
                    // The shorter period is the harsher one.
                    f.forced_discovery_ms = Some(f.forced_discovery_ms.map_or(ms, |m| m.min(ms)))
                }
                FaultAction::LeakCanary => {
                    f.leak_canary_kib_per_setup = f
                        .leak_canary_kib_per_setup
                        .max(s.kib_per_setup.unwrap_or(0))
                }
                FaultAction::StormCanary => f.storm_canary = true,
                // The harsher setting wins: fewer setups per leak, more CPU per request.
                FaultAction::FdCanary => {
                    f.fd_canary_setups_per_fd =
                        harsher(f.fd_canary_setups_per_fd, s.setups_per_leak.unwrap_or(0))
                }
                FaultAction::ThreadCanary => {
                    f.thread_canary_setups_per_thread = harsher(
                        f.thread_canary_setups_per_thread,
                        s.setups_per_leak.unwrap_or(0),
                    )
                }
                FaultAction::CpuCanary => {
                    f.cpu_canary_us_per_request_per_min = f
                        .cpu_canary_us_per_request_per_min
                        .max(s.us_per_request_per_minute.unwrap_or(0))
                }
            }
        }
        f.partition.regions.sort();
        f
    }

    /// The node was started again outside the schedule (it crashed): it runs no faults now.
    pub fn restarted(&mut self, node: usize) {
        self.applied[node] = None;
    }

    /// A `PUT /faults` did not take: send the set again at the next poll.
    pub fn apply_failed(&mut self, node: usize) {
        self.applied[node] = None;
    }

    /// Seconds of the next window start or end after `t`, if any.
    pub fn next_transition(&self, t: f64) -> Option<f64> {
        self.windows
            .iter()
            .flat_map(|w| [w.start as f64, w.end as f64])
            .filter(|x| *x > t)
            .min_by(f64::total_cmp)
    }
}

/// Of two "one per N" settings (0: off), the one that leaks more often.
fn harsher(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncnet_proto::faults::Partition;

    fn spec(action: FaultAction) -> FaultSpec {
        FaultSpec {
            name: action.label().into(),
            at_secs: Some(0),
            every_secs: None,
            duration_secs: 0,
            target: Default::default(),
            action,
            regions: vec![],
            rate: None,
            ms: None,
            kib_per_setup: None,
            setups_per_leak: None,
            us_per_request_per_minute: None,
        }
    }

    fn window(fault: usize, action: FaultAction, start: u64, end: u64, t: &[usize]) -> FaultWindow {
        FaultWindow {
            fault,
            name: action.label().into(),
            action,
            start,
            end,
            targets: t.to_vec(),
        }
    }

    #[test]
    fn kill_restart_kills_at_the_start_and_restarts_at_the_end() {
        let specs = [spec(FaultAction::KillRestart)];
        let mut e = Executor::new(
            &specs,
            vec![window(0, FaultAction::KillRestart, 10, 15, &[1])],
            3,
        );
        assert!(e.poll(9.9).is_empty());
        assert_eq!(e.poll(10.0), [Step::Began(0), Step::Kill(1)]);
        assert!(e.is_down(1) && !e.is_down(0));
        assert!(e.poll(12.0).is_empty());
        assert_eq!(e.poll(15.0), [Step::Ended(0), Step::Restart(1)]);
        assert!(e.poll(20.0).is_empty(), "a clean restart needs no PUT");
        assert_eq!(e.next_transition(0.0), Some(10.0));
        assert_eq!(e.next_transition(15.0), None);
    }

    #[test]
    fn a_window_shorter_than_a_poll_still_happens() {
        // Polled late (e.g. the runner was busy): the window begins and ends in one poll, and the
        // node is killed and restarted, not skipped.
        let specs = [spec(FaultAction::KillRestart)];
        let mut e = Executor::new(
            &specs,
            vec![window(0, FaultAction::KillRestart, 10, 10, &[0])],
            1,
        );
        let steps = e.poll(11.0);
        assert_eq!(
            steps,
            [
                Step::Began(0),
                Step::Kill(0),
                Step::Ended(0),
                Step::Restart(0)
            ]
        );
        let specs = [spec(FaultAction::KillRestart)];
        let mut e = Executor::new(
            &specs,
            vec![window(0, FaultAction::KillRestart, 10, 12, &[0])],
            1,
        );
        assert_eq!(e.poll(11.0), [Step::Began(0), Step::Kill(0)]);
        assert_eq!(e.poll(13.0), [Step::Ended(0), Step::Restart(0)]);
    }

    /// The node-fault actions each set their own field, and overlapping ones keep the harsher rate.
    #[test]
    fn every_node_fault_action_sets_its_field() {
        let with_rate = |action, rate| FaultSpec {
            rate: Some(rate),
            ..spec(action)
        };
        let specs = [
            with_rate(FaultAction::SetupFailure, 0.3),
            with_rate(FaultAction::SetupFailure, 0.6),
            spec(FaultAction::CorruptBlocks),
            with_rate(FaultAction::ChunkDrop, 0.2),
            spec(FaultAction::CorruptChunks),
        ];
        let windows = specs
            .iter()
            .enumerate()
            .map(|(i, s)| window(i, s.action, 0, 10, &[0]))
            .collect();
        let mut e = Executor::new(&specs, windows, 1);
        e.poll(0.0);
        assert_eq!(
            e.wanted(0),
            Faults {
                setup_failure_rate: 0.6,
                corrupt_blocks: true,
                chunk_drop_rate: 0.2,
                corrupt_chunks: true,
                ..Faults::default()
            }
        );
        e.poll(10.0);
        assert_eq!(e.wanted(0), Faults::default());
    }

    #[test]
    fn overlapping_faults_merge_and_clear_when_their_windows_end() {
        let mut part = spec(FaultAction::Partition);
        part.regions = vec!["eu".into()];
        let mut err = spec(FaultAction::ErrorRate);
        err.rate = Some(0.05);
        let mut stall = spec(FaultAction::Stall);
        stall.ms = Some(300);
        let specs = [part, err, stall];
        let mut e = Executor::new(
            &specs,
            vec![
                window(0, FaultAction::Partition, 0, 100, &[0, 1]),
                window(1, FaultAction::ErrorRate, 10, 20, &[1]),
                window(2, FaultAction::Stall, 15, 30, &[1, 2]),
            ],
            3,
        );
        let s = e.poll(0.0);
        let part_only = Faults {
            partition: Partition {
                regions: vec!["eu".into()],
                peers: vec![],
            },
            ..Faults::default()
        };
        assert_eq!(
            s,
            [
                Step::Began(0),
                Step::Apply(0, part_only.clone()),
                Step::Apply(1, part_only.clone())
            ]
        );
        e.poll(10.0);
        let s = e.poll(16.0);
        let both = Faults {
            request_error_rate: 0.05,
            stall_ms: 300,
            ..part_only.clone()
        };
        assert!(s.contains(&Step::Apply(1, both)), "{s:?}");
        // Error-rate ends at 20: node 1 keeps the partition and the stall.
        let s = e.poll(20.0);
        let left = Faults {
            stall_ms: 300,
            ..part_only.clone()
        };
        assert!(s.contains(&Step::Apply(1, left)), "{s:?}");
        // Everything ends: every touched node goes back to the default set.
        let s = e.poll(100.0);
        for n in 0..3 {
            assert!(s.contains(&Step::Apply(n, Faults::default())), "{s:?}");
        }
    }

    #[test]
    fn a_failed_put_or_a_crash_resends_the_wanted_set() {
        let mut leak = spec(FaultAction::LeakCanary);
        leak.kib_per_setup = Some(64);
        let specs = [leak];
        let mut e = Executor::new(
            &specs,
            vec![window(0, FaultAction::LeakCanary, 0, 100, &[0])],
            1,
        );
        let want = Faults {
            leak_canary_kib_per_setup: 64,
            ..Faults::default()
        };
        assert!(e.poll(0.0).contains(&Step::Apply(0, want.clone())));
        assert!(e.poll(1.0).is_empty());
        e.apply_failed(0);
        assert_eq!(e.poll(2.0), [Step::Apply(0, want.clone())]);
        e.restarted(0);
        assert_eq!(e.poll(3.0), [Step::Apply(0, want)]);
    }

    #[test]
    fn a_killed_node_gets_its_faults_after_the_restart() {
        let mut storm = spec(FaultAction::StormCanary);
        storm.duration_secs = 100;
        let specs = [storm, spec(FaultAction::KillRestart)];
        let mut e = Executor::new(
            &specs,
            vec![
                window(0, FaultAction::StormCanary, 0, 100, &[0]),
                window(1, FaultAction::KillRestart, 10, 20, &[0]),
            ],
            1,
        );
        e.poll(0.0);
        assert_eq!(e.poll(10.0), [Step::Began(1), Step::Kill(0)]);
        let s = e.poll(20.0);
        let storm = Faults {
            storm_canary: true,
            ..Faults::default()
        };
        assert_eq!(s, [Step::Ended(1), Step::Restart(0), Step::Apply(0, storm)]);
    }

    #[test]
    fn resume_replays_no_kill_and_resends_every_set() {
        let specs = [spec(FaultAction::KillRestart), spec(FaultAction::Stall)];
        let mut specs = specs.to_vec();
        specs[1].ms = Some(100);
        let windows = vec![
            window(0, FaultAction::KillRestart, 10, 20, &[0]),
            window(1, FaultAction::Stall, 15, 40, &[1]),
            window(0, FaultAction::KillRestart, 50, 60, &[2]),
        ];
        let mut e = Executor::new(&specs, windows, 3);
        e.resume(30.0);
        assert_eq!(e.begun(), 2);
        let steps = e.poll(30.0);
        // No kill of node 0 again; node 1 gets its stall, the others the default set.
        assert!(
            !steps
                .iter()
                .any(|s| matches!(s, Step::Kill(_) | Step::Restart(_))),
            "{steps:?}"
        );
        let applied: Vec<usize> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Apply(n, _) => Some(*n),
                _ => None,
            })
            .collect();
        assert_eq!(applied, [0, 1, 2]);
        assert!(e.poll(31.0).is_empty());
        // Later windows run as usual.
        assert!(e.poll(50.0).contains(&Step::Kill(2)));
    }
}
