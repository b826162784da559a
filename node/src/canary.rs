//! Canaries: defects planted on purpose, of the kinds that killed the original nodes after days,
//! so that stressnet can prove it finds each one and names it (docs/faults.md). All off by
//! default; the fault set (`PUT /faults`) switches them. Each is bounded by a cap, so a forgotten
//! canary cannot take the machine down, and each is counted (`syncnet_faults_injected_total{kind}`,
//! `syncnet_p2p_tracked_entries{table}`).
//!
//! - memory: KiB retained per stream setup;
//! - fds: one open file descriptor kept per N stream setups;
//! - threads: one parked thread kept per N stream setups;
//! - CPU: every served request burns CPU in proportion to the process's uptime (the original
//!   "CPU grows to 100%": per-request work that grows with how long the node has run).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::faults::FaultKind;
use crate::metrics::{P2pMetrics, Tracked};

/// The memory canary stops growing here.
const LEAK_CAP_BYTES: usize = 4 << 30;
/// The fd canary stops here: well below the usual soft limit of 1024, so the node keeps working.
pub const FD_CAP: usize = 256;
/// The thread canary stops here.
pub const THREAD_CAP: usize = 256;
/// The most CPU one request burns: high enough that a node serving a request or two a second
/// shows a tenth of a core of growth within a short run, low enough that replies still beat the
/// request timeout.
pub const CPU_BURN_CAP: Duration = Duration::from_millis(200);

/// What the canaries are set to; all zero is off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CanarySet {
    pub leak_kib_per_setup: u64,
    pub fd_setups_per_leak: u64,
    pub thread_setups_per_leak: u64,
    pub cpu_us_per_request_per_min: u64,
}

impl From<&crate::faults::Faults> for CanarySet {
    fn from(f: &crate::faults::Faults) -> Self {
        CanarySet {
            leak_kib_per_setup: f.leak_canary_kib_per_setup,
            fd_setups_per_leak: f.fd_canary_setups_per_fd,
            thread_setups_per_leak: f.thread_canary_setups_per_thread,
            cpu_us_per_request_per_min: f.cpu_canary_us_per_request_per_min,
        }
    }
}

pub struct Canaries {
    leak_kib_per_setup: AtomicU64,
    fd_every: AtomicU64,
    thread_every: AtomicU64,
    cpu_us_per_min: AtomicU64,
    /// Stream setups seen while the fd or thread canary was on.
    setups: AtomicU64,
    leaked: Mutex<(Vec<Box<[u8]>>, usize)>,
    fds: Mutex<Vec<std::fs::File>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    started: Instant,
}

impl Canaries {
    pub fn new(started: Instant) -> Canaries {
        Canaries {
            leak_kib_per_setup: AtomicU64::new(0),
            fd_every: AtomicU64::new(0),
            thread_every: AtomicU64::new(0),
            cpu_us_per_min: AtomicU64::new(0),
            setups: AtomicU64::new(0),
            leaked: Mutex::new((Vec::new(), 0)),
            fds: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            started,
        }
    }

    pub fn set(&self, s: CanarySet) {
        self.leak_kib_per_setup
            .store(s.leak_kib_per_setup, Ordering::Relaxed);
        self.fd_every.store(s.fd_setups_per_leak, Ordering::Relaxed);
        self.thread_every
            .store(s.thread_setups_per_leak, Ordering::Relaxed);
        self.cpu_us_per_min
            .store(s.cpu_us_per_request_per_min, Ordering::Relaxed);
    }

    /// A stream setup succeeded: the memory, fd and thread canaries take their share.
    pub fn on_setup(&self, metrics: &P2pMetrics) {
        self.leak_memory(metrics);
        let (fd_every, thread_every) = (
            self.fd_every.load(Ordering::Relaxed),
            self.thread_every.load(Ordering::Relaxed),
        );
        if fd_every == 0 && thread_every == 0 {
            return;
        }
        let n = self.setups.fetch_add(1, Ordering::Relaxed) + 1;
        if fd_every > 0 && n.is_multiple_of(fd_every) {
            self.leak_fd(metrics);
        }
        if thread_every > 0 && n.is_multiple_of(thread_every) {
            self.leak_thread(metrics);
        }
    }

    /// Retains `leak_kib_per_setup` KiB (pages touched, so resident), up to the cap.
    fn leak_memory(&self, metrics: &P2pMetrics) {
        let kib = self.leak_kib_per_setup.load(Ordering::Relaxed) as usize;
        if kib == 0 {
            return;
        }
        let mut leaked = self.leaked.lock().expect("not poisoned");
        let (blocks, held) = &mut *leaked;
        if *held + kib * 1024 <= LEAK_CAP_BYTES {
            blocks.push(leak_canary_alloc(kib * 1024));
            *held += kib * 1024;
            count(
                metrics,
                FaultKind::LeakCanary,
                Tracked::LeakCanaryKib,
                (*held / 1024) as i64,
            );
        }
    }

