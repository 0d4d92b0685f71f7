//! What only `--engine uring` promises, beyond the tests every engine passes (CI runs run.rs,
//! faults.rs, retry.rs and the rest again with `ECHOLAB_TEST_ENGINE=uring`): where the kernel
//! will not give it a ring, one line and a usage error before any connection; the report says
//! which engine ran; and the situations where the kernel still holds a connection's buffer
//! when the connection goes (short connections, which close with a receive in flight every
//! few requests) leave every figure exact.

mod common;
#[path = "common/seccomp.rs"]
mod seccomp;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use common::{loadgen, loadgen_bin, FakeServer, Server};
use echolab_loadgen::syscalls::SyscallCounter;

/// Where io_uring_setup(2) fails (a seccomp filter here, as in Docker's default profile),
/// `--engine uring` says so in one line that names the way out, exits 2 like a bad flag, and
/// never connects: a run that fell back to epoll silently would mislabel its figures.
#[test]
fn without_io_uring_it_says_so_in_one_line_and_exits_2() {
    let fake = FakeServer::start(|c| c.hold());
    let mut cmd = Command::new(loadgen_bin());
    cmd.args(["run", "--engine", "uring", "-n", "10", "--addr"])
        .arg(fake.addr.to_string())
        .stdin(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: it builds the filter on its stack and calls prctl(2) twice.
    unsafe { cmd.pre_exec(seccomp::refuse_io_uring_setup) };
    let out = cmd.output().expect("run loadgen");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit status\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line on stderr:\n{stderr}");
    assert!(
        stderr.contains("io_uring is not available") && stderr.contains("--engine epoll"),
        "the line says what is missing and what to use instead: {stderr}"
    );
    assert!(out.stdout.is_empty(), "no summary");
    assert!(fake.peers().is_empty(), "connected: {:?}", fake.peers());
}

/// The same counted run through both engines against both kinds of server: every figure
/// exact, and the report's parameters say which engine produced it.
#[test]
fn both_engines_verify_every_reply_and_say_which_ran() {
    for server in ["server-eventloop", "server-uring"] {
        let s = Server::start(server, &[]);
        for engine in ["epoll", "uring"] {
            for flags in ["-c 1", "-c 64 -p 4", "-t 2 -c 32"] {
                let run = loadgen(&format!(
                    "--addr {} --engine {engine} -n 4000 --warmup 0 {flags}",
                    s.addr()
                ));
                run.assert_clean(4000);
                assert_eq!(
                    run.get("params.engine"),
                    engine,
                    "{server} {flags}\n{}",
                    run.output()
                );
            }
        }
    }
}

/// Short connections close after K requests, each with a receive still lent to the kernel:
/// the buffer becomes the ring's until the cancellation completes, and the slot's next
/// socket starts a new generation. Every reply must still be verified, and the count of
/// connections must be exact.
#[test]
fn short_connections_close_with_a_receive_in_flight_and_lose_nothing() {
    let s = Server::start("server-eventloop", &[]);
    let run = loadgen(&format!(
        "--addr {} --engine uring -n 3000 --warmup 0 -c 8 --requests-per-conn 3 -p 2",
        s.addr()
    ));
    run.assert_clean(3000);
    // 3 requests per connection; a slot may also have reconnected just before the budget ran
    // out on another slot, and then had nothing to send (as in run.rs).
    let connects = run.u("connect_us.count");
    assert!(
        (1000..=1008).contains(&connects),
        "connect_us.count {connects}, expected 1000 (to 1008)\n{}",
        run.output()
    );
}

/// `--count-syscalls` counts both sides with the kernel's tracepoint. One connection, one
/// request at a time, against server-eventloop: the server makes about an epoll_wait, a read
/// and a write per request whichever client drives it; loadgen's epoll engine about as many,
/// and its uring engine fewer, since a reply's completion and the next request's send share
/// one io_uring_enter. (The bounds are the structure's, not timings: 3 calls is the epoll
/// loop's structure per request, fewer when a wait finds the next reply already there; a ring
/// that made as many as epoll would have batched nothing.)
#[test]
fn the_ring_makes_fewer_system_calls_per_request() {
    let s = Server::start("server-eventloop", &["--backend", "epoll"]);
    let mut per_engine = Vec::new();
    for engine in ["epoll", "uring"] {
        let run = loadgen(&format!(
            "--addr {} --engine {engine} -c 1 -n 3000 --warmup 0 --server-pid {} --count-syscalls",
            s.addr(),
            s.pid()
        ));
        run.assert_clean(3000);
        let (client, server) = (
            run.report()["client_cpu"]["syscalls_per_request"].as_f64(),
            run.report()["server"]["syscalls_per_request"].as_f64(),
        );
        let (Some(client), Some(server)) = (client, server) else {
            let why = format!("no system-call counts (perf events?):\n{}", run.output());
            common::skip("the_ring_makes_fewer_system_calls_per_request", &why);
            return;
        };
        assert!(
            (2.5..=5.0).contains(&server),
            "{engine}: server {server:.2} calls per request\n{}",
            run.output()
        );
        per_engine.push(client);
    }
    let (epoll, uring) = (per_engine[0], per_engine[1]);
    assert!(epoll >= 2.0, "epoll engine: {epoll:.2} calls per request");
    assert!(
        uring < epoll - 0.3,
        "uring engine {uring:.2} against epoll's {epoll:.2} calls per request"
    );
}

/// The counter itself, on this test process's own threads: a burst of system calls shows up,
/// at least as many as were made (the harness's other threads may add their own).
#[test]
fn the_counter_counts_the_calls_a_thread_makes() {
    let counter = match SyscallCounter::attach(SyscallCounter::own_threads()) {
        Ok(c) => c,
        Err(why) => {
            common::skip("the_counter_counts_the_calls_a_thread_makes", &why);
            return;
        }
    };
    let before = counter.total();
    for _ in 0..1000 {
        // SAFETY: getppid(2) takes nothing and cannot fail.
        let _ = unsafe { libc::getppid() };
    }
    let made = counter.total() - before;
    assert!(made >= 1000, "counted {made} of at least 1000");
}
