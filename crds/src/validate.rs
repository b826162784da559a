//! Validation: [`SyncNetworkSpec::validate`], the complete check both backends run, name checks,
//! and [`SyncNetwork::from_yaml`]; every error names its field.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::{
    API_VERSION, FaultAction, FaultParam, FaultSpec, KIND, MAX_FAULT_REGIONS, MAX_FAULTS, MAX_NAME,
    MAX_NODES, MAX_REGION_NAME, MAX_REGIONS, RegionSpec, SyncNetwork, SyncNetworkSpec,
    SyncNetworkStatus,
};

/// A rejected spec: which field (a dotted path), and why. The same type as every other
/// validation's (node config, fault sets).
pub type SpecError = syncnet_proto::error::FieldError;

fn err(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::new(field, message)
}

/// Names (regions, faults): what a Kubernetes label value accepts, minus upper case; the node
/// checks region names with the same function.
pub use syncnet_proto::error::validate_name;

/// Region names: a label value that, after `<network>-`, still names a StatefulSet.
pub fn validate_region_name(r: &str) -> Result<(), String> {
    validate_name(r)?;
    if r.len() > MAX_REGION_NAME {
        return Err(format!(
            "{r:?} is too long: at most {MAX_REGION_NAME} characters (`<network>-<region>` names a StatefulSet)"
        ));
    }
    Ok(())
}

/// Network names (`metadata.name`): the network id, and the prefix of every object the operator
/// makes, so a DNS-1035 label (Service names must start with a letter; no dots) of at most
/// [`MAX_NAME`] characters.
pub fn validate_network_name(n: &str) -> Result<(), String> {
    let ok = n.bytes().next().is_some_and(|b| b.is_ascii_lowercase()) && validate_name(n).is_ok();
    if !ok {
        return Err(format!(
            "{n:?} is not a valid network name (a-z, 0-9 and '-', starting with a letter, not ending in '-')"
        ));
    }
    if n.len() > MAX_NAME {
        return Err(format!(
            "{n:?} is too long: at most {MAX_NAME} characters (it is the network id)"
        ));
    }
    Ok(())
}

impl SyncNetwork {
    /// Parses a SyncNetwork YAML document (the file `kubectl apply` takes) and validates it.
    /// Unknown fields and wrong types name their path.
    pub fn from_yaml(text: &str) -> Result<SyncNetwork, SpecError> {
        // The derived root type takes apiVersion and kind as given; this one checks them and
        // refuses unknown top-level fields.
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Doc {
            api_version: String,
            kind: String,
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
            spec: SyncNetworkSpec,
            #[serde(default)]
            status: Option<SyncNetworkStatus>,
        }
        let de = serde_yaml::Deserializer::from_str(text);
        let doc: Doc = serde_path_to_error::deserialize(de).map_err(|e| {
            // A syntax error has no field yet: serde_path_to_error says "?" for it.
            let path = e.path().to_string();
            let path = path.trim_end_matches(".?").to_owned();
            let message = yaml_message(&path, &e.inner().to_string(), text);
            err(if path == "." { "document".into() } else { path }, message)
        })?;
        if doc.api_version != API_VERSION || doc.kind != KIND {
            return Err(err(
                "apiVersion",
                format!(
                    "expected {API_VERSION} {KIND}, got {} {}",
                    doc.api_version, doc.kind
                ),
            ));
        }
        let name = doc.metadata.name.as_deref().unwrap_or("");
        validate_network_name(name).map_err(|e| err("metadata.name", e))?;
        doc.spec.validate()?;
        Ok(SyncNetwork {
            metadata: doc.metadata,
            spec: doc.spec,
            status: doc.status,
        })
    }
}

