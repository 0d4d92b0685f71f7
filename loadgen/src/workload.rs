//! What goes on the wire and how a reply is checked.
//!
//! Every request carries a unique id, and its payload is stamped with that id in hex, so a
//! reply is verified byte for byte against the request it answers even in RESP, which has no
//! ids: a reply delivered to the wrong request, or out of order, carries the wrong stamp. The
//! rest of the payload is a fixed pattern built once, so verification is a `memcmp`.
//!
//! `--op incr` is different: its payload is a counter's name, its id the session's sequence
//! number, and its reply the counter's new value, which nothing can predict (other slots add
//! to the same counter). So an INCR reply verifies by its id and by being a value; a refusal
//! ([`Refusal`]) is read back from an ERROR reply's code word, since what the client may
//! conclude depends on which one it is.

use echolab_protocol::record::AVRO_SCHEMA;
use echolab_protocol::session::{self, Refusal};
use echolab_protocol::{Codec, Command, Decoded, Protocol, ProtocolError, Request, Status};

use crate::config::{Op, RunConfig};
use crate::records::{RecordScratch, Records};
use crate::stats::ErrorKind;

/// Hex digits in the id stamp at the start of each payload.
const STAMP_LEN: usize = 16;

/// Encodes requests and verifies replies for one run. Shared read-only by the threads.
#[derive(Debug)]
pub struct Workload {
    codec: Box<dyn Codec>,
    op: Op,
    /// The payload as sent, before stamping (for JSON: a quoted string).
    pattern: Vec<u8>,
    /// Where the stamp goes and how long it is (shorter payloads get a shorter stamp).
    stamp_at: usize,
    stamp_len: usize,
    /// `--op incr`: the counters' names, by key index.
    keys: Vec<Vec<u8>>,
    /// `--op record`: the records, and the format each connection's HELLO agrees.
    records: Option<Records>,
}

/// A thread's buffers for building requests, reused so that a request allocates nothing.
#[derive(Debug, Default)]
pub struct Scratch {
    payload: Vec<u8>,
    record: RecordScratch,
}

/// The outcome of checking one reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// The buffer does not hold a whole reply yet.
    Incomplete,
    /// A correct reply of `len` bytes.
    Ok {
        /// Bytes to consume.
        len: usize,
    },
    /// A whole reply of `len` bytes that is wrong; the connection survives (its framing is
    /// intact) but the request failed.
    Failed {
        /// Bytes to consume.
        len: usize,
        /// Why.
        kind: ErrorKind,
        /// What was wrong, for the first error's message.
        why: String,
    },
    /// `--op incr`: an ERROR reply carrying one of the session refusals' code words.
    Refused {
        /// Bytes to consume.
        len: usize,
        /// Which.
        refusal: Refusal,
        /// The message, for the examples.
        why: String,
    },
    /// The stream cannot be trusted any more: close the connection.
    Fatal {
        /// What was wrong.
        why: String,
    },
}

impl Workload {
    /// Builds the workload for a checked configuration.
    pub fn new(protocol: Protocol, op: Op, payload: usize) -> Workload {
        // The client accepts replies up to the servers' largest frame, whatever it sends.
        let codec = protocol.codec(echolab_protocol::DEFAULT_MAX_FRAME);
        let (pattern, stamp_at) = match (protocol, op) {
            (_, Op::Ping) => (Vec::new(), 0),
            (Protocol::Json, _) => {
                // A JSON string of exactly `payload` bytes: quotes around letters.
                let mut p = vec![b'"'];
                p.extend((0..payload.saturating_sub(2)).map(|i| b'a' + (i % 26) as u8));
                p.push(b'"');
                (p, 1)
            }
            _ => ((0..payload).map(|i| b'a' + (i % 26) as u8).collect(), 0),
        };
        let room = match (protocol, op) {
            (_, Op::Ping) => 0,
            (Protocol::Json, _) => payload.saturating_sub(2),
            _ => payload,
        };
        Workload {
            codec,
            op,
            pattern,
            stamp_at,
            stamp_len: room.min(STAMP_LEN),
            keys: Vec::new(),
            records: None,
        }
    }

