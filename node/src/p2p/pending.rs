//! The pending-connection pool on the transport: every inbound connection in its handshake
//! (preamble, noise, yamux) is registered in a [`PendingPool`]; when the pool is full the oldest
//! is dropped for the newcomer, and each must finish within `admission.pending_timeout`. libp2p's
//! own pending cap refuses the newcomer instead, which let 128 idle TCP sockets lock every new
//! peer out for as long as they stayed.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{AbortHandle, Abortable, BoxFuture};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{DialOpts, ListenerId, Transport, TransportError, TransportEvent};
use libp2p::{Multiaddr, PeerId};
use prometheus_client::metrics::counter::Counter;

use crate::peers::PendingPool;

type Boxed = libp2p::core::transport::Boxed<(PeerId, StreamMuxerBox)>;

pub struct Pending {
    inner: Boxed,
    pool: Arc<Mutex<PendingPool<AbortHandle>>>,
    timeout: Duration,
    evicted: Counter,
    timed_out: Counter,
}

impl Pending {
    pub fn new(
        inner: Boxed,
        cap: usize,
        timeout: Duration,
        evicted: Counter,
        timed_out: Counter,
    ) -> Pending {
        Pending {
            inner,
            pool: Arc::new(Mutex::new(PendingPool::new(cap))),
            timeout,
            evicted,
            timed_out,
        }
    }

    fn admit(
        &self,
        upgrade: <Boxed as Transport>::ListenerUpgrade,
    ) -> BoxFuture<'static, std::io::Result<(PeerId, StreamMuxerBox)>> {
        let (handle, reg) = AbortHandle::new_pair();
        let (ticket, oldest) = self.pool.lock().expect("not poisoned").arrive(handle);
        if let Some(h) = oldest {
            h.abort();
            self.evicted.inc();
        }
        let leave = Leave(self.pool.clone(), ticket);
        let (timeout, timed_out) = (self.timeout, self.timed_out.clone());
        Box::pin(async move {
            let _leave = leave;
            match Abortable::new(tokio::time::timeout(timeout, upgrade), reg).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => {
                    timed_out.inc();
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "handshake not done within admission.pending_timeout",
                    ))
                }
                Err(_) => Err(std::io::Error::other(
                    "dropped for a newer pending connection (pool full)",
                )),
            }
        })
    }
}

/// Takes the connection out of the pool however its handshake ends.
struct Leave(Arc<Mutex<PendingPool<AbortHandle>>>, u64);

impl Drop for Leave {
    fn drop(&mut self) {
        if let Ok(mut p) = self.0.lock() {
            p.leave(self.1);
        }
    }
}

impl Transport for Pending {
    type Output = (PeerId, StreamMuxerBox);
    type Error = std::io::Error;
    type ListenerUpgrade = BoxFuture<'static, std::io::Result<Self::Output>>;
    type Dial = <Boxed as Transport>::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        self.inner.dial(addr, opts)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        match Pin::new(&mut self.inner).poll(cx) {
            Poll::Ready(ev) => Poll::Ready(ev.map_upgrade(|up| self.admit(up))),
            Poll::Pending => Poll::Pending,
        }
    }
}
