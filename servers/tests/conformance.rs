//! Protocol conformance of every server model, in every wire format: one table of models
//! (thread per connection, thread pool, fork, prefork with each accept strategy, and the event
//! loop with each readiness backend) times the three protocols (binary, RESP, JSON). The point
//! of echolab is that models differ only in *how* they serve clients, never in *what* a client
//! sees, so every model must hold the conversation of `docs/protocol.md` to the letter: echoes
//! of every size up to a frame that exactly fills `max_frame`, pipelined requests answered in
//! order, frames that arrive one byte at a time, SLEEP/SPIN (binary), PING/ECHO and real
//! `redis-cli` (RESP), `pi` (JSON), and every error rule — a fatal error gets one ERROR reply
//! and then EOF, a message error gets an ERROR reply and leaves the connection usable — while
//! another client, connected before, goes on being served. Each (model, protocol) starts one
//! server shared by all its checks, so the suite stays fast; at the end the server is stopped
//! with SIGTERM and its stats file must count exactly the errors the checks provoked.
//!
//! The event loop (`server-eventloop`) has a row per readiness backend (select, poll, epoll):
//! the backend changes how the loop learns that a socket is ready, never what a client sees.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use echolab_protocol::varint::{put_uvarint, uvarint_len};
use echolab_protocol::{json, Command, Protocol, Request, Status};

/// One test per (model, protocol), so they run in parallel and fail separately.
macro_rules! model_table {
    ($($module:ident => $model:expr),* $(,)?) => {
        $(
            mod $module {
                use super::*;

                #[test]
                fn binary() {
                    conform(&$model, Protocol::Binary);
                }

                #[test]
                fn resp() {
                    conform(&$model, Protocol::Resp);
                }

                #[test]
                fn json() {
                    conform(&$model, Protocol::Json);
                }

                #[test]
                fn debug_spin() {
                    debug_spin_slows_every_request(&$model);
                }
            }
        )*
    };
}

every_model!(model_table);

/// `--debug-spin-ns`, the regression gate's testing aid (docs/ci.md), slows every request of
/// every model by at least the time given, and changes nothing else a client sees. A lower
/// bound on a round trip is the one timing a busy machine cannot make flaky: it can only
/// lengthen the round trip, never shorten it.
fn debug_spin_slows_every_request(model: &Model) {
    let test = format!("{} / --debug-spin-ns", model.name);
    const SPIN: Duration = Duration::from_millis(3);
    let spin_ns = SPIN.as_nanos().to_string();
    let server = model.start(&["--debug-spin-ns", &spin_ns]);
    let mut c = model.connect(&server);
    c.label = test.clone();
    for i in 0..3 {
        let started = Instant::now();
        c.echo(format!("spun {i}").as_bytes());
        assert!(
            started.elapsed() >= SPIN,
            "{test}: echo {i} answered after {:?}, before the {SPIN:?} spin could end",
            started.elapsed()
        );
    }
    drop(c);
    server.stop().assert_clean(&test);
}

/// What the stats file must say after the checks.
#[derive(Debug, Default)]
struct Expected {
    /// Message errors provoked (ERROR reply, connection kept).
    errors: u64,
    /// Fatal errors provoked (ERROR reply, connection closed).
    protocol_errors: u64,
}

