//! Scenario S1, sync throughput. Run: `cargo bench -p syncnet-node --bench s1` (prints JSON).
//!
//! Case A: 20,000 blocks x 16 KiB held by 4 serving nodes; one fresh node syncs to the head (every
//! block verified and committed). In the same run, the same number of bytes is pushed over one bare
//! libp2p stream (TCP + noise + yamux): the transport ceiling. Case B: 100,000 blocks x 1 KiB.
//! Case C: 1,280 blocks x 256 KiB (IDA-sized blocks, the same bytes as case A).
//! Everything runs in this process on 127.0.0.1, on the machine's 2 cores: the servers on one
//! tokio runtime and the client on another, so each side's CPU time (its threads' utime + stime)
//! is reported per GB synced.
//! `S1_SCALE=0.1` shrinks every case (for a quick look); `S1_ONLY=16k` (or `1k`, `256k`) runs one case;
//! `S1_LOG=syncnet_node=debug` (an env filter) logs to stderr, e.g. why batches were retried.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{Multiaddr, StreamProtocol};
use serde_json::json;
use syncnet_node::chain::ChainSpec;
use syncnet_node::config::PayloadSize;
use syncnet_node::downloader::DownloaderConfig;
use syncnet_node::keys;
use syncnet_node::metrics::{P2pMetrics, SyncMetrics};
use syncnet_node::p2p::{self, P2pConfig, P2pHandle};
use syncnet_node::producer::{Producer, generate_chain};
use syncnet_node::ratelimit::RateLimitConfig;
use syncnet_node::store::{Store, segments_dir};
use syncnet_node::streams::StreamConfig;

const SERVERS: usize = 4;

// The allocator `syncnode` runs, with the same heap profiling: the figures are the node's.
// `_RJEM_MALLOC_CONF=prof_active:false` switches sampling off, which is how docs/benchmarks.md
// measures its cost ("Profiling overhead").
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = syncnet_node::profile::MALLOC_CONF;

fn p2p_cfg(bootnodes: Vec<Multiaddr>) -> P2pConfig {
    P2pConfig {
        bootnodes,
        streams: StreamConfig {
            hard_low: 1,
            soft_low: SERVERS,
            high: 16,
            discovery_interval: Duration::from_secs(1),
            ..StreamConfig::default()
        },
        // Measure sync, not the limiter (its effect is tested elsewhere).
        rate_limit: RateLimitConfig {
            peer_cost_per_sec: 1_000_000,
            peer_burst: 100_000,
            global_cost_per_sec: 4_000_000,
            global_burst: 400_000,
        },
        ..P2pConfig::default()
    }
}

async fn start(spec: &ChainSpec, store: Arc<Store>, cfg: P2pConfig) -> (P2pHandle, Multiaddr) {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let h = p2p::spawn(cfg, key, spec.clone(), store, P2pMetrics::default())
        .await
        .unwrap();
    let s = h
        .wait_for(Duration::from_secs(10), |s| !s.listen_addrs.is_empty())
        .await
        .unwrap();
    let addr = format!("{}/p2p/{}", s.listen_addrs[0], h.local_peer_id)
        .parse()
        .unwrap();
    (h, addr)
}

/// A runtime whose threads (workers and blocking pool) carry `name`, so their CPU time can be
/// told apart. Blocking threads are kept alive: a thread that exits takes its CPU time with it.
fn runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()
        .unwrap()
}

/// CPU seconds (user + system) of this process's threads whose name starts with `prefix`.
fn thread_cpu_seconds(prefix: &str) -> f64 {
    let tick = procfs::ticks_per_second() as f64;
    let mut total = 0u64;
    for task in procfs::process::Process::myself()
        .unwrap()
        .tasks()
        .unwrap()
        .flatten()
    {
        if let Ok(stat) = task.stat()
            && stat.comm.starts_with(prefix)
        {
            total += stat.utime + stat.stime;
        }
    }
    total as f64 / tick
}

