use super::*;
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random()).collect()
}

fn params(k: u16, m: u16) -> IdaParams {
    IdaParams {
        data_shards: k,
        parity_shards: m,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Any k of the k + m shards give the payload back, whatever the payload length.
    #[test]
    fn any_k_shards_decode(k in 1u16..12, m in 1u16..12, len in 0usize..6000, seed in any::<u64>()) {
        let p = params(k, m);
        let data = payload(len, seed);
        let enc = encode(p, &data);
        prop_assert_eq!(enc.shards.len(), p.total());
        let mut idx: Vec<usize> = (0..p.total()).collect();
        idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed ^ 1));
        let subset: Vec<(usize, Bytes)> =
            idx[..p.k()].iter().map(|i| (*i, enc.shards[*i].clone())).collect();
        let got = decode(p, enc.shard_len, len as u32, &enc.root, &subset).unwrap();
        prop_assert_eq!(got, data);
    }
}

#[test]
fn shard_length_is_even_and_covers_the_payload() {
    for (len, k, want) in [
        (0, 16, 2),
        (1, 16, 2),
        (32, 16, 2),
        (33, 16, 4),
        (2 << 20, 16, 131_072),
    ] {
        assert_eq!(shard_len(len, k), want, "{len}/{k}");
    }
}

#[test]
fn every_proof_checks_and_any_tampering_fails() {
    let p = params(4, 3);
    let data = payload(1000, 7);
    let enc = encode(p, &data);
    let header = Header {
        height: 1,
        parent_hash: H256([1; 32]),
        timestamp_ms: 5,
        payload_hash: crate::chain::payload_hash(&data),
        payload_len: 1000,
        producer: H256([2; 32]),
        ida_root: Some(enc.root),
    };
    let sig = Sig([0; 64]);
    for i in 0..p.total() {
        assert_eq!(enc.chunk(&header, sig, i).check(), Ok(enc.root), "{i}");
    }
    let good = enc.chunk(&header, sig, 2);
    let mut c = good.clone();
    let mut d = c.data.to_vec();
    d[0] ^= 1;
    c.data = d.into();
    assert_eq!(c.check(), Err(ChunkError::Proof), "flipped byte");
    let mut c = good.clone();
    c.index = 3;
    assert_eq!(c.check(), Err(ChunkError::Proof), "other index");
    let mut c = good.clone();
    c.proof[0] = H256([9; 32]);
    assert_eq!(c.check(), Err(ChunkError::Proof), "bad sibling");
    let mut c = good.clone();
    c.proof.pop();
    assert_eq!(c.check(), Err(ChunkError::Proof), "short proof");
    let mut c = good.clone();
    c.params = params(3, 4);
    assert!(c.check().is_err(), "parameters are bound to the root");
    let mut c = good.clone();
    c.index = 7;
    assert_eq!(c.check(), Err(ChunkError::Index));
    let mut c = good.clone();
    c.data = c.data.slice(1..);
    assert_eq!(c.check(), Err(ChunkError::Length));
    let mut c = good.clone();
    c.header.ida_root = None;
    assert_eq!(c.check(), Err(ChunkError::NoRoot));
    let mut c = good;
    c.header.payload_len = 100_000;
    assert_eq!(
        c.check(),
        Err(ChunkError::Length),
        "payload larger than the shards"
    );
}

#[test]
fn an_equivocating_encoder_is_detected_whichever_shards_arrive() {
    let p = params(4, 4);
    let data = payload(4000, 3);
    let honest = encode(p, &data);
    // The encoder commits to shards whose parity is not the code of the data.
    let mut shards: Vec<Vec<u8>> = honest.shards.iter().map(|s| s.to_vec()).collect();
    shards[5][0] ^= 0xff;
    let bad = finish(p, honest.shard_len, shards.into_iter());
    assert_ne!(bad.root, honest.root);
    let pick = |idx: &[usize]| -> Vec<(usize, Bytes)> {
        idx.iter().map(|i| (*i, bad.shards[*i].clone())).collect()
    };
    for subset in [
        vec![0, 1, 2, 3],
        vec![4, 5, 6, 7],
        vec![0, 5, 6, 3],
        vec![1, 2, 4, 7],
    ] {
        assert_eq!(
            decode(p, bad.shard_len, 4000, &bad.root, &pick(&subset)),
            Err(DecodeError::Equivocation),
            "{subset:?}"
        );
    }
}

#[test]
fn nonzero_padding_is_an_equivocation_too() {
    let p = params(4, 2);
    let data = payload(1001, 4);
    let honest = encode(p, &data);
    let mut shards: Vec<Vec<u8>> = honest.shards.iter().map(|s| s.to_vec()).collect();
    let last = shards[3].len() - 1;
    shards[3][last] = 1; // inside the padding
    let parity = reed_solomon_simd::encode(4, 2, &shards[..4]).unwrap();
    shards.truncate(4);
    shards.extend(parity);
    let bad = finish(p, honest.shard_len, shards.into_iter());
    let all: Vec<(usize, Bytes)> = (0..4).map(|i| (i, bad.shards[i].clone())).collect();
    assert_eq!(
        decode(p, bad.shard_len, 1001, &bad.root, &all),
        Err(DecodeError::Equivocation)
    );
}

#[test]
fn params_are_validated() {
    assert!(IdaParams::default().validate().is_ok());
    assert!(params(0, 4).validate().is_err());
    assert!(params(4, 0).validate().is_err());
    assert!(params(2000, 4).validate().is_err());
}
