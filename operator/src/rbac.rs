//! What the chart's role grants (its ClusterRole, or the Role it renders when the operator watches
//! one namespace: the same rules), as (API group, resource, verb) triples, so a test can hold it
//! against the requests the reconciler makes.

use std::collections::BTreeSet;

pub type Grant = (String, String, String);

/// The grants of every role (a document with `rules`) in a chart template. Template lines
/// (`{{ ... }}`, such as the kind chosen by `watchNamespace`) are dropped first: the rules
/// themselves are plain YAML. A template that no longer parses yields nothing (and the test
/// holding it against the code fails).
pub fn granted_by_chart(template: &str) -> BTreeSet<Grant> {
    // Template comments (`{{/* ... */}}`, `{{- /* ... */ -}}`) may span lines: cut them whole.
    let mut uncommented = String::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let after = rest[open + 2..].trim_start_matches('-').trim_start();
        if let Some(end) = after.strip_prefix("/*").and_then(|c| c.find("*/")) {
            uncommented.push_str(&rest[..open]);
            let tail = &after[2 + end + 2..];
            rest = tail.find("}}").map_or("", |i| &tail[i + 2..]);
        } else {
            uncommented.push_str(&rest[..open + 2]);
            rest = &rest[open + 2..];
        }
    }
    uncommented.push_str(rest);
    let plain: String = uncommented
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_read_past_multi_line_comments_and_template_lines() {
        let t = r#"{{- /* A comment
over: several lines */}}
{{- $ns := .Values.watchNamespace }}
kind: ServiceAccount
---
kind: {{ if $ns }}Role{{ else }}ClusterRole{{ end }}
metadata:
  name: {{ .Release.Name }}
rules:
  {{/* inline */}}
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["list", "delete"]
"#;
        let g = granted_by_chart(t);
        let want: BTreeSet<Grant> = ["list", "delete"]
            .iter()
            .map(|v| (String::new(), "pods".to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(g, want);
        assert!(granted_by_chart("rules: [unclosed").is_empty());
    }
}
