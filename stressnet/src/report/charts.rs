//! The report's charts: their data from the samples and the verdicts, and SVG made by plotters.
//!
//! Each chart is the plot on the left and its legend in a panel of its own on the right, so no
//! legend covers data. The y-axis follows the data (or starts at zero with
//! [`ChartOptions::zero_based`]); the warm-up, the verdict's bound, the fitted trend of the worst
//! node and its budget are drawn on it, and the nodes a verdict flagged are drawn on top, thick.

use plotters::prelude::*;

use super::{Chart, Mark};
use crate::judge;
use crate::run_dir::{self, RunInfo};
use crate::scrape::{Sample, series};
use crate::verdict;

/// How charts are drawn.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChartOptions {
    /// Every y-axis starts at zero (default: the axis spans the data).
    pub zero_based: bool,
}

/// The SVG's size, and the legend panel's width on its right.
pub const WIDTH: u32 = 960;
pub const HEIGHT: u32 = 360;
const LEGEND_W: u32 = 260;
const LEGEND_TOP: i32 = 44;
const LEGEND_LINE: i32 = FONT as i32 + 6;

/// Legend entries that fit in the panel's height.
fn legend_capacity() -> usize {
    ((HEIGHT as i32 - LEGEND_TOP) / LEGEND_LINE) as usize
}
/// Font size asked of plotters, which sets text at 1/1.24 of it: 16 gives ~12.9 px.
const FONT: u32 = 16;

/// The charts of the report, from the samples and the verdicts they show.
pub fn charts(info: &RunInfo, samples: &[Sample], v: &judge::Summary) -> Vec<Chart> {
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
    let vs = &info.spec.verdicts;
    let warmup = info.spec.soak.warmup_secs as f64;
    let chart = |file, title, y_label, series: Vec<super::Line>| Chart {
        file,
        title,
        y_label,
        series,
        by_region: false,
        marks: vec![],
        flagged: vec![],
    };

    let mut heights = chart(
        "heights.svg",
        "Head height by region (lowest and highest node)",
        "height",
        per_node(&scaled(judge::HEIGHT, 1.0)),
    );
    heights.by_region = true;

    let mut lagc = chart(
        "lag.svg",
        "Lag behind the best node",
        "blocks",
        per_node(&lag),
    );
    lagc.marks.push(Mark::Bound {
        y: vs.catch_up_blocks as f64,
        label: format!("catch-up ≤ {} blocks", vs.catch_up_blocks),
    });
    lagc.flagged = v
        .progress
        .stuck
        .iter()
        .map(|s| s.node)
        .chain(
            v.progress
                .catch_ups
                .iter()
                .filter(|c| !c.ok)
                .filter_map(|c| c.worst_node),
        )
        .filter_map(|i| info.nodes.get(i).map(|n| n.name.clone()))
        .collect();

    // Each node's lives after their warm-ups, (from, to): a trend is fitted within one.
    let last_life = |node: &str| {
        let lives = judge::Lives::of(samples, node);
        let starts = lives.starts();
        let mut out = vec![(warmup, starts.first().copied().unwrap_or(f64::INFINITY))];
        for (k, &s) in starts.iter().enumerate() {
            let end = starts.get(k + 1).copied().unwrap_or(f64::INFINITY);
            out.push((s + vs.restart_warmup_secs as f64, end));
        }
        out
    };
    let mut rss = chart(
        "rss.svg",
        "Resident memory",
        "MiB",
        per_node(&scaled("process_resident_memory_bytes", 1.0 / 1048576.0)),
    );
    leak_marks(&mut rss, v, "rss", &last_life);

    let mut cpuc = chart("cpu.svg", "CPU", "cores", per_node(&cpu));
    leak_marks(&mut cpuc, v, "cpu", &last_life);
    cpuc.marks.push(Mark::Bound {
        y: vs.cpu_cores,
        label: format!("CPU bound {} cores", vs.cpu_cores),
    });
    for c in v.cpu.iter().filter(|c| c.verdict.over) {
        cpuc.flagged.push(c.node.clone());
    }

    let streams = chart(
        "streams.svg",
        "Sync streams",
        "streams",
        per_node(&scaled("syncnet_p2p_streams", 1.0)),
    );

    let mut setupc = chart(
        "setups.svg",
        "Stream setups per minute (any outcome)",
        "setups/min",
        per_node(&setups),
    );
    setupc.marks.push(Mark::Bound {
        y: vs.setups_per_minute,
        label: format!("storm bound {}/min", vs.setups_per_minute),
    });
    setupc.flagged = v
        .storms
        .iter()
        .filter(|s| s.verdict.storm || s.discovery.storm)
        .map(|s| s.node.clone())
        .collect();

    let mut fds = chart(
        "fds.svg",
        "Open file descriptors",
        "fds",
        per_node(&scaled("process_open_fds", 1.0)),
    );
    leak_marks(&mut fds, v, "fds", &last_life);
    let mut threads = chart(
        "threads.svg",
        "Threads",
        "threads",
        per_node(&scaled("process_threads", 1.0)),
    );
    leak_marks(&mut threads, v, "threads", &last_life);

    let mut out = vec![heights, lagc, rss, cpuc, streams, setupc, fds, threads];
    for c in &mut out {
        c.flagged.sort();
        c.flagged.dedup();
        c.marks.insert(
            0,
            Mark::Vertical {
                x: warmup,
                label: format!("warm-up ({warmup:.0} s)"),
            },
        );
    }
    out
}

