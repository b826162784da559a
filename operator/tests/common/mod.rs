//! What the tests that run the operator binary share: a kubeconfig for an API server on
//! 127.0.0.1, a free port, and a merge patch as the apiserver applies it.

#![allow(dead_code)]

pub mod harness;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use serde_json::Value;

/// A kubeconfig in `dir` for the API server at `api` (plain HTTP, no credentials).
pub fn kubeconfig(dir: &tempfile::TempDir, api: SocketAddr) -> PathBuf {
    let path = dir.path().join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: 'http://{api}'}}}}]\n\
             users: [{{name: fake, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: default}}}}]\n\
             current-context: fake\n"
        ),
    )
    .unwrap();
    path
}

pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A JSON merge patch (RFC 7386): objects merge, `null` removes, anything else replaces.
pub fn merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                if v.is_null() {
                    a.remove(k);
                } else {
                    merge(a.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (a, b) => *a = b.clone(),
    }
}
