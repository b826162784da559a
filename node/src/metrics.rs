//! Prometheus metrics. prometheus-client has no process collector, so [`ProcessCollector`] reads
//! /proc/self at scrape time (via the procfs crate) and exports the standard `process_*` names that
//! dashboards and `deriv(process_resident_memory_bytes[6h])` expect.
//!
//! Every label value comes from a closed enum (`labels`, or the protocol core's), and every
//! labelled family is registered with all its label sets at zero, so a fresh node exposes every
//! family and `rate()` over one is 0 rather than empty. [`exposition`] serves the registry as
//! OpenMetrics or as the Prometheus text format.

pub mod exposition;
mod labels;

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::config::BroadcastMode;
use crate::downloader::{Penalty, Phase, Retry};
use crate::faults::FaultKind;
use crate::peers::{Offence, RequestOutcome};
use crate::store::Store;
use crate::streams::{RemovalReason, ResetReason};
use crate::wire::RequestKind;
pub use labels::*;

/// Chain and store metrics of one node. Cheap to clone (atomics behind `Arc`s). The head height
/// and the inserted-block count are read from the store at scrape time, so every insertion path
/// (sync, broadcast, production) shows up without having to remember the metric.
#[derive(Clone, Debug, Default)]
pub struct NodeMetrics {
    pub blocks_produced: Counter,
    /// Connections to the HTTP port closed on accept (`control::HttpLimits::max_connections`).
    pub http_refused: Counter,
}

impl NodeMetrics {
    /// Registers under the `syncnet_` prefix. `store` feeds `syncnet_store_bytes` at scrape time.
    pub fn register(registry: &mut Registry, store: Arc<Store>) -> NodeMetrics {
        let m = NodeMetrics::default();
        let r = registry.sub_registry_with_prefix("syncnet");
        r.register(
            "blocks_produced",
            "Blocks this node produced and signed (producer only)",
            m.blocks_produced.clone(),
        );
        r.register(
            "http_connections_refused",
            "Connections to the metrics/control port closed on accept: too many open",
            m.http_refused.clone(),
        );

        r.register_collector(Box::new(StoreCollector(store)));
        m
    }
}

#[derive(Debug)]
struct StoreCollector(Arc<Store>);

impl Collector for StoreCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let g = ConstGauge::new(self.0.head().height as i64);
        let m = enc.encode_descriptor(
            "chain_head_height",
            "Height of the last block committed to the local store",
            None,
            g.metric_type(),
        )?;
        g.encode(m)?;
        let c = ConstCounter::new(
            crate::logthrottle::SUPPRESSED.load(std::sync::atomic::Ordering::Relaxed),
        );
        let m = enc.encode_descriptor(
            "log_events_suppressed",
            "INFO/WARN log events dropped by the per-call-site throttle",
            None,
            c.metric_type(),
        )?;
        c.encode(m)?;
        let c = ConstCounter::new(self.0.inserted_total());
        let m = enc.encode_descriptor(
            "blocks_inserted",
            "Blocks committed to the local store by this process, from any source",
            None,
            c.metric_type(),
        )?;
        c.encode(m)?;
        let g = ConstGauge::new(self.0.size_bytes() as i64);
        let m = enc.encode_descriptor(
            "store",
            "Size of the block store on disk: the index database and the segment files",
            Some(&Unit::Bytes),
            g.metric_type(),
        )?;
        g.encode(m)?;
        let g = ConstGauge::new(self.0.open_segment_handles() as i64);
        let m = enc.encode_descriptor(
            "store_segment_handles",
            "Segment files the store holds open for reading (capped)",
            None,
            g.metric_type(),
        )?;
        g.encode(m)
    }
}

/// `process_*` metrics from /proc/self, read on every scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One reading of /proc/self, also used by tests and `/status`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessSample {
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub cpu_seconds: f64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    pub threads: u64,
    pub start_time_seconds: f64,
}

