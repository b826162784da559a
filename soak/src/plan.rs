//! From a `SyncNetwork` spec to what runs: one `syncnode` config per replica, and the fault
//! schedule with its targets. Sans-IO: nothing here touches disk or processes (the runner writes
//! and starts what this returns), so both are tested as plain values.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::SeedableRng;
use rand::seq::IndexedRandom;
use syncnet_crds::{FaultAction, FaultSpec, SyncNetworkSpec};
use syncnet_proto::config::BroadcastConfig;
use syncnet_proto::config::P2pConfig;
use syncnet_proto::config::{LogConfig, MetricsConfig, NodeConfig, PayloadSize, ProducerConfig};
use syncnet_proto::ida::IdaParams;
use syncnet_proto::netem::NetemConfig;

/// One replica: its name (`<region>-<i>`), region, whether it produces, and its config.
#[derive(Clone, Debug)]
pub struct NodePlan {
    pub name: String,
    pub region: String,
    pub producer: bool,
    pub config: NodeConfig,
}

/// Files of a run, relative to its directory.
pub const NETWORK_FILE: &str = "network.yaml";
pub const PRODUCER_KEY: &str = "producer.key";

/// A replica's name: `<region>-<i>`.
pub fn node_name(region: &str, i: u32) -> String {
    format!("{region}-{i}")
}

/// The producer is the first replica of the producer's region.
pub fn producer_name(spec: &SyncNetworkSpec) -> String {
    node_name(&spec.producer.region, 0)
}

pub fn node_dir(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join("nodes").join(name)
}

/// The nodes of a spec in a run directory. The producer is the first replica of the producer's
/// region. Every address is loopback with port 0 (each node writes what it bound to
/// `syncnode.addrs.json`); bootnodes are filled in by the runner once the first nodes are up.
pub fn nodes(spec: &SyncNetworkSpec, run_dir: &Path) -> Vec<NodePlan> {
    let producer = producer_name(spec);
    let mut out = vec![];
    for r in &spec.regions {
        for i in 0..r.replicas {
            let name = node_name(&r.name, i);
            let producer = name == producer;
            let config = node_config(
                spec,
                &r.name,
                producer,
                run_dir.join(NETWORK_FILE),
                node_dir(run_dir, &name),
                run_dir.join(PRODUCER_KEY),
            );
            out.push(NodePlan {
                name,
                region: r.name.clone(),
                producer,
                config,
            });
        }
    }
    out
}

/// One node's config from the spec: the one mapping of spec fields onto `syncnode` settings, used
/// by the local runner (per process) and the operator (per region). Metrics listen on loopback
/// port 0 and there are no bootnodes; each backend sets its own addresses.
pub fn node_config(
    spec: &SyncNetworkSpec,
    region: &str,
    producer: bool,
    network_file: PathBuf,
    data_dir: PathBuf,
    producer_key: PathBuf,
) -> NodeConfig {
    let mut p2p = P2pConfig {
        region: Some(region.to_owned()),
        netem: netem(spec),
        ..P2pConfig::default()
    };
    if let Some(lo) = spec.sync.streams_low {
        p2p.streams.soft_low = lo as usize;
        p2p.streams.hard_low = p2p.streams.hard_low.min(lo as usize);
    }
    if let Some(hi) = spec.sync.streams_high {
        p2p.streams.high = hi as usize;
    }
    if let Some(ms) = spec.sync.discovery_interval_ms {
        p2p.streams.discovery_interval = Duration::from_millis(ms);
    }
    let mut broadcast = BroadcastConfig {
        mode: spec.broadcast.mode,
        ..BroadcastConfig::default()
    };
    let d = IdaParams::default();
    broadcast.ida.params = IdaParams {
        data_shards: spec.broadcast.data_shards.unwrap_or(d.data_shards),
        parity_shards: spec.broadcast.parity_shards.unwrap_or(d.parity_shards),
    };
    NodeConfig {
        network_file,
        data_dir,
        metrics: MetricsConfig {
            listen: "127.0.0.1:0".parse().expect("valid"),
            control_token_file: None,
        },
        log: LogConfig::default(),
        producer: producer.then(|| ProducerConfig {
            key_file: producer_key,
            interval_ms: spec.producer.block_interval_ms,
            payload_bytes: PayloadSize::fixed(spec.producer.payload_bytes),
            seed: 1,
        }),
        p2p,
        sync: Default::default(),
        broadcast,
    }
}

/// The emulation every node runs, or none when the spec asks for neither latency nor bandwidth
/// (emulation is all nodes or none: the connection preamble differs).
fn netem(spec: &SyncNetworkSpec) -> Option<NetemConfig> {
    let l = &spec.latency;
    if l.matrix_ms.is_empty() && l.jitter_ms == 0 && spec.bandwidth.upload_mbit.is_none() {
        return None;
    }
    Some(NetemConfig {
        latency_ms: l.matrix_ms.clone(),
        jitter_ms: l.jitter_ms,
        upload_bytes_per_sec: spec
            .bandwidth
            .upload_mbit
            .map_or(0, |m| u64::from(m) * 1_000_000 / 8),
        ..NetemConfig::default()
    })
}

/// One occurrence of a fault: when it starts and ends (seconds from the start) and on which
/// nodes (indices into [`nodes`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FaultWindow {
    pub fault: usize,
    pub name: String,
    pub action: FaultAction,
    pub start: u64,
    pub end: u64,
    pub targets: Vec<usize>,
}

/// Every fault occurrence within the soak, in start order, with targets drawn from the selector
/// (region, count or fraction, the producer only if asked) by a seeded generator: a run is
/// reproducible from its seed. An occurrence whose selector matches no node is an error naming
/// the fault.
pub fn schedule(
    spec: &SyncNetworkSpec,
    nodes: &[NodePlan],
    seed: u64,
) -> Result<Vec<FaultWindow>, String> {
    let mut out = vec![];
    let end = spec.soak.duration_secs;
    for (i, f) in spec.faults.iter().enumerate() {
        let starts: Vec<u64> = match (f.at_secs, f.every_secs) {
            (Some(at), _) => vec![at],
            (None, Some(every)) => (1..).map(|k| k * every).take_while(|s| *s < end).collect(),
            (None, None) => vec![],
        };
        let candidates: Vec<usize> = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| f.target.region.as_ref().is_none_or(|r| *r == n.region))
            .filter(|(_, n)| f.target.include_producer || !n.producer)
            .map(|(j, _)| j)
            .collect();
        if candidates.is_empty() && !starts.is_empty() {
            return Err(format!(
                "spec.faults[{i}].target: selects no node (the producer is excluded unless \
                 includeProducer is set)"
            ));
        }
        for (k, start) in starts.into_iter().filter(|s| *s < end).enumerate() {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ ((i as u64) << 32) ^ k as u64);
            let mut targets: Vec<usize> = candidates
                .sample(&mut rng, how_many(f, candidates.len()))
                .copied()
                .collect();
            targets.sort_unstable();
            out.push(FaultWindow {
                fault: i,
                name: f.name.clone(),
                action: f.action,
                start,
                end: start + f.duration_secs,
                targets,
            });
        }
    }
    out.sort_by_key(|w| (w.start, w.fault));
    Ok(out)
}

fn how_many(f: &FaultSpec, pool: usize) -> usize {
    match (f.target.count, f.target.fraction) {
        (Some(c), _) => (c as usize).min(pool),
        (None, Some(x)) => ((x * pool as f64).ceil() as usize).clamp(1, pool),
        (None, None) => pool,
    }
}

#[cfg(test)]
mod tests;
