//! Verdicts from scraped metrics: leak detection (per node and metric), discovery/stream storms,
//! and sync progress after faults. Sans-IO: series in, verdicts out. stressnet and the operator
//! both call this; there is no second copy.

mod progress;
pub mod stats;
pub mod synth;

use serde::{Deserialize, Serialize};

pub use progress::*;
pub use stats::Point;

/// How a resource is judged for a leak (design notes §5; docs/stressnet.md argues the method).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeakConfig {
    /// Seconds from the node's first start that are ignored (caches filling, connections forming).
    pub warmup_secs: f64,
    /// Seconds ignored after each restart (the process refills its caches and catches up).
    pub restart_warmup_secs: f64,
    /// Median window for downsampling, seconds.
    pub bucket_secs: f64,
    /// A trend must be this significant (Mann–Kendall, autocorrelation-corrected)...
    pub p_threshold: f64,
    /// ...and at least this steep (metric units per hour) to be a leak.
    pub slope_budget_per_hour: f64,
    /// Where the metric hurts (e.g. the memory limit), for time-to-limit.
    pub limit: Option<f64>,
    /// Windows are means instead of medians (CPU rates: use comes in bursts).
    pub mean_windows: bool,
}

impl LeakConfig {
    /// The warm-up of incarnation `k` (0: the node's first start).
    pub fn warmup_of(&self, k: usize) -> f64 {
        if k == 0 {
            self.warmup_secs
        } else {
            self.restart_warmup_secs
        }
    }
}

impl Default for LeakConfig {
    fn default() -> Self {
        LeakConfig {
            warmup_secs: 300.0,
            restart_warmup_secs: 60.0,
            bucket_secs: 60.0,
            p_threshold: 0.01,
            slope_budget_per_hour: 0.0,
            limit: None,
            mean_windows: false,
        }
    }
}

/// Fewer downsampled points than this after the warm-ups, over all incarnations: no verdict.
pub const MIN_POINTS: usize = 8;

/// Restarted lives needed to judge a node on its lives' levels at matched ages ([`leak`]): the
/// fewest at which Mann–Kendall can reach p < 0.01 two-sided (its smallest p is 2/n!: 0.017 at
/// five, 0.0028 at six); the slope test beside it needs six points too. A node killed every 2
/// minutes of a 15-minute run has six restarted lives that reach the same age.
pub const MIN_LIVES: usize = 6;

/// A rise this many robust standard deviations over the typical change is a jump
/// ([`stats::jumps`]): for Gaussian changes one in 30,000, so a smooth leak under noise rarely
/// has one, and keeps its verdict unless its trend goes with it. Five missed a third of 3 MiB
/// steps under 0.5 MiB of noise: a step inside a window is split over two changes.
pub const JUMP_Z: f64 = 4.0;
/// Growth carried by at most this many jumps per life, with no trend left without them, is a
/// high-water mark ([`leak`]).
pub const MAX_JUMPS: usize = 3;
/// ... when the jumps carry at least this share of the trend line's rise.
pub const JUMP_SHARE: f64 = 0.5;

/// The last part of a node's judged life in which a leak must still be growing.
pub const LATE_FRACTION: f64 = 1.0 / 3.0;
/// How much of the budget the growth in that last part must keep (see [`leak`]).
pub const LATE_SHARE: f64 = 0.5;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LeakVerdict {
    /// Downsampled points judged, over all incarnations.
    pub points: usize,
    /// Incarnations (process starts) that contributed points.
    pub incarnations: usize,
    /// Pooled Theil–Sen slope of the medians (pairs within an incarnation only), units per hour.
    pub slope_per_hour: f64,
    /// Sen's 95% interval of that slope (autocorrelation-corrected), units per hour.
    pub slope_interval_per_hour: Option<(f64, f64)>,
    /// The same for the per-window minima: the floor.
    pub floor_slope_per_hour: f64,
    /// The same for the medians of the oldest third of the judged ages (`None`: too few points).
    pub late_slope_per_hour: Option<f64>,
    /// Two-sided p of the trend over all incarnations: the smaller of Mann–Kendall's and the
    /// slope-against-scatter test's, doubled (1.0 when there is too little data).
    pub p: f64,
    pub leak: bool,
    /// Significant growth over the budget that stopped or stayed off the floor: a high-water
    /// mark (buffers and caches growing to what the load needs), reported, not failed.
    pub high_water: bool,
    /// The isolated jumps that carried that growth, when it was a few jumps (0 otherwise).
    pub jumps: usize,
    /// (limit - last value) / slope, when rising toward a configured limit.
    pub time_to_limit_hours: Option<f64>,
    /// Why there is no verdict (too little data), if so.
    pub undecided: Option<&'static str>,
    /// What the trend was judged on: [`WITHIN_LIVES`] or [`BETWEEN_LIVES`].
    pub basis: &'static str,
}

