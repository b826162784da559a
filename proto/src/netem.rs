//! Network emulation (regions, latency, upload bandwidth, partitions) inside the node, for machines
//! and pods without `tc netem`. This module is the sans-IO core: the configuration, the upload
//! shaper, the per-connection release schedule and the partition set, all driven by an injected
//! clock. The node's `netem` module holds the shared runtime state (`Netem`: locks, the real clock,
//! metrics) and the thin I/O wrapper that libp2p's TCP transport runs every connection through, so
//! every protocol on it (sync, kad, identify, ping, gossip) is affected.
//!
//! Model: latency is applied by the sender (one-way, `my region -> their region`), so a round trip
//! costs `lat(a->b) + lat(b->a)`. Upload is one FIFO link per node: a token bucket on bytes shared
//! by all connections. Jitter is uniform in `[-jitter, +jitter]` per write, with release times
//! kept monotonic per connection (TCP delivers in order). Partitioned traffic is held, not lost,
//! like TCP over a dead path: the connection stalls until the partition heals or libp2p's ping
//! declares it dead.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{FieldError, check};

/// Largest one-way latency accepted (10 s).
pub const MAX_LATENCY_MS: u32 = 10_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetemConfig {
    /// One-way latency in ms, `latency_ms[from][to]`. A missing `[a][b]` falls back to `[b][a]`
    /// (write a symmetric matrix once), then to 0.
    pub latency_ms: BTreeMap<String, BTreeMap<String, u32>>,
    /// Uniform jitter added to every write, in ms (`+-jitter_ms`, never below 0).
    pub jitter_ms: u32,
    /// This node's total upload rate over all connections; 0 = unlimited.
    pub upload_bytes_per_sec: u64,
    /// Bytes the upload link may send at once after an idle period.
    pub burst_bytes: u32,
    /// Bytes one connection may hold in its delay line before writers wait (like a socket's send
    /// buffer); bounds memory at `max_connections * max_queue_bytes`.
    pub max_queue_bytes: u32,
}