/// Copies a store (its index and its segment files).
fn copy_store(from: &std::path::Path, to: &std::path::Path) {
    std::fs::copy(from, to).unwrap();
    let (src, dst) = (segments_dir(from), segments_dir(to));
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

fn sync_case(
    servers_rt: &tokio::runtime::Runtime,
    client_rt: &tokio::runtime::Runtime,
    blocks: u64,
    payload: u32,
) -> serde_json::Value {
    let key = keys::generate();
    let spec = ChainSpec::new("s1", &keys::public_key(&key), 1_700_000_000_000).unwrap();
    let producer = Producer::new(key, PayloadSize::fixed(payload), 7);
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("master.redb");
    let t = Instant::now();
    {
        let store = Store::open_or_init(&master, &spec).unwrap();
        generate_chain(&store, &spec, &producer, blocks, 512, 1000, |_| {}).unwrap();
    }
    eprintln!("s1: generated {blocks} x {payload} B in {:?}", t.elapsed());
    let mut servers = vec![];
    let mut boot = vec![];
    for i in 0..SERVERS {
        let path = dir.path().join(format!("server{i}.redb"));
        copy_store(&master, &path);
        let store = Arc::new(Store::open_or_init(&path, &spec).unwrap());
        let (h, addr) = servers_rt.block_on(start(&spec, store, p2p_cfg(vec![])));
        servers.push(h);
        boot.push(addr);
    }
    let chain_bytes: u64 = {
        let s = Store::open(&master).unwrap();
        (1..=blocks.min(1000))
            .map(|h| s.block_bytes(h).unwrap().unwrap().len() as u64)
            .sum::<u64>()
            * blocks
            / blocks.min(1000)
    };

    let fresh_store = Arc::new(Store::open_or_init(&dir.path().join("fresh.redb"), &spec).unwrap());
    let (client0, servers0) = (
        thread_cpu_seconds("s1-client"),
        thread_cpu_seconds("s1-server"),
    );
    let t0 = Instant::now();
    let fresh_metrics = P2pMetrics::default();
    let sync = SyncMetrics::default();
    let (secs, first_stream, peers_used) = client_rt.block_on(async {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let fresh = p2p::spawn(
            p2p_cfg(boot),
            key,
            spec.clone(),
            fresh_store.clone(),
            fresh_metrics.clone(),
        )
        .await
        .unwrap();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(syncnet_node::sync::run(
            DownloaderConfig::default(),
            spec.clone(),
            fresh_store.clone(),
            fresh.clone(),
            sync.clone(),
            stop_rx,
        ));
        let first_stream = fresh
            .wait_for(Duration::from_secs(30), |s| !s.stream_peers.is_empty())
            .await
            .map(|_| t0.elapsed());
        let deadline = t0 + Duration::from_secs(600);
        while fresh_store.head().height < blocks {
            assert!(
                Instant::now() < deadline,
                "sync did not finish in 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let secs = t0.elapsed().as_secs_f64();
        let peers_used = fresh.state().stream_peers.len();
        let _ = stop.send(true);
        let _ = task.await;
        fresh.shutdown().await;
        (secs, first_stream, peers_used)
    });
    let client_cpu = thread_cpu_seconds("s1-client") - client0;
    let servers_cpu = thread_cpu_seconds("s1-server") - servers0;
    for s in &servers {
        servers_rt.block_on(s.shutdown());
    }
    let gb = chain_bytes as f64 / 1e9;
    json!({
        "blocks": blocks,
        "payload_bytes": payload,
        "serving_nodes": SERVERS,
        "streams_at_end": peers_used,
        "seconds": secs,
        "first_stream_seconds": first_stream.map(|d| d.as_secs_f64()),
        "blocks_per_s": blocks as f64 / secs,
        "bytes": chain_bytes,
        "mb_per_s": chain_bytes as f64 / 1e6 / secs,
        "client_cpu_seconds": client_cpu,
        "servers_cpu_seconds": servers_cpu,
        "client_cpu_s_per_gb": client_cpu / gb,
        "servers_cpu_s_per_gb": servers_cpu / gb,
        "commits": commit_stats(&sync),
        "watchdog_firings": sync.watchdog_firings.get(),
        "batch_retries": syncnet_node::downloader::Retry::ALL
            .iter()
            .map(|r| sync.batch_retries.get_or_create(&[("reason", r.label())]).get())
            .sum::<u64>(),
        "client_side": labelled_counters(&sync, &fresh_metrics),
    })
}

/// How many commits, their total time and blocks per commit (from the histograms' sums).
fn commit_stats(sync: &SyncMetrics) -> serde_json::Value {
    let mut reg = prometheus_client::registry::Registry::default();
    sync.register(&mut reg);
    let text = syncnet_node::metrics::render(&reg);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let n = value("syncnet_sync_commit_seconds_count");
    json!({
        "count": n,
        "seconds_total": value("syncnet_sync_commit_seconds_sum"),
        "blocks_per_commit": value("syncnet_sync_commit_blocks_sum") / n.max(1.0),
    })
}

/// Non-zero labelled counters of the syncing node (penalties, removals, request outcomes).
fn labelled_counters(sync: &SyncMetrics, p2p: &P2pMetrics) -> serde_json::Value {
    let mut reg = prometheus_client::registry::Registry::default();
    sync.register(&mut reg);
    p2p.register(&mut reg);
    let text = syncnet_node::metrics::render(&reg);
    let keep = [
        "penalties_total",
        "removals_total",
        "requests_total",
        "invalid_blocks_total",
        "batch_retries_total",
    ];
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.ends_with(" 0") && keep.iter().any(|k| l.contains(k)))
        .map(str::to_owned)
        .collect();
    json!(lines)
}

/// Pushes `bytes` over one libp2p stream (TCP + noise + yamux) between two fresh swarms.
async fn bare_stream(bytes: u64) -> serde_json::Value {
    let proto = StreamProtocol::new("/s1/bare/1");
    let build = || {
        libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default().nodelay(true),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build()
    };
    let mut rx_swarm = build();
    let mut tx_swarm = build();
    rx_swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
            rx_swarm.select_next_some().await
        {
            break address;
        }
    };
    let rx_peer = *rx_swarm.local_peer_id();
    let mut incoming = rx_swarm
        .behaviour()
        .new_control()
        .accept(proto.clone())
        .unwrap();
    let mut control = tx_swarm.behaviour().new_control();
    tx_swarm
        .dial(addr.with(libp2p::multiaddr::Protocol::P2p(rx_peer)))
        .unwrap();
    let a = tokio::spawn(async move {
        loop {
            rx_swarm.select_next_some().await;
        }
    });
    let b = tokio::spawn(async move {
        loop {
            tx_swarm.select_next_some().await;
        }
    });
    let reader = tokio::spawn(async move {
        let (_, mut s) = incoming.next().await.unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = s.read(&mut buf).await.unwrap();
            if k == 0 {
                break n;
            }
            n += k as u64;
        }
    });
    let mut s = control.open_stream(rx_peer, proto).await.unwrap();
    let chunk = vec![7u8; 1 << 20];
    let t = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..k]).await.unwrap();
        left -= k as u64;
    }
    s.close().await.unwrap();
    let got = reader.await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    a.abort();
    b.abort();
    assert_eq!(got, bytes);
    json!({ "bytes": bytes, "seconds": secs, "mb_per_s": bytes as f64 / 1e6 / secs })
}