impl ProcessSample {
    pub fn read() -> procfs::ProcResult<ProcessSample> {
        let me = procfs::process::Process::myself()?;
        let stat = me.stat()?;
        let ticks = procfs::ticks_per_second() as f64;
        let max_fds = match me.limits()?.max_open_files.soft_limit {
            procfs::process::LimitValue::Value(v) => Some(v),
            procfs::process::LimitValue::Unlimited => None,
        };
        Ok(ProcessSample {
            resident_bytes: stat.rss * procfs::page_size(),
            virtual_bytes: stat.vsize,
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            open_fds: me.fd_count()? as u64,
            max_fds,
            threads: stat.num_threads.max(0) as u64,
            start_time_seconds: procfs::boot_time_secs()? as f64 + stat.starttime as f64 / ticks,
        })
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A failed /proc read skips the family for this scrape rather than failing the scrape.
        let Ok(s) = ProcessSample::read() else {
            return Ok(());
        };
        let gauges: [(&str, &str, Option<Unit>, f64); 6] = [
            (
                "process_resident_memory",
                "Resident set size",
                Some(Unit::Bytes),
                s.resident_bytes as f64,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size",
                Some(Unit::Bytes),
                s.virtual_bytes as f64,
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                None,
                s.open_fds as f64,
            ),
            ("process_threads", "OS threads", None, s.threads as f64),
            (
                "process_start_time",
                "Start time since the Unix epoch",
                Some(Unit::Seconds),
                s.start_time_seconds,
            ),
            (
                "process_max_fds",
                "Soft limit on open file descriptors (-1: unlimited)",
                None,
                s.max_fds.map(|v| v as f64).unwrap_or(-1.0),
            ),
        ];
        for (name, help, unit, value) in &gauges {
            let g = ConstGauge::new(*value);
            g.encode(enc.encode_descriptor(name, help, unit.as_ref(), g.metric_type())?)?;
        }
        let c = ConstCounter::new(s.cpu_seconds);
        c.encode(enc.encode_descriptor(
            "process_cpu",
            "User and system CPU time",
            Some(&Unit::Seconds),
            c.metric_type(),
        )?)
    }
}

/// A label set whose values are `&'static str` constants from closed enums (see each `label()`).
pub type L1 = [(&'static str, &'static str); 1];
pub type L2 = [(&'static str, &'static str); 2];

/// Creates the family's series for each of `values`, at zero: the family is exposed before its
/// first event.
fn zeroed<M, C: MetricConstructor<M>>(
    family: &Family<L1, M, C>,
    key: &'static str,
    values: impl IntoIterator<Item = &'static str>,
) {
    for v in values {
        let _ = family.get_or_create(&[(key, v)]);
    }
}

/// [`zeroed`] for two labels: every combination.
fn zeroed2<M, C: MetricConstructor<M>>(
    family: &Family<L2, M, C>,
    (key_a, a): (&'static str, &[&'static str]),
    (key_b, b): (&'static str, &[&'static str]),
) {
    for &va in a {
        for &vb in b {
            let _ = family.get_or_create(&[(key_a, va), (key_b, vb)]);
        }
    }
}

/// Metrics of the p2p layer (stream manager, dials, sync requests). Clone = same underlying metrics.
#[derive(Clone, Debug)]
pub struct P2pMetrics {
    pub streams: Gauge,
    pub connections: Gauge,
    pub setups: Family<L1, Counter>,
    pub removals: Family<L1, Counter>,
    pub resets: Family<L1, Counter>,
    pub discovery_rounds: Family<L1, Counter>,
    pub peers_found: Counter,
    pub cooldowns_active: Gauge,
    /// 1 while the local head has not moved for `streams.stale_after`.
    pub head_stale: Gauge,
    pub failed_peers_cached: Gauge,
    pub candidates: Gauge,
    pub dials: Family<L1, Counter>,
    pub requests_in_flight: Gauge,
    pub requests_queued: Gauge,
    pub requests: Family<L2, Counter>,
    pub request_duration: Family<L1, Histogram>,
    pub served: Family<L2, Counter>,
    pub rate_limited: Family<L1, Counter>,
    pub bytes: Family<L2, Counter>,
    pub frame_errors: Family<L1, Counter>,
    pub foreign_peers: Counter,
    pub offences: Family<L1, Counter>,
    pub bans: Counter,
    pub banned: Gauge,
    pub refused: Family<L1, Counter>,
    pub serve_budget_used: Gauge,
    pub frame_pool_bytes: Gauge,
    pub frame_buffers: Family<L1, Counter>,
    pub tracked: Family<L1, Gauge>,
    pub faults_injected: Family<L1, Counter>,
    pub ping_rtt: Histogram,
    pub ping_failures: Counter,
    pub netem: NetemMetrics,
}

