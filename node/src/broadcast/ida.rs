//! IDA gossip driver: moves chunks between neighbours (the peers this node holds sync streams with)
//! and feeds the sans-IO assembler and relay (`syncnet_proto::ida`). It consumes the faults
//! `chunk_drop_rate` and `corrupt_chunks`. Each node sends on its own outbound
//! stream `/syncnet/<network>/ida/1` to each neighbour and reads what neighbours send on theirs, so
//! no tie-break is needed: one long-lived stream per direction and neighbour.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::ops::Not;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, warn};

use super::{BroadcastMode, Delivered, Inserter};
use crate::chain::{Block, ChainSpec, H256};
use crate::faults::FaultKind;
use crate::ida::assembler::{Assembler, Outcome, Timeout};
use crate::ida::relay::{PeerHas, Relay};
use crate::ida::{Chunk, Encoded, encode};
use crate::metrics::{BlockOutcome, BroadcastMetrics, ChunkOutcome, RepairKind};
use crate::p2p::P2pHandle;
use crate::store::Store;
use crate::wire::{self, FrameDecoder};
pub use syncnet_proto::config::{IdaConfig, MIN_PACE};
pub use syncnet_proto::ida::IdaMessage;

pub fn ida_protocol(network: &str) -> StreamProtocol {
    StreamProtocol::try_from_owned(format!("/syncnet/{network}/ida/1")).expect("starts with /")
}

#[derive(Clone)]
pub struct IdaHandle {
    tx: mpsc::Sender<(Box<Block>, Arc<Encoded>)>,
    delivered: broadcast::Sender<Delivered>,
}

impl IdaHandle {
    /// Producer side: sends a block (already in the store, its header committing to `encoded`).
    pub async fn broadcast(&self, block: Block, encoded: Arc<Encoded>) {
        let _ = self.tx.send((Box::new(block), encoded)).await;
    }

    /// Blocks this node completed by IDA from now on.
    pub fn delivered(&self) -> broadcast::Receiver<Delivered> {
        self.delivered.subscribe()
    }
}

/// Which chunk a frame carries (`k` too: a neighbour with `k` chunks needs no more).
#[derive(Clone, Copy)]
struct Key {
    root: H256,
    index: u16,
    k: u16,
}

/// A chunk frame for a neighbour; skipped if the neighbour has that chunk (or `k` of the block)
/// by the time it is its turn. Its bytes count against the queue's byte caps until it is taken.
type Out = (Key, Bytes, Held);

/// Bytes of chunk frames waiting (queued or pooled) for one neighbour and for all; a frame's
/// share returns when it is written or dropped. Frame counts alone once let 8 neighbours that
/// never took their streams queue 8192 frames of a 1 MiB block's chunks (RSS 661 MB).
#[derive(Clone, Default)]
struct QueueBytes {
    mine: Arc<std::sync::atomic::AtomicUsize>,
    all: Arc<std::sync::atomic::AtomicUsize>,
}

struct Held {
    q: QueueBytes,
    n: usize,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for Held {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.q.mine.fetch_sub(self.n, Relaxed);
        self.q.all.fetch_sub(self.n, Relaxed);
        self.gauge.dec_by(self.n as i64);
    }
}

type Has = Arc<std::sync::Mutex<PeerHas>>;

struct Neighbour {
    /// Chunks (paced, skippable).
    tx: mpsc::Sender<Out>,
    /// Small control frames (`Have`, `Done`, `Want`): ahead of chunks, unpaced.
    ctl: mpsc::Sender<Bytes>,
    has: Has,
    bytes: QueueBytes,
}

/// Paces IDA frames at the configured upload rate (governor, 1 KiB units). Frames wait here rather
/// than in socket buffers, so the ones for a neighbour that reports `Done` meanwhile are skipped.
struct Pacer {
    limiter: governor::DefaultDirectRateLimiter,
    burst_kib: u32,
}

