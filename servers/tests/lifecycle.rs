//! How connections and servers begin and end, for every model: what the protocol tests cannot
//! see because it happens between requests. Idle connections are closed after
//! `--idle-timeout` while a client that keeps completing requests is not; past
//! `--max-connections` (thread), `--max-children` (fork) or a full pool queue, a new client
//! gets one "server busy" reply and EOF, and is served again once a slot frees; SIGTERM and
//! SIGINT shut a server down with exit code 0 within `--grace`, answering a request that is
//! in flight first, cutting off one that outlasts the grace period, and leaving no process
//! behind; a fork server that served 2000 connections leaves no zombie; a prefork worker
//! killed with SIGKILL is replaced without disturbing the clients of the other workers; and a
//! client that reads a large reply slowly is not cut off as idle. The event loop has the idle,
//! busy, SIGTERM, SIGINT and slow-reader rows for each of its readiness backends; prefork's
//! event-loop workers have the idle, SIGTERM, SIGINT and worker-killed rows for each accept
//! mode, and the busy, grace and slow-reader rows for some (a full worker under the accept
//! lock queues clients instead of refusing them).
//!
//! These are the promises a lab user relies on when comparing models under load: a model that
//! leaked zombies, hung on shutdown or dropped clients when a worker died would distort every
//! measurement taken with it. Timing-sensitive checks wait for events (a reply, EOF, a state
//! in `/proc`) and use wide margins, because this runs on two loaded cores in debug builds.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use echolab_protocol::{Command, Protocol, Request};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

// ---------------------------------------------------------------------------------------------
// Idle timeout

/// With `--idle-timeout 500ms`: a silent client sees EOF after about 500 ms; a client that
/// trickles bytes but never completes a request is closed the same way; a client that
/// completes a request every 100 ms stays open for as long as it keeps doing so (for 2 s,
/// four timeouts' worth). The timeout is 500 ms rather than 300 ms so that the chatty client
/// has 400 ms of slack for scheduling delays on a loaded two-core machine.
fn idle_timeout(v: &Model) {
    let server = v.start(&["--idle-timeout", "500ms"]);
    // Each connection's idle clock starts when the server takes it, after these instants.
    let silent_from = Instant::now();
    let mut silent = v.client(&server);
    silent.label = format!("{}: silent client", v.name);
    let trickle_from = Instant::now();
    let trickle = v.client(&server);
    thread::scope(|s| {
        let chatty = s.spawn(|| {
            let mut c = v.client(&server);
            c.label = format!("{}: client sending a request every 100 ms", v.name);
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                c.echo(b"tick");
                thread::sleep(Duration::from_millis(100));
            }
            c.echo(b"still open after 4 idle timeouts' worth of time");
        });

        // The trickling client: the first byte of a frame header, then one more byte every
        // 100 ms (the read timeout paces it), until the server closes the connection.
        let closed_after = s.spawn(move || {
            let header = 1000u32.to_be_bytes();
            trickle.set_read_timeout(Duration::from_millis(100));
            let mut stream = trickle.stream();
            let mut buf = [0u8; 64];
            for i in 0.. {
                if stream
                    .write_all(&[header.get(i).copied().unwrap_or(b'x')])
                    .is_err()
                {
                    return trickle_from.elapsed(); // reset by the server: closed
                }
                match stream.read(&mut buf) {
                    Ok(0) => return trickle_from.elapsed(),
                    Ok(n) => panic!("{}: trickling client got {n} bytes", v.name),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return trickle_from.elapsed(),
                }
                assert!(
                    trickle_from.elapsed() < Duration::from_secs(5),
                    "{}: a client that never completes a request was not closed",
                    v.name
                );
            }
            unreachable!()
        });

        silent.expect_eof();
        let waited = silent_from.elapsed();
        assert!(
            waited >= Duration::from_millis(500) && waited <= Duration::from_secs(3),
            "{}: silent client closed after {waited:?}, expected about 500 ms",
            v.name
        );
        let trickled = closed_after.join().expect("trickling client thread");
        assert!(
            trickled >= Duration::from_millis(500) && trickled <= Duration::from_secs(3),
            "{}: trickling client closed after {trickled:?}, expected about 500 ms",
            v.name
        );
        chatty.join().expect("chatty client thread");
    });
    let stopped = server.stop();
    stopped.assert_clean(v.name);
    assert!(
        stopped.total("idle_timeouts") >= 2,
        "{}: idle_timeouts should count the silent and the trickling client\n{:#}",
        v.name,
        stopped.stats()
    );
}

