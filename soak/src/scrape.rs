//! What a scrape keeps: the text a node serves at /metrics (the Prometheus text format, or OpenMetrics when asked for: both parse alike here), reduced to the series the
//! verdicts and the report use, as one JSON line per node and scrape (`metrics.jsonl` in the run
//! directory: an open format any tool reads). Sans-IO: parsing and the record type; the runner does
//! the HTTP.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

/// The series kept, by their name in the node's /metrics (`name{labels}` for labelled ones, as
/// rendered). Counters keep their `_total` suffix.
pub const KEPT: &[&str] = &[
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_threads",
    "process_max_fds",
    "syncnet_chain_head_height",
    "syncnet_sync_target_height",
    "syncnet_sync_lag",
    "syncnet_p2p_streams",
    "syncnet_p2p_connections",
    "syncnet_p2p_stream_setups_total{outcome=\"ok\"}",
    "syncnet_p2p_discovery_rounds_total{outcome=\"productive\"}",
    "syncnet_p2p_discovery_rounds_total{outcome=\"unproductive\"}",
    "syncnet_broadcast_blocks_total{outcome=\"inserted\"}",
    // Why streams ended and why setups were refused: what a storm verdict shows next to its rate
    // (every label value of both families; closed enums in the node).
    "syncnet_p2p_stream_removals_total{reason=\"stream_error\"}",
    "syncnet_p2p_stream_removals_total{reason=\"disconnected\"}",
    "syncnet_p2p_stream_removals_total{reason=\"conflict\"}",
    "syncnet_p2p_stream_removals_total{reason=\"penalised\"}",
    "syncnet_p2p_stream_removals_total{reason=\"evicted\"}",
    "syncnet_p2p_stream_resets_total{reason=\"full\"}",
    "syncnet_p2p_stream_resets_total{reason=\"duplicate\"}",
    "syncnet_p2p_stream_resets_total{reason=\"cooldown\"}",
    "syncnet_p2p_stream_resets_total{reason=\"conflict\"}",
    "syncnet_p2p_stream_resets_total{reason=\"penalised\"}",
    "syncnet_p2p_stream_resets_total{reason=\"evicted\"}",
];

/// Derived series: every stream setup that reached a conclusion (any `outcome`), summed at parse
/// time. The original storm mostly produces refused or failed setups, which `outcome="ok"` misses.
pub const SETUPS_ALL: &str = "syncnet_p2p_stream_setups_total";
/// Derived series: every sync request served (any `kind` and `outcome`), summed at parse time: the
/// work a per-request leak is measured against.
pub const SERVED_ALL: &str = "syncnet_sync_served_total";
/// The families kept as one sum over all their labels, under the family's name.
pub const SUMMED: [&str; 2] = [SETUPS_ALL, SERVED_ALL];
/// The labels the summed families carry (a Prometheus answer keeps them, so that distinct series
/// are not taken for one).
pub const SUMMED_LABELS: [&str; 2] = ["kind", "outcome"];

/// One node's scrape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t: f64,
    pub node: String,
    /// Present only for series the node exported (a node that is down has no sample at all).
    pub values: BTreeMap<String, f64>,
}

/// Picks the kept series out of a /metrics body (either format). Lines it does not understand are skipped
/// (comments, histograms' buckets, `# EOF`); a malformed value is skipped, never a panic.
pub fn parse(body: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in body.lines() {
        if line.starts_with('#') {
            continue;
        }
        // `name{labels} value [timestamp]`; label values may hold spaces, so split after the '}'.
        let (key, rest) = match line.find('}') {
            Some(i) => (&line[..=i], &line[i + 1..]),
            None => match line.split_once(' ') {
                Some((k, r)) => (k, r),
                None => continue,
            },
        };
        let summed = SUMMED
            .iter()
            .find(|f| key.strip_prefix(**f).is_some_and(|r| r.starts_with('{')));
        if !KEPT.contains(&key) && summed.is_none() {
            continue;
        }
        if let Some(v) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            && v.is_finite()
        {
            if let Some(f) = summed {
                *out.entry((*f).to_owned()).or_insert(0.0) += v;
            }
            if KEPT.contains(&key) {
                out.insert(key.to_owned(), v);
            }
        }
    }
    out
}

