//! Reconcile against a mocked API server (a tower-test pair): a small in-memory apiserver answers
//! what the reconciler asks and records every request, and the tests assert on those requests.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use syncnet_crds::SyncNetwork;
use syncnet_node::faults::Faults;
use syncnet_operator::controller::{self, Context, PodIo};
use syncnet_operator::render::{self, Options};

#[derive(Clone, Debug)]
struct Call {
    method: Method,
    path: String,
    query: String,
    body: Value,
}

#[derive(Default)]
struct World {
    sn: Value,
    secret: Option<Value>,
    pods: Vec<Value>,
    policies: Vec<Value>,
    calls: Vec<Call>,
    /// The next request with this method to this resource fails with a 500.
    fail_next: Option<(Method, &'static str)>,
}

fn not_found() -> (u16, Value) {
    (
        404,
        json!({"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"not found","metadata":{}}),
    )
}

impl World {
    fn answer(&mut self, c: &Call) -> (u16, Value) {
        let seg: Vec<&str> = c.path.trim_start_matches('/').split('/').collect();
        let resource = seg
            .iter()
            .position(|s| *s == "namespaces")
            .and_then(|i| seg.get(i + 2))
            .copied()
            .unwrap_or("");
        let name = seg
            .iter()
            .position(|s| *s == "namespaces")
            .and_then(|i| seg.get(i + 3));
        if self
            .fail_next
            .as_ref()
            .is_some_and(|(m, r)| *m == c.method && *r == resource)
        {
            self.fail_next = None;
            return (
                500,
                json!({"kind":"Status","apiVersion":"v1","status":"Failure","reason":"InternalError","code":500,"message":"injected","metadata":{}}),
            );
        }
        match (&c.method, resource, name) {
            (&Method::GET, "secrets", Some(_)) => {
                self.secret.clone().map_or_else(not_found, |s| (200, s))
            }
            (&Method::POST, "secrets", None) => {
                self.secret = Some(c.body.clone());
                (201, c.body.clone())
            }
            (&Method::GET, "pods", None) => (
                200,
                json!({"apiVersion":"v1","kind":"PodList","metadata":{},"items": self.pods}),
            ),
            (&Method::DELETE, "pods", Some(n)) => {
                let i = self.pods.iter().position(|p| p["metadata"]["name"] == **n);
                match i {
                    Some(i) => (200, self.pods.remove(i)),
                    None => not_found(),
                }
            }
            (&Method::GET, "networkpolicies", None) => (
                200,
                json!({"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicyList","metadata":{},"items": self.policies}),
            ),
            (&Method::DELETE, "networkpolicies", Some(n)) => {
                let i = self
                    .policies
                    .iter()
                    .position(|p| p["metadata"]["name"] == **n);
                match i {
                    Some(i) => {
                        self.policies.remove(i);
                        (
                            200,
                            json!({"kind":"Status","apiVersion":"v1","status":"Success","metadata":{}}),
                        )
                    }
                    None => not_found(),
                }
            }
            // Server-side apply of a policy: stored, replacing one of the same name.
            (&Method::PATCH, "networkpolicies", Some(n)) => {
                self.policies.retain(|p| p["metadata"]["name"] != **n);
                self.policies.push(c.body.clone());
                (200, c.body.clone())
            }
            (&Method::PATCH, "syncnetworks", Some(_)) => {
                if c.path.ends_with("/status") {
                    common::merge(&mut self.sn, &c.body);
                }
                (200, self.sn.clone())
            }
            (&Method::POST, "events", None) => (201, c.body.clone()),
            (&Method::PATCH, "events", Some(_)) => (200, c.body.clone()),
            (&Method::PATCH, _, Some(_)) => (200, c.body.clone()),
            _ => panic!("unexpected request {} {}", c.method, c.path),
        }
    }
}

/// Serves `world` on the mock's handle until the client side is dropped.
fn serve(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    world: Arc<Mutex<World>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let call = Call {
                method: parts.method.clone(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or("").to_owned(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let (code, value) = {
                let mut w = world.lock().unwrap();
                let a = w.answer(&call);
                w.calls.push(call);
                a
            };
            let resp = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&value).unwrap()))
                .unwrap();
            send.send_response(resp);
        }
    })
}

