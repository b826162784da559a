//! SyncNetwork → Kubernetes objects. Sans-IO: plain values in, plain objects out, so a 1,000-node
//! spec renders (and is tested) without an API server.
//!
//! Per network: one ConfigMap (network.yaml and one node config per region, plus the producer's),
//! a Secret with the keys (made once by the reconciler, never rendered here), and per region a
//! headless Service and a StatefulSet. The producer is a StatefulSet of its own (its config
//! differs), and the producer region's StatefulSet starts its ordinals at 1, so pod names match
//! stressnet's node names: node `<region>-<i>` is pod `<net>-<region>-<i>`, and `<region>-0` of
//! the producer's region is `<net>-producer-0`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetOrdinals, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    HTTPGetAction, KeyToPath, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use soak::plan;
use syncnet_crds::{LatencyMode, SyncNetwork, SyncNetworkSpec};
use syncnet_proto::config::NodeConfig;

pub const P2P_PORT: i32 = 9000;
pub const METRICS_PORT: i32 = 9100;
pub const CONFIG_DIR: &str = "/etc/syncnode";
pub const KEYS_DIR: &str = "/etc/syncnode-keys";
pub const DATA_DIR: &str = "/data";
/// Keys in the network's Secret.
pub const PRODUCER_KEY: &str = "producer.key";
pub const BOOTNODE_KEY: &str = "bootnode.key";
pub const CONTROL_TOKEN: &str = "control.token";

/// Labels every object of a network carries; pods add region and role.
pub const LABEL_NETWORK: &str = "syncnet.dev/network";
pub const LABEL_REGION: &str = "syncnet.dev/region";
pub const LABEL_ROLE: &str = "syncnet.dev/role";
/// On NetworkPolicies: the fault window they enforce.
pub const LABEL_FAULT: &str = "syncnet.dev/fault-window";
const LABEL_POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "syncnet-operator");
/// Pod annotation: hash of the pod's config, so a config change rolls the StatefulSet.
pub const CONFIG_HASH: &str = "syncnet.dev/config-hash";

/// What the operator decides rather than the spec.
#[derive(Clone, Debug)]
pub struct Options {
    /// Image when the spec names none.
    pub node_image: String,
    /// Image with `tc` for `latency: tcNetem`, when the spec names none.
    pub netem_image: String,
    /// DNS domain of the cluster (bootnode addresses).
    pub cluster_domain: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            node_image: "ghcr.io/syncnet/syncnode:0.1.0".into(),
            netem_image: "docker.io/nicolaka/netshoot:v0.13".into(),
            cluster_domain: "cluster.local".into(),
        }
    }
}

/// Public parts of the network's keys, read from its Secret.
#[derive(Clone, Debug, PartialEq)]
pub struct Keys {
    /// Hex ed25519 public key of the producer (genesis).
    pub producer_public: syncnet_proto::chain::H256,
    /// libp2p peer id of the producer pod (the bootnode).
    pub bootnode_peer_id: String,
}

/// Everything applied for one network, in apply order.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub config_map: ConfigMap,
    pub services: Vec<Service>,
    pub stateful_sets: Vec<StatefulSet>,
}

pub fn config_map_name(net: &str) -> String {
    format!("{net}-config")
}
pub fn secret_name(net: &str) -> String {
    format!("{net}-keys")
}
pub fn producer_set(net: &str) -> String {
    format!("{net}-producer")
}
pub fn region_set(net: &str, region: &str) -> String {
    format!("{net}-{region}")
}

/// Pod names in stressnet's node order (`plan::nodes`): region by region, replica by replica.
pub fn pod_names(net: &str, spec: &SyncNetworkSpec) -> Vec<String> {
    let mut out = Vec::with_capacity(spec.total_nodes() as usize);
    for r in &spec.regions {
        for i in 0..r.replicas {
            if i == 0 && r.name == spec.producer.region {
                out.push(format!("{}-0", producer_set(net)));
            } else {
                out.push(format!("{}-{i}", region_set(net, &r.name)));
            }
        }
    }
    out
}

/// stressnet's node names, in the same order as [`pod_names`].
pub fn node_names(spec: &SyncNetworkSpec) -> Vec<String> {
    spec.regions
        .iter()
        .flat_map(|r| (0..r.replicas).map(|i| plan::node_name(&r.name, i)))
        .collect()
}

