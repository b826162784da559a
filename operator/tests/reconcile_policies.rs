//! Reconcile in networkPolicy partition mode, and deletion lifting partitions, against the mocked
//! API server of `common::harness`.

mod common;

use common::harness::{Harness, applied, harness, network};
use http::Method;
use serde_json::json;

/// A network in networkPolicy partition mode whose pods are ready and whose soak has started.
async fn policy_mode_started() -> Harness {
    let h = harness(network(|v| {
        v["spec"]["kubernetes"] = json!({"partitions": "networkPolicy"})
    }));
    h.all_pods_ready();
    h.reconcile().await;
    h
}

#[tokio::test]
async fn a_partition_in_network_policy_mode_is_a_network_policy_for_its_window() {
    let h = policy_mode_started().await;
    h.advance(31);
    h.reconcile().await;
    let calls = h.take_calls();
    let np = applied(&calls, "networkpolicies");
    assert_eq!(np.len(), 1);
    let spec = &np[0].body["spec"];
    let targets = spec["podSelector"]["matchExpressions"][0]["values"]
        .as_array()
        .unwrap();
    assert_eq!(targets.len(), 3);
    assert_eq!(
        spec["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0]["operator"],
        "NotIn"
    );
    assert_eq!(
        spec["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0]["values"],
        json!(["us"])
    );
    // The nodes are not told to partition themselves as well.
    assert!(
        h.pods
            .puts
            .lock()
            .unwrap()
            .iter()
            .all(|(_, f)| f.partition.regions.is_empty())
    );
    h.advance(20); // 51 s: the window is over
    h.reconcile().await;
    let calls = h.take_calls();
    let window = h
        .ctx
        .networks
        .lock()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .exec
        .windows()
        .iter()
        .position(|w| w.name == "split")
        .unwrap();
    assert_eq!(
        np[0].body["metadata"]["name"],
        format!("t-partition-{window}")
    );
    assert!(calls.iter().any(|c| {
        c.method == Method::DELETE
            && c.path
                .ends_with(&format!("/networkpolicies/t-partition-{window}"))
    }));
}

/// Policies follow the windows open now, not consumed steps: a failed delete is retried by the
/// next reconcile.
#[tokio::test]
async fn a_failed_api_call_at_a_windows_end_still_ends_with_the_policy_removed() {
    let h = policy_mode_started().await;
    h.advance(31);
    h.reconcile().await;
    assert_eq!(h.policy_names().len(), 1, "the window's policy is in place");
    h.advance(20); // 51 s: the window is over, and the delete fails
    h.world.lock().unwrap().fail_next = Some((Method::DELETE, "networkpolicies"));
    let first = h.try_reconcile().await;
    assert!(first.is_err(), "the failure is reported: {first:?}");
    assert_eq!(h.policy_names().len(), 1);
    h.advance(5);
    h.reconcile().await;
    assert!(h.policy_names().is_empty(), "{:?}", h.policy_names());
    // A failed apply at a window's start is retried the same way.
    let h = policy_mode_started().await;
    h.advance(31);
    h.world.lock().unwrap().fail_next = Some((Method::PATCH, "networkpolicies"));
    assert!(h.try_reconcile().await.is_err());
    assert!(h.policy_names().is_empty());
    h.advance(5);
    h.reconcile().await;
    assert_eq!(h.policy_names().len(), 1, "applied on the next reconcile");
}

/// An operator restarted as a window ends resumes the schedule without replaying its steps; the
/// policy of the window that ended meanwhile is still removed, and one that began meanwhile is
/// still made.
#[tokio::test]
async fn an_operator_restarted_mid_partition_removes_the_policy_at_the_windows_end() {
    let h = policy_mode_started().await;
    h.advance(31);
    h.reconcile().await;
    assert_eq!(h.policy_names().len(), 1);
    // The operator dies at 40 s and its successor first reconciles at 55 s.
    h.advance(24);
    let h2 = h.restart();
    h2.reconcile().await;
    assert!(h2.policy_names().is_empty(), "{:?}", h2.policy_names());

    // Restarted while the window is open: the policy stays (applied again), then goes.
    let h = policy_mode_started().await;
    h.advance(25);
    h.reconcile().await;
    assert!(h.policy_names().is_empty(), "not yet");
    h.advance(10); // 35 s: the window began while no operator ran
    let h2 = h.restart();
    h2.reconcile().await;
    assert_eq!(h2.policy_names().len(), 1);
    h2.advance(20);
    h2.reconcile().await;
    assert!(h2.policy_names().is_empty());
}

#[tokio::test]
async fn deletion_lifts_partitions_and_removes_the_finalizer() {
    let h = harness(network(|v| {
        v["metadata"]["deletionTimestamp"] = "2026-11-25T10:05:00Z".into()
    }));
    h.world.lock().unwrap().policies = vec![
        json!({"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
        "metadata":{"name":"t-partition-3","namespace":"default"}}),
    ];
    h.reconcile().await;
    let calls = h.take_calls();
    assert!(
        calls
            .iter()
            .any(|c| c.method == Method::DELETE
                && c.path.ends_with("/networkpolicies/t-partition-3"))
    );
    assert!(
        applied(&calls, "statefulsets").is_empty(),
        "nothing is applied while deleting"
    );
    let last = calls.last().unwrap();
    assert_eq!(last.method, Method::PATCH);
    assert!(last.path.ends_with("/syncnetworks/t"), "{}", last.path);
    let ops = last.body.as_array().unwrap();
    assert!(
        ops.iter()
            .any(|o| o["op"] == "remove" && o["path"] == "/metadata/finalizers/0"),
        "{ops:?}"
    );
}
