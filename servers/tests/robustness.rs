//! Hostile and broken clients, for every model: what one bad client (or a thousand) can do to
//! the others. A lab server that one client can stop teaches the wrong lesson, so each model
//! must hold up the way Redis and nginx do, or, where a model cannot by its nature (a prefork
//! with N workers and N+10 stuck clients), the test shows the difference and its limit.
//!
//! **Slowloris.** A client that trickles one byte every few hundred milliseconds is never idle
//! for long but never finishes a request. `--request-timeout` bounds the time from a request's
//! first byte to its last: then the client gets an ERROR reply ("request timeout") and EOF.
//! With a thousand such clients, a good client on the thread and event-loop models (one loop,
//! forked loops or loops on threads) is served throughout; on prefork's blocking workers, which
//! the tricklers all hold, it is served once the deadlines free them.
//!
//! **Header-only flood.** A thousand connections each send only a frame header declaring
//! `max_frame` (1 MiB) and nothing more. A server that allocated by the declared length would
//! hold a gigabyte; echolab's read buffers grow with bytes that arrived, so the server's memory
//! grows by about a small read buffer per connection. Measured as PSS over the server's process
//! tree (RSS would count a forked server's shared pages once per process).
//!
//! **A killed parent.** When the parent of a forking server is killed with SIGKILL (no
//! handler runs), every child must still exit within 2 s — the children watch the shutdown
//! pipe, whose write end only the parent held, and prefork workers also have
//! `PR_SET_PDEATHSIG` — and a new server must be able to bind the port at once: no orphan
//! keeps the listener, or serves clients nobody supervises.
//!
//! **200 clients leaving at once.** Signals coalesce: 200 children exiting in the same
//! instant may raise one SIGCHLD, and a server that reaps one child per signal leaves 199
//! zombies. server-fork drains `waitpid(WNOHANG)` until nothing is left.
//!
//! **Out of descriptors (blocking models).** Under `RLIMIT_NOFILE` 64 and 200 idle clients,
//! the place it bites is the acceptor. server-thread accepts until `accept` fails with
//! `EMFILE`, then pauses accepting (100 ms at a time), so the excess clients wait in the
//! listen backlog rather than being closed; server-fork's parent closes its copy of every
//! connection it hands to a child, so it never runs out and serves all 200; prefork workers
//! hold one connection each and the rest wait in the backlog. In every case the server's CPU
//! stays near zero while saturated, the condition is logged at most once a second, and once
//! the clients leave a new one is served within a second. (The event loop's version, with
//! its spare-descriptor trick, is in `tests/eventloop.rs`, for one loop, a pre-forked loop
//! worker and loops on threads.)
//!
//! **A child or worker killed mid-request.** SIGKILL to the process serving a SLEEP: its
//! client sees the connection end (EOF or reset), the parent reaps the dead process at once
//! (no zombie), a prefork pool is whole again within a second, and another client served
//! meanwhile notices nothing.
//!
//! **No more processes or threads.** In a pids cgroup whose `pids.max` leaves room for three
//! connections, the fourth client makes `fork` (server-fork) or `thread::Builder::spawn`
//! (server-thread) fail with `EAGAIN`: the server logs it, counts the client as refused,
//! answers "server busy", and serves clients again once the first ones leave. The test
//! creates the cgroup itself (cgroup v1 `/sys/fs/cgroup/pids` or v2 `/sys/fs/cgroup`) and
//! skips, saying why, where it cannot (and fails under `ECHOLAB_NO_SKIP=1`, as in CI).
//!
//! **A client that never reads.** It pipelines 64 KiB echoes and takes no reply. Once the
//! socket buffers fill, a blocking server's write waits; `--write-timeout` ends that wait and
//! releases the thread or process. The event loop stops reading the client at
//! `--max-pending-output` and closes it once its output has made no progress for
//! `--write-timeout` (Redis's soft output-buffer limit). Either way the server's memory
//! stays bounded and other clients are served meanwhile.
//!
//! **Half-close.** A client that sends its requests and then `shutdown(SHUT_WR)` (as `nc -N`
//! or an HTTP/1.0 client does) still gets every reply, then EOF: the server must not take the
//! client's FIN for "gone".
//!
//! **Recycling.** `--max-requests-per-worker` replaces prefork workers without a client
//! noticing.
//!
//! The figures docs/robustness.md quotes (times, memory growth, counts) are printed on stderr
//! (`--nocapture`) and, when `ECHOLAB_FIGURES` names a file, appended to it
//! ([`figures::record`]); `scripts/robustness-tests.py` runs this file that way a few times
//! and keeps the figures as a results/ run. Recording changes no assertion.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use echolab_protocol::{Command, Protocol, Request, DEFAULT_MAX_FRAME};
use nix::unistd::Pid;

/// The request deadline the slowloris tests give the servers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How often each trickling client sends its next byte: well inside the idle timeout.
const TRICKLE_EVERY: Duration = Duration::from_millis(300);

/// Opens `n` connections that each send the first byte of a binary frame header, then one
/// more byte every [`TRICKLE_EVERY`] (a 4-byte length that announces 1000 bytes, then the
/// body a byte at a time: the request never completes within the deadline). Returns the
/// sockets; `trickle` keeps them going until each is closed by the server.
fn slow_clients(server: &Server, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = TcpStream::connect_timeout(&server.addr, IO_TIMEOUT)
                .unwrap_or_else(|e| panic!("trickling client {i}: connect: {e}"));
            s.set_nodelay(true).expect("TCP_NODELAY");
            s.write_all(&[0]).expect("first byte of the header");
            s
        })
        .collect()
}

/// The rest of the header (a 1000-byte body) and the ECHO op, one byte at a time; then the
/// payload, a byte at a time, which the deadline never lets finish.
const TRICKLE: [u8; 4] = [0, 0x03, 0xe8, 0x01];

