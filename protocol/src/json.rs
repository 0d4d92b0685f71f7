//! The book's JSON protocol: a 4-byte length in *native* byte order, then a JSON body.
//!
//! The book's Python client and server frame messages with `struct.pack("I", len(body))`.
//! `"I"` without a byte-order prefix means the machine's native order, which is little-endian
//! on every machine the book's readers have (x86 and ARM), so on the wire the length is
//! **little-endian** — the opposite of the binary protocol's network order. echolab keeps that
//! quirk so the book's clients work unchanged, and documents it rather than fixing it. The
//! byte order is the only difference: the framing and its `max_frame` check are the binary
//! protocol's, shared through [`crate::frame`].
//!
//! ```text
//! request:  {"in": "ping", "params": <any JSON>}   ->  {"out": "pong", "result": <params>}
//!           {"in": "pi",   "params": n}            ->  {"out": "pi_r", "result": <float>}
//! ```
//!
//! What the book lacks, added compatibly: an optional `"id"` (an unsigned integer) is copied to
//! the response so pipelined replies can be checked; an unknown method gets
//! `{"out": "error", "result": "<message>"}` and the connection stays open; a body that is not
//! JSON gets the same error shape and the connection is closed.
//!
//! `params` is echoed as the exact bytes the client sent (serde_json's `RawValue`), not parsed
//! and re-serialised: that would cost an allocation per value and could change the text
//! (`1.0` vs `1`), which the load generator would report as a mismatch.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::frame::{ByteOrder, LengthPrefix};
use crate::{Codec, Command, Decoded, Protocol, ProtocolError, Reply, Request, Response, Status};

/// Bytes in the length prefix.
pub const HEADER_LEN: usize = crate::frame::PREFIX_LEN;

/// The largest `n` that `pi` accepts. Each term costs a few nanoseconds, so this bounds one
/// request to well under a second (measured in `docs/protocol.md`).
pub const MAX_PI_N: u64 = 50_000_000;

/// The book's `pi` method: sqrt(8 * sum over i in 0..n of 1/(2i+1)^2), which tends to pi.
///
/// ```
/// let p = echolab_protocol::json::pi(1_000_000);
/// assert!((p - std::f64::consts::PI).abs() < 1e-6);
/// ```
pub fn pi(n: u64) -> f64 {
    // A fold from +0.0 rather than `sum()`: an empty f64 sum is -0.0 (the IEEE additive
    // identity), and `pi(0)` would be sent as "-0.0".
    let sum = (0..n).fold(0.0f64, |acc, i| {
        let odd = (2 * i + 1) as f64;
        acc + 1.0 / (odd * odd)
    });
    (8.0 * sum).sqrt()
}

/// The JSON codec.
#[derive(Debug, Clone)]
pub struct JsonCodec {
    framing: LengthPrefix,
}

/// A request body, borrowing from the input. `in` is a `Cow` because a string with escapes
/// cannot be borrowed; in practice method names have none.
#[derive(Deserialize)]
struct JsonRequest<'a> {
    #[serde(rename = "in", borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct JsonResponse<'a> {
    #[serde(borrow)]
    out: Cow<'a, str>,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    id: Option<u64>,
}

/// Whether a serde_json failure means "not JSON at all" (the stream is suspect: close) or
/// "JSON of the wrong shape" (a client mistake inside an intact frame: reply and go on).
fn classify(e: serde_json::Error) -> Result<ProtocolError, ProtocolError> {
    match e.classify() {
        serde_json::error::Category::Data => Ok(ProtocolError::BadJsonShape(
            "body must be an object like {\"in\": \"ping\", \"params\": ...}",
        )),
        _ => Err(ProtocolError::NotJson(e.to_string())),
    }
}

impl JsonCodec {
    /// A codec accepting bodies of `1..=max_frame` bytes (capped at `u32::MAX`).
    pub fn new(max_frame: usize) -> Self {
        JsonCodec {
            framing: LengthPrefix::new(ByteOrder::Little, max_frame),
        }
    }

