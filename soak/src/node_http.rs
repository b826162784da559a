//! HTTP to a node's metrics port: scraping `/metrics`, `PUT /faults` and profiles on the control
//! API. The one client both the local runner and the operator use.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use syncnet_proto::faults::Faults;

pub type Http = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> Http {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http()
}

/// Every request to a node gives up after this long: a hung node must not hold up a scrape round.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// A node's answer is read up to this size (a /metrics body is tens of KiB); a larger one is an
/// error, not memory.
pub const MAX_BODY: usize = 16 << 20;

/// A request to a node's metrics port, with the control API's bearer token if there is one.
fn builder(
    method: hyper::Method,
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> hyper::http::request::Builder {
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    match token {
        Some(t) => req.header("authorization", format!("Bearer {t}")),
        None => req,
    }
}

/// One request to a node; `token` is the control API's bearer token, if the node requires one.
pub async fn request(
    client: &Http,
    method: hyper::Method,
    addr: SocketAddr,
    path: &str,
    body: Vec<u8>,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let req = builder(method, addr, path, token)
        .header("content-type", "application/json")
        .body(())
        .map_err(|e| e.to_string())?;
    send(client, req, body, TIMEOUT, MAX_BODY).await
}

/// Sends a request built by the caller (any `http://` URI; the connector resolves names) and
/// reads the answer, at most `max_bytes` of it, within `timeout`.
pub async fn send(
    client: &Http,
    req: hyper::Request<()>,
    body: Vec<u8>,
    timeout: Duration,
    max_bytes: usize,
) -> Result<(u16, String), String> {
    let (code, body) = send_bytes(client, req, body, timeout, max_bytes).await?;
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

/// [`send`], keeping the answer as bytes (profiles are binary).
pub async fn send_bytes(
    client: &Http,
    req: hyper::Request<()>,
    body: Vec<u8>,
    timeout: Duration,
    max_bytes: usize,
) -> Result<(u16, Bytes), String> {
    let req = req.map(|()| Full::new(Bytes::from(body)));
    let fut = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let code = resp.status().as_u16();
        let body = http_body_util::Limited::new(resp.into_body(), max_bytes)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok((code, body))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| "timed out".to_owned())?
}

pub async fn put_faults(
    client: &Http,
    addr: SocketAddr,
    f: &Faults,
    token: Option<&str>,
) -> Result<(), String> {
    let body = serde_json::to_vec(f).map_err(|e| e.to_string())?;
    match request(client, hyper::Method::PUT, addr, "/faults", body, token).await? {
        (200..=299, _) => Ok(()),
        (code, body) => Err(format!("PUT /faults: {code} {body}")),
    }
}

/// A profile from the control API (`/debug/pprof/heap`, `/debug/pprof/profile?seconds=N`): the
/// bytes of a 200, else an error quoting the node's answer. `wait` is how long the node takes to
/// answer (a CPU profile's seconds); [`TIMEOUT`] is added for the transfer.
pub async fn profile(
    client: &Http,
    addr: SocketAddr,
    path: &str,
    wait: Duration,
    token: Option<&str>,
) -> Result<Bytes, String> {
    let req = builder(hyper::Method::GET, addr, path, token)
        .body(())
        .map_err(|e| e.to_string())?;
    match send_bytes(client, req, vec![], wait + TIMEOUT, MAX_BODY).await? {
        (200, body) => Ok(body),
        (code, body) => Err(format!(
            "GET {path}: {code} {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )),
    }
}

/// `GET /metrics`: the body of a 200, else an error.
pub async fn scrape(client: &Http, addr: SocketAddr) -> Result<String, String> {
    match request(client, hyper::Method::GET, addr, "/metrics", vec![], None).await? {
        (200, body) => Ok(body),
        (code, _) => Err(format!("GET /metrics: {code}")),
    }
}
