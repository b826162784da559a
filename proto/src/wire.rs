//! Sync wire protocol: messages and the length-prefixed frame codec.
//!
//! Frame = u32 little-endian length + postcard-encoded [`Message`]. postcard because its wire format is
//! specified and stable at 1.x, it is compact (varints), needs no schema compiler (prost) and reuses the
//! serde derives the store already uses; blocks travel as the exact bytes the store holds.
//!
//! The decoder is sans-IO: feed it bytes, pull messages. It checks a frame's length against the cap
//! before buffering the body, so a hostile peer cannot make it allocate more than `max_frame` bytes.

use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::chain::{H256, Header, Sig};

/// Default cap on one frame (16 MiB): one GetBlocksByRange reply, with its byte cap, fits.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;
/// Most hashes one GetBlockHashes or GetBlocksByHashes may ask for.
pub const MAX_HASHES_PER_REQUEST: u32 = 4096;

/// A request's id on one stream, echoed by its response. The id space is split so that a response
/// finds the table it belongs to without a lookup in each: [`ReqId::HANDSHAKE`] is the status
/// each side sends first, ids from [`ReqId::FIRST_MANAGED`] are the request manager's, and ids
/// from [`ReqId::FIRST_DIRECT`] (2^62) are unmanaged requests sent straight onto a stream. A
/// node makes well under 2^62 managed requests in its life, so the ranges never meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReqId(pub u64);

impl ReqId {
    pub const HANDSHAKE: ReqId = ReqId(0);
    pub const FIRST_MANAGED: ReqId = ReqId(1);
    pub const FIRST_DIRECT: ReqId = ReqId(1 << 62);

    /// Unmanaged (`request_direct`): its reply goes to the caller, not to the request manager.
    pub fn is_direct(self) -> bool {
        self >= Self::FIRST_DIRECT
    }

    pub fn next(self) -> ReqId {
        ReqId(self.0 + 1)
    }
}

impl std::fmt::Display for ReqId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Request {
        id: ReqId,
        req: Request,
    },
    Response {
        id: ReqId,
        resp: Response,
    },
    /// One-way: the sender has a new head (header + producer signature). Receivers check the
    /// signature before believing it.
    Announce(Box<Announce>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    pub header: Header,
    pub signature: Sig,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Status,
    GetBlockHashes {
        from: u64,
        count: u32,
    },
    GetBlocksByRange {
        from: u64,
        count: u32,
        max_bytes: u32,
    },
    GetBlocksByHashes {
        hashes: Vec<H256>,
    },
}

impl Request {
    /// Closed set of label values for metrics.
    pub fn kind(&self) -> RequestKind {
        match self {
            Request::Status => RequestKind::Status,
            Request::GetBlockHashes { .. } => RequestKind::BlockHashes,
            Request::GetBlocksByRange { .. } => RequestKind::BlocksByRange,
            Request::GetBlocksByHashes { .. } => RequestKind::BlocksByHashes,
        }
    }

    /// Cost for rate limiting: roughly proportional to the work the server does.
    pub fn cost(&self) -> u32 {
        match self {
            // Cheap to answer but no work to the asker either: a client needs one per stream
            // and per head change, so 64 leaves a polite peer unaffected and a flood limited.
            Request::Status => 64,
            Request::GetBlockHashes { count, .. } => 1 + count / 256,
            Request::GetBlocksByRange { count, .. } => 1 + *count,
            Request::GetBlocksByHashes { hashes } => 1 + hashes.len() as u32,
        }
    }
}

/// A request's kind: the one `kind` label of the client's (`sync_requests_total`,
/// `sync_request_duration_seconds`) and the server's (`sync_served_total`) request metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestKind {
    Status,
    BlockHashes,
    BlocksByRange,
    BlocksByHashes,
}

impl RequestKind {
    pub const ALL: [RequestKind; 4] = [
        RequestKind::Status,
        RequestKind::BlockHashes,
        RequestKind::BlocksByRange,
        RequestKind::BlocksByHashes,
    ];

    /// Closed set of label values for metrics.
    pub fn label(self) -> &'static str {
        match self {
            RequestKind::Status => "status",
            RequestKind::BlockHashes => "block_hashes",
            RequestKind::BlocksByRange => "blocks_by_range",
            RequestKind::BlocksByHashes => "blocks_by_hashes",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Boxed: a status is ~10x larger than the other variants.
    Status(Box<Status>),
    BlockHashes(Vec<H256>),
    /// Each entry is one postcard-encoded `Block`, as stored.
    Blocks(Vec<Bytes>),
    Error(ErrorReply),
}

/// A node's view of its chain, with the head's producer signature so it can be checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub genesis: H256,
    pub head: Header,
    pub head_signature: Sig,
    pub limits: Limits,
}