/// Runs every check against one server of `model` speaking `protocol`.
fn conform(model: &Model, protocol: Protocol) {
    let test = format!("{} / {protocol}", model.name);
    let server = model.start(&["--protocol", protocol.name()]);
    let mut expected = Expected::default();

    one_connection(&server);
    many_connections(&server);
    simultaneous_connections(&server, model);
    pipelining(&server);
    payload_sizes(&server);
    byte_at_a_time(&server);
    match protocol {
        Protocol::Binary => sleep_and_spin(&server),
        Protocol::Resp => {
            resp_commands(&server);
            resp_pipeline_ending_in_a_bad_frame(&server, &mut expected);
            redis_cli(&server, &test);
        }
        Protocol::Json => json_methods(&server),
    }
    error_rules(&server, model, &mut expected);

    let pid = server.pid();
    let stopped = server.stop();
    stopped.assert_clean(&test);
    let stats = stopped.stats();
    assert_eq!(stats["protocol"], protocol.name(), "{test}: stats protocol");
    assert_eq!(stats["pid"], pid.as_raw(), "{test}: stats pid");
    assert_eq!(
        stopped.total("errors"),
        expected.errors,
        "{test}: totals.errors should count each message error provoked\n{stats:#}"
    );
    assert_eq!(
        stopped.total("protocol_errors"),
        expected.protocol_errors,
        "{test}: totals.protocol_errors should count each fatal error provoked\n{stats:#}"
    );
    assert_eq!(stopped.total("refused"), 0, "{test}: nothing was refused");
    assert_eq!(
        stopped.total("accepted"),
        stopped.total("closed"),
        "{test}: every accepted connection was closed by shutdown\n{stats:#}"
    );
    assert!(
        stopped.total("requests") >= 64 * 20,
        "{test}: totals.requests too low\n{stats:#}"
    );
    if let Some(backend) = model.backend {
        assert_eq!(
            stats["model"],
            format!("eventloop/{backend}"),
            "{test}: stats model\n{stats:#}"
        );
        assert_eq!(
            stats["extra"]["backend"], backend,
            "{test}: stats extra.backend\n{stats:#}"
        );
        assert!(
            stats.get("workers").is_none(),
            "{test}: one thread has no workers list\n{stats:#}"
        );
    }
    if let Some(expected) = model.workers {
        let workers = stats["workers"]
            .as_array()
            .unwrap_or_else(|| panic!("{test}: stats has no workers list\n{stats:#}"));
        assert_eq!(
            workers.len(),
            expected.count,
            "{test}: one stats entry per worker"
        );
        for (i, w) in workers.iter().enumerate() {
            assert_eq!(w["worker"], i, "{test}: worker index\n{w:#}");
            for field in [expected.id, "restarts", "accepted", "requests"] {
                assert!(
                    w[field].is_u64(),
                    "{test}: worker {i} has no {field}\n{w:#}"
                );
            }
        }
        let jain = stats["accept_fairness_jain"].as_f64();
        assert!(
            jain.is_some_and(|j| j > 0.0 && j <= 1.0 + 1e-9),
            "{test}: accept_fairness_jain should be in (0, 1]\n{stats:#}"
        );
    }
}

/// A few echoes of different sizes on one connection.
fn one_connection(server: &Server) {
    let mut c = server.client();
    c.label = "one connection".into();
    c.echo(b"hello");
    for len in [1, 10, 100, 1000, 10_000] {
        c.echo(&content(server.protocol, len, len));
    }
}

/// 64 clients at once, each with its own connection and 20 requests. Pool and prefork
/// workers take them a few at a time; the others wait in the queue, which is fine: every
/// connection is short.
fn many_connections(server: &Server) {
    thread::scope(|s| {
        for t in 0..64 {
            s.spawn(move || {
                let mut c = server.client();
                c.label = format!("concurrent client {t}");
                for i in 0..20 {
                    c.echo(&content(server.protocol, 16 + i, t));
                }
            });
        }
    });
}

/// `model.parallel` connections open and served *at the same moment*: each is answered once,
/// then all wait for each other, then each is answered again. A model that served fewer
/// clients at once than it claims would leave some stuck before the gate. Each waits at the
/// gate as long as the slowest may take to get its connection served ([`Model::served_within`]:
/// under SO_REUSEPORT that includes reconnecting until the kernel hashes it to a free worker).
fn simultaneous_connections(server: &Server, model: &Model) {
    let gate = Gate::new(model.parallel);
    thread::scope(|s| {
        for t in 0..model.parallel {
            let gate = &gate;
            s.spawn(move || {
                let mut c = model.connect(server);
                c.label = format!("simultaneous client {t} of {}", model.parallel);
                c.echo(b"first");
                gate.wait(model.served_within());
                c.echo(b"second");
            });
        }
    });
}

