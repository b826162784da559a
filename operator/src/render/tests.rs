use super::*;

fn sn(yaml_edit: &str) -> SyncNetwork {
    let yaml = format!(
        r#"
apiVersion: syncnet.dev/v1alpha1
kind: SyncNetwork
metadata: {{name: n}}
spec:
  regions: [{{name: us, replicas: 2}}, {{name: eu, replicas: 2}}]
  latency: {{matrixMs: {{us: {{us: 2, eu: 40}}, eu: {{eu: 4}}}}, jitterMs: 3}}
  bandwidth: {{uploadMbit: 50}}
  producer: {{region: us, blockIntervalMs: 1000, payloadBytes: 1024}}
  soak: {{durationSecs: 60}}
{yaml_edit}"#
    );
    let mut sn = SyncNetwork::from_yaml(&yaml).unwrap();
    placeholder_identity(&mut sn, "ns1");
    sn
}

#[test]
fn pod_names_follow_stressnet_node_order() {
    let s = sn("");
    assert_eq!(
        pod_names("n", &s.spec),
        ["n-producer-0", "n-us-1", "n-eu-0", "n-eu-1"]
    );
    assert_eq!(node_names(&s.spec), ["us-0", "us-1", "eu-0", "eu-1"]);
    // The sets' ordinals produce exactly those pods.
    let r = render(&s, &Keys::placeholder(), &Options::default()).unwrap();
    let mut pods = vec![];
    for set in &r.stateful_sets {
        let spec = set.spec.as_ref().unwrap();
        let first = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
        for i in 0..spec.replicas.unwrap() {
            pods.push(format!(
                "{}-{}",
                set.metadata.name.as_ref().unwrap(),
                first + i
            ));
        }
    }
    pods.sort();
    let mut want = pod_names("n", &s.spec);
    want.sort();
    assert_eq!(pods, want);
}

#[test]
fn tc_netem_mode_moves_emulation_to_an_init_container() {
    // The eu node's config and pod spec, as rendered for `extra` spec lines.
    let eu = |extra: &str| {
        let r = render(&sn(extra), &Keys::placeholder(), &Options::default()).unwrap();
        let cfg: NodeConfig =
            serde_yaml::from_str(&r.config_map.data.as_ref().unwrap()["node-eu.yaml"]).unwrap();
        let pod = r.stateful_sets[2]
            .spec
            .clone()
            .unwrap()
            .template
            .spec
            .unwrap();
        (cfg, pod)
    };
    let (cfg, pod) = eu("");
    assert!(cfg.p2p.netem.is_some());
    assert!(pod.init_containers.is_none());

    let (cfg, pod) = eu("  kubernetes: {latency: tcNetem}");
    assert!(cfg.p2p.netem.is_none(), "emulated once, not twice");
    let init = &pod.init_containers.as_ref().unwrap()[0];
    let caps = init
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .as_ref()
        .unwrap();
    assert_eq!(caps.add.as_deref(), Some(&["NET_ADMIN".to_owned()][..]));
    // eu: mean of eu->us 40 and eu->eu 4.
    let tc = sn("  kubernetes: {latency: tcNetem}");
    assert_eq!(netem_args(&tc.spec, "eu"), "delay 22ms 3ms rate 50mbit");
}

#[test]
fn a_config_change_changes_only_the_affected_pod_templates() {
    let keys = Keys::placeholder();
    let hash = |s: &SyncNetwork| -> Vec<String> {
        render(s, &keys, &Options::default())
            .unwrap()
            .stateful_sets
            .iter()
            .map(|set| {
                set.spec
                    .as_ref()
                    .unwrap()
                    .template
                    .metadata
                    .as_ref()
                    .unwrap()
                    .annotations
                    .as_ref()
                    .unwrap()[CONFIG_HASH]
                    .clone()
            })
            .collect()
    };
    let a = hash(&sn(""));
    assert_eq!(a, hash(&sn("")), "rendering is deterministic");
    let b = hash(&sn("  sync: {streamsLow: 3}"));
    assert!(
        a.iter().zip(&b).all(|(x, y)| x != y),
        "every node's config changed"
    );
}

#[test]
fn an_isolating_partition_allows_only_the_targets_themselves() {
    let s = sn("");
    let targets = vec!["n-eu-0".to_owned()];
    let np = network_policy(&s, 4, &targets, &[]);
    let spec = np.spec.unwrap();
    let peer = spec.ingress.as_ref().unwrap()[0].from.as_ref().unwrap()[0]
        .pod_selector
        .clone()
        .unwrap();
    assert_eq!(peer, spec.pod_selector.clone().unwrap());
    assert_eq!(np.metadata.name.as_deref(), Some("n-partition-4"));
    assert!(np.metadata.owner_references.is_some());
}

