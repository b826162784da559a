//! Heap and CPU profiles in pprof format, for the control API (`GET /debug/pprof/heap`,
//! `GET /debug/pprof/profile?seconds=N`): what stressnet takes to name the code behind a leak or a
//! CPU verdict.
//!
//! Heap: jemalloc's own sampling profiler (`prof:true`, one sample per 512 KiB allocated on
//! average, see [`MALLOC_CONF`]), read out by `jemalloc_pprof` as the bytes in use per allocating
//! stack. Sampling costs a counter decrement per allocation and a backtrace
//! per sample; docs/benchmarks.md has the measured overhead. Binaries that do not run jemalloc with
//! profiling (the library's tests) answer [`ProfileError::Unavailable`].
//!
//! CPU: pprof-rs (`setitimer` + SIGPROF at [`CPU_HZ`]), only while a profile is being taken. One at
//! a time per process: the profiler is process-wide. Its sample table (~85 MB of fixed-size
//! buckets) is allocated by the first profile and kept for the life of the process; stressnet
//! takes CPU profiles after its last scrape for that reason.
//!
//! Neither is symbolized here: a profile holds addresses and the mappings of the binaries they
//! fall in (path, build id), and whoever reads it symbolizes from the binary (`go tool pprof`
//! with the binary at hand, stressnet's attribution). Symbolizing in the node cost +215 MiB of
//! RSS for good (the parsed debug info is cached), which would have been read as the node's own.

use std::time::Duration;

/// jemalloc's configuration in every binary that runs it as the global allocator (`syncnode`, the
/// S1 bench): its sampling heap profiler on, one sample per 2^19 bytes allocated on average
/// (jemalloc's default; docs/benchmarks.md has the cost), and `background_thread`, which returns
/// freed pages to the OS on a timer even when the node is idle, so RSS (which the leak verdicts
/// judge) does not hold pages an idle allocator has not got round to purging.
pub const MALLOC_CONF: &[u8] =
    b"prof:true,prof_active:true,lg_prof_sample:19,background_thread:true\0";

/// Sampling frequency of CPU profiles: 99 Hz, off the beat of 100 Hz timers.
pub const CPU_HZ: i32 = 99;
/// The longest CPU profile one request may ask for.
pub const MAX_CPU_SECS: u64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{0}")]
    Unavailable(&'static str),
    #[error("a CPU profile is already being taken")]
    Busy,
    #[error("profile: {0}")]
    Failed(String),
}

/// The bytes in use per allocating stack, as a gzipped pprof profile (`inuse_space`).
pub async fn heap() -> Result<Vec<u8>, ProfileError> {
    let Some(ctl) = jemalloc_pprof::PROF_CTL.as_ref() else {
        return Err(ProfileError::Unavailable(
            "heap profiling is off: this binary does not run jemalloc with prof:true",
        ));
    };
    let mut ctl = ctl.clone().lock_owned().await;
    if !ctl.activated() {
        return Err(ProfileError::Unavailable(
            "heap profiling is not active (prof_active:false)",
        ));
    }
    // A dump writes jemalloc's text profile to a temporary file and reads it back: file I/O, so
    // off the async workers.
    tokio::task::spawn_blocking(move || ctl.dump_pprof())
        .await
        .map_err(|e| ProfileError::Failed(e.to_string()))?
        .map_err(|e| ProfileError::Failed(e.to_string()))
}

/// CPU samples of the whole process over `secs` seconds, as a gzipped pprof profile.
pub async fn cpu(secs: u64) -> Result<Vec<u8>, ProfileError> {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = ONE_AT_A_TIME.try_lock().map_err(|_| ProfileError::Busy)?;
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(CPU_HZ)
        // Unwinding through these from a signal handler can deadlock or crash (pprof-rs's advice).
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| ProfileError::Failed(e.to_string()))?;
    tokio::time::sleep(Duration::from_secs(secs.clamp(1, MAX_CPU_SECS))).await;
    let unresolved = guard
        .report()
        .build_unresolved()
        .map_err(|e| ProfileError::Failed(e.to_string()))?;
    drop(guard);
    // Addresses and mappings only, as jemalloc's heap profiles come: see the module doc.
    let mut p = pprof_util::StackProfile::default();
    for m in mappings::MAPPINGS.iter().flatten() {
        p.push_mapping(m.clone());
    }
    for (frames, count) in unresolved.data {
        // pprof-rs's frames are leaf first, a StackProfile's root first.
        // An unwinder that lost its way reports address 0, which is no frame (and to_pprof
        // subtracts one from each).
        let addrs = frames
            .frames
            .iter()
            .rev()
            .map(|f| f.ip() as usize)
            .filter(|&ip| ip != 0)
            .collect();
        p.push_stack(
            pprof_util::WeightedStack {
                addrs,
                weight: count as f64,
            },
            None,
        );
    }
    Ok(p.to_pprof(("samples", "count"), ("cpu", "nanoseconds"), None))
}
