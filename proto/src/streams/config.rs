//! The stream manager's configuration (`p2p.streams`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{FieldError, check};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Below this many streams the downloader does not run.
    pub hard_low: usize,
    /// Below this many streams discovery runs on its timer and setups are started.
    pub soft_low: usize,
    /// Inbound streams beyond this are refused.
    pub high: usize,
    /// Base period between discovery rounds while below `soft_low`.
    #[serde(with = "crate::util::millis")]
    pub discovery_interval: Duration,
    /// Cap of the exponential backoff after unproductive rounds.
    #[serde(with = "crate::util::millis")]
    pub discovery_backoff_max: Duration,
    /// A round the driver never reports finished is considered over after this.
    #[serde(with = "crate::util::millis")]
    pub discovery_round_timeout: Duration,
    /// Dial + open + handshake must finish within this.
    #[serde(with = "crate::util::millis")]
    pub setup_timeout: Duration,
    pub max_concurrent_setups: usize,
    /// A peer whose setup failed is not tried again for this long.
    #[serde(with = "crate::util::millis")]
    pub failed_peer_ttl: Duration,
    #[serde(with = "crate::util::millis")]
    pub removal_cooldown_base: Duration,
    #[serde(with = "crate::util::millis")]
    pub removal_cooldown_max: Duration,
    /// Removals further apart than this do not compound the cooldown.
    #[serde(with = "crate::util::millis")]
    pub removal_memory: Duration,
    /// When full, an inbound stream with nothing served or answered for this long gives its slot
    /// to a newcomer (docs/security.md).
    #[serde(with = "crate::util::millis")]
    pub idle_evict_after: Duration,
    /// Cap on each per-peer table (candidates, failed, cooldowns).
    pub max_tracked_peers: usize,
    /// The driver reports the head stale after this long without progress (see the module docs).
    #[serde(with = "crate::util::millis")]
    pub stale_after: Duration,
    /// Fault: run discovery this often regardless of stream count or backoff.
    #[serde(with = "crate::util::opt_millis")]
    pub forced_discovery: Option<Duration>,
    /// CANARY, off by default: the original bug. Both sides open, conflicting setups kill both
    /// streams, every removal triggers discovery at once, no backoff, no failed cache, no cooldown.
    pub storm_canary: bool,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            hard_low: 2,
            soft_low: 4,
            high: 8,
            discovery_interval: Duration::from_secs(10),
            discovery_backoff_max: Duration::from_secs(300),
            discovery_round_timeout: Duration::from_secs(15),
            setup_timeout: Duration::from_secs(10),
            max_concurrent_setups: 4,
            failed_peer_ttl: Duration::from_secs(60),
            removal_cooldown_base: Duration::from_secs(5),
            removal_cooldown_max: Duration::from_secs(600),
            removal_memory: Duration::from_secs(1800),
            idle_evict_after: Duration::from_secs(10),
            max_tracked_peers: 1024,
            stale_after: Duration::from_secs(15),
            forced_discovery: None,
            storm_canary: false,
        }
    }
}

impl StreamConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        check(
            !(self.hard_low <= self.soft_low && self.soft_low <= self.high && self.high >= 1),
            "high",
            format!(
                "thresholds must satisfy hard_low <= soft_low <= high, high >= 1 (got {} / {} / {})",
                self.hard_low, self.soft_low, self.high
            ),
        )?;
        for (name, d) in [
            ("discovery_interval", self.discovery_interval),
            ("discovery_round_timeout", self.discovery_round_timeout),
            ("setup_timeout", self.setup_timeout),
            ("idle_evict_after", self.idle_evict_after),
        ] {
            check(d.is_zero(), name, "must be > 0")?;
        }
        check(
            self.discovery_backoff_max < self.discovery_interval,
            "discovery_backoff_max",
            "must be >= discovery_interval",
        )?;
        check(
            self.removal_cooldown_max < self.removal_cooldown_base,
            "removal_cooldown_max",
            "must be >= removal_cooldown_base",
        )?;
        check(
            self.max_concurrent_setups == 0,
            "max_concurrent_setups",
            "must be > 0",
        )?;
        check(
            self.max_tracked_peers == 0,
            "max_tracked_peers",
            "must be > 0",
        )?;
        check(
            self.forced_discovery.is_some_and(|d| d.is_zero()),
            "forced_discovery",
            "must be > 0",
        )
    }
}
