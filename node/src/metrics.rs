//! Prometheus metrics. prometheus-client has no process collector, so [`ProcessCollector`] reads
//! /proc/self at scrape time (via the procfs crate) and exports the standard `process_*` names that
//! dashboards and `deriv(process_resident_memory_bytes[6h])` expect.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Registry, Unit};

use crate::store::Store;

/// Chain and store metrics of one node. Cheap to clone (atomics behind `Arc`s).
#[derive(Clone, Debug, Default)]
pub struct NodeMetrics {
    pub head_height: Gauge,
    pub blocks_produced: Counter,
    pub blocks_inserted: Counter,
}

impl NodeMetrics {
    /// Registers under the `syncnet_` prefix. `store` feeds `syncnet_store_bytes` at scrape time.
    pub fn register(registry: &mut Registry, store: Arc<Store>) -> NodeMetrics {
        let m = NodeMetrics::default();
        let r = registry.sub_registry_with_prefix("syncnet");
        r.register(
            "chain_head_height",
            "Height of the last block committed to the local store",
            m.head_height.clone(),
        );
        r.register(
            "blocks_produced",
            "Blocks this node produced and signed (producer only)",
            m.blocks_produced.clone(),
        );
        r.register(
            "blocks_inserted",
            "Blocks committed to the local store, from any source",
            m.blocks_inserted.clone(),
        );
        r.register_collector(Box::new(StoreCollector(store)));
        m
    }
}

#[derive(Debug)]
struct StoreCollector(Arc<Store>);

impl Collector for StoreCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let g = ConstGauge::new(self.0.size_bytes() as i64);
        let m = enc.encode_descriptor(
            "store",
            "Size of the block store file",
            Some(&Unit::Bytes),
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

/// Renders a registry in the OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
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
