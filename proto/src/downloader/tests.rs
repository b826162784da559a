//! Scripted peers and a fake clock drive the downloader; blocks are real and really verified.

use super::*;
use crate::chain::testkit::{key, make_chain, spec_for};
use crate::chain::{Block, ChainSpec, H256};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Script {
    Honest,
    /// Flips a payload byte in every reply.
    Tampers,
    /// Never answers.
    Stalls,
}

struct Harness {
    spec: ChainSpec,
    chain: Vec<Block>,
    d: Downloader<u32>,
    peers: HashMap<u32, Script>,
    now: Instant,
    local_hash: H256,
    fetches: Vec<(u32, u64, u32)>,
    penalties: Vec<(u32, Penalty)>,
    watchdogs: usize,
    cancels: usize,
    max_buffered: u64,
    /// The next this many commits fail in the store (not the peer's doing).
    local_failures: usize,
    /// Blocks in each commit.
    commits: Vec<usize>,
    /// Why each batch went back to be fetched again.
    retries: Vec<Retry>,
}

impl Harness {
    fn new(n: usize, size: usize, cfg: DownloaderConfig, peers: &[(u32, Script)]) -> Harness {
        let k = key(1);
        let spec = spec_for(&k);
        let chain = make_chain(&spec, &k, n, size);
        let now = Instant::now();
        let mut d = Downloader::new(cfg, 0, now);
        for (p, _) in peers {
            d.handle(
                Event::PeerHead {
                    peer: *p,
                    height: n as u64,
                },
                now,
            );
        }
        Harness {
            local_hash: spec.genesis_hash(),
            spec,
            chain,
            d,
            peers: peers.iter().copied().collect(),
            now,
            fetches: vec![],
            penalties: vec![],
            watchdogs: 0,
            cancels: 0,
            retries: vec![],
            max_buffered: 0,
            local_failures: 0,
            commits: vec![],
        }
    }

    /// Serves like `session::serve`: `[from, from+count)`, stopping before `max_bytes` (≥ 1 block).
    fn reply(&self, peer: u32, from: u64, count: u32, max_bytes: u32) -> Option<Vec<Block>> {
        let script = self.peers[&peer];
        if script == Script::Stalls {
            return None;
        }
        let mut out = vec![];
        let mut total = 0;
        for b in self
            .chain
            .iter()
            .skip(from as usize - 1)
            .take(count as usize)
        {
            let sz = b.payload.len() + 200;
            if !out.is_empty() && total + sz > max_bytes as usize {
                break;
            }
            total += sz;
            out.push(b.clone());
        }
        if script == Script::Tampers && !out.is_empty() {
            let mut p = out[0].payload.to_vec();
            p[0] ^= 1;
            out[0].payload = p.into();
        }
        Some(out)
    }