/// Growth inside each process's life, after its warm-up (the usual case).
pub const WITHIN_LIVES: &str = "within lives";
/// The levels of restarted lives at the same age, life after life: for a node restarted so often
/// that no life outgrows its warm-up ([`leak`]).
pub const BETWEEN_LIVES: &str = "between lives";

/// Judges one resource of one node over its whole life: `incarnations` holds one time-ordered
/// series per process start (soak clock), oldest first.
///
/// Each incarnation loses its warm-up (`warmup_secs` for the first, `restart_warmup_secs` after a
/// restart) and is downsampled to window medians and window minima. A leak needs all of:
/// - a trend: Mann–Kendall (Hamed–Rao corrected) summed over incarnations, p < `p_threshold`;
/// - steep enough: the pooled Theil–Sen slope of the medians over the budget;
/// - a rising floor: the same slope of the minima over the budget (a cache that fills and is
///   emptied, or a spike that is freed again, raises medians for a while but not the floor); not
///   for rates judged on window means (CPU), whose minima are idle moments;
/// - still growing when old: over the oldest third of the judged ages (time since a process
///   start; without restarts, the last third of the run) the medians' slope keeps at least half
///   the budget. A high-water mark steps up and stops; a leak keeps going.
///
/// - more than a few jumps: growth that at most [`MAX_JUMPS`] isolated jumps per life carry (half
///   of it at least), with no trend over the budget left without them, is a staircase (see
///   [`jump_growth`]).
///
/// Significant growth over the budget that fails the last three is reported as `high_water`.
///
/// A node restarted so often that its lives give too little of the above (no two windows after a
/// restart's warm-up, or no life old enough to show whether its growth stops) is judged between
/// lives instead, when it had [`MIN_LIVES`] restarts: see [`between_lives`].
pub fn leak(incarnations: &[Vec<Point>], cfg: &LeakConfig) -> LeakVerdict {
    leak_with_work(incarnations, cfg, &[])
}

