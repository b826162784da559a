//! The sync task: drives the sans-IO [`Downloader`] with peer heads from the p2p layer, fetches
//! batches through the request manager, verifies them on the blocking pool (batches in parallel),
//! commits them one transaction each, and announces every new head to the peers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::chain::{ChainSpec, VerifiedBlock, VerifyError};
use crate::downloader::{
    Action, BatchId, Downloader, DownloaderConfig, Event, FetchFailure, InsertFailure,
};
use crate::metrics::SyncMetrics;
use crate::p2p::{NetEvent, P2pHandle, RequestError};
use crate::store::{Store, StoreError};
use crate::wire::{ErrorReply, Request, Response};

enum Fetched {
    Ok(Vec<VerifiedBlock>),
    Invalid(VerifyError),
    Empty,
    Failed(FetchFailure),
}

/// Decodes and verifies a batch reply; CPU work, run on the blocking pool. Blocks stay views of
/// the reply's frame (no copy), and keep those bytes for the store.
fn check_batch(spec: &ChainSpec, from: u64, raw: Vec<bytes::Bytes>) -> Fetched {
    if raw.is_empty() {
        return Fetched::Empty;
    }
    match spec.verify_segment_encoded(from, raw) {
        Ok(v) => Fetched::Ok(v),
        Err((_, e)) => Fetched::Invalid(e),
    }
}

/// Runs until `stop` turns true.
pub async fn run(
    cfg: DownloaderConfig,
    spec: ChainSpec,
    store: Arc<Store>,
    p2p: P2pHandle,
    metrics: SyncMetrics,
    mut stop: watch::Receiver<bool>,
) {
    let Some(mut net) = p2p.take_events() else {
        warn!("sync task started twice; the second one does nothing");
        return;
    };
    let now = Instant::now();
    let mut d: Downloader<PeerId> = Downloader::new(cfg, store.head().height, now);
    let mut fetches: JoinSet<(BatchId, PeerId, Fetched)> = JoinSet::new();
    let mut handles: HashMap<BatchId, tokio::task::AbortHandle> = HashMap::new();
    let (ins_tx, mut ins_rx) =
        mpsc::channel::<(BatchId, Result<(crate::store::Head, usize), StoreError>)>(4);
    let mut last_phase = d.phase();
    loop {
        // Blocks committed by someone else (the producer loop) move our head too.
        let stored = store.head().height;
        if !d.inserting() && stored > d.stats().local {
            d.handle(Event::LocalAdvanced { height: stored }, Instant::now());
        }
        let wake = d
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            ev = net.recv() => match ev {
                Some(NetEvent::PeerHead { peer, height }) => d.handle(Event::PeerHead { peer, height }, Instant::now()),
                Some(NetEvent::PeerGone(peer)) => d.handle(Event::PeerGone(peer), Instant::now()),
                None => break,
            },
            Some(joined) = fetches.join_next(), if !fetches.is_empty() => {
                let Ok((id, peer, result)) = joined else { continue }; // aborted (cancelled)
                handles.remove(&id);
                let now = Instant::now();
                let ev = match result {
                    Fetched::Ok(blocks) => Event::Fetched { id, peer, blocks },
                    Fetched::Invalid(why) => {
                        metrics.invalid_blocks.get_or_create(&[("reason", why.reason())]).inc();
                        Event::Invalid { id, peer, why }
                    }
                    Fetched::Empty => Event::Empty { id, peer },
                    Fetched::Failed(why) => Event::FetchFailed { id, peer, why },
                };
                d.handle(ev, now);
            }
            Some((id, result)) = ins_rx.recv() => {
                let now = Instant::now();
                match result {
                    Ok((head, n)) => {
                        metrics.blocks_synced.get_or_create(&[("phase", d.phase().label())]).inc_by(n as u64);
                        p2p.announce(head.header.clone(), head.signature);
                        d.handle(Event::Inserted { id, height: head.height }, now);
                    }
                    Err(e) => {
                        let why = match e {
                            StoreError::Unlinked { height } | StoreError::Conflict { height } => {
                                InsertFailure::Unlinked { height }
                            }
                            _ => InsertFailure::Local,
                        };
                        warn!("batch {id} did not commit: {e}");
                        d.handle(Event::InsertFailed { id, why }, now);
                    }
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => d.handle(Event::Tick, Instant::now()),
            _ = stop.wait_for(|s| *s) => break,
        }
        while let Some(a) = d.poll_action() {
            match a {
                Action::Fetch {
                    id,
                    peer,
                    from,
                    count,
                    max_bytes,
                } => {
                    let (p2p, spec) = (p2p.clone(), spec.clone());
                    let h = fetches.spawn(async move {
                        let req = Request::GetBlocksByRange {
                            from,
                            count,
                            max_bytes,
                        };
                        let r = match p2p.request(req, Some(vec![peer])).await {
                            Ok((_, Response::Blocks(raw))) => {
                                tokio::task::spawn_blocking(move || check_batch(&spec, from, raw))
                                    .await
                                    .unwrap_or(Fetched::Failed(FetchFailure::Error))
                            }
                            Ok((_, Response::Error(ErrorReply::NotFound))) => Fetched::Empty,
                            Ok(_) | Err(RequestError::GaveUp(_)) | Err(_) => {
                                Fetched::Failed(FetchFailure::Error)
                            }
                        };
                        (id, peer, r)
                    });
                    handles.insert(id, h);
                }
                Action::Cancel { id } => {
                    if let Some(h) = handles.remove(&id) {
                        h.abort();
                    }
                }
                Action::Insert { id, blocks } => {
                    let (store, tx, m) = (store.clone(), ins_tx.clone(), metrics.clone());
                    tokio::task::spawn_blocking(move || {
                        let t = Instant::now();
                        let r = store.insert_new(&blocks);
                        m.commit_seconds.observe(t.elapsed().as_secs_f64());
                        m.commit_blocks.observe(blocks.len() as f64);
                        let _ = tx.blocking_send((id, r));
                    });
                }
                Action::Penalise { peer, why } => {
                    warn!(%peer, reason = why.label(), "penalising peer");
                    metrics
                        .penalties
                        .get_or_create(&[("reason", why.label())])
                        .inc();
                    p2p.penalise(peer).await;
                }
                Action::WatchdogFired => {
                    let s = d.stats();
                    warn!(
                        local = s.local,
                        target = s.target,
                        "sync watchdog fired: no progress, switching peers"
                    );
                    metrics.watchdog_firings.inc();
                }
                Action::BatchRetry(why) => {
                    debug!(reason = why.label(), "batch retried");
                    metrics
                        .batch_retries
                        .get_or_create(&[("reason", why.label())])
                        .inc();
                }
            }
        }
        let s = d.stats();
        metrics.target_height.set(s.target as i64);
        metrics.lag.set(s.target.saturating_sub(s.local) as i64);
        metrics.buffered_bytes.set(s.buffered_bytes as i64);
        if s.phase != last_phase {
            info!(
                phase = s.phase.label(),
                local = s.local,
                target = s.target,
                "sync phase"
            );
            last_phase = s.phase;
        }
        for p in crate::downloader::Phase::ALL {
            metrics
                .phase
                .get_or_create(&[("phase", p.label())])
                .set(i64::from(p == s.phase));
        }
    }
    fetches.abort_all();
}
