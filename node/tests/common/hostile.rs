//! A scripted hostile peer: a bare libp2p swarm with its own identity (TCP, noise, yamux and the
//! sync protocol, nothing else) that does with its streams what an attacker would. It grew out
//! of the raw client of `p2p::oversize_frame_resets_the_stream_and_penalises`.
#![allow(dead_code)]

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::{PeerId, Stream};
use syncnet_node::p2p;
use syncnet_node::wire::{self, Message, Response};

use super::net::{Net, Node};

pub struct Hostile {
    pub id: PeerId,
    pub key: Keypair,
    /// Connections open now (the swarm task's count).
    pub connections: tokio::sync::watch::Receiver<u32>,
    control: libp2p_stream::Control,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hostile {
    /// A new identity, connected to `server`.
    pub async fn connect(server: &Node) -> Hostile {
        Hostile::connect_as(Keypair::generate_ed25519(), server).await
    }

    /// An identity whose peer id sorts below (`lower`) or above the server's.
    pub async fn connect_sorting(server: &Node, lower: bool) -> Hostile {
        loop {
            let k = Keypair::generate_ed25519();
            if (k.public().to_peer_id() < server.id()) == lower {
                return Hostile::connect_as(k, server).await;
            }
        }
    }

    pub async fn connect_as(key: Keypair, server: &Node) -> Hostile {
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
            .with_tokio()
            .with_tcp(
                Default::default(),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .build();
        let id = *swarm.local_peer_id();
        let control = swarm.behaviour().new_control();
        swarm.dial(server.addr.clone()).unwrap();
        let (count_tx, connections) = tokio::sync::watch::channel(0u32);
        let task = tokio::spawn(async move {
            loop {
                match swarm.select_next_some().await {
                    libp2p::swarm::SwarmEvent::ConnectionEstablished { .. } => {
                        count_tx.send_modify(|c| *c += 1)
                    }
                    libp2p::swarm::SwarmEvent::ConnectionClosed { .. } => {
                        count_tx.send_modify(|c| *c = c.saturating_sub(1))
                    }
                    _ => {}
                }
            }
        });
        Hostile {
            id,
            key,
            connections,
            control,
            task,
        }
    }

    /// Waits until the connection is up (false after `within`).
    pub async fn connected(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, self.connections.wait_for(|c| *c > 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Opens a sync stream (no handshake yet).
    pub async fn open_raw(&mut self, server: &Node) -> Option<Stream> {
        tokio::time::timeout(
            Duration::from_secs(10),
            self.control
                .open_stream(server.id(), p2p::sync_protocol("testnet")),
        )
        .await
        .ok()?
        .ok()
    }

    /// Opens a sync stream and sends a valid handshake (never reads the server's).
    pub async fn open(&mut self, net: &Net, server: &Node) -> Option<Stream> {
        let mut s = self.open_raw(server).await?;
        s.write_all(&hello(net)).await.ok()?;
        s.flush().await.ok()?;
        Some(s)
    }
}

/// A valid handshake frame: our genesis, the genesis block as head.
pub fn hello(net: &Net) -> Vec<u8> {
    let g = net.spec.genesis();
    let msg = Message::Response {
        id: wire::ReqId::HANDSHAKE,
        resp: Response::Status(Box::new(wire::Status {
            genesis: net.spec.genesis_hash(),
            head: g.header.clone(),
            head_signature: g.signature,
            limits: wire::Limits {
                max_blocks_per_request: 1,
                max_bytes_per_response: 1,
                peer_cost_per_sec: 1,
                peer_burst: 1,
            },
        })),
    };
    wire::encode(&msg, 1 << 20).unwrap()
}

/// A request frame.
pub fn request(id: u64, req: wire::Request) -> Vec<u8> {
    wire::encode(
        &Message::Request {
            id: wire::ReqId(id),
            req,
        },
        1 << 20,
    )
    .unwrap()
}

/// Waits (bounded) until the server holds a sync stream with `peer`.
pub async fn accepted(server: &Node, peer: PeerId) {
    server
        .h
        .wait_for(Duration::from_secs(10), |st| {
            st.stream_peers.contains(&peer)
        })
        .await
        .unwrap_or_else(|| panic!("stream from {peer} not accepted: {:?}", server.h.state()));
}

/// Whether the server ends the stream within `within` (our reads reach EOF or an error).
pub async fn closed_within(s: &mut Stream, within: Duration) -> bool {
    let mut sink = vec![];
    tokio::time::timeout(within, s.read_to_end(&mut sink))
        .await
        .is_ok()
}

/// The server's sync listen address without the `/p2p/` suffix (for raw TCP).
pub fn tcp_addr(server: &Node) -> std::net::SocketAddr {
    let mut ip = None;
    let mut port = None;
    for p in server.addr.iter() {
        match p {
            libp2p::multiaddr::Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            libp2p::multiaddr::Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    std::net::SocketAddr::new(ip.unwrap(), port.unwrap())
}
