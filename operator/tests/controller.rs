//! The operator binary's controller loop against an in-memory API server on 127.0.0.1 that
//! serves LIST and WATCH: one object the types cannot hold does not stop another network, and
//! the operator's own status writes do not wake reconciles (it reconciles at the scrape rate).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::any;
use serde_json::{Value, json};
use tokio::sync::broadcast;

#[derive(Default)]
struct Store {
    rv: u64,
    /// SyncNetworks by (namespace, name), stored as raw JSON: an invalid one stays invalid.
    networks: BTreeMap<(String, String), Value>,
    leases: BTreeMap<(String, String), Value>,
    /// Every request: which listener (operator) sent it, method, path, body.
    calls: Vec<(&'static str, String, String, Value)>,
}

#[derive(Clone)]
struct Api {
    store: Arc<Mutex<Store>>,
    events: broadcast::Sender<Value>,
    /// Pods every network reports as ready, at 127.0.0.1 (their scrapes are refused at once).
    ready_pods: bool,
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"metadata":{}}),
    )
}

fn empty_list(kind: &str, rv: u64) -> Value {
    json!({"apiVersion":"v1","kind": kind,"metadata":{"resourceVersion": rv.to_string()},"items":[]})
}

impl Api {
    /// A watch: the events after the request, as JSON lines, held open.
    fn watch(&self, networks: bool) -> Response {
        let rx = self.events.subscribe();
        let stream = futures::stream::unfold((rx, networks), |(mut rx, networks)| async move {
            if !networks {
                futures::future::pending::<()>().await;
            }
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        let mut line = serde_json::to_vec(&ev).unwrap();
                        line.push(b'\n');
                        return Some((Ok::<_, std::io::Error>(line), (rx, networks)));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap()
    }

    fn changed(&self, s: &mut Store, key: &(String, String)) -> Value {
        s.rv += 1;
        let rv = s.rv.to_string();
        let obj = s.networks.get_mut(key).unwrap();
        obj["metadata"]["resourceVersion"] = rv.into();
        let obj = obj.clone();
        let _ = self.events.send(json!({"type":"MODIFIED","object": obj}));
        obj
    }

    fn answer(
        &self,
        tag: &'static str,
        method: Method,
        path: &str,
        query: &str,
        body: Value,
    ) -> Response {
        let mut s = self.store.lock().unwrap();
        s.calls
            .push((tag, method.to_string(), path.to_owned(), body.clone()));
        let watch = query.contains("watch=true") || query.contains("watch=1");
        let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
        if path == "/apis/syncnet.dev/v1alpha1" {
            return json_response(
                StatusCode::OK,
                &json!({"kind":"APIResourceList","apiVersion":"v1","groupVersion":"syncnet.dev/v1alpha1",
                    "resources":[{"name":"syncnetworks","singularName":"syncnetwork","namespaced":true,"kind":"SyncNetwork","verbs":["list","watch","patch"]}]}),
            );
        }
        if path == "/apis/syncnet.dev/v1alpha1/syncnetworks" {
            if watch {
                drop(s);
                return self.watch(true);
            }
            let items: Vec<Value> = s.networks.values().cloned().collect();
            return json_response(
                StatusCode::OK,
                &json!({"apiVersion":"syncnet.dev/v1alpha1","kind":"SyncNetworkList",
                    "metadata":{"resourceVersion": s.rv.to_string()},"items": items}),
            );
        }
        if path == "/apis/apps/v1/statefulsets" {
            if watch {
                drop(s);
                return self.watch(false);
            }
            return json_response(StatusCode::OK, &empty_list("StatefulSetList", s.rv));
        }
        // /api(s)/<group...>/namespaces/<ns>/<resource>[/<name>[/status]]
        let Some(i) = seg.iter().position(|x| *x == "namespaces") else {
            return not_found();
        };
        let ns = seg.get(i + 1).copied().unwrap_or("").to_owned();
        let resource = seg.get(i + 2).copied().unwrap_or("");
        let name = seg.get(i + 3).map(|x| x.to_string());
        let status = seg.get(i + 4) == Some(&"status");
        match (method, resource, name) {
            // Leases: writes conditioned on the resourceVersion, as the apiserver does.
            (Method::GET, "leases", Some(n)) => match s.leases.get(&(ns, n)) {
                Some(l) => json_response(StatusCode::OK, l),
                None => not_found(),
            },
            (Method::POST, "leases", None) => {
                let n = body["metadata"]["name"].as_str().unwrap_or("").to_owned();
                if s.leases.contains_key(&(ns.clone(), n.clone())) {
                    return json_response(
                        StatusCode::CONFLICT,
                        &json!({"kind":"Status","apiVersion":"v1","status":"Failure","reason":"AlreadyExists","code":409,"metadata":{}}),
                    );
                }
                s.rv += 1;
                let mut l = body;
                l["metadata"]["resourceVersion"] = s.rv.to_string().into();
                s.leases.insert((ns, n), l.clone());
                json_response(StatusCode::CREATED, &l)
            }
            (Method::PUT, "leases", Some(n)) => {
                let key = (ns, n);
                let current = s
                    .leases
                    .get(&key)
                    .map(|l| l["metadata"]["resourceVersion"].clone());
                if current.is_none()
                    || current.as_ref() != Some(&body["metadata"]["resourceVersion"])
                {
                    return json_response(
                        StatusCode::CONFLICT,
                        &json!({"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Conflict","code":409,"metadata":{}}),
                    );
                }
                s.rv += 1;
                let mut l = body;
                l["metadata"]["resourceVersion"] = s.rv.to_string().into();
                s.leases.insert(key, l.clone());
                json_response(StatusCode::OK, &l)
            }
            (Method::PATCH, "syncnetworks", Some(n)) => {
                let key = (ns, n);
                if !s.networks.contains_key(&key) {
                    return not_found();
                }
                if status {
                    let st = body.get("status").cloned().unwrap_or(Value::Null);
                    common::merge(&mut s.networks.get_mut(&key).unwrap()["status"], &st);
                } else if let Some(ops) = body.as_array() {
                    // The finalizer helper's JSON patch: apply its adds and removes.
                    for op in ops {
                        let p = op["path"].as_str().unwrap_or("");
                        let obj = s.networks.get_mut(&key).unwrap();
                        match (op["op"].as_str(), p) {
                            (Some("add"), "/metadata/finalizers") => {
                                obj["metadata"]["finalizers"] = op["value"].clone()
                            }
                            (Some("add"), "/metadata/finalizers/-") => {
                                let f = obj["metadata"]["finalizers"]
                                    .as_array()
                                    .cloned()
                                    .unwrap_or_default();
                                let mut f = f;
                                f.push(op["value"].clone());
                                obj["metadata"]["finalizers"] = Value::Array(f);
                            }
                            _ => {}
                        }
                    }
                } else {
                    let obj = s.networks.get_mut(&key).unwrap();
                    common::merge(obj, &body);
                }
                let obj = self.changed(&mut s, &key);
                json_response(StatusCode::OK, &obj)
            }
            (Method::GET, "secrets", Some(_)) => not_found(),
            (Method::POST, "secrets", None) => json_response(StatusCode::CREATED, &body),
            (Method::GET, "pods", None) => {
                let sel = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("labelSelector="))
                    .map(|v| v.replace("%3D", "="))
                    .unwrap_or_default();
                let net = sel.rsplit('=').next().unwrap_or("").to_owned();
                let items: Vec<Value> = if self.ready_pods {
                    pod_names(&s, &ns, &net)
                        .into_iter()
                        .map(|p| json!({"apiVersion":"v1","kind":"Pod",
                            "metadata":{"name": p, "namespace": ns, "labels":{"syncnet.dev/network": net}},
                            "status":{"podIP":"127.0.0.1","conditions":[{"type":"Ready","status":"True"}]}}))
                        .collect()
                } else {
                    vec![]
                };
                json_response(
                    StatusCode::OK,
                    &json!({"apiVersion":"v1","kind":"PodList","metadata":{"resourceVersion":"1"},"items": items}),
                )
            }
            (Method::GET, "networkpolicies", None) => {
                json_response(StatusCode::OK, &empty_list("NetworkPolicyList", s.rv))
            }
            (Method::POST, "events", None) => json_response(StatusCode::CREATED, &body),
            (Method::PATCH, "events", Some(_)) => json_response(StatusCode::OK, &body),
            // Server-side apply of what a network becomes: echoed.
            (Method::PATCH, _, Some(_)) => json_response(StatusCode::OK, &body),
            _ => not_found(),
        }
    }
}

/// The pod names the operator derives for network `net` (stressnet's node order).
fn pod_names(s: &Store, ns: &str, net: &str) -> Vec<String> {
    let Some(obj) = s.networks.get(&(ns.to_owned(), net.to_owned())) else {
        return vec![];
    };
    let Ok(sn) = serde_json::from_value::<syncnet_crds::SyncNetwork>(obj.clone()) else {
        return vec![];
    };
    syncnet_operator::render::pod_names(net, &sn.spec)
}

async fn api_server(networks: Vec<Value>, ready_pods: bool) -> (SocketAddr, Api) {
    let (events, _) = broadcast::channel(1024);
    let mut store = Store::default();
    for mut n in networks {
        store.rv += 1;
        n["metadata"]["resourceVersion"] = store.rv.to_string().into();
        let key = (
            n["metadata"]["namespace"].as_str().unwrap().to_owned(),
            n["metadata"]["name"].as_str().unwrap().to_owned(),
        );
        store.networks.insert(key, n);
    }
    let api = Api {
        store: Arc::new(Mutex::new(store)),
        events,
        ready_pods,
    };
    let addr = listen(&api, "a").await;
    (addr, api)
}

/// Another address for the same API server, whose calls are recorded under `tag`: one per
/// operator, to tell which one acted.
async fn listen(api: &Api, tag: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route(
            "/{*path}",
            any(
                move |State(api): State<Api>,
                      method: Method,
                      Path(path): Path<String>,
                      RawQuery(q): RawQuery,
                      body: axum::body::Bytes| async move {
                    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    api.answer(
                        tag,
                        method,
                        &format!("/{path}"),
                        &q.unwrap_or_default(),
                        body,
                    )
                },
            ),
        )
        .with_state(api.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn network(name: &str, scrape_secs: u64, edit: impl FnOnce(&mut Value)) -> Value {
    let mut v = json!({
        "apiVersion": "syncnet.dev/v1alpha1", "kind": "SyncNetwork",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                     "generation": 1, "creationTimestamp": "2026-12-01T00:00:00Z"},
        "spec": {
            "regions": [{"name": "us", "replicas": 2}],
            "producer": {"region": "us", "blockIntervalMs": 1000, "payloadBytes": 1024},
            "soak": {"durationSecs": 3600, "warmupSecs": 60, "scrapeIntervalSecs": scrape_secs},
        }
    });
    edit(&mut v);
    v
}

struct Operator {
    child: Child,
    listen: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Operator {
    fn start(api: SocketAddr) -> Operator {
        Self::start_with(api, &[])
    }

    fn start_with(api: SocketAddr, env: &[(&str, &str)]) -> Operator {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = common::kubeconfig(&dir, api);
        let listen = common::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_syncnet-operator"))
            .args(["run", "--listen", &listen.to_string()])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("POD_NAMESPACE")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Operator {
            child,
            listen,
            _dir: dir,
        }
    }

    /// `syncnet_operator_reconciles_total`, summed over outcomes.
    fn reconciles(&self) -> Option<f64> {
        let mut s = TcpStream::connect_timeout(&self.listen, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(
            out.lines()
                .filter(|l| l.starts_with("syncnet_operator_reconciles_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_the_types_cannot_hold_does_not_stop_another_network() {
    let good = network("alpha", 5, |_| {});
    // Stored before the CRD bounded it: a u32 field beyond u32.
    let bad = network("beta", 5, |v| {
        v["spec"]["latency"] = json!({"jitterMs": 4294967296u64})
    });
    let (addr, api) = api_server(vec![good, bad], false).await;
    let op = Operator::start(addr);
    let calls = |api: &Api| -> Vec<(String, String, Value)> {
        api.store
            .lock()
            .unwrap()
            .calls
            .iter()
            .map(|(_, m, p, b)| (m.clone(), p.clone(), b.clone()))
            .collect()
    };
    // The good network is reconciled: its StatefulSet applied.
    eventually(
        "alpha's StatefulSet applied",
        Duration::from_secs(30),
        || {
            calls(&api)
                .iter()
                .any(|(m, p, _)| m == "PATCH" && p.ends_with("/statefulsets/alpha-producer"))
        },
    )
    .await;
    // The bad one is reported on itself: Failed, with the decode error, and a warning event.
    eventually("beta's status says why", Duration::from_secs(30), || {
        let s = api.store.lock().unwrap();
        let st = &s.networks[&("default".into(), "beta".into())]["status"];
        st["phase"] == "Failed"
            && st["conditions"][0]["reason"] == "InvalidObject"
            && st["conditions"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("does not decode"))
    })
    .await;
    assert!(
        calls(&api).iter().any(|(m, p, b)| m == "POST"
            && p.contains("/events")
            && b["reason"] == "InvalidObject"),
        "a warning event for beta"
    );
    // Nothing was made for it.
    assert!(
        !calls(&api)
            .iter()
            .any(|(m, p, _)| m == "PATCH" && p.contains("/statefulsets/beta"))
    );
    drop(op);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_writes_do_not_wake_reconciles_which_follow_the_scrape_interval() {
    // Pods ready at once (their scrapes are refused), so the soak runs and status is written.
    let (addr, api) = api_server(vec![network("gamma", 2, |_| {})], true).await;
    let op = Operator::start(addr);
    eventually("the soak runs", Duration::from_secs(30), || {
        let s = api.store.lock().unwrap();
        s.networks[&("default".into(), "gamma".into())]["status"]["phase"] == "Running"
    })
    .await;
    let mut first = None;
    eventually("metrics", Duration::from_secs(10), || {
        first = op.reconciles();
        first.is_some()
    })
    .await;
    // Status-only writes during the window (what every status patch is to a watcher): each is
    // a MODIFIED watch event with the same generation.
    let writer = {
        let api = api.clone();
        tokio::spawn(async move {
            for k in 0..1000u64 {
                tokio::time::sleep(Duration::from_millis(400)).await;
                let mut s = api.store.lock().unwrap();
                let key = ("default".to_owned(), "gamma".to_owned());
                s.networks.get_mut(&key).unwrap()["status"]["faultsBegun"] = json!(k % 7);
                api.changed(&mut s, &key);
            }
        })
    };
    let window = Duration::from_secs(10);
    let started = Instant::now();
    tokio::time::sleep(window).await;
    writer.abort();
    let elapsed = started.elapsed().as_secs_f64();
    let n = op.reconciles().unwrap() - first.unwrap();
    // One per scrape interval (2 s), plus a few for the debounce and the owned-object watch.
    let bound = elapsed / 2.0 + 3.0;
    eprintln!("{n} reconciles in {elapsed:.1} s (bound {bound:.1})");
    assert!(n >= 2.0, "it keeps reconciling on its interval: {n}");
    assert!(
        n <= bound,
        "{n} reconciles in {elapsed:.1} s: status writes wake reconciles"
    );
    drop(op);
}

/// Two operator replicas with leader election: only the lease holder writes anything; when it
/// dies, the other takes over after the lease duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_both_act_and_the_standby_takes_over() {
    let (a_addr, api) = api_server(vec![network("delta", 1, |_| {})], true).await;
    let b_addr = listen(&api, "b").await;
    let lease = |id: &'static str| -> Vec<(&'static str, &'static str)> {
        vec![
            ("POD_NAME", id),
            ("POD_NAMESPACE", "default"),
            ("SYNCNET_LEASE_DURATION_MS", "3000"),
            ("SYNCNET_LEASE_RENEW_DEADLINE_MS", "2000"),
            ("SYNCNET_LEASE_RETRY_MS", "300"),
        ]
    };
    let a = Operator::start_with(a_addr, &lease("a"));
    let b = Operator::start_with(b_addr, &lease("b"));
    // Writes to anything but the lease, per operator.
    let writes = |api: &Api, tag: &str| -> usize {
        api.store
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(t, m, p, _)| *t == tag && m != "GET" && !p.contains("/leases"))
            .count()
    };
    eventually("one of them reconciles", Duration::from_secs(30), || {
        writes(&api, "a") + writes(&api, "b") >= 5
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (wa, wb) = (writes(&api, "a"), writes(&api, "b"));
    assert!(
        (wa == 0) != (wb == 0),
        "exactly one replica acts: a wrote {wa}, b wrote {wb}"
    );
    let holder = api.store.lock().unwrap().leases
        [&("default".to_owned(), "syncnet-operator".to_owned())]["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(holder, if wa > 0 { "a" } else { "b" });
    // The leader dies without releasing the lease; the standby takes over after its duration.
    let (mut leader, _standby, standby_tag) = if wa > 0 { (a, b, "b") } else { (b, a, "a") };
    let _ = leader.child.kill();
    let _ = leader.child.wait();
    let before = writes(&api, standby_tag);
    let killed = Instant::now();
    eventually("the standby takes over", Duration::from_secs(20), || {
        writes(&api, standby_tag) > before
    })
    .await;
    eprintln!("standby acted {:?} after the leader died", killed.elapsed());
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "not before the lease expired"
    );
}