impl Pacer {
    fn new(bytes_per_sec: u64) -> Option<Arc<Pacer>> {
        let kib = u32::try_from(bytes_per_sec / 1024).ok()?;
        let per_sec = NonZeroU32::new(kib)?;
        // 20 ms of rate, at least 64 KiB: smooth, yet one frame is a few waits, not hundreds.
        let burst_kib = (kib / 50).max(64);
        let quota = governor::Quota::per_second(per_sec)
            .allow_burst(NonZeroU32::new(burst_kib).expect("non-zero"));
        Some(Arc::new(Pacer {
            limiter: governor::RateLimiter::direct(quota),
            burst_kib,
        }))
    }

    async fn wait(&self, bytes: usize) {
        let mut kib = (bytes as u64).div_ceil(1024);
        while kib > 0 {
            let n = kib.min(u64::from(self.burst_kib)) as u32;
            let _ = self
                .limiter
                .until_n_ready(NonZeroU32::new(n).expect("n > 0"))
                .await;
            kib -= u64::from(n);
        }
    }
}

struct Service {
    cfg: IdaConfig,
    p2p: P2pHandle,
    store: Arc<Store>,
    protocol: StreamProtocol,
    assembler: Assembler,
    relay: Relay<PeerId>,
    out: HashMap<PeerId, Neighbour>,
    inserter: Inserter,
    /// Recently encoded blocks, to answer repairs without re-encoding (bounded).
    encoded: Vec<(H256, Arc<Encoded>, Block)>,
    metrics: BroadcastMetrics,
    pacer: Option<Arc<Pacer>>,
    repair_turn: usize,
    max_frame: usize,
    /// Bytes queued for all neighbours together.
    queued_all: Arc<std::sync::atomic::AtomicUsize>,
}

const ENCODED_CACHE: usize = 4;
const READ_CHUNK: usize = 256 * 1024;

pub async fn spawn(
    cfg: IdaConfig,
    spec: ChainSpec,
    store: Arc<Store>,
    p2p: P2pHandle,
    metrics: BroadcastMetrics,
) -> anyhow::Result<IdaHandle> {
    cfg.validate().map_err(anyhow::Error::msg)?;
    let max_frame = p2p.max_frame();
    let protocol = ida_protocol(&spec.network_id);
    let mut incoming = p2p
        .stream_control()
        .accept(protocol.clone())
        .map_err(|e| anyhow::anyhow!("registering {protocol}: {e}"))?;
    let (in_tx, mut in_rx) = mpsc::channel::<(PeerId, Result<IdaMessage, ()>)>(1024);
    tokio::spawn(async move {
        // One task per inbound stream at once: libp2p-stream drops streams while this loop lags.
        while let Some((peer, stream)) = incoming.next().await {
            tokio::spawn(read_loop(peer, stream, in_tx.clone(), max_frame));
        }
    });
    let (tx, mut rx) = mpsc::channel::<(Box<Block>, Arc<Encoded>)>(64);
    let inserter = Inserter::new(
        spec.clone(),
        store.clone(),
        p2p.clone(),
        metrics.clone(),
        BroadcastMode::Ida,
    );
    let delivered = inserter.sender();
    let mut s = Service {
        assembler: Assembler::new(spec, cfg.assembler.clone()),
        pacer: Pacer::new(cfg.upload_bytes_per_sec),
        cfg,
        store,
        protocol,
        relay: Relay::default(),
        out: HashMap::new(),
        inserter,
        encoded: vec![],
        metrics,
        repair_turn: 0,
        max_frame,
        queued_all: Arc::default(),
        p2p: p2p.clone(),
    };
    let mut state = p2p.subscribe();
    tokio::spawn(async move {
        s.sync_neighbours(&state.borrow_and_update().stream_peers.clone());
        loop {
            let wake = s
                .assembler
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                m = in_rx.recv() => match m {
                    Some((peer, Ok(msg))) => s.on_message(peer, msg).await,
                    Some((peer, Err(()))) => s.p2p.penalise(peer).await,
                    None => break,
                },
                b = rx.recv() => match b {
                    Some((block, enc)) => s.broadcast(*block, enc),
                    None => break,
                },
                r = state.changed() => {
                    if r.is_err() { break; }
                    let peers = state.borrow_and_update().stream_peers.clone();
                    s.sync_neighbours(&peers);
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            }
            let timeouts = s.assembler.tick(Instant::now());
            for t in timeouts {
                s.on_timeout(t);
            }
            let st = s.assembler.stats();
            s.metrics.assembly_blocks.set(st.partial_blocks as i64);
            s.metrics.assembly_bytes.set(st.buffered_bytes as i64);
        }
    });
    Ok(IdaHandle { tx, delivered })
}

