//! The signed hash chain: headers, blocks, hashing and verification.
//!
//! Hashing is BLAKE3 (fast on every CPU we target, ~4x SHA-256 in software, and its derive-key mode
//! gives cheap domain separation). A header is hashed over a fixed canonical byte layout (not a serde
//! encoding) so the hash can never change with a codec version. The producer signs the 32-byte header
//! hash with ed25519; the header names its producer key so that "signed by someone else" and "forged
//! signature" are told apart.

use std::fmt;

use bytes::Bytes;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

const HEADER_CONTEXT: &str = "syncnet 2026-11 block header v1";
const PAYLOAD_CONTEXT: &str = "syncnet 2026-11 block payload v1";

/// A 32-byte digest or key. Hex in human-readable formats (YAML/JSON), raw bytes otherwise.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct H256(pub [u8; 32]);

impl H256 {
    pub const ZERO: H256 = H256([0; 32]);

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out)
            .map_err(|e| format!("expected 64 hex characters: {e}"))?;
        Ok(H256(out))
    }
}

impl fmt::Debug for H256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..16])
    }
}

impl fmt::Display for H256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for H256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for H256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            H256::from_hex(&s).map_err(serde::de::Error::custom)
        } else {
            Ok(H256(<[u8; 32]>::deserialize(d)?))
        }
    }
}

/// Block header. Everything a verifier needs except the payload bytes themselves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub height: u64,
    pub parent_hash: H256,
    /// Milliseconds since the Unix epoch, as claimed by the producer.
    pub timestamp_ms: u64,
    pub payload_hash: H256,
    pub payload_len: u32,
    /// Public key of the producer that signed this header.
    pub producer: H256,
    /// Merkle root over the IDA shards of this block, when it was broadcast by IDA.
    pub ida_root: Option<H256>,
}

impl Header {
    /// The block hash: BLAKE3 (derive-key mode) over the canonical header layout.
    pub fn hash(&self) -> H256 {
        let mut h = blake3::Hasher::new_derive_key(HEADER_CONTEXT);
        h.update(&self.height.to_le_bytes());
        h.update(&self.parent_hash.0);
        h.update(&self.timestamp_ms.to_le_bytes());
        h.update(&self.payload_hash.0);
        h.update(&self.payload_len.to_le_bytes());
        h.update(&self.producer.0);
        match &self.ida_root {
            None => h.update(&[0]),
            Some(root) => h.update(&[1]).update(&root.0),
        };
        H256(*h.finalize().as_bytes())
    }
}

/// The payload matches the header's length and hash.
pub fn check_payload(block: &Block) -> Result<(), VerifyError> {
    let h = &block.header;
    if block.payload.len() != h.payload_len as usize {
        return Err(VerifyError::PayloadLength {
            got: block.payload.len(),
            expected: h.payload_len,
        });
    }
    if payload_hash(&block.payload) != h.payload_hash {
        return Err(VerifyError::PayloadHash);
    }
    Ok(())
}

pub fn payload_hash(payload: &[u8]) -> H256 {
    let mut h = blake3::Hasher::new_derive_key(PAYLOAD_CONTEXT);
    h.update(payload);
    H256(*h.finalize().as_bytes())
}

/// ed25519 signature bytes; serde as a byte tuple (postcard) or hex (human-readable).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sig(pub [u8; 64]);

impl fmt::Debug for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sig({}..)", hex::encode(&self.0[..8]))
    }
}

impl Serialize for Sig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(self.0))
        } else {
            // serde implements arrays only up to 32 elements.
            let (a, b) = self.0.split_at(32);
            (
                <&[u8; 32]>::try_from(a).unwrap(),
                <&[u8; 32]>::try_from(b).unwrap(),
            )
                .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Sig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = [0u8; 64];
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            hex::decode_to_slice(s, &mut out).map_err(serde::de::Error::custom)?;
        } else {
            let (a, b) = <([u8; 32], [u8; 32])>::deserialize(d)?;
            out[..32].copy_from_slice(&a);
            out[32..].copy_from_slice(&b);
        }
        Ok(Sig(out))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub header: Header,
    pub signature: Sig,
    pub payload: Bytes,
}

impl Block {
    pub fn hash(&self) -> H256 {
        self.header.hash()
    }