#[test]
fn idle_timeout_thread() {
    idle_timeout(&THREAD);
}

#[test]
fn idle_timeout_thread_pool() {
    idle_timeout(&THREAD_POOL);
}

#[test]
fn idle_timeout_fork() {
    idle_timeout(&FORK);
}

#[test]
fn idle_timeout_prefork() {
    idle_timeout(&PREFORK_LOCKED);
}

// The event loop checks its timeouts on a 100 ms housekeeping tick rather than in a per-connection
// poll(2): the same promise, kept a different way, so each backend gets the row.
#[test]
fn idle_timeout_eventloop_select() {
    idle_timeout(&EVENTLOOP_SELECT);
}

#[test]
fn idle_timeout_eventloop_poll() {
    idle_timeout(&EVENTLOOP_POLL);
}

#[test]
fn idle_timeout_eventloop_epoll() {
    idle_timeout(&EVENTLOOP_EPOLL);
}

#[test]
fn idle_timeout_eventloop_threads() {
    idle_timeout(&EVENTLOOP_THREADS);
}

// The io_uring loop keeps the event loop's clocks on a tick too, a timeout it submits to the
// ring; a connection it closes has its receive cancelled first.
#[test]
fn idle_timeout_uring() {
    idle_timeout(&URING);
}

#[test]
fn idle_timeout_uring_single() {
    idle_timeout(&URING_SINGLE);
}

// prefork's event-loop workers: each worker's loop keeps its own idle clocks, whichever
// worker the kernel (or the accept lock) gave the three clients to.

#[test]
fn idle_timeout_prefork_loop_shared() {
    idle_timeout(&PREFORK_LOOP_SHARED);
}

#[test]
fn idle_timeout_prefork_loop_exclusive() {
    idle_timeout(&PREFORK_LOOP_EXCLUSIVE);
}

#[test]
fn idle_timeout_prefork_loop_reuseport() {
    idle_timeout(&PREFORK_LOOP_REUSEPORT);
}

#[test]
fn idle_timeout_prefork_loop_locked() {
    idle_timeout(&PREFORK_LOOP_LOCKED);
}

// ---------------------------------------------------------------------------------------------
// Busy refusal

