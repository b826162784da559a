//! Node and network configuration (YAML). Unknown fields are errors; every validation error names the
//! field it is about, as a dotted path.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod broadcast;
mod p2p;

pub use broadcast::{BroadcastConfig, BroadcastMode, GossipConfig, IdaConfig, MIN_PACE};
pub use p2p::{P2pConfig, peer_of, split_peer};

use crate::chain::{ChainSpec, H256};
pub use crate::downloader::DownloaderConfig;
use crate::error::{FieldError, check};
pub use crate::producer::PayloadSize;

/// Largest payload a producer may be configured for. Keeps one block well under the wire frame cap.
pub const MAX_PAYLOAD_BYTES: u32 = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

impl ConfigError {
    fn new(file: &Path, message: impl fmt::Display) -> Self {
        ConfigError {
            file: file.display().to_string(),
            message: message.to_string(),
        }
    }
}

/// Shared by every node of a network: written by `syncnode genesis`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Lowercase letters, digits and '-', 1..=32 characters; part of every protocol id.
    pub network_id: String,
    pub genesis_timestamp_ms: u64,
    /// Hex ed25519 public key of the network's only block producer.
    pub producer_public_key: H256,
    /// Derived from the three fields above; stored so a hand-edited file is caught.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genesis_hash: Option<H256>,
}

impl NetworkConfig {
    pub fn new(
        network_id: &str,
        genesis_timestamp_ms: u64,
        producer: H256,
    ) -> Result<Self, FieldError> {
        let mut cfg = NetworkConfig {
            network_id: network_id.to_owned(),
            genesis_timestamp_ms,
            producer_public_key: producer,
            genesis_hash: None,
        };
        cfg.genesis_hash = Some(cfg.chain_spec()?.genesis_hash());
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let cfg: NetworkConfig = parse_yaml(path)?;
        cfg.chain_spec().map_err(|e| ConfigError::new(path, e))?;
        Ok(cfg)
    }

    /// Validates and builds the chain spec.
    pub fn chain_spec(&self) -> Result<ChainSpec, FieldError> {
        validate_network_id(&self.network_id).map_err(|e| FieldError::new("network_id", e))?;
        let spec = ChainSpec::new(
            &self.network_id,
            &self.producer_public_key,
            self.genesis_timestamp_ms,
        )
        .map_err(|_| FieldError::new("producer_public_key", "not a valid ed25519 public key"))?;
        if let Some(expected) = self.genesis_hash
            && expected != spec.genesis_hash()
        {
            return Err(FieldError::new(
                "genesis_hash",
                format!(
                    "{expected} does not match the other fields (they give {}); \
                     regenerate the file with `syncnode genesis`",
                    spec.genesis_hash()
                ),
            ));
        }
        Ok(spec)
    }
}

pub fn validate_network_id(id: &str) -> Result<(), String> {
    let ok_chars = id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if id.is_empty() || id.len() > 32 || !ok_chars {
        return Err(format!(
            "{id:?} must be 1-32 characters of a-z, 0-9 and '-' (it is part of protocol ids)"
        ));
    }
    Ok(())
}

/// Name of the file in the data dir where a running node writes the addresses it bound.
pub const ADDRS_FILE: &str = "syncnode.addrs.json";

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct BoundAddrs {
    pub pid: u32,
    pub metrics: SocketAddr,
    pub peer_id: String,
    /// p2p listen addresses, each ending in /p2p/<peer id> (usable as bootnodes).
    pub p2p: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Path of the network config; relative paths are relative to this file.
    pub network_file: PathBuf,
    /// Where the store and runtime files live; relative to this file when relative.
    pub data_dir: PathBuf,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Present on the network's producer only.
    #[serde(default)]
    pub producer: Option<ProducerConfig>,
    #[serde(default)]
    pub p2p: P2pConfig,
    #[serde(default)]
    pub sync: DownloaderConfig,
    /// How new blocks are pushed to every node (IDA gossip by default; sync catches up the rest).
    #[serde(default)]
    pub broadcast: BroadcastConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP server for /metrics, /healthz and the control API (/faults, /status).
    /// Port 0 picks a free port; the bound address is written to `<data_dir>/syncnode.addrs.json`.
    /// Never expose it publicly.
    pub listen: SocketAddr,
    /// File holding a bearer token that `PUT /faults` must present (`SYNCNODE_CONTROL_TOKEN` also
    /// works). Relative to the config file.
    #[serde(default)]
    pub control_token_file: Option<PathBuf>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "127.0.0.1:9100".parse().unwrap(),
            control_token_file: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// tracing filter directives (RUST_LOG syntax); RUST_LOG, when set, wins.
    #[serde(default = "default_filter")]
    pub filter: String,
}

