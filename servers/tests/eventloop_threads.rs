//! What `server-eventloop --threads N` (one event loop per thread, each with its own
//! `SO_REUSEPORT` listener) promises beyond the model table every model passes (conformance,
//! first contact, lifecycle, robustness, sessions run `eventloop --threads 2`): the kernel
//! spreads connections over every loop's listener, and the stats say so per loop (by tid);
//! SIGTERM, read by the main thread alone, reaches every loop, and each answers its clients
//! mid-request before the threads are joined and the report written; the process has exactly
//! one thread per loop besides the main one, whatever the connections, and gives back every
//! descriptor a connection took; and `--threads` outside 1..=256 is a usage error.
//!
//! The threaded counterpart of prefork_loops.rs, which asks the same of processes.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use echolab_protocol::{Command, Request};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::Value;

/// Starts `n` epoll loops on threads, plus `extra` flags.
fn start(n: usize, extra: &[&str]) -> Server {
    let n = n.to_string();
    let mut args = vec!["--backend", "epoll", "--threads", &n];
    args.extend_from_slice(extra);
    Server::start(eventloop_bin(), &args)
}

/// The server's threads (`/proc/PID/task`): the main one and one per loop.
fn threads(pid: Pid) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |dir| dir.count())
}

/// The per-loop `field`s of the stats.
fn per_loop(stats: &Value, field: &str) -> Vec<u64> {
    stats["workers"]
        .as_array()
        .unwrap_or_else(|| panic!("stats has no workers list\n{stats:#}"))
        .iter()
        .map(|w| {
            w[field]
                .as_u64()
                .unwrap_or_else(|| panic!("loop has no {field}\n{w:#}"))
        })
        .collect()
}

/// 64 connections from 64 source ports, all held open at once, reach both loops' listeners
/// (a loop missed by all 64 has odds of about 1 in 10^19), and the report lists each loop by
/// a tid of its own, with its wake-ups, and the fairness of the spread.
#[test]
fn connections_spread_over_every_loop() {
    let server = start(2, &[]);
    let held: Vec<Client> = (0..64)
        .map(|i| {
            let mut c = server.client();
            c.label = format!("connection {i}");
            c.echo(b"spread");
            c
        })
        .collect();
    drop(held);
    let stopped = server.stop();
    stopped.assert_clean("--threads 2");
    let stats = stopped.stats();
    assert_eq!(stats["model"], "eventloop-threads/epoll", "{stats:#}");
    assert_eq!(stats["extra"]["threads"], 2, "{stats:#}");
    assert_eq!(stats["extra"]["backend"], "epoll", "{stats:#}");
    let accepted = per_loop(stats, "accepted");
    assert_eq!(accepted.len(), 2, "one entry per loop\n{stats:#}");
    assert!(
        accepted.iter().all(|&a| a > 0),
        "every loop should have accepted some: {accepted:?}\n{stats:#}"
    );
    assert_eq!(accepted.iter().sum::<u64>(), 64, "{stats:#}");
    assert_eq!(
        per_loop(stats, "closed"),
        accepted,
        "each loop closed what it accepted before the report\n{stats:#}"
    );
    let tids: HashSet<u64> = per_loop(stats, "tid").into_iter().collect();
    assert!(
        tids.len() == 2 && !tids.contains(&0) && !tids.contains(&u64::from(stopped_pid(stats))),
        "each loop has a tid of its own, not the main thread's: {tids:?}\n{stats:#}"
    );
    assert!(
        stats["workers"][0].get("pid").is_none(),
        "threads have no pid of their own\n{stats:#}"
    );
    let woken: u64 = per_loop(stats, "wakeups").iter().sum();
    assert_eq!(woken, stats["wakeups"]["wakeups"].as_u64().unwrap_or(0));
    let jain = stats["accept_fairness_jain"].as_f64().unwrap_or(0.0);
    assert!(jain > 0.5, "reuseport fairness {jain}\n{stats:#}");
}

