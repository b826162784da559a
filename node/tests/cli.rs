//! End-to-end behaviour of the `syncnode` binary.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn invalid_config_gives_one_line_and_exit_2() {
    let net = Devnet::new("  interval_ms: 100\n  payload_bytes: 1024\n");
    let good = std::fs::read_to_string(net.path("node.yaml")).unwrap();
    let cases = [
        (good.replace("interval_ms", "intervl_ms"), "intervl_ms"),
        (
            good.replace("interval_ms: 100", "interval_ms: 0"),
            "producer.interval_ms",
        ),
        (
            good.replace("payload_bytes: 1024", "payload_bytes: {min: 9, max: 2}"),
            "producer.payload_bytes",
        ),
        (good.replace("network.yaml", "missing.yaml"), "missing.yaml"),
        (good.replace("producer.key", "nokey"), "producer.key_file"),
        (format!("{good}wat: true\n"), "wat"),
        (
            format!("{good}p2p:\n  netem: {{jitter_ms: 5}}\n"),
            "p2p.netem: needs p2p.region",
        ),
        (
            format!("{good}p2p:\n  region: eu\n  netem: {{latency_ms: {{us: {{ap: 9}}}}}}\n"),
            "p2p.netem.latency_ms",
        ),
        (format!("{good}p2p:\n  region: EU\n"), "p2p.region"),
    ];
    for (yaml, needle) in cases {
        std::fs::write(net.path("bad.yaml"), &yaml).unwrap();
        let out = syncnode()
            .args(["run", "--config"])
            .arg(net.path("bad.yaml"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{needle}: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "one line expected: {stderr}"
        );
        assert!(
            stderr.starts_with("error: ") && stderr.contains(needle),
            "{needle}: {stderr}"
        );
        assert!(
            !net.path("data").exists(),
            "a bad config must not create state"
        );
    }
}

