//! Property tests for the "any split, any sequence" guarantees every echolab server and the
//! load generator rely on. A reader hands the codec whatever the kernel returned, which may be
//! half a message, several messages, or a message and a half; the codecs promise that this
//! makes no difference. So for each protocol (binary, RESP, JSON), using only the commands that
//! protocol can express, these tests check that:
//!
//! 1. any sequence of requests, encoded back to back and delivered in arbitrary chunks through a
//!    [`ReadBuffer`], decodes to exactly the requests sent, in order, with every message's `len`
//!    equal to its encoded size, every byte consumed, and never `Incomplete` while a whole
//!    message is buffered;
//! 2. the same holds for replies (echoes, `PONG`, pi results and ERROR replies with arbitrary
//!    UTF-8 messages), decoded by the client half, with ids and statuses intact;
//! 3. neither decoder panics on arbitrary (or lightly corrupted) bytes, whatever `max_frame`,
//!    and any message it reports spans at least one byte and no more than the input;
//! 4. varints round trip with the length [`uvarint_len`] predicts, and decoding arbitrary bytes
//!    never claims more than ten of them.
//!
//! Each property runs proptest's default 256 cases (a few seconds in a debug build); set
//! `PROPTEST_CASES` for a deeper search, e.g.
//! `PROPTEST_CASES=20000 cargo test --release -p echolab-protocol --test roundtrip`.

use std::fmt::Debug;

use echolab_protocol::json::{self, MAX_PI_N};
use echolab_protocol::varint::{
    get_svarint, get_uvarint, put_svarint, put_uvarint, uvarint_len, zigzag_encode, MAX_VARINT_LEN,
};
use echolab_protocol::{
    Command, Decoded, Protocol, ProtocolError, ReadBuffer, Reply, Request, Response, Status,
    DEFAULT_MAX_FRAME, MAX_ARG_MICROS,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

/// The largest pi `n` used where the reply is actually computed (decoding alone takes any
/// `n <= MAX_PI_N`).
const SMALL_PI_N: u64 = 1000;

/// Most requests in one generated sequence.
const MAX_REQUESTS: usize = 20;

/// A request that owns its payload, so it can outlive the buffer it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OwnedRequest {
    id: Option<u64>,
    command: Command,
    /// What the server decoder must return as the payload: the bytes to echo, empty for a
    /// bare PING, and for JSON's pi the decimal text of `n` (the raw `params`).
    payload: Vec<u8>,
}

impl OwnedRequest {
    fn borrow(&self) -> Request<'_> {
        Request {
            id: self.id,
            command: self.command,
            payload: &self.payload,
        }
    }

    fn of(request: &Request<'_>) -> Self {
        OwnedRequest {
            id: request.id,
            command: request.command,
            payload: request.payload.to_vec(),
        }
    }
}

/// A response that owns its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OwnedResponse {
    id: Option<u64>,
    status: Status,
    payload: Vec<u8>,
}

impl OwnedResponse {
    fn of(response: &Response<'_>) -> Self {
        OwnedResponse {
            id: response.id,
            status: response.status,
            payload: response.payload.to_vec(),
        }
    }
}

/// A decoded message with its borrow turned into an owned copy (errors kept as they are).
fn own<T, O>(decoded: Decoded<T>, to_owned: impl FnOnce(&T) -> O) -> Decoded<O> {
    match decoded {
        Decoded::Incomplete => Decoded::Incomplete,
        Decoded::Complete { message, len } => Decoded::Complete {
            message: to_owned(&message),
            len,
        },
        Decoded::Invalid { id, error, len } => Decoded::Invalid { id, error, len },
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// Payload bytes: short or longer, uniformly random or dense in the bytes RESP gives meaning to
/// (CR, LF, `*`, `$`, digits, spaces), so a decoder that scanned the payload would trip.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..16),
        vec(any::<u8>(), 0..600),
        vec(
            prop::sample::select(b"\r\n*$-0123456789 \0".to_vec()),
            0..64
        ),
    ]
}

