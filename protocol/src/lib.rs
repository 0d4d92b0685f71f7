//! The echo-RPC wire protocols, as sans-IO codecs.
//!
//! echolab serves one tiny RPC (echo a payload, optionally after sleeping or spinning) over three
//! wire formats, so that the cost of the *format* can be told apart from the cost of the
//! *concurrency model*:
//!
//! - [`binary`]: echolab's own v1 — a 4-byte big-endian length, then `op | id | arg | payload`
//!   with varint integers. Compact, and the request id makes pipelined replies checkable.
//! - [`resp`]: a subset of Redis's RESP2 (`PING`, `ECHO`), so `redis-cli` and `redis-benchmark`
//!   can drive every server and a text protocol can be measured against a binary one.
//! - [`json`]: the framing of the book echolab grew from (a little-endian 4-byte length and a
//!   JSON body, `{"in": "ping", "params": ...}`), so its Python examples work unchanged.
//!
//! [`record`] is a structured record (the book's `Person`) in four formats — positional,
//! JSON, protobuf, Avro — with snappy frames: what a message's structure and compression cost.
//!
//! Binary and JSON frame messages alike, a 4-byte length and then the body, and differ only
//! in the length's byte order; both go through [`frame`], so the `max_frame` check on that
//! length, the one a hostile peer aims at, is written once.
//!
//! A server can also speak binary and RESP at once, choosing per connection from its first
//! byte ([`detect`], `--protocol auto`); JSON's first byte says nothing, so it is only ever
//! chosen explicitly.
//!
//! Nothing in this crate touches a socket. A codec turns bytes into messages and messages into
//! bytes; the caller owns the buffers and the I/O. That is why one codec serves a blocking
//! thread, a forked child, an event loop and the load generator alike: each of them reads
//! whatever the kernel has, hands the bytes to [`Codec::decode_request`] (or
//! [`Codec::decode_response`]) and gets back either a message, "need more", or an error.
//!
//! ```
//! use echolab_protocol::{Command, Decoded, Protocol, Reply, Request};
//!
//! let codec = Protocol::Binary.codec(1 << 20);
//!
//! // The client encodes a request...
//! let mut wire = Vec::new();
//! let req = Request { id: Some(7), command: Command::Echo, payload: b"hi" };
//! codec.encode_request(&req, &mut wire).unwrap();
//!
//! // ...which the server may receive in pieces: the first byte alone is not a message yet.
//! assert!(matches!(codec.decode_request(&wire[..1]), Ok(Decoded::Incomplete)));
//! let Ok(Decoded::Complete { message, len }) = codec.decode_request(&wire) else { panic!() };
//! assert_eq!((message, len), (req, wire.len()));
//!
//! // The server answers...
//! let mut reply = Vec::new();
//! codec.encode_reply(&message, Reply::Echo, &mut reply);
//!
//! // ...and the client checks the id and the payload.
//! let Ok(Decoded::Complete { message: resp, .. }) = codec.decode_response(&reply) else { panic!() };
//! assert_eq!((resp.id, resp.payload), (Some(7), &b"hi"[..]));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod binary;
pub mod buffer;
pub mod detect;
mod error;
pub mod frame;
pub mod json;
pub mod record;
pub mod resp;
pub mod session;
pub mod units;
pub mod varint;

use std::fmt;
use std::str::FromStr;

pub use buffer::ReadBuffer;
pub use detect::{ServerCodecs, ServerProtocol};
pub use error::ProtocolError;

/// The default largest frame body (or RESP bulk string) a server accepts: 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// The longest SLEEP or SPIN a request may ask for, in microseconds (one second), so one
/// request can never hold a worker for long.
pub const MAX_ARG_MICROS: u64 = 1_000_000;

/// Which wire format a codec speaks. loadgen takes it as `--protocol`; servers take a
/// [`ServerProtocol`], which adds `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// echolab's binary v1 (see [`binary`]).
    Binary,
    /// The RESP2 subset (see [`resp`]).
    Resp,
    /// The book's JSON framing (see [`json`]).
    Json,
}