/// What the server will serve, so clients can pace themselves instead of being refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_blocks_per_request: u32,
    pub max_bytes_per_response: u32,
    /// Sustained cost units per second granted to one peer (see [`Request::cost`]).
    pub peer_cost_per_sec: u32,
    pub peer_burst: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ErrorReply {
    #[error("rate limited, retry after {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u32 },
    #[error("request too large")]
    TooLarge,
    #[error("not found")]
    NotFound,
    #[error("invalid request")]
    Invalid,
    #[error("peer is shutting down")]
    Shutdown,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {len} bytes exceeds the cap of {max}")]
    Oversize { len: usize, max: usize },
    #[error("undecodable frame: {0}")]
    Decode(#[from] postcard::Error),
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    #[error("decoder is unusable after an earlier error")]
    Poisoned,
}

/// Encodes `msg` as one frame. Fails (without sending anything) if it would exceed `max_frame`.
pub fn encode<T: Serialize>(msg: &T, max_frame: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = postcard::to_extend(msg, vec![0u8; 4])?;
    let len = out.len() - 4;
    set_frame_len(&mut out, len, max_frame)?;
    Ok(out)
}

/// Writes the frame length `len` into the first 4 bytes of `frame`, if within `max_frame`.
fn set_frame_len(frame: &mut [u8], len: usize, max_frame: usize) -> Result<(), CodecError> {
    if len > max_frame {
        return Err(CodecError::Oversize {
            len,
            max: max_frame,
        });
    }
    frame[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// postcard's variant index of `Message::Response` and of `Response::Blocks`: a blocks reply
/// built from stored records ([`blocks_reply_head`]) and its zero-copy decoding rely on them, and
/// a test holds both to what postcard writes.
const MESSAGE_RESPONSE: u32 = 1;
const RESPONSE_BLOCKS: u32 = 2;

/// Appends `n` as postcard writes a length (LEB128): the prefix of each block in a blocks reply
/// and of each record in the store's segments.
pub fn put_len(out: &mut Vec<u8>, n: usize) {
    let mut buf = [0u8; 10];
    let used = postcard::to_slice(&n, &mut buf).expect("a usize fits in 10 bytes");
    out.extend_from_slice(used);
}

/// Reads a length written by [`put_len`] (postcard's own decoding): the length and the rest.
pub fn take_len(b: &[u8]) -> Result<(usize, &[u8]), postcard::Error> {
    postcard::take_from_bytes::<usize>(b)
}

/// The start of a `Response::Blocks` frame, up to its first block: the frame length, the message
/// and response tags, `id`, and the block count. `records_len` bytes follow: each block's encoding
/// prefixed by [`put_len`], which is how the store keeps them, so a reply is this head plus one
/// read of stored bytes, with no decoding or re-encoding. The result is the frame
/// `encode(&Message::Response { id, resp: Response::Blocks(blocks) })` would give.
pub fn blocks_reply_head(
    id: ReqId,
    count: usize,
    records_len: usize,
    max_frame: usize,
) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(4 + 32);
    out.extend_from_slice(&[0; 4]);
    out = postcard::to_extend(&(MESSAGE_RESPONSE, id.0, RESPONSE_BLOCKS), out)?;
    put_len(&mut out, count);
    let len = out.len() - 4 + records_len;
    set_frame_len(&mut out, len, max_frame)?;
    Ok(out)
}

/// Decodes one frame body. A blocks reply (nearly all the bytes sync moves) is decoded by hand so
/// that each block is a slice of the frame, not a copy; everything else goes through postcard.
/// Both paths accept and refuse exactly the same bodies (a fuzz target checks it).
pub fn decode_message(body: Bytes) -> Result<Message, CodecError> {
    if let Some(r) = decode_blocks_reply(&body) {
        return r;
    }
    decode_with_postcard(&body)
}

/// postcard's decoding of a whole body: no trailing bytes.
pub fn decode_with_postcard<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((msg, [])) => Ok(msg),
        Ok((_, rest)) => Err(CodecError::Trailing(rest.len())),
        Err(e) => Err(e.into()),
    }
}

