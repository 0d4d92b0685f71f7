//! loadgen against servers that are wrong, slow, silent, absent or dying.
//!
//! A load generator earns trust by catching what a server gets wrong, so each test here
//! scripts a fake binary-protocol server that breaks one rule — a flipped payload byte, a
//! wrong id, replies out of order, half a reply, no reply, an ERROR reply, garbage, a socket
//! it never reads — and checks that loadgen names that error kind (in the JSON and in the
//! summary), exits 1, and ends within its duration plus its timeout: a broken server must
//! never hang the client. Then the same for no server at all, for a real server killed
//! mid-run, for a real server stopped (SIGSTOP) with its accept queue full (connect timeout),
//! for a fake that resets the connection, and for a source address this machine does not have
//! (the client's own problem, not the server's).

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{dead_addr, loadgen, FakeConn, FakeServer, Loadgen, Next, Req, Run, Server, SLACK};
use nix::sys::signal::Signal;

/// Runs loadgen with one connection for `duration` against `fake`, plus `extra` flags, and
/// checks the run ends in time, with exit 1 and at least one error of `kind`.
fn run_against(fake: &FakeServer, kind: &str, duration: &str, timeout: &str, extra: &str) -> Run {
    let run = loadgen(&format!(
        "--addr {} -c 1 -d {duration} --warmup 0 --timeout {timeout} {extra}",
        fake.addr()
    ));
    run.assert_within(parse(duration) + parse(timeout) + SLACK);
    run.assert_error(kind);
    run
}

fn parse(d: &str) -> Duration {
    echolab_protocol::units::parse_duration(d).expect("a duration in a test")
}

/// Serves every request with `reply(conn, request)` until the peer leaves.
fn serve(reply: fn(&FakeConn, &Req) -> Vec<u8>) -> FakeServer {
    FakeServer::start(move |mut c| {
        while let Some(req) = c.request() {
            let bytes = reply(&c, &req);
            if !c.send(&bytes) {
                return;
            }
        }
    })
}

#[test]
fn a_flipped_payload_byte_is_a_mismatch() {
    let fake = serve(|c, req| {
        let mut payload = req.payload.clone();
        let last = payload.len() - 1;
        payload[last] ^= 0x01;
        c.reply_bytes(req, req.id, &payload)
    });
    let run = run_against(&fake, "mismatch", "500ms", "1s", "");
    // Every reply was wrong, so none was verified; the server did answer, so each request
    // may have run: indeterminate, not failed.
    assert_eq!(run.u("counts.ok"), 0, "{}", run.output());
    assert!(run.u("counts.indeterminate") > 0, "{}", run.output());
    assert_eq!(run.u("counts.failed"), 0, "{}", run.output());
}

#[test]
fn a_wrong_id_is_a_mismatch() {
    let fake = serve(|c, req| c.reply_bytes(req, req.id.map(|id| id + 1000), &req.payload));
    let run = run_against(&fake, "mismatch", "500ms", "1s", "");
    assert_eq!(run.u("counts.ok"), 0, "{}", run.output());
}

/// Two pipelined requests answered in swapped order: each reply is correct for the other
/// request, and only the id (and payload stamp) tells them apart.
#[test]
fn replies_out_of_order_are_mismatches() {
    let fake = FakeServer::start(|mut c| {
        let mut held: Option<Req> = None;
        loop {
            match c.next(Duration::from_millis(100)) {
                Next::Req(req) => match held.take() {
                    None => held = Some(req),
                    Some(first) => {
                        let mut out = c.echo_bytes(&req);
                        out.extend(c.echo_bytes(&first));
                        if !c.send(&out) {
                            return;
                        }
                    }
                },
                // A lone request with no partner coming: answer it, in order.
                Next::Idle => {
                    if let Some(first) = held.take() {
                        let out = c.echo_bytes(&first);
                        if !c.send(&out) {
                            return;
                        }
                    }
                }
                Next::Closed => return,
            }
        }
    });
    let run = run_against(&fake, "mismatch", "500ms", "1s", "-p 2");
    assert!(run.u("errors.mismatch") >= 2, "{}", run.output());
}

/// Half a reply, then the server closes: the reply can never complete, and loadgen must say
/// so at once (eof) rather than wait out its timeout. The half reply and the FIN arrive in
/// one segment, so the test does not depend on when loadgen's thread wakes up.
///
/// Regression: loadgen once stopped reading after a short read ("a new edge will come"), but
/// a FIN that came in the same segment raises no new edge, so the end of the stream went
/// unseen until the timeout and was reported as read_timeout_partial.
#[test]
fn half_a_reply_then_close_is_eof() {
    let fake = FakeServer::start(|mut c| {
        if let Some(req) = c.request() {
            let reply = c.echo_bytes(&req);
            c.send_and_close(&reply[..reply.len() / 2]);
        }
    });
    let run = run_against(&fake, "eof", "500ms", "1s", "");
    assert!(
        run.stdout.contains("in the middle of a reply"),
        "{}",
        run.output()
    );
    // Noticed at once: no request waited for its timeout.
    assert_eq!(run.u("errors.read_timeout_partial"), 0, "{}", run.output());
}

