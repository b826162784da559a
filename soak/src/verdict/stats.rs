//! Trend statistics for leak detection (design notes §5): downsampling by medians, the Theil–Sen
//! slope, and the Mann–Kendall trend test with the Hamed–Rao variance correction for
//! autocorrelation. Plain functions over `(t, value)` points; `t` in seconds.
//!
//! Hand-rolled: the maintained Rust statistics crates (statrs, …) have distributions but neither
//! Theil–Sen nor Mann–Kendall with an autocorrelation correction; the formulas are short.

/// A sample: (time in seconds, value).
pub type Point = (f64, f64);

pub fn median(v: &mut [f64]) -> f64 {
    assert!(!v.is_empty(), "median of nothing");
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Medians over consecutive windows of `bucket` seconds (aligned to the first point), each at its
/// window's middle. Robust to scrape jitter and single spikes (GC, a burst of blocks).
pub fn downsample_median(points: &[Point], bucket: f64) -> Vec<Point> {
    downsample(points, bucket, median)
}

/// Means over the same windows: for rates of bursty use (CPU), where a window's median misses
/// how much each burst takes.
pub fn downsample_mean(points: &[Point], bucket: f64) -> Vec<Point> {
    downsample(points, bucket, |v| v.iter().sum::<f64>() / v.len() as f64)
}

/// Minima over the same windows: the floor a series returns to. Caches that fill and are emptied
/// again, and buffers that are freed, leave it; a leak raises it.
pub fn downsample_min(points: &[Point], bucket: f64) -> Vec<Point> {
    downsample(points, bucket, |v| {
        v.iter().copied().fold(f64::INFINITY, f64::min)
    })
}

fn downsample(points: &[Point], bucket: f64, reduce: impl Fn(&mut [f64]) -> f64) -> Vec<Point> {
    let median = reduce;
    assert!(bucket > 0.0, "bucket must be positive");
    let Some(&(t0, _)) = points.first() else {
        return vec![];
    };
    let mut out = vec![];
    let mut cur: Vec<f64> = vec![];
    let mut idx = 0u64;
    for &(t, v) in points {
        if !v.is_finite() {
            continue;
        }
        let i = ((t - t0) / bucket).floor().max(0.0) as u64;
        if i != idx && !cur.is_empty() {
            out.push((t0 + (idx as f64 + 0.5) * bucket, median(&mut cur)));
            cur.clear();
        }
        idx = i;
        cur.push(v);
    }
    if !cur.is_empty() {
        out.push((t0 + (idx as f64 + 0.5) * bucket, median(&mut cur)));
    }
    out
}

/// The slopes of every pair of points within each block (never across two), in block order.
fn pairwise_slopes<B: AsRef<[Point]>>(blocks: &[B]) -> Vec<f64> {
    let mut slopes = vec![];
    for b in blocks {
        let b = b.as_ref();
        for (i, &(ti, vi)) in b.iter().enumerate() {
            for &(tj, vj) in &b[i + 1..] {
                if tj != ti {
                    slopes.push((vj - vi) / (tj - ti));
                }
            }
        }
    }
    slopes
}

/// Theil–Sen estimator: the median of all pairwise slopes, and the median intercept. `None` with
/// fewer than two distinct times. O(n²): call it on downsampled series (hundreds of points).
pub fn theil_sen(points: &[Point]) -> Option<(f64, f64)> {
    let mut slopes = pairwise_slopes(std::slice::from_ref(&points));
    if slopes.is_empty() {
        return None;
    }
    let slope = median(&mut slopes);
    let mut intercepts: Vec<f64> = points.iter().map(|&(t, v)| v - slope * t).collect();
    Some((slope, median(&mut intercepts)))
}

/// Theil–Sen over independent blocks (a node's incarnations): the median of the pairwise slopes
/// taken within each block only, never across two (Sen's slope for blocked data, as in Hirsch,
/// Slack and Smith's seasonal Kendall slope, 1982). A restart's drop in memory is then no slope at
/// all, while growth inside every incarnation is. Longer blocks weigh more: they have more pairs.
/// `None` when no block has two distinct times.
pub fn theil_sen_pooled(blocks: &[Vec<Point>]) -> Option<f64> {
    let mut slopes = pairwise_slopes(blocks);
    (!slopes.is_empty()).then(|| median(&mut slopes))
}

/// The pooled Theil–Sen slope with Sen's (1968) confidence interval: of the N within-block
/// pairwise slopes, sorted, the bounds are those of rank (N ∓ C) / 2 with C = z·sqrt(Var(S)), Var(S)
/// of the same blocks from [`mann_kendall_pooled`] (autocorrelation-corrected, so a wandering
/// series gets a wide interval). `(low, slope, high)`; `None` without two distinct x in a block.
pub fn sen_interval(blocks: &[Vec<Point>], var_s: f64, z: f64) -> Option<(f64, f64, f64)> {
    let mut slopes = pairwise_slopes(blocks);
    if slopes.is_empty() {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    let n = slopes.len();
    let mid = if n % 2 == 1 {
        slopes[n / 2]
    } else {
        (slopes[n / 2 - 1] + slopes[n / 2]) / 2.0
    };
    let c = z * var_s.max(0.0).sqrt();
    let rank = |r: f64| slopes[(r.round().max(1.0) as usize).min(n) - 1];
    let nf = n as f64;
    Some((rank((nf - c) / 2.0), mid, rank((nf + c) / 2.0 + 1.0)))
}

/// A parametric companion to the rank test, for series whose trend is large against their noise:
/// Mann–Kendall only counts which way each pair moves, so a clean staircase (a thread per few
/// setups) with a sawtooth around its trend reads to it like a wandering series, and its
/// autocorrelation correction takes the evidence away. Here the slope `slope` (the pooled Theil–Sen
/// one) is set against the scatter around it: residuals within each block (own intercept), their
/// spread σ and lag-1 correlation r (bias-corrected as in [`mann_kendall`]), SE = σ / sqrt(Sxx) ×
/// sqrt((1 + r) / (1 − r)), t = slope / SE, two-sided p of Student's t with the effective degrees
/// of freedom. `None` with fewer than 6 points in blocks of 3 or more, or no spread in time.
pub fn slope_z_test(blocks: &[Vec<Point>], slope: f64) -> Option<f64> {
    let mut resid: Vec<Vec<f64>> = vec![];
    let mut sxx = 0.0;
    for b in blocks.iter().filter(|b| b.len() >= 3) {
        let tm = b.iter().map(|p| p.0).sum::<f64>() / b.len() as f64;
        sxx += b.iter().map(|p| (p.0 - tm).powi(2)).sum::<f64>();
        let mut r: Vec<f64> = b.iter().map(|&(t, v)| v - slope * t).collect();
        let m = median(&mut r.clone());
        r.iter_mut().for_each(|x| *x -= m);
        resid.push(r);
    }
    let n: usize = resid.iter().map(Vec::len).sum();
    if n < 6 || sxx <= 0.0 {
        return None;
    }
    let nf = n as f64;
    let all: Vec<f64> = resid.iter().flatten().copied().collect();
    let mean = all.iter().sum::<f64>() / nf;
    let var = all.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (nf - 2.0);
    let lag: f64 = resid
        .iter()
        .flat_map(|r| r.windows(2).map(|w| (w[0] - mean) * (w[1] - mean)))
        .sum();
    let denom = var * (nf - 2.0);
    let r1 = if denom > 0.0 {
        ((nf * lag / denom + 1.0) / (nf - 4.0)).clamp(0.0, 0.98)
    } else {
        0.0
    };
    let se = (var / sxx).sqrt() * ((1.0 + r1) / (1.0 - r1)).sqrt();
    if se <= 0.0 {
        // No scatter at all: a perfect line is as significant as it gets, a flat one not at all.
        return Some(if slope != 0.0 { 0.0 } else { 1.0 });
    }
    // Student's t with the effective degrees of freedom: correlated points are worth fewer
    // independent ones, n (1 − r) / (1 + r), and a short wandering series keeps only one or two.
    let dof = (nf * (1.0 - r1) / (1.0 + r1) - 2.0).max(1.0);
    let t = StudentsT::new(0.0, 1.0, dof).ok()?;
    Some((2.0 * t.sf((slope / se).abs())).min(1.0))
}

/// Sign test on the increments between consecutive points within each block (never across two):
/// two-sided binomial p of as many rises against falls (ties left out). A leak raises almost
/// every window over the one before, however its pace bends, where a bent trend's residuals read
/// to the corrected tests as slow wander (a leaker growing 37 → 88 MiB, one window in 30 not
/// rising, got p = 0.04 from them). Valid under wander too: the increments of an AR(1) series are
/// nearly independent at windows much shorter than its time constant (their lag-1 correlation,
/// −(1 − φ)/2, is never positive, which only makes the test conservative). What it does not
/// tell apart, small rises and rare large falls (a cache emptied now and then), the slope, floor
/// and persistence gates do. `None` with fewer than 6 rises and falls.
pub fn sign_test(blocks: &[Vec<Point>]) -> Option<f64> {
    let (mut up, mut down) = (0u64, 0u64);
    for b in blocks {
        for w in b.windows(2) {
            match w[1].1.partial_cmp(&w[0].1) {
                Some(std::cmp::Ordering::Greater) => up += 1,
                Some(std::cmp::Ordering::Less) => down += 1,
                _ => {}
            }
        }
    }
    let n = up + down;
    if n < 6 {
        return None;
    }
    // P(X >= k) = P(X > k - 1) for X ~ Bin(n, 1/2); k >= n/2 >= 3.
    let k = up.max(down);
    let tail = Binomial::new(0.5, n).ok()?.sf(k - 1);
    Some((2.0 * tail).min(1.0))
}

/// Window-to-window changes fewer than this give no robust scale: no jumps are found.
pub const MIN_CHANGES_FOR_JUMPS: usize = 6;

/// Changes this many robust standard deviations over the typical one may be part of a jump whose
/// parts together clear the jump threshold: a step that lands inside a window is split over two
/// changes.
pub const JUMP_PART_Z: f64 = 2.0;

/// Changes further than this many standard deviations from the typical one, either way, are left
/// out when the scale is estimated again ([`change_scale`]).
const TRIM_Z: f64 = 2.5;
/// The median absolute deviation of a standard normal trimmed at ±[`TRIM_Z`], over the untrimmed
/// one (0.6651 / 0.6745): undoes the trimming's shrinking of the scale.
const TRIMMED_MAD: f64 = 0.986;
/// The lower-quartile absolute deviation of a standard normal: scales a quartile to a standard
/// deviation.
const NORMAL_Q25_ABS: f64 = 0.318_639;

/// One isolated jump: the changes `first..=last` (change `i` is `b[i+1] - b[i]`) of one block and
/// how far they rose together beyond the typical change.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Jump {
    pub first: usize,
    pub last: usize,
    pub excess: f64,
}

/// The typical window-to-window change (the median) and its scale (a robust standard deviation),
/// over the changes within every block. First from the lower-quartile absolute deviation: a short
/// span with three steps, each split over two windows, has nearly half its changes in jumps, which
/// inflates even the median absolute deviation. Then again from the changes within ±[`TRIM_Z`]
/// of it (median, median absolute deviation corrected for the trimming) until that set settles:
/// trimming both sides keeps both unbiased for symmetric noise (trimming only rises made the scale
/// too small, and a noise change of 3.7 standard deviations read as a jump in a steady leak). For
/// a series that mostly does not change (fds, threads) the scale is 0. `None` with fewer than
/// [`MIN_CHANGES_FOR_JUMPS`] changes.
pub fn change_scale(blocks: &[Vec<Point>]) -> Option<(f64, f64)> {
    let changes: Vec<f64> = blocks
        .iter()
        .flat_map(|b| b.windows(2).map(|w| w[1].1 - w[0].1))
        .collect();
    if changes.len() < MIN_CHANGES_FOR_JUMPS {
        return None;
    }
    let mut typical = median(&mut changes.clone());
    let mut dev: Vec<f64> = changes.iter().map(|c| (c - typical).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let mut scale = dev[(dev.len() - 1) / 4] / NORMAL_Q25_ABS;
    let mut kept: Vec<bool> = vec![];
    for _ in 0..5 {
        let now: Vec<bool> = changes
            .iter()
            .map(|c| (c - typical).abs() <= TRIM_Z * scale)
            .collect();
        if now == kept {
            break;
        }
        kept = now;
        let mut rest: Vec<f64> = changes
            .iter()
            .zip(&kept)
            .filter(|(_, k)| **k)
            .map(|(c, _)| *c)
            .collect();
        // Never fewer than half: with few changes each pass's smaller scale trims more, and the
        // scale collapsed to a tenth of the noise (every change a jump).
        if rest.len() < MIN_CHANGES_FOR_JUMPS || 2 * rest.len() < changes.len() {
            break;
        }
        typical = median(&mut rest);
        let mut dev: Vec<f64> = rest.iter().map(|c| (c - typical).abs()).collect();
        let mad = 1.4826 * median(&mut dev) / TRIMMED_MAD;
        // A scale of 0 only comes from a series that mostly does not change, as the first pass
        // finds; a few distinct values left over do not make one.
        if mad > 0.0 {
            scale = mad;
        }
    }
    Some((typical, scale))
}

/// The isolated jumps of one block, given the typical change and its scale ([`change_scale`]):
/// runs of consecutive changes, each more than [`JUMP_PART_Z`] scales over the typical change,
/// that with the change after them rise more than `z` scales over it. That change counts so that
/// a step split over two windows is whole and a one-window spike, which comes straight back down,
/// is no jump (taking out only its rise would bend the rest of the series down). With a scale of
/// 0 every rise that stays is one.
pub fn jumps(block: &[Point], (typical, scale): (f64, f64), z: f64) -> Vec<Jump> {
    let changes: Vec<f64> = block.windows(2).map(|w| w[1].1 - w[0].1).collect();
    let mut out = vec![];
    let mut i = 0;
    while i < changes.len() {
        if changes[i] - typical <= JUMP_PART_Z * scale {
            i += 1;
            continue;
        }
        let first = i;
        while i + 1 < changes.len() && changes[i + 1] - typical > JUMP_PART_Z * scale {
            i += 1;
        }
        // The change after the run belongs to it: the rest of a step that landed inside a
        // window, or the fall of a spike that came straight back down (which leaves no jump).
        // A run at the very end has none, and cannot be told from a spike.
        if i + 1 >= changes.len() {
            break;
        }
        let last = i + 1;
        i += 1;
        let excess: f64 = changes[first..=last].iter().map(|c| c - typical).sum();
        if excess > z * scale {
            out.push(Jump {
                first,
                last,
                excess,
            });
        }
    }
    out
}

/// `blocks` with the changes of each of their [`jumps`] replaced by the typical change, and how
/// many each block had.
pub fn without_jumps(blocks: &[Vec<Point>], z: f64) -> (Vec<Vec<Point>>, Vec<usize>) {
    let Some(typical_scale) = change_scale(blocks) else {
        return (blocks.to_vec(), vec![0; blocks.len()]);
    };
    blocks
        .iter()
        .map(|b| {
            let found = jumps(b, typical_scale, z);
            let mut out = b.clone();
            for j in &found {
                for k in j.first..=j.last {
                    let excess = (b[k + 1].1 - b[k].1) - typical_scale.0;
                    for p in &mut out[k + 1..] {
                        p.1 -= excess;
                    }
                }
            }
            (out, found.len())
        })
        .unzip()
}

/// Mann–Kendall over independent blocks: S and Var(S) are summed over the blocks (each block's
/// variance with its own autocorrelation correction), as in the seasonal Kendall test. Valid
/// because under "no trend" every block's S has mean 0 and distinct processes are independent, so
/// the sum is again asymptotically normal with the summed variance. Blocks of 2 or 3 points (a node
/// killed every minute has many) count with their plain variance: too short to estimate a
/// correlation, and for 2 points Var(S) = 1 whatever the correlation. `None` when no block has 2.
pub fn mann_kendall_pooled(blocks: &[Vec<Point>]) -> Option<MannKendall> {
    let (mut s, mut var_s, mut var0, mut any) = (0.0, 0.0, 0.0, false);
    for b in blocks {
        if let Some(m) = mann_kendall(b) {
            s += m.s;
            var_s += m.var_s;
            var0 += m.var_s / m.correction;
            any = true;
        } else if b.len() >= 2 {
            let (bs, bv) = s_and_var0(b);
            s += bs;
            var_s += bv;
            var0 += bv;
            any = true;
        }
    }
    any.then(|| finish_mk(s, var_s, if var0 > 0.0 { var_s / var0 } else { 1.0 }))
}

/// Mann–Kendall's S of values in time order and its variance without autocorrelation (with the
/// tie correction).
fn s_and_var0(points: &[Point]) -> (f64, f64) {
    let n = points.len();
    let x: Vec<f64> = points.iter().map(|p| p.1).collect();
    let mut s = 0.0;
    for i in 0..n {
        for j in i + 1..n {
            s += sign(x[j] - x[i]);
        }
    }
    let nf = n as f64;
    let mut sorted = x;
    sorted.sort_by(f64::total_cmp);
    let mut ties = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && sorted[j + 1] == sorted[i] {
            j += 1;
        }
        let t = (j - i + 1) as f64;
        ties += t * (t - 1.0) * (2.0 * t + 5.0);
        i = j + 1;
    }
    (s, (nf * (nf - 1.0) * (2.0 * nf + 5.0) - ties) / 18.0)
}

fn finish_mk(s: f64, var_s: f64, correction: f64) -> MannKendall {
    let z = if var_s > 0.0 {
        (s - sign(s)) / var_s.sqrt()
    } else {
        0.0
    };
    let p = libm::erfc(z.abs() / std::f64::consts::SQRT_2);
    MannKendall {
        s,
        var_s,
        correction,
        z,
        p,
    }
}

use statrs::distribution::{Binomial, ContinuousCDF, DiscreteCDF, StudentsT};

/// Result of the Mann–Kendall test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MannKendall {
    pub s: f64,
    /// Var(S) after the Hamed–Rao correction.
    pub var_s: f64,
    /// The correction factor n/n* applied to Var(S) (≥ 1).
    pub correction: f64,
    pub z: f64,
    /// Two-sided p-value.
    pub p: f64,
}

fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// Average ranks (1-based), ties sharing their mean rank.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = mean;
        }
        i = j + 1;
    }
    r
}

/// Mann–Kendall trend test on values in time order, with Hamed and Rao's (1998) correction: the
/// series is detrended with the Theil–Sen slope, the autocorrelation of its ranks is measured, and
/// Var(S) is inflated by n/n* using only the lags that are significant at 5%; and a second factor
/// from an AR(1) model of the same ranks with a bias-corrected lag-1 correlation (see below), the
/// larger of the two applied. Without them, slowly wandering series (RSS of a healthy node) look
/// like trends. The factor is kept ≥ 1 so negative autocorrelation never makes the test more
/// eager. `None` with fewer than 4 points.
pub fn mann_kendall(points: &[Point]) -> Option<MannKendall> {
    let n = points.len();
    if n < 4 {
        return None;
    }
    let (s, var0) = s_and_var0(points);
    let nf = n as f64;

    // Hamed–Rao: autocorrelation of the ranks of the detrended series.
    let (slope, _) = theil_sen(points)?;
    let detrended: Vec<f64> = points.iter().map(|&(t, v)| v - slope * t).collect();
    let r = ranks(&detrended);
    let mean = r.iter().sum::<f64>() / nf;
    let denom: f64 = r.iter().map(|v| (v - mean).powi(2)).sum();
    let mut sum = 0.0;
    if denom > 0.0 {
        let bound = 1.96 / nf.sqrt();
        for k in 1..n - 2 {
            let num: f64 = (0..n - k).map(|i| (r[i] - mean) * (r[i + k] - mean)).sum();
            let rho = num / denom;
            if rho.abs() > bound {
                let (a, b, c) = ((n - k) as f64, (n - k - 1) as f64, (n - k - 2) as f64);
                sum += a * b * c * rho;
            }
        }
    }
    let hamed_rao = 1.0 + 2.0 / (nf * (nf - 1.0) * (nf - 2.0)) * sum;
    // Short series hide their memory: with n of 10–30 windows, lag correlations of a wander that
    // lasts minutes are biased low and fall below the significance bound, so the Hamed–Rao
    // factor alone under-corrects (the verdict benchmark's AR(1) series were flagged at several
    // times the nominal rate). A second factor models the detrended ranks as AR(1) with the lag-1
    // correlation corrected for its small-sample bias (Kendall: E[r1] ≈ ρ − (1 + 4ρ)/n, so
    // ρ ≈ (n·r1 + 1)/(n − 4)), all lags counted as ρ^k in the same formula; the larger factor wins.
    let mut ar1 = 0.0;
    if denom > 0.0 && n > 5 {
        let num: f64 = (0..n - 1).map(|i| (r[i] - mean) * (r[i + 1] - mean)).sum();
        let r1 = ((nf * num / denom + 1.0) / (nf - 4.0)).clamp(0.0, 0.98);
        let mut rho = r1;
        for k in 1..n - 2 {
            let (a, b, c) = ((n - k) as f64, (n - k - 1) as f64, (n - k - 2) as f64);
            ar1 += a * b * c * rho;
            rho *= r1;
        }
    }
    let ar1 = 1.0 + 2.0 / (nf * (nf - 1.0) * (nf - 2.0)) * ar1;
    let correction = hamed_rao.max(ar1).max(1.0);
    Some(finish_mk(s, var0 * correction, correction))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_per_window_skip_non_finite_values() {
        let pts: Vec<Point> = (0..10)
            .map(|i| (i as f64, if i == 3 { f64::NAN } else { i as f64 }))
            .collect();
        let d = downsample_median(&pts, 5.0);
        assert_eq!(d, vec![(2.5, 1.5), (7.5, 7.0)]);
        assert!(downsample_median(&[], 5.0).is_empty());
    }

    #[test]
    fn theil_sen_ignores_outliers() {
        let mut pts: Vec<Point> = (0..20).map(|i| (i as f64, 3.0 + 2.0 * i as f64)).collect();
        pts[5].1 = 1000.0;
        pts[12].1 = -1000.0;
        let (slope, intercept) = theil_sen(&pts).unwrap();
        assert!((slope - 2.0).abs() < 1e-9, "{slope}");
        assert!((intercept - 3.0).abs() < 1e-9, "{intercept}");
        assert!(theil_sen(&[(1.0, 1.0), (1.0, 2.0)]).is_none());
    }

    fn pts(v: &[f64]) -> Vec<Point> {
        v.iter().enumerate().map(|(i, v)| (i as f64, *v)).collect()
    }

    #[test]
    fn jumps_are_rises_far_over_the_typical_change_that_stay() {
        // Changes .1 -.2 .15 -.05 3.0 -.1 .05 -.15 .2 -.1. First pass: typical (-.05 + .05) / 2
        // = 0; absolute deviations sorted .05 .05 .1 ..., lower quartile (3rd of 10) 0.1, scale
        // 0.1 / 0.318639 = 0.3138, so only 3.0 is outside ±2.5 scales. Second pass, without it:
        // typical -0.05 (5th of 9), deviations 0 .05 .05 .1 .1 .15 .15 .2 .25, median 0.1, scale
        // 0.1 x 1.4826 / 0.986 = 0.1504; the same change is out, so it settles. Jump threshold
        // 4 x 0.1504 = 0.60: the 3.0 and the change after it (-0.1) rise 3.05 - 0.05 = 3.0 over
        // typical.
        let stair = pts(&[0.0, 0.1, -0.1, 0.05, 0.0, 3.0, 2.9, 2.95, 2.8, 3.0, 2.9]);
        let ts = change_scale(std::slice::from_ref(&stair)).unwrap();
        assert!((ts.0 + 0.05).abs() < 1e-9 && (ts.1 - 0.1 * 1.4826 / 0.986).abs() < 1e-9);
        let j = jumps(&stair, ts, 4.0);
        assert_eq!((j.len(), j[0].first, j[0].last), (1, 4, 5), "{j:?}");
        assert!((j[0].excess - 3.0).abs() < 1e-9, "{j:?}");
        let (flat, k) = without_jumps(std::slice::from_ref(&stair), 4.0);
        assert_eq!(k, [1]);
        let flat = &flat[0];
        // The jump's two changes become the typical one; the rest keep theirs.
        let want = [
            0.0, 0.1, -0.1, 0.05, 0.0, -0.05, -0.1, -0.05, -0.2, 0.0, -0.1,
        ];
        for (p, w) in flat.iter().zip(want) {
            assert!((p.1 - w).abs() < 1e-9, "{flat:?}");
        }
        // A one-window spike that comes straight back is not a jump.
        let spike = pts(&[0.0, 0.1, -0.1, 0.05, 0.0, 3.0, -0.1, -0.05, -0.2, 0.0, -0.1]);
        let ts = change_scale(std::slice::from_ref(&spike)).unwrap();
        assert!(jumps(&spike, ts, 4.0).is_empty());
        // A step inside a window is split over two changes (+2, +1): one jump with the change
        // after it (-0.1), 2.05 + 1.05 - 0.05 = 3.05 over the typical change.
        let split = pts(&[
            0.0, 0.1, -0.1, 0.05, 0.0, 2.0, 3.0, 2.9, 2.95, 2.8, 3.0, 2.9,
        ]);
        let ts = change_scale(std::slice::from_ref(&split)).unwrap();
        let j = jumps(&split, ts, 4.0);
        assert_eq!((j.len(), j[0].first, j[0].last), (1, 4, 6), "{j:?}");
        assert!((j[0].excess - 3.05).abs() < 1e-9, "{j:?}");
        // A series that mostly does not change: every rise that stays is a jump (scale 0).
        let threads = pts(&[12.0, 12.0, 12.0, 13.0, 13.0, 13.0, 13.0, 14.0, 14.0, 14.0]);
        let ts = change_scale(std::slice::from_ref(&threads)).unwrap();
        assert_eq!(ts, (0.0, 0.0));
        let found: Vec<(usize, f64)> = jumps(&threads, ts, 4.0)
            .iter()
            .map(|j| (j.first, j.excess))
            .collect();
        assert_eq!(found, [(2, 1.0), (6, 1.0)]);
        // A steady climb has a typical change equal to its slope, and no jumps.
        let climb = pts(&[0.0, 1.0, 2.1, 2.9, 4.0, 5.0, 6.1, 7.0, 7.9, 9.0]);
        let ts = change_scale(std::slice::from_ref(&climb)).unwrap();
        assert!((ts.0 - 1.0).abs() < 1e-9, "{ts:?}");
        assert!(jumps(&climb, ts, 4.0).is_empty());
        // Too few changes for a scale: nothing is taken out.
        let short = pts(&[0.0, 0.0, 9.0, 9.0, 9.0, 9.0]);
        assert_eq!(change_scale(std::slice::from_ref(&short)), None);
        assert_eq!(
            without_jumps(std::slice::from_ref(&short), 4.0),
            (vec![short], vec![0])
        );
    }

    #[test]
    fn floors_are_window_minima() {
        let pts: Vec<Point> = [5.0, 1.0, 9.0, 4.0, 7.0, 3.0]
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64, *v))
            .collect();
        assert_eq!(downsample_min(&pts, 3.0), vec![(1.5, 1.0), (4.5, 3.0)]);
        assert_eq!(
            downsample_mean(&pts, 3.0),
            vec![(1.5, 5.0), (4.5, 14.0 / 3.0)]
        );
    }

    #[test]
    fn the_slope_test_sets_the_slope_against_its_scatter() {
        // Slope 1 with a ±0.2–0.5 zigzag: residuals' variance 0.16479 (n − 2), lag-1 correlation
        // −0.90 (no inflation), Sxx = 42, SE = 0.062639, t = 15.96 with 8 − 2 = 6 degrees of
        // freedom, two-sided p = 3.8355e-6 (checked by integrating the t density independently).
        // Mann–Kendall's own p for these 8 points is 2.5e-4.
        let b = vec![
            (0.0, 0.0),
            (1.0, 1.5),
            (2.0, 1.8),
            (3.0, 3.6),
            (4.0, 3.9),
            (5.0, 5.7),
            (6.0, 5.8),
            (7.0, 7.4),
        ];
        let p = slope_z_test(std::slice::from_ref(&b), 1.0).unwrap();
        assert!((p / 3.835_543_403_964_53e-6 - 1.0).abs() < 1e-6, "{p:e}");
        // A perfect line; a flat line with no scatter; too few points.
        let line: Vec<Point> = (0..6).map(|i| (i as f64, 2.0 * i as f64)).collect();
        assert_eq!(slope_z_test(&[line], 2.0), Some(0.0));
        let flat: Vec<Point> = (0..6).map(|i| (i as f64, 3.0)).collect();
        assert_eq!(slope_z_test(&[flat], 0.0), Some(1.0));
        assert_eq!(slope_z_test(&[b[..5].to_vec()], 1.0), None);
    }

    #[test]
    fn pooled_theil_sen_takes_pairs_within_blocks_only() {
        // Block A rises by 1 per second (3 pairs); block B, a later incarnation, starts far
        // higher and falls by 10 per second (1 pair). Within blocks: [1, 1, 1, -10], median 1.
        // Across blocks the pairs would all be steep rises.
        let a = vec![(0.0, 0.0), (1.0, 1.0), (2.0, 2.0)];
        let b = vec![(10.0, 100.0), (11.0, 90.0)];
        assert_eq!(theil_sen_pooled(&[a.clone(), b.clone()]), Some(1.0));
        let all: Vec<Point> = a.iter().chain(&b).copied().collect();
        assert!(theil_sen(&all).unwrap().0 > 5.0);
        assert_eq!(theil_sen_pooled(&[vec![(1.0, 1.0)], vec![]]), None);
    }

    #[test]
    fn sen_interval_takes_the_ranks_the_variance_gives() {
        // A zigzag of 12 (negative autocorrelation: no correction). 66 pairwise slopes, S = 45,
        // Var = 209.67, C = 1.96 × sqrt(209.67) = 28.38: ranks round(18.81) = 19 and
        // round(48.19) = 48 of the sorted slopes, 0.5 and 7/9; median 0.5 (checked against an
        // independent implementation).
        let v = [0.0, 3.0, 1.0, 4.0, 2.0, 5.0, 3.0, 6.0, 4.0, 7.0, 5.0, 8.0];
        let pts: Vec<Point> = v.iter().enumerate().map(|(i, x)| (i as f64, *x)).collect();
        let blocks = [pts];
        let var_s = mann_kendall_pooled(&blocks).unwrap().var_s;
        // 12·11·29/18 = 212.67, less 3 for the three tied pairs (3, 4, 5 twice each).
        assert!((var_s - 209.666_666_666_666_66).abs() < 1e-9, "{var_s}");
        let (lo, mid, hi) = sen_interval(&blocks, var_s, 1.96).unwrap();
        assert_eq!((lo, mid), (0.5, 0.5));
        assert!((hi - 7.0 / 9.0).abs() < 1e-12, "{hi}");
        assert!(sen_interval(&[vec![(1.0, 1.0)]], 1.0, 1.96).is_none());
    }

    #[test]
    fn pooled_mann_kendall_sums_s_and_variances() {
        // Two strictly increasing blocks of 5 and 6 points: S = 10 + 15 = 25,
        // Var = (5*4*15 + 6*5*17) / 18 = 45 (constant detrended ranks: no correction),
        // Z = 24 / sqrt(45) = 3.5777, two-sided p = 3.466e-4.
        let block = |n: usize, t0: f64| -> Vec<Point> {
            (0..n).map(|i| (t0 + i as f64, i as f64)).collect()
        };
        let mk = mann_kendall_pooled(&[block(5, 0.0), block(6, 100.0)]).unwrap();
        assert_eq!(mk.s, 25.0);
        assert!((mk.var_s - 45.0).abs() < 1e-9, "{mk:?}");
        assert!((mk.z - 3.577_708_763_999_664).abs() < 1e-9, "{mk:?}");
        assert!((mk.p - 3.466e-4).abs() < 0.001e-4, "{mk:?}");
        // A 3-point block adds S = 3 and its plain variance 3·2·11/18 = 3.667: S = 28,
        // Var = 48.667, Z = 27 / sqrt(48.667) = 3.8703, p = 1.0869e-4; a 1-point block nothing.
        let mk = mann_kendall_pooled(&[
            block(5, 0.0),
            block(3, 50.0),
            block(6, 100.0),
            block(1, 200.0),
        ])
        .unwrap();
        assert_eq!(mk.s, 28.0);
        assert!((mk.var_s - 48.666_666_666_666_66).abs() < 1e-9, "{mk:?}");
        assert!((mk.z - 3.870_329_708_796_722).abs() < 1e-9, "{mk:?}");
        assert!((mk.p - 1.0869e-4).abs() < 0.0001e-4, "{mk:?}");
        // Many 2-point lives, each rising: S = 10, Var = 10.
        let lives: Vec<Vec<Point>> = (0..10).map(|k| block(2, 100.0 * k as f64)).collect();
        let mk = mann_kendall_pooled(&lives).unwrap();
        assert_eq!((mk.s, mk.var_s), (10.0, 10.0));
        assert!(mann_kendall_pooled(&[block(1, 0.0)]).is_none());
    }

    #[test]
    fn short_series_memory_is_corrected_by_the_bias_corrected_lag_one_model() {
        // Clusters of three: the detrended ranks' lag-1 correlation is 0.196, no lag is
        // significant at 5% for n = 16 (so Hamed–Rao alone leaves Var(S) as it is), the
        // bias-corrected ρ = (16 × 0.196 + 1) / 12 = 0.345 gives a factor of 1.7726.
        // S = 92, Var0 = 16·15·37/18 = 493.33, Z = 91 / sqrt(493.33 × 1.7726) = 3.0773,
        // p = 0.0020888 (values from an independent implementation of the same formulas).
        let v = [
            0.0, 0.5, 2.0, 2.2, 1.8, 1.5, 2.5, 4.0, 4.3, 3.9, 3.6, 4.6, 6.0, 6.4, 6.1, 5.8,
        ];
        let pts: Vec<Point> = v.iter().enumerate().map(|(i, x)| (i as f64, *x)).collect();
        let mk = mann_kendall(&pts).unwrap();
        assert_eq!(mk.s, 92.0);
        assert!(
            (mk.correction - 1.772_561_945_462_275_6).abs() < 1e-9,
            "{mk:?}"
        );
        assert!((mk.z - 3.077_304_354_006_799).abs() < 1e-9, "{mk:?}");
        assert!((mk.p - 0.002_088_819_074_445_6).abs() < 1e-9, "{mk:?}");
    }

    #[test]
    fn mann_kendall_matches_the_textbook_values() {
        // Strictly increasing, 10 points: S = 45, Var = 10*9*25/18 = 125, Z = 44/sqrt(125).
        let pts: Vec<Point> = (0..10).map(|i| (i as f64, i as f64)).collect();
        let mk = mann_kendall(&pts).unwrap();
        assert_eq!(mk.s, 45.0);
        assert!((mk.var_s / mk.correction - 125.0).abs() < 1e-9);
        let z = 44.0 / 125f64.sqrt();
        assert!((mk.z - z / mk.correction.sqrt()).abs() < 1e-9);
        // Two-sided normal tail of 3.9355: about 8.3e-5.
        let uncorrected = libm::erfc(z / std::f64::consts::SQRT_2);
        assert!((uncorrected - 8.30e-5).abs() < 0.05e-5, "{uncorrected}");
        // Ties shrink the variance: 4 equal values among 6.
        let tied: Vec<Point> = [1.0, 2.0, 2.0, 2.0, 2.0, 3.0]
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64, *v))
            .collect();
        let mk = mann_kendall(&tied).unwrap();
        let var0 = (6.0 * 5.0 * 17.0 - 4.0 * 3.0 * 13.0) / 18.0;
        assert!((mk.var_s / mk.correction - var0).abs() < 1e-9);
        assert!(mann_kendall(&pts[..3]).is_none());
    }
}
