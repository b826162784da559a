//! Label values of the node's own metric families, each a closed set (`label_enum!`: the enum,
//! its `label()` and `ALL` from one list). The protocol cores' vocabularies live with them in
//! `syncnet_proto` (request kinds, stream and dial outcomes, offences, refusals, fault kinds, ...).
//! Here rather than in `p2p` or `broadcast` because both import `metrics`.

use syncnet_proto::label_enum;

use crate::peers::{Refusal, Table};
use crate::wire::CodecError;

label_enum! {
    /// Where a blocks-reply buffer came from (`syncnet_p2p_frame_buffers_total{source}`): the
    /// reply-frame pool (`p2p/frames.rs`) or a fresh allocation.
    pub enum FrameSource {
        Reused => "reused",
        Fresh => "fresh",
    }
}

label_enum! {
    /// How a served request ended (`syncnet_sync_served_total{outcome}`).
    pub enum ServeOutcome {
        Ok => "ok",
        Error => "error",
        RateLimited => "rate_limited",
    }
}

label_enum! {
    /// RateLimited replies this node sent or received (`syncnet_sync_rate_limited_total`).
    pub enum RateLimitDirection {
        Sent => "sent",
        Received => "received",
    }
}

label_enum! {
    /// Which way bytes went (`syncnet_p2p_bytes_total`, `syncnet_netem_bytes_total`).
    pub enum Direction {
        In => "in",
        Out => "out",
    }
}

label_enum! {
    /// The protocols whose application bytes `syncnet_p2p_bytes_total` counts.
    pub enum Protocol {
        Sync => "sync",
    }
}

label_enum! {
    /// Why a frame was rejected (`syncnet_p2p_frame_errors_total{reason}`).
    pub enum FrameError {
        Oversize => "oversize",
        Decode => "decode",
        Trailing => "trailing",
        /// The decoder was used after an earlier error.
        Poisoned => "poisoned",
        /// A frame in progress missed its deadline.
        Stalled => "stalled",
        /// An announce whose header does not verify.
        BadAnnounce => "bad_announce",
    }
}

impl From<&CodecError> for FrameError {
    fn from(e: &CodecError) -> FrameError {
        match e {
            CodecError::Oversize { .. } => FrameError::Oversize,
            CodecError::Decode(_) => FrameError::Decode,
            CodecError::Trailing(_) => FrameError::Trailing,
            CodecError::Poisoned => FrameError::Poisoned,
        }
    }
}

/// Why a connection or sync stream was refused (`syncnet_p2p_connections_refused_total{reason}`):
/// admission's refusals, then the transport's and the sessions' own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    Admission(Refusal),
    /// The oldest pending handshake, dropped for a newcomer (`p2p/pending.rs`).
    PendingEvicted,
    /// A handshake that missed its deadline.
    PendingTimeout,
    /// A sync stream dropped before its handshake: too many in progress.
    HandshakesFull,
}

impl Refused {
    /// One of each label value.
    pub fn all() -> impl Iterator<Item = Refused> {
        Refusal::ALL.into_iter().map(Refused::Admission).chain([
            Refused::PendingEvicted,
            Refused::PendingTimeout,
            Refused::HandshakesFull,
        ])
    }

    pub fn label(self) -> &'static str {
        match self {
            Refused::Admission(r) => r.label(),
            Refused::PendingEvicted => "pending_evicted",
            Refused::PendingTimeout => "pending_timeout",
            Refused::HandshakesFull => "handshakes_full",
        }
    }
}

/// A bounded table (`syncnet_p2p_tracked_entries{table}`): the peers core's, the rate limiter's,
/// and what the canaries hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracked {
    Peers(Table),
    RateLimiterPeers,
    /// KiB the leak canary holds.
    LeakCanaryKib,
    FdCanary,
    ThreadCanary,
}

impl Tracked {
    /// One of each label value.
    pub fn all() -> impl Iterator<Item = Tracked> {
        Table::ALL.iter().map(|t| Tracked::Peers(*t)).chain([
            Tracked::RateLimiterPeers,
            Tracked::LeakCanaryKib,
            Tracked::FdCanary,
            Tracked::ThreadCanary,
        ])
    }

    pub fn label(self) -> &'static str {
        match self {
            Tracked::Peers(t) => t.label(),
            Tracked::RateLimiterPeers => "rate_limiter_peers",
            Tracked::LeakCanaryKib => "leak_canary_kib",
            Tracked::FdCanary => "fd_canary",
            Tracked::ThreadCanary => "thread_canary",
        }
    }
}

label_enum! {
    /// Whether a discovery round found new candidates (`syncnet_p2p_discovery_rounds_total`).
    pub enum Discovery {
        Productive => "productive",
        Unproductive => "unproductive",
    }
}

impl Discovery {
    pub fn of(productive: bool) -> Discovery {
        if productive {
            Discovery::Productive
        } else {
            Discovery::Unproductive
        }
    }
}

label_enum! {
    /// What became of an IDA chunk (`syncnet_broadcast_ida_chunks_total{outcome}`).
    pub enum ChunkOutcome {
        Received => "received",
        Forwarded => "forwarded",
        /// The producer's share.
        Sent => "sent",
        /// Before its block was rebuilt.
        Duplicate => "duplicate",
        /// After its block was rebuilt.
        Late => "late",
        Invalid => "invalid",
        TooLarge => "too_large",
        QueueFull => "queue_full",
        /// The neighbour had the block by its turn.
        SkippedHas => "skipped_has",
        FaultDropped => "fault_dropped",
    }
}

label_enum! {
    /// What became of a broadcast block (`syncnet_broadcast_blocks_total{outcome}`).
    pub enum BlockOutcome {
        Decoded => "decoded",
        RebuildFailed => "rebuild_failed",
        GaveUp => "gave_up",
        Inserted => "inserted",
        Stale => "stale",
        Orphaned => "orphaned",
    }
}

label_enum! {
    /// IDA pull repairs (`syncnet_broadcast_ida_repairs_total{kind}`).
    pub enum RepairKind {
        /// A `Want` sent.
        Requested => "requested",
        /// Chunks sent for a `Want`.
        Served => "served",
    }
}
