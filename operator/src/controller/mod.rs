//! The reconciler: a thin kube driver around [`render`](crate::render) and
//! [`state`](crate::state). One reconcile of a SyncNetwork:
//!
//! 1. validate the spec (the same `validate` stressnet runs); a bad one is `Failed`, nothing applied;
//! 2. make the keys Secret once (producer key, bootnode identity, control token);
//! 3. server-side apply the ConfigMap, the headless Services and the StatefulSets (owner refs);
//! 4. list the pods; start the soak clock once every pod is ready;
//! 5. run the fault steps due (kill = delete the pod; partition = NetworkPolicy or the node's own
//!    fault; the rest through each pod's control API);
//! 6. scrape every pod's /metrics (or ask Prometheus for the same series) into the bounded
//!    window and run the shared verdicts;
//! 7. patch the status subresource; publish events for phase changes and faults.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::DeserializeGuard;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, Event as Finalizer};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use soak::exec::Step;
use syncnet_crds::{FaultAction, PartitionMode, Phase, SyncNetwork, SyncNetworkStatus};
use syncnet_proto::faults::Faults;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::prom::Prometheus;
use crate::render::{self, Keys, Options};
use crate::state::{self, NetState, PodView, StatusInput};

mod keys;
mod steps;

use keys::ensure_keys;
pub use keys::seed;
use steps::*;

pub const FIELD_MANAGER: &str = "syncnet-operator";
pub const FINALIZER: &str = "syncnet.dev/cleanup";
/// Pods scraped or sent faults at once.
const CONCURRENCY: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    #[error("secret {0}: {1}")]
    Secret(String, String),
    /// The verdicts' task died; the network's windows start over on the next reconcile.
    #[error("judging the samples: {0}")]
    Judge(String),
}

impl Error {
    /// A closed label for `syncnet_operator_reconcile_failures_total{reason}`.
    pub fn reason(&self) -> &'static str {
        fn kube(e: &kube::Error) -> &'static str {
            match e {
                kube::Error::Api(s) if s.code == 409 => "conflict",
                kube::Error::Api(s) if s.code == 404 => "not_found",
                kube::Error::Api(s) if s.code == 403 || s.code == 401 => "forbidden",
                kube::Error::Api(s) if s.code == 422 || s.code == 400 => "invalid",
                kube::Error::Api(_) => "api_error",
                kube::Error::SerdeError(_) => "decode",
                _ => "transport",
            }
        }
        match self {
            Error::Kube(e) => kube(e),
            Error::Finalizer(f) => match &**f {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.reason(),
                finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => kube(e),
                _ => "finalizer",
            },
            Error::Secret(..) => "secret",
            Error::Judge(_) => "judge",
        }
    }
}

/// Retry delay after `failures` reconcile failures in a row of one object: 5 s doubling to 5 min,
/// spread by ±10% per object so networks that failed together do not retry together.
pub fn retry_delay(failures: u32, uid: &str) -> Duration {
    const BASE: f64 = 5.0;
    const MAX: f64 = 300.0;
    let exp = BASE * 2f64.powi(failures.saturating_sub(1).min(16) as i32);
    let h = blake3::hash(format!("{uid}/{failures}").as_bytes());
    let unit = f64::from(u16::from_le_bytes([h.as_bytes()[0], h.as_bytes()[1]])) / 65535.0;
    Duration::from_secs_f64(exp.min(MAX) * (0.9 + 0.2 * unit))
}

/// An error message cut to 400 characters: an API error can quote a whole response.
pub fn short(msg: &str) -> String {
    match msg.char_indices().nth(400) {
        Some((i, _)) => format!("{}...", &msg[..i]),
        None => msg.to_owned(),
    }
}

/// Reconciles running at once (each scrapes up to 64 pods at a time).
pub const MAX_CONCURRENT_RECONCILES: u16 = 8;

/// Objects with failures in a row remembered at most (the rest start over at the base delay).
const MAX_TRACKED_FAILURES: usize = 4096;

/// A pod's HTTP endpoints (`/metrics`, `PUT /faults`); a trait so tests answer without sockets.
pub trait PodIo: Send + Sync {
    fn scrape(&self, addr: SocketAddr) -> BoxFuture<'_, Result<String, String>>;
    fn put_faults<'a>(
        &'a self,
        addr: SocketAddr,
        faults: &'a Faults,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// The real one: stressnet's node HTTP client, straight to pod IPs.
pub struct HttpPods(pub soak::node_http::Http);

impl PodIo for HttpPods {
    fn scrape(&self, addr: SocketAddr) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(soak::node_http::scrape(&self.0, addr))
    }
    fn put_faults<'a>(
        &'a self,
        addr: SocketAddr,
        faults: &'a Faults,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(soak::node_http::put_faults(
            &self.0,
            addr,
            faults,
            Some(token),
        ))
    }
}

