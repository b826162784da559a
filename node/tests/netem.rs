//! Network emulation on real swarms over 127.0.0.1: measured round trips and upload rates match the
//! configured matrix and bandwidth, and a partition between regions stops block flow until healed.
//! Its own test binary: the measurements want the machine to themselves.

mod common;

use std::time::{Duration, Instant};

use common::net::*;
use syncnet_node::downloader::DownloaderConfig;
use syncnet_node::faults::Faults;
use syncnet_node::netem::NetemConfig;
use syncnet_node::p2p::P2pConfig;
use syncnet_node::wire::{Request, Response};

/// One-way latencies: eu -> us 30 ms, us -> eu 50 ms (directed on purpose), 2 ms inside a region.
fn matrix() -> NetemConfig {
    let mut n = NetemConfig::default();
    for (a, b, ms) in [
        ("eu", "us", 30),
        ("us", "eu", 50),
        ("eu", "eu", 2),
        ("us", "us", 2),
    ] {
        n.latency_ms
            .entry(a.into())
            .or_default()
            .insert(b.into(), ms);
    }
    n
}

fn in_region(mut c: P2pConfig, region: &str, upload_bytes_per_sec: u64) -> P2pConfig {
    c.region = Some(region.into());
    c.netem = Some(NetemConfig {
        upload_bytes_per_sec,
        ..matrix()
    });
    c
}

fn within(got: f64, want: f64, tolerance: f64) -> bool {
    (got - want).abs() <= want * tolerance
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_and_upload_rate_match_the_matrix_and_bandwidth() {
    let net = Net::new("testnet");
    let upload = 2_000_000u64;
    // The server only accepts streams, so the client's direct requests never race a tie-break.
    let server_cfg = accept_only(in_region(cfg(vec![]), "eu", upload));
    let server = start(&net, server_cfg, 400).await;
    let client = start(&net, in_region(cfg(vec![]), "us", 0), 0).await;
    client.h.dial(server.addr.clone()).await;
    let sid = server.id();
    client
        .h
        .wait_for(Duration::from_secs(15), |s| s.stream_peers.contains(&sid))
        .await
        .expect("stream up");

    // Round trip: us -> eu 50 ms + eu -> us 30 ms.
    let mut rtts = vec![];
    for _ in 0..9 {
        let t = Instant::now();
        let r = client.h.request_direct(sid, Request::Status).await;
        assert!(matches!(r, Ok(Response::Status(_))), "{r:?}");
        rtts.push(t.elapsed().as_secs_f64());
    }
    rtts.sort_by(f64::total_cmp);
    let median = rtts[rtts.len() / 2];
    eprintln!("median RTT {:.1} ms (configured 80 ms)", median * 1e3);
    assert!(
        within(median, 0.080, 0.15),
        "median RTT {:.1} ms, configured 80 ms (all: {rtts:.3?})",
        median * 1e3
    );

    // Upload: the server's link is the bottleneck; keep it busy with four requests in flight and
    // time the bytes that arrive after the first reply.
    let per_request = 32u32;
    let mut tasks = vec![];
    for w in 0..4u64 {
        let h = client.h.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = vec![];
            for i in 0..3u64 {
                let from = 1 + (w * 3 + i) * u64::from(per_request);
                let req = Request::GetBlocksByRange {
                    from,
                    count: per_request,
                    max_bytes: 4 << 20,
                };
                match h.request_direct(sid, req).await {
                    Ok(Response::Blocks(b)) => {
                        assert_eq!(b.len(), per_request as usize);
                        let bytes: usize = b.iter().map(|x| x.len()).sum();
                        done.push((Instant::now(), bytes));
                    }
                    other => panic!("{other:?}"),
                }
            }
            done
        }));
    }
    let mut replies = vec![];
    for t in tasks {
        replies.extend(t.await.unwrap());
    }
    replies.sort_by_key(|(t, _)| *t);
    let (first, _) = replies[0];
    let (last, _) = *replies.last().unwrap();
    let bytes: usize = replies[1..].iter().map(|(_, b)| b).sum();
    let rate = bytes as f64 / (last - first).as_secs_f64();
    eprintln!(
        "block throughput {:.3} MB/s (upload {:.3} MB/s)",
        rate / 1e6,
        upload as f64 / 1e6
    );
    assert!(
        within(rate, upload as f64, 0.15),
        "received {:.2} MB/s of blocks, the server's upload is {:.2} MB/s",
        rate / 1e6,
        upload as f64 / 1e6
    );
    // Everything the server sent went through the emulation wrapper.
    assert!(server.metrics.netem.bytes_out.get() as usize > bytes);
}

