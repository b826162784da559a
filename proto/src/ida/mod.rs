//! IDA gossip (RapidChain's information dispersal): a block's payload becomes `k` data + `m` parity
//! Reed-Solomon shards (reed-solomon-simd), a Merkle tree over all `k + m` shards commits to them,
//! and the producer signs a header that carries the commitment (`Header::ida_root`). Every chunk
//! travels with the signed header, its index and its Merkle proof, so a relay can check it alone.
//!
//! This module is sans-IO: encoding, proofs and the assembler (`assembler.rs`). The p2p driver
//! moves chunks; it decides nothing here.
//!
//! `ida_root = H(k, m, shard_len, merkle_root)`: the parameters are bound to the root, so a relay
//! cannot make a receiver decode with other parameters. The Merkle tree is hand-rolled (~40 lines)
//! because it needs domain separation between leaves, inner nodes and padding, plus the index in
//! every leaf. The maintained crates (rs_merkle) leave those to the caller.

pub mod assembler;
pub mod relay;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::chain::{H256, Header, Sig};
use crate::error::{FieldError, check};

const LEAF_CONTEXT: &str = "syncnet 2026-11 ida leaf v1";
const NODE_CONTEXT: &str = "syncnet 2026-11 ida node v1";
const EMPTY_CONTEXT: &str = "syncnet 2026-11 ida empty v1";
const ROOT_CONTEXT: &str = "syncnet 2026-11 ida root v1";

/// Largest shard accepted (a 256 MiB payload over 16 data shards); bounds one chunk's memory.
pub const MAX_SHARD_BYTES: u32 = 16 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdaParams {
    /// `k`: any `k` of the `k + m` shards rebuild the payload.
    pub data_shards: u16,
    /// `m`: how many shards may be lost.
    pub parity_shards: u16,
}

impl Default for IdaParams {
    fn default() -> Self {
        IdaParams {
            data_shards: 16,
            parity_shards: 16,
        }
    }
}

impl IdaParams {
    pub fn validate(&self) -> Result<(), FieldError> {
        let (k, m) = (
            usize::from(self.data_shards),
            usize::from(self.parity_shards),
        );
        check(
            !(1..=1024).contains(&k),
            "data_shards",
            "must be within 1..=1024",
        )?;
        check(
            !(1..=1024).contains(&m),
            "parity_shards",
            "must be within 1..=1024",
        )?;
        check(
            !reed_solomon_simd::ReedSolomonEncoder::supports(k, m),
            "parity_shards",
            format!("{k} data + {m} parity shards is not supported by the Reed-Solomon codec"),
        )
    }

    pub fn total(&self) -> usize {
        usize::from(self.data_shards) + usize::from(self.parity_shards)
    }

    pub fn k(&self) -> usize {
        usize::from(self.data_shards)
    }
}

/// Shard length for a payload: `ceil(len / k)`, rounded up to even (the codec's rule), at least 2.
pub fn shard_len(payload_len: usize, k: usize) -> usize {
    let l = payload_len.div_ceil(k).max(2);
    l + (l & 1)
}

pub fn leaf_hash(index: u16, data: &[u8]) -> H256 {
    let mut h = blake3::Hasher::new_derive_key(LEAF_CONTEXT);
    h.update(&index.to_le_bytes());
    h.update(data);
    H256(*h.finalize().as_bytes())
}

fn node_hash(l: &H256, r: &H256) -> H256 {
    let mut h = blake3::Hasher::new_derive_key(NODE_CONTEXT);
    h.update(&l.0);
    h.update(&r.0);
    H256(*h.finalize().as_bytes())
}

fn empty_leaf() -> H256 {
    H256(blake3::derive_key(EMPTY_CONTEXT, &[]))
}

/// Binds the parameters to the Merkle root.
pub fn ida_root(params: IdaParams, shard_len: u32, merkle_root: &H256) -> H256 {
    let mut h = blake3::Hasher::new_derive_key(ROOT_CONTEXT);
    h.update(&params.data_shards.to_le_bytes());
    h.update(&params.parity_shards.to_le_bytes());
    h.update(&shard_len.to_le_bytes());
    h.update(&merkle_root.0);
    H256(*h.finalize().as_bytes())
}

/// A Merkle tree over `n` leaves, padded to a power of two. `levels[0]` are the leaves.
pub struct Tree {
    levels: Vec<Vec<H256>>,
}