/// Pods answer /metrics with a height per address; PUT /faults is recorded.
#[derive(Default)]
struct FakePods {
    heights: Mutex<BTreeMap<SocketAddr, u64>>,
    scrapes: std::sync::atomic::AtomicUsize,
    puts: Mutex<Vec<(SocketAddr, Faults)>>,
}

impl PodIo for FakePods {
    fn scrape(&self, addr: SocketAddr) -> BoxFuture<'_, Result<String, String>> {
        self.scrapes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let h = self
            .heights
            .lock()
            .unwrap()
            .get(&addr)
            .copied()
            .unwrap_or(1);
        Box::pin(async move {
            Ok(format!(
                "# TYPE syncnet_chain_head_height gauge\nsyncnet_chain_head_height {h}\nprocess_resident_memory_bytes 1000000\n# EOF\n"
            ))
        })
    }
    fn put_faults<'a>(
        &'a self,
        addr: SocketAddr,
        faults: &'a Faults,
        _token: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        self.puts.lock().unwrap().push((addr, faults.clone()));
        Box::pin(async { Ok(()) })
    }
}

const SPEC: &str = r#"
apiVersion: syncnet.dev/v1alpha1
kind: SyncNetwork
metadata: {name: t, namespace: default}
spec:
  regions: [{name: us, replicas: 2}, {name: eu, replicas: 3}]
  producer: {region: us, blockIntervalMs: 1000, payloadBytes: 1024}
  faults:
    - {name: kill-eu, everySecs: 60, durationSecs: 10, target: {region: eu, count: 1}, action: kill-restart}
    - {name: split, atSecs: 30, durationSecs: 20, target: {region: eu}, action: partition, regions: [us]}
  soak: {durationSecs: 600, warmupSecs: 60, scrapeIntervalSecs: 5}
"#;

fn network(edit: impl FnOnce(&mut Value)) -> Value {
    let sn = SyncNetwork::from_yaml(SPEC).unwrap();
    let mut v = serde_json::to_value(&sn).unwrap();
    v["metadata"]["uid"] = "7d2c1f0e-0000-4000-8000-000000000001".into();
    v["metadata"]["generation"] = 1.into();
    v["metadata"]["creationTimestamp"] = "2026-11-25T10:00:00Z".into();
    v["metadata"]["finalizers"] = json!([controller::FINALIZER]);
    v["metadata"]["resourceVersion"] = "1".into();
    edit(&mut v);
    v
}

struct Harness {
    world: Arc<Mutex<World>>,
    ctx: Arc<Context>,
    pods: Arc<FakePods>,
    clock: Arc<Mutex<jiff::Timestamp>>,
    _server: tokio::task::JoinHandle<()>,
}

const T0: &str = "2026-11-25T10:00:30Z";

fn harness(sn: Value) -> Harness {
    harness_with(sn, |_| {})
}

fn harness_with(sn: Value, edit: impl FnOnce(&mut Context)) -> Harness {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let world = Arc::new(Mutex::new(World {
        sn,
        ..World::default()
    }));
    let server = serve(handle, world.clone());
    let pods = Arc::new(FakePods::default());
    let clock = Arc::new(Mutex::new(T0.parse::<jiff::Timestamp>().unwrap()));
    let c2 = clock.clone();
    let mut ctx = Context::new(
        client,
        pods.clone(),
        Arc::new(move || *c2.lock().unwrap()),
        Options::default(),
    );
    edit(&mut ctx);
    let ctx = Arc::new(ctx);
    Harness {
        world,
        ctx,
        pods,
        clock,
        _server: server,
    }
}