    /// Runs actions until quiet; then advances the clock to the next timeout. Bounded steps.
    fn run(&mut self, max_steps: usize) {
        for _ in 0..max_steps {
            if self.d.stats().local == self.chain.len() as u64 {
                return;
            }
            let mut events = vec![];
            while let Some(a) = self.d.poll_action() {
                match a {
                    Action::Fetch {
                        id,
                        peer,
                        from,
                        count,
                        max_bytes,
                    } => {
                        self.fetches.push((peer, from, count));
                        if let Some(blocks) = self.reply(peer, from, count, max_bytes) {
                            let ev = match self.spec.verify_segment(from, blocks) {
                                Ok(v) if v.is_empty() => Event::Empty { id, peer },
                                Ok(v) => Event::Fetched {
                                    id,
                                    peer,
                                    blocks: v,
                                },
                                Err((_, why)) => Event::Invalid { id, peer, why },
                            };
                            events.push(ev);
                        }
                    }
                    Action::Insert { id, blocks } => {
                        self.commits.push(blocks.len());
                        // Like `Store::insert_new`: every block must follow the one before it.
                        let mut parent = (self.local_hash, self.d.stats().local);
                        let unlinked = blocks.iter().find_map(|b| {
                            let h = &b.block().header;
                            let ok = h.parent_hash == parent.0 && h.height == parent.1 + 1;
                            parent = (b.hash(), h.height);
                            (!ok).then_some(h.height)
                        });
                        if self.local_failures > 0 {
                            self.local_failures -= 1;
                            events.push(Event::InsertFailed {
                                id,
                                why: InsertFailure::Local,
                            });
                        } else if let Some(height) = unlinked {
                            events.push(Event::InsertFailed {
                                id,
                                why: InsertFailure::Unlinked { height },
                            });
                        } else {
                            self.local_hash = blocks.last().unwrap().hash();
                            let height = blocks.last().unwrap().block().header.height;
                            events.push(Event::Inserted { id, height });
                        }
                    }
                    Action::Penalise { peer, why } => self.penalties.push((peer, why)),
                    Action::WatchdogFired => self.watchdogs += 1,
                    Action::Cancel { .. } => self.cancels += 1,
                    Action::BatchRetry(why) => self.retries.push(why),
                }
                self.max_buffered = self.max_buffered.max(self.d.stats().buffered_bytes);
            }
            if events.is_empty() {
                match self.d.poll_timeout() {
                    Some(t) => self.now = self.now.max(t),
                    None => return,
                }
                self.d.handle(Event::Tick, self.now);
            }
            for e in events {
                self.d.handle(e, self.now);
                self.max_buffered = self.max_buffered.max(self.d.stats().buffered_bytes);
            }
        }
    }

    fn done(&self) -> bool {
        self.d.stats().local == self.chain.len() as u64
            && self.local_hash == self.chain.last().unwrap().hash()
    }
}

fn cfg() -> DownloaderConfig {
    DownloaderConfig {
        batch_bytes: 16 * 1024,
        max_batch_blocks: 64,
        max_in_flight: 6,
        max_per_peer: 2,
        lookahead_bytes: 96 * 1024,
        commit_bytes: 48 * 1024,
        short_range: 8,
        batch_timeout: Duration::from_secs(5),
        watchdog: Duration::from_secs(20),
        bad_peer_ttl: Duration::from_secs(60),
        max_peers: 16,
        tip_grace: Duration::ZERO,
    }
}

#[test]
fn batches_spread_over_peers_and_commit_in_order() {
    let peers = [
        (1, Script::Honest),
        (2, Script::Honest),
        (3, Script::Honest),
    ];
    let mut h = Harness::new(400, 1024, cfg(), &peers);
    h.run(10_000);
    assert!(h.done(), "{:?}", h.d.stats());
    for p in [1, 2, 3] {
        let n = h.fetches.iter().filter(|f| f.0 == p).count();
        assert!(
            n >= 10,
            "peer {p} got only {n} of {} fetches",
            h.fetches.len()
        );
    }
    assert!(h.penalties.is_empty());
    assert_eq!(h.d.phase(), Phase::Idle);
}

#[test]
fn tampering_peer_is_penalised_and_its_batches_complete_elsewhere() {
    let peers = [
        (1, Script::Honest),
        (2, Script::Tampers),
        (3, Script::Honest),
    ];
    let mut h = Harness::new(300, 1024, cfg(), &peers);
    h.run(10_000);
    assert!(h.done(), "{:?}", h.d.stats());
    assert!(
        h.penalties
            .iter()
            .any(|(p, why)| *p == 2 && *why == Penalty::Invalid(VerifyError::PayloadHash))
    );
    assert!(h.penalties.iter().all(|(p, _)| *p == 2));
    assert!(h.retries.contains(&Retry::Invalid), "{:?}", h.retries);
    // Set aside for bad_peer_ttl: no more fetches to 2 after its penalty within the run.
    let first_penalty_fetch = h.fetches.iter().position(|f| f.0 == 2).unwrap();
    let later: Vec<_> = h.fetches[first_penalty_fetch + 1..]
        .iter()
        .filter(|f| f.0 == 2)
        .collect();
    assert!(later.len() <= cfg().max_per_peer, "{later:?}");
}

