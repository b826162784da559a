use super::*;

#[test]
fn netem_switches_partitions_and_counts_connections_per_region() {
    let mut cfg = NetemConfig::default();
    cfg.latency_ms
        .entry("eu".into())
        .or_default()
        .insert("us".into(), 40);
    let net = Netem::new("eu".into(), PeerId::random(), cfg, NetemMetrics::default());
    assert!(!net.blocks("us", None));
    let g0 = net.partition_generation();
    net.set_partition(PartitionSet {
        regions: ["us".to_owned()].into(),
        ..PartitionSet::default()
    });
    assert!(net.blocks("us", None) && !net.blocks("eu", None));
    assert_ne!(net.partition_generation(), g0);
    net.set_partition(PartitionSet::default());
    assert!(!net.blocks("us", None));

    let a = net.connection_opened("us");
    let b = net.connection_opened("us");
    let c = net.connection_opened("mars");
    assert_eq!(c, "other", "regions outside the matrix are pooled");
    let by = net.connections_by_region();
    assert_eq!(by.get("us"), Some(&2));
    assert_eq!(by.get("other"), Some(&1));
    for k in [a, b, c] {
        net.connection_closed(&k);
    }
    assert!(net.connections_by_region().is_empty());

    assert_eq!(net.link_to("us").latency(), Duration::from_millis(40));
    assert_eq!(net.link_to("mars").latency(), Duration::ZERO);
    assert_eq!(net.metrics.unknown_region.get(), 1);
}