    fn leak_fd(&self, metrics: &P2pMetrics) {
        let mut fds = self.fds.lock().expect("not poisoned");
        if fds.len() >= FD_CAP {
            return;
        }
        if let Ok(f) = std::fs::File::open("/dev/null") {
            fds.push(f);
            count(
                metrics,
                FaultKind::FdCanary,
                Tracked::FdCanary,
                fds.len() as i64,
            );
        }
    }

    fn leak_thread(&self, metrics: &P2pMetrics) {
        let mut threads = self.threads.lock().expect("not poisoned");
        if threads.len() >= THREAD_CAP {
            return;
        }
        // Parked until the process ends: a thread nobody joins, like a leaked worker.
        let spawned = std::thread::Builder::new()
            .name("canary-thread".into())
            .stack_size(64 * 1024)
            .spawn(|| {
                loop {
                    std::thread::park();
                }
            });
        if let Ok(h) = spawned {
            threads.push(h);
            count(
                metrics,
                FaultKind::ThreadCanary,
                Tracked::ThreadCanary,
                threads.len() as i64,
            );
        }
    }

    /// How long the request about to be served burns CPU (the CPU canary), if at all.
    pub fn cpu_burn(&self, now: Instant) -> Option<Duration> {
        let us = self.cpu_us_per_min.load(Ordering::Relaxed);
        (us > 0).then(|| cpu_burn_for(now.saturating_duration_since(self.started), us))
    }

    /// Held by the fd and thread canaries now (for tests).
    pub fn held(&self) -> (usize, usize) {
        (
            self.fds.lock().expect("not poisoned").len(),
            self.threads.lock().expect("not poisoned").len(),
        )
    }
}

/// The level first, then the count: whoever reads the count sees at least the level it came with
/// (the other way round, a test read two setups with one setup's memory; seen under load).
fn count(metrics: &P2pMetrics, kind: FaultKind, table: Tracked, held: i64) {
    metrics
        .tracked
        .get_or_create(&[("table", table.label())])
        .set(held);
    metrics
        .faults_injected
        .get_or_create(&[("kind", kind.label())])
        .inc();
}

/// The memory canary's allocation site, kept out of line so that heap profiles name it.
#[inline(never)]
fn leak_canary_alloc(bytes: usize) -> Box<[u8]> {
    vec![0xA5u8; bytes].into_boxed_slice()
}

/// `us_per_min` microseconds for every minute of uptime, capped at [`CPU_BURN_CAP`].
pub fn cpu_burn_for(uptime: Duration, us_per_min: u64) -> Duration {
    let us = (uptime.as_secs_f64() / 60.0 * us_per_min as f64).min(CPU_BURN_CAP.as_micros() as f64);
    Duration::from_micros(us as u64)
}

/// Spins for `d` (the CPU canary's work), out of line so that CPU profiles name it. Called on the
/// blocking pool, not on the async runtime.
#[inline(never)]
pub fn cpu_canary_burn(d: Duration) -> u64 {
    let until = Instant::now() + d;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    while Instant::now() < until {
        for _ in 0..1000 {
            x = std::hint::black_box(x.rotate_left(7) ^ 0x2545_F491_4F6C_DD1D);
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> P2pMetrics {
        P2pMetrics::default()
    }

    #[test]
    fn fd_and_thread_canaries_keep_one_per_n_setups_up_to_their_caps() {
        let c = Canaries::new(Instant::now());
        let m = metrics();
        for _ in 0..10 {
            c.on_setup(&m);
        }
        assert_eq!(c.held(), (0, 0), "off by default");
        c.set(CanarySet {
            fd_setups_per_leak: 3,
            thread_setups_per_leak: 5,
            ..CanarySet::default()
        });
        for _ in 0..10 {
            c.on_setup(&m);
        }
        assert_eq!(c.held(), (3, 2));
        c.set(CanarySet {
            fd_setups_per_leak: 1,
            ..CanarySet::default()
        });
        for _ in 0..FD_CAP + 10 {
            c.on_setup(&m);
        }
        assert_eq!(c.held(), (FD_CAP, 2));
    }

    #[test]
    fn cpu_burn_grows_with_uptime_and_is_capped() {
        assert_eq!(
            cpu_burn_for(Duration::from_secs(600), 100),
            Duration::from_micros(1000)
        );
        assert_eq!(cpu_burn_for(Duration::ZERO, 100), Duration::ZERO);
        assert_eq!(
            cpu_burn_for(Duration::from_secs(86_400), 1000),
            CPU_BURN_CAP
        );
        let t0 = Instant::now();
        let c = Canaries::new(t0);
        assert_eq!(c.cpu_burn(t0 + Duration::from_secs(60)), None, "off");
        c.set(CanarySet {
            cpu_us_per_request_per_min: 50,
            ..CanarySet::default()
        });
        assert_eq!(
            c.cpu_burn(t0 + Duration::from_secs(120)),
            Some(Duration::from_micros(100))
        );
    }
}
