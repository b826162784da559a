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
