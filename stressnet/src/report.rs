//! A run's verdicts and report from its directory alone (so `stressnet report RUN_DIR` re-renders
//! what `run` wrote): `summary.json`, `report.html` with inline SVG charts made by plotters, and
//! the same charts as `charts/*.svg`.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::attribution;
use crate::judge;
use crate::run_dir::{self, Event, EventKind, RunInfo};
use crate::scrape::{Sample, series};
use crate::verdict;

/// What `summary.json` holds: the verdicts and the run's figures (what `compare` reads).
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub name: String,
    /// PASS only when every verdict was decided and passed; INCONCLUSIVE when nothing failed but
    /// something was not judged or the run was interrupted.
    pub outcome: judge::Outcome,
    /// `outcome == pass`.
    pub pass: bool,
    /// Named failed verdicts: those of [`judge::Summary`] plus `crash:<node>` for a node that
    /// exited on its own.
    pub failed: Vec<String>,
    /// What could not be decided: the verdict names of [`judge::Summary::undecided`], and
    /// `run:interrupted` for a run cut short.
    pub undecided: Vec<String>,
    pub interrupted: bool,
    pub seed: u64,
    pub nodes: usize,
    pub planned_secs: u64,
    /// Seconds from the first to the last scrape.
    pub ran_secs: f64,
    pub head: u64,
    /// Head growth over the run, blocks per second.
    pub blocks_per_sec: f64,
    /// Slowest catch-up after any fault, seconds (None: no fault ended, or a node never caught up).
    pub worst_catch_up_secs: Option<f64>,
    pub faults: usize,
    pub kills: usize,
    pub crashes: usize,
    pub verdicts: judge::Summary,
    /// What the nodes' profiles name: top growing allocation sites, top CPU sites, per node
    /// ([`attribution`]); empty for runs without profiles.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attribution: Vec<attribution::NodeAttribution>,
    /// Why the profiles could not be read, if they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attribution_error: Option<String>,
}

/// One line of a chart: node name, region index, points.
pub type Line = (String, usize, Vec<(f64, f64)>);

/// One chart's data: what the SVG draws, kept so tests can check every node has a series.
#[derive(Clone, Debug)]
pub struct Chart {
    pub file: &'static str,
    pub title: &'static str,
    pub y_label: &'static str,
    pub series: Vec<Line>,
    /// Colour by region (heights) instead of by node.
    pub by_region: bool,
}

/// Judges the run in `dir` and writes `summary.json`, `report.html` and `charts/`.
pub fn finish(dir: &Path) -> anyhow::Result<RunSummary> {
    let info = run_dir::read_info(dir)?;
    let samples = run_dir::read_samples(dir)?;
    let events = run_dir::read_events(dir)?;
    let mut summary = summarize(&info, &samples, &events);
    let names: Vec<String> = info.nodes.iter().map(|n| n.name.clone()).collect();
    match attribution::for_run(dir, &names) {
        Ok(a) => summary.attribution = a,
        Err(e) => summary.attribution_error = Some(e),
    }
    attach_sites(&mut summary);
    let charts = charts(&info, &samples);
    std::fs::create_dir_all(dir.join(run_dir::CHARTS))?;
    let mut svgs = vec![];
    for c in &charts {
        let svg = render(c, &info)?;
        std::fs::write(dir.join(run_dir::CHARTS).join(c.file), &svg)?;
        svgs.push(svg);
    }
    std::fs::write(
        dir.join(run_dir::SUMMARY),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    std::fs::write(
        dir.join(run_dir::REPORT),
        html(&info, &summary, &charts, &svgs, &events),
    )?;
    Ok(summary)
}

pub fn summarize(info: &RunInfo, samples: &[Sample], events: &[Event]) -> RunSummary {
    let names: Vec<String> = info.nodes.iter().map(|n| n.name.clone()).collect();
    let verdicts = judge::judge(&info.spec, &names, samples, &info.schedule);
    let mut failed = verdicts.failed.clone();
    let mut crashed: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == EventKind::Crashed)
        .filter_map(|e| e.node.as_deref())
        .collect();
    let crashes = crashed.len();
    crashed.sort_unstable();
    crashed.dedup();
    failed.extend(crashed.iter().map(|n| format!("crash:{n}")));
    let t0 = samples.iter().map(|s| s.t).fold(f64::INFINITY, f64::min);
    let t1 = samples
        .iter()
        .map(|s| s.t)
        .fold(f64::NEG_INFINITY, f64::max);
    let head_at = |t: f64| {
        samples
            .iter()
            .filter(|s| s.t == t)
            .filter_map(|s| s.values.get(judge::HEIGHT).copied())
            .fold(0.0, f64::max)
    };
    let (h0, h1) = if samples.is_empty() {
        (0.0, 0.0)
    } else {
        (head_at(t0), head_at(t1))
    };
    let ran = if samples.is_empty() { 0.0 } else { t1 - t0 };
    // Windows still open at the end of the run (e.g. canaries lasting the whole soak) have no
    // catch-up to report.
    let catch: Vec<_> = verdicts
        .progress
        .catch_ups
        .iter()
        .filter(|c| c.fault_end <= t1)
        .collect();
    let worst_catch_up_secs = if catch.iter().any(|c| c.worst_secs.is_none()) {
        None
    } else {
        catch
            .iter()
            .filter_map(|c| c.worst_secs)
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
    };
    let interrupted = events.iter().any(|e| e.kind == EventKind::Interrupted);
    let mut undecided = verdicts.undecided.clone();
    if interrupted {
        undecided.push("run:interrupted".to_owned());
    }
    let outcome = judge::Outcome::of(&failed, &undecided);
    RunSummary {
        name: info.name.clone(),
        outcome,
        pass: outcome == judge::Outcome::Pass,
        failed,
        undecided,
        interrupted,
        seed: info.seed,
        nodes: info.nodes.len(),
        planned_secs: info.spec.soak.duration_secs,
        ran_secs: ran,
        head: h1 as u64,
        blocks_per_sec: if ran > 0.0 { (h1 - h0) / ran } else { 0.0 },
        worst_catch_up_secs,
        faults: info.schedule.len(),
        kills: events
            .iter()
            .filter(|e| e.kind == EventKind::Killed)
            .count(),
        crashes,
        verdicts,
        attribution: vec![],
        attribution_error: None,
    }
}

