use super::*;
use crate::ida::{Encoded, encode};
use crate::keys;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

struct Fixture {
    spec: ChainSpec,
    key: ed25519_dalek::SigningKey,
    params: IdaParams,
}

impl Fixture {
    fn new(k: u16, m: u16) -> Self {
        let key = keys::generate();
        let spec = ChainSpec::new("testnet", &keys::public_key(&key), 1_700_000_000_000).unwrap();
        Fixture {
            spec,
            key,
            params: IdaParams {
                data_shards: k,
                parity_shards: m,
            },
        }
    }

    /// Block `height` (on a synthetic parent) with an honest IDA encoding.
    fn block(&self, height: u64, len: usize) -> (Block, Encoded) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(height);
        let payload: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let enc = encode(self.params, &payload);
        let mut parent = self.spec.genesis().header.clone();
        parent.height = height - 1;
        let b = Block::produce_with_root(
            &self.key,
            &parent,
            parent.timestamp_ms + 1,
            payload.into(),
            Some(enc.root),
        );
        (b, enc)
    }

    fn assembler(&self, cfg: AssemblerConfig) -> Assembler {
        Assembler::new(self.spec.clone(), cfg)
    }
}

fn chunk(b: &Block, enc: &Encoded, i: usize) -> Chunk {
    enc.chunk(&b.header, b.signature, i)
}

#[test]
fn any_k_chunks_in_any_order_rebuild_the_block_and_later_ones_are_known() {
    let f = Fixture::new(8, 8);
    let (block, enc) = f.block(1, 50_000);
    for seed in 0..20u64 {
        let mut a = f.assembler(AssemblerConfig::default());
        let t0 = Instant::now();
        let mut order: Vec<usize> = (0..16).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        for (n, i) in order.iter().enumerate() {
            match a.on_chunk(chunk(&block, &enc, *i), t0) {
                Outcome::New => assert!(n < 7, "seed {seed}: still new at {n}"),
                Outcome::Complete(Ok(b)) => {
                    assert_eq!(n, 7, "complete at the k-th chunk");
                    assert_eq!(*b, block);
                }
                Outcome::Known => assert!(n > 7),
                other => panic!("seed {seed}, chunk {i}: {other:?}"),
            }
        }
        assert_eq!(a.stats().partial_blocks, 0);
        assert_eq!(a.stats().buffered_bytes, 0);
    }
}

#[test]
fn duplicates_are_ignored() {
    let f = Fixture::new(4, 4);
    let (block, enc) = f.block(1, 4000);
    let mut a = f.assembler(AssemblerConfig::default());
    let t0 = Instant::now();
    assert!(matches!(
        a.on_chunk(chunk(&block, &enc, 5), t0),
        Outcome::New
    ));
    assert!(matches!(
        a.on_chunk(chunk(&block, &enc, 5), t0),
        Outcome::Duplicate
    ));
    assert_eq!(a.held(&enc.root), Some(vec![5]));
}

#[test]
fn bad_proofs_and_bad_signatures_are_rejected() {
    let f = Fixture::new(4, 4);
    let (block, enc) = f.block(1, 4000);
    let mut a = f.assembler(AssemblerConfig::default());
    let t0 = Instant::now();
    let mut c = chunk(&block, &enc, 1);
    let mut d = c.data.to_vec();
    d[10] ^= 4;
    c.data = d.into();
    assert!(matches!(
        a.on_chunk(c, t0),
        Outcome::Invalid(ChunkError::Proof)
    ));
    // (That chunk's genuine header made a placeholder for repair; start afresh.)
    assert_eq!(a.stats().buffered_bytes, 0);
    let mut a = f.assembler(AssemblerConfig::default());
    let mut c = chunk(&block, &enc, 1);
    c.signature.0[0] ^= 1;
    assert!(matches!(
        a.on_chunk(c, t0),
        Outcome::Invalid(ChunkError::Header(_))
    ));
    // Another producer's header over the same shards.
    let other = Fixture::new(4, 4);
    let forged = Block::produce_with_root(
        &other.key,
        &f.spec.genesis().header,
        block.header.timestamp_ms,
        block.payload.clone(),
        Some(enc.root),
    );
    assert!(matches!(
        a.on_chunk(chunk(&forged, &enc, 2), t0),
        Outcome::Invalid(ChunkError::Header(_))
    ));
    assert_eq!(a.stats().partial_blocks, 0, "nothing was kept");
}

#[test]
fn an_equivocating_producer_gives_no_block() {
    let f = Fixture::new(4, 4);
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let payload: Vec<u8> = (0..4000).map(|_| rng.random()).collect();
    let honest = encode(f.params, &payload);
    let mut shards: Vec<Vec<u8>> = honest.shards.iter().map(|s| s.to_vec()).collect();
    shards[6][3] ^= 0x55;
    let bad = crate::ida::finish(f.params, honest.shard_len, shards.into_iter());
    let block = Block::produce_with_root(
        &f.key,
        &f.spec.genesis().header,
        f.spec.genesis().header.timestamp_ms,
        payload.into(),
        Some(bad.root),
    );
    let mut a = f.assembler(AssemblerConfig::default());
    let t0 = Instant::now();
    let mut last = None;
    for i in [0, 6, 2, 7] {
        last = Some(a.on_chunk(chunk(&block, &bad, i), t0));
    }
    assert!(
        matches!(
            last,
            Some(Outcome::Complete(Err(DecodeError::Equivocation)))
        ),
        "{last:?}"
    );
    assert!(a.is_done(&bad.root), "not reassembled from other chunks");
    assert!(matches!(
        a.on_chunk(chunk(&block, &bad, 1), t0),
        Outcome::Known
    ));
}

