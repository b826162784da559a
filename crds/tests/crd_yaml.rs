//! The committed CRD YAML is what the types generate: a change to the types without running
//! `crdgen` fails here.

#[test]
fn committed_crd_yaml_matches_the_types() {
    let want = syncnet_crds::crd_yaml();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for rel in syncnet_crds::CRD_FILES {
        let have = std::fs::read_to_string(root.join(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}; run `cargo run -p syncnet-crds --bin crdgen`"));
        assert!(
            have == want,
            "{rel} differs from the generated CRD; run `cargo run -p syncnet-crds --bin crdgen` and commit"
        );
    }
}

#[test]
fn the_crd_has_columns_short_name_status_and_cel_rules() {
    let crd = syncnet_crds::crd();
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["sn".to_owned()][..])
    );
    let v = &crd.spec.versions[0];
    assert!(v.subresources.as_ref().unwrap().status.is_some());
    let cols: Vec<&str> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        cols,
        ["Phase", "Regions", "Head", "Max lag", "Verdict", "Age"]
    );
    let json = serde_json::to_string(&crd).unwrap();
    for rule in [
        "self.metadata.name.size() <= 32",
        "self.regions.exists(r, r.name == self.producer.region)",
        "has(self.atSecs) != has(self.everySecs)",
        "self.warmupSecs < self.durationSecs",
    ] {
        assert!(json.contains(rule), "missing CEL rule {rule}");
    }
}

const GOOD: &str = r#"
apiVersion: syncnet.dev/v1alpha1
kind: SyncNetwork
metadata: {name: cel}
spec:
  regions: [{name: us, replicas: 2}, {name: eu, replicas: 2}]
  producer: {region: us, blockIntervalMs: 1000, payloadBytes: 1024}
  sync: {streamsLow: 2, streamsHigh: 4}
  faults:
    - {name: k, everySecs: 60, durationSecs: 10, target: {region: eu, count: 1}, action: kill-restart}
    - {name: p, atSecs: 30, durationSecs: 10, target: {region: us}, action: partition, regions: [eu]}
  soak: {durationSecs: 300, warmupSecs: 60}
"#;

/// Evaluates the CRD's CEL rules on a spec (as JSON), the way the apiserver does on apply.
fn cel(edit: impl FnOnce(&mut serde_json::Value)) -> Result<(), String> {
    let sn = syncnet_crds::SyncNetwork::from_yaml(GOOD).unwrap();
    let mut v = serde_json::to_value(&sn).unwrap();
    edit(&mut v);
    let sn: syncnet_crds::SyncNetwork = serde_json::from_value(v).unwrap();
    kube::core::cel::validate_cel(&sn).map_err(|e| e.to_string())
}

#[test]
fn cel_rules_pass_good_specs_and_refuse_what_validate_refuses() {
    cel(|_| {}).unwrap();
    // Every committed example passes the apiserver's rules too.
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for e in std::fs::read_dir(examples).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "yaml") {
            let sn = syncnet_crds::SyncNetwork::from_yaml(&std::fs::read_to_string(&path).unwrap())
                .unwrap();
            kube::core::cel::validate_cel(&sn)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "producer.region",
            Box::new(|v| v["spec"]["producer"]["region"] = "ap".into()),
        ),
        (
            "names must be unique",
            Box::new(|v| v["spec"]["regions"][1]["name"] = "us".into()),
        ),
        (
            "target.region",
            Box::new(|v| v["spec"]["faults"][0]["target"]["region"] = "ap".into()),
        ),
        (
            "faults[].regions",
            Box::new(|v| v["spec"]["faults"][1]["regions"][0] = "ap".into()),
        ),
        (
            "exactly one of atSecs",
            Box::new(|v| v["spec"]["faults"][0]["atSecs"] = 5.into()),
        ),
        (
            "below everySecs",
            Box::new(|v| v["spec"]["faults"][0]["durationSecs"] = 60.into()),
        ),
        (
            "count or fraction",
            Box::new(|v| v["spec"]["faults"][0]["target"]["fraction"] = 0.5.into()),
        ),
        (
            "streamsLow",
            Box::new(|v| v["spec"]["sync"]["streamsLow"] = 9.into()),
        ),
        (
            "warmupSecs",
            Box::new(|v| v["spec"]["soak"]["warmupSecs"] = 300.into()),
        ),
        (
            "at most 5000 nodes",
            Box::new(|v| v["spec"]["regions"][0]["replicas"] = 4999.into()),
        ),
        (
            "metadata.name",
            Box::new(|v| v["metadata"]["name"] = "n".repeat(33).into()),
        ),
        (
            "starting with a letter",
            Box::new(|v| v["metadata"]["name"] = "quick.start".into()),
        ),
        (
            "starting with a letter",
            Box::new(|v| v["metadata"]["name"] = "5g".into()),
        ),
    ];
    for (want, edit) in cases {
        let err = cel(edit).expect_err(want);
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn every_cel_refusal_is_also_a_validate_refusal() {
    // The same edits through `from_yaml`, which is what stressnet and the operator run.
    let edits: &[(&str, &str)] = &[
        ("producer: {region: us", "producer: {region: ap"),
        ("{name: eu, replicas: 2}", "{name: us, replicas: 2}"),
        (
            "target: {region: eu, count: 1}",
            "target: {region: ap, count: 1}",
        ),
        ("regions: [eu]", "regions: [ap]"),
        (
            "everySecs: 60, durationSecs: 10",
            "everySecs: 60, atSecs: 5, durationSecs: 10",
        ),
        (
            "everySecs: 60, durationSecs: 10",
            "everySecs: 60, durationSecs: 60",
        ),
        ("count: 1}", "count: 1, fraction: 0.5}"),
        ("streamsLow: 2", "streamsLow: 9"),
        ("warmupSecs: 60", "warmupSecs: 300"),
        ("{name: us, replicas: 2}", "{name: us, replicas: 4999}"),
        ("name: cel}", "name: ccccccccccccccccccccccccccccccccc}"),
        ("name: cel}", "name: quick.start}"),
        ("name: cel}", "name: 5g}"),
    ];
    for (from, to) in edits {
        assert!(GOOD.contains(from), "{from}");
        let yaml = GOOD.replacen(from, to, 1);
        assert!(
            syncnet_crds::SyncNetwork::from_yaml(&yaml).is_err(),
            "{to} passed validate"
        );
    }
}
