//! The p2p layer's configuration (`p2p:` in the node config).

use std::time::Duration;

use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};
use serde::{Deserialize, Serialize};

use super::broadcast::GossipConfig;
use crate::error::{FieldError, check};
use crate::netem::{NetemConfig, validate_region};
use crate::peers::{AdmissionConfig, ReputationConfig};
use crate::ratelimit::RateLimitConfig;
use crate::requests::RequestConfig;
use crate::streams::StreamConfig;
use crate::wire;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct P2pConfig {
    /// Multiaddrs to listen on.
    pub listen: Vec<Multiaddr>,
    /// Multiaddrs of bootnodes, each ending in `/p2p/<peer id>`.
    pub bootnodes: Vec<Multiaddr>,
    /// Node identity key (`syncnode keygen --kind node`); default `<data_dir>/node.key`, created
    /// on first start.
    pub key_file: Option<std::path::PathBuf>,
    pub streams: StreamConfig,
    pub requests: RequestConfig,
    pub rate_limit: RateLimitConfig,
    /// Offence scores and bans (docs/security.md).
    pub reputation: ReputationConfig,
    /// Connection slots, per-IP caps, eviction of idle connections, pending handshakes.
    pub admission: AdmissionConfig,
    pub max_frame_bytes: usize,
    pub max_blocks_per_request: u32,
    pub max_bytes_per_response: u32,
    pub max_connections: usize,
    /// Bytes all replies being built or waiting to be written may hold (docs/security.md).
    pub serve_budget_bytes: u64,
    /// Bytes one stream's replies may hold; a stream that keeps it full past
    /// `write_stall_timeout` is a slow reader: dropped and penalised.
    pub stream_serve_budget_bytes: u64,
    /// A write that makes no progress for this long (the peer does not read) drops the stream.
    #[serde(with = "crate::util::millis")]
    pub write_stall_timeout: Duration,
    /// A frame in progress must complete within this plus 1 s per MiB it declares.
    #[serde(with = "crate::util::millis")]
    pub frame_timeout: Duration,
    /// Sync streams in their handshake at once, all peers together; more are dropped at once.
    pub max_pending_handshakes: usize,
    /// libp2p ping period per connection; a ping unanswered within `ping_timeout` marks the
    /// connection dead (its streams end at once, see `Driver::connection_dead`).
    #[serde(with = "crate::util::millis")]
    pub ping_interval: Duration,
    #[serde(with = "crate::util::millis")]
    pub ping_timeout: Duration,
    /// This node's region (a label; `/status` shows it; network emulation keys on it).
    pub region: Option<String>,
    /// In-process emulation of region latency, upload bandwidth and partitions; off when absent.
    /// Must be set on every node of a network or on none (the connection preamble differs).
    pub netem: Option<NetemConfig>,
    /// gossipsub (the broadcast baseline) runs only when set; set from `broadcast` by the node.
    #[serde(skip)]
    pub gossipsub: Option<GossipConfig>,
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid")],
            bootnodes: vec![],
            key_file: None,
            streams: StreamConfig::default(),
            requests: RequestConfig::default(),
            rate_limit: RateLimitConfig::default(),
            reputation: ReputationConfig::default(),
            admission: AdmissionConfig::default(),
            max_frame_bytes: wire::DEFAULT_MAX_FRAME,
            max_blocks_per_request: 1024,
            max_bytes_per_response: 8 * 1024 * 1024,
            max_connections: 128,
            serve_budget_bytes: 48 * 1024 * 1024,
            stream_serve_budget_bytes: 16 * 1024 * 1024,
            write_stall_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(10),
            max_pending_handshakes: 64,
            ping_interval: Duration::from_secs(15),
            ping_timeout: Duration::from_secs(20),
            region: None,
            netem: None,
            gossipsub: None,
        }
    }
}

impl P2pConfig {
    /// Errors name the field below `p2p`.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.streams.validate().map_err(|e| e.within("streams"))?;
        self.requests.validate().map_err(|e| e.within("requests"))?;
        self.rate_limit
            .validate()
            .map_err(|e| e.within("rate_limit"))?;
        self.reputation
            .validate()
            .map_err(|e| e.within("reputation"))?;
        self.admission
            .validate()
            .map_err(|e| e.within("admission"))?;
        check(
            self.listen.is_empty(),
            "listen",
            "at least one address is needed",
        )?;
        for (i, b) in self.bootnodes.iter().enumerate() {
            check(
                peer_of(b).is_none(),
                &format!("bootnodes[{i}]"),
                format!("{b} does not end in /p2p/<peer id>"),
            )?;
        }
        check(
            !(1024..=256 * 1024 * 1024).contains(&self.max_frame_bytes),
            "max_frame_bytes",
            "must be within 1 KiB..=256 MiB",
        )?;
        check(
            self.max_bytes_per_response as usize + 4096 > self.max_frame_bytes,
            "max_bytes_per_response",
            "must leave 4 KiB of room below max_frame_bytes",
        )?;
        check(
            self.max_blocks_per_request == 0,
            "max_blocks_per_request",
            "must be > 0",
        )?;
        check(
            self.max_connections <= self.admission.max_inbound + self.admission.max_outbound,
            "max_connections",
            "must exceed admission.max_inbound + admission.max_outbound (a newcomer must be let in \
             before admission can judge it)",
        )?;
        check(
            self.stream_serve_budget_bytes < u64::from(self.max_bytes_per_response) + 64 * 1024,
            "stream_serve_budget_bytes",
            "must hold one full reply: at least max_bytes_per_response + 64 KiB",
        )?;
        check(
            self.serve_budget_bytes < self.stream_serve_budget_bytes,
            "serve_budget_bytes",
            "must be at least stream_serve_budget_bytes",
        )?;
        check(
            self.serve_budget_bytes > 64 * 1024 * 1024 * 1024,
            "serve_budget_bytes",
            "must be at most 64 GiB",
        )?;
        for (name, d) in [
            ("write_stall_timeout", self.write_stall_timeout),
            ("frame_timeout", self.frame_timeout),
        ] {
            check(d.is_zero(), name, "must be > 0")?;
        }
        check(
            self.max_pending_handshakes == 0,
            "max_pending_handshakes",
            "must be > 0",
        )?;
        check(self.ping_interval.is_zero(), "ping_interval", "must be > 0")?;
        check(self.ping_timeout.is_zero(), "ping_timeout", "must be > 0")?;
        if let Some(r) = &self.region {
            validate_region(r).map_err(|e| FieldError::new("region", e))?;
        }
        if let Some(n) = &self.netem {
            let Some(region) = &self.region else {
                return Err(FieldError::new(
                    "netem",
                    "needs p2p.region (which row of the matrix is this node)",
                ));
            };
            n.validate(region).map_err(|e| e.within("netem"))?;
        }
        Ok(())
    }
}

/// The peer id an address ends in (`/p2p/<peer id>`).
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(p)) => Some(p),
        _ => None,
    }
}

/// The peer id an address ends in, and the address without it (what a dial book holds).
pub fn split_peer(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let peer = peer_of(addr)?;
    let rest = addr
        .iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect();
    Some((peer, rest))
}