/// Request ids, biased towards the varint length boundaries as well as uniform.
fn id() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        0u64..300,
        (0u32..64).prop_map(|shift| 1u64 << shift),
        (1u32..64).prop_map(|shift| (1u64 << shift) - 1),
        Just(u64::MAX),
    ]
}

fn micros() -> impl Strategy<Value = u32> {
    let max = MAX_ARG_MICROS as u32;
    prop_oneof![0..=max, Just(max), 0u32..200]
}

/// A binary v1 request: ECHO, SLEEP, SPIN or RECORD (whose payload the codec does not read),
/// always with an id.
fn binary_request() -> impl Strategy<Value = OwnedRequest> {
    let command = prop_oneof![
        Just(Command::Echo),
        micros().prop_map(|micros| Command::Sleep { micros }),
        micros().prop_map(|micros| Command::Spin { micros }),
        Just(Command::Record),
    ];
    (id(), command, payload()).prop_map(|(id, command, payload)| OwnedRequest {
        id: Some(id),
        command,
        payload,
    })
}

/// A RESP request: ECHO with any bytes, or a bare PING. RESP carries no id.
fn resp_request() -> impl Strategy<Value = OwnedRequest> {
    prop_oneof![
        3 => payload().prop_map(|payload| OwnedRequest {
            id: None,
            command: Command::Echo,
            payload,
        }),
        1 => Just(OwnedRequest {
            id: None,
            command: Command::Ping,
            payload: Vec::new(),
        }),
    ]
}

/// An arbitrary JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Non-finite floats become null, which is still JSON.
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(any::<String>(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// JSON text for `params`: compact or pretty-printed serde_json output, numbers written the way
/// a person would (which a parse-and-reserialise echo would change), simple quoted ASCII, and
/// values with whitespace inside. Never with whitespace around it: `params` is delimited by
/// the JSON around it, so surrounding whitespace is not part of the value.
fn json_text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|v| serde_json::to_vec(&v).expect("a Value always serialises")),
        json_value()
            .prop_map(|v| serde_json::to_vec_pretty(&v).expect("a Value always serialises")),
        "-?(0|[1-9][0-9]{0,6})(\\.[0-9]{1,4})?([eE][+-]?[0-9]{1,3})?".prop_map(String::into_bytes),
        "\"[ -!#-\\[\\]-~]{0,40}\"".prop_map(String::into_bytes),
        "\\[ ?(1|2\\.0|\"a b\"|null)( , ?(1|2\\.0|\"a b\"|null)){0,4} ?\\]"
            .prop_map(String::into_bytes),
    ]
}

/// A JSON request: ping with JSON params, or pi with `n <= max_pi_n`; the id is optional.
fn json_request(max_pi_n: u64) -> impl Strategy<Value = OwnedRequest> {
    let pi_n = prop_oneof![0..=max_pi_n, Just(max_pi_n), 0u64..10];
    let body = prop_oneof![
        3 => json_text().prop_map(|payload| (Command::Echo, payload)),
        1 => pi_n.prop_map(|n| (Command::Pi { n }, n.to_string().into_bytes())),
    ];
    (proptest::option::of(id()), body).prop_map(|(id, (command, payload))| OwnedRequest {
        id,
        command,
        payload,
    })
}

/// A sequence of requests `protocol` can express; pi `n` capped at `max_pi_n` for JSON.
fn requests(protocol: Protocol, max_pi_n: u64) -> BoxedStrategy<Vec<OwnedRequest>> {
    match protocol {
        Protocol::Binary => vec(binary_request(), 0..MAX_REQUESTS).boxed(),
        Protocol::Resp => vec(resp_request(), 0..MAX_REQUESTS).boxed(),
        Protocol::Json => vec(json_request(max_pi_n), 0..MAX_REQUESTS).boxed(),
    }
}

