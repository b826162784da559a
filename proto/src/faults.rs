//! Fault injection: the set of faults a node can be told to apply at runtime (all off by default),
//! validated with errors that name the field. The control API (`PUT /faults`) replaces the whole set
//! atomically: a rejected set changes nothing.
//!
//! The set is plain data. The node keeps the current set in one place (a watch channel in its p2p
//! layer) and each fault has exactly one consumer that reads it there; see docs/faults.md for what
//! each fault reproduces, who consumes it, and what adding one takes. Partitions need the node's
//! network emulation (`p2p.netem`), and `check` refuses them on a node without it.

use serde::{Deserialize, Serialize};

use crate::error::FieldError;
use crate::netem::{NetemConfig, PartitionSet, validate_region};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Probability that one of our outbound sync stream setups fails on purpose.
    pub setup_failure_rate: f64,
    /// Probability that a sync request we serve is answered with an injected error.
    pub request_error_rate: f64,
    /// Probability, per request served, that the sync stream is reset instead.
    pub stream_reset_rate: f64,
    /// Delay added to every reply we serve, in milliseconds.
    pub stall_ms: u64,
    /// Serve blocks with a flipped payload byte (receivers must reject them).
    pub corrupt_blocks: bool,
    /// Drop every connection and refuse new ones.
    pub isolate: bool,
    /// Probability that a received IDA chunk is dropped unread (lossy links; parity and pull repair
    /// must cover it).
    pub chunk_drop_rate: f64,
    /// Malicious relay: every IDA chunk this node sends has a flipped byte (receivers must reject
    /// and penalise it).
    pub corrupt_chunks: bool,
    /// Run discovery this often regardless of stream count, in milliseconds.
    pub forced_discovery_ms: Option<u64>,
    /// Drop traffic to and from these regions / peer ids.
    pub partition: Partition,
    /// CANARY: keep this many KiB per stream setup forever (a planted leak).
    pub leak_canary_kib_per_setup: u64,
    /// CANARY: keep one open file descriptor per this many stream setups (0: off).
    pub fd_canary_setups_per_fd: u64,
    /// CANARY: keep one parked thread per this many stream setups (0: off).
    pub thread_canary_setups_per_thread: u64,
    /// CANARY: every served request burns this many microseconds of CPU per minute of the
    /// process's uptime (0: off).
    pub cpu_canary_us_per_request_per_min: u64,
    /// CANARY: the original discovery/stream storm.
    pub storm_canary: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Partition {
    pub regions: Vec<String>,
    pub peers: Vec<String>,
}

crate::label_enum! {
    /// `syncnet_faults_injected_total{kind}`: one value per fault acting, counted by its one
    /// consumer (docs/faults.md).
    pub enum FaultKind {
        SetupFailure => "setup_failure",
        RequestError => "request_error",
        StreamReset => "stream_reset",
        Stall => "stall",
        CorruptBlock => "corrupt_block",
        Isolate => "isolate",
        ChunkDrop => "chunk_drop",
        CorruptChunk => "corrupt_chunk",
        ForcedDiscovery => "forced_discovery",
        /// A connection that started being held by a partition.
        Partition => "partition",
        LeakCanary => "leak_canary",
        FdCanary => "fd_canary",
        ThreadCanary => "thread_canary",
        /// A served request that burned CPU.
        CpuCanary => "cpu_canary",
        /// A discovery round the storm canary caused.
        StormCanary => "storm_canary",
    }
}

/// A rejected fault set: which field, and why.
pub type FaultError = FieldError;

fn err(field: &str, message: impl Into<String>) -> FaultError {
    FieldError::new(field, message)
}

/// Largest stall accepted (10 minutes): longer is a partition, not a stall.
pub const MAX_STALL_MS: u64 = 600_000;
/// Largest leak canary per setup (16 MiB).
pub const MAX_LEAK_KIB: u64 = 16 * 1024;
/// Largest setups-per-leak of the fd and thread canaries.
pub const MAX_SETUPS_PER_LEAK: u64 = 1_000_000;
/// Largest CPU canary: 10 ms per request per minute of uptime (each request is capped anyway).
pub const MAX_CPU_CANARY_US: u64 = 10_000;

