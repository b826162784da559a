//! `syncnet-operator run`: the controller, with /metrics and /healthz. `syncnet-operator render
//! SPEC`: the objects a spec becomes, as YAML (for review, `kubectl diff`, schema validation).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::runtime::{Controller, Predicate, PredicateConfig, WatchStreamExt};
use kube::runtime::{predicates, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use syncnet_crds::SyncNetwork;
use syncnet_operator::controller::{self, Context, HttpPods, Source};
use syncnet_operator::lease::{Elector, LeaseConfig};
use syncnet_operator::prom::Prometheus;
use syncnet_operator::render::{self, Options};

#[derive(Parser)]
#[command(version, about = "Kubernetes operator for SyncNetwork resources")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct Opts {
    /// syncnode image when a spec names none.
    #[arg(long, env = "SYNCNET_NODE_IMAGE", default_value_t = Options::default().node_image)]
    node_image: String,
    /// Image with `tc` for `kubernetes.latency: tcNetem`, when a spec names none.
    #[arg(long, env = "SYNCNET_NETEM_IMAGE", default_value_t = Options::default().netem_image)]
    netem_image: String,
    #[arg(long, env = "SYNCNET_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
}

impl Opts {
    fn options(&self) -> Options {
        Options {
            node_image: self.node_image.clone(),
            netem_image: self.netem_image.clone(),
            cluster_domain: self.cluster_domain.clone(),
        }
    }
}

/// Leader election: only the replica holding the Lease reconciles.
#[derive(clap::Args)]
struct Election {
    /// Namespace of the Lease (the operator's own, from the downward API). Unset (a run outside
    /// a cluster): no election, so run a single replica.
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    #[arg(long, env = "SYNCNET_LEASE_NAME", default_value = "syncnet-operator")]
    lease_name: String,
    /// This replica's identity in the Lease (default: POD_NAME, else host name and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    #[arg(long, env = "SYNCNET_LEASE_DURATION_MS", default_value_t = 15_000)]
    lease_duration_ms: u64,
    #[arg(
        long,
        env = "SYNCNET_LEASE_RENEW_DEADLINE_MS",
        default_value_t = 10_000
    )]
    lease_renew_deadline_ms: u64,
    #[arg(long, env = "SYNCNET_LEASE_RETRY_MS", default_value_t = 2_000)]
    lease_retry_ms: u64,
}

