//! Entry points of the coverage-guided fuzz targets (`fuzz/`, cargo-fuzz) for every input a peer or
//! a config author controls. Each takes arbitrary bytes and must neither panic nor allocate beyond
//! what its caps allow. They live here, not in `fuzz/`, so that `tests/fuzz_corpus.rs` can replay
//! the committed corpora on the stable toolchain in every CI run. docs/security.md has the figures.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::chain::{ChainSpec, H256};
use crate::ida::assembler::{Assembler, AssemblerConfig};
use crate::ida::{Chunk, IdaMessage, IdaParams};
use crate::wire::{self, FrameDecoder, Message};

/// Frames this size at most in the targets (the node's default cap is 16 MiB; a smaller one makes
/// the fuzzer reach the cap's error path without allocating that much).
const MAX_FRAME: usize = 64 * 1024;

/// Splits `data` into the pieces a socket might deliver: the first byte picks the piece size.
fn pieces(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let (size, rest) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s).max(1), rest),
        None => (1, data),
    };
    rest.chunks(size)
}

/// The frame decoder over a byte stream cut at arbitrary points: every message it yields
/// re-encodes to a frame that decodes to the same message, and it never buffers past its cap.
pub fn wire_frames(data: &[u8]) {
    let mut dec = FrameDecoder::new(MAX_FRAME);
    for piece in pieces(data) {
        let mut piece = piece;
        // Feed no more than the decoder wants, as the sessions do.
        while !piece.is_empty() {
            let want = dec.wanted();
            if want == 0 {
                return; // poisoned: the stream would be reset
            }
            let n = want.min(piece.len());
            dec.feed(&piece[..n]);
            piece = &piece[n..];
            assert!(dec.buffered() <= 4 + MAX_FRAME);
            loop {
                match dec.next_message() {
                    Ok(Some(m)) => roundtrip(&m),
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
        }
    }
}

fn roundtrip(m: &Message) {
    let frame = wire::encode(m, MAX_FRAME).expect("a decoded message fits its own cap");
    let mut dec = FrameDecoder::new(MAX_FRAME);
    dec.feed(&frame);
    assert_eq!(dec.next_message().expect("re-decodes").as_ref(), Some(m));
}

/// One message body (no framing), as postcard reads it: decode, and re-encode what decodes.
pub fn wire_message(data: &[u8]) {
    if let Ok((m, _)) = postcard::take_from_bytes::<Message>(data) {
        roundtrip(&m);
    }
    // The zero-copy decoding of blocks replies accepts and refuses what postcard does.
    let fast = wire::decode_message(bytes::Bytes::copy_from_slice(data));
    let slow = wire::decode_with_postcard::<Message>(data);
    assert_eq!(fast.as_ref().ok(), slow.as_ref().ok());
    assert_eq!(fast.is_err(), slow.is_err());
}

struct IdaFixture {
    spec: ChainSpec,
    chunks: Vec<Chunk>,
}

/// One signed block with an IDA root (4 + 4 shards of a 4 KiB payload), made once.
fn ida_fixture() -> &'static IdaFixture {
    static F: OnceLock<IdaFixture> = OnceLock::new();
    F.get_or_init(|| {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let spec = ChainSpec::new(
            "fuzznet",
            &H256(key.verifying_key().to_bytes()),
            1_700_000_000_000,
        )
        .expect("valid");
        let params = IdaParams {
            data_shards: 4,
            parity_shards: 4,
        };
        let producer =
            crate::producer::Producer::new(key, crate::producer::PayloadSize::fixed(4096), 1);
        let genesis = spec.genesis().header.clone();
        let (block, enc) = crate::producer::produce(
            &producer,
            &genesis,
            genesis.timestamp_ms + 1000,
            Some(params),
        );
        let enc = enc.expect("ida");
        let chunks = (0..params.total())
            .map(|i| enc.chunk(&block.header, block.signature, i))
            .collect();
        IdaFixture { spec, chunks }
    })
}

/// IDA input: raw frames from a peer (decoded, chunks checked and assembled), and chunks of a real
/// block delivered in an order and with corruptions the bytes choose. What assembles must be the
/// block; what is corrupted must be refused, never assembled into something else.
pub fn ida_chunks(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let f = ida_fixture();
    let cfg = AssemblerConfig {
        max_blocks: 4,
        max_bytes: 1024 * 1024,
        max_age: Duration::from_secs(30),
        repair_after: Duration::from_secs(1),
        done_memory: 16,
    };
    let mut asm = Assembler::new(f.spec.clone(), cfg);
    let now = Instant::now();
    if mode % 2 == 0 {
        let mut dec = FrameDecoder::new(MAX_FRAME);
        for piece in pieces(rest) {
            if dec.wanted() == 0 {
                return;
            }
            dec.feed(&piece[..piece.len().min(dec.wanted())]);
            while let Ok(Some(m)) = dec.next_frame::<IdaMessage>() {
                if let IdaMessage::Chunk(c) = m {
                    let _ = c.check();
                    let _ = asm.on_chunk(*c, now);
                }
            }
        }
        return;
    }
    // Script: each pair of bytes = (chunk index, corruption).
    let want = f.chunks[0].header.clone();
    for pair in rest.chunks(2) {
        let mut c = f.chunks[usize::from(pair[0]) % f.chunks.len()].clone();
        let corrupt = pair.get(1).copied().unwrap_or(0);
        match corrupt % 8 {
            1 if !c.data.is_empty() => {
                let mut d = c.data.to_vec();
                let i = usize::from(corrupt) % d.len();
                d[i] ^= 1 | corrupt;
                c.data = d.into();
            }
            2 if !c.proof.is_empty() => {
                let i = usize::from(corrupt) % c.proof.len();
                c.proof[i].0[0] ^= 1;
            }
            3 => c.index = c.index.wrapping_add(u16::from(corrupt)),
            4 => c.shard_len = c.shard_len.wrapping_add(u32::from(corrupt)),
            5 => c.params.parity_shards = c.params.parity_shards.wrapping_add(u16::from(corrupt)),
            _ => {}
        }
        let valid = c.check().is_ok();
        if let crate::ida::assembler::Outcome::Complete(Ok(b)) = asm.on_chunk(c, now) {
            assert!(valid, "an invalid chunk completed a block");
            assert_eq!(b.header, want, "assembled something else");
        }
    }
}

/// The netem preamble as it arrives: parsed only as far as it asks, never past its end.
pub fn netem_preamble(data: &[u8]) {
    let mut buf = Vec::new();
    let mut rest = data;
    loop {
        match crate::netem::parse_preamble(&buf) {
            Ok(crate::netem::Preamble::Need(n)) => {
                assert!(n >= 1 && buf.len() + n <= 16 + 1 + 63 + 1 + 64);
                if rest.len() < n {
                    return;
                }
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
            }
            Ok(crate::netem::Preamble::Done { region, peer }) => {
                let again = crate::netem::preamble(&region, &peer);
                assert_eq!(again, buf);
                return;
            }
            Err(_) => return,
        }
    }
}

/// A node config (node.yaml) as YAML: parsed and validated without touching any file.
pub fn node_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = serde_yaml::from_str::<crate::config::NodeConfig>(text) {
        let _ = cfg.validate();
    }
}