#[test]
fn caps_evict_the_oldest_partial_blocks() {
    let f = Fixture::new(4, 4);
    let cfg = AssemblerConfig {
        max_blocks: 2,
        ..AssemblerConfig::default()
    };
    let mut a = f.assembler(cfg);
    let t0 = Instant::now();
    let blocks: Vec<_> = (1..=3).map(|h| f.block(h, 4000)).collect();
    for (n, (b, e)) in blocks.iter().enumerate() {
        let now = t0 + Duration::from_millis(n as u64);
        assert!(matches!(a.on_chunk(chunk(b, e, 0), now), Outcome::New));
    }
    let s = a.stats();
    assert_eq!((s.partial_blocks, s.evicted), (2, 1));
    assert_eq!(a.held(&blocks[0].1.root), None, "the oldest went");
    assert!(a.held(&blocks[2].1.root).is_some());
    assert_eq!(s.buffered_bytes, 2 * blocks[0].1.shard_len as usize);

    // Bytes: 2 MiB blocks in 16 + 16 shards of 128 KiB, and a 3 MiB budget.
    let f = Fixture::new(16, 16);
    let cfg = AssemblerConfig {
        max_bytes: 3 << 20,
        ..AssemblerConfig::default()
    };
    let mut a = f.assembler(cfg);
    let (b1, e1) = f.block(1, 2 << 20);
    let (b2, e2) = f.block(2, 2 << 20);
    for i in 0..15 {
        assert!(matches!(a.on_chunk(chunk(&b1, &e1, i), t0), Outcome::New));
    }
    for i in 0..10 {
        let now = t0 + Duration::from_millis(1);
        assert!(matches!(a.on_chunk(chunk(&b2, &e2, i), now), Outcome::New));
    }
    let s = a.stats();
    assert!(s.buffered_bytes <= 3 << 20, "{s:?}");
    assert_eq!(s.buffered_bytes, 10 * (128 << 10), "{s:?}");
    assert_eq!(a.held(&e1.root), None, "the older block made room");
    assert_eq!(s.evicted, 1);
    // A block larger than the whole budget is left to sync.
    let (b3, e3) = f.block(3, 20 << 20);
    assert!(matches!(
        a.on_chunk(chunk(&b3, &e3, 0), t0),
        Outcome::TooLarge
    ));
}

#[test]
fn stalled_blocks_ask_for_repair_then_go_to_sync() {
    let f = Fixture::new(4, 4);
    let cfg = AssemblerConfig {
        repair_after: Duration::from_secs(1),
        max_age: Duration::from_secs(5),
        ..AssemblerConfig::default()
    };
    let mut a = f.assembler(cfg);
    let (b, e) = f.block(1, 4000);
    let t0 = Instant::now();
    a.on_chunk(chunk(&b, &e, 0), t0);
    a.on_chunk(chunk(&b, &e, 6), t0);
    assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    assert!(a.tick(t0 + Duration::from_millis(999)).is_empty());
    let out = a.tick(t0 + Duration::from_secs(1));
    assert_eq!(
        out,
        vec![Timeout::Repair {
            root: e.root,
            height: 1,
            missing: vec![1, 2, 3, 4, 5, 7]
        }]
    );
    // Progress pushes the next repair out.
    a.on_chunk(chunk(&b, &e, 1), t0 + Duration::from_millis(1500));
    assert!(a.tick(t0 + Duration::from_millis(2000)).is_empty());
    let out = a.tick(t0 + Duration::from_secs(5));
    assert_eq!(
        out,
        vec![Timeout::GiveUp {
            header: b.header.clone(),
            signature: b.signature
        }]
    );
    assert_eq!(a.stats().given_up, 1);
    assert!(matches!(a.on_chunk(chunk(&b, &e, 2), t0), Outcome::Known));
}

#[test]
fn a_block_known_only_from_corrupt_chunks_is_still_repaired() {
    let f = Fixture::new(4, 4);
    let (block, enc) = f.block(1, 10_000);
    let cfg = AssemblerConfig::default();
    let mut a = f.assembler(cfg.clone());
    let t0 = Instant::now();
    // A corrupting relay's chunk: genuine header, flipped data; it also lies about the shard length.
    let mut bad = chunk(&block, &enc, 2);
    let mut d = bad.data.to_vec();
    d[0] ^= 0xff;
    bad.data = d.into();
    assert!(matches!(
        a.on_chunk(bad.clone(), t0),
        Outcome::Invalid(ChunkError::Proof)
    ));
    bad.shard_len += 2;
    assert!(matches!(a.on_chunk(bad, t0), Outcome::Invalid(_)));
    assert_eq!(a.stats().partial_blocks, 1);
    assert_eq!(a.stats().buffered_bytes, 0);
    // No valid chunk ever came, yet the block is asked for: its data shards.
    let t = a.tick(t0 + cfg.repair_after);
    let want: Vec<u16> = (0..4).collect();
    assert!(
        matches!(&t[..], [Timeout::Repair { missing, height: 1, .. }] if *missing == want),
        "{t:?}"
    );
    // The honest chunks are taken (the lie about the shard length was not kept) and rebuild it.
    for i in [5, 0, 7] {
        assert!(matches!(
            a.on_chunk(chunk(&block, &enc, i), t0),
            Outcome::New
        ));
    }
    match a.on_chunk(chunk(&block, &enc, 3), t0) {
        Outcome::Complete(Ok(b)) => assert_eq!(b.hash(), block.hash()),
        o => panic!("{o:?}"),
    }
    // A forged header makes no placeholder.
    let mut a = f.assembler(cfg);
    let mut forged = chunk(&block, &enc, 1);
    forged.header.timestamp_ms += 1;
    assert!(matches!(a.on_chunk(forged, t0), Outcome::Invalid(_)));
    assert_eq!(a.stats().partial_blocks, 0);
}
