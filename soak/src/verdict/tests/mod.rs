//! Verdicts on synthetic series with known answers: a leak, flat noise, a slowly wandering (but
//! healthy) series, a warm-up plateau; storms; catch-up after faults and a stuck node. Seeds are
//! fixed, so every count below is deterministic.

use rand::{RngExt, SeedableRng};

use super::*;

mod progress;

const MIB: f64 = 1024.0 * 1024.0;
const SCRAPE: f64 = 10.0;
const HOURS: f64 = 2.0;

fn gauss(rng: &mut rand::rngs::StdRng) -> f64 {
    // Box–Muller.
    let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// RSS-like series: 200 MiB + `f(t)` + white noise of `sigma` MiB, scraped every 10 s for 2 h.
fn series(seed: u64, sigma: f64, f: impl Fn(f64) -> f64) -> Vec<Point> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..(HOURS * 3600.0 / SCRAPE) as usize)
        .map(|i| {
            let t = i as f64 * SCRAPE;
            (t, 200.0 * MIB + f(t) + sigma * MIB * gauss(&mut rng))
        })
        .collect()
}

/// S3's budget: 0.1 MiB/h.
fn cfg() -> LeakConfig {
    LeakConfig {
        warmup_secs: 300.0,
        restart_warmup_secs: 60.0,
        bucket_secs: 60.0,
        p_threshold: 0.01,
        slope_budget_per_hour: 0.1 * MIB,
        limit: Some(1024.0 * MIB),
        mean_windows: false,
    }
}

fn flagged(runs: impl Iterator<Item = Vec<Point>>, c: &LeakConfig) -> usize {
    runs.filter(|s| leak(std::slice::from_ref(s), c).leak)
        .count()
}

#[test]
fn a_steady_leak_is_flagged_with_its_slope_and_time_to_limit() {
    for seed in 0..20 {
        // 2 MiB/h under 2 MiB of noise per sample.
        let s = series(seed, 2.0, |t| 2.0 * MIB * t / 3600.0);
        let v = leak(&[s], &cfg());
        assert!(v.leak, "seed {seed}: {v:?}");
        assert!(v.p < 1e-6, "{v:?}");
        assert!((v.slope_per_hour / MIB - 2.0).abs() < 0.5, "{v:?}");
        // ~204 MiB now, 1024 MiB limit: about 410 h left.
        let ttl = v.time_to_limit_hours.unwrap();
        assert!((300.0..550.0).contains(&ttl), "{ttl}");
    }
}

#[test]
fn flat_noise_is_not_a_leak() {
    let flat = (0..50).map(|seed| series(seed, 4.0, |_| 0.0));
    assert_eq!(flagged(flat, &cfg()), 0);
    // Spikes (a GC pause, a burst of blocks) do not move medians.
    let spiky = (0..20).map(|seed| {
        let mut s = series(seed, 1.0, |_| 0.0);
        for i in (0..s.len()).step_by(37) {
            s[i].1 += 300.0 * MIB;
        }
        s
    });
    assert_eq!(flagged(spiky, &cfg()), 0);
}

/// A healthy node's RSS wanders: allocator and cache fluctuations are autocorrelated for minutes.
/// AR(1) with a ~8 min time constant and ~6 MiB of spread.
fn wandering(seed: u64) -> Vec<Point> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + seed);
    let phi: f64 = 0.98;
    let sd = 6.0 * MIB * (1.0 - phi * phi).sqrt();
    let mut x = 0.0;
    (0..(HOURS * 3600.0 / SCRAPE) as usize)
        .map(|i| {
            x = phi * x + sd * gauss(&mut rng);
            (i as f64 * SCRAPE, 200.0 * MIB + x)
        })
        .collect()
}