/// 100 requests written with one `write`, then 100 replies read: in order, ids matching.
fn pipelining(server: &Server) {
    let mut c = server.client();
    c.label = "pipelining".into();
    let codec = server.protocol.codec(server.max_frame);
    let payloads: Vec<Vec<u8>> = (0..100)
        .map(|i| wire_payload(server.protocol, format!("request-{i}").as_bytes()))
        .collect();
    let mut wire = Vec::new();
    for (i, payload) in payloads.iter().enumerate() {
        let req = Request {
            id: Some(1000 + i as u64),
            command: Command::Echo,
            payload,
        };
        codec.encode_request(&req, &mut wire).expect("encode");
    }
    c.send_raw(&wire);
    for (i, payload) in payloads.iter().enumerate() {
        let r = c.read_response();
        c.label = format!("pipelined reply {i}");
        c.assert_echo(&r, 1000 + i as u64, payload);
    }
    c.echo(b"after the batch");
}

/// Echo payloads of 0 B, 1 B and 64 KiB, and a request that fills `max_frame` exactly.
fn payload_sizes(server: &Server) {
    let p = server.protocol;
    let mut c = server.client();
    for len in [0, 1, 64 * 1024] {
        c.label = format!("payload of {len} bytes");
        c.echo(&content(p, len, 3));
    }
    let max = server.max_frame;
    match p {
        Protocol::Binary => {
            // body = op + varint(id) + varint(arg 0) + payload = max_frame exactly.
            let id = c.next_id();
            let payload = content(p, max - 1 - uvarint_len(id) - 1, 5);
            let mut wire = Vec::new();
            let req = Request {
                id: Some(id),
                command: Command::Echo,
                payload: &payload,
            };
            c.label = "binary frame of exactly max_frame bytes".into();
            server
                .protocol
                .codec(max)
                .encode_request(&req, &mut wire)
                .expect("a frame of exactly max_frame must be encodable");
            assert_eq!(wire.len(), 4 + max, "the body must be exactly max_frame");
            c.send_raw(&wire);
            let r = c.read_response();
            c.assert_echo(&r, id, &payload);
        }
        Protocol::Resp => {
            // The RESP limit is on one bulk string: exactly max_frame bytes is allowed.
            c.label = "RESP bulk of exactly max_frame bytes".into();
            c.echo(&content(p, max, 5));
        }
        Protocol::Json => {
            // The reply's envelope (`{"out":"pong","result":`) is one byte longer than the
            // request's (`{"in":"ping","params":`): a request of max_frame - 1 bytes gets a
            // reply of exactly max_frame bytes.
            let id = c.next_id();
            let body_len = |content_len: usize| {
                let payload = wire_payload(p, &content(p, content_len, 0));
                let mut wire = Vec::new();
                let req = Request {
                    id: Some(id),
                    command: Command::Echo,
                    payload: &payload,
                };
                p.codec(4 * max)
                    .encode_request(&req, &mut wire)
                    .expect("encode");
                wire.len() - 4
            };
            let envelope = body_len(0);
            c.label = "JSON request of max_frame - 1 bytes (reply of exactly max_frame)".into();
            let payload = wire_payload(p, &content(p, max - 1 - envelope, 5));
            let r = c.request(&Request {
                id: Some(id),
                command: Command::Echo,
                payload: &payload,
            });
            c.assert_echo(&r, id, &payload);

            // A request of exactly max_frame is accepted; its echo would not fit a frame, so
            // the server may answer with an error instead, but the connection stays usable.
            c.label = "JSON request of exactly max_frame bytes".into();
            let id = c.next_id();
            let payload = wire_payload(p, &content(p, max - envelope, 6));
            let r = c.request(&Request {
                id: Some(id),
                command: Command::Echo,
                payload: &payload,
            });
            match r.status {
                Status::Ok => c.assert_echo(&r, id, &payload),
                Status::Error => assert!(
                    r.message().contains("max_frame"),
                    "{}: unexpected error {:?}",
                    c.label,
                    r.message()
                ),
            }
            c.echo(b"after the largest frame");
        }
    }
}

