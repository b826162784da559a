//! The mocked API server the reconcile tests (`reconcile*.rs`) run against (a tower-test pair): a
//! small in-memory apiserver answers what the reconciler asks and records every request, fake pods
//! answer scrapes, and a [`Harness`] drives the reconciler on a clock the test moves.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use syncnet_crds::SyncNetwork;
use syncnet_operator::controller::{self, Context, PodIo};
use syncnet_operator::render::{self, Options};
use syncnet_proto::faults::Faults;

#[derive(Clone, Debug)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub body: Value,
}

#[derive(Default)]
pub struct World {
    pub sn: Value,
    secret: Option<Value>,
    pods: Vec<Value>,
    pub policies: Vec<Value>,
    calls: Vec<Call>,
    /// The next request with this method to this resource fails with a 500.
    pub fail_next: Option<(Method, &'static str)>,
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
                    super::merge(&mut self.sn, &c.body);
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
pub struct FakePods {
    pub heights: Mutex<BTreeMap<SocketAddr, u64>>,
    pub scrapes: std::sync::atomic::AtomicUsize,
    pub puts: Mutex<Vec<(SocketAddr, Faults)>>,
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

pub fn network(edit: impl FnOnce(&mut Value)) -> Value {
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

pub struct Harness {
    pub world: Arc<Mutex<World>>,
    pub ctx: Arc<Context>,
    pub pods: Arc<FakePods>,
    clock: Arc<Mutex<jiff::Timestamp>>,
    _server: tokio::task::JoinHandle<()>,
}

pub const T0: &str = "2026-11-25T10:00:30Z";

pub fn harness(sn: Value) -> Harness {
    harness_with(sn, |_| {})
}

pub fn harness_with(sn: Value, edit: impl FnOnce(&mut Context)) -> Harness {
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
    pub fn restart(&self) -> Harness {
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
    pub async fn try_reconcile(&self) -> Result<(), String> {
        let sn: SyncNetwork =
            serde_json::from_value(self.world.lock().unwrap().sn.clone()).unwrap();
        controller::reconcile(Arc::new(sn), self.ctx.clone())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    pub fn policy_names(&self) -> Vec<String> {
        self.world
            .lock()
            .unwrap()
            .policies
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    }
    pub async fn reconcile(&self) -> kube::runtime::controller::Action {
        let sn: SyncNetwork =
            serde_json::from_value(self.world.lock().unwrap().sn.clone()).unwrap();
        controller::reconcile(Arc::new(sn), self.ctx.clone())
            .await
            .unwrap()
    }
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.world.lock().unwrap().calls)
    }
    pub fn advance(&self, secs: i64) {
        let mut c = self.clock.lock().unwrap();
        *c = c
            .checked_add(jiff::SignedDuration::from_secs(secs))
            .unwrap();
    }
    pub fn sn(&self) -> SyncNetwork {
        serde_json::from_value(self.world.lock().unwrap().sn.clone()).unwrap()
    }
    /// Every pod of the network exists, is ready and has an IP.
    pub fn all_pods_ready(&self) {
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

pub fn applied<'a>(calls: &'a [Call], resource: &str) -> Vec<&'a Call> {
    calls
        .iter()
        .filter(|c| c.method == Method::PATCH && c.path.contains(&format!("/{resource}/")))
        .collect()
}

pub fn status_patch(calls: &[Call]) -> Value {
    calls
        .iter()
        .rev()
        .find(|c| c.path.ends_with("/syncnetworks/t/status"))
        .expect("a status patch")
        .body["status"]
        .clone()
}