#[test]
fn stalling_peer_times_out_and_the_batch_is_retried_elsewhere() {
    let peers = [(1, Script::Stalls), (2, Script::Honest)];
    let mut h = Harness::new(200, 1024, cfg(), &peers);
    let t0 = h.now;
    h.run(10_000);
    assert!(h.done(), "{:?}", h.d.stats());
    assert!(h.cancels >= 1, "stalled requests must be cancelled");
    assert!(
        h.now >= t0 + cfg().batch_timeout,
        "completion needed the timeout"
    );
    let retried = h.fetches.iter().filter(|f| f.0 == 2).count();
    assert!(retried >= 1);
    assert!(h.retries.contains(&Retry::Timeout), "{:?}", h.retries);
}

#[test]
fn watchdog_fires_when_the_head_does_not_move_and_sets_the_staller_aside() {
    let mut c = cfg();
    c.batch_timeout = Duration::from_secs(3600); // only the watchdog can rescue us
    c.watchdog = Duration::from_secs(10);
    let peers = [(1, Script::Stalls), (2, Script::Honest)];
    let mut h = Harness::new(50, 1024, c, &peers);
    h.run(10_000);
    assert!(h.done(), "{:?}", h.d.stats());
    assert!(h.watchdogs >= 1);
    assert!(h.penalties.contains(&(1, Penalty::Stalled)));
    assert!(h.retries.contains(&Retry::Watchdog), "{:?}", h.retries);
    assert!(!h.retries.contains(&Retry::Timeout), "{:?}", h.retries);
}

#[test]
fn lookahead_never_exceeds_its_byte_cap() {
    let peers = [
        (1, Script::Honest),
        (2, Script::Honest),
        (3, Script::Honest),
        (4, Script::Honest),
    ];
    let mut c = cfg();
    c.max_in_flight = 16;
    c.max_per_peer = 4;
    let mut h = Harness::new(500, 2048, c, &peers);
    h.run(10_000);
    assert!(h.done());
    assert!(
        h.max_buffered <= c.lookahead_bytes,
        "{} > {}",
        h.max_buffered,
        c.lookahead_bytes
    );
    assert!(
        h.max_buffered > c.lookahead_bytes / 4,
        "look-ahead unused: {}",
        h.max_buffered
    );
}

#[test]
fn resumes_from_a_restarted_local_head() {
    let peers = [(1, Script::Honest)];
    let mut h = Harness::new(100, 512, cfg(), &peers);
    // As after a restart with 60 blocks in the store.
    h.d = Downloader::new(cfg(), 60, h.now);
    h.d.handle(
        Event::PeerHead {
            peer: 1,
            height: 100,
        },
        h.now,
    );
    h.local_hash = h.chain[59].hash();
    h.run(1000);
    assert!(h.done());
    assert!(
        h.fetches.iter().all(|f| f.1 > 60),
        "refetched stored blocks: {:?}",
        h.fetches
    );
}

#[test]
fn blocks_committed_by_someone_else_are_not_fetched_again() {
    let peers = [(1, Script::Honest)];
    let mut h = Harness::new(300, 512, cfg(), &peers);
    // The first fetches are out; then the producer (say) commits up to 250 itself.
    assert!(h.d.stats().in_flight > 0);
    h.d.handle(Event::LocalAdvanced { height: 250 }, h.now);
    let cancels = std::iter::from_fn(|| h.d.poll_action())
        .filter(|a| matches!(a, Action::Cancel { .. }))
        .count();
    assert!(
        cancels > 0,
        "in-flight batches below the new head must be cancelled"
    );
    h.local_hash = h.chain[249].hash();
    h.fetches.clear();
    h.d.handle(Event::Tick, h.now);
    h.run(1000);
    assert!(h.done(), "{:?}", h.d.stats());
    assert!(h.fetches.iter().all(|f| f.1 > 250), "{:?}", h.fetches);
    assert!(h.penalties.is_empty());
}

