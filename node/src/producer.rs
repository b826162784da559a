//! Offline chain generation into a store (`syncnode generate`, benchmarks, tests). Block production
//! itself is `syncnet_proto::producer`.

pub use syncnet_proto::producer::*;

use syncnet_proto::chain::ChainSpec;

use crate::store::{Head, Store, StoreError};

/// Extends the store's chain by `count` blocks, committed in batches of `batch`, with synthetic
/// timestamps `genesis + height * interval_ms` (so the result is reproducible). Resumes from the
/// store's head. Calls `on_commit` after each committed batch.
pub fn generate_chain(
    store: &Store,
    spec: &ChainSpec,
    producer: &Producer,
    count: u64,
    batch: usize,
    interval_ms: u64,
    mut on_commit: impl FnMut(&Head),
) -> Result<Head, StoreError> {
    let genesis_ts = spec.genesis().header.timestamp_ms;
    let mut head = store.head();
    let target = head.height + count;
    while head.height < target {
        let n = (target - head.height).min(batch.max(1) as u64);
        let mut parent = head.header.clone();
        let mut blocks = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let ts = genesis_ts + (parent.height + 1) * interval_ms;
            let b = producer.next_block(&parent, ts);
            parent = b.header.clone();
            blocks.push(b);
        }
        let verified = spec
            .verify_chain(&head.header, blocks)
            .map_err(|(i, err)| StoreError::Invalid {
                height: head.height + 1 + i as u64,
                err,
            })?;
        head = store.insert_batch(&verified)?;
        on_commit(&head);
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncnet_proto::chain::testkit::{key, spec_for};

    #[test]
    fn generated_chains_are_reproducible_and_valid() {
        let k = key(1);
        let spec = spec_for(&k);
        let producer = Producer::new(k, PayloadSize::fixed(256), 3);
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open_or_init(&dir.path().join("a.redb"), &spec).unwrap();
        let b = Store::open_or_init(&dir.path().join("b.redb"), &spec).unwrap();
        let mut commits = 0;
        generate_chain(&a, &spec, &producer, 100, 32, 1000, |_| commits += 1).unwrap();
        assert_eq!(commits, 4);
        // b in two steps, different batching: must still equal a.
        generate_chain(&b, &spec, &producer, 30, 7, 1000, |_| {}).unwrap();
        generate_chain(&b, &spec, &producer, 70, 50, 1000, |_| {}).unwrap();
        assert_eq!(a.head(), b.head());
        assert_eq!(a.check(&spec).unwrap(), 100);
    }
}