#[test]
fn slow_wandering_is_not_a_leak_thanks_to_the_autocorrelation_correction() {
    let c = cfg();
    let ours = flagged((0..40).map(wandering), &c);
    // The same test without the correction: Mann–Kendall alone at p < 0.01, slope over budget.
    let naive = (0..40)
        .map(wandering)
        .filter(|s| {
            let kept: Vec<Point> = s.iter().copied().filter(|p| p.0 >= c.warmup_secs).collect();
            let d = stats::downsample_median(&kept, c.bucket_secs);
            let mk = stats::mann_kendall(&d).unwrap();
            let p = libm::erfc((mk.z * mk.correction.sqrt()).abs() / std::f64::consts::SQRT_2);
            let slope = stats::theil_sen(&d).unwrap().0 * 3600.0;
            p < c.p_threshold && slope.abs() > c.slope_budget_per_hour
        })
        .count();
    // Measured: 3 of 40 with the correction, 22 of 40 without (1-min medians). The correction
    // does not remove all of it; the slope budget and per-run repetition have to do the rest.
    assert!(ours <= 3, "{ours} of 40 wandering series flagged");
    assert!(
        naive >= 5 * ours.max(1),
        "correction did little: {naive} vs {ours}"
    );
}

#[test]
fn a_warm_up_plateau_passes_once_the_warm_up_is_dropped() {
    // +80 MiB over the first ~25 minutes (caches filling), then flat.
    let plateau = |seed| series(seed, 1.0, |t| 80.0 * MIB * (1.0 - (-t / 300.0).exp()));
    let c = LeakConfig {
        warmup_secs: 2700.0,
        ..cfg()
    };
    assert_eq!(flagged((0..20).map(plateau), &c), 0);
    // A 45-minute run judged from the start at 8 MiB/h: the fill is a significant slope far over
    // the budget, but it has stopped by the last third, so it is a high-water mark, not a leak.
    let from_start = LeakConfig {
        warmup_secs: 0.0,
        slope_budget_per_hour: 8.0 * MIB,
        ..cfg()
    };
    for seed in 0..20 {
        let v = leak(&[plateau(seed)[..270].to_vec()], &from_start);
        assert!(v.slope_per_hour > 10.0 * MIB, "{v:?}");
        assert!(v.late_slope_per_hour.unwrap() < 4.0 * MIB, "{v:?}");
        assert!(!v.leak, "{v:?}");
    }
}

#[test]
fn growth_that_stops_is_a_high_water_mark() {
    // 60 minutes: +24 MiB over the first 40, flat for the last 20, little noise. The slope is far
    // over 8 MiB/h and the floor rises with it, but the oldest third is flat. (A bend like this
    // one reads as memory to the autocorrelation correction, p ≈ 0.07: judged at 10% here so
    // that the persistence gate is what decides.)
    let c = LeakConfig {
        warmup_secs: 0.0,
        slope_budget_per_hour: 8.0 * MIB,
        p_threshold: 0.1,
        ..cfg()
    };
    for seed in 0..10 {
        let s: Vec<Point> = series(seed, 0.2, |t| 24.0 * MIB * (t.min(2400.0) / 2400.0))
            .into_iter()
            .filter(|p| p.0 < 3600.0)
            .collect();
        let v = leak(&[s], &c);
        assert!(v.p < 0.1 && v.floor_slope_per_hour > 8.0 * MIB, "{v:?}");
        assert!(v.late_slope_per_hour.unwrap().abs() < MIB, "{v:?}");
        assert!(!v.leak && v.high_water, "{v:?}");
        // The same growth that keeps going to the end is a leak.
        let on: Vec<Point> = series(seed, 0.2, |t| 24.0 * MIB * t / 3600.0)
            .into_iter()
            .filter(|p| p.0 < 3600.0)
            .collect();
        let v = leak(&[on], &c);
        assert!(v.leak && !v.high_water, "{v:?}");
    }
}

/// Splits a series into incarnations at the given restart times (as `judge` does at a drop of
/// the CPU counter); each restart starts again `drop` lower.
fn restarted(s: &[Point], at: &[f64], drop: f64) -> Vec<Vec<Point>> {
    let mut out: Vec<Vec<Point>> = vec![vec![]];
    for &(t, v) in s {
        let k = at.iter().filter(|&&a| t >= a).count();
        while out.len() <= k {
            out.push(vec![]);
        }
        out[k].push((t, v - drop * k as f64));
    }
    out
}

