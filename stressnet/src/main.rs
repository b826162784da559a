//! `stressnet`: run a SyncNetwork spec as a local network of syncnode processes, judge it, report.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stressnet::judge::Outcome;
use stressnet::{compare, local, plan, report};

#[derive(Parser)]
#[command(
    name = "stressnet",
    version,
    about = "Run a SyncNetwork spec as a local network of syncnode processes with faults; \
             judge sync progress, leaks and storms; write a report",
    after_help = "Exit codes (every subcommand): 0 pass, 1 a verdict failed, 2 bad spec or usage \
                  (a spec that does not validate, a directory that is no run directory), 3 the \
                  run or the cluster call could not be carried out, 4 inconclusive (nothing \
                  failed, some verdict undecided), 130 interrupted (the report is still written)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a spec locally (one syncnode process per replica on 127.0.0.1) and report.
    Run {
        /// The SyncNetwork spec (YAML), e.g. examples/quickstart.yaml.
        spec: PathBuf,
        /// Run directory (must not exist or be empty). Default: runs/<name>-<time>.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The syncnode binary. Default: the spec's node.binary, then next to stressnet, then
        /// $PATH.
        #[arg(long)]
        syncnode: Option<PathBuf>,
        /// Seed of the fault targets' draw (same seed, same schedule).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Leave out every canary fault (leak, storm, fd, thread, cpu): the control run.
        #[arg(long)]
        no_canaries: bool,
        /// Log filter of the nodes (their logs: nodes/<name>/node.log).
        #[arg(long, default_value = "info,libp2p=warn")]
        node_log: String,
        /// No progress bar (a status line every 30 s instead). Implied when stderr is no
        /// terminal.
        #[arg(long)]
        no_progress: bool,
        /// Take no heap or CPU profiles of the nodes (profiles/; verdicts then name no code).
        #[arg(long)]
        no_profiles: bool,
        /// When to keep the nodes' chain stores (nodes/<name>/chain.*) after the report is
        /// written: on-fail keeps them unless the run passed. Logs, metrics, events and
        /// profiles are always kept.
        #[arg(long, value_enum, default_value_t = KeepData::OnFail)]
        keep_data: KeepData,
        /// Start every chart's y-axis at zero (default: each axis spans its data).
        #[arg(long)]
        zero_based: bool,
    },
    /// Validate a spec and print the nodes and the fault schedule it gives; starts nothing.
    Check {
        /// The SyncNetwork spec (YAML).
        spec: PathBuf,
        /// Seed of the fault targets' draw, as for `run`.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Leave out every canary fault, as for `run`.
        #[arg(long)]
        no_canaries: bool,
    },
    /// Judge a run directory again and re-render its report.
    Report {
        /// A run directory (holds run.json), e.g. runs/quickstart-20261204-101500.
        run_dir: PathBuf,
        /// Start every chart's y-axis at zero (default: each axis spans its data).
        #[arg(long)]
        zero_based: bool,
    },
    /// Two runs side by side: verdicts, throughput, catch-up, worst slopes, storms.
    Compare {
        /// The first run directory (its summary.json is read).
        run_a: PathBuf,
        /// The second run directory.
        run_b: PathBuf,
    },
    /// Validate a spec and apply it to the cluster of the current kubeconfig (the operator runs it).
    Apply {
        /// The SyncNetwork spec (YAML).
        spec: PathBuf,
        /// Namespace. Default: the kubeconfig context's (the spec's own is overridden).
        #[arg(long, short)]
        namespace: Option<String>,
    },
    /// A SyncNetwork's status on the cluster: phase, regions, conditions, verdict.
    Status {
        /// The SyncNetwork's name.
        name: String,
        /// Namespace. Default: the kubeconfig context's.
        #[arg(long, short)]
        namespace: Option<String>,
    },
}

