//! Counters across restarts, storms, and sync progress after faults.

use super::*;
use crate::verdict::progress::{at, still_open, timed_from};

#[test]
fn a_counters_increase_counts_across_restarts() {
    // 5 -> 9 (+4), restart to 2 (+2), 2 -> 7 (+5); only samples in (10, 40] count.
    let c = [
        (0.0, 1.0),
        (10.0, 5.0),
        (20.0, 9.0),
        (30.0, 2.0),
        (40.0, 7.0),
        (50.0, 100.0),
    ];
    assert_eq!(increase(&c, 10.0, 40.0), 11.0);
    assert_eq!(increase(&c, 0.0, 10.0), 4.0);
    assert_eq!(increase(&c, 50.0, 60.0), 0.0);
    assert_eq!(increase(&[], 0.0, 60.0), 0.0);
}

#[test]
fn storms_are_rates_over_the_bound_after_the_warm_up() {
    // A setup counter: 5 per minute, 300 per minute from minute 20 to 25; restarted at minute 40.
    let counter: Vec<Point> = (0..3600 / 10)
        .map(|i| {
            let t = i as f64 * 10.0;
            let m = t / 60.0;
            let v = if m < 20.0 {
                5.0 * m
            } else if m < 25.0 {
                100.0 + 300.0 * (m - 20.0)
            } else if m < 40.0 {
                1600.0 + 5.0 * (m - 25.0)
            } else {
                5.0 * (m - 40.0)
            };
            (t, v.floor())
        })
        .collect();
    let v = storm(&counter, 60.0, 300.0);
    assert!(v.storm, "{v:?}");
    assert!((250.0..=320.0).contains(&v.max_per_minute), "{v:?}");
    let at = v.at.unwrap() / 60.0;
    assert!((20.0..=26.0).contains(&at), "{at}");
    // Before the storm, and across the restart, the rate stays at about 5 per minute.
    let calm: Vec<Point> = counter.iter().copied().filter(|p| p.0 < 1200.0).collect();
    let v = storm(&calm, 60.0, 300.0);
    assert!(!v.storm && v.max_per_minute <= 6.0, "{v:?}");
    let after: Vec<Point> = counter.iter().copied().filter(|p| p.0 >= 1560.0).collect();
    assert!(storm(&after, 60.0, 0.0).max_per_minute <= 6.0);
}

#[test]
fn a_storm_in_the_last_partial_minute_of_a_short_run_is_judged() {
    // 90 s scraped every 2 s, warm-up 20 s; the counter first appears at 40 s (its first event)
    // and storms at 1,000 per minute from 65 s. Minutes counted from the first sample never
    // ended one after 65 s, so this storm went unjudged.
    let counter: Vec<Point> = (20..=45)
        .map(|i| {
            let t = i as f64 * 2.0;
            let v = if t < 65.0 {
                1.0
            } else {
                1.0 + (t - 65.0) * 1000.0 / 60.0
            };
            (t, v.floor())
        })
        .collect();
    let v = storm(&counter, 60.0, 20.0);
    assert!(v.storm, "{v:?}");
    // The 50 s since the series appeared, 25 of them storming: about 500 per minute.
    assert!((450.0..=520.0).contains(&v.max_per_minute), "{v:?}");
    assert_eq!(v.at, Some(90.0));

    // A burst of 40 setups within 4 s is 40 in its minute (44 over the shortest window, 54 s),
    // under a bound of 60.
    let burst: Vec<Point> = (0..=60)
        .map(|i| {
            let t = i as f64 * 2.0;
            (
                t,
                if t < 50.0 {
                    0.0
                } else if t < 54.0 {
                    (t - 50.0) * 10.0
                } else {
                    40.0
                },
            )
        })
        .collect();
    let v = storm(&burst, 60.0, 20.0);
    assert!(!v.storm && v.max_per_minute <= 45.0, "{v:?}");
    // Nothing after the warm-up: nothing judged.
    assert_eq!(storm(&counter, 60.0, 100.0).at, None);
}

/// Heights every 5 s for 10 min at one block per second, shaped per node by `f(t, head)`.
fn heights(f: impl Fn(usize, f64, f64) -> f64) -> Vec<Vec<Point>> {
    (0..3)
        .map(|n| {
            (0..120)
                .map(|i| {
                    let t = i as f64 * 5.0;
                    (t, f(n, t, t).floor())
                })
                .collect()
        })
        .collect()
}

