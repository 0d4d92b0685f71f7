//! echolab's binary protocol, v1: length-prefixed frames with varint fields.
//!
//! ```text
//! frame    = length:u32be  body            (1 <= length <= max_frame)
//! request  = op:u8  id:uvarint  arg:uvarint  payload:rest
//! response = status:u8  id:uvarint  payload:rest
//! ```
//!
//! HELLO's payload is `sent:uvarint`, then optionally `format:u8  schema:rest`: one message
//! opens a session, agrees a record format, or both. RECORD's payload is a record frame
//! ([`crate::record::frame`]), and so is its reply's.
//!
//! The length prefix is what makes the stream self-synchronising: a receiver reads four bytes,
//! knows exactly how many more belong to this message, and never scans the payload for a
//! delimiter (which is why binary payloads need no escaping, unlike RESP's inline form). It is
//! also the one field the receiver must distrust most: it is checked against `max_frame`
//! *before* anything is allocated or buffered for the body, so a prefix claiming 4 GiB costs
//! the server four bytes, not four gigabytes. That framing, check included, is shared with the
//! JSON protocol and lives in [`crate::frame`]; this module only says "big-endian".
//!
//! The full contract, with hex examples, is `docs/protocol.md`.

use crate::frame::{ByteOrder, LengthPrefix};
use crate::record::Format;
use crate::session::MAX_KEY;
use crate::varint::{get_uvarint, put_uvarint, uvarint_len};
use crate::{Codec, Command, Decoded, Protocol, ProtocolError, Reply, Request, Response, Status};

/// Bytes in the length prefix.
pub const HEADER_LEN: usize = crate::frame::PREFIX_LEN;

/// Op byte of ECHO.
pub const OP_ECHO: u8 = 0x01;
/// Op byte of SLEEP.
pub const OP_SLEEP: u8 = 0x02;
/// Op byte of SPIN.
pub const OP_SPIN: u8 = 0x03;
/// Op byte of HELLO: `arg` is the client id (0: no session), the payload `sent:uvarint`
/// (see [`crate::session`]), then optionally a record format's code
/// ([`crate::record::Format::code`]) and its schema.
pub const OP_HELLO: u8 = 0x10;
/// Op byte of INCR: `id` is the sequence number in a session, `arg` the amount, the payload
/// `low:uvarint` then the key.
pub const OP_INCR: u8 = 0x11;
/// Op byte of GET: `arg` is 0, the payload the key.
pub const OP_GET: u8 = 0x12;
/// Op byte of RECORD: `arg` is 0, the payload a record frame in the format the connection's
/// HELLO agreed.
pub const OP_RECORD: u8 = 0x20;

/// Status byte of a successful response.
pub const STATUS_OK: u8 = 0x00;
/// Status byte of an error response.
pub const STATUS_ERROR: u8 = 0x01;

/// The binary v1 codec.
#[derive(Debug, Clone)]
pub struct BinaryCodec {
    framing: LengthPrefix,
}

impl BinaryCodec {
    /// A codec accepting bodies of `1..=max_frame` bytes (capped at `u32::MAX`, the largest
    /// length the prefix can state).
    pub fn new(max_frame: usize) -> Self {
        BinaryCodec {
            framing: LengthPrefix::new(ByteOrder::Big, max_frame),
        }
    }

    /// Writes a response frame. Not held to `max_frame`: the callers keep success replies
    /// within it, and an error reply must go out even when the id alone is too long.
    fn put_response(&self, out: &mut Vec<u8>, status: u8, id: u64, payload: &[u8]) {
        out.reserve(HEADER_LEN + 1 + uvarint_len(id) + payload.len());
        self.framing.put_frame_unlimited(out, |out| {
            out.push(status);
            put_uvarint(out, id);
            out.extend_from_slice(payload);
        });
    }
}

