//! `stressnet compare RUN_A RUN_B`: two runs' summaries side by side. Reads `summary.json` as
//! plain JSON, so runs written by an older stressnet still compare on the fields they have.

use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::judge;
use crate::run_dir::SUMMARY;

pub fn load(dir: &Path) -> anyhow::Result<Value> {
    let p = dir.join(SUMMARY);
    let text = std::fs::read(&p).with_context(|| {
        format!(
            "{}: no {SUMMARY} (run `stressnet report {}` first)",
            dir.display(),
            dir.display()
        )
    })?;
    serde_json::from_slice(&text).with_context(|| p.display().to_string())
}

/// The worst leak of `metric` over the run's decided nodes: the largest slope per hour, with its
/// p and the node. Undecided nodes (too little data) have no slope to
/// speak of and are skipped. Slopes are in the spec's units ([`judge::unit_of`]); runs written
/// before those units kept memory in bytes, and say so by having no `unit`.
fn worst_slope(s: &Value, metric: &str) -> Option<Worst> {
    s["verdicts"]["leaks"]
        .as_array()?
        .iter()
        .filter(|l| l["metric"] == metric)
        .filter(|l| l["verdict"]["undecided"].is_null())
        .filter_map(|l| {
            let v = &l["verdict"];
            let k = if metric == "rss" && l["unit"].is_null() {
                1.0 / 1048576.0
            } else {
                1.0
            };
            Some(Worst {
                slope: v["slope_per_hour"].as_f64()? * k,
                p: v["p"].as_f64(),
                node: l["node"].as_str()?.to_owned(),
                leak: v["leak"].as_bool() == Some(true),
            })
        })
        .max_by(|a, b| a.slope.total_cmp(&b.slope))
}

struct Worst {
    slope: f64,
    p: Option<f64>,
    node: String,
    leak: bool,
}