/// Sends each still-open client its next byte every [`TRICKLE_EVERY`] until all are closed or
/// `until` passes; returns how many the server closed (a write failed or EOF was read) and
/// when the last of them was found closed.
fn trickle(conns: &mut [TcpStream], until: Instant) -> (usize, Instant) {
    let mut open: Vec<bool> = vec![true; conns.len()];
    let mut step = 0usize;
    let mut last_closed = Instant::now();
    for c in conns.iter() {
        c.set_nonblocking(true).expect("nonblocking");
    }
    while open.iter().any(|o| *o) && Instant::now() < until {
        let byte = TRICKLE.get(step).copied().unwrap_or(b'x');
        for (c, o) in conns.iter_mut().zip(open.iter_mut()).filter(|(_, o)| **o) {
            // A closed connection shows as EOF (or a reset) on read; the error reply that came
            // before it is read and dropped here (see `reply_then_eof` for its content).
            let mut buf = [0u8; 256];
            let closed = loop {
                match c.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(_) => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            };
            if closed || c.write(&[byte]).is_err() {
                *o = false;
                last_closed = Instant::now();
            }
        }
        step += 1;
        thread::sleep(TRICKLE_EVERY);
    }
    (open.iter().filter(|o| !**o).count(), last_closed)
}

/// One trickling client, read to the end: the server's ERROR reply, then EOF.
fn reply_then_eof(server: &Server) -> Result<String, String> {
    let mut c = Client::connect(server.addr, Protocol::Binary);
    c.send_raw(&[0, 0]);
    c.set_read_timeout(REQUEST_TIMEOUT * 3);
    match c.try_read_response() {
        Ok(Some(r)) => {
            let text = String::from_utf8_lossy(&r.payload).into_owned();
            match c.try_read_response() {
                Ok(None) => Ok(text),
                other => Err(format!("expected EOF after the reply, got {other:?}")),
            }
        }
        other => Err(format!("expected an ERROR reply, got {other:?}")),
    }
}

/// `n` trickling clients and one good client sending an echo every 20 ms; every echo must be
/// answered. `served_throughout` (thread, fork, event loop): each within the request deadline,
/// so the tricklers never held it up; otherwise (pool, prefork: every worker held) the good
/// client's first reply waits for deadlines to free a worker.
fn slowloris(v: &Model, n: usize, served_throughout: bool) {
    raise_nofile_limit();
    let timeout = format!("{}ms", REQUEST_TIMEOUT.as_millis());
    let server = v.start(&["--request-timeout", &timeout, "--idle-timeout", "60s"]);
    // The ERROR reply and EOF, checked once on a lone client before the crowd arrives.
    let said = reply_then_eof(&server).unwrap_or_else(|e| panic!("{}: {e}", v.name));
    assert_eq!(said, "request timeout", "{}: the reply's text", v.name);

    let started = Instant::now();
    let mut conns = slow_clients(&server, n);
    let deadline = started + REQUEST_TIMEOUT * (2 + (n as u32) / 4) + Duration::from_secs(10);
    thread::scope(|s| {
        let good = s.spawn(|| {
            let mut c = Client::connect(server.addr, Protocol::Binary);
            c.label = format!("{}: the good client", v.name);
            let mut worst = Duration::ZERO;
            let mut answered = 0;
            let until = Instant::now() + REQUEST_TIMEOUT * 2;
            while Instant::now() < until || answered == 0 {
                let sent = Instant::now();
                c.echo(b"still served?");
                worst = worst.max(sent.elapsed());
                answered += 1;
                thread::sleep(Duration::from_millis(20));
            }
            (answered, worst, started.elapsed())
        });
        let (closed, last_closed) = trickle(&mut conns, deadline);
        let (answered, worst, good_done) = good.join().expect("the good client");
        assert_eq!(
            closed, n,
            "{}: {closed} of {n} trickling clients closed by the request deadline",
            v.name
        );
        let took = last_closed - started;
        eprintln!(
            "{}: {n} trickling clients all closed after {took:?}; the good client got {answered} \
             replies, the slowest in {worst:?}, done after {good_done:?}",
            v.name
        );
        figures::record(v.name, "trickling clients", n, "count");
        figures::record_secs(v.name, "all trickling clients closed after", took);
        figures::record(v.name, "good client's replies", answered, "count");
        figures::record_secs(v.name, "good client's slowest reply", worst);
        figures::record_secs(v.name, "good client done after", good_done);
        // Blocked behind the tricklers, the good client would wait for their deadline: a
        // model that serves it throughout answers faster than that, a bounded one cannot.
        if served_throughout {
            assert!(
                worst < REQUEST_TIMEOUT,
                "{}: the good client waited {worst:?} for a reply beside {n} trickling clients",
                v.name
            );
        } else {
            assert!(
                worst >= REQUEST_TIMEOUT,
                "{}: with every worker held, the good client should have waited for a \
                 deadline, but its slowest reply took {worst:?}",
                v.name
            );
        }
    });
    let stopped = server.stop();
    stopped.assert_clean(v.name);
    assert!(
        stopped.total("request_timeouts") > n as u64,
        "{}: request_timeouts should count the {n} tricklers and the lone one\n{:#}",
        v.name,
        stopped.stats()
    );
    assert_eq!(
        stopped.total("idle_timeouts"),
        0,
        "{}: the request deadline, not the idle timeout, closed them",
        v.name
    );
}

#[test]
fn slowloris_thread() {
    slowloris(&THREAD, 1000, true);
}

#[test]
fn slowloris_fork() {
    slowloris(&FORK, 300, true);
}

#[test]
fn slowloris_eventloop_epoll() {
    slowloris(&EVENTLOOP_EPOLL, 1000, true);
}