async fn read_loop(
    peer: PeerId,
    mut stream: libp2p::Stream,
    tx: mpsc::Sender<(PeerId, Result<IdaMessage, ()>)>,
    max_frame: usize,
) {
    let mut dec = FrameDecoder::new(max_frame);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        loop {
            match dec.next_frame::<IdaMessage>() {
                Ok(Some(m)) => {
                    if tx.send((peer, Ok(m))).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    debug!(%peer, "bad IDA frame: {e}");
                    let _ = tx.send((peer, Err(()))).await;
                    return;
                }
            }
        }
        let want = dec.wanted().min(READ_CHUNK);
        match stream.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => dec.feed(&buf[..n]),
        }
    }
}

impl Service {
    fn sync_neighbours(&mut self, peers: &[PeerId]) {
        let gone: Vec<PeerId> = self
            .out
            .keys()
            .filter(|p| !peers.contains(p))
            .copied()
            .collect();
        for p in gone {
            self.out.remove(&p);
            self.relay.remove(&p);
        }
        for p in peers {
            if self.out.contains_key(p) {
                continue;
            }
            let (tx, rx) = mpsc::channel(self.cfg.queue_frames);
            let (ctl, ctl_rx) = mpsc::channel(self.cfg.queue_frames);
            let has = Has::default();
            tokio::spawn(write_loop(Writer {
                peer: *p,
                control: self.p2p.stream_control(),
                protocol: self.protocol.clone(),
                rx,
                ctl: ctl_rx,
                has: has.clone(),
                pacer: self.pacer.clone(),
                metrics: self.metrics.clone(),
            }));
            let bytes = QueueBytes {
                mine: Arc::default(),
                all: self.queued_all.clone(),
            };
            self.out.insert(
                *p,
                Neighbour {
                    tx,
                    ctl,
                    has,
                    bytes,
                },
            );
            self.relay.add(*p);
        }
    }

    /// Queues a chunk frame for `peer`, unless it is known to have that chunk.
    fn send(&self, peer: &PeerId, key: Key, frame: Bytes) -> bool {
        let Some(n) = self.out.get(peer) else {
            return false;
        };
        if lacks(&n.has, &key).not() {
            self.metrics.chunk(ChunkOutcome::SkippedHas).inc();
            return false;
        }
        // A full queue (in frames or bytes) drops the frame; repair fetches what went missing.
        use std::sync::atomic::Ordering::Relaxed;
        let len = frame.len();
        if n.bytes.mine.load(Relaxed) + len > self.cfg.queue_bytes
            || n.bytes.all.load(Relaxed) + len > self.cfg.queue_bytes_total
        {
            self.metrics.chunk(ChunkOutcome::QueueFull).inc();
            return false;
        }
        n.bytes.mine.fetch_add(len, Relaxed);
        n.bytes.all.fetch_add(len, Relaxed);
        self.metrics.queued_bytes.inc_by(len as i64);
        let held = Held {
            q: n.bytes.clone(),
            n: len,
            gauge: self.metrics.queued_bytes.clone(),
        };
        if n.tx.try_send((key, frame, held)).is_ok() {
            self.metrics.queued_frames.inc();
            true
        } else {
            self.metrics.chunk(ChunkOutcome::QueueFull).inc();
            false
        }
    }

