//! Block broadcast on real swarms over 127.0.0.1 with 8 nodes and no sync task, so every block
//! that arrives came by broadcast: IDA alone, IDA with 25% of chunks dropped, IDA with a malicious
//! relay, and the gossipsub baseline. Every wait is bounded.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::net::*;
use syncnet_node::broadcast::gossip::{self, GossipConfig};
use syncnet_node::broadcast::ida::{self, IdaConfig, IdaHandle};
use syncnet_node::broadcast::{self, BroadcastMode, Inserter};
use syncnet_node::chain::Block;
use syncnet_node::ida::IdaParams;
use syncnet_node::metrics::BroadcastMetrics;
use syncnet_node::p2p::P2pConfig;

const NODES: usize = 8;
const PARAMS: IdaParams = IdaParams {
    data_shards: 8,
    parity_shards: 8,
};

async fn nodes(net: &Net, gossipsub: bool) -> Vec<Node> {
    let mut c: P2pConfig = cfg(vec![]);
    c.streams.soft_low = 3;
    c.streams.high = 5;
    if gossipsub {
        c.gossipsub = Some(GossipConfig {
            mesh_n: 4,
            mesh_n_low: 3,
            mesh_n_high: 6,
            ..GossipConfig::default()
        });
    }
    let boot = start(net, c.clone(), 0).await;
    c.bootnodes = vec![boot.addr.clone()];
    let mut nodes = vec![boot];
    for _ in 1..NODES {
        nodes.push(start(net, c.clone(), 0).await);
    }
    for (i, n) in nodes.iter().enumerate() {
        n.h.wait_for(Duration::from_secs(60), |s| s.stream_peers.len() >= 3)
            .await
            .unwrap_or_else(|| panic!("node {i} has too few neighbours: {:?}", n.h.state()));
    }
    nodes
}

struct Ida {
    nodes: Vec<Node>,
    handles: Vec<IdaHandle>,
    metrics: Vec<BroadcastMetrics>,
}

async fn ida_network(net: &Net) -> Ida {
    let nodes = nodes(net, false).await;
    let icfg = IdaConfig {
        params: PARAMS,
        assembler: syncnet_node::ida::assembler::AssemblerConfig {
            repair_after: Duration::from_millis(300),
            ..Default::default()
        },
        ..IdaConfig::default()
    };
    let (mut handles, mut metrics) = (vec![], vec![]);
    for n in &nodes {
        let m = BroadcastMetrics::default();
        handles.push(
            ida::spawn(
                icfg.clone(),
                net.spec.clone(),
                n.store.clone(),
                n.h.clone(),
                m.clone(),
            )
            .await
            .unwrap(),
        );
        metrics.push(m);
    }
    Ida {
        nodes,
        handles,
        metrics,
    }
}

/// The next block on `node`'s chain, with an IDA root when `ida` is set; inserted into its store.
fn produce(net: &Net, node: &Node, ida: bool) -> (Block, Option<Arc<syncnet_node::ida::Encoded>>) {
    let head = node.store.head();
    let (block, enc) = broadcast::produce(
        &net.producer,
        &head.header,
        syncnet_node::node::now_ms(),
        ida.then_some(PARAMS),
    );
    let v = net.spec.verify(block.clone(), &head.header).unwrap();
    node.store.insert_batch(&[v]).unwrap();
    (block, enc)
}

fn big_net() -> Net {
    let mut net = Net::new("testnet");
    net.producer = syncnet_node::producer::Producer::new(
        net.producer.key().clone(),
        syncnet_node::config::PayloadSize::fixed(256 * 1024),
        7,
    );
    net
}

fn count(m: &BroadcastMetrics, outcome: &'static str) -> u64 {
    m.chunks.get_or_create(&[("outcome", outcome)]).get()
}

// Each read is its own statement: `get_or_create` returns a read guard, and a second call in
// the same expression that creates a label waits for the write lock forever.
fn blocks(m: &BroadcastMetrics, outcome: &'static str) -> u64 {
    m.blocks.get_or_create(&[("outcome", outcome)]).get()
}

fn decoded(m: &BroadcastMetrics) -> u64 {
    blocks(m, "decoded")
}

