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
use crate::faults::Faults;
use crate::metrics::P2pMetrics;
use crate::ratelimit::ServerLimiter;
use crate::store::Store;
use crate::wire::{
    self, CodecError, ErrorReply, FrameDecoder, Limits, MAX_HASHES_PER_REQUEST, Message, Request,
    Response, Status,
};

/// Frames queued for writing on one stream before senders wait.
const WRITE_QUEUE: usize = 64;
/// Requests from one peer served concurrently on one stream.
const SERVE_CONCURRENCY: usize = 8;
const READ_CHUNK: usize = 64 * 1024;

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
}

enum ReadError {
    Eof,
    Io,
    Codec(CodecError),
}

/// Reads until the decoder yields a message. Cancel-safe: bytes are fed as soon as they are read.
async fn read_message<R: AsyncRead + Unpin>(
    rd: &mut R,
    dec: &mut FrameDecoder,
    buf: &mut [u8],
    metrics: &P2pMetrics,
) -> Result<Message, ReadError> {
    loop {
        if let Some(m) = dec.next_message().map_err(ReadError::Codec)? {
            return Ok(m);
        }
        let want = dec.wanted().clamp(1, buf.len());
        let n = rd.read(&mut buf[..want]).await.map_err(|_| ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Eof);
        }
        metrics
            .bytes
            .get_or_create(&[("protocol", "sync"), ("direction", "in")])
            .inc_by(n as u64);
        dec.feed(&buf[..n]);
    }
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
    let (mut rd, mut wr) = stream.split();
    let mut dec = FrameDecoder::new(ctx.max_frame);
    let mut buf = vec![0u8; READ_CHUNK];
    let fail = |why| SessionEvent::SetupFailed {
        peer,
        id,
        outbound,
        why,
    };

    // Handshake.
    let hello = Message::Response {
        id: wire::ReqId::HANDSHAKE,
        resp: Response::Status(Box::new(ctx.status())),
    };
    let handshake = async {
        let frame = wire::encode(&hello, ctx.max_frame).map_err(|_| SetupError::Malformed)?;
        wr.write_all(&frame).await.map_err(|_| SetupError::Io)?;
        wr.flush().await.map_err(|_| SetupError::Io)?;
        match read_message(&mut rd, &mut dec, &mut buf, &ctx.metrics).await {
            Ok(Message::Response {
                id: wire::ReqId::HANDSHAKE,
                resp: Response::Status(s),
            }) => Ok(s),
            Ok(_) | Err(ReadError::Codec(_)) => Err(SetupError::Malformed),
            Err(_) => Err(SetupError::Io),
        }
    };
    let status = match tokio::time::timeout(ctx.setup_timeout, handshake).await {
        Err(_) => return drop(events.send(fail(SetupError::Timeout)).await),
        Ok(Err(e)) => return drop(events.send(fail(e)).await),
        Ok(Ok(s)) => s,
    };
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
            .get_or_create(&[("kind", "setup_failure")])
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
    let writer = async move {
        while let Some(frame) = rx.recv().await {
            wr.write_all(&frame).await?;
            let mut n = frame.len();
            // Drain what is queued before one flush.
            while let Ok(more) = rx.try_recv() {
                wr.write_all(&more).await?;
                n += more.len();
            }
            wr.flush().await?;
            metrics
                .bytes
                .get_or_create(&[("protocol", "sync"), ("direction", "out")])
                .inc_by(n as u64);
        }
        wr.close().await
    };
    let serving = Arc::new(Semaphore::new(SERVE_CONCURRENCY));
    let reader = async {
        loop {
            match read_message(&mut rd, &mut dec, &mut buf, &ctx.metrics).await {
                Ok(Message::Request { .. }) if roll(ctx.faults().stream_reset_rate) => {
                    ctx.metrics
                        .faults_injected
                        .get_or_create(&[("kind", "stream_reset")])
                        .inc();
                    return CloseReason::Io;
                }
                Ok(Message::Request { id: req_id, req }) => {
                    let permit = serving.clone().acquire_owned().await.expect("never closed");
                    let (ctx, tx) = (ctx.clone(), tx.clone());
                    tokio::spawn(async move {
                        let resp = serve(&ctx, &peer, req).await;
                        let msg = Message::Response { id: req_id, resp };
                        let frame = wire::encode(&msg, ctx.max_frame).unwrap_or_else(|_| {
                            let e = Message::Response {
                                id: req_id,
                                resp: Response::Error(ErrorReply::TooLarge),
                            };
                            wire::encode(&e, ctx.max_frame).expect("tiny")
                        });
                        let _ = tx.send(frame).await;
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
                Err(ReadError::Codec(e)) => {
                    ctx.metrics
                        .frame_errors
                        .get_or_create(&[("reason", e.label())])
                        .inc();
                    tracing::debug!(%peer, "malformed frame: {e}");
                    return CloseReason::Malformed;
                }
            }
        }
    };
    let why = tokio::select! {
        r = reader => r,
        r = writer => if r.is_ok() { CloseReason::Eof } else { CloseReason::Io },
        // The driver dropped the session: it no longer exists there, so report nothing.
        _ = closed => return,
    };
    let _ = events.send(SessionEvent::Closed { peer, id, why }).await;
}

/// Answers one request from the store, after the rate limiter.
async fn serve(ctx: &Arc<SessionCtx>, peer: &PeerId, req: Request) -> Response {
    let faults = ctx.faults();
    if roll(faults.request_error_rate) {
        ctx.metrics
            .faults_injected
            .get_or_create(&[("kind", "request_error")])
            .inc();
        return Response::Error(ErrorReply::Invalid);
    }
    let stall = faults.stall_ms;
    if stall > 0 {
        ctx.metrics
            .faults_injected
            .get_or_create(&[("kind", "stall")])
            .inc();
        tokio::time::sleep(Duration::from_millis(stall)).await;
    }
    if let Some(d) = ctx.canaries.cpu_burn(std::time::Instant::now()) {
        ctx.metrics
            .faults_injected
            .get_or_create(&[("kind", "cpu_canary")])
            .inc();
        // On the blocking pool: the canary burns CPU, it does not stall the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || crate::canary::cpu_canary_burn(d)).await;
    }
    let kind = req.kind().label();
    let resp = serve_inner(ctx, peer, req).await;
    let outcome = match &resp {
        Response::Error(ErrorReply::RateLimited { .. }) => {
            ctx.metrics
                .rate_limited
                .get_or_create(&[("direction", "sent")])
                .inc();
            "rate_limited"
        }
        Response::Error(_) => "error",
        _ => "ok",
    };
    ctx.metrics
        .served
        .get_or_create(&[("kind", kind), ("outcome", outcome)])
        .inc();
    resp
}

async fn serve_inner(ctx: &Arc<SessionCtx>, peer: &PeerId, req: Request) -> Response {
    if ctx.shutting_down.load(Ordering::Relaxed) {
        return Response::Error(ErrorReply::Shutdown);
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
        return Response::Error(ErrorReply::TooLarge);
    }
    if let Err(e) = ctx.limiter.check(peer, req.cost()) {
        return Response::Error(e);
    }
    if let Request::Status = req {
        return Response::Status(Box::new(ctx.status()));
    }
    let c = ctx.clone();
    let r = tokio::task::spawn_blocking(move || -> Result<Response, crate::store::StoreError> {
        let head = c.store.head().height;
        let max_bytes = c.limits.max_bytes_per_response as usize;
        Ok(match req {
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
        })
    })
    .await;
    match r {
        Ok(Ok(Response::Blocks(mut blocks))) if ctx.faults().corrupt_blocks => {
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
                .get_or_create(&[("kind", "corrupt_block")])
                .inc();
            Response::Blocks(blocks)
        }
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            tracing::warn!("serving a sync request: {e}");
            Response::Error(ErrorReply::NotFound)
        }
        Err(_) => Response::Error(ErrorReply::Shutdown),
    }
}