/// [`leak`], with more evidence of a trend: the p-values of the resource growing with units of
/// work ([`PerUnit::p`]). Any one test may show the trend; Bonferroni over all of them keeps the
/// verdict at the level asked. The other gates (budget per hour, floor, persistence) are the same.
///
/// Work counts only for a node judged over one process: after a restart a process refills its
/// buffers in step with the work of catching up, a high-water mark that is growth with work by
/// construction (a node killed every 2 minutes read as a leak with it, in a clean control).
pub fn leak_with_work(
    incarnations: &[Vec<Point>],
    cfg: &LeakConfig,
    work_p: &[f64],
) -> LeakVerdict {
    let mut medians: Vec<Vec<Point>> = vec![];
    let mut floors: Vec<Vec<Point>> = vec![];
    // When each judged incarnation started: the late part is judged by age (see below).
    let mut starts: Vec<f64> = vec![];
    for (k, series) in incarnations.iter().enumerate() {
        let Some(&(start, _)) = series.first() else {
            continue;
        };
        let warmup = cfg.warmup_of(k);
        let kept: Vec<Point> = series
            .iter()
            .copied()
            .filter(|p| p.0 - start >= warmup)
            .collect();
        let m = if cfg.mean_windows {
            stats::downsample_mean(&kept, cfg.bucket_secs)
        } else {
            stats::downsample_median(&kept, cfg.bucket_secs)
        };
        if !m.is_empty() {
            floors.push(stats::downsample_min(&kept, cfg.bucket_secs));
            medians.push(m);
            starts.push(start);
        }
    }
    let points: usize = medians.iter().map(Vec::len).sum();
    let undecided = |why| LeakVerdict {
        points,
        incarnations: medians.len(),
        slope_per_hour: 0.0,
        slope_interval_per_hour: None,
        floor_slope_per_hour: 0.0,
        late_slope_per_hour: None,
        p: 1.0,
        leak: false,
        high_water: false,
        jumps: 0,
        time_to_limit_hours: None,
        undecided: Some(why),
        basis: WITHIN_LIVES,
    };
    if points < MIN_POINTS {
        return between_lives(incarnations, cfg)
            .unwrap_or_else(|| undecided("too few points after the warm-up"));
    }
    let Some(mk) = stats::mann_kendall_pooled(&medians) else {
        return between_lives(incarnations, cfg)
            .unwrap_or_else(|| undecided("no incarnation long enough for a trend"));
    };
    let Some((slope_low, slope, slope_high)) = stats::sen_interval(&medians, mk.var_s, 1.96) else {
        return between_lives(incarnations, cfg)
            .unwrap_or_else(|| undecided("no incarnation long enough for a trend"));
    };
    let per_hour = slope * 3600.0;
    // Either test may show the trend (the rank test for noisy series, the slope-against-scatter
    // one for clean steep ones); Bonferroni keeps the pair at the level asked.
    let mut tests = vec![mk.p];
    tests.extend(stats::slope_z_test(&medians, slope));
    if medians.len() == 1 {
        // Not across restarts: a life that ends part-way up a cache's fill (a sawtooth) rises in
        // almost every window; the verdict benchmark's sawtooth series with restarts were
        // flagged up to 5 times in 50 with it.
        tests.extend(stats::sign_test(&medians));
        tests.extend(work_p.iter().copied().filter(|p| p.is_finite()));
    }
    let p = (tests.iter().copied().fold(1.0, f64::min) * tests.len() as f64).min(1.0);
    let floor = stats::theil_sen_pooled(&floors).unwrap_or(0.0) * 3600.0;
    // The oldest third of the judged ages (time since the process started), from each
    // incarnation that got that old. A leak grows at every age; a high-water mark grows while
    // the process is young (after a restart it refills its buffers) and then stops. Without
    // restarts this is the last third of the run.
    let ages = medians
        .iter()
        .zip(&starts)
        .flat_map(|(m, s)| m.iter().map(move |p| p.0 - s));
    let (lo, hi) = ages.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), a| {
        (lo.min(a), hi.max(a))
    });
    let cut = hi - LATE_FRACTION * (hi - lo);
    let late: Vec<Vec<Point>> = medians
        .iter()
        .zip(&starts)
        .map(|(m, s)| {
            m.iter()
                .copied()
                .filter(|p| p.0 - s >= cut)
                .collect::<Vec<_>>()
        })
        .filter(|m| m.len() >= 2)
        .collect();
    let late_points: usize = late.iter().map(Vec::len).sum();
    let late_slope = (late_points >= 3)
        .then(|| stats::theil_sen_pooled(&late))
        .flatten()
        .map(|s| s * 3600.0);
    let budget = cfg.slope_budget_per_hour;
    let grows = p < cfg.p_threshold && per_hour > budget;
    if grows && late_slope.is_none() && medians.len() > 1 {
        // Restarted so often that no process got old enough to show whether its growth goes on
        // or stops: every short life refills its buffers after start, which a leak also does.
        return between_lives(incarnations, cfg).unwrap_or(LeakVerdict {
            slope_per_hour: per_hour,
            p,
            ..undecided("lives too short to tell growth from refilling after restarts")
        });
    }
    // Too little of the last third to judge persistence: the other gates decide.
    // The floor is a level's (memory, fds): a bursty rate's window minima are often zero.
    let floor_rises = cfg.mean_windows || floor > budget;
    let persists = floor_rises && late_slope.is_none_or(|l| l >= LATE_SHARE * budget);
    let jumps = if grows && !cfg.mean_windows {
        jump_growth(&medians, slope, cfg)
    } else {
        None
    };
    let leak = grows && persists && jumps.is_none();
    let last_value = medians.last().and_then(|m| m.last()).expect("non-empty").1;
    let time_to_limit_hours = cfg
        .limit
        .filter(|_| per_hour > 0.0)
        .map(|limit| ((limit - last_value) / per_hour).max(0.0));
    let slope_interval_per_hour = Some((slope_low * 3600.0, slope_high * 3600.0));
    LeakVerdict {
        points,
        incarnations: medians.len(),
        slope_per_hour: per_hour,
        slope_interval_per_hour,
        floor_slope_per_hour: floor,
        late_slope_per_hour: late_slope,
        p,
        leak,
        high_water: grows && !leak,
        jumps: jumps.unwrap_or(0),
        time_to_limit_hours,
        undecided: None,
        basis: WITHIN_LIVES,
    }
}