    /// Queues a control frame (`Have`, `Done`, `Want`) for `peer`.
    fn send_ctl(&self, peer: &PeerId, frame: Bytes) {
        if let Some(n) = self.out.get(peer)
            && n.ctl.try_send(frame).is_err()
        {
            self.metrics.chunk(ChunkOutcome::QueueFull).inc();
        }
    }

    /// One frame, refused (None) above the frame cap receivers enforce.
    fn frame(&self, msg: &IdaMessage) -> Option<Bytes> {
        wire::encode(msg, self.max_frame).ok().map(Bytes::from)
    }

    /// A chunk's frame; corrupted when this node plays the malicious relay (fault injection).
    fn chunk_frame(&self, mut chunk: Chunk) -> Option<Bytes> {
        if self.p2p.faults().corrupt_chunks && !chunk.data.is_empty() {
            let mut d = chunk.data.to_vec();
            d[0] ^= 0xff;
            chunk.data = d.into();
            self.p2p.fault_injected(FaultKind::CorruptChunk);
        }
        self.frame(&IdaMessage::Chunk(Box::new(chunk)))
    }

    fn broadcast(&mut self, block: Block, enc: Arc<Encoded>) {
        let root = enc.root;
        self.assembler.mark_done(root);
        let assigned = self.relay.assign(enc.shards.len());
        // Interleave the neighbours' shares so the first k distinct chunks leave first.
        let rounds = assigned.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
        for r in 0..rounds {
            for (peer, idx) in &assigned {
                if let Some(&i) = idx.get(r) {
                    let c = enc.chunk(&block.header, block.signature, i);
                    if let Some(f) = self.chunk_frame(c)
                        && self.send(peer, key(&enc, root, i as u16), f)
                    {
                        self.metrics.chunk(ChunkOutcome::Sent).inc();
                    }
                }
            }
        }
        self.remember(root, enc, block);
    }

    fn remember(&mut self, root: H256, enc: Arc<Encoded>, block: Block) {
        self.encoded.retain(|(r, _, _)| *r != root);
        self.encoded.push((root, enc, block));
        if self.encoded.len() > ENCODED_CACHE {
            self.encoded.remove(0);
        }
    }

    async fn on_message(&mut self, peer: PeerId, msg: IdaMessage) {
        match msg {
            IdaMessage::Chunk(c) => self.on_chunk(peer, *c).await,
            IdaMessage::Done { root } => {
                self.relay.on_done(&peer, root);
                if let Some(n) = self.out.get(&peer) {
                    n.has.lock().expect("not poisoned").mark_all(root);
                }
            }
            IdaMessage::Have { root, index } => {
                if let Some(n) = self.out.get(&peer) {
                    n.has.lock().expect("not poisoned").mark(root, index);
                }
            }
            IdaMessage::Want {
                root,
                height,
                missing,
            } => self.on_want(peer, root, height, missing),
        }
    }

