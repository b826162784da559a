//! `report.html`: the self-contained page with the figures, verdict tables, charts and events.

use std::fmt::Write as _;

use super::{Chart, RunSummary};
use crate::attribution;
use crate::judge;
use crate::run_dir::{Event, RunInfo};
use crate::verdict;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or("–".into(), |x| format!("{x:.digits$}"))
}

/// The self-contained report: figures, verdict tables, charts inline, the event log.
pub fn html(
    info: &RunInfo,
    s: &RunSummary,
    charts: &[Chart],
    svgs: &[String],
    events: &[Event],
) -> String {
    let mut h = String::new();
    let verdict = s.outcome.label();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>stressnet: {name} {verdict}</title>\
<style>body{{font-family:sans-serif;font-size:15px;margin:1.5em;max-width:1150px}}table{{border-collapse:collapse;margin:.5em 0 1.5em}}\
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}table.strip td{{white-space:nowrap;font-size:90%}}td.n{{text-align:right;font-variant-numeric:tabular-nums}}\
.pass{{color:#080}}.fail{{color:#b00;font-weight:bold}}.warn{{color:#a60}}td.cfail{{background:#fbdede}}td.cwarn{{background:#fdf1d6}}td.cpass{{background:#e3f4e3}}\
.badge{{font-size:150%;padding:2px 10px;border-radius:4px;color:#fff}}svg{{max-width:100%;height:auto}}</style></head><body>\
<h1>stressnet run <code>{name}</code> <span class=\"badge\" style=\"background:{bg}\">{verdict}</span></h1>",
        name = esc(&s.name),
        bg = match s.outcome {
            judge::Outcome::Pass => "#080",
            judge::Outcome::Fail => "#b00",
            judge::Outcome::Inconclusive => "#b60",
        },
    );
    if !s.failed.is_empty() {
        let named: Vec<String> = s
            .failed
            .iter()
            .map(|f| match s.detected.iter().find(|d| d.verdict == *f) {
                Some(d) => format!("{} (from {:.0} s)", esc(f), d.at_secs),
                None => esc(f),
            })
            .collect();
        let _ = write!(
            h,
            "<p class=\"fail\">Failed: {}</p><p>(from: the run time by which the samples first failed the verdict.)</p>",
            named.join(", ")
        );
    }
    if !s.undecided.is_empty() {
        let _ = write!(
            h,
            "<p class=\"fail\">Not judged (too little data after the warm-ups): {}</p>",
            esc(&s.undecided.join(", "))
        );
    }
    if s.interrupted {
        h.push_str("<p class=\"fail\">The run was interrupted; verdicts cover what ran, and it cannot pass.</p>");
    }
    let _ = write!(
        h,
        "<table><tr><th>nodes</th><td>{}</td><th>regions</th><td>{}</td><th>seed</th><td>{}</td></tr>\
<tr><th>ran</th><td>{:.0} s of {} s</td><th>head</th><td>{}</td><th>blocks/s</th><td>{:.2}</td></tr>\
<tr><th>faults</th><td>{}</td><th>kills</th><td>{}</td><th>crashes</th><td>{}</td></tr>\
<tr><th>worst catch-up</th><td>{}</td><th>broadcast</th><td>{}</td><th>block interval</th><td>{} ms</td></tr></table>",
        s.nodes,
        info.spec.regions.len(),
        s.seed,
        s.ran_secs,
        s.planned_secs,
        s.head,
        s.blocks_per_sec,
        s.faults,
        s.kills,
        s.crashes,
        s.worst_catch_up_secs
            .map_or("–".into(), |x| format!("{x:.1} s")),
        format!("{:?}", info.spec.broadcast.mode).to_lowercase(),
        info.spec.producer.block_interval_ms,
    );

    node_strip(&mut h, info, s);

    h.push_str("<h2>Fault schedule</h2><table><tr><th>fault</th><th>action</th><th>from</th><th>to</th><th>targets</th></tr>");
    for w in &info.schedule {
        let targets: Vec<&str> = w
            .targets
            .iter()
            .filter_map(|i| info.nodes.get(*i).map(|n| n.name.as_str()))
            .collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{} s</td><td>{} s</td><td>{}</td></tr>",
            esc(&w.name),
            w.action.label(),
            w.start,
            w.end,
            targets.join(", ")
        );
    }
    h.push_str("</table>");

    h.push_str(
        "<h2>Charts</h2><p>Shaded: kills and partitions (other faults: see the schedule). Blue dashed: the end of the \
warm-up. Red dashed: the verdict's bound. On the leak charts, the solid grey line is the worst node's fitted trend \
(the verdict's slope) and the dashed one its budget from the same start. Nodes a verdict flagged are red and thick, the \
others faint. Each y-axis spans its data (<code>--zero-based</code> starts them at zero).</p>",
    );
    for (c, svg) in charts.iter().zip(svgs) {
        let _ = write!(
            h,
            "<div id=\"{}\">{svg}</div>",
            c.file.trim_end_matches(".svg")
        );
    }

    let v = &s.verdicts;
    let node = |i: usize| info.nodes.get(i).map_or("?", |n| n.name.as_str());
    let _ = write!(
        h,
        "<h2>Sync progress: <span class=\"{}\">{}</span></h2>\
<p>Every node within {} blocks of the head at most {} s after each fault ends; no node lagging longer outside faults.</p>\
<table><tr><th>fault ended</th><th>slowest catch-up</th><th>node</th><th>ok</th></tr>",
        if v.progress.pass { "pass" } else { "fail" },
        if v.progress.pass { "pass" } else { "FAIL" },
        info.spec.verdicts.catch_up_blocks,
        info.spec.verdicts.catch_up_secs,
    );
    let run_end = s.planned_secs as f64;
    for c in &v.progress.catch_ups {
        if c.fault_end >= run_end {
            let _ = write!(
                h,
                "<tr><td>at the end ({:.0} s)</td><td colspan=\"3\">the fault lasted the whole run: no catch-up to judge (its effect is in the stuck check and the charts)</td></tr>",
                c.fault_end
            );
            continue;
        }
        let _ = write!(
            h,
            "<tr><td>{:.0} s</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            c.fault_end,
            match (c.worst_secs, c.worst_behind_secs) {
                (None, _) => "never".into(),
                // The samples bound it: behind at the first, caught up at the second.
                (Some(x), Some(b)) => format!("{b:.1}–{x:.1} s"),
                (Some(x), None) => format!("≤ {x:.1} s"),
            },
            c.worst_node.map_or("–", node),
            if c.ok { "yes" } else { "<b>no</b>" }
        );
    }
    h.push_str("</table>");
    if !v.progress.stuck.is_empty() {
        h.push_str("<table><tr><th>stuck node</th><th>from</th><th>to</th></tr>");
        for st in &v.progress.stuck {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{:.0} s</td><td>{:.0} s</td></tr>",
                node(st.node),
                st.from,
                st.to
            );
        }
        h.push_str("</table>");
    }

    let vs = &info.spec.verdicts;
    let _ = write!(
        h,
        "<h2>Leaks</h2><p>Per node and resource over the node's whole life, every incarnation (process start) \
after its warm-up ({} s at the first start, {} s after a restart), {} s medians and minima. A leak needs a trend \
(Mann–Kendall with the Hamed–Rao correction, summed over incarnations, p &lt; {}), a pooled Theil–Sen slope over the budget \
for the medians and for the minima (the floor), and growth in the last third of at least half the budget; \
significant growth that fails the last two is a high-water mark. A node restarted so often that no life outgrows its warm-up is judged <i>between lives</i>: the levels its restarted lives reached at the same age, life after life (growth that carries over restarts; the same tests, budget and floor). \
<code>cpu_per_request</code> is the process's CPU over the requests it served, per scrape. Slopes are per hour in the spec's units; \
<i>× budget</i> is the slope over its budget; the limit is <code>verdicts.production.memoryLimitMiB</code> for memory, the \
process's soft fd limit for fds and <code>verdicts.cpuCores</code> for CPU. Rows: flagged and undecided first, then by slope over budget.</p>\
<table><tr><th>node</th><th>resource</th><th>unit</th><th>lives</th><th>points</th><th>slope / h</th><th>budget / h</th><th>× budget</th>\
<th>floor / h</th><th>last third / h</th><th>p</th><th>limit</th><th>time to limit</th><th>verdict</th></tr>",
        info.spec.soak.warmup_secs, vs.restart_warmup_secs, vs.leak_bucket_secs, vs.leak_p,
    );
    let mut rows: Vec<&judge::NodeLeak> = v.leaks.iter().collect();
    rows.sort_by(|a, b| {
        leak_rank(a)
            .cmp(&leak_rank(b))
            .then(ratio(b).total_cmp(&ratio(a)))
            .then(a.node.cmp(&b.node))
    });
    // The rows that need reading, then the quiet rest folded away (a node and resource each).
    const SHOWN: usize = 12;
    let shown = rows
        .iter()
        .take_while(|l| leak_rank(l) < 2)
        .count()
        .max(SHOWN.min(rows.len()));
    for (k, l) in rows.iter().enumerate() {
        if k == shown {
            let _ = write!(
                h,
                "</table><details><summary>{} more rows: every one ok</summary><table>",
                rows.len() - shown
            );
        }
        leak_row(&mut h, l);
    }
    h.push_str("</table>");
    if shown < rows.len() {
        h.push_str("</details>");
    }

    // RSS per unit of work, and the projection to production when the spec gives one.
    let production = vs.production.as_ref();
    let _ = write!(
        h,
        "<h2>Memory per unit of work{}</h2><p>RSS against each process's cumulative stream setups, requests served \
and blocks (pooled Theil–Sen within incarnations, 95% interval): a leak that grows with work costs the same per unit \
whatever the pace of the run.{}</p><table><tr><th>node</th><th>per setup</th><th>per request</th><th>per block</th>\
<th>at production</th></tr>",
        if production.is_some() { " and projection" } else { "" },
        match production.and_then(|p| p.memory_limit_mib) {
            Some(l) => format!(
                " At production rates (setups {}/h, requests {}/h, blocks {}/h) each node's growth is the fastest of its \
growth by time and its growth per unit times the rate; the time to reach {l} MiB follows, with the interval's \
soonest and latest.",
                opt(production.and_then(|p| p.setups_per_hour), 0),
                opt(production.and_then(|p| p.requests_per_hour), 0),
                opt(production.and_then(|p| p.blocks_per_hour), 0),
            ),
            None => " Set <code>verdicts.production</code> (rates and <code>memoryLimitMiB</code>) for a projection.".to_owned(),
        }
    );
    for l in v.leaks.iter().filter(|l| l.metric == "rss") {
        let unit = |u: &str| {
            l.per_unit
                .iter()
                .find(|(n, _)| *n == u)
                .map_or("–".to_owned(), |(_, p)| {
                    // Reported in MiB per unit, shown in KiB (a leak per setup is small).
                    format!(
                        "{:.1} KiB ({:.1}–{:.1})",
                        p.per_unit * 1024.0,
                        p.low * 1024.0,
                        p.high * 1024.0
                    )
                })
        };
        let hours = |h: Option<f64>| h.map_or("∞".to_owned(), |h| format!("{h:.0} h"));
        let projected = l.projection.as_ref().map_or("–".to_owned(), |p| {
            format!(
                "{:.2} MiB/h by {}: limit in {} ({} – {})",
                p.per_hour,
                p.driver,
                hours(p.hours),
                hours(p.hours_soonest),
                hours(p.hours_latest)
            )
        });
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&l.node),
            unit("setup"),
            unit("request"),
            unit("block"),
            esc(&projected)
        );
    }
    h.push_str("</table>");

    let _ = write!(
        h,
        "<h2>CPU</h2><p>Cores in use per node over its life after the warm-ups; a mean over {} cores fails.</p>\
<table><tr><th>node</th><th>points</th><th>mean</th><th>p95</th><th>verdict</th></tr>",
        vs.cpu_cores
    );
    for c in &v.cpu {
        let cv = &c.verdict;
        let word = match (cv.over, cv.undecided) {
            (true, _) => "<b class=\"fail\">OVER</b>".to_owned(),
            (false, Some(why)) => format!("<b>undecided</b> ({})", esc(why)),
            (false, None) => "ok".to_owned(),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{word}</td></tr>",
            esc(&c.node),
            cv.points,
            cv.mean,
            cv.p95,
        );
    }
    h.push_str("</table>");

    let _ = write!(
        h,
        "<h2>Storms</h2><p>Stream setups (any outcome) and discovery rounds per minute after the warm-up; bound {} each.</p>\
<table><tr><th>node</th><th>setups, worst minute</th><th>at</th><th>why streams ended or were refused in that minute</th><th>discovery rounds, worst minute</th><th>verdict</th></tr>",
        info.spec.verdicts.setups_per_minute
    );
    for st in &v.storms {
        let causes = st
            .causes
            .iter()
            .map(|c| format!("{} {:.0}", c.what, c.count))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td></tr>",
            esc(&st.node),
            st.verdict.max_per_minute,
            st.verdict.at.map_or("–".into(), |t| format!("{t:.0} s")),
            if causes.is_empty() {
                "–".into()
            } else {
                causes
            },
            st.discovery.max_per_minute,
            if st.verdict.storm || st.discovery.storm {
                "<b class=\"fail\">STORM</b>"
            } else {
                "ok"
            }
        );
    }
    h.push_str("</table>");

    where_section(&mut h, s);

    const MAX_EVENTS: usize = 1000;
    let _ = write!(
        h,
        "<h2>Events</h2><table><tr><th>t</th><th>event</th><th>node</th><th>detail</th></tr>"
    );
    for e in events.iter().take(MAX_EVENTS) {
        let _ = write!(
            h,
            "<tr><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.t,
            e.kind.label(),
            esc(e.node.as_deref().unwrap_or("")),
            esc(&e.detail)
        );
    }
    h.push_str("</table>");
    if events.len() > MAX_EVENTS {
        let _ = write!(
            h,
            "<p>{} more events in events.jsonl.</p>",
            events.len() - MAX_EVENTS
        );
    }
    h.push_str("</body></html>\n");
    h
}

