//! The operator's own metrics. Label values come from closed enums; no network names or uids
//! in labels (per-network detail is in each SyncNetwork's status).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Error,
}

/// `ok` / `error`, lowercase like the node's outcome labels (the derive would write `Ok`).
impl EncodeLabelValue for Outcome {
    fn encode(&self, enc: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        enc.write_str(match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: Outcome,
}

#[derive(Clone)]
pub struct Metrics {
    pub registry: Arc<Registry>,
    reconciles: Family<OutcomeLabel, Counter>,
    /// By `controller::Error::reason` (a closed set).
    failures: Family<[(&'static str, &'static str); 1], Counter>,
    duration: Histogram,
    scrapes: Family<OutcomeLabel, Counter>,
    prometheus_queries: Family<OutcomeLabel, Counter>,
    fault_puts: Family<OutcomeLabel, Counter>,
    pod_kills: Counter,
    networks: Gauge,
    samples: Gauge,
    samples_limit: Gauge,
    /// Samples held per network (uid), summed into `samples`; at most one entry per network.
    held: Arc<Mutex<HashMap<String, usize>>>,
}

fn outcome(ok: bool) -> OutcomeLabel {
    OutcomeLabel {
        outcome: if ok { Outcome::Ok } else { Outcome::Error },
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("syncnet_operator");
        let m = Metrics {
            registry: Arc::default(),
            reconciles: Family::default(),
            failures: Family::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            scrapes: Family::default(),
            prometheus_queries: Family::default(),
            fault_puts: Family::default(),
            pod_kills: Counter::default(),
            networks: Gauge::default(),
            samples: Gauge::default(),
            samples_limit: Gauge::default(),
            held: Arc::default(),
        };
        r.register("reconciles", "Reconciles by outcome", m.reconciles.clone());
        r.register(
            "reconcile_failures",
            "Failed reconciles by reason (conflict, not_found, forbidden, invalid, api_error, decode, transport, finalizer, secret, judge)",
            m.failures.clone(),
        );
        r.register_with_unit(
            "reconcile_duration",
            "Time per reconcile",
            Unit::Seconds,
            m.duration.clone(),
        );
        r.register(
            "scrapes",
            "Pod /metrics scrapes by outcome",
            m.scrapes.clone(),
        );
        r.register(
            "prometheus_queries",
            "Prometheus queries for a network's series by outcome (with --prometheus-url)",
            m.prometheus_queries.clone(),
        );
        r.register(
            "fault_puts",
            "PUT /faults to pods by outcome",
            m.fault_puts.clone(),
        );
        r.register(
            "pod_kills",
            "Pods deleted by kill-restart faults",
            m.pod_kills.clone(),
        );
        r.register(
            "networks",
            "Networks with a running soak",
            m.networks.clone(),
        );
        r.register(
            "samples",
            "Scrape samples held in the rolling windows (bounded per network)",
            m.samples.clone(),
        );
        r.register(
            "samples_limit",
            "The operator-wide cap of held samples (shared evenly by the networks running at once)",
            m.samples_limit.clone(),
        );
        m.samples_limit
            .set(crate::state::DEFAULT_MAX_SAMPLES_TOTAL as i64);
        Metrics {
            registry: Arc::new(r),
            ..m
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, ok: bool, secs: f64) {
        self.reconciles.get_or_create(&outcome(ok)).inc();
        self.duration.observe(secs);
    }
    pub fn reconcile_failed(&self, reason: &'static str) {
        self.failures.get_or_create(&[("reason", reason)]).inc();
    }
    pub fn samples_limit(&self, n: usize) {
        self.samples_limit.set(n as i64);
    }
    pub fn scraped(&self, ok: bool) {
        self.scrapes.get_or_create(&outcome(ok)).inc();
    }
    pub fn prometheus_queried(&self, ok: bool) {
        self.prometheus_queries.get_or_create(&outcome(ok)).inc();
    }
    pub fn fault_put(&self, ok: bool) {
        self.fault_puts.get_or_create(&outcome(ok)).inc();
    }
    pub fn killed(&self) {
        self.pod_kills.inc();
    }
    pub fn samples(&self, network: &str, n: usize) {
        let mut h = self.held.lock().expect("not poisoned");
        h.insert(network.to_owned(), n);
        self.sync(&h);
    }
    pub fn forget(&self, network: &str) {
        let mut h = self.held.lock().expect("not poisoned");
        h.remove(network);
        self.sync(&h);
    }
    fn sync(&self, h: &HashMap<String, usize>) {
        self.networks.set(h.len() as i64);
        self.samples.set(h.values().sum::<usize>() as i64);
    }
    pub fn render(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).expect("in-memory");
        s
    }
}
