//! The local backend: a spec becomes a run directory and one `syncnode` process per replica on
//! 127.0.0.1. This is the thin IO driver around the sans-IO parts: [`plan`](crate::plan) decides
//! the configs and the schedule, [`exec`](crate::exec) the steps, [`judge`](crate::judge) and
//! [`report`](crate::report) the verdicts; here processes are started and killed, `/metrics` is
//! scraped and `/faults` is put.
//!
//! Children never outlive the runner: each runs in its own process group (a terminal's Ctrl-C
//! reaches only the runner, which then stops them in order) and, on Linux, with
//! `PR_SET_PDEATHSIG = SIGKILL`, so even a SIGKILL of the runner takes them down.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use syncnet_crds::SyncNetwork;
use syncnet_proto::config::NetworkConfig;
use syncnet_proto::config::{ADDRS_FILE, BoundAddrs};
use syncnet_proto::faults::Faults;
use syncnet_proto::keys;
use tokio::process::{Child, Command};

use crate::attribution::{self, Kind, Taken};
use crate::exec::{Executor, Step};
use crate::node_http::{self, Http};
use crate::plan::{self, NETWORK_FILE, NodePlan, PRODUCER_KEY};
use crate::run_dir::{self, Event, EventKind, NodeInfo, RunInfo};
use crate::scrape::{self, Sample};

pub struct RunOptions {
    pub spec: PathBuf,
    /// The run directory (created; must not exist or be empty). Default `runs/<name>-<time>`.
    pub out: Option<PathBuf>,
    /// The `syncnode` binary; default: the spec's `node.binary`, then next to this executable,
    /// then `$PATH`.
    pub syncnode: Option<PathBuf>,
    /// Seeds the fault targets' draw: the same seed gives the same schedule.
    pub seed: u64,
    /// Leaves out every canary fault (the control run for S4).
    pub no_canaries: bool,
    /// Log filter for the nodes (their logs go to `nodes/<name>/node.log`).
    pub node_log: String,
    /// Draw a progress bar (a terminal); otherwise print a status line every 30 s.
    pub progress: bool,
    /// Take heap and CPU profiles of the nodes (`profiles/`, [`attribution`]).
    pub profiles: bool,
}

/// How a run ended.
#[derive(Debug)]
pub struct RunEnd {
    pub dir: PathBuf,
    pub interrupted: bool,
}

/// Reads and validates a spec; the error names the file and the field.
pub fn load_spec(path: &Path, no_canaries: bool) -> Result<SyncNetwork, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut sn = SyncNetwork::from_yaml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if no_canaries {
        sn.spec.faults.retain(|f| !f.action.is_canary());
    }
    Ok(sn)
}

/// The network id of a spec: its name, cut to the 32 characters a network id may have.
pub fn network_id(name: &str) -> String {
    name.chars()
        .take(32)
        .collect::<String>()
        .trim_end_matches('-')
        .to_owned()
}

/// Finds the `syncnode` binary: `--syncnode`, the spec's `node.binary`, next to this executable
/// (`cargo build` puts both in one directory), then `$PATH`.
pub fn find_syncnode(
    explicit: Option<&Path>,
    spec_binary: Option<&str>,
) -> Result<PathBuf, String> {
    let check = |p: PathBuf, from: &str| {
        if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{from}: {} is not a file", p.display()))
        }
    };
    if let Some(p) = explicit {
        return check(p.to_owned(), "--syncnode");
    }
    if let Some(b) = spec_binary {
        return check(PathBuf::from(b), "spec.node.binary");
    }
    // Integration tests run from target/<profile>/deps, hence the parent too.
    let beside: Vec<PathBuf> = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| vec![d.to_owned(), d.join("..")]))
        .unwrap_or_default();
    let path = std::env::var_os("PATH").unwrap_or_default();
    beside
        .into_iter()
        .chain(std::env::split_paths(&path))
        .map(|d| d.join("syncnode"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "no syncnode binary next to stressnet or on $PATH: build both with \
             `cargo build --release`, or pass --syncnode PATH"
                .into()
        })
}