/// "Where": the profiles' top growing allocation sites and top CPU sites, flagged nodes first.
fn where_section(h: &mut String, s: &RunSummary) {
    h.push_str("<h2>Where: profiles</h2>");
    if let Some(e) = &s.attribution_error {
        let _ = write!(
            h,
            "<p class=\"fail\">The profiles could not be read: {}</p>",
            esc(e)
        );
    }
    if s.attribution.is_empty() {
        h.push_str("<p>No profiles in this run.</p>");
        return;
    }
    h.push_str(
        "<p>Heap: bytes in use per allocation site at the end of the run minus at the end of the warm-up (jemalloc's sampling profiler, an estimate; the site is the first frame outside the allocator and the standard library). CPU: share of samples per site over the run's last seconds. Raw pprof files are in <code>profiles/</code> (<code>go tool pprof -top FILE</code>).</p><table><tr><th>node</th><th>flagged</th><th>heap warm-up → end</th><th>top growth</th><th>top CPU</th></tr>",
    );
    let flagged = |node: &str| -> Vec<&str> {
        s.failed
            .iter()
            .filter(|f| {
                f.split(':').nth(1) == Some(node)
                    && (f.starts_with("leak:") || f.starts_with("cpu:") || f.starts_with("storm:"))
            })
            .map(String::as_str)
            .collect()
    };
    let mut rows: Vec<&attribution::NodeAttribution> = s.attribution.iter().collect();
    rows.sort_by_key(|a| flagged(&a.node).is_empty());
    let mib = |b: Option<f64>| b.map_or("–".to_owned(), |b| format!("{:.1} MiB", b / 1048576.0));
    let sites = |v: &[attribution::Site], fmt: &dyn Fn(f64) -> String| {
        if v.is_empty() {
            return "–".to_owned();
        }
        v.iter()
            .map(|x| {
                format!(
                    "<span title=\"{}\"><code>{}</code> {}</span>",
                    esc(&x.stack.join(" ← ")),
                    esc(&x.site),
                    fmt(x.value)
                )
            })
            .collect::<Vec<_>>()
            .join("<br>")
    };
    for a in rows {
        let f = flagged(&a.node);
        let notes = if a.notes.is_empty() {
            String::new()
        } else {
            format!("<br><small>{}</small>", esc(&a.notes.join("; ")))
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td>{} → {}</td><td>{}{notes}</td><td>{}</td></tr>",
            esc(&a.node),
            if f.is_empty() { "pass" } else { "fail" },
            if f.is_empty() {
                "–".to_owned()
            } else {
                esc(&f.join(" "))
            },
            mib(a.heap_warmup_bytes),
            mib(a.heap_end_bytes),
            sites(&a.heap_growth, &|b| format!("+{:.2} MiB", b / 1048576.0)),
            sites(&a.cpu, &|x| format!("{:.0}%", x * 100.0)),
        );
    }
    h.push_str("</table>");
}