    /// The workload of a checked configuration: with `--op incr`, its counters' names too.
    pub fn for_config(cfg: &RunConfig) -> Workload {
        let mut w = Workload::new(cfg.protocol, cfg.op, cfg.payload);
        if cfg.op == Op::Incr {
            let prefix = cfg.key_prefix.as_deref().unwrap_or("");
            w.keys = (0..cfg.keys)
                .map(|k| format!("{prefix}{k}").into_bytes())
                .collect();
        }
        if cfg.op == Op::Record {
            w.records = Some(Records::new(cfg.record.unwrap_or_default()));
        }
        w
    }

    /// Whether every connection opens with a HELLO that agrees a record format (`--op
    /// record`), beside the one a session opens with (`--op incr`).
    pub fn agrees_format(&self) -> bool {
        self.records.is_some()
    }

    /// `--op incr`: the name of counter `key`.
    pub fn key_name(&self, key: usize) -> &[u8] {
        self.keys.get(key).map_or(&[], Vec::as_slice)
    }

    /// `--op incr`: how many counters.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Appends `HELLO client sent` to `out`, with `--op record`'s format and schema (client
    /// 0: a format and no session). Its id is 0: a HELLO is no request of the session's, and
    /// its reply, refusals included, answers "no request in particular".
    pub fn encode_hello(
        &self,
        client: u64,
        sent: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        let format = self.records.as_ref().map(|r| r.spec().format);
        // The schema travels once, here; every RECORD after it carries values only.
        let schema = match format {
            Some(f) if f.has_schema() => AVRO_SCHEMA.as_bytes(),
            _ => &[],
        };
        let request = Request {
            id: Some(0),
            command: Command::Hello {
                client,
                sent,
                format,
            },
            payload: schema,
        };
        self.codec.encode_request(&request, out)
    }

    /// Appends `INCR` seq `seq` of 1 on counter `key`, with `low` (the lowest seq still
    /// unanswered), to `out`.
    pub fn encode_incr(
        &self,
        seq: u64,
        key: usize,
        low: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        let request = Request {
            id: Some(seq),
            command: Command::Incr { by: 1, low },
            payload: self.key_name(key),
        };
        self.codec.encode_request(&request, out)
    }

    /// Appends `GET` of counter `key` with request id `id` to `out`.
    pub fn encode_get(&self, id: u64, key: usize, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let request = Request {
            id: Some(id),
            command: Command::Get,
            payload: self.key_name(key),
        };
        self.codec.encode_request(&request, out)
    }

    /// Checks the reply to a HELLO at the start of `buf`: OK with one of
    /// [`session::hello`]'s words, or a refusal.
    pub fn check_hello(&self, buf: &[u8]) -> Check {
        let (response, len) = match self.decode(buf) {
            Ok(r) => r,
            Err(check) => return check,
        };
        if response.status == Status::Error {
            return self.error_reply(response.payload, len);
        }
        let word = response.payload;
        if [
            session::hello::NEW,
            session::hello::RESUMED,
            session::hello::UNRECORDED,
            session::hello::AGREED,
        ]
        .iter()
        .any(|w| w.as_bytes() == word)
        {
            Check::Ok { len }
        } else {
            Check::Failed {
                len,
                kind: ErrorKind::Mismatch,
                why: format!(
                    "HELLO answered {:?}, not new, resumed, unrecorded or agreed",
                    String::from_utf8_lossy(&word[..word.len().min(64)])
                ),
            }
        }
    }

