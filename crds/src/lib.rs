//! The `SyncNetwork` custom resource (group `syncnet.dev`, version `v1alpha1`): one spec that
//! stressnet runs locally and the operator reconciles on Kubernetes. Types, validation with errors
//! that name the field, and the status both backends write.
//!
//! Field names are camelCase (Kubernetes convention). Durations are whole seconds or milliseconds,
//! named by unit, so the schema stays plain integers. Fault actions are a string enum with their
//! parameters as optional sibling fields (no `oneOf`), which keeps the schema structural.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod crd;
mod validate;

pub use crd::{CRD_FILES, crd, crd_yaml, integer_bounds, yaml11_misread, yaml11_safe};
pub use validate::{SpecError, validate_name, validate_network_name, validate_region_name};

pub const GROUP: &str = "syncnet.dev";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "SyncNetwork";
pub const API_VERSION: &str = "syncnet.dev/v1alpha1";

/// Nodes in one network at most (S5 renders 1,000).
pub const MAX_NODES: u32 = 5_000;
/// Bounds the apiserver needs to cost the CEL rules (and that keep a spec reviewable). The
/// `faults[].regions` rule costs about F·G·R·(7 + e) (e: a name comparison): with 64 / 16 / 32
/// its static estimate is ~1.1M of the 10M per-rule limit and a maximal spec's runtime cost
/// ~0.47M of the 1M per-call limit (crds/tests/cel_cost.rs; docs/kubernetes.md).
pub const MAX_REGIONS: usize = 32;
pub const MAX_FAULTS: usize = 64;
/// Regions one partition fault cuts its targets off from.
pub const MAX_FAULT_REGIONS: usize = 16;
/// `metadata.name` becomes the network id, which is part of every protocol id, and the prefix of
/// every object the operator makes (`<name>-<region>`: StatefulSet and Service).
pub const MAX_NAME: usize = 32;
/// Region names: `<network>-<region>` names a StatefulSet, whose pods carry a
/// `controller-revision-hash` label `<set>-<10 chars>` that must fit in 63, so the set name must
/// fit in 52: 32 + 1 + 19.
pub const MAX_REGION_NAME: usize = 19;
/// Longest StatefulSet name whose pods' revision-hash label still fits in 63 characters.
pub const MAX_SET_NAME: usize = 52;

// Cross-field checks the apiserver can make itself are CEL rules (`x-kubernetes-validations`), so
// `kubectl apply` refuses a bad spec before the operator sees it; `SyncNetworkSpec::validate` is
// the complete check both backends run (and the tests keep the two in agreement).
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "syncnet.dev",
    version = "v1alpha1",
    kind = "SyncNetwork",
    namespaced,
    status = "SyncNetworkStatus",
    shortname = "sn",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Regions","type":"integer","jsonPath":".status.regionCount"}"#,
    printcolumn = r#"{"name":"Head","type":"integer","jsonPath":".status.head"}"#,
    printcolumn = r#"{"name":"Max lag","type":"integer","jsonPath":".status.maxLag"}"#,
    printcolumn = r#"{"name":"Verdict","type":"string","jsonPath":".status.verdict"}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.size() <= 32")
        .message("metadata.name: at most 32 characters (it is the network id)"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name: a-z, 0-9 and '-', starting with a letter (it prefixes Service names)")
)]
#[x_kube(
    validation = Rule::new("self.regions.exists(r, r.name == self.producer.region)")
        .message("producer.region: must name one of regions")
        .field_path(".producer.region"),
    validation = Rule::new("self.regions.all(r, self.regions.exists_one(o, o.name == r.name))")
        .message("regions: names must be unique")
        .field_path(".regions"),
    validation = Rule::new(
        "!has(self.faults) || self.faults.all(f, !has(f.target) || !has(f.target.region) || self.regions.exists(r, r.name == f.target.region))"
    )
    .message("faults[].target.region: must name one of regions")
    .field_path(".faults"),
    validation = Rule::new(
        "!has(self.faults) || self.faults.all(f, !has(f.regions) || f.regions.all(x, self.regions.exists(r, r.name == x)))"
    )
    .message("faults[].regions: must name regions of this spec")
    .field_path(".faults"),
    validation = Rule::new("self.regions.map(r, r.replicas).sum() <= 5000")
        .message("regions: at most 5000 nodes in total")
        .field_path(".regions"),
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncNetworkSpec {
    #[serde(default)]
    pub node: NodeSpec,
    #[schemars(length(min = 1, max = 32))]
    pub regions: Vec<RegionSpec>,
    #[serde(default)]
    pub latency: LatencySpec,
    #[serde(default)]
    pub bandwidth: BandwidthSpec,
    pub producer: ProducerSpec,
    #[serde(default)]
    pub sync: SyncSpec,
    #[serde(default)]
    pub broadcast: BroadcastSpec,
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub faults: Vec<FaultSpec>,
    pub soak: SoakSpec,
    #[serde(default)]
    pub verdicts: VerdictSpec,
    /// Settings only the operator uses (ignored by local runs).
    #[serde(default)]
    pub kubernetes: KubernetesSpec,
}

