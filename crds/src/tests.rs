use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};

use super::*;

const GOOD: &str = r#"
apiVersion: syncnet.dev/v1alpha1
kind: SyncNetwork
metadata:
  name: quickstart
spec:
  regions:
    - {name: us, replicas: 4}
    - {name: eu, replicas: 4}
  latency:
    matrixMs:
      us: {us: 2, eu: 40}
      eu: {eu: 2}
    jitterMs: 2
  bandwidth: {uploadMbit: 100}
  producer: {region: us, blockIntervalMs: 1000, payloadBytes: 16384}
  faults:
    - {name: kill-one, everySecs: 120, durationSecs: 10, target: {region: eu, count: 1}, action: kill-restart}
    - {name: split, atSecs: 60, durationSecs: 30, target: {region: us}, action: partition, regions: [eu]}
    - {name: flaky, atSecs: 30, durationSecs: 60, target: {fraction: 0.5}, action: error-rate, rate: 0.05}
  soak: {durationSecs: 300, warmupSecs: 60, scrapeIntervalSecs: 5}
"#;

#[test]
fn a_good_spec_parses_and_round_trips() {
    let sn = SyncNetwork::from_yaml(GOOD).unwrap();
    assert_eq!(sn.spec.total_nodes(), 8);
    assert_eq!(sn.spec.faults[1].action, FaultAction::Partition);
    assert_eq!(sn.spec.soak.scrape_interval_secs, 5);
    assert_eq!(sn.spec.verdicts, VerdictSpec::default());
    let yaml = serde_yaml::to_string(&sn).unwrap();
    assert!(yaml.contains("apiVersion: syncnet.dev/v1alpha1"), "{yaml}");
    let again = SyncNetwork::from_yaml(&yaml).unwrap();
    assert_eq!((again.metadata, again.spec), (sn.metadata, sn.spec));
}

fn field_of(yaml: &str) -> String {
    SyncNetwork::from_yaml(yaml).unwrap_err().field
}