fn worst_storm(s: &Value, which: &str) -> Option<(f64, String)> {
    s["verdicts"]["storms"]
        .as_array()?
        .iter()
        .filter_map(|l| {
            Some((
                l[which]["max_per_minute"].as_f64()?,
                l["node"].as_str()?.to_owned(),
            ))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

/// The rows of the comparison: (figure, value in A, value in B).
pub fn rows(a: &Value, b: &Value) -> Vec<(String, String, String)> {
    let num = |v: &Value, k: &str, d: usize| {
        v[k].as_f64().map_or("–".to_owned(), |x| format!("{x:.d$}"))
    };
    let slope = |v: &Value, m: &str| {
        let unit = judge::unit_of(m);
        worst_slope(v, m).map_or("–".to_owned(), |w| {
            format!(
                "{:.3} {unit}/h ({}, p {}{})",
                w.slope,
                w.node,
                w.p.map_or("–".to_owned(), |p| format!("{p:.1e}")),
                if w.leak { ", LEAK" } else { "" }
            )
        })
    };
    let storm = |v: &Value, which: &str| {
        worst_storm(v, which).map_or("–".to_owned(), |(x, n)| format!("{x:.1} ({n})"))
    };
    let names = |v: &Value, key: &str| -> String {
        v[key]
            .as_array()
            .map(|f| f.iter().filter_map(Value::as_str).collect::<Vec<_>>())
            .unwrap_or_default()
            .join(",")
    };
    // Runs recorded before `outcome` existed have only `pass`.
    let verdict = |v: &Value| match v["outcome"].as_str() {
        Some("inconclusive") => format!("INCONCLUSIVE {}", names(v, "undecided")),
        Some("pass") => "PASS".to_owned(),
        None if v["pass"].as_bool() == Some(true) => "PASS".to_owned(),
        _ => format!("FAIL {}", names(v, "failed")),
    };
    let catch = |v: &Value| {
        v["worst_catch_up_secs"]
            .as_f64()
            .map_or("–".to_owned(), |x| format!("{x:.1} s"))
    };
    let stuck = |v: &Value| {
        v["verdicts"]["progress"]["stuck"]
            .as_array()
            .map_or(0, Vec::len)
            .to_string()
    };
    let mut out = vec![];
    let mut row = |name: &str, f: &dyn Fn(&Value) -> String| {
        out.push((name.to_owned(), f(a), f(b)));
    };
    row("name", &|v| v["name"].as_str().unwrap_or("?").to_owned());
    row("verdict", &verdict);
    row("nodes", &|v| num(v, "nodes", 0));
    row("ran (s)", &|v| num(v, "ran_secs", 0));
    row("head", &|v| num(v, "head", 0));
    row("throughput (blocks/s)", &|v| num(v, "blocks_per_sec", 2));
    row("worst catch-up", &catch);
    row("stuck intervals", &stuck);
    row("kills", &|v| num(v, "kills", 0));
    row("crashes", &|v| num(v, "crashes", 0));
    row("worst RSS slope", &|v| slope(v, "rss"));
    row("worst CPU slope", &|v| slope(v, "cpu"));
    row("worst CPU per request slope", &|v| {
        slope(v, "cpu_per_request")
    });
    row("worst fds slope", &|v| slope(v, "fds"));
    row("worst threads slope", &|v| slope(v, "threads"));
    row("first failure", &|v| {
        v["detected"]
            .as_array()
            .and_then(|d| d.first())
            .and_then(|d| {
                Some(format!(
                    "{} at {:.0} s",
                    d["verdict"].as_str()?,
                    d["at_secs"].as_f64()?
                ))
            })
            .unwrap_or_else(|| "–".to_owned())
    });
    row("worst setups/min", &|v| storm(v, "verdict"));
    row("worst discovery rounds/min", &|v| storm(v, "discovery"));
    out
}

/// A plain-text table of [`rows`].
pub fn table(a_name: &str, b_name: &str, rows: &[(String, String, String)]) -> String {
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let w1 = rows
        .iter()
        .map(|r| r.1.chars().count())
        .chain([a_name.chars().count()])
        .max()
        .unwrap_or(0);
    let mut s = format!("{:w0$}  {a_name:w1$}  {b_name}\n", "");
    for (k, a, b) in rows {
        s.push_str(&format!("{k:w0$}  {a:w1$}  {b}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_worst_node_per_figure() {
        // An older run: memory slopes in bytes per hour (no `unit`), no p.
        let a = serde_json::json!({
            "name": "a", "pass": true, "failed": [], "nodes": 3, "ran_secs": 300.0, "head": 290,
            "blocks_per_sec": 0.97, "worst_catch_up_secs": 4.5, "kills": 2, "crashes": 0,
            "verdicts": {
                "progress": {"stuck": []},
                "leaks": [
                    {"node": "us-0", "metric": "rss", "verdict": {"slope_per_hour": 1048576.0}},
                    {"node": "us-1", "metric": "rss", "verdict": {"slope_per_hour": 3145728.0}},
                ],
                "storms": [{"node": "us-1", "verdict": {"max_per_minute": 4.0}}]
            }
        });
        // A current one: MiB/h; the undecided node's steeper slope is no figure; detections.
        let b = serde_json::json!({
            "name": "b", "outcome": "fail", "pass": false, "failed": ["leak:eu-0:rss"],
            "detected": [{"verdict": "leak:eu-0:rss", "at_secs": 212.0}],
            "verdicts": {"leaks": [
                {"node": "eu-0", "metric": "rss", "unit": "MiB",
                 "verdict": {"slope_per_hour": 12.5, "p": 0.0004, "leak": true, "undecided": null}},
                {"node": "eu-1", "metric": "rss", "unit": "MiB",
                 "verdict": {"slope_per_hour": 90.0, "p": 1.0, "leak": false,
                             "undecided": "too few windows"}},
            ]}
        });
        let r = rows(&a, &b);
        let get = |k: &str| r.iter().find(|x| x.0 == k).unwrap().clone();
        assert_eq!(get("worst RSS slope").1, "3.000 MiB/h (us-1, p –)");
        assert_eq!(
            get("worst RSS slope").2,
            "12.500 MiB/h (eu-0, p 4.0e-4, LEAK)"
        );
        assert_eq!(get("worst fds slope").2, "–");
        assert_eq!(get("first failure").1, "–");
        assert_eq!(get("first failure").2, "leak:eu-0:rss at 212 s");
        assert_eq!(get("verdict").1, "PASS");
        assert_eq!(get("verdict").2, "FAIL leak:eu-0:rss");
        assert_eq!(get("worst catch-up").1, "4.5 s");
        assert_eq!(get("worst setups/min").1, "4.0 (us-1)");
        let t = table("A", "B", &r);
        assert!(t.lines().count() == r.len() + 1, "{t}");
    }
}