/// When growth over the budget is carried by a few isolated jumps: how many, if there are at
/// most [`MAX_JUMPS`] in every life, they carry at least [`JUMP_SHARE`] of the rise, and the
/// series without them (each jump replaced by the typical change) has no trend over the budget
/// left. A high-water mark steps: a catch-up needs
/// more buffers than any before and the allocator keeps them (one thread started and kept; 3 MiB
/// after a long catch-up). A leak grows with time or work, in every window, and keeps its trend
/// without its largest changes. What this gives up: a leak that grows only by a few large jumps
/// per life reads as a high-water mark until it makes more of them (a longer run, or the
/// between-lives judgement of a node restarted often).
fn jump_growth(medians: &[Vec<Point>], slope: f64, cfg: &LeakConfig) -> Option<usize> {
    let (smooth, found) = stats::without_jumps(medians, JUMP_Z);
    let total: usize = found.iter().sum();
    if total == 0 || found.iter().any(|k| *k > MAX_JUMPS) {
        return None;
    }
    // The jumps must carry most of the growth (the trend line's rise over the judged spans): a
    // smooth leak just over its budget lost its verdict to one change of 0.33 MiB in a rise of
    // 1.9 MiB (a real 16 KiB-per-setup canary), its trend then just under the budget.
    let carried: f64 = medians
        .iter()
        .zip(&smooth)
        .filter_map(|(m, s)| Some(m.last()?.1 - s.last()?.1))
        .sum();
    let rise: f64 = slope
        * medians
            .iter()
            .filter_map(|m| Some(m.last()?.0 - m.first()?.0))
            .sum::<f64>();
    if carried < JUMP_SHARE * rise {
        return None;
    }
    let still_grows = stats::mann_kendall_pooled(&smooth)
        .zip(stats::theil_sen_pooled(&smooth))
        .is_some_and(|(mk, slope)| {
            let mut tests = vec![mk.p];
            tests.extend(stats::slope_z_test(&smooth, slope));
            if smooth.len() == 1 {
                tests.extend(stats::sign_test(&smooth));
            }
            let p = (tests.iter().copied().fold(1.0, f64::min) * tests.len() as f64).min(1.0);
            p < cfg.p_threshold && slope * 3600.0 > cfg.slope_budget_per_hour
        });
    (!still_grows).then_some(total)
}

/// The ages (seconds since a restart) at which restarted lives are compared: the last
/// `bucket_secs` before the median length of the restarted lives but the last (the run's end may
/// cut the last one short; it counts if it got that old). With kills on a schedule every life is
/// about as long; with restarts at random the median keeps the comparison at an age most lives
/// reached, past their catch-up, where one short life would have pulled it into it. `None` with
/// fewer than two restarted lives.
pub fn matched_ages(incarnations: &[Vec<Point>], cfg: &LeakConfig) -> Option<(f64, f64)> {
    let mut spans: Vec<f64> = incarnations
        .iter()
        .skip(1)
        .filter_map(|s| Some(s.last()?.0 - s.first()?.0))
        .collect();
    spans.pop()?;
    if spans.is_empty() {
        return None;
    }
    let a1 = stats::median(&mut spans);
    (a1 > 0.0).then(|| ((a1 - cfg.bucket_secs).max(0.0), a1))
}

