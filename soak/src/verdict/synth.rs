//! Synthetic resource series with known answers, for the verdict benchmark
//! (`cargo bench -p syncnet-stressnet --bench verdicts`) and the verdict tests: healthy shapes a
//! real node shows (white noise, slow AR(1) wander, spikes, high-water staircases, sawtooth caches,
//! warm-up plateaus) and leaks (by time, by stream setup), with restarts. Deterministic: a seed
//! gives the same series on every machine.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::Point;

pub const MIB: f64 = 1024.0 * 1024.0;

/// One healthy component of a series (values in MiB; the generator scales to bytes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Noise {
    /// Independent Gaussian noise per scrape, standard deviation in MiB.
    White { sd: f64 },
    /// AR(1) wander with the given marginal standard deviation (MiB) and time constant (s):
    /// allocator and cache fluctuations that stay for minutes.
    Ar1 { sd: f64, tau_secs: f64 },
    /// A single-scrape spike of `mib` with probability `p` per scrape (a GC pause, a burst).
    Spikes { p: f64, mib: f64 },
    /// A high-water mark: catch-up events arrive at random (Poisson, one per `every_secs` on
    /// average, and one as the process starts: it catches up first), each needing Exp(`mean_mib`)
    /// of buffers over the base; RSS keeps the largest need so far (the allocator does not give
    /// it back). It steps and stops: the steps come
    /// ever more rarely (records of random draws), the way a healthy node's RSS rises after its
    /// first catch-ups and then stays.
    HighWater { every_secs: f64, mean_mib: f64 },
    /// `steps` steps of `mib` each at uniformly random times: a staircase that does not slow down
    /// (the hardest healthy shape: over a short run it is growth).
    Steps { steps: usize, mib: f64 },
    /// A cache that fills by `mib` over `period_secs` and is emptied, again and again.
    Sawtooth { mib: f64, period_secs: f64 },
    /// Caches filling after start: +`mib` with time constant `tau_secs`.
    Plateau { mib: f64, tau_secs: f64 },
}

/// A planted leak.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Leak {
    None,
    /// Linear in time, MiB per hour.
    PerHour(f64),
    /// `kib` per stream setup, setups arriving as a Poisson process at `per_min`.
    PerSetup {
        kib: f64,
        per_min: f64,
    },
}

/// How a series is made.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    pub secs: f64,
    pub scrape_secs: f64,
    pub noise: Vec<Noise>,
    pub leak: Leak,
    /// Restarts at random (Poisson, one per `restart_every_secs` on average; `None`: never).
    /// A restart starts the process over: base level, empty high-water mark, the leak's growth
    /// gone, the warm-up plateau again.
    pub restart_every_secs: Option<f64>,
}

/// Base RSS of a fresh process.
const BASE_MIB: f64 = 60.0;

fn gauss(rng: &mut StdRng) -> f64 {
    // Box–Muller.
    let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

fn exp(rng: &mut StdRng, mean: f64) -> f64 {
    -mean * rng.random::<f64>().max(1e-300).ln()
}

/// The series of one node, split into incarnations (one per process start) as `judge` splits a
/// scraped node; values in bytes.
pub fn generate(shape: &Shape, seed: u64) -> Vec<Vec<Point>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let dt = shape.scrape_secs;
    let n = (shape.secs / dt).floor() as usize;
    // Restart times.
    let mut restarts = vec![];
    if let Some(every) = shape.restart_every_secs {
        let mut t = exp(&mut rng, every);
        while t < shape.secs {
            restarts.push(t);
            t += exp(&mut rng, every);
        }
    }
    // Staircase step times (uniform over the run).
    let mut steps: Vec<(f64, f64)> = vec![];
    for c in &shape.noise {
        if let Noise::Steps { steps: k, mib } = *c {
            steps.extend((0..k).map(|_| (rng.random::<f64>() * shape.secs, mib)));
        }
    }
    let mut out: Vec<Vec<Point>> = vec![vec![]];
    let mut ar = vec![0.0; shape.noise.len()];
    for (i, c) in shape.noise.iter().enumerate() {
        if let Noise::Ar1 { sd, .. } = *c {
            ar[i] = sd * gauss(&mut rng);
        }
    }
    let mut life_start = 0.0;
    let mut next_restart = 0;
    let mut high_water = 0.0;
    // A process catches up as it starts: its first catch-up event is at once.
    let mut next_event: Vec<f64> = shape
        .noise
        .iter()
        .map(|c| match *c {
            Noise::HighWater { .. } => 0.0,
            _ => f64::INFINITY,
        })
        .collect();
    let mut setups_leaked = 0.0;
    for k in 0..n {
        let t = k as f64 * dt;
        if next_restart < restarts.len() && t >= restarts[next_restart] {
            next_restart += 1;
            life_start = t;
            high_water = 0.0;
            setups_leaked = 0.0;
            for (e, c) in next_event.iter_mut().zip(&shape.noise) {
                if matches!(c, Noise::HighWater { .. }) {
                    *e = t;
                }
            }
            steps.retain(|s| s.0 > t);
            out.push(vec![]);
        }
        let age = t - life_start;
        let mut v = BASE_MIB;
        for (i, c) in shape.noise.iter().enumerate() {
            v += match *c {
                Noise::White { sd } => sd * gauss(&mut rng),
                Noise::Ar1 { sd, tau_secs } => {
                    let phi = (-dt / tau_secs).exp();
                    ar[i] = phi * ar[i] + sd * (1.0 - phi * phi).sqrt() * gauss(&mut rng);
                    ar[i]
                }
                Noise::Spikes { p, mib } => {
                    if rng.random::<f64>() < p {
                        mib
                    } else {
                        0.0
                    }
                }
                Noise::HighWater {
                    every_secs,
                    mean_mib,
                } => {
                    while next_event[i] <= t {
                        high_water = f64::max(high_water, exp(&mut rng, mean_mib));
                        next_event[i] += exp(&mut rng, every_secs);
                    }
                    high_water
                }
                Noise::Steps { .. } => steps
                    .iter()
                    .filter(|s| s.0 <= t && s.0 > life_start)
                    .map(|s| s.1)
                    .sum(),
                Noise::Sawtooth { mib, period_secs } => mib * ((age % period_secs) / period_secs),
                Noise::Plateau { mib, tau_secs } => mib * (1.0 - (-age / tau_secs).exp()),
            };
        }
        v += match shape.leak {
            Leak::None => 0.0,
            Leak::PerHour(r) => r * age / 3600.0,
            Leak::PerSetup { kib, per_min } => {
                // Setups in this scrape interval: Poisson(per_min * dt / 60), by counting
                // exponential gaps.
                let mean = per_min * dt / 60.0;
                let mut count = 0.0;
                let mut acc = exp(&mut rng, 1.0);
                while acc < mean {
                    count += 1.0;
                    acc += exp(&mut rng, 1.0);
                }
                setups_leaked += count * kib / 1024.0;
                setups_leaked
            }
        };
        out.last_mut().expect("one life").push((t, v * MIB));
    }
    out.retain(|l| !l.is_empty());
    out
}