/// A commit that fails in the store (I/O, or a race with another writer) retries the batch and
/// blames no one: the serving peer was once penalised as `misplaced` for it.
#[test]
fn a_commit_failing_in_the_store_retries_without_a_penalty() {
    let peers = [(1, Script::Honest), (2, Script::Honest)];
    let mut h = Harness::new(200, 512, cfg(), &peers);
    h.local_failures = 3;
    h.run(10_000);
    assert!(h.done(), "{:?}", h.d.stats());
    assert_eq!(h.local_failures, 0);
    assert!(h.penalties.is_empty(), "{:?}", h.penalties);
    // Each failed commit sends back at least its own batch, and nothing else went back.
    assert!(h.retries.len() >= 3, "{:?}", h.retries);
    assert!(
        h.retries.iter().all(|r| *r == Retry::InsertFailed),
        "{:?}",
        h.retries
    );
}

#[test]
fn phases_follow_the_distance_to_the_target() {
    let now = Instant::now();
    let mut d = Downloader::<u32>::new(cfg(), 100, now);
    assert_eq!(d.phase(), Phase::Idle);
    d.handle(
        Event::PeerHead {
            peer: 1,
            height: 105,
        },
        now,
    );
    assert_eq!(d.phase(), Phase::Short);
    d.handle(
        Event::PeerHead {
            peer: 1,
            height: 1000,
        },
        now,
    );
    assert_eq!(d.phase(), Phase::Long);
    d.handle(Event::PeerGone(1), now);
    assert_eq!(d.phase(), Phase::Idle);
}

