//! `stressnet apply SPEC` and `stressnet status NAME`: the same spec on a cluster running the
//! operator, through the current kubeconfig. The operator does the work; this is a thin client.

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use syncnet_crds::{SyncNetwork, SyncNetworkStatus};

pub const FIELD_MANAGER: &str = "stressnet";

async fn api(namespace: Option<&str>) -> anyhow::Result<(Api<SyncNetwork>, String)> {
    let client = Client::try_default().await.map_err(|e| {
        anyhow::anyhow!("no cluster: {e} (is KUBECONFIG set, or is this running in a pod?)")
    })?;
    let ns = namespace
        .map(str::to_owned)
        .unwrap_or_else(|| client.default_namespace().to_owned());
    Ok((Api::namespaced(client, &ns), ns))
}

/// Server-side applies a validated spec; returns `namespace/name`.
pub async fn apply(sn: &SyncNetwork, namespace: Option<&str>) -> anyhow::Result<String> {
    let (api, ns) = api(namespace).await?;
    let mut obj = sn.clone();
    obj.metadata.namespace = Some(ns.clone());
    obj.status = None;
    let name = obj.name_any();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Apply(&obj),
    )
    .await
    .map_err(|e| anyhow::anyhow!("applying {ns}/{name}: {e} (is the CRD installed?)"))?;
    Ok(format!("{ns}/{name}"))
}

pub async fn get(name: &str, namespace: Option<&str>) -> anyhow::Result<SyncNetwork> {
    let (api, ns) = api(namespace).await?;
    api.get_opt(name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no SyncNetwork {ns}/{name}"))
}

/// A status as text: the summary line, regions, conditions.
pub fn format_status(name: &str, s: &SyncNetworkStatus) -> String {
    let mut out = format!(
        "{name}: {:?}; head {}; max lag {}; faults {}/{}; verdict {}\n",
        s.phase,
        s.head,
        s.max_lag,
        s.faults_begun,
        s.fault_windows,
        s.verdict.as_deref().unwrap_or("-")
    );
    out += "region  ready  head  max-lag  leaks / storms\n";
    for r in &s.regions {
        let mut flags: Vec<String> = r.leaks.iter().map(|l| format!("leak:{l}")).collect();
        flags.extend(r.storms.iter().map(|n| format!("storm:{n}")));
        out += &format!(
            "{:<7} {:>2}/{:<3} {:>5} {:>8}  {}\n",
            r.name,
            r.ready,
            r.replicas,
            r.head,
            r.max_lag,
            if flags.is_empty() {
                "-".into()
            } else {
                flags.join(" ")
            }
        );
    }
    for c in &s.conditions {
        out += &format!(
            "{:<14} {:<5} {}: {}\n",
            c.type_, c.status, c.reason, c.message
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncnet_crds::{Phase, RegionStatus};

    #[test]
    fn a_status_reads_as_a_table() {
        let s = SyncNetworkStatus {
            phase: Phase::Completed,
            head: 300,
            max_lag: 4,
            verdict: Some("fail: leak:eu-1:rss".into()),
            regions: vec![RegionStatus {
                name: "eu".into(),
                ready: 3,
                replicas: 3,
                head: 300,
                max_lag: 4,
                leaks: vec!["eu-1:rss".into()],
                storms: vec![],
            }],
            ..SyncNetworkStatus::default()
        };
        let t = format_status("q", &s);
        assert!(t.starts_with("q: Completed; head 300; max lag 4"), "{t}");
        assert!(t.contains("verdict fail: leak:eu-1:rss"), "{t}");
        assert!(
            t.contains("eu       3/3     300        4  leak:eu-1:rss"),
            "{t}"
        );
    }
}