/// Judges a node restarted so often that no life outgrows its warm-up. Inside such a life growth
/// is the refill every young process shows (buffers, caches, connections), which a leak cannot be
/// told from. But the refill is the same in every life, so the level a life has reached at a
/// given age is the same life after life unless something carries over the restarts (state
/// reloaded from the store, a peer that keeps more of it, the chain it serves). Each restarted
/// life gives the median (the mean for rates) and the minimum of its points at the
/// [`matched_ages`]; those levels, in the order of the lives, get the same tests and gates as
/// within a life: the trend (Mann–Kendall with the Hamed–Rao and AR(1) corrections, and the slope
/// against scatter, Bonferroni), the Theil–Sen slope over the budget, a rising floor. The first
/// life is left out: it began with the network, not from a store. What this cannot see is growth
/// that a restart frees (a leak inside the process): that is judged on the nodes that live long.
/// `None` (undecided) with fewer than [`MIN_LIVES`] lives seen at those ages.
pub fn between_lives(incarnations: &[Vec<Point>], cfg: &LeakConfig) -> Option<LeakVerdict> {
    let (a0, a1) = matched_ages(incarnations, cfg)?;
    let mut levels: Vec<Point> = vec![];
    let mut floors: Vec<Point> = vec![];
    for s in incarnations.iter().skip(1) {
        let Some(&(start, _)) = s.first() else {
            continue;
        };
        let mut v: Vec<f64> = s
            .iter()
            .filter(|p| (a0..=a1).contains(&(p.0 - start)) && p.1.is_finite())
            .map(|p| p.1)
            .collect();
        if v.is_empty() {
            continue;
        }
        let at = start + a1;
        floors.push((at, v.iter().copied().fold(f64::INFINITY, f64::min)));
        let level = if cfg.mean_windows {
            v.iter().sum::<f64>() / v.len() as f64
        } else {
            stats::median(&mut v)
        };
        levels.push((at, level));
    }
    if levels.len() < MIN_LIVES {
        return None;
    }
    let blocks = [levels];
    let mk = stats::mann_kendall_pooled(&blocks)?;
    let (low, slope, high) = stats::sen_interval(&blocks, mk.var_s, 1.96)?;
    let mut tests = vec![mk.p];
    tests.extend(stats::slope_z_test(&blocks, slope));
    let p = (tests.iter().copied().fold(1.0, f64::min) * tests.len() as f64).min(1.0);
    let per_hour = slope * 3600.0;
    let floor = stats::theil_sen(&floors).map_or(0.0, |f| f.0 * 3600.0);
    let budget = cfg.slope_budget_per_hour;
    let grows = p < cfg.p_threshold && per_hour > budget;
    let floor_rises = cfg.mean_windows || floor > budget;
    let last_value = blocks[0].last().expect("MIN_LIVES > 0").1;
    Some(LeakVerdict {
        points: blocks[0].len(),
        incarnations: blocks[0].len(),
        slope_per_hour: per_hour,
        slope_interval_per_hour: Some((low * 3600.0, high * 3600.0)),
        floor_slope_per_hour: floor,
        late_slope_per_hour: None,
        p,
        leak: grows && floor_rises,
        high_water: grows && !floor_rises,
        jumps: 0,
        time_to_limit_hours: cfg
            .limit
            .filter(|_| per_hour > 0.0)
            .map(|limit| ((limit - last_value) / per_hour).max(0.0)),
        undecided: None,
        basis: BETWEEN_LIVES,
    })
}

/// Growth of a resource per unit of work (a stream setup, a request served, a block), over a
/// node's whole life: the resource against a cumulative work counter of the same process, both as
/// window medians after the warm-ups, pooled Theil–Sen within incarnations, with Sen's 95%
/// interval. A leak that grows with work shows the same cost per unit whatever the pace of the run,
/// which is what a projection to production needs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PerUnit {
    /// Resource units per work unit (e.g. bytes per setup).
    pub per_unit: f64,
    pub low: f64,
    pub high: f64,
    /// Work done over the judged parts of the node's life.
    pub units: f64,
    pub points: usize,
    /// Significance of the resource growing with the work (slope against scatter, the residuals
    /// taken against the work): a leak per setup is a straight line against setups even when
    /// setups come in bursts and make it a staircase in time, which the tests in time discount.
    pub p: f64,
}