/// How a partition fault is enforced on a cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PartitionMode {
    /// The node's own partition fault (control API): works on any cluster.
    #[default]
    Node,
    /// NetworkPolicy objects between the targets and the cut-off regions: needs a CNI that
    /// enforces NetworkPolicy (Calico, Cilium, ...); on others the partition silently does nothing.
    NetworkPolicy,
}

/// Where region latency and upload bandwidth are emulated on a cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LatencyMode {
    /// In the node, per peer region (exact matrix; what local runs do).
    #[default]
    Node,
    /// `tc netem` on the pod's interface, set by an init container with NET_ADMIN: one delay per
    /// pod (its region's mean to the others), not per destination.
    TcNetem,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesSpec {
    #[serde(default)]
    pub partitions: PartitionMode,
    #[serde(default)]
    pub latency: LatencyMode,
    /// Image with `tc` (iproute2) for the netem init container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netem_image: Option<String>,
    /// The syncnode container's resources (default: requests 100m / 128Mi, memory limit 1Gi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node pods: secrets for pulling a private node image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Node pods: schedule only on nodes with these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 32))]
    pub node_selector: BTreeMap<String, String>,
    /// Node pods: tolerated taints (e.g. a dedicated soak node pool).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,
    /// Node pods: affinity and anti-affinity (e.g. spread a region over zones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Node pods: priority class (a soak that must not be preempted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub priority_class_name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// Container image of syncnode (Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Path of the syncnode binary (local runs; default: the one next to stressnet, else built).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegionSpec {
    /// 1-19 of a-z, 0-9, '-' (a label value, and part of object names).
    #[schemars(
        length(min = 1, max = 19),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    #[schemars(range(min = 1, max = 5000))]
    pub replicas: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LatencySpec {
    /// One-way latency in ms, `matrixMs[from][to]`. A missing `[b][a]` is `[a][b]` (write a
    /// symmetric matrix once); unless `directed`, giving both with different values is an error.
    #[serde(default)]
    pub matrix_ms: BTreeMap<String, BTreeMap<String, u32>>,
    /// `[a][b]` and `[b][a]` may differ (asymmetric routes).
    #[serde(default)]
    pub directed: bool,
    #[serde(default)]
    pub jitter_ms: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BandwidthSpec {
    /// Upload per node in Mbit/s; absent = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_mbit: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProducerSpec {
    #[schemars(length(max = 19))]
    pub region: String,
    pub block_interval_ms: u64,
    pub payload_bytes: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(
    validation = Rule::new("!has(self.streamsLow) || !has(self.streamsHigh) || self.streamsLow <= self.streamsHigh")
        .message("streamsLow: must not exceed streamsHigh")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncSpec {
    /// Sync streams each node keeps (the stream manager's soft low / high thresholds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams_low: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams_high: Option<u32>,
    /// Discovery interval in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_interval_ms: Option<u64>,
}

/// How blocks are broadcast: the node config's own enum (`broadcast.mode`).
pub use syncnet_proto::config::BroadcastMode;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BroadcastSpec {
    #[serde(default)]
    pub mode: BroadcastMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_shards: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parity_shards: Option<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FaultAction {
    /// SIGKILL the targets, restart them after `durationSecs`.
    KillRestart,
    /// Cut the targets off from `regions` (or, without regions, from everyone else).
    Partition,
    /// Sync requests the targets serve fail with probability `rate`.
    ErrorRate,
    /// Sync streams of the targets are reset with probability `rate` per request.
    StreamReset,
    /// The targets' outbound sync stream setups fail with probability `rate`.
    SetupFailure,
    /// Every reply the targets serve is delayed by `ms`.
    Stall,
    /// Blocks the targets serve carry a flipped payload byte (receivers reject and penalise).
    CorruptBlocks,
    /// IDA chunks the targets receive are dropped with probability `rate`.
    ChunkDrop,
    /// Every IDA chunk the targets send has a flipped byte (receivers reject it by its proof).
    CorruptChunks,
    /// Discovery runs every `ms` whatever the stream count.
    DiscoveryPeriod,
    /// CANARY: the targets keep `kibPerSetup` KiB per stream setup forever.
    LeakCanary,
    /// CANARY: the original discovery/stream storm.
    StormCanary,
    /// CANARY: the targets keep one open file descriptor per `setupsPerLeak` stream setups.
    FdCanary,
    /// CANARY: the targets keep one parked thread per `setupsPerLeak` stream setups.
    ThreadCanary,
    /// CANARY: every request the targets serve burns `usPerRequestPerMinute` µs of CPU per minute
    /// of the process's uptime.
    CpuCanary,
}

impl FaultAction {
    pub fn label(self) -> &'static str {
        match self {
            FaultAction::KillRestart => "kill-restart",
            FaultAction::Partition => "partition",
            FaultAction::ErrorRate => "error-rate",
            FaultAction::StreamReset => "stream-reset",
            FaultAction::SetupFailure => "setup-failure",
            FaultAction::Stall => "stall",
            FaultAction::CorruptBlocks => "corrupt-blocks",
            FaultAction::ChunkDrop => "chunk-drop",
            FaultAction::CorruptChunks => "corrupt-chunks",
            FaultAction::DiscoveryPeriod => "discovery-period",
            FaultAction::LeakCanary => "leak-canary",
            FaultAction::StormCanary => "storm-canary",
            FaultAction::FdCanary => "fd-canary",
            FaultAction::ThreadCanary => "thread-canary",
            FaultAction::CpuCanary => "cpu-canary",
        }
    }

    /// The one parameter the action takes besides its window and targets, if any: the one place
    /// that says which action reads which field (validation checks it is given, and that no
    /// other is).
    pub fn parameter(self) -> Option<FaultParam> {
        use FaultAction::*;
        match self {
            ErrorRate | StreamReset | SetupFailure | ChunkDrop => Some(FaultParam::Rate),
            Stall | DiscoveryPeriod => Some(FaultParam::Ms),
            LeakCanary => Some(FaultParam::KibPerSetup),
            FdCanary | ThreadCanary => Some(FaultParam::SetupsPerLeak),
            CpuCanary => Some(FaultParam::UsPerRequestPerMinute),
            Partition => Some(FaultParam::Regions),
            KillRestart | StormCanary | CorruptBlocks | CorruptChunks => None,
        }
    }

    /// A planted defect, left out of a control run (`stressnet run --no-canaries`).
    pub fn is_canary(self) -> bool {
        matches!(
            self,
            FaultAction::LeakCanary
                | FaultAction::StormCanary
                | FaultAction::FdCanary
                | FaultAction::ThreadCanary
                | FaultAction::CpuCanary
        )
    }
}

/// A fault's parameter field ([`FaultAction::parameter`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultParam {
    Rate,
    Ms,
    KibPerSetup,
    SetupsPerLeak,
    UsPerRequestPerMinute,
    /// Optional: a partition without regions cuts the targets off from everyone else.
    Regions,
}

impl FaultParam {
    pub const ALL: [FaultParam; 6] = [
        FaultParam::Rate,
        FaultParam::Ms,
        FaultParam::KibPerSetup,
        FaultParam::SetupsPerLeak,
        FaultParam::UsPerRequestPerMinute,
        FaultParam::Regions,
    ];

    /// The field's name in the spec.
    pub fn field(self) -> &'static str {
        match self {
            FaultParam::Rate => "rate",
            FaultParam::Ms => "ms",
            FaultParam::KibPerSetup => "kibPerSetup",
            FaultParam::SetupsPerLeak => "setupsPerLeak",
            FaultParam::UsPerRequestPerMinute => "usPerRequestPerMinute",
            FaultParam::Regions => "regions",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetSpec {
    /// Only nodes of this region (default: all regions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 19))]
    pub region: Option<String>,
    /// This many of them...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// ...or this fraction (0 < f <= 1, rounded up); neither = all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// Whether the producer may be picked (default: no).
    #[serde(default)]
    pub include_producer: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(
    validation = Rule::new("has(self.atSecs) != has(self.everySecs)")
        .message("give exactly one of atSecs and everySecs"),
    validation = Rule::new("!has(self.everySecs) || self.durationSecs < self.everySecs")
        .message("durationSecs: must be below everySecs")
        .field_path(".durationSecs"),
    validation = Rule::new("!(has(self.target.count) && has(self.target.fraction))")
        .message("target: give count or fraction, not both")
        .field_path(".target"),
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultSpec {
    /// Shown in reports and events.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Once, this many seconds after the start...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_secs: Option<u64>,
    /// ...or every this many seconds (first after one period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_secs: Option<u64>,
    /// How long the fault lasts (for kill-restart: the downtime).
    pub duration_secs: u64,
    #[serde(default)]
    pub target: TargetSpec,
    pub action: FaultAction,
    /// partition: the regions cut off from the targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 19)))]
    pub regions: Vec<String>,
    /// error-rate, stream-reset, setup-failure, chunk-drop: probability 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// stall, discovery-period: milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
    /// leak-canary: KiB kept per stream setup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 16384))]
    pub kib_per_setup: Option<u64>,
    /// fd-canary, thread-canary: stream setups per leaked fd or thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub setups_per_leak: Option<u64>,
    /// cpu-canary: microseconds of CPU per served request and minute of uptime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub us_per_request_per_minute: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(
    validation = Rule::new("self.warmupSecs < self.durationSecs")
        .message("warmupSecs: must be below durationSecs")
        .field_path(".warmupSecs")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SoakSpec {
    #[schemars(range(min = 1))]
    pub duration_secs: u64,
    /// Left out of leak statistics.
    #[serde(default)]
    pub warmup_secs: u64,
    #[serde(default = "default_scrape")]
    pub scrape_interval_secs: u64,
}

fn default_scrape() -> u64 {
    5
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct VerdictSpec {
    /// RSS slope (MiB per hour) above which a significant, lasting trend is a leak.
    pub leak_slope_mib_per_hour: f64,
    /// Open file descriptors per hour above which a significant, lasting trend is a leak.
    pub fds_per_hour: f64,
    /// Threads per hour above which a significant, lasting trend is a leak.
    pub threads_per_hour: f64,
    /// Growth of CPU use (cores per hour) above which a significant, lasting trend fails.
    pub cpu_cores_per_hour: f64,
    /// Growth of CPU per unit of work (milliseconds of CPU per request served, per hour) above
    /// which a significant, lasting trend fails: a node whose every request costs more the longer
    /// it runs (the original "CPU grows to 100%").
    pub cpu_ms_per_request_per_hour: f64,
    /// A node's mean CPU use (cores) after the warm-up above which it fails (`cpu:<node>`).
    pub cpu_cores: f64,
    /// Significance of a trend (Mann–Kendall, autocorrelation-corrected).
    pub leak_p: f64,
    /// Median window for the leak statistics, seconds.
    pub leak_bucket_secs: u64,
    /// Seconds left out of the leak statistics after each restart of a node (the soak's
    /// `warmupSecs` applies to its first start).
    #[schemars(range(max = 86400))]
    pub restart_warmup_secs: u64,
    /// After a fault ends, every node within this many blocks of the head...
    pub catch_up_blocks: u64,
    /// ...within this many seconds.
    pub catch_up_secs: u64,
    /// Stream setups per node and minute above this are a storm.
    pub setups_per_minute: f64,
    /// Production rates and limits: the report projects each node's memory growth to them
    /// ("at production rates this node reaches its memory limit in N h").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production: Option<ProductionSpec>,
}

/// What a node sees in production, per hour, and where it dies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProductionSpec {
    /// Stream setups per node and hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0e9))]
    pub setups_per_hour: Option<f64>,
    /// Sync requests served per node and hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0e9))]
    pub requests_per_hour: Option<f64>,
    /// Blocks per hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0e9))]
    pub blocks_per_hour: Option<f64>,
    /// The node's memory limit (e.g. the pod's), MiB.
    #[serde(
        default,
        rename = "memoryLimitMiB",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1.0, max = 1.0e9))]
    pub memory_limit_mib: Option<f64>,
}

impl Default for VerdictSpec {
    fn default() -> Self {
        VerdictSpec {
            leak_slope_mib_per_hour: 10.0,
            fds_per_hour: 10.0,
            threads_per_hour: 5.0,
            cpu_cores_per_hour: 0.05,
            cpu_ms_per_request_per_hour: 60.0,
            cpu_cores: 0.1,
            leak_p: 0.01,
            leak_bucket_secs: 60,
            restart_warmup_secs: 60,
            catch_up_blocks: 2,
            catch_up_secs: 30,
            setups_per_minute: 60.0,
            production: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    #[default]
    Pending,
    Running,
    Completed,
    Failed,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionStatus {
    pub name: String,
    pub ready: u32,
    pub replicas: u32,
    pub head: u64,
    pub max_lag: u64,
    /// Leak verdicts that failed in this region, `<node>:<metric>` (at most 16 listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaks: Vec<String>,
    /// Nodes of this region judged to storm (at most 16 listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storms: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncNetworkStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: Phase,
    /// When the soak started (RFC 3339): the fault schedule and the verdicts count from here, also
    /// across operator restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// Fault windows begun so far, of `faultWindows` in the schedule.
    #[serde(default)]
    pub faults_begun: u32,
    #[serde(default)]
    pub fault_windows: u32,
    #[serde(default)]
    pub region_count: u32,
    #[serde(default)]
    pub head: u64,
    #[serde(default)]
    pub max_lag: u64,
    /// `pass` or `fail: <verdicts>` once decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    #[serde(default)]
    pub regions: Vec<RegionStatus>,
    /// Ready, Progressing, SyncStalled, LeakSuspected, Completed.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

// The unit tests (`tests.rs`, `use super::*`) walk the generated schema with these.
#[cfg(test)]
mod tests;
