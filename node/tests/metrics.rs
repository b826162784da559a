//! `/metrics` as scrapers see it, from the `syncnode` binary on 127.0.0.1: the format the `Accept`
//! header asks for, every family docs/config.md lists (and no other) from the start, and
//! `promtool check metrics` on a fresh and on a busy node.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// What Prometheus 2.x sends.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Family name (as its samples are called: a counter's with `_total`) → label names.
type Families = BTreeMap<String, BTreeSet<String>>;

/// The families of docs/config.md's metrics table.
fn documented() -> Families {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let table = doc
        .split("\n## Metrics\n")
        .nth(1)
        .expect("docs/config.md has a Metrics section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut out = Families::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let names = row.split('|').nth(1).unwrap();
        for name in names.split('`').skip(1).step_by(2) {
            assert!(
                name.starts_with("syncnet_") || name.starts_with("process_"),
                "docs/config.md: write metric names in full, one per row: `{name}`"
            );
            let (family, labels) = match name.split_once('{') {
                Some((f, l)) => (f, l.trim_end_matches('}').split(',').collect()),
                None => (name, BTreeSet::new()),
            };
            let labels = labels.into_iter().map(str::to_owned).collect();
            assert!(
                out.insert(family.to_owned(), labels).is_none(),
                "{family} is listed twice"
            );
        }
    }
    out
}

/// The families of an exposition (either format) that have samples, with their samples' label
/// names (`le` aside).
fn exposed(body: &str) -> Families {
    let mut out = Families::new();
    // The family being read: its name in the exposition, and as documented.
    let mut family: Option<(&str, String)> = None;
    for line in body.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let (name, kind) = t.split_once(' ').unwrap();
            let documented = match kind {
                // OpenMetrics names a counter family without its samples' `_total`.
                "counter" if !name.ends_with("_total") => format!("{name}_total"),
                _ => name.to_owned(),
            };
            family = Some((name, documented));
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, documented) = family.as_ref().expect("a sample before any # TYPE");
        assert!(line.starts_with(name), "{line} outside its family {name}");
        let labels = out.entry(documented.clone()).or_default();
        // The node's label values are enum labels: no commas, braces or quotes inside.
        if let Some((_, rest)) = line.split_once('{') {
            let set = rest.split_once('}').unwrap().0;
            for pair in set.split(',') {
                let key = pair.split_once('=').unwrap().0;
                if key != "le" {
                    labels.insert(key.to_owned());
                }
            }
        }
    }
    out
}

/// `GET /metrics` with this `Accept` (none for `None`): (content type, body).
fn scrape(addr: SocketAddr, accept: Option<&str>) -> (String, String) {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
    let (status, head, body) = http_get_with(addr, "/metrics", &headers).unwrap();
    assert_eq!(status, 200, "{head}");
    let content_type = header(&head, "content-type").unwrap_or("").to_owned();
    (content_type, body)
}

fn start(config: &Path) -> ChildGuard {
    ChildGuard(
        syncnode()
            .args(["run", "--log-filter", "warn", "--config"])
            .arg(config)
            .spawn()
            .unwrap(),
    )
}