impl Protocol {
    /// Every protocol, in the order the docs list them.
    pub const ALL: [Protocol; 3] = [Protocol::Binary, Protocol::Resp, Protocol::Json];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Binary => "binary",
            Protocol::Resp => "resp",
            Protocol::Json => "json",
        }
    }

    /// A codec for this protocol that rejects frames (or bulk strings) longer than `max_frame`.
    pub fn codec(self, max_frame: usize) -> Box<dyn Codec> {
        match self {
            Protocol::Binary => Box::new(binary::BinaryCodec::new(max_frame)),
            Protocol::Resp => Box::new(resp::RespCodec::new(max_frame)),
            Protocol::Json => Box::new(json::JsonCodec::new(max_frame)),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown protocol '{s}' (expected binary, resp or json)"))
    }
}

/// What a request asks the server to do. Each protocol can express a subset:
///
/// | command | binary | resp | json |
/// |---|---|---|---|
/// | `Echo` | op 0x01 | `ECHO msg` / `PING msg` | `{"in": "ping"}` |
/// | `Sleep`, `Spin` | ops 0x02, 0x03 | — | — |
/// | `Ping` (no payload, answers `PONG`) | — | `PING` | — |
/// | `ConfigGet` | — | `CONFIG GET pattern` | — |
/// | `Pi` | — | — | `{"in": "pi"}` |
/// | `Hello`, `Incr`, `Get` (sessions, see [`session`]) | ops 0x10, 0x11, 0x12 | — | — |
/// | `Record` (a structured record, see [`record`]) | op 0x20 | — | — |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Reply with the payload.
    Echo,
    /// Block the handling thread or process for this many microseconds, then echo.
    Sleep {
        /// Microseconds, at most [`MAX_ARG_MICROS`].
        micros: u32,
    },
    /// Burn CPU for this many microseconds, then echo.
    Spin {
        /// Microseconds, at most [`MAX_ARG_MICROS`].
        micros: u32,
    },
    /// RESP's bare `PING`: reply `+PONG`.
    Ping,
    /// RESP's `CONFIG GET pattern`, which `redis-benchmark` sends before every run: reply
    /// with the name/value pairs of [`resp::CONFIG`] that match the pattern (the request's
    /// payload). It goes through the server like any request, so that it is counted as one
    /// answered, not as an error; it has nothing to execute, the codec answers from its table.
    ConfigGet,
    /// The book's CPU-heavy method: approximate pi with `n` terms of a series.
    Pi {
        /// Number of terms, at most [`json::MAX_PI_N`].
        n: u64,
    },
    /// Opens the connection: a session ([`session`]), a record format ([`record`]), or
    /// both, agreed once. Replies with one of [`session::hello`]'s words. The payload is the
    /// format's schema (Avro's; empty for the others), or empty.
    Hello {
        /// The client's id, kept across reconnects; 0 opens no session (allowed only when
        /// `format` is given: a HELLO must agree on something).
        client: u64,
        /// How many sequence numbers the client has used so far (0: a brand-new client).
        sent: u64,
        /// The record format this connection's [`Command::Record`] requests will use.
        format: Option<record::Format>,
    },
    /// Add `by` to the counter named by the payload and reply with its new value, in decimal.
    /// Not idempotent: the operation that makes a retry dangerous. Within a session the
    /// request id is the client's sequence number.
    Incr {
        /// The amount to add.
        by: u64,
        /// The lowest sequence number whose reply the client still lacks: the server may
        /// forget every record below it. 0 outside a session.
        low: u64,
    },
    /// Reply with the value of the counter named by the payload (0 if it was never
    /// incremented), in decimal.
    Get,
    /// The payload is a record frame ([`record::frame`]) in the format this connection's
    /// HELLO agreed: the server decodes it, adds 1 to its number, and replies with the
    /// record encoded again.
    Record,
}