/// The charts of the report, from the samples.
pub fn charts(info: &RunInfo, samples: &[Sample]) -> Vec<Chart> {
    let regions: Vec<&str> = info.spec.regions.iter().map(|r| r.name.as_str()).collect();
    let region_of = |n: &run_dir::NodeInfo| {
        regions
            .iter()
            .position(|r| *r == n.region)
            .unwrap_or_default()
    };
    let per_node = |f: &dyn Fn(&str) -> Vec<(f64, f64)>| {
        info.nodes
            .iter()
            .map(|n| (n.name.clone(), region_of(n), f(&n.name)))
            .collect::<Vec<_>>()
    };
    // Lag: blocks behind the best node of the same scrape round (rounds share one timestamp).
    let mut best: std::collections::BTreeMap<u64, f64> = Default::default();
    for s in samples {
        if let Some(h) = s.values.get(judge::HEIGHT) {
            let e = best.entry(s.t.to_bits()).or_insert(0.0);
            *e = e.max(*h);
        }
    }
    let lag = |node: &str| {
        series(samples, node, judge::HEIGHT)
            .into_iter()
            .map(|(t, h)| (t, best.get(&t.to_bits()).copied().unwrap_or(h) - h))
            .collect()
    };
    let scaled = |metric: &'static str, k: f64| {
        move |node: &str| {
            series(samples, node, metric)
                .into_iter()
                .map(|(t, v)| (t, v * k))
                .collect::<Vec<_>>()
        }
    };
    let cpu = |node: &str| judge::cpu_rate(&series(samples, node, judge::CPU_TOTAL));
    // The series the storm verdict judges, so the chart shows what was judged.
    let setups = |node: &str| verdict::rate_per_minute(&judge::setups(samples, node), 60.0);
    let chart = |file, title, y_label, series, by_region| Chart {
        file,
        title,
        y_label,
        series,
        by_region,
    };

    vec![
        chart(
            "heights.svg",
            "Head height per node (colour = region)",
            "height",
            per_node(&scaled(judge::HEIGHT, 1.0)),
            true,
        ),
        chart(
            "lag.svg",
            "Lag behind the best node",
            "blocks",
            per_node(&lag),
            false,
        ),
        chart(
            "rss.svg",
            "Resident memory",
            "MiB",
            per_node(&scaled("process_resident_memory_bytes", 1.0 / 1048576.0)),
            false,
        ),
        chart("cpu.svg", "CPU", "cores", per_node(&cpu), false),
        chart(
            "streams.svg",
            "Sync streams",
            "streams",
            per_node(&scaled("syncnet_p2p_streams", 1.0)),
            false,
        ),
        chart(
            "setups.svg",
            "Stream setups per minute (any outcome)",
            "setups/min",
            per_node(&setups),
            false,
        ),
        chart(
            "fds.svg",
            "Open file descriptors",
            "fds",
            per_node(&scaled("process_open_fds", 1.0)),
            false,
        ),
        chart(
            "threads.svg",
            "Threads",
            "threads",
            per_node(&scaled("process_threads", 1.0)),
            false,
        ),
    ]
}