fn repairs(m: &BroadcastMetrics, kind: &'static str) -> u64 {
    m.repairs.get_or_create(&[("kind", kind)]).get()
}

/// Produces `n` blocks on node 0, each waited for on every node.
async fn run_ida_blocks(net: &Net, ida: &Ida, n: u64) {
    for b in 1..=n {
        let (block, enc) = produce(net, &ida.nodes[0], true);
        ida.handles[0].broadcast(block, enc.unwrap()).await;
        wait_for_block(ida, ida.nodes.len(), b).await;
    }
    for (i, n) in ida.nodes.iter().enumerate() {
        assert_eq!(
            n.store.block(n_height(n)).unwrap().unwrap().hash(),
            ida.nodes[0]
                .store
                .block(n_height(n))
                .unwrap()
                .unwrap()
                .hash(),
            "node {i}"
        );
    }
}

/// Waits (bounded) until the first `nodes` nodes hold block `b`; on timeout, says who lacks it.
async fn wait_for_block(ida: &Ida, nodes: usize, b: u64) {
    eventually_or(
        Duration::from_secs(30),
        || {
            ida.nodes[..nodes]
                .iter()
                .all(|n| n.store.head().height >= b)
        },
        || {
            format!(
                "block {b} not on all of the first {nodes} nodes: {}",
                dump(ida)
            )
        },
    )
    .await;
}

/// Per node: height, neighbours and chunk counters (for failure messages).
fn dump(ida: &Ida) -> String {
    let mut out = String::new();
    for (i, (n, m)) in ida.nodes.iter().zip(&ida.metrics).enumerate() {
        out += &format!(
            "\n node {i} {}: height {}, neighbours {:?}, received {}, dropped {}, invalid {}, \
             duplicate {}, sent {}, repairs requested {} served {}, decoded {}, gave up {}, \
             assembling {}",
            n.id(),
            n.store.head().height,
            n.h.state().stream_peers,
            count(m, "received"),
            count(m, "fault_dropped"),
            count(m, "invalid"),
            count(m, "duplicate"),
            count(m, "sent"),
            repairs(m, "requested"),
            repairs(m, "served"),
            decoded(m),
            blocks(m, "gave_up"),
            m.assembly_blocks.get(),
        );
    }
    out
}