pub type Clock = Arc<dyn Fn() -> jiff::Timestamp + Send + Sync>;

/// Where the kept series come from.
pub enum Source {
    /// Every pod's `/metrics`, through [`PodIo`].
    Pods,
    /// One instant query per network and reconcile to a Prometheus that scrapes the pods.
    Prometheus {
        prom: Prometheus,
        http: soak::node_http::Http,
    },
}

/// A Prometheus answer for a whole network is larger and slower than one pod's scrape.
const PROM_TIMEOUT: Duration = Duration::from_secs(10);
const PROM_MAX_BODY: usize = 64 << 20;

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub pods: Arc<dyn PodIo>,
    pub source: Source,
    pub clock: Clock,
    pub options: Options,
    pub max_samples: usize,
    /// All networks' samples together at most (shared evenly by the running ones).
    pub max_samples_total: usize,
    pub metrics: Metrics,
    /// Per network (uid): its schedule and samples.
    pub networks: Mutex<HashMap<String, NetState>>,
    /// Per object (uid): reconcile failures in a row, for the retry backoff.
    pub failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, pods: Arc<dyn PodIo>, clock: Clock, options: Options) -> Context {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            pods,
            source: Source::Pods,
            clock,
            options,
            max_samples: state::DEFAULT_MAX_SAMPLES,
            max_samples_total: state::DEFAULT_MAX_SAMPLES_TOTAL,
            metrics: Metrics::default(),
            networks: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }
}

