//! Real libp2p swarms on 127.0.0.1, in one process. Every wait is bounded.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::net::*;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::PeerId;
use syncnet_node::p2p::{self, P2pHandle};
use syncnet_node::ratelimit::RateLimitConfig;
use syncnet_node::wire::{ErrorReply, Request, Response};
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_discover_each_other_from_one_bootnode_and_settle() {
    let net = Net::new("testnet");
    let boot = start(&net, cfg(vec![]), 0).await;
    let mut nodes = vec![];
    for _ in 0..4 {
        nodes.push(start(&net, cfg(vec![boot.addr.clone()]), 0).await);
    }
    nodes.push(boot);
    let c = streams_cfg();
    for (i, n) in nodes.iter().enumerate() {
        let s =
            n.h.wait_for(Duration::from_secs(60), |s| {
                (c.soft_low..=c.high).contains(&s.stream_peers.len())
            })
            .await
            .unwrap_or_else(|| panic!("node {i} did not settle: {:?}", n.h.state()));
        assert!(s.ready_for_sync);
    }
    // Non-bootnodes needed at least one peer besides the bootnode to reach soft_low: discovery works.
    let boot_id = nodes[4].id();
    for n in &nodes[..4] {
        let s = n.h.state();
        assert!(s.stream_peers.iter().any(|p| *p != boot_id), "{s:?}");
    }
    // Streams are symmetric: if a holds one with b, b holds one with a.
    let ids: Vec<PeerId> = nodes.iter().map(Node::id).collect();
    let wait = Instant::now() + Duration::from_secs(20);
    loop {
        let states: Vec<_> = nodes.iter().map(|n| n.h.state()).collect();
        let symmetric = states.iter().enumerate().all(|(i, s)| {
            s.stream_peers.iter().all(|p| {
                let j = ids.iter().position(|x| x == p).unwrap();
                states[j].stream_peers.contains(&ids[i])
            })
        });
        let bounded = states
            .iter()
            .all(|s| (c.soft_low..=c.high).contains(&s.stream_peers.len()));
        if symmetric && bounded {
            break;
        }
        assert!(
            Instant::now() < wait,
            "streams never became symmetric and bounded: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_dials_always_end_with_one_connection_and_one_stream() {
    let net = Net::new("testnet");
    let mut c = cfg(vec![]);
    c.streams.soft_low = 1;
    c.streams.hard_low = 1;
    for round in 0..50 {
        let a = start(&net, c.clone(), 0).await;
        let b = start(&net, c.clone(), 0).await;
        tokio::join!(a.h.dial(b.addr.clone()), b.h.dial(a.addr.clone()));
        let one = |me: &Node, other: PeerId| {
            let h = me.h.clone();
            async move {
                h.wait_for(Duration::from_secs(15), |s| {
                    s.stream_peers == [other] && s.connections == 1
                })
                .await
            }
        };
        let (sa, sb) = tokio::join!(one(&a, b.id()), one(&b, a.id()));
        assert!(
            sa.is_some() && sb.is_some(),
            "round {round}: a={:?} b={:?}",
            a.h.state(),
            b.h.state()
        );
        a.h.shutdown().await;
        b.h.shutdown().await;
    }
}

async fn connect_pair(a: &Node, b: &Node) {
    a.h.dial(b.addr.clone()).await;
    let bid = b.id();
    a.h.wait_for(Duration::from_secs(15), |s| s.stream_peers.contains(&bid))
        .await
        .expect("stream up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_answers_status_and_block_requests_from_its_store() {
    let net = Net::new("testnet");
    let server = start(&net, cfg(vec![]), 300).await;
    let client = start(&net, cfg(vec![]), 0).await;
    connect_pair(&client, &server).await;

    let (from, resp) = client.h.request(Request::Status, None).await.unwrap();
    assert_eq!(from, server.id());
    let Response::Status(st) = resp else {
        panic!("{resp:?}")
    };
    assert_eq!(st.head.height, 300);
    assert_eq!(st.genesis, net.spec.genesis_hash());
    assert!(net.spec.verify_head(&st.head, &st.head_signature).is_ok());

    let (_, resp) = client
        .h
        .request(Request::GetBlockHashes { from: 1, count: 10 }, None)
        .await
        .unwrap();
    let Response::BlockHashes(hashes) = resp else {
        panic!()
    };
    assert_eq!(hashes.len(), 10);

    let req = Request::GetBlocksByRange {
        from: 1,
        count: 50,
        max_bytes: 4 << 20,
    };
    let (_, resp) = client.h.request(req, None).await.unwrap();
    let Response::Blocks(raw) = resp else {
        panic!()
    };
    assert_eq!(raw.len(), 50);
    let blocks: Vec<syncnet_node::chain::Block> = raw
        .iter()
        .map(|b| postcard::from_bytes(b).unwrap())
        .collect();
    assert_eq!(blocks[0].hash(), hashes[0]);
    let verified = net
        .spec
        .verify_chain(&net.spec.genesis().header, blocks)
        .unwrap();
    assert_eq!(verified.len(), 50);

    // The byte cap of the request is honoured (but at least one block comes back).
    let req = Request::GetBlocksByRange {
        from: 1,
        count: 50,
        max_bytes: 40 * 1024,
    };
    let Response::Blocks(raw) = client.h.request(req, None).await.unwrap().1 else {
        panic!()
    };
    assert_eq!(raw.len(), 2);

    let req = Request::GetBlocksByHashes {
        hashes: vec![hashes[3], hashes[7], syncnet_node::chain::H256([9; 32])],
    };
    let Response::Blocks(raw) = client.h.request(req, None).await.unwrap().1 else {
        panic!()
    };
    assert_eq!(raw.len(), 2);

    // A caller that gives up cancels its request. Restricted to an absent peer, it would otherwise
    // wait in the queue for max_queue_wait (60 s).
    let h = client.h.clone();
    let waiting = tokio::spawn(async move {
        h.request(Request::Status, Some(vec![PeerId::random()]))
            .await
    });
    client
        .h
        .wait_for(Duration::from_secs(10), |s| s.requests_outstanding == 1)
        .await
        .expect("request queued");
    waiting.abort();
    let idle = client
        .h
        .wait_for(Duration::from_secs(10), |s| s.requests_outstanding == 0)
        .await;
    assert!(
        idle.is_some(),
        "abandoned request still outstanding: {:?}",
        client.h.state()
    );

    // Beyond the head: NotFound; too many: TooLarge (explicit errors, via the direct path).
    let r = client
        .h
        .request_direct(
            server.id(),
            Request::GetBlocksByRange {
                from: 301,
                count: 1,
                max_bytes: 1 << 20,
            },
        )
        .await;
    assert_eq!(r, Ok(Response::Error(ErrorReply::NotFound)));
    let r = client
        .h
        .request_direct(
            server.id(),
            Request::GetBlocksByRange {
                from: 1,
                count: 100_000,
                max_bytes: 1 << 20,
            },
        )
        .await;
    assert_eq!(r, Ok(Response::Error(ErrorReply::TooLarge)));
}

/// A range reply is read into a pooled buffer and the buffer comes back once written: of large
/// replies in turn, only the first needs a fresh allocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_replies_reuse_their_frame_buffers() {
    let net = Net::new("testnet");
    let server = start(&net, cfg(vec![]), 1200).await;
    let client = start(&net, cfg(vec![]), 0).await;
    connect_pair(&client, &server).await;
    let buffers = |source: &'static str| {
        server
            .metrics
            .frame_buffers
            .get_or_create(&[("source", source)])
            .get()
    };
    let cap = cfg(vec![]).stream_serve_budget_bytes as i64;
    let pooled = || server.metrics.frame_pool_bytes.get();
    let idle = || pooled() > 0 && server.metrics.serve_budget_used.get() == 0;
    let fetch = || async {
        let req = Request::GetBlocksByRange {
            from: 1,
            count: 1024,
            max_bytes: 4 << 20,
        };
        let Response::Blocks(raw) = client.h.request(req, None).await.unwrap().1 else {
            panic!()
        };
        assert!(raw.len() > 100, "{}", raw.len());
        // The client can hold the whole reply a moment before the server's writer is done
        // with it and gives the buffer back; nothing else may be in flight.
        eventually("the buffer back in the pool", Duration::from_secs(10), idle).await;
        assert!(pooled() <= cap, "{} > {cap}", pooled());
    };
    // The first reply needs a fresh buffer, and may be served twice: when both ends open a stream
    // at once one is kept, and a request already sent on the other goes again (seen once in CI).
    fetch().await;
    let (fresh, reused) = (buffers("fresh"), buffers("reused"));
    assert!(
        (1..=2).contains(&fresh) && reused <= 1,
        "{fresh} fresh, {reused} reused"
    );
    for i in 1..=3 {
        fetch().await;
        assert_eq!(
            (buffers("fresh"), buffers("reused")),
            (fresh, reused + i),
            "reply {i} after the first"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_client_is_rate_limited_and_polite_client_keeps_its_latency() {
    let net = Net::new("testnet");
    let mut scfg = cfg(vec![]);
    scfg.streams.high = 8;
    scfg.rate_limit = RateLimitConfig {
        peer_cost_per_sec: 1_000,
        peer_burst: 200,
        global_cost_per_sec: 20_000,
        global_burst: 4_000,
    };
    let server = start(&net, scfg, 512).await;
    let polite = start(&net, cfg(vec![]), 0).await;
    let flooder = start(&net, cfg(vec![]), 0).await;
    connect_pair(&polite, &server).await;
    connect_pair(&flooder, &server).await;

    // 32 blocks of 16 KiB per request (cost 33), 4 per second: well under the polite peer's budget.
    let measure = |h: P2pHandle| async move {
        let mut lat = vec![];
        for i in 0..24u64 {
            let t = Instant::now();
            let req = Request::GetBlocksByRange {
                from: 1 + (i * 32) % 480,
                count: 32,
                max_bytes: 8 << 20,
            };
            let (_, r) = h.request(req, None).await.unwrap();
            assert!(
                matches!(r, Response::Blocks(ref b) if b.len() == 32),
                "{r:?}"
            );
            lat.push(t.elapsed());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        lat.sort();
        lat[lat.len() / 2]
    };
    let baseline = measure(polite.h.clone()).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = vec![];
    for _ in 0..8 {
        let (h, stop, sid) = (flooder.h.clone(), stop.clone(), server.id());
        flood.push(tokio::spawn(async move {
            let (mut limited, mut served) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let req = Request::GetBlocksByRange {
                    from: 1,
                    count: 64,
                    max_bytes: 8 << 20,
                };
                match h.request_direct(sid, req).await {
                    Ok(Response::Error(ErrorReply::RateLimited { .. })) => limited += 1,
                    Ok(Response::Blocks(_)) => served += 1,
                    other => panic!("{other:?}"),
                }
            }
            (limited, served)
        }));
    }
    let loaded = measure(polite.h.clone()).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut limited, mut served) = (0, 0);
    for f in flood {
        let (l, s) = f.await.unwrap();
        limited += l;
        served += s;
    }
    eprintln!(
        "baseline p50 {baseline:?}, under flood p50 {loaded:?}; flooder: {limited} limited, {served} served"
    );
    assert!(
        limited > 10 * served.max(1),
        "flooder was not limited: {limited} limited, {served} served"
    );
    assert!(
        loaded <= baseline * 2,
        "polite latency {loaded:?} vs baseline {baseline:?}"
    );
    let sent = server
        .metrics
        .rate_limited
        .get_or_create(&[("direction", "sent")])
        .get();
    assert_eq!(sent, limited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_of_another_network_are_refused() {
    let a_net = Net::new("alpha");
    let b_net = Net::new("beta");
    let a = start(&a_net, cfg(vec![]), 0).await;
    let b = start(&b_net, cfg(vec![]), 0).await;
    b.h.dial(a.addr.clone()).await;
    let refused = tokio::time::timeout(Duration::from_secs(15), async {
        while a.metrics.foreign_peers.get() + b.metrics.foreign_peers.get() == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "nobody noticed the foreign peer");
    let none =
        a.h.wait_for(Duration::from_secs(10), |s| s.connections == 0)
            .await;
    assert!(none.is_some(), "{:?}", a.h.state());
    assert!(a.h.state().stream_peers.is_empty() && b.h.state().stream_peers.is_empty());
}

/// A raw client: completes the handshake, then sends an oversize frame. The server must reset the
/// stream, count the frame error and remove the peer's stream as penalised, without panicking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frame_resets_the_stream_and_penalises() {
    let net = Net::new("testnet");
    let server = start(&net, accept_only(cfg(vec![])), 5).await;
    let mut client = common::hostile::Hostile::connect(&server).await;
    let mut s = client.open(&net, &server).await.expect("stream");
    server
        .h
        .wait_for(Duration::from_secs(10), |st| st.stream_peers.len() == 1)
        .await
        .expect("accepted");
    s.write_all(&(u32::MAX).to_le_bytes()).await.unwrap();
    s.flush().await.unwrap();
    // The server closes: our reads end (after its hello) within the bound.
    let mut sink = vec![];
    let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink)).await;
    assert!(r.is_ok(), "stream was not closed by the server");
    server
        .h
        .wait_for(Duration::from_secs(10), |st| st.stream_peers.is_empty())
        .await
        .expect("removed");
    assert_eq!(
        server
            .metrics
            .frame_errors
            .get_or_create(&[("reason", "oversize")])
            .get(),
        1
    );
    assert_eq!(
        server
            .metrics
            .removals
            .get_or_create(&[("reason", "penalised")])
            .get(),
        1
    );
}

fn injected(n: &Node, kind: &'static str) -> u64 {
    n.metrics
        .faults_injected
        .get_or_create(&[("kind", kind)])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_error_fault_answers_with_an_error_and_counts() {
    let net = Net::new("testnet");
    let server = start(&net, accept_only(cfg(vec![])), 10).await;
    let client = start(&net, cfg(vec![]), 0).await;
    connect_pair(&client, &server).await;
    server.h.update_faults(|f| f.request_error_rate = 1.0).await;
    let r = client.h.request_direct(server.id(), Request::Status).await;
    assert_eq!(r, Ok(Response::Error(ErrorReply::Invalid)));
    assert_eq!(injected(&server, "request_error"), 1);
    server.h.update_faults(|f| f.request_error_rate = 0.0).await;
    let r = client.h.request_direct(server.id(), Request::Status).await;
    assert!(matches!(r, Ok(Response::Status(_))), "{r:?}");
    assert_eq!(injected(&server, "request_error"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_reset_fault_resets_the_stream_and_counts() {
    let net = Net::new("testnet");
    let server = start(&net, accept_only(cfg(vec![])), 10).await;
    let client = start(&net, cfg(vec![]), 0).await;
    connect_pair(&client, &server).await;
    server.h.update_faults(|f| f.stream_reset_rate = 1.0).await;
    let r = client.h.request_direct(server.id(), Request::Status).await;
    assert_eq!(
        r,
        Err(p2p::RequestError::NoStream),
        "the request dies with its stream"
    );
    assert_eq!(injected(&server, "stream_reset"), 1);
    let removed = client
        .metrics
        .removals
        .get_or_create(&[("reason", "stream_error")]);
    tokio::time::timeout(Duration::from_secs(10), async {
        while removed.get() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the client saw its stream go");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaries_retain_memory_fds_and_threads_per_setup_and_burn_cpu_per_request() {
    let net = Net::new("testnet");
    let server = start(&net, cfg(vec![]), 0).await;
    server
        .h
        .update_faults(|f| {
            f.leak_canary_kib_per_setup = 512;
            f.fd_canary_setups_per_fd = 1;
            f.thread_canary_setups_per_thread = 2;
            f.cpu_canary_us_per_request_per_min = 100;
        })
        .await;
    let a = start(&net, cfg(vec![]), 0).await;
    let b = start(&net, cfg(vec![]), 0).await;
    connect_pair(&a, &server).await;
    connect_pair(&b, &server).await;
    // One setup per client on the server side: 2 x 512 KiB retained. The server finishes its side of
    // each handshake independently of the client, so wait for it (bounded).
    let held = server
        .metrics
        .tracked
        .get_or_create(&[("table", "leak_canary_kib")]);
    tokio::time::timeout(Duration::from_secs(10), async {
        while injected(&server, "leak_canary") < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("two setups retained memory on the server");
    assert!(held.get() >= 1024, "{}", held.get());
    // One fd per setup, one thread per two setups (at least two setups happened).
    let tracked = |t: &'static str| server.metrics.tracked.get_or_create(&[("table", t)]).get();
    assert!(tracked("fd_canary") >= 2, "{}", tracked("fd_canary"));
    assert!(
        tracked("thread_canary") >= 1,
        "{}",
        tracked("thread_canary")
    );
    // Every request the server answers first burns CPU.
    let (_, resp) = a.h.request(Request::Status, None).await.unwrap();
    assert!(matches!(resp, Response::Status(_)), "{resp:?}");
    assert!(injected(&server, "cpu_canary") >= 1);
    // Nothing is retained where the canaries are off.
    assert_eq!(injected(&a, "leak_canary"), 0);
    assert_eq!(injected(&a, "fd_canary"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_failure_fault_fails_our_setups_and_counts() {
    let net = Net::new("testnet");
    let server = start(&net, accept_only(cfg(vec![])), 0).await;
    let client = start(&net, cfg(vec![]), 0).await;
    client.h.update_faults(|f| f.setup_failure_rate = 1.0).await;
    client.h.dial(server.addr.clone()).await;
    // Every setup the client starts fails on purpose: counted, and no stream comes up.
    tokio::time::timeout(Duration::from_secs(15), async {
        while injected(&client, "setup_failure") < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("an injected setup failure");
    let s = client.h.state();
    assert!(s.stream_peers.is_empty(), "{s:?}");
    assert!(s.counters.failed >= 1, "{s:?}");
    assert_eq!(injected(&server, "setup_failure"), 0);
    // Switched off, the next setup (after the failed-peer TTL of the test config) succeeds.
    client.h.update_faults(|f| f.setup_failure_rate = 0.0).await;
    let sid = server.id();
    client
        .h
        .wait_for(Duration::from_secs(30), |s| s.stream_peers.contains(&sid))
        .await
        .expect("stream once the fault is off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootnode_given_by_dns_name_is_reached() {
    // On Kubernetes bootnodes are `/dns4/<pod>.<service>/...`: pod IPs change on restart.
    let net = Net::new("testnet");
    let boot = start(&net, cfg(vec![]), 0).await;
    let by_name: libp2p::Multiaddr = boot
        .addr
        .iter()
        .map(|p| match p {
            libp2p::multiaddr::Protocol::Ip4(_) => {
                libp2p::multiaddr::Protocol::Dns4("localhost".into())
            }
            p => p,
        })
        .collect();
    assert!(
        by_name.to_string().starts_with("/dns4/localhost/tcp/"),
        "{by_name}"
    );
    let node = start(&net, cfg(vec![by_name]), 0).await;
    let boot_id = boot.id();
    node.h
        .wait_for(Duration::from_secs(30), |s| {
            s.stream_peers.contains(&boot_id)
        })
        .await
        .unwrap_or_else(|| panic!("never reached the bootnode: {:?}", node.h.state()));
}
