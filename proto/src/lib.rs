//! syncnet's protocol, without I/O: the signed hash chain, the wire format, IDA coding, the
//! configuration and fault types, and every sans-IO core. The node crate drives these cores with
//! libp2p, tokio and redb; nothing here opens a socket, spawns a task, sleeps or reads the clock
//! (the cores take `now` from their caller; [`util::now_ms`] is the one wall-clock helper, for
//! header timestamps).
//!
//! # The core shape
//!
//! Every core is a plain state machine, like quinn-proto's `Connection`:
//!
//! - `handle(event, now)` feeds it one input (a peer connected, a stream is ready, a response came,
//!   a timer is due). It never blocks and never does I/O.
//! - `poll_action()` returns the next thing the driver must do (dial, open a stream, send a frame,
//!   reset, report a metric), in order, until `None`. Actions can lead to more events; the driver
//!   loops until neither side has anything left.
//! - `poll_timeout()` is the earliest instant at which the core wants `handle(Tick, now)`.
//!
//! The driver owns the sockets, channels and clocks; the core owns every decision. So the rules
//! are tested deterministically: a test builds the core, feeds events with a fake clock and
//! asserts on the actions (see each core's tests and `peers::tests`).
//!
//! Two variations, each for a reason:
//!
//! - An input that needs an answer at once takes a method that returns it instead of a variant
//!   of the event enum: `Peers::submit` returns the request's id (the driver files the caller's
//!   reply channel under it), `DialManager::request` returns the dial decision,
//!   `Assembler::on_chunk` what the chunk did, `ServerLimiter::check` whether a request may be
//!   served. The request manager's inputs are such methods too (`submit`, `on_success`,
//!   `on_failure`, ...); its actions still come from `poll_action`.
//! - Cores that only answer (the dial manager, the rate limiter, the relay's bookkeeping, the
//!   netem schedule) have no action queue and no timer of their own; the core that composes them
//!   (`peers::Peers` composes the stream, request and dial managers) or their driver polls them.
//!
//! | core | decides |
//! | --- | --- |
//! | [`streams::StreamManager`] | which peers get sync streams (low/high thresholds, discovery with cooldown, simultaneous-open tie-break, removals and penalties) |
//! | [`peers::Peers`] | connections per peer (the duplicate-connection rule, "settled" reporting), the session table and where each request goes |
//! | [`requests::RequestManager`] | pacing, retries and the choice of stream for each request |
//! | [`dial::DialManager`] | address book and dial backoff |
//! | [`downloader::Downloader`] | the batch downloader (long range) and the tip follower |
//! | [`ida::assembler::Assembler`], [`ida::relay::Relay`] | IDA chunk assembly, repair and forwarding |
//! | [`ratelimit::ServerLimiter`] | weighted per-peer and global request budgets |
//! | [`netem`] | latency, jitter, upload shaping and partitions of the network emulation |

pub mod chain;
pub mod config;
pub mod dial;
pub mod downloader;
pub mod error;
pub mod faults;
#[doc(hidden)]
pub mod fuzzing;
pub mod ida;
pub mod keys;
pub mod netem;
pub mod peers;
pub mod producer;
pub mod ratelimit;
pub mod requests;
pub mod streams;
pub mod util;
pub mod wire;

pub use chain::{Block, ChainSpec, H256, Header, Sig};
pub use error::FieldError;
pub use faults::Faults;
pub use libp2p_identity::PeerId;
pub use multiaddr::Multiaddr;
