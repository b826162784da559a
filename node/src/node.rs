//! The node runtime: opens the store, serves /metrics and /healthz, runs the producer loop, and stops
//! cleanly on SIGINT/SIGTERM. Thin async glue; the logic lives in the modules it wires together.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{debug, error, info};

use crate::broadcast::{BroadcastMode, Inserter};
use crate::config::Loaded;
use crate::ida::{Encoded, IdaParams};
use crate::metrics::{
    BroadcastMetrics, NodeMetrics, P2pMetrics, ProcessCollector, SyncMetrics, exposition,
};
use crate::producer::Producer;
use crate::store::Store;
pub use syncnet_proto::config::{ADDRS_FILE, BoundAddrs};
pub use syncnet_proto::util::now_ms;

struct HttpState {
    registry: Registry,
    healthy: AtomicBool,
}

/// Runs the node until `shutdown` resolves or a component fails.
pub async fn run(
    loaded: Loaded,
    producer: Option<Producer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let cfg = &loaded.node;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data_dir {}", cfg.data_dir.display()))?;
    let store = Arc::new(Store::open_or_init(&cfg.store_path(), &loaded.spec)?);
    let head = store.head();
    info!(
        network = %loaded.spec.network_id,
        genesis = %loaded.spec.genesis_hash(),
        height = head.height,
        head = %head.hash,
        "store opened"
    );

    let mut registry = Registry::default();
    registry.register_collector(Box::new(ProcessCollector));
    let metrics = NodeMetrics::register(&mut registry, store.clone());
    let p2p_metrics = P2pMetrics::default();
    p2p_metrics.register(&mut registry);
    let sync_metrics = SyncMetrics::default();
    sync_metrics.register(&mut registry);
    let sync_metrics_run = sync_metrics.clone();
    let broadcast_metrics = BroadcastMetrics::default();
    broadcast_metrics.register(&mut registry);
    let keypair = crate::p2p::load_or_create_identity(&cfg.node_key_path())?;
    let mut p2p_cfg = cfg.p2p.clone();
    if cfg.broadcast.mode == BroadcastMode::Gossipsub {
        p2p_cfg.gossipsub = Some(cfg.broadcast.gossipsub.clone());
    }
    let p2p = crate::p2p::spawn(
        p2p_cfg,
        keypair,
        loaded.spec.clone(),
        store.clone(),
        p2p_metrics,
    )
    .await?;
    let listening = p2p
        .wait_for(Duration::from_secs(10), |s| !s.listen_addrs.is_empty())
        .await
        .context("p2p.listen: no listen address came up within 10 s")?;
    let broadcaster = match cfg.broadcast.mode {
        BroadcastMode::Ida => Some(Broadcaster::Ida(
            crate::broadcast::ida::spawn(
                ida_config(&cfg.broadcast.ida, &cfg.p2p),
                loaded.spec.clone(),
                store.clone(),
                p2p.clone(),
                broadcast_metrics,
            )
            .await?,
        )),
        BroadcastMode::Gossipsub => {
            let inbound = p2p
                .take_gossip()
                .context("gossipsub did not start with the p2p layer")?;
            let inserter = Inserter::new(
                loaded.spec.clone(),
                store.clone(),
                p2p.clone(),
                broadcast_metrics,
                BroadcastMode::Gossipsub,
            );
            tokio::spawn(crate::broadcast::gossip::run(
                loaded.spec.clone(),
                p2p.clone(),
                inbound,
                inserter,
            ));
            Some(Broadcaster::Gossip)
        }
        BroadcastMode::Off => None,
    };
    info!(mode = cfg.broadcast.mode.label(), "block broadcast");
    let state = Arc::new(HttpState {
        registry,
        healthy: AtomicBool::new(true),
    });

    let listener = tokio::net::TcpListener::bind(cfg.metrics.listen)
        .await
        .with_context(|| format!("metrics.listen: cannot bind {}", cfg.metrics.listen))?;
    let metrics_addr = listener.local_addr()?;
    write_addrs(
        &cfg.data_dir,
        &BoundAddrs {
            pid: std::process::id(),
            metrics: metrics_addr,
            peer_id: p2p.local_peer_id.to_string(),
            p2p: listening
                .listen_addrs
                .iter()
                .map(|a| format!("{a}/p2p/{}", p2p.local_peer_id))
                .collect(),
        },
    )?;
    info!(%metrics_addr, "serving /metrics and /healthz");

    let (stop_tx, stop_rx) = watch::channel(false);
    let token = match &cfg.metrics.control_token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("metrics.control_token_file: {}", f.display()))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var("SYNCNODE_CONTROL_TOKEN").ok(),
    };
    let broadcast_mode = cfg.broadcast.mode;
    let control = {
        let (p2p_check, p2p_apply, p2p_status, store_status, sync_status) = (
            p2p.clone(),
            p2p.clone(),
            p2p.clone(),
            store.clone(),
            sync_metrics.clone(),
        );
        crate::control::ControlState::new(
            Arc::new(move |f: &crate::faults::Faults| {
                f.check(p2p_check.netem().map(|n| n.config()))
            }),
            Arc::new(move |f: crate::faults::Faults| {
                let p2p = p2p_apply.clone();
                Box::pin(async move {
                    tracing::warn!(?f, "faults set through the control API");
                    p2p.set_faults(f).await
                })
            }),
            Arc::new(move || {
                let net = p2p_status.state();
                let phase = crate::downloader::Phase::ALL
                    .into_iter()
                    .find(|p| {
                        sync_status
                            .phase
                            .get_or_create(&[("phase", p.label())])
                            .get()
                            == 1
                    })
                    .unwrap_or(crate::downloader::Phase::Idle)
                    .label();
                serde_json::json!({
                    "height": store_status.head().height,
                    "target": sync_status.target_height.get(),
                    "lag": sync_status.lag.get(),
                    "phase": phase,
                    "peers": net.stream_peers.len(),
                    "connections": net.connections,
                    "peer_id": p2p_status.local_peer_id.to_string(),
                    "region": p2p_status.region(),
                    "broadcast": broadcast_mode.label(),
                    "netem": p2p_status.netem().is_some(),
                    "connections_by_region": p2p_status.netem().map(|n| n.connections_by_region()),
                })
            }),
            token,
        )
    };
    let app = axum::Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(serve_health))
        .with_state(state.clone())
        .merge(crate::control::router(control));
    let http = tokio::spawn(crate::control::serve(
        listener,
        app,
        crate::control::HttpLimits::default(),
        stop_rx.clone(),
        metrics.http_refused.clone(),
    ));

    let mut sync_cfg = cfg.sync;
    sync_cfg.tip_grace = cfg.broadcast.tip_grace();
    let syncing = tokio::spawn(crate::sync::run(
        sync_cfg,
        loaded.spec.clone(),
        store.clone(),
        p2p.clone(),
        sync_metrics_run,
        stop_rx.clone(),
    ));
    let producing = producer.map(|p| {
        let interval = Duration::from_millis(
            cfg.producer
                .as_ref()
                .map(|p| p.interval_ms)
                .expect("producer config present with a producer"),
        );
        tokio::spawn(produce_loop(
            p,
            interval,
            store.clone(),
            loaded.spec.clone(),
            metrics.clone(),
            p2p.clone(),
            (broadcaster.clone(), cfg.broadcast.ida_params()),
            stop_rx.clone(),
        ))
    });

    let mut failed = None;
    tokio::select! {
        _ = shutdown => info!("shutdown requested"),
        r = async {
            match producing {
                Some(h) => h.await,
                None => std::future::pending().await,
            }
        } => {
            state.healthy.store(false, Ordering::Relaxed);
            let e = match r {
                Ok(Err(e)) => e,
                Ok(Ok(())) => anyhow::anyhow!("producer stopped unexpectedly"),
                Err(e) => anyhow::anyhow!("producer task panicked: {e}"),
            };
            error!("producer failed: {e:#}");
            failed = Some(e);
        }
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), syncing).await;
    p2p.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    let _ = std::fs::remove_file(cfg.data_dir.join(ADDRS_FILE));
    info!(height = store.head().height, "stopped");
    failed.map_or(Ok(()), Err)
}