/// `resource` and `work` hold the same incarnations (one per process start, in order, empty where
/// a process left no samples); samples are paired by time.
pub fn per_unit(resource: &[Vec<Point>], work: &[Vec<Point>], cfg: &LeakConfig) -> Option<PerUnit> {
    let mut blocks = vec![];
    let mut units = 0.0;
    for (k, (res, wk)) in resource.iter().zip(work).enumerate() {
        let Some(&(start, _)) = res.first() else {
            continue;
        };
        let warmup = cfg.warmup_of(k);
        let at: std::collections::HashMap<u64, f64> =
            wk.iter().map(|p| (p.0.to_bits(), p.1)).collect();
        // (time, work) and (time, resource) over the same scrapes after the warm-up.
        let (work_pts, res_pts): (Vec<Point>, Vec<Point>) = res
            .iter()
            .filter(|p| p.0 - start >= warmup)
            .filter_map(|p| at.get(&p.0.to_bits()).map(|w| ((p.0, *w), *p)))
            .unzip();
        if work_pts.len() < 2 {
            continue;
        }
        units += work_pts.last().expect("2+").1 - work_pts[0].1;
        // The same windows of both, paired: (work, resource).
        let w = stats::downsample_median(&work_pts, cfg.bucket_secs);
        let r = stats::downsample_median(&res_pts, cfg.bucket_secs);
        blocks.push(
            w.iter()
                .zip(&r)
                .map(|(w, r)| (w.1, r.1))
                .collect::<Vec<_>>(),
        );
    }
    let points = blocks.iter().map(Vec::len).sum();
    let mk = stats::mann_kendall_pooled(&blocks)?;
    let (low, per_unit, high) = stats::sen_interval(&blocks, mk.var_s, 1.96)?;
    let p = stats::slope_z_test(&blocks, per_unit).unwrap_or(1.0);
    Some(PerUnit {
        per_unit,
        low,
        high,
        units,
        points,
        p,
    })
}

/// When a node reaches a resource limit at production rates, with the interval of its growth.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Projection {
    /// What the growth is measured against: `time`, or the unit of work (`setup`, `request`,
    /// `block`) that gives the fastest growth at production rates.
    pub driver: &'static str,
    /// Growth at production rates, resource units per hour, with its 95% interval.
    pub per_hour: f64,
    pub per_hour_low: f64,
    pub per_hour_high: f64,
    /// Hours until the limit: at the estimated growth, at the interval's fast end, and at its slow
    /// end (`None`: not growing at that end, no limit in sight).
    pub hours: Option<f64>,
    pub hours_soonest: Option<f64>,
    pub hours_latest: Option<f64>,
}