impl Faults {
    /// Parses a JSON fault set; unknown fields and bad types name the field.
    pub fn from_json(body: &[u8]) -> Result<Faults, FaultError> {
        // serde reads a struct from a JSON array too, field by field in order (`[0.5]` once set
        // `setup_failure_rate`): a fault set is an object, nothing else.
        // The same for the one nested set, `partition`.
        let not_object = |field: &str, what: &str| FaultError {
            field: field.to_owned(),
            message: format!("{what} is a JSON object, e.g. {{\"stall_ms\": 250}}"),
        };
        // Checked on the bytes, not only on a parsed value: a body that is not valid JSON as a
        // whole (`[0.5]0]`) was once read as an array all the same (found by fuzzing).
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(not_object("body", "a fault set"));
        }
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
            && v.get("partition")
                .is_some_and(|p| !(p.is_object() || p.is_null()))
        {
            return Err(not_object("partition", "a partition"));
        }
        let de = &mut serde_json::Deserializer::from_slice(body);
        let f: Faults = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
            // The path names the field, unknown ones included; ".", "?" or an index is the document
            // itself (not an object).
            let path = e.path().to_string();
            let whole = path == "." || path == "?" || path.starts_with('[');
            FaultError {
                field: if whole { "body".to_owned() } else { path },
                message: e.inner().to_string(),
            }
        })?;
        // Nothing may follow the object (`{}garbage` was accepted; found by fuzzing).
        de.end().map_err(|e| FaultError {
            field: "body".to_owned(),
            message: e.to_string(),
        })?;
        f.validate()?;
        Ok(f)
    }

    pub fn validate(&self) -> Result<(), FaultError> {
        for (name, p) in [
            ("setup_failure_rate", self.setup_failure_rate),
            ("request_error_rate", self.request_error_rate),
            ("stream_reset_rate", self.stream_reset_rate),
            ("chunk_drop_rate", self.chunk_drop_rate),
        ] {
            if !(0.0..=1.0).contains(&p) || p.is_nan() {
                return Err(err(name, format!("{p} is not a probability in [0, 1]")));
            }
        }
        if self.stall_ms > MAX_STALL_MS {
            return Err(err("stall_ms", format!("at most {MAX_STALL_MS}")));
        }
        if let Some(ms) = self.forced_discovery_ms
            && !(100..=3_600_000).contains(&ms)
        {
            return Err(err("forced_discovery_ms", "must be within 100..=3600000"));
        }
        if self.leak_canary_kib_per_setup > MAX_LEAK_KIB {
            return Err(err(
                "leak_canary_kib_per_setup",
                format!("at most {MAX_LEAK_KIB}"),
            ));
        }
        for (name, x) in [
            ("fd_canary_setups_per_fd", self.fd_canary_setups_per_fd),
            (
                "thread_canary_setups_per_thread",
                self.thread_canary_setups_per_thread,
            ),
        ] {
            if x > MAX_SETUPS_PER_LEAK {
                return Err(err(name, format!("at most {MAX_SETUPS_PER_LEAK}")));
            }
        }
        if self.cpu_canary_us_per_request_per_min > MAX_CPU_CANARY_US {
            return Err(err(
                "cpu_canary_us_per_request_per_min",
                format!("at most {MAX_CPU_CANARY_US}"),
            ));
        }
        for (i, r) in self.partition.regions.iter().enumerate() {
            validate_region(r).map_err(|e| err(&format!("partition.regions[{i}]"), e))?;
        }
        for (i, p) in self.partition.peers.iter().enumerate() {
            if p.parse::<libp2p_identity::PeerId>().is_err() {
                return Err(err(
                    &format!("partition.peers[{i}]"),
                    format!("{p:?} is not a peer id"),
                ));
            }
        }
        Ok(())
    }

    /// Checks the parts of the set that depend on the node: a partition needs network emulation,
    /// and its regions must be ones the latency matrix knows (a typo would partition nothing).
    pub fn check(&self, netem: Option<&NetemConfig>) -> Result<(), FaultError> {
        self.partition_set(netem).map(|_| ())
    }

    /// The partition as the emulation layer takes it.
    pub fn partition_set(&self, netem: Option<&NetemConfig>) -> Result<PartitionSet, FaultError> {
        let p = &self.partition;
        if p.regions.is_empty() && p.peers.is_empty() {
            return Ok(PartitionSet::default());
        }
        let Some(netem) = netem else {
            return Err(err(
                "partition",
                "this node runs without network emulation (p2p.netem), which partitions need",
            ));
        };
        let known = netem.regions();
        if !known.is_empty() {
            for (i, r) in p.regions.iter().enumerate() {
                if !known.contains(r.as_str()) {
                    return Err(err(
                        &format!("partition.regions[{i}]"),
                        format!(
                            "unknown region {r:?} (the latency matrix has: {})",
                            known.iter().copied().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(PartitionSet {
            regions: p.regions.iter().cloned().collect(),
            peers: p
                .peers
                .iter()
                .map(|s| s.parse().expect("validated"))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_all_off_and_roundtrips() {
        let f = Faults::default();
        assert!(f.validate().is_ok() && f.check(None).is_ok());
        let json = serde_json::to_vec(&f).unwrap();
        assert_eq!(Faults::from_json(&json).unwrap(), f);
        assert_eq!(Faults::from_json(b"{}").unwrap(), f);
    }

    #[test]
    fn errors_name_the_field() {
        let cases: [(&str, &str); 9] = [
            (r#"{"chunk_drop_rate": 2}"#, "chunk_drop_rate"),
            (r#"{"setup_failure_rate": 1.5}"#, "setup_failure_rate"),
            (r#"{"request_error_rate": -0.1}"#, "request_error_rate"),
            (r#"{"stall_ms": 999999999}"#, "stall_ms"),
            (r#"{"forced_discovery_ms": 5}"#, "forced_discovery_ms"),
            (
                r#"{"leak_canary_kib_per_setup": 99999999}"#,
                "leak_canary_kib_per_setup",
            ),
            (
                r#"{"partition": {"peers": ["nope"]}}"#,
                "partition.peers[0]",
            ),
            (r#"{"stal_ms": 5}"#, "stal_ms"),
            (r#"{"partition": {"regons": []}}"#, "partition.regons"),
        ];
        for (body, field) in cases {
            let e = Faults::from_json(body.as_bytes()).unwrap_err();
            assert_eq!(e.field, field, "{body}: {e}");
        }
        let e = Faults::from_json(b"{not json").unwrap_err();
        assert_eq!(e.field, "body");
        // Arrays once set fields by position (`[0.5]` set setup_failure_rate).
        let e = Faults::from_json(br#"{"stall_ms": 5} trailing"#).unwrap_err();
        assert_eq!(e.field, "body", "{e}");
        for (body, field) in [
            ("[0.00000000001344305842439]0]", "body"),
            ("[0.5]", "body"),
            ("  [0, 0, 0]", "body"),
            ("0.5", "body"),
            ("null", "body"),
            (r#"{"partition": [["us"]]}"#, "partition"),
        ] {
            let e = Faults::from_json(body.as_bytes()).unwrap_err();
            assert_eq!(e.field, field, "{body}: {e}");
            assert!(e.message.contains("JSON object"), "{body}: {e}");
        }
        let e = Faults::from_json(br#"{"stall_ms": "slow"}"#).unwrap_err();
        assert_eq!(e.field, "stall_ms", "{e}");
        assert!(e.message.contains("invalid type"), "{e}");
    }

    #[test]
    fn partitions_need_netem_and_known_regions() {
        let f = Faults::from_json(br#"{"partition": {"regions": ["us"]}}"#).unwrap();
        let e = f.check(None).unwrap_err();
        assert_eq!(e.field, "partition", "{e}");

        let mut cfg = crate::netem::NetemConfig::default();
        cfg.latency_ms
            .entry("eu".into())
            .or_default()
            .insert("us".into(), 40);
        let peer = libp2p_identity::PeerId::random();
        let netem = cfg;
        let set = f.partition_set(Some(&netem)).unwrap();
        assert!(set.blocks("us", None) && !set.blocks("eu", None));

        let f = Faults::from_json(br#"{"partition": {"regions": ["us", "ap"]}}"#).unwrap();
        let e = f.check(Some(&netem)).unwrap_err();
        assert_eq!(e.field, "partition.regions[1]", "{e}");
        assert!(e.message.contains("eu, us"), "{e}");

        let body = format!(r#"{{"partition": {{"peers": ["{peer}"]}}}}"#);
        let f = Faults::from_json(body.as_bytes()).unwrap();
        assert!(
            f.partition_set(Some(&netem))
                .unwrap()
                .blocks("eu", Some(&peer))
        );

        let e = Faults::from_json(br#"{"partition": {"regions": ["E U"]}}"#).unwrap_err();
        assert_eq!(e.field, "partition.regions[0]", "{e}");
    }
}