/// How the stream is cut: a cycle of chunk sizes, from byte-at-a-time to more than a whole
/// sequence in one read.
fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(prop_oneof![1usize..=3, 1usize..=64, 1usize..=16_384], 1..8)
}

/// An arbitrary UTF-8 error message, sometimes dense in line breaks, quotes and backslashes.
fn error_message() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z \r\n\"\\\\\t\u{0}\u{7f}\u{e9}\u{1F600}]{0,40}",
    ]
}

/// For each request, `None` (the server succeeds) or `Some(message)` (it answers an ERROR).
fn requests_with_outcomes(
    protocol: Protocol,
) -> impl Strategy<Value = Vec<(OwnedRequest, Option<String>)>> {
    requests(protocol, SMALL_PI_N).prop_flat_map(|requests| {
        let n = requests.len();
        (
            Just(requests),
            vec(
                prop_oneof![3 => Just(None), 1 => error_message().prop_map(Some)],
                n,
            ),
        )
            .prop_map(|(requests, outcomes)| requests.into_iter().zip(outcomes).collect())
    })
}

/// Bytes to throw at the decoders: uniformly random, or a valid request or reply stream with a
/// few bytes overwritten and possibly cut short (which reaches far deeper into the parsers).
fn garbage(protocol: Protocol) -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        requests(protocol, SMALL_PI_N),
        any::<bool>(),
        vec((any::<Index>(), any::<u8>()), 0..6),
        proptest::option::of(any::<Index>()),
    )
        .prop_map(move |(requests, replies, flips, cut)| {
            let codec = protocol.codec(DEFAULT_MAX_FRAME);
            let mut wire = Vec::new();
            for request in &requests {
                if replies {
                    codec.encode_reply(&request.borrow(), reply_for(request), &mut wire);
                } else {
                    // Generated requests always encode; were one refused, the bytes written
                    // so far would still be a fine input.
                    let _ = codec.encode_request(&request.borrow(), &mut wire);
                }
            }
            if !wire.is_empty() {
                for (at, byte) in flips {
                    let i = at.index(wire.len());
                    wire[i] = byte;
                }
                if let Some(cut) = cut {
                    wire.truncate(cut.index(wire.len() + 1));
                }
            }
            wire.truncate(2000);
            wire
        });
    prop_oneof![vec(any::<u8>(), 0..2000), mutated]
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// The success reply a server sends for `request`.
fn reply_for(request: &OwnedRequest) -> Reply<'static> {
    match request.command {
        Command::Pi { n } => Reply::Pi(json::pi(n)),
        _ => Reply::Echo,
    }
}

