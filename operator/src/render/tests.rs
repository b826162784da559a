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
