//! A running network: its pods gathered, the fault schedule's due steps run, partitions kept as
//! NetworkPolicies (level-triggered) and lifted.

use super::*;

/// One round of the kept series: `(node, seconds since the start, values)`.
pub(super) async fn gather(
    ctx: &Context,
    ns: &str,
    names: &[String],
    addrs: &[Option<SocketAddr>],
    t: f64,
    now: jiff::Timestamp,
) -> Vec<(usize, f64, BTreeMap<String, f64>)> {
    match &ctx.source {
        Source::Pods => {
            let live: Vec<(usize, SocketAddr)> = addrs
                .iter()
                .enumerate()
                .filter_map(|(i, a)| a.map(|a| (i, a)))
                .collect();
            let bodies: Vec<(usize, Result<String, String>)> = stream::iter(live)
                .map(|(i, a)| async move { (i, ctx.pods.scrape(a).await) })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            bodies
                .into_iter()
                .filter_map(|(i, body)| {
                    ctx.metrics.scraped(body.is_ok());
                    Some((i, t, soak::scrape::parse(&body.ok()?)))
                })
                .collect()
        }
        Source::Prometheus { prom, http } => {
            let now_unix = now.as_millisecond() as f64 / 1000.0;
            let (req, body) = prom.request(&prom.query(ns, names), now_unix);
            let answer = soak::node_http::send(http, req, body, PROM_TIMEOUT, PROM_MAX_BODY)
                .await
                .and_then(|(code, body)| prom.parse(code, &body, names));
            ctx.metrics.prometheus_queried(answer.is_ok());
            match answer {
                // Each pod's values at the time Prometheus scraped them, not the time we asked;
                // scrapes from before the soak began are not part of it.
                Ok(pods) => pods
                    .into_iter()
                    .map(|p| (p.pod, t - (now_unix - p.at).max(0.0), p.values))
                    .filter(|(_, at, _)| *at >= 0.0)
                    .collect(),
                Err(e) => {
                    warn!(error = %e, namespace = ns, "prometheus query failed");
                    vec![]
                }
            }
        }
    }
}

pub(super) fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub(super) async fn run_steps(
    sn: &SyncNetwork,
    ctx: &Context,
    steps: &[Step],
    names: &[String],
    addrs: &[Option<SocketAddr>],
    token: &str,
) -> Result<(), Error> {
    if steps.is_empty() {
        return Ok(());
    }
    let ns = sn.namespace().unwrap_or_else(|| "default".into());
    let uid = sn.uid().unwrap_or_default();
    let policy_mode = sn.spec.kubernetes.partitions == PartitionMode::NetworkPolicy;
    let windows = windows_of(ctx, &uid);
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut puts = vec![];
    for step in steps {
        match step {
            Step::Began(i) | Step::Ended(i) => {
                let w = &windows[*i];
                let began = matches!(step, Step::Began(_));
                let targets: Vec<String> = w.targets.iter().map(|&n| names[n].clone()).collect();
                // NetworkPolicies follow from the windows open now (`sync_policies`), not from
                // these steps; the events say what began and ended.
                let verb = if began { "FaultBegan" } else { "FaultEnded" };
                let note = format!(
                    "{} ({}) on {} pod(s): {}",
                    w.name,
                    w.action.label(),
                    targets.len(),
                    summarise(&targets)
                );
                publish(ctx, sn, EventType::Normal, verb, note).await;
            }
            Step::Kill(n) => {
                // Grace 0: the closest a cluster gets to SIGKILL. The StatefulSet brings the pod
                // back at once, so the downtime is the pod's restart time, not durationSecs.
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::default()
                };
                match pod_api.delete(&names[*n], &dp).await {
                    Ok(_) => ctx.metrics.killed(),
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            // The StatefulSet restarts it; a fresh process runs no faults until told.
            Step::Restart(_) => {}
            Step::Apply(n, f) => {
                let mut f = f.clone();
                if policy_mode {
                    f.partition = Default::default();
                    f.isolate = false;
                }
                puts.push((*n, f));
            }
        }
    }
    let results: Vec<(usize, bool)> = stream::iter(puts)
        .map(|(n, f)| async move {
            let ok = match addrs[n] {
                Some(a) => ctx.pods.put_faults(a, &f, token).await.is_ok(),
                None => false,
            };
            (n, ok)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut nets = ctx.networks.lock().expect("not poisoned");
    if let Some(st) = nets.get_mut(&uid) {
        for (n, ok) in results {
            ctx.metrics.fault_put(ok);
            if !ok {
                st.exec.apply_failed(n);
            }
        }
    }
    Ok(())
}

/// Partitions in networkPolicy mode are level-triggered: every reconcile makes the network's
/// NetworkPolicies exactly those of the partition windows open at `open_at` (applied again, which
/// changes nothing when they are there) and deletes the others it finds. Schedule steps are
/// consumed once, so driving the policies from them left a region cut off for good when one call
/// failed, or when the operator restarted as a window ended (the resumed schedule replays no
/// step). `None`: no window is open (pending, completed).
pub(super) async fn sync_policies(
    sn: &SyncNetwork,
    ctx: &Context,
    windows: &[soak::plan::FaultWindow],
    open_at: Option<f64>,
    names: &[String],
) -> Result<(), Error> {
    let net = sn.name_any();
    let ns = sn.namespace().unwrap_or_else(|| "default".into());
    let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    let open = |w: &soak::plan::FaultWindow| {
        open_at.is_some_and(|t| t >= w.start as f64 && t < w.end as f64)
    };
    let mut want = BTreeSet::new();
    for (i, w) in windows.iter().enumerate() {
        if w.action != FaultAction::Partition || !open(w) {
            continue;
        }
        let targets: Vec<String> = w
            .targets
            .iter()
            .filter_map(|&n| names.get(n).cloned())
            .collect();
        let cut = &sn.spec.faults[w.fault].regions;
        ssa(&policies, &render::network_policy(sn, i, &targets, cut)).await?;
        want.insert(render::network_policy_name(&net, i));
    }
    delete_policies(&policies, &net, &want).await
}

/// The fault windows of network `uid`'s schedule (none before its soak starts).
pub(super) fn windows_of(ctx: &Context, uid: &str) -> Vec<soak::plan::FaultWindow> {
    ctx.networks
        .lock()
        .expect("not poisoned")
        .get(uid)
        .map(|s| s.exec.windows().to_vec())
        .unwrap_or_default()
}

/// Deletes every NetworkPolicy of network `net`.
pub(super) async fn lift_partitions(net: &str, ns: &str, ctx: &Context) -> Result<(), Error> {
    let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), ns);
    delete_policies(&policies, net, &BTreeSet::new()).await
}

/// Deletes network `net`'s NetworkPolicies except those named in `keep` (one already gone is
/// fine).
pub(super) async fn delete_policies(
    policies: &Api<NetworkPolicy>,
    net: &str,
    keep: &BTreeSet<String>,
) -> Result<(), Error> {
    let lp = ListParams::default().labels(&format!("{}={net}", render::LABEL_NETWORK));
    for p in policies.list(&lp).await?.items {
        let name = p.name_any();
        if keep.contains(&name) {
            continue;
        }
        match policies.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

pub(super) fn summarise(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s += &format!(" and {} more", names.len() - SHOWN);
    }
    s
}