    pub fn height(&self) -> u64 {
        self.header.height
    }

    /// Decodes a block from its postcard encoding without copying the payload: it stays a slice
    /// of `raw`. Unlike `postcard::from_bytes`, bytes after the payload are an error, so the
    /// encoding a node stores and serves is exactly the block.
    pub fn decode(raw: &Bytes) -> Result<Block, postcard::Error> {
        let ((header, signature), rest) = postcard::take_from_bytes::<(Header, Sig)>(raw)?;
        let (len, tail) = postcard::take_from_bytes::<usize>(rest)?;
        if tail.len() < len {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        if tail.len() > len {
            return Err(postcard::Error::DeserializeBadEncoding);
        }
        Ok(Block {
            header,
            signature,
            payload: raw.slice(raw.len() - len..),
        })
    }

    /// Builds and signs a block on top of `parent`.
    pub fn produce(key: &SigningKey, parent: &Header, timestamp_ms: u64, payload: Bytes) -> Block {
        Block::produce_with_root(key, parent, timestamp_ms, payload, None)
    }

    /// A block whose header commits to an IDA encoding of its payload (`ida::encode`).
    pub fn produce_with_root(
        key: &SigningKey,
        parent: &Header,
        timestamp_ms: u64,
        payload: Bytes,
        ida_root: Option<H256>,
    ) -> Block {
        let header = Header {
            height: parent.height + 1,
            parent_hash: parent.hash(),
            timestamp_ms: timestamp_ms.max(parent.timestamp_ms),
            payload_hash: payload_hash(&payload),
            payload_len: u32::try_from(payload.len()).expect("payload larger than 4 GiB"),
            producer: H256(key.verifying_key().to_bytes()),
            ida_root,
        };
        let signature = Sig(key.sign(&header.hash().0).to_bytes());
        Block {
            header,
            signature,
            payload,
        }
    }
}

/// Why a block was rejected. One variant per check, so metrics and peer scoring can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum VerifyError {
    #[error("height {got} does not follow parent height {parent}")]
    Height { got: u64, parent: u64 },
    #[error("parent hash does not match the parent block")]
    ParentHash,
    #[error("timestamp is earlier than the parent's")]
    Timestamp,
    #[error("payload is {got} bytes but the header says {expected}")]
    PayloadLength { got: usize, expected: u32 },
    #[error("payload hash does not match the header")]
    PayloadHash,
    #[error("block names a producer key that is not this network's producer")]
    UnknownProducer,
    #[error("producer signature does not verify")]
    Signature,
    #[error("block bytes do not decode")]
    Encoding,
}

impl VerifyError {
    /// One of each kind (the labels' closed set; the fields are not part of the label).
    pub const ALL: [VerifyError; 8] = [
        VerifyError::Height { got: 0, parent: 0 },
        VerifyError::ParentHash,
        VerifyError::Timestamp,
        VerifyError::PayloadLength {
            got: 0,
            expected: 0,
        },
        VerifyError::PayloadHash,
        VerifyError::UnknownProducer,
        VerifyError::Signature,
        VerifyError::Encoding,
    ];

    /// Closed set of label values for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::Height { .. } => "height",
            VerifyError::ParentHash => "parent_hash",
            VerifyError::Timestamp => "timestamp",
            VerifyError::PayloadLength { .. } => "payload_length",
            VerifyError::PayloadHash => "payload_hash",
            VerifyError::UnknownProducer => "unknown_producer",
            VerifyError::Signature => "signature",
            VerifyError::Encoding => "encoding",
        }
    }
}

/// A block that passed [`ChainSpec::verify`] against its parent. Only the verifier constructs it, so
/// the store can demand verified input in its type.
#[derive(Clone, Debug)]
pub struct VerifiedBlock {
    block: Block,
    hash: H256,
    /// The encoding the block arrived as (from the wire or the store), so storing it needs no
    /// re-encoding.
    encoded: Option<Bytes>,
}

