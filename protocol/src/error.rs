//! The one error type every codec returns.
//!
//! Each variant's `Display` is the text that goes back to the client in an ERROR reply, so it
//! is written for a person who has to fix their client: it names the field, the value and the
//! limit. Whether an error closes the connection is not a property of the error but of where the
//! codec found it (see [`crate::Decoded`]): the same bad varint is fatal in a length prefix and
//! harmless inside an intact frame.

use std::fmt;

use crate::varint::VarintError;
use crate::Protocol;

/// Everything that can be wrong with bytes on the wire, or with a message a caller asked to
/// encode.
#[derive(Debug, Clone, PartialEq)]
pub enum ProtocolError {
    /// A length prefix declared more than the configured `max_frame`.
    FrameTooLarge {
        /// The declared length.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// A binary length prefix of 0: a request body holds at least its op byte.
    EmptyFrame {
        /// The configured limit, so the message can state the valid range.
        max: usize,
    },
    /// A varint field of a binary body was truncated, too long or too large.
    Varint {
        /// Which field (`"id"`, `"arg"`).
        field: &'static str,
        /// What was wrong with it.
        error: VarintError,
    },
    /// A binary request or response body was empty where a byte was required.
    MissingByte {
        /// Which field (`"op"`, `"status"`).
        field: &'static str,
    },
    /// A binary request named an op this version does not know.
    UnknownOp(u8),
    /// A binary response carried a status byte other than OK (0) or ERROR (1).
    UnknownStatus(u8),
    /// ECHO was sent with a nonzero `arg` (reserved, must be 0).
    EchoArg(u64),
    /// GET was sent with a nonzero `arg` (reserved, must be 0).
    GetArg(u64),
    /// SLEEP or SPIN asked for more than [`crate::MAX_ARG_MICROS`] microseconds.
    ArgTooLarge {
        /// `"SLEEP"` or `"SPIN"`.
        op: &'static str,
        /// The requested duration.
        arg: u64,
    },
    /// A session op's key (the payload of INCR or GET) was empty or longer than
    /// [`crate::session::MAX_KEY`].
    KeyLength(usize),
    /// HELLO named client 0 (no session) and no record format: it would agree on nothing.
    ZeroClient,
    /// HELLO named a record format this version does not know.
    UnknownFormat(u8),
    /// RECORD was sent with a nonzero `arg` (reserved, must be 0).
    RecordArg(u64),
    /// RESP: the `*<count>` header of an array is not a number or is too large.
    InvalidMultibulkLength,
    /// RESP: a `$<len>` header is not a number, negative, or above `max_frame`.
    InvalidBulkLength,
    /// RESP: an array element did not start with `$`.
    ExpectedBulk(u8),
    /// RESP: a bulk string was not followed by CRLF.
    MissingCrlf,
    /// RESP: a header or inline command line grew past [`crate::resp::MAX_INLINE`] bytes
    /// without a line end.
    LineTooLong {
        /// `"inline request"`, `"multibulk count"` or `"bulk count"`.
        what: &'static str,
    },
    /// RESP: a whole command would need more than `max_frame` bytes of buffer.
    CommandTooLarge {
        /// The configured limit.
        max: usize,
    },
    /// RESP: a command name this server does not implement.
    UnknownCommand(String),
    /// RESP: a known command with the wrong number of arguments.
    WrongArity(&'static str),
    /// RESP: a known command with a subcommand this server does not implement
    /// (`CONFIG SET`).
    UnknownSubcommand {
        /// The command, as Redis's message names it (`"CONFIG"`).
        command: &'static str,
        /// The subcommand the client sent.
        name: String,
    },
    /// RESP (client side): a reply type other than `+`, `-` or `$`.
    UnexpectedReplyType(u8),
    /// JSON: the body is not valid JSON.
    NotJson(String),
    /// JSON: the body is JSON but not the shape the book's protocol uses.
    BadJsonShape(&'static str),
    /// JSON: an `in` method other than `ping` or `pi`.
    UnknownMethod(String),
    /// JSON: `pi` needs an integer `n` in `0..=MAX_PI_N`.
    BadPiParam,
    /// JSON: the optional `id` must be an unsigned integer (loadgen matches replies with it).
    BadId,
    /// A caller asked a codec to encode something its protocol cannot express.
    Unsupported {
        /// The codec asked.
        protocol: Protocol,
        /// What it cannot express.
        what: &'static str,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ProtocolError::*;
        match self {
            FrameTooLarge { len, max } => write!(f, "frame length {len} exceeds max_frame {max}"),
            EmptyFrame { max } => {
                write!(
                    f,
                    "frame length 0 is invalid (must be 1..={max}, max_frame {max})"
                )
            }
            Varint { field, error } => write!(f, "malformed {field}: {error}"),
            MissingByte { field } => write!(f, "malformed body: missing {field} byte"),
            UnknownOp(op) => {
                write!(
                    f,
                    "unknown op 0x{op:02x} (expected 0x01 ECHO, 0x02 SLEEP, 0x03 SPIN, 0x10 HELLO, 0x11 INCR, 0x12 GET or 0x20 RECORD)"
                )
            }
            UnknownStatus(s) => write!(
                f,
                "unknown status 0x{s:02x} (expected 0x00 OK or 0x01 ERROR)"
            ),
            EchoArg(arg) => write!(f, "ECHO takes arg 0, got {arg}"),
            GetArg(arg) => write!(f, "GET takes arg 0, got {arg}"),
            KeyLength(len) => write!(
                f,
                "key length {len} is outside 1..={}",
                crate::session::MAX_KEY
            ),
            ZeroClient => {
                f.write_str("HELLO needs a client id other than 0, or a record format, or both")
            }
            UnknownFormat(code) => write!(
                f,
                "unknown record format {code} (expected 0 positional, 1 json, 2 protobuf or 3 avro)"
            ),
            RecordArg(arg) => write!(f, "RECORD takes arg 0, got {arg}"),
            ArgTooLarge { op, arg } => write!(
                f,
                "{op} arg {arg} us exceeds the limit of {} us",
                crate::MAX_ARG_MICROS
            ),
            // The RESP texts are Redis's own, so a Redis client sees familiar errors.
            InvalidMultibulkLength => f.write_str("Protocol error: invalid multibulk length"),
            InvalidBulkLength => f.write_str("Protocol error: invalid bulk length"),
            ExpectedBulk(b) => write!(
                f,
                "Protocol error: expected '$', got '{}'",
                char::from(*b).escape_default()
            ),
            MissingCrlf => f.write_str("Protocol error: bulk string not followed by CRLF"),
            LineTooLong { what } => write!(f, "Protocol error: too big {what}"),
            CommandTooLarge { max } => {
                write!(f, "Protocol error: command larger than max_frame {max}")
            }
            UnknownCommand(name) => write!(f, "unknown command '{name}'"),
            WrongArity(cmd) => write!(f, "wrong number of arguments for '{cmd}' command"),
            UnknownSubcommand { command, name } => {
                write!(f, "unknown subcommand '{name}'. Try {command} HELP.")
            }
            UnexpectedReplyType(b) => {
                write!(
                    f,
                    "unexpected RESP reply type '{}'",
                    char::from(*b).escape_default()
                )
            }
            NotJson(why) => write!(f, "body is not valid JSON: {why}"),
            BadJsonShape(what) => write!(f, "bad request: {what}"),
            UnknownMethod(m) => write!(f, "unknown method '{m}' (expected \"ping\" or \"pi\")"),
            BadPiParam => write!(
                f,
                "pi: params must be an integer n with 0 <= n <= {}",
                crate::json::MAX_PI_N
            ),
            BadId => f.write_str("id must be an unsigned integer"),
            Unsupported { protocol, what } => {
                write!(f, "the {protocol} protocol cannot express {what}")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}