/// Requests written one byte per `write` (TCP_NODELAY is on, so each byte is its own segment)
/// are still answered: the server keeps half a frame until the rest arrives.
fn byte_at_a_time(server: &Server) {
    let p = server.protocol;
    let mut c = server.client();
    c.label = "request sent one byte at a time".into();
    let codec = p.codec(server.max_frame);
    let mut wire = Vec::new();
    let payloads = [wire_payload(p, b"split"), wire_payload(p, b"bytes")];
    for (i, payload) in payloads.iter().enumerate() {
        let req = Request {
            id: Some(70 + i as u64),
            command: Command::Echo,
            payload,
        };
        codec.encode_request(&req, &mut wire).expect("encode");
    }
    if p == Protocol::Resp {
        // An inline command too, split the same way.
        wire.extend_from_slice(b"PING\r\n");
    }
    for byte in &wire {
        c.send_raw(std::slice::from_ref(byte));
        thread::sleep(Duration::from_micros(200));
    }
    for (i, payload) in payloads.iter().enumerate() {
        let r = c.read_response();
        c.assert_echo(&r, 70 + i as u64, payload);
    }
    if p == Protocol::Resp {
        let r = c.read_response();
        assert_eq!((r.status, &r.payload[..]), (Status::Ok, &b"PONG"[..]));
    }
}

/// Binary SLEEP and SPIN for 1000 us: echoed, and not before the time has passed.
fn sleep_and_spin(server: &Server) {
    let mut c = server.client();
    for (name, command) in [
        ("SLEEP 1000 us", Command::Sleep { micros: 1000 }),
        ("SPIN 1000 us", Command::Spin { micros: 1000 }),
    ] {
        c.label = name.into();
        let id = c.next_id();
        let started = Instant::now();
        let r = c.request(&Request {
            id: Some(id),
            command,
            payload: b"zz",
        });
        c.assert_echo(&r, id, b"zz");
        assert!(
            started.elapsed() >= Duration::from_micros(1000),
            "{name} answered after {:?}",
            started.elapsed()
        );
    }
}

/// RESP: PING, PING msg, ECHO msg, inline commands in any case, and empty commands skipped
/// without a reply.
fn resp_commands(server: &Server) {
    let mut c = server.client();
    let simple = |c: &mut Client, label: &str, raw: &[u8], expect: &[u8]| {
        c.label = label.into();
        c.send_raw(raw);
        let r = c.read_response();
        assert_eq!(r.status, Status::Ok, "{label}: {}", r.message());
        assert_eq!(
            String::from_utf8_lossy(&r.payload),
            String::from_utf8_lossy(expect),
            "{label}"
        );
    };
    c.label = "PING".into();
    let r = c.request(&Request {
        id: None,
        command: Command::Ping,
        payload: b"",
    });
    assert_eq!((r.status, &r.payload[..]), (Status::Ok, &b"PONG"[..]));
    simple(
        &mut c,
        "PING msg",
        b"*2\r\n$4\r\nPING\r\n$5\r\nhello\r\n",
        b"hello",
    );
    simple(
        &mut c,
        "ECHO msg",
        b"*2\r\n$4\r\nECHO\r\n$5\r\nworld\r\n",
        b"world",
    );
    simple(
        &mut c,
        "lower-case echo",
        b"*2\r\n$4\r\necho\r\n$2\r\nhi\r\n",
        b"hi",
    );
    simple(&mut c, "inline PING", b"PING\r\n", b"PONG");
    simple(&mut c, "inline ping msg", b"ping there\r\n", b"there");
    simple(&mut c, "inline EcHo, bare LF", b"EcHo lf\n", b"lf");
    // `*0`, `*-1` and a blank line get no reply: the first reply is PING's, and the PING after
    // it is answered next (a stray reply would have shifted them).
    simple(
        &mut c,
        "empty commands skipped",
        b"*0\r\n*-1\r\n\r\nPING\r\n",
        b"PONG",
    );
    simple(&mut c, "after the empty commands", b"PING\r\n", b"PONG");
    // What Redis ignores, ignored here too: an empty line, a negative count.
    simple(
        &mut c,
        "an empty line and *-10 ignored",
        b"\r\n*-10\r\nPING\r\n",
        b"PONG",
    );
}

