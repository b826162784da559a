//! Network emulation at runtime: the node-wide state every connection shares ([`Netem`]: the
//! partition in force, the upload shaper behind a lock, connection counts per region, metrics) and
//! the I/O wrapper libp2p's TCP transport runs each connection through (`stream`). The pure parts
//! (configuration, shaper, link schedule, partition set) are `syncnet_proto::netem`.

pub mod stream;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use libp2p::PeerId;

pub use crate::metrics::NetemMetrics;
pub use syncnet_proto::netem::*;

/// Distinct remote region names tracked for `/status`; more are counted as "other".
const MAX_TRACKED_REGIONS: usize = 64;

/// The node-wide emulation state shared by every connection.
pub struct Netem {
    pub region: String,
    pub local_peer: PeerId,
    cfg: NetemConfig,
    shaper: Option<Mutex<Shaper>>,
    partition: RwLock<Arc<PartitionSet>>,
    /// Fast path: no partition set, no lock taken.
    partitioned: AtomicBool,
    /// Bumped on every partition change so connections re-check.
    partition_gen: AtomicU64,
    peer_regions: Mutex<HashMap<String, usize>>,
    seeds: AtomicU64,
    pub metrics: NetemMetrics,
}

impl Netem {
    pub fn new(
        region: String,
        local_peer: PeerId,
        cfg: NetemConfig,
        metrics: NetemMetrics,
    ) -> Self {
        let shaper = (cfg.upload_bytes_per_sec > 0).then(|| {
            Mutex::new(Shaper::new(
                cfg.upload_bytes_per_sec,
                cfg.burst_bytes,
                tokio::time::Instant::now().into_std(),
            ))
        });
        let seed = u64::from_le_bytes(
            blake3::hash(&local_peer.to_bytes()).as_bytes()[..8]
                .try_into()
                .expect("8"),
        );
        Netem {
            region,
            local_peer,
            cfg,
            shaper,
            partition: RwLock::new(Arc::new(PartitionSet::default())),
            partitioned: AtomicBool::new(false),
            partition_gen: AtomicU64::new(0),
            peer_regions: Mutex::new(HashMap::new()),
            seeds: AtomicU64::new(seed),
            metrics,
        }
    }

    pub fn config(&self) -> &NetemConfig {
        &self.cfg
    }

    /// The schedule for a new connection to a peer in `remote_region`.
    pub fn link_to(&self, remote_region: &str) -> Link {
        let latency = match self.cfg.one_way(&self.region, remote_region) {
            Some(l) => l,
            None => {
                if !self.cfg.latency_ms.is_empty() {
                    self.metrics.unknown_region.inc();
                }
                Duration::ZERO
            }
        };
        let seed = self
            .seeds
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        Link::new(
            latency,
            Duration::from_millis(self.cfg.jitter_ms.into()),
            seed,
        )
    }

    /// Reserves upload for `n` bytes; `now` when unshaped.
    pub fn reserve_upload(&self, now: Instant, n: usize) -> Instant {
        match &self.shaper {
            Some(s) => s.lock().expect("not poisoned").reserve(now, n),
            None => now,
        }
    }

    pub fn set_partition(&self, set: PartitionSet) {
        let on = !set.is_empty();
        *self.partition.write().expect("not poisoned") = Arc::new(set);
        self.partitioned.store(on, Ordering::Release);
        self.partition_gen.fetch_add(1, Ordering::AcqRel);
    }

    pub fn partition(&self) -> Arc<PartitionSet> {
        self.partition.read().expect("not poisoned").clone()
    }

    pub fn partition_generation(&self) -> u64 {
        self.partition_gen.load(Ordering::Acquire)
    }

    /// Whether traffic with this peer is held right now.
    pub fn blocks(&self, region: &str, peer: Option<&PeerId>) -> bool {
        self.partitioned.load(Ordering::Acquire)
            && self
                .partition
                .read()
                .expect("not poisoned")
                .blocks(region, peer)
    }

    /// Counts a connection under its region (or "other" beyond the matrix or the cap); returns
    /// the key to pass to `connection_closed`.
    fn connection_opened(&self, region: &str) -> String {
        let known = self.cfg.latency_ms.is_empty() || self.cfg.names_region(region);
        let mut map = self.peer_regions.lock().expect("not poisoned");
        let key = if known && (map.contains_key(region) || map.len() < MAX_TRACKED_REGIONS) {
            region.to_owned()
        } else {
            "other".to_owned()
        };
        *map.entry(key.clone()).or_default() += 1;
        key
    }

    fn connection_closed(&self, key: &str) {
        let mut map = self.peer_regions.lock().expect("not poisoned");
        if let Some(n) = map.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                map.remove(key);
            }
        }
    }

    /// Open emulated connections per remote region.
    pub fn connections_by_region(&self) -> BTreeMap<String, usize> {
        self.peer_regions
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

#[cfg(test)]
mod tests;
