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
    let charts = charts(&info, &samples, &s.verdicts);
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
    let svgs: Vec<String> = charts
        .iter()
        .map(|c| render(c, &info, &ChartOptions::default()).unwrap())
        .collect();
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

/// [`samples`] with eu-0 keeping 2 MiB a scrape (1.4 GiB/h) from 60 s on.
fn leaking() -> Vec<Sample> {
    let mut samples = samples();
    for s in samples
        .iter_mut()
        .filter(|s| s.node == "eu-0" && s.t >= 60.0)
    {
        *s.values.get_mut("process_resident_memory_bytes").unwrap() +=
            2.0 * 1048576.0 * (s.t - 60.0) / 5.0;
    }
    samples
}

#[test]
fn charts_follow_their_data_with_legends_beside_the_plot_and_nothing_clipped() {
    let info = info();
    // eu-0 leaks: flagged on the memory chart.
    let samples = leaking();
    let s = summarize(&info, &samples, &[]);
    let charts = charts(&info, &samples, &s.verdicts);
    let out = std::env::var_os("REPORT_SVG_DIR").map(std::path::PathBuf::from);
    for c in &charts {
        let svg = render(c, &info, &ChartOptions::default()).unwrap();
        if let Some(dir) = &out {
            std::fs::write(dir.join(c.file), &svg).unwrap();
        }
        let legend: Vec<&str> = if c.by_region {
            vec!["us (", "eu ("]
        } else {
            vec!["us-0", "eu-0"]
        };
        let problems = svgcheck::problems(&svg, &legend, c.data_range());
        assert!(problems.is_empty(), "{}: {problems:#?}", c.file);
        // Every chart marks the end of the warm-up.
        assert!(svg.contains("warm-up (10 s)"), "{}", c.file);
    }
    let get = |f: &str| charts.iter().find(|c| c.file == f).unwrap();
    // Memory (~29 MiB, far from zero): the axis starts near the data, not at 0.
    let rss = get("rss.svg");
    let svg = render(rss, &info, &ChartOptions::default()).unwrap();
    let ticks = svgcheck::y_ticks(&svg);
    assert!(ticks.iter().all(|&t| t > 20.0), "{ticks:?}");
    // ... and from zero when asked.
    let zero = render(rss, &info, &ChartOptions { zero_based: true }).unwrap();
    assert!(svgcheck::y_ticks(&zero).contains(&0.0));
    // CPU near 0.01 cores is not a flat line on a 0–1 axis.
    let cpu = svgcheck::y_ticks(&render(get("cpu.svg"), &info, &Default::default()).unwrap());
    assert!(cpu.iter().all(|&t| t < 0.1), "{cpu:?}");
    // The storm and CPU bounds are far above these data: said in the legend, not drawn.
    assert!(svg.contains("(above)") || !rss.marks.iter().any(|m| matches!(m, Mark::Bound { .. })));
    // The leak is flagged, its trend and budget drawn.
    if s.failed.contains(&"leak:eu-0:rss".to_owned()) {
        assert_eq!(rss.flagged, ["eu-0"]);
        assert!(svg.contains("eu-0 (flagged)"));
    }
    let lines: Vec<&str> = rss
        .marks
        .iter()
        .filter_map(|m| match m {
            Mark::Line { label, .. } => Some(label.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(lines.len(), 2, "{:?}", rss.marks);
    assert!(
        lines[0].starts_with("trend eu-0 +") && lines[0].ends_with("MiB/h"),
        "{lines:?}"
    );
    assert_eq!(lines[1], "budget 10.00 MiB/h");
    let setups = get("setups.svg");
    assert!(
        setups
            .marks
            .iter()
            .any(|m| matches!(m, Mark::Bound { label, .. } if label.starts_with("storm bound")))
    );
}

#[test]
fn the_svg_check_finds_clipped_labels_legends_on_the_plot_and_axes_from_zero() {
    let svg = r##"<svg width="300" height="100" viewBox="0 0 300 100" xmlns="http://www.w3.org/2000/svg">
<polyline fill="none" opacity="1" stroke="#FF0000" stroke-width="1" points="40,90 100,50 200,10 "/>
<text x="296" y="95" dy="0.76em" text-anchor="middle" font-family="sans-serif" font-size="13" opacity="1" fill="#000000">300.0</text>
<text x="30" y="90" dy="0.5ex" text-anchor="end" font-family="sans-serif" font-size="13" opacity="1" fill="#000000">0</text>
<text x="30" y="10" dy="0.5ex" text-anchor="end" font-family="sans-serif" font-size="13" opacity="1" fill="#000000">100</text>
<text x="150" y="20" font-family="sans-serif" font-size="8" opacity="1" fill="#000000">us-0</text>
</svg>"##;
    let p = svgcheck::problems(svg, &["us-0", "eu-0"], Some((95.0, 99.0)));
    let has = |s: &str| p.iter().any(|x| x.contains(s));
    assert!(has("\"300.0\" is clipped"), "{p:#?}");
    assert!(has("\"us-0\" is set in 8 px"), "{p:#?}");
    assert!(
        has("legend entry \"us-0\" at x 150 is inside the plot"),
        "{p:#?}"
    );
    assert!(has("legend entry \"eu-0\" is missing"), "{p:#?}");
    assert!(has("stray from the data"), "{p:#?}");
}

#[test]
fn the_page_puts_failing_nodes_first_with_their_logs_and_when_each_verdict_failed() {
    let info = info();
    let samples = leaking();
    let s = summarize(&info, &samples, &[]);
    assert_eq!(s.failed, ["leak:eu-0:rss"], "{:?}", s.verdicts.leaks);
    let d = &s.detected;
    assert_eq!(d.len(), 1);
    assert!((60.0..=115.0).contains(&d[0].at_secs), "{d:?}");
    let charts = charts(&info, &samples, &s.verdicts);
    let svgs: Vec<String> = charts
        .iter()
        .map(|c| render(c, &info, &ChartOptions::default()).unwrap())
        .collect();
    let page = html(&info, &s, &charts, &svgs, &[]);
    assert!(page.contains(&format!("leak:eu-0:rss (from {:.0} s)", d[0].at_secs)));
    // The strip: eu-0 first (failing), each node with its log.
    let strip =
        &page[page.find("<h2>Nodes</h2>").unwrap()..page.find("<h2>Fault schedule").unwrap()];
    let (eu, us) = (
        strip.find("<b>eu-0</b>").unwrap(),
        strip.find("<b>us-0</b>").unwrap(),
    );
    assert!(eu < us, "the failing node is not first");
    for n in ["eu-0", "us-0"] {
        assert!(
            strip.contains(&format!("href=\"nodes/{n}/node.log\"")),
            "{n}"
        );
    }
    // The leak table: the leak first, in MiB with its budget, over-budget ratio and limit.
    let leaks = &page[page.find("<h2>Leaks</h2>").unwrap()..];
    let first_row = &leaks[leaks.find("<tr><td>").unwrap()..];
    let first_row = &first_row[..first_row.find("</tr>").unwrap()];
    assert!(
        first_row.contains("<td>eu-0</td><td>rss</td><td>MiB</td>"),
        "{first_row}"
    );
    assert!(
        first_row.contains("LEAK") && first_row.contains("none set"),
        "{first_row}"
    );
}

#[test]
fn a_fault_lasting_the_whole_run_has_no_catch_up_to_judge() {
    let mut info = info();
    info.schedule[0].start = 0;
    info.schedule[0].end = info.spec.soak.duration_secs;
    info.schedule[0].action = syncnet_crds::FaultAction::ErrorRate;
    let samples = samples();
    let s = summarize(&info, &samples, &[]);
    let page = html(&info, &s, &[], &[], &[]);
    assert!(page.contains("the fault lasted the whole run"), "{page}");
    assert!(!page.contains("<td>never</td>"));
}
