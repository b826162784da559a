//! Metric label values of the stream manager's enums (closed sets).

use super::{InjectedRound, RemovalReason, ResetReason, SetupFailure};

impl SetupFailure {
    /// Closed set of label values for metrics.
    pub fn label(self) -> &'static str {
        match self {
            SetupFailure::Dial => "dial",
            SetupFailure::Open => "open",
            SetupFailure::Timeout => "timeout",
            SetupFailure::Disconnected => "disconnected",
            SetupFailure::Refused => "refused",
        }
    }
}

impl RemovalReason {
    /// Closed set of label values for metrics.
    pub fn label(self) -> &'static str {
        match self {
            RemovalReason::StreamError => "stream_error",
            RemovalReason::Disconnected => "disconnected",
            RemovalReason::Conflict => "conflict",
            RemovalReason::Penalised => "penalised",
            RemovalReason::Evicted => "evicted",
        }
    }
}

impl ResetReason {
    /// Closed set of label values for metrics.
    pub fn label(self) -> &'static str {
        match self {
            ResetReason::Full => "full",
            ResetReason::Duplicate => "duplicate",
            ResetReason::Cooldown => "cooldown",
            ResetReason::Conflict => "conflict",
            ResetReason::Penalised => "penalised",
            ResetReason::Evicted => "evicted",
        }
    }
}

impl InjectedRound {
    /// Closed set of label values for metrics.
    pub fn label(self) -> &'static str {
        match self {
            InjectedRound::ForcedDiscovery => "forced_discovery",
            InjectedRound::StormCanary => "storm_canary",
        }
    }
}
