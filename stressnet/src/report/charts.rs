//! The report's charts: their data from the samples, and SVG made by plotters.

use plotters::prelude::*;

use super::Chart;
use crate::judge;
use crate::run_dir::{self, RunInfo};
use crate::scrape::{Sample, series};
use crate::verdict;

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