    async fn on_chunk(&mut self, peer: PeerId, chunk: Chunk) {
        if crate::p2p::session::roll(self.p2p.faults().chunk_drop_rate) {
            self.metrics.chunk(ChunkOutcome::FaultDropped).inc();
            self.p2p.fault_injected(FaultKind::ChunkDrop);
            return;
        }
        self.metrics.chunk(ChunkOutcome::Received).inc();
        // Cheap: the shard is shared, not copied; it is encoded only if it is forwarded.
        let copy = chunk.clone();
        let started = Instant::now();
        match self.assembler.on_chunk(chunk, started) {
            Outcome::New => self.forward(&peer, copy),
            Outcome::Complete(r) => {
                self.metrics
                    .decode_seconds
                    .observe(started.elapsed().as_secs_f64());
                let root = copy.header.ida_root.unwrap_or_default();
                self.forward(&peer, copy);
                match r {
                    Ok(block) => self.deliver(root, *block),
                    Err(e) => {
                        warn!(%root, "IDA block not rebuilt: {e}");
                        self.metrics.block(BlockOutcome::RebuildFailed).inc();
                    }
                }
            }
            Outcome::Duplicate => {
                self.metrics.chunk(ChunkOutcome::Duplicate).inc();
            }
            // Arrived after the block was rebuilt (it was on its way when `Done` went out).
            Outcome::Known => {
                self.metrics.chunk(ChunkOutcome::Late).inc();
            }
            Outcome::Invalid(e) => {
                debug!(%peer, "invalid chunk: {e}");
                self.metrics.chunk(ChunkOutcome::Invalid).inc();
                self.metrics
                    .invalid_chunks
                    .get_or_create(&[("reason", e.reason())])
                    .inc();
                self.p2p.penalise(peer).await;
            }
            Outcome::TooLarge => {
                self.metrics.chunk(ChunkOutcome::TooLarge).inc();
            }
        }
    }

    fn forward(&mut self, from: &PeerId, chunk: Chunk) {
        let root = chunk.header.ida_root.unwrap_or_default();
        let index = chunk.index;
        let key = Key {
            root,
            index,
            k: chunk.params.data_shards,
        };
        // Tell the neighbours first (tiny, ahead of chunks): copies they queued for us are skipped.
        if let Some(f) = self.frame(&IdaMessage::Have { root, index }) {
            for p in self.relay.neighbours().copied().collect::<Vec<_>>() {
                if p != *from {
                    self.send_ctl(&p, f.clone());
                }
            }
        }
        let targets = self.relay.forward_to(
            &root,
            Some(from),
            usize::from(chunk.index),
            (self.cfg.forward_fanout, self.cfg.push_budget),
            |p| {
                self.out
                    .get(p)
                    .is_some_and(|n| n.has.lock().expect("not poisoned").has(&root, index))
            },
        );
        if targets.is_empty() {
            return;
        }
        let Some(frame) = self.chunk_frame(chunk) else {
            return;
        };
        for p in targets {
            if self.send(&p, key, frame.clone()) {
                self.metrics.chunk(ChunkOutcome::Forwarded).inc();
            }
        }
    }

    fn deliver(&mut self, root: H256, block: Block) {
        self.metrics.block(BlockOutcome::Decoded).inc();
        if let Some(f) = self.frame(&IdaMessage::Done { root }) {
            for p in self.relay.neighbours().copied().collect::<Vec<_>>() {
                self.send_ctl(&p, f.clone());
            }
        }
        self.inserter.offer(block);
    }

    fn on_want(&mut self, peer: PeerId, root: H256, height: u64, missing: Vec<u16>) {
        let cached = self
            .encoded
            .iter()
            .find(|(r, _, _)| *r == root)
            .map(|(_, e, b)| (e.clone(), b.clone()));
        let (enc, block) = match cached {
            Some(x) => x,
            None => {
                let Ok(Some(block)) = self.store.block(height) else {
                    return;
                };
                if block.header.ida_root != Some(root) {
                    return;
                }
                let enc = Arc::new(encode(self.cfg.params, &block.payload));
                if enc.root != root {
                    return; // encoded with other parameters; sync covers it
                }
                self.remember(root, enc.clone(), block.clone());
                (enc, block)
            }
        };
        for i in missing.into_iter().take(enc.shards.len()) {
            if usize::from(i) < enc.shards.len() {
                let c = enc.chunk(&block.header, block.signature, usize::from(i));
                if let Some(f) = self.chunk_frame(c)
                    && self.send(&peer, key(&enc, root, i), f)
                {
                    self.metrics
                        .repairs
                        .get_or_create(&[("kind", RepairKind::Served.label())])
                        .inc();
                }
            }
        }
    }