    fn put_response(
        &self,
        out: &mut Vec<u8>,
        kind: &str,
        result: impl FnOnce(&mut Vec<u8>),
        id: Option<u64>,
    ) {
        let envelope = |out: &mut Vec<u8>, kind: &str, result: &mut dyn FnMut(&mut Vec<u8>)| {
            out.extend_from_slice(b"{\"out\":\"");
            out.extend_from_slice(kind.as_bytes());
            out.extend_from_slice(b"\",\"result\":");
            result(out);
            put_id(out, id);
            out.push(b'}');
        };
        let mut result = Some(result);
        let framed = self.framing.put_frame(out, |out| {
            envelope(out, kind, &mut |out| {
                if let Some(f) = result.take() {
                    f(out)
                }
            })
        });
        // Only an echo of a near-max_frame params can overflow (the reply's envelope is longer
        // than the request's), or an absurdly small --max-frame. Say so, in a short fixed
        // message sent even if it is itself over the limit: a reply must go out either way.
        if let Err(e) = framed {
            let message = e.to_string();
            self.framing.put_frame_unlimited(out, |out| {
                envelope(out, "error", &mut |out| put_string(out, &message))
            });
        }
    }
}

fn put_id(out: &mut Vec<u8>, id: Option<u64>) {
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes quotes, backslashes and control characters; writing to a Vec
    // cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn parse_request(body: &[u8]) -> Result<Request<'_>, (Option<u64>, ProtocolError)> {
    let req: JsonRequest<'_> =
        serde_json::from_slice(body).map_err(|e| (None, classify(e).unwrap_or_else(|e| e)))?;
    let id = match req.id {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => {
            Some(serde_json::from_str::<u64>(raw.get()).map_err(|_| (None, ProtocolError::BadId))?)
        }
    };
    let fail = |e| (id, e);
    let method = req
        .method
        .ok_or_else(|| fail(ProtocolError::BadJsonShape("missing \"in\"")))?;
    let payload = req.params.map_or(&b"null"[..], |raw| raw.get().as_bytes());
    let command = match &*method {
        "ping" => Command::Echo,
        "pi" => {
            let n = serde_json::from_slice::<u64>(payload)
                .map_err(|_| fail(ProtocolError::BadPiParam))?;
            if n > MAX_PI_N {
                return Err(fail(ProtocolError::BadPiParam));
            }
            Command::Pi { n }
        }
        other => return Err(fail(ProtocolError::UnknownMethod(other.to_owned()))),
    };
    Ok(Request {
        id,
        command,
        payload,
    })
}

impl Codec for JsonCodec {
    fn protocol(&self) -> Protocol {
        Protocol::Json
    }

    fn max_frame(&self) -> usize {
        self.framing.max_frame()
    }