/// The longest names the CRD admits (a 32-character network, 19-character regions, 5,000 nodes)
/// still make valid object names: a StatefulSet's pods carry `controller-revision-hash:
/// <set>-<10 chars>`, so a set name is at most 52; Services are DNS-1035 labels (63); pod names
/// and their label values at most 63; everything else a DNS subdomain (253).
#[test]
fn the_longest_admitted_names_make_valid_object_names() {
    use syncnet_crds::{MAX_NAME, MAX_REGION_NAME, MAX_SET_NAME};
    let net = format!("n{}", "x".repeat(MAX_NAME - 1));
    let region = |c: char| format!("{c}{}", "r".repeat(MAX_REGION_NAME - 1));
    let (a, b) = (region('a'), region('b'));
    let yaml = format!(
        r#"
apiVersion: syncnet.dev/v1alpha1
kind: SyncNetwork
metadata: {{name: {net}}}
spec:
  regions: [{{name: {a}, replicas: 2500}}, {{name: {b}, replicas: 2500}}]
  producer: {{region: {a}, blockIntervalMs: 1000, payloadBytes: 1024}}
  soak: {{durationSecs: 60}}
"#
    );
    let mut s = SyncNetwork::from_yaml(&yaml).expect("the longest names are admitted");
    placeholder_identity(&mut s, "ns1");
    let r = render(&s, &Keys::placeholder(), &Options::default()).unwrap();
    let dns1035 = |n: &str| {
        n.len() <= 63
            && n.starts_with(|c: char| c.is_ascii_lowercase())
            && !n.ends_with('-')
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    let mut longest_set = 0;
    for set in &r.stateful_sets {
        let name = set.metadata.name.as_deref().unwrap();
        assert!(name.len() <= MAX_SET_NAME, "{name}: {} > 52", name.len());
        assert!(dns1035(name), "{name}");
        longest_set = longest_set.max(name.len());
        let spec = set.spec.as_ref().unwrap();
        assert_eq!(spec.service_name.as_deref(), Some(name));
    }
    assert_eq!(
        longest_set, MAX_SET_NAME,
        "the bound is reached, not just kept"
    );
    for svc in &r.services {
        let name = svc.metadata.name.as_deref().unwrap();
        assert!(dns1035(name), "Service {name}");
    }
    let pods = pod_names(&net, &s.spec);
    assert_eq!(pods.len(), 5000);
    for p in &pods {
        assert!(p.len() <= 63 && dns1035(p), "pod {p}");
    }
    for n in [
        config_map_name(&net),
        secret_name(&net),
        network_policy_name(&net, usize::MAX),
    ] {
        assert!(n.len() <= 253 && dns1035(&n[..n.len().min(63)]), "{n}");
    }
    // Every label value the operator sets fits in 63.
    for set in &r.stateful_sets {
        let labels = set.metadata.labels.iter().flatten();
        let pod_labels = set
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .into_iter()
            .flatten();
        for (k, v) in labels.chain(pod_labels) {
            assert!(v.len() <= 63, "label {k}={v}");
        }
    }
}

#[test]
fn a_name_that_cannot_prefix_a_service_is_refused_before_anything_is_made() {
    let yaml = r#"
apiVersion: syncnet.dev/v1alpha1
kind: SyncNetwork
metadata: {name: quick.start}
spec:
  regions: [{name: us, replicas: 1}]
  producer: {region: us, blockIntervalMs: 1000, payloadBytes: 1024}
  soak: {durationSecs: 60}
"#;
    let e = SyncNetwork::from_yaml(yaml).unwrap_err();
    assert_eq!(e.field, "metadata.name");
    assert!(e.message.contains("starting with a letter"), "{e}");
}

#[test]
fn scheduling_and_pull_secrets_reach_every_node_pod() {
    let s = sn(r#"  kubernetes:
    imagePullSecrets: [{name: regcred}]
    nodeSelector: {pool: soak}
    tolerations: [{key: dedicated, operator: Equal, value: soak, effect: NoSchedule}]
    priorityClassName: soak-critical
    affinity:
      podAntiAffinity:
        preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              topologyKey: topology.kubernetes.io/zone
              labelSelector: {matchLabels: {syncnet.dev/network: n}}
"#);
    let r = render(&s, &Keys::placeholder(), &Options::default()).unwrap();
    assert!(r.stateful_sets.len() >= 2);
    for set in &r.stateful_sets {
        let pod = set.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let name = set.metadata.name.as_deref().unwrap();
        assert_eq!(
            pod.image_pull_secrets.as_ref().unwrap()[0].name,
            "regcred",
            "{name}"
        );
        assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "soak");
        assert_eq!(
            pod.tolerations.as_ref().unwrap()[0].value.as_deref(),
            Some("soak")
        );
        assert_eq!(pod.priority_class_name.as_deref(), Some("soak-critical"));
        let anti = pod.affinity.as_ref().unwrap().pod_anti_affinity.as_ref();
        assert!(anti.is_some(), "{name}");
    }
    // Without them nothing is set (the cluster's defaults apply).
    let plain = render(&sn(""), &Keys::placeholder(), &Options::default()).unwrap();
    let pod = plain.stateful_sets[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert!(pod.image_pull_secrets.is_none() && pod.node_selector.is_none());
    assert!(pod.tolerations.is_none() && pod.affinity.is_none());
}
