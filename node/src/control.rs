//! Runtime control API, served next to /metrics: `GET /faults`, `PUT /faults` (the whole set, JSON,
//! validated; a rejected set changes nothing), `GET /status`, and profiles in pprof format
//! (gzipped protobuf, what `go tool pprof` and Pyroscope read): `GET /debug/pprof/heap` (bytes in
//! use per allocating stack) and `GET /debug/pprof/profile?seconds=N` (CPU samples, N ≤ 60,
//! default 10). Not for public exposure: bind it to a private address, and set a bearer token
//! (`metrics.control_token_file` or `SYNCNODE_CONTROL_TOKEN`) to require
//! `Authorization: Bearer <token>` on `PUT` and on the profiles (they show code and cost CPU).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use serde_json::json;
use tokio::sync::Mutex;

use crate::faults::{FaultError, Faults};

pub type ApplyFn = Arc<dyn Fn(Faults) -> BoxFuture<'static, ()> + Send + Sync>;
/// Node-dependent checks of a fault set (e.g. a partition needs network emulation).
pub type CheckFn = Arc<dyn Fn(&Faults) -> Result<(), FaultError> + Send + Sync>;
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

pub struct ControlState {
    faults: Mutex<Faults>,
    check: CheckFn,
    apply: ApplyFn,
    status: StatusFn,
    token: Option<String>,
    body_timeout: std::time::Duration,
}

impl ControlState {
    pub fn new(
        check: CheckFn,
        apply: ApplyFn,
        status: StatusFn,
        token: Option<String>,
    ) -> Arc<Self> {
        Arc::new(ControlState {
            faults: Mutex::new(Faults::default()),
            check,
            apply,
            status,
            token: token.filter(|t| !t.is_empty()),
            body_timeout: BODY_TIMEOUT,
        })
    }
}

pub fn router(state: Arc<ControlState>) -> axum::Router {
    axum::Router::new()
        .route("/faults", get(get_faults).put(put_faults))
        .route("/status", get(get_status))
        .route("/debug/pprof/heap", get(get_heap))
        .route("/debug/pprof/profile", get(get_cpu))
        .with_state(state)
}

async fn get_faults(State(s): State<Arc<ControlState>>) -> impl IntoResponse {
    Json(s.faults.lock().await.clone())
}

async fn get_status(State(s): State<Arc<ControlState>>) -> impl IntoResponse {
    Json((s.status)())
}

/// A 401 answer unless the request carries the bearer token (when one is set).
fn unauthorized(s: &ControlState, headers: &HeaderMap) -> Option<Response> {
    if let Some(token) = &s.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            let body = json!({ "error": "missing or wrong bearer token" });
            return Some((StatusCode::UNAUTHORIZED, Json(body)).into_response());
        }
    }
    None
}

#[derive(serde::Deserialize)]
struct CpuQuery {
    seconds: Option<u64>,
}

async fn get_heap(State(s): State<Arc<ControlState>>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    pprof_response(crate::profile::heap().await)
}