fn main() {
    // Logs only when asked (S1_LOG=warn, say): retries and penalties say why on stderr.
    if let Ok(filter) = std::env::var("S1_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
    let scale: f64 = std::env::var("S1_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let only = std::env::var("S1_ONLY").ok();
    let run = |case: &str| only.as_deref().is_none_or(|o| o == case);
    let servers_rt = runtime("s1-server");
    let client_rt = runtime("s1-client");
    let n = |base: f64| ((base * scale) as u64).max(10);
    let a = run("16k").then(|| sync_case(&servers_rt, &client_rt, n(20_000.0), 16 * 1024));
    let ceiling = a.as_ref().map(|a| {
        // The ceiling swarms get a runtime of their own, like either side of the sync.
        runtime("s1-bare").block_on(bare_stream(a["bytes"].as_u64().unwrap()))
    });
    let ratio = a
        .as_ref()
        .zip(ceiling.as_ref())
        .map(|(a, c)| a["mb_per_s"].as_f64().unwrap() / c["mb_per_s"].as_f64().unwrap());
    let b = run("1k").then(|| sync_case(&servers_rt, &client_rt, n(100_000.0), 1024));
    let c = run("256k").then(|| sync_case(&servers_rt, &client_rt, n(1_280.0), 256 * 1024));
    let out = json!({
        "bench": "s1",
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "heap_profiling": std::env::var("_RJEM_MALLOC_CONF")
            .unwrap_or_else(|_| "prof_active:true (the node's default)".into()),
        "case_16k": a,
        "ceiling_bare_stream": ceiling,
        "ratio_to_ceiling": ratio,
        "goal_ratio": 0.5,
        "case_1k": b,
        "goal_1k_blocks_per_s": 40_000,
        "case_256k": c,
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
