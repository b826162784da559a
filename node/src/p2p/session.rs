//! One sync stream: handshake, then full duplex. Each side first sends `Response{id: 0, Status}`
//! and expects the peer's; the status must name our genesis and carry a head the producer signed.
//! After that, a reader loop dispatches frames (requests are served concurrently, bounded per
//! stream; responses go to the driver) and a writer drains a bounded queue of encoded frames.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::PeerId;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::FaultsRx;
use crate::canary::Canaries;
use crate::chain::ChainSpec;
use crate::faults::{FaultKind, Faults};
use crate::metrics::{
    Direction, FrameError, P2pMetrics, Protocol, RateLimitDirection, Refused, ServeOutcome,
};
use crate::ratelimit::ServerLimiter;
use crate::store::Store;
use crate::wire::{
    self, CodecError, ErrorReply, FrameDecoder, Limits, MAX_HASHES_PER_REQUEST, Message, Request,
    Response, Status,
};

/// Frames the driver may queue for writing on one stream (requests and announces: small).
const WRITE_QUEUE: usize = 64;
/// Requests from one peer served concurrently on one stream.
const SERVE_CONCURRENCY: usize = 8;
const READ_CHUNK: usize = 64 * 1024;
/// The handshake is one `Status` (~300 bytes): a bigger frame before it is malformed, so a peer
/// without an identity on the network buffers at most this per stream.
pub const HANDSHAKE_MAX_FRAME: usize = 4096;
/// Writes go out in pieces of this size, each within the write-stall timeout.
const WRITE_CHUNK: usize = 64 * 1024;
/// A frame in progress gets this much time per MiB of its declared length on top of the base.
const FRAME_TIME_PER_MIB: Duration = Duration::from_secs(1);

/// What a session needs from the node; shared by all sessions.
pub struct SessionCtx {
    pub spec: ChainSpec,
    pub store: Arc<Store>,
    pub limiter: ServerLimiter<PeerId>,
    pub limits: Limits,
    pub max_frame: usize,
    pub metrics: P2pMetrics,
    pub setup_timeout: Duration,
    /// The node's fault set; sessions consume `setup_failure_rate`, `stream_reset_rate`,
    /// `request_error_rate`, `stall_ms` and `corrupt_blocks`.
    pub faults: FaultsRx,
    /// Planted defects (memory, fds, threads per setup; CPU per request).
    pub canaries: Canaries,
    pub shutting_down: AtomicBool,
    pub budget: ServeBudget,
    /// Reply frames, reused once written.
    pub frames: super::frames::FramePool,
}

/// The memory replies may hold, in KiB: a reply reserves its bound before it is built and keeps
/// it until it is written, per stream and for all streams together. A peer that does not read
/// its replies once pinned 700 MB (64 frames of up to 8 MiB queued, 8 more being built).
pub struct ServeBudget {
    pub global: Arc<Semaphore>,
    pub global_kib: u32,
    pub stream_kib: u32,
    /// Streams in their handshake, all peers together.
    pub handshakes: Arc<Semaphore>,
    /// No byte written (the peer does not read) or a per-stream budget held this long: the
    /// stream is dropped and the peer penalised as a slow reader.
    pub write_stall: Duration,
    /// A frame in progress must complete within this plus [`FRAME_TIME_PER_MIB`] per MiB.
    pub frame_timeout: Duration,
}

impl ServeBudget {
    pub fn new(cfg: &crate::config::P2pConfig) -> ServeBudget {
        let global_kib = (cfg.serve_budget_bytes / 1024).max(1) as u32;
        ServeBudget {
            global: Arc::new(Semaphore::new(global_kib as usize)),
            global_kib,
            stream_kib: ((cfg.stream_serve_budget_bytes / 1024).max(1) as u32).min(global_kib),
            handshakes: Arc::new(Semaphore::new(cfg.max_pending_handshakes)),
            write_stall: cfg.write_stall_timeout,
            frame_timeout: cfg.frame_timeout,
        }
    }

    /// KiB in use by replies now.
    pub fn used_kib(&self) -> u32 {
        self.global_kib - self.global.available_permits() as u32
    }
}