/// Feeds `wire` to `decode` through a [`ReadBuffer`], `chunks` bytes at a time (cycling), and
/// decodes after every chunk until `Incomplete`, exactly as a server's read loop does. `ends`
/// holds the offset in `wire` where each message ends. Checks that every message decodes
/// completely with the right length, that `Incomplete` never comes while a whole message is
/// buffered, and that every byte is consumed; returns the messages in order.
fn feed<O: Debug>(
    wire: &[u8],
    ends: &[usize],
    chunks: &[usize],
    decode: impl Fn(&[u8]) -> Result<Decoded<O>, ProtocolError>,
) -> Result<Vec<O>, TestCaseError> {
    prop_assert_eq!(ends.last().copied().unwrap_or(0), wire.len());
    prop_assert!(matches!(decode(&[]), Ok(Decoded::Incomplete)));
    let mut buf = ReadBuffer::new(16);
    let mut messages = Vec::new();
    let (mut fed, mut consumed) = (0, 0);
    let mut chunk = chunks.iter().cycle();
    while fed < wire.len() {
        let size = chunk
            .next()
            .copied()
            .unwrap_or(1)
            .clamp(1, wire.len() - fed);
        buf.extend_from_slice(&wire[fed..fed + size]);
        fed += size;
        loop {
            let next = messages.len();
            match decode(buf.data()) {
                Ok(Decoded::Complete { message, len }) => {
                    prop_assert!(
                        next < ends.len(),
                        "decoded a message #{} that was never sent: {:?}",
                        next,
                        message
                    );
                    prop_assert!(
                        len > 0 && len <= buf.len(),
                        "len {} with {} bytes buffered",
                        len,
                        buf.len()
                    );
                    prop_assert_eq!(
                        consumed + len,
                        ends[next],
                        "message #{} has the wrong length",
                        next
                    );
                    buf.consume(len);
                    consumed += len;
                    messages.push(message);
                }
                Ok(Decoded::Incomplete) => {
                    prop_assert!(
                        next == ends.len() || fed < ends[next],
                        "Incomplete although message #{} (ending at {}) is whole in the buffer \
                         ({} bytes fed, {} consumed)",
                        next,
                        ends.get(next).copied().unwrap_or(0),
                        fed,
                        consumed
                    );
                    break;
                }
                Ok(Decoded::Invalid { id, error, len }) => {
                    return Err(TestCaseError::fail(format!(
                        "message #{next} decoded as Invalid (id {id:?}, len {len}): {error}"
                    )));
                }
                Err(error) => {
                    return Err(TestCaseError::fail(format!(
                        "message #{next} was a fatal error after {fed} bytes: {error}"
                    )));
                }
            }
        }
    }
    prop_assert_eq!(consumed, wire.len(), "not every byte was consumed");
    prop_assert!(buf.is_empty());
    prop_assert_eq!(messages.len(), ends.len());
    Ok(messages)
}

/// Property 1: requests, encoded back to back and delivered in any chunks, decode unchanged.
fn check_requests(
    protocol: Protocol,
    sent: &[OwnedRequest],
    chunks: &[usize],
) -> Result<(), TestCaseError> {
    let codec = protocol.codec(DEFAULT_MAX_FRAME);
    let mut wire = Vec::new();
    let mut ends = Vec::new();
    for request in sent {
        if let Err(error) = codec.encode_request(&request.borrow(), &mut wire) {
            return Err(TestCaseError::fail(format!(
                "{protocol} could not encode {request:?}: {error}"
            )));
        }
        ends.push(wire.len());
    }
    let received = feed(&wire, &ends, chunks, |buf| {
        codec.decode_request(buf).map(|d| own(d, OwnedRequest::of))
    })?;
    // RESP carries no id: the decoder reports none, whatever the client had in mind.
    let expected: Vec<OwnedRequest> = sent
        .iter()
        .map(|request| OwnedRequest {
            id: match protocol {
                Protocol::Resp => None,
                _ => request.id,
            },
            ..request.clone()
        })
        .collect();
    prop_assert_eq!(received, expected);
    Ok(())
}

