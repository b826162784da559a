//! The handle the rest of the node holds to the p2p layer: requests, announces, state, and the
//! fault channel.
//!
//! **The fault channel.** The node's fault set lives in one `watch` here, as plain data
//! (`syncnet_proto::faults::Faults`). Every consumer reads the current set from it: sessions
//! (setup failures, stream resets, request errors, stalls, corrupt blocks), the IDA driver (chunk
//! drops, corrupt chunks), and the driver task, which applies the rest when the set changes
//! (isolation, forced discovery and the storm canary through the peers core, the partition
//! through network emulation, the resource canaries). [`P2pHandle::set_faults`] returns once the
//! driver has applied the new set, so a caller that reads state or metrics next sees its effect.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use libp2p::gossipsub::{MessageAcceptance, MessageId};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch};

use super::session::SessionCtx;
use super::{NetEvent, NetState, RequestError, gossip};
use crate::faults::{FaultKind, Faults};
use crate::netem::Netem;
use crate::wire::{self, Request, Response};

/// The fault set in force, with a generation that grows with every change.
pub type FaultsRx = watch::Receiver<(u64, Arc<Faults>)>;

pub(super) enum Command {
    Request {
        req: Request,
        only: Option<Vec<PeerId>>,
        reply: oneshot::Sender<Result<(PeerId, Response), RequestError>>,
    },
    Direct {
        peer: PeerId,
        req: Request,
        reply: oneshot::Sender<Result<Response, RequestError>>,
    },
    Dial(Multiaddr),
    Announce(Box<wire::Announce>),
    Penalise(PeerId),
    Publish(Vec<u8>),
    GossipVerdict(MessageId, PeerId, MessageAcceptance),
    Shutdown(oneshot::Sender<()>),
}

/// Handle to a running p2p layer. Cheap to clone.
#[derive(Clone)]
pub struct P2pHandle {
    pub(super) tx: mpsc::Sender<Command>,
    pub(super) state: watch::Receiver<NetState>,
    pub(super) ctx: Arc<SessionCtx>,
    pub(super) events: Arc<std::sync::Mutex<Option<mpsc::Receiver<NetEvent>>>>,
    pub(super) gossip_in: Arc<std::sync::Mutex<Option<mpsc::Receiver<gossip::Inbound>>>>,
    pub(super) faults: Arc<watch::Sender<(u64, Arc<Faults>)>>,
    /// The generation of the fault set the driver has applied.
    pub(super) applied: watch::Receiver<u64>,
    pub local_peer_id: PeerId,
    pub(super) region: Option<String>,
    pub(super) netem: Option<Arc<Netem>>,
    pub(super) control: libp2p_stream::Control,
}

impl P2pHandle {
    /// Sends a request through the request manager (pacing, retries, stream choice).
    pub async fn request(
        &self,
        req: Request,
        only: Option<Vec<PeerId>>,
    ) -> Result<(PeerId, Response), RequestError> {
        self.ask(|reply| Command::Request { req, only, reply })
            .await
    }

    /// Sends a request straight onto the stream to `peer`, bypassing pacing, retries and
    /// rate-limit handling. For tools and tests (e.g. a deliberately misbehaving client).
    pub async fn request_direct(
        &self,
        peer: PeerId,
        req: Request,
    ) -> Result<Response, RequestError> {
        self.ask(|reply| Command::Direct { peer, req, reply }).await
    }

    /// Sends a command that carries a reply channel and waits for the reply.
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, RequestError>>) -> Command,
    ) -> Result<T, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(command(reply))
            .await
            .map_err(|_| RequestError::Stopped)?;
        rx.await.map_err(|_| RequestError::Stopped)?
    }

    /// Dials an address ending in `/p2p/<peer id>` through the dial manager.
    pub async fn dial(&self, addr: Multiaddr) {
        let _ = self.tx.send(Command::Dial(addr)).await;
    }

    /// The fault set in force.
    pub fn faults(&self) -> Arc<Faults> {
        self.faults.borrow().1.clone()
    }

    /// Replaces the fault set (checked by the caller: `Faults::check`). Returns once the driver
    /// has applied it.
    pub async fn set_faults(&self, faults: Faults) {
        self.update_faults(|f| *f = faults).await;
    }

    /// Changes the fault set in place (e.g. one fault in a test); returns once it is applied.
    pub async fn update_faults(&self, change: impl FnOnce(&mut Faults)) {
        let mut generation = 0;
        self.faults.send_modify(|(g, current)| {
            let mut f = Faults::clone(current);
            change(&mut f);
            *current = Arc::new(f);
            *g += 1;
            generation = *g;
        });
        let mut applied = self.applied.clone();
        // An error means the driver stopped; there is nothing left to apply to.
        let _ = applied.wait_for(|g| *g >= generation).await;
    }

    /// Counts one injected fault of this kind.
    pub fn fault_injected(&self, kind: FaultKind) {
        self.ctx
            .metrics
            .faults_injected
            .get_or_create(&[("kind", kind.label())])
            .inc();
    }

    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The network emulation state, when `p2p.netem` is on.
    pub fn netem(&self) -> Option<&Arc<Netem>> {
        self.netem.as_ref()
    }

    /// The stream of peer heads and departures, for the one sync task. `None` after the first call.
    pub fn take_events(&self) -> Option<mpsc::Receiver<NetEvent>> {
        self.events.lock().expect("not poisoned").take()
    }

    /// Tells every peer with a sync stream about a new head.
    pub fn announce(&self, header: crate::chain::Header, signature: crate::chain::Sig) {
        let a = Box::new(wire::Announce { header, signature });
        let _ = self.tx.try_send(Command::Announce(a));
    }

    /// The largest frame this node sends or accepts (`p2p.max_frame_bytes`).
    pub fn max_frame(&self) -> usize {
        self.ctx.max_frame
    }

    /// Publishes an encoded block on the gossipsub topic (when gossipsub runs).
    pub fn publish_block(&self, data: Vec<u8>) {
        let _ = self.tx.try_send(Command::Publish(data));
    }

    /// The validation result for a gossiped message: only accepted ones are forwarded.
    pub fn gossip_verdict(&self, id: MessageId, source: PeerId, verdict: MessageAcceptance) {
        let _ = self
            .tx
            .try_send(Command::GossipVerdict(id, source, verdict));
    }

    /// Gossiped messages waiting for validation, for the one gossip task. `None` after the first
    /// call or without gossipsub.
    pub fn take_gossip(&self) -> Option<mpsc::Receiver<gossip::Inbound>> {
        self.gossip_in.lock().expect("not poisoned").take()
    }

    /// Drops the peer's sync stream as penalised (cooldown follows).
    pub async fn penalise(&self, peer: PeerId) {
        let _ = self.tx.send(Command::Penalise(peer)).await;
    }

    pub fn state(&self) -> NetState {
        self.state.borrow().clone()
    }

    /// Changes of the published state (e.g. the set of peers with sync streams).
    pub fn subscribe(&self) -> watch::Receiver<NetState> {
        self.state.clone()
    }

    /// Opens and accepts streams of other protocols (IDA) on this node's connections.
    pub fn stream_control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    /// Waits until `f` holds for the published state, or the timeout passes.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        f: impl Fn(&NetState) -> bool,
    ) -> Option<NetState> {
        let mut rx = self.state.clone();
        tokio::time::timeout(timeout, async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if f(&s) {
                        return s.clone();
                    }
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
        .ok()
    }

    /// Stops the p2p layer: sessions answer `Shutdown`, then everything closes.
    pub async fn shutdown(&self) {
        self.ctx.shutting_down.store(true, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}