/// Output on stdout. `println!` panics when the reader has gone (`stressnet check … | head`); here
/// the rest of the output is dropped instead and the exit code is still the verdict's.
fn say_fmt(args: std::fmt::Arguments, newline: bool) {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    static GONE: AtomicBool = AtomicBool::new(false);
    if GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let r = out
        .write_fmt(args)
        .and_then(|_| {
            if newline {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|_| out.flush());
    if r.is_err() {
        // A closed pipe or a full disk: nothing more can be said there.
        GONE.store(true, Ordering::Relaxed);
    }
}

macro_rules! say {
    ($($t:tt)*) => { say_fmt(format_args!($($t)*), false) };
}

macro_rules! sayln {
    ($($t:tt)*) => { say_fmt(format_args!($($t)*), true) };
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Run {
            spec,
            out,
            syncnode,
            seed,
            no_canaries,
            node_log,
            no_progress,
            no_profiles,
            keep_data,
            zero_based,
        } => run(
            local::RunOptions {
                spec,
                out,
                syncnode,
                seed,
                no_canaries,
                node_log,
                progress: !no_progress && std::io::stderr().is_terminal(),
                profiles: !no_profiles,
            },
            keep_data,
            report::ChartOptions { zero_based },
        ),
        Cmd::Check {
            spec,
            seed,
            no_canaries,
        } => check(&spec, seed, no_canaries),
        Cmd::Report {
            run_dir,
            zero_based,
        } => {
            if let Err(e) = stressnet::run_dir::read_info(&run_dir) {
                return fail(2, e);
            }
            match report::finish(&run_dir, &report::ChartOptions { zero_based }) {
                Ok(s) => verdict(&s, &run_dir),
                Err(e) => fail(3, e),
            }
        }
        Cmd::Compare { run_a, run_b } => {
            for dir in [&run_a, &run_b] {
                if let Err(e) = stressnet::run_dir::read_info(dir) {
                    return fail(2, e);
                }
            }
            let (a, b) = match (compare::load(&run_a), compare::load(&run_b)) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => return fail(2, e),
            };
            let rows = compare::rows(&a, &b);
            say!(
                "{}",
                compare::table(
                    &run_a.display().to_string(),
                    &run_b.display().to_string(),
                    &rows
                )
            );
            ExitCode::SUCCESS
        }
        Cmd::Apply { spec, namespace } => {
            let sn = match local::load_spec(&spec, false) {
                Ok(s) => s,
                Err(e) => return fail(2, e),
            };
            cluster(async move {
                match stressnet::cluster::apply(&sn, namespace.as_deref()).await {
                    Ok(at) => {
                        sayln!(
                            "applied {at}; follow with `stressnet status {}`",
                            sn.metadata.name.as_deref().unwrap_or("")
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(3, e),
                }
            })
        }
        Cmd::Status { name, namespace } => cluster(async move {
            match stressnet::cluster::get(&name, namespace.as_deref()).await {
                Ok(sn) => {
                    let s = sn.status.unwrap_or_default();
                    say!("{}", stressnet::cluster::format_status(&name, &s));
                    // Like `run`: 1 when a verdict failed, 4 when some could not be decided.
                    match s.verdict.as_deref() {
                        Some(v) if v.starts_with("inconclusive") => ExitCode::from(4),
                        Some(v) if v != "pass" => ExitCode::from(1),
                        _ => ExitCode::SUCCESS,
                    }
                }
                Err(e) => fail(3, e),
            }
        }),
    }
}

fn cluster(cmd: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(cmd)
}

fn fail(code: u8, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::from(code)
}

fn check(spec: &Path, seed: u64, no_canaries: bool) -> ExitCode {
    let sn = match local::load_spec(spec, no_canaries) {
        Ok(s) => s,
        Err(e) => return fail(2, e),
    };
    let nodes = plan::nodes(&sn.spec, Path::new("RUN_DIR"));
    let windows = match plan::schedule(&sn.spec, &nodes, seed) {
        Ok(w) => w,
        Err(e) => return fail(2, e),
    };
    sayln!(
        "{}: valid; {} nodes in {} regions, {} s soak, {} fault windows",
        spec.display(),
        nodes.len(),
        sn.spec.regions.len(),
        sn.spec.soak.duration_secs,
        windows.len()
    );
    // Leak verdicts need MIN_POINTS windows after the warm-up; fewer, and every one of them
    // would come out undecided (INCONCLUSIVE) however the nodes behave.
    let soak = &sn.spec.soak;
    let judged = soak.duration_secs.saturating_sub(soak.warmup_secs);
    let bucket = sn.spec.verdicts.leak_bucket_secs.max(1);
    let windows_left = judged / bucket;
    if (windows_left as usize) < stressnet::verdict::MIN_POINTS {
        eprintln!(
            "warning: spec.soak: {judged} s are left after the {} s warm-up: {windows_left} leak \
             windows of {bucket} s (spec.verdicts.leakBucketSecs), fewer than the {} a leak \
             verdict needs; every leak verdict will be undecided (INCONCLUSIVE). Lengthen \
             durationSecs, shorten warmupSecs or leakBucketSecs.",
            soak.warmup_secs,
            stressnet::verdict::MIN_POINTS
        );
    }
    for n in &nodes {
        sayln!(
            "  node {}{}",
            n.name,
            if n.producer { " (producer)" } else { "" }
        );
    }
    for w in &windows {
        let targets: Vec<&str> = w.targets.iter().map(|i| nodes[*i].name.as_str()).collect();
        sayln!(
            "  {:>5}s..{:<5}s {} ({}) on {}",
            w.start,
            w.end,
            w.name,
            w.action.label(),
            targets.join(",")
        );
    }
    ExitCode::SUCCESS
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum KeepData {
    Never,
    OnFail,
    Always,
}

fn run(opts: local::RunOptions, keep_data: KeepData, charts: report::ChartOptions) -> ExitCode {
    // Everything that can be wrong with the spec or the setup fails here, before any process.
    let sn = match local::load_spec(&opts.spec, opts.no_canaries) {
        Ok(s) => s,
        Err(e) => return fail(2, e),
    };
    let syncnode =
        match local::find_syncnode(opts.syncnode.as_deref(), sn.spec.node.binary.as_deref()) {
            Ok(p) => p,
            Err(e) => return fail(2, e),
        };
    let name = sn.metadata.name.clone().unwrap_or_default();
    let dir = opts.out.clone().unwrap_or_else(|| {
        let ts = jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S").to_string();
        PathBuf::from("runs").join(format!("{name}-{ts}"))
    });
    let prepared = match local::prepare(&sn, &dir, opts.seed) {
        Ok(p) => p,
        Err(e) => return fail(2, e),
    };
    eprintln!(
        "stressnet: {name}: {} nodes, {} s, {} fault windows; syncnode {}; run dir {}",
        prepared.nodes.len(),
        sn.spec.soak.duration_secs,
        prepared.windows.len(),
        syncnode.display(),
        prepared.dir.display()
    );
    // One thread: children are spawned from it, so PR_SET_PDEATHSIG (tied to the spawning
    // thread) lasts as long as the runner.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(3, e),
    };
    let dir = prepared.dir.clone();
    let end = rt.block_on(local::run(prepared, &syncnode, &opts));
    drop(rt);
    let interrupted = match end {
        Ok(e) => e.interrupted,
        Err(e) => {
            eprintln!("error: {e:#}");
            // Whatever ran is still judged and reported below; the exit code says it failed.
            let _ = report::finish(&dir, &charts);
            return ExitCode::from(3);
        }
    };
    match report::finish(&dir, &charts) {
        Ok(s) => {
            let code = verdict(&s, &dir);
            let passed = s.outcome == Outcome::Pass && !interrupted;
            if keep_data == KeepData::Never || (keep_data == KeepData::OnFail && passed) {
                match local::remove_node_data(&dir) {
                    Ok(freed) => eprintln!(
                        "stressnet: removed the nodes' chain stores ({:.1} MB; --keep-data {})",
                        freed as f64 / 1e6,
                        if keep_data == KeepData::Never {
                            "never"
                        } else {
                            "on-fail, the run passed"
                        }
                    ),
                    Err(e) => eprintln!("warning: removing the nodes' chain stores: {e:#}"),
                }
            }
            if interrupted {
                ExitCode::from(130)
            } else {
                code
            }
        }
        Err(e) => fail(3, e),
    }
}

fn verdict(s: &report::RunSummary, dir: &Path) -> ExitCode {
    sayln!(
        "{}: {} nodes, {:.0} s, head {}, {:.2} blocks/s, worst catch-up {}",
        s.name,
        s.nodes,
        s.ran_secs,
        s.head,
        s.blocks_per_sec,
        s.worst_catch_up_secs
            .map_or("–".into(), |x| format!("{x:.1} s"))
    );
    sayln!("report: {}", dir.join(stressnet::run_dir::REPORT).display());
    match s.outcome {
        Outcome::Pass => {
            sayln!("verdict: PASS");
            ExitCode::SUCCESS
        }
        Outcome::Fail => {
            sayln!("verdict: FAIL {}", s.failed.join(" "));
            ExitCode::from(1)
        }
        Outcome::Inconclusive => {
            sayln!(
                "verdict: INCONCLUSIVE not judged: {}",
                s.undecided.join(" ")
            );
            ExitCode::from(4)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn every_argument_of_every_subcommand_has_help() {
        let cli = Cli::command();
        let mut missing = vec![];
        for sub in cli.get_subcommands() {
            assert!(sub.get_about().is_some(), "{} has no about", sub.get_name());
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{} {id}", sub.get_name()));
                }
            }
        }
        assert!(missing.is_empty(), "no help: {missing:?}");
    }
}
