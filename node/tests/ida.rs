//! IDA gossip on real swarms over 127.0.0.1: blocks reach every node through chunks alone (no sync
//! task runs here). Every wait is bounded.

mod common;

use std::time::Duration;

use common::net::*;
use syncnet_node::chain::Block;
use syncnet_node::ida::IdaParams;
use syncnet_node::p2p::ida::{self, IdaConfig, IdaHandle};

const NODES: usize = 8;

async fn network(net: &Net) -> (Vec<Node>, Vec<IdaHandle>) {
    let mut c = cfg(vec![]);
    c.streams.soft_low = 3;
    c.streams.high = 5;
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
    let icfg = IdaConfig {
        params: IdaParams {
            data_shards: 8,
            parity_shards: 8,
        },
        ..IdaConfig::default()
    };
    let mut handles = vec![];
    for n in &nodes {
        handles.push(
            ida::spawn(
                icfg.clone(),
                net.spec.clone(),
                n.store.clone(),
                n.h.clone(),
                16 << 20,
            )
            .await
            .unwrap(),
        );
    }
    (nodes, handles)
}

/// Produces the next block on `node` with an IDA root and broadcasts it.
async fn produce(net: &Net, node: &Node, ida: &IdaHandle, params: IdaParams, len: usize) {
    let head = node.store.head();
    let payload: Vec<u8> = (0..len)
        .map(|i| (i as u64 * 31 + head.height) as u8)
        .collect();
    let enc = ida::encode_payload(params, &payload);
    let block = Block::produce_with_root(
        net.producer.key(),
        &head.header,
        head.header.timestamp_ms + 1000,
        payload.into(),
        Some(enc.root),
    );
    let v = net.spec.verify(block.clone(), &head.header).unwrap();
    node.store.insert_batch(&[v]).unwrap();
    ida.broadcast(block, enc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_receives_every_block_by_ida() {
    let net = Net::new("testnet");
    let (nodes, idas) = network(&net).await;
    let params = IdaParams {
        data_shards: 8,
        parity_shards: 8,
    };
    // Give the IDA streams a moment to open on every neighbour link (bounded wait on the state).
    for b in 1..=5u64 {
        produce(&net, &nodes[0], &idas[0], params, 256 * 1024).await;
        eventually(
            &format!("block {b} everywhere"),
            Duration::from_secs(30),
            || nodes.iter().all(|n| n.store.head().height >= b),
        )
        .await;
    }
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(
            n.store.block(5).unwrap().unwrap().hash(),
            nodes[0].store.block(5).unwrap().unwrap().hash(),
            "node {i}"
        );
    }
    let delivered: u64 = idas[1..]
        .iter()
        .map(|h| {
            h.counters
                .delivered
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    assert_eq!(delivered, 5 * (NODES as u64 - 1), "all by IDA");
}