/// The longest prefix of `s` that fits in `room` bytes without splitting a character, so a
/// shortened error message is still the UTF-8 the protocol promises.
fn truncate_utf8(s: &str, room: usize) -> &str {
    if s.len() <= room {
        return s;
    }
    let mut end = room;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Parses a request body that the framing already delimited. Every error here leaves the
/// stream intact, so it becomes [`Decoded::Invalid`], carrying the id once it has been read.
fn parse_request(body: &[u8]) -> Result<Request<'_>, (Option<u64>, ProtocolError)> {
    let (&op, rest) = body
        .split_first()
        .ok_or((None, ProtocolError::MissingByte { field: "op" }))?;
    let (id, n) =
        get_uvarint(rest).map_err(|error| (None, ProtocolError::Varint { field: "id", error }))?;
    let rest = &rest[n..];
    let fail = |e| (Some(id), e);
    let (arg, n) = get_uvarint(rest).map_err(|error| {
        fail(ProtocolError::Varint {
            field: "arg",
            error,
        })
    })?;
    let payload = &rest[n..];
    let micros = |op: &'static str| {
        if arg > crate::MAX_ARG_MICROS {
            Err(fail(ProtocolError::ArgTooLarge { op, arg }))
        } else {
            Ok(arg as u32)
        }
    };
    let command = match op {
        OP_ECHO if arg != 0 => return Err(fail(ProtocolError::EchoArg(arg))),
        OP_ECHO => Command::Echo,
        OP_SLEEP => Command::Sleep {
            micros: micros("SLEEP")?,
        },
        OP_SPIN => Command::Spin {
            micros: micros("SPIN")?,
        },
        OP_HELLO => {
            let (sent, n) = get_uvarint(payload).map_err(|error| {
                fail(ProtocolError::Varint {
                    field: "sent",
                    error,
                })
            })?;
            // What follows `sent`, if anything, is the record format and its schema.
            let (format, schema) = match payload[n..].split_first() {
                None => (None, &[][..]),
                Some((&code, schema)) => (
                    Some(Format::from_code(code).ok_or(fail(ProtocolError::UnknownFormat(code)))?),
                    schema,
                ),
            };
            if arg == 0 && format.is_none() {
                return Err(fail(ProtocolError::ZeroClient));
            }
            return Ok(Request {
                id: Some(id),
                command: Command::Hello {
                    client: arg,
                    sent,
                    format,
                },
                payload: schema,
            });
        }
        OP_INCR => {
            let (low, n) = get_uvarint(payload).map_err(|error| {
                fail(ProtocolError::Varint {
                    field: "low",
                    error,
                })
            })?;
            let key = key(&payload[n..]).map_err(fail)?;
            return Ok(Request {
                id: Some(id),
                command: Command::Incr { by: arg, low },
                payload: key,
            });
        }
        OP_GET if arg != 0 => return Err(fail(ProtocolError::GetArg(arg))),
        OP_GET => Command::Get,
        OP_RECORD if arg != 0 => return Err(fail(ProtocolError::RecordArg(arg))),
        OP_RECORD => Command::Record,
        other => return Err(fail(ProtocolError::UnknownOp(other))),
    };
    let payload = match command {
        Command::Get => key(payload).map_err(fail)?,
        _ => payload,
    };
    Ok(Request {
        id: Some(id),
        command,
        payload,
    })
}

/// A counter's name: 1 to [`MAX_KEY`] bytes, any bytes.
fn key(bytes: &[u8]) -> Result<&[u8], ProtocolError> {
    if (1..=MAX_KEY).contains(&bytes.len()) {
        Ok(bytes)
    } else {
        Err(ProtocolError::KeyLength(bytes.len()))
    }
}

impl Codec for BinaryCodec {
    fn protocol(&self) -> Protocol {
        Protocol::Binary
    }

    fn max_frame(&self) -> usize {
        self.framing.max_frame()
    }