#[test]
fn restarts_do_not_reset_what_is_known_about_a_node() {
    // 2 h, killed every 15 min: no incarnation has the 8 points after a 5 min warm-up at 60 s
    // buckets on its own... but a leak of 4 MiB/h that starts over at every restart is judged
    // over all of them, and the restarts' drops are no slope at all.
    let kills: Vec<f64> = (1..8).map(|k| k as f64 * 900.0).collect();
    let c = LeakConfig {
        slope_budget_per_hour: MIB,
        ..cfg()
    };
    for seed in 0..10 {
        let s = series(seed, 0.5, |t| 4.0 * MIB * (t % 900.0) / 3600.0);
        let lives = restarted(&s, &kills, 0.0);
        let v = leak(&lives, &c);
        assert_eq!(v.incarnations, 8, "{v:?}");
        assert!(v.leak, "seed {seed}: {v:?}");
        assert!((v.slope_per_hour / MIB - 4.0).abs() < 1.0, "{v:?}");
        // Healthy, with restarts that each start 30 MiB lower: flat, decided, no leak.
        let healthy = restarted(&series(seed, 0.5, |_| 0.0), &kills, 30.0 * MIB);
        let v = leak(&healthy, &c);
        assert!(v.undecided.is_none() && !v.leak, "{v:?}");
    }
}

#[test]
fn a_single_step_is_a_high_water_mark_not_a_leak() {
    // Threads: one more thread at 375 s of a 10-minute run, then flat (what failed a clean
    // control run at 12 threads/h against 5/h).
    let threads: Vec<Point> = (0..120)
        .map(|i| {
            let t = i as f64 * 5.0;
            (t, if t >= 375.0 { 13.0 } else { 12.0 })
        })
        .collect();
    let c = LeakConfig {
        warmup_secs: 180.0,
        bucket_secs: 30.0,
        slope_budget_per_hour: 5.0,
        ..cfg()
    };
    let v = leak(&[threads], &c);
    assert!(v.slope_per_hour > 5.0, "{v:?}");
    assert_eq!(v.late_slope_per_hour, Some(0.0), "{v:?}");
    assert!(!v.leak, "{v:?}");
    // One thread more every minute keeps going: a leak.
    let growing: Vec<Point> = (0..120)
        .map(|i| (i as f64 * 5.0, 12.0 + (i / 12) as f64))
        .collect();
    let v = leak(&[growing], &c);
    assert!(v.leak, "{v:?}");
}

/// 10 minutes scraped every 5 s with 0.5 MiB of white noise, judged from 3 minutes on in 30 s
/// windows at 48 MiB/h (the canary specs' RSS budget).
fn staircase(seed: u64, f: impl Fn(f64) -> f64) -> (Vec<Point>, LeakConfig) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let s = (0..120)
        .map(|i| {
            let t = i as f64 * 5.0;
            (t, 100.0 * MIB + f(t) + 0.5 * MIB * gauss(&mut rng))
        })
        .collect();
    let c = LeakConfig {
        warmup_secs: 180.0,
        bucket_secs: 30.0,
        slope_budget_per_hour: 48.0 * MIB,
        ..cfg()
    };
    (s, c)
}

#[test]
fn growth_in_a_few_jumps_is_a_high_water_mark_and_a_ramp_is_a_leak() {
    // +3 MiB at 250, 370 and 520 s: 9 MiB in the 7 judged minutes, 77 MiB/h on a line, and a
    // step in the last third, so the persistence gate alone would call it a leak.
    let steps =
        |t: f64| 3.0 * MIB * [250.0, 370.0, 520.0].iter().filter(|&&s| t >= s).count() as f64;
    let mut excused = 0;
    for seed in 0..50 {
        let (s, c) = staircase(seed, steps);
        let v = leak(std::slice::from_ref(&s), &c);
        assert!(
            v.slope_per_hour > c.slope_budget_per_hour,
            "seed {seed}: {v:?}"
        );
        if !v.leak {
            // Under this noise a step split over two windows is not always found; the growth
            // left without the ones found is what is judged.
            assert!(
                v.high_water && (1..=3).contains(&v.jumps),
                "seed {seed}: {v:?}"
            );
            excused += 1;
        }
        // The same 9 MiB as a ramp over the judged minutes: growth in every window, a leak.
        let (s, c) = staircase(seed, |t| 9.0 * MIB * ((t - 180.0) / 420.0).max(0.0));
        let v = leak(&[s], &c);
        assert!(v.leak && v.jumps == 0, "seed {seed}: {v:?}");
        // Eight jumps of 1.5 MiB in seven minutes keep coming: more than a high-water mark makes.
        let (s, c) = staircase(seed, |t| {
            1.5 * MIB * ((t - 160.0) / 50.0).floor().clamp(0.0, 8.0)
        });
        let v = leak(&[s], &c);
        assert!(v.leak && v.jumps == 0, "seed {seed}: {v:?}");
    }
    // The two left: a scale estimated from 13 changes, 6 of them parts of steps, came out too
    // large (no jump found) or too small (a fourth "jump").
    assert!(excused >= 48, "{excused} of 50");
}

