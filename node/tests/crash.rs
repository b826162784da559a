//! Crash consistency: a child process commits batches and dies mid-way; the store must always
//! reopen as a verifying prefix whose head is the last committed batch, with nothing of a lost
//! batch left in the segment files.
//!
//! Each round dies one of four ways, in turn:
//! - `torn`: half of a batch's records written to the segment (fail point `store-torn-append`);
//! - `before-index`: the whole append written and synced, the index transaction not begun
//!   (`store-before-index`);
//! - `after-index`: committed, but the process dies before reporting it (`store-after-index`);
//! - `sigkill`: SIGKILL at a random moment, wherever the commit path is.
//!
//! The fail points abort the process (no destructors, no flushing), which leaves the files as a
//! SIGKILL at that instant would. They exist only in test builds (`fail/failpoints`).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use rand::{RngExt, SeedableRng};
use syncnet_node::store::{Store, segments_dir};

const BATCH: u64 = 32;
const ROUNDS: usize = 24;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Death {
    Torn,
    BeforeIndex,
    AfterIndex,
    Sigkill,
}

impl Death {
    fn failpoint(self) -> Option<&'static str> {
        match self {
            // One batch in eight on average: a few commits happen before the death.
            Death::Torn => Some("store-torn-append=12%return"),
            Death::BeforeIndex => Some("store-before-index=12%return"),
            Death::AfterIndex => Some("store-after-index=12%return"),
            Death::Sigkill => None,
        }
    }
}

/// Bytes in the store's segment files.
fn segment_bytes(store: &Path) -> u64 {
    std::fs::read_dir(segments_dir(store))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn a_crash_anywhere_in_a_commit_leaves_a_consistent_prefix() {
    let net = Devnet::new("  interval_ms: 1000\n  payload_bytes: {min: 1024, max: 8192}\n");
    let spec = net.spec();
    let store_path = net.path("data/chain.redb");
    let seed: u64 = rand::random();
    eprintln!("crash test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let deaths = [
        Death::Torn,
        Death::BeforeIndex,
        Death::AfterIndex,
        Death::Sigkill,
    ];
    let mut prev_head = 0;
    for round in 0..ROUNDS {
        let death = deaths[round % deaths.len()];
        let mut cmd = syncnode();
        cmd.args([
            "gen-chain",
            "--blocks",
            "10000000",
            "--batch",
            &BATCH.to_string(),
            "--config",
        ])
        .arg(net.path("node.yaml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        if let Some(fp) = death.failpoint() {
            cmd.env("FAILPOINTS", fp);
        }
        let mut child = ChildGuard(cmd.spawn().unwrap());
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
        // Heads the child reported; the wait below takes one off the channel.
        let mut seen = prev_head;
        if death == Death::Sigkill {
            // Wait for a first commit, then kill at a random moment mid-stream.
            let first = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("child never committed");
            seen = seen.max(first);
            std::thread::sleep(Duration::from_millis(rng.random_range(0..120)));
            child.0.kill().unwrap();
        }
        // A fail point ends the child by itself; a child that outlives the deadline fails.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = child.0.try_wait().unwrap() {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round} ({death:?}): the child did not die"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(!status.success(), "round {round}: the child exited cleanly");
        reader.join().unwrap();
        // The last head the child reported committed (or the previous round's, if none).
        // (Once the first report, waited for above, was left out of this: a SIGKILL right after
        // it then looked like two unreported batches.)
        let reported = rx.try_iter().fold(seen, u64::max);
        let before = segment_bytes(&store_path);

        let store = Store::open_or_init(&store_path, &spec).unwrap();
        let head = store.head().height;
        match death {
            // The lost batch is gone: the head is the last reported one, and the bytes the
            // child wrote for the lost batch were cut.
            Death::Torn | Death::BeforeIndex => {
                assert_eq!(head, reported, "round {round} ({death:?})");
                assert!(
                    segment_bytes(&store_path) < before,
                    "round {round} ({death:?}): nothing was cut ({before} bytes)"
                );
            }
            // The batch committed just before the death survives though nobody heard of it.
            Death::AfterIndex => {
                assert_eq!(head, reported + BATCH, "round {round} ({death:?})")
            }
            // Everything reported survived; at most the batch in flight committed unreported.
            Death::Sigkill => assert!(
                head >= reported && head <= reported + BATCH,
                "round {round}: head {head}, reported {reported}"
            ),
        }
        assert!(head >= prev_head, "round {round}: head went back");
        // Whole-chain verification: signatures, links, records against the index, nothing
        // after the head's record.
        assert_eq!(store.check(&spec).unwrap(), head, "round {round}");
        assert_eq!(store.block(head + 1).unwrap(), None);
        eprintln!("round {round} ({death:?}): reported {reported}, reopened at {head}");
        prev_head = head;
    }
    assert!(
        prev_head > BATCH * ROUNDS as u64 / 2,
        "too little progress to mean anything: {prev_head}"
    );
}