#[test]
fn key_of_another_producer_is_refused() {
    let net = Devnet::new("  interval_ms: 100\n  payload_bytes: 1024\n");
    let out = syncnode()
        .args(["keygen", "--force", "--out"])
        .arg(net.path("producer.key"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = syncnode()
        .args(["run", "--config"])
        .arg(net.path("node.yaml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not this network's producer"), "{stderr}");
}

fn head_height(addr: std::net::SocketAddr) -> Option<f64> {
    let (status, body) = http_get(addr, "/metrics").ok()?;
    (status == 200).then_some(())?;
    metric(&body, "syncnet_chain_head_height")
}

#[test]
fn producer_serves_rising_head_and_resumes_after_restart() {
    let net = Devnet::new("  interval_ms: 20\n  payload_bytes: {min: 512, max: 2048}\n  seed: 9\n");
    let data = net.path("data");
    let start = || {
        ChildGuard(
            syncnode()
                .args(["run", "--log-filter", "warn", "--config"])
                .arg(net.path("node.yaml"))
                .spawn()
                .unwrap(),
        )
    };
    let mut node = start();
    let addr = metrics_addr(&data);
    let first = wait_for("head >= 3", Duration::from_secs(30), || {
        head_height(addr).filter(|h| *h >= 3.0)
    });
    let later = wait_for("head rising", Duration::from_secs(30), || {
        head_height(addr).filter(|h| *h > first)
    });
    assert!(later > first);

    let (status, body) = http_get(addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    // Without an Accept header: the Prometheus text format; with Prometheus's: OpenMetrics.
    let (_, head, _) = http_get_with(addr, "/metrics", &[]).unwrap();
    assert_eq!(
        header(&head, "content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let (_, head, om) = http_get_with(addr, "/metrics", &[("Accept", accept)]).unwrap();
    assert_eq!(
        header(&head, "content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(
        metric(&body, "process_resident_memory_bytes").unwrap() > 1e6,
        "{body}"
    );
    assert!(metric(&body, "process_open_fds").unwrap() >= 3.0);
    // The count follows the commit, so a scrape may land between the two: one block behind at most.
    assert!(metric(&body, "syncnet_blocks_produced_total").unwrap() + 1.0 >= later);
    assert!(metric(&body, "syncnet_store_bytes").unwrap() > 0.0);
    assert_eq!(
        http_get(addr, "/healthz").unwrap(),
        (200, "ok\n".to_owned())
    );

    // SIGTERM: clean exit, addrs file removed.
    unsafe { libc::kill(node.0.id() as i32, libc::SIGTERM) };
    let status = wait_for("exit after SIGTERM", Duration::from_secs(20), || {
        node.0.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");
    assert!(!data.join("syncnode.addrs.json").exists());

    let inspect = [
        std::ffi::OsStr::new("inspect"),
        "--json".as_ref(),
        "--data-dir".as_ref(),
    ];
    let stopped_at = syncnode_json(inspect.into_iter().chain([data.as_os_str()]))["height"]
        .as_u64()
        .unwrap();
    assert!(stopped_at as f64 >= later);

    // Restart resumes from the store: the head never goes back, and keeps rising.
    let _node = start();
    let addr = metrics_addr(&data);
    let resumed = wait_for("head after restart", Duration::from_secs(30), || {
        head_height(addr)
    });
    assert!(resumed >= stopped_at as f64, "{resumed} < {stopped_at}");
    wait_for("head rising after restart", Duration::from_secs(30), || {
        head_height(addr).filter(|h| *h > stopped_at as f64)
    });
}

#[test]
fn inspect_reports_missing_store_and_unknown_block() {
    let net = Devnet::new("  interval_ms: 1000\n  payload_bytes: 100\n");
    let out = syncnode()
        .args(["inspect", "--data-dir"])
        .arg(net.path("nowhere"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    let out = syncnode()
        .args(["gen-chain", "--blocks", "10", "--config"])
        .arg(net.path("node.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = syncnode()
        .args(["inspect", "--height", "11", "--data-dir"])
        .arg(net.path("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no block at height 11"));
    let (network, data) = (net.path("network.yaml"), net.path("data"));
    let v = syncnode_json([
        "inspect".as_ref(),
        "--height".as_ref(),
        "10".as_ref(),
        "--json".as_ref(),
        "--check".as_ref(),
        network.as_os_str(),
        "--data-dir".as_ref(),
        data.as_os_str(),
    ]);
    assert_eq!(v["header"]["height"], 10);
    assert_eq!(v["header"]["producer"], net.producer_key().to_hex());
}

/// `inspect --check` reads every block from the segment files: a flipped payload byte is
/// reported with its height, and a segment cut short refuses to open with the reason.
#[test]
fn inspect_check_finds_damaged_segments() {
    let net = Devnet::new("  interval_ms: 1000\n  payload_bytes: 300\n");
    let out = syncnode()
        .args(["gen-chain", "--blocks", "10", "--config"])
        .arg(net.path("node.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let segment = net.path("data/chain.segments/00000000.seg");
    let check = || {
        syncnode()
            .args(["inspect", "--check"])
            .arg(net.path("network.yaml"))
            .arg("--data-dir")
            .arg(net.path("data"))
            .output()
            .unwrap()
    };
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("checked 10 blocks"));
    // A byte inside the last block's payload.
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();
    let out = check();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stored block at height 10 does not verify"),
        "{err}"
    );
    // Committed bytes missing from the segment.
    std::fs::write(&segment, &bytes[..bytes.len() - 50]).unwrap();
    let out = check();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("committed data is missing"), "{err}");
}

#[test]
fn control_api_rejects_bad_fault_sets_and_applies_good_ones() {
    let net = Devnet::new(
        "  interval_ms: 50\n  payload_bytes: 256\n\
         p2p:\n  region: eu\n  netem:\n    latency_ms: {eu: {us: 40, eu: 1}}\n",
    );
    let _node = ChildGuard(
        syncnode()
            .args(["run", "--log-filter", "error", "--config"])
            .arg(net.path("node.yaml"))
            .spawn()
            .unwrap(),
    );
    let addr = metrics_addr(&net.path("data"));
    let put = |body: &str| {
        let (code, reply) = http_request(addr, "PUT", "/faults", body).unwrap();
        (
            code,
            serde_json::from_str::<serde_json::Value>(&reply).unwrap(),
        )
    };
    let current = || {
        serde_json::from_str::<serde_json::Value>(&http_get(addr, "/faults").unwrap().1).unwrap()
    };

    let (code, v) = put(r#"{"stall_ms": 20, "setup_failure_rate": 2}"#);
    assert_eq!(code, 400, "{v}");
    assert_eq!(v["field"], "setup_failure_rate");
    assert_eq!(
        current()["stall_ms"],
        0,
        "a rejected set must change nothing"
    );

    let (code, v) = put(r#"{"stall_ms": 20, "isolate": true}"#);
    assert_eq!(code, 200, "{v}");
    let v = current();
    assert_eq!(
        (v["stall_ms"].as_u64(), v["isolate"].as_bool()),
        (Some(20), Some(true))
    );
    let (_, m) = http_get(addr, "/metrics").unwrap();
    assert_eq!(
        metric(&m, r#"syncnet_faults_injected_total{kind="isolate"}"#),
        Some(1.0),
        "{m}"
    );

    let status = wait_for("status with a height", Duration::from_secs(30), || {
        let (code, body) = http_get(addr, "/status").ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (code == 200 && v["height"].as_u64()? >= 1).then_some(v)
    });
    assert_eq!(status["phase"], "idle", "{status}");
    assert!(status["peer_id"].as_str().unwrap().starts_with("12D3KooW"));
    assert_eq!(status["region"], "eu", "{status}");

    // Partitions name regions of the matrix; a typo is refused, not silently ignored.
    let (code, v) = put(r#"{"partition": {"regions": ["us", "ap"]}}"#);
    assert_eq!(code, 400, "{v}");
    assert_eq!(v["field"], "partition.regions[1]", "{v}");
    let (code, v) = put(r#"{"partition": {"regions": ["us"]}}"#);
    assert_eq!(code, 200, "{v}");
    assert_eq!(current()["partition"]["regions"][0], "us");

    // Each PUT restates the whole set; isolation is counted when it starts, not per restatement.
    let (code, v) = put(r#"{"isolate": true}"#);
    assert_eq!(code, 200, "{v}");
    let (code, v) = put(r#"{"isolate": true}"#);
    assert_eq!(code, 200, "{v}");
    let (_, m) = http_get(addr, "/metrics").unwrap();
    assert_eq!(
        metric(&m, r#"syncnet_faults_injected_total{kind="isolate"}"#),
        Some(2.0),
        "{m}"
    );
}
