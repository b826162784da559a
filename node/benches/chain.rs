//! Chain benchmark: block verification rate and batched store insert rate, for 1 KiB and 16 KiB
//! payloads. Prints one JSON object on stdout. Run: `cargo bench -p syncnet-node --bench chain`.
//!
//! A plain harness (not criterion) because the project's benchmarks all print machine-readable JSON
//! that stressnet and docs/benchmarks.md consume; each case is run 3 times and the median reported.

use std::time::Instant;

use serde_json::json;
use syncnet_node::chain::{Block, ChainSpec, VerifiedBlock};
use syncnet_node::config::PayloadSize;
use syncnet_node::keys;
use syncnet_node::producer::Producer;
use syncnet_node::store::Store;

const REPEATS: usize = 3;
const BATCH: usize = 256;

fn chain(spec: &ChainSpec, producer: &Producer, n: usize) -> Vec<Block> {
    let mut parent = spec.genesis().header.clone();
    (0..n)
        .map(|_| {
            let b = producer.next_block(&parent, parent.timestamp_ms + 1000);
            parent = b.header.clone();
            b
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let key = keys::generate();
    let spec = ChainSpec::new("bench", &keys::public_key(&key), 0).unwrap();
    let mut results = Vec::new();
    for (payload, n) in [(1024usize, 20_000usize), (16 * 1024, 5_000)] {
        let producer = Producer::new(key.clone(), PayloadSize::fixed(payload as u32), 1);
        let blocks = chain(&spec, &producer, n);
        let mb = (n * payload) as f64 / 1e6;

        let verify_s = median(
            (0..REPEATS)
                .map(|_| {
                    let input = blocks.clone();
                    let t = Instant::now();
                    let v = spec.verify_chain(&spec.genesis().header, input).unwrap();
                    let s = t.elapsed().as_secs_f64();
                    assert_eq!(v.len(), n);
                    s
                })
                .collect(),
        );
        results.push(json!({
            "case": "verify", "payload_bytes": payload, "blocks": n, "threads": 1,
            "seconds": verify_s, "blocks_per_s": n as f64 / verify_s, "mb_per_s": mb / verify_s,
        }));

        let verified: Vec<VerifiedBlock> =
            spec.verify_chain(&spec.genesis().header, blocks).unwrap();
        let insert_s = median(
            (0..REPEATS)
                .map(|_| {
                    let dir = tempfile::tempdir().unwrap();
                    let store = Store::open_or_init(&dir.path().join("b.redb"), &spec).unwrap();
                    let t = Instant::now();
                    for batch in verified.chunks(BATCH) {
                        store.insert_batch(batch).unwrap();
                    }
                    let s = t.elapsed().as_secs_f64();
                    assert_eq!(store.head().height, n as u64);
                    s
                })
                .collect(),
        );
        results.push(json!({
            "case": "insert", "payload_bytes": payload, "blocks": n, "batch": BATCH,
            "seconds": insert_s, "blocks_per_s": n as f64 / insert_s, "mb_per_s": mb / insert_s,
        }));
    }
    let out = json!({
        "bench": "chain",
        "repeats": REPEATS,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "results": results,
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
