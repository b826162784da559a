//! `stressnet compare RUN_A RUN_B`: two runs' summaries side by side. Reads `summary.json` as
//! plain JSON, so runs written by an older stressnet still compare on the fields they have.

use std::path::Path;

use anyhow::Context;
use serde_json::Value;

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

/// The worst (largest) leak slope per hour of `metric` over the run's nodes, with its node.
fn worst_slope(s: &Value, metric: &str) -> Option<(f64, String)> {
    s["verdicts"]["leaks"]
        .as_array()?
        .iter()
        .filter(|l| l["metric"] == metric)
        .filter_map(|l| {
            Some((
                l["verdict"]["slope_per_hour"].as_f64()?,
                l["node"].as_str()?.to_owned(),
            ))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
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
    let slope = |v: &Value, m: &str, k: f64, unit: &str| {
        worst_slope(v, m).map_or("–".to_owned(), |(x, n)| {
            format!("{:.3}{unit} ({n})", x * k)
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
    row("worst RSS slope", &|v| {
        slope(v, "rss", 1.0 / 1048576.0, " MiB/h")
    });
    row("worst CPU slope", &|v| slope(v, "cpu", 1.0, " cores/h"));
    row("worst CPU per request slope", &|v| {
        slope(v, "cpu_per_request", 1.0, " ms/request/h")
    });
    row("worst fds slope", &|v| slope(v, "fds", 1.0, "/h"));
    row("worst threads slope", &|v| slope(v, "threads", 1.0, "/h"));
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
        let b = serde_json::json!({"name": "b", "pass": false, "failed": ["leak:eu-0:rss"]});
        let r = rows(&a, &b);
        let get = |k: &str| r.iter().find(|x| x.0 == k).unwrap().clone();
        assert_eq!(get("worst RSS slope").1, "3.000 MiB/h (us-1)");
        assert_eq!(get("worst RSS slope").2, "–");
        assert_eq!(get("verdict").1, "PASS");
        assert_eq!(get("verdict").2, "FAIL leak:eu-0:rss");
        assert_eq!(get("worst catch-up").1, "4.5 s");
        assert_eq!(get("worst setups/min").1, "4.0 (us-1)");
        let t = table("A", "B", &r);
        assert!(t.lines().count() == r.len() + 1, "{t}");
    }
}
