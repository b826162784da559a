//! `syncnode run` end to end: a producer and a follower process on 127.0.0.1, in each broadcast
//! mode; the follower must insert blocks that arrived by broadcast (its sync task runs too, but
//! leaves fresh tip blocks to broadcast for `broadcast.sync_grace`). Bounded waits.

mod common;

use std::time::Duration;

use common::*;

fn p2p_addr(data_dir: &std::path::Path) -> String {
    wait_for(
        "the producer's p2p address",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(data_dir.join("syncnode.addrs.json")).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            Some(v["p2p"][0].as_str()?.to_owned())
        },
    )
}

fn follower_gets_blocks_by(mode: &str) {
    let net = Devnet::new(&format!(
        "  interval_ms: 300\n  payload_bytes: 65536\nbroadcast:\n  mode: {mode}\n"
    ));
    let run = |config: &str| {
        ChildGuard(
            syncnode()
                .args(["run", "--log-filter", "warn", "--config"])
                .arg(net.path(config))
                .spawn()
                .unwrap(),
        )
    };
    let _producer = run("node.yaml");
    let boot = p2p_addr(&net.path("data"));
    std::fs::write(
        net.path("follower.yaml"),
        format!(
            "network_file: network.yaml\ndata_dir: data2\nmetrics:\n  listen: 127.0.0.1:0\n\
             p2p:\n  bootnodes: ['{boot}']\nbroadcast:\n  mode: {mode}\n"
        ),
    )
    .unwrap();
    let _follower = run("follower.yaml");
    let addr = metrics_addr(&net.path("data2"));
    let inserted = "syncnet_broadcast_blocks_total{outcome=\"inserted\"}";
    let latency = format!("syncnet_broadcast_delivery_seconds_count{{mode=\"{mode}\"}}");
    let body = wait_for(
        &format!("5 blocks inserted by {mode}"),
        Duration::from_secs(60),
        || {
            let (_, body) = http_get(addr, "/metrics").ok()?;
            (metric(&body, inserted)? >= 5.0).then_some(body)
        },
    );
    assert!(metric(&body, &latency).unwrap() >= 5.0, "{body}");
    // The head gauge and the inserted counter count broadcast insertions too (they once counted
    // only sync's and the producer's).
    assert!(
        metric(&body, "syncnet_chain_head_height").unwrap() >= 5.0,
        "{body}"
    );
    assert!(
        metric(&body, "syncnet_blocks_inserted_total").unwrap() >= 5.0,
        "{body}"
    );
    if mode == "ida" {
        let decoded = metric(&body, "syncnet_broadcast_blocks_total{outcome=\"decoded\"}");
        assert!(decoded.unwrap() >= 5.0, "{body}");
        let received = metric(
            &body,
            "syncnet_broadcast_ida_chunks_total{outcome=\"received\"}",
        );
        assert!(received.unwrap() >= 5.0 * 16.0, "{body}");
    }
}

#[test]
fn a_follower_gets_blocks_by_ida() {
    follower_gets_blocks_by("ida");
}

#[test]
fn a_follower_gets_blocks_by_gossipsub() {
    follower_gets_blocks_by("gossipsub");
}