/// What a reply to `req` may take, in KiB: its byte bound (at least one block is sent even if
/// it exceeds `max_bytes`, so a block's worth of slack), capped at the stream's budget.
fn reservation_kib(req: &Request, limits: &Limits, stream_kib: u32) -> u32 {
    let bytes: u64 = match req {
        Request::Status => 1024,
        Request::GetBlockHashes { count, .. } => 64 + 32 * u64::from(*count),
        Request::GetBlocksByRange { max_bytes, .. } => {
            u64::from((*max_bytes).min(limits.max_bytes_per_response)) + 64 * 1024
        }
        Request::GetBlocksByHashes { .. } => u64::from(limits.max_bytes_per_response) + 64 * 1024,
    };
    (bytes.div_ceil(1024) as u32).clamp(1, stream_kib)
}

/// True with probability `p` (a validated fault rate).
pub fn roll(p: f64) -> bool {
    p > 0.0 && rand::random::<f64>() < p
}

impl SessionCtx {
    pub fn status(&self) -> Status {
        let head = self.store.head();
        Status {
            genesis: self.spec.genesis_hash(),
            head: head.header,
            head_signature: head.signature,
            limits: self.limits,
        }
    }

    /// The fault set in force now.
    pub fn faults(&self) -> Arc<Faults> {
        self.faults.borrow().1.clone()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError {
    /// Too many handshakes in progress: dropped at once, nobody's fault.
    Busy,
    Open,
    Timeout,
    Io,
    Malformed,
    /// The peer's genesis is not ours: another network.
    WrongNetwork,
    /// The peer's head signature does not verify.
    BadHead,
    /// Fault injection.
    Injected,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    Eof,
    Io,
    /// Oversize or undecodable frame: the peer is penalised.
    Malformed,
    /// The peer did not read our replies (no progress for the write-stall timeout).
    SlowReader,
    /// A frame in progress did not complete by its deadline.
    Stalled,
}

#[derive(Debug)]
pub enum SessionEvent {
    Ready {
        peer: PeerId,
        id: u64,
        outbound: bool,
        status: Box<Status>,
        tx: mpsc::Sender<Vec<u8>>,
        /// Dropping (or firing) this closes the session.
        close: oneshot::Sender<()>,
    },
    SetupFailed {
        peer: PeerId,
        id: u64,
        outbound: bool,
        why: SetupError,
    },
    Response {
        peer: PeerId,
        id: u64,
        req_id: wire::ReqId,
        resp: Response,
    },
    Closed {
        peer: PeerId,
        id: u64,
        why: CloseReason,
    },
    Announce {
        peer: PeerId,
        announce: Box<wire::Announce>,
    },
    /// Blocks or hashes were served to the peer (at most once a second per session): the stream
    /// is in use, so idle eviction passes it over.
    Served { peer: PeerId },
}

/// Reports [`SessionEvent::Served`] at most once per `SERVED_EVERY` for one session.
struct ServedReporter {
    epoch: std::time::Instant,
    /// Milliseconds after `epoch` when the next report is due.
    next_ms: std::sync::atomic::AtomicU64,
}

const SERVED_EVERY: Duration = Duration::from_secs(1);

impl ServedReporter {
    fn new() -> ServedReporter {
        ServedReporter {
            epoch: std::time::Instant::now(),
            next_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether to report now (true for one caller per period).
    fn due(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        let after = now + SERVED_EVERY.as_millis() as u64;
        now >= next
            && self
                .next_ms
                .compare_exchange(next, after, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

enum ReadError {
    Eof,
    Io,
    Codec(CodecError),
    /// A frame in progress missed its deadline.
    Stalled,
}

/// Reads until the decoder yields a message. Once a frame has begun, it must complete within
/// `frame_timeout` plus [`FRAME_TIME_PER_MIB`] per MiB it declares (`None`: no deadline, for the
/// handshake, which has its own). A truncated frame once held its stream, ~20 MB and the
/// connection for as long as the peer liked.
async fn read_message<R: AsyncRead + Unpin>(
    rd: &mut R,
    dec: &mut FrameDecoder,
    buf: &mut [u8],
    metrics: &P2pMetrics,
    frame_timeout: Option<Duration>,
) -> Result<Message, ReadError> {
    let mut started: Option<tokio::time::Instant> = None;
    loop {
        if let Some(m) = dec.next_message().map_err(ReadError::Codec)? {
            return Ok(m);
        }
        let want = dec.wanted().clamp(1, buf.len());
        let read = rd.read(&mut buf[..want]);
        let n = match (frame_timeout, started) {
            (Some(base), Some(t0)) => {
                let mib = dec.declared_len().unwrap_or(0) as u32 / (1024 * 1024);
                let deadline = t0 + base + FRAME_TIME_PER_MIB * mib;
                tokio::time::timeout_at(deadline, read)
                    .await
                    .map_err(|_| ReadError::Stalled)?
            }
            _ => read.await,
        }
        .map_err(|_| ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Eof);
        }
        started.get_or_insert_with(tokio::time::Instant::now);
        metrics
            .bytes
            .get_or_create(&[
                ("protocol", Protocol::Sync.label()),
                ("direction", Direction::In.label()),
            ])
            .inc_by(n as u64);
        dec.feed(&buf[..n]);
    }
}

/// Writes `frame` in pieces, each within `stall`: a peer that stops reading fills the muxer's
/// window and the write stops making progress.
async fn write_frame<W: AsyncWrite + Unpin>(
    wr: &mut W,
    frame: &[u8],
    stall: Duration,
) -> std::io::Result<()> {
    for piece in frame.chunks(WRITE_CHUNK) {
        within(stall, wr.write_all(piece)).await?;
    }
    Ok(())
}

/// A write or flush that must make progress within `stall`; `TimedOut` (a slow reader) if not.
async fn within(
    stall: Duration,
    io: impl Future<Output = std::io::Result<()>>,
) -> std::io::Result<()> {
    tokio::time::timeout(stall, io)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Runs one stream from handshake to close, reporting to the driver through `events`.
pub async fn run<S>(
    ctx: Arc<SessionCtx>,
    peer: PeerId,
    id: u64,
    stream: S,
    outbound: bool,
    events: mpsc::Sender<SessionEvent>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let fail = |why| SessionEvent::SetupFailed {
        peer,
        id,
        outbound,
        why,
    };
    // Handshakes in progress are bounded in count as well as in bytes and time: 32 streams
    // buffering 15 MiB each before an identity was known once took 175 MB.
    let Ok(handshake_permit) = ctx.budget.handshakes.clone().try_acquire_owned() else {
        ctx.metrics
            .refused
            .get_or_create(&[("reason", Refused::HandshakesFull.label())])
            .inc();
        return drop(events.send(fail(SetupError::Busy)).await);
    };
    let (mut rd, mut wr) = stream.split();
    let mut dec = FrameDecoder::new(HANDSHAKE_MAX_FRAME);
    let mut buf = vec![0u8; READ_CHUNK];

    // Handshake.
    let hello = Message::Response {
        id: wire::ReqId::HANDSHAKE,
        resp: Response::Status(Box::new(ctx.status())),
    };
    let handshake = async {
        let frame = wire::encode(&hello, ctx.max_frame).map_err(|_| SetupError::Malformed)?;
        wr.write_all(&frame).await.map_err(|_| SetupError::Io)?;
        wr.flush().await.map_err(|_| SetupError::Io)?;
        match read_message(&mut rd, &mut dec, &mut buf, &ctx.metrics, None).await {
            Ok(Message::Response {
                id: wire::ReqId::HANDSHAKE,
                resp: Response::Status(s),
            }) => Ok(s),
            Ok(_) => Err(SetupError::Malformed),
            Err(ReadError::Codec(e)) => {
                ctx.metrics
                    .frame_errors
                    .get_or_create(&[("reason", FrameError::from(&e).label())])
                    .inc();
                Err(SetupError::Malformed)
            }
            Err(_) => Err(SetupError::Io),
        }
    };
    let status = match tokio::time::timeout(ctx.setup_timeout, handshake).await {
        Err(_) => return drop(events.send(fail(SetupError::Timeout)).await),
        Ok(Err(e)) => return drop(events.send(fail(e)).await),
        Ok(Ok(s)) => s,
    };
    drop(handshake_permit);
    dec.set_max_frame(ctx.max_frame);
    if status.genesis != ctx.spec.genesis_hash() {
        return drop(events.send(fail(SetupError::WrongNetwork)).await);
    }
    if ctx
        .spec
        .verify_head(&status.head, &status.head_signature)
        .is_err()
    {
        return drop(events.send(fail(SetupError::BadHead)).await);
    }
    if outbound && roll(ctx.faults().setup_failure_rate) {
        ctx.metrics
            .faults_injected
            .get_or_create(&[("kind", FaultKind::SetupFailure.label())])
            .inc();
        return drop(events.send(fail(SetupError::Injected)).await);
    }

    ctx.canaries.on_setup(&ctx.metrics);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let (close, closed) = oneshot::channel();
    let ready = SessionEvent::Ready {
        peer,
        id,
        outbound,
        status,
        tx: tx.clone(),
        close,
    };
    if events.send(ready).await.is_err() {
        return;
    }

    let metrics = ctx.metrics.clone();
    // Replies come with the budget they hold, released once written.
    let (reply_tx, mut reply_rx) = mpsc::channel::<(Vec<u8>, ReplyBudget)>(SERVE_CONCURRENCY);
    let stall = ctx.budget.write_stall;
    let frames = ctx.clone();
    let writer = async move {
        loop {
            let (frame, budget) = tokio::select! {
                f = rx.recv() => match f {
                    Some(f) => (f, None),
                    None => break,
                },
                Some((f, b)) = reply_rx.recv() => (f, Some(b)),
            };
            write_frame(&mut wr, &frame, stall).await?;
            let mut n = frame.len();
            if budget.is_some() {
                frames.frames.give(frame);
            }
            drop(budget);
            // Drain what is queued before one flush.
            while let Ok(more) = rx.try_recv() {
                write_frame(&mut wr, &more, stall).await?;
                n += more.len();
            }
            within(stall, wr.flush()).await?;
            metrics
                .bytes
                .get_or_create(&[
                    ("protocol", Protocol::Sync.label()),
                    ("direction", Direction::Out.label()),
                ])
                .inc_by(n as u64);
        }
        wr.close().await
    };
    let serving = Arc::new(Semaphore::new(SERVE_CONCURRENCY));
    let stream_budget = Arc::new(Semaphore::new(ctx.budget.stream_kib as usize));
    let served = Arc::new(ServedReporter::new());
    let reader = async {
        loop {
            let next = read_message(
                &mut rd,
                &mut dec,
                &mut buf,
                &ctx.metrics,
                Some(ctx.budget.frame_timeout),
            )
            .await;
            match next {
                Ok(Message::Request { .. }) if roll(ctx.faults().stream_reset_rate) => {
                    ctx.metrics
                        .faults_injected
                        .get_or_create(&[("kind", FaultKind::StreamReset.label())])
                        .inc();
                    return CloseReason::Io;
                }
                Ok(Message::Request { id: req_id, req }) => {
                    let permit = serving.clone().acquire_owned().await.expect("never closed");
                    // The stream's own budget first: if its replies are not being read, it
                    // stays taken, and after the stall timeout the peer is a slow reader. The
                    // global one is waited for without a deadline (other peers hold it).
                    let kib = reservation_kib(&req, &ctx.limits, ctx.budget.stream_kib);
                    let own = stream_budget.clone().acquire_many_owned(kib);
                    let Ok(Ok(own)) = tokio::time::timeout(stall, own).await else {
                        return CloseReason::SlowReader;
                    };
                    let global = ctx
                        .budget
                        .global
                        .clone()
                        .acquire_many_owned(kib)
                        .await
                        .expect("never closed");
                    let budget = ReplyBudget {
                        _own: own,
                        _global: global,
                    };
                    let (ctx, tx, events, served) = (
                        ctx.clone(),
                        reply_tx.clone(),
                        events.clone(),
                        served.clone(),
                    );
                    tokio::spawn(async move {
                        let reply = serve(&ctx, &peer, req_id, req).await;
                        if matches!(
                            reply,
                            Reply::Frame(_)
                                | Reply::Response(Response::Blocks(_) | Response::BlockHashes(_))
                        ) && served.due()
                        {
                            // Best effort: a full channel means the driver is busy, not that
                            // the stream is idle; the next report comes a second later.
                            let _ = events.try_send(SessionEvent::Served { peer });
                        }
                        let too_large = || {
                            let e = Message::Response {
                                id: req_id,
                                resp: Response::Error(ErrorReply::TooLarge),
                            };
                            wire::encode(&e, ctx.max_frame).expect("tiny")
                        };
                        let frame = match reply {
                            Reply::Frame(f) => f,
                            Reply::Response(resp) => {
                                let msg = Message::Response { id: req_id, resp };
                                wire::encode(&msg, ctx.max_frame).unwrap_or_else(|_| too_large())
                            }
                        };
                        let _ = tx.send((frame, budget)).await;
                        drop(permit);
                    });
                }
                Ok(Message::Announce(announce)) => {
                    if events
                        .send(SessionEvent::Announce { peer, announce })
                        .await
                        .is_err()
                    {
                        return CloseReason::Eof;
                    }
                }
                Ok(Message::Response { id: req_id, resp }) => {
                    let ev = SessionEvent::Response {
                        peer,
                        id,
                        req_id,
                        resp,
                    };
                    if events.send(ev).await.is_err() {
                        return CloseReason::Eof;
                    }
                }
                Err(ReadError::Eof) => return CloseReason::Eof,
                Err(ReadError::Io) => return CloseReason::Io,
                Err(ReadError::Stalled) => {
                    ctx.metrics
                        .frame_errors
                        .get_or_create(&[("reason", FrameError::Stalled.label())])
                        .inc();
                    return CloseReason::Stalled;
                }
                Err(ReadError::Codec(e)) => {
                    ctx.metrics
                        .frame_errors
                        .get_or_create(&[("reason", FrameError::from(&e).label())])
                        .inc();
                    tracing::debug!(%peer, "malformed frame: {e}");
                    return CloseReason::Malformed;
                }
            }
        }
    };
    let why = tokio::select! {
        r = reader => r,
        r = writer => match r {
            Ok(()) => CloseReason::Eof,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => CloseReason::SlowReader,
            Err(_) => CloseReason::Io,
        },
        // The driver dropped the session: it no longer exists there, so report nothing.
        _ = closed => return,
    };
    let _ = events.send(SessionEvent::Closed { peer, id, why }).await;
}

/// The budget a reply holds until it is written (dropping it returns the KiB).
struct ReplyBudget {
    _own: tokio::sync::OwnedSemaphorePermit,
    _global: tokio::sync::OwnedSemaphorePermit,
}

/// A reply: a response to encode, or a blocks reply already framed from the store's records.
enum Reply {
    Response(Response),
    Frame(Vec<u8>),
}

/// Answers one request from the store, after the rate limiter.
async fn serve(ctx: &Arc<SessionCtx>, peer: &PeerId, req_id: wire::ReqId, req: Request) -> Reply {
    let faults = ctx.faults();
    if roll(faults.request_error_rate) {
        ctx.metrics
            .faults_injected
            .get_or_create(&[("kind", FaultKind::RequestError.label())])
            .inc();
        return Reply::Response(Response::Error(ErrorReply::Invalid));
    }
    let stall = faults.stall_ms;
    if stall > 0 {
        ctx.metrics
            .faults_injected
            .get_or_create(&[("kind", FaultKind::Stall.label())])
            .inc();
        tokio::time::sleep(Duration::from_millis(stall)).await;
    }
    if let Some(d) = ctx.canaries.cpu_burn(std::time::Instant::now()) {
        ctx.metrics
            .faults_injected
            .get_or_create(&[("kind", FaultKind::CpuCanary.label())])
            .inc();
        // On the blocking pool: the canary burns CPU, it does not stall the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || crate::canary::cpu_canary_burn(d)).await;
    }
    let kind = req.kind().label();
    let reply = serve_inner(ctx, peer, req_id, req).await;
    let outcome = match &reply {
        Reply::Response(Response::Error(ErrorReply::RateLimited { .. })) => {
            ctx.metrics
                .rate_limited
                .get_or_create(&[("direction", RateLimitDirection::Sent.label())])
                .inc();
            ServeOutcome::RateLimited
        }
        Reply::Response(Response::Error(_)) => ServeOutcome::Error,
        _ => ServeOutcome::Ok,
    };
    ctx.metrics
        .served
        .get_or_create(&[("kind", kind), ("outcome", outcome.label())])
        .inc();
    reply
}

async fn serve_inner(
    ctx: &Arc<SessionCtx>,
    peer: &PeerId,
    req_id: wire::ReqId,
    req: Request,
) -> Reply {
    use Reply::Response as R;
    if ctx.shutting_down.load(Ordering::Relaxed) {
        return R(Response::Error(ErrorReply::Shutdown));
    }
    let limits = ctx.limits;
    let too_large = match &req {
        Request::Status => false,
        Request::GetBlockHashes { count, .. } => *count > MAX_HASHES_PER_REQUEST,
        Request::GetBlocksByRange { count, .. } => *count > limits.max_blocks_per_request,
        Request::GetBlocksByHashes { hashes } => {
            hashes.len() > limits.max_blocks_per_request.min(MAX_HASHES_PER_REQUEST) as usize
        }
    };
    if too_large {
        return R(Response::Error(ErrorReply::TooLarge));
    }
    if let Err(e) = ctx.limiter.check(peer, req.cost()) {
        return R(Response::Error(e));
    }
    if let Request::Status = req {
        return R(Response::Status(Box::new(ctx.status())));
    }
    let c = ctx.clone();
    // The corrupt-blocks fault edits blocks, so it takes the decoded path.
    let framed = !ctx.faults().corrupt_blocks;
    let r = tokio::task::spawn_blocking(move || -> Result<Reply, crate::store::StoreError> {
        let head = c.store.head().height;
        let max_bytes = c.limits.max_bytes_per_response as usize;
        if let Request::GetBlocksByRange {
            from,
            count,
            max_bytes: asked,
        } = req
            && framed
            && from <= head
            && count > 0
        {
            // The stored records are the reply's body: one read into the frame, no decoding
            // and no re-encoding.
            let range = c
                .store
                .records_range(from, count, max_bytes.min(asked as usize))?;
            return Ok(
                match wire::blocks_reply_head(req_id, range.count, range.bytes, c.max_frame) {
                    Ok(head) => {
                        let (mut frame, source) = c.frames.take(head.len() + range.bytes);
                        c.metrics
                            .frame_buffers
                            .get_or_create(&[("source", source.label())])
                            .inc();
                        frame.extend_from_slice(&head);
                        c.store.read_records(&range, &mut frame)?;
                        Reply::Frame(frame)
                    }
                    Err(_) => R(Response::Error(ErrorReply::TooLarge)),
                },
            );
        }
        Ok(R(match req {
            Request::Status => unreachable!("answered above"),
            Request::GetBlockHashes { from, count } => {
                if from > head {
                    Response::Error(ErrorReply::NotFound)
                } else {
                    Response::BlockHashes(c.store.hashes(from, count as u64)?)
                }
            }
            Request::GetBlocksByRange {
                from,
                count,
                max_bytes: asked,
            } => {
                if from > head || count == 0 {
                    Response::Error(ErrorReply::NotFound)
                } else {
                    let cap = max_bytes.min(asked as usize);
                    Response::Blocks(c.store.block_bytes_range(from, count, cap)?)
                }
            }
            Request::GetBlocksByHashes { hashes } => {
                let mut out = Vec::new();
                let mut total = 0;
                for h in hashes {
                    let Some(height) = c.store.height_of(&h)? else {
                        continue;
                    };
                    if let Some(b) = c.store.block_bytes(height)? {
                        if !out.is_empty() && total + b.len() > max_bytes {
                            break;
                        }
                        total += b.len();
                        out.push(b.into());
                    }
                }
                if out.is_empty() {
                    Response::Error(ErrorReply::NotFound)
                } else {
                    Response::Blocks(out)
                }
            }
        }))
    })
    .await;
    match r {
        Ok(Ok(R(Response::Blocks(mut blocks)))) if ctx.faults().corrupt_blocks => {
            // The payload is the last field of an encoded block: flip its last byte.
            for b in &mut blocks {
                let mut v = b.to_vec();
                if let Some(last) = v.last_mut() {
                    *last ^= 0x01;
                }
                *b = v.into();
            }
            ctx.metrics
                .faults_injected
                .get_or_create(&[("kind", FaultKind::CorruptBlock.label())])
                .inc();
            R(Response::Blocks(blocks))
        }
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => {
            tracing::warn!("serving a sync request: {e}");
            R(Response::Error(ErrorReply::NotFound))
        }
        Err(_) => R(Response::Error(ErrorReply::Shutdown)),
    }
}