impl Harness {
    /// A new operator process on the same API server: nothing of the old one's memory survives.
    fn restart(&self) -> Harness {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = serve(handle, self.world.clone());
        let c2 = self.clock.clone();
        let ctx = Context::new(
            Client::new(service, "default"),
            self.pods.clone(),
            Arc::new(move || *c2.lock().unwrap()),
            Options::default(),
        );
        Harness {
            world: self.world.clone(),
            ctx: Arc::new(ctx),
            pods: self.pods.clone(),
            clock: self.clock.clone(),
            _server: server,
        }
    }
    async fn try_reconcile(&self) -> Result<(), String> {
        let sn: SyncNetwork =
            serde_json::from_value(self.world.lock().unwrap().sn.clone()).unwrap();
        controller::reconcile(Arc::new(sn), self.ctx.clone())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn policy_names(&self) -> Vec<String> {
        self.world
            .lock()
            .unwrap()
            .policies
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    }
    async fn reconcile(&self) -> kube::runtime::controller::Action {
        let sn: SyncNetwork =
            serde_json::from_value(self.world.lock().unwrap().sn.clone()).unwrap();
        controller::reconcile(Arc::new(sn), self.ctx.clone())
            .await
            .unwrap()
    }
    fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.world.lock().unwrap().calls)
    }
    fn advance(&self, secs: i64) {
        let mut c = self.clock.lock().unwrap();
        *c = c
            .checked_add(jiff::SignedDuration::from_secs(secs))
            .unwrap();
    }
    fn sn(&self) -> SyncNetwork {
        serde_json::from_value(self.world.lock().unwrap().sn.clone()).unwrap()
    }
    /// Every pod of the network exists, is ready and has an IP.
    fn all_pods_ready(&self) {
        let sn = self.sn();
        let names = render::pod_names("t", &sn.spec);
        let mut w = self.world.lock().unwrap();
        w.pods = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                json!({"apiVersion":"v1","kind":"Pod",
                    "metadata":{"name": n, "namespace":"default", "labels": {"syncnet.dev/network":"t"}},
                    "status":{"podIP": format!("10.0.0.{}", i + 1),
                              "conditions":[{"type":"Ready","status":"True"}]}})
            })
            .collect();
    }
}

/// A network in networkPolicy partition mode whose pods are ready and whose soak has started.
async fn policy_mode_started() -> Harness {
    let h = harness(network(|v| {
        v["spec"]["kubernetes"] = json!({"partitions": "networkPolicy"})
    }));
    h.all_pods_ready();
    h.reconcile().await;
    h
}

fn applied<'a>(calls: &'a [Call], resource: &str) -> Vec<&'a Call> {
    calls
        .iter()
        .filter(|c| c.method == Method::PATCH && c.path.contains(&format!("/{resource}/")))
        .collect()
}

fn status_patch(calls: &[Call]) -> Value {
    calls
        .iter()
        .rev()
        .find(|c| c.path.ends_with("/syncnetworks/t/status"))
        .expect("a status patch")
        .body["status"]
        .clone()
}

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
    let eu: syncnet_node::config::NodeConfig =
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
    let plans = stressnet::plan::nodes(&sn.spec, std::path::Path::new("/"));
    let windows = stressnet::plan::schedule(&sn.spec, &plans, controller::seed(&sn)).unwrap();
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

/// A Prometheus on 127.0.0.1 that answers instant queries with a head height per pod, stamped
/// with the time asked for, and records the forms it was sent.
struct FakePrometheus {
    url: String,
    heights: Arc<Mutex<BTreeMap<String, u64>>>,
    forms: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
    fail: Arc<std::sync::atomic::AtomicBool>,
}