#[test]
fn slowloris_eventloop_poll() {
    slowloris(&EVENTLOOP_POLL, 1000, true);
}

#[test]
fn slowloris_eventloop_select() {
    // select(2) cannot watch descriptors past FD_SETSIZE (1024): 900 leaves room.
    slowloris(&EVENTLOOP_SELECT, 900, true);
}

/// Prefork with 4 workers and workers + 10 tricklers: every worker is held until its
/// trickler's deadline, so the good client waits in the accept queue behind them and is served
/// once deadlines have freed workers (about three rounds of the deadline and its lingering
/// close: 7.5 s in results/2026-12-07-robustness-tests).
#[test]
fn slowloris_prefork_shared() {
    slowloris(&PREFORK_SHARED, 14, false);
}

#[test]
fn slowloris_thread_pool() {
    slowloris(&THREAD_POOL, 14, false);
}

// Event-loop workers and loops on threads multiplex like the single loop: the tricklers hold
// no worker, so the good client is served throughout, whichever loop takes it.
#[test]
fn slowloris_prefork_loop_shared() {
    slowloris(&PREFORK_LOOP_SHARED, 1000, true);
}

#[test]
fn slowloris_prefork_loop_locked() {
    slowloris(&PREFORK_LOOP_LOCKED, 1000, true);
}

#[test]
fn slowloris_eventloop_threads() {
    slowloris(&EVENTLOOP_THREADS, 1000, true);
}

// io_uring: a thousand multishot receives armed at once, each trickled byte a completion.
#[test]
fn slowloris_uring() {
    slowloris(&URING, 1000, true);
}

// ---------------------------------------------------------------------------------------------
// Recycling prefork workers

