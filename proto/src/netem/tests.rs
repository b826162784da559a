use super::*;

fn matrix(entries: &[(&str, &str, u32)]) -> NetemConfig {
    let mut cfg = NetemConfig::default();
    for (a, b, ms) in entries {
        cfg.latency_ms
            .entry((*a).to_owned())
            .or_default()
            .insert((*b).to_owned(), *ms);
    }
    cfg
}

#[test]
fn one_way_latency_is_directed_with_a_symmetric_fallback() {
    let cfg = matrix(&[("eu", "us", 40), ("us", "eu", 60), ("eu", "ap", 120)]);
    let ms = |a, b| cfg.one_way(a, b).map(|d| d.as_millis());
    assert_eq!(ms("eu", "us"), Some(40));
    assert_eq!(ms("us", "eu"), Some(60));
    assert_eq!(ms("ap", "eu"), Some(120), "reverse entry used");
    assert_eq!(ms("us", "ap"), None);
    assert_eq!(ms("eu", "eu"), None);
}

#[test]
fn validation_names_the_field() {
    let cfg = matrix(&[("eu", "us", 40)]);
    assert!(cfg.validate("eu").is_ok());
    assert!(cfg.validate("us").is_ok(), "a column counts as a region");
    let e = cfg.validate("ap").unwrap_err();
    assert!(
        e.field == "latency_ms" && e.message.contains("\"ap\""),
        "{e}"
    );
    assert!(NetemConfig::default().validate("anywhere").is_ok());

    let e = matrix(&[("eu", "US", 1)]).validate("eu").unwrap_err();
    assert_eq!(e.field, "latency_ms.eu", "{e}");
    let e = matrix(&[("eu", "us", 99_999)]).validate("eu").unwrap_err();
    assert_eq!(e.field, "latency_ms.eu.us", "{e}");
    let e = NetemConfig {
        upload_bytes_per_sec: 10,
        ..NetemConfig::default()
    }
    .validate("eu")
    .unwrap_err();
    assert_eq!(e.field, "upload_bytes_per_sec", "{e}");
    let e = NetemConfig {
        max_queue_bytes: 10,
        ..NetemConfig::default()
    }
    .validate("eu")
    .unwrap_err();
    assert_eq!(e.field, "max_queue_bytes", "{e}");
    for bad in ["", "-eu", "eu-", "EU", "e u", &"x".repeat(64)] {
        assert!(validate_region(bad).is_err(), "{bad:?}");
    }
    assert!(validate_region("us-east-1").is_ok());
}

#[test]
fn shaper_allows_a_burst_then_paces_at_the_rate() {
    let t0 = Instant::now();
    let mut s = Shaper::new(1000, 1500, t0);
    assert_eq!(s.reserve(t0, 1500), t0, "the burst leaves at once");
    assert_eq!(s.reserve(t0, 1000), t0 + Duration::from_secs(1));
    // Queued behind the first reservation, like bytes on a FIFO link.
    assert_eq!(s.reserve(t0, 500), t0 + Duration::from_millis(1500));
    // After the debt is paid and the bucket refilled, a burst goes at once again.
    let later = t0 + Duration::from_secs(10);
    assert_eq!(s.reserve(later, 1500), later);
}

#[test]
fn shaper_long_run_rate_matches_the_configured_rate() {
    let t0 = Instant::now();
    let rate = 2_000_000u64;
    let mut s = Shaper::new(rate, 64 * 1024, t0);
    let chunk = 16 * 1024;
    let n = 1000;
    let mut last = t0;
    for _ in 0..n {
        last = s.reserve(t0, chunk);
    }
    let expect = (n * chunk - 64 * 1024) as f64 / rate as f64;
    let got = (last - t0).as_secs_f64();
    assert!((got - expect).abs() < 1e-6, "{got} vs {expect}");
}

#[test]
fn link_adds_latency_and_jitter_stays_bounded_and_in_order() {
    let t0 = Instant::now();
    let mut l = Link::new(Duration::from_millis(40), Duration::ZERO, 1);
    assert_eq!(l.release_at(t0), t0 + Duration::from_millis(40));

    let (lat, jit) = (Duration::from_millis(40), Duration::from_millis(10));
    let mut l = Link::new(lat, jit, 7);
    let mut prev = t0;
    let mut below = 0;
    let mut above = 0;
    for i in 0..10_000u64 {
        let dep = t0 + Duration::from_micros(i * 100);
        let at = l.release_at(dep);
        assert!(at >= prev, "releases stay in order");
        assert!(at <= dep + lat + jit && at >= dep, "{:?}", at - dep);
        if at < dep + lat {
            below += 1;
        }
        if at > dep + lat {
            above += 1;
        }
        prev = at;
    }
    // Writes 100 us apart under 10 ms jitter: in-order clamping lifts most early ones, yet both
    // sides of the mean occur.
    assert!(below > 0 && above > 0, "below {below} above {above}");

    // Same seed, same schedule.
    let mut a = Link::new(lat, jit, 3);
    let mut b = Link::new(lat, jit, 3);
    for i in 0..100 {
        let d = t0 + Duration::from_millis(i * 50);
        assert_eq!(a.release_at(d), b.release_at(d));
    }
}

#[test]
fn partition_set_matches_regions_and_peers() {
    let p = PeerId::random();
    let q = PeerId::random();
    let set = PartitionSet {
        regions: ["us".to_owned()].into(),
        peers: [p].into(),
    };
    assert!(set.blocks("us", None));
    assert!(set.blocks("eu", Some(&p)));
    assert!(!set.blocks("eu", Some(&q)));
    assert!(!PartitionSet::default().blocks("us", Some(&p)));
}

#[test]
fn the_preamble_parses_byte_by_byte_and_names_what_is_wrong() {
    let peer = PeerId::random();
    let hello = preamble("eu-west", &peer);
    // Fed exactly what it asks for, it ends with the region and the peer.
    let mut buf = vec![];
    let done = loop {
        match parse_preamble(&buf).unwrap() {
            Preamble::Need(n) => {
                assert!(n >= 1 && buf.len() + n <= hello.len());
                buf.extend_from_slice(&hello[buf.len()..buf.len() + n]);
            }
            d => break d,
        }
    };
    assert_eq!(
        done,
        Preamble::Done {
            region: "eu-west".into(),
            peer
        }
    );
    let m = PREAMBLE_MAGIC.len();
    let mut bad_magic = hello.clone();
    bad_magic[0] ^= 1;
    let mut zero_region = hello[..m].to_vec();
    zero_region.push(0);
    let mut upper = hello[..m].to_vec();
    upper.extend_from_slice(&[2, b'E', b'U']);
    let mut bad_peer = hello[..m + 1 + 7].to_vec();
    bad_peer.extend_from_slice(&[3, 1, 2, 3]);
    let mut long = hello.clone();
    long.push(0);
    for (input, says) in [
        (bad_magic, "p2p.netem"),
        (zero_region, "field of 0 bytes"),
        (upper, "netem region"),
        (bad_peer, "netem peer id"),
        (long, "past its end"),
    ] {
        let e = parse_preamble(&input).unwrap_err();
        assert!(e.contains(says), "{e}");
    }
}
