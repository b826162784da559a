//! Crash consistency: a child process commits batches; we SIGKILL it at random moments and check
//! that the store always reopens with a verifying prefix whose head is the last committed batch.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use rand::{RngExt, SeedableRng};
use syncnet_node::store::Store;

const BATCH: u64 = 32;
const ROUNDS: usize = 8;

#[test]
fn sigkill_during_batch_inserts_leaves_a_consistent_prefix() {
    let net = Devnet::new("  interval_ms: 1000\n  payload_bytes: {min: 1024, max: 8192}\n");
    let spec = net.spec();
    let seed: u64 = rand::random();
    eprintln!("crash test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut prev_head = 0;
    for round in 0..ROUNDS {
        let mut child = ChildGuard(
            syncnode()
                .args([
                    "gen-chain",
                    "--blocks",
                    "10000000",
                    "--batch",
                    &BATCH.to_string(),
                    "--config",
                ])
                .arg(net.path("node.yaml"))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let (tx, rx) = mpsc::channel();
        let stdout = child.0.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(h) = line
                    .strip_prefix("committed ")
                    .and_then(|h| h.parse::<u64>().ok())
                {
                    let _ = tx.send(h);
                }
            }
        });
        // Wait for the first commit of this round, then kill at a random moment mid-stream.
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("child never committed");
        std::thread::sleep(Duration::from_millis(rng.random_range(0..120)));
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        reader.join().unwrap();
        // The first report counts too (a kill can land before the next one).
        let reported = rx.try_iter().fold(first, u64::max);

        let store = Store::open_or_init(&net.path("data/chain.redb"), &spec).unwrap();
        let head = store.head();
        // Everything reported committed survived; at most the batch in flight committed unreported.
        assert!(
            head.height >= reported,
            "round {round}: head {} < reported {reported}",
            head.height
        );
        assert!(
            head.height <= reported.max(prev_head) + BATCH,
            "round {round}: head {} too far",
            head.height
        );
        assert!(head.height >= prev_head, "round {round}: head went back");
        // Whole-chain verification: signatures, links, indexes, head = last block.
        assert_eq!(store.check(&spec).unwrap(), head.height, "round {round}");
        assert_eq!(store.block(head.height + 1).unwrap(), None);
        eprintln!(
            "round {round}: killed after commit {reported}, reopened at {}",
            head.height
        );
        prev_head = head.height;
    }
    assert!(
        prev_head > BATCH * ROUNDS as u64 / 2,
        "too little progress to mean anything: {prev_head}"
    );
}
