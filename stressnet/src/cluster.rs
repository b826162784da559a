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
    apply_to(&api, &ns, sn).await
}

/// The apply itself, against `api` in namespace `ns`. The status is the operator's: it is left
/// out, so stressnet's field manager never owns a status field.
pub async fn apply_to(
    api: &Api<SyncNetwork>,
    ns: &str,
    sn: &SyncNetwork,
) -> anyhow::Result<String> {
    let ns = ns.to_owned();
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

    /// The one request `apply_to` makes, answered with `code` and `answer` (an error's body; a
    /// 200 echoes the object).
    async fn apply_once(code: u16, answer: serde_json::Value) -> (http::Request<Vec<u8>>, String) {
        let (svc, mut handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let client = Client::new(svc, "default");
        let api: Api<SyncNetwork> = Api::namespaced(client, "soak");
        let mut sn =
            SyncNetwork::from_yaml(include_str!("../../examples/quickstart.yaml")).unwrap();
        sn.status = Some(SyncNetworkStatus::default());
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("a request");
            let (parts, body) = req.into_parts();
            let body = body.collect_bytes().await.unwrap().to_vec();
            // An apiserver answers an apply with the object as applied.
            let answer = if code == 200 {
                serde_json::from_slice(&body).unwrap()
            } else {
                answer
            };
            send.send_response(
                http::Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(
                        serde_json::to_vec(&answer).unwrap(),
                    ))
                    .unwrap(),
            );
            http::Request::from_parts(parts, body)
        });
        let out = match apply_to(&api, "soak", &sn).await {
            Ok(s) => s,
            Err(e) => format!("error: {e}"),
        };
        (server.await.unwrap(), out)
    }

    #[tokio::test]
    async fn apply_is_a_server_side_apply_without_status() {
        let (req, out) = apply_once(200, serde_json::Value::Null).await;
        assert_eq!(out, "soak/quickstart");
        assert_eq!(req.method(), http::Method::PATCH);
        assert_eq!(
            req.uri().path(),
            "/apis/syncnet.dev/v1alpha1/namespaces/soak/syncnetworks/quickstart"
        );
        let q = req.uri().query().unwrap_or("");
        assert!(q.contains("fieldManager=stressnet"), "{q}");
        assert!(
            !q.contains("force"),
            "another manager's fields are not taken: {q}"
        );
        assert_eq!(
            req.headers()["content-type"],
            "application/apply-patch+yaml"
        );
        let body: serde_json::Value = serde_json::from_slice(req.body()).unwrap();
        assert_eq!(body["kind"], "SyncNetwork");
        assert_eq!(body["metadata"]["namespace"], "soak");
        assert!(body.get("status").is_none_or(|s| s.is_null()), "{body}");
        assert_eq!(body["spec"]["regions"].as_array().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_missing_crd_says_so() {
        let (_, out) = apply_once(
            404,
            serde_json::json!({"kind":"Status","apiVersion":"v1","status":"Failure",
                "reason":"NotFound","code":404,"message":"the server could not find the requested resource","metadata":{}}),
        )
        .await;
        assert!(out.starts_with("error: applying soak/quickstart"), "{out}");
        assert!(out.contains("is the CRD installed?"), "{out}");
    }

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