/// A p-value: two decimals, or the exponent once it is small.
fn p_value(p: f64) -> String {
    if p >= 0.01 {
        format!("{p:.2}")
    } else {
        format!("{p:.1e}")
    }
}

/// Sort key of a leak row: flagged, undecided, the rest.
fn leak_rank(l: &judge::NodeLeak) -> u8 {
    match (l.verdict.leak, l.verdict.undecided) {
        (true, _) => 0,
        (false, Some(u)) if u != judge::NOT_SERVING => 1,
        _ => 2,
    }
}

/// Slope over budget (the slope itself when there is no budget).
fn ratio(l: &judge::NodeLeak) -> f64 {
    if l.verdict.undecided.is_some() {
        f64::NEG_INFINITY
    } else if l.budget_per_hour > 0.0 {
        l.verdict.slope_per_hour / l.budget_per_hour
    } else {
        l.verdict.slope_per_hour
    }
}

/// A number in a unit, with as many decimals as its size needs.
pub(super) fn amount(x: f64) -> String {
    let a = x.abs();
    if a == 0.0 || a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn leak_row(h: &mut String, l: &judge::NodeLeak) {
    let lv = &l.verdict;
    let u = l.unit;
    let (word, class) = match (lv.leak, lv.high_water, lv.undecided) {
        (true, _, _) => ("<b>LEAK</b>".to_owned(), "cfail"),
        (false, _, Some(judge::NOT_SERVING)) => ("n/a (served too little)".to_owned(), ""),
        (false, _, Some(why)) => (format!("<b>undecided</b> ({})", esc(why)), "cwarn"),
        (false, true, None) if lv.jumps > 0 => {
            (format!("ok (high-water mark, {} jumps)", lv.jumps), "cwarn")
        }
        (false, true, None) => ("ok (high-water mark)".to_owned(), "cwarn"),
        (false, false, None) => ("ok".to_owned(), "cpass"),
    };
    let basis = if lv.basis == verdict::BETWEEN_LIVES && lv.undecided.is_none() {
        " (between lives)"
    } else {
        ""
    };
    let decided = lv.undecided.is_none();
    let per_h = amount;
    let _ = write!(
        h,
        "<tr><td>{}</td><td>{}</td><td>{u}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"{class}\">{word}{basis}</td></tr>",
        esc(&l.node),
        l.metric,
        lv.incarnations,
        lv.points,
        if decided {
            per_h(lv.slope_per_hour)
        } else {
            "–".into()
        },
        per_h(l.budget_per_hour),
        if decided && l.budget_per_hour > 0.0 {
            format!("{:.2}", lv.slope_per_hour / l.budget_per_hour)
        } else {
            "–".into()
        },
        if decided {
            per_h(lv.floor_slope_per_hour)
        } else {
            "–".into()
        },
        lv.late_slope_per_hour
            .filter(|_| decided)
            .map_or("–".into(), per_h),
        if lv.p.is_finite() && decided {
            format!("{:.1e}", lv.p)
        } else {
            "–".into()
        },
        l.limit
            .map_or("none set".into(), |x| format!("{} {u}", amount(x))),
        match (l.limit, lv.time_to_limit_hours) {
            (None, _) => "–".to_owned(),
            (Some(_), None) => "not rising".to_owned(),
            (Some(_), Some(t)) if t > 24.0 * 365.0 => "> 1 year".to_owned(),
            (Some(_), Some(t)) if t > 48.0 => format!("{:.0} days", t / 24.0),
            (Some(_), Some(t)) => format!("{t:.1} h"),
        },
    );
}

/// The verdicts per node at a glance: one row each, failing nodes first, with a link to the log.
fn node_strip(h: &mut String, info: &RunInfo, s: &RunSummary) {
    let v = &s.verdicts;
    let vs = &info.spec.verdicts;
    h.push_str(
        "<h2>Nodes</h2><p>Each node's verdicts: sync, memory/fds/threads slope over budget (p), CPU level, \
worst minute of stream setups / the storm bound. Red: failed; amber: undecided or a high-water mark. \
The log is the node's own (<code>nodes/&lt;name&gt;/node.log</code>).</p>\
<table class=\"strip\"><tr><th>node</th><th>region</th><th>verdict</th><th>sync</th><th>memory</th><th>fds</th><th>threads</th>\
<th>CPU mean / p95</th><th>setups, worst min</th><th>log</th></tr>",
    );
    let names = |list: &[String], node: &str| -> Vec<String> {
        list.iter()
            .filter(|f| {
                f.split(':').nth(1) == Some(node) || (f.starts_with("crash:") && &f[6..] == node)
            })
            .cloned()
            .collect()
    };
    let mut order: Vec<(u8, &crate::run_dir::NodeInfo, usize)> = info
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let rank = if !names(&s.failed, &n.name).is_empty() {
                0
            } else if !names(&s.undecided, &n.name).is_empty() {
                1
            } else {
                2
            };
            (rank, n, i)
        })
        .collect();
    order.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.name.cmp(&b.1.name)));
    for (rank, n, i) in order {
        let name = n.name.as_str();
        let (word, class) = match rank {
            0 => ("FAIL", "cfail"),
            1 => ("UNDECIDED", "cwarn"),
            _ => ("pass", "cpass"),
        };
        let stuck: Vec<String> = v
            .progress
            .stuck
            .iter()
            .filter(|st| st.node == i)
            .map(|st| format!("stuck {:.0}–{:.0} s", st.from, st.to))
            .collect();
        let late = v
            .progress
            .catch_ups
            .iter()
            .filter(|c| !c.ok && c.worst_node == Some(i))
            .count();
        let (sync, sync_class) = if !stuck.is_empty() {
            (stuck.join(", "), "cfail")
        } else if late > 0 {
            (format!("late catch-up ×{late}"), "cfail")
        } else {
            ("ok".to_owned(), "cpass")
        };
        let leak = |metric: &str| -> (String, &'static str) {
            let Some(l) = v
                .leaks
                .iter()
                .find(|l| l.node == name && l.metric == metric)
            else {
                return ("–".into(), "");
            };
            let lv = &l.verdict;
            match lv.undecided {
                Some(_) => ("undecided".into(), "cwarn"),
                None => (
                    format!(
                        "{}{}{}/h · {:.1}× · p {}",
                        if lv.slope_per_hour >= 0.0 { "+" } else { "" },
                        amount(lv.slope_per_hour),
                        // The column names the count; memory keeps its unit.
                        if metric == "rss" { " MiB" } else { "" },
                        if l.budget_per_hour > 0.0 {
                            lv.slope_per_hour / l.budget_per_hour
                        } else {
                            0.0
                        },
                        p_value(lv.p)
                    ),
                    if lv.leak {
                        "cfail"
                    } else if lv.high_water {
                        "cwarn"
                    } else {
                        "cpass"
                    },
                ),
            }
        };
        let (cpu, cpu_class) = match v.cpu.iter().find(|c| c.node == name) {
            Some(c) if c.verdict.undecided.is_none() => (
                format!("{:.3} / {:.3} cores", c.verdict.mean, c.verdict.p95),
                if c.verdict.over { "cfail" } else { "cpass" },
            ),
            Some(_) => ("undecided".into(), "cwarn"),
            None => ("–".into(), ""),
        };
        let (storm, storm_class) = match v.storms.iter().find(|st| st.node == name) {
            Some(st) => (
                format!(
                    "{:.1} / {}",
                    st.verdict.max_per_minute, vs.setups_per_minute
                ),
                if st.verdict.storm || st.discovery.storm {
                    "cfail"
                } else {
                    "cpass"
                },
            ),
            None => ("–".into(), ""),
        };
        let _ = write!(
            h,
            "<tr><td><b>{}</b></td><td>{}</td><td class=\"{class}\">{word}</td><td class=\"{sync_class}\">{}</td>",
            esc(name),
            esc(&n.region),
            esc(&sync)
        );
        for m in ["rss", "fds", "threads"] {
            let (text, c) = leak(m);
            let _ = write!(h, "<td class=\"{c}\">{}</td>", esc(&text));
        }
        let _ = write!(
            h,
            "<td class=\"{cpu_class}\">{}</td><td class=\"{storm_class}\">{}</td><td><a href=\"nodes/{n}/node.log\">node.log</a></td></tr>",
            esc(&cpu),
            esc(&storm),
            n = esc(name),
        );
    }
    h.push_str("</table>");
    if !s.detected.is_empty() {
        h.push_str(
            "<p>When each failed verdict was first detectable: the earliest scrape by which the samples \
so far already failed it (judged again on growing prefixes of the run).</p><table><tr><th>verdict</th><th>first failed at</th></tr>",
        );
        for d in &s.detected {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"n\">{:.0} s</td></tr>",
                esc(&d.verdict),
                d.at_secs
            );
        }
        h.push_str("</table>");
    }
}