fn n_height(n: &Node) -> u64 {
    n.store.head().height
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_receives_every_block_by_ida() {
    let net = big_net();
    let ida = ida_network(&net).await;
    run_ida_blocks(&net, &ida, 5).await;
    // No sync task runs: each follower decoded each block itself.
    for (i, m) in ida.metrics.iter().enumerate().skip(1) {
        assert_eq!(decoded(m), 5, "node {i}");
        assert_eq!(count(m, "invalid"), 0, "node {i}");
        let mut r = prometheus_client::registry::Registry::default();
        m.register(&mut r);
        let text = syncnet_node::metrics::render(&r);
        assert!(
            text.contains("syncnet_broadcast_delivery_seconds_count{mode=\"ida\"} 5"),
            "node {i}: {text}"
        );
    }
    // The producer sent each of the 16 chunks of each block at most once (a neighbour that got a
    // chunk from a relay first is skipped), and at least k distinct ones.
    let sent = count(&ida.metrics[0], "sent");
    assert!((5 * 8..=5 * 16).contains(&sent), "{sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_complete_with_a_quarter_of_all_chunks_dropped() {
    let net = big_net();
    let ida = ida_network(&net).await;
    for n in &ida.nodes {
        n.h.update_faults(|f| f.chunk_drop_rate = 0.25).await;
    }
    run_ida_blocks(&net, &ida, 5).await;
    let dropped: u64 = ida.metrics.iter().map(|m| count(m, "fault_dropped")).sum();
    let received: u64 = ida.metrics.iter().map(|m| count(m, "received")).sum();
    let share = dropped as f64 / (dropped + received) as f64;
    assert!(
        (0.15..0.35).contains(&share),
        "dropped {dropped} of {} chunks",
        dropped + received
    );
    for (i, m) in ida.metrics.iter().enumerate().skip(1) {
        assert_eq!(
            decoded(m),
            5,
            "node {i} rebuilt every block from what arrived"
        );
    }
    let injected: u64 = ida
        .nodes
        .iter()
        .map(|n| {
            n.metrics
                .faults_injected
                .get_or_create(&[("kind", "chunk_drop")])
                .get()
        })
        .sum();
    assert_eq!(injected, dropped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malicious_relay_does_not_stop_delivery_and_is_penalised() {
    let net = big_net();
    let ida = ida_network(&net).await;
    let bad = NODES - 1;
    ida.nodes[bad]
        .h
        .update_faults(|f| f.corrupt_chunks = true)
        .await;
    let rejected = |ida: &Ida| -> u64 {
        ida.metrics[..bad]
            .iter()
            .map(|m| m.invalid_chunks.get_or_create(&[("reason", "proof")]).get())
            .sum()
    };
    // At least 5 blocks, and on until a corrupt chunk reached someone (a relay whose forwards all
    // went to neighbours that had the chunk already corrupts nothing anyone sees); at most 20.
    let mut blocks = 0u64;
    while blocks < 5 || (rejected(&ida) == 0 && blocks < 20) {
        blocks += 1;
        let b = blocks;
        let (block, enc) = produce(&net, &ida.nodes[0], true);
        ida.handles[0].broadcast(block, enc.unwrap()).await;
        wait_for_block(&ida, bad, b).await;
    }
    for (i, m) in ida.metrics.iter().enumerate().take(bad).skip(1) {
        assert_eq!(decoded(m), blocks, "node {i}");
    }
    let corrupted = ida.nodes[bad]
        .metrics
        .faults_injected
        .get_or_create(&[("kind", "corrupt_chunk")])
        .get();
    assert!(corrupted > 0, "the relay never relayed");
    // Everyone who got a corrupt chunk rejected it for its proof and dropped the relay's stream.
    assert!(
        rejected(&ida) > 0,
        "no corrupt chunk arrived in {blocks} blocks"
    );
    // The IDA task rejects the chunk and then asks the swarm task to drop the stream, so the
    // removal of the last rejection may still be on its way.
    let penalised = || -> u64 {
        ida.nodes[..bad]
            .iter()
            .map(|n| {
                n.metrics
                    .removals
                    .get_or_create(&[("reason", "penalised")])
                    .get()
            })
            .sum()
    };
    eventually(
        "someone dropped the malicious relay",
        Duration::from_secs(10),
        || penalised() > 0,
    )
    .await;
    assert!(
        ida.metrics[..bad]
            .iter()
            .all(|m| count(m, "invalid") <= corrupted)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_receives_every_block_by_gossipsub() {
    let net = big_net();
    let nodes = nodes(&net, true).await;
    let mut metrics = vec![];
    for n in &nodes {
        let m = BroadcastMetrics::default();
        let inserter = Inserter::new(
            net.spec.clone(),
            n.store.clone(),
            n.h.clone(),
            m.clone(),
            BroadcastMode::Gossipsub,
        );
        tokio::spawn(gossip::run(
            net.spec.clone(),
            n.h.clone(),
            n.h.take_gossip().expect("gossipsub is on"),
            inserter,
        ));
        metrics.push(m);
    }
    // Subscriptions are exchanged on connect; publishing needs at least one subscribed peer.
    for n in &nodes {
        n.h.wait_for(Duration::from_secs(30), |s| s.gossip_peers >= 1)
            .await
            .expect("gossipsub subscriptions");
    }
    for b in 1..=3u64 {
        let (block, _) = produce(&net, &nodes[0], false);
        nodes[0]
            .h
            .publish_block(postcard::to_allocvec(&block).unwrap());
        eventually(
            &format!("block {b} everywhere by gossipsub"),
            Duration::from_secs(30),
            || nodes.iter().all(|n| n.store.head().height >= b),
        )
        .await;
    }
    // Each follower inserted all three itself (the counter moves just after the head does).
    let inserted = |m: &BroadcastMetrics| m.blocks.get_or_create(&[("outcome", "inserted")]).get();
    eventually("every block counted", Duration::from_secs(5), || {
        metrics[1..].iter().all(|m| inserted(m) >= 3)
    })
    .await;
    for (i, m) in metrics.iter().enumerate().skip(1) {
        assert_eq!(inserted(m), 3, "node {i}");
    }
}