/// A leak chart's marks: the nodes whose `metric` leaks are flagged; the worst node's fitted
/// trend (the verdict's slope through the median of the points of its longest judged life,
/// `lives` giving each life's span after its warm-up) and its budget from the same start are
/// drawn, so the gap between the two is what was judged.
fn leak_marks(
    c: &mut Chart,
    v: &judge::Summary,
    metric: &str,
    lives: &dyn Fn(&str) -> Vec<(f64, f64)>,
) {
    let leaks: Vec<&judge::NodeLeak> = v.leaks.iter().filter(|l| l.metric == metric).collect();
    c.flagged.extend(
        leaks
            .iter()
            .filter(|l| l.verdict.leak)
            .map(|l| l.node.clone()),
    );
    let ratio = |l: &judge::NodeLeak| {
        if l.budget_per_hour > 0.0 {
            l.verdict.slope_per_hour / l.budget_per_hour
        } else {
            l.verdict.slope_per_hour
        }
    };
    let worst = leaks
        .iter()
        .filter(|l| l.verdict.undecided.is_none() && l.verdict.slope_per_hour > 0.0)
        .max_by(|a, b| {
            (a.verdict.leak, ratio(a))
                .partial_cmp(&(b.verdict.leak, ratio(b)))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    let Some(l) = worst else { return };
    let Some((_, _, points)) = c.series.iter().find(|s| s.0 == l.node) else {
        return;
    };
    let after: Vec<(f64, f64)> = lives(&l.node)
        .into_iter()
        .map(|(from, to)| {
            points
                .iter()
                .copied()
                .filter(|p| p.0 >= from && p.0 < to && p.1.is_finite())
                .collect::<Vec<_>>()
        })
        .max_by_key(Vec::len)
        .unwrap_or_default();
    let (Some(first), Some(last)) = (after.first(), after.last()) else {
        return;
    };
    let per_sec = l.verdict.slope_per_hour / 3600.0;
    let mut offsets: Vec<f64> = after.iter().map(|p| p.1 - per_sec * p.0).collect();
    offsets.sort_by(f64::total_cmp);
    let a = offsets[offsets.len() / 2];
    let (x0, x1) = (first.0, last.0);
    let y0 = a + per_sec * x0;
    c.marks.push(Mark::Line {
        from: (x0, y0),
        to: (x1, y1_of(y0, per_sec, x1 - x0)),
        label: format!(
            "trend {} {}{} {}/h",
            l.node,
            if per_sec >= 0.0 { "+" } else { "" },
            super::html::amount(l.verdict.slope_per_hour),
            l.unit
        ),
        dashed: false,
    });
    c.marks.push(Mark::Line {
        from: (x0, y0),
        to: (x1, y1_of(y0, l.budget_per_hour / 3600.0, x1 - x0)),
        label: format!(
            "budget {} {}/h",
            super::html::amount(l.budget_per_hour),
            l.unit
        ),
        dashed: true,
    });
}

fn y1_of(y0: f64, per_sec: f64, dt: f64) -> f64 {
    y0 + per_sec * dt
}

/// The y-axis range: the data's, padded, or from zero; bounds and lines outside it are clipped
/// (the legend says when one is off the chart).
fn y_range(c: &Chart, zero_based: bool) -> (f64, f64) {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for &(_, y) in c.series.iter().flat_map(|s| s.2.iter()) {
        if y.is_finite() {
            lo = lo.min(y);
            hi = hi.max(y);
        }
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if zero_based {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    let span = hi - lo;
    // A flat series gets a band of 10% around it (1 around zero), so its ticks still read.
    // (Rates of a steady counter differ in their last bits: that is flat too.)
    let pad = if span > hi.abs().max(lo.abs()) * 1e-6 {
        span * 0.06
    } else if hi != 0.0 {
        hi.abs() * 0.1
    } else {
        1.0
    };
    let lo = if zero_based && lo == 0.0 {
        0.0
    } else {
        lo - pad
    };
    (lo, hi + pad)
}

/// Decimals for tick labels over a span: enough for a step of about a fifth of it.
fn decimals(span: f64) -> usize {
    if span.is_nan() || span <= 0.0 {
        return 0;
    }
    (-(span / 5.0).log10().floor()).clamp(0.0, 6.0) as usize
}

/// Clips the segment `from`–`to` to `y0..=y1` (plotters draws lines past the plot area).
fn clip(from: (f64, f64), to: (f64, f64), y0: f64, y1: f64) -> Option<[(f64, f64); 2]> {
    let (mut a, mut b) = (from, to);
    if a.0 > b.0 {
        std::mem::swap(&mut a, &mut b);
    }
    let at = |y: f64| {
        if (b.1 - a.1).abs() < f64::EPSILON {
            a.0
        } else {
            a.0 + (y - a.1) * (b.0 - a.0) / (b.1 - a.1)
        }
    };
    let fix = |p: (f64, f64)| {
        if p.1 > y1 {
            (at(y1), y1)
        } else if p.1 < y0 {
            (at(y0), y0)
        } else {
            p
        }
    };
    if (a.1 > y1 && b.1 > y1) || (a.1 < y0 && b.1 < y0) {
        return None;
    }
    Some([fix(a), fix(b)])
}

/// One chart as SVG: the plot on the left (a line per node, or the lowest and highest node per
/// region; kills and partitions shaded; marks), the legend on the right.
pub fn render(c: &Chart, info: &RunInfo, opts: &ChartOptions) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let (plot, legend) = root.split_horizontally(WIDTH - LEGEND_W);
        let x1 = c
            .series
            .iter()
            .flat_map(|s| s.2.iter().map(|p| p.0))
            .fold(info.spec.soak.duration_secs as f64, f64::max)
            .max(1.0);
        let (y0, y1) = y_range(c, opts.zero_based);
        let digits = decimals(y1 - y0);
        let y_fmt = move |y: &f64| format!("{y:.digits$}");
        let x_fmt = |x: &f64| format!("{x:.0}");
        let mut chart = ChartBuilder::on(&plot)
            .caption(c.title, ("sans-serif", 24))
            .margin_top(6)
            .margin_left(6)
            // Room for half of the last x tick label, which is centred on the plot's edge.
            .margin_right(28)
            .margin_bottom(6)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..x1, y0..y1)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("seconds since start")
            .y_desc(c.y_label)
            .label_style(("sans-serif", FONT))
            .axis_desc_style(("sans-serif", FONT + 1))
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .x_labels(8)
            .y_labels(6)
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.08))
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
                    [
                        (w.start as f64, y0),
                        ((w.end.max(w.start + 1) as f64).min(x1), y1),
                    ],
                    shade,
                )
            }))
            .map_err(plot_err)?;

        // (label, colour, width, dashed) per legend entry, in order.
        let mut entries: Vec<(String, RGBAColor, u32, bool)> = vec![];
        let flagged = |n: &str| c.flagged.iter().any(|f| f == n);
        let any_flagged = !c.flagged.is_empty();
        let finite = |p: &&(f64, f64)| p.1.is_finite();
        if c.by_region {
            for (r, region) in info.spec.regions.iter().enumerate() {
                let color = Palette99::pick(r).to_rgba();
                let (lo, hi) = envelope(c.series.iter().filter(|s| s.1 == r).map(|s| &s.2));
                if lo.is_empty() {
                    continue;
                }
                chart
                    .draw_series(LineSeries::new(lo, color.stroke_width(2)))
                    .map_err(plot_err)?;
                chart
                    .draw_series(DashedLineSeries::new(hi, 4, 3, color.stroke_width(1)))
                    .map_err(plot_err)?;
                entries.push((
                    format!("{} (dashed: top node)", region.name),
                    color,
                    2,
                    false,
                ));
            }
        } else {
            // Unflagged nodes first and faint when some are flagged; flagged ones on top, thick.
            let mut order: Vec<usize> = (0..c.series.len()).collect();
            order.sort_by_key(|&i| flagged(&c.series[i].0));
            for i in order {
                let (name, _, points) = &c.series[i];
                let base = Palette99::pick(i).to_rgba();
                let (color, width) = match (any_flagged, flagged(name)) {
                    (true, true) => (RGBColor(200, 0, 0).to_rgba(), 3),
                    (true, false) => (base.mix(0.35), 1),
                    (false, _) => (base, 1),
                };
                chart
                    .draw_series(LineSeries::new(
                        points.iter().filter(finite).copied(),
                        color.stroke_width(width),
                    ))
                    .map_err(plot_err)?;
                // A series of a few points (per-minute rates of a short run) shows its points.
                if points.len() < 20 {
                    chart
                        .draw_series(
                            points
                                .iter()
                                .filter(finite)
                                .map(|&p| Circle::new(p, 2 + width, color.filled())),
                        )
                        .map_err(plot_err)?;
                }
            }
            for (i, (name, _, _)) in c.series.iter().enumerate() {
                if flagged(name) {
                    entries.insert(
                        0,
                        (
                            format!("{name} (flagged)"),
                            RGBColor(200, 0, 0).to_rgba(),
                            3,
                            false,
                        ),
                    );
                } else {
                    let base = Palette99::pick(i).to_rgba();
                    entries.push((
                        name.clone(),
                        if any_flagged { base.mix(0.35) } else { base },
                        2,
                        false,
                    ));
                }
            }
        }
        let series_entries = entries.len();

        let mark_color = RGBColor(60, 60, 60).to_rgba();
        let off = |y: f64| {
            if y > y1 {
                " (above)"
            } else if y < y0 {
                " (below)"
            } else {
                ""
            }
        };
        for m in &c.marks {
            match m {
                Mark::Vertical { x, label } => {
                    if *x > 0.0 && *x < x1 {
                        chart
                            .draw_series(DashedLineSeries::new(
                                [(*x, y0), (*x, y1)],
                                6,
                                4,
                                BLUE.mix(0.6).stroke_width(1),
                            ))
                            .map_err(plot_err)?;
                        entries.push((label.clone(), BLUE.mix(0.6), 1, true));
                    }
                }
                Mark::Bound { y, label } => {
                    if (y0..=y1).contains(y) {
                        chart
                            .draw_series(DashedLineSeries::new(
                                [(0.0, *y), (x1, *y)],
                                8,
                                4,
                                RGBColor(200, 0, 0).mix(0.8).stroke_width(2),
                            ))
                            .map_err(plot_err)?;
                    }
                    entries.push((
                        format!("{label}{}", off(*y)),
                        RGBColor(200, 0, 0).mix(0.8),
                        2,
                        true,
                    ));
                }
                Mark::Line {
                    from,
                    to,
                    label,
                    dashed,
                } => {
                    if let Some(seg) = clip(*from, *to, y0, y1) {
                        if *dashed {
                            chart
                                .draw_series(DashedLineSeries::new(
                                    seg,
                                    6,
                                    4,
                                    mark_color.stroke_width(2),
                                ))
                                .map_err(plot_err)?;
                        } else {
                            chart
                                .draw_series(LineSeries::new(seg, mark_color.stroke_width(2)))
                                .map_err(plot_err)?;
                        }
                    }
                    entries.push((label.clone(), mark_color, 2, *dashed));
                }
            }
        }
        // What fits: the marks always; the series' entries up to the rest, then how many more.
        let fit = legend_capacity();
        if entries.len() > fit {
            let marks = entries.split_off(series_entries);
            let keep = fit.saturating_sub(marks.len() + 1);
            let more = entries.len() - keep;
            entries.truncate(keep);
            entries.push((format!("… {more} more"), WHITE.to_rgba(), 0, false));
            entries.extend(marks);
        }
        draw_legend(&legend, &entries)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// The legend panel: a swatch and a label per entry, top to bottom.