impl VerifiedBlock {
    pub fn block(&self) -> &Block {
        &self.block
    }
    pub fn hash(&self) -> H256 {
        self.hash
    }
    pub fn into_block(self) -> Block {
        self.block
    }
    /// The block's postcard encoding: the bytes it was decoded from, or a fresh encoding.
    pub fn encoded(&self) -> std::borrow::Cow<'_, [u8]> {
        match &self.encoded {
            Some(b) => std::borrow::Cow::Borrowed(b),
            None => std::borrow::Cow::Owned(
                postcard::to_stdvec(&self.block).expect("encoding to memory cannot fail"),
            ),
        }
    }
}

/// Where a run of blocks starts: on a known parent, or at a height whose parent is checked later
/// (when the run is committed on top of the head).
#[derive(Clone, Copy)]
enum Start<'a> {
    Parent(&'a Header),
    Height(u64),
}

/// The consensus-relevant parameters of a network: who may produce, and what block 0 is.
#[derive(Clone, Debug)]
pub struct ChainSpec {
    pub network_id: String,
    producer: VerifyingKey,
    genesis: Block,
}

impl ChainSpec {
    pub fn new(
        network_id: &str,
        producer: &H256,
        genesis_timestamp_ms: u64,
    ) -> Result<Self, ed25519_dalek::SignatureError> {
        let producer_key = VerifyingKey::from_bytes(&producer.0)?;
        // Block 0 is defined by the config, not signed: its payload is the network id, so the genesis
        // hash commits to network id, producer key and timestamp.
        let payload = Bytes::copy_from_slice(network_id.as_bytes());
        let genesis = Block {
            header: Header {
                height: 0,
                parent_hash: H256::ZERO,
                timestamp_ms: genesis_timestamp_ms,
                payload_hash: payload_hash(&payload),
                payload_len: payload.len() as u32,
                producer: *producer,
                ida_root: None,
            },
            signature: Sig([0; 64]),
            payload,
        };
        Ok(ChainSpec {
            network_id: network_id.to_owned(),
            producer: producer_key,
            genesis,
        })
    }

    pub fn genesis(&self) -> &Block {
        &self.genesis
    }

    pub fn genesis_hash(&self) -> H256 {
        self.genesis.hash()
    }

    pub fn producer(&self) -> H256 {
        H256(self.producer.to_bytes())
    }

    /// Checks everything about `block` that can be checked given its parent header. Cheap checks come
    /// first so a garbage block costs no signature verification.
    pub fn verify(&self, block: Block, parent: &Header) -> Result<VerifiedBlock, VerifyError> {
        let h = &block.header;
        if h.height != parent.height + 1 {
            return Err(VerifyError::Height {
                got: h.height,
                parent: parent.height,
            });
        }
        if h.parent_hash != parent.hash() {
            return Err(VerifyError::ParentHash);
        }
        if h.timestamp_ms < parent.timestamp_ms {
            return Err(VerifyError::Timestamp);
        }
        check_payload(&block)?;
        let hash = self.verify_head(h, &block.signature)?;
        Ok(VerifiedBlock {
            block,
            hash,
            encoded: None,
        })
    }

    /// Checks a head a peer claims: genesis itself, or a header signed by the producer. Says nothing
    /// about the payload (the peer has not sent it).
    pub fn verify_head(&self, header: &Header, signature: &Sig) -> Result<H256, VerifyError> {
        if header.height == 0 {
            return if *header == self.genesis.header {
                Ok(self.genesis_hash())
            } else {
                Err(VerifyError::ParentHash)
            };
        }
        if header.producer.0 != self.producer.to_bytes() {
            return Err(VerifyError::UnknownProducer);
        }
        let hash = header.hash();
        self.producer
            .verify_strict(&hash.0, &Signature::from_bytes(&signature.0))
            .map_err(|_| VerifyError::Signature)?;
        Ok(hash)
    }

    /// Verifies a run of blocks that should start at `first_height`, without its parent: every
    /// block's own checks (height, payload, producer, signature) and the links inside the run. The
    /// first block's link to its parent is checked when it is committed on top of the head.
    pub fn verify_segment(
        &self,
        first_height: u64,
        blocks: Vec<Block>,
    ) -> Result<Vec<VerifiedBlock>, (usize, VerifyError)> {
        let run = blocks.into_iter().map(|b| (b, None)).collect();
        self.verify_run(Start::Height(first_height), run)
    }