    fn decode_request<'a>(&self, buf: &'a [u8]) -> Result<Decoded<Request<'a>>, ProtocolError> {
        let Some(body) = self.framing.split(buf)? else {
            return Ok(Decoded::Incomplete);
        };
        let len = HEADER_LEN + body.len();
        match parse_request(body) {
            Ok(message) => Ok(Decoded::Complete { message, len }),
            // Not JSON at all: the client is not speaking this protocol, so stop listening.
            Err((_, error @ ProtocolError::NotJson(_))) => Err(error),
            Err((id, error)) => Ok(Decoded::Invalid { id, error, len }),
        }
    }

    fn encode_reply(&self, request: &Request<'_>, reply: Reply, out: &mut Vec<u8>) {
        match reply {
            Reply::Echo => self.put_response(
                out,
                "pong",
                |out| out.extend_from_slice(request.payload),
                request.id,
            ),
            Reply::Pi(value) => self.put_response(
                out,
                "pi_r",
                |out| {
                    let _ = serde_json::to_writer(&mut *out, &value);
                },
                request.id,
            ),
            // Sessions are binary-only (JSON has no request to produce these), but a reply
            // must still be well-formed JSON.
            Reply::Value(value) => self.put_response(
                out,
                "value",
                |out| out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes()),
                request.id,
            ),
            Reply::Word(word) => {
                self.put_response(out, "word", |out| put_string(out, word), request.id)
            }
            // Records are binary-only: JSON has no request that produces bytes, and its
            // `result` is JSON text, which raw bytes are not.
            Reply::Bytes(_) => self.encode_error(request.id, "records are binary-only", out),
        }
    }

    fn encode_error(&self, id: Option<u64>, message: &str, out: &mut Vec<u8>) {
        self.put_response(out, "error", |out| put_string(out, message), id);
    }

    fn encode_request(
        &self,
        request: &Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        let (method, params): (&str, Cow<'_, [u8]>) = match request.command {
            Command::Echo => ("ping", Cow::Borrowed(request.payload)),
            Command::Pi { n } => (
                "pi",
                Cow::Owned(itoa::Buffer::new().format(n).as_bytes().to_vec()),
            ),
            Command::Ping | Command::Sleep { .. } | Command::Spin { .. } | Command::ConfigGet => {
                return Err(ProtocolError::Unsupported {
                    protocol: Protocol::Json,
                    what: "PING, SLEEP, SPIN or CONFIG GET",
                })
            }
            Command::Hello { .. } | Command::Incr { .. } | Command::Get => {
                return Err(ProtocolError::Unsupported {
                    protocol: Protocol::Json,
                    what: "sessions (HELLO, INCR, GET)",
                })
            }
            Command::Record => {
                return Err(ProtocolError::Unsupported {
                    protocol: Protocol::Json,
                    what: "records",
                })
            }
        };
        self.framing.put_frame(out, |out| {
            out.extend_from_slice(b"{\"in\":\"");
            out.extend_from_slice(method.as_bytes());
            out.extend_from_slice(b"\",\"params\":");
            out.extend_from_slice(&params);
            put_id(out, request.id);
            out.push(b'}');
        })
    }

    fn decode_response<'a>(&self, buf: &'a [u8]) -> Result<Decoded<Response<'a>>, ProtocolError> {
        let Some(body) = self.framing.split(buf)? else {
            return Ok(Decoded::Incomplete);
        };
        let len = HEADER_LEN + body.len();
        let resp: JsonResponse<'_> = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                return classify(e).map(|error| Decoded::Invalid {
                    id: None,
                    error,
                    len,
                })
            }
        };
        let status = match &*resp.out {
            "pong" | "pi_r" => Status::Ok,
            "error" => Status::Error,
            _ => {
                return Ok(Decoded::Invalid {
                    id: resp.id,
                    error: ProtocolError::BadJsonShape(
                        "\"out\" must be \"pong\", \"pi_r\" or \"error\"",
                    ),
                    len,
                })
            }
        };
        let payload = resp.result.map_or(&b"null"[..], |raw| raw.get().as_bytes());
        Ok(Decoded::Complete {
            message: Response {
                id: resp.id,
                status,
                payload,
            },
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &str) -> Vec<u8> {
        let mut f = (body.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(body.as_bytes());
        f
    }

    /// What the server sends back for `body`, as text, and whether it keeps the connection.
    fn serve(body: &str) -> (String, bool) {
        let c = JsonCodec::new(1024);
        let buf = frame(body);
        let mut out = Vec::new();
        let open = match c.decode_request(&buf) {
            Ok(Decoded::Complete { message, len }) => {
                assert_eq!(len, buf.len());
                let reply = match message.command {
                    Command::Pi { n } => Reply::Pi(pi(n)),
                    _ => Reply::Echo,
                };
                c.encode_reply(&message, reply, &mut out);
                true
            }
            Ok(Decoded::Invalid { id, error, .. }) => {
                c.encode_error(id, &error.to_string(), &mut out);
                true
            }
            Err(error) => {
                c.encode_error(None, &error.to_string(), &mut out);
                false
            }
            Ok(Decoded::Incomplete) => panic!("incomplete"),
        };
        let len = u32::from_le_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(len, out.len() - 4);
        (String::from_utf8(out[4..].to_vec()).unwrap(), open)
    }

    #[test]
    fn the_books_ping_is_answered_with_params_unchanged() {
        let (reply, open) = serve(r#"{"in": "ping", "params": "ireader 0"}"#);
        assert_eq!(reply, r#"{"out":"pong","result":"ireader 0"}"#);
        assert!(open);
        // Any JSON value, byte for byte, including formatting the parser would normalise.
        let (reply, _) = serve(r#"{"in":"ping","params":{"a": [1.0, 2e3]},"id":9}"#);
        assert_eq!(reply, r#"{"out":"pong","result":{"a": [1.0, 2e3]},"id":9}"#);
    }

    #[test]
    fn the_length_prefix_is_little_endian() {
        let c = JsonCodec::new(1024);
        let mut out = Vec::new();
        c.encode_request(
            &Request {
                id: None,
                command: Command::Echo,
                payload: b"1",
            },
            &mut out,
        )
        .unwrap();
        let body = br#"{"in":"ping","params":1}"#;
        assert_eq!(out[..4], [body.len() as u8, 0, 0, 0]);
        assert_eq!(&out[4..], body);
    }

    #[test]
    fn regression_pi_of_zero_is_positive_zero() {
        assert!(pi(0).is_sign_positive());
        assert_eq!(
            serve(r#"{"in":"pi","params":0}"#).0,
            r#"{"out":"pi_r","result":0.0}"#
        );
    }

    #[test]
    fn pi_matches_the_book() {
        let (reply, _) = serve(r#"{"in": "pi", "params": 1000}"#);
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(v["out"], "pi_r");
        assert!((v["result"].as_f64().unwrap() - std::f64::consts::PI).abs() < 1e-3);
        assert!(
            serve(&format!(r#"{{"in":"pi","params":{}}}"#, MAX_PI_N + 1))
                .0
                .contains("pi: params must be")
        );
        assert!(serve(r#"{"in":"pi","params":-1}"#)
            .0
            .contains("pi: params must be"));
    }

    #[test]
    fn errors_keep_or_close_the_connection_as_documented() {
        let (reply, open) = serve(r#"{"in": "nope", "id": 3}"#);
        assert_eq!(
            reply,
            r#"{"out":"error","result":"unknown method 'nope' (expected \"ping\" or \"pi\")","id":3}"#
        );
        assert!(open);
        let (reply, open) = serve(r#"[1, 2]"#);
        assert!(reply.contains("bad request"), "{reply}");
        assert!(open);
        assert!(serve(r#"{"params": 1}"#).0.contains("missing \\\"in\\\""));
        assert!(serve(r#"{"in": "ping", "id": "x"}"#)
            .0
            .contains("id must be an unsigned integer"));
        let (reply, open) = serve("{not json");
        assert!(
            reply.starts_with(r#"{"out":"error","result":"body is not valid JSON"#),
            "{reply}"
        );
        assert!(!open);
    }

    #[test]
    fn limits_are_checked_on_the_header_alone() {
        let c = JsonCodec::new(1024);
        assert!(matches!(
            c.decode_request(&[0, 0, 0, 0]),
            Err(ProtocolError::EmptyFrame { .. })
        ));
        // 1025 little-endian.
        assert_eq!(
            c.decode_request(&[0x01, 0x04, 0, 0]),
            Err(ProtocolError::FrameTooLarge {
                len: 1025,
                max: 1024
            })
        );
    }

    #[test]
    fn an_echo_that_would_overflow_max_frame_becomes_an_error_reply() {
        // The reply envelope is one byte longer than the request's ("out" vs "in"), so params
        // that fit a request exactly make a reply one byte too long.
        let c = JsonCodec::new(64);
        let params = format!("\"{}\"", "x".repeat(39));
        let mut request = Vec::new();
        let req = Request {
            id: None,
            command: Command::Echo,
            payload: params.as_bytes(),
        };
        c.encode_request(&req, &mut request).unwrap();
        assert_eq!(request.len(), 4 + 64);
        let mut out = Vec::new();
        c.encode_reply(&req, Reply::Echo, &mut out);
        let Ok(Decoded::Complete { message, .. }) = c.decode_response(&out) else {
            panic!("{out:?}")
        };
        assert_eq!(message.status, Status::Error);
    }
}