/// A pipeline that ends with a bad frame: every reply to the commands before it is delivered,
/// in order, then the error, then EOF (the error must not overtake them, nor the close
/// destroy them with a reset).
fn resp_pipeline_ending_in_a_bad_frame(server: &Server, expected: &mut Expected) {
    let mut c = server.client();
    c.label = "RESP pipeline ending in a bad frame".into();
    c.send_raw(b"PING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n*2\r\n$4\r\nECHO\r\n$blabla\r\n");
    let pong = c.read_response();
    assert_eq!((pong.status, &pong.payload[..]), (Status::Ok, &b"PONG"[..]));
    let hi = c.read_response();
    assert_eq!((hi.status, &hi.payload[..]), (Status::Ok, &b"hi"[..]));
    let err = c.read_response();
    assert_eq!(err.status, Status::Error, "{err:?}");
    assert_eq!(err.message(), "Protocol error: invalid bulk length");
    c.expect_eof();
    expected.protocol_errors += 1;
}

/// `redis-cli -p PORT ping` prints PONG (and `echo` echoes) against every model.
fn redis_cli(server: &Server, test: &str) {
    let port = server.addr.port().to_string();
    for (args, expect) in [
        (&["ping"][..], "PONG"),
        (&["echo", "from-redis-cli"], "from-redis-cli"),
    ] {
        let mut argv = vec!["-h", "127.0.0.1", "-p", &port];
        argv.extend_from_slice(args);
        let Some((status, out)) = run_tool("redis-cli", &argv, IO_TIMEOUT) else {
            skip(&format!("{test}: redis-cli"), "redis-cli is not on PATH");
            return;
        };
        assert!(status.success(), "redis-cli {args:?} failed: {out}");
        assert_eq!(out.trim(), expect, "redis-cli {args:?}");
    }
}

