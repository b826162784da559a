//! Sans-IO assembler: takes chunks, says which to forward, rebuilds blocks at `k` chunks, asks for
//! repairs when a block stops making progress and gives up (to the sync path) when it is too old.
//! Bounded: blocks in assembly, bytes buffered, age of partial blocks, and remembered roots.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Chunk, ChunkError, DecodeError, IdaParams, decode};
use crate::chain::{Block, ChainSpec, H256, Header, Sig};
use crate::error::{FieldError, check};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssemblerConfig {
    /// Blocks in assembly at once; the oldest is evicted for a new one.
    pub max_blocks: usize,
    /// Shard bytes buffered over all partial blocks; the oldest blocks are evicted beyond it.
    pub max_bytes: usize,
    /// A partial block older than this is given up (the sync path fetches it).
    #[serde(with = "crate::util::millis")]
    pub max_age: Duration,
    /// No new chunk for this long: ask neighbours for the missing ones.
    #[serde(with = "crate::util::millis")]
    pub repair_after: Duration,
    /// Completed or given-up roots remembered, so late chunks are dropped, not reassembled.
    pub done_memory: usize,
}

impl Default for AssemblerConfig {
    fn default() -> Self {
        AssemblerConfig {
            max_blocks: 16,
            max_bytes: 256 * 1024 * 1024,
            max_age: Duration::from_secs(30),
            // A chunk every few tens of ms is normal; 300 ms of silence is a stall (S2: 1 s left
            // stragglers waiting, 300 ms cut p100 from ~2 s to ~0.9 s).
            repair_after: Duration::from_millis(300),
            done_memory: 4096,
        }
    }
}

impl AssemblerConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        check(self.max_blocks == 0, "max_blocks", "must be > 0")?;
        check(self.done_memory == 0, "done_memory", "must be > 0")?;
        check(self.max_bytes < 1024 * 1024, "max_bytes", "at least 1 MiB")?;
        check(self.repair_after.is_zero(), "repair_after", "must be > 0")?;
        check(
            self.max_age <= self.repair_after,
            "max_age",
            "must be above repair_after",
        )
    }
}

/// What to do with a chunk.
#[derive(Debug)]
pub enum Outcome {
    /// New and valid: forward it to every neighbour but the sender.
    New,
    /// New, valid, and the `k`-th: forward it, and here is the block (or why the shards did not
    /// give one). Later chunks of this root are `Known`.
    Complete(Result<Box<Block>, DecodeError>),
    /// Already held.
    Duplicate,
    /// The block is already assembled or given up.
    Known,
    /// Invalid: drop it and penalise the sender.
    Invalid(ChunkError),
    /// Valid, but the block is larger than everything this node buffers: left to the sync path.
    TooLarge,
}

/// Work for the driver, from `tick`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// Ask neighbours for these shard indices of the block at `height`.
    Repair {
        root: H256,
        height: u64,
        missing: Vec<u16>,
    },
    /// Incomplete for too long: the header (signed, verified) goes to the sync path.
    GiveUp { header: Header, signature: Sig },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AssemblerStats {
    pub partial_blocks: usize,
    pub buffered_bytes: usize,
    pub remembered_roots: usize,
    pub evicted: u64,
    pub given_up: u64,
}

struct Partial {
    header: Header,
    signature: Sig,
    params: IdaParams,
    shard_len: u32,
    shards: Vec<Option<Bytes>>,
    have: usize,
    first_seen: Instant,
    next_repair: Instant,
    /// Known only from invalid chunks under a genuine signed header: the block exists, so it is
    /// repaired like any other, but nothing in those chunks (parameters, shard length) is trusted.
    /// The first valid chunk sets them.
    placeholder: bool,
}

pub struct Assembler {
    spec: ChainSpec,
    cfg: AssemblerConfig,
    partial: HashMap<H256, Partial>,
    done: HashSet<H256>,
    done_order: VecDeque<H256>,
    bytes: usize,
    evicted: u64,
    given_up: u64,
}

