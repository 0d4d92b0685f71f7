//! The hex examples of `docs/protocol.md`, checked against the codec in both directions.
//!
//! Each fixture is a message and its exact bytes. The test encodes the message and compares
//! the bytes, decodes the bytes and compares the message, and finally checks that the hex
//! text appears verbatim in `docs/protocol.md`, so the document cannot drift from the code.

use echolab_protocol::{
    Codec, Command, Decoded, Protocol, Reply, Request, Status, DEFAULT_MAX_FRAME,
};

/// Parses "00 0a ff" into bytes.
fn unhex(hex: &str) -> Vec<u8> {
    hex.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("fixture hex"))
        .collect()
}

fn codec(p: Protocol) -> Box<dyn Codec> {
    p.codec(DEFAULT_MAX_FRAME)
}

fn docs() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    std::fs::read_to_string(path).expect("docs/protocol.md")
}

/// Asserts the hex appears in the doc (whitespace-normalised, case-insensitive).
fn documented(hex: &str) {
    let doc = docs()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    let want = hex
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    assert!(
        doc.contains(&want),
        "docs/protocol.md does not show the fixture:\n{want}"
    );
}

/// A request fixture: the client encodes `request` to `hex`, the server decodes `hex` back.
fn request_fixture(p: Protocol, request: Request<'_>, hex: &str) {
    let bytes = unhex(hex);
    let mut out = Vec::new();
    codec(p)
        .encode_request(&request, &mut out)
        .expect("encodable");
    assert_eq!(out, bytes, "{p} encoding of {request:?}");
    match codec(p).decode_request(&bytes) {
        Ok(Decoded::Complete { message, len }) => {
            assert_eq!(message, request);
            assert_eq!(len, bytes.len());
        }
        other => panic!("{p}: {other:?}"),
    }
    documented(hex);
}

/// A reply fixture: the server answers `request` (sent as `request_hex`) with `hex`.
fn reply_fixture(p: Protocol, request_hex: &str, reply_hex: &str, status: Status, payload: &[u8]) {
    let c = codec(p);
    let req_bytes = unhex(request_hex);
    let mut out = Vec::new();
    match c.decode_request(&req_bytes) {
        Ok(Decoded::Complete { message, .. }) => c.encode_reply(&message, Reply::Echo, &mut out),
        Ok(Decoded::Invalid { id, error, .. }) => c.encode_error(id, &error.to_string(), &mut out),
        Err(error) => c.encode_error(None, &error.to_string(), &mut out),
        Ok(Decoded::Incomplete) => panic!("{p}: fixture request incomplete"),
    }
    assert_eq!(
        out,
        unhex(reply_hex),
        "{p} reply, got text {:?}",
        String::from_utf8_lossy(&out)
    );
    match c.decode_response(&out) {
        Ok(Decoded::Complete { message, len }) => {
            assert_eq!((message.status, message.payload), (status, payload));
            assert_eq!(len, out.len());
        }
        other => panic!("{p}: {other:?}"),
    }
    documented(request_hex);
    documented(reply_hex);
}

const BIN_ECHO: &str = "00 00 00 05 01 01 00 68 69";
const BIN_ECHO_OK: &str = "00 00 00 04 00 01 68 69";

#[test]
fn binary_echo() {
    let req = Request {
        id: Some(1),
        command: Command::Echo,
        payload: b"hi",
    };
    request_fixture(Protocol::Binary, req, BIN_ECHO);
    reply_fixture(Protocol::Binary, BIN_ECHO, BIN_ECHO_OK, Status::Ok, b"hi");
}

#[test]
fn binary_sleep_with_multibyte_varints() {
    // id 300 = ac 02, arg 1000 = e8 07.
    let req = Request {
        id: Some(300),
        command: Command::Sleep { micros: 1000 },
        payload: b"",
    };
    request_fixture(Protocol::Binary, req, "00 00 00 05 02 ac 02 e8 07");
}

#[test]
fn binary_spin() {
    let req = Request {
        id: Some(2),
        command: Command::Spin { micros: 50 },
        payload: b"x",
    };
    request_fixture(Protocol::Binary, req, "00 00 00 04 03 02 32 78");
}