/// Projects `last` (the resource now) to `limit` at the fastest of the candidate growths
/// `(driver, per hour, low, high)`.
pub fn project(
    last: f64,
    limit: f64,
    candidates: &[(&'static str, f64, f64, f64)],
) -> Option<Projection> {
    let &(driver, per_hour, low, high) = candidates.iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
    let hours = |rate: f64| (rate > 0.0).then(|| ((limit - last) / rate).max(0.0));
    Some(Projection {
        driver,
        per_hour,
        per_hour_low: low,
        per_hour_high: high,
        hours: hours(per_hour),
        hours_soonest: hours(high),
        hours_latest: hours(low),
    })
}

/// A resource's level over a node's life (e.g. CPU cores in use), against a budget.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LevelVerdict {
    /// Points judged, over all incarnations, after their warm-ups.
    pub points: usize,
    pub mean: f64,
    pub p95: f64,
    /// The mean is over the budget.
    pub over: bool,
    pub undecided: Option<&'static str>,
}

/// Judges the level of a resource over a node's whole life: every incarnation after its warm-up
/// (`cfg.warmup_of`; catching up after a restart is work, not waste), mean against `budget`; a
/// node restarted too often for that, over its restarted lives from the [`matched_ages`] on. The mean, not a peak: a node may burn a core while
/// it catches up, but one that spins whenever it is short of peers shows a raised mean.
pub fn level(incarnations: &[Vec<Point>], cfg: &LeakConfig, budget: f64) -> LevelVerdict {
    let mut v: Vec<f64> = incarnations
        .iter()
        .enumerate()
        .flat_map(|(k, s)| {
            let start = s.first().map_or(0.0, |p| p.0);
            let warmup = cfg.warmup_of(k);
            s.iter()
                .filter(move |p| p.0 - start >= warmup && p.1.is_finite())
                .map(|p| p.1)
        })
        .collect();
    if v.len() < MIN_POINTS
        && let Some((a0, _)) = matched_ages(incarnations, cfg)
        && incarnations.len() > MIN_LIVES
    {
        // Restarted too often for any life to outgrow its warm-up: the restarted lives from the
        // matched ages on (as [`between_lives`]), past the catch-up.
        v = incarnations
            .iter()
            .skip(1)
            .flat_map(|s| {
                let start = s.first().map_or(0.0, |p| p.0);
                s.iter()
                    .filter(move |p| p.0 - start >= a0 && p.1.is_finite())
                    .map(|p| p.1)
            })
            .collect();
    }
    if v.len() < MIN_POINTS {
        return LevelVerdict {
            points: v.len(),
            mean: 0.0,
            p95: 0.0,
            over: false,
            undecided: Some("too few points after the warm-up"),
        };
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    v.sort_by(f64::total_cmp);
    let p95 = v[((v.len() - 1) as f64 * 0.95).round() as usize];
    LevelVerdict {
        points: v.len(),
        mean,
        p95,
        over: mean > budget,
        undecided: None,
    }
}

/// Per-minute rates of a cumulative counter (e.g. stream setups), over windows of `window_secs`.
/// A drop in the counter is a process restart: the new value counts from zero.
pub fn rate_per_minute(counter: &[Point], window_secs: f64) -> Vec<Point> {
    assert!(window_secs > 0.0);
    let mut out = vec![];
    let Some(&(mut w_start, _)) = counter.first() else {
        return out;
    };
    let mut acc = 0.0;
    for pair in counter.windows(2) {
        let ((_, a), (t, b)) = (pair[0], pair[1]);
        acc += if b >= a { b - a } else { b };
        if t - w_start >= window_secs {
            out.push((t, acc * 60.0 / (t - w_start)));
            w_start = t;
            acc = 0.0;
        }
    }
    out
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StormVerdict {
    pub max_per_minute: f64,
    /// When the highest rate was seen (end of its window).
    pub at: Option<f64>,
    pub storm: bool,
}

/// The storm verdict's window: a storm is a rate sustained for a minute (or for all of the
/// judged time, when that is shorter); over a shorter span a burst would read as one.
pub const STORM_WINDOW_SECS: f64 = 60.0;

/// A storm: after the warm-up, the counter's rate over some trailing window exceeds
/// `bound_per_minute`.
///
/// The windows slide: every sample ends one, reaching back up to [`STORM_WINDOW_SECS`] (at least
/// 90% of it, as scrapes fall) but never into the warm-up (run time `warmup_secs`, as the samples' times are). Fixed minutes from the
/// first sample missed a storm that began late in a run or in a counter that first appeared
/// after the run began (labelled families exist from their first event): the last, partial minute
/// was never judged.
/// How much a counter rose over the samples in `(from, to]`, across restarts (a drop counts
/// from zero, as in [`storm`]).
pub fn increase(counter: &[Point], from: f64, to: f64) -> f64 {
    counter
        .windows(2)
        .filter(|w| w[1].0 > from && w[1].0 <= to)
        .map(|w| {
            if w[1].1 >= w[0].1 {
                w[1].1 - w[0].1
            } else {
                w[1].1
            }
        })
        .sum()
}

pub fn storm(counter: &[Point], bound_per_minute: f64, warmup_secs: f64) -> StormVerdict {
    // Cumulative count since the warm-up, across restarts (a drop counts from zero).
    let mut acc: Vec<Point> = Vec::with_capacity(counter.len());
    let mut total = 0.0;
    for (i, &(t, v)) in counter.iter().enumerate() {
        if i > 0 {
            let prev = counter[i - 1].1;
            total += if v >= prev { v - prev } else { v };
        }
        if t >= warmup_secs {
            acc.push((t, total));
        }
    }
    let judged = acc.last().map_or(0.0, |l| l.0) - acc.first().map_or(0.0, |f| f.0);
    let min_span = 0.9 * judged.min(STORM_WINDOW_SECS);
    let mut worst: Option<Point> = None;
    let mut start = 0;
    for j in 0..acc.len() {
        let (t, c) = acc[j];
        while t - acc[start].0 > STORM_WINDOW_SECS {
            start += 1;
        }
        let span = t - acc[start].0;
        if span <= 0.0 || span < min_span {
            continue;
        }
        let rate = (c - acc[start].1) * 60.0 / span;
        if worst.is_none_or(|w| rate > w.1) {
            worst = Some((t, rate));
        }
    }
    StormVerdict {
        max_per_minute: worst.map_or(0.0, |p| p.1),
        at: worst.map(|p| p.0),
        storm: worst.is_some_and(|p| p.1 > bound_per_minute),
    }
}

#[cfg(test)]
mod tests;
