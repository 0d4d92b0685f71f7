//! First contact: what a person meets who starts a server with no flags and points Redis's
//! tools at it, or points them at a server in the wrong `--protocol` (issue 12).
//!
//! - With default flags (`--protocol auto`), every model answers `redis-cli ping` and
//!   `redis-cli echo`, a hand-written RESP client, and a binary client on another connection
//!   at the same time: each connection's first byte picks its protocol.
//! - `redis-benchmark` against a default server prints no "Could not fetch server CONFIG"
//!   warning (it gets its `CONFIG GET` answers), and the server counts no error.
//! - A RESP client at a server in explicit binary or JSON mode gets the protocol's error and a
//!   close, and the server's log says "this looks like RESP", at most once a second.
//!
//! Tests that need `redis-cli` or `redis-benchmark` say they skip when the tool is missing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use echolab_protocol::{Command, Protocol, Request, Status};

/// The log line a RESP client at a binary or JSON server causes.
const HINT: &str = "this looks like RESP: start the server with --protocol resp (or auto)";

/// One test per model and check, so they run in parallel and fail separately.
macro_rules! model_table {
    ($($module:ident => $variant:expr),* $(,)?) => {
        $(
            mod $module {
                use super::*;

                #[test]
                fn default_flags_serve_redis_cli_and_binary_at_once() {
                    super::default_flags_serve_redis_cli_and_binary_at_once(&$variant);
                }

                #[test]
                fn resp_at_a_binary_server_is_hinted_once_a_second() {
                    super::resp_at_a_fixed_server_is_hinted(&$variant, Protocol::Binary);
                }
            }
        )*
    };
}

every_model!(model_table);

/// Runs `redis-cli -p PORT args` and asserts it prints `expect`; false (after saying so) when
/// redis-cli is not installed.
fn redis_cli(server: &Server, test: &str, args: &[&str], expect: &str) -> bool {
    let port = server.addr.port().to_string();
    let mut argv = vec!["-h", "127.0.0.1", "-p", &port];
    argv.extend_from_slice(args);
    let Some((status, out)) = run_tool("redis-cli", &argv, IO_TIMEOUT) else {
        skip(&format!("{test}: redis-cli"), "redis-cli is not on PATH");
        return false;
    };
    assert!(
        status.success(),
        "{test}: redis-cli {args:?} failed: {out}\n{}",
        server.log()
    );
    assert_eq!(out.trim(), expect, "{test}: redis-cli {args:?}");
    true
}

/// A server started with no `--protocol` serves binary and RESP clients side by side: a
/// binary connection and a RESP connection held open together, each answered in its own
/// protocol, interleaved, and `redis-cli` on a third connection meanwhile.
fn default_flags_serve_redis_cli_and_binary_at_once(variant: &Model) {
    let test = format!("{} / default flags", variant.name);
    let server = variant.start(&[]);
    // The harness's default client speaks binary to an auto server.
    assert_eq!(server.protocol, Protocol::Binary);

    let mut binary = variant.client(&server);
    binary.label = format!("{test}: binary client");
    binary.echo(b"binary, first");

    // A RESP client beside it, on its own connection (accepted, so with SO_REUSEPORT it is not
    // stuck behind the worker that holds the binary one).
    let mut resp = Client::connect_accepted(server.addr, Protocol::Resp, variant.may_queue);
    resp.label = format!("{test}: RESP client");
    let pong = resp.request(&Request {
        id: None,
        command: Command::Ping,
        payload: b"",
    });
    assert_eq!((pong.status, &pong.payload[..]), (Status::Ok, &b"PONG"[..]));
    resp.echo(b"resp, first");
    // Inline, as telnet and redis-benchmark's PING_INLINE send it.
    resp.send_raw(b"PING\r\n");
    assert_eq!(resp.read_response().payload, b"PONG");

    // Interleaved: neither connection's protocol leaks into the other's.
    binary.echo(b"binary, second");
    resp.echo(b"resp, second");

    // The real tool. Where a connection can queue behind a busy worker (prefork with
    // SO_REUSEPORT: the kernel picks the worker by hashing the connection, and redis-cli's
    // port cannot be chosen), the held clients go first, or redis-cli could wait for them.
    let (binary, resp) = if variant.may_queue {
        drop((binary, resp));
        (None, None)
    } else {
        (Some(binary), Some(resp))
    };
    if redis_cli(&server, &test, &["ping"], "PONG") {
        redis_cli(&server, &test, &["echo", "hi"], "hi");
        redis_cli(
            &server,
            &test,
            &["config", "get", "appendonly"],
            "appendonly\nno",
        );
    }
    if let (Some(mut binary), Some(mut resp)) = (binary, resp) {
        binary.echo(b"binary, after redis-cli");
        resp.echo(b"resp, after redis-cli");
    }

    let stopped = server.stop();
    stopped.assert_clean(&test);
    assert_eq!(
        stopped.stats()["protocol"],
        "auto",
        "{test}: stats protocol"
    );
    assert_eq!(stopped.total("errors"), 0, "{test}: {}", stopped.stats());
    assert_eq!(
        stopped.total("protocol_errors"),
        0,
        "{test}: {}",
        stopped.stats()
    );
    assert!(
        !stopped.log.contains(HINT),
        "{test}: an auto server has no RESP client to hint about:\n{}",
        stopped.log
    );
}