#[test]
fn bad_specs_name_the_field() {
    let cases = [
        ("regions:", "regionz:", "spec.regionz"),
        (
            "jitterMs: 2",
            "jitterMs: 2\n    bogus: 1",
            "spec.latency.bogus",
        ),
        ("jitterMs: 2", "jitterMs: -2", "spec.latency.jitterMs"),
        (
            "eu: {eu: 2}",
            "eu: {eu: 2, us: 50}",
            "spec.latency.matrixMs.eu.us",
        ),
        (
            "eu: {eu: 2}",
            "eu: {eu: 2, ap: 50}",
            "spec.latency.matrixMs.eu.ap",
        ),
        (
            "{name: eu, replicas: 4}",
            "{name: eu, replicas: 0}",
            "spec.regions[1].replicas",
        ),
        (
            "{name: eu, replicas: 4}",
            "{name: us, replicas: 4}",
            "spec.regions[1].name",
        ),
        (
            "{name: eu, replicas: 4}",
            "{name: EU, replicas: 4}",
            "spec.regions[1].name",
        ),
        (
            "region: us, block",
            "region: ap, block",
            "spec.producer.region",
        ),
        (
            "target: {region: eu, count: 1}",
            "target: {region: eu, count: 9}",
            "spec.faults[0].target.count",
        ),
        (
            "target: {region: eu, count: 1}",
            "target: {region: ap}",
            "spec.faults[0].target.region",
        ),
        (
            "regions: [eu]}",
            "regions: [ap]}",
            "spec.faults[1].regions[0]",
        ),
        ("rate: 0.05", "rate: 1.5", "spec.faults[2].rate"),
        ("rate: 0.05", "ms: 5", "spec.faults[2].rate"),
        (
            "action: kill-restart",
            "action: kill-restart, rate: 0.5",
            "spec.faults[0].rate",
        ),
        (
            "action: kill-restart",
            "action: explode",
            "spec.faults[0].action",
        ),
        (
            "atSecs: 60, durationSecs: 30",
            "atSecs: 60, everySecs: 90, durationSecs: 30",
            "spec.faults[1].atSecs",
        ),
        (
            "everySecs: 120, durationSecs: 10",
            "everySecs: 120, durationSecs: 200",
            "spec.faults[0].durationSecs",
        ),
        ("warmupSecs: 60", "warmupSecs: 300", "spec.soak.warmupSecs"),
        ("name: quickstart", "name: Quick_Start", "metadata.name"),
        ("kind: SyncNetwork", "kind: Deployment", "apiVersion"),
    ];
    let mut wrong = vec![];
    for (from, to, field) in cases {
        let yaml = GOOD.replacen(from, to, 1);
        assert_ne!(yaml, GOOD, "{from} not in the spec");
        let got = field_of(&yaml);
        if got != field {
            wrong.push(format!("{to}: got {got}, want {field}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // A directed matrix may differ per direction.
    let directed = GOOD
        .replace("eu: {eu: 2}", "eu: {eu: 2, us: 50}")
        .replace("jitterMs: 2", "jitterMs: 2\n    directed: true");
    assert!(SyncNetwork::from_yaml(&directed).is_ok());
    let e =
        SyncNetwork::from_yaml(&GOOD.replace("eu: {eu: 2}", "eu: {eu: 2, us: 50}")).unwrap_err();
    assert!(e.message.contains("directed"), "{e}");
}

/// Every node fault of docs/faults.md has an action; each takes exactly its own parameter.
#[test]
fn the_fault_actions_for_every_node_fault_validate_their_parameters() {
    let with = |action: &str| GOOD.replacen("action: error-rate, rate: 0.05", action, 1);
    for ok in [
        "action: setup-failure, rate: 0.5",
        "action: corrupt-blocks",
        "action: chunk-drop, rate: 0.2",
        "action: corrupt-chunks",
    ] {
        let sn = SyncNetwork::from_yaml(&with(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        assert_eq!(
            sn.spec.faults[2].action.label(),
            ok[8..].split(',').next().unwrap()
        );
    }
    for (bad, field) in [
        ("action: setup-failure", "spec.faults[2].rate"),
        ("action: setup-failure, rate: 2", "spec.faults[2].rate"),
        ("action: chunk-drop", "spec.faults[2].rate"),
        ("action: corrupt-blocks, rate: 0.5", "spec.faults[2].rate"),
        ("action: corrupt-chunks, ms: 5", "spec.faults[2].ms"),
    ] {
        assert_eq!(field_of(&with(bad)), field, "{bad}");
    }
    // Chunks exist only in IDA gossip.
    for action in ["action: chunk-drop, rate: 0.2", "action: corrupt-chunks"] {
        let yaml = with(action).replace(
            "payloadBytes: 16384}",
            "payloadBytes: 16384}\n  broadcast: {mode: gossipsub}",
        );
        let e = SyncNetwork::from_yaml(&yaml).unwrap_err();
        assert_eq!(e.field, "spec.faults[2].action", "{action}: {e}");
        assert!(e.message.contains("ida"), "{e}");
    }
}

/// A field indented into another mapping that ignores unknown keys (here a Kubernetes
/// toleration) is "missing" where it belongs: the message names the line it is really on, and
/// no message repeats the path in front of it.
#[test]
fn a_mis_indented_field_is_found_at_its_real_line() {
    let soak = "  soak: {durationSecs: 300, warmupSecs: 60, scrapeIntervalSecs: 5}\n";
    assert!(GOOD.contains(soak));
    let moved = GOOD.replace(soak, "").replace(
        "  faults:",
        concat!(
            "  kubernetes:\n    tolerations:\n      - key: dedicated\n",
            "        operator: Exists\n        soak: {durationSecs: 300}\n  faults:"
        ),
    );
    let line = 1 + moved.lines().position(|l| l.contains("soak:")).unwrap();
    let e = SyncNetwork::from_yaml(&moved).unwrap_err();
    assert_eq!(e.field, "spec", "{e}");
    assert!(e.message.starts_with("missing field `soak`"), "{e}");
    assert!(
        e.message.contains(&format!("`soak:` is at line {line}")),
        "{e}"
    );
    assert!(
        e.message.contains("(under `tolerations:`")
            || e.message.contains("(in the list item at line"),
        "{e}"
    );
    // A `faults:` dedented to the top level takes `soak:` after it along: both lines are named.
    let dedented = GOOD.replace("\n  faults:", "\nfaults:");
    let faults = 1 + dedented.lines().position(|l| l == "faults:").unwrap();
    let e = SyncNetwork::from_yaml(&dedented).unwrap_err();
    assert!(e.message.starts_with("missing field `soak`"), "{e}");
    assert!(
        e.message
            .contains(&format!("(under `faults:` at line {faults})")),
        "{e}"
    );
    // An unknown field: the path is said once, by the field.
    let e = SyncNetwork::from_yaml(&GOOD.replace("count: 1}", "count: 1, soak: 1}")).unwrap_err();
    assert_eq!(e.field, "spec.faults[0].target.soak", "{e}");
    assert!(e.message.starts_with("unknown field `soak`"), "{e}");
}

#[test]
fn the_crd_has_the_status_subresource_short_name_and_columns() {
    let crd = crate::crd();
    let yaml = serde_yaml::to_string(&crd).unwrap();
    assert_eq!(crd.spec.group, GROUP);
    assert_eq!(crd.spec.names.short_names, Some(vec!["sn".to_owned()]));
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, VERSION);
    assert!(v.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<&str> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        ["Phase", "Regions", "Head", "Max lag", "Verdict", "Age"]
    );
    // The fault action is a plain string enum in the schema (structural, no oneOf).
    assert!(
        yaml.contains("kill-restart") && !yaml.contains("oneOf"),
        "{yaml}"
    );
}

#[test]
fn yaml11_misreadings_are_flagged_and_quoted() {
    for s in ["off", "On", "YES", "n", "y", "NO", "1:20", "1_000", "-1_0"] {
        assert!(yaml11_misread(s), "{s}");
    }
    for s in [
        "ida", "offline", "none", "true", "10", "1.5", "a:b", "12D3", "-", "",
    ] {
        assert!(!yaml11_misread(s), "{s}");
    }
    let text = "\
enum:
- ida
- off
mode: off
y: 1
description: |-
  a: off
  - no
list:
- |-
  no
- n
";
    let want = "\
enum:
- ida
- 'off'
mode: 'off'
'y': 1
description: |-
  a: off
  - no
list:
- |-
  no
- 'n'
";
    assert_eq!(yaml11_safe(text), want);
    // Quoting changes nothing for a YAML 1.2 reader, and a second pass changes nothing.
    let a: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
    let b: serde_yaml::Value = serde_yaml::from_str(want).unwrap();
    assert_eq!(a, b);
    assert_eq!(yaml11_safe(want), want);
}

#[test]
fn the_committed_crd_quotes_the_off_mode_and_bounds_every_integer() {
    let yaml = crd_yaml();
    assert!(yaml.contains("- 'off'\n"), "the enum value must be quoted");
    assert!(!yaml.contains("- off\n"));
    let back: CustomResourceDefinition = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(back, crd());
    // Every integer whose Rust type is narrower than the apiserver's int64 has that type's
    // bounds, so nothing the apiserver stores fails to decode in the operator.
    fn walk(s: &JSONSchemaProps, path: &str, seen: &mut usize) {
        if s.type_.as_deref() == Some("integer") {
            let f = s.format.as_deref().unwrap_or("");
            if let Some((lo, hi)) = integer_bounds(f) {
                *seen += 1;
                assert!(s.minimum.is_some_and(|m| m >= lo), "{path}: {f} minimum");
                assert!(s.maximum.is_some_and(|m| m <= hi), "{path}: {f} maximum");
            } else {
                assert!(
                    matches!(f, "int64" | "uint64" | "uint" | "int" | ""),
                    "{path}: unknown format {f}"
                );
                if f.starts_with('u') {
                    assert!(s.minimum.is_some_and(|m| m >= 0.0), "{path}");
                }
            }
        }
        for (k, p) in s.properties.iter().flatten() {
            walk(p, &format!("{path}.{k}"), seen);
        }
        if let Some(JSONSchemaPropsOrArray::Schema(i)) = &s.items {
            walk(i, &format!("{path}[]"), seen);
        }
        if let Some(JSONSchemaPropsOrBool::Schema(a)) = &s.additional_properties {
            walk(a, &format!("{path}{{}}"), seen);
        }
    }
    let crd = crd();
    let root = crd.spec.versions[0]
        .schema
        .as_ref()
        .unwrap()
        .open_api_v3_schema
        .as_ref()
        .unwrap();
    let mut seen = 0;
    walk(root, "", &mut seen);
    assert!(seen >= 10, "{seen} bounded integers");
    let jitter = &root.properties.as_ref().unwrap()["spec"]
        .properties
        .as_ref()
        .unwrap()["latency"]
        .properties
        .as_ref()
        .unwrap()["jitterMs"];
    assert_eq!(jitter.maximum, Some(f64::from(u32::MAX)));
}

#[test]
fn network_and_region_names_fit_every_derived_object_name() {
    assert!(validate_network_name("quickstart").is_ok());
    assert!(validate_network_name(&"n".repeat(MAX_NAME)).is_ok());
    for bad in [
        "quick.start",
        "5g",
        "-a",
        "a-",
        "A",
        "",
        &"n".repeat(MAX_NAME + 1),
    ] {
        assert!(validate_network_name(bad).is_err(), "{bad:?}");
    }
    assert!(validate_region_name(&"r".repeat(MAX_REGION_NAME)).is_ok());
    assert!(validate_region_name(&"r".repeat(MAX_REGION_NAME + 1)).is_err());
    assert_eq!(MAX_NAME + 1 + MAX_REGION_NAME, MAX_SET_NAME);
}
