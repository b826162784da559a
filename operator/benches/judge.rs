//! S5 judge benchmark: the operator's verdicts over full sample windows of the 1,000-node /
//! 10-region spec (examples/s5-1000.yaml) — what every reconcile of a running S5 network costs.
//! Prints one JSON line. Goal: p50 well under the spec's scrape interval (15 s); see
//! docs/benchmarks.md.
//!
//!   cargo bench -p syncnet-operator --bench judge

use std::time::Instant;

use syncnet_operator::state::{DEFAULT_MAX_SAMPLES, NetState};

fn main() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/s5-1000.yaml");
    let sn = syncnet_crds::SyncNetwork::from_yaml(&std::fs::read_to_string(path).unwrap())
        .expect("the S5 example is valid");
    let spec = &sn.spec;
    let every = spec.soak.scrape_interval_secs as f64;
    // Both ways a window fills: pods scraped together (one time a round), and Prometheus
    // (each pod at its own scrape time, so as many distinct times as samples).
    let mut cases = vec![];
    for (source, spread) in [("pods", 0.0), ("prometheus", 1.0)] {
        let mut st = NetState::new(spec, 1, vec![], 0.0, DEFAULT_MAX_SAMPLES);
        let nodes = st.nodes().len();
        let per_node = DEFAULT_MAX_SAMPLES / nodes;
        let mut end = 0.0;
        for k in 0..per_node {
            for i in 0..nodes {
                let t = k as f64 * every + spread * every * (i as f64 / nodes as f64);
                end = f64::max(end, t);
                st.record(i, t, sample(i, k, t));
            }
        }
        let mut times = vec![];
        let mut pass = false;
        for _ in 0..5 {
            let started = Instant::now();
            pass = st.judge(spec, end).pass;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        cases.push(serde_json::json!({
            "source": source,
            "nodes": nodes,
            "samples": st.sample_count(),
            "samples_per_node": per_node,
            "runs": times.len(),
            "p50_ms": (times[times.len() / 2] * 10.0).round() / 10.0,
            "max_ms": (times[times.len() - 1] * 10.0).round() / 10.0,
            "healthy_network_passes": pass,
        }));
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "operator_judge_s5",
            "scrape_interval_ms": every * 1000.0,
            "cases": cases,
        })
    );
}

/// Node `i`'s `k`-th scrape at `t`: healthy and slightly noisy.
fn sample(i: usize, k: usize, t: f64) -> std::collections::BTreeMap<String, f64> {
    let wobble = ((i * 7919 + k * 104_729) % 1000) as f64 / 1000.0;
    let height = (t / 2.0).floor() + 1.0;
    let body = format!(
        "process_resident_memory_bytes {}\nprocess_cpu_seconds_total {}\n\
         process_open_fds {}\nprocess_threads 12\nsyncnet_chain_head_height {height}\n\
         syncnet_sync_target_height {height}\nsyncnet_sync_lag 0\nsyncnet_p2p_streams 6\n\
         syncnet_p2p_connections 8\nsyncnet_p2p_stream_setups_total{{outcome=\"ok\"}} {}\n\
         syncnet_p2p_discovery_rounds_total{{outcome=\"productive\"}} {}\n",
        64e6 + wobble * 1e6,
        t * 0.05 + wobble,
        40.0 + (wobble * 4.0).floor(),
        (k / 10) as f64,
        (k / 4) as f64,
    );
    soak::scrape::parse(&body)
}
