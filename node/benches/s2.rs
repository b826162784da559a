//! Scenario S2, large-block broadcast. Run: `cargo bench -p syncnet-node --bench s2` (prints JSON).
//!
//! 32 nodes in 4 regions on 127.0.0.1, every connection through the in-process network emulation:
//! one-way latency 2 ms inside a region and 25-100 ms between regions, 100 Mbit/s upload per node.
//! The producer broadcasts 2 MiB blocks, one at a time, and waits until every node has the block and
//! the network is quiet before the next. In the same run: IDA gossip (one network per forwarding
//! variant in `S2_IDA`) and the gossipsub baseline (a fresh network). No sync task runs, so every
//! delivery is the broadcast's. Delivery latency runs from just before the producer builds the block
//! to the block being complete on a node.
//!
//! Knobs: `S2_K` (16: k = m),  `S2_NODES` (32), `S2_MBIT` (100, upload per node), `S2_DEGREE` (8: sync streams, so IDA neighbours, kept per node), `S2_BLOCKS` (8 measured, after 1 warm-up), `S2_BLOCK_KIB` (2048),
//! `S2_IDA` (IDA variants as
//! `fanout:budget` pairs, default "3:0,0:0"; 0 = no limit), `S2_REPAIR_MS` (assembler repair_after), `S2_PACE` (1: IDA frames paced at the
//! upload rate; 0: unpaced), `S2_ONLY` (`ida` or `gossipsub`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use serde_json::json;
use syncnet_node::broadcast::gossip::{self, GossipConfig};
use syncnet_node::broadcast::ida::{self, IdaConfig, IdaHandle};
use syncnet_node::broadcast::{self, BroadcastMode, Delivered, Inserter};
use syncnet_node::chain::ChainSpec;
use syncnet_node::config::PayloadSize;
use syncnet_node::ida::IdaParams;
use syncnet_node::keys;
use syncnet_node::metrics::{BroadcastMetrics, ChunkOutcome, P2pMetrics, RepairKind};
use syncnet_node::netem::NetemConfig;
use syncnet_node::p2p::{self, P2pConfig, P2pHandle};
use syncnet_node::producer::Producer;
use syncnet_node::store::Store;
use syncnet_node::streams::StreamConfig;
use tokio::sync::broadcast as bcast;