/// The IDA config as run: unpaced chunks under an emulated uplink would queue in the emulation's
/// delay lines, where a `Have` can no longer recall them, so pacing defaults to that rate.
fn ida_config(
    ida: &crate::broadcast::ida::IdaConfig,
    p2p: &crate::p2p::P2pConfig,
) -> crate::broadcast::ida::IdaConfig {
    let mut c = ida.clone();
    if c.upload_bytes_per_sec == 0
        && let Some(n) = &p2p.netem
        && n.upload_bytes_per_sec >= crate::broadcast::ida::MIN_PACE
    {
        c.upload_bytes_per_sec = n.upload_bytes_per_sec;
    }
    c
}

/// How this node pushes the blocks it produces.
#[derive(Clone)]
enum Broadcaster {
    Ida(crate::broadcast::ida::IdaHandle),
    Gossip,
}

#[allow(clippy::too_many_arguments)]
async fn produce_loop(
    producer: Producer,
    interval: Duration,
    store: Arc<Store>,
    spec: crate::chain::ChainSpec,
    metrics: NodeMetrics,
    p2p: crate::p2p::P2pHandle,
    (broadcaster, ida): (Option<Broadcaster>, Option<IdaParams>),
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_report = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
        let (store2, producer2, spec2) = (store.clone(), producer.clone(), spec.clone());
        // Encoding, signing, hashing and the fsync'ing commit are blocking work.
        let (head, block, encoded) =
            tokio::task::spawn_blocking(move || -> anyhow::Result<(_, _, Option<Arc<Encoded>>)> {
                let head = store2.head();
                let (block, enc) =
                    crate::producer::produce(&producer2, &head.header, now_ms(), ida);
                let verified = spec2
                    .verify(block.clone(), &head.header)
                    .context("own block does not verify")?;
                Ok((store2.insert_batch(&[verified])?, block, enc))
            })
            .await??;
        // Counted as soon as it is committed (it used to wait for the broadcast too, and a
        // scrape in between saw the head a block ahead of the count).
        metrics.blocks_produced.inc();
        match (&broadcaster, encoded) {
            (Some(Broadcaster::Ida(h)), Some(enc)) => h.broadcast(block, enc).await,
            (Some(Broadcaster::Gossip), _) => {
                p2p.publish_block(postcard::to_allocvec(&block).context("encoding a block")?)
            }
            _ => {}
        }
        p2p.announce(head.header.clone(), head.signature);
        debug!(height = head.height, hash = %head.hash, "produced block");
        if last_report.elapsed() >= Duration::from_secs(30) {
            info!(height = head.height, "producing");
            last_report = tokio::time::Instant::now();
        }
    }
}

/// OpenMetrics or the Prometheus text format, as the client's `Accept` says
/// (`metrics::exposition`).
async fn serve_metrics(
    State(state): State<Arc<HttpState>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    // Several Accept lines read as one list.
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let format = exposition::negotiate(&accept.join(","));
    (
        [
            (header::CONTENT_TYPE, format.content_type()),
            (header::VARY, "accept"),
        ],
        crate::metrics::render_as(&state.registry, format),
    )
}

async fn serve_health(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    if state.healthy.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n")
    }
}

/// Written atomically (temp file + rename) so readers never see half a file.
fn write_addrs(dir: &Path, addrs: &BoundAddrs) -> anyhow::Result<()> {
    let tmp = dir.join(format!("{ADDRS_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(addrs)?)?;
    std::fs::rename(&tmp, dir.join(ADDRS_FILE))?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