async fn fake_prometheus() -> FakePrometheus {
    let heights: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let forms: Arc<Mutex<Vec<BTreeMap<String, String>>>> = Arc::default();
    let fail: Arc<std::sync::atomic::AtomicBool> = Arc::default();
    let (h, f, x) = (heights.clone(), forms.clone(), fail.clone());
    let app = axum::Router::new().route(
        "/prom/api/v1/query",
        axum::routing::post(move |body: String| {
            let (h, f, x) = (h.clone(), f.clone(), x.clone());
            async move {
                let form: BTreeMap<String, String> = form_urlencoded::parse(body.as_bytes())
                    .into_owned()
                    .collect();
                let at: f64 = form["time"].parse().unwrap();
                f.lock().unwrap().push(form);
                if x.load(std::sync::atomic::Ordering::Relaxed) {
                    return (
                        axum::http::StatusCode::BAD_REQUEST,
                        json!({"status":"error","errorType":"bad_data","error":"boom"}).to_string(),
                    );
                }
                let result: Vec<Value> = h
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(pod, height)| {
                        json!({"metric": {"__name__": "syncnet_chain_head_height", "pod": pod,
                                          "namespace": "default", "job": "pods"},
                               "value": [at, height.to_string()]})
                    })
                    .collect();
                (
                    axum::http::StatusCode::OK,
                    json!({"status":"success","data":{"resultType":"vector","result": result}})
                        .to_string(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/prom", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    FakePrometheus {
        url,
        heights,
        forms,
        fail,
    }
}

#[tokio::test]
async fn with_a_prometheus_url_the_series_come_from_prometheus_and_no_pod_is_scraped() {
    let prom = fake_prometheus().await;
    let url = prom.url.clone();
    let h = harness_with(network(|_| {}), move |ctx| {
        ctx.source = controller::Source::Prometheus {
            prom: syncnet_operator::prom::Prometheus::new(&url, "pod", "namespace").unwrap(),
            http: stressnet::node_http::client(),
        }
    });
    h.all_pods_ready();
    let names = render::pod_names("t", &h.sn().spec);
    for step in 0..3u64 {
        {
            let mut hs = prom.heights.lock().unwrap();
            for (i, n) in names.iter().enumerate() {
                // The last eu pod stays at 3 while the rest follow the head.
                let height = if i == names.len() - 1 { 3 } else { 10 + step };
                hs.insert(n.clone(), height);
            }
        }
        h.reconcile().await;
        h.advance(5);
    }
    let st = status_patch(&h.take_calls());
    assert_eq!(st["head"], 12);
    assert_eq!(st["regions"][1]["name"], "eu");
    assert_eq!(st["regions"][1]["maxLag"], 9);
    assert_eq!(
        h.pods.scrapes.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "no pod is scraped when Prometheus is the source"
    );
    let forms = prom.forms.lock().unwrap().clone();
    assert_eq!(forms.len(), 3, "one query per reconcile");
    let q = &forms[0]["query"];
    assert!(q.contains("namespace=\"default\""), "{q}");
    assert!(q.contains(&format!("pod=~\"{}\"", names.join("|"))), "{q}");
    assert_eq!(
        forms[0]["time"], "1795600830.000",
        "the operator's clock: {T0}"
    );

    // A failing Prometheus is counted and changes nothing already known; reconcile goes on.
    prom.fail.store(true, std::sync::atomic::Ordering::Relaxed);
    h.reconcile().await;
    // Nothing changed, so nothing is written; what the status holds still stands.
    let calls = h.take_calls();
    assert!(
        calls
            .iter()
            .all(|c| !c.path.ends_with("/status") || c.body["status"]["head"] == 12)
    );
    assert_eq!(h.world.lock().unwrap().sn["status"]["head"], 12);
    let m = h.ctx.metrics.render();
    assert!(
        m.contains("syncnet_operator_prometheus_queries_total{outcome=\"error\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("syncnet_operator_prometheus_queries_total{outcome=\"ok\"} 3"),
        "{m}"
    );
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