/// One chart as SVG: a line per node, fault windows shaded.
pub fn render(c: &Chart, info: &RunInfo) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 320)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let pts = c.series.iter().flat_map(|s| s.2.iter());
        let (mut x1, mut y0, mut y1) = (1.0f64, 0.0f64, 1.0f64);
        for &(x, y) in pts {
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        let x1 = x1.max(info.spec.soak.duration_secs as f64).max(1.0);
        let y1 = y1 + (y1 - y0).abs() * 0.05;
        let mut chart = ChartBuilder::on(&root)
            .caption(c.title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x1, y0..y1)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(c.y_label)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(plot_err)?;
        let shade = RGBColor(240, 120, 60).mix(0.15).filled();
        // Kills and partitions only: low-rate faults often last the whole run and would shade it all.
        let disruptive = info.schedule.iter().filter(|w| {
            matches!(
                w.action,
                syncnet_crds::FaultAction::KillRestart | syncnet_crds::FaultAction::Partition
            )
        });
        chart
            .draw_series(disruptive.map(|w| {
                Rectangle::new(
                    [(w.start as f64, y0), (w.end.max(w.start + 1) as f64, y1)],
                    shade,
                )
            }))
            .map_err(plot_err)?;
        let regions = &info.spec.regions;
        for (i, (name, region, points)) in c.series.iter().enumerate() {
            let color = Palette99::pick(if c.by_region { *region } else { i }).to_rgba();
            let s = chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(1),
                ))
                .map_err(plot_err)?;
            // One legend entry per region when coloured by region.
            let first_of_region = c.series[..i].iter().all(|s| s.1 != *region);
            if !c.by_region || first_of_region {
                let label = if c.by_region {
                    regions
                        .get(*region)
                        .map_or(name.clone(), |r| r.name.clone())
                } else {
                    name.clone()
                };
                s.label(label).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
                });
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 10))
            .background_style(WHITE.mix(0.7))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