/// Connects until a connection is served (a refused one gets "server busy" and EOF, then the
/// next try), for up to five seconds: a slot freed by a closed connection comes back.
fn eventually_served(server: &Server, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = server.client();
        c.label = format!("{what}: a client after a slot was freed");
        let payload = wire_payload(server.protocol, b"served again");
        let r = c.request(&Request {
            id: Some(1),
            command: Command::Echo,
            payload: &payload,
        });
        if r.status == echolab_protocol::Status::Ok {
            c.assert_echo(&r, 1, &payload);
            return;
        }
        r.assert_busy();
        c.expect_eof();
        assert!(
            Instant::now() < deadline,
            "{what}: still busy 5 s after a connection closed"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Two connections held open fill the server (`args` set the limit); the third gets the busy
/// reply in the protocol's shape and EOF; the two held are still served; once one closes, a
/// new client is served again. `second_waits`: the second connection sits in the pool's queue
/// rather than being served (`--pool 1 --queue 1`).
fn busy(bin: &str, args: &[&str], protocol: Protocol, second_waits: bool) {
    let what = format!("{args:?} {protocol}");
    let mut all = args.to_vec();
    all.extend(["--protocol", protocol.name()]);
    let server = Server::start(bin, &all);

    let mut first = server.client();
    first.label = format!("{what}: first client");
    first.echo(b"first");
    // Accepted (and so counted) before the third connects.
    let mut second = Client::connect_accepted(server.addr, protocol, false);
    second.label = format!("{what}: second client");
    if !second_waits {
        second.echo(b"second");
    }

    let mut third = server.client();
    third.label = format!("{what}: third client");
    let r = third.read_response();
    r.assert_busy();
    third.expect_eof();

    first.echo(b"first, still served");
    drop(first);
    // The queued connection is served once the worker is free; then it closes too.
    second.echo(b"second, still served");
    drop(second);
    eventually_served(&server, &what);

    let stopped = server.stop();
    stopped.assert_clean(&what);
    assert!(
        stopped.total("refused") >= 1,
        "{what}: totals.refused\n{:#}",
        stopped.stats()
    );
}

#[test]
fn busy_thread_max_connections_binary() {
    busy(
        thread_bin(),
        &["--max-connections", "2"],
        Protocol::Binary,
        false,
    );
}

#[test]
fn busy_thread_max_connections_resp() {
    busy(
        thread_bin(),
        &["--max-connections", "2"],
        Protocol::Resp,
        false,
    );
}

#[test]
fn busy_thread_max_connections_json() {
    busy(
        thread_bin(),
        &["--max-connections", "2"],
        Protocol::Json,
        false,
    );
}

#[test]
fn busy_fork_max_children() {
    busy(
        fork_bin(),
        &["--max-children", "2"],
        Protocol::Binary,
        false,
    );
}

#[test]
fn busy_eventloop_epoll_max_connections_binary() {
    busy(
        eventloop_bin(),
        &["--backend", "epoll", "--max-connections", "2"],
        Protocol::Binary,
        false,
    );
}

#[test]
fn busy_eventloop_epoll_max_connections_resp() {
    busy(
        eventloop_bin(),
        &["--backend", "epoll", "--max-connections", "2"],
        Protocol::Resp,
        false,
    );
}

#[test]
fn busy_eventloop_epoll_max_connections_json() {
    busy(
        eventloop_bin(),
        &["--backend", "epoll", "--max-connections", "2"],
        Protocol::Json,
        false,
    );
}

#[test]
fn busy_eventloop_poll_max_connections() {
    busy(
        eventloop_bin(),
        &["--backend", "poll", "--max-connections", "2"],
        Protocol::Binary,
        false,
    );
}

#[test]
fn busy_uring_max_connections() {
    busy(
        uring_bin(),
        &["--max-connections", "2"],
        Protocol::Binary,
        false,
    );
}

#[test]
fn busy_uring_max_connections_resp() {
    busy(
        uring_bin(),
        &["--max-connections", "2"],
        Protocol::Resp,
        false,
    );
}

#[test]
fn busy_eventloop_select_max_connections() {
    busy(
        eventloop_bin(),
        &["--backend", "select", "--max-connections", "2"],
        Protocol::Binary,
        false,
    );
}

// Event loops on every core: `--max-connections` is each loop's own limit, so one worker (or
// one thread) with room for 2 is the single loop's case. A full loop worker still watches the
// shared listener, accepts, and refuses. (No `locked` row: a full worker does not take the
// lock, so a client that comes once every worker is full waits in the accept queue, as with
// blocking workers, and is told nothing; `busy_locked_loop_queues_when_full` holds that.)
#[test]
fn busy_prefork_loop_max_connections() {
    busy(
        prefork_bin(),
        &one_loop_worker_with_room_for_two("shared"),
        Protocol::Binary,
        false,
    );
}

/// prefork's flags for one event-loop worker in accept mode `accept`, with room for 2.
fn one_loop_worker_with_room_for_two(accept: &str) -> [&str; 8] {
    [
        "--workers",
        "1",
        "--worker",
        "eventloop",
        "--accept",
        accept,
        "--max-connections",
        "2",
    ]
}

/// Under the accept lock, one loop worker with room for 2: a third client is neither refused
/// nor served while the two stay (it waits in the accept queue, and the parent logs that the
/// server is saturated); once one of the two leaves, the worker takes the lock again and serves
/// it.
#[test]
fn busy_locked_loop_queues_when_full() {
    let server = Server::start(prefork_bin(), &one_loop_worker_with_room_for_two("locked"));
    let mut first = server.client();
    first.echo(b"first");
    let mut second = server.client();
    second.echo(b"second");
    let mut third = server.client();
    third.label = "third client, past a full locked worker".into();
    let id = third.next_id();
    third.send(&Request {
        id: Some(id),
        command: Command::Echo,
        payload: b"third",
    });
    third.set_read_timeout(Duration::from_millis(500));
    match third.try_read_response() {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the third client got {other:?} while the only worker was full"),
    }
    wait_until(Duration::from_secs(5), "the saturation log line", || {
        server
            .log()
            .contains("each event-loop worker is full at --max-connections")
    });
    drop(first);
    third.set_read_timeout(IO_TIMEOUT);
    let r = third.read_response();
    third.assert_echo(&r, id, b"third");
    second.echo(b"second, still served");
    drop((second, third));
    server
        .stop()
        .assert_clean("locked loop past --max-connections");
}

#[test]
fn busy_eventloop_threads_max_connections() {
    busy(
        eventloop_bin(),
        &["--threads", "1", "--max-connections", "2"],
        Protocol::Binary,
        false,
    );
}

#[test]
fn busy_thread_pool_queue_full() {
    busy(
        thread_bin(),
        &["--pool", "1", "--queue", "1"],
        Protocol::Binary,
        true,
    );
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown

/// Sends `count` requests `SLEEP micros` (ids 42, 43, ...) in one write on `c` and waits until
/// the server has read them.
fn start_sleep(server: &Server, c: &mut Client, micros: u32, count: u64) {
    let codec = server.protocol.codec(server.max_frame);
    let mut wire = Vec::new();
    for id in 42..42 + count {
        let request = Request {
            id: Some(id),
            command: Command::Sleep { micros },
            payload: b"slow",
        };
        codec.encode_request(&request, &mut wire).expect("encode");
    }
    c.send_raw(&wire);
    wait_until(
        Duration::from_secs(5),
        "the server to read the SLEEP request",
        || request_taken(server.addr.port(), c),
    );
}

/// SIGTERM while a SLEEP 300000 us request is in flight and another client sits idle: the
/// SLEEP is still answered, then both clients see EOF, and the server exits 0 within
/// `--grace` with no process left in its group.
fn sigterm_in_flight(v: &Model) {
    let server = v.start(&["--grace", "5s"]);
    let mut idle = v.client(&server);
    idle.label = format!("{}: idle client at shutdown", v.name);
    idle.echo(b"idle");
    let mut slow = v.client(&server);
    slow.label = format!("{}: client with a SLEEP in flight at shutdown", v.name);
    slow.echo(b"slow");
    start_sleep(&server, &mut slow, 300_000, 1);

    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    let r = slow.read_response();
    slow.assert_echo(&r, 42, b"slow");
    slow.expect_eof();
    idle.expect_eof();

    let stopped = server.finish(signalled);
    stopped.assert_clean(v.name);
}

#[test]
fn sigterm_in_flight_thread() {
    sigterm_in_flight(&THREAD);
}

#[test]
fn sigterm_in_flight_thread_pool() {
    sigterm_in_flight(&THREAD_POOL);
}

#[test]
fn sigterm_in_flight_fork() {
    sigterm_in_flight(&FORK);
}

#[test]
fn sigterm_in_flight_prefork_shared() {
    sigterm_in_flight(&PREFORK_SHARED);
}

#[test]
fn sigterm_in_flight_prefork_locked() {
    sigterm_in_flight(&PREFORK_LOCKED);
}

#[test]
fn sigterm_in_flight_prefork_reuseport() {
    sigterm_in_flight(&PREFORK_REUSEPORT);
}

// In the event loop the SLEEP runs on the loop's only thread, so the SIGTERM (a byte on the
// self-pipe) is only seen once the SLEEP has returned and its reply has been queued: the reply
// must still arrive, then EOF, on both clients, and the exit comes well within the grace period.
#[test]
fn sigterm_in_flight_eventloop_select() {
    sigterm_in_flight(&EVENTLOOP_SELECT);
}

#[test]
fn sigterm_in_flight_eventloop_poll() {
    sigterm_in_flight(&EVENTLOOP_POLL);
}

#[test]
fn sigterm_in_flight_eventloop_epoll() {
    sigterm_in_flight(&EVENTLOOP_EPOLL);
}

// With loops on threads the signal is read by the main thread, which closes the broadcast:
// the loop with the SLEEP sees it once the SLEEP returns, the other at once.
#[test]
fn sigterm_in_flight_eventloop_threads() {
    sigterm_in_flight(&EVENTLOOP_THREADS);
}

// io_uring: as in the event loop, the SLEEP holds the loop's only thread, and the self-pipe's
// poll completes once it returns; the reply, already submitted as a send, still arrives.
#[test]
fn sigterm_in_flight_uring() {
    sigterm_in_flight(&URING);
}

#[test]
fn sigterm_in_flight_uring_single() {
    sigterm_in_flight(&URING_SINGLE);
}

// prefork's event-loop workers: the parent passes SIGTERM on to every worker; the worker with
// the SLEEP sees it once the SLEEP returns, answers, and closes; the others close at once.

#[test]
fn sigterm_in_flight_prefork_loop_shared() {
    sigterm_in_flight(&PREFORK_LOOP_SHARED);
}

#[test]
fn sigterm_in_flight_prefork_loop_exclusive() {
    sigterm_in_flight(&PREFORK_LOOP_EXCLUSIVE);
}

#[test]
fn sigterm_in_flight_prefork_loop_reuseport() {
    sigterm_in_flight(&PREFORK_LOOP_REUSEPORT);
}

#[test]
fn sigterm_in_flight_prefork_loop_locked() {
    sigterm_in_flight(&PREFORK_LOOP_LOCKED);
}

#[test]
fn sigterm_in_flight_prefork_loop_poll_shared() {
    sigterm_in_flight(&PREFORK_LOOP_POLL_SHARED);
}

/// `--grace 100ms` with five seconds of work in flight (five pipelined SLEEPs of one second,
/// which the handler runs back to back): the server does not wait for them; it exits 0
/// within the grace period (plus the harness's margin, far below five seconds) and leaves no
/// process behind.
fn grace_period_is_a_limit(v: &Model) {
    let server = v.start(&["--grace", "100ms"]);
    let mut slow = v.client(&server);
    slow.echo(b"slow");
    start_sleep(&server, &mut slow, 1_000_000, 5);
    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    let stopped = server.finish(signalled);
    stopped.assert_clean(v.name);
}

#[test]
fn grace_period_is_a_limit_thread() {
    grace_period_is_a_limit(&THREAD);
}

#[test]
fn grace_period_is_a_limit_fork() {
    grace_period_is_a_limit(&FORK);
}

#[test]
fn grace_period_is_a_limit_prefork() {
    grace_period_is_a_limit(&PREFORK_SHARED);
}

// Unlike the single event loop, prefork's event-loop workers have a parent that does not run
// requests: it enforces --grace on a worker stuck in a batch of SLEEPs by killing it.

#[test]
fn grace_period_is_a_limit_prefork_loop_shared() {
    grace_period_is_a_limit(&PREFORK_LOOP_SHARED);
}

#[test]
fn grace_period_is_a_limit_prefork_loop_locked() {
    grace_period_is_a_limit(&PREFORK_LOOP_LOCKED);
}

// No event-loop row: its SLEEPs run on the loop's only thread, one pipelined batch back to
// back, and the loop cannot even see the signal until the batch returns. That is the model's
// documented trade-off (docs/models/eventloop.md, "A blocking handler stalls everyone"), not a
// broken promise. What `--grace` does bound in the event loop is the time spent sending
// pending output to a client that does not read it: `eventloop.rs` tests that.

/// SIGINT (Ctrl-C) is a graceful shutdown too: an idle client sees EOF, exit code 0.
fn sigint(v: &Model) {
    let server = v.start(&[]);
    let mut c = v.client(&server);
    c.echo(b"before Ctrl-C");
    let signalled = Instant::now();
    server.signal(Signal::SIGINT);
    c.expect_eof();
    server.finish(signalled).assert_clean(v.name);
}

#[test]
fn sigint_thread() {
    sigint(&THREAD);
}

#[test]
fn sigint_fork() {
    sigint(&FORK);
}

#[test]
fn sigint_prefork() {
    sigint(&PREFORK_LOCKED);
}

#[test]
fn sigint_eventloop_select() {
    sigint(&EVENTLOOP_SELECT);
}

#[test]
fn sigint_eventloop_poll() {
    sigint(&EVENTLOOP_POLL);
}

#[test]
fn sigint_eventloop_epoll() {
    sigint(&EVENTLOOP_EPOLL);
}

#[test]
fn sigint_eventloop_threads() {
    sigint(&EVENTLOOP_THREADS);
}

#[test]
fn sigint_uring() {
    sigint(&URING);
}

#[test]
fn sigint_prefork_loop_shared() {
    sigint(&PREFORK_LOOP_SHARED);
}

#[test]
fn sigint_prefork_loop_exclusive() {
    sigint(&PREFORK_LOOP_EXCLUSIVE);
}

#[test]
fn sigint_prefork_loop_reuseport() {
    sigint(&PREFORK_LOOP_REUSEPORT);
}

#[test]
fn sigint_prefork_loop_locked() {
    sigint(&PREFORK_LOOP_LOCKED);
}

// ---------------------------------------------------------------------------------------------
// fork: reaping

/// 2000 short connections (connect, one echo, close) from four client threads, default flags:
/// once they are done every child is reaped (no zombie among the server's children), and the
/// stats agree: as many children reaped as forked, no zombie at shutdown.
#[test]
fn fork_reaps_every_child() {
    const CONNECTIONS: usize = 2000;
    const THREADS: usize = 4;
    let server = Server::start(fork_bin(), &[]);
    thread::scope(|s| {
        for t in 0..THREADS {
            let server = &server;
            s.spawn(move || {
                for i in 0..CONNECTIONS / THREADS {
                    let mut c = server.client();
                    c.label = format!("short connection {i} of thread {t}");
                    c.echo(b"short");
                }
            });
        }
    });
    let pid = server.pid();
    if !eventually(Duration::from_secs(10), || children(pid).is_empty()) {
        let left = children(pid);
        let zombies = left.iter().filter(|p| p.state == 'Z').count();
        panic!(
            "10 s after the last connection closed, server-fork still has {} children, {zombies} \
             of them zombies (first few: {:?})",
            left.len(),
            &left[..left.len().min(5)]
        );
    }

    let stopped = server.stop();
    stopped.assert_clean("fork after 2000 connections");
    let extra = &stopped.stats()["extra"];
    let n = CONNECTIONS as u64;
    assert_eq!(extra["children_forked"], n, "children_forked\n{extra:#}");
    assert_eq!(
        extra["children_reaped"], extra["children_forked"],
        "every child forked was reaped\n{extra:#}"
    );
    assert_eq!(
        extra["zombies_at_shutdown"], 0,
        "zombies_at_shutdown\n{extra:#}"
    );
    assert_eq!(stopped.total("accepted"), n, "totals.accepted");
    assert_eq!(stopped.total("requests"), n, "totals.requests");
    assert_eq!(stopped.total("closed"), n, "totals.closed");
}

// ---------------------------------------------------------------------------------------------
// prefork: a worker killed with SIGKILL

/// SIGKILL one worker while a client is mid-session on another: that client notices nothing,
/// new connections are served meanwhile, the parent starts a replacement that serves too, and
/// the stats file counts the restart.
fn prefork_worker_killed(v: &Model) {
    let server = v.start(&[]);
    let pid = server.pid();
    let port = server.addr.port();
    wait_until(Duration::from_secs(5), "4 live workers", || {
        live_children(pid).len() == 4
    });
    let workers = live_children(pid);

    let mut a = v.client(&server);
    a.label = format!("{}: client mid-session", v.name);
    a.echo(b"a");
    let inode = accepted_inode(port, a.local_port()).expect("a's connection in /proc/net/tcp");
    let serving_a = socket_owner(&workers, inode).expect("one worker holds a's connection");
    let victim = *workers
        .iter()
        .find(|&&w| w != serving_a)
        .expect("another worker");
    kill(Pid::from_raw(victim), Signal::SIGKILL).expect("kill a worker");
    // Until the victim has actually died (its descriptors closed: a zombie, or reaped), it
    // may still take a connection from the accept queue and then take it down with it: a
    // worker killed while in accept() loses the connection it raced for. That is the kernel,
    // not the server, so the new client below connects only once the victim is gone.
    wait_until(Duration::from_secs(5), "the killed worker to die", || {
        !live_children(pid).contains(&victim)
    });

    for i in 0..5 {
        a.echo(format!("a, after the kill, {i}").as_bytes());
    }
    let mut b = v.client(&server);
    b.label = format!("{}: new client while a worker is restarted", v.name);
    b.echo(b"b");
    drop(b);

    wait_until(
        Duration::from_secs(5),
        "the killed worker to be replaced",
        || {
            let now = live_children(pid);
            now.len() == 4 && !now.contains(&victim)
        },
    );
    let now = live_children(pid);
    let replacement: Vec<i32> = now
        .iter()
        .copied()
        .filter(|p| !workers.contains(p))
        .collect();
    assert_eq!(
        replacement.len(),
        1,
        "one new worker: {workers:?} -> {now:?}"
    );
    let replacement = replacement[0];

    let mut held = Vec::new();
    let mut owners = vec![serving_a];
    if v.workers_multiplex() {
        // An event-loop worker takes any number of connections, so nothing forces one onto
        // the replacement: connections are made until one lands there.
        let (mut c, owner) = v.client_where(&server, &now, |o| o == replacement);
        c.label = format!("{}: a client of the replacement", v.name);
        c.echo(b"held");
        owners.push(owner);
        held.push(c);
    } else {
        // With `a` still held, three more held connections occupy the other three workers,
        // the replacement included.
        for i in 0..3 {
            let mut c = v.client(&server);
            c.label = format!("{}: held client {i} after the restart", v.name);
            c.echo(b"held");
            let inode = accepted_inode(port, c.local_port()).expect("connection in /proc/net/tcp");
            owners.push(socket_owner(&now, inode).expect("a worker holds the connection"));
            held.push(c);
        }
    }
    assert!(
        owners.contains(&replacement),
        "{}: the replacement worker {replacement} serves no connection (owners {owners:?})",
        v.name
    );
    a.echo(b"a, at the end");
    drop(held);
    drop(a);

    let stopped = server.stop();
    stopped.assert_clean(v.name);
    let stats = stopped.stats();
    let workers = stats["workers"].as_array().expect("workers in the stats");
    let restarts: u64 = workers.iter().filter_map(|w| w["restarts"].as_u64()).sum();
    assert_eq!(restarts, 1, "{}: one worker died, once\n{stats:#}", v.name);
    // The killed worker's slot is the one the replacement took.
    let slot = workers
        .iter()
        .find(|w| w["pid"] == replacement)
        .unwrap_or_else(|| {
            panic!(
                "{}: no worker entry has the replacement's pid {replacement}\n{stats:#}",
                v.name
            )
        });
    assert_eq!(
        slot["restarts"], 1,
        "{}: the restarted worker's entry should count its restart\n{slot:#}",
        v.name
    );
}

#[test]
fn prefork_worker_killed_shared() {
    prefork_worker_killed(&PREFORK_SHARED);
}

#[test]
fn prefork_worker_killed_locked() {
    prefork_worker_killed(&PREFORK_LOCKED);
}

#[test]
fn prefork_worker_killed_reuseport() {
    prefork_worker_killed(&PREFORK_REUSEPORT);
}

// Event-loop workers: the worker killed holds no client of the test, so `a`, on another, notices
// nothing; the replacement gets its predecessor's slot (and, with reuseport, its listener).

#[test]
fn prefork_worker_killed_loop_shared() {
    prefork_worker_killed(&PREFORK_LOOP_SHARED);
}

#[test]
fn prefork_worker_killed_loop_exclusive() {
    prefork_worker_killed(&PREFORK_LOOP_EXCLUSIVE);
}

#[test]
fn prefork_worker_killed_loop_reuseport() {
    prefork_worker_killed(&PREFORK_LOOP_REUSEPORT);
}

#[test]
fn prefork_worker_killed_loop_locked() {
    prefork_worker_killed(&PREFORK_LOOP_LOCKED);
}

// ---------------------------------------------------------------------------------------------
// A slow reader is not idle

/// With `--idle-timeout 1s`, a client echoes 16 MiB and reads the reply slowly (at most
/// 256 KiB every 50 ms: about 3.5 s, three timeouts' worth). It is not idle: the server is busy
/// sending to it, and a blocking model, which only counts idle time while it waits for input,
/// sends the whole reply. So must every model. The timeout is 1 s, not less, because the 16 MiB
/// request must arrive within it (a request that takes longer to arrive is a trickle, and is
/// closed as idle), which on a loaded two-core machine can take several hundred milliseconds.
/// (What happens *after* the reply is another matter: the blocking models count idle time from
/// the request, so they close the connection as soon as the long write ends; the test does
/// not look.)
fn slow_reader_of_a_large_reply(v: &Model) {
    const PAYLOAD: usize = 16 << 20;
    let server = v.start(&["--idle-timeout", "1s", "--max-frame", "33554432"]);
    let mut c = v.client(&server);
    c.label = format!("{}: slow reader of a 16 MiB reply", v.name);
    c.echo(b"small first");
    let payload = content(Protocol::Binary, PAYLOAD, 9);
    // The client's own codec refuses frames over 4 MiB: encode with a larger limit.
    let codec = Protocol::Binary.codec(2 * PAYLOAD);
    let mut wire = Vec::new();
    codec
        .encode_request(
            &Request {
                id: Some(77),
                command: Command::Echo,
                payload: &payload,
            },
            &mut wire,
        )
        .expect("encode 16 MiB");
    c.send_raw(&wire);
    let mut stream = c.stream();
    let mut got = Vec::with_capacity(PAYLOAD + 64);
    let mut slice = vec![0u8; 256 * 1024];
    let started = Instant::now();
    let reply = loop {
        if let Ok(echolab_protocol::Decoded::Complete { message, .. }) = codec.decode_response(&got)
        {
            break (message.id, message.status, message.payload == payload);
        }
        let n = stream.read(&mut slice).unwrap_or_else(|e| {
            panic!(
                "{}: reading the reply: {e} after {} of {PAYLOAD} bytes",
                c.label,
                got.len()
            )
        });
        assert!(
            n > 0,
            "{}: EOF after {} bytes of a reply of more than {PAYLOAD}, {:?} after the request",
            c.label,
            got.len(),
            started.elapsed()
        );
        got.extend_from_slice(&slice[..n]);
        // Pacing: this client is slow on purpose.
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        reply,
        (Some(77), echolab_protocol::Status::Ok, true),
        "{}: the reply",
        c.label
    );
    eprintln!("{}: 16 MiB reply read in {:?}", v.name, started.elapsed());
    drop(c);
    server.stop().assert_clean(v.name);
}

#[test]
fn slow_reader_of_a_large_reply_thread() {
    slow_reader_of_a_large_reply(&THREAD);
}

#[test]
fn slow_reader_of_a_large_reply_fork() {
    slow_reader_of_a_large_reply(&FORK);
}

#[test]
fn slow_reader_of_a_large_reply_eventloop_epoll() {
    slow_reader_of_a_large_reply(&EVENTLOOP_EPOLL);
}

#[test]
fn slow_reader_of_a_large_reply_eventloop_poll() {
    slow_reader_of_a_large_reply(&EVENTLOOP_POLL);
}

#[test]
fn slow_reader_of_a_large_reply_eventloop_select() {
    slow_reader_of_a_large_reply(&EVENTLOOP_SELECT);
}

#[test]
fn slow_reader_of_a_large_reply_prefork_loop_shared() {
    slow_reader_of_a_large_reply(&PREFORK_LOOP_SHARED);
}

#[test]
fn slow_reader_of_a_large_reply_eventloop_threads() {
    slow_reader_of_a_large_reply(&EVENTLOOP_THREADS);
}

// io_uring: the 16 MiB reply goes out in sends of --write-budget (64 KiB) each, one in flight
// at a time, while receiving is cancelled for backpressure.
#[test]
fn slow_reader_of_a_large_reply_uring() {
    slow_reader_of_a_large_reply(&URING);
}