/// Checks one decoded reply against the request it answers and the server's outcome.
fn check_reply(
    protocol: Protocol,
    index: usize,
    request: &OwnedRequest,
    outcome: Option<&str>,
    got: &OwnedResponse,
) -> Result<(), TestCaseError> {
    let id = match protocol {
        Protocol::Binary => Some(request.id.unwrap_or(0)),
        Protocol::Resp => None,
        Protocol::Json => request.id,
    };
    prop_assert_eq!(got.id, id, "reply #{} has the wrong id", index);
    match outcome {
        None => {
            prop_assert_eq!(got.status, Status::Ok, "reply #{}: {:?}", index, got);
            match (protocol, request.command) {
                (Protocol::Resp, Command::Ping) => {
                    prop_assert_eq!(&got.payload[..], b"PONG", "reply #{}", index);
                }
                (Protocol::Json, Command::Pi { n }) => {
                    let value: f64 = serde_json::from_slice(&got.payload).map_err(|e| {
                        TestCaseError::fail(format!(
                            "reply #{index}: pi result is not a number: {e}"
                        ))
                    })?;
                    let want = json::pi(n);
                    prop_assert!(
                        (value - want).abs() <= 4.0 * f64::EPSILON,
                        "reply #{}: pi({}) came back as {}, not {}",
                        index,
                        n,
                        value,
                        want
                    );
                }
                _ => prop_assert_eq!(&got.payload, &request.payload, "reply #{}", index),
            }
        }
        Some(message) => {
            prop_assert_eq!(got.status, Status::Error, "reply #{}: {:?}", index, got);
            match protocol {
                Protocol::Binary => {
                    prop_assert_eq!(&got.payload[..], message.as_bytes(), "reply #{}", index);
                }
                Protocol::Resp => {
                    let flat = message.replace(['\r', '\n'], " ");
                    let want = format!("ERR {flat}");
                    prop_assert_eq!(&got.payload[..], want.as_bytes(), "reply #{}", index);
                }
                Protocol::Json => {
                    let text: String = serde_json::from_slice(&got.payload).map_err(|e| {
                        TestCaseError::fail(format!(
                            "reply #{index}: error result is not a JSON string: {e}"
                        ))
                    })?;
                    prop_assert_eq!(text.as_str(), message, "reply #{}", index);
                }
            }
        }
    }
    Ok(())
}

/// Property 2: replies to a sequence of requests, delivered in any chunks, decode unchanged.
fn check_replies(
    protocol: Protocol,
    exchanges: &[(OwnedRequest, Option<String>)],
    chunks: &[usize],
) -> Result<(), TestCaseError> {
    let codec = protocol.codec(DEFAULT_MAX_FRAME);
    let mut wire = Vec::new();
    let mut ends = Vec::new();
    for (request, outcome) in exchanges {
        match outcome {
            None => codec.encode_reply(&request.borrow(), reply_for(request), &mut wire),
            Some(message) => codec.encode_error(request.id, message, &mut wire),
        }
        ends.push(wire.len());
    }
    let received = feed(&wire, &ends, chunks, |buf| {
        codec
            .decode_response(buf)
            .map(|d| own(d, OwnedResponse::of))
    })?;
    for (index, ((request, outcome), got)) in exchanges.iter().zip(&received).enumerate() {
        check_reply(protocol, index, request, outcome.as_deref(), got)?;
    }
    Ok(())
}

/// Walks `input` with `decode`, consuming each message or invalid frame it reports, until it
/// asks for more or gives up. Every reported length must be within what remains.
fn walk<O>(
    input: &[u8],
    decode: impl Fn(&[u8]) -> Result<Decoded<O>, ProtocolError>,
) -> Result<(), TestCaseError> {
    let mut pos = 0;
    loop {
        let rest = &input[pos..];
        let len = match decode(rest) {
            Ok(Decoded::Complete { len, .. } | Decoded::Invalid { len, .. }) => len,
            Ok(Decoded::Incomplete) | Err(_) => return Ok(()),
        };
        prop_assert!(
            len > 0 && len <= rest.len(),
            "len {} at offset {} with {} bytes left",
            len,
            pos,
            rest.len()
        );
        pos += len;
    }
}