/// The noise of the acceptance cases: white 1 MiB + AR(1) 2 MiB (5 min) + 1% spikes of 20 MiB.
pub fn acceptance_noise() -> Vec<Noise> {
    vec![
        Noise::White { sd: 1.0 },
        Noise::Ar1 {
            sd: 2.0,
            tau_secs: 300.0,
        },
        Noise::Spikes { p: 0.01, mib: 20.0 },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(noise: Vec<Noise>, leak: Leak) -> Shape {
        Shape {
            secs: 3600.0,
            scrape_secs: 10.0,
            noise,
            leak,
            restart_every_secs: None,
        }
    }

    fn sd(v: &[f64]) -> f64 {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    }

    #[test]
    fn generators_have_the_stated_size_and_are_deterministic() {
        let white = shape(vec![Noise::White { sd: 2.0 }], Leak::None);
        let a = generate(&white, 1);
        assert_eq!(a, generate(&white, 1));
        assert_ne!(a, generate(&white, 2));
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].len(), 360);
        let v: Vec<f64> = a[0].iter().map(|p| p.1 / MIB).collect();
        assert!((sd(&v) - 2.0).abs() < 0.25, "{}", sd(&v));
        // AR(1): the stated marginal spread, and neighbours alike (phi = exp(-10/300) = 0.967).
        let ar = shape(
            vec![Noise::Ar1 {
                sd: 2.0,
                tau_secs: 300.0,
            }],
            Leak::None,
        );
        let mut all = vec![];
        let mut lag1 = 0.0;
        let mut var = 0.0;
        for seed in 0..20 {
            let v: Vec<f64> = generate(&ar, seed)[0]
                .iter()
                .map(|p| p.1 / MIB - BASE_MIB)
                .collect();
            lag1 += v.windows(2).map(|w| w[0] * w[1]).sum::<f64>();
            var += v[..v.len() - 1].iter().map(|x| x * x).sum::<f64>();
            all.extend(v);
        }
        assert!((sd(&all) - 2.0).abs() < 0.3, "{}", sd(&all));
        assert!((lag1 / var - 0.967).abs() < 0.03, "{}", lag1 / var);
    }

    #[test]
    fn leaks_grow_at_their_rate_and_restarts_start_over() {
        let l = generate(&shape(vec![], Leak::PerHour(8.0)), 1);
        let last = l[0].last().unwrap();
        assert!((last.1 / MIB - BASE_MIB - 8.0 * last.0 / 3600.0).abs() < 1e-9);
        // 16 KiB per setup at 20 a minute: 18.75 MiB/h on average.
        let s = generate(
            &shape(
                vec![],
                Leak::PerSetup {
                    kib: 16.0,
                    per_min: 20.0,
                },
            ),
            1,
        );
        let grown = s[0].last().unwrap().1 / MIB - BASE_MIB;
        assert!((grown - 18.75).abs() < 2.0, "{grown}");
        let r = generate(
            &Shape {
                restart_every_secs: Some(600.0),
                ..shape(vec![], Leak::PerHour(8.0))
            },
            3,
        );
        assert!(r.len() > 2, "{}", r.len());
        for life in &r {
            // Every incarnation starts at the base and grows from there.
            assert!((life[0].1 / MIB - BASE_MIB).abs() < 1e-9);
            let (t0, t1) = (life[0].0, life.last().unwrap().0);
            let grown = life.last().unwrap().1 / MIB - BASE_MIB;
            assert!((grown - 8.0 * (t1 - t0) / 3600.0).abs() < 1e-9);
        }
    }

    #[test]
    fn a_high_water_mark_rises_early_and_then_rarely() {
        let hw = shape(
            vec![Noise::HighWater {
                every_secs: 120.0,
                mean_mib: 3.0,
            }],
            Leak::None,
        );
        let (mut first, mut second) = (0.0, 0.0);
        for seed in 0..50 {
            let s = &generate(&hw, seed)[0];
            let at = |t: f64| s[(t / 10.0) as usize].1 / MIB;
            first += at(1790.0) - at(0.0);
            second += at(3590.0) - at(1790.0);
        }
        // Records of 30 draws: ~H(15) = 3.3 in the first half-hour, ~ln 2 = 0.7 in the second.
        assert!(first > 3.0 * second, "{first} vs {second}");
    }
}