/// A decoded request. The payload borrows from the caller's buffer: decoding allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The request id: always present in binary, optional in JSON, absent in RESP (where the
    /// reply order is the only correlation).
    pub id: Option<u64>,
    /// What to do.
    pub command: Command,
    /// The bytes to echo. In JSON mode this is the raw JSON text of `params`; for
    /// [`Command::ConfigGet`], the pattern.
    pub payload: &'a [u8],
}

/// The server's answer to a successful request, handed to [`Codec::encode_reply`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reply<'a> {
    /// The answer that needs no computing: the request's payload echoed (or `PONG` for a
    /// bare RESP `PING`, or the matching settings for `CONFIG GET`).
    Echo,
    /// The result of [`Command::Pi`].
    Pi(f64),
    /// A counter's value ([`Command::Incr`], [`Command::Get`]), or a value recorded for a
    /// replayed `INCR`.
    Value(u64),
    /// A fixed word ([`session::hello`]).
    Word(&'static str),
    /// Bytes the server computed: [`Command::Record`]'s new record, framed.
    Bytes(&'a [u8]),
}

/// Whether a response reports success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The request was executed; the payload is its result.
    Ok,
    /// The request failed; the payload is a UTF-8 message.
    Error,
}

/// A decoded response, as the client sees it. The payload borrows from the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// The id of the request this answers, where the protocol carries one (binary: always,
    /// `0` when the server could not read the request's id; JSON: when the request had one).
    pub id: Option<u64>,
    /// Success or failure.
    pub status: Status,
    /// The echoed payload, or the error message. RESP: the bulk or simple string's content;
    /// JSON: the raw JSON text of `result`.
    pub payload: &'a [u8],
}

/// The outcome of offering a buffer to a decoder.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<T> {
    /// The buffer holds no complete message yet: read more and call again with everything.
    Incomplete,
    /// A complete message occupies the first `len` bytes of the buffer.
    Complete {
        /// The message, borrowing from the buffer.
        message: T,
        /// How many bytes to consume.
        len: usize,
    },
    /// A complete frame occupies the first `len` bytes but its contents are wrong. Its
    /// boundary is intact, so the connection survives: answer with an ERROR reply carrying
    /// `id` (when it could be read) and `error`, consume `len` bytes and go on.
    Invalid {
        /// The request id, if it was read before the error.
        id: Option<u64>,
        /// What was wrong.
        error: ProtocolError,
        /// How many bytes to consume.
        len: usize,
    },
}

/// One wire format, both directions. Servers use the `*_request` decode and `*_reply` encode
/// half; loadgen uses the other half. Every method is pure: bytes in, bytes or messages out.
///
/// A decoder returning `Err` means the stream itself can no longer be trusted (a length prefix
/// out of range, a RESP header that is not a number): the server sends one
/// [`Codec::encode_error`] reply and closes the connection.
pub trait Codec: Send + Sync + fmt::Debug {
    /// Which protocol this is.
    fn protocol(&self) -> Protocol;

    /// The configured largest frame (or RESP bulk string), in bytes.
    fn max_frame(&self) -> usize;

    /// Server side: the next request at the start of `buf`, if it is all there.
    fn decode_request<'a>(&self, buf: &'a [u8]) -> Result<Decoded<Request<'a>>, ProtocolError>;

    /// Server side: append the success reply to `request` to `out`.
    fn encode_reply(&self, request: &Request<'_>, reply: Reply, out: &mut Vec<u8>);

    /// Server side: append an ERROR reply to `out` (`id` is the request's, where known).
    fn encode_error(&self, id: Option<u64>, message: &str, out: &mut Vec<u8>);

    /// Client side: append `request` to `out`. Fails, writing nothing, if this protocol
    /// cannot express the command or the frame would exceed `max_frame`.
    fn encode_request(&self, request: &Request<'_>, out: &mut Vec<u8>)
        -> Result<(), ProtocolError>;

    /// Client side: the next response at the start of `buf`, if it is all there.
    fn decode_response<'a>(&self, buf: &'a [u8]) -> Result<Decoded<Response<'a>>, ProtocolError>;
}
