//! Helpers for tests that drive the `syncnode` binary.
#![allow(dead_code)]

pub mod hostile;
pub mod net;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use syncnet_node::chain::H256;
use syncnet_node::config::NetworkConfig;
use syncnet_node::keys;

pub fn syncnode() -> Command {
    Command::new(env!("CARGO_BIN_EXE_syncnode"))
}

/// Runs `syncnode` with `args`, asserts it succeeded, and parses its stdout as JSON.
pub fn syncnode_json<I, S>(args: I) -> serde_json::Value
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = syncnode().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Kills the child on drop so a failing test leaves no process behind.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A throw-away network: producer key, network.yaml, node.yaml in a temp dir.
pub struct Devnet {
    pub dir: tempfile::TempDir,
}

impl Devnet {
    pub fn new(producer_yaml: &str) -> Devnet {
        let dir = tempfile::tempdir().unwrap();
        let key = keys::generate();
        keys::write(&dir.path().join("producer.key"), &key, "producer", false).unwrap();
        let net = NetworkConfig::new("testnet", 1_700_000_000_000, keys::public_key(&key)).unwrap();
        std::fs::write(
            dir.path().join("network.yaml"),
            serde_yaml::to_string(&net).unwrap(),
        )
        .unwrap();
        let node = format!(
            "network_file: network.yaml\ndata_dir: data\nmetrics:\n  listen: 127.0.0.1:0\nproducer:\n  key_file: producer.key\n{producer_yaml}"
        );
        std::fs::write(dir.path().join("node.yaml"), node).unwrap();
        Devnet { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn spec(&self) -> syncnet_node::chain::ChainSpec {
        NetworkConfig::load(&self.path("network.yaml"))
            .unwrap()
            .chain_spec()
            .unwrap()
    }

    pub fn producer_key(&self) -> H256 {
        keys::public_key(&keys::read(&self.path("producer.key")).unwrap())
    }
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Minimal HTTP/1.1 GET over loopback; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, "")
}

/// Minimal HTTP/1.1 request over loopback; returns (status, body).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    exchange(addr, method, path, "", body).map(|(status, _, body)| (status, body))
}

/// GET with extra request headers; returns (status, response head, body).
pub fn http_get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String, String)> {
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    exchange(addr, "GET", path, &extra, "")
}

/// A response header's value (the first of that name, case-insensitive).
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra_headers: &str,
    body: &str,
) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra_headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, head.to_owned(), body.to_owned()))
}

/// Value of a sample (`name` or `name{labels}` as rendered) in either exposition format.
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Reads `<data_dir>/syncnode.addrs.json` once the node has written it.
pub fn metrics_addr(data_dir: &Path) -> SocketAddr {
    wait_for("the node's addrs file", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(data_dir.join("syncnode.addrs.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["metrics"].as_str()?.parse().ok()
    })
}