impl Tree {
    pub fn new(mut leaves: Vec<H256>) -> Tree {
        let width = leaves.len().max(1).next_power_of_two();
        leaves.resize(width, empty_leaf());
        let mut levels = vec![leaves];
        while levels.last().expect("one level").len() > 1 {
            let up = levels
                .last()
                .expect("one level")
                .chunks(2)
                .map(|p| node_hash(&p[0], &p[1]))
                .collect();
            levels.push(up);
        }
        Tree { levels }
    }

    pub fn root(&self) -> H256 {
        self.levels.last().expect("one level")[0]
    }

    /// Siblings from the leaf up.
    pub fn proof(&self, index: usize) -> Vec<H256> {
        let mut i = index;
        let mut out = Vec::with_capacity(self.levels.len() - 1);
        for level in &self.levels[..self.levels.len() - 1] {
            out.push(level[i ^ 1]);
            i /= 2;
        }
        out
    }
}

/// Recomputes the Merkle root from a leaf and its proof.
pub fn root_from_proof(index: usize, leaf: H256, proof: &[H256]) -> H256 {
    let mut acc = leaf;
    let mut i = index;
    for sib in proof {
        acc = if i & 1 == 0 {
            node_hash(&acc, sib)
        } else {
            node_hash(sib, &acc)
        };
        i /= 2;
    }
    acc
}

/// A payload cut into shards and committed to.
pub struct Encoded {
    pub params: IdaParams,
    pub shard_len: u32,
    /// `k + m` shards: data first, then parity.
    pub shards: Vec<Bytes>,
    pub tree: Tree,
    pub root: H256,
}

/// Encodes `payload` into `k + m` shards and commits to them.
pub fn encode(params: IdaParams, payload: &[u8]) -> Encoded {
    let k = params.k();
    let len = shard_len(payload.len(), k);
    let originals: Vec<Vec<u8>> = (0..k)
        .map(|i| {
            let start = (i * len).min(payload.len());
            let end = ((i + 1) * len).min(payload.len());
            let mut s = payload[start..end].to_vec();
            s.resize(len, 0);
            s
        })
        .collect();
    let parity = reed_solomon_simd::encode(k, usize::from(params.parity_shards), &originals)
        .expect("validated parameters and an even shard length");
    finish(params, len as u32, originals.into_iter().chain(parity))
}

fn finish(params: IdaParams, shard_len: u32, shards: impl Iterator<Item = Vec<u8>>) -> Encoded {
    let shards: Vec<Bytes> = shards.map(Bytes::from).collect();
    let leaves = shards
        .iter()
        .enumerate()
        .map(|(i, s)| leaf_hash(i as u16, s))
        .collect();
    let tree = Tree::new(leaves);
    let root = ida_root(params, shard_len, &tree.root());
    Encoded {
        params,
        shard_len,
        shards,
        tree,
        root,
    }
}

impl Encoded {
    /// The chunk for shard `index`, under a header that names this root.
    pub fn chunk(&self, header: &Header, signature: Sig, index: usize) -> Chunk {
        Chunk {
            header: header.clone(),
            signature,
            params: self.params,
            shard_len: self.shard_len,
            index: index as u16,
            data: self.shards[index].clone(),
            proof: self.tree.proof(index),
        }
    }
}

/// One shard on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub header: Header,
    pub signature: Sig,
    pub params: IdaParams,
    pub shard_len: u32,
    pub index: u16,
    pub data: Bytes,
    pub proof: Vec<H256>,
}

/// Why a chunk was refused. The sender of such a chunk is penalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("header carries no IDA root")]
    NoRoot,
    #[error("unsupported IDA parameters")]
    Params,
    #[error("shard index out of range")]
    Index,
    #[error("shard length does not match")]
    Length,
    #[error("Merkle proof does not lead to the header's root")]
    Proof,
    #[error("header signature: {0}")]
    Header(crate::chain::VerifyError),
    #[error("another header was seen for this root")]
    HeaderMismatch,
}

impl ChunkError {
    /// One of each kind (the labels' closed set; a header's verify error is one label).
    pub const ALL: [ChunkError; 7] = [
        ChunkError::NoRoot,
        ChunkError::Params,
        ChunkError::Index,
        ChunkError::Length,
        ChunkError::Proof,
        ChunkError::Header(crate::chain::VerifyError::Signature),
        ChunkError::HeaderMismatch,
    ];

