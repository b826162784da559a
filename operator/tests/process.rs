//! The operator binary against a fake API server on 127.0.0.1: it refuses to start without its
//! CRD and says how to install it, reports a failing watch on /readyz, and exits promptly on
//! SIGTERM while its watch keeps failing (kube's own signal handling waited for a second signal).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::any;

/// What the fake API server answers: the discovery document for syncnet.dev/v1alpha1 (or 404,
/// the CRD missing), and 500 for everything else (a failing list and watch).
async fn api_server(crd: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(any(move |uri: axum::http::Uri| async move {
        if uri.path() == "/apis/syncnet.dev/v1alpha1" {
            if crd {
                let body = r#"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"syncnet.dev/v1alpha1","resources":[{"name":"syncnetworks","singularName":"syncnetwork","namespaced":true,"kind":"SyncNetwork","verbs":["get","list","watch","patch"]}]}"#;
                return (StatusCode::OK, body.to_owned());
            }
            return (
                StatusCode::NOT_FOUND,
                r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"metadata":{}}"#.to_owned(),
            );
        }
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"InternalError","code":500,"message":"etcd is down","metadata":{}}"#.to_owned(),
        )
    }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn operator(api: SocketAddr, listen: SocketAddr, dir: &tempfile::TempDir) -> Child {
    let kubeconfig = common::kubeconfig(dir, api);
    Command::new(env!("CARGO_BIN_EXE_syncnet-operator"))
        .args(["run", "--listen", &listen.to_string()])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The child's exit within `limit`, or None.
fn exits_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Some((code, body))
}

fn output(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_crd_the_operator_exits_and_says_how_to_install_it() {
    let api = api_server(false).await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = operator(api, common::free_port(), &dir);
    let status = exits_within(&mut child, Duration::from_secs(20));
    let Some(status) = status else {
        let _ = child.kill();
        panic!("still running without its CRD: {}", output(child));
    };
    assert!(!status.success());
    let text = output(child);
    assert!(
        text.contains("syncnetworks.syncnet.dev") && text.contains("not installed"),
        "{text}"
    );
    assert!(text.contains("kubectl apply"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_watch_shows_on_readyz_and_sigterm_still_exits_within_5_s() {
    let api = api_server(true).await;
    let dir = tempfile::tempdir().unwrap();
    let listen = common::free_port();
    let mut child = operator(api, listen, &dir);
    // Live, not ready: its watch fails.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = None;
    while Instant::now() < deadline {
        if let (Some(h), Some(r)) = (get(listen, "/healthz"), get(listen, "/readyz"))
            && h.0 == 200
            && r.0 == 503
            && r.1.contains("failing")
        {
            seen = Some(r.1);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if seen.is_none() {
        let _ = child.kill();
        panic!(
            "/readyz never reported the failing watch: {}",
            output(child)
        );
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = exits_within(&mut child, Duration::from_secs(5));
    let Some(status) = status else {
        let _ = child.kill();
        panic!("no exit within 5 s of SIGTERM: {}", output(child));
    };
    assert!(status.success(), "{status:?}: {}", output(child));
    eprintln!("exited {:?} after SIGTERM", started.elapsed());
}