pub fn network_labels(net: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NETWORK.to_owned(), net.to_owned()),
        (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
    ])
}

fn pod_labels(net: &str, region: &str, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NETWORK.to_owned(), net.to_owned()),
        (LABEL_REGION.to_owned(), region.to_owned()),
        (LABEL_ROLE.to_owned(), role.to_owned()),
    ])
}

fn meta(
    sn: &SyncNetwork,
    name: String,
    owner: &OwnerReference,
    labels: BTreeMap<String, String>,
) -> ObjectMeta {
    let mut all = network_labels(&sn.name_any());
    all.extend(labels);
    ObjectMeta {
        name: Some(name),
        namespace: sn.namespace(),
        labels: Some(all),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

fn owner(sn: &SyncNetwork) -> OwnerReference {
    sn.controller_owner_ref(&())
        .expect("a SyncNetwork from the API server has a name and a uid")
}

/// The bootnode's address: the producer pod by its stable DNS name.
pub fn bootnode(sn: &SyncNetwork, keys: &Keys, opts: &Options) -> String {
    let net = sn.name_any();
    let ns = sn.namespace().unwrap_or_else(|| "default".into());
    let set = producer_set(&net);
    format!(
        "/dns4/{set}-0.{set}.{ns}.svc.{}/tcp/{P2P_PORT}/p2p/{}",
        opts.cluster_domain, keys.bootnode_peer_id
    )
}

/// A pod's node config: stressnet's mapping of the spec, with the pod's paths and addresses.
fn node_config(
    sn: &SyncNetwork,
    region: &str,
    producer: bool,
    keys: &Keys,
    opts: &Options,
) -> NodeConfig {
    let spec = &sn.spec;
    let dir = PathBuf::from(CONFIG_DIR);
    let mut c = plan::node_config(
        spec,
        region,
        producer,
        dir.join("network.yaml"),
        PathBuf::from(DATA_DIR),
        PathBuf::from(KEYS_DIR).join(PRODUCER_KEY),
    );
    c.metrics.listen = ([0, 0, 0, 0], METRICS_PORT as u16).into();
    c.metrics.control_token_file = Some(PathBuf::from(KEYS_DIR).join(CONTROL_TOKEN));
    c.p2p.listen = vec![
        format!("/ip4/0.0.0.0/tcp/{P2P_PORT}")
            .parse()
            .expect("valid"),
    ];
    if producer {
        c.p2p.key_file = Some(PathBuf::from(KEYS_DIR).join(BOOTNODE_KEY));
    } else {
        c.p2p.bootnodes = vec![bootnode(sn, keys, opts).parse().expect("valid multiaddr")];
    }
    if spec.kubernetes.latency == LatencyMode::TcNetem {
        c.p2p.netem = None;
    }
    c
}

fn network_yaml(sn: &SyncNetwork, keys: &Keys) -> Result<String, String> {
    // Genesis time: the resource's creation, so every reconcile renders the same network.
    let created_ms = sn
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_millisecond().max(0) as u64);
    let net =
        syncnet_proto::config::NetworkConfig::new(&sn.name_any(), created_ms, keys.producer_public)
            .map_err(|e| e.to_string())?;
    Ok(serde_yaml::to_string(&net).expect("a network config serialises"))
}

fn config_file(region: Option<&str>) -> String {
    match region {
        None => "producer.yaml".into(),
        Some(r) => format!("node-{r}.yaml"),
    }
}

/// Fails only on what the spec's validation lets through but a network id refuses.
pub fn render(sn: &SyncNetwork, keys: &Keys, opts: &Options) -> Result<Rendered, String> {
    let net = sn.name_any();
    let owner = owner(sn);
    let spec = &sn.spec;
    let mut data = BTreeMap::new();
    data.insert(
        "network.yaml".to_owned(),
        network_yaml(sn, keys).map_err(|e| format!("metadata.name: {e}"))?,
    );
    let producer_cfg =
        serde_yaml::to_string(&node_config(sn, &spec.producer.region, true, keys, opts))
            .expect("serialises");
    data.insert(config_file(None), producer_cfg);
    for r in &spec.regions {
        let c = serde_yaml::to_string(&node_config(sn, &r.name, false, keys, opts))
            .expect("serialises");
        data.insert(config_file(Some(&r.name)), c);
    }
    let hash_of = |file: &str| {
        let mut h = blake3::Hasher::new();
        h.update(data["network.yaml"].as_bytes());
        h.update(data[file].as_bytes());
        h.finalize().to_hex()[..16].to_owned()
    };

    let mut services = vec![];
    let mut sets = vec![];
    let producer_region = &spec.producer.region;
    {
        let name = producer_set(&net);
        let labels = pod_labels(&net, producer_region, "producer");
        services.push(headless_service(sn, &name, &owner, &labels));
        let file = config_file(None);
        sets.push(stateful_set(
            sn,
            &StsParams {
                name,
                labels,
                replicas: 1,
                first_ordinal: 0,
                config_file: &file,
                config_hash: hash_of(&file),
                region: producer_region,
                producer: true,
            },
            &owner,
            opts,
        ));
    }
    for r in &spec.regions {
        let name = region_set(&net, &r.name);
        let labels = pod_labels(&net, &r.name, "node");
        services.push(headless_service(sn, &name, &owner, &labels));
        let has_producer = r.name == *producer_region;
        let file = config_file(Some(&r.name));
        sets.push(stateful_set(
            sn,
            &StsParams {
                name,
                labels,
                replicas: r.replicas - u32::from(has_producer),
                first_ordinal: i32::from(has_producer),
                config_file: &file,
                config_hash: hash_of(&file),
                region: &r.name,
                producer: false,
            },
            &owner,
            opts,
        ));
    }
    let config_map = ConfigMap {
        metadata: meta(sn, config_map_name(&net), &owner, BTreeMap::new()),
        data: Some(data),
        ..ConfigMap::default()
    };
    Ok(Rendered {
        config_map,
        services,
        stateful_sets: sets,
    })
}

fn headless_service(
    sn: &SyncNetwork,
    name: &str,
    owner: &OwnerReference,
    labels: &BTreeMap<String, String>,
) -> Service {
    Service {
        metadata: meta(sn, name.to_owned(), owner, labels.clone()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // Peers must resolve a pod before it is ready: readiness waits for peers.
            publish_not_ready_addresses: Some(true),
            selector: Some(labels.clone()),
            ports: Some(vec![
                ServicePort {
                    name: Some("p2p".into()),
                    port: P2P_PORT,
                    target_port: Some(IntOrString::String("p2p".into())),
                    ..ServicePort::default()
                },
                ServicePort {
                    name: Some("metrics".into()),
                    port: METRICS_PORT,
                    target_port: Some(IntOrString::String("metrics".into())),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

struct StsParams<'a> {
    name: String,
    labels: BTreeMap<String, String>,
    replicas: u32,
    first_ordinal: i32,
    config_file: &'a str,
    config_hash: String,
    region: &'a str,
    producer: bool,
}

fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), q("100m")),
            ("memory".to_owned(), q("128Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), q("1Gi"))])),
        ..ResourceRequirements::default()
    }
}

fn stateful_set(
    sn: &SyncNetwork,
    p: &StsParams,
    owner: &OwnerReference,
    opts: &Options,
) -> StatefulSet {
    let spec = &sn.spec;
    let net = sn.name_any();
    let image = spec
        .node
        .image
        .clone()
        .unwrap_or_else(|| opts.node_image.clone());
    let healthz = |initial: i32, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz".into()),
            port: IntOrString::String("metrics".into()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        timeout_seconds: Some(2),
        ..Probe::default()
    };
    // The producer gets its signing and identity keys; everyone the control token.
    let mut key_items = vec![KeyToPath {
        key: CONTROL_TOKEN.into(),
        path: CONTROL_TOKEN.into(),
        ..KeyToPath::default()
    }];
    if p.producer {
        for k in [PRODUCER_KEY, BOOTNODE_KEY] {
            key_items.push(KeyToPath {
                key: k.into(),
                path: k.into(),
                ..KeyToPath::default()
            });
        }
    }
    let container = Container {
        name: "syncnode".into(),
        image: Some(image),
        args: Some(vec![
            "run".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/{}", p.config_file),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("p2p".into()),
                container_port: P2P_PORT,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("metrics".into()),
                container_port: METRICS_PORT,
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(healthz(2, 5)),
        liveness_probe: Some(healthz(10, 10)),
        resources: Some(
            spec.kubernetes
                .resources
                .clone()
                .unwrap_or_else(default_resources),
        ),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "keys".into(),
                mount_path: KEYS_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "data".into(),
                mount_path: DATA_DIR.into(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    let init_containers = (spec.kubernetes.latency == LatencyMode::TcNetem)
        .then(|| vec![netem_container(spec, p.region, opts)]);
    let mut annotations = BTreeMap::new();
    annotations.insert(CONFIG_HASH.to_owned(), p.config_hash.clone());
    // The common scrape convention, for a Prometheus that discovers pods (the dashboard's source).
    annotations.insert("prometheus.io/scrape".to_owned(), "true".to_owned());
    annotations.insert("prometheus.io/port".to_owned(), METRICS_PORT.to_string());
    let mut template_labels = p.labels.clone();
    template_labels.insert(LABEL_NETWORK.into(), net.clone());
    StatefulSet {
        metadata: meta(sn, p.name.clone(), owner, p.labels.clone()),
        spec: Some(StatefulSetSpec {
            service_name: Some(p.name.clone()),
            replicas: Some(p.replicas as i32),
            ordinals: (p.first_ordinal != 0).then_some(StatefulSetOrdinals {
                start: Some(p.first_ordinal),
            }),
            // 1,000 pods start together, not one after another.
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            selector: LabelSelector {
                match_labels: Some(p.labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(template_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(10),
                    security_context: Some(PodSecurityContext {
                        fs_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    init_containers,
                    containers: vec![container],
                    image_pull_secrets: Some(spec.kubernetes.image_pull_secrets.clone())
                        .filter(|v| !v.is_empty()),
                    node_selector: Some(spec.kubernetes.node_selector.clone())
                        .filter(|m| !m.is_empty()),
                    tolerations: Some(spec.kubernetes.tolerations.clone())
                        .filter(|v| !v.is_empty()),
                    affinity: spec.kubernetes.affinity.clone(),
                    priority_class_name: spec.kubernetes.priority_class_name.clone(),
                    volumes: Some(vec![
                        Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: config_map_name(&net),
                                ..ConfigMapVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        Volume {
                            name: "keys".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(secret_name(&net)),
                                items: Some(key_items),
                                default_mode: Some(0o400),
                                ..SecretVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        Volume {
                            name: "data".into(),
                            empty_dir: Some(EmptyDirVolumeSource {
                                size_limit: Some(Quantity("2Gi".into())),
                                ..EmptyDirVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// `tc netem` can delay a pod's egress only as a whole (destinations are pod IPs the spec does not
/// know), so a pod gets its region's mean one-way latency to every region, the spec's jitter and
/// its upload bandwidth.
pub fn netem_args(spec: &SyncNetworkSpec, region: &str) -> String {
    let lat = &spec.latency;
    let to = |a: &str, b: &str| {
        lat.matrix_ms
            .get(a)
            .and_then(|r| r.get(b))
            .or_else(|| lat.matrix_ms.get(b).and_then(|r| r.get(a)))
            .copied()
            .unwrap_or(0)
    };
    let sum: u64 = spec
        .regions
        .iter()
        .map(|r| u64::from(to(region, &r.name)))
        .sum();
    let mean = sum / spec.regions.len().max(1) as u64;
    let mut args = format!("delay {mean}ms");
    if lat.jitter_ms > 0 {
        args += &format!(" {}ms", lat.jitter_ms);
    }
    if let Some(m) = spec.bandwidth.upload_mbit {
        args += &format!(" rate {m}mbit");
    }
    args
}

fn netem_container(spec: &SyncNetworkSpec, region: &str, opts: &Options) -> Container {
    Container {
        name: "netem".into(),
        image: Some(
            spec.kubernetes
                .netem_image
                .clone()
                .unwrap_or_else(|| opts.netem_image.clone()),
        ),
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            format!(
                "tc qdisc replace dev eth0 root netem {}",
                netem_args(spec, region)
            ),
        ]),
        security_context: Some(SecurityContext {
            // tc needs NET_ADMIN in the pod's network namespace, nothing else.
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

pub fn network_policy_name(net: &str, window: usize) -> String {
    format!("{net}-partition-{window}")
}

/// A partition window as a NetworkPolicy: the target pods may talk only to network pods outside
/// the cut-off regions (or, without regions, only to each other), in both directions; metrics and
/// the control API stay reachable from anywhere, and DNS stays allowed.
pub fn network_policy(
    sn: &SyncNetwork,
    window: usize,
    target_pods: &[String],
    cut_regions: &[String],
) -> NetworkPolicy {
    let net = sn.name_any();
    let targets = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: LABEL_POD_NAME.into(),
            operator: "In".into(),
            values: Some(target_pods.to_vec()),
        }]),
        ..LabelSelector::default()
    };
    let allowed = if cut_regions.is_empty() {
        targets.clone()
    } else {
        LabelSelector {
            match_labels: Some(BTreeMap::from([(LABEL_NETWORK.to_owned(), net.clone())])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: LABEL_REGION.into(),
                operator: "NotIn".into(),
                values: Some(cut_regions.to_vec()),
            }]),
        }
    };
    let peer = NetworkPolicyPeer {
        pod_selector: Some(allowed),
        ..NetworkPolicyPeer::default()
    };
    let port = |p: i32, proto: &str| NetworkPolicyPort {
        port: Some(IntOrString::Int(p)),
        protocol: Some(proto.into()),
        ..NetworkPolicyPort::default()
    };
    NetworkPolicy {
        metadata: meta(
            sn,
            network_policy_name(&net, window),
            &owner(sn),
            BTreeMap::from([(LABEL_FAULT.to_owned(), window.to_string())]),
        ),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(targets),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![peer.clone()]),
                    ..NetworkPolicyIngressRule::default()
                },
                NetworkPolicyIngressRule {
                    from: None,
                    ports: Some(vec![port(METRICS_PORT, "TCP")]),
                },
            ]),
            egress: Some(vec![
                NetworkPolicyEgressRule {
                    to: Some(vec![peer]),
                    ..NetworkPolicyEgressRule::default()
                },
                NetworkPolicyEgressRule {
                    to: None,
                    ports: Some(vec![port(53, "UDP"), port(53, "TCP")]),
                },
            ]),
        }),
    }
}

#[cfg(test)]
mod tests;

impl Keys {
    /// Stand-ins for `syncnet-operator render` and benchmarks: the operator makes real keys.
    pub fn placeholder() -> Keys {
        let k = ed25519_dalek_seed(1);
        let b = ed25519_dalek_seed(2);
        Keys {
            producer_public: syncnet_proto::keys::public_key(&k),
            bootnode_peer_id: syncnet_proto::keys::peer_id(&b).to_string(),
        }
    }
}

fn ed25519_dalek_seed(n: u8) -> syncnet_proto::keys::SigningKey {
    syncnet_proto::keys::SigningKey::from_bytes(&[n; 32])
}

/// What the API server would have set on a resource read from a file: namespace, uid, creation
/// time (owner references need a uid).
pub fn placeholder_identity(sn: &mut SyncNetwork, namespace: &str) {
    sn.metadata.namespace = Some(namespace.to_owned());
    sn.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
    sn.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
}

/// One object as a YAML document (`---` first).
pub fn doc_yaml<T: serde::Serialize + k8s_openapi::Resource>(obj: &T) -> String {
    let mut v = serde_json::to_value(obj).expect("serialises");
    v["apiVersion"] = T::API_VERSION.into();
    v["kind"] = T::KIND.into();
    format!("---\n{}", serde_yaml::to_string(&v).expect("serialises"))
}

/// Multi-document YAML of everything rendered, in apply order.
pub fn to_yaml(r: &Rendered) -> String {
    fn doc<T: serde::Serialize + k8s_openapi::Resource>(out: &mut String, obj: &T) {
        out.push_str(&doc_yaml(obj));
    }
    let mut out = String::new();
    doc(&mut out, &r.config_map);
    for s in &r.services {
        doc(&mut out, s);
    }
    for s in &r.stateful_sets {
        doc(&mut out, s);
    }
    out
}