/// `--max-requests-per-worker 20` on 4 workers while 4 clients each open 15 connections of 10
/// echoes, and one more client holds a connection for 100 echoes (past the limit: a worker
/// retires only when its connection ends). Every request must be answered; workers must have
/// retired and been replaced (`recycled`), none died (`restarts` 0), and no zombie is left.
fn prefork_recycles_without_a_failed_request(v: &Model) {
    let server = v.start(&["--max-requests-per-worker", "20"]);
    thread::scope(|s| {
        let long = s.spawn(|| {
            let mut c = v.client(&server);
            c.label = format!("{}: the long connection", v.name);
            for i in 0..100 {
                c.echo(format!("long {i}").as_bytes());
            }
        });
        for t in 0..4 {
            let server = &server;
            s.spawn(move || {
                for k in 0..15 {
                    let mut c = v.client(server);
                    c.label = format!("{}: client {t}, connection {k}", v.name);
                    for i in 0..10 {
                        c.echo(format!("{t}/{k}/{i}").as_bytes());
                    }
                }
            });
        }
        long.join().expect("the long connection");
    });
    // A worker that retired after the last connection may be a zombie for a moment, until the
    // parent's SIGCHLD handling reaps it: none may stay one.
    let pid = server.pid();
    let reaped = eventually(Duration::from_secs(2), || {
        children(pid).iter().all(|p| p.state != 'Z')
    });
    let stopped = server.stop();
    stopped.assert_clean(v.name);
    let stats = stopped.stats();
    let workers = stats["workers"].as_array().expect("a workers list");
    let sum = |field: &str| {
        workers
            .iter()
            .map(|w| w[field].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!(
        stopped.total("requests"),
        4 * 15 * 10 + 100,
        "{}: every request answered\n{stats:#}",
        v.name
    );
    // 700 requests at 20 per worker life: about 30 retirements; at least 20 however they fall.
    assert!(
        sum("recycled") >= 20,
        "{}: workers should have retired and been replaced\n{stats:#}",
        v.name
    );
    figures::record(
        v.name,
        "requests answered",
        stopped.total("requests"),
        "count",
    );
    figures::record(v.name, "workers recycled", sum("recycled"), "count");
    figures::record(
        v.name,
        "workers restarted after dying",
        sum("restarts"),
        "count",
    );
    assert_eq!(sum("restarts"), 0, "{}: no worker died\n{stats:#}", v.name);
    assert!(reaped, "{}: a retired worker stayed a zombie", v.name);
}

#[test]
fn prefork_recycles_without_a_failed_request_shared() {
    prefork_recycles_without_a_failed_request(&PREFORK_SHARED);
}

#[test]
fn prefork_recycles_without_a_failed_request_locked() {
    prefork_recycles_without_a_failed_request(&PREFORK_LOCKED);
}

#[test]
fn prefork_recycles_without_a_failed_request_reuseport() {
    prefork_recycles_without_a_failed_request(&PREFORK_REUSEPORT);
}

// No event-loop rows: `--max-requests-per-worker` is refused with `--worker eventloop`
// (prefork_loops.rs tests the refusal). A loop worker holds many clients at once, so recycling
// it would mean draining them all, which the blocking worker's "finish this client, then exit"
// does not teach.

// ---------------------------------------------------------------------------------------------
// Half-close

/// 50 pipelined echoes (one of them a 64 KiB payload, so replies take more than one write),
/// then `shutdown(SHUT_WR)`: all 50 replies arrive, in order, then EOF.
fn half_close(v: &Model) {
    let server = v.start(&[]);
    let mut c = v.client(&server);
    c.label = format!("{}: half-closed client", v.name);
    let big = vec![b'h'; 64 * 1024];
    let payloads: Vec<Vec<u8>> = (0..50)
        .map(|i| {
            if i == 25 {
                big.clone()
            } else {
                format!("half {i}").into_bytes()
            }
        })
        .collect();
    for (i, p) in payloads.iter().enumerate() {
        c.send(&Request {
            id: Some(i as u64 + 1),
            command: Command::Echo,
            payload: p,
        });
    }
    c.stream()
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown(SHUT_WR)");
    for (i, p) in payloads.iter().enumerate() {
        let r = c.read_response();
        c.assert_echo(&r, i as u64 + 1, p);
    }
    c.expect_eof();
    drop(c);
    server.stop().assert_clean(v.name);
}

#[test]
fn half_close_every_model() {
    for v in ALL {
        half_close(v);
    }
}

// ---------------------------------------------------------------------------------------------
// Header-only flood

/// PSS of `pid` and all its descendants, KiB (`/proc/PID/smaps_rollup`).
fn tree_pss_kib(pid: i32) -> u64 {
    let own = pss_kib(Pid::from_raw(pid)).unwrap_or(0);
    let kids: u64 = children(Pid::from_raw(pid))
        .iter()
        .map(|c| tree_pss_kib(c.pid))
        .sum();
    own + kids
}

/// The most one header-only connection may add to the server's memory, KiB: an eighth of the
/// 1 MiB its header announces. Besides its 16 KiB read buffer, a connection costs what the
/// model charges for one — about 4 KiB in the event loop, a thread's touched stack (~13 KiB),
/// a forked child's copied pages (~60 KiB); allocating by the declared length would add
/// 1024 KiB to each.
const FLOOD_KIB_PER_CONNECTION: u64 = 128;

/// `n` connections each send a 4-byte header declaring `max_frame` bytes and stop. Once the
/// server has read every header (no unread bytes left on its side of any of them), its memory
/// may have grown by at most [`FLOOD_KIB_PER_CONNECTION`] per connection.
fn header_only_flood(v: &Model, n: usize) {
    raise_nofile_limit();
    let server = v.start(&[]);
    let port = server.addr.port();
    // One echo first, so the memory a first connection costs anyway is in the baseline.
    let mut warm = v.client(&server);
    warm.echo(b"before the flood");
    drop(warm);
    let before = tree_pss_kib(server.pid().as_raw());
    let header = (DEFAULT_MAX_FRAME as u32).to_be_bytes();
    let conns: Vec<TcpStream> = (0..n)
        .map(|i| {
            let mut s = TcpStream::connect_timeout(&server.addr, IO_TIMEOUT)
                .unwrap_or_else(|e| panic!("{}: flood connection {i}: {e}", v.name));
            s.write_all(&header).expect("the header");
            s
        })
        .collect();
    let ports: std::collections::HashSet<u16> = conns
        .iter()
        .map(|s| s.local_addr().expect("local address").port())
        .collect();
    let all_read = eventually(Duration::from_secs(30), || {
        let table = tcp_table();
        let read = table
            .iter()
            .filter(|r| {
                r.local == port && ports.contains(&r.remote) && r.rx_queue == 0 && r.inode != 0
            })
            .count();
        read == n
    });
    assert!(
        all_read,
        "{}: the server did not read all {n} headers",
        v.name
    );
    let after = tree_pss_kib(server.pid().as_raw());
    let grown = after.saturating_sub(before);
    eprintln!(
        "{}: {n} header-only connections: PSS {before} KiB -> {after} KiB ({} KiB per connection)",
        v.name,
        grown / n as u64
    );
    figures::record(v.name, "header-only connections", n, "count");
    figures::record(v.name, "PSS before the flood", before, "KiB");
    figures::record(v.name, "PSS after the flood", after, "KiB");
    figures::record(
        v.name,
        "PSS growth per connection",
        format_args!("{:.1}", grown as f64 / n as f64),
        "KiB",
    );
    assert!(
        grown <= FLOOD_KIB_PER_CONNECTION * n as u64,
        "{}: memory grew by {grown} KiB for {n} headers ({} KiB each): allocating by the declared length?",
        v.name,
        grown / n as u64
    );
    // The server still serves a good client, and frees the connections when they close.
    let mut c = v.client(&server);
    c.echo(b"after the flood");
    drop(conns);
    drop(c);
    server.stop().assert_clean(v.name);
}

#[test]
fn header_only_flood_thread() {
    header_only_flood(&THREAD, 1000);
}

#[test]
fn header_only_flood_fork() {
    header_only_flood(&FORK, 300);
}

#[test]
fn header_only_flood_eventloop_epoll() {
    header_only_flood(&EVENTLOOP_EPOLL, 1000);
}

#[test]
fn header_only_flood_eventloop_poll() {
    header_only_flood(&EVENTLOOP_POLL, 1000);
}

#[test]
fn header_only_flood_prefork_loop_shared() {
    header_only_flood(&PREFORK_LOOP_SHARED, 1000);
}

#[test]
fn header_only_flood_eventloop_threads() {
    header_only_flood(&EVENTLOOP_THREADS, 1000);
}

// io_uring: the receives share one ring of provided buffers (2 MiB in all), and each header
// is copied out of it into a read buffer as small as what arrived.
#[test]
fn header_only_flood_uring() {
    header_only_flood(&URING, 1000);
}

// ---------------------------------------------------------------------------------------------
// A parent killed with SIGKILL

/// Three clients each held by a child (fork) or a worker (prefork), then SIGKILL to the parent:
/// within 2 s no process of the server's group is left running, each client sees its
/// connection closed, and the port can be bound again at once.
fn parent_killed(v: &Model) {
    let server = v.start(&[]);
    let port = server.addr.port();
    let mut clients: Vec<Client> = (0..3)
        .map(|i| {
            let mut c = v.client(&server);
            c.label = format!("{}: client {i}, held when the parent died", v.name);
            c.echo(b"busy");
            c
        })
        .collect();
    let leader = server.pid();
    let killed = Instant::now();
    nix::sys::signal::kill(leader, nix::sys::signal::Signal::SIGKILL).expect("kill the parent");
    // The killed parent stays a zombie until this test reaps it (when `server` drops), and
    // exited orphans are zombies until init reaps them: what must not exist is a running one.
    let gone = eventually(Duration::from_secs(2), || {
        group(leader.as_raw())
            .iter()
            .all(|p| p.state == 'Z' || p.pid == leader.as_raw())
    });
    let took = killed.elapsed();
    let left: Vec<Proc> = group(leader.as_raw())
        .into_iter()
        .filter(|p| p.state != 'Z' && p.pid != leader.as_raw())
        .collect();
    assert!(
        gone,
        "{}: processes still running {took:?} after the parent was killed: {left:?}",
        v.name
    );
    eprintln!(
        "{}: every child gone {took:?} after SIGKILL to the parent",
        v.name
    );
    figures::record_secs(v.name, "every child gone after SIGKILL to the parent", took);
    std::net::TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| {
        panic!(
            "{}: port {port} cannot be bound again after the parent died: {e}",
            v.name
        )
    });
    for c in &mut clients {
        c.expect_eof();
    }
}

#[test]
fn parent_killed_fork() {
    parent_killed(&FORK);
}

#[test]
fn parent_killed_prefork_shared() {
    parent_killed(&PREFORK_SHARED);
}

#[test]
fn parent_killed_prefork_locked() {
    parent_killed(&PREFORK_LOCKED);
}

#[test]
fn parent_killed_prefork_reuseport() {
    parent_killed(&PREFORK_REUSEPORT);
}

// Event-loop workers: each asks the kernel for SIGTERM when its parent dies, as the blocking
// workers do, and a loop sees it on its self-pipe at once.

#[test]
fn parent_killed_prefork_loop_shared() {
    parent_killed(&PREFORK_LOOP_SHARED);
}

#[test]
fn parent_killed_prefork_loop_exclusive() {
    parent_killed(&PREFORK_LOOP_EXCLUSIVE);
}

#[test]
fn parent_killed_prefork_loop_reuseport() {
    parent_killed(&PREFORK_LOOP_REUSEPORT);
}

#[test]
fn parent_killed_prefork_loop_locked() {
    parent_killed(&PREFORK_LOOP_LOCKED);
}

// ---------------------------------------------------------------------------------------------
// 200 clients disconnecting at once

/// 200 connections, each served by its own child, all closed in one tight loop: within 2 s
/// the server has no child left, zombie or not, and its stats count 200 reaped.
#[test]
fn two_hundred_clients_leave_at_once_fork() {
    raise_nofile_limit();
    // A long idle timeout: on a loaded machine opening 200 connections can take a while, and
    // the first children must not leave on their own before the others arrive.
    let server = FORK.start(&["--idle-timeout", "10m"]);
    let mut clients: Vec<Client> = (0..200)
        .map(|i| {
            let mut c = FORK.client(&server);
            c.label = format!("fork: client {i}");
            c.echo(b"here");
            c
        })
        .collect();
    let pid = server.pid();
    assert_eq!(
        live_children(pid).len(),
        200,
        "fork: a child per connection"
    );
    for c in &mut clients {
        let _ = c.stream().shutdown(std::net::Shutdown::Both);
    }
    drop(clients);
    let left = Instant::now();
    let reaped = eventually(Duration::from_secs(2), || children(pid).is_empty());
    // Read at once, before the census below: the time the last child was found gone (to
    // within the 5 ms the check is repeated at).
    let took = left.elapsed();
    let kids = children(pid);
    let zombies = kids.iter().filter(|p| p.state == 'Z').count();
    assert!(
        reaped,
        "fork: {} children ({zombies} zombies) left {:?} after 200 clients closed at once",
        kids.len(),
        left.elapsed()
    );
    figures::record_secs("fork", "no child left after 200 clients closed", took);
    let stopped = server.stop();
    stopped.assert_clean("fork");
    let stats = stopped.stats();
    figures::record(
        "fork",
        "children forked",
        &stats["extra"]["children_forked"],
        "count",
    );
    figures::record(
        "fork",
        "children reaped",
        &stats["extra"]["children_reaped"],
        "count",
    );
    assert_eq!(
        stats["extra"]["children_reaped"], stats["extra"]["children_forked"],
        "fork: every child reaped\n{stats:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// Out of descriptors, blocking models

/// How many of 200 clients a blocking model serves at once under `RLIMIT_NOFILE` 64.
#[derive(Debug, Clone, Copy)]
enum WithinLimit {
    /// The accepting process holds every connection: as many as its descriptors allow
    /// (64 minus what it uses itself); the rest wait in the backlog.
    UpToTheLimit,
    /// Every connection is handed to a child and closed in the acceptor: all 200.
    All,
    /// One per worker: the rest wait in the backlog.
    Workers(usize),
}

/// 200 clients connect and stay idle against a server limited to 64 descriptors. Then, over
/// two seconds, the server must use under 15% of a core (a loop retrying `accept` on a
/// listener that stays readable would use all of it), nobody may have been closed, and the
/// number accepted must be what the model allows ([`WithinLimit`]), the rest waiting in the
/// listen queue; the server's log may mention the condition at most once a second. When the
/// 200 leave, a new client is served within a second.
fn out_of_descriptors(v: &Model, within: WithinLimit) {
    const NOFILE: u64 = 64;
    const CLIENTS: usize = 200;
    raise_nofile_limit();
    let mut args = v.args.to_vec();
    // A deep backlog, so that all 200 fit in the queue however few are accepted.
    args.extend(["--backlog", "512", "--idle-timeout", "10m"]);
    let server = Server::start_with_nofile((v.bin)(), &args, NOFILE);
    let (addr, pid) = (server.addr, server.pid());
    let started = Instant::now();
    let clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|i| {
            TcpStream::connect_timeout(&addr, IO_TIMEOUT)
                .unwrap_or_else(|e| panic!("{}: idle client {i}: {e}", v.name))
        })
        .collect();
    let ports: std::collections::HashSet<u16> = clients
        .iter()
        .map(|c| c.local_addr().expect("local address").port())
        .collect();
    // Connections from our clients, on the server's side: accepted (an inode) or queued (0).
    // One row per client port, live ones only (established, or still in the handshake).
    // /proc/net/tcp is not a snapshot: it is read in pieces while other tests' connections
    // come and go, and a row can come twice or not at all (CI saw 201 and 220 rows for 200
    // clients); and an earlier test's server may have had this port, with closed connections
    // (TIME_WAIT and the like) from ports ours now use.
    const ESTABLISHED: u8 = 1;
    const SYN_RECV: u8 = 3;
    let census = || {
        let mut ours = std::collections::HashMap::new();
        for r in tcp_table() {
            if r.local == addr.port()
                && ports.contains(&r.remote)
                && matches!(r.state, ESTABLISHED | SYN_RECV)
            {
                let inode = ours.entry(r.remote).or_insert(r.inode);
                *inode = (*inode).max(r.inode);
            }
        }
        let accepted = ours.values().filter(|&&inode| inode != 0).count();
        (accepted, ours.len() - accepted)
    };
    let expected = match within {
        WithinLimit::UpToTheLimit => None,
        WithinLimit::All => Some(CLIENTS),
        WithinLimit::Workers(n) => Some(n),
    };
    // Let the server take what it can, then watch it sit at its limit.
    let settled = eventually(Duration::from_secs(10), || match expected {
        Some(n) => census().0 == n,
        // Accepting until the descriptors are gone: the last one or two may be spare.
        None => census().0 > 0 && open_fds(pid).len() >= NOFILE as usize - 2,
    });
    let (accepted, queued) = census();
    assert!(
        settled,
        "{}: {accepted} accepted and {queued} queued of {CLIENTS} (expected {within:?})",
        v.name
    );
    let hz = clock_ticks_per_second();
    let tree_ticks = || tree_cpu_ticks(pid).unwrap_or(0);
    let before = tree_ticks();
    let from = Instant::now();
    thread::sleep(Duration::from_secs(2));
    let ticks = tree_ticks().saturating_sub(before);
    let window = from.elapsed();
    // A row the reading skipped is read again: every client must be seen within a second.
    let _ = eventually(Duration::from_secs(1), || {
        let (a, q) = census();
        a + q == CLIENTS
    });
    let (accepted_after, queued_after) = census();
    assert_eq!(
        accepted_after + queued_after,
        CLIENTS,
        "{}: every client is either served or waiting; none was closed",
        v.name
    );
    assert!(
        ticks * 100 < 15 * hz * window.as_secs().max(1),
        "{}: {ticks} clock ticks ({hz}/s) of CPU in {window:?} while out of descriptors: it spins",
        v.name
    );
    let log = server.log();
    let complaints = log
        .lines()
        .filter(|l| l.contains("Too many open files") || l.contains("EMFILE"))
        .count();
    let seconds = started.elapsed().as_secs() + 1;
    assert!(
        complaints as u64 <= seconds,
        "{}: {complaints} log lines about running out in {seconds} s: at most one a second\n{log}",
        v.name
    );
    eprintln!(
        "{}: {CLIENTS} idle clients under RLIMIT_NOFILE {NOFILE}: {accepted_after} accepted, \
         {queued_after} waiting in the backlog; server CPU {ticks} ticks in {window:?}; \
         {complaints} log lines",
        v.name
    );
    figures::record(v.name, "idle clients", CLIENTS, "count");
    figures::record(v.name, "accepted", accepted_after, "count");
    figures::record(v.name, "waiting in the backlog", queued_after, "count");
    figures::record(
        v.name,
        "server CPU while out of descriptors",
        ticks,
        "ticks",
    );
    figures::record_secs(v.name, "CPU window", window);
    figures::record(v.name, "clock ticks per second", hz, "ticks/s");
    figures::record(v.name, "log lines about running out", complaints, "count");
    figures::record(v.name, "log window, rounded up", seconds, "s");
    drop(clients);
    let left = Instant::now();
    let served = loop {
        let mut c = v.client(&server);
        c.set_read_timeout(Duration::from_secs(1));
        let id = c.next_id();
        let payload = b"after the crowd left";
        c.send(&Request {
            id: Some(id),
            command: Command::Echo,
            payload,
        });
        if let Ok(Some(r)) = c.try_read_response() {
            c.assert_echo(&r, id, payload);
            break left.elapsed();
        }
        assert!(
            left.elapsed() < Duration::from_secs(2),
            "{}: no client served {:?} after the 200 left",
            v.name,
            left.elapsed()
        );
    };
    figures::record_secs(v.name, "a new client served after the crowd left", served);
    assert!(
        served < Duration::from_secs(1),
        "{}: a new client was served only {served:?} after the 200 left",
        v.name
    );
    server.stop().assert_clean(v.name);
}

#[test]
fn out_of_descriptors_thread() {
    out_of_descriptors(&THREAD, WithinLimit::UpToTheLimit);
}

#[test]
fn out_of_descriptors_thread_pool() {
    // The pool's acceptor holds queued connections too: it runs out like the thread model.
    out_of_descriptors(&THREAD_POOL, WithinLimit::UpToTheLimit);
}

#[test]
fn out_of_descriptors_fork() {
    out_of_descriptors(&FORK, WithinLimit::All);
}

#[test]
fn out_of_descriptors_prefork_shared() {
    out_of_descriptors(&PREFORK_SHARED, WithinLimit::Workers(4));
}

#[test]
fn out_of_descriptors_prefork_locked() {
    out_of_descriptors(&PREFORK_LOCKED, WithinLimit::Workers(4));
}

// ---------------------------------------------------------------------------------------------
// A child or worker killed in the middle of a request

/// Client `victim` sends SLEEP 1 s (the most a request may ask); the process serving it is
/// killed with SIGKILL as soon as it has read it.
/// The victim must see its connection end within a second (no reply), the dead process must
/// be reaped within a second (no zombie), prefork must be back to 4 live workers within a
/// second, and `other`, connected before on another process, must be echoed before and after.
fn killed_mid_request(v: &Model, workers: Option<usize>) {
    let server = v.start(&[]);
    let (pid, port) = (server.pid(), server.addr.port());
    if let Some(n) = workers {
        wait_until(Duration::from_secs(5), "the workers", || {
            live_children(pid).len() == n
        });
    }
    let mut other = v.client(&server);
    other.label = format!("{}: the other client", v.name);
    other.echo(b"before");
    let (mut victim, owner) = if v.workers_multiplex() {
        // An event-loop worker serves many clients, and killing it ends them all: the victim
        // must be on another worker than `other`, which is then the one that must live on.
        let pids = live_children(pid);
        let inode = accepted_inode(port, other.local_port()).expect("the other's connection");
        let others = socket_owner(&pids, inode).expect("a process serves the other client");
        v.client_where(&server, &pids, |o| o != others)
    } else {
        let mut victim = v.client(&server);
        victim.echo(b"hello");
        let inode = accepted_inode(port, victim.local_port()).expect("the victim's connection");
        let owner = socket_owner(&live_children(pid), inode).expect("a process serves the victim");
        (victim, owner)
    };
    victim.label = format!("{}: the client whose server process is killed", v.name);
    victim.send(&Request {
        id: Some(100),
        command: Command::Sleep { micros: 1_000_000 },
        payload: b"never answered",
    });
    wait_until(Duration::from_secs(5), "the SLEEP to be read", || {
        request_taken(port, &victim)
    });
    nix::sys::signal::kill(Pid::from_raw(owner), nix::sys::signal::Signal::SIGKILL)
        .expect("kill the serving process");
    let killed = Instant::now();
    victim.set_read_timeout(Duration::from_secs(1));
    match victim.try_read_response() {
        Ok(None) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("{}: the victim got {other:?} instead of the end", v.name),
    }
    let ended = killed.elapsed();
    figures::record_micros(v.name, "the victim saw the end after SIGKILL", ended);
    let reaped = eventually(Duration::from_secs(1), || {
        !children(pid).iter().any(|p| p.pid == owner)
    });
    assert!(
        reaped,
        "{}: the killed process {owner} was not reaped within 1 s",
        v.name
    );
    if let Some(n) = workers {
        let whole = eventually(Duration::from_secs(1), || {
            let now = live_children(pid);
            now.len() == n && !now.contains(&owner)
        });
        assert!(
            whole,
            "{}: the pool is not back to {n} workers 1 s after the kill",
            v.name
        );
    }
    eprintln!(
        "{}: the victim saw its connection end {ended:?} after SIGKILL; reaped and restored within 1 s",
        v.name
    );
    other.echo(b"after");
    drop(other);
    server.stop().assert_clean(v.name);
}

#[test]
fn killed_mid_request_fork() {
    killed_mid_request(&FORK, None);
}

#[test]
fn killed_mid_request_prefork_shared() {
    killed_mid_request(&PREFORK_SHARED, Some(4));
}

#[test]
fn killed_mid_request_prefork_locked() {
    killed_mid_request(&PREFORK_LOCKED, Some(4));
}

#[test]
fn killed_mid_request_prefork_reuseport() {
    killed_mid_request(&PREFORK_REUSEPORT, Some(4));
}

#[test]
fn killed_mid_request_prefork_loop_shared() {
    killed_mid_request(&PREFORK_LOOP_SHARED, Some(4));
}

#[test]
fn killed_mid_request_prefork_loop_exclusive() {
    killed_mid_request(&PREFORK_LOOP_EXCLUSIVE, Some(4));
}

#[test]
fn killed_mid_request_prefork_loop_reuseport() {
    killed_mid_request(&PREFORK_LOOP_REUSEPORT, Some(4));
}

#[test]
fn killed_mid_request_prefork_loop_locked() {
    killed_mid_request(&PREFORK_LOOP_LOCKED, Some(4));
}

// ---------------------------------------------------------------------------------------------
// fork and thread creation failing (a pids cgroup)

/// A pids cgroup made for one test, removed when dropped (once its processes are gone).
struct PidsCgroup(std::path::PathBuf);

impl PidsCgroup {
    /// A new cgroup under the pids hierarchy, or why there can be none here.
    fn new(test: &str) -> Result<PidsCgroup, String> {
        let v1 = std::path::Path::new("/sys/fs/cgroup/pids");
        let v2 = std::path::Path::new("/sys/fs/cgroup");
        let root = if v1.is_dir() {
            v1
        } else if std::fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|w| w == "pids"))
        {
            v2
        } else {
            return Err("no pids cgroup controller is mounted".into());
        };
        let dir = root.join(format!("echolab-{test}-{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(PidsCgroup(dir))
    }

    /// Moves `pid` (and the threads and children it will have) into the cgroup.
    fn add(&self, pid: Pid) -> Result<(), String> {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("cannot move {pid} into {}: {e}", self.0.display()))
    }

    /// Tasks (processes and threads) now in the cgroup.
    fn current(&self) -> u64 {
        std::fs::read_to_string(self.0.join("pids.current"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Sets `pids.max`.
    fn set_max(&self, max: u64) -> Result<(), String> {
        std::fs::write(self.0.join("pids.max"), max.to_string())
            .map_err(|e| format!("cannot set pids.max: {e}"))
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        // rmdir(2) works once the cgroup is empty: the server was stopped (or killed) by now.
        let _ = eventually(Duration::from_secs(5), || {
            std::fs::remove_dir(&self.0).is_ok()
        });
    }
}

/// With room for exactly three more tasks, three clients are served (a child or a thread
/// each), the fourth and fifth get "server busy" and EOF, the server logs the failure and
/// counts them as refused; once the three leave, a new client is served again.
fn out_of_tasks(v: &Model) {
    let test = format!("out of tasks ({})", v.name);
    let cgroup = match PidsCgroup::new(&v.name.replace(|c: char| !c.is_ascii_alphanumeric(), "-")) {
        Ok(c) => c,
        Err(why) => return skip(&test, &why),
    };
    let server = v.start(&[]);
    if let Err(why) = cgroup.add(server.pid()) {
        return skip(&test, &why);
    }
    let room = 3;
    cgroup
        .set_max(cgroup.current() + room)
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    let mut served: Vec<Client> = (0..room)
        .map(|i| {
            let mut c = v.client(&server);
            c.label = format!("{test}: client {i}, within the limit");
            c.echo(b"room for me");
            c
        })
        .collect();
    for i in 0..2 {
        let mut c = Client::connect(server.addr, Protocol::Binary);
        c.label = format!("{test}: client {i} beyond the limit");
        let r = c.read_response();
        r.assert_busy();
        c.expect_eof();
    }
    for c in &mut served {
        c.echo(b"still served");
    }
    drop(served);
    // The three children or threads exit; then there is room again.
    let again = eventually(Duration::from_secs(5), || {
        let mut c = Client::connect(server.addr, Protocol::Binary);
        c.set_read_timeout(Duration::from_secs(2));
        let payload = b"served again";
        c.send(&Request {
            id: Some(7),
            command: Command::Echo,
            payload,
        });
        matches!(c.try_read_response(), Ok(Some(r)) if r.status == echolab_protocol::Status::Ok)
    });
    assert!(again, "{test}: no client served after the first ones left");
    let log = server.log();
    let stopped = server.stop();
    stopped.assert_clean(&test);
    assert!(
        stopped.total("refused") >= 2,
        "{test}: the clients beyond the limit count as refused\n{:#}",
        stopped.stats()
    );
    assert!(
        log.contains("Resource temporarily unavailable") || log.contains("EAGAIN"),
        "{test}: the failure should be logged\n{log}"
    );
}

#[test]
fn out_of_tasks_fork() {
    out_of_tasks(&FORK);
}

#[test]
fn out_of_tasks_thread() {
    out_of_tasks(&THREAD);
}

// ---------------------------------------------------------------------------------------------
// A client that never reads its replies

/// A client writes 64 KiB echoes without ever reading (for up to 20 s) against a server with
/// `--write-timeout 1s`: within 5 s the server must close it (its writes then fail), count a
/// write timeout, have grown its memory by less than 16 MiB, and have served another client
/// throughout.
fn never_reads(v: &Model) {
    let server = v.start(&["--write-timeout", "1s", "--idle-timeout", "60s"]);
    let pid = server.pid();
    let mut warm = v.client(&server);
    warm.echo(b"warm up");
    drop(warm);
    let before = tree_pss_kib(pid.as_raw());
    let mut flooder = v.client(&server);
    flooder.label = format!("{}: the client that never reads", v.name);
    let frame = {
        let mut wire = Vec::new();
        let payload = vec![b'f'; 64 * 1024];
        echolab_protocol::Protocol::Binary
            .codec(DEFAULT_MAX_FRAME)
            .encode_request(
                &Request {
                    id: Some(1),
                    command: Command::Echo,
                    payload: &payload,
                },
                &mut wire,
            )
            .expect("encode");
        wire
    };
    let mut stream = flooder.stream().try_clone().expect("clone the socket");
    stream
        .set_write_timeout(Some(Duration::from_millis(200)))
        .expect("SO_SNDTIMEO");
    let started = Instant::now();
    let mut peak = before;
    let mut good = v.client(&server);
    good.label = format!("{}: a client served meanwhile", v.name);
    let closed_after = loop {
        match stream.write(&frame) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
            // EPIPE or a reset: the server closed us.
            Err(_) => break started.elapsed(),
        }
        peak = peak.max(tree_pss_kib(pid.as_raw()));
        if started.elapsed() > Duration::from_secs(20) {
            panic!(
                "{}: a client that never reads was not closed in 20 s",
                v.name
            );
        }
        good.echo(b"still served");
    };
    let grown = peak.saturating_sub(before);
    eprintln!(
        "{}: the never-reading client was closed {closed_after:?} after it started; server \
         memory grew by at most {grown} KiB",
        v.name
    );
    figures::record_secs(v.name, "never-reading client closed after", closed_after);
    figures::record(v.name, "peak PSS growth", grown, "KiB");
    assert!(
        closed_after < Duration::from_secs(5),
        "{}: closed only after {closed_after:?}",
        v.name
    );
    assert!(
        grown < 16 * 1024,
        "{}: memory grew by {grown} KiB for one client that never reads",
        v.name
    );
    drop(stream);
    drop(flooder);
    good.echo(b"after");
    drop(good);
    let stopped = server.stop();
    stopped.assert_clean(v.name);
    assert!(
        stopped.total("write_timeouts") >= 1,
        "{}: the write timeout is counted\n{:#}",
        v.name,
        stopped.stats()
    );
}

#[test]
fn never_reads_every_model() {
    for v in [
        &THREAD,
        &THREAD_POOL,
        &FORK,
        &PREFORK_SHARED,
        &PREFORK_LOOP_SHARED,
        &EVENTLOOP_POLL,
        &EVENTLOOP_EPOLL,
        &EVENTLOOP_THREADS,
        &URING,
    ] {
        never_reads(v);
    }
}
