//! The I/O side of network emulation: a preamble that tells each end the other's region and peer
//! id, then a stream wrapper that holds outbound bytes in a delay line until the sans-IO schedule
//! (`Link`, `Shaper`) releases them, and stalls both directions while a partition holds the peer.
//!
//! It sits directly on the TCP socket, below noise and yamux, so the handshakes and every protocol
//! are delayed alike. libp2p has no latency/bandwidth emulation of its own, hence this wrapper.
//! Delivery follows the `AsyncWrite` contract: bytes accepted by `poll_write` are on their way
//! only while the owner keeps polling `poll_flush` (as yamux and noise do), like a `BufWriter`.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::PeerId;
use tokio::time::Sleep;

use super::{Link, Netem};
use syncnet_proto::netem::{Preamble, parse_preamble, preamble};

/// Sent first by both ends of an emulated connection.
pub use syncnet_proto::netem::PREAMBLE_MAGIC as MAGIC;
/// Largest write accepted at once; keeps the shaper's reservations fine-grained.
const MAX_CHUNK: usize = 64 * 1024;
/// How often a held connection looks at the partition set again.
const HOLD_RECHECK: Duration = Duration::from_millis(50);

/// Exchanges the preamble on a fresh connection and wraps it. The peer's is read exactly as far
/// as [`parse_preamble`] asks, never past it.
pub async fn handshake<S>(mut s: S, net: Arc<Netem>) -> io::Result<NetemStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    s.write_all(&preamble(&net.region, &net.local_peer)).await?;
    s.flush().await?;
    let mut buf = Vec::with_capacity(160);
    loop {
        match parse_preamble(&buf).map_err(|m| io::Error::new(io::ErrorKind::InvalidData, m))? {
            Preamble::Need(n) => {
                let at = buf.len();
                buf.resize(at + n, 0);
                s.read_exact(&mut buf[at..]).await?;
            }
            Preamble::Done { region, peer } => {
                return Ok(NetemStream::new(s, net, region, Some(peer)));
            }
        }
    }
}

struct Chunk {
    release: Instant,
    data: Vec<u8>,
    off: usize,
}

pub struct NetemStream<S> {
    inner: S,
    net: Arc<Netem>,
    region: String,
    region_key: String,
    peer: Option<PeerId>,
    link: Link,
    /// Latency, jitter and shaping all off for this connection: writes go straight through.
    direct: bool,
    queue: VecDeque<Chunk>,
    queued: usize,
    write_timer: Pin<Box<Sleep>>,
    read_timer: Pin<Box<Sleep>>,
    held_gen: u64,
    held: bool,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl<S> NetemStream<S> {
    pub fn new(inner: S, net: Arc<Netem>, region: String, peer: Option<PeerId>) -> Self {
        let link = net.link_to(&region);
        let direct = link.latency().is_zero()
            && net.config().jitter_ms == 0
            && net.config().upload_bytes_per_sec == 0;
        let region_key = net.connection_opened(&region);
        let held = net.blocks(&region, peer.as_ref());
        if held {
            net.metrics.partition_holds.inc();
        }
        NetemStream {
            inner,
            held_gen: net.partition_generation(),
            net,
            region,
            region_key,
            peer,
            link,
            direct,
            queue: VecDeque::new(),
            queued: 0,
            write_timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            read_timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            held,
        }
    }

    /// The peer's region, as it announced it.
    pub fn remote_region(&self) -> &str {
        &self.region
    }

    /// Whether a partition holds this connection now (re-evaluated when the set changes).
    fn is_held(&mut self) -> bool {
        let generation = self.net.partition_generation();
        if generation != self.held_gen {
            self.held_gen = generation;
            let held = self.net.blocks(&self.region, self.peer.as_ref());
            if held && !self.held {
                self.net.metrics.partition_holds.inc();
            }
            self.held = held;
        }
        self.held
    }

    fn arm(timer: &mut Pin<Box<Sleep>>, at: Instant, cx: &mut Context<'_>) -> Poll<()> {
        timer.as_mut().reset(tokio::time::Instant::from_std(at));
        timer.as_mut().poll(cx)
    }
}

impl<S: AsyncWrite + Unpin> NetemStream<S> {
    /// Writes every chunk that is due; `Ready` once the delay line is empty.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.queue.is_empty() {
                return Poll::Ready(Ok(()));
            }
            if self.is_held() {
                ready!(Self::arm(&mut self.write_timer, now() + HOLD_RECHECK, cx));
                continue;
            }
            let front = self.queue.front_mut().expect("not empty");
            if front.release > now() {
                let at = front.release;
                ready!(Self::arm(&mut self.write_timer, at, cx));
                continue;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &front.data[front.off..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            front.off += n;
            self.net.metrics.bytes_out.inc_by(n as u64);
            if front.off == front.data.len() {
                let done = self.queue.pop_front().expect("front exists");
                self.queued -= done.data.len();
                self.net.metrics.queued_bytes.dec_by(done.data.len() as i64);
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NetemStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let held = this.is_held();
        if this.direct && !held && this.queue.is_empty() {
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
            this.net.metrics.bytes_out.inc_by(n as u64);
            return Poll::Ready(Ok(n));
        }
        // Make room first; the errors of earlier writes surface here.
        if let Poll::Ready(Err(e)) = this.drive(cx) {
            return Poll::Ready(Err(e));
        }
        let cap = this.net.config().max_queue_bytes as usize;
        if this.queued >= cap {
            // `drive` registered a wake-up: a timer, the socket, or the partition re-check.
            return Poll::Pending;
        }
        let n = buf.len().min(cap - this.queued).min(MAX_CHUNK);
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        let t = now();
        let departure = this.net.reserve_upload(t, n);
        let release = this.link.release_at(departure);
        this.queue.push_back(Chunk {
            release,
            data: buf[..n].to_vec(),
            off: 0,
        });
        this.queued += n;
        this.net.metrics.queued_bytes.inc_by(n as i64);
        // Start the clock for this chunk (registers the wake-up if nothing else did).
        if let Poll::Ready(Err(e)) = this.drive(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.drive(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.is_held() {
            // A partitioned link loses what it holds when the connection is given up.
            this.net.metrics.queued_bytes.dec_by(this.queued as i64);
            this.queue.clear();
            this.queued = 0;
        }
        ready!(this.drive(cx))?;
        Pin::new(&mut this.inner).poll_close(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for NetemStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        while this.is_held() {
            ready!(Self::arm(&mut this.read_timer, now() + HOLD_RECHECK, cx));
        }
        let n = ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.net.metrics.bytes_in.inc_by(n as u64);
        Poll::Ready(Ok(n))
    }
}

impl<S> Drop for NetemStream<S> {
    fn drop(&mut self) {
        self.net.metrics.queued_bytes.dec_by(self.queued as i64);
        self.net.connection_closed(&self.region_key);
    }
}

#[cfg(test)]
mod tests;