#[test]
fn a_smooth_leak_keeps_its_verdict_with_one_larger_change() {
    // af-0's RSS in a real canary-resources run (`cr3`), in 4 KiB pages every 5 s: 16 KiB kept
    // per stream setup, ~9 MiB/h, smooth after the warm-up but for one change of ~0.33 MiB among
    // 0.1 MiB ones near the end. That change is a "jump" by its size, yet it carries a sixth of
    // the rise: taking it out left the trend just under the 8 MiB/h budget, which excused a leak.
    let pages: [u32; 180] = [
        4111, 4817, 4913, 5009, 5105, 5137, 5233, 5265, 5361, 5357, 5389, 5485, 5549, 5613, 5709,
        5741, 5837, 5833, 5929, 5993, 6057, 6057, 6121, 6153, 6217, 6281, 6313, 6345, 6409, 6371,
        6403, 6403, 6400, 6366, 6398, 6492, 6517, 6517, 6517, 6485, 6485, 6517, 6511, 6543, 6541,
        6573, 6573, 6467, 6467, 6525, 6557, 6516, 6548, 6548, 6548, 6548, 6580, 6580, 6580, 6570,
        6570, 6535, 6567, 6567, 6533, 6597, 6597, 6597, 6590, 6590, 6590, 6654, 6620, 6652, 6616,
        6615, 6615, 6647, 6614, 6646, 6612, 6612, 6612, 6606, 6606, 6638, 6670, 6670, 6638, 6638,
        6638, 6702, 6699, 6699, 6663, 6695, 6661, 6659, 6655, 6652, 6681, 6681, 6647, 6711, 6704,
        6703, 6667, 6699, 6731, 6731, 6698, 6698, 6730, 6730, 6730, 6730, 6696, 6728, 6728, 6728,
        6728, 6728, 6760, 6824, 6751, 6782, 6782, 6781, 6779, 6811, 6702, 6734, 6766, 6766, 6830,
        6830, 6830, 6761, 6857, 6811, 6811, 6806, 6806, 6806, 6806, 6798, 6824, 6856, 6856, 6920,
        6822, 6822, 6785, 6785, 6748, 6748, 6773, 6837, 6866, 6866, 6861, 6861, 6925, 6925, 6922,
        6922, 6921, 6985, 7017, 7017, 7012, 6977, 6941, 7005, 6937, 6969, 7001, 7033, 7065, 7065,
    ];
    let s: Vec<Point> = pages
        .iter()
        .enumerate()
        .map(|(i, p)| (5.0 * i as f64, *p as f64 * 4096.0))
        .collect();
    let c = LeakConfig {
        warmup_secs: 180.0,
        bucket_secs: 30.0,
        p_threshold: 0.002,
        slope_budget_per_hour: 8.0 * MIB,
        ..cfg()
    };
    let v = leak(&[s], &c);
    assert!(v.leak && v.jumps == 0, "{v:?}");
    assert!((8.5..10.0).contains(&(v.slope_per_hour / MIB)), "{v:?}");
}

#[test]
fn too_little_data_is_undecided_not_passed_silently() {
    let s = series(1, 1.0, |t| 10.0 * MIB * t);
    let v = leak(&[s[..40].to_vec()], &cfg());
    assert!(!v.leak && v.undecided.is_some(), "{v:?}");
}

