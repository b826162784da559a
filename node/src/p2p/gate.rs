//! `DialGate<B>` wraps a behaviour (kad, libp2p-stream) so that it can never dial on its own: its
//! `ToSwarm::Dial` requests come out as [`Gated::DialRequest`] events for the dial manager, which
//! dials (or not) under its rules. Everything else passes through unchanged.

use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};

pub struct DialGate<B> {
    pub inner: B,
}

#[derive(Debug)]
pub enum Gated<E> {
    Inner(E),
    /// The inner behaviour wanted to dial this peer.
    DialRequest(PeerId),
}

impl<B: NetworkBehaviour> NetworkBehaviour for DialGate<B> {
    type ConnectionHandler = B::ConnectionHandler;
    type ToSwarm = Gated<B::ToSwarm>;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(id, local, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner
            .handle_established_inbound_connection(id, peer, local, remote)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addrs: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner
            .handle_pending_outbound_connection(id, peer, addrs, role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner
            .handle_established_outbound_connection(id, peer, addr, role, port_use)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.inner.on_swarm_event(event)
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner.on_connection_handler_event(peer, id, event)
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        loop {
            match self.inner.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(ToSwarm::Dial { opts }) => {
                    // A dial without a peer id cannot be gated by peer; such dials are only made by
                    // the driver itself, never by the wrapped behaviours we use.
                    if let Some(peer) = opts.get_peer_id() {
                        return Poll::Ready(ToSwarm::GenerateEvent(Gated::DialRequest(peer)));
                    }
                }
                Poll::Ready(other) => return Poll::Ready(other.map_out(Gated::Inner)),
            }
        }
    }
}
