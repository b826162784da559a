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

/// Starts `syncnode run` on `config` (in the devnet's directory), killed on drop.
fn run_node(net: &Devnet, config: &str) -> ChildGuard {
    ChildGuard(
        syncnode()
            .args(["run", "--log-filter", "warn", "--config"])
            .arg(net.path(config))
            .spawn()
            .unwrap(),
    )
}

fn follower_gets_blocks_by(mode: &str) {
    let net = Devnet::new(&format!(
        "  interval_ms: 300\n  payload_bytes: 65536\nbroadcast:\n  mode: {mode}\n"
    ));
    let run = |config: &str| run_node(&net, config);
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

/// The race behind the false `misplaced` penalty, end to end: followers catching up by sync while
/// the producer's new blocks arrive by IDA. Broadcast committed the next block while a sync batch
/// starting at it was on its way to the store; the store refused the batch and the downloader
/// blamed the honest producer (1 of 20 followers before the fix). No follower may penalise anyone.
#[test]
fn followers_catching_up_under_ida_penalise_no_one() {
    let net = Devnet::new("  interval_ms: 50\n  payload_bytes: 32768\nbroadcast:\n  mode: ida\n");
    let run = |config: &str| run_node(&net, config);
    let _producer = run("node.yaml");
    let boot = p2p_addr(&net.path("data"));
    let producer_metrics = metrics_addr(&net.path("data"));
    let head = |addr| {
        http_get(addr, "/metrics")
            .ok()
            .and_then(|(_, b)| metric(&b, "syncnet_chain_head_height"))
    };
    // A backlog for the followers to sync while new blocks keep coming by IDA.
    wait_for("a backlog of 100 blocks", Duration::from_secs(60), || {
        (head(producer_metrics)? >= 100.0).then_some(())
    });
    let mut followers = vec![];
    for i in 0..4 {
        let dir = format!("f{i}");
        std::fs::write(
            net.path(&format!("{dir}.yaml")),
            format!(
                "network_file: network.yaml\ndata_dir: {dir}\nmetrics:\n  listen: 127.0.0.1:0\n\
                 p2p:\n  bootnodes: ['{boot}']\nbroadcast:\n  mode: ida\n"
            ),
        )
        .unwrap();
        followers.push((run(&format!("{dir}.yaml")), dir));
    }
    for (_, dir) in &followers {
        let addr = metrics_addr(&net.path(dir));
        let inserted = "syncnet_broadcast_blocks_total{outcome=\"inserted\"}";
        let body = wait_for(
            &format!("{dir} caught up and following by IDA (5 blocks inserted)"),
            Duration::from_secs(90),
            || {
                let (_, body) = http_get(addr, "/metrics").ok()?;
                let mine = metric(&body, "syncnet_chain_head_height")?;
                let by_ida = metric(&body, inserted)?;
                (mine >= 100.0 && mine + 3.0 >= head(producer_metrics)? && by_ida >= 5.0)
                    .then_some(body)
            },
        );
        let penalties: f64 = body
            .lines()
            .filter(|l| l.starts_with("syncnet_sync_penalties_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(penalties, 0.0, "{dir} penalised a peer:\n{body}");
    }
}