    /// [`verify_segment`](Self::verify_segment) for blocks as they arrived on the wire: each is
    /// decoded without copying its payload, and keeps its bytes for the store.
    pub fn verify_segment_encoded(
        &self,
        first_height: u64,
        raw: Vec<Bytes>,
    ) -> Result<Vec<VerifiedBlock>, (usize, VerifyError)> {
        let mut run = Vec::with_capacity(raw.len());
        let mut bad = None;
        for (i, r) in raw.into_iter().enumerate() {
            match Block::decode(&r) {
                Ok(b) => run.push((b, Some(r))),
                Err(_) => {
                    bad = Some(i);
                    break;
                }
            }
        }
        // Blocks before an undecodable one may still fail earlier, which is the error to report.
        let out = self.verify_run(Start::Height(first_height), run)?;
        match bad {
            Some(i) => Err((i, VerifyError::Encoding)),
            None => Ok(out),
        }
    }

    /// Verifies a contiguous run of blocks on top of `parent`. On failure returns the index of the first
    /// bad block and why.
    pub fn verify_chain(
        &self,
        parent: &Header,
        blocks: Vec<Block>,
    ) -> Result<Vec<VerifiedBlock>, (usize, VerifyError)> {
        let run = blocks.into_iter().map(|b| (b, None)).collect();
        self.verify_run(Start::Parent(parent), run)
    }

    /// The checks of [`verify`](Self::verify) over a run, with the signatures checked together:
    /// first every cheap check up to the first failure, then one ed25519 batch verification of the
    /// signatures before it (about half the cost of checking them one by one). If the batch fails,
    /// each is checked alone (strictly, as `verify` does) to name the first bad one.
    ///
    /// The batch equation is not `verify_strict`'s (it does not reject small-order components),
    /// which cannot matter here: every signature is under the one producer key, checked once when
    /// the spec was made, and a signature that passes the batch but not the strict check would
    /// need the producer's secret key to make.
    fn verify_run(
        &self,
        start: Start<'_>,
        run: Vec<(Block, Option<Bytes>)>,
    ) -> Result<Vec<VerifiedBlock>, (usize, VerifyError)> {
        let mut out: Vec<VerifiedBlock> = Vec::with_capacity(run.len());
        let mut cheap_failure = None;
        for (i, (block, encoded)) in run.into_iter().enumerate() {
            let checked = match (out.last(), start) {
                (Some(prev), _) => self.check_linked(&block, &prev.block.header, prev.hash),
                (None, Start::Parent(p)) => self.check_linked(&block, p, p.hash()),
                (None, Start::Height(h)) => self.check_unlinked(&block, h),
            };
            match checked {
                Ok(hash) => out.push(VerifiedBlock {
                    block,
                    hash,
                    encoded,
                }),
                Err(e) => {
                    cheap_failure = Some((i, e));
                    break;
                }
            }
        }
        if let Some(i) = self.first_bad_signature(&out) {
            return Err((i, VerifyError::Signature));
        }
        match cheap_failure {
            Some(f) => Err(f),
            None => Ok(out),
        }
    }

    /// Everything but the signature, for a block on top of `parent` (whose hash is given).
    fn check_linked(
        &self,
        block: &Block,
        parent: &Header,
        parent_hash: H256,
    ) -> Result<H256, VerifyError> {
        let h = &block.header;
        if h.height != parent.height + 1 {
            return Err(VerifyError::Height {
                got: h.height,
                parent: parent.height,
            });
        }
        if h.parent_hash != parent_hash {
            return Err(VerifyError::ParentHash);
        }
        if h.timestamp_ms < parent.timestamp_ms {
            return Err(VerifyError::Timestamp);
        }
        self.check_own(block)
    }

    fn check_unlinked(&self, block: &Block, height: u64) -> Result<H256, VerifyError> {
        let h = &block.header;
        if h.height != height || height == 0 {
            return Err(VerifyError::Height {
                got: h.height,
                parent: height.saturating_sub(1),
            });
        }
        self.check_own(block)
    }

    /// Payload and producer; returns the block hash.
    fn check_own(&self, block: &Block) -> Result<H256, VerifyError> {
        check_payload(block)?;
        if block.header.producer.0 != self.producer.to_bytes() {
            return Err(VerifyError::UnknownProducer);
        }
        Ok(block.header.hash())
    }

