//! The wrapper on an in-memory pipe under tokio's paused clock: timings are exact and the tests
//! never sleep for real.

use super::*;
use crate::netem::{NetemConfig, NetemMetrics, PartitionSet};
use futures::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant as TInstant;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

type Pipe = Compat<tokio::io::DuplexStream>;

fn pipe() -> (Pipe, Pipe) {
    let (a, b) = tokio::io::duplex(1 << 20);
    (a.compat(), b.compat())
}

fn netem(region: &str, cfg: NetemConfig) -> Arc<Netem> {
    Arc::new(Netem::new(
        region.into(),
        PeerId::random(),
        cfg,
        NetemMetrics::default(),
    ))
}

fn eu_us(eu_to_us: u32, us_to_eu: u32) -> NetemConfig {
    let mut cfg = NetemConfig::default();
    cfg.latency_ms
        .entry("eu".into())
        .or_default()
        .insert("us".into(), eu_to_us);
    cfg.latency_ms
        .entry("us".into())
        .or_default()
        .insert("eu".into(), us_to_eu);
    cfg
}

/// Both ends of an emulated connection, after the preamble.
async fn connected(a: Arc<Netem>, b: Arc<Netem>) -> (NetemStream<Pipe>, NetemStream<Pipe>) {
    let (x, y) = pipe();
    let (sa, sb) = tokio::join!(handshake(x, a), handshake(y, b));
    (sa.unwrap(), sb.unwrap())
}

#[tokio::test(start_paused = true)]
async fn preamble_tells_each_side_the_others_region_and_peer() {
    let (a, b) = (netem("eu", eu_us(40, 60)), netem("us", eu_us(40, 60)));
    let (sa, sb) = connected(a.clone(), b.clone()).await;
    assert_eq!(sa.remote_region(), "us");
    assert_eq!(sb.remote_region(), "eu");
    assert_eq!(sa.peer, Some(b.local_peer));
    assert_eq!(sb.peer, Some(a.local_peer));
    assert_eq!(a.connections_by_region().get("us"), Some(&1));
    drop(sa);
    assert!(a.connections_by_region().is_empty(), "closing is counted");
}

