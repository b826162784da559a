//! IDA gossip driver: moves chunks between neighbours (the peers this node holds sync streams with)
//! and feeds the sans-IO assembler and relay (`crate::ida`). Each node sends on its own outbound
//! stream `/syncnet/<network>/ida/1` to each neighbour and reads what neighbours send on theirs, so
//! no tie-break is needed: one long-lived stream per direction and neighbour.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::P2pHandle;
use crate::chain::{Block, ChainSpec, H256};
use crate::ida::assembler::{Assembler, AssemblerConfig, Outcome, Timeout};
use crate::ida::relay::Relay;
use crate::ida::{Chunk, Encoded, IdaParams, encode};
use crate::store::Store;
use crate::wire::{self, FrameDecoder};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdaConfig {
    pub params: IdaParams,
    pub assembler: AssemblerConfig,
    /// Frames queued per neighbour before new ones are dropped (repair covers the loss).
    pub queue_frames: usize,
    /// Neighbours asked at once when a block stops making progress.
    pub repair_fanout: usize,
}

impl Default for IdaConfig {
    fn default() -> Self {
        IdaConfig {
            params: IdaParams::default(),
            assembler: AssemblerConfig::default(),
            queue_frames: 1024,
            repair_fanout: 2,
        }
    }
}

impl IdaConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.params.validate().map_err(|e| format!("params: {e}"))?;
        self.assembler
            .validate()
            .map_err(|e| format!("assembler: {e}"))?;
        if self.queue_frames == 0 || self.repair_fanout == 0 {
            return Err("queue_frames and repair_fanout must be > 0".into());
        }
        Ok(())
    }
}

