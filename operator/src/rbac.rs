//! What the chart's ClusterRole grants, as (API group, resource, verb) triples, so a test can hold
//! it against the requests the reconciler makes.

use std::collections::BTreeSet;

pub type Grant = (String, String, String);

/// The grants of every ClusterRole in a chart template. Template lines (`{{ ... }}`) are dropped
/// first: the rules themselves are plain YAML. A template that no longer parses yields nothing
/// (and the test holding it against the code fails).
pub fn granted_by_chart(template: &str) -> BTreeSet<Grant> {
    let plain: String = template
        .lines()
        .filter(|l| !l.contains("{{") && !l.contains("}}"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut out = BTreeSet::new();
    for doc in serde_yaml::Deserializer::from_str(&plain) {
        // serde_yaml's document iterator repeats a syntax error forever: stop at the first.
        let Ok(v) = <serde_yaml::Value as serde::Deserialize>::deserialize(doc) else {
            break;
        };
        if v["kind"].as_str() != Some("ClusterRole") {
            continue;
        }
        for rule in v["rules"].as_sequence().into_iter().flatten() {
            let list = |k: &str| -> Vec<String> {
                rule[k]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            };
            for g in list("apiGroups") {
                for r in list("resources") {
                    for verb in list("verbs") {
                        out.insert((g.clone(), r.clone(), verb));
                    }
                }
            }
        }
    }
    out
}