impl Assembler {
    pub fn new(spec: ChainSpec, cfg: AssemblerConfig) -> Self {
        Assembler {
            spec,
            cfg,
            partial: HashMap::new(),
            done: HashSet::new(),
            done_order: VecDeque::new(),
            bytes: 0,
            evicted: 0,
            given_up: 0,
        }
    }

    pub fn stats(&self) -> AssemblerStats {
        AssemblerStats {
            partial_blocks: self.partial.len(),
            buffered_bytes: self.bytes,
            remembered_roots: self.done.len(),
            evicted: self.evicted,
            given_up: self.given_up,
        }
    }

    /// Whether this root was completed (or given up) recently.
    pub fn is_done(&self, root: &H256) -> bool {
        self.done.contains(root)
    }

    /// Marks a root done without chunks (e.g. our own block, or one that arrived through sync).
    pub fn mark_done(&mut self, root: H256) {
        if let Some(p) = self.partial.remove(&root) {
            self.release(&p);
        }
        if self.done.insert(root) {
            self.done_order.push_back(root);
            while self.done_order.len() > self.cfg.done_memory {
                let old = self.done_order.pop_front().expect("non-empty");
                self.done.remove(&old);
            }
        }
    }

    /// Indices held for `root`, if it is in assembly.
    pub fn held(&self, root: &H256) -> Option<Vec<u16>> {
        self.partial.get(root).map(|p| {
            (0..p.shards.len() as u16)
                .filter(|i| p.shards[usize::from(*i)].is_some())
                .collect()
        })
    }

    fn release(&mut self, p: &Partial) {
        let held: usize = p.shards.iter().flatten().map(Bytes::len).sum();
        self.bytes -= held;
    }

    pub fn on_chunk(&mut self, chunk: Chunk, now: Instant) -> Outcome {
        let root = match chunk.check() {
            Ok(r) => r,
            Err(e) => {
                self.note_block(&chunk, now);
                return Outcome::Invalid(e);
            }
        };
        if self.done.contains(&root) {
            return Outcome::Known;
        }
        // At most k shards are ever held for one block.
        let size = chunk.params.k() * chunk.shard_len as usize;
        if self.partial.get(&root).is_some_and(|p| p.placeholder) {
            if size > self.cfg.max_bytes {
                return Outcome::TooLarge;
            }
            let p = self.partial.get_mut(&root).expect("checked");
            p.params = chunk.params;
            p.shard_len = chunk.shard_len;
            p.shards = vec![None; chunk.params.total()];
            p.placeholder = false;
        }
        if !self.partial.contains_key(&root) {
            if size > self.cfg.max_bytes {
                return Outcome::TooLarge;
            }
            // The signature is checked once per root; a relay cannot make us verify it twice.
            if let Err(e) = self.spec.verify_head(&chunk.header, &chunk.signature) {
                return Outcome::Invalid(ChunkError::Header(e));
            }
            self.admit(root, &chunk, now, false);
        }
        let p = self.partial.get_mut(&root).expect("inserted above");
        if p.header != chunk.header || p.params != chunk.params || p.shard_len != chunk.shard_len {
            // (A placeholder took this chunk's parameters just above, so only its header counts.)
            // Same root, other header: the producer signed two headers over one encoding.
            return Outcome::Invalid(ChunkError::HeaderMismatch);
        }
        let slot = &mut p.shards[usize::from(chunk.index)];
        if slot.is_some() {
            return Outcome::Duplicate;
        }
        self.bytes += chunk.data.len();
        *slot = Some(chunk.data);
        p.have += 1;
        p.next_repair = now + self.cfg.repair_after;
        if p.have < p.params.k() {
            while self.bytes > self.cfg.max_bytes && self.partial.len() > 1 {
                self.evict_oldest_except(&root);
            }
            return Outcome::New;
        }
        let p = self.partial.remove(&root).expect("present");
        self.release(&p);
        self.mark_done(root);
        let shards: Vec<(usize, Bytes)> = p
            .shards
            .into_iter()
            .enumerate()
            .filter_map(|(i, s)| s.map(|s| (i, s)))
            .collect();
        let result = decode(p.params, p.shard_len, p.header.payload_len, &root, &shards).and_then(
            |payload| {
                let block = Block {
                    header: p.header,
                    signature: p.signature,
                    payload: Bytes::from(payload),
                };
                crate::chain::check_payload(&block).map_err(DecodeError::Payload)?;
                Ok(Box::new(block))
            },
        );
        Outcome::Complete(result)
    }