/// Creates the run directory with everything the nodes need: the network config and producer key,
/// one `node.yaml` per replica, the resolved spec and the schedule. Nothing is started.
pub fn prepare(sn: &SyncNetwork, dir: &Path, seed: u64) -> anyhow::Result<Prepared> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "{}: the run directory exists and is not empty",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let dir = dir.canonicalize()?;
    let name = sn.metadata.name.clone().unwrap_or_default();
    let key = keys::generate();
    keys::write(&dir.join(PRODUCER_KEY), &key, "producer", false)?;
    let net = NetworkConfig::new(
        &network_id(&name),
        syncnet_proto::util::now_ms(),
        keys::public_key(&key),
    )
    .map_err(anyhow::Error::msg)?;
    std::fs::write(dir.join(NETWORK_FILE), serde_yaml::to_string(&net)?)?;
    let nodes = plan::nodes(&sn.spec, &dir);
    let windows = plan::schedule(&sn.spec, &nodes, seed).map_err(anyhow::Error::msg)?;
    for n in &nodes {
        std::fs::create_dir_all(&n.config.data_dir)?;
        std::fs::write(
            n.config.data_dir.join("node.yaml"),
            serde_yaml::to_string(&n.config)?,
        )?;
    }
    let info = RunInfo {
        name,
        seed,
        spec: sn.spec.clone(),
        nodes: nodes
            .iter()
            .map(|n| NodeInfo {
                name: n.name.clone(),
                region: n.region.clone(),
                producer: n.producer,
            })
            .collect(),
        schedule: windows.clone(),
        started_unix_ms: syncnet_proto::util::now_ms(),
    };
    run_dir::write_info(&dir, &info)?;
    Ok(Prepared {
        dir,
        spec: sn.clone(),
        nodes,
        windows,
    })
}

pub struct Prepared {
    pub dir: PathBuf,
    pub spec: SyncNetwork,
    pub nodes: Vec<NodePlan>,
    pub windows: Vec<plan::FaultWindow>,
}

struct Proc {
    plan: NodePlan,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    metrics: Option<SocketAddr>,
    last_start: Instant,
    /// Processes started so far (a profile records which one it came from).
    starts: u32,
    /// Latest scrape, for the progress line.
    last: Option<BTreeMap<String, f64>>,
}

/// Where events go: `events.jsonl`, and the terminal.
struct Journal {
    file: BufWriter<File>,
    start: Instant,
    bar: ProgressBar,
}

impl Journal {
    fn log(&mut self, kind: EventKind, node: Option<&str>, detail: impl Into<String>) {
        let e = Event {
            t: self.start.elapsed().as_secs_f64(),
            kind,
            node: node.map(str::to_owned),
            detail: detail.into(),
        };
        let line = format!(
            "[{:>6.1}s] {:<13} {}{}",
            e.t,
            e.kind.label(),
            node.map(|n| format!("{n}: ")).unwrap_or_default(),
            e.detail
        );
        self.say(&line);
        let _ = serde_json::to_writer(&mut self.file, &e);
        let _ = self.file.write_all(b"\n");
        let _ = self.file.flush();
    }

