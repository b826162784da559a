//! Metric label values of the stream manager's enums (closed sets).

use super::{InjectedRound, RemovalReason, ResetReason, SetupFailure};
use crate::faults::FaultKind;

impl SetupFailure {
    pub const ALL: [SetupFailure; 5] = [
        SetupFailure::Dial,
        SetupFailure::Open,
        SetupFailure::Timeout,
        SetupFailure::Disconnected,
        SetupFailure::Refused,
    ];

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

/// `stream_setups_total{outcome}`: `ok`, or why the setup failed.
pub fn setup_outcome(r: Result<(), SetupFailure>) -> &'static str {
    r.map_or_else(SetupFailure::label, |()| "ok")
}

/// Every value of [`setup_outcome`].
pub fn setup_outcomes() -> impl Iterator<Item = &'static str> {
    std::iter::once(Ok(()))
        .chain(SetupFailure::ALL.map(Err))
        .map(setup_outcome)
}

impl RemovalReason {
    pub const ALL: [RemovalReason; 5] = [
        RemovalReason::StreamError,
        RemovalReason::Disconnected,
        RemovalReason::Conflict,
        RemovalReason::Penalised,
        RemovalReason::Evicted,
    ];

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
    pub const ALL: [ResetReason; 6] = [
        ResetReason::Full,
        ResetReason::Duplicate,
        ResetReason::Cooldown,
        ResetReason::Conflict,
        ResetReason::Penalised,
        ResetReason::Evicted,
    ];

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
    /// The fault behind the round (`faults_injected_total{kind}`).
    pub fn kind(self) -> FaultKind {
        match self {
            InjectedRound::ForcedDiscovery => FaultKind::ForcedDiscovery,
            InjectedRound::StormCanary => FaultKind::StormCanary,
        }
    }
}