/// The bytes `redis-cli ping` sends.
const REDIS_CLI_PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// Connects, sends what `redis-cli ping` sends, and returns everything the server answers
/// until it closes the connection.
fn resp_ping_until_eof(server: &Server) -> Vec<u8> {
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("SO_RCVTIMEO");
    stream.write_all(REDIS_CLI_PING).expect("write");
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .unwrap_or_else(|e| panic!("the server should answer and close: {e}"));
    answer
}

/// A RESP client at a server in explicit `protocol` (binary or JSON) mode gets that
/// protocol's ERROR reply and a close, as before; now the server also says why in its log,
/// at most once a second, however many such connections come (and, in the forking models,
/// whichever process serves them: the limit is kept in memory they all share).
fn resp_at_a_fixed_server_is_hinted(variant: &Model, protocol: Protocol) {
    let test = format!("{} / RESP at --protocol {protocol}", variant.name);
    let server = variant.start(&["--protocol", protocol.name()]);
    const CONNECTIONS: u32 = 10;
    let started = Instant::now();
    for i in 0..CONNECTIONS {
        let answer = resp_ping_until_eof(&server);
        // Binary's ERROR frame starts with its length's zero top byte; JSON's with its
        // little-endian length's low byte. Either way, not RESP.
        assert!(
            !answer.is_empty() && !answer.starts_with(b"+") && !answer.starts_with(b"-"),
            "{test}: connection {i} got {answer:?}"
        );
        if protocol == Protocol::Binary {
            assert_eq!(answer[0], 0, "{test}: a binary ERROR frame");
        }
    }
    // The hint is logged as a connection ends, which the server may still be doing.
    wait_until(Duration::from_secs(10), "the RESP hint in the log", || {
        server.log().contains(HINT)
    });
    let stopped = server.stop();
    let elapsed = started.elapsed();
    stopped.assert_clean(&test);
    let hints = stopped.log.matches(HINT).count();
    // One for the first connection, plus at most one per further second the test took.
    let bound = 1 + elapsed.as_secs() as usize;
    assert!(
        (1..=bound).contains(&hints),
        "{test}: {hints} hints for {CONNECTIONS} connections in {elapsed:?} (at most {bound})\n{}",
        stopped.log
    );
    assert_eq!(
        stopped.total("protocol_errors"),
        u64::from(CONNECTIONS),
        "{test}: each RESP connection is one fatal protocol error"
    );
}

/// JSON's first byte says nothing, so the hint looks at two: a RESP client at a JSON server
/// is hinted at too (one model is enough: the check is in the shared request step).
#[test]
fn resp_at_a_json_server_is_hinted() {
    resp_at_a_fixed_server_is_hinted(&THREAD, Protocol::Json);
}

