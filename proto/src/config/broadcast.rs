//! Broadcast configuration (`broadcast:` in the node config): the mode, IDA gossip and the
//! gossipsub baseline.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{FieldError, check};
use crate::ida::IdaParams;
use crate::ida::assembler::AssemblerConfig;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BroadcastMode {
    /// Reed-Solomon chunks with Merkle proofs under the signed header (RapidChain's IDA gossip).
    #[default]
    Ida,
    /// Whole blocks over libp2p gossipsub (the baseline IDA is measured against).
    Gossipsub,
    /// No push: blocks travel by sync only.
    Off,
}

impl BroadcastMode {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            BroadcastMode::Ida => "ida",
            BroadcastMode::Gossipsub => "gossipsub",
            BroadcastMode::Off => "off",
        }
    }
}

/// The custom resource's schema (`spec.broadcast.mode`): a plain string enum. Written out because
/// the derive would turn the variants' doc comments into a `oneOf`, which a CRD schema must not
/// have.
#[cfg(feature = "schemars")]
impl schemars::JsonSchema for BroadcastMode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "BroadcastMode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "enum": ["ida", "gossipsub", "off"]
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BroadcastConfig {
    pub mode: BroadcastMode,
    pub ida: IdaConfig,
    pub gossipsub: GossipConfig,
    /// While a mode is on, sync leaves a block announced less than this long ago (in the short
    /// range) to broadcast before fetching it (`DownloaderConfig::tip_grace`).
    #[serde(with = "crate::util::millis")]
    pub sync_grace: Duration,
}

impl Default for BroadcastConfig {
    fn default() -> Self {
        BroadcastConfig {
            mode: BroadcastMode::default(),
            ida: IdaConfig::default(),
            gossipsub: GossipConfig::default(),
            sync_grace: Duration::from_millis(1500),
        }
    }
}

impl BroadcastConfig {
    /// Errors name the field below `broadcast`.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.ida.validate().map_err(|e| e.within("ida"))?;
        self.gossipsub.validate().map_err(|e| e.within("gossipsub"))
    }

    /// The sync grace that applies: none without a broadcast mode.
    pub fn tip_grace(&self) -> Duration {
        if self.mode == BroadcastMode::Off {
            Duration::ZERO
        } else {
            self.sync_grace
        }
    }

    /// IDA parameters the producer encodes with (None unless the mode is IDA).
    pub fn ida_params(&self) -> Option<IdaParams> {
        (self.mode == BroadcastMode::Ida).then_some(self.ida.params)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdaConfig {
    pub params: IdaParams,
    pub assembler: AssemblerConfig,
    /// Frames queued per neighbour before new ones are dropped (repair covers the loss).
    pub queue_frames: usize,
    /// Bytes of chunk frames waiting for one neighbour (queued or about to be sent) before new
    /// ones are dropped.
    pub queue_bytes: usize,
    /// The same for all neighbours together.
    pub queue_bytes_total: usize,
    /// Neighbours asked at once when a block stops making progress.
    pub repair_fanout: usize,
    /// Neighbours each new chunk is forwarded to; 0 = all but the sender (RapidChain). S2: 3 is
    /// faster than all (less duplicate upload) and 2 leaves more stragglers to repair.
    pub forward_fanout: usize,
    /// Chunks of one block forwarded to one neighbour at most; 0 = no limit (RapidChain).
    pub push_budget: usize,
    /// Pace IDA frames at this many bytes/s (set it to the uplink's rate); 0 = unpaced.
    pub upload_bytes_per_sec: u64,
}

impl Default for IdaConfig {
    fn default() -> Self {
        IdaConfig {
            params: IdaParams::default(),
            assembler: AssemblerConfig::default(),
            queue_frames: 1024,
            queue_bytes: 4 * 1024 * 1024,
            queue_bytes_total: 32 * 1024 * 1024,
            repair_fanout: 2,
            forward_fanout: 3,
            push_budget: 0,
            upload_bytes_per_sec: 0,
        }
    }
}

impl IdaConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        self.params.validate().map_err(|e| e.within("params"))?;
        self.assembler
            .validate()
            .map_err(|e| e.within("assembler"))?;
        check(self.queue_frames == 0, "queue_frames", "must be > 0")?;
        check(
            self.queue_bytes < 64 * 1024,
            "queue_bytes",
            "must be at least 64 KiB (a chunk frame)",
        )?;
        check(
            self.queue_bytes_total < self.queue_bytes,
            "queue_bytes_total",
            "must be at least queue_bytes",
        )?;
        check(self.repair_fanout == 0, "repair_fanout", "must be > 0")?;
        check(
            self.upload_bytes_per_sec != 0
                && !(MIN_PACE..=1 << 40).contains(&self.upload_bytes_per_sec),
            "upload_bytes_per_sec",
            "0 (unpaced) or within 64 KiB/s..=1 TiB/s",
        )
    }
}

/// Slowest pacing accepted (bytes/s); below it the limiter's 64 KiB burst would dominate.
pub const MIN_PACE: u64 = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GossipConfig {
    /// Target mesh degree D (gossipsub's default, 6, is for small messages; 8 = IDA's neighbours).
    pub mesh_n: usize,
    pub mesh_n_low: usize,
    pub mesh_n_high: usize,
    /// Largest message (a whole block plus framing).
    pub max_transmit_bytes: usize,
    pub heartbeat_ms: u64,
    /// How long a publish or forward may wait in a connection's queue before gossipsub drops it
    /// (its defaults, 5 s and 1 s, drop large blocks on slow links).
    pub queue_ms: u64,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            mesh_n: 8,
            mesh_n_low: 6,
            mesh_n_high: 12,
            max_transmit_bytes: 10 * 1024 * 1024,
            heartbeat_ms: 1000,
            queue_ms: 30_000,
        }
    }
}

impl GossipConfig {
    /// gossipsub's own builder checks more when the p2p layer starts (`p2p::gossip::build`).
    pub fn validate(&self) -> Result<(), FieldError> {
        check(self.heartbeat_ms == 0, "heartbeat_ms", "must be > 0")?;
        check(self.queue_ms == 0, "queue_ms", "must be > 0")?;
        // gossipsub 0.50 checks these only for per-topic settings, not for the defaults used here.
        check(
            !(1 <= self.mesh_n_low
                && self.mesh_n_low <= self.mesh_n
                && self.mesh_n <= self.mesh_n_high),
            "mesh_n",
            format!(
                "needs 1 <= mesh_n_low ({}) <= mesh_n ({}) <= mesh_n_high ({})",
                self.mesh_n_low, self.mesh_n, self.mesh_n_high
            ),
        )?;
        check(
            self.max_transmit_bytes < 1024,
            "max_transmit_bytes",
            "at least 1024",
        )
    }
}
