//! What prefork's event-loop workers (`--worker eventloop`) promise beyond the model table
//! every model passes (conformance, first contact, lifecycle, robustness, sessions): the
//! thundering herd is real and measured (with `--accept shared`, idle loops wake for
//! connections another worker takes, on select, poll and epoll alike) and `--accept exclusive`
//! (EPOLLEXCLUSIVE) all but removes it; `--accept reuseport` spreads connections over every
//! worker; under the accept lock, a worker running a slow request does not keep the others
//! from accepting; SIGTERM drains every worker's clients, each answered mid-request; a worker
//! killed is reaped and replaced and serves again; a worker's descriptors come back to what
//! they were after its connections close, in every accept mode; and flags that do not go
//! together are refused with a usage error that says why.
//!
//! The herd tests hold a lock, so that no other test of this file loads the two cores while
//! they count wake-ups: a loop that has not yet gone back to sleep when the next connection
//! arrives is not woken by it, so a busy machine would hide the herd.

mod common;

use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts prefork with 4 event-loop workers on `backend`, accepting as `accept` says.
fn start(backend: &str, accept: &str) -> Server {
    Server::start(
        prefork_bin(),
        &[
            "--workers",
            "4",
            "--worker",
            "eventloop",
            "--backend",
            backend,
            "--accept",
            accept,
        ],
    )
}

/// Waits until the server has 4 live workers, and returns their pids.
fn four_workers(server: &Server) -> Vec<i32> {
    let pid = server.pid();
    wait_until(Duration::from_secs(5), "4 live workers", || {
        live_children(pid).len() == 4
    });
    live_children(pid)
}

/// `n` connections one after the other, each with one echo, with a pause between them so
/// that every idle loop is back in its wait when the next one arrives.
fn sequential_connections(server: &Server, n: usize) {
    for i in 0..n {
        let mut c = server.client();
        c.label = format!("sequential connection {i}");
        c.echo(format!("herd {i}").as_bytes());
        drop(c);
        thread::sleep(Duration::from_millis(5));
    }
}

/// A number from the `wakeups` object of the stats.
fn wakeups(stats: &Value, field: &str) -> u64 {
    stats["wakeups"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("stats has no wakeups.{field}\n{stats:#}"))
}

/// The per-worker `field`s of the stats, checking that they add up to `wakeups.<field>`.
fn per_worker(stats: &Value, field: &str) -> Vec<u64> {
    let workers = stats["workers"].as_array().expect("a workers list");
    let each: Vec<u64> = workers
        .iter()
        .map(|w| {
            w[field]
                .as_u64()
                .unwrap_or_else(|| panic!("worker has no {field}\n{w:#}"))
        })
        .collect();
    each
}

/// Runs `n` sequential connections against 4 idle loops and returns the stats.
fn herd(backend: &str, accept: &str, n: usize) -> Value {
    let server = start(backend, accept);
    four_workers(&server);
    sequential_connections(&server, n);
    let stopped = server.stop();
    let what = format!("prefork --worker eventloop --backend {backend} --accept {accept}");
    stopped.assert_clean(&what);
    let stats = stopped.stats().clone();
    assert_eq!(stopped.total("accepted"), n as u64, "{what}\n{stats:#}");
    let futile: u64 = per_worker(&stats, "futile_wakeups").iter().sum();
    assert_eq!(futile, wakeups(&stats, "futile_wakeups"), "{what}: totals");
    let share = stats["wakeups"]["futile_share"].as_f64();
    eprintln!(
        "{what}: {n} connections, listener wake-ups {}, futile {futile} (share {share:?}), accepted per worker {:?}",
        wakeups(&stats, "listener_wakeups"),
        per_worker(&stats, "accepted")
    );
    stats
}

/// With `--accept shared`, every idle loop watching the listener is woken for each
/// connection, on select, poll and epoll alike, and some return to user space to find that
/// another took it. Only *some*: the kernel checks readiness again before a woken
/// poll/select/epoll_wait returns, so a loop that lost the race before that check goes back
/// to sleep unseen (having cost a context switch). On two cores, a few in a hundred
/// connections show the herd this way; none may show none.
fn the_herd_is_real(backend: &str) {
    let _one = one_at_a_time();
    let n = 100;
    let stats = herd(backend, "shared", n);
    let futile = wakeups(&stats, "futile_wakeups");
    assert!(
        futile > 0,
        "{backend} shared: no futile wake-up in {n} connections to 4 idle loops\n{stats:#}"
    );
}

#[test]
fn the_herd_is_real_select() {
    the_herd_is_real("select");
}

#[test]
fn the_herd_is_real_poll() {
    the_herd_is_real("poll");
}

#[test]
fn the_herd_is_real_epoll() {
    the_herd_is_real("epoll");
}