#[test]
fn binary_unknown_op_keeps_the_id() {
    let msg = b"unknown op 0x09 (expected 0x01 ECHO, 0x02 SLEEP, 0x03 SPIN, 0x10 HELLO, 0x11 INCR, 0x12 GET or 0x20 RECORD)";
    let mut reply = vec![0, 0, 0, (2 + msg.len()) as u8, 0x01, 0x05];
    reply.extend_from_slice(msg);
    let hex: Vec<String> = reply.iter().map(|b| format!("{b:02x}")).collect();
    reply_fixture(
        Protocol::Binary,
        "00 00 00 03 09 05 00",
        &hex.join(" "),
        Status::Error,
        msg,
    );
}

#[test]
fn binary_length_errors_reply_with_id_zero() {
    let c = codec(Protocol::Binary);
    for (header, message) in [
        (
            "00 00 00 00",
            "frame length 0 is invalid (must be 1..=1048576, max_frame 1048576)",
        ),
        (
            "ff ff ff ff",
            "frame length 4294967295 exceeds max_frame 1048576",
        ),
    ] {
        let err = c.decode_request(&unhex(header)).expect_err("fatal");
        assert_eq!(err.to_string(), message);
        documented(header);
        assert!(
            docs().contains(message),
            "docs/protocol.md should quote {message:?}"
        );
    }
}

#[test]
fn resp_echo_and_ping() {
    let echo = "2a 32 0d 0a 24 34 0d 0a 45 43 48 4f 0d 0a 24 32 0d 0a 68 69 0d 0a";
    request_fixture(
        Protocol::Resp,
        Request {
            id: None,
            command: Command::Echo,
            payload: b"hi",
        },
        echo,
    );
    reply_fixture(
        Protocol::Resp,
        echo,
        "24 32 0d 0a 68 69 0d 0a",
        Status::Ok,
        b"hi",
    );
    // The inline form that redis-benchmark's PING_INLINE and telnet users send.
    reply_fixture(
        Protocol::Resp,
        "50 49 4e 47 0d 0a",
        "2b 50 4f 4e 47 0d 0a",
        Status::Ok,
        b"PONG",
    );
}

/// What redis-benchmark asks before every run, and the answer that keeps it from printing
/// "WARNING: Could not fetch server CONFIG": a `[name, value]` pair. (A RESP array, which
/// the client half does not read, so the reply is compared as bytes.)
#[test]
fn resp_config_get() {
    let request = "2a 33 0d 0a 24 36 0d 0a 43 4f 4e 46 49 47 0d 0a 24 33 0d 0a 47 45 54 0d 0a 24 34 0d 0a 73 61 76 65 0d 0a";
    request_fixture(
        Protocol::Resp,
        Request {
            id: None,
            command: Command::ConfigGet,
            payload: b"save",
        },
        request,
    );
    let reply = "2a 32 0d 0a 24 34 0d 0a 73 61 76 65 0d 0a 24 30 0d 0a 0d 0a";
    let c = codec(Protocol::Resp);
    let req_bytes = unhex(request);
    let Ok(Decoded::Complete { message, .. }) = c.decode_request(&req_bytes) else {
        panic!("CONFIG GET save does not decode");
    };
    let mut out = Vec::new();
    c.encode_reply(&message, Reply::Echo, &mut out);
    assert_eq!(out, unhex(reply), "got {:?}", String::from_utf8_lossy(&out));
    documented(reply);
}

#[test]
fn json_ping_with_little_endian_length() {
    // {"in":"ping","params":"hi","id":1} is 34 bytes: 0x22 first, little-endian.
    let req = "22 00 00 00 7b 22 69 6e 22 3a 22 70 69 6e 67 22 2c 22 70 61 72 61 6d 73 22 3a 22 68 69 22 2c 22 69 64 22 3a 31 7d";
    request_fixture(
        Protocol::Json,
        Request {
            id: Some(1),
            command: Command::Echo,
            payload: b"\"hi\"",
        },
        req,
    );
    let reply = "23 00 00 00 7b 22 6f 75 74 22 3a 22 70 6f 6e 67 22 2c 22 72 65 73 75 6c 74 22 3a 22 68 69 22 2c 22 69 64 22 3a 31 7d";
    reply_fixture(Protocol::Json, req, reply, Status::Ok, b"\"hi\"");
}