pub fn ida_protocol(network: &str) -> StreamProtocol {
    StreamProtocol::try_from_owned(format!("/syncnet/{network}/ida/1")).expect("starts with /")
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdaMessage {
    Chunk(Box<Chunk>),
    /// "I have this block: send me no more of it."
    Done {
        root: H256,
    },
    /// Pull repair: the sender misses these shards of the block at `height`.
    Want {
        root: H256,
        height: u64,
        missing: Vec<u16>,
    },
}

/// Counters for tests and metrics.
#[derive(Clone, Debug, Default)]
pub struct IdaCounters {
    pub received: Arc<std::sync::atomic::AtomicU64>,
    pub forwarded: Arc<std::sync::atomic::AtomicU64>,
    pub duplicate: Arc<std::sync::atomic::AtomicU64>,
    pub invalid: Arc<std::sync::atomic::AtomicU64>,
    pub delivered: Arc<std::sync::atomic::AtomicU64>,
    pub repairs: Arc<std::sync::atomic::AtomicU64>,
}

fn bump(c: &std::sync::atomic::AtomicU64, n: u64) {
    c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

#[derive(Clone)]
pub struct IdaHandle {
    tx: mpsc::Sender<(Box<Block>, Arc<Encoded>)>,
    pub counters: IdaCounters,
}

impl IdaHandle {
    /// Producer side: sends a block (already in the store, its header committing to `encoded`).
    pub async fn broadcast(&self, block: Block, encoded: Arc<Encoded>) {
        let _ = self.tx.send((Box::new(block), encoded)).await;
    }
}

/// Encodes a payload for a new block: the root goes into the header before it is signed.
pub fn encode_payload(params: IdaParams, payload: &[u8]) -> Arc<Encoded> {
    Arc::new(encode(params, payload))
}

/// Frames of one kind of traffic to a neighbour.
struct Neighbour {
    tx: mpsc::Sender<Bytes>,
}

struct Service {
    cfg: IdaConfig,
    spec: ChainSpec,
    store: Arc<Store>,
    p2p: P2pHandle,
    protocol: StreamProtocol,
    assembler: Assembler,
    relay: Relay<PeerId>,
    out: HashMap<PeerId, Neighbour>,
    /// Decoded blocks waiting for their parent (bounded).
    pending: BTreeMap<u64, Block>,
    /// Recently encoded blocks, to answer repairs without re-encoding (bounded).
    encoded: Vec<(H256, Arc<Encoded>, Block)>,
    counters: IdaCounters,
    repair_turn: usize,
    max_frame: usize,
}

const PENDING_BLOCKS: usize = 64;
const ENCODED_CACHE: usize = 4;
const READ_CHUNK: usize = 256 * 1024;

pub async fn spawn(
    cfg: IdaConfig,
    spec: ChainSpec,
    store: Arc<Store>,
    p2p: P2pHandle,
    max_frame: usize,
) -> anyhow::Result<IdaHandle> {
    cfg.validate().map_err(anyhow::Error::msg)?;
    let protocol = ida_protocol(&spec.network_id);
    let mut incoming = p2p
        .stream_control()
        .accept(protocol.clone())
        .map_err(|e| anyhow::anyhow!("registering {protocol}: {e}"))?;
    let (in_tx, mut in_rx) = mpsc::channel::<(PeerId, Result<IdaMessage, ()>)>(1024);
    tokio::spawn(async move {
        while let Some((peer, stream)) = incoming.next().await {
            tokio::spawn(read_loop(peer, stream, in_tx.clone(), max_frame));
        }
    });
    let (tx, mut rx) = mpsc::channel::<(Box<Block>, Arc<Encoded>)>(64);
    let counters = IdaCounters::default();
    let mut s = Service {
        assembler: Assembler::new(spec.clone(), cfg.assembler.clone()),
        cfg,
        spec,
        store,
        protocol,
        relay: Relay::default(),
        out: HashMap::new(),
        pending: BTreeMap::new(),
        encoded: vec![],
        counters: counters.clone(),
        repair_turn: 0,
        max_frame,
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
        }
    });
    Ok(IdaHandle { tx, counters })
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
            tokio::spawn(write_loop(
                *p,
                self.p2p.stream_control(),
                self.protocol.clone(),
                rx,
            ));
            self.out.insert(*p, Neighbour { tx });
            self.relay.add(*p);
        }
    }

    fn send(&self, peer: &PeerId, frame: Bytes) -> bool {
        match self.out.get(peer) {
            // A full queue drops the frame; repair fetches what went missing.
            Some(n) => n.tx.try_send(frame).is_ok(),
            None => false,
        }
    }

    /// One frame, refused (None) above the frame cap receivers enforce.
    fn frame(&self, msg: &IdaMessage) -> Option<Bytes> {
        wire::encode(msg, self.max_frame).ok().map(Bytes::from)
    }

    fn broadcast(&mut self, block: Block, enc: Arc<Encoded>) {
        let root = enc.root;
        self.assembler.mark_done(root);
        for (peer, idx) in self.relay.assign(enc.shards.len()) {
            for i in idx {
                let c = enc.chunk(&block.header, block.signature, i);
                if let Some(f) = self.frame(&IdaMessage::Chunk(Box::new(c))) {
                    self.send(&peer, f);
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
            IdaMessage::Done { root } => self.relay.on_done(&peer, root),
            IdaMessage::Want {
                root,
                height,
                missing,
            } => self.on_want(peer, root, height, missing),
        }
    }

    async fn on_chunk(&mut self, peer: PeerId, chunk: Chunk) {
        bump(&self.counters.received, 1);
        // Cheap: the shard is shared, not copied; it is encoded only if it is forwarded.
        let copy = chunk.clone();
        match self.assembler.on_chunk(chunk, Instant::now()) {
            Outcome::New => self.forward(&peer, copy),
            Outcome::Complete(r) => {
                let root = copy.header.ida_root.unwrap_or_default();
                self.forward(&peer, copy);
                match r {
                    Ok(block) => self.deliver(*block),
                    Err(e) => warn!(%root, "IDA block not rebuilt: {e}"),
                }
            }
            Outcome::Duplicate | Outcome::Known => bump(&self.counters.duplicate, 1),
            Outcome::Invalid(e) => {
                debug!(%peer, "invalid chunk: {e}");
                bump(&self.counters.invalid, 1);
                self.p2p.penalise(peer).await;
            }
            Outcome::TooLarge => {}
        }
    }

    fn forward(&mut self, from: &PeerId, chunk: Chunk) {
        let root = chunk.header.ida_root.unwrap_or_default();
        let targets = self.relay.forward_to(&root, Some(from));
        if targets.is_empty() {
            return;
        }
        let Some(frame) = self.frame(&IdaMessage::Chunk(Box::new(chunk))) else {
            return;
        };
        for p in targets {
            if self.send(&p, frame.clone()) {
                bump(&self.counters.forwarded, 1);
            }
        }
    }

    fn deliver(&mut self, block: Block) {
        let root = block.header.ida_root.unwrap_or_default();
        if let Some(f) = self.frame(&IdaMessage::Done { root }) {
            for p in self.relay.neighbours().copied().collect::<Vec<_>>() {
                self.send(&p, f.clone());
            }
        }
        bump(&self.counters.delivered, 1);
        let head = self.store.head().height;
        if block.header.height <= head {
            return;
        }
        self.pending.insert(block.header.height, block);
        while self.pending.len() > PENDING_BLOCKS {
            self.pending.pop_last();
        }
        // Insert whatever now follows the head; the rest waits for sync or earlier blocks.
        loop {
            let head = self.store.head();
            let Some(b) = self.pending.remove(&(head.height + 1)) else {
                break;
            };
            match self.spec.verify(b, &head.header) {
                Ok(v) => match self.store.insert_batch(&[v]) {
                    Ok(h) => self.p2p.announce(h.header.clone(), h.signature),
                    Err(e) => {
                        debug!("IDA block not committed: {e}");
                        break;
                    }
                },
                Err(e) => {
                    debug!("IDA block does not extend the head: {e}");
                    break;
                }
            }
        }
        self.pending.retain(|h, _| *h > self.store.head().height);
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
                if let Some(f) = self.frame(&IdaMessage::Chunk(Box::new(c))) {
                    self.send(&peer, f);
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
                bump(&self.counters.repairs, 1);
                let msg = IdaMessage::Want {
                    root,
                    height,
                    missing,
                };
                let Some(f) = self.frame(&msg) else { return };
                for k in 0..self.cfg.repair_fanout.min(peers.len()) {
                    let p = peers[(self.repair_turn + k) % peers.len()];
                    self.send(&p, f.clone());
                }
                self.repair_turn = self.repair_turn.wrapping_add(1);
            }
            // The header was announced on the sync streams too; the downloader fetches the block.
            Timeout::GiveUp { header, .. } => debug!(height = header.height, "IDA gave up"),
        }
    }
}

async fn write_loop(
    peer: PeerId,
    mut control: libp2p_stream::Control,
    protocol: StreamProtocol,
    mut rx: mpsc::Receiver<Bytes>,
) {
    let mut stream =
        match tokio::time::timeout(Duration::from_secs(10), control.open_stream(peer, protocol))
            .await
        {
            Ok(Ok(s)) => s,
            _ => {
                debug!(%peer, "IDA stream did not open");
                return;
            }
        };
    while let Some(frame) = rx.recv().await {
        if stream.write_all(&frame).await.is_err() {
            return;
        }
        if rx.is_empty() && stream.flush().await.is_err() {
            return;
        }
    }
    let _ = stream.close().await;
}