fn default_filter() -> String {
    "info".to_owned()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            filter: default_filter(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerConfig {
    /// File written by `syncnode keygen --kind producer`; relative to this file when relative.
    pub key_file: PathBuf,
    pub interval_ms: u64,
    /// A fixed size (`payload_bytes: 16384`) or a range (`payload_bytes: {min: 1024, max: 65536}`).
    pub payload_bytes: PayloadSize,
    /// Seed of the deterministic payload generator: the same seed gives the same blocks.
    #[serde(default)]
    pub seed: u64,
}

/// Command-line overrides of config fields.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    pub log_format: Option<LogFormat>,
    pub log_filter: Option<String>,
}

/// A loaded, validated node config with paths resolved.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub node: NodeConfig,
    pub network: NetworkConfig,
    pub spec: ChainSpec,
}

impl NodeConfig {
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Loaded, ConfigError> {
        let mut node: NodeConfig = parse_yaml(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        node.network_file = base.join(&node.network_file);
        node.data_dir = base.join(&node.data_dir);
        if let Some(p) = &mut node.producer {
            p.key_file = base.join(&p.key_file);
        }
        if let Some(k) = &mut node.p2p.key_file {
            *k = base.join(&*k);
        }
        if let Some(t) = &mut node.metrics.control_token_file {
            *t = base.join(&*t);
        }
        if let Some(d) = &overrides.data_dir {
            node.data_dir = d.clone();
        }
        if let Some(a) = overrides.metrics_listen {
            node.metrics.listen = a;
        }
        if let Some(f) = overrides.log_format {
            node.log.format = f;
        }
        if let Some(f) = &overrides.log_filter {
            node.log.filter = f.clone();
        }
        node.validate().map_err(|e| ConfigError::new(path, e))?;
        let network = NetworkConfig::load(&node.network_file).map_err(|e| {
            ConfigError::new(path, format!("network_file: {}: {}", e.file, e.message))
        })?;
        let spec = network
            .chain_spec()
            .map_err(|e| ConfigError::new(&node.network_file, e))?;
        Ok(Loaded {
            node,
            network,
            spec,
        })
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        check(
            self.data_dir.as_os_str().is_empty(),
            "data_dir",
            "must not be empty",
        )?;
        if let Some(p) = &self.producer {
            check(
                p.interval_ms == 0 || p.interval_ms > 3_600_000,
                "producer.interval_ms",
                format!("{} is outside 1..=3600000", p.interval_ms),
            )?;
            let s = p.payload_bytes;
            check(
                s.min > s.max,
                "producer.payload_bytes",
                format!("min {} is greater than max {}", s.min, s.max),
            )?;
            check(
                s.max > MAX_PAYLOAD_BYTES,
                "producer.payload_bytes",
                format!("{} exceeds the limit of {MAX_PAYLOAD_BYTES}", s.max),
            )?;
        }
        check(
            self.log
                .filter
                .parse::<tracing_subscriber::EnvFilter>()
                .is_err(),
            "log.filter",
            format!("{:?} is not a valid filter", self.log.filter),
        )?;
        self.p2p.validate().map_err(|e| e.within("p2p"))?;
        self.sync.validate().map_err(|e| e.within("sync"))?;
        check(
            self.sync.max_batch_blocks > self.p2p.max_blocks_per_request,
            "sync.max_batch_blocks",
            "must not exceed p2p.max_blocks_per_request",
        )?;
        self.broadcast
            .validate()
            .map_err(|e| e.within("broadcast"))?;
        check(
            self.broadcast.tip_grace() >= self.sync.watchdog,
            "broadcast.sync_grace",
            "must be below sync.watchdog",
        )?;
        check(
            self.producer.as_ref().is_some_and(|p| {
                self.broadcast.mode == BroadcastMode::Gossipsub
                    && p.payload_bytes.max as usize + 4096
                        > self.broadcast.gossipsub.max_transmit_bytes
            }),
            "broadcast.gossipsub.max_transmit_bytes",
            "must exceed producer.payload_bytes by 4 KiB",
        )
    }

    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("chain.redb")
    }

    pub fn node_key_path(&self) -> PathBuf {
        self.p2p
            .key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("node.key"))
    }
}