pub async fn reconcile(sn: Arc<SyncNetwork>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let uid = sn.uid().unwrap_or_default();
    let ns = sn.namespace().unwrap_or_else(|| "default".into());
    let api: Api<SyncNetwork> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer::finalizer(&api, FINALIZER, sn, |event| async {
        match event {
            Finalizer::Apply(sn) => apply(&sn, &ctx).await,
            Finalizer::Cleanup(sn) => cleanup(&sn, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .reconciled(result.is_ok(), started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.failures.lock().expect("not poisoned").remove(&uid);
    }
    result
}

/// A failed reconcile: counted by reason, logged once (its message cut short: an API error can
/// carry a whole response), and retried with a per-object exponential backoff.
pub fn error_policy(sn: Arc<SyncNetwork>, err: &Error, ctx: Arc<Context>) -> Action {
    retry(&sn.uid().unwrap_or_default(), &sn.name_any(), err, &ctx)
}

/// The objects the controller watches: a stored SyncNetwork the types cannot hold (an integer
/// beyond its Rust type, stored before the CRD bounded it) decodes to its metadata and the error
/// instead of failing the whole LIST, which stopped every network.
pub type Guarded = DeserializeGuard<SyncNetwork>;

/// The controller's entry point: an object that decodes is reconciled; one that does not is
/// reported on itself (a warning event and a `Failed` status naming the error) and otherwise left
/// alone, and no other network notices.
pub async fn reconcile_guarded(obj: Arc<Guarded>, ctx: Arc<Context>) -> Result<Action, Error> {
    match &obj.0 {
        Ok(sn) => reconcile(Arc::new(sn.clone()), ctx).await,
        Err(bad) => {
            let started = std::time::Instant::now();
            let result = invalid_object(&obj, bad, &ctx).await;
            ctx.metrics
                .reconciled(result.is_ok(), started.elapsed().as_secs_f64());
            result
        }
    }
}

pub fn error_policy_guarded(obj: Arc<Guarded>, err: &Error, ctx: Arc<Context>) -> Action {
    let meta = obj.meta();
    retry(
        meta.uid.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
        err,
        &ctx,
    )
}

async fn invalid_object(
    obj: &Guarded,
    bad: &InvalidObject,
    ctx: &Context,
) -> Result<Action, Error> {
    let meta = &bad.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let ns = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let api: Api<Guarded> = Api::namespaced(ctx.client.clone(), &ns);
    if meta.deletion_timestamp.is_some() {
        // Deleting it must not hang on our finalizer: lift its partitions, then let it go.
        lift_partitions(&name, &ns, ctx).await?;
        let finalizers = meta.finalizers.clone().unwrap_or_default();
        if finalizers.iter().any(|f| f == FINALIZER) {
            let keep: Vec<&String> = finalizers.iter().filter(|f| *f != FINALIZER).collect();
            let patch =
                json!({"metadata": {"resourceVersion": meta.resource_version, "finalizers": keep}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        return Ok(Action::await_change());
    }
    let why = format!("the stored object does not decode: {}", short(&bad.error));
    let generation = meta.generation.unwrap_or(0);
    publish_to(
        ctx,
        &obj.object_ref(&()),
        EventType::Warning,
        "InvalidObject",
        why.clone(),
    )
    .await;
    warn!(network = %name, namespace = %ns, "{why}");
    let status = json!({"status": {
        "phase": "Failed",
        "observedGeneration": generation,
        "conditions": [{
            "type": "Ready", "status": "False", "reason": "InvalidObject", "message": why,
            "observedGeneration": generation, "lastTransitionTime": now_time(ctx),
        }],
    }});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(Action::await_change())
}

fn retry(uid: &str, name: &str, err: &Error, ctx: &Context) -> Action {
    let uid = uid.to_owned();
    let n = {
        let mut f = ctx.failures.lock().expect("not poisoned");
        if !f.contains_key(&uid) && f.len() >= MAX_TRACKED_FAILURES {
            f.clear();
        }
        let n = f.entry(uid.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    ctx.metrics.reconcile_failed(err.reason());
    let delay = retry_delay(n, &uid);
    let msg = short(&err.to_string());
    warn!(
        network = %name,
        reason = err.reason(),
        failures = n,
        retry_in = ?delay,
        "reconcile failed: {msg}"
    );
    Action::requeue(delay)
}

async fn publish(ctx: &Context, sn: &SyncNetwork, type_: EventType, reason: &str, note: String) {
    publish_to(ctx, &sn.object_ref(&()), type_, reason, note).await
}

/// An event on any object (one that did not decode has only its reference).
async fn publish_to(
    ctx: &Context,
    to: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, to).await {
        warn!(error = %e, reason, "publishing an event failed");
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

async fn ssa<K>(api: &Api<K>, obj: &K) -> Result<(), Error>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(&name, &apply_params(), &Patch::Apply(obj))
        .await?;
    Ok(())
}

async fn patch_status(
    sn: &SyncNetwork,
    ctx: &Context,
    status: &SyncNetworkStatus,
) -> Result<(), Error> {
    let ns = sn.namespace().unwrap_or_else(|| "default".into());
    let api: Api<SyncNetwork> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch_status(
        &sn.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    Ok(())
}

fn now_time(ctx: &Context) -> Time {
    Time((ctx.clock)())
}

/// A spec that cannot run: `Failed` with the reason in status and a warning event (once), and
/// nothing more is made for it.
async fn failed(sn: &SyncNetwork, ctx: &Context, why: String) -> Result<Action, Error> {
    let spec = &sn.spec;
    let previous = sn.status.as_ref();
    if previous.map(|p| p.phase) != Some(Phase::Failed) {
        publish(ctx, sn, EventType::Warning, "InvalidSpec", why.clone()).await;
    }
    let status = state::status(
        None,
        &StatusInput {
            spec,
            generation: sn.metadata.generation.unwrap_or(0),
            phase: Phase::Failed,
            start_time: None,
            t: 0.0,
            pods: &vec![None; spec.total_nodes().min(syncnet_crds::MAX_NODES) as usize],
            summary: None,
            message: Some(why),
            previous,
            now: now_time(ctx),
        },
    );
    if previous != Some(&status) {
        patch_status(sn, ctx, &status).await?;
    }
    Ok(Action::await_change())
}

async fn apply(sn: &SyncNetwork, ctx: &Context) -> Result<Action, Error> {
    let net = sn.name_any();
    let ns = sn.namespace().unwrap_or_else(|| "default".into());
    let generation = sn.metadata.generation.unwrap_or(0);
    let previous = sn.status.as_ref();
    let spec = &sn.spec;
    // Checked before anything is made for it: a name that cannot prefix a Service would fail
    // only after the keys Secret exists, with no status written.
    let invalid = syncnet_crds::validate_network_name(&net)
        .map_err(|e| format!("metadata.name: {e}"))
        .and_then(|()| spec.validate().map_err(|e| e.to_string()))
        .err();
    if let Some(why) = invalid {
        return failed(sn, ctx, why).await;
    }

    let (keys, token) = ensure_keys(sn, ctx).await?;
    let rendered = match render::render(sn, &keys, &ctx.options) {
        Ok(r) => r,
        // A spec the checks let through but that cannot be rendered still gets a status.
        Err(why) => return failed(sn, ctx, why).await,
    };
    ssa(
        &Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns),
        &rendered.config_map,
    )
    .await?;
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    for s in &rendered.services {
        ssa(&services, s).await?;
    }
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    for s in &rendered.stateful_sets {
        ssa(&sets, s).await?;
    }

    // Pods in stressnet's node order.
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let listed = pod_api
        .list(&ListParams::default().labels(&format!("{}={net}", render::LABEL_NETWORK)))
        .await?;
    let by_name: HashMap<String, &Pod> = listed.items.iter().map(|p| (p.name_any(), p)).collect();
    let names = render::pod_names(&net, spec);
    let pods: Vec<Option<PodView>> = names
        .iter()
        .map(|n| {
            by_name.get(n).map(|p| PodView {
                ready: pod_ready(p),
            })
        })
        .collect();
    let addrs: Vec<Option<SocketAddr>> = names
        .iter()
        .map(|n| {
            by_name
                .get(n)
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .and_then(|p| p.status.as_ref()?.pod_ip.as_ref()?.parse().ok())
                .map(|ip| SocketAddr::new(ip, render::METRICS_PORT as u16))
        })
        .collect();

    let now = (ctx.clock)();
    let phase_before = previous.map_or(Phase::Pending, |p| p.phase);
    let mut start_time = previous.and_then(|p| p.start_time.clone());
    let all_ready = pods.iter().all(|p| p.as_ref().is_some_and(|p| p.ready));
    if start_time.is_none() && all_ready {
        start_time = Some(now.to_string());
        publish(
            ctx,
            sn,
            EventType::Normal,
            "SoakStarted",
            format!(
                "all {} pods ready; the soak runs {} s",
                names.len(),
                spec.soak.duration_secs
            ),
        )
        .await;
    }
    let start: Option<jiff::Timestamp> = start_time.as_deref().and_then(|s| s.parse().ok());
    let t = start.map_or(0.0, |s| {
        (now - s).total(jiff::Unit::Second).unwrap_or(0.0).max(0.0)
    });
    let phase = match start {
        None => Phase::Pending,
        Some(_) if phase_before == Phase::Completed || t >= spec.soak.duration_secs as f64 => {
            Phase::Completed
        }
        Some(_) => Phase::Running,
    };

    let uid = sn.uid().unwrap_or_default();
    let mut steps = vec![];
    let mut summary = None;
    let mut next = Duration::from_secs(spec.soak.scrape_interval_secs);
    if start.is_some() && phase_before != Phase::Completed {
        // The schedule: made when the soak starts, remade (and resumed) when the spec changes.
        let fresh = {
            let nets = ctx.networks.lock().expect("not poisoned");
            nets.get(&uid).is_none_or(|s| s.generation != generation)
        };
        if fresh {
            let plans = soak::plan::nodes(spec, std::path::Path::new("/"));
            let windows = soak::plan::schedule(spec, &plans, seed(sn)).unwrap_or_default();
            let st = NetState::new(spec, generation, windows, t, ctx.max_samples);
            ctx.networks
                .lock()
                .expect("not poisoned")
                .insert(uid.clone(), st);
        }
        // Memory: this network's share of the operator-wide cap, as many as run now.
        {
            let mut nets = ctx.networks.lock().expect("not poisoned");
            let budget = state::sample_budget(ctx.max_samples, ctx.max_samples_total, nets.len());
            if let Some(st) = nets.get_mut(&uid) {
                st.set_budget(budget);
            }
        }
        if phase == Phase::Running {
            steps = ctx
                .networks
                .lock()
                .expect("not poisoned")
                .get_mut(&uid)
                .expect("inserted")
                .exec
                .poll(t);
        }
    }
    run_steps(sn, ctx, &steps, &names, &addrs, &token).await?;
    if spec.kubernetes.partitions == PartitionMode::NetworkPolicy {
        let windows = windows_of(ctx, &uid);
        let open_at = (phase == Phase::Running).then_some(t);
        sync_policies(sn, ctx, &windows, open_at, &names).await?;
    }

    if start.is_some() && phase_before != Phase::Completed {
        let scraped = gather(ctx, &ns, &names, &addrs, t, now).await;
        // Judging a 1,000-node window takes a few hundred ms (operator `judge` bench): off the
        // async workers, and without the map's lock, so other networks reconcile meanwhile. The
        // controller never reconciles one object twice at once, so nothing else wants this state
        // while it is out of the map.
        let mut st = ctx
            .networks
            .lock()
            .expect("not poisoned")
            .remove(&uid)
            .expect("made above");
        let owned = spec.clone();
        let (st, judged) = tokio::task::spawn_blocking(move || {
            for (i, at, values) in scraped {
                st.record(i, at, values);
            }
            let summary = st.judge(&owned, t);
            (st, summary)
        })
        .await
        .map_err(|e| Error::Judge(e.to_string()))?;
        if let Some(n) = st.exec.next_transition(t) {
            next = next.min(Duration::from_secs_f64((n - t).max(1.0)));
        }
        ctx.metrics.samples(&uid, st.sample_count());
        ctx.networks
            .lock()
            .expect("not poisoned")
            .insert(uid.clone(), st);
        summary = Some(judged);
    }

    let status = {
        let nets = ctx.networks.lock().expect("not poisoned");
        let st = nets.get(&uid);
        let computed = state::status(
            st,
            &StatusInput {
                spec,
                generation,
                phase,
                start_time: start_time.clone(),
                t,
                pods: &pods,
                summary: summary.as_ref(),
                message: None,
                previous,
                now: Time(now),
            },
        );
        // Once complete, the verdict stands: later reconciles keep it.
        match previous {
            Some(p) if phase_before == Phase::Completed => SyncNetworkStatus {
                observed_generation: Some(generation),
                regions: computed.regions,
                ..p.clone()
            },
            _ => computed,
        }
    };
    if phase != phase_before {
        let note = match (&status.verdict, phase) {
            (Some(v), Phase::Completed) => format!("soak over after {t:.0} s: {v}"),
            _ => format!("{phase_before:?} -> {phase:?}"),
        };
        let type_ = if status.verdict.as_deref().is_some_and(|v| v != "pass") {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(ctx, sn, type_, &format!("{phase:?}"), note).await;
    }
    if phase == Phase::Completed && phase_before != Phase::Completed {
        ctx.networks.lock().expect("not poisoned").remove(&uid);
    }
    // Written only when it changed: every write is a watch event for every watcher.
    if previous != Some(&status) {
        patch_status(sn, ctx, &status).await?;
    }
    Ok(match phase {
        Phase::Completed | Phase::Failed => Action::await_change(),
        Phase::Pending => Action::requeue(Duration::from_secs(5)),
        Phase::Running => Action::requeue(next),
    })
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Deletion: lift partitions (NetworkPolicies) first, so nothing of the network outlives it in a
/// form garbage collection would leave for later; owner references take the rest.
async fn cleanup(sn: &SyncNetwork, ctx: &Context) -> Result<Action, Error> {
    let ns = sn.namespace().unwrap_or_else(|| "default".into());
    lift_partitions(&sn.name_any(), &ns, ctx).await?;
    ctx.networks
        .lock()
        .expect("not poisoned")
        .remove(&sn.uid().unwrap_or_default());
    ctx.metrics.forget(&sn.uid().unwrap_or_default());
    publish(
        ctx,
        sn,
        EventType::Normal,
        "Deleted",
        "partitions lifted; owned objects follow".into(),
    )
    .await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_from_5_s_to_5_min_with_a_spread_per_object() {
        for uid in ["a", "b", "c"] {
            let d: Vec<f64> = (1..=10)
                .map(|n| retry_delay(n, uid).as_secs_f64())
                .collect();
            for (n, (got, want)) in d
                .iter()
                .zip([
                    5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0, 300.0, 300.0,
                ])
                .enumerate()
            {
                assert!(
                    (got / want - 1.0).abs() <= 0.1 + 1e-9,
                    "{uid} #{}: {got} vs {want}",
                    n + 1
                );
            }
            assert_eq!(retry_delay(3, uid), retry_delay(3, uid), "deterministic");
        }
        assert_ne!(retry_delay(1, "a"), retry_delay(1, "b"), "spread by object");
        let huge = retry_delay(u32::MAX, "a").as_secs_f64();
        assert!((270.0..=330.0).contains(&huge), "{huge}");
    }

    #[test]
    fn messages_are_cut_at_a_character_boundary() {
        assert_eq!(short("abc"), "abc");
        let long = "é".repeat(500);
        let s = short(&long);
        assert_eq!(s.chars().count(), 403);
        assert!(s.ends_with("..."));
    }
}