/// A session reply fixture: the server answers the request in `request_hex` with `reply`,
/// and the bytes are `reply_hex`.
fn session_reply_fixture(request_hex: &str, reply: Reply, reply_hex: &str, payload: &[u8]) {
    let c = codec(Protocol::Binary);
    let bytes = unhex(request_hex);
    let Ok(Decoded::Complete { message, .. }) = c.decode_request(&bytes) else {
        panic!("fixture request {request_hex} does not decode");
    };
    let mut out = Vec::new();
    c.encode_reply(&message, reply, &mut out);
    assert_eq!(out, unhex(reply_hex), "reply to {message:?}");
    match c.decode_response(&out) {
        Ok(Decoded::Complete { message, .. }) => {
            assert_eq!((message.status, message.payload), (Status::Ok, payload))
        }
        other => panic!("{other:?}"),
    }
    documented(reply_hex);
}

#[test]
fn binary_hello_opens_a_session() {
    // Client 42 (0x2a), brand new (sent 0), request id 0; the server answers "new".
    let hello = "00 00 00 04 10 00 2a 00";
    let req = Request {
        id: Some(0),
        command: Command::Hello {
            client: 42,
            sent: 0,
            format: None,
        },
        payload: b"",
    };
    request_fixture(Protocol::Binary, req, hello);
    session_reply_fixture(
        hello,
        Reply::Word(echolab_protocol::session::hello::NEW),
        "00 00 00 05 00 00 6e 65 77",
        b"new",
    );
}

#[test]
fn binary_incr_carries_seq_amount_low_and_key() {
    // seq 300 (ac 02), by 5, low 298 (aa 02), key "k".
    let incr = "00 00 00 07 11 ac 02 05 aa 02 6b";
    let req = Request {
        id: Some(300),
        command: Command::Incr { by: 5, low: 298 },
        payload: b"k",
    };
    request_fixture(Protocol::Binary, req, incr);
    session_reply_fixture(incr, Reply::Value(12), "00 00 00 05 00 ac 02 31 32", b"12");
}

#[test]
fn binary_get_reads_a_counter() {
    let get = "00 00 00 04 12 09 00 6b";
    let req = Request {
        id: Some(9),
        command: Command::Get,
        payload: b"k",
    };
    request_fixture(Protocol::Binary, req, get);
    session_reply_fixture(get, Reply::Value(12), "00 00 00 04 00 09 31 32", b"12");
}

#[test]
fn binary_hello_agrees_a_format_and_record_is_answered() {
    use echolab_protocol::record::{Format, Person, RecordCodec};
    // HELLO with no session (client 0) and format 2, protobuf, which sends no schema.
    let hello = "00 00 00 05 10 00 00 00 02";
    let req = Request {
        id: Some(0),
        command: Command::Hello {
            client: 0,
            sent: 0,
            format: Some(Format::Protobuf),
        },
        payload: b"",
    };
    request_fixture(Protocol::Binary, req, hello);
    session_reply_fixture(
        hello,
        Reply::Word(echolab_protocol::session::hello::AGREED),
        "00 00 00 08 00 00 61 67 72 65 65 64",
        b"agreed",
    );
    // RECORD id 1: flag 00 (raw), then the book's record in protobuf; the reply is the same
    // record with favourite_number 1338 (zigzag 2676: f4 14).
    let record = "00 00 00 25 20 01 00 00 0a 06 4d 61 72 74 69 6e 10 f2 14 1a 0b 64 61 79 64 72 65 61 6d 69 6e 67 1a 07 68 61 63 6b 69 6e 67";
    let frame = unhex(record)[7..].to_vec();
    request_fixture(
        Protocol::Binary,
        Request {
            id: Some(1),
            command: Command::Record,
            payload: &frame,
        },
        record,
    );
    let book = Person {
        user_name: "Martin".into(),
        favourite_number: 1337,
        interests: vec!["daydreaming".into(), "hacking".into()],
        address: None,
    };
    let codec = RecordCodec::new(Format::Protobuf);
    assert_eq!(codec.reply(&frame, 1 << 20), Ok(book));
    let mut answer = Vec::new();
    codec
        .answer(&frame, DEFAULT_MAX_FRAME, &mut answer)
        .expect("answers");
    session_reply_fixture(
        record,
        Reply::Bytes(&answer),
        "00 00 00 24 00 01 00 0a 06 4d 61 72 74 69 6e 10 f4 14 1a 0b 64 61 79 64 72 65 61 6d 69 6e 67 1a 07 68 61 63 6b 69 6e 67",
        &answer,
    );
}