/// serde_yaml's message for an error at `path`, without the path it repeats ("spec: spec:
/// missing field ..."). A missing field is reported at the start of its parent mapping; when a
/// key of that name is in the text, mis-indented into another mapping that ignores it, its line
/// is what the author needs.
fn yaml_message(path: &str, inner: &str, text: &str) -> String {
    let message = match inner.split_once(": ") {
        Some((prefix, rest)) if !prefix.is_empty() && path.starts_with(prefix) => rest,
        _ => inner,
    };
    let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.split_once('`'))
        .map(|(f, _)| f)
    else {
        return message.to_owned();
    };
    let key = format!("{field}:");
    let all: Vec<&str> = text.lines().collect();
    let key_of = |l: &str| {
        let t = l.trim_start();
        let t = t.strip_prefix("- ").unwrap_or(t).trim_start();
        t.split_once(':').map(|(k, _)| k.trim().to_owned())
    };
    let indent = |l: &str| l.len() - l.trim_start().len();
    // Where each stray key is, and what it ended up under: the nearest line above it indented
    // less (the misplaced line is often that one, e.g. a `faults:` dedented to the top level
    // that takes the keys after it along).
    let found: Vec<String> = (all.iter().enumerate())
        .filter(|(_, l)| key_of(l).as_deref() == Some(field))
        .take(3)
        .map(|(i, l)| {
            let parent = (0..i).rev().find(|&j| {
                let t = all[j].trim_start();
                !t.is_empty() && !t.starts_with('#') && indent(all[j]) < indent(l)
            });
            let under = match parent.and_then(|j| key_of(all[j]).map(|k| (j, k))) {
                _ if indent(l) == 0 => " (at the top level)".to_owned(),
                Some((j, _)) if all[j].trim_start().starts_with("- ") => {
                    format!(" (in the list item at line {})", j + 1)
                }
                Some((j, k)) => format!(" (under `{k}:` at line {})", j + 1),
                None => String::new(),
            };
            format!("line {}{under}", i + 1)
        })
        .collect();
    if found.is_empty() {
        return message.to_owned();
    }
    let parent = path.rsplit('.').next().filter(|p| !p.is_empty());
    format!(
        "{message}; `{key}` is at {}{}: check the indentation there and of the lines above it",
        found.join(", "),
        parent.map_or(String::new(), |p| format!(", not under `{p}:`")),
    )
}

impl SyncNetworkSpec {
    pub fn total_nodes(&self) -> u32 {
        // Saturating: an invalid spec (a stored object the schema let through) must not panic.
        self.regions
            .iter()
            .fold(0u32, |a, r| a.saturating_add(r.replicas))
    }

    fn region(&self, name: &str) -> Option<&RegionSpec> {
        self.regions.iter().find(|r| r.name == name)
    }