    /// An invalid chunk (bad proof, index or length) under a genuine header still says the block
    /// exists. Without this, a node whose only chunks came from a corrupting relay would never ask
    /// for repair. The header signature is checked once per root, as for valid chunks; the sender
    /// is penalised by the caller either way.
    fn note_block(&mut self, chunk: &Chunk, now: Instant) {
        let Some(root) = chunk.header.ida_root else {
            return;
        };
        if self.done.contains(&root)
            || self.partial.contains_key(&root)
            || chunk.params.validate().is_err()
            || self
                .spec
                .verify_head(&chunk.header, &chunk.signature)
                .is_err()
        {
            return;
        }
        self.admit(root, chunk, now, true);
    }

    /// Starts assembling `root` (its header already verified), evicting the oldest partial block
    /// when at the cap. A placeholder keeps no shard slots: the first valid chunk sets them.
    fn admit(&mut self, root: H256, chunk: &Chunk, now: Instant, placeholder: bool) {
        while self.partial.len() >= self.cfg.max_blocks {
            self.evict_oldest();
        }
        let (shard_len, shards) = if placeholder {
            (0, vec![])
        } else {
            (chunk.shard_len, vec![None; chunk.params.total()])
        };
        self.partial.insert(
            root,
            Partial {
                header: chunk.header.clone(),
                signature: chunk.signature,
                params: chunk.params,
                shard_len,
                shards,
                have: 0,
                first_seen: now,
                next_repair: now + self.cfg.repair_after,
                placeholder,
            },
        );
    }

    fn evict_oldest(&mut self) {
        if let Some(root) = self
            .partial
            .iter()
            .min_by_key(|(_, p)| p.first_seen)
            .map(|(r, _)| *r)
        {
            self.evict(root);
        }
    }

    fn evict_oldest_except(&mut self, keep: &H256) {
        if let Some(root) = self
            .partial
            .iter()
            .filter(|(r, _)| *r != keep)
            .min_by_key(|(_, p)| p.first_seen)
            .map(|(r, _)| *r)
        {
            self.evict(root);
        }
    }

    fn evict(&mut self, root: H256) {
        if let Some(p) = self.partial.remove(&root) {
            self.release(&p);
            self.evicted += 1;
        }
    }

    /// The next instant at which `tick` has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.partial
            .values()
            .map(|p| p.next_repair.min(p.first_seen + self.cfg.max_age))
            .min()
    }

    pub fn tick(&mut self, now: Instant) -> Vec<Timeout> {
        let mut out = vec![];
        let expired: Vec<H256> = self
            .partial
            .iter()
            .filter(|(_, p)| now >= p.first_seen + self.cfg.max_age)
            .map(|(r, _)| *r)
            .collect();
        for root in expired {
            let p = self.partial.remove(&root).expect("present");
            self.release(&p);
            self.given_up += 1;
            self.mark_done(root);
            out.push(Timeout::GiveUp {
                header: p.header,
                signature: p.signature,
            });
        }
        let repair_after = self.cfg.repair_after;
        for (root, p) in self.partial.iter_mut() {
            if now >= p.next_repair {
                p.next_repair = now + repair_after;
                // A placeholder asks for the data shards by the (untrusted) hint: whoever has the
                // block serves what exists, and any k rebuild it.
                let missing = if p.placeholder {
                    (0..p.params.data_shards).collect()
                } else {
                    (0..p.shards.len() as u16)
                        .filter(|i| p.shards[usize::from(*i)].is_none())
                        .collect()
                };
                out.push(Timeout::Repair {
                    root: *root,
                    height: p.header.height,
                    missing,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