const REGIONS: [&str; 4] = ["us", "eu", "ap", "sa"];
/// Upload per node in bytes/s: `S2_MBIT` (100) Mbit/s.
fn upload_rate() -> u64 {
    env::<u64>("S2_MBIT", 100) * 1_000_000 / 8
}
const INTRA_MS: u32 = 2;
/// Degree: each node keeps `S2_DEGREE` (default 8) to +4 sync streams, IDA's neighbours;
/// gossipsub's mesh D = 8 either way.
fn degree() -> (usize, usize) {
    let d: usize = env("S2_DEGREE", 8);
    (d, d + 4)
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn matrix() -> NetemConfig {
    let inter = [
        ("us", "eu", 25),
        ("us", "sa", 50),
        ("eu", "sa", 75),
        ("eu", "ap", 90),
        ("us", "ap", 100),
        ("ap", "sa", 100),
    ];
    let mut cfg = NetemConfig {
        upload_bytes_per_sec: upload_rate(),
        ..NetemConfig::default()
    };
    for r in REGIONS {
        cfg.latency_ms
            .entry(r.into())
            .or_default()
            .insert(r.into(), INTRA_MS);
    }
    for (a, b, ms) in inter {
        cfg.latency_ms
            .entry(a.into())
            .or_default()
            .insert(b.into(), ms);
    }
    cfg
}

fn delta_max(cfg: &NetemConfig) -> u32 {
    cfg.latency_ms
        .values()
        .flat_map(|m| m.values().copied())
        .max()
        .unwrap_or(0)
}

struct Node {
    h: P2pHandle,
    bm: BroadcastMetrics,
    metrics: P2pMetrics,
    store: Arc<Store>,
    delivered: bcast::Receiver<Delivered>,
    ida: Option<IdaHandle>,
    _dir: tempfile::TempDir,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Ida {
        fanout: usize,
        budget: usize,
        pace: bool,
    },
    Gossipsub,
}

impl Mode {
    fn name(&self) -> String {
        let all = |n: usize| {
            if n == 0 {
                "all".to_string()
            } else {
                n.to_string()
            }
        };
        match self {
            Mode::Ida {
                fanout,
                budget,
                pace,
            } => format!(
                "ida(fanout={}, budget={}, paced={pace})",
                all(*fanout),
                all(*budget)
            ),
            Mode::Gossipsub => "gossipsub".into(),
        }
    }
}

fn p2p_cfg(i: usize, n: usize, boot: Vec<Multiaddr>, mode: Mode) -> P2pConfig {
    P2pConfig {
        bootnodes: boot,
        streams: StreamConfig {
            hard_low: 2,
            soft_low: degree().0,
            high: degree().1,
            discovery_interval: Duration::from_secs(1),
            ..StreamConfig::default()
        },
        // Regions in blocks of n/4: node 0 (the producer) is in "us".
        region: Some(REGIONS[i * REGIONS.len() / n].into()),
        netem: Some(matrix()),
        gossipsub: (mode == Mode::Gossipsub).then(|| GossipConfig {
            mesh_n: 8,
            mesh_n_low: 6,
            mesh_n_high: 12,
            ..GossipConfig::default()
        }),
        ..P2pConfig::default()
    }
}

async fn start_network(spec: &ChainSpec, n: usize, mode: Mode, params: IdaParams) -> Vec<Node> {
    let mut nodes: Vec<Node> = vec![];
    let mut boot = vec![];
    for i in 0..n {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open_or_init(&dir.path().join("chain.redb"), spec).unwrap());
        let metrics = P2pMetrics::default();
        let h = p2p::spawn(
            p2p_cfg(i, n, boot.clone(), mode),
            libp2p::identity::Keypair::generate_ed25519(),
            spec.clone(),
            store.clone(),
            metrics.clone(),
        )
        .await
        .unwrap();
        let s = h
            .wait_for(Duration::from_secs(10), |s| !s.listen_addrs.is_empty())
            .await
            .unwrap();
        if boot.len() < 3 {
            boot.push(
                format!("{}/p2p/{}", s.listen_addrs[0], h.local_peer_id)
                    .parse()
                    .unwrap(),
            );
        }
        let bm = BroadcastMetrics::default();
        let (delivered, ida) = match mode {
            Mode::Ida {
                fanout,
                budget,
                pace,
            } => {
                let mut cfg = IdaConfig {
                    params,
                    forward_fanout: fanout,
                    push_budget: budget,
                    upload_bytes_per_sec: if pace { upload_rate() } else { 0 },
                    ..IdaConfig::default()
                };
                if let Some(ms) = std::env::var("S2_REPAIR_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                {
                    cfg.assembler.repair_after = Duration::from_millis(ms);
                }
                let handle = ida::spawn(cfg, spec.clone(), store.clone(), h.clone(), bm.clone())
                    .await
                    .unwrap();
                (handle.delivered(), Some(handle))
            }
            Mode::Gossipsub => {
                let ins = Inserter::new(
                    spec.clone(),
                    store.clone(),
                    h.clone(),
                    bm.clone(),
                    BroadcastMode::Gossipsub,
                );
                let rx = ins.subscribe();
                tokio::spawn(gossip::run(
                    spec.clone(),
                    h.clone(),
                    h.take_gossip().unwrap(),
                    ins,
                ));
                (rx, None)
            }
        };
        nodes.push(Node {
            h,
            bm,
            metrics,
            store,
            delivered,
            ida,
            _dir: dir,
        });
    }
    let t = Instant::now();
    loop {
        let ready = nodes.iter().all(|n| {
            let s = n.h.state();
            s.stream_peers.len() >= degree().0.min(n_minus_one(nodes.len()))
                && (mode != Mode::Gossipsub || s.gossip_peers >= 4.min(nodes.len() - 1))
        });
        if ready || t.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let degrees: Vec<usize> = nodes
        .iter()
        .map(|n| n.h.state().stream_peers.len())
        .collect();
    eprintln!(
        "s2: {} network of {n} after {:?}: neighbours min {} max {}",
        mode.name(),
        t.elapsed(),
        degrees.iter().min().unwrap_or(&0),
        degrees.iter().max().unwrap_or(&0),
    );
    nodes
}

fn n_minus_one(n: usize) -> usize {
    n.saturating_sub(1)
}

fn upload(nodes: &[Node]) -> Vec<u64> {
    nodes
        .iter()
        .map(|n| n.metrics.netem.bytes_out.get())
        .collect()
}

/// Waits until no node has uploaded anything for 300 ms (queues drained).
async fn quiet(nodes: &[Node]) {
    let mut last = upload(nodes);
    let mut since = Instant::now();
    let t = Instant::now();
    while since.elapsed() < Duration::from_millis(300) && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = upload(nodes);
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
}

struct BlockResult {
    latencies: Vec<f64>,
    missing: usize,
    sender_bytes: u64,
    node_bytes: Vec<u64>,
}

async fn one_block(
    nodes: &mut [Node],
    producer: &Producer,
    spec: &ChainSpec,
    mode: Mode,
    params: IdaParams,
) -> BlockResult {
    quiet(nodes).await;
    for n in nodes.iter_mut() {
        while n.delivered.try_recv().is_ok() {}
    }
    let before = upload(nodes);
    let start = Instant::now();
    let head = nodes[0].store.head();
    let ida = matches!(mode, Mode::Ida { .. }).then_some(params);
    let (block, enc) =
        broadcast::produce(producer, &head.header, syncnet_node::node::now_ms(), ida);
    let v = spec.verify(block.clone(), &head.header).unwrap();
    nodes[0].store.insert_batch(&[v]).unwrap();
    let height = block.header.height;
    match (&nodes[0].ida, enc) {
        (Some(h), Some(enc)) => h.broadcast(block, enc).await,
        _ => nodes[0]
            .h
            .publish_block(postcard::to_allocvec(&block).unwrap()),
    }
    let mut latencies = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut missing = 0;
    for n in nodes[1..].iter_mut() {
        loop {
            match tokio::time::timeout_at(deadline, n.delivered.recv()).await {
                Ok(Ok(d)) if d.height == height => {
                    latencies.push(d.at.duration_since(start).as_secs_f64());
                    break;
                }
                Ok(Ok(_)) | Ok(Err(bcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(_)) | Err(_) => {
                    missing += 1;
                    break;
                }
            }
        }
    }
    quiet(nodes).await;
    let after = upload(nodes);
    let node_bytes: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    BlockResult {
        latencies,
        missing,
        sender_bytes: node_bytes[0],
        node_bytes,
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run_mode(
    mode: Mode,
    n: usize,
    blocks: usize,
    kib: u32,
    params: IdaParams,
) -> serde_json::Value {
    let key = keys::generate();
    let spec = ChainSpec::new("s2", &keys::public_key(&key), 1_700_000_000_000).unwrap();
    let producer = Producer::new(key, PayloadSize::fixed(kib * 1024), 9);
    let mut nodes = start_network(&spec, n, mode, params).await;
    let block_bytes = f64::from(kib * 1024);
    // Warm-up: opens the IDA streams, grafts the gossipsub mesh.
    let w = one_block(&mut nodes, &producer, &spec, mode, params).await;
    eprintln!("s2: {} warm-up block: {} missing", mode.name(), w.missing);
    let mut lat = vec![];
    let mut missing = 0;
    let mut sender = vec![];
    let mut per_node: Vec<f64> = vec![];
    let mut per_block_p100 = vec![];
    for b in 0..blocks {
        let r = one_block(&mut nodes, &producer, &spec, mode, params).await;
        let p100 = r.latencies.iter().copied().fold(0.0, f64::max);
        eprintln!(
            "s2: {} block {}: p100 {:.3} s, missing {}, sender upload {:.2} x B",
            mode.name(),
            b + 1,
            p100,
            r.missing,
            r.sender_bytes as f64 / block_bytes
        );
        per_block_p100.push(p100);
        lat.extend(r.latencies);
        missing += r.missing;
        sender.push(r.sender_bytes as f64 / block_bytes);
        per_node.extend(r.node_bytes[1..].iter().map(|&x| x as f64 / block_bytes));
    }
    lat.sort_by(f64::total_cmp);
    per_node.sort_by(f64::total_cmp);
    // Chunk outcomes per node and block (warm-up included), to see where upload goes.
    let per = (nodes.len() * (blocks + 1)) as f64;
    let chunks: BTreeMap<&str, f64> = [
        ChunkOutcome::Sent,
        ChunkOutcome::Received,
        ChunkOutcome::Forwarded,
        ChunkOutcome::Duplicate,
        ChunkOutcome::Late,
        ChunkOutcome::SkippedHas,
        ChunkOutcome::QueueFull,
        ChunkOutcome::Invalid,
    ]
    .into_iter()
    .map(|o| {
        let total: u64 = nodes.iter().map(|n| n.bm.chunk(o).get()).sum();
        (o.label(), total as f64 / per)
    })
    .collect();
    let requested = RepairKind::Requested.label();
    let repairs: u64 = nodes
        .iter()
        .map(|n| n.bm.repairs.get_or_create(&[("kind", requested)]).get())
        .sum();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    for nd in &nodes {
        nd.h.shutdown().await;
    }
    json!({
        "mode": mode.name(),
        "deliveries": lat.len(),
        "missing": missing,
        "latency_s": {"p50": pct(&lat, 50.0), "p90": pct(&lat, 90.0), "p100": pct(&lat, 100.0)},
        "per_block_p100_s": per_block_p100,
        "sender_upload_over_block": {"mean": mean(&sender), "max": sender.iter().copied().fold(0.0, f64::max)},
        "node_upload_over_block": {"mean": mean(&per_node), "p90": pct(&per_node, 90.0), "max": pct(&per_node, 100.0)},
        "ida_chunks_per_node_and_block": chunks,
        "ida_repairs_requested": repairs,
    })
}

fn main() {
    let n: usize = env("S2_NODES", 32);
    let blocks: usize = env("S2_BLOCKS", 8);
    let kib: u32 = env("S2_BLOCK_KIB", 2048);
    let pace = env("S2_PACE", 1u8) == 1;
    let only: String = env("S2_ONLY", String::new());
    // IDA variants as fanout:budget pairs (0 = no limit).
    let variants: Vec<(usize, usize)> = env("S2_IDA", "3:0,0:0".to_string())
        .split(',')
        .filter_map(|v| {
            let (f, b) = v.trim().split_once(':')?;
            Some((f.parse().ok()?, b.parse().ok()?))
        })
        .collect();
    let k: u16 = env("S2_K", 16);
    let params = IdaParams {
        data_shards: k,
        parity_shards: k,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut modes = vec![];
    if only != "gossipsub" {
        modes.extend(variants.iter().map(|&(fanout, budget)| Mode::Ida {
            fanout,
            budget,
            pace,
        }));
    }
    if only != "ida" {
        modes.push(Mode::Gossipsub);
    }
    let mut results = BTreeMap::new();
    for m in modes {
        let r = rt.block_on(run_mode(m, n, blocks, kib, params));
        eprintln!("s2: {}", r);
        results.insert(m.name(), r);
    }
    let netem = matrix();
    let b = f64::from(kib * 1024);
    let t_lb = b / upload_rate() as f64 + f64::from(delta_max(&netem)) / 1000.0;
    let gossip_p100 = results
        .get("gossipsub")
        .map(|r| r["latency_s"]["p100"].as_f64().unwrap_or(f64::NAN));
    let goals: Vec<serde_json::Value> = results
        .iter()
        .filter(|(k, _)| k.starts_with("ida"))
        .map(|(k, r)| {
            let p100 = r["latency_s"]["p100"].as_f64().unwrap_or(f64::NAN);
            let sender = r["sender_upload_over_block"]["max"]
                .as_f64()
                .unwrap_or(f64::NAN);
            let bound = 1.05 * f64::from(params.total() as u32) / f64::from(params.data_shards);
            json!({
                "mode": k,
                "p100_over_t_lb": p100 / t_lb,
                "p100_le_2_t_lb": p100 <= 2.0 * t_lb,
                "speedup_vs_gossipsub": gossip_p100.map(|g| g / p100),
                "speedup_ge_3": gossip_p100.map(|g| g / p100 >= 3.0),
                "sender_upload_bound": bound,
                "sender_upload_ok": sender <= bound,
            })
        })
        .collect();
    let out = json!({
        "scenario": "S2",
        "nodes": n,
        "regions": REGIONS,
        "block_bytes": b,
        "blocks_measured": blocks,
        "upload_bytes_per_sec": upload_rate(),
        "latency_ms": {"intra": INTRA_MS, "inter_min": 25, "inter_max": delta_max(&netem)},
        "ida_params": {"k": params.data_shards, "m": params.parity_shards},
        "ida_paced": pace,
        "degree": {"soft_low": degree().0, "high": degree().1},
        "t_lb_s": t_lb,
        "results": results,
        "goals": goals,
        "note": "upload counts every byte the emulated uplink carried (noise + yamux framing, pings, kad, identify included)",
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