    /// Cross-field checks, each error naming its field.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.regions.is_empty() {
            return Err(err("spec.regions", "at least one region is needed"));
        }
        if self.regions.len() > MAX_REGIONS {
            return Err(err(
                "spec.regions",
                format!("at most {MAX_REGIONS} regions"),
            ));
        }
        if self.faults.len() > MAX_FAULTS {
            return Err(err("spec.faults", format!("at most {MAX_FAULTS} faults")));
        }
        let mut seen = BTreeSet::new();
        for (i, r) in self.regions.iter().enumerate() {
            validate_region_name(&r.name).map_err(|e| err(format!("spec.regions[{i}].name"), e))?;
            if !seen.insert(r.name.as_str()) {
                return Err(err(
                    format!("spec.regions[{i}].name"),
                    format!("{:?} appears twice", r.name),
                ));
            }
            if r.replicas == 0 {
                return Err(err(format!("spec.regions[{i}].replicas"), "must be >= 1"));
            }
        }
        if self.total_nodes() > MAX_NODES {
            return Err(err(
                "spec.regions",
                format!("{} nodes in total; at most {MAX_NODES}", self.total_nodes()),
            ));
        }
        for (from, row) in &self.latency.matrix_ms {
            if self.region(from).is_none() {
                return Err(err(
                    format!("spec.latency.matrixMs.{from}"),
                    format!("unknown region {from:?}"),
                ));
            }
            for (to, ms) in row {
                let field = format!("spec.latency.matrixMs.{from}.{to}");
                if self.region(to).is_none() {
                    return Err(err(field, format!("unknown region {to:?}")));
                }
                if *ms > 10_000 {
                    return Err(err(field, "at most 10000 ms"));
                }
                let back = self.latency.matrix_ms.get(to).and_then(|r| r.get(from));
                if !self.latency.directed
                    && let Some(b) = back
                    && b != ms
                {
                    return Err(err(
                        field,
                        format!(
                            "{ms} ms here but {b} ms for {to} -> {from}; set latency.directed: true \
                             for an asymmetric matrix, or give one direction"
                        ),
                    ));
                }
            }
        }
        if self.latency.jitter_ms > 10_000 {
            return Err(err("spec.latency.jitterMs", "at most 10000 ms"));
        }
        if self.bandwidth.upload_mbit == Some(0) {
            return Err(err(
                "spec.bandwidth.uploadMbit",
                "must be > 0 (leave it out for unlimited)",
            ));
        }
        let p = &self.producer;
        if self.region(&p.region).is_none() {
            return Err(err(
                "spec.producer.region",
                format!("unknown region {:?}", p.region),
            ));
        }
        if !(1..=3_600_000).contains(&p.block_interval_ms) {
            return Err(err(
                "spec.producer.blockIntervalMs",
                "must be within 1..=3600000",
            ));
        }
        if p.payload_bytes > 8 * 1024 * 1024 {
            return Err(err("spec.producer.payloadBytes", "at most 8 MiB"));
        }
        if let (Some(lo), Some(hi)) = (self.sync.streams_low, self.sync.streams_high)
            && lo > hi
        {
            return Err(err("spec.sync.streamsLow", "must not exceed streamsHigh"));
        }
        for (i, f) in self.faults.iter().enumerate() {
            self.validate_fault(f)
                .map_err(|e| err(format!("spec.faults[{i}].{}", e.field), e.message))?;
        }
        let s = &self.soak;
        if s.duration_secs == 0 {
            return Err(err("spec.soak.durationSecs", "must be > 0"));
        }
        if s.warmup_secs >= s.duration_secs {
            return Err(err(
                "spec.soak.warmupSecs",
                "must be below durationSecs (nothing would be judged)",
            ));
        }
        if s.scrape_interval_secs == 0 || s.scrape_interval_secs > s.duration_secs {
            return Err(err(
                "spec.soak.scrapeIntervalSecs",
                "must be within 1..=durationSecs",
            ));
        }
        let v = &self.verdicts;
        if !(v.leak_p > 0.0 && v.leak_p < 1.0) {
            return Err(err("spec.verdicts.leakP", "must be within (0, 1)"));
        }
        for (name, x) in [
            ("leakSlopeMibPerHour", v.leak_slope_mib_per_hour),
            ("fdsPerHour", v.fds_per_hour),
            ("threadsPerHour", v.threads_per_hour),
            ("cpuCoresPerHour", v.cpu_cores_per_hour),
            ("cpuMsPerRequestPerHour", v.cpu_ms_per_request_per_hour),
            ("cpuCores", v.cpu_cores),
            ("setupsPerMinute", v.setups_per_minute),
        ] {
            if !(x.is_finite() && x >= 0.0) {
                return Err(err(format!("spec.verdicts.{name}"), "must be >= 0"));
            }
        }
        if let Some(p) = &v.production {
            for (name, x, min) in [
                ("setupsPerHour", p.setups_per_hour, 0.0),
                ("requestsPerHour", p.requests_per_hour, 0.0),
                ("blocksPerHour", p.blocks_per_hour, 0.0),
                ("memoryLimitMiB", p.memory_limit_mib, 1.0),
            ] {
                if let Some(x) = x
                    && !(x.is_finite() && (min..=1.0e9).contains(&x))
                {
                    return Err(err(
                        format!("spec.verdicts.production.{name}"),
                        format!("must be within {min}..=1e9"),
                    ));
                }
            }
        }
        if v.restart_warmup_secs > 86_400 {
            return Err(err("spec.verdicts.restartWarmupSecs", "must be <= 86400"));
        }
        if v.leak_bucket_secs == 0 || v.catch_up_secs == 0 {
            return Err(err(
                "spec.verdicts",
                "leakBucketSecs and catchUpSecs must be > 0",
            ));
        }
        Ok(())
    }

    /// Checks one fault; the error's field is relative to the fault.
    fn validate_fault(&self, f: &FaultSpec) -> Result<(), SpecError> {
        validate_name(&f.name).map_err(|e| err("name", e))?;
        match (f.at_secs, f.every_secs) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(err("atSecs", "give exactly one of atSecs and everySecs"));
            }
            (None, Some(0)) => return Err(err("everySecs", "must be > 0")),
            (None, Some(e)) if f.duration_secs >= e => {
                return Err(err(
                    "durationSecs",
                    "must be below everySecs (the next round would start before this one ends)",
                ));
            }
            _ => {}
        }
        if f.duration_secs == 0 {
            return Err(err("durationSecs", "must be > 0"));
        }
        let t = &f.target;
        let pool = match &t.region {
            Some(r) => match self.region(r) {
                Some(r) => r.replicas,
                None => return Err(err("target.region", format!("unknown region {r:?}"))),
            },
            None => self.total_nodes(),
        };
        if t.count.is_some() && t.fraction.is_some() {
            return Err(err("target.count", "give count or fraction, not both"));
        }
        if let Some(c) = t.count
            && (c == 0 || c > pool)
        {
            return Err(err(
                "target.count",
                format!("must be within 1..={pool} (the nodes it selects from)"),
            ));
        }
        if let Some(x) = t.fraction
            && !(x > 0.0 && x <= 1.0)
        {
            return Err(err("target.fraction", "must be within (0, 1]"));
        }
        let need = |ok: bool, field: &str, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(err(field, format!("{} needs {what}", f.action.label())))
            }
        };
        match f.action.parameter() {
            Some(FaultParam::Rate) => {
                let r = f.rate.unwrap_or(-1.0);
                need((0.0..=1.0).contains(&r), "rate", "a probability 0..1")?;
            }
            Some(FaultParam::Ms) => {
                need(f.ms.is_some_and(|m| m > 0), "ms", "milliseconds > 0")?;
            }
            Some(FaultParam::KibPerSetup) => {
                need(
                    f.kib_per_setup.is_some_and(|k| (1..=16_384).contains(&k)),
                    "kibPerSetup",
                    "1..=16384 KiB",
                )?;
            }
            Some(FaultParam::Regions) => {
                if f.regions.len() > MAX_FAULT_REGIONS {
                    return Err(err(
                        "regions",
                        format!("at most {MAX_FAULT_REGIONS} regions"),
                    ));
                }
                for (i, r) in f.regions.iter().enumerate() {
                    if self.region(r).is_none() {
                        return Err(err(
                            format!("regions[{i}]"),
                            format!("unknown region {r:?}"),
                        ));
                    }
                }
            }
            Some(FaultParam::SetupsPerLeak) => {
                need(
                    f.setups_per_leak
                        .is_some_and(|k| (1..=1_000_000).contains(&k)),
                    "setupsPerLeak",
                    "1..=1000000 setups",
                )?;
            }
            Some(FaultParam::UsPerRequestPerMinute) => {
                need(
                    f.us_per_request_per_minute
                        .is_some_and(|k| (1..=10_000).contains(&k)),
                    "usPerRequestPerMinute",
                    "1..=10000 µs",
                )?;
            }
            None => {}
        }
        if matches!(
            f.action,
            FaultAction::ChunkDrop | FaultAction::CorruptChunks
        ) && self.broadcast.mode != crate::BroadcastMode::Ida
        {
            return Err(err(
                "action",
                format!(
                    "{} acts on IDA chunks: it needs broadcast.mode ida",
                    f.action.label()
                ),
            ));
        }
        // Parameters an action does not use are mistakes, not silently ignored.
        let unused = FaultParam::ALL.map(|p| {
            let given = match p {
                FaultParam::Rate => f.rate.is_some(),
                FaultParam::Ms => f.ms.is_some(),
                FaultParam::KibPerSetup => f.kib_per_setup.is_some(),
                FaultParam::SetupsPerLeak => f.setups_per_leak.is_some(),
                FaultParam::UsPerRequestPerMinute => f.us_per_request_per_minute.is_some(),
                FaultParam::Regions => !f.regions.is_empty(),
            };
            (p.field(), given, f.action.parameter() == Some(p))
        });
        for (field, given, used) in unused {
            if given && !used {
                return Err(err(
                    field,
                    format!("not a parameter of {}", f.action.label()),
                ));
            }
        }
        Ok(())
    }
}