/// EPOLLEXCLUSIVE wakes one loop per connection (or a few): far fewer futile wake-ups than
/// the shared herd's, measured the same way. (It also wakes the same waiter first, so
/// connections pile onto few workers: the figures printed show it, typically all on one.)
#[test]
fn exclusive_tames_the_herd() {
    let _one = one_at_a_time();
    let n = 100;
    let shared = herd("epoll", "shared", n);
    let exclusive = herd("epoll", "exclusive", n);
    let (s, e) = (
        wakeups(&shared, "futile_wakeups"),
        wakeups(&exclusive, "futile_wakeups"),
    );
    assert!(
        s > 0 && e * 2 <= s,
        "exclusive: {e} futile wake-ups against shared's {s}; expected at most half\n{exclusive:#}"
    );
}

/// Under the accept lock, one loop at a time watches the listener: no futile wake-ups. A
/// worker with no room does not take the lock, so the others get their turn: with
/// `--max-connections 2` per worker, 8 connections held open fill the workers two by two,
/// and every worker must have taken its turn.
#[test]
fn locked_hands_over_when_the_holder_is_full() {
    let _one = one_at_a_time();
    let server = Server::start(
        prefork_bin(),
        &[
            "--workers",
            "4",
            "--worker",
            "eventloop",
            "--backend",
            "epoll",
            "--accept",
            "locked",
            "--max-connections",
            "2",
        ],
    );
    four_workers(&server);
    let mut held = Vec::new();
    for i in 0..8 {
        let mut c = server.client();
        c.label = format!("held connection {i}");
        c.echo(format!("turn {i}").as_bytes());
        held.push(c);
    }
    drop(held);
    let stopped = server.stop();
    stopped.assert_clean("prefork --worker eventloop --accept locked");
    let stats = stopped.stats().clone();
    assert_eq!(
        per_worker(&stats, "accepted"),
        vec![2, 2, 2, 2],
        "each worker takes the lock once the one before it is full\n{stats:#}"
    );
    assert_eq!(wakeups(&stats, "futile_wakeups"), 0, "{stats:#}");
}

/// Under the accept lock, a worker running a slow request does not hold the lock meanwhile
/// (nginx's order: accept, unlock, then run the turn's requests): while one client's three
/// pipelined SLEEPs of 1 s run, a new client is served by another worker within 1.5 s, half
/// the time a holder that kept the lock would make it wait, and far more than the tens of
/// milliseconds it takes.
#[test]
fn locked_slow_request_does_not_stop_accepting() {
    let _one = one_at_a_time();
    let server = start("epoll", "locked");
    let workers = four_workers(&server);
    let mut slow = server.client();
    slow.label = "client with three SLEEPs of 1 s".into();
    slow.echo(b"before");
    let inode = accepted_inode(server.addr.port(), slow.local_port()).expect("accepted");
    let busy = socket_owner(&workers, inode).expect("a worker holds it");
    for id in 7..10 {
        slow.send(&echolab_protocol::Request {
            id: Some(id),
            command: echolab_protocol::Command::Sleep { micros: 1_000_000 },
            payload: b"slow",
        });
    }
    wait_until(Duration::from_secs(5), "the SLEEP to be read", || {
        request_taken(server.addr.port(), &slow)
    });
    let asked = std::time::Instant::now();
    let mut other = server.client();
    other.label = "client connecting during the SLEEP".into();
    other.echo(b"not stuck behind the SLEEP");
    let waited = asked.elapsed();
    let inode = accepted_inode(server.addr.port(), other.local_port()).expect("accepted");
    let owner = socket_owner(&workers, inode).expect("a worker holds it");
    assert_ne!(
        owner, busy,
        "the busy worker cannot have served it during its SLEEP"
    );
    assert!(
        waited < Duration::from_millis(1500),
        "a new client waited {waited:?} while one worker ran 3 s of SLEEPs"
    );
    for id in 7..10 {
        let r = slow.read_response();
        slow.assert_echo(&r, id, b"slow");
    }
    drop((slow, other));
    server.stop().assert_clean("locked, slow request");
}

/// With SO_REUSEPORT the kernel hashes connections over the workers' listeners: 64
/// connections from 64 source ports reach every worker (a worker missed by all 64 has odds of
/// about 4 in 100 million).
#[test]
fn reuseport_spreads_connections() {
    let server = start("epoll", "reuseport");
    four_workers(&server);
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
    stopped.assert_clean("reuseport");
    let stats = stopped.stats();
    let accepted = per_worker(stats, "accepted");
    assert!(
        accepted.iter().all(|&a| a > 0),
        "every worker should have accepted some: {accepted:?}\n{stats:#}"
    );
    let jain = stats["accept_fairness_jain"].as_f64().unwrap_or(0.0);
    assert!(jain > 0.5, "reuseport fairness {jain}\n{stats:#}");
}