    fn decode_request<'a>(&self, buf: &'a [u8]) -> Result<Decoded<Request<'a>>, ProtocolError> {
        let Some(body) = self.framing.split(buf)? else {
            return Ok(Decoded::Incomplete);
        };
        let len = HEADER_LEN + body.len();
        Ok(match parse_request(body) {
            Ok(message) => Decoded::Complete { message, len },
            Err((id, error)) => Decoded::Invalid { id, error, len },
        })
    }

    fn encode_reply(&self, request: &Request<'_>, reply: Reply, out: &mut Vec<u8>) {
        let id = request.id.unwrap_or(0);
        let text;
        let payload = match reply {
            Reply::Echo => request.payload,
            Reply::Pi(value) => {
                text = value.to_string();
                text.as_bytes()
            }
            Reply::Value(value) => {
                text = value.to_string();
                text.as_bytes()
            }
            Reply::Word(word) => word.as_bytes(),
            Reply::Bytes(bytes) => bytes,
        };
        // An echo is never longer than the request it answers (the reply's header is the
        // shorter), so this only fires for a caller's own oversized payload; the client gets
        // an error it can act on instead of a frame it would have to refuse.
        if !self.framing.fits(1 + uvarint_len(id) + payload.len()) {
            self.encode_error(Some(id), "reply would exceed max_frame", out);
        } else {
            self.put_response(out, STATUS_OK, id, payload);
        }
    }

    fn encode_error(&self, id: Option<u64>, message: &str, out: &mut Vec<u8>) {
        let id = id.unwrap_or(0);
        // Messages are short, but a tiny max_frame must still yield a valid frame.
        let room = self.framing.max_frame().saturating_sub(1 + uvarint_len(id));
        self.put_response(
            out,
            STATUS_ERROR,
            id,
            truncate_utf8(message, room).as_bytes(),
        );
    }

    fn encode_request(
        &self,
        request: &Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        // The fields a session op carries ahead of the caller's payload (at most 11 bytes).
        let mut head = Vec::new();
        let (op, arg) = match request.command {
            Command::Echo => (OP_ECHO, 0),
            Command::Sleep { micros } => (OP_SLEEP, u64::from(micros)),
            Command::Spin { micros } => (OP_SPIN, u64::from(micros)),
            Command::Hello {
                client,
                sent,
                format,
            } => {
                put_uvarint(&mut head, sent);
                match format {
                    Some(format) => head.push(format.code()),
                    // The decoder would read the payload's first byte as a format.
                    None if !request.payload.is_empty() => {
                        return Err(ProtocolError::Unsupported {
                            protocol: Protocol::Binary,
                            what: "a HELLO payload without a record format",
                        })
                    }
                    None => {}
                }
                (OP_HELLO, client)
            }
            Command::Incr { by, low } => {
                put_uvarint(&mut head, low);
                (OP_INCR, by)
            }
            Command::Get => (OP_GET, 0),
            Command::Record => (OP_RECORD, 0),
            Command::Ping => {
                return Err(ProtocolError::Unsupported {
                    protocol: Protocol::Binary,
                    what: "a bare PING",
                })
            }
            Command::Pi { .. } => {
                return Err(ProtocolError::Unsupported {
                    protocol: Protocol::Binary,
                    what: "pi",
                })
            }
            Command::ConfigGet => {
                return Err(ProtocolError::Unsupported {
                    protocol: Protocol::Binary,
                    what: "CONFIG GET",
                })
            }
        };
        let id = request.id.unwrap_or(0);
        let body_len = 1 + uvarint_len(id) + uvarint_len(arg) + head.len() + request.payload.len();
        out.reserve(HEADER_LEN + body_len);
        self.framing.put_prefix(out, body_len)?;
        out.push(op);
        put_uvarint(out, id);
        put_uvarint(out, arg);
        out.extend_from_slice(&head);
        out.extend_from_slice(request.payload);
        Ok(())
    }

    fn decode_response<'a>(&self, buf: &'a [u8]) -> Result<Decoded<Response<'a>>, ProtocolError> {
        let Some(body) = self.framing.split(buf)? else {
            return Ok(Decoded::Incomplete);
        };
        let len = HEADER_LEN + body.len();
        // The frame is non-empty, so the status byte is there.
        let (&status, rest) = body
            .split_first()
            .ok_or(ProtocolError::MissingByte { field: "status" })?;
        let status = match status {
            STATUS_OK => Status::Ok,
            STATUS_ERROR => Status::Error,
            other => {
                return Ok(Decoded::Invalid {
                    id: None,
                    error: ProtocolError::UnknownStatus(other),
                    len,
                })
            }
        };
        Ok(match get_uvarint(rest) {
            Ok((id, n)) => Decoded::Complete {
                message: Response {
                    id: Some(id),
                    status,
                    payload: &rest[n..],
                },
                len,
            },
            Err(error) => Decoded::Invalid {
                id: None,
                error: ProtocolError::Varint { field: "id", error },
                len,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 64;

    fn codec() -> BinaryCodec {
        BinaryCodec::new(MAX)
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    fn invalid(buf: &[u8]) -> (Option<u64>, String, usize) {
        match codec().decode_request(buf) {
            Ok(Decoded::Invalid { id, error, len }) => (id, error.to_string(), len),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn echo_request_decodes_with_borrowed_payload() {
        let buf = frame(&[OP_ECHO, 0x07, 0x00, b'h', b'i']);
        let Ok(Decoded::Complete { message, len }) = codec().decode_request(&buf) else {
            panic!()
        };
        assert_eq!(len, 9);
        assert_eq!(
            message,
            Request {
                id: Some(7),
                command: Command::Echo,
                payload: b"hi"
            }
        );
    }

    #[test]
    fn every_proper_prefix_is_incomplete() {
        let buf = frame(&[OP_SLEEP, 0x01, 0xE8, 0x07, b'x']);
        for end in 0..buf.len() {
            assert_eq!(
                codec().decode_request(&buf[..end]),
                Ok(Decoded::Incomplete),
                "prefix {end}"
            );
        }
    }

    #[test]
    fn zero_length_is_fatal_and_names_the_range() {
        let err = codec().decode_request(&[0, 0, 0, 0]).unwrap_err();
        assert_eq!(err, ProtocolError::EmptyFrame { max: MAX });
        assert!(err.to_string().contains("1..=64"), "{err}");
    }

    #[test]
    fn oversized_length_is_fatal_before_the_body_arrives() {
        // Only the four header bytes are present: the limit is enforced without waiting.
        let err = codec()
            .decode_request(&[0xFF, 0xFF, 0xFF, 0xFF])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "frame length 4294967295 exceeds max_frame 64"
        );
        let err = codec()
            .decode_request(&[0, 0, 0, (MAX + 1) as u8])
            .unwrap_err();
        assert_eq!(err, ProtocolError::FrameTooLarge { len: 65, max: MAX });
    }

    #[test]
    fn max_frame_itself_is_accepted() {
        let mut body = vec![OP_ECHO, 0x01, 0x00];
        body.resize(MAX, b'z');
        let buf = frame(&body);
        assert!(
            matches!(codec().decode_request(&buf), Ok(Decoded::Complete { len, .. }) if len == MAX + 4)
        );
    }

    #[test]
    fn body_errors_keep_the_connection_and_report_the_id_when_known() {
        // Unknown op: the id was readable, so the error reply carries it.
        let (id, msg, len) = invalid(&frame(&[0x09, 0x05, 0x00]));
        assert_eq!((id, len), (Some(5), 7));
        assert!(msg.contains("unknown op 0x09"), "{msg}");
        // ECHO with a nonzero arg.
        assert_eq!(
            invalid(&frame(&[OP_ECHO, 0x05, 0x01])).1,
            "ECHO takes arg 0, got 1"
        );
        // SLEEP above the limit (1_000_001 = 0xC1 0x84 0x3D).
        let (id, msg, _) = invalid(&frame(&[OP_SLEEP, 0x02, 0xC1, 0x84, 0x3D]));
        assert_eq!(id, Some(2));
        assert_eq!(msg, "SLEEP arg 1000001 us exceeds the limit of 1000000 us");
        // SPIN at exactly the limit is fine (1_000_000 = 0xC0 0x84 0x3D).
        let buf = frame(&[OP_SPIN, 0x02, 0xC0, 0x84, 0x3D]);
        assert!(matches!(
            codec().decode_request(&buf),
            Ok(Decoded::Complete {
                message: Request {
                    command: Command::Spin { micros: 1_000_000 },
                    ..
                },
                ..
            })
        ));
        // Truncated id: no id to report.
        let (id, msg, _) = invalid(&frame(&[OP_ECHO, 0x80]));
        assert_eq!(id, None);
        assert!(msg.contains("malformed id: truncated varint"), "{msg}");
        // Missing arg.
        assert!(invalid(&frame(&[OP_ECHO, 0x05]))
            .1
            .contains("malformed arg"));
        // Overlong id (11 bytes).
        let mut body = vec![OP_ECHO];
        body.extend_from_slice(&[0xFF; 10]);
        body.push(0x01);
        assert!(invalid(&frame(&body)).1.contains("longer than 10 bytes"));
        // id above u64::MAX.
        let mut body = vec![OP_ECHO];
        body.extend_from_slice(&[0xFF; 9]);
        body.push(0x02);
        assert!(invalid(&frame(&body)).1.contains("exceeds u64::MAX"));
    }

    #[test]
    fn error_reply_uses_id_zero_when_unknown() {
        let mut out = Vec::new();
        codec().encode_error(None, "bad", &mut out);
        assert_eq!(out, [0, 0, 0, 5, STATUS_ERROR, 0x00, b'b', b'a', b'd']);
    }

    #[test]
    fn client_refuses_to_encode_an_oversized_request() {
        let payload = [0u8; MAX];
        let mut out = Vec::new();
        let req = Request {
            id: Some(1),
            command: Command::Echo,
            payload: &payload,
        };
        assert!(matches!(
            codec().encode_request(&req, &mut out),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn regression_error_reply_with_tiny_max_frame_does_not_underflow() {
        // Found by property testing: status + a 10-byte id alone exceed max_frame 4.
        let mut out = Vec::new();
        BinaryCodec::new(4).encode_error(Some(u64::MAX), "", &mut out);
        assert_eq!(out.len(), HEADER_LEN + 11);
    }

    #[test]
    fn regression_shortened_error_message_stays_utf8() {
        // Found by property testing: cutting at a byte count split the "é".
        let c = BinaryCodec::new(8);
        let mut out = Vec::new();
        c.encode_error(Some(1), "abcdeéxyz", &mut out);
        let Ok(Decoded::Complete { message, .. }) = c.decode_response(&out) else {
            panic!()
        };
        assert_eq!(message.payload, b"abcde");
        assert!(std::str::from_utf8(message.payload).is_ok());
    }

    #[test]
    fn unknown_status_in_a_response_is_invalid_not_fatal() {
        let buf = frame(&[0x07, 0x01]);
        assert!(matches!(
            codec().decode_response(&buf),
            Ok(Decoded::Invalid { len: 6, .. })
        ));
    }

    #[test]
    fn hello_agrees_a_format_with_or_without_a_session() {
        let c = BinaryCodec::new(1024);
        for (client, format, schema) in [
            (0, Format::Avro, &b"{}"[..]),
            (9, Format::Protobuf, &b""[..]),
            (0, Format::Positional, &b""[..]),
        ] {
            let req = Request {
                id: Some(0),
                command: Command::Hello {
                    client,
                    sent: 0,
                    format: Some(format),
                },
                payload: schema,
            };
            let mut wire = Vec::new();
            c.encode_request(&req, &mut wire).expect("encodes");
            let Ok(Decoded::Complete { message, len }) = c.decode_request(&wire) else {
                panic!("{req:?} did not decode");
            };
            assert_eq!((message, len), (req, wire.len()));
        }
    }

    #[test]
    fn a_hello_payload_needs_a_format() {
        let req = Request {
            id: Some(0),
            command: Command::Hello {
                client: 9,
                sent: 0,
                format: None,
            },
            payload: b"schema",
        };
        assert!(BinaryCodec::new(1024)
            .encode_request(&req, &mut Vec::new())
            .is_err());
    }

    #[test]
    fn record_carries_its_frame_and_takes_no_arg() {
        let c = BinaryCodec::new(1024);
        let req = Request {
            id: Some(5),
            command: Command::Record,
            payload: &[0, 1, 2, 3],
        };
        let mut wire = Vec::new();
        c.encode_request(&req, &mut wire).expect("encodes");
        assert_eq!(wire, [0, 0, 0, 7, OP_RECORD, 5, 0, 0, 1, 2, 3]);
        assert!(matches!(
            c.decode_request(&wire),
            Ok(Decoded::Complete { message, .. }) if message == req
        ));
        assert_eq!(
            invalid(&frame(&[OP_RECORD, 0x05, 0x02, 0x00])),
            (Some(5), "RECORD takes arg 0, got 2".to_string(), 8)
        );
        // The reply carries the server's bytes as its payload.
        let mut out = Vec::new();
        c.encode_reply(&req, Reply::Bytes(b"new"), &mut out);
        assert_eq!(out, [0, 0, 0, 5, STATUS_OK, 5, b'n', b'e', b'w']);
    }

    #[test]
    fn session_ops_reject_bad_fields_but_keep_the_connection() {
        // HELLO with client 0.
        let (id, msg, _) = invalid(&frame(&[OP_HELLO, 0x03, 0x00, 0x00]));
        assert_eq!(
            (id, msg.as_str()),
            (
                Some(3),
                "HELLO needs a client id other than 0, or a record format, or both"
            )
        );
        // HELLO whose byte after `sent` names no format.
        assert_eq!(
            invalid(&frame(&[OP_HELLO, 0x03, 0x07, 0x00, b'x'])).1,
            "unknown record format 120 (expected 0 positional, 1 json, 2 protobuf or 3 avro)"
        );
        // HELLO without `sent`.
        assert!(invalid(&frame(&[OP_HELLO, 0x03, 0x07]))
            .1
            .contains("malformed sent"));
        // INCR without a key, and with one too long.
        assert_eq!(
            invalid(&frame(&[OP_INCR, 0x01, 0x01, 0x01])).1,
            "key length 0 is outside 1..=64"
        );
        let mut body = vec![OP_INCR, 0x01, 0x01, 0x01];
        body.extend_from_slice(&[b'k'; MAX_KEY + 1]);
        let buf = frame(&body);
        let c = BinaryCodec::new(1024).decode_request(&buf);
        assert!(
            matches!(
                c,
                Ok(Decoded::Invalid {
                    error: ProtocolError::KeyLength(65),
                    ..
                })
            ),
            "{c:?}"
        );
        // GET with a nonzero arg, and without a key.
        assert_eq!(
            invalid(&frame(&[OP_GET, 0x01, 0x01, b'k'])).1,
            "GET takes arg 0, got 1"
        );
        assert!(invalid(&frame(&[OP_GET, 0x01, 0x00]))
            .1
            .contains("key length 0"));
    }
}