    fn say(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

/// Runs a prepared network for the spec's soak duration, or until SIGINT/SIGTERM/SIGHUP. Every
/// child is stopped before this returns, whatever happened.
pub async fn run(p: Prepared, syncnode: &Path, opts: &RunOptions) -> anyhow::Result<RunEnd> {
    let duration = p.spec.spec.soak.duration_secs as f64;
    let scrape_every = p.spec.spec.soak.scrape_interval_secs.max(1) as f64;
    let bar = if opts.progress {
        let b = ProgressBar::new(p.spec.spec.soak.duration_secs);
        b.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len}s {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let mut journal = Journal {
        file: BufWriter::new(File::create(p.dir.join(run_dir::EVENTS))?),
        start: Instant::now(),
        bar: bar.clone(),
    };
    let mut procs: Vec<Proc> = p
        .nodes
        .iter()
        .map(|n| Proc {
            config: n.config.data_dir.join("node.yaml"),
            log: n.config.data_dir.join("node.log"),
            plan: n.clone(),
            child: None,
            metrics: None,
            last_start: Instant::now(),
            starts: 0,
            last: None,
        })
        .collect();
    let mut stop = Box::pin(stop_signal());
    let result = tokio::select! {
                r = drive(&p, syncnode, opts, &mut procs, &mut journal, duration, scrape_every) => r.map(|()| false),
        _ = &mut stop => {
            journal.log(EventKind::Interrupted, None, "signal: stopping the nodes");
            Ok(true)
        }
    };
    stop_all(&mut procs, &mut journal).await;
    bar.finish_and_clear();
    let interrupted = result?;
    Ok(RunEnd {
        dir: p.dir,
        interrupted,
    })
}

/// Starts the network and runs the soak to its end; a signal cuts it short in the caller.
async fn drive(
    p: &Prepared,
    syncnode: &Path,
    opts: &RunOptions,
    procs: &mut [Proc],
    journal: &mut Journal,
    duration: f64,
    scrape_every: f64,
) -> anyhow::Result<()> {
    start_network(p, syncnode, opts, procs, journal).await?;
    // The clock of the schedule and the samples starts when every node is up.
    journal.start = Instant::now();
    journal.log(
        EventKind::Started,
        None,
        format!("{} nodes up; soak {duration:.0}s", procs.len()),
    );
    let client = node_http::client();
    let mut exec = Executor::new(&p.spec.spec.faults, p.windows.clone(), procs.len());
    let mut metrics = BufWriter::new(File::create(p.dir.join(run_dir::METRICS))?);
    let mut next_scrape = 0.0;
    let mut last_status = 0.0;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let profiles = Profiles::new(&p.dir, duration, p.spec.spec.soak.warmup_secs as f64)?;
    let mut warm_profiled = false;
    let mut pending: Vec<tokio::task::JoinHandle<Vec<(String, String)>>> = vec![];
    loop {
        tick.tick().await;
        let t = journal.start.elapsed().as_secs_f64();
        if t >= duration {
            journal.log(EventKind::Finished, None, "soak complete");
            if !opts.profiles {
                return Ok(());
            }
            // Profiles of the end state come after the last scrape, so taking them moves no
            // sample: heap first, then CPU (the schedule's fault sets still apply).
            journal.log(
                EventKind::Profiled,
                None,
                format!(
                    "heap, then {} s CPU profiles of every running node (run end)",
                    profiles.cpu_secs
                ),
            );
            let mut failed: Vec<(String, String)> = vec![];
            for h in pending {
                failed.extend(h.await.unwrap_or_default());
            }
            failed.extend(profiles.take(&client, procs, Kind::HeapEnd, t).await);
            failed.extend(profiles.take(&client, procs, Kind::CpuEnd, t).await);
            for (node, e) in failed {
                journal.log(EventKind::ProfileFailed, Some(&node), e);
            }
            return Ok(());
        }
        if opts.profiles && !warm_profiled && t >= profiles.warmup_at {
            warm_profiled = true;
            journal.log(
                EventKind::Profiled,
                None,
                "heap profiles of every running node (warm-up end)",
            );
            let warm = profiles.take(&client, procs, Kind::HeapWarmup, t);
            pending.push(tokio::spawn(warm));
        }
        // A node that exited on its own crashed: note it and start it again (at most every 5 s).
        for pr in procs.iter_mut() {
            let Some(child) = pr.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                pr.child = None;
                pr.last = None;
                journal.log(
                    EventKind::Crashed,
                    Some(&pr.plan.name),
                    format!("{status}; see {}", pr.log.display()),
                );
            }
        }
        for (i, pr) in procs.iter_mut().enumerate() {
            if pr.child.is_none()
                && !exec.is_down(i)
                && pr.last_start.elapsed() >= Duration::from_secs(5)
            {
                spawn(pr, syncnode, &opts.node_log)?;
                exec.restarted(i);
                journal.log(EventKind::Restarted, Some(&pr.plan.name), "after a crash");
            }
        }
        for step in exec.poll(t) {
            match step {
                Step::Began(w) => {
                    let w = &exec.windows()[w];
                    let names = target_names(procs, &w.targets);
                    journal.log(
                        EventKind::FaultBegan,
                        None,
                        format!("{} ({}) on {names}", w.name, w.action.label()),
                    );
                }
                Step::Ended(w) => {
                    let w = &exec.windows()[w];
                    journal.log(EventKind::FaultEnded, None, w.name.clone());
                }
                Step::Kill(i) => {
                    let pr = &mut procs[i];
                    if let Some(mut c) = pr.child.take() {
                        let _ = c.start_kill();
                        let _ = c.wait().await;
                    }
                    pr.last = None;
                    journal.log(EventKind::Killed, Some(&pr.plan.name), "SIGKILL");
                }
                Step::Restart(i) => {
                    let pr = &mut procs[i];
                    if pr.child.is_none() {
                        spawn(pr, syncnode, &opts.node_log)?;
                    }
                    journal.log(EventKind::Restarted, Some(&pr.plan.name), "scheduled");
                }
                Step::Apply(i, faults) => {
                    let pr = &procs[i];
                    let ok = match pr.metrics {
                        Some(addr) if pr.child.is_some() => {
                            node_http::put_faults(&client, addr, &faults, None).await
                        }
                        _ => Err("not running".to_owned()),
                    };
                    match ok {
                        Ok(()) => journal.log(
                            EventKind::FaultApplied,
                            Some(&pr.plan.name),
                            describe(&faults),
                        ),
                        Err(e) => {
                            exec.apply_failed(i);
                            // A node restarted moments ago may not listen yet: the next poll
                            // retries quietly; later failures are worth a line.
                            if pr.last_start.elapsed() > STARTUP_GRACE {
                                journal.log(EventKind::ApplyFailed, Some(&pr.plan.name), e);
                            }
                        }
                    }
                }
            }
        }
        if t >= next_scrape {
            next_scrape += scrape_every;
            // Catch up without a burst if the loop fell behind.
            if next_scrape < t {
                next_scrape = t + scrape_every;
            }
            scrape_all(&client, procs, t, &mut metrics).await?;
        }
        let status = status_line(procs, &exec);
        journal.bar.set_position(t as u64);
        journal.bar.set_message(status.clone());
        if journal.bar.is_hidden() && t - last_status >= 30.0 {
            last_status = t;
            eprintln!("[{t:>6.1}s] {status}");
        }
    }
}

/// The profiles a run takes of its nodes (see [`attribution`]): heap at the end of the warm-up,
/// then, after the last scrape, heap and CPU of the end state (the first CPU profile leaves the
/// node with pprof-rs's sample table, ~85 MB, which must not show in the judged series). Files go
/// to `profiles/`, and `profiles/index.json` is rewritten as each arrives, so an interrupted run
/// keeps what it has.
struct Profiles {
    dir: PathBuf,
    taken: Arc<std::sync::Mutex<Vec<Taken>>>,
    /// When the warm-up heap profile is taken: a little before the warm-up ends, so the memory a
    /// node spends symbolizing its first profile (debug line tables, cached) lands in the
    /// warm-up, not in the judged series.
    warmup_at: f64,
    /// How long the CPU profiles sample.
    cpu_secs: u64,
}

impl Profiles {
    fn new(run: &Path, duration: f64, warmup: f64) -> anyhow::Result<Profiles> {
        let dir = run.join(attribution::DIR);
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        // A tenth of the run, 2 to 10 s: ~200–1,000 samples of a busy node.
        let cpu_secs = (duration / 10.0).clamp(2.0, 10.0) as u64;
        Ok(Profiles {
            dir,
            taken: Arc::default(),
            warmup_at: (warmup - (warmup / 4.0).min(10.0)).min(duration),
            cpu_secs,
        })
    }

    /// Asks every running node for a profile of `kind` at once; the future writes the files and
    /// the index and yields the failures (node, why).
    fn take(
        &self,
        client: &Http,
        procs: &[Proc],
        kind: Kind,
        t: f64,
    ) -> impl std::future::Future<Output = Vec<(String, String)>> + Send + 'static {
        let targets: Vec<(String, SocketAddr, u32)> = procs
            .iter()
            .filter(|pr| pr.child.is_some())
            .filter_map(|pr| {
                Some((
                    pr.plan.name.clone(),
                    pr.metrics?,
                    pr.starts.saturating_sub(1),
                ))
            })
            .collect();
        let (client, dir, taken, cpu_secs) = (
            client.clone(),
            self.dir.clone(),
            self.taken.clone(),
            self.cpu_secs,
        );
        async move {
            let (path, wait) = match kind {
                // The profile's seconds, then building it: a node's first one reads its
                // mappings' build ids, and with every node profiled at once on a busy machine
                // (crc3 of docs/benchmarks.md: a build alongside) 3 s more timed all of them out.
                Kind::CpuEnd => (
                    format!("/debug/pprof/profile?seconds={cpu_secs}"),
                    Duration::from_secs(cpu_secs + 30),
                ),
                // A first dump symbolizes from cold caches.
                Kind::HeapWarmup | Kind::HeapEnd => {
                    ("/debug/pprof/heap".to_owned(), Duration::from_secs(30))
                }
            };
            let gets = targets.into_iter().map(|(node, addr, life)| {
                let (client, dir, path) = (&client, &dir, &path);
                async move {
                    let file = kind.file_name(&node);
                    let got = match node_http::profile(client, addr, path, wait, None).await {
                        Ok(bytes) => tokio::fs::write(dir.join(&file), &bytes)
                            .await
                            .map_err(|e| format!("{file}: {e}")),
                        Err(e) => Err(e),
                    };
                    Taken {
                        node,
                        kind,
                        t,
                        life,
                        file: got.is_ok().then_some(file),
                        error: got.err(),
                    }
                }
            });
            let got = futures::future::join_all(gets).await;
            let failed = got
                .iter()
                .filter_map(|g| Some((g.node.clone(), g.error.clone()?)))
                .collect();
            let mut all = taken.lock().unwrap_or_else(|e| e.into_inner());
            all.extend(got);
            if let Ok(json) = serde_json::to_vec_pretty(&*all) {
                let _ = std::fs::write(dir.join("index.json"), json);
            }
            failed
        }
    }
}

/// Starts the producer, then a second bootnode in another region, then everyone else with both
/// as bootnodes. Each node first binds port 0 and reports what it got in `syncnode.addrs.json`;
/// its `node.yaml` is then pinned to those ports so a restart comes back at the same address.
async fn start_network(
    p: &Prepared,
    syncnode: &Path,
    opts: &RunOptions,
    procs: &mut [Proc],
    journal: &mut Journal,
) -> anyhow::Result<()> {
    let producer = procs.iter().position(|pr| pr.plan.producer).unwrap_or(0);
    let second = procs
        .iter()
        .position(|pr| pr.plan.region != procs[producer].plan.region)
        .or_else(|| (0..procs.len()).find(|i| *i != producer));
    let mut boots = vec![];
    for i in std::iter::once(producer).chain(second) {
        set_bootnodes(&mut procs[i], &boots)?;
        spawn(&mut procs[i], syncnode, &opts.node_log)?;
        let addrs = wait_addrs(&mut procs[i]).await?;
        boots.push(addrs.p2p[0].clone());
        pin_ports(&mut procs[i], &addrs)?;
    }
    let rest: Vec<usize> = (0..procs.len())
        .filter(|i| *i != producer && Some(*i) != second)
        .collect();
    for &i in &rest {
        set_bootnodes(&mut procs[i], &boots)?;
        spawn(&mut procs[i], syncnode, &opts.node_log)?;
    }
    for &i in &rest {
        let addrs = wait_addrs(&mut procs[i]).await?;
        pin_ports(&mut procs[i], &addrs)?;
    }
    journal.say(&format!(
        "{} nodes started; run directory {}",
        procs.len(),
        p.dir.display()
    ));
    Ok(())
}

fn set_bootnodes(pr: &mut Proc, boots: &[String]) -> anyhow::Result<()> {
    pr.plan.config.p2p.bootnodes = boots
        .iter()
        .map(|b| b.parse())
        .collect::<Result<_, _>>()
        .context("a bootnode address")?;
    std::fs::write(&pr.config, serde_yaml::to_string(&pr.plan.config)?)?;
    Ok(())
}

fn pin_ports(pr: &mut Proc, addrs: &BoundAddrs) -> anyhow::Result<()> {
    pr.metrics = Some(addrs.metrics);
    pr.plan.config.metrics.listen = addrs.metrics;
    pr.plan.config.p2p.listen = addrs
        .p2p
        .iter()
        .map(|a| {
            // Drop the /p2p/<id> suffix: a listen address carries none.
            let a = a.split("/p2p/").next().unwrap_or(a);
            a.parse()
        })
        .collect::<Result<_, _>>()
        .context("a bound p2p address")?;
    std::fs::write(&pr.config, serde_yaml::to_string(&pr.plan.config)?)?;
    Ok(())
}

/// Starts the node's process. The addresses file of an earlier process is removed first (a
/// SIGKILLed node leaves it behind).
fn spawn(pr: &mut Proc, syncnode: &Path, log_filter: &str) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(pr.plan.config.data_dir.join(ADDRS_FILE));
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&pr.log)
        .with_context(|| pr.log.display().to_string())?;
    let mut cmd = Command::new(syncnode);
    cmd.arg("run")
        .arg("--config")
        .arg(&pr.config)
        .args(["--log-filter", log_filter])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .process_group(0);
    die_with_parent(&mut cmd);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {} for {}", syncnode.display(), pr.plan.name))?;
    pr.child = Some(child);
    pr.last_start = Instant::now();
    pr.starts += 1;
    Ok(())
}