#[test]
fn growth_per_unit_of_work_is_the_cost_per_unit_whatever_the_pace() {
    // 16 KiB per setup, setups in bursts (30 in the first minute of every ten, then none), RSS
    // with 0.2 MiB of noise; two incarnations. Against time the growth is a staircase; against
    // setups it is a line of 16 KiB per setup.
    let c = LeakConfig {
        warmup_secs: 0.0,
        restart_warmup_secs: 0.0,
        bucket_secs: 30.0,
        ..cfg()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut res = vec![vec![], vec![]];
    let mut work = vec![vec![], vec![]];
    for life in 0..2 {
        let mut setups = 0.0;
        for i in 0..360 {
            let t = life as f64 * 3600.0 + i as f64 * 10.0;
            if i % 60 < 6 {
                setups += 5.0;
            }
            work[life].push((t, setups));
            res[life].push((
                t,
                80.0 * MIB + setups * 16384.0 + 0.2 * MIB * gauss(&mut rng),
            ));
        }
    }
    let p = per_unit(&res, &work, &c).unwrap();
    assert!((p.per_unit / 16384.0 - 1.0).abs() < 0.05, "{p:?}");
    assert!(p.low <= p.per_unit && p.per_unit <= p.high, "{p:?}");
    assert!(p.low > 0.8 * 16384.0 && p.high < 1.2 * 16384.0, "{p:?}");
    // 180 setups a life, the first 5 before the first sample counted from.
    assert_eq!(p.units, 2.0 * 175.0);
    // Setups come in bursts (6 windows an hour), so memory is a staircase in time; against
    // setups it is a line, and the slope-against-scatter test says so.
    assert!(p.p < 1e-6, "{p:?}");
    // Mismatched or missing work: nothing to say.
    assert!(per_unit(&res, &[vec![], vec![]], &c).is_none());

    // Work is evidence for a node judged over one process only: one life of the same series is a
    // leak by work too; over two lives (refilling after a restart grows with work) it is not used.
    let one = leak_with_work(&res[..1], &c, &[1e-12]);
    assert!(one.p <= 4e-12, "{one:?}");
    // Four tests instead of three (trend, slope against scatter, signs; work): Bonferroni's
    // factor grows with them, over the smallest p of all.
    let without = leak(&res[..1], &c);
    let expected = 4.0 * (without.p / 3.0).min(1e-12);
    assert!(
        (one.p - expected).abs() <= 1e-9 * expected,
        "{one:?} {without:?}"
    );
    let two = leak_with_work(&res, &c, &[1e-12]);
    assert_eq!(two.p, leak(&res, &c).p);
}

#[test]
fn a_projection_takes_the_fastest_growth_and_its_interval() {
    // 900 MiB to go: 10 MiB/h by time (8..12), 30 MiB/h per setup at production (20..45).
    let p = project(
        100.0 * MIB,
        1000.0 * MIB,
        &[
            ("time", 10.0 * MIB, 8.0 * MIB, 12.0 * MIB),
            ("setup", 30.0 * MIB, 20.0 * MIB, 45.0 * MIB),
        ],
    )
    .unwrap();
    assert_eq!(p.driver, "setup");
    assert_eq!(p.hours, Some(30.0));
    assert_eq!(p.hours_soonest, Some(20.0));
    assert_eq!(p.hours_latest, Some(45.0));
    // Not growing at the slow end: no limit in sight there.
    let p = project(0.0, 10.0, &[("time", 1.0, -0.5, 2.0)]).unwrap();
    assert_eq!((p.hours, p.hours_latest), (Some(10.0), None));
    assert!(project(0.0, 1.0, &[]).is_none());
}

/// `n` lives of 60 s (scrapes every 5 s), each refilling +3 MiB over its life from a base that
/// rises `carry` bytes per life.
fn short_lives(n: usize, carry: f64) -> Vec<Vec<Point>> {
    (0..n)
        .map(|k| {
            (0..12)
                .map(|i| {
                    let age = i as f64 * 5.0;
                    let base = 60.0 * MIB + carry * k as f64;
                    (k as f64 * 60.0 + age, base + 3.0 * MIB * (age / 60.0))
                })
                .collect()
        })
        .collect()
}

fn killed_every_minute() -> LeakConfig {
    LeakConfig {
        warmup_secs: 0.0,
        restart_warmup_secs: 20.0,
        bucket_secs: 30.0,
        slope_budget_per_hour: 48.0 * MIB,
        ..cfg()
    }
}

#[test]
fn lives_too_short_to_see_growth_stop_are_judged_between_lives() {
    // Killed every minute, judged from 20 s after each restart: each life refills its buffers
    // (+3 MiB a minute, 180 MiB/h inside a life), which is all anyone can see inside it. Every
    // life reaches the same level at the same age, so between lives nothing grows.
    let v = leak(&short_lives(12, 0.0), &killed_every_minute());
    assert_eq!(v.basis, BETWEEN_LIVES, "{v:?}");
    assert!(!v.leak && !v.high_water && v.undecided.is_none(), "{v:?}");
    // 11 restarted lives; the matched ages are the last 30 s before the shortest ended (55 s).
    assert_eq!(v.points, 11);
    assert_eq!(
        matched_ages(&short_lives(12, 0.0), &killed_every_minute()),
        Some((25.0, 55.0))
    );
    assert_eq!(v.slope_per_hour, 0.0);
    assert_eq!(v.p, 1.0);
}

#[test]
fn growth_that_carries_over_restarts_is_a_leak_between_lives() {
    // The same refill, from a base 1 MiB higher each life: 1 MiB a minute is 60 MiB/h, over the
    // 48 MiB/h budget, in the level and in the floor alike (hand-checked: every pair of lives
    // differs by exactly 1 MiB per 60 s).
    let v = leak(&short_lives(12, MIB), &killed_every_minute());
    assert_eq!(v.basis, BETWEEN_LIVES, "{v:?}");
    assert!(v.leak, "{v:?}");
    assert!((v.slope_per_hour - 60.0 * MIB).abs() < 1e-6 * MIB, "{v:?}");
    assert!(
        (v.floor_slope_per_hour - 60.0 * MIB).abs() < 1e-6 * MIB,
        "{v:?}"
    );
    assert!(v.p < 1e-3, "{v:?}");
    // Half of that is under the budget: significant, not a leak.
    let v = leak(&short_lives(12, 0.5 * MIB), &killed_every_minute());
    assert!(!v.leak && v.p < 1e-3, "{v:?}");
}

#[test]
fn too_few_restarted_lives_stay_undecided() {
    // Warm-ups longer than the lives: nothing to judge inside any of them. Five restarted lives
    // are too few to judge between them (no test could reach p < 0.01); six are enough, and
    // this growth (60 MiB/h, a clean line: the slope test's p is 0) is flagged.
    let c = LeakConfig {
        warmup_secs: 60.0,
        restart_warmup_secs: 60.0,
        ..killed_every_minute()
    };
    let v = leak(&short_lives(MIN_LIVES, MIB), &c);
    assert!(v.undecided.is_some_and(|w| w.contains("too few")), "{v:?}");
    assert!(!v.leak, "{v:?}");
    let v = leak(&short_lives(MIN_LIVES + 1, MIB), &c);
    assert_eq!((v.basis, v.undecided), (BETWEEN_LIVES, None), "{v:?}");
    assert!(v.leak, "{v:?}");
}

#[test]
fn levels_of_lives_too_short_for_their_warm_up_come_from_the_matched_ages() {
    // Lives of 60 s with a warm-up of 90 s: nothing after the warm-ups. Each life burns 1 core
    // for its first 20 s (catching up) and 0.1 after; the matched ages (25..55 s) see only 0.1.
    let c = LeakConfig {
        warmup_secs: 90.0,
        restart_warmup_secs: 90.0,
        ..killed_every_minute()
    };
    let lives: Vec<Vec<Point>> = (0..8)
        .map(|k| {
            (0..12)
                .map(|i| {
                    let age = i as f64 * 5.0;
                    (k as f64 * 60.0 + age, if age < 20.0 { 1.0 } else { 0.1 })
                })
                .collect()
        })
        .collect();
    let l = level(&lives, &c, 0.2);
    assert!(l.undecided.is_none() && !l.over, "{l:?}");
    assert!((l.mean - 0.1).abs() < 1e-12, "{l:?}");
    // Too few lives: undecided, as before.
    let l = level(&lives[..MIN_LIVES], &c, 0.2);
    assert!(l.undecided.is_some(), "{l:?}");
}

#[test]
fn bursty_rates_are_judged_on_window_means_without_a_floor() {
    // CPU in bursts: most scrapes idle, one in three busy, the busy ones growing 0.2 cores an
    // hour. Window medians and minima stay at zero; window means carry the growth.
    let s: Vec<Point> = (0..360)
        .map(|i| {
            let t = i as f64 * 10.0;
            (
                t,
                if i % 3 == 0 {
                    0.05 + 0.6 * t / 3600.0
                } else {
                    0.0
                },
            )
        })
        .collect();
    let c = LeakConfig {
        warmup_secs: 0.0,
        slope_budget_per_hour: 0.05,
        ..cfg()
    };
    assert!(
        !leak(std::slice::from_ref(&s), &c).leak,
        "medians see nothing"
    );
    let v = leak(
        &[s],
        &LeakConfig {
            mean_windows: true,
            ..c
        },
    );
    assert!(v.leak, "{v:?}");
    assert!((v.slope_per_hour - 0.2).abs() < 0.02, "{v:?}");
}

#[test]
fn sign_test_counts_rises_against_falls_within_blocks() {
    let line = |vals: &[f64]| -> Vec<Point> {
        vals.iter()
            .enumerate()
            .map(|(i, v)| (i as f64, *v))
            .collect()
    };
    // 7 rises of 7: 2 × (1/2)^7 = 0.015625. 6 rises and a fall: 2 × 8/128 = 0.125.
    let up7 = line(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    assert!((stats::sign_test(&[up7]).unwrap() - 0.015625).abs() < 1e-12);
    let one_down = line(&[0.0, 1.0, 2.0, 3.0, 2.5, 4.0, 5.0, 6.0]);
    assert!((stats::sign_test(&[one_down]).unwrap() - 0.125).abs() < 1e-12);
    // Ties are left out, and nothing is counted across blocks (a restart's drop is no fall):
    // 3 + 3 rises, 2 ties, p = 2 / 64.
    let a = line(&[0.0, 1.0, 1.0, 2.0, 3.0]);
    let b = line(&[9.0, 9.0, 1.0 + 9.0, 2.0 + 9.0, 3.0 + 9.0]);
    assert!((stats::sign_test(&[a.clone(), b]).unwrap() - 2.0 / 64.0).abs() < 1e-12);
    // Fewer than 6 rises and falls: no test.
    assert_eq!(stats::sign_test(&[a]), None);
}

#[test]
fn a_bent_staircase_leak_is_flagged_by_its_rises() {
    // us-1's RSS in a CI canary run (MiB, every 2 s from the end of a 40 s warm-up), the node
    // keeping 1 MiB per stream setup: up 50 MiB in two minutes, steeper as setups came faster.
    // Around one straight line its residuals are a slow bend, which the autocorrelation-corrected
    // tests read as wander (p = 0.04 with them alone); in 30 windows of 4 s it rose 29 times.
    let mib = [
        37.2, 39.1, 39.2, 39.2, 41.7, 41.7, 41.8, 41.9, 41.9, 41.9, 44.9, 45.1, 45.1, 47.3, 47.4,
        47.4, 49.6, 51.8, 51.9, 51.9, 51.8, 52.1, 54.1, 54.1, 54.3, 56.3, 56.3, 56.4, 56.4, 58.8,
        58.6, 60.7, 63.0, 63.1, 63.1, 63.1, 65.2, 67.6, 67.6, 69.7, 71.7, 71.4, 75.1, 75.1, 77.1,
        78.3, 78.2, 80.3, 80.3, 80.3, 82.7, 82.6, 84.6, 84.7, 84.7, 84.7, 84.7, 84.2, 87.6, 87.6,
    ];
    let s: Vec<Point> = mib
        .iter()
        .enumerate()
        .map(|(i, v)| (40.0 + 2.0 * i as f64, v * MIB))
        .collect();
    let c = LeakConfig {
        warmup_secs: 40.0,
        bucket_secs: 4.0,
        slope_budget_per_hour: 64.0 * MIB,
        ..cfg()
    };
    let v = leak(std::slice::from_ref(&s), &c);
    assert!(v.leak, "{v:?}");
    assert!(v.p < 1e-3, "{v:?}");
    // Across restarts the sign test is not used: the same series split into two lives is judged
    // by the corrected tests alone, which do not reach 0.01 here.
    let v = leak(&[s[..30].to_vec(), s[30..].to_vec()], &c);
    assert!(v.p > 0.01, "{v:?}");
}