    /// The index of the first block in `run` whose signature does not verify, if any.
    fn first_bad_signature(&self, run: &[VerifiedBlock]) -> Option<usize> {
        let strict = |v: &VerifiedBlock| {
            self.producer
                .verify_strict(&v.hash.0, &Signature::from_bytes(&v.block.signature.0))
                .is_ok()
        };
        if run.len() < 2 {
            return run.iter().position(|v| !strict(v));
        }
        let messages: Vec<&[u8]> = run.iter().map(|v| &v.hash.0[..]).collect();
        let signatures: Vec<Signature> = run
            .iter()
            .map(|v| Signature::from_bytes(&v.block.signature.0))
            .collect();
        let keys = vec![self.producer; run.len()];
        match ed25519_dalek::verify_batch(&messages, &signatures, &keys) {
            Ok(()) => None,
            // Rare (a bad peer): find the culprit the slow way.
            Err(_) => run.iter().position(|v| !strict(v)),
        }
    }
}

/// Fixtures for tests here and in the crates above (feature `testkit`): keys, a spec, chains.
#[cfg(any(test, feature = "testkit"))]
pub mod testkit {
    use super::*;

    pub fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    pub fn spec_for(key: &SigningKey) -> ChainSpec {
        ChainSpec::new(
            "testnet",
            &H256(key.verifying_key().to_bytes()),
            1_700_000_000_000,
        )
        .unwrap()
    }

