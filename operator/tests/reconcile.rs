//! Reconcile against a mocked API server (a tower-test pair): a small in-memory apiserver answers
//! what the reconciler asks and records every request, and the tests assert on those requests.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::harness::{Call, Harness, T0, applied, harness, harness_with, network, status_patch};
use http::Method;
use serde_json::json;
use syncnet_operator::controller;
use syncnet_operator::render;

#[tokio::test]
async fn a_new_network_gets_its_secret_configmap_services_and_statefulsets_with_owner_refs() {
    let h = harness(network(|_| {}));
    let action = h.reconcile().await;
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(5))
    );
    let calls = h.take_calls();

    // The keys Secret is made once, with an owner reference.
    let made: Vec<&Call> = calls
        .iter()
        .filter(|c| c.method == Method::POST && c.path.ends_with("/secrets"))
        .collect();
    assert_eq!(made.len(), 1);
    let secret = &made[0].body;
    assert_eq!(secret["metadata"]["name"], "t-keys");
    for k in ["producer.key", "bootnode.key", "control.token"] {
        assert!(
            secret["stringData"][k]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{k}"
        );
    }

    let cms = applied(&calls, "configmaps");
    let svcs = applied(&calls, "services");
    let sets = applied(&calls, "statefulsets");
    assert_eq!(cms.len(), 1);
    let names = |v: &[&Call]| {
        v.iter()
            .map(|c| c.body["metadata"]["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&svcs), ["t-producer", "t-us", "t-eu"]);
    assert_eq!(names(&sets), ["t-producer", "t-us", "t-eu"]);
    for c in cms.iter().chain(&svcs).chain(&sets) {
        // Server-side apply with the operator's field manager.
        assert!(
            c.query.contains("fieldManager=syncnet-operator"),
            "{}",
            c.query
        );
        assert!(c.query.contains("force=true"), "{}", c.query);
        let owner = &c.body["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "SyncNetwork");
        assert_eq!(owner["uid"], "7d2c1f0e-0000-4000-8000-000000000001");
        assert_eq!(owner["controller"], true);
    }
    // The producer region's set starts at ordinal 1 beside the producer's own set.
    let replicas: Vec<i64> = sets
        .iter()
        .map(|c| c.body["spec"]["replicas"].as_i64().unwrap())
        .collect();
    assert_eq!(replicas, [1, 1, 3]);
    assert_eq!(sets[1].body["spec"]["ordinals"]["start"], 1);
    for s in &svcs {
        assert_eq!(s.body["spec"]["clusterIP"], "None");
    }
    let pod = &sets[2].body["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(
        c["args"],
        json!(["run", "--config", "/etc/syncnode/node-eu.yaml"])
    );
    // Config: the ConfigMap holds each file the pods name, and nodes bootstrap from the producer.
    let data = &cms[0].body["data"];
    let eu: syncnet_proto::config::NodeConfig =
        serde_yaml::from_str(data["node-eu.yaml"].as_str().unwrap()).unwrap();
    assert!(
        eu.p2p.bootnodes[0]
            .to_string()
            .starts_with("/dns4/t-producer-0.t-producer.default.svc.cluster.local/tcp/9000/p2p/")
    );
    assert!(
        data["producer.yaml"]
            .as_str()
            .unwrap()
            .contains("key_file: /etc/syncnode-keys/producer.key")
    );

    // Pending until the pods are ready; observedGeneration and every condition in the status.
    let st = status_patch(&calls);
    assert_eq!(st["phase"], "Pending");
    assert_eq!(st["observedGeneration"], 1);
    let types: Vec<&str> = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "Ready",
            "Progressing",
            "SyncStalled",
            "LeakSuspected",
            "Completed"
        ]
    );
    assert!(
        st["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["observedGeneration"] == 1)
    );

    // A second reconcile reuses the Secret: no second key.
    h.reconcile().await;
    let again = h.take_calls();
    assert!(
        !again
            .iter()
            .any(|c| c.method == Method::POST && c.path.ends_with("/secrets"))
    );
    assert_eq!(
        applied(&again, "configmaps")[0].body,
        cms[0].body,
        "rendering is stable"
    );
}

#[tokio::test]
async fn scaling_a_region_patches_its_statefulset() {
    let h = harness(network(|_| {}));
    h.reconcile().await;
    h.take_calls();
    {
        let mut w = h.world.lock().unwrap();
        w.sn["spec"]["regions"][1]["replicas"] = 7.into();
        w.sn["metadata"]["generation"] = 2.into();
    }
    h.reconcile().await;
    let calls = h.take_calls();
    let eu = applied(&calls, "statefulsets")
        .into_iter()
        .find(|c| c.path.ends_with("/t-eu"))
        .unwrap();
    assert_eq!(eu.body["spec"]["replicas"], 7);
    assert_eq!(status_patch(&calls)["observedGeneration"], 2);
}

#[tokio::test]
async fn the_soak_starts_when_pods_are_ready_and_a_scheduled_kill_deletes_the_right_pod() {
    let h = harness(network(|_| {}));
    h.all_pods_ready();
    h.reconcile().await;
    let calls = h.take_calls();
    let st = status_patch(&calls);
    assert_eq!(st["phase"], "Running");
    assert_eq!(st["startTime"], T0);
    assert!(
        calls
            .iter()
            .any(|c| c.path.ends_with("/events") && c.body["reason"] == "SoakStarted")
    );
    // No pod is deleted before the first kill is due.
    assert!(!calls.iter().any(|c| c.method == Method::DELETE));

    // The schedule the operator follows: stressnet's, seeded by the uid.
    let sn = h.sn();
    let plans = soak::plan::nodes(&sn.spec, std::path::Path::new("/"));
    let windows = soak::plan::schedule(&sn.spec, &plans, controller::seed(&sn)).unwrap();
    let first_kill = windows.iter().find(|w| w.name == "kill-eu").unwrap();
    assert_eq!(first_kill.start, 60);
    let victim = render::pod_names("t", &sn.spec)[first_kill.targets[0]].clone();
    assert!(victim.starts_with("t-eu-"), "{victim}");

    // At 31 s the partition (node mode: the nodes' own fault) reaches every eu pod.
    h.advance(31);
    h.reconcile().await;
    let calls = h.take_calls();
    assert!(!calls.iter().any(|c| c.method == Method::DELETE));
    let puts = std::mem::take(&mut *h.pods.puts.lock().unwrap());
    assert_eq!(puts.len(), 3, "{puts:?}");
    assert!(puts.iter().all(|(_, f)| f.partition.regions == ["us"]));
    assert!(
        calls
            .iter()
            .any(|c| c.path.ends_with("/events") && c.body["reason"] == "FaultBegan")
    );

    h.advance(30); // 61 s
    h.reconcile().await;
    let calls = h.take_calls();
    let deleted: Vec<&str> = calls
        .iter()
        .filter(|c| c.method == Method::DELETE && c.path.contains("/pods/"))
        .map(|c| c.path.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(deleted, [victim.as_str()]);
    let st = status_patch(&calls);
    assert_eq!(st["faultsBegun"], 2);

    // Nothing is killed twice: the next reconcile in the same window deletes nothing.
    h.advance(5);
    h.reconcile().await;
    assert!(!h.take_calls().iter().any(|c| c.method == Method::DELETE));
}

/// A status write is a watch event: a reconcile that finds nothing changed writes none (status
/// messages held "N s ago" and "t/duration s", so every reconcile wrote one and woke the next).
#[tokio::test]
async fn a_reconcile_that_changes_nothing_writes_no_status() {
    let h = harness(network(|_| {}));
    h.all_pods_ready();
    h.reconcile().await;
    h.advance(5);
    h.reconcile().await;
    h.take_calls();
    // One more scrape with the same heights: nothing to report.
    h.advance(1);
    h.reconcile().await;
    let calls = h.take_calls();
    assert!(
        !calls.iter().any(|c| c.path.ends_with("/status")),
        "{:?}",
        calls
            .iter()
            .map(|c| format!("{} {}", c.method, c.path))
            .collect::<Vec<_>>()
    );
    // A head that moves is news.
    for a in h.pods.heights.lock().unwrap().values_mut() {
        *a += 1;
    }
    let addrs: Vec<SocketAddr> = (1..=5)
        .map(|i| format!("10.0.0.{i}:9100").parse().unwrap())
        .collect();
    for a in addrs {
        h.pods.heights.lock().unwrap().insert(a, 7);
    }
    h.advance(5);
    h.reconcile().await;
    assert!(h.take_calls().iter().any(|c| c.path.ends_with("/status")));
}

#[tokio::test]
async fn the_soak_completes_with_a_verdict_and_a_stuck_network_is_stalled() {
    let h = harness(network(|v| {
        v["spec"]["faults"] = json!([]);
        v["spec"]["soak"] = json!({"durationSecs": 120, "warmupSecs": 30, "scrapeIntervalSecs": 5});
    }));
    h.all_pods_ready();
    // Heights: every node follows the head for 60 s, then one eu node stops.
    for step in 0..=24 {
        let t = step * 5;
        {
            let mut hs = h.pods.heights.lock().unwrap();
            for i in 1..=5u8 {
                let addr: SocketAddr = format!("10.0.0.{i}:9100").parse().unwrap();
                let height = if i == 5 && t > 60 { 60 } else { t as u64 + 1 };
                hs.insert(addr, height);
            }
        }
        h.reconcile().await;
        h.advance(5);
    }
    let calls = h.take_calls();
    let st = status_patch(&calls);
    assert_eq!(st["phase"], "Completed");
    let verdict = st["verdict"].as_str().unwrap();
    assert!(verdict.starts_with("fail: sync_progress"), "{verdict}");
    let cond = |t: &str| {
        st["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(cond("Completed"), "True");
    assert_eq!(cond("SyncStalled"), "True");
    assert_eq!(st["regions"][1]["name"], "eu");
    assert!(st["regions"][1]["maxLag"].as_u64().unwrap() > 50);
    assert!(calls.iter().any(|c| c.path.ends_with("/events")
        && c.body["reason"] == "Completed"
        && c.body["type"] == "Warning"));
}

#[tokio::test]
async fn an_invalid_spec_fails_in_status_and_applies_nothing() {
    let h = harness(network(|v| v["spec"]["soak"]["warmupSecs"] = 600.into()));
    h.reconcile().await;
    let calls = h.take_calls();
    assert!(applied(&calls, "statefulsets").is_empty());
    assert!(!calls.iter().any(|c| c.path.ends_with("/secrets")));
    let st = status_patch(&calls);
    assert_eq!(st["phase"], "Failed");
    let ready = &st["conditions"][0];
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("spec.soak.warmupSecs"),
        "{ready}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.path.ends_with("/events") && c.body["reason"] == "InvalidSpec")
    );
}

/// Every request the reconciler makes in these tests, as (API group, resource, verb).
#[tokio::test]
async fn rbac_in_the_chart_grants_exactly_what_the_reconciler_uses() {
    let mut used = std::collections::BTreeSet::new();
    let mut record = |calls: &[Call]| {
        for c in calls {
            let seg: Vec<&str> = c.path.trim_start_matches('/').split('/').collect();
            let group = if seg[0] == "api" {
                "".to_owned()
            } else {
                seg[1].to_owned()
            };
            let i = seg.iter().position(|s| *s == "namespaces").unwrap();
            let mut resource = seg[i + 2].to_owned();
            let named = seg.len() > i + 3;
            if seg.len() > i + 4 {
                resource = format!("{resource}/{}", seg[i + 4]);
            }
            let verb = match (&c.method, named) {
                (&Method::GET, true) => "get",
                (&Method::GET, false) => "list",
                (&Method::POST, _) => "create",
                (&Method::PATCH, _) => "patch",
                (&Method::DELETE, _) => "delete",
                (m, _) => panic!("verb for {m}"),
            };
            used.insert((group, resource, verb.to_owned()));
        }
    };
    for sn in [
        network(|_| {}),
        network(|v| v["spec"]["kubernetes"] = json!({"partitions": "networkPolicy"})),
    ] {
        let h = harness(sn);
        h.reconcile().await;
        h.all_pods_ready();
        for _ in 0..14 {
            h.reconcile().await;
            h.advance(5);
        }
        record(&h.take_calls());
    }
    let h = harness(network(|v| {
        v["metadata"]["deletionTimestamp"] = "2026-11-25T10:05:00Z".into()
    }));
    h.world.lock().unwrap().policies = vec![json!({"metadata":{"name":"x","namespace":"default"}})];
    h.reconcile().await;
    record(&h.take_calls());

    let granted = syncnet_operator::rbac::granted_by_chart(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../charts/syncnet-operator/templates/rbac.yaml"
        ))
        .unwrap(),
    );
    for (g, r, v) in &used {
        assert!(
            granted.contains(&(g.clone(), r.clone(), v.clone())),
            "the reconciler calls {v} on {g}/{r}, which the chart's ClusterRole does not grant"
        );
    }
    // And the chart grants nothing beyond those calls and the watches (list/watch) the controller
    // runs on its own resources and the StatefulSets it owns.
    let watches: Vec<(String, String, String)> =
        [("syncnet.dev", "syncnetworks"), ("apps", "statefulsets")]
            .iter()
            .flat_map(|(g, r)| {
                ["list", "watch"].map(|v| (g.to_string(), r.to_string(), v.to_owned()))
            })
            .collect();
    // Creating an object by server-side apply is authorised as create as well as patch.
    let ssa_create: Vec<(String, String, String)> = used
        .iter()
        .filter(|(_, r, v)| {
            v == "patch" && !r.contains('/') && r != "syncnetworks" && r != "events"
        })
        .map(|(g, r, _)| (g.clone(), r.clone(), "create".to_owned()))
        .collect();
    for rule in &granted {
        assert!(
            used.contains(rule) || watches.contains(rule) || ssa_create.contains(rule),
            "the chart grants {rule:?}, which the operator never uses"
        );
    }
}

/// A failing object is retried with its own exponential backoff, counted by reason; a success
/// starts it over.
#[tokio::test]
async fn failures_back_off_per_object_and_are_counted_by_reason() {
    let h = harness(network(|_| {}));
    let sn = Arc::new(h.sn());
    let uid = sn.metadata.uid.clone().unwrap();
    let mut delays = vec![];
    for _ in 0..8 {
        h.world.lock().unwrap().fail_next = Some((Method::GET, "secrets"));
        let err = controller::reconcile(sn.clone(), h.ctx.clone())
            .await
            .expect_err("the secret read fails");
        assert_eq!(err.reason(), "api_error", "{err}");
        let a = controller::error_policy(sn.clone(), &err, h.ctx.clone());
        delays.push(a);
    }
    let want: Vec<_> = (1..=8)
        .map(|n| kube::runtime::controller::Action::requeue(controller::retry_delay(n, &uid)))
        .collect();
    assert_eq!(delays, want);
    assert!(controller::retry_delay(2, &uid) > controller::retry_delay(1, &uid));
    assert!(controller::retry_delay(8, &uid) <= std::time::Duration::from_secs(330));
    let m = h.ctx.metrics.render();
    assert!(
        m.contains("syncnet_operator_reconcile_failures_total{reason=\"api_error\"} 8"),
        "{m}"
    );
    // Success clears the count: the next failure waits the base delay again.
    h.reconcile().await;
    h.world.lock().unwrap().fail_next = Some((Method::GET, "secrets"));
    let err = controller::reconcile(sn.clone(), h.ctx.clone())
        .await
        .unwrap_err();
    assert_eq!(
        controller::error_policy(sn, &err, h.ctx.clone()),
        kube::runtime::controller::Action::requeue(controller::retry_delay(1, &uid))
    );
}

/// The operator's memory is capped for all networks together: a network's windows shrink to its
/// share when another one runs.
#[tokio::test]
async fn samples_stay_within_the_operator_wide_cap_shared_by_running_networks() {
    let h = harness_with(network(|_| {}), |c| {
        c.max_samples = 1000;
        c.max_samples_total = 40;
    });
    h.all_pods_ready();
    for _ in 0..20 {
        h.reconcile().await;
        h.advance(5);
    }
    let held = |h: &Harness| -> usize {
        h.ctx
            .networks
            .lock()
            .unwrap()
            .values()
            .map(|s| s.sample_count())
            .sum()
    };
    // 5 nodes, 20 scrapes each: 100 offered, 40 kept (8 per node).
    assert_eq!(held(&h), 40);
    // A second network starts: each now gets 20.
    let other = {
        let sn = h.sn();
        syncnet_operator::state::NetState::new(&sn.spec, 1, vec![], 0.0, 1000)
    };
    h.ctx
        .networks
        .lock()
        .unwrap()
        .insert("another-network".into(), other);
    h.reconcile().await;
    let ours = h
        .ctx
        .networks
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.as_str() != "another-network")
        .map(|(_, s)| s.sample_count())
        .sum::<usize>();
    assert_eq!(ours, 20);
    assert!(
        h.ctx
            .metrics
            .render()
            .contains("syncnet_operator_samples_limit 400000"),
        "the default cap is exported until main sets its own"
    );
}