/// SIGTERM with 8 clients each mid-request (a SLEEP in flight), spread over the workers:
/// every one is answered, then sees EOF, and the server exits cleanly within --grace.
#[test]
fn sigterm_drains_every_worker() {
    let server = start("epoll", "reuseport");
    let workers = four_workers(&server);
    let port = server.addr.port();
    let codec = server.protocol.codec(server.max_frame);
    let mut clients = Vec::new();
    let mut owners = Vec::new();
    for i in 0..8 {
        let mut c = server.client();
        c.label = format!("client {i}, mid-request at SIGTERM");
        c.echo(b"before");
        let inode = accepted_inode(port, c.local_port()).expect("accepted");
        owners.push(socket_owner(&workers, inode).expect("a worker holds it"));
        let mut wire = Vec::new();
        let request = echolab_protocol::Request {
            id: Some(1000 + i),
            command: echolab_protocol::Command::Sleep { micros: 300_000 },
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
    owners.sort_unstable();
    owners.dedup();
    let signalled = std::time::Instant::now();
    server.signal(Signal::SIGTERM);
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.read_response();
        c.assert_echo(&r, 1000 + i as u64, b"slow");
        c.expect_eof();
    }
    let stopped = server.finish(signalled);
    stopped.assert_clean("sigterm across workers");
    assert!(
        owners.len() >= 2,
        "the 8 clients should have been spread over workers: {owners:?}"
    );
    assert_eq!(stopped.total("accepted"), stopped.total("closed"));
}

/// A worker SIGKILLed is reaped (no zombie) and replaced in its slot; the others keep
/// serving meanwhile, and the replacement serves connections too.
#[test]
fn killed_worker_is_replaced() {
    let server = start("epoll", "reuseport");
    let pid = server.pid();
    let workers = four_workers(&server);
    let mut a = server.client();
    a.echo(b"a");
    let inode = accepted_inode(server.addr.port(), a.local_port()).expect("accepted");
    let serving_a = socket_owner(&workers, inode).expect("owner");
    let victim = *workers.iter().find(|&&w| w != serving_a).expect("another");
    kill(Pid::from_raw(victim), Signal::SIGKILL).expect("kill");
    wait_until(Duration::from_secs(5), "a replacement worker", || {
        let now = live_children(pid);
        now.len() == 4 && !now.contains(&victim)
    });
    assert!(
        children(pid).iter().all(|p| p.state != 'Z'),
        "the killed worker was not reaped"
    );
    a.echo(b"a, after the kill");
    let now = live_children(pid);
    let replacement = *now.iter().find(|p| !workers.contains(p)).expect("new pid");
    // Reuseport gives the replacement its predecessor's listener: some new connection lands there.
    let mut served_by_replacement = false;
    for i in 0..64 {
        let mut c = server.client();
        c.label = format!("after the restart {i}");
        c.echo(b"b");
        let inode = accepted_inode(server.addr.port(), c.local_port()).expect("accepted");
        if socket_owner(&now, inode) == Some(replacement) {
            served_by_replacement = true;
            break;
        }
    }
    assert!(
        served_by_replacement,
        "the replacement served no connection"
    );
    drop(a);
    let stopped = server.stop();
    stopped.assert_clean("killed worker");
    let stats = stopped.stats();
    let restarts: u64 = per_worker(stats, "restarts").iter().sum();
    assert_eq!(restarts, 1, "{stats:#}");
}

/// Each worker's descriptors after 40 connections have come and gone are what they were
/// before: every accepted socket was closed and deregistered.
#[test]
fn no_descriptor_leaks() {
    for accept in ["shared", "exclusive", "reuseport", "locked"] {
        let server = start("epoll", accept);
        let workers = four_workers(&server);
        // One round first, so that whatever a worker opens once (its spare, its epoll
        // instance) is already open.
        sequential_connections(&server, 4);
        let before: Vec<usize> = workers
            .iter()
            .map(|&w| open_fds(Pid::from_raw(w)).len())
            .collect();
        let held: Vec<Client> = (0..40).map(|_| server.client()).collect();
        for mut c in held {
            c.echo(b"leak?");
        }
        let settled = eventually(Duration::from_secs(5), || {
            let after: Vec<usize> = workers
                .iter()
                .map(|&w| open_fds(Pid::from_raw(w)).len())
                .collect();
            after == before
        });
        assert!(
            settled,
            "{accept}: descriptors per worker before {before:?}, after {:?}",
            workers
                .iter()
                .map(|&w| open_fds(Pid::from_raw(w)).len())
                .collect::<Vec<_>>()
        );
        server.stop().assert_clean(accept);
    }
}

/// Flags that do not go together: a usage error (status 2) that names the flags and why.
#[test]
fn bad_combinations_are_refused() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["--accept", "exclusive"],
            "--accept exclusive needs --worker eventloop",
        ),
        (
            &[
                "--worker",
                "eventloop",
                "--backend",
                "poll",
                "--accept",
                "exclusive",
            ],
            "--accept exclusive needs --backend epoll",
        ),
        (
            &["--backend", "epoll"],
            "--backend needs --worker eventloop",
        ),
        (
            &["--worker", "eventloop", "--max-requests-per-worker", "5"],
            "--max-requests-per-worker needs --worker blocking",
        ),
    ];
    for (args, expected) in cases {
        let (status, output) = run_tool(prefork_bin(), args, Duration::from_secs(10)).expect("ran");
        assert_eq!(status.code(), Some(2), "{args:?}: {output}");
        assert!(output.contains(expected), "{args:?}: {output}");
    }
}