fn scfg() -> DownloaderConfig {
    DownloaderConfig {
        batch_timeout: Duration::from_secs(3),
        watchdog: Duration::from_secs(3),
        bad_peer_ttl: Duration::from_secs(3),
        ..DownloaderConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_stops_block_flow_between_regions_and_healing_restores_it() {
    let net = Net::new("testnet");
    let producer = start_full(&net, in_region(cfg(vec![]), "eu", 0), scfg(), 20).await;
    let boot = vec![producer.node.addr.clone()];
    let follower = start_full(&net, in_region(cfg(boot), "us", 0), scfg(), 0).await;
    let live = spawn_producer(&net, &producer.node, Duration::from_millis(100));
    eventually("follower in sync", Duration::from_secs(60), || {
        follower.head() >= 25 && follower.head() + 3 >= producer.head()
    })
    .await;

    let partition = Faults::from_json(br#"{"partition": {"regions": ["eu"]}}"#).unwrap();
    partition
        .check(follower.node.h.netem().map(|n| n.config()))
        .unwrap();
    follower.node.h.set_faults(partition).await;
    let held_at = follower.head();
    // Twenty blocks later on the producer...
    eventually("producer moves on", Duration::from_secs(30), || {
        producer.head() >= held_at + 20
    })
    .await;
    // ... the follower has at most the block that was already in its hands.
    assert!(
        follower.head() <= held_at + 1,
        "blocks crossed the partition: {} -> {}",
        held_at,
        follower.head()
    );
    let holds = follower
        .node
        .metrics
        .faults_injected
        .get_or_create(&[("kind", "partition")])
        .get();
    assert!(holds >= 1, "the partition is counted");

    follower.node.h.set_faults(Faults::default()).await;
    let healed = Instant::now();
    eventually(
        "follower catches up after healing",
        Duration::from_secs(60),
        || follower.head() >= held_at + 20 && follower.head() + 3 >= producer.head(),
    )
    .await;
    eprintln!("caught up {:?} after healing", healed.elapsed());
    live.abort();
}

/// A partition holds a connection's traffic, so closing it waits until the partition heals; the
/// streams on it must not: once ping finds the connection dead they end (the soak-s3 hour found
/// nodes asking peers over such streams for 20 s after each partition).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_when_ping_finds_the_connection_dead_not_when_the_partition_heals() {
    let fast_ping = |mut c: P2pConfig| {
        c.ping_interval = Duration::from_millis(300);
        c.ping_timeout = Duration::from_millis(700);
        c
    };
    let net = Net::new("testnet");
    let producer = start_full(&net, fast_ping(in_region(cfg(vec![]), "eu", 0)), scfg(), 20).await;
    let boot = vec![producer.node.addr.clone()];
    let follower = start_full(&net, fast_ping(in_region(cfg(boot), "us", 0)), scfg(), 0).await;
    let pid = producer.node.id();
    follower
        .node
        .h
        .wait_for(Duration::from_secs(30), |s| s.stream_peers.contains(&pid))
        .await
        .expect("stream to the producer");
    let dead = || {
        follower
            .node
            .metrics
            .removals
            .get_or_create(&[("reason", "disconnected")])
            .get()
    };
    let (before, pings_failed) = (dead(), follower.node.metrics.ping_failures.get());

    let partition = Faults::from_json(br#"{"partition": {"regions": ["eu"]}}"#).unwrap();
    follower.node.h.set_faults(partition).await;
    // The stream goes while the partition still holds (it holds until healed below).
    let s = follower
        .node
        .h
        .wait_for(Duration::from_secs(20), |s| !s.stream_peers.contains(&pid))
        .await
        .expect("the stream to the cut-off producer ends during the partition");
    assert!(
        follower.node.metrics.ping_failures.get() > pings_failed,
        "{s:?}"
    );
    assert!(dead() > before, "counted as a disconnection");

    follower.node.h.set_faults(Faults::default()).await;
    follower
        .node
        .h
        .wait_for(Duration::from_secs(30), |s| s.stream_peers.contains(&pid))
        .await
        .expect("a new stream after healing");
}