    /// Closed set of metric label values.
    pub fn reason(&self) -> &'static str {
        match self {
            ChunkError::NoRoot => "no_root",
            ChunkError::Params => "params",
            ChunkError::Index => "index",
            ChunkError::Length => "length",
            ChunkError::Proof => "proof",
            ChunkError::Header(_) => "header",
            ChunkError::HeaderMismatch => "header_mismatch",
        }
    }
}

impl Chunk {
    /// Everything that can be checked about a chunk alone, except the header's signature (checked
    /// once per root by the assembler): shape, then the proof against `header.ida_root`.
    pub fn check(&self) -> Result<H256, ChunkError> {
        let root = self.header.ida_root.ok_or(ChunkError::NoRoot)?;
        self.params.validate().map_err(|_| ChunkError::Params)?;
        let n = self.params.total();
        if usize::from(self.index) >= n {
            return Err(ChunkError::Index);
        }
        let sl = self.shard_len;
        let fits = u64::from(self.header.payload_len) <= sl as u64 * self.params.k() as u64;
        if sl == 0
            || sl % 2 == 1
            || sl > MAX_SHARD_BYTES
            || self.data.len() != sl as usize
            || sl as usize != shard_len(self.header.payload_len as usize, self.params.k())
            || !fits
        {
            return Err(ChunkError::Length);
        }
        if self.proof.len() != n.next_power_of_two().trailing_zeros() as usize {
            return Err(ChunkError::Proof);
        }
        let leaf = leaf_hash(self.index, &self.data);
        let merkle = root_from_proof(usize::from(self.index), leaf, &self.proof);
        if ida_root(self.params, sl, &merkle) != root {
            return Err(ChunkError::Proof);
        }
        Ok(root)
    }
}

/// Why a complete set of shards did not give a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the Reed-Solomon decoder refused the shards")]
    Codec,
    /// The shards do not re-encode to the root: the encoder equivocated, and different `k`-subsets
    /// would decode to different payloads.
    #[error("shards do not re-encode to the committed root (equivocating encoder)")]
    Equivocation,
    #[error("payload does not match the header: {0}")]
    Payload(crate::chain::VerifyError),
}

/// Rebuilds the payload from any `k` shards (`(index, data)`), re-encodes it and checks the root.
pub fn decode(
    params: IdaParams,
    shard_len: u32,
    payload_len: u32,
    root: &H256,
    shards: &[(usize, Bytes)],
) -> Result<Vec<u8>, DecodeError> {
    let k = params.k();
    let originals = shards.iter().filter(|(i, _)| *i < k).map(|(i, d)| (*i, d));
    let recovery = shards
        .iter()
        .filter(|(i, _)| *i >= k)
        .map(|(i, d)| (*i - k, d));
    let restored =
        reed_solomon_simd::decode(k, usize::from(params.parity_shards), originals, recovery)
            .map_err(|_| DecodeError::Codec)?;
    let mut data: Vec<&[u8]> = vec![&[]; k];
    for (i, d) in shards.iter().filter(|(i, _)| *i < k) {
        data[*i] = d;
    }
    for (i, d) in &restored {
        data[*i] = d;
    }
    let mut payload = Vec::with_capacity(k * shard_len as usize);
    for d in &data {
        if d.len() != shard_len as usize {
            return Err(DecodeError::Codec);
        }
        payload.extend_from_slice(d);
    }
    // Re-encode: the padding must be zero and the parity must match, or some other k-subset would
    // have decoded differently.
    let enc = encode(
        params,
        &payload[..(payload_len as usize).min(payload.len())],
    );
    if enc.shard_len != shard_len || enc.root != *root {
        return Err(DecodeError::Equivocation);
    }
    payload.truncate(payload_len as usize);
    Ok(payload)
}

/// A frame on an IDA stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdaMessage {
    Chunk(Box<Chunk>),
    /// "I have this block: send me no more of it."
    Done {
        root: H256,
    },
    /// Pull repair: the sender misses these shards of the block at `height`.
    Want {
        root: H256,
        height: u64,
        missing: Vec<u16>,
    },
    /// "I have this chunk now": a copy queued for the sender is skipped (IDONTWANT for chunks).
    Have {
        root: H256,
        index: u16,
    },
}

#[cfg(test)]
mod tests;
