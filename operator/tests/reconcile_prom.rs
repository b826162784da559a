//! Reconcile with Prometheus as the source of the series, against the mocked API server of
//! `common::harness` and a fake Prometheus.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::harness::{T0, harness_with, network, status_patch};
use serde_json::{Value, json};
use syncnet_operator::controller;
use syncnet_operator::render;

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
            http: soak::node_http::client(),
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