/// Samples 10 s apart, 0.05 s after the fault ends (soak-s3's scrape grid): a node seen behind
/// at 20.05 s and caught up at 30.05 s caught up somewhere in between, within a 30 s bound; only
/// a node still seen behind at 30.05 s is proven late.
#[test]
fn a_catch_up_fails_only_when_a_sample_at_or_past_the_bound_shows_the_node_behind() {
    let pc = ProgressConfig {
        within_blocks: 2,
        catch_up_secs: 30.0,
    };
    let series = |caught_at: f64| -> Vec<Vec<Point>> {
        (0..3)
            .map(|n| {
                (0..30)
                    .map(|i| {
                        let t = i as f64 * 10.0 + 0.05;
                        let head = t.floor();
                        // Node 1 is stuck at 90 from the fault's end until `caught_at`.
                        let h = if n == 1 && (100.0..caught_at).contains(&t) {
                            90.0
                        } else {
                            head
                        };
                        (t, h)
                    })
                    .collect()
            })
            .collect()
    };
    let kill = [Window {
        start: 90.0,
        end: 100.0,
        excused: Some(vec![1]),
    }];
    // Behind at 120.05, caught at 130.05: between 20.05 and 30.05 s.
    let v = progress(&series(125.0), &kill, &pc);
    let c = &v.catch_ups[0];
    assert!(c.ok && v.pass, "{v:?}");
    assert_eq!(c.worst_node, Some(1));
    assert!((c.worst_secs.unwrap() - 30.05).abs() < 1e-9, "{c:?}");
    assert!((c.worst_behind_secs.unwrap() - 20.05).abs() < 1e-9, "{c:?}");
    // Behind at 130.05, caught at 140.05: late.
    let v = progress(&series(135.0), &kill, &pc);
    let c = &v.catch_ups[0];
    assert!(!c.ok && !v.pass, "{v:?}");
    assert!((c.worst_behind_secs.unwrap() - 30.05).abs() < 1e-9, "{c:?}");
    // Caught at its first sample: nothing behind to report.
    let v = progress(&series(100.0), &kill, &pc);
    assert!(v.pass);
    assert_eq!(v.catch_ups[0].worst_behind_secs, None);
}

#[test]
fn nodes_catching_up_after_a_fault_pass_and_a_stuck_node_fails() {
    let pc = ProgressConfig {
        within_blocks: 2,
        catch_up_secs: 30.0,
    };
    // Node 2 is partitioned from 100 s to 200 s and catches up by 215 s.
    let h = heights(|n, t, head| match n {
        2 if (100.0..200.0).contains(&t) => 100.0,
        2 if (200.0..215.0).contains(&t) => 100.0 + (head - 100.0) * (t - 200.0) / 15.0,
        _ => head,
    });
    let cut = |start, end, nodes: Option<Vec<usize>>| Window {
        start,
        end,
        excused: nodes,
    };
    let v = progress(&h, &[cut(100.0, 200.0, Some(vec![2]))], &pc);
    assert!(v.pass, "{v:?}");
    assert_eq!(v.catch_ups[0].worst_node, Some(2));
    assert_eq!(v.catch_ups[0].worst_secs, Some(15.0));

    // Same, but node 2 needs 60 s to catch up: the fault's catch-up fails.
    let slow = heights(|n, t, head| match n {
        2 if (100.0..200.0).contains(&t) => 100.0,
        2 if (200.0..260.0).contains(&t) => 100.0 + (head - 100.0) * (t - 200.0) / 60.0,
        _ => head,
    });
    let v = progress(&slow, &[cut(100.0, 200.0, Some(vec![2]))], &pc);
    assert!(!v.pass && !v.catch_ups[0].ok, "{v:?}");

    // Node 2 is also killed at 100 s for 10 s, while partitioned: the kill's catch-up is timed
    // from the end of the partition that still cuts it off (found in a soak-s3 run: a killed ap
    // node "caught up 60 s late" from a kill that ended 50 s before its region's partition).
    let v = progress(
        &h,
        &[
            cut(100.0, 200.0, Some(vec![2])),
            cut(100.0, 110.0, Some(vec![2])),
        ],
        &pc,
    );
    assert!(v.pass, "{v:?}");
    assert_eq!(v.catch_ups[1].worst_secs, Some(15.0), "{v:?}");
    // Not so for a node the other fault does not cut off: node 1 killed at 100 s, node 2's
    // partition irrelevant to it, node 1 lagging until 260 s fails the kill's catch-up.
    let late = heights(|n, t, head| match n {
        1 if (100.0..260.0).contains(&t) => 100.0,
        _ => head,
    });
    let v = progress(
        &late,
        &[
            cut(100.0, 200.0, Some(vec![2])),
            cut(100.0, 110.0, Some(vec![1])),
        ],
        &pc,
    );
    assert!(!v.catch_ups[1].ok, "{v:?}");

    // Node 1 stops at 300 s with no fault at all: stuck from 305 s to the end.
    let stuck = heights(|n, t, head| if n == 1 && t >= 300.0 { 300.0 } else { head });
    let v = progress(&stuck, &[], &pc);
    assert!(!v.pass, "{v:?}");
    assert_eq!(v.stuck.len(), 1);
    assert_eq!(v.stuck[0].node, 1);
    assert!(v.stuck[0].from <= 305.0 && v.stuck[0].to >= 590.0, "{v:?}");

    // A fault ending 10 s before the run does is not judged as failed.
    let v = progress(&h, &[cut(100.0, 200.0, None), cut(580.0, 590.0, None)], &pc);
    assert!(v.pass, "{v:?}");

    // A low-rate fault lasting the whole run excuses nobody: node 1 stopping at 300 s is stuck
    // (it once hid behind such a window; found on a real run).
    let v = progress(&stuck, &[cut(0.0, 600.0, Some(vec![]))], &pc);
    assert_eq!(v.stuck.len(), 1, "{v:?}");
    // A window that cuts node 0 off does not excuse node 1.
    let v = progress(&stuck, &[cut(250.0, 400.0, Some(vec![0]))], &pc);
    assert_eq!(v.stuck.len(), 1, "{v:?}");
    assert!(!v.pass);
    // One that cuts node 1 off does, until its catch-up allowance ends.
    let v = progress(&stuck, &[cut(250.0, 400.0, Some(vec![1]))], &pc);
    assert_eq!(v.stuck.len(), 1, "{v:?}");
    assert!(v.stuck[0].from > 430.0, "{v:?}");
}