#[test]
fn no_reply_is_a_read_timeout_empty() {
    let fake = FakeServer::start(|mut c| while c.request().is_some() {});
    let run = run_against(&fake, "read_timeout_empty", "500ms", "300ms", "");
    assert_eq!(run.u("counts.ok"), 0, "{}", run.output());
    // Written, never answered: it may have run.
    assert!(run.u("counts.indeterminate") > 0, "{}", run.output());
    assert_eq!(run.u("counts.unwritten"), 0, "{}", run.output());
}

#[test]
fn half_a_reply_then_silence_is_a_read_timeout_partial() {
    let fake = FakeServer::start(|mut c| {
        if let Some(req) = c.request() {
            let reply = c.echo_bytes(&req);
            c.send(&reply[..reply.len() / 2]);
            c.hold();
        }
    });
    run_against(&fake, "read_timeout_partial", "500ms", "300ms", "");
}

#[test]
fn an_error_reply_is_counted() {
    let fake = serve(|c, req| c.error_bytes(req, "server busy"));
    let run = run_against(&fake, "error_reply", "500ms", "1s", "");
    assert!(
        run.stdout.contains("server busy"),
        "the example should quote the message\n{}",
        run.output()
    );
}

#[test]
fn garbage_is_a_protocol_error() {
    let fake = serve(|_, _| vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    run_against(&fake, "protocol", "500ms", "1s", "");
}

/// A server that accepts and never reads: 64 pipelined 512 KiB requests fill both socket
/// buffers, and the blocked write must time out rather than wait forever.
#[test]
fn a_server_that_never_reads_is_a_write_timeout() {
    let fake = FakeServer::start(|c| c.hold());
    let run = run_against(
        &fake,
        "write_timeout",
        "1s",
        "500ms",
        "--payload 512K -p 64",
    );
    assert_eq!(run.u("counts.ok"), 0, "{}", run.output());
}

/// Nothing listens: every connect is refused, and the run gives up long before its duration
/// (five refusals per connection, about 0.3 s of backoff), says why in a sentence, and quotes
/// the identical refusal once, not once per connection.
#[test]
fn connection_refused_with_a_duration() {
    let addr = dead_addr();
    let run = loadgen(&format!(
        "--addr {addr} -c 4 -d 10s --warmup 0 --timeout 1s"
    ));
    run.assert_within(Duration::from_secs(2) + SLACK);
    run.assert_error("connect_refused");
    assert_eq!(run.u("counts.ok"), 0, "{}", run.output());
    assert!(
        run.stdout.contains("no reply was verified"),
        "{}",
        run.output()
    );
    assert!(
        run.stdout
            .contains(&format!("cause       nothing is listening at {addr}")),
        "{}",
        run.output()
    );
    let refusals = run
        .stdout
        .lines()
        .filter(|l| l.contains("e.g. connect_refused"))
        .count();
    assert_eq!(
        refusals,
        1,
        "one example of the one failure\n{}",
        run.output()
    );
    // No latency table of zeros.
    assert!(!run.stdout.contains("p50 0µs"), "{}", run.output());
}

/// A server that speaks another protocol: loadgen's binary requests are never answered by a
/// RESP server (no CRLF ever ends its "inline command"). The run gives up after one
/// --timeout, not after its duration, and names the likely cause.
#[test]
fn another_protocol_fails_fast_and_says_so() {
    let s = Server::start("server-eventloop", &["--protocol", "resp"]);
    let run = loadgen(&format!(
        "--addr {} -c 4 -d 20s --warmup 0 --timeout 500ms",
        s.addr()
    ));
    run.assert_code(1);
    run.assert_within(Duration::from_secs(3) + SLACK);
    assert_eq!(run.u("counts.ok"), 0, "{}", run.output());
    assert!(
        run.stdout
            .contains("may speak another protocol than binary"),
        "{}",
        run.output()
    );
}

/// Nothing listens and the run is limited only by `-n`: failed connects use up the budget,
/// so the run ends instead of retrying forever.
#[test]
fn connection_refused_with_only_a_request_count() {
    let addr = dead_addr();
    let run = loadgen(&format!(
        "--addr {addr} -c 10 -n 100 --warmup 0 --timeout 1s"
    ));
    // Ten slots, ten refusals each, with a backoff doubling from 10 ms to 200 ms: about 1.1 s.
    run.assert_within(Duration::from_secs(3) + SLACK);
    run.assert_error("connect_refused");
    let refused = run.u("errors.connect_refused");
    assert!(
        refused <= 110,
        "{refused} refusals for a budget of 100\n{}",
        run.output()
    );
    assert_eq!(run.u("counts.ok"), 0, "{}", run.output());
}

/// A real server killed (SIGKILL) one second into a three-second run: the connections break,
/// reconnects are refused, and the run still ends on time and reports what it measured.
#[test]
fn a_server_killed_mid_run() {
    let mut server = Server::start("server-thread", &[]);
    let lg = Loadgen::start(&format!(
        "--addr {} -c 4 -d 3s --warmup 0 --timeout 1s",
        server.addr()
    ));
    thread::sleep(Duration::from_secs(1));
    let killed_at = Instant::now();
    server.kill_now();
    let run = lg.wait();
    eprintln!("loadgen ended {:?} after the kill", killed_at.elapsed());
    run.assert_within(Duration::from_secs(3 + 1) + SLACK);
    run.assert_code(1);
    assert!(
        run.json.is_some(),
        "the report was not written\n{}",
        run.output()
    );
    let broken = run.errors_of(&["reset", "eof", "connect_refused"]);
    assert!(
        broken > 0,
        "no reset, eof or connect_refused\n{}",
        run.output()
    );
    assert!(
        run.u("counts.ok") > 0,
        "the first second's replies count\n{}",
        run.output()
    );
    let intervals = run.get("intervals").as_array().expect("intervals");
    assert!(!intervals.is_empty(), "{}", run.output());
    assert!(
        intervals
            .iter()
            .any(|i| i["errors"].as_u64().unwrap_or(0) > 0),
        "the intervals should show the errors\n{}",
        run.output()
    );
    assert!(run.stdout.contains("FAILED"), "{}", run.output());
}

/// A real server stopped with SIGSTOP, its accept queue already full (`--backlog 1`: the
/// kernel queues backlog + 1 completed connections, then drops further SYNs): loadgen's
/// connects go unanswered and each ends as a connect timeout after `--timeout`.
#[test]
fn a_stopped_server_with_a_full_backlog_is_a_connect_timeout() {
    let server = Server::start("server-thread", &["--backlog", "1"]);
    server.signal(Signal::SIGSTOP);
    // Fill the queue: these complete their handshakes in the kernel and wait there.
    let fillers: Vec<std::net::TcpStream> = (0..4)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(
                &server.addr().parse().expect("addr"),
                Duration::from_millis(300),
            )
            .ok()
        })
        .collect();
    let run = loadgen(&format!(
        "--addr {} -c 2 -d 1s --warmup 0 --timeout 300ms",
        server.addr()
    ));
    server.signal(Signal::SIGCONT);
    drop(fillers);
    run.assert_within(Duration::from_secs(1) + Duration::from_millis(300) + SLACK);
    run.assert_error("connect_timeout");
    assert_eq!(run.u("counts.ok"), 0, "{}", run.output());
}