    pub fn make_chain(spec: &ChainSpec, key: &SigningKey, n: usize, size: usize) -> Vec<Block> {
        let mut parent = spec.genesis().header.clone();
        (0..n)
            .map(|i| {
                let payload = Bytes::from(vec![(i % 251) as u8; size]);
                let b = Block::produce(key, &parent, parent.timestamp_ms + 1000, payload);
                parent = b.header.clone();
                b
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::{key, make_chain, spec_for};
    use super::*;

    /// Verifies block 1 of a 2-block chain after `tamper` ran on it.
    fn verify_tampered(tamper: impl FnOnce(&mut Block)) -> Result<(), VerifyError> {
        let k = key(1);
        let spec = spec_for(&k);
        let mut chain = make_chain(&spec, &k, 2, 64);
        tamper(&mut chain[1]);
        let parent = chain[0].header.clone();
        spec.verify(chain.remove(1), &parent).map(|_| ())
    }

    #[test]
    fn valid_chain_verifies() {
        let k = key(1);
        let spec = spec_for(&k);
        let chain = make_chain(&spec, &k, 50, 1024);
        let verified = spec
            .verify_chain(&spec.genesis().header, chain.clone())
            .unwrap();
        assert_eq!(verified.len(), 50);
        assert_eq!(verified[49].hash(), chain[49].hash());
        assert_eq!(verified[0].block().header.parent_hash, spec.genesis_hash());
    }

    #[test]
    fn untampered_block_passes_the_tamper_harness() {
        assert_eq!(verify_tampered(|_| {}), Ok(()));
    }

    #[test]
    fn tampered_payload_byte_is_rejected() {
        let r = verify_tampered(|b| {
            let mut p = b.payload.to_vec();
            p[10] ^= 1;
            b.payload = p.into();
        });
        assert_eq!(r, Err(VerifyError::PayloadHash));
    }

    #[test]
    fn truncated_payload_is_rejected() {
        let r = verify_tampered(|b| b.payload = b.payload.slice(1..));
        assert_eq!(
            r,
            Err(VerifyError::PayloadLength {
                got: 63,
                expected: 64
            })
        );
    }

    #[test]
    fn tampered_parent_hash_is_rejected() {
        let r = verify_tampered(|b| b.header.parent_hash.0[0] ^= 1);
        assert_eq!(r, Err(VerifyError::ParentHash));
    }

    #[test]
    fn tampered_height_is_rejected() {
        let r = verify_tampered(|b| b.header.height += 1);
        assert_eq!(r, Err(VerifyError::Height { got: 3, parent: 1 }));
    }

    #[test]
    fn timestamp_before_parent_is_rejected() {
        let r = verify_tampered(|b| b.header.timestamp_ms = 0);
        assert_eq!(r, Err(VerifyError::Timestamp));
    }

    #[test]
    fn tampered_signature_is_rejected() {
        let r = verify_tampered(|b| b.signature.0[5] ^= 0x40);
        assert_eq!(r, Err(VerifyError::Signature));
    }

    #[test]
    fn header_change_invalidates_signature() {
        // A field the cheap checks cannot see: only the signature catches it.
        let r = verify_tampered(|b| b.header.ida_root = Some(H256([7; 32])));
        assert_eq!(r, Err(VerifyError::Signature));
    }

    #[test]
    fn block_from_wrong_producer_is_rejected() {
        let k = key(1);
        let spec = spec_for(&k);
        let impostor = key(2);
        let block = Block::produce(
            &impostor,
            &spec.genesis().header,
            1,
            Bytes::from_static(b"x"),
        );
        let r = spec.verify(block, &spec.genesis().header).map(|_| ());
        assert_eq!(r, Err(VerifyError::UnknownProducer));
    }

    #[test]
    fn impostor_claiming_the_producer_key_fails_signature() {
        let k = key(1);
        let spec = spec_for(&k);
        let impostor = key(2);
        let mut block = Block::produce(
            &impostor,
            &spec.genesis().header,
            1,
            Bytes::from_static(b"x"),
        );
        block.header.producer = spec.producer();
        block.signature = Sig(impostor.sign(&block.header.hash().0).to_bytes());
        let r = spec.verify(block, &spec.genesis().header).map(|_| ());
        assert_eq!(r, Err(VerifyError::Signature));
    }

    #[test]
    fn verify_chain_reports_index_of_first_bad_block() {
        let k = key(1);
        let spec = spec_for(&k);
        let mut chain = make_chain(&spec, &k, 10, 32);
        chain[6].header.timestamp_ms += 1; // breaks the signature of block 7
        let err = spec
            .verify_chain(&spec.genesis().header, chain)
            .unwrap_err();
        assert_eq!(err, (6, VerifyError::Signature));
    }

    #[test]
    fn segments_verify_without_their_parent() {
        let k = key(1);
        let spec = spec_for(&k);
        let chain = make_chain(&spec, &k, 20, 32);
        let seg = spec.verify_segment(11, chain[10..].to_vec()).unwrap();
        assert_eq!(seg.len(), 10);
        assert_eq!(
            spec.verify_segment(12, chain[10..].to_vec()).unwrap_err().0,
            0
        );
        let mut bad = chain[10..].to_vec();
        bad[3].payload = Bytes::from(vec![0u8; 32]);
        assert_eq!(
            spec.verify_segment(11, bad).unwrap_err(),
            (3, VerifyError::PayloadHash)
        );
        let mut gap = chain[10..].to_vec();
        gap.remove(2);
        assert!(matches!(
            spec.verify_segment(11, gap).unwrap_err(),
            (2, VerifyError::Height { .. })
        ));
    }

    /// The batch check must name the same block the one-by-one check would: the first bad one,
    /// whether its fault is its signature or something cheaper.
    #[test]
    fn batch_verification_names_the_first_bad_block() {
        let k = key(1);
        let spec = spec_for(&k);
        let chain = make_chain(&spec, &k, 40, 32);
        type Edit<'a> = (usize, &'a dyn Fn(&mut Block));
        let with = |edits: &[Edit]| {
            let mut c = chain[10..].to_vec();
            for (i, f) in edits {
                f(&mut c[*i]);
            }
            spec.verify_segment(11, c)
        };
        // Another block's valid signature: well-formed, wrong message.
        let steal = |b: &mut Block| b.signature = chain[0].signature;
        let bad_payload = |b: &mut Block| b.payload = Bytes::from(vec![9u8; 32]);
        assert_eq!(with(&[]).unwrap().len(), 30);
        assert_eq!(
            with(&[(12, &steal)]).unwrap_err(),
            (12, VerifyError::Signature)
        );
        assert_eq!(
            with(&[(0, &steal)]).unwrap_err(),
            (0, VerifyError::Signature)
        );
        assert_eq!(
            with(&[(5, &steal), (20, &bad_payload)]).unwrap_err(),
            (5, VerifyError::Signature)
        );
        assert_eq!(
            with(&[(5, &bad_payload), (20, &steal)]).unwrap_err(),
            (5, VerifyError::PayloadHash)
        );
        // verify_chain agrees with one-by-one `verify` on every single bad signature.
        for i in 0..chain.len() {
            let mut c = chain.clone();
            c[i].signature = chain[(i + 1) % chain.len()].signature;
            assert_eq!(
                spec.verify_chain(&spec.genesis().header, c).unwrap_err(),
                (i, VerifyError::Signature)
            );
        }
    }

    #[test]
    fn decode_borrows_the_payload_and_refuses_trailing_bytes() {
        let k = key(1);
        let spec = spec_for(&k);
        let b = make_chain(&spec, &k, 1, 300).remove(0);
        let raw = Bytes::from(postcard::to_stdvec(&b).unwrap());
        let d = Block::decode(&raw).unwrap();
        assert_eq!(d, b);
        // The payload is a view of `raw`, not a copy.
        let range = raw.as_ptr_range();
        assert!(range.contains(&d.payload.as_ptr()));
        let mut longer = raw.to_vec();
        longer.push(0);
        assert!(Block::decode(&Bytes::from(longer)).is_err());
        for cut in [1, 10, raw.len() - 300, raw.len() - 1] {
            assert!(Block::decode(&raw.slice(..cut)).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn encoded_segments_keep_their_bytes() {
        let k = key(1);
        let spec = spec_for(&k);
        let chain = make_chain(&spec, &k, 8, 64);
        let raw: Vec<Bytes> = chain
            .iter()
            .map(|b| Bytes::from(postcard::to_stdvec(b).unwrap()))
            .collect();
        let v = spec.verify_segment_encoded(1, raw.clone()).unwrap();
        for (v, r) in v.iter().zip(&raw) {
            assert_eq!(v.encoded().as_ref(), r.as_ref());
        }
        let mut garbled = raw.clone();
        garbled[4] = Bytes::from_static(b"\x01\x02");
        assert_eq!(
            spec.verify_segment_encoded(1, garbled.clone()).unwrap_err(),
            (4, VerifyError::Encoding)
        );
        // An earlier bad block is the one reported.
        garbled[2] = Bytes::from(
            postcard::to_stdvec(&{
                let mut b = chain[2].clone();
                b.signature = chain[0].signature;
                b
            })
            .unwrap(),
        );
        assert_eq!(
            spec.verify_segment_encoded(1, garbled).unwrap_err(),
            (2, VerifyError::Signature)
        );
        // Blocks verified from values are encoded on demand, to the same bytes.
        let v = spec.verify_segment(1, chain.clone()).unwrap();
        assert_eq!(v[3].encoded().as_ref(), raw[3].as_ref());
    }

    #[test]
    fn claimed_heads_are_checked() {
        let k = key(1);
        let spec = spec_for(&k);
        let chain = make_chain(&spec, &k, 3, 10);
        let h = &chain[2];
        assert_eq!(spec.verify_head(&h.header, &h.signature), Ok(h.hash()));
        let g = spec.genesis();
        assert_eq!(
            spec.verify_head(&g.header, &g.signature),
            Ok(spec.genesis_hash())
        );
        let mut forged = h.header.clone();
        forged.height = 1_000_000;
        assert_eq!(
            spec.verify_head(&forged, &h.signature),
            Err(VerifyError::Signature)
        );
        let other = make_chain(&spec_for(&key(2)), &key(2), 1, 10).remove(0);
        assert_eq!(
            spec.verify_head(&other.header, &other.signature),
            Err(VerifyError::UnknownProducer)
        );
    }

    #[test]
    fn genesis_commits_to_network_and_producer() {
        let k = key(1);
        let a = spec_for(&k);
        let b = ChainSpec::new("othernet", &a.producer(), 1_700_000_000_000).unwrap();
        let c = spec_for(&key(3));
        assert_ne!(a.genesis_hash(), b.genesis_hash());
        assert_ne!(a.genesis_hash(), c.genesis_hash());
    }

    #[test]
    fn block_roundtrips_through_postcard_and_json() {
        let k = key(1);
        let spec = spec_for(&k);
        let b = make_chain(&spec, &k, 1, 100).remove(0);
        let bin = postcard::to_stdvec(&b).unwrap();
        assert_eq!(postcard::from_bytes::<Block>(&bin).unwrap(), b);
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Block>(&json).unwrap(), b);
    }
}