async fn get_cpu(
    State(s): State<Arc<ControlState>>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<CpuQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    let secs = match query {
        Ok(q) => q.seconds.unwrap_or(10),
        Err(e) => {
            let body = json!({ "error": e.body_text(), "field": "seconds" });
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    if !(1..=crate::profile::MAX_CPU_SECS).contains(&secs) {
        let body = json!({
            "error": format!("seconds must be 1..={}", crate::profile::MAX_CPU_SECS),
            "field": "seconds",
        });
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    pprof_response(crate::profile::cpu(secs).await)
}

fn pprof_response(r: Result<Vec<u8>, crate::profile::ProfileError>) -> Response {
    use crate::profile::ProfileError;
    match r {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(e) => {
            let code = match e {
                ProfileError::Unavailable(_) => StatusCode::NOT_IMPLEMENTED,
                ProfileError::Busy => StatusCode::CONFLICT,
                ProfileError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (code, Json(json!({ "error": e.to_string() }))).into_response()
        }
    }
}

/// A request body (`PUT /faults`) must arrive within this (408 otherwise).
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Fault sets are small; a body beyond this is refused (413).
const MAX_BODY: usize = 64 * 1024;

async fn put_faults(State(s): State<Arc<ControlState>>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    if let Some(r) = unauthorized(&s, &parts.headers) {
        return r;
    }
    let body: Bytes =
        match tokio::time::timeout(s.body_timeout, axum::body::to_bytes(body, MAX_BODY)).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => {
                let body =
                    json!({ "error": format!("body over {MAX_BODY} bytes"), "field": "body" });
                return (StatusCode::PAYLOAD_TOO_LARGE, Json(body)).into_response();
            }
            Err(_) => {
                let body = json!({ "error": "body not received in time", "field": "body" });
                return (StatusCode::REQUEST_TIMEOUT, Json(body)).into_response();
            }
        };
    let faults = match Faults::from_json(&body).and_then(|f| (s.check)(&f).map(|()| f)) {
        Ok(f) => f,
        Err(e) => {
            let body = json!({ "error": e.to_string(), "field": e.field });
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    // One writer at a time: the lock is held while the set is applied.
    let mut current = s.faults.lock().await;
    (s.apply)(faults.clone()).await;
    *current = faults.clone();
    (StatusCode::OK, Json(json!({ "faults": faults }))).into_response()
}

/// Limits of the HTTP port (metrics, health, control). 300 connections trickling their headers
/// once held 300 fds for as long as they liked.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// A request's headers must arrive within this.
    pub header_timeout: std::time::Duration,
    /// A connection is closed after this, busy or not (a CPU profile takes up to 60 s; scrapers
    /// reconnect).
    pub connection_lifetime: std::time::Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 64,
            header_timeout: std::time::Duration::from_secs(5),
            connection_lifetime: std::time::Duration::from_secs(120),
        }
    }
}

/// Serves `app` on `listener` until `stop` turns true, within `limits`. Hand-rolled on
/// hyper-util's pieces because `axum::serve` has neither a header-read timeout nor a cap.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
    refused: prometheus_client::metrics::counter::Counter,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let sock = tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, _)) => sock,
                Err(e) => {
                    // Out of fds, say: wait a little rather than spin.
                    tracing::warn!("http accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused.inc();
            drop(sock);
            continue;
        };
        let svc = hyper_util::service::TowerToHyperService::new(app.clone());
        conns.spawn(async move {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = b.serve_connection(hyper_util::rt::TokioIo::new(sock), svc);
            let _ = tokio::time::timeout(limits.connection_lifetime, conn).await;
            drop(slot);
        });
    }
    conns.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn state(token: Option<&str>) -> (Arc<ControlState>, Arc<std::sync::Mutex<Vec<Faults>>>) {
        let applied = Arc::new(std::sync::Mutex::new(vec![]));
        let a = applied.clone();
        let apply: ApplyFn = Arc::new(move |f| {
            a.lock().unwrap().push(f);
            Box::pin(async {})
        });
        let status: StatusFn = Arc::new(|| json!({ "height": 7 }));
        // Stands in for a node without network emulation.
        let check: CheckFn = Arc::new(|f: &Faults| f.check(None));
        (
            ControlState::new(check, apply, status, token.map(str::to_owned)),
            applied,
        )
    }

    async fn call(s: &Arc<ControlState>, req: Request<Body>) -> (StatusCode, serde_json::Value) {
        let resp = router(s.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn put(body: &str) -> Request<Body> {
        Request::put("/faults")
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    #[tokio::test]
    async fn valid_put_applies_and_get_shows_it() {
        let (s, applied) = state(None);
        let body = r#"{"stall_ms": 250}"#;
        let (code, v) = call(&s, put(body)).await;
        assert_eq!(code, StatusCode::OK, "{v}");
        assert_eq!(v["faults"]["stall_ms"], 250);
        assert_eq!(applied.lock().unwrap().len(), 1);
        assert_eq!(applied.lock().unwrap()[0].stall_ms, 250);
        let (code, v) = call(&s, Request::get("/faults").body(Body::empty()).unwrap()).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(v["stall_ms"], 250);
        let (_, v) = call(&s, Request::get("/status").body(Body::empty()).unwrap()).await;
        assert_eq!(v["height"], 7);
    }

    #[tokio::test]
    async fn invalid_put_is_400_naming_the_field_and_changes_nothing() {
        let (s, applied) = state(None);
        call(&s, put(r#"{"stall_ms": 5}"#)).await;
        for (body, field) in [
            (
                r#"{"stall_ms": 10, "setup_failure_rate": 3}"#,
                "setup_failure_rate",
            ),
            (r#"{"stal_ms": 10}"#, "stal_ms"),
            (r#"{"stall_ms": "x"}"#, "stall_ms"),
            ("[not json", "body"),
            (r#"{"partition": {"regions": ["eu"]}}"#, "partition"),
        ] {
            let (code, v) = call(&s, put(body)).await;
            assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(v["field"], field, "{body}: {v}");
        }
        assert_eq!(
            applied.lock().unwrap().len(),
            1,
            "rejected sets must not be applied"
        );
        let (_, v) = call(&s, Request::get("/faults").body(Body::empty()).unwrap()).await;
        assert_eq!(v["stall_ms"], 5, "state must be unchanged");
    }

    #[tokio::test]
    async fn bearer_token_guards_put() {
        let (s, applied) = state(Some("sekret"));
        let (code, _) = call(&s, put("{}")).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        let wrong = Request::put("/faults")
            .header(header::AUTHORIZATION, "Bearer nope")
            .body(Body::from("{}"))
            .unwrap();
        assert_eq!(call(&s, wrong).await.0, StatusCode::UNAUTHORIZED);
        let right = Request::put("/faults")
            .header(header::AUTHORIZATION, "Bearer sekret")
            .body(Body::from(r#"{"isolate": true}"#))
            .unwrap();
        assert_eq!(call(&s, right).await.0, StatusCode::OK);
        assert_eq!(applied.lock().unwrap().len(), 1);
        // Reading needs no token.
        let (code, _) = call(&s, Request::get("/faults").body(Body::empty()).unwrap()).await;
        assert_eq!(code, StatusCode::OK);
    }

    fn get(uri: &str, token: Option<&str>) -> Request<Body> {
        let mut r = Request::get(uri);
        if let Some(t) = token {
            r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        r.body(Body::empty()).unwrap()
    }

    // Paused time: the profile's seconds pass at once (it then holds next to no samples, which is
    // still a valid profile).
    #[tokio::test(start_paused = true)]
    async fn profiles_need_the_token_and_valid_seconds() {
        let (s, _) = state(Some("sekret"));
        for uri in ["/debug/pprof/heap", "/debug/pprof/profile?seconds=1"] {
            assert_eq!(call(&s, get(uri, None)).await.0, StatusCode::UNAUTHORIZED);
            assert_eq!(
                call(&s, get(uri, Some("nope"))).await.0,
                StatusCode::UNAUTHORIZED
            );
        }
        for q in ["seconds=0", "seconds=61", "seconds=x"] {
            let (code, v) = call(
                &s,
                get(&format!("/debug/pprof/profile?{q}"), Some("sekret")),
            )
            .await;
            assert_eq!(code, StatusCode::BAD_REQUEST, "{q}");
            assert_eq!(v["field"], "seconds", "{q}");
        }
        // This test binary runs the system allocator: no heap profiling, said plainly.
        let (code, v) = call(&s, get("/debug/pprof/heap", Some("sekret"))).await;
        assert_eq!(code, StatusCode::NOT_IMPLEMENTED);
        assert!(v["error"].as_str().unwrap().contains("jemalloc"), "{v}");
    }

    // The only test here that takes CPU profiles: the profiler is one per process.
    #[tokio::test(start_paused = true)]
    async fn a_cpu_profile_is_gzipped_pprof_one_at_a_time() {
        let (s, _) = state(None);
        let first =
            tokio::spawn(router(s.clone()).oneshot(get("/debug/pprof/profile?seconds=1", None)));
        // Let it take the profiler and start sampling.
        tokio::task::yield_now().await;
        let (code, v) = call(&s, get("/debug/pprof/profile?seconds=1", None)).await;
        assert_eq!(code, StatusCode::CONFLICT, "{v}");
        let resp = first.await.unwrap().unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 24)
            .await
            .unwrap();
        assert_eq!(body[..2], [0x1f, 0x8b]);
        // Free again.
        assert!(crate::profile::cpu(1).await.is_ok());
    }

    /// 300 connections trickling their headers once held 300 fds for as long as they liked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_http_port_caps_connections_and_cuts_slow_headers_and_bodies() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (s, _) = state(None);
        let s = Arc::new(ControlState {
            body_timeout: std::time::Duration::from_millis(300),
            ..Arc::try_unwrap(s).ok().expect("one owner")
        });
        let limits = HttpLimits {
            max_connections: 2,
            header_timeout: std::time::Duration::from_millis(300),
            connection_lifetime: std::time::Duration::from_secs(60),
        };
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let refused = prometheus_client::metrics::counter::Counter::default();
        let server = tokio::spawn(serve(listener, router(s), limits, stop, refused.clone()));
        let ends_within = |mut c: tokio::net::TcpStream| async move {
            let mut buf = vec![];
            tokio::time::timeout(std::time::Duration::from_secs(5), c.read_to_end(&mut buf))
                .await
                .is_ok()
        };
        // Two slow-header connections take both slots; a third is closed on accept.
        let mut a = tokio::net::TcpStream::connect(addr).await.unwrap();
        a.write_all(b"GET /faults HTTP/1.1\r\n").await.unwrap();
        let mut b = tokio::net::TcpStream::connect(addr).await.unwrap();
        b.write_all(b"GET /status HT").await.unwrap();
        let c = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(ends_within(c).await, "a third connection was kept");
        assert_eq!(refused.get(), 1);
        // The slow headers are cut at their deadline.
        assert!(ends_within(a).await && ends_within(b).await);
        // A body that never finishes: 408, within the body timeout.
        let mut d = tokio::net::TcpStream::connect(addr).await.unwrap();
        d.write_all(b"PUT /faults HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
            .await
            .unwrap();
        let mut resp = vec![0u8; 64];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), d.read(&mut resp))
            .await
            .unwrap()
            .unwrap();
        let head = String::from_utf8_lossy(&resp[..n]).to_string();
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
        stop_tx.send(true).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
    }
}