/// Property 3: neither half of the codec panics on `input`, at a tiny or a default max_frame.
fn check_garbage(protocol: Protocol, input: &[u8]) -> Result<(), TestCaseError> {
    for max_frame in [64, DEFAULT_MAX_FRAME] {
        let codec = protocol.codec(max_frame);
        walk(input, |buf| {
            codec.decode_request(buf).map(|d| own(d, |_| ()))
        })?;
        walk(input, |buf| {
            codec.decode_response(buf).map(|d| own(d, |_| ()))
        })?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn binary_requests_decode_unchanged_under_any_split(
        sent in requests(Protocol::Binary, 0),
        chunks in chunk_sizes(),
    ) {
        check_requests(Protocol::Binary, &sent, &chunks)?;
    }

    #[test]
    fn resp_requests_decode_unchanged_under_any_split(
        sent in requests(Protocol::Resp, 0),
        chunks in chunk_sizes(),
    ) {
        check_requests(Protocol::Resp, &sent, &chunks)?;
    }

    #[test]
    fn json_requests_decode_unchanged_under_any_split(
        sent in requests(Protocol::Json, MAX_PI_N),
        chunks in chunk_sizes(),
    ) {
        check_requests(Protocol::Json, &sent, &chunks)?;
    }

    #[test]
    fn binary_replies_decode_unchanged_under_any_split(
        exchanges in requests_with_outcomes(Protocol::Binary),
        chunks in chunk_sizes(),
    ) {
        check_replies(Protocol::Binary, &exchanges, &chunks)?;
    }

    #[test]
    fn resp_replies_decode_unchanged_under_any_split(
        exchanges in requests_with_outcomes(Protocol::Resp),
        chunks in chunk_sizes(),
    ) {
        check_replies(Protocol::Resp, &exchanges, &chunks)?;
    }

    #[test]
    fn json_replies_decode_unchanged_under_any_split(
        exchanges in requests_with_outcomes(Protocol::Json),
        chunks in chunk_sizes(),
    ) {
        check_replies(Protocol::Json, &exchanges, &chunks)?;
    }

    #[test]
    fn binary_decoders_never_panic_on_arbitrary_bytes(input in garbage(Protocol::Binary)) {
        check_garbage(Protocol::Binary, &input)?;
    }

    #[test]
    fn resp_decoders_never_panic_on_arbitrary_bytes(input in garbage(Protocol::Resp)) {
        check_garbage(Protocol::Resp, &input)?;
    }

    #[test]
    fn json_decoders_never_panic_on_arbitrary_bytes(input in garbage(Protocol::Json)) {
        check_garbage(Protocol::Json, &input)?;
    }

    #[test]
    fn uvarint_round_trips_in_the_predicted_length(
        value in prop_oneof![any::<u64>(), (0u32..64).prop_map(|s| 1u64 << s), 0u64..300],
        trailing in vec(any::<u8>(), 0..4),
    ) {
        let mut out = Vec::new();
        put_uvarint(&mut out, value);
        let len = out.len();
        prop_assert_eq!(len, uvarint_len(value));
        prop_assert!((1..=MAX_VARINT_LEN).contains(&len));
        // Whatever follows the varint is not read.
        out.extend_from_slice(&trailing);
        prop_assert_eq!(get_uvarint(&out), Ok((value, len)));
    }

    #[test]
    fn svarint_round_trips_in_the_predicted_length(
        value in prop_oneof![any::<i64>(), -300i64..300, Just(i64::MIN), Just(i64::MAX)],
        trailing in vec(any::<u8>(), 0..4),
    ) {
        let mut out = Vec::new();
        put_svarint(&mut out, value);
        let len = out.len();
        prop_assert_eq!(len, uvarint_len(zigzag_encode(value)));
        out.extend_from_slice(&trailing);
        prop_assert_eq!(get_svarint(&out), Ok((value, len)));
    }

    #[test]
    fn uvarint_decoding_arbitrary_bytes_reads_at_most_ten(
        bytes in prop_oneof![
            vec(any::<u8>(), 0..16),
            // Mostly continuation bytes, to reach the tenth-byte rules.
            vec(prop_oneof![4 => 0x80u8..=0xFF, 1 => any::<u8>()], 0..16),
        ],
    ) {
        if let Ok((value, len)) = get_uvarint(&bytes) {
            prop_assert!((1..=MAX_VARINT_LEN).contains(&len) && len <= bytes.len());
            // Non-minimal (padded) encodings are accepted, so the value's own encoding is
            // never longer than what was read, and re-reading just those bytes agrees.
            prop_assert!(uvarint_len(value) <= len);
            prop_assert_eq!(get_uvarint(&bytes[..len]), Ok((value, len)));
        }
    }
}
