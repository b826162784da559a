//! S5 render benchmark: the objects for a 1,000-node / 10-region spec (examples/s5-1000.yaml),
//! rendered repeatedly; prints one JSON line. Goal: p50 < 50 ms (docs/benchmarks.md).
//!
//!   cargo bench -p syncnet-operator --bench render

use std::time::Instant;

use syncnet_operator::render::{self, Keys, Options};

fn main() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/s5-1000.yaml");
    let mut sn = syncnet_crds::SyncNetwork::from_yaml(&std::fs::read_to_string(path).unwrap())
        .expect("the S5 example is valid");
    render::placeholder_identity(&mut sn, "bench");
    let (keys, opts) = (Keys::placeholder(), Options::default());
    let mut times = vec![];
    let mut objects = 0;
    let mut bytes = 0;
    for _ in 0..50 {
        let t = Instant::now();
        let r = render::render(&sn, &keys, &opts).unwrap();
        let yaml = render::to_yaml(&r);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        objects = 1 + r.services.len() + r.stateful_sets.len();
        bytes = yaml.len();
    }
    times.sort_by(f64::total_cmp);
    let p50 = times[times.len() / 2];
    println!(
        "{}",
        serde_json::json!({
            "bench": "operator_render_s5",
            "nodes": sn.spec.total_nodes(),
            "regions": sn.spec.regions.len(),
            "objects": objects,
            "yaml_bytes": bytes,
            "runs": times.len(),
            "p50_ms": (p50 * 1000.0).round() / 1000.0,
            "max_ms": (times[times.len() - 1] * 1000.0).round() / 1000.0,
            "goal_ms": 50.0,
            "pass": p50 < 50.0,
        })
    );
}