/// The control API's `PUT /faults` body.
pub fn fault_set(data: &[u8]) {
    if let Ok(f) = crate::faults::Faults::from_json(data) {
        // What is accepted is valid and round-trips.
        let json = serde_json::to_vec(&f).expect("serialises");
        assert_eq!(
            crate::faults::Faults::from_json(&json).expect("re-reads"),
            f
        );
    }
}

/// Seed inputs for the binary targets (the text ones take the examples): one of every message
/// and frame kind, valid, so the fuzzer starts from the accepted paths.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    use crate::wire::{Announce, ErrorReply, Limits, ReqId, Request, Response, Status};
    let f = ida_fixture();
    let g = f.spec.genesis();
    let status = Status {
        genesis: f.spec.genesis_hash(),
        head: g.header.clone(),
        head_signature: g.signature,
        limits: Limits {
            max_blocks_per_request: 1024,
            max_bytes_per_response: 8 << 20,
            peer_cost_per_sec: 20_000,
            peer_burst: 4096,
        },
    };
    let block = postcard::to_allocvec(&g).expect("encodes");
    let messages = vec![
        Message::Response {
            id: ReqId::HANDSHAKE,
            resp: Response::Status(Box::new(status)),
        },
        Message::Request {
            id: ReqId(1),
            req: Request::Status,
        },
        Message::Request {
            id: ReqId(2),
            req: Request::GetBlockHashes { from: 1, count: 64 },
        },
        Message::Request {
            id: ReqId(3),
            req: Request::GetBlocksByRange {
                from: 1,
                count: 16,
                max_bytes: 1 << 20,
            },
        },
        Message::Request {
            id: ReqId(4),
            req: Request::GetBlocksByHashes {
                hashes: vec![f.spec.genesis_hash()],
            },
        },
        Message::Response {
            id: ReqId(2),
            resp: Response::BlockHashes(vec![f.spec.genesis_hash()]),
        },
        Message::Response {
            id: ReqId(3),
            resp: Response::Blocks(vec![block.into()]),
        },
        Message::Response {
            id: ReqId(5),
            resp: Response::Error(ErrorReply::RateLimited { retry_after_ms: 50 }),
        },
        Message::Announce(Box::new(Announce {
            header: g.header.clone(),
            signature: g.signature,
        })),
    ];
    let frame = |m: &Message| wire::encode(m, MAX_FRAME).expect("fits");
    match target {
        "wire_frames" => {
            let mut all = vec![7u8];
            for m in &messages {
                all.extend(frame(m));
            }
            let mut one_by_one: Vec<Vec<u8>> = messages
                .iter()
                .map(|m| [vec![255u8], frame(m)].concat())
                .collect();
            one_by_one.push(all);
            one_by_one
        }
        "wire_message" => messages
            .iter()
            .map(|m| postcard::to_allocvec(m).expect("encodes"))
            .collect(),
        "ida_chunks" => {
            let root = f.chunks[0].header.ida_root.unwrap_or_default();
            let ida = [
                IdaMessage::Chunk(Box::new(f.chunks[0].clone())),
                IdaMessage::Done { root },
                IdaMessage::Want {
                    root,
                    height: 1,
                    missing: vec![1, 2],
                },
                IdaMessage::Have { root, index: 3 },
            ];
            let mut frames = vec![0u8, 64];
            for m in &ida {
                frames.extend(wire::encode(m, MAX_FRAME).expect("fits"));
            }
            // Script: the first k chunks in order, then with every kind of corruption.
            let clean: Vec<u8> = [1u8]
                .into_iter()
                .chain((0..4u8).flat_map(|i| [i, 0]))
                .collect();
            let corrupt: Vec<u8> = [3u8]
                .into_iter()
                .chain((0..8u8).flat_map(|i| [i, i + 1]))
                .collect();
            vec![frames, clean, corrupt]
        }
        "netem_preamble" => {
            let peer = libp2p_identity::PeerId::from_public_key(
                &libp2p_identity::Keypair::ed25519_from_bytes([9u8; 32])
                    .expect("32 bytes")
                    .public(),
            );
            vec![crate::netem::preamble("eu-west", &peer)]
        }
        _ => vec![],
    }
}