/// The server's pid, from its report.
fn stopped_pid(stats: &Value) -> u32 {
    stats["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or_else(|| panic!("stats has no pid\n{stats:#}"))
}

/// SIGTERM with 24 clients each mid-request (a SLEEP read and running, or queued behind
/// another on its loop), over both loops: every one is answered, then sees EOF, and the server
/// exits cleanly within --grace. The signal reaches the main thread only; the loops learn of
/// it from the shutdown broadcast. A SLEEP blocks its loop, so the 24 run 12 or so back to back
/// on each: 40 ms each keeps that well inside the grace period.
#[test]
fn sigterm_drains_every_loop_mid_request() {
    let server = start(2, &[]);
    let port = server.addr.port();
    let codec = server.protocol.codec(server.max_frame);
    let mut clients = Vec::new();
    for i in 0..24 {
        let mut c = server.client();
        c.label = format!("client {i}, mid-request at SIGTERM");
        c.echo(b"before");
        let mut wire = Vec::new();
        let request = Request {
            id: Some(1000 + i),
            command: Command::Sleep { micros: 40_000 },
            payload: b"slow",
        };
        codec.encode_request(&request, &mut wire).expect("encode");
        c.send_raw(&wire);
        clients.push(c);
    }
    for c in &clients {
        wait_until(Duration::from_secs(5), "the SLEEP to be read", || {
            request_taken(port, c)
        });
    }
    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.read_response();
        c.assert_echo(&r, 1000 + i as u64, b"slow");
        c.expect_eof();
    }
    let stopped = server.finish(signalled);
    stopped.assert_clean("sigterm across loop threads");
    let stats = stopped.stats();
    let accepted = per_loop(stats, "accepted");
    assert!(
        accepted.iter().all(|&a| a > 0),
        "the 24 clients should have been spread over both loops: {accepted:?}\n{stats:#}"
    );
    assert_eq!(stopped.total("accepted"), 24);
    assert_eq!(stopped.total("closed"), 24);
    assert_eq!(
        stopped.total("requests"),
        48,
        "an echo and a SLEEP each\n{stats:#}"
    );
}

/// One thread per loop besides the main one, from start to finish: connections add none.
/// After 40 connections have come and gone, the process holds exactly the descriptors it held
/// before the first (every accepted socket closed and deregistered, on whichever loop took
/// it), and SIGTERM ends every thread (a clean exit: the report comes after the joins).
#[test]
fn no_thread_or_descriptor_left() {
    let server = start(3, &[]);
    let pid = server.pid();
    // `listening on` comes once every listener is registered with its loop, a moment before
    // the loops' threads start (connections wait in the listeners' queues meanwhile).
    wait_until(
        Duration::from_secs(5),
        "the main thread and 3 loops",
        || threads(pid) == 4,
    );
    // Taken before any connection: a loop opens everything it keeps (its poller, its spare
    // descriptor, its listener) before `listening on`, so nothing is opened once, later, to
    // be mistaken for a leak. (Taken after a warm-up connection, it could catch that
    // connection's socket before its loop had seen the EOF and closed it.)
    let before = open_fds(pid);
    let held: Vec<Client> = (0..40).map(|_| server.client()).collect();
    assert_eq!(threads(pid), 4, "connections start no thread");
    for mut c in held {
        c.echo(b"leak?");
    }
    let settled = eventually(Duration::from_secs(5), || open_fds(pid) == before);
    assert!(
        settled,
        "descriptors before {before:?}, after {:?}",
        open_fds(pid)
    );
    let stopped = server.stop();
    stopped.assert_clean("--threads 3");
    let stats = stopped.stats();
    assert_eq!(per_loop(stats, "accepted").len(), 3, "{stats:#}");
    assert_eq!(stopped.total("accepted"), 40);
    assert_eq!(stopped.total("closed"), 40);
}

/// `--threads` outside 1..=256, or not a number: a usage error (status 2) that gives the range.
#[test]
fn bad_thread_counts_are_refused() {
    let cases: [(&str, &str); 5] = [
        ("0", "0 is not in 1..=256"),
        ("257", "257 is not in 1..=256"),
        ("-1", "-1 is not in 1..=256"),
        ("many", "invalid digit"),
        ("", "invalid value"),
    ];
    for (value, expected) in cases {
        let args = ["--threads", value];
        let (status, output) =
            run_tool(eventloop_bin(), &args, Duration::from_secs(10)).expect("ran");
        assert_eq!(status.code(), Some(2), "{args:?}: {output}");
        assert!(output.contains("invalid value"), "{args:?}: {output}");
        assert!(output.contains(expected), "{args:?}: {output}");
    }
}
