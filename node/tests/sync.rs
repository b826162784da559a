//! Downloader end to end: real swarms on 127.0.0.1, real stores, bounded waits.

mod common;

use std::time::Duration;

use common::net::*;
use syncnet_node::faults::Faults;

fn injected(f: &Full, kind: &'static str) -> u64 {
    f.node
        .metrics
        .faults_injected
        .get_or_create(&[("kind", kind)])
        .get()
}

fn penalties(f: &Full, reason: &'static str) -> u64 {
    f.sync.penalties.get_or_create(&[("reason", reason)]).get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_and_restarted_nodes_reach_the_producers_head() {
    let net = Net::new("testnet");
    let producer = start_full(&net, cfg(vec![]), sync_cfg(), 1500).await;
    let boot = vec![producer.node.addr.clone()];
    let server = start_full(&net, cfg(boot.clone()), sync_cfg(), 1500).await;
    let live = spawn_producer(&net, &producer.node, Duration::from_millis(200));

    let fresh = start_full(&net, cfg(boot.clone()), sync_cfg(), 0).await;
    eventually(
        "fresh node at the producer's head",
        Duration::from_secs(90),
        || fresh.head() >= 1500 && fresh.head() + 2 >= producer.head(),
    )
    .await;
    assert_eq!(
        fresh.node.store.block(1500).unwrap().unwrap().hash(),
        producer.node.store.block(1500).unwrap().unwrap().hash()
    );
    assert!(
        fresh
            .sync
            .blocks_synced
            .get_or_create(&[("phase", "long")])
            .get()
            >= 1000
    );

    // A node stopped mid-sync resumes from its store.
    let second = start_full(&net, cfg(boot.clone()), sync_cfg(), 0).await;
    eventually("second node part way", Duration::from_secs(60), || {
        second.head() >= 300
    })
    .await;
    let (dir, key) = second.stop().await;
    let node = start_in(&net, cfg(boot.clone()), 0, dir, key).await;
    let stopped_at = node.store.head().height;
    assert!(stopped_at >= 300);
    let resumed = attach_sync(&net, node, sync_cfg());
    eventually(
        "restarted node at the producer's head",
        Duration::from_secs(90),
        || resumed.head() + 2 >= producer.head(),
    )
    .await;
    // The head moves at commit, the counter when the sync loop hears of it: stop the producer and
    // let the last batch land before comparing. A re-download would keep the count above.
    live.abort();
    let synced = || -> u64 {
        ["long", "short", "idle"]
            .iter()
            .map(|p| {
                resumed
                    .sync
                    .blocks_synced
                    .get_or_create(&[("phase", p)])
                    .get()
            })
            .sum()
    };
    let settle = std::time::Instant::now() + Duration::from_secs(10);
    while synced() != resumed.head() - stopped_at && std::time::Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        synced(),
        resumed.head() - stopped_at,
        "re-downloaded stored blocks"
    );
    // `check` walks a store nobody writes to (a commit in flight would read as data after the
    // head): stop the node, then check what it left.
    let head = resumed.head();
    let (dir, _) = resumed.stop().await;
    let store = reopen(&dir, &net.spec).await;
    assert_eq!(store.check(&net.spec).unwrap(), head);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_serving_corrupt_blocks_is_penalised_and_sync_completes() {
    let net = Net::new("testnet");
    let a = start_full(&net, cfg(vec![]), sync_cfg(), 1200).await;
    let boot = vec![a.node.addr.clone()];
    let b = start_full(&net, cfg(boot.clone()), sync_cfg(), 1200).await;
    let bad = start_full(&net, cfg(boot.clone()), sync_cfg(), 1200).await;
    bad.node.h.update_faults(|f| f.corrupt_blocks = true).await;
    let mut c = cfg(boot.clone());
    c.streams.soft_low = 3; // talk to all three servers
    // Streams to all three servers before sync starts, so the corrupt one is asked for batches (the
    // first batches go to every peer) instead of the sync finishing before it is even connected.
    let node = start(&net, c, 0).await;
    let bad_id = bad.node.id();
    node.h
        .wait_for(Duration::from_secs(30), |s| {
            s.stream_peers.len() == 3 && s.stream_peers.contains(&bad_id)
        })
        .await
        .expect("streams to all three servers");
    let fresh = attach_sync(&net, node, sync_cfg());
    eventually(
        "fresh node synced despite a corrupt peer",
        Duration::from_secs(90),
        || fresh.head() == 1200,
    )
    .await;
    assert!(fresh.node.store.check(&net.spec).is_ok());
    assert!(
        penalties(&fresh, "payload_hash") >= 1,
        "corrupt peer never penalised"
    );
    let dropped = fresh
        .node
        .metrics
        .removals
        .get_or_create(&[("reason", "penalised")])
        .get();
    assert!(dropped >= 1, "corrupt peer's stream was not dropped");
    // Only the corrupt peer was penalised for bad data, and it counted what it corrupted.
    assert_eq!(penalties(&fresh, "cannot_serve"), 0);
    assert!(injected(&bad, "corrupt_block") >= 1);
    assert_eq!(injected(&b, "corrupt_block"), 0);
    drop((b, bad));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_node_catches_up_through_the_short_range_watchdog() {
    let net = Net::new("testnet");
    let producer = start_full(&net, cfg(vec![]), sync_cfg(), 100).await;
    let boot = vec![producer.node.addr.clone()];
    let server = start_full(&net, cfg(boot.clone()), sync_cfg(), 100).await;
    let live = spawn_producer(&net, &producer.node, Duration::from_millis(250));
    let mut tcfg = sync_cfg();
    tcfg.short_range = 256; // 20 s of blocks at 4/s stays within short range
    let target = start_full(&net, cfg(boot.clone()), tcfg, 0).await;
    eventually("synced before isolation", Duration::from_secs(60), || {
        target.head() >= 100 && target.head() + 2 >= producer.head()
    })
    .await;

    // Isolated for 20 s (the scenario's duration, not a synchronisation) while the producer advances.
    let isolate = Faults {
        isolate: true,
        ..Faults::default()
    };
    target.node.h.set_faults(isolate).await;
    eventually("isolated", Duration::from_secs(10), || {
        target.node.h.state().connections == 0
    })
    .await;
    let isolated_at = target.head();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        producer.head() >= isolated_at + 40,
        "producer did not advance"
    );
    assert!(target.head() <= isolated_at + 1, "not isolated");

    // The first fetches after reconnecting hang (peers stall every reply): only the watchdog can
    // get the node moving again.
    producer.node.h.update_faults(|f| f.stall_ms = 30_000).await;
    server.node.h.update_faults(|f| f.stall_ms = 30_000).await;
    let short_before = target
        .sync
        .blocks_synced
        .get_or_create(&[("phase", "short")])
        .get();
    target.node.h.set_faults(Faults::default()).await;
    eventually("watchdog fired", Duration::from_secs(60), || {
        target.sync.watchdog_firings.get() >= 1
    })
    .await;
    producer.node.h.update_faults(|f| f.stall_ms = 0).await;
    server.node.h.update_faults(|f| f.stall_ms = 0).await;
    let t = std::time::Instant::now();
    eventually(
        "caught up after the watchdog",
        Duration::from_secs(90),
        || target.head() + 2 >= producer.head(),
    )
    .await;
    eprintln!(
        "caught up {:?} after the watchdog; {} blocks behind when reconnected",
        t.elapsed(),
        producer.head() - isolated_at
    );
    assert!(penalties(&target, "stalled") >= 1);
    assert!(injected(&producer, "stall") + injected(&server, "stall") >= 1);
    let short_after = target
        .sync
        .blocks_synced
        .get_or_create(&[("phase", "short")])
        .get();
    assert!(
        short_after >= short_before + 40,
        "catch-up did not go through the short-range path"
    );
    // Checked once stopped: the producer keeps the target committing.
    live.abort();
    let (dir, _) = target.stop().await;
    let store = reopen(&dir, &net.spec).await;
    assert_eq!(store.check(&net.spec).unwrap(), store.head().height);
}