/// JSON: `pi` with a small n, params echoed byte for byte, requests without an id, the book's
/// spacing.
fn json_methods(server: &Server) {
    let mut c = server.client();
    c.label = "pi 1000".into();
    let id = c.next_id();
    let r = c.request(&Request {
        id: Some(id),
        command: Command::Pi { n: 1000 },
        payload: b"",
    });
    assert_eq!(r.status, Status::Ok, "pi: {}", r.message());
    assert_eq!(r.id, Some(id));
    let value: f64 = serde_json::from_slice(&r.payload).expect("pi result is a number");
    assert_eq!(value, json::pi(1000), "pi result");

    let raw = |c: &mut Client, label: &str, body: &str, result: &str, id: Option<u64>| {
        c.label = label.into();
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(body.as_bytes());
        c.send_raw(&frame);
        let r = c.read_response();
        assert_eq!(r.status, Status::Ok, "{label}: {}", r.message());
        assert_eq!(String::from_utf8_lossy(&r.payload), result, "{label}");
        assert_eq!(r.id, id, "{label}: id");
    };
    raw(
        &mut c,
        "params echoed byte for byte",
        r#"{"in":"ping","params":[1, 2.0, {"a": null}],"id":9}"#,
        r#"[1, 2.0, {"a": null}]"#,
        Some(9),
    );
    raw(
        &mut c,
        "the book's request, no id",
        r#"{"in": "ping", "params": "hi"}"#,
        r#""hi""#,
        None,
    );
    // pi with n = 0 is an empty sum: 0 (the text may be "-0.0": an empty f64 sum is -0.0).
    c.label = "pi 0".into();
    c.send_raw(&json_frame(r#"{"in": "pi", "params": 0}"#));
    let r = c.read_response();
    assert_eq!(
        (r.status, r.id),
        (Status::Ok, None),
        "pi 0: {}",
        r.message()
    );
    let value: f64 = serde_json::from_slice(&r.payload).expect("pi result is a number");
    assert_eq!(value, 0.0, "pi 0");
}

/// One malformed input and how the server must answer it.
struct ErrorCase {
    name: &'static str,
    bytes: Vec<u8>,
    /// Text the error message must contain.
    message: String,
    /// Fatal: the reply is followed by EOF. Otherwise the connection stays usable.
    fatal: bool,
    /// The id the ERROR reply carries (binary: 0 when unreadable; JSON: absent then).
    id: Option<u64>,
}

fn case(
    name: &'static str,
    bytes: Vec<u8>,
    message: &str,
    fatal: bool,
    id: Option<u64>,
) -> ErrorCase {
    ErrorCase {
        name,
        bytes,
        message: message.to_owned(),
        fatal,
        id,
    }
}

fn binary_frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn json_frame(body: &str) -> Vec<u8> {
    let mut f = (body.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(body.as_bytes());
    f
}

fn varint(v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_uvarint(&mut out, v);
    out
}

/// Every error rule of `docs/protocol.md` for `protocol`, with its documented wording.
fn error_cases(protocol: Protocol, max: usize) -> Vec<ErrorCase> {
    let too_big = format!("frame length {} exceeds max_frame {max}", max + 1);
    let zero = format!("frame length 0 is invalid (must be 1..={max}, max_frame {max})");
    match protocol {
        Protocol::Binary => {
            let body = |parts: &[&[u8]]| binary_frame(&parts.concat());
            vec![
                case("binary length 0", vec![0; 4], &zero, true, Some(0)),
                case(
                    "binary length 0xffffffff",
                    vec![0xff; 4],
                    &format!("frame length 4294967295 exceeds max_frame {max}"),
                    true,
                    Some(0),
                ),
                case(
                    "binary length max_frame + 1 (header only)",
                    (max as u32 + 1).to_be_bytes().to_vec(),
                    &too_big,
                    true,
                    Some(0),
                ),
                case(
                    "binary unknown op",
                    body(&[&[0x09, 0x05, 0x00]]),
                    "unknown op 0x09 (expected 0x01 ECHO, 0x02 SLEEP, 0x03 SPIN, 0x10 HELLO, 0x11 INCR, 0x12 GET or 0x20 RECORD)",
                    false,
                    Some(5),
                ),
                case(
                    "binary ECHO with arg 1",
                    body(&[&[0x01, 0x06, 0x01], b"x"]),
                    "ECHO takes arg 0, got 1",
                    false,
                    Some(6),
                ),
                case(
                    "binary SLEEP over the limit",
                    body(&[&[0x02, 0x07], &varint(1_000_001)]),
                    "SLEEP arg 1000001 us exceeds the limit of 1000000 us",
                    false,
                    Some(7),
                ),
                case(
                    "binary SPIN over the limit",
                    body(&[&[0x03, 0x08], &varint(1_000_001)]),
                    "SPIN arg 1000001 us exceeds the limit of 1000000 us",
                    false,
                    Some(8),
                ),
                case(
                    "binary truncated id varint",
                    body(&[&[0x01, 0x80]]),
                    "malformed id: truncated varint (body ended inside it)",
                    false,
                    Some(0),
                ),
                case(
                    "binary missing arg",
                    body(&[&[0x01, 0x0a]]),
                    "malformed arg: truncated varint (body ended inside it)",
                    false,
                    Some(10),
                ),
                case(
                    "binary arg varint of 11 bytes",
                    body(&[&[0x01, 0x09], &[0x80; 10], &[0x00]]),
                    "malformed arg: varint longer than 10 bytes",
                    false,
                    Some(9),
                ),
                case(
                    "binary id above u64::MAX",
                    body(&[&[0x01], &[0xff; 9], &[0x02, 0x00]]),
                    "malformed id: varint value exceeds u64::MAX",
                    false,
                    Some(0),
                ),
            ]
        }
        Protocol::Resp => {
            let b = |s: &str| s.as_bytes().to_vec();
            let mut huge_command = b(&format!("*3\r\n$4\r\nECHO\r\n${max}\r\n"));
            huge_command.extend(std::iter::repeat_n(b'a', max));
            huge_command.extend_from_slice(format!("\r\n${max}\r\n").as_bytes());
            huge_command.extend(std::iter::repeat_n(b'b', 80 * 1024));
            let long_line = |prefix: &str| {
                let mut v = b(prefix);
                v.extend(std::iter::repeat_n(b'1', 64 * 1024 + 1));
                v
            };
            vec![
                case(
                    "RESP multibulk count not a number",
                    b("*abc\r\n"),
                    "Protocol error: invalid multibulk length",
                    true,
                    None,
                ),
                case(
                    "RESP multibulk count above 1048576",
                    b("*2000000\r\n"),
                    "Protocol error: invalid multibulk length",
                    true,
                    None,
                ),
                case(
                    "RESP multibulk count *3000000000",
                    b("*3000000000\r\n"),
                    "Protocol error: invalid multibulk length",
                    true,
                    None,
                ),
                case(
                    "RESP bulk length $-10",
                    b("*1\r\n$-10\r\n"),
                    "Protocol error: invalid bulk length",
                    true,
                    None,
                ),
                case(
                    "RESP bulk length $2000000000",
                    b("*1\r\n$2000000000\r\n"),
                    "Protocol error: invalid bulk length",
                    true,
                    None,
                ),
                case(
                    "RESP bulk length $blabla",
                    b("*1\r\n$blabla\r\n"),
                    "Protocol error: invalid bulk length",
                    true,
                    None,
                ),
                case(
                    "RESP bulk length not a number",
                    b("*1\r\n$abc\r\n"),
                    "Protocol error: invalid bulk length",
                    true,
                    None,
                ),
                case(
                    "RESP negative bulk length",
                    b("*1\r\n$-1\r\n"),
                    "Protocol error: invalid bulk length",
                    true,
                    None,
                ),
                case(
                    "RESP bulk length max_frame + 1 (header only)",
                    b(&format!("*1\r\n${}\r\n", max + 1)),
                    "Protocol error: invalid bulk length",
                    true,
                    None,
                ),
                case(
                    "RESP array element not a bulk",
                    b("*1\r\n:4\r\n"),
                    "Protocol error: expected '$', got ':'",
                    true,
                    None,
                ),
                case(
                    "RESP bulk not followed by CRLF",
                    b("*1\r\n$4\r\nPINGxx"),
                    "Protocol error: bulk string not followed by CRLF",
                    true,
                    None,
                ),
                case(
                    "RESP inline line over 64 KiB",
                    long_line(""),
                    "Protocol error: too big inline request",
                    true,
                    None,
                ),
                case(
                    "RESP multibulk header over 64 KiB",
                    long_line("*"),
                    "Protocol error: too big multibulk count",
                    true,
                    None,
                ),
                case(
                    "RESP bulk header over 64 KiB",
                    long_line("*1\r\n$"),
                    "Protocol error: too big bulk count",
                    true,
                    None,
                ),
                case(
                    "RESP command over max_frame + 64 KiB",
                    huge_command,
                    &format!("Protocol error: command larger than max_frame {max}"),
                    true,
                    None,
                ),
                case(
                    "RESP unknown command",
                    b("*1\r\n$3\r\nFOO\r\n"),
                    "unknown command 'FOO'",
                    false,
                    None,
                ),
                case(
                    "RESP unknown inline command",
                    b("FOO bar\r\n"),
                    "unknown command 'FOO'",
                    false,
                    None,
                ),
                case(
                    "RESP PING with two arguments",
                    b("*3\r\n$4\r\nPING\r\n$1\r\na\r\n$1\r\nb\r\n"),
                    "wrong number of arguments for 'ping' command",
                    false,
                    None,
                ),
                case(
                    "RESP ECHO without an argument",
                    b("*1\r\n$4\r\nECHO\r\n"),
                    "wrong number of arguments for 'echo' command",
                    false,
                    None,
                ),
                case(
                    "RESP inline ECHO without an argument",
                    b("ECHO\r\n"),
                    "wrong number of arguments for 'echo' command",
                    false,
                    None,
                ),
            ]
        }
        Protocol::Json => vec![
            case(
                "JSON body not JSON",
                json_frame("hello"),
                "body is not valid JSON",
                true,
                None,
            ),
            case(
                "JSON body truncated",
                json_frame(r#"{"in":"ping""#),
                "body is not valid JSON",
                true,
                None,
            ),
            case("JSON length 0", vec![0; 4], &zero, true, None),
            case(
                "JSON length 0xffffffff",
                vec![0xff; 4],
                &format!("frame length 4294967295 exceeds max_frame {max}"),
                true,
                None,
            ),
            case(
                "JSON length max_frame + 1 (header only)",
                (max as u32 + 1).to_le_bytes().to_vec(),
                &too_big,
                true,
                None,
            ),
            case(
                "JSON unknown method",
                json_frame(r#"{"in":"nope","params":1,"id":3}"#),
                "unknown method 'nope'",
                false,
                Some(3),
            ),
            case(
                "JSON missing in",
                json_frame(r#"{"params":1,"id":4}"#),
                r#"bad request: missing "in""#,
                false,
                Some(4),
            ),
            case(
                "JSON negative id",
                json_frame(r#"{"in":"ping","params":1,"id":-1}"#),
                "id must be an unsigned integer",
                false,
                None,
            ),
            case(
                "JSON string id",
                json_frame(r#"{"in":"ping","params":1,"id":"x"}"#),
                "id must be an unsigned integer",
                false,
                None,
            ),
            case(
                "JSON pi n too big",
                json_frame(r#"{"in":"pi","params":50000001,"id":5}"#),
                "pi: params must be an integer n with 0 <= n <= 50000000",
                false,
                Some(5),
            ),
            case(
                "JSON pi n not a number",
                json_frame(r#"{"in":"pi","params":"x","id":6}"#),
                "pi: params must be an integer",
                false,
                Some(6),
            ),
            case(
                "JSON body not an object",
                json_frame("[1,2]"),
                "bad request: body must be an object",
                false,
                None,
            ),
        ],
    }
}

/// Every error rule, each on a fresh connection, while a client connected before keeps being
/// served after each one.
fn error_rules(server: &Server, model: &Model, expected: &mut Expected) {
    let mut other = model.connect(server);
    other.label = "the other client".into();
    other.echo(b"before the errors");
    for case in error_cases(server.protocol, server.max_frame) {
        let mut c = model.connect(server);
        c.label = case.name.into();
        c.send_raw(&case.bytes);
        let r = c.read_response();
        assert_eq!(r.status, Status::Error, "{}: {r:?}", case.name);
        assert!(
            r.message().contains(&case.message),
            "{}: error message {:?} should contain {:?}",
            case.name,
            r.message(),
            case.message
        );
        if server.protocol != Protocol::Resp {
            assert_eq!(r.id, case.id, "{}: id of the ERROR reply", case.name);
        }
        if case.fatal {
            expected.protocol_errors += 1;
            c.expect_eof();
        } else {
            expected.errors += 1;
            c.echo(b"still usable");
        }
        drop(c);
        other.label = format!("the other client, after {}", case.name);
        other.echo(b"unaffected");
    }
}