impl Default for NetemConfig {
    fn default() -> Self {
        NetemConfig {
            latency_ms: BTreeMap::new(),
            jitter_ms: 0,
            upload_bytes_per_sec: 0,
            burst_bytes: 64 * 1024,
            max_queue_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Region names: what Kubernetes accepts in a label value, minus the upper case.
/// The first bytes each end of an emulated connection sends: magic, region, peer id.
pub const PREAMBLE_MAGIC: &[u8; 16] = b"/syncnet/netem/1";

/// The preamble announcing `region` and `peer`.
pub fn preamble(region: &str, peer: &PeerId) -> Vec<u8> {
    let peer = peer.to_bytes();
    let mut hello = Vec::with_capacity(PREAMBLE_MAGIC.len() + 2 + region.len() + peer.len());
    hello.extend_from_slice(PREAMBLE_MAGIC);
    hello.push(region.len() as u8);
    hello.extend_from_slice(region.as_bytes());
    hello.push(peer.len() as u8);
    hello.extend_from_slice(&peer);
    hello
}

/// Where parsing a peer's preamble stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Preamble {
    /// Read exactly this many more bytes, then parse again (bytes past the preamble belong to
    /// the next protocol, so the reader must not take them).
    Need(usize),
    Done {
        region: String,
        peer: PeerId,
    },
}

/// Parses the preamble from what has been read so far (sans-IO: the stream wrapper reads what
/// [`Preamble::Need`] asks for). Errors say what is wrong, for the connection's error.
pub fn parse_preamble(buf: &[u8]) -> Result<Preamble, String> {
    let m = PREAMBLE_MAGIC.len();
    if buf.len() < m {
        return Ok(Preamble::Need(m - buf.len()));
    }
    if &buf[..m] != PREAMBLE_MAGIC {
        return Err(
            "peer does not run network emulation: set p2p.netem on every node of a network or on none"
                .into(),
        );
    }
    let field = |at: usize, max: usize| -> Result<Result<&[u8], usize>, String> {
        let Some(&len) = buf.get(at) else {
            return Ok(Err(1));
        };
        let len = usize::from(len);
        if len == 0 || len > max {
            return Err(format!("netem preamble field of {len} bytes (1..={max})"));
        }
        match buf.get(at + 1..at + 1 + len) {
            Some(v) => Ok(Ok(v)),
            None => Ok(Err(at + 1 + len - buf.len())),
        }
    };
    let region = match field(m, 63)? {
        Ok(r) => r,
        Err(need) => return Ok(Preamble::Need(need)),
    };
    let region = std::str::from_utf8(region).map_err(|_| "netem region: not UTF-8".to_owned())?;
    validate_region(region).map_err(|e| format!("netem region: {e}"))?;
    let at = m + 1 + region.len();
    let peer = match field(at, 64)? {
        Ok(p) => p,
        Err(need) => return Ok(Preamble::Need(need)),
    };
    let peer = PeerId::from_bytes(peer).map_err(|e| format!("netem peer id: {e}"))?;
    if buf.len() > at + 1 + peer.to_bytes().len() {
        return Err("netem preamble: bytes past its end".into());
    }
    Ok(Preamble::Done {
        region: region.to_owned(),
        peer,
    })
}

pub fn validate_region(r: &str) -> Result<(), String> {
    crate::error::validate_name(r)
}

impl NetemConfig {
    /// Checks the config for a node in `region`; errors name the field below `p2p.netem`.
    pub fn validate(&self, region: &str) -> Result<(), FieldError> {
        for (from, row) in &self.latency_ms {
            validate_region(from).map_err(|e| FieldError::new("latency_ms", e))?;
            for (to, ms) in row {
                validate_region(to)
                    .map_err(|e| FieldError::new(format!("latency_ms.{from}"), e))?;
                check(
                    *ms > MAX_LATENCY_MS,
                    &format!("latency_ms.{from}.{to}"),
                    format!("{ms} ms is above the {MAX_LATENCY_MS} ms limit"),
                )?;
            }
        }
        check(
            !self.latency_ms.is_empty() && !self.regions().contains(region),
            "latency_ms",
            format!(
                "this node's region {region:?} is not in the matrix (regions: {})",
                self.regions().into_iter().collect::<Vec<_>>().join(", ")
            ),
        )?;
        check(
            self.jitter_ms > MAX_LATENCY_MS,
            "jitter_ms",
            format!("at most {MAX_LATENCY_MS}"),
        )?;
        check(
            self.upload_bytes_per_sec != 0 && self.upload_bytes_per_sec < 1024,
            "upload_bytes_per_sec",
            "0 (unlimited) or at least 1024",
        )?;
        check(
            self.burst_bytes < 1500,
            "burst_bytes",
            "at least 1500 (one packet)",
        )?;
        check(
            !(64 * 1024..=256 * 1024 * 1024).contains(&self.max_queue_bytes),
            "max_queue_bytes",
            "must be within 64 KiB..=256 MiB",
        )
    }

    /// Whether the matrix names `region`, as a row or a column (without building the set).
    pub fn names_region(&self, region: &str) -> bool {
        self.latency_ms
            .iter()
            .any(|(from, row)| from == region || row.contains_key(region))
    }

    /// Every region the matrix names, as a row or a column.
    pub fn regions(&self) -> std::collections::BTreeSet<&str> {
        let mut s = std::collections::BTreeSet::new();
        for (from, row) in &self.latency_ms {
            s.insert(from.as_str());
            s.extend(row.keys().map(String::as_str));
        }
        s
    }

    /// One-way latency `from -> to`: the directed entry, else the reverse one, else `None`.
    pub fn one_way(&self, from: &str, to: &str) -> Option<Duration> {
        let get = |a: &str, b: &str| self.latency_ms.get(a).and_then(|row| row.get(b)).copied();
        get(from, to)
            .or_else(|| get(to, from))
            .map(|ms| Duration::from_millis(ms.into()))
    }
}

/// The node's upload link: a token bucket on bytes that goes into debt, so reservations queue up
/// behind each other exactly like bytes on a FIFO link.
#[derive(Debug)]
pub struct Shaper {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Shaper {
    pub fn new(bytes_per_sec: u64, burst: u32, now: Instant) -> Self {
        Shaper {
            rate: bytes_per_sec as f64,
            burst: burst.into(),
            tokens: burst.into(),
            last: now,
        }
    }

    /// Reserves `n` bytes of upload; returns when they have left the link.
    pub fn reserve(&mut self, now: Instant, n: usize) -> Instant {
        if now > self.last {
            let dt = (now - self.last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
            self.last = now;
        }
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            now
        } else {
            now + Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// One connection's outbound schedule: departure + latency +- jitter, never earlier than the
/// previous release.
#[derive(Debug)]
pub struct Link {
    latency: Duration,
    jitter: Duration,
    rng: SmallRng,
    last_release: Option<Instant>,
}

impl Link {
    pub fn new(latency: Duration, jitter: Duration, seed: u64) -> Self {
        Link {
            latency,
            jitter,
            rng: SmallRng::seed_from_u64(seed),
            last_release: None,
        }
    }

    pub fn latency(&self) -> Duration {
        self.latency
    }

    /// When bytes that leave the upload link at `departure` reach the peer.
    pub fn release_at(&mut self, departure: Instant) -> Instant {
        let mut at = departure + self.latency;
        if !self.jitter.is_zero() {
            let j = self.jitter.as_secs_f64();
            let d = self.rng.random_range(-j..=j);
            at = if d >= 0.0 {
                at + Duration::from_secs_f64(d)
            } else {
                at.checked_sub(Duration::from_secs_f64(-d))
                    .unwrap_or(departure)
                    .max(departure)
            };
        }
        if let Some(last) = self.last_release {
            at = at.max(last);
        }
        self.last_release = Some(at);
        at
    }
}

/// Regions and peers whose traffic is held (the `partition` fault).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionSet {
    pub regions: HashSet<String>,
    pub peers: HashSet<PeerId>,
}

impl PartitionSet {
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty() && self.peers.is_empty()
    }

    pub fn blocks(&self, region: &str, peer: Option<&PeerId>) -> bool {
        self.regions.contains(region) || peer.is_some_and(|p| self.peers.contains(p))
    }
}

#[cfg(test)]
mod tests;