    fn on_timeout(&mut self, t: Timeout) {
        match t {
            Timeout::Repair {
                root,
                height,
                missing,
            } => {
                let peers: Vec<PeerId> = self.relay.neighbours().copied().collect();
                if peers.is_empty() {
                    return;
                }
                self.metrics
                    .repairs
                    .get_or_create(&[("kind", RepairKind::Requested.label())])
                    .inc();
                let msg = IdaMessage::Want {
                    root,
                    height,
                    missing,
                };
                let Some(f) = self.frame(&msg) else { return };
                for k in 0..self.cfg.repair_fanout.min(peers.len()) {
                    let p = peers[(self.repair_turn + k) % peers.len()];
                    self.send_ctl(&p, f.clone());
                }
                self.repair_turn = self.repair_turn.wrapping_add(1);
            }
            // The header was announced on the sync streams too; the downloader fetches the block.
            Timeout::GiveUp { header, .. } => {
                debug!(height = header.height, "IDA gave up");
                self.metrics.block(BlockOutcome::GaveUp).inc();
            }
        }
    }
}

fn key(enc: &Encoded, root: H256, index: u16) -> Key {
    Key {
        root,
        index,
        k: enc.params.data_shards,
    }
}

/// Whether the neighbour still needs this chunk, as far as its `Have`s and `Done`s tell.
fn lacks(has: &Has, key: &Key) -> bool {
    let h = has.lock().expect("not poisoned");
    !h.has(&key.root, key.index) && !h.enough(&key.root, usize::from(key.k))
}

struct Writer {
    peer: PeerId,
    control: libp2p_stream::Control,
    protocol: StreamProtocol,
    rx: mpsc::Receiver<Out>,
    ctl: mpsc::Receiver<Bytes>,
    has: Has,
    pacer: Option<Arc<Pacer>>,
    metrics: BroadcastMetrics,
}

/// First retry of a failed IDA stream open; doubles up to `OPEN_BACKOFF_MAX`, with jitter.
const OPEN_BACKOFF: Duration = Duration::from_millis(250);
const OPEN_BACKOFF_MAX: Duration = Duration::from_secs(8);

/// Chunk frames a writer holds to choose from (beyond it they wait in the channel).
const POOL: usize = 256;

impl Writer {
    /// A random chunk from the pool that the neighbour still lacks; the ones it has are dropped.
    /// Random, not FIFO: relays that got the same chunks in the same order would otherwise all
    /// send the same chunk to a neighbour at once, and all but one copy would be wasted.
    fn pick(&self, pool: &mut Vec<Out>) -> Option<Bytes> {
        while !pool.is_empty() {
            let i = rand::random_range(0..pool.len());
            let (key, f, _held) = pool.swap_remove(i);
            if lacks(&self.has, &key) {
                return Some(f);
            }
            self.metrics.chunk(ChunkOutcome::SkippedHas).inc();
        }
        None
    }
}

async fn write_loop(mut w: Writer) {
    let sent = w
        .metrics
        .bytes_sent
        .get_or_create(&[("mode", BroadcastMode::Ida.label())])
        .clone();
    // Chunks waiting to be chosen; kept across streams, and filtered by `Have`s when picked.
    let mut pool: Vec<Out> = Vec::new();
    let mut backoff = OPEN_BACKOFF;
    // A stream that fails (the peer reset it, or dropped it unaccepted while busy) is reopened
    // for as long as the peer stays a neighbour. Ending here instead would leave a neighbour
    // whose queue still takes frames that no one sends: it would get no chunks, and no repairs,
    // until it left the neighbour set.
    while let Some(mut stream) = open(&mut w, &mut backoff).await {
        let (end, wrote) = pump(&mut w, &mut stream, &mut pool, &sent).await;
        let _ = stream.close().await;
        if let PumpEnd::NotNeighbour = end {
            break;
        }
        if wrote {
            // The stream worked for a while: this failure starts the backoff afresh.
            backoff = OPEN_BACKOFF;
        }
        debug!(peer = %w.peer, "IDA stream failed; reopening");
        back_off(&mut backoff).await;
    }
    // Whatever is left was never sent.
    w.rx.close();
    while w.rx.try_recv().is_ok() {
        w.metrics.queued_frames.dec();
    }
}