/// A binary client whose first frame is bad (a zero length) is told so, and the log stays
/// quiet: the hint is only for what looks like RESP.
#[test]
fn a_bad_binary_frame_is_not_taken_for_resp() {
    let test = "bad binary frame at --protocol binary";
    let server = Server::start(fork_bin(), &["--protocol", "binary"]);
    let mut c = server.client();
    c.label = test.into();
    c.send_raw(&[0, 0, 0, 0]);
    let r = c.read_response();
    assert_eq!(r.status, Status::Error, "{test}: {r:?}");
    c.expect_eof();
    let stopped = server.stop();
    stopped.assert_clean(test);
    assert_eq!(stopped.total("protocol_errors"), 1);
    assert!(!stopped.log.contains(HINT), "{test}:\n{}", stopped.log);
}

/// The models `redis-benchmark -c 10` can finish against. It holds its ten connections open
/// for the whole run and waits for every reply, so a model with four workers (the pool,
/// prefork) would serve four and leave six queued until the run ends, which it never does.
/// Those run with `-c 4`, one connection per worker, except prefork with SO_REUSEPORT, where
/// the kernel may hash two of the four onto one worker and the same wait follows.
macro_rules! benchmark_table {
    ($($name:ident => ($variant:expr, $clients:expr)),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                redis_benchmark_gets_its_config(&$variant, $clients);
            }
        )*
    };
}

benchmark_table! {
    redis_benchmark_thread_per_connection => (THREAD, 10),
    redis_benchmark_thread_pool => (THREAD_POOL, 4),
    redis_benchmark_fork => (FORK, 10),
    redis_benchmark_prefork_shared => (PREFORK_SHARED, 4),
    redis_benchmark_prefork_locked => (PREFORK_LOCKED, 4),
    redis_benchmark_eventloop_select => (EVENTLOOP_SELECT, 10),
    redis_benchmark_eventloop_poll => (EVENTLOOP_POLL, 10),
    redis_benchmark_eventloop_epoll => (EVENTLOOP_EPOLL, 10),
}

/// `redis-benchmark -q -n 2000 -c N -t ping` against a server with default flags: no
/// "Could not fetch server CONFIG" warning, and no error in the server's counts (before
/// CONFIG GET was answered, each run cost two unknown-command errors).
fn redis_benchmark_gets_its_config(variant: &Model, clients: u32) {
    let test = format!("{} / redis-benchmark", variant.name);
    let server = variant.start(&[]);
    let port = server.addr.port().to_string();
    let clients = clients.to_string();
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-q",
        "-n",
        "2000",
        "-c",
        &clients,
        "-t",
        "ping",
    ];
    // Generous: two tests of 2000 requests take well under a second, but debug builds on a
    // loaded two-core machine are slow, and a hang is what this bound is for.
    let Some((status, out)) = run_tool("redis-benchmark", &args, Duration::from_secs(120)) else {
        skip(&test, "redis-benchmark is not on PATH");
        return;
    };
    assert!(
        status.success(),
        "{test}: redis-benchmark failed: {out}\n{}",
        server.log()
    );
    assert!(
        !out.contains("Could not fetch server CONFIG"),
        "{test}: redis-benchmark warned:\n{out}"
    );
    // -q prints one line per test, after progress lines that end in \r.
    for name in ["PING_INLINE", "PING_MBULK"] {
        assert!(
            out.contains(&format!("{name}: ")) && out.contains("requests per second"),
            "{test}: no {name} result in:\n{out}"
        );
    }
    let stopped = server.stop();
    stopped.assert_clean(&test);
    let stats = stopped.stats();
    assert_eq!(stopped.total("errors"), 0, "{test}: {stats}");
    assert_eq!(stopped.total("protocol_errors"), 0, "{test}: {stats}");
    // Two tests of 2000 PINGs, and the two CONFIG GETs, all answered as requests.
    assert!(
        stopped.total("requests") >= 4002,
        "{test}: requests {stats}"
    );
}