fn draw_legend(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    entries: &[(String, RGBAColor, u32, bool)],
) -> anyhow::Result<()> {
    let style = ("sans-serif", FONT).into_font().color(&BLACK);
    for (k, (label, color, width, dashed)) in entries.iter().enumerate() {
        let y = LEGEND_TOP + k as i32 * LEGEND_LINE;
        if *width > 0 {
            let swatch: Vec<(i32, i32)> = if *dashed {
                vec![(6, y), (12, y)]
            } else {
                vec![(6, y), (26, y)]
            };
            area.draw(&PathElement::new(swatch, color.stroke_width(*width)))
                .map_err(plot_err)?;
            if *dashed {
                area.draw(&PathElement::new(
                    vec![(18, y), (26, y)],
                    color.stroke_width(*width),
                ))
                .map_err(plot_err)?;
            }
        }
        // Labels longer than the panel are cut (the full text is in the report's tables).
        let max_chars = ((LEGEND_W as i32 - 40) as f64 / (FONT as f64 / 1.24 * 0.6)) as usize;
        let text: String = if label.chars().count() > max_chars {
            label.chars().take(max_chars - 1).chain(['…']).collect()
        } else {
            label.clone()
        };
        area.draw(&Text::new(
            text,
            (32, y - FONT as i32 / 2 - 1),
            style.clone(),
        ))
        .map_err(plot_err)?;
    }
    Ok(())
}

type Points = Vec<(f64, f64)>;

/// The lowest and highest value among a region's nodes at each scrape time.
fn envelope<'a>(lines: impl Iterator<Item = &'a Vec<(f64, f64)>>) -> (Points, Points) {
    let mut at: std::collections::BTreeMap<u64, (f64, f64, f64)> = Default::default();
    for &(t, y) in lines.flatten() {
        if !y.is_finite() || t < 0.0 {
            continue;
        }
        // Non-negative floats order like their bit patterns.
        let e = at.entry(t.to_bits()).or_insert((t, y, y));
        e.1 = e.1.min(y);
        e.2 = e.2.max(y);
    }
    at.values().map(|&(t, lo, hi)| ((t, lo), (t, hi))).unzip()
}

fn plot_err(e: impl std::fmt::Debug) -> anyhow::Error {
    anyhow::anyhow!("chart: {e:?}")
}