pub fn write_jsonl(w: &mut impl Write, s: &Sample) -> std::io::Result<()> {
    serde_json::to_writer(&mut *w, s)?;
    w.write_all(b"\n")
}

/// Reads `metrics.jsonl`; a torn last line (the run was killed mid-write) is ignored, any other bad
/// line is an error naming its number.
pub fn read_jsonl(r: impl BufRead) -> Result<Vec<Sample>, String> {
    read_records(r, "metrics.jsonl")
}

/// Reads a JSON-lines file of records. Blank lines are skipped; a bad last record is a write torn
/// by a kill and is dropped; any other bad line is an error naming `file` and the line number.
pub fn read_records<T: serde::de::DeserializeOwned>(
    r: impl BufRead,
    file: &str,
) -> Result<Vec<T>, String> {
    let lines: Vec<String> = r
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let last = lines.iter().rposition(|l| !l.trim().is_empty());
    let mut out = vec![];
    for (i, l) in lines.iter().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(l) {
            Ok(s) => out.push(s),
            Err(_) if Some(i) == last => break,
            Err(e) => return Err(format!("{file} line {}: {e}", i + 1)),
        }
    }
    Ok(out)
}

/// One node's series of one metric, time-ordered, for the verdicts. Takes any samples (a run's
/// slice, or one node's share already grouped: see `judge`).
pub fn series<'a>(
    samples: impl IntoIterator<Item = &'a Sample>,
    node: &str,
    metric: &str,
) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = samples
        .into_iter()
        .filter(|s| s.node == node)
        .filter_map(|s| s.values.get(metric).map(|x| (s.t, *x)))
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "# HELP process_resident_memory_bytes RSS\n\
# TYPE process_resident_memory_bytes gauge\n\
process_resident_memory_bytes 12345678\n\
syncnet_chain_head_height 42\n\
syncnet_p2p_stream_setups_total{outcome=\"ok\"} 7\n\
syncnet_p2p_stream_setups_total{outcome=\"timeout\"} 3\n\
syncnet_sync_served_total{kind=\"status\",outcome=\"ok\"} 2\n\
syncnet_sync_served_total{kind=\"blocks_by_range\",outcome=\"error\"} 5\n\
syncnet_sync_request_duration_seconds_bucket{kind=\"blocks by range\",le=\"0.001\"} 5\n\
syncnet_sync_lag NaN\n\
process_threads notanumber\n\
# EOF\n";

    #[test]
    fn keeps_the_listed_series_and_skips_the_rest() {
        let m = parse(BODY);
        assert_eq!(m["process_resident_memory_bytes"], 12345678.0);
        assert_eq!(m["syncnet_chain_head_height"], 42.0);
        assert_eq!(m["syncnet_p2p_stream_setups_total{outcome=\"ok\"}"], 7.0);
        assert_eq!(m[SETUPS_ALL], 10.0, "ok + timeout");
        assert_eq!(m[SERVED_ALL], 7.0, "every kind and outcome");
        assert_eq!(m.len(), 5, "{m:?}");
        assert!(parse("garbage\n{}}} 1\n").is_empty());
    }

    #[test]
    fn jsonl_round_trips_and_tolerates_a_torn_last_line() {
        let s = |t: f64, node: &str, h: f64| Sample {
            t,
            node: node.into(),
            values: [("syncnet_chain_head_height".to_owned(), h)].into(),
        };
        let mut buf = vec![];
        for x in [s(2.0, "a", 5.0), s(1.0, "a", 3.0), s(1.0, "b", 4.0)] {
            write_jsonl(&mut buf, &x).unwrap();
        }
        buf.extend_from_slice(b"{\"t\": 3.0, \"no");
        let back = read_jsonl(&buf[..]).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(
            series(&back, "a", "syncnet_chain_head_height"),
            [(1.0, 3.0), (2.0, 5.0)]
        );
        let e = read_jsonl(&b"{bad}\n{\"t\":1}\n"[..]).unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }
}