    /// Checks the value reply (INCR, GET) at the start of `buf` to request `id`: the value,
    /// or what was wrong.
    pub fn check_value(&self, id: u64, buf: &[u8]) -> (Check, Option<u64>) {
        let (response, len) = match self.decode(buf) {
            Ok(r) => r,
            Err(check) => return (check, None),
        };
        let for_us = response.id.is_none_or(|got| got == id || got == 0);
        if response.status == Status::Error && for_us {
            return (self.error_reply(response.payload, len), None);
        }
        if let Some(got) = response.id.filter(|&got| got != id) {
            let why = format!("reply id {got} where {id} was expected (out of order or misrouted)");
            return (
                Check::Failed {
                    len,
                    kind: ErrorKind::Mismatch,
                    why,
                },
                None,
            );
        }
        match session::parse_value(response.payload) {
            Some(v) => (Check::Ok { len }, Some(v)),
            None => (
                Check::Failed {
                    len,
                    kind: ErrorKind::Mismatch,
                    why: format!(
                        "the reply to {id} is not a value: {:?}",
                        String::from_utf8_lossy(
                            &response.payload[..response.payload.len().min(64)]
                        )
                    ),
                },
                None,
            ),
        }
    }

    /// Decodes one response, or says what the buffer holds instead.
    fn decode<'a>(&self, buf: &'a [u8]) -> Result<(echolab_protocol::Response<'a>, usize), Check> {
        match self.codec.decode_response(buf) {
            Ok(Decoded::Incomplete) => Err(Check::Incomplete),
            Ok(Decoded::Complete { message, len }) => Ok((message, len)),
            Ok(Decoded::Invalid { error, len, .. }) => Err(Check::Failed {
                len,
                kind: ErrorKind::Protocol,
                why: error.to_string(),
            }),
            Err(e) => Err(Check::Fatal { why: e.to_string() }),
        }
    }

    /// An ERROR reply's message, as a refusal when it starts with a session code word.
    fn error_reply(&self, message: &[u8], len: usize) -> Check {
        let why = format!(
            "ERROR reply: {}",
            String::from_utf8_lossy(&message[..message.len().min(200)])
        );
        match Refusal::of_message(message) {
            Some(refusal) => Check::Refused { len, refusal, why },
            None => Check::Failed {
                len,
                kind: ErrorKind::ErrorReply,
                why,
            },
        }
    }

    /// The protocol spoken.
    pub fn protocol(&self) -> Protocol {
        self.codec.protocol()
    }

    fn command(&self) -> Command {
        match self.op {
            Op::Echo => Command::Echo,
            Op::Ping => Command::Ping,
            Op::Sleep(micros) => Command::Sleep { micros },
            Op::Spin(micros) => Command::Spin { micros },
            // Not sent through `encode`: see `encode_incr`.
            Op::Incr => Command::Incr { by: 1, low: 0 },
            Op::Record => Command::Record,
        }
    }

    /// Writes the id's stamp into `payload`: the low `stamp_len` hex digits of `id`.
    fn stamp(&self, id: u64, payload: &mut [u8]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let field = &mut payload[self.stamp_at..self.stamp_at + self.stamp_len];
        let mut v = id;
        for b in field.iter_mut().rev() {
            *b = HEX[(v & 0xf) as usize];
            v >>= 4;
        }
    }

    /// Appends request `id` to `out`. `scratch` is reused between calls to avoid allocating.
    pub fn encode(&self, id: u64, scratch: &mut Scratch, out: &mut Vec<u8>) -> Result<(), String> {
        let payload = &mut scratch.payload;
        payload.clear();
        if let Some(records) = &self.records {
            records.request(id, &mut scratch.record, payload)?;
        } else {
            payload.extend_from_slice(&self.pattern);
            self.stamp(id, payload);
        }
        let request = Request {
            id: Some(id),
            command: self.command(),
            payload,
        };
        self.codec
            .encode_request(&request, out)
            .map_err(|e| e.to_string())
    }

    /// Checks the reply at the start of `buf` against request `id`.
    pub fn check(&self, id: u64, buf: &[u8]) -> Check {
        if self.op == Op::Incr {
            return self.check_value(id, buf).0;
        }
        let (response, len) = match self.codec.decode_response(buf) {
            Ok(Decoded::Incomplete) => return Check::Incomplete,
            Ok(Decoded::Complete { message, len }) => (message, len),
            Ok(Decoded::Invalid { error, len, .. }) => {
                return Check::Failed {
                    len,
                    kind: ErrorKind::Protocol,
                    why: error.to_string(),
                }
            }
            Err(e) => return Check::Fatal { why: e.to_string() },
        };
        // An ERROR reply is reported as such when it answers this request or no request in
        // particular (id 0 or none: the server could not read the request's id, or refused
        // the connection); one carrying another request's id is a mismatch first.
        let for_us = response.id.is_none_or(|got| got == id || got == 0);
        if response.status == Status::Error && for_us {
            return Check::Failed {
                len,
                kind: ErrorKind::ErrorReply,
                why: format!(
                    "ERROR reply: {}",
                    String::from_utf8_lossy(&response.payload[..response.payload.len().min(200)])
                ),
            };
        }
        if let Some(got) = response.id.filter(|&got| got != id) {
            return Check::Failed {
                len,
                kind: ErrorKind::Mismatch,
                why: format!("reply id {got} where {id} was expected (out of order or misrouted)"),
            };
        }
        if let Some(records) = &self.records {
            return match records.check(id, response.payload, self.codec.max_frame()) {
                None => Check::Ok { len },
                Some(why) => Check::Failed {
                    len,
                    kind: ErrorKind::Mismatch,
                    why,
                },
            };
        }
        if !self.payload_matches(id, response.payload) {
            return Check::Failed {
                len,
                kind: ErrorKind::Mismatch,
                why: format!(
                    "payload of request {id} came back different ({} bytes, expected {})",
                    response.payload.len(),
                    if self.op == Op::Ping {
                        4
                    } else {
                        self.pattern.len()
                    }
                ),
            };
        }
        Check::Ok { len }
    }

    fn payload_matches(&self, id: u64, got: &[u8]) -> bool {
        if self.op == Op::Ping {
            return got == b"PONG";
        }
        if got.len() != self.pattern.len() {
            return false;
        }
        let (s, e) = (self.stamp_at, self.stamp_at + self.stamp_len);
        let mut expected = [0u8; STAMP_LEN];
        let stamp = &mut expected[..self.stamp_len];
        let mut v = id;
        for b in stamp.iter_mut().rev() {
            *b = b"0123456789abcdef"[(v & 0xf) as usize];
            v >>= 4;
        }
        got[..s] == self.pattern[..s] && got[s..e] == *stamp && got[e..] == self.pattern[e..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use echolab_protocol::{Reply, Request};

    /// Encodes a request with the workload, answers it with the server half of the codec,
    /// and checks the reply.
    fn round_trip(protocol: Protocol, op: Op, payload: usize, id: u64, answer_id: u64) -> Check {
        let w = Workload::new(protocol, op, payload);
        let (mut scratch, mut wire) = (Scratch::default(), Vec::new());
        w.encode(answer_id, &mut scratch, &mut wire)
            .expect("encode");
        let server = protocol.codec(echolab_protocol::DEFAULT_MAX_FRAME);
        let Ok(Decoded::Complete { message, .. }) = server.decode_request(&wire) else {
            panic!("server could not decode");
        };
        let mut reply = Vec::new();
        server.encode_reply(&message, Reply::Echo, &mut reply);
        w.check(id, &reply)
    }

    #[test]
    fn correct_replies_pass_in_every_protocol() {
        for p in Protocol::ALL {
            for size in [2, 5, 16, 64, 1000] {
                let c = round_trip(p, Op::Echo, size, 77, 77);
                assert!(matches!(c, Check::Ok { .. }), "{p} {size}: {c:?}");
            }
        }
        assert!(matches!(
            round_trip(Protocol::Resp, Op::Ping, 0, 1, 1),
            Check::Ok { .. }
        ));
        assert!(matches!(
            round_trip(Protocol::Binary, Op::Sleep(10), 8, 1, 1),
            Check::Ok { .. }
        ));
    }

    #[test]
    fn a_reply_to_another_request_is_a_mismatch() {
        // Binary and JSON carry the id; RESP is caught by the payload's stamp.
        for p in Protocol::ALL {
            let c = round_trip(p, Op::Echo, 64, 5, 6);
            assert!(
                matches!(
                    c,
                    Check::Failed {
                        kind: ErrorKind::Mismatch,
                        ..
                    }
                ),
                "{p}: {c:?}"
            );
        }
    }

    #[test]
    fn a_changed_payload_byte_is_a_mismatch() {
        let w = Workload::new(Protocol::Resp, Op::Echo, 64);
        let (mut scratch, mut wire) = (Scratch::default(), Vec::new());
        w.encode(9, &mut scratch, &mut wire).expect("encode");
        let server = Protocol::Resp.codec(1 << 20);
        let Ok(Decoded::Complete { message, .. }) = server.decode_request(&wire) else {
            panic!("decode");
        };
        let mut payload = message.payload.to_vec();
        payload[40] ^= 1;
        let req = Request {
            payload: &payload,
            ..message
        };
        let mut reply = Vec::new();
        server.encode_reply(&req, Reply::Echo, &mut reply);
        assert!(matches!(
            w.check(9, &reply),
            Check::Failed {
                kind: ErrorKind::Mismatch,
                ..
            }
        ));
    }

    #[test]
    fn error_replies_and_garbage() {
        let w = Workload::new(Protocol::Binary, Op::Echo, 16);
        let server = Protocol::Binary.codec(1 << 20);
        let mut reply = Vec::new();
        server.encode_error(Some(3), "server busy", &mut reply);
        assert!(matches!(
            w.check(3, &reply),
            Check::Failed {
                kind: ErrorKind::ErrorReply,
                ..
            }
        ));
        assert!(matches!(w.check(3, &[0xff; 8]), Check::Fatal { .. }));
        assert_eq!(w.check(3, &[0, 0]), Check::Incomplete);
    }

    /// INCR goes out with its seq, key and low, and its reply verifies as a value; a refusal
    /// is read back by its code word, and HELLO's reply by its word.
    #[test]
    fn incr_hello_and_refusals() {
        let cfg = RunConfig {
            op: Op::Incr,
            payload: 0,
            keys: 3,
            key_prefix: Some("p-".into()),
            ..RunConfig::default()
        };
        let w = Workload::for_config(&cfg);
        assert_eq!(w.key_name(2), b"p-2");
        let server = Protocol::Binary.codec(1 << 20);
        let mut wire = Vec::new();
        w.encode_incr(7, 2, 5, &mut wire).expect("encode");
        let Ok(Decoded::Complete { message, .. }) = server.decode_request(&wire) else {
            panic!("decode");
        };
        assert_eq!(message.id, Some(7));
        assert_eq!(message.command, Command::Incr { by: 1, low: 5 });
        assert_eq!(message.payload, b"p-2");
        let mut reply = Vec::new();
        server.encode_reply(&message, Reply::Value(42), &mut reply);
        assert_eq!(
            w.check_value(7, &reply),
            (Check::Ok { len: reply.len() }, Some(42))
        );
        assert!(matches!(
            w.check(8, &reply),
            Check::Failed {
                kind: ErrorKind::Mismatch,
                ..
            }
        ));
        let mut refusal = Vec::new();
        server.encode_error(Some(7), &Refusal::TooOld.message("seq 7"), &mut refusal);
        assert!(matches!(
            w.check(7, &refusal),
            Check::Refused {
                refusal: Refusal::TooOld,
                ..
            }
        ));
        let mut hello = Vec::new();
        w.encode_hello(9, 3, &mut hello).expect("encode");
        let Ok(Decoded::Complete { message, .. }) = server.decode_request(&hello) else {
            panic!("decode");
        };
        assert_eq!(
            message.command,
            Command::Hello {
                client: 9,
                sent: 3,
                format: None
            }
        );
        let mut word = Vec::new();
        server.encode_reply(&message, Reply::Word(session::hello::RESUMED), &mut word);
        assert!(matches!(w.check_hello(&word), Check::Ok { .. }));
        let mut echo = Vec::new();
        server.encode_reply(&message, Reply::Echo, &mut echo);
        assert!(matches!(
            w.check_hello(&echo),
            Check::Failed {
                kind: ErrorKind::Mismatch,
                ..
            }
        ));
    }
}