#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec only async-signal-safe calls: prctl, getppid, _exit.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_: &mut Command) {}

/// Waits (bounded) for the node to write its addresses; a node that exits first is an error
/// quoting the end of its log.
async fn wait_addrs(pr: &mut Proc) -> anyhow::Result<BoundAddrs> {
    let path = pr.plan.config.data_dir.join(ADDRS_FILE);
    let pid = pr.child.as_ref().and_then(Child::id);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(a) = serde_json::from_str::<BoundAddrs>(&text)
            && Some(a.pid) == pid
            && !a.p2p.is_empty()
        {
            return Ok(a);
        }
        if let Some(c) = pr.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            bail!(
                "{} exited during start-up ({status}):\n{}",
                pr.plan.name,
                tail(&pr.log, 20)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not come up within 60 s:\n{}",
                pr.plan.name,
                tail(&pr.log, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// SIGTERM to every child, up to 10 s for them to exit, then SIGKILL.
async fn stop_all(procs: &mut [Proc], journal: &mut Journal) {
    for pr in procs.iter() {
        if let Some(pid) = pr.child.as_ref().and_then(Child::id) {
            // SAFETY: kill(2) on a pid we spawned and have not reaped.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for pr in procs.iter_mut() {
        if let Some(mut c) = pr.child.take()
            && tokio::time::timeout_at(deadline, c.wait()).await.is_err()
        {
            journal.log(
                EventKind::Killed,
                Some(&pr.plan.name),
                "did not stop on SIGTERM within 10 s",
            );
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }
}

/// SIGINT (Ctrl-C), SIGTERM or SIGHUP.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = hup.recv() => {}
    }
}

/// How long a (re)started node may take to answer HTTP before failures are reported.
const STARTUP_GRACE: Duration = Duration::from_secs(10);

/// One scrape round: every running node at once, each sample stamped with the round's time.
async fn scrape_all(
    client: &Http,
    procs: &mut [Proc],
    t: f64,
    out: &mut BufWriter<File>,
) -> anyhow::Result<()> {
    let gets = procs.iter().map(|pr| async move {
        match (pr.metrics, &pr.child) {
            (Some(addr), Some(_)) => {
                node_http::request(client, hyper::Method::GET, addr, "/metrics", vec![], None)
                    .await
                    .ok()
                    .filter(|(code, _)| *code == 200)
                    .map(|(_, body)| scrape::parse(&body))
            }
            _ => None,
        }
    });
    let results = futures::future::join_all(gets).await;
    for (pr, values) in procs.iter_mut().zip(results) {
        pr.last = values.clone();
        if let Some(values) = values {
            scrape::write_jsonl(
                out,
                &Sample {
                    t,
                    node: pr.plan.name.clone(),
                    values,
                },
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

fn target_names(procs: &[Proc], targets: &[usize]) -> String {
    let names: Vec<&str> = targets
        .iter()
        .map(|i| procs[*i].plan.name.as_str())
        .collect();
    names.join(",")
}

/// The non-default parts of a fault set, for the event log.
fn describe(f: &Faults) -> String {
    if *f == Faults::default() {
        return "cleared".into();
    }
    let v = serde_json::to_value(f).unwrap_or_default();
    let d = serde_json::to_value(Faults::default()).unwrap_or_default();
    let mut parts = vec![];
    if let (Some(v), Some(d)) = (v.as_object(), d.as_object()) {
        for (k, x) in v {
            if d.get(k) != Some(x) {
                parts.push(format!("{k}={x}"));
            }
        }
    }
    parts.join(" ")
}

/// `head 120 min 117 lag 3 | up 11/12 | faults: partition | ALERT eu-2 down`
fn status_line(procs: &[Proc], exec: &Executor) -> String {
    let h = |pr: &Proc| {
        pr.last
            .as_ref()
            .and_then(|v| v.get("syncnet_chain_head_height").copied())
    };
    let heights: Vec<f64> = procs.iter().filter_map(h).collect();
    let head = heights.iter().copied().fold(f64::NAN, f64::max);
    let min = heights.iter().copied().fold(f64::NAN, f64::min);
    let up = procs.iter().filter(|p| p.last.is_some()).count();
    let mut s = if heights.is_empty() {
        "waiting for the first scrape".to_owned()
    } else {
        format!(
            "head {head:.0} min {min:.0} lag {:.0} | up {up}/{}",
            head - min,
            procs.len()
        )
    };
    let mut active: Vec<&str> = exec.active().map(|w| w.name.as_str()).collect();
    active.dedup();
    if !active.is_empty() {
        s.push_str(&format!(" | faults: {}", active.join(",")));
    }
    let unexpected: Vec<&str> = procs
        .iter()
        .enumerate()
        .filter(|(i, p)| !exec.is_down(*i) && p.child.is_none())
        .map(|(_, p)| p.plan.name.as_str())
        .collect();
    if !unexpected.is_empty() {
        s.push_str(&format!(" | ALERT down: {}", unexpected.join(",")));
    }
    s
}

/// What a node keeps of its chain in its data directory: the store (`chain.redb`) and its
/// segment files (`chain.segments/`); docs/config.md, "Files a running node writes".
const STORE_FILES: [&str; 2] = ["chain.redb", "chain.segments"];

/// Removes every node's chain store from a finished run (`--keep-data`); returns the bytes freed.
/// Logs, configs and everything the report reads stay.
pub fn remove_node_data(run_dir: &Path) -> anyhow::Result<u64> {
    let nodes = run_dir.join("nodes");
    let mut freed = 0;
    for e in std::fs::read_dir(&nodes).with_context(|| nodes.display().to_string())? {
        let dir = e?.path();
        for name in STORE_FILES {
            let p = dir.join(name);
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                freed += dir_bytes(&p);
                std::fs::remove_dir_all(&p).with_context(|| p.display().to_string())?;
            } else {
                freed += meta.len();
                std::fs::remove_file(&p).with_context(|| p.display().to_string())?;
            }
        }
    }
    Ok(freed)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