fn plot_err(e: impl std::fmt::Debug) -> anyhow::Error {
    anyhow::anyhow!("chart: {e:?}")
}

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
<style>body{{font-family:sans-serif;margin:1.5em;max-width:1000px}}table{{border-collapse:collapse;margin:.5em 0 1.5em}}\
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:90%}}.pass{{color:#080}}.fail{{color:#b00;font-weight:bold}}\
.badge{{font-size:150%;padding:2px 10px;border-radius:4px;color:#fff}}</style></head><body>\
<h1>stressnet run <code>{name}</code> <span class=\"badge\" style=\"background:{bg}\">{verdict}</span></h1>",
        name = esc(&s.name),
        bg = match s.outcome {
            judge::Outcome::Pass => "#080",
            judge::Outcome::Fail => "#b00",
            judge::Outcome::Inconclusive => "#b60",
        },
    );
    if !s.failed.is_empty() {
        let _ = write!(
            h,
            "<p class=\"fail\">Failed: {}</p>",
            esc(&s.failed.join(", "))
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
<tr><th>worst catch-up</th><td>{}</td><th>broadcast</th><td>{:?}</td><th>block interval</th><td>{} ms</td></tr></table>",
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
        info.spec.broadcast.mode,
        info.spec.producer.block_interval_ms,
    );

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
        "<h2>Charts</h2><p>Shaded: kills and partitions (other faults: see the schedule).</p>",
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
    for c in &v.progress.catch_ups {
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
significant growth that fails the last two is a high-water mark. A node restarted so often that no life outgrows its warm-up is judged <i>between lives</i>: the levels its restarted lives reached at the same age, life after life (growth that carries over restarts; the same tests, budget and floor). Budgets per hour: RSS {} MiB, fds {}, threads {}, \
CPU {} cores, CPU per request served {} ms (<code>cpu_per_request</code>: the process's CPU over the requests it served, \
per scrape).</p><table><tr><th>node</th><th>metric</th><th>lives</th><th>points</th><th>slope / h</th>\
<th>floor / h</th><th>last third / h</th><th>p</th><th>time to limit</th><th>verdict</th></tr>",
        info.spec.soak.warmup_secs,
        vs.restart_warmup_secs,
        vs.leak_bucket_secs,
        vs.leak_p,
        vs.leak_slope_mib_per_hour,
        vs.fds_per_hour,
        vs.threads_per_hour,
        vs.cpu_cores_per_hour,
        vs.cpu_ms_per_request_per_hour,
    );
    for l in &v.leaks {
        let lv = &l.verdict;
        let unit = |x: f64| {
            if l.metric == "rss" {
                format!("{:.2} MiB", x / 1048576.0)
            } else {
                format!("{x:.3}")
            }
        };
        let word = match (lv.leak, lv.high_water, lv.undecided) {
            (true, _, _) => "<b class=\"fail\">LEAK</b>".to_owned(),
            (false, _, Some(judge::NOT_SERVING)) => "n/a (served too little)".to_owned(),
            (false, _, Some(why)) => format!("<b>undecided</b> ({})", esc(why)),
            (false, true, None) if lv.jumps > 0 => {
                format!("ok (high-water mark, {} jumps)", lv.jumps)
            }
            (false, true, None) => "ok (high-water mark)".to_owned(),
            (false, false, None) => "ok".to_owned(),
        } + if lv.basis == verdict::BETWEEN_LIVES && lv.undecided.is_none() {
            " (between lives)"
        } else {
            ""
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{word}</td></tr>",
            esc(&l.node),
            l.metric,
            lv.incarnations,
            lv.points,
            unit(lv.slope_per_hour),
            unit(lv.floor_slope_per_hour),
            lv.late_slope_per_hour.map_or("–".into(), unit),
            if lv.p.is_finite() {
                format!("{:.2e}", lv.p)
            } else {
                "–".into()
            },
            opt(lv.time_to_limit_hours, 1)
                + if lv.time_to_limit_hours.is_some() {
                    " h"
                } else {
                    ""
                },
        );
    }
    h.push_str("</table>");

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
                    format!(
                        "{:.1} KiB ({:.1}–{:.1})",
                        p.per_unit / 1024.0,
                        p.low / 1024.0,
                        p.high / 1024.0
                    )
                })
        };
        let hours = |h: Option<f64>| h.map_or("∞".to_owned(), |h| format!("{h:.0} h"));
        let projected = l.projection.as_ref().map_or("–".to_owned(), |p| {
            format!(
                "{:.2} MiB/h by {}: limit in {} ({} – {})",
                p.per_hour / 1048576.0,
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

/// Puts each node's top sites next to its verdicts: heap growth by the RSS leak verdict, CPU
/// sites by the CPU and storm verdicts.
pub fn attach_sites(s: &mut RunSummary) {
    let RunSummary {
        verdicts,
        attribution,
        ..
    } = s;
    let of = |node: &str| attribution.iter().find(|a| a.node == node);
    for l in verdicts.leaks.iter_mut().filter(|l| l.metric == "rss") {
        l.top_sites = of(&l.node)
            .map(|a| a.heap_growth.clone())
            .unwrap_or_default();
    }
    for c in &mut verdicts.cpu {
        c.top_sites = of(&c.node).map(|a| a.cpu.clone()).unwrap_or_default();
    }
    for st in &mut verdicts.storms {
        st.top_sites = of(&st.node).map(|a| a.cpu.clone()).unwrap_or_default();
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_dir::NodeInfo;
    use syncnet_crds::SyncNetwork;

    fn info() -> RunInfo {
        let spec = SyncNetwork::from_yaml(
            r#"
apiVersion: syncnet.dev/v1alpha1
kind: SyncNetwork
metadata: {name: r}
spec:
  regions: [{name: us, replicas: 1}, {name: eu, replicas: 1}]
  producer: {region: us, blockIntervalMs: 1000, payloadBytes: 1024}
  faults: [{name: k, atSecs: 50, durationSecs: 10, action: kill-restart, target: {region: eu}}]
  soak: {durationSecs: 120, warmupSecs: 10, scrapeIntervalSecs: 5}
  verdicts: {leakBucketSecs: 5, restartWarmupSecs: 5}
"#,
        )
        .unwrap()
        .spec;
        let nodes = vec![
            NodeInfo {
                name: "us-0".into(),
                region: "us".into(),
                producer: true,
            },
            NodeInfo {
                name: "eu-0".into(),
                region: "eu".into(),
                producer: false,
            },
        ];
        let plans: Vec<_> = crate::plan::nodes(&spec, Path::new("/r"));
        let schedule = crate::plan::schedule(&spec, &plans, 1).unwrap();
        RunInfo {
            name: "r".into(),
            seed: 1,
            spec,
            nodes,
            schedule,
            started_unix_ms: 0,
        }
    }

    /// Two minutes of scrapes; eu-0 is down (no samples) from 50 to 60 s, then catches up.
    fn samples() -> Vec<Sample> {
        let mut out = vec![];
        for i in 0..24 {
            let t = i as f64 * 5.0;
            for (n, node) in ["us-0", "eu-0"].iter().enumerate() {
                if n == 1 && (50.0..60.0).contains(&t) {
                    continue;
                }
                let h = if n == 1 && t == 60.0 { t - 20.0 } else { t };
                let values = [
                    (judge::HEIGHT, h),
                    ("process_resident_memory_bytes", 30e6 + t * 1e3),
                    ("process_cpu_seconds_total", t * 0.01),
                    ("process_open_fds", 20.0),
                    ("process_threads", 8.0),
                    ("syncnet_p2p_streams", 1.0),
                    (judge::SETUPS, (t / 30.0).floor()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
                out.push(Sample {
                    t,
                    node: node.to_string(),
                    values,
                });
            }
        }
        out
    }

    #[test]
    fn every_chart_has_a_series_per_node_and_the_html_carries_the_verdict() {
        let info = info();
        let samples = samples();
        let events = vec![Event {
            t: 50.0,
            kind: EventKind::Killed,
            node: Some("eu-0".into()),
            detail: "SIGKILL <b>".into(),
        }];
        let s = summarize(&info, &samples, &events);
        assert!(s.pass, "{:?}", s.failed);
        assert_eq!((s.nodes, s.kills, s.crashes), (2, 1, 0));
        assert_eq!(s.head, 115);
        assert!((s.blocks_per_sec - 1.0).abs() < 1e-9);
        assert!(s.worst_catch_up_secs.is_some());
        let charts = charts(&info, &samples);
        assert_eq!(charts.len(), 8);
        for c in &charts {
            assert_eq!(c.series.len(), 2, "{}", c.file);
            for (node, _, points) in &c.series {
                assert!(!points.is_empty(), "{} has no {node} data", c.file);
            }
        }
        // The lag chart measures against the best node of the same scrape.
        let lag = &charts.iter().find(|c| c.file == "lag.svg").unwrap().series[1].2;
        assert!(lag.contains(&(60.0, 20.0)), "{lag:?}");
        let svgs: Vec<String> = charts.iter().map(|c| render(c, &info).unwrap()).collect();
        assert!(
            svgs.iter()
                .all(|s| s.starts_with("<svg") && s.contains("polyline"))
        );
        let page = html(&info, &s, &charts, &svgs, &events);
        assert!(page.contains("PASS"));
        assert!(page.contains("SIGKILL &lt;b&gt;"), "event text is escaped");
        assert!(!page.contains("SIGKILL <b>"));
    }

    #[test]
    fn a_crash_fails_the_run_by_name() {
        let events = vec![Event {
            t: 70.0,
            kind: EventKind::Crashed,
            node: Some("eu-0".into()),
            detail: "signal 6".into(),
        }];
        let s = summarize(&info(), &samples(), &events);
        assert!(!s.pass);
        assert_eq!(s.outcome, judge::Outcome::Fail);
        assert_eq!(s.failed, ["crash:eu-0"]);
    }

    #[test]
    fn an_interrupted_run_is_inconclusive_never_pass() {
        let events = vec![Event {
            t: 35.0,
            kind: EventKind::Interrupted,
            node: None,
            detail: "SIGINT".into(),
        }];
        let info = info();
        let samples = samples();
        let s = summarize(&info, &samples, &events);
        assert!(s.failed.is_empty(), "{:?}", s.failed);
        assert_eq!(s.outcome, judge::Outcome::Inconclusive);
        assert!(!s.pass);
        assert!(s.undecided.contains(&"run:interrupted".to_owned()));
        let page = html(&info, &s, &[], &[], &events);
        assert!(page.contains("INCONCLUSIVE") && !page.contains(">PASS<"));
    }

    #[test]
    fn a_node_never_judged_makes_the_run_inconclusive_and_is_named() {
        // eu-0's process metrics stop after 20 s (its head keeps up): no leak or CPU verdict can
        // be decided for it.
        let mut samples = samples();
        for s in samples
            .iter_mut()
            .filter(|s| s.node == "eu-0" && s.t >= 20.0)
        {
            s.values.retain(|k, _| !k.starts_with("process_"));
        }
        let s = summarize(&info(), &samples, &[]);
        assert_eq!(s.outcome, judge::Outcome::Inconclusive, "{:?}", s.failed);
        assert!(
            s.undecided.iter().any(|u| u == "leak:eu-0:rss"),
            "{:?}",
            s.undecided
        );
        assert!(
            s.undecided.iter().any(|u| u == "cpu:eu-0"),
            "{:?}",
            s.undecided
        );
        assert!(
            !s.undecided.iter().any(|u| u.contains("us-0")),
            "{:?}",
            s.undecided
        );
    }
}