/// A fake that reads the request, then closes with `SO_LINGER` 0 (an RST instead of a FIN):
/// the connection reset, named as such.
#[test]
fn a_reset_is_a_reset() {
    let fake = FakeServer::start(|mut c| {
        if c.request().is_some() {
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            nix::sys::socket::setsockopt(&c.stream, nix::sys::socket::sockopt::Linger, &linger)
                .expect("SO_LINGER");
        }
    });
    run_against(&fake, "reset", "500ms", "1s", "");
}

/// A source address this machine does not have (TEST-NET-1, RFC 5737): bind(2) fails with
/// EADDRNOTAVAIL before a packet is sent. That is the client's own resource problem, never
/// counted against the server; the run ends on time and says so.
#[test]
fn a_source_address_the_machine_lacks_is_a_local_resource_error() {
    let fake = FakeServer::echo();
    let run = run_against(
        &fake,
        "local_resource",
        "500ms",
        "1s",
        "--source-ips 192.0.2.1",
    );
    assert_eq!(run.u("counts.ok"), 0, "{}", run.output());
    assert!(
        fake.peers().is_empty(),
        "nothing should have reached the server\n{}",
        run.output()
    );
}

/// A server that answers every request with an ERROR reply ("server busy") has answered: the
/// run does not give up (a client driving a server at its connection cap must keep coming
/// back), and its cause line says what the replies were.
#[test]
fn error_replies_to_everything_are_named_not_given_up_on() {
    let fake = serve(|c, req| c.error_bytes(req, "server busy"));
    let run = loadgen(&format!(
        "--addr {} -c 2 -d 1s --warmup 0 --timeout 1s",
        fake.addr()
    ));
    run.assert_code(1);
    run.assert_error("error_reply");
    assert!(!run.stdout.contains("stopped early"), "{}", run.output());
    assert!(
        run.stdout
            .contains("refused every request with an ERROR reply"),
        "{}",
        run.output()
    );
}