#[test]
fn a_fresh_node_exposes_every_documented_family_in_both_formats() {
    // One block at start, then none for an hour.
    let net = Devnet::new("  interval_ms: 3600000\n  payload_bytes: 100\n");
    let _node = start(&net.path("node.yaml"));
    let addr = metrics_addr(&net.path("data"));
    let documented = documented();
    assert!(documented.len() >= 70, "{documented:?}");
    for (accept, content_type) in [
        (None, TEXT_004),
        (Some("text/plain;version=0.0.4"), TEXT_004),
        (Some("*/*"), TEXT_004),
        (Some(PROMETHEUS_ACCEPT), OPENMETRICS),
    ] {
        let (got_type, body) = scrape(addr, accept);
        assert_eq!(got_type, content_type, "Accept: {accept:?}");
        let exposed = exposed(&body);
        let missing: Vec<_> = documented
            .keys()
            .filter(|n| !exposed.contains_key(*n))
            .collect();
        let extra: Vec<_> = exposed
            .keys()
            .filter(|n| !documented.contains_key(*n))
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "Accept: {accept:?}\ndocumented, not exposed: {missing:?}\nexposed, not documented: {extra:?}"
        );
        for (name, labels) in &documented {
            assert_eq!(
                &exposed[name], labels,
                "{name}: labels exposed vs documented"
            );
        }
        let openmetrics = content_type == OPENMETRICS;
        assert_eq!(body.ends_with("# EOF\n"), openmetrics);
        assert_eq!(body.contains("\n# UNIT "), openmetrics);
    }
}

/// promtool comes with Debian's `prometheus` (.ci/run installs it). Without it the checks are
/// skipped, loudly, unless `SYNCNET_REQUIRE_PROMTOOL` is set (.ci/run sets it).
fn promtool_present() -> bool {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("SYNCNET_REQUIRE_PROMTOOL").is_none(),
            "promtool not found (apt-get install prometheus) and SYNCNET_REQUIRE_PROMTOOL is set"
        );
        eprintln!(
            "\n*** promtool not found (apt-get install prometheus): `promtool check metrics` SKIPPED ***\n"
        );
    }
    found
}

/// `promtool check metrics` on the text format `addr` serves to a client that asks for nothing.
fn promtool_check(what: &str, addr: SocketAddr) {
    let (content_type, body) = scrape(addr, None);
    assert_eq!(content_type, TEXT_004);
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics, {what}: {}\n{}{}\n--- exposition ---\n{body}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// A busy node: a follower that fetched a producer's chain by range. Both sides name the request
/// kind alike (`blocks_by_range`), and both pass promtool's lint, as does the producer fresh.
#[test]
fn fresh_and_busy_nodes_pass_promtool_check_metrics() {
    let promtool = promtool_present();
    let net = Devnet::new("  interval_ms: 500\n  payload_bytes: 2048\n");
    // Blocks before the producer starts: the follower fetches them by range.
    let out = syncnode()
        .args(["gen-chain", "--blocks", "40", "--config"])
        .arg(net.path("node.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _producer = start(&net.path("node.yaml"));
    let producer = metrics_addr(&net.path("data"));
    if promtool {
        promtool_check("fresh producer", producer);
    }

    let addrs = std::fs::read_to_string(net.path("data/syncnode.addrs.json")).unwrap();
    let addrs: serde_json::Value = serde_json::from_str(&addrs).unwrap();
    let bootnode = addrs["p2p"][0].as_str().unwrap();
    std::fs::write(
        net.path("follower.yaml"),
        format!(
            "network_file: network.yaml\ndata_dir: follower\nmetrics:\n  listen: 127.0.0.1:0\n\
             p2p:\n  bootnodes: [\"{bootnode}\"]\n"
        ),
    )
    .unwrap();
    let _follower = start(&net.path("follower.yaml"));
    let follower = metrics_addr(&net.path("follower"));
    let value = |addr, name: &str| metric(&scrape(addr, None).1, name).unwrap_or(0.0);
    wait_for(
        "the follower to sync 40 blocks",
        Duration::from_secs(60),
        || (value(follower, "syncnet_chain_head_height") >= 40.0).then_some(()),
    );
    let fetched = r#"syncnet_sync_requests_total{kind="blocks_by_range",outcome="ok"}"#;
    let served = r#"syncnet_sync_served_total{kind="blocks_by_range",outcome="ok"}"#;
    assert!(value(follower, fetched) >= 1.0, "{fetched} on the follower");
    assert!(value(producer, served) >= 1.0, "{served} on the producer");
    if promtool {
        promtool_check("busy follower", follower);
        promtool_check("busy producer", producer);
    }
}