#[tokio::test(start_paused = true)]
async fn a_peer_without_netem_is_refused_with_a_clear_error() {
    let (x, mut y) = pipe();
    let plain = async move {
        // What multistream-select would send first.
        y.write_all(b"\x13/multistream/1.0.0\n").await.unwrap();
        y
    };
    let (r, _y) = tokio::join!(handshake(x, netem("eu", NetemConfig::default())), plain);
    let e = r.err().unwrap();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("p2p.netem"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn bad_region_in_the_preamble_is_rejected() {
    let (x, mut y) = pipe();
    let evil = async move {
        let mut hello = MAGIC.to_vec();
        hello.extend_from_slice(&[2, b'E', b'U']);
        y.write_all(&hello).await.unwrap();
        y
    };
    let (r, _y) = tokio::join!(handshake(x, netem("eu", NetemConfig::default())), evil);
    let e = r.err().unwrap();
    assert!(e.to_string().contains("netem region"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn round_trip_costs_the_sum_of_both_one_way_latencies() {
    let (a, b) = (netem("eu", eu_us(40, 60)), netem("us", eu_us(40, 60)));
    let (mut sa, mut sb) = connected(a, b).await;
    let t0 = TInstant::now();
    sa.write_all(b"ping").await.unwrap();
    let echo = async {
        let mut buf = [0u8; 4];
        sb.read_exact(&mut buf).await.unwrap();
        let arrived = TInstant::now();
        sb.write_all(&buf).await.unwrap();
        sb.flush().await.unwrap();
        arrived
    };
    let (arrived, _) = tokio::join!(echo, async {
        sa.flush().await.unwrap();
        let mut buf = [0u8; 4];
        sa.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    });
    assert_eq!(arrived - t0, Duration::from_millis(40), "eu -> us");
    assert_eq!(
        TInstant::now() - t0,
        Duration::from_millis(100),
        "round trip"
    );
}

#[tokio::test(start_paused = true)]
async fn upload_is_shaped_to_the_configured_rate_over_all_connections() {
    let rate = 100_000u64;
    let cfg = NetemConfig {
        upload_bytes_per_sec: rate,
        burst_bytes: 1500,
        ..NetemConfig::default()
    };
    let a = netem("eu", cfg.clone());
    let (mut s1, mut r1) = connected(a.clone(), netem("eu", cfg.clone())).await;
    let (mut s2, mut r2) = connected(a.clone(), netem("eu", cfg)).await;
    let per_conn = 250_000usize;
    let t0 = TInstant::now();
    async fn send(s: &mut NetemStream<Pipe>, n: usize) {
        s.write_all(&vec![7u8; n]).await.unwrap();
        s.flush().await.unwrap();
    }
    async fn recv(r: &mut NetemStream<Pipe>, n: usize) {
        let mut buf = vec![0u8; n];
        r.read_exact(&mut buf).await.unwrap();
    }
    tokio::join!(
        send(&mut s1, per_conn),
        send(&mut s2, per_conn),
        recv(&mut r1, per_conn),
        recv(&mut r2, per_conn)
    );
    let secs = (TInstant::now() - t0).as_secs_f64();
    let expect = (2 * per_conn - 1500) as f64 / rate as f64;
    assert!(
        (secs - expect).abs() / expect < 0.01,
        "took {secs:.3} s, the link allows {expect:.3} s"
    );
    assert_eq!(a.metrics.bytes_out.get(), 2 * per_conn as u64);
    assert_eq!(a.metrics.queued_bytes.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_delay_line_makes_writers_wait_instead_of_growing() {
    let cfg = NetemConfig {
        max_queue_bytes: 64 * 1024,
        ..eu_us(1000, 1000)
    };
    let a = netem("eu", cfg.clone());
    let (mut sa, mut sb) = connected(a.clone(), netem("us", cfg)).await;
    let data = vec![1u8; 256 * 1024];
    let write = tokio::time::timeout(Duration::from_millis(500), sa.write_all(&data)).await;
    assert!(write.is_err(), "writer must wait for the delay line");
    assert_eq!(a.metrics.queued_bytes.get(), 64 * 1024, "bounded");
    // Everything still arrives, in order, once time passes.
    let (w, r) = tokio::join!(
        async {
            sa.write_all(&data[64 * 1024..]).await.unwrap();
            sa.flush().await.unwrap();
        },
        async {
            let mut buf = vec![0u8; 256 * 1024];
            sb.read_exact(&mut buf).await.unwrap();
            buf
        }
    );
    let () = w;
    assert!(r.iter().all(|b| *b == 1));
}

#[tokio::test(start_paused = true)]
async fn a_partition_holds_traffic_both_ways_until_it_heals() {
    let (a, b) = (netem("eu", eu_us(5, 5)), netem("us", eu_us(5, 5)));
    let (sa, mut sb) = connected(a.clone(), b.clone()).await;
    let (mut ra, mut sa) = sa.split();
    a.set_partition(PartitionSet {
        regions: ["us".to_owned()].into(),
        ..PartitionSet::default()
    });
    // eu -> us is held at eu's side...
    sa.write_all(b"held").await.unwrap();
    let mut buf = [0u8; 4];
    let flushed = tokio::time::timeout(Duration::from_secs(10), async {
        sa.flush().await.unwrap();
    })
    .await;
    assert!(flushed.is_err(), "nothing leaves during the partition");
    assert!(
        tokio::time::timeout(Duration::from_secs(10), sb.read_exact(&mut buf))
            .await
            .is_err()
    );
    // ... and us -> eu is not read by eu.
    sb.write_all(b"back").await.unwrap();
    sb.flush().await.unwrap();
    let mut back = [0u8; 4];
    assert!(
        tokio::time::timeout(Duration::from_secs(10), ra.read_exact(&mut back))
            .await
            .is_err()
    );
    assert_eq!(a.metrics.partition_holds.get(), 1, "one connection held");

    a.set_partition(PartitionSet::default());
    let t0 = TInstant::now();
    let (_, _, _) = tokio::join!(
        async { sa.flush().await.unwrap() },
        async { sb.read_exact(&mut buf).await.unwrap() },
        async { ra.read_exact(&mut back).await.unwrap() },
    );
    assert_eq!((&buf, &back), (b"held", b"back"));
    assert!(TInstant::now() - t0 <= HOLD_RECHECK + Duration::from_millis(5));
}

#[tokio::test(start_paused = true)]
async fn without_latency_or_shaping_writes_go_straight_through() {
    let (a, b) = (
        netem("eu", NetemConfig::default()),
        netem("eu", NetemConfig::default()),
    );
    let (mut sa, mut sb) = connected(a.clone(), b).await;
    let t0 = TInstant::now();
    sa.write_all(b"now").await.unwrap();
    assert_eq!(a.metrics.queued_bytes.get(), 0, "no delay line used");
    let mut buf = [0u8; 3];
    sb.read_exact(&mut buf).await.unwrap();
    assert_eq!(TInstant::now(), t0);
}