fn fetched_heights(d: &mut Downloader<u32>) -> Vec<(u64, u32)> {
    std::iter::from_fn(|| d.poll_action())
        .filter_map(|a| match a {
            Action::Fetch { from, count, .. } => Some((from, count)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_tip_waits_for_broadcast_for_the_grace_but_long_range_does_not() {
    let grace = Duration::from_millis(1500);
    let c = DownloaderConfig {
        tip_grace: grace,
        ..cfg()
    };
    let t0 = Instant::now();
    let mut d = Downloader::<u32>::new(c, 100, t0);
    let head = |height| Event::PeerHead { peer: 1, height };
    d.handle(head(101), t0);
    assert!(
        fetched_heights(&mut d).is_empty(),
        "fetched inside the grace"
    );
    // The wake-up is the grace's end, not later.
    assert_eq!(d.poll_timeout(), Some(t0 + grace));
    // Broadcast delivered 101 meanwhile: nothing to fetch, ever.
    d.handle(Event::LocalAdvanced { height: 101 }, t0 + grace / 2);
    d.handle(Event::Tick, t0 + grace * 2);
    assert!(fetched_heights(&mut d).is_empty());

    // 102 is announced and broadcast misses it: fetched once the grace is over.
    let t1 = t0 + grace * 3;
    d.handle(head(102), t1);
    d.handle(Event::Tick, t1 + grace / 2);
    assert!(fetched_heights(&mut d).is_empty());
    d.handle(Event::Tick, t1 + grace);
    assert_eq!(fetched_heights(&mut d), vec![(102, 1)]);

    // Far behind (long range): everything at once, grace or not.
    let mut d = Downloader::<u32>::new(
        DownloaderConfig {
            tip_grace: grace,
            ..cfg()
        },
        100,
        t0,
    );
    d.handle(head(500), t0);
    assert!(!fetched_heights(&mut d).is_empty());
}

/// While a commit runs, the batches fetched meanwhile wait; the next commit takes every ready one
/// in a row (up to `commit_bytes`), so commits grow instead of queueing.
#[test]
fn ready_batches_in_a_row_are_committed_together() {
    let peers = [
        (1, Script::Honest),
        (2, Script::Honest),
        (3, Script::Honest),
    ];
    let mut h = Harness::new(600, 512, cfg(), &peers);
    h.run(10_000);
    assert!(h.done(), "{:?}", h.d.stats());
    assert!(h.penalties.is_empty(), "{:?}", h.penalties);
    let most = *h.commits.iter().max().unwrap();
    assert!(
        h.commits.len() < h.fetches.len() && most > 32,
        "commits {:?}, {} fetches",
        h.commits,
        h.fetches.len()
    );
    // 48 KiB of ~700-byte blocks, plus the one batch a commit always takes.
    assert!(most <= 48 * 1024 / 512 + 64, "{:?}", h.commits);
    assert_eq!(h.commits.iter().sum::<usize>(), 600);
}

/// A merged commit that fails on a block that does not link blames the peer of the batch holding
/// that block, and no other; every batch of the commit is fetched again.
#[test]
fn an_unlinked_block_in_a_merged_commit_blames_its_own_batch() {
    let k = key(1);
    let spec = spec_for(&k);
    let chain = make_chain(&spec, &k, 100, 512);
    let now = Instant::now();
    // One batch per peer at a time: the first two batches go to different peers.
    let one_each = DownloaderConfig {
        max_per_peer: 1,
        ..cfg()
    };
    let mut d: Downloader<u32> = Downloader::new(one_each, 0, now);
    for p in [1, 2] {
        d.handle(
            Event::PeerHead {
                peer: p,
                height: 100,
            },
            now,
        );
    }
    let mut fetches = vec![];
    while let Some(a) = d.poll_action() {
        if let Action::Fetch {
            id,
            peer,
            from,
            count,
            ..
        } = a
        {
            fetches.push((id, peer, from, count));
        }
    }
    fetches.sort_by_key(|f| f.2);
    let (first, second) = (fetches[0], fetches[1]);
    assert_eq!(first.2, 1);
    assert_eq!(second.2, 1 + first.3 as u64);
    assert_ne!(first.1, second.1, "two peers serve the first two batches");
    let reply = |f: (BatchId, u32, u64, u32)| {
        let blocks = chain[f.2 as usize - 1..][..f.3 as usize].to_vec();
        Event::Fetched {
            id: f.0,
            peer: f.1,
            blocks: spec.verify_segment(f.2, blocks).unwrap(),
        }
    };
    // The second batch is ready first; the first one makes both committable at once.
    d.handle(reply(second), now);
    d.handle(reply(first), now);
    let mut inserts = vec![];
    let mut more = vec![];
    while let Some(a) = d.poll_action() {
        match a {
            Action::Insert { id, blocks } => inserts.push((id, blocks.len())),
            Action::Fetch {
                id,
                peer,
                from,
                count,
                ..
            } => more.push((id, peer, from, count)),
            _ => {}
        }
    }
    assert_eq!(inserts.len(), 1);
    let (id, n) = inserts[0];
    assert_eq!(n, (first.3 + second.3) as usize);
    d.handle(
        Event::InsertFailed {
            id,
            why: InsertFailure::Unlinked {
                height: second.2 + 1,
            },
        },
        now,
    );
    let mut penalised = vec![];
    let mut refetched = vec![];
    let mut poll = |d: &mut Downloader<u32>| {
        while let Some(a) = d.poll_action() {
            match a {
                Action::Penalise { peer, why } => penalised.push((peer, why)),
                Action::Fetch { from, .. } => refetched.push(from),
                _ => {}
            }
        }
    };
    poll(&mut d);
    // The fetches sent meanwhile come back and free their peers for the retries.
    for f in more {
        d.handle(reply(f), now);
        poll(&mut d);
    }
    assert_eq!(penalised, vec![(second.1, Penalty::Unlinked)]);
    // Both batches go back to be fetched: the first at once (its peer is free), the second
    // when a peer that has not failed it has room.
    assert_eq!(refetched, vec![first.2]);
    assert!(matches!(d.batches[&second.2].state, State::Pending));
    assert_eq!(d.batches[&second.2].tried, vec![second.1]);
    assert_eq!(d.stats().local, 0);
}