/// The progress verdict evaluated straight from its definition (the head looked up node by node at
/// every time: O(N² × T)); the fast `progress` must give the same answer.
fn progress_by_definition(
    heights: &[Vec<Point>],
    faults: &[Window],
    cfg: &ProgressConfig,
) -> ProgressVerdict {
    let mut times: Vec<f64> = heights.iter().flatten().map(|p| p.0).collect();
    times.sort_by(f64::total_cmp);
    times.dedup();
    let head = |t: f64| {
        heights
            .iter()
            .filter_map(|s| at(s, t))
            .fold(f64::NEG_INFINITY, f64::max)
    };
    let lagging = |node: usize, t: f64| -> Option<bool> {
        let h = at(&heights[node], t)?;
        Some(head(t) - h > cfg.within_blocks as f64)
    };
    let end = times.last().copied().unwrap_or(0.0);

    let mut catch_ups = vec![];
    for fault_end in faults.iter().map(|w| w.end) {
        let mut worst: Option<(usize, Option<f64>, Option<f64>)> = None;
        let mut late = false;
        for node in 0..heights.len() {
            let from = timed_from(&still_open(faults, fault_end), node, fault_end);
            let caught = times
                .iter()
                .filter(|&&t| t >= from)
                .find(|&&t| lagging(node, t) == Some(false))
                .map(|t| t - from);
            let behind = times
                .iter()
                .filter(|&&t| t >= from && caught.is_none_or(|c| t - from < c))
                .filter(|&&t| lagging(node, t) == Some(true))
                .map(|t| t - from)
                .next_back();
            if caught.is_none() && end - from < cfg.catch_up_secs {
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
    for node in 0..heights.len() {
        let mut since: Option<f64> = None;
        for &t in &times {
            let lag = lagging(node, t) == Some(true) && !excused(node, t);
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

#[test]
fn progress_agrees_with_its_definition_on_random_networks() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let cfg = ProgressConfig {
        within_blocks: 2,
        catch_up_secs: 30.0,
    };
    let mut failing = 0;
    for case in 0..500 {
        let nodes = rng.random_range(1..7usize);
        // Half the cases scrape every node at the same times, half at each node's own times.
        let shared = case % 2 == 0;
        let heights: Vec<Vec<Point>> = (0..nodes)
            .map(|n| {
                let mut t = if shared {
                    0.0
                } else {
                    rng.random_range(0.0..10.0)
                };
                let mut h = 1.0f64;
                let rate = if n == 0 {
                    1.0
                } else {
                    rng.random_range(0.0..1.2)
                };
                let mut out = vec![];
                while t < 600.0 {
                    if rng.random_range(0..40) == 0 {
                        h = 0.0; // a restart with an empty store
                    }
                    h += (rate * 10.0 * rng.random_range(0.0..1.5f64)).floor();
                    out.push((t, h));
                    t += if shared {
                        10.0
                    } else {
                        rng.random_range(1.0..20.0)
                    };
                }
                out
            })
            .collect();
        let faults: Vec<Window> = (0..rng.random_range(0..4))
            .map(|_| {
                let start = rng.random_range(0.0..550.0);
                Window {
                    start,
                    end: start + rng.random_range(5.0..90.0),
                    excused: match rng.random_range(0..3) {
                        0 => None,
                        1 => Some(vec![]),
                        _ => Some(vec![rng.random_range(0..nodes)]),
                    },
                }
            })
            .collect();
        let fast = progress(&heights, &faults, &cfg);
        let slow = progress_by_definition(&heights, &faults, &cfg);
        assert_eq!(fast, slow, "case {case}: {heights:?} {faults:?}");
        failing += usize::from(!fast.pass);
    }
    // The cases must exercise both answers, or agreeing would prove little.
    assert!((50..450).contains(&failing), "{failing} of 500 failing");
}