impl Election {
    fn config(&self) -> Option<LeaseConfig> {
        let namespace = self.lease_namespace.clone().filter(|n| !n.is_empty())?;
        let identity = self
            .identity
            .clone()
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                format!("{}-{}", host.trim(), std::process::id())
            });
        Some(LeaseConfig {
            name: self.lease_name.clone(),
            namespace,
            identity,
            lease_duration: Duration::from_millis(self.lease_duration_ms),
            renew_deadline: Duration::from_millis(self.lease_renew_deadline_ms),
            retry_period: Duration::from_millis(self.lease_retry_ms),
        })
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the controller (in the cluster, or against the current kubeconfig).
    Run {
        #[command(flatten)]
        opts: Opts,
        /// /metrics and /healthz.
        #[arg(long, env = "SYNCNET_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        /// Watch this namespace only (default: all namespaces).
        #[arg(long, env = "SYNCNET_WATCH_NAMESPACE")]
        namespace: Option<String>,
        /// Scrape samples kept per network (split over its nodes).
        #[arg(long, env = "SYNCNET_MAX_SAMPLES", default_value_t = syncnet_operator::state::DEFAULT_MAX_SAMPLES)]
        max_samples: usize,
        /// Scrape samples kept for all networks together (about 1 KiB each; shared evenly by the
        /// networks running at once): size the operator's memory limit for it.
        #[arg(long, env = "SYNCNET_MAX_SAMPLES_TOTAL", default_value_t = syncnet_operator::state::DEFAULT_MAX_SAMPLES_TOTAL)]
        max_samples_total: usize,
        /// Read node metrics from this Prometheus (`http://host:port[/prefix]`) instead of
        /// scraping every pod; it must scrape the node pods itself.
        #[arg(long, env = "SYNCNET_PROMETHEUS_URL")]
        prometheus_url: Option<String>,
        /// The Prometheus label that holds a series' pod name.
        #[arg(long, env = "SYNCNET_PROMETHEUS_POD_LABEL", default_value = "pod")]
        prometheus_pod_label: String,
        /// The Prometheus label that holds a series' namespace.
        #[arg(
            long,
            env = "SYNCNET_PROMETHEUS_NAMESPACE_LABEL",
            default_value = "namespace"
        )]
        prometheus_namespace_label: String,
        #[command(flatten)]
        election: Election,
    },
    /// Print the objects a spec becomes (placeholder keys; the operator makes real ones).
    Render {
        spec: PathBuf,
        #[command(flatten)]
        opts: Opts,
        #[arg(long, default_value = "default")]
        namespace: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        // Pod logs are files to whoever reads them: colour only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Render {
            spec,
            opts,
            namespace,
        } => match render_file(&spec, &namespace, &opts.options()) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::Run {
            opts,
            listen,
            namespace,
            max_samples,
            max_samples_total,
            prometheus_url,
            prometheus_pod_label,
            prometheus_namespace_label,
            election,
        } => {
            let lease = election.config();
            if let Some(Err(e)) = lease.as_ref().map(LeaseConfig::validate) {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            let prom = match prometheus_url
                .filter(|u| !u.is_empty())
                .map(|u| Prometheus::new(&u, &prometheus_pod_label, &prometheus_namespace_label))
                .transpose()
            {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            let result = rt.block_on(run(
                opts.options(),
                listen,
                namespace,
                (max_samples, max_samples_total),
                prom,
                lease,
            ));
            // Dropping the runtime would wait for a judge on the blocking pool to finish.
            rt.shutdown_timeout(Duration::from_secs(1));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn render_file(path: &PathBuf, namespace: &str, opts: &Options) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut sn = SyncNetwork::from_yaml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    render::placeholder_identity(&mut sn, namespace);
    let keys = render::Keys::placeholder();
    let r = render::render(&sn, &keys, opts)?;
    let mut out = render::to_yaml(&r);
    // The NetworkPolicies partition windows would create, for review and schema validation.
    let plans = soak::plan::nodes(&sn.spec, std::path::Path::new("/"));
    let windows = soak::plan::schedule(&sn.spec, &plans, controller::seed(&sn))?;
    let pods = render::pod_names(&sn.name_any(), &sn.spec);
    if sn.spec.kubernetes.partitions == syncnet_crds::PartitionMode::NetworkPolicy {
        for (i, w) in windows.iter().enumerate() {
            if w.action == syncnet_crds::FaultAction::Partition {
                let targets: Vec<String> = w.targets.iter().map(|&n| pods[n].clone()).collect();
                let np = render::network_policy(&sn, i, &targets, &sn.spec.faults[w.fault].regions);
                out.push_str(&render::doc_yaml(&np));
            }
        }
    }
    Ok(out)
}

async fn run(
    options: Options,
    listen: SocketAddr,
    namespace: Option<String>,
    (max_samples, max_samples_total): (usize, usize),
    prom: Option<Prometheus>,
    lease: Option<LeaseConfig>,
) -> anyhow::Result<()> {
    // One signal future for everything: the controller's graceful shutdown, the start-up wait and
    // the deadline below. kube's own `shutdown_on_signal` stops feeding the controller but never
    // finishes while its first LIST keeps failing (it waits for a ready store), so SIGTERM went
    // unheard until a second signal or the kubelet's SIGKILL.
    let shutdown = shutdown_signal().shared();
    let client = Client::try_default().await?;
    let pods = Arc::new(HttpPods(soak::node_http::client()));
    let clock: controller::Clock = Arc::new(jiff::Timestamp::now);
    let mut ctx = Context::new(client.clone(), pods, clock, options);
    ctx.max_samples = max_samples;
    ctx.max_samples_total = max_samples_total;
    ctx.metrics.samples_limit(max_samples_total);
    if let Some(prom) = prom {
        tracing::info!(url = %prom.url, "reading node metrics from Prometheus");
        ctx.source = Source::Prometheus {
            prom,
            http: soak::node_http::client(),
        };
    }
    let ctx = Arc::new(ctx);
    let health = Arc::new(Health::default());
    serve_http(listen, ctx.metrics.clone(), health.clone()).await?;

    // The CRD first: without it every watch fails, and the log said only "serving /metrics".
    tokio::select! {
        r = crd_installed(&client) => r?,
        _ = shutdown.clone() => return Ok(()),
    }
    health.crd.store(true, Ordering::Relaxed);

    // Only the leader works: campaign until elected (or told to stop); losing the lease later
    // stops the controller and the process exits non-zero, so its pod restarts as a candidate.
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
    let mut elector = None;
    match lease {
        Some(cfg) => {
            let (tx, mut rx) = tokio::sync::watch::channel(false);
            health.standby.store(true, Ordering::Relaxed);
            tracing::info!(lease = %cfg.name, namespace = %cfg.namespace, identity = %cfg.identity, "campaigning for the leader lease");
            elector = Some(tokio::spawn(
                Elector::new(client.clone(), cfg).run(tx, shutdown.clone()),
            ));
            tokio::select! {
                r = rx.wait_for(|l| *l) => {
                    if r.is_err() {
                        return Ok(()); // the elector stopped: shutting down
                    }
                }
                _ = shutdown.clone() => return Ok(()),
            }
            health.standby.store(false, Ordering::Relaxed);
            let stopping = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    biased;
                    _ = stopping => {}
                    r = rx.wait_for(|l| !*l) => {
                        if r.is_ok() {
                            let _ = lost_tx.send(());
                        }
                    }
                }
            });
        }
        None => tracing::info!("no POD_NAMESPACE: no leader election (run a single replica)"),
    }
    let lost = lost_rx.map(|r| r.is_ok()).shared();
    let stop = futures::future::select(shutdown.clone(), lost.clone().map(|_| ()).boxed())
        .map(|_| ())
        .boxed()
        .shared();

    let (networks, sets): (Api<controller::Guarded>, Api<StatefulSet>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    // Bounded concurrency (each reconcile fans out to up to 64 pods) and a short debounce, which
    // folds a burst of StatefulSet status updates into one reconcile. Only the operator's own
    // StatefulSets are watched (they carry the network label), not every one in the cluster.
    let config = kube::runtime::controller::Config::default()
        .concurrency(controller::MAX_CONCURRENT_RECONCILES)
        .debounce(Duration::from_millis(500));
    // The primary watch triggers a reconcile only when the spec (generation) or the finalizers
    // change: the operator's own status writes were watch events that woke a reconcile each,
    // back to back. Time-driven work comes from requeues at the scrape interval; the store still
    // sees every update.
    let (store, writer) = reflector::store();
    let trigger = watcher(networks, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation.combine(predicates::finalizers),
            PredicateConfig::default(),
        );
    let controller = Controller::for_stream(trigger, store.clone())
        .owns(
            sets,
            watcher::Config::default().labels(syncnet_operator::render::LABEL_NETWORK),
        )
        .with_config(config);
    let h = health.clone();
    tokio::spawn(async move {
        if store.wait_until_ready().await.is_ok() {
            h.listed.store(true, Ordering::Relaxed);
        }
    });
    let h = health.clone();
    let work = controller
        .graceful_shutdown_on(stop.clone())
        .run(
            controller::reconcile_guarded,
            controller::error_policy_guarded,
            ctx,
        )
        .for_each(move |r| {
            let h = h.clone();
            async move {
                match r {
                    Ok(_) => h.watch_ok(),
                    // A failing watch or list (the apiserver unreachable, an object that does not
                    // decode): the controller retries with backoff; say so once per retry.
                    Err(kube::runtime::controller::Error::QueueError(e)) => {
                        h.watch_failed();
                        tracing::warn!(
                            error = %controller::short(&e.to_string()),
                            "watching SyncNetworks failed"
                        );
                    }
                    // Reconcile failures are logged by the error policy.
                    Err(e) => tracing::debug!(error = %e, "reconcile"),
                }
            }
        });
    tokio::select! {
        () = work => {}
        () = async {
            stop.clone().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!(grace = ?SHUTDOWN_GRACE, "reconciles still running at shutdown; leaving them"),
    }
    if lost.now_or_never() == Some(true) {
        anyhow::bail!("lost the leader lease");
    }
    // Let the elector release the lease, so a successor need not wait out its duration.
    if let Some(e) = elector {
        let _ = tokio::time::timeout(Duration::from_secs(1), e).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// How long in-flight reconciles may finish after SIGTERM (the pod's grace period is 30 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// SIGTERM (the kubelet) or SIGINT (a terminal).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => futures::future::pending::<()>().await,
    }
    tracing::info!("shutting down");
}

/// Waits until the API server serves `syncnet.dev/v1alpha1`; a missing CRD is an error that says
/// how to install it, an unreachable API server is retried.
async fn crd_installed(client: &Client) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(500);
    loop {
        match client
            .list_api_group_resources(syncnet_crds::API_VERSION)
            .await
        {
            Ok(list) if list.resources.iter().any(|r| r.name == "syncnetworks") => {
                tracing::info!("CRD syncnetworks.syncnet.dev found");
                return Ok(());
            }
            Ok(_) => anyhow::bail!(missing_crd()),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                anyhow::bail!(missing_crd());
            }
            Err(e) => {
                tracing::warn!(error = %controller::short(&e.to_string()), retry_in = ?delay, "cannot reach the API server");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn missing_crd() -> String {
    format!(
        "the SyncNetwork CRD (syncnetworks.syncnet.dev, {}) is not installed: \
         kubectl apply --server-side -f charts/syncnet-operator/crds/syncnetwork.yaml",
        syncnet_crds::API_VERSION
    )
}

/// What `/readyz` reports: the CRD is there, the first LIST completed, and the watch has not
/// failed since it last worked.
#[derive(Default)]
struct Health {
    crd: AtomicBool,
    /// Waiting for the leader lease: healthy and ready (a rollout must not wait on a standby).
    standby: AtomicBool,
    listed: AtomicBool,
    failing: AtomicBool,
}

impl Health {
    fn watch_ok(&self) {
        self.failing.store(false, Ordering::Relaxed);
    }
    fn watch_failed(&self) {
        self.failing.store(true, Ordering::Relaxed);
    }
    fn ready(&self) -> Result<(), &'static str> {
        if !self.crd.load(Ordering::Relaxed) {
            Err("the SyncNetwork CRD is not confirmed yet")
        } else if self.standby.load(Ordering::Relaxed) {
            Ok(())
        } else if self.failing.load(Ordering::Relaxed) {
            Err("watching SyncNetworks is failing")
        } else if !self.listed.load(Ordering::Relaxed) {
            Err("the first list of SyncNetworks has not completed")
        } else {
            Ok(())
        }
    }
}

/// `/metrics`, `/healthz` (the process serves: liveness) and `/readyz` (it can do its work).
async fn serve_http(
    listen: SocketAddr,
    metrics: syncnet_operator::metrics::Metrics,
    health: Arc<Health>,
) -> anyhow::Result<()> {
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let h = health.clone();
                async move {
                    match h.ready() {
                        Ok(()) => (axum::http::StatusCode::OK, "ready\n".to_owned()),
                        Err(why) => (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            format!("{why}\n"),
                        ),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.render(),
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(())
}
