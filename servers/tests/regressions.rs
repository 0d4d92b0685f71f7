//! Regression tests, one per bug found in review, each named after the bug. Each was seen
//! failing against the code before its fix (see the commit that fixed it).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventloop_bin, group, live_children, prefork_bin, thread_bin, wait_until, Server};
use echolab_protocol::{Command as Op, Protocol, Request, Status, DEFAULT_MAX_FRAME};
use nix::sys::signal::{kill, killpg, Signal};

/// Workers idle in accept() watch no pipe; before PR_SET_PDEATHSIG they lived on after the
/// parent was SIGKILLed, holding the port.
#[test]
fn regression_prefork_workers_die_with_a_killed_parent() {
    let bin = prefork_bin();
    for mode in ["shared", "locked", "reuseport"] {
        let server = Server::start(bin, &["--workers", "2", "--accept", mode]);
        let pgrp = server.pid().as_raw();
        wait_until(Duration::from_secs(5), "two workers", || {
            live_children(server.pid()).len() == 2
        });
        kill(server.pid(), Signal::SIGKILL).expect("kill parent");
        // Orphans are reparented and may linger as zombies if nothing reaps them; what must
        // not remain is a *running* worker.
        wait_until(
            Duration::from_secs(5),
            &format!("{mode}: workers to exit"),
            || group(pgrp).iter().all(|p| p.state == 'Z' || p.pid == pgrp),
        );
    }
}

/// A Ctrl-C reaches the whole process group. Idle workers used to exit on SIGINT before the
/// parent saw it, and the parent counted and restarted them as deaths.
#[test]
fn regression_prefork_ctrl_c_is_not_a_worker_death() {
    let bin = prefork_bin();
    let server = Server::start(bin, &["--workers", "2"]);
    wait_until(Duration::from_secs(5), "two workers", || {
        live_children(server.pid()).len() == 2
    });
    let since = std::time::Instant::now();
    killpg(server.pid(), Signal::SIGINT).expect("killpg");
    let stopped = server.finish(since);
    assert!(stopped.status.success(), "{}", stopped.log);
    assert!(
        !stopped.log.contains("restarting"),
        "a worker was restarted:\n{}",
        stopped.log
    );
    let stats = stopped.stats.expect("stats file");
    for w in stats["workers"].as_array().expect("workers") {
        assert_eq!(w["restarts"], 0, "{stats}");
    }
}

/// Replies to a pipelined batch were all held until the whole batch had executed, so an ECHO
/// sent before a SLEEP waited for the SLEEP: in the blocking handler, and again in the event
/// loop (where the loop is blocked either way, but the ECHO's reply was ready before the first
/// SLEEP started). The ECHO's reply must come while the SLEEPs run.
fn reply_before_a_pipelined_sleep_is_not_held_back(bin: &str, args: &[&str]) {
    let server = Server::start(bin, args);
    let mut client = server.client();
    // One write, so the server reads all three at once: an ECHO, then two seconds of SLEEP.
    let codec = Protocol::Binary.codec(DEFAULT_MAX_FRAME);
    let mut wire = Vec::new();
    for (id, command) in [
        (1, Op::Echo),
        (2, Op::Sleep { micros: 1_000_000 }),
        (3, Op::Sleep { micros: 1_000_000 }),
    ] {
        let payload: &[u8] = if id == 1 { b"first" } else { b"" };
        codec
            .encode_request(
                &Request {
                    id: Some(id),
                    command,
                    payload,
                },
                &mut wire,
            )
            .expect("encode");
    }
    client.send_raw(&wire);
    client.set_read_timeout(Duration::from_millis(1500));
    let first = client.read_response();
    assert_eq!(
        (first.id, first.status, first.payload.as_slice()),
        (Some(1), Status::Ok, &b"first"[..]),
        "{bin}"
    );
    client.set_read_timeout(Duration::from_secs(10));
    assert_eq!(client.read_response().id, Some(2));
    assert_eq!(client.read_response().id, Some(3));
    server.stop().assert_clean(bin);
}

#[test]
fn regression_reply_before_a_pipelined_sleep_is_not_held_back() {
    reply_before_a_pipelined_sleep_is_not_held_back(thread_bin(), &[]);
}

#[test]
fn regression_eventloop_reply_before_a_pipelined_sleep_is_not_held_back() {
    reply_before_a_pipelined_sleep_is_not_held_back(eventloop_bin(), &["--backend", "epoll"]);
}

/// Values that overflowed clock or size arithmetic used to panic (exit 101), some only at
/// shutdown; zero timeouts broke every connection. All are now refused by the parser (exit 2).
#[test]
fn regression_absurd_flags_are_refused_not_panicked_on() {
    let mut cases: Vec<(&str, Vec<&str>)> = vec![
        (thread_bin(), vec!["--pool", "18446744073709551615"]),
        (thread_bin(), vec!["--grace", "9300000000000000000"]),
        (thread_bin(), vec!["--write-timeout", "0"]),
        (thread_bin(), vec!["--idle-timeout", "0"]),
        (thread_bin(), vec!["--max-frame", "10"]),
        (thread_bin(), vec!["--protocol", "xml"]),
    ];
    cases.push((eventloop_bin(), vec!["--max-pending-output", "0"]));
    cases.push((prefork_bin(), vec!["--stats-interval", "0"]));
    cases.push((prefork_bin(), vec!["--workers", "0"]));
    for (bin, args) in cases {
        let out = Command::new(bin)
            .args(&args)
            .args(["--addr", "127.0.0.1:0"])
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bin} {args:?}: {stderr}");
        assert!(
            stderr.contains("error: invalid value"),
            "{bin} {args:?}: {stderr}"
        );
    }
}

/// The event loop read each connection until `EAGAIN` with no limit, so a client that kept
/// sending pipelined PINGs (and kept reading the replies) held the loop for as long as it
/// flooded: another client's single PING waited 7.7 s in review. Each connection now reads
/// at most 64 KiB per turn. The flood here lasts 4 s; every PING beside it must come back in
/// well under that (2 s is a liveness bound, not a benchmark).
#[test]
fn regression_eventloop_flooding_client_does_not_starve_others() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    for backend in ["epoll", "poll"] {
        let server = Server::start(
            eventloop_bin(),
            &["--protocol", "resp", "--backend", backend],
        );
        let addr = server.addr;
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut flood = std::net::TcpStream::connect(addr).expect("connect flooder");
                flood.set_nonblocking(true).expect("nonblocking");
                let burst = b"PING\r\n".repeat(5000);
                let mut sink = vec![0u8; 1 << 20];
                let (mut written, until) = (0usize, Instant::now() + Duration::from_secs(4));
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    // Keep the pipeline full, whole bursts at a time, and read every reply.
                    match flood.write(&burst[written % burst.len()..]) {
                        Ok(n) => written += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => panic!("{backend}: flooder write: {e}"),
                    }
                    while let Ok(n) = flood.read(&mut sink) {
                        if n == 0 {
                            break;
                        }
                    }
                }
            });
            let mut client = server.client();
            client.set_read_timeout(Duration::from_secs(2));
            std::thread::sleep(Duration::from_millis(300)); // pacing: let the flood build up
            for _ in 0..5 {
                let started = Instant::now();
                client.send_raw(b"PING\r\n");
                let reply = client.read_response();
                assert_eq!(reply.payload, b"PONG", "{backend}");
                assert!(
                    started.elapsed() < Duration::from_secs(2),
                    "{backend}: PING took {:?}",
                    started.elapsed()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            stop.store(true, Ordering::Relaxed);
        });
        server.stop().assert_clean(backend);
    }
}
