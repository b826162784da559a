//! Block production: deterministic payloads from a seed and signed headers (with an IDA root when
//! the block is broadcast by IDA).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::chain::{Block, Header};
use crate::ida::{Encoded, IdaParams};

const PAYLOAD_GEN_CONTEXT: &str = "syncnet 2026-11 payload generator v1";

#[derive(Clone)]
pub struct Producer {
    key: SigningKey,
    size: PayloadSize,
    seed: u64,
}

impl Producer {
    pub fn new(key: SigningKey, size: PayloadSize, seed: u64) -> Self {
        Producer { key, size, seed }
    }

    /// The payload of block `height`: its length and bytes are a pure function of (seed, height), so
    /// independent producers with one seed build byte-identical chains (used to seed benchmarks).
    pub fn payload(&self, height: u64) -> Bytes {
        let mut h = blake3::Hasher::new_derive_key(PAYLOAD_GEN_CONTEXT);
        h.update(&self.seed.to_le_bytes())
            .update(&height.to_le_bytes());
        let mut xof = h.finalize_xof();
        let mut len_bytes = [0u8; 8];
        xof.fill(&mut len_bytes);
        let span = u64::from(self.size.max - self.size.min) + 1;
        let len = self.size.min as usize + (u64::from_le_bytes(len_bytes) % span) as usize;
        let mut buf = vec![0u8; len];
        xof.fill(&mut buf);
        buf.into()
    }

    /// The producer's signing key (for blocks made outside `next_block`, e.g. with an IDA root).
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    pub fn next_block(&self, parent: &Header, timestamp_ms: u64) -> Block {
        let height = parent.height + 1;
        Block::produce(&self.key, parent, timestamp_ms, self.payload(height))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PayloadSize {
    pub min: u32,
    pub max: u32,
}

impl PayloadSize {
    pub fn fixed(n: u32) -> Self {
        PayloadSize { min: n, max: n }
    }
}

impl<'de> Deserialize<'de> for PayloadSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Range {
            min: u32,
            max: u32,
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = PayloadSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a byte count or a map {min, max}")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PayloadSize, E> {
                let n = u32::try_from(v).map_err(|_| E::custom("byte count too large"))?;
                Ok(PayloadSize::fixed(n))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PayloadSize, E> {
                Err(E::custom(format!("{v} is negative")))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<PayloadSize, A::Error> {
                let r = Range::deserialize(serde::de::value::MapAccessDeserializer::new(m))?;
                Ok(PayloadSize {
                    min: r.min,
                    max: r.max,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// The producer's next block: with an IDA root in its header when `ida` is set (the encoding is
/// returned too, so the chunks need not be computed twice).
pub fn produce(
    producer: &Producer,
    parent: &Header,
    timestamp_ms: u64,
    ida: Option<IdaParams>,
) -> (Block, Option<Arc<Encoded>>) {
    let height = parent.height + 1;
    let payload = producer.payload(height);
    match ida {
        None => (
            Block::produce(producer.key(), parent, timestamp_ms, payload),
            None,
        ),
        Some(params) => {
            let enc = Arc::new(crate::ida::encode(params, &payload));
            let block = Block::produce_with_root(
                producer.key(),
                parent,
                timestamp_ms,
                payload,
                Some(enc.root),
            );
            (block, Some(enc))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testkit::key;

    #[test]
    fn payloads_are_deterministic_and_sized() {
        let p = Producer::new(key(1), PayloadSize { min: 100, max: 200 }, 7);
        let q = Producer::new(key(1), PayloadSize { min: 100, max: 200 }, 8);
        assert_eq!(p.payload(5), p.payload(5));
        assert_ne!(p.payload(5), p.payload(6));
        assert_ne!(p.payload(5), q.payload(5));
        let lens: Vec<usize> = (0..200).map(|h| p.payload(h).len()).collect();
        assert!(lens.iter().all(|l| (100..=200).contains(l)));
        assert!(lens.iter().min() < lens.iter().max(), "range must be used");
        let fixed = Producer::new(key(1), PayloadSize::fixed(1024), 0);
        assert!((0..20).all(|h| fixed.payload(h).len() == 1024));
    }
}