/// Metrics of the network emulation wrapper (`netem`), all zero when it is off.
#[derive(Clone, Debug)]
pub struct NetemMetrics {
    /// `syncnet_netem_bytes_total{direction}`; `bytes_out` and `bytes_in` are its two series.
    pub bytes: Family<L1, Counter>,
    pub bytes_out: Counter,
    pub bytes_in: Counter,
    pub queued_bytes: Gauge,
    pub unknown_region: Counter,
    /// Shares `faults_injected_total{kind="partition"}`: connections that started being held.
    pub partition_holds: Counter,
}

impl Default for NetemMetrics {
    fn default() -> Self {
        let bytes = Family::<L1, Counter>::default();
        let series = |d: Direction| bytes.get_or_create(&[("direction", d.label())]).clone();
        NetemMetrics {
            bytes_out: series(Direction::Out),
            bytes_in: series(Direction::In),
            bytes,
            queued_bytes: Gauge::default(),
            unknown_region: Counter::default(),
            partition_holds: Counter::default(),
        }
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Default for P2pMetrics {
    fn default() -> Self {
        P2pMetrics {
            streams: Gauge::default(),
            connections: Gauge::default(),
            setups: Family::default(),
            removals: Family::default(),
            resets: Family::default(),
            discovery_rounds: Family::default(),
            peers_found: Counter::default(),
            cooldowns_active: Gauge::default(),
            head_stale: Gauge::default(),
            failed_peers_cached: Gauge::default(),
            candidates: Gauge::default(),
            dials: Family::default(),
            requests_in_flight: Gauge::default(),
            requests_queued: Gauge::default(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            served: Family::default(),
            rate_limited: Family::default(),
            bytes: Family::default(),
            frame_errors: Family::default(),
            foreign_peers: Counter::default(),
            offences: Family::default(),
            bans: Counter::default(),
            banned: Gauge::default(),
            refused: Family::default(),
            serve_budget_used: Gauge::default(),
            frame_pool_bytes: Gauge::default(),
            frame_buffers: Family::default(),
            tracked: Family::default(),
            faults_injected: Family::default(),
            ping_rtt: latency_histogram(),
            ping_failures: Counter::default(),
            netem: NetemMetrics::default(),
        }
    }
}

impl P2pMetrics {
    /// Every series of a closed label set, at zero (see [`zeroed`]).
    fn zero(&self) {
        zeroed(&self.setups, "outcome", crate::streams::setup_outcomes());
        zeroed(
            &self.removals,
            "reason",
            RemovalReason::ALL.map(|r| r.label()),
        );
        zeroed(&self.resets, "reason", ResetReason::ALL.map(|r| r.label()));
        zeroed(
            &self.discovery_rounds,
            "outcome",
            Discovery::ALL.iter().map(|d| d.label()),
        );
        zeroed(
            &self.dials,
            "outcome",
            crate::dial::DialOutcome::ALL.iter().map(|o| o.label()),
        );
        let kinds = RequestKind::ALL.map(|k| k.label());
        let outcomes: Vec<_> = RequestOutcome::all().map(|o| o.label()).collect();
        zeroed2(&self.requests, ("kind", &kinds), ("outcome", &outcomes));
        zeroed(&self.request_duration, "kind", kinds);
        let served: Vec<_> = ServeOutcome::ALL.iter().map(|o| o.label()).collect();
        zeroed2(&self.served, ("kind", &kinds), ("outcome", &served));
        zeroed(
            &self.rate_limited,
            "direction",
            RateLimitDirection::ALL.iter().map(|d| d.label()),
        );
        let protocols: Vec<_> = Protocol::ALL.iter().map(|p| p.label()).collect();
        let directions: Vec<_> = Direction::ALL.iter().map(|d| d.label()).collect();
        zeroed2(
            &self.bytes,
            ("protocol", &protocols),
            ("direction", &directions),
        );
        zeroed(
            &self.frame_errors,
            "reason",
            FrameError::ALL.iter().map(|e| e.label()),
        );
        zeroed(&self.offences, "offence", Offence::ALL.map(|o| o.label()));
        zeroed(&self.refused, "reason", Refused::all().map(|r| r.label()));
        zeroed(
            &self.frame_buffers,
            "source",
            FrameSource::ALL.iter().map(|s| s.label()),
        );
        zeroed(&self.tracked, "table", Tracked::all().map(|t| t.label()));
        zeroed(
            &self.faults_injected,
            "kind",
            FaultKind::ALL.iter().map(|k| k.label()),
        );
    }

    pub fn register(&self, registry: &mut Registry) {
        self.zero();
        let r = registry.sub_registry_with_prefix("syncnet");
        r.register(
            "p2p_streams",
            "Established sync streams",
            self.streams.clone(),
        );
        r.register(
            "p2p_connections",
            "Open connections",
            self.connections.clone(),
        );
        r.register(
            "p2p_stream_setups",
            "Stream setups by outcome",
            self.setups.clone(),
        );
        r.register(
            "p2p_stream_removals",
            "Established streams removed, by reason",
            self.removals.clone(),
        );
        r.register(
            "p2p_stream_resets",
            "Streams refused or reset, by reason",
            self.resets.clone(),
        );
        r.register(
            "p2p_discovery_rounds",
            "Discovery rounds by outcome",
            self.discovery_rounds.clone(),
        );
        r.register(
            "p2p_peers_found",
            "New candidate peers from discovery",
            self.peers_found.clone(),
        );
        r.register(
            "p2p_cooldowns_active",
            "Peers in removal cooldown",
            self.cooldowns_active.clone(),
        );
        r.register(
            "p2p_head_stale",
            "1 while the local head has not moved for streams.stale_after (more streams wanted, cooldowns capped)",
            self.head_stale.clone(),
        );
        r.register(
            "p2p_failed_peers_cached",
            "Peers in the failed-setup cache",
            self.failed_peers_cached.clone(),
        );
        r.register(
            "p2p_candidates",
            "Candidate peers known to the stream manager",
            self.candidates.clone(),
        );
        r.register(
            "p2p_dials",
            "Dial decisions and outcomes",
            self.dials.clone(),
        );
        r.register(
            "sync_requests_in_flight",
            "Sync requests awaiting a reply",
            self.requests_in_flight.clone(),
        );
        r.register(
            "sync_requests_queued",
            "Sync requests waiting for a stream",
            self.requests_queued.clone(),
        );
        r.register(
            "sync_requests",
            "Sync requests by kind and outcome",
            self.requests.clone(),
        );
        r.register_with_unit(
            "sync_request_duration",
            "Sync request latency by kind",
            Unit::Seconds,
            self.request_duration.clone(),
        );
        r.register(
            "sync_served",
            "Sync requests served by kind and outcome",
            self.served.clone(),
        );
        r.register(
            "sync_rate_limited",
            "RateLimited replies, sent or received",
            self.rate_limited.clone(),
        );
        r.register_with_unit(
            "p2p",
            "Application bytes by protocol and direction",
            Unit::Bytes,
            self.bytes.clone(),
        );
        r.register(
            "p2p_frame_errors",
            "Frames rejected by reason",
            self.frame_errors.clone(),
        );
        r.register(
            "p2p_foreign_peers",
            "Peers refused for belonging to another network",
            self.foreign_peers.clone(),
        );
        r.register(
            "p2p_peer_offences",
            "Peer offences by kind (each penalises; enough of them ban)",
            self.offences.clone(),
        );
        r.register("p2p_peer_bans", "Peers banned", self.bans.clone());
        r.register(
            "p2p_peers_banned",
            "Peers under a ban now",
            self.banned.clone(),
        );
        r.register(
            "p2p_connections_refused",
            "Connections closed on arrival or evicted, by reason",
            self.refused.clone(),
        );
        r.register_with_unit(
            "p2p_serve_budget_used",
            "Bytes reserved by replies being built or written (cap: p2p.serve_budget_bytes)",
            Unit::Bytes,
            self.serve_budget_used.clone(),
        );
        r.register_with_unit(
            "p2p_frame_pool",
            "Idle reply frame buffers kept for reuse (cap: p2p.stream_serve_budget_bytes)",
            Unit::Bytes,
            self.frame_pool_bytes.clone(),
        );
        r.register(
            "p2p_frame_buffers",
            "Blocks reply frames built, by where the buffer came from (reused, fresh)",
            self.frame_buffers.clone(),
        );
        r.register(
            "p2p_tracked_entries",
            "Entries in bounded per-peer tables",
            self.tracked.clone(),
        );
        r.register(
            "faults_injected",
            "Faults injected on purpose, by kind",
            self.faults_injected.clone(),
        );
        r.register_with_unit(
            "p2p_ping_rtt",
            "Round-trip times measured by libp2p ping (emulated latency included)",
            Unit::Seconds,
            self.ping_rtt.clone(),
        );
        r.register(
            "p2p_ping_failures",
            "Pings that failed; the connection is closed as dead",
            self.ping_failures.clone(),
        );
        let n = &self.netem;
        r.register_with_unit(
            "netem",
            "Bytes through sockets under the emulation wrapper (all protocols), by direction",
            Unit::Bytes,
            n.bytes.clone(),
        );
        r.register_with_unit(
            "netem_queued",
            "Bytes held in emulated delay lines (latency, bandwidth, partitions)",
            Unit::Bytes,
            n.queued_bytes.clone(),
        );
        r.register(
            "netem_unknown_region_connections",
            "Connections to peers whose region is missing from the latency matrix (no delay)",
            n.unknown_region.clone(),
        );
    }
}

/// Metrics of the downloader.
#[derive(Clone, Debug)]
pub struct SyncMetrics {
    pub target_height: Gauge,
    pub lag: Gauge,
    pub phase: Family<L1, Gauge>,
    pub blocks_synced: Family<L1, Counter>,
    pub batch_retries: Family<L1, Counter>,
    pub invalid_blocks: Family<L1, Counter>,
    pub penalties: Family<L1, Counter>,
    pub watchdog_firings: Counter,
    pub buffered_bytes: Gauge,
    /// One commit of fetched blocks: the segment append, its sync and the index transaction.
    pub commit_seconds: Histogram,
    /// Blocks per commit (ready batches in a row are committed together).
    pub commit_blocks: Histogram,
}

impl Default for SyncMetrics {
    fn default() -> Self {
        SyncMetrics {
            target_height: Gauge::default(),
            lag: Gauge::default(),
            phase: Family::default(),
            blocks_synced: Family::default(),
            batch_retries: Family::default(),
            invalid_blocks: Family::default(),
            penalties: Family::default(),
            watchdog_firings: Counter::default(),
            buffered_bytes: Gauge::default(),
            // 0.5 ms .. ~16 s
            commit_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            // 1 .. 32768 blocks
            commit_blocks: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
        }
    }
}

impl SyncMetrics {
    /// Every series of a closed label set, at zero (see [`zeroed`]).
    fn zero(&self) {
        let phases = Phase::ALL.map(|p| p.label());
        zeroed(&self.phase, "phase", phases);
        zeroed(&self.blocks_synced, "phase", phases);
        zeroed(&self.batch_retries, "reason", Retry::ALL.map(|r| r.label()));
        zeroed(
            &self.invalid_blocks,
            "reason",
            crate::chain::VerifyError::ALL.map(|e| e.reason()),
        );
        zeroed(&self.penalties, "reason", Penalty::all().map(|p| p.label()));
    }

    pub fn register(&self, registry: &mut Registry) {
        self.zero();
        let r = registry.sub_registry_with_prefix("syncnet_sync");
        r.register(
            "target_height",
            "Best verified head reported by peers",
            self.target_height.clone(),
        );
        r.register(
            "lag",
            "Target height minus local head height",
            self.lag.clone(),
        );
        r.register(
            "phase",
            "1 for the current phase (idle, long, short)",
            self.phase.clone(),
        );
        r.register(
            "blocks_synced",
            "Blocks committed by the downloader, by phase",
            self.blocks_synced.clone(),
        );
        r.register(
            "batch_retries",
            "Batches sent back to be fetched again, by reason",
            self.batch_retries.clone(),
        );
        r.register(
            "invalid_blocks",
            "Fetched batches that failed verification, by reason",
            self.invalid_blocks.clone(),
        );
        r.register(
            "penalties",
            "Peers penalised by the downloader, by reason",
            self.penalties.clone(),
        );
        r.register(
            "watchdog_firings",
            "Times the no-progress watchdog fired",
            self.watchdog_firings.clone(),
        );
        r.register_with_unit(
            "lookahead",
            "Bytes buffered or reserved by the downloader",
            Unit::Bytes,
            self.buffered_bytes.clone(),
        );
        r.register_with_unit(
            "commit",
            "Time to commit fetched blocks: segment append and sync, then the index transaction",
            Unit::Seconds,
            self.commit_seconds.clone(),
        );
        r.register(
            "commit_blocks",
            "Blocks per commit",
            self.commit_blocks.clone(),
        );
    }
}

/// Metrics of block broadcast (IDA gossip or the gossipsub baseline). Clone = same metrics.
#[derive(Clone, Debug)]
pub struct BroadcastMetrics {
    /// IDA chunks by outcome: `received`, `forwarded`, `sent` (the producer's share),
    /// `duplicate` (before the block was rebuilt), `late` (after), `invalid`, `too_large`,
    /// `queue_full`, `skipped_has` (the neighbour had it by its turn), `fault_dropped`.
    pub chunks: Family<L1, Counter>,
    /// Rejected chunks by reason (closed set, `ChunkError::reason`).
    pub invalid_chunks: Family<L1, Counter>,
    pub decode_seconds: Histogram,
    /// From the header's timestamp to the block being complete here, by mode (`ida`, `gossipsub`).
    pub delivery_seconds: Family<L1, Histogram, fn() -> Histogram>,
    /// Blocks by outcome: `decoded`, `rebuild_failed`, `gave_up`, `inserted`, `stale`, `orphaned`.
    pub blocks: Family<L1, Counter>,
    /// Pull repairs: `requested` (Want sent), `served` (chunks sent for a Want).
    pub repairs: Family<L1, Counter>,
    /// Bytes of broadcast frames written to neighbours, by mode.
    pub bytes_sent: Family<L1, Counter>,
    pub assembly_blocks: Gauge,
    pub assembly_bytes: Gauge,
    /// Decoded blocks waiting for their parent.
    pub pending_blocks: Gauge,
    /// Frames queued for neighbours, all together.
    pub queued_frames: Gauge,
    pub queued_bytes: Gauge,
}

fn delivery_histogram() -> Histogram {
    // 5 ms .. ~80 s
    Histogram::new(exponential_buckets(0.005, 1.5, 25))
}

impl Default for BroadcastMetrics {
    fn default() -> Self {
        BroadcastMetrics {
            chunks: Family::default(),
            invalid_chunks: Family::default(),
            decode_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            delivery_seconds: Family::new_with_constructor(delivery_histogram),
            blocks: Family::default(),
            repairs: Family::default(),
            bytes_sent: Family::default(),
            assembly_blocks: Gauge::default(),
            assembly_bytes: Gauge::default(),
            pending_blocks: Gauge::default(),
            queued_frames: Gauge::default(),
            queued_bytes: Gauge::default(),
        }
    }
}

impl BroadcastMetrics {
    pub fn chunk(&self, outcome: ChunkOutcome) -> Counter {
        self.chunks
            .get_or_create(&[("outcome", outcome.label())])
            .clone()
    }

    pub fn block(&self, outcome: BlockOutcome) -> Counter {
        self.blocks
            .get_or_create(&[("outcome", outcome.label())])
            .clone()
    }

    /// Every series of a closed label set, at zero (see [`zeroed`]).
    fn zero(&self) {
        zeroed(
            &self.chunks,
            "outcome",
            ChunkOutcome::ALL.iter().map(|o| o.label()),
        );
        zeroed(
            &self.invalid_chunks,
            "reason",
            crate::ida::ChunkError::ALL.map(|e| e.reason()),
        );
        // The modes that push blocks (`off` delivers none); only IDA's frames are counted here
        // (gossipsub's bytes are libp2p's own).
        zeroed(
            &self.delivery_seconds,
            "mode",
            [BroadcastMode::Ida, BroadcastMode::Gossipsub].map(|m| m.label()),
        );
        zeroed(&self.bytes_sent, "mode", [BroadcastMode::Ida.label()]);
        zeroed(
            &self.blocks,
            "outcome",
            BlockOutcome::ALL.iter().map(|o| o.label()),
        );
        zeroed(
            &self.repairs,
            "kind",
            RepairKind::ALL.iter().map(|k| k.label()),
        );
    }

    pub fn register(&self, registry: &mut Registry) {
        self.zero();
        let r = registry.sub_registry_with_prefix("syncnet_broadcast");
        r.register("ida_chunks", "IDA chunks by outcome", self.chunks.clone());
        r.register(
            "ida_invalid_chunks",
            "IDA chunks rejected, by reason (the sender is penalised)",
            self.invalid_chunks.clone(),
        );
        r.register_with_unit(
            "ida_decode",
            "Time to rebuild a block from k chunks (decode + re-encode check)",
            Unit::Seconds,
            self.decode_seconds.clone(),
        );
        r.register_with_unit(
            "delivery",
            "Header timestamp to block complete on this node, by mode",
            Unit::Seconds,
            self.delivery_seconds.clone(),
        );
        r.register("blocks", "Broadcast blocks by outcome", self.blocks.clone());
        r.register("ida_repairs", "IDA pull repairs", self.repairs.clone());
        r.register_with_unit(
            "sent",
            "Broadcast frame bytes written to neighbours, by mode",
            Unit::Bytes,
            self.bytes_sent.clone(),
        );
        r.register(
            "ida_assembly_blocks",
            "Blocks in IDA assembly (capped by broadcast.ida.assembler.max_blocks)",
            self.assembly_blocks.clone(),
        );
        r.register_with_unit(
            "ida_assembly",
            "Shard bytes buffered in IDA assembly (capped by broadcast.ida.assembler.max_bytes)",
            Unit::Bytes,
            self.assembly_bytes.clone(),
        );
        r.register(
            "pending_blocks",
            "Received blocks waiting for their parent (capped)",
            self.pending_blocks.clone(),
        );
        r.register(
            "ida_queued_frames",
            "IDA frames queued for neighbours (capped per neighbour)",
            self.queued_frames.clone(),
        );
        r.register_with_unit(
            "ida_queued",
            "Bytes of IDA chunk frames waiting for neighbours (capped per neighbour and in all)",
            Unit::Bytes,
            self.queued_bytes.clone(),
        );
    }
}

/// Renders a registry in the OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

/// Renders a registry in `format` (what [`exposition::negotiate`] chose).
pub fn render_as(registry: &Registry, format: exposition::Format) -> String {
    let openmetrics = render(registry);
    match format {
        exposition::Format::OpenMetrics => openmetrics,
        exposition::Format::Text004 => exposition::to_text_004(&openmetrics),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_metrics_are_exported_with_standard_names() {
        let mut r = Registry::default();
        r.register_collector(Box::new(ProcessCollector));
        let text = render(&r);
        for name in [
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_cpu_seconds_total ",
            "process_open_fds ",
            "process_threads ",
            "process_start_time_seconds ",
            "process_max_fds ",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }

    /// What a node registers, but the store's collector (it needs a store; the node tests
    /// cover it).
    fn registry() -> Registry {
        let mut r = Registry::default();
        r.register_collector(Box::new(ProcessCollector));
        P2pMetrics::default().register(&mut r);
        SyncMetrics::default().register(&mut r);
        BroadcastMetrics::default().register(&mut r);
        r
    }

    #[test]
    fn every_family_has_samples_before_its_first_event() {
        let text = render_as(&registry(), exposition::Format::Text004);
        let families: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.split_once(' '))
            .collect();
        assert!(families.len() > 50, "{text}");
        for (name, kind) in families {
            let sample = match kind {
                "histogram" => format!("{name}_count"),
                _ => name.to_owned(),
            };
            assert!(
                text.lines().any(|l| l
                    .strip_prefix(&sample)
                    .is_some_and(|r| r.starts_with([' ', '{']))),
                "{name} has no sample:\n{text}"
            );
        }
    }

    /// prometheus-client writes help text unescaped: a backslash in one would be read as an
    /// escape.
    #[test]
    fn help_texts_need_no_escaping() {
        let text = render(&registry());
        for help in text.lines().filter(|l| l.starts_with("# HELP ")) {
            assert!(!help.contains('\\'), "{help}");
        }
    }

    #[test]
    fn process_sample_sees_allocations_and_fds() {
        let before = ProcessSample::read().unwrap();
        let files: Vec<_> = (0..64).map(|_| tempfile::tempfile().unwrap()).collect();
        // Touch 64 MiB so it is resident, not just reserved.
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        let after = ProcessSample::read().unwrap();
        assert!(
            after.open_fds >= before.open_fds + 20,
            "{before:?} {after:?}"
        );
        assert!(
            after.resident_bytes >= before.resident_bytes + (48 << 20),
            "{before:?} {after:?}"
        );
        assert!(after.threads >= 1 && after.start_time_seconds > 1.0e9);
        drop((files, big));
    }
}
