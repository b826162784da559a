//! The storm test on its own: it burns CPU on purpose (the canary), so it runs in its own test
//! binary, never alongside the latency-sensitive tests in tests/p2p.rs.

mod common;

use std::time::Duration;

use common::net::*;

fn counter(
    m: &prometheus_client::metrics::family::Family<
        [(&'static str, &'static str); 1],
        prometheus_client::metrics::counter::Counter,
    >,
    label: (&'static str, &'static str),
) -> u64 {
    m.get_or_create(&[label]).get()
}

/// Setups (successful or not) over 60 s with discovery forced every second and 20% of setups failing.
/// Documented bound (docs/protocol.md): at most 20 setups per node per minute for the fixed stream
/// manager; the storm canary must exceed 10x that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_discovery_with_failures_stays_bounded_while_storm_canary_explodes() {
    const NODES: usize = 4;
    const BOUND_PER_NODE: u64 = 20;
    async fn network(net: &Net, storm: bool) -> Vec<Node> {
        let mut c = cfg(vec![]);
        c.streams.forced_discovery = Some(Duration::from_secs(1));
        c.streams.storm_canary = storm;
        let boot = start(net, c.clone(), 0).await;
        c.bootnodes = vec![boot.addr.clone()];
        let mut nodes = vec![boot];
        for _ in 1..NODES {
            nodes.push(start(net, c.clone(), 0).await);
        }
        for n in &nodes {
            n.h.update_faults(|f| f.setup_failure_rate = 0.2).await;
        }
        nodes
    }
    let setups = |nodes: &[Node]| -> u64 {
        nodes
            .iter()
            .map(|n| n.h.state().counters.succeeded + n.h.state().counters.failed)
            .sum()
    };
    let net = Net::new("testnet");
    let fixed = network(&net, false).await;
    let storm_net = Net::new("stormnet");
    let storm = network(&storm_net, true).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (f, s) = (setups(&fixed), setups(&storm));
    let injected: u64 = fixed
        .iter()
        .map(|n| counter(&n.metrics.faults_injected, ("kind", "setup_failure")))
        .sum();
    let sum = |nodes: &[Node], kind| -> u64 {
        nodes
            .iter()
            .map(|n| counter(&n.metrics.faults_injected, ("kind", kind)))
            .sum()
    };
    let forced = sum(&fixed, "forced_discovery");
    let storm_rounds = sum(&storm, "storm_canary");
    eprintln!(
        "setups in 60 s: fixed {f}, storm {s}; injected failures (fixed) {injected}, \
         forced rounds (fixed) {forced}, storm rounds {storm_rounds}"
    );
    // Both faults are counted: forced rounds on settled nodes, and the canary's rounds.
    assert!(forced >= 30, "forced discovery rounds: {forced}");
    assert!(storm_rounds >= 100, "storm canary rounds: {storm_rounds}");
    assert_eq!(sum(&fixed, "storm_canary"), 0);

    assert!(f > 0, "the fixed network made no setups at all");
    assert!(
        f <= BOUND_PER_NODE * NODES as u64,
        "fixed network: {f} setups in 60 s"
    );
    assert!(
        s >= 10 * BOUND_PER_NODE * NODES as u64,
        "storm canary made only {s} setups"
    );
    for n in &fixed {
        assert!(
            !n.h.state().stream_peers.is_empty(),
            "fixed node without streams: {:?}",
            n.h.state()
        );
    }
    for n in fixed.iter().chain(&storm) {
        n.h.shutdown().await;
    }
}