/// `None` if `body` does not start like a blocks reply; otherwise what postcard would say.
fn decode_blocks_reply(body: &Bytes) -> Option<Result<Message, CodecError>> {
    let ((tag, id, resp), rest) = postcard::take_from_bytes::<(u32, u64, u32)>(body).ok()?;
    if tag != MESSAGE_RESPONSE || resp != RESPONSE_BLOCKS {
        return None;
    }
    let parse = || -> Result<Message, CodecError> {
        let (count, mut rest) = take_len(rest)?;
        // Not `with_capacity(count)`: the count is the peer's claim.
        let mut blocks = Vec::new();
        for _ in 0..count {
            let (len, tail) = take_len(rest)?;
            if tail.len() < len {
                return Err(postcard::Error::DeserializeUnexpectedEnd.into());
            }
            let start = body.len() - tail.len();
            blocks.push(body.slice(start..start + len));
            rest = &tail[len..];
        }
        if !rest.is_empty() {
            return Err(CodecError::Trailing(rest.len()));
        }
        Ok(Message::Response {
            id: ReqId(id),
            resp: Response::Blocks(blocks),
        })
    };
    Some(parse())
}

/// Incremental frame decoder.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame: usize,
    poisoned: bool,
}

impl FrameDecoder {
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder {
            buf: BytesMut::new(),
            max_frame,
            poisoned: false,
        }
    }

    /// How many more bytes the decoder wants before it can make progress. The driver reads at most
    /// this (bounded by its chunk size), so the buffer never exceeds `4 + max_frame`.
    /// Zero once the decoder is poisoned: stop reading and reset the stream.
    pub fn wanted(&self) -> usize {
        if self.poisoned {
            return 0;
        }
        if self.buf.len() < 4 {
            return 4 - self.buf.len();
        }
        let len = u32::from_le_bytes(self.buf[..4].try_into().unwrap()) as usize;
        (4 + len).saturating_sub(self.buf.len()).max(1)
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The length the current frame's prefix declares, once its 4 bytes are in.
    pub fn declared_len(&self) -> Option<usize> {
        (self.buf.len() >= 4)
            .then(|| u32::from_le_bytes(self.buf[..4].try_into().unwrap()) as usize)
    }

    /// Changes the frame cap (e.g. from the small handshake cap to the stream's).
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    pub fn feed(&mut self, data: &[u8]) {
        // Once a frame's length is known (and within the cap), make room for all of it at once:
        // growing by doubling would copy a 4 MiB reply several times over.
        if let Some(len) = self.declared_len().filter(|l| *l <= self.max_frame) {
            self.buf.reserve((4 + len).saturating_sub(self.buf.len()));
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete message, `Ok(None)` if more bytes are needed. After an error the stream
    /// must be reset: every later call returns `Poisoned`.
    pub fn next_message(&mut self) -> Result<Option<Message>, CodecError> {
        let Some(body) = self.next_body()? else {
            return Ok(None);
        };
        let r = decode_message(body.freeze());
        self.poisoned = r.is_err();
        r.map(Some)
    }

    /// Like `next_message`, for another protocol's message type (the IDA stream).
    pub fn next_frame<T: serde::de::DeserializeOwned>(&mut self) -> Result<Option<T>, CodecError> {
        let Some(body) = self.next_body()? else {
            return Ok(None);
        };
        let r = decode_with_postcard(&body);
        self.poisoned = r.is_err();
        r.map(Some)
    }

    /// The next complete frame's body, checked against the cap.
    fn next_body(&mut self) -> Result<Option<BytesMut>, CodecError> {
        if self.poisoned {
            return Err(CodecError::Poisoned);
        }
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes(self.buf[..4].try_into().unwrap()) as usize;
        if len > self.max_frame {
            self.poisoned = true;
            return Err(CodecError::Oversize {
                len,
                max: self.max_frame,
            });
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        self.buf.advance(4);
        Ok(Some(self.buf.split_to(len)))
    }
}

impl ErrorReply {
    /// One of each kind (the labels' closed set; `retry_after_ms` is not part of the label).
    pub const ALL: [ErrorReply; 5] = [
        ErrorReply::RateLimited { retry_after_ms: 0 },
        ErrorReply::TooLarge,
        ErrorReply::NotFound,
        ErrorReply::Invalid,
        ErrorReply::Shutdown,
    ];

    /// Closed set of label values for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ErrorReply::RateLimited { .. } => "rate_limited",
            ErrorReply::TooLarge => "too_large",
            ErrorReply::NotFound => "not_found",
            ErrorReply::Invalid => "invalid",
            ErrorReply::Shutdown => "shutdown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<Message> {
        vec![
            Message::Request {
                id: ReqId(1),
                req: Request::GetBlocksByRange {
                    from: 10,
                    count: 64,
                    max_bytes: 1 << 20,
                },
            },
            Message::Response {
                id: ReqId(1),
                resp: Response::Blocks(vec![Bytes::from_static(b"abc"), Bytes::new()]),
            },
            Message::Response {
                id: ReqId(u64::MAX),
                resp: Response::Error(ErrorReply::RateLimited {
                    retry_after_ms: 250,
                }),
            },
            Message::Request {
                id: ReqId(7),
                req: Request::GetBlocksByHashes {
                    hashes: vec![H256([3; 32]); 3],
                },
            },
        ]
    }

    #[test]
    fn frames_roundtrip_when_fed_byte_by_byte() {
        let msgs = sample();
        let bytes: Vec<u8> = msgs.iter().flat_map(|m| encode(m, 1024).unwrap()).collect();
        let mut d = FrameDecoder::new(1024);
        let mut out = vec![];
        for b in bytes {
            assert!(d.wanted() >= 1);
            d.feed(&[b]);
            while let Some(m) = d.next_message().unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, msgs);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn oversize_length_is_rejected_before_buffering_the_body() {
        let mut d = FrameDecoder::new(1024);
        d.feed(&(1025u32).to_le_bytes());
        assert!(matches!(
            d.next_message(),
            Err(CodecError::Oversize {
                len: 1025,
                max: 1024
            })
        ));
        assert!(matches!(d.next_message(), Err(CodecError::Poisoned)));
        assert_eq!(d.wanted(), 0);
    }

    #[test]
    fn encoder_refuses_oversize_messages() {
        let big = Message::Response {
            id: ReqId(0),
            resp: Response::Blocks(vec![Bytes::from(vec![0u8; 2000])]),
        };
        assert!(matches!(
            encode(&big, 1024),
            Err(CodecError::Oversize { .. })
        ));
    }

    #[test]
    fn garbage_and_trailing_bytes_are_errors() {
        let mut d = FrameDecoder::new(1024);
        d.feed(&[3, 0, 0, 0, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next_message(), Err(CodecError::Decode(_))));

        let mut frame = encode(&sample()[0], 1024).unwrap();
        frame.push(0);
        let len = (frame.len() - 4) as u32;
        frame[..4].copy_from_slice(&len.to_le_bytes());
        let mut d = FrameDecoder::new(1024);
        d.feed(&frame);
        assert!(matches!(d.next_message(), Err(CodecError::Trailing(1))));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Fuzz: arbitrary bytes in arbitrary chunks never panic and never buffer past the cap.
        #[test]
        fn decoder_survives_arbitrary_input(data in proptest::collection::vec(any::<u8>(), 0..4096),
                                            chunk in 1usize..64) {
            let mut d = FrameDecoder::new(512);
            'outer: for c in data.chunks(chunk) {
                d.feed(c);
                loop {
                    match d.next_message() {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => break 'outer,
                    }
                }
                prop_assert!(d.buffered() < 4 + 512);
            }
        }

        /// A reply built from records (the serving fast path) is the frame `encode` gives.
        #[test]
        fn blocks_reply_from_records_is_the_encoded_frame(
            id in any::<u64>(),
            blocks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
        ) {
            let mut records = Vec::new();
            for b in &blocks {
                put_len(&mut records, b.len());
                records.extend_from_slice(b);
            }
            let mut frame = blocks_reply_head(ReqId(id), blocks.len(), records.len(), 1 << 20).unwrap();
            frame.extend_from_slice(&records);
            let m = Message::Response {
                id: ReqId(id),
                resp: Response::Blocks(blocks.into_iter().map(Bytes::from).collect()),
            };
            prop_assert_eq!(&frame, &encode(&m, 1 << 20).unwrap());
            let mut d = FrameDecoder::new(1 << 20);
            d.feed(&frame);
            prop_assert_eq!(d.next_message().unwrap(), Some(m));
        }

        /// The zero-copy decoding of blocks replies agrees with postcard on any body that starts
        /// like one, valid or not.
        #[test]
        fn blocks_reply_decoding_agrees_with_postcard(
            id in any::<u64>(),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut body = postcard::to_stdvec(&(MESSAGE_RESPONSE, id, RESPONSE_BLOCKS)).unwrap();
            body.extend_from_slice(&tail);
            let fast = decode_message(Bytes::from(body.clone()));
            let slow = decode_with_postcard::<Message>(&body);
            prop_assert_eq!(fast.as_ref().ok(), slow.as_ref().ok());
            prop_assert_eq!(fast.is_err(), slow.is_err());
        }

        #[test]
        fn any_request_roundtrips(id in any::<u64>(), from in any::<u64>(), count in any::<u32>(),
                                  max_bytes in any::<u32>()) {
            let m = Message::Request { id: ReqId(id), req: Request::GetBlocksByRange { from, count, max_bytes } };
            let f = encode(&m, 64).unwrap();
            let mut d = FrameDecoder::new(64);
            d.feed(&f);
            prop_assert_eq!(d.next_message().unwrap(), Some(m));
        }
    }
}