/// Opens the IDA stream to the writer's peer, retrying with backoff; `None` once the peer is no
/// longer a neighbour (its queue's sender is gone).
async fn open(w: &mut Writer, backoff: &mut Duration) -> Option<libp2p::Stream> {
    loop {
        if w.rx.is_closed() {
            return None;
        }
        let open = w.control.open_stream(w.peer, w.protocol.clone());
        match tokio::time::timeout(Duration::from_secs(10), open).await {
            Ok(Ok(s)) => return Some(s),
            r => debug!(peer = %w.peer, ?r, "IDA stream did not open; retrying"),
        }
        // Frames queue meanwhile (bounded; beyond the queue they are dropped and repaired).
        back_off(backoff).await;
    }
}

/// Sleeps `backoff` with jitter, then doubles it up to `OPEN_BACKOFF_MAX`.
async fn back_off(backoff: &mut Duration) {
    let jitter = rand::random_range(0.5..1.5);
    tokio::time::sleep(backoff.mul_f64(jitter)).await;
    *backoff = (*backoff * 2).min(OPEN_BACKOFF_MAX);
}

enum PumpEnd {
    NotNeighbour,
    StreamFailed,
}

/// Writes control frames and chosen chunks to one stream until it fails or the peer stops being
/// a neighbour. Also says whether any frame went out.
async fn pump(
    w: &mut Writer,
    stream: &mut libp2p::Stream,
    pool: &mut Vec<Out>,
    sent: &prometheus_client::metrics::counter::Counter,
) -> (PumpEnd, bool) {
    let mut wrote = false;
    // Upload tokens already paid for (a frame that turned out not to be needed).
    let mut credit = 0usize;
    // Tokens for the next chunk are acquired before it is chosen, so the choice is as late (and
    // as well informed by `Have`s) as possible; control frames overtake it meanwhile.
    let mut paced: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> = None;
    loop {
        if paced.is_none()
            && let Some(p) = &w.pacer
            && let Some((_, f, _)) = pool.first()
        {
            let (p, n) = (p.clone(), f.len().saturating_sub(credit));
            credit = 0;
            paced = Some(Box::pin(async move { p.wait(n).await }));
        }

        let frame = tokio::select! {
            biased;
            c = w.ctl.recv() => match c {
                Some(f) => f,
                None => return (PumpEnd::NotNeighbour, wrote),
            },
            _ = async { paced.as_mut().expect("guarded").await }, if paced.is_some() => {
                paced = None;
                let paid = pool.first().map_or(0, |(_, f, _)| f.len());
                match w.pick(pool) {
                    Some(f) => f,
                    None => {
                        credit = paid;
                        continue;
                    }
                }
            }
            d = w.rx.recv(), if pool.len() < POOL => {
                match d {
                    Some(out) => {
                        w.metrics.queued_frames.dec();
                        pool.push(out);
                    }
                    // No longer a neighbour: what is left is not sent.
                    None => return (PumpEnd::NotNeighbour, wrote),
                }
                if w.pacer.is_some() {
                    continue;
                }
                match w.pick(pool) {
                    Some(f) => f,
                    None => continue,
                }
            }
        };
        // The frame in hand is lost with a failed stream; the receiver's repair asks again.
        if stream.write_all(&frame).await.is_err() {
            return (PumpEnd::StreamFailed, wrote);
        }
        wrote = true;
        sent.inc_by(frame.len() as u64);
        // Flushed unless more control frames follow at once: a `Have` must not wait behind chunks.
        if w.ctl.is_empty() && stream.flush().await.is_err() {
            return (PumpEnd::StreamFailed, wrote);
        }
    }
}