fn parse_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(path, e))?;
    serde_yaml::from_str(&text).map_err(|e| ConfigError::new(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testkit::key;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Files {
            let dir = tempfile::tempdir().unwrap();
            let producer = H256(key(1).verifying_key().to_bytes());
            let net = NetworkConfig::new("testnet", 1_700_000_000_000, producer).unwrap();
            std::fs::write(
                dir.path().join("network.yaml"),
                serde_yaml::to_string(&net).unwrap(),
            )
            .unwrap();
            Files { dir }
        }

        fn node(&self, yaml: &str) -> Result<Loaded, ConfigError> {
            let p = self.dir.path().join("node.yaml");
            std::fs::write(&p, yaml).unwrap();
            NodeConfig::load(&p, &Overrides::default())
        }
    }

    const GOOD: &str = "network_file: network.yaml\ndata_dir: data\nproducer:\n  key_file: p.key\n  interval_ms: 100\n  payload_bytes: 1024\n";

    fn err(r: Result<Loaded, ConfigError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn good_config_loads_and_resolves_paths() {
        let f = Files::new();
        let l = f.node(GOOD).unwrap();
        assert_eq!(l.node.data_dir, f.dir.path().join("data"));
        let p = l.node.producer.unwrap();
        assert_eq!(p.key_file, f.dir.path().join("p.key"));
        assert_eq!(p.payload_bytes, PayloadSize::fixed(1024));
        assert_eq!(l.spec.network_id, "testnet");
    }

    #[test]
    fn payload_range_is_accepted() {
        let f = Files::new();
        let yaml = GOOD.replace("payload_bytes: 1024", "payload_bytes: {min: 10, max: 20}");
        let p = f.node(&yaml).unwrap().node.producer.unwrap();
        assert_eq!(p.payload_bytes, PayloadSize { min: 10, max: 20 });
    }

    #[test]
    fn unknown_field_is_named() {
        let f = Files::new();
        let e = err(f.node(&GOOD.replace("interval_ms", "intervl_ms")));
        assert!(e.contains("producer") && e.contains("intervl_ms"), "{e}");
        let e = err(f.node(&format!("{GOOD}bogus: 1\n")));
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn invalid_values_are_named() {
        let f = Files::new();
        let cases = [
            ("interval_ms: 100", "interval_ms: 0", "producer.interval_ms"),
            (
                "payload_bytes: 1024",
                "payload_bytes: {min: 5, max: 1}",
                "producer.payload_bytes",
            ),
            (
                "payload_bytes: 1024",
                "payload_bytes: 999999999",
                "producer.payload_bytes",
            ),
            ("payload_bytes: 1024", "payload_bytes: -3", "negative"),
            (
                "data_dir: data",
                "data_dir: data\nmetrics: {listen: nope}",
                "metrics.listen",
            ),
            (
                "data_dir: data",
                "data_dir: data\nlog: {filter: '[[['}",
                "log.filter",
            ),
            (
                "data_dir: data",
                "data_dir: data\np2p: {streams: {soft_low: 9, high: 3}}",
                "p2p.streams",
            ),
            (
                "data_dir: data",
                "data_dir: data\np2p: {bootnodes: ['/ip4/1.2.3.4/tcp/1']}",
                "p2p.bootnodes[0]",
            ),
            (
                "data_dir: data",
                "data_dir: data\np2p: {streams: {sof_low: 1}}",
                "sof_low",
            ),
            (
                "data_dir: data",
                "data_dir: data\nsync: {max_in_flight: 0}",
                "sync.max_in_flight:",
            ),
            (
                "data_dir: data",
                "data_dir: data\nsync: {max_batch_blocks: 5000}",
                "sync.max_batch_blocks",
            ),
            (
                "data_dir: data",
                "data_dir: data\nbroadcast: {mode: flood}",
                "broadcast.mode",
            ),
            (
                "data_dir: data",
                "data_dir: data\nbroadcast: {ida: {params: {data_shards: 0, parity_shards: 4}}}",
                "broadcast.ida.params.data_shards:",
            ),
            (
                "data_dir: data",
                "data_dir: data\nbroadcast: {gossipsub: {mesh_n: 2}}",
                "broadcast.gossipsub.mesh_n:",
            ),
            (
                "data_dir: data",
                "data_dir: data\nbroadcast: {sync_grace: 60000}",
                "broadcast.sync_grace",
            ),
            (
                "data_dir: data",
                "data_dir: data\nbroadcast: {mode: gossipsub, gossipsub: {max_transmit_bytes: 2000}}",
                "broadcast.gossipsub.max_transmit_bytes",
            ),
        ];
        for (from, to, needle) in cases {
            let e = err(f.node(&GOOD.replace(from, to)));
            assert!(e.contains(needle), "{to}: {e}");
        }
    }

    #[test]
    fn tampered_network_file_is_caught() {
        let f = Files::new();
        let p = f.dir.path().join("network.yaml");
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("testnet", "othernet")).unwrap();
        let e = err(f.node(GOOD));
        assert!(
            e.contains("network_file") && e.contains("genesis_hash"),
            "{e}"
        );
        std::fs::write(&p, text.replace("testnet", "Bad Net")).unwrap();
        let e = err(f.node(GOOD));
        assert!(e.contains("network_id"), "{e}");
    }

    #[test]
    fn overrides_apply_before_validation() {
        let f = Files::new();
        let p = f.dir.path().join("node.yaml");
        std::fs::write(&p, GOOD).unwrap();
        let o = Overrides {
            data_dir: Some("/tmp/elsewhere".into()),
            log_filter: Some("not a [filter".into()),
            ..Default::default()
        };
        let e = NodeConfig::load(&p, &o).unwrap_err().to_string();
        assert!(e.contains("log.filter"), "{e}");
        let o = Overrides {
            data_dir: Some("/tmp/elsewhere".into()),
            ..Default::default()
        };
        assert_eq!(
            NodeConfig::load(&p, &o).unwrap().node.data_dir,
            Path::new("/tmp/elsewhere")
        );
    }
}
