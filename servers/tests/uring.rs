//! What only server-uring promises, beyond the tables every model passes (conformance,
//! lifecycle, robustness) and the event loop's own rows it shares (eventloop.rs): where the
//! kernel will not give it a ring, it says so in one line and exits 2, as for a bad flag,
//! rather than fail later or half start; and its stats say which model ran and how it
//! received, with the figures that show what a ring is for (completions per wait).

mod common;
// The seccomp filter loadgen's tests use too, for its io_uring engine.
#[path = "../../loadgen/tests/common/seccomp.rs"]
mod seccomp;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use common::*;

/// Docker's default seccomp profile and `kernel.io_uring_disabled=2` both make
/// io_uring_setup(2) fail with `EPERM`. The test does the same to the server alone: a seccomp
/// filter, installed in the child between fork and exec, that fails that one system call with
/// `EPERM` and allows every other. The server must print one line on stderr that says
/// io_uring is not available, nothing on stdout (no `listening on`), and exit 2.
#[test]
fn without_io_uring_it_says_so_in_one_line_and_exits_2() {
    let mut cmd = Command::new(uring_bin());
    cmd.args(["--addr", "127.0.0.1:0"]).stdin(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: it builds the filter on its stack and calls prctl(2) twice, nothing
    // that allocates or takes a lock.
    unsafe { cmd.pre_exec(seccomp::refuse_io_uring_setup) };
    let out = cmd.output().expect("run server-uring");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit status\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line on stderr:\n{stderr}");
    assert!(
        stderr.contains("io_uring is not available") && stderr.contains("server-eventloop"),
        "the line says what is missing and what to run instead: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The stats file names the model with how it received (`uring/multishot`, `uring/single`),
/// says so again in `extra.recv`, gives the provided buffers only where there were some, and
/// counts the waits in io_uring_enter and the completions they brought back.
#[test]
fn stats_name_the_model_and_how_it_received() {
    for (args, recv) in [
        (&[][..], "multishot"),
        (&["--recv", "single"][..], "single"),
    ] {
        let test = format!("server-uring {args:?}");
        let server = Server::start(uring_bin(), args);
        let mut c = server.client();
        c.label = format!("{test}: one client");
        for i in 0..10 {
            c.echo(format!("counted {i}").as_bytes());
        }
        drop(c);
        let stopped = server.stop();
        stopped.assert_clean(&test);
        let stats = stopped.stats();
        assert_eq!(stats["server"], "server-uring", "{test}\n{stats:#}");
        assert_eq!(stats["model"], format!("uring/{recv}"), "{test}\n{stats:#}");
        assert_eq!(stats["extra"]["recv"], recv, "{test}\n{stats:#}");
        assert_eq!(
            stats["extra"].get("provided_buffers").is_some(),
            recv == "multishot",
            "{test}: provided buffers only where they were used\n{stats:#}"
        );
        for figure in ["io_uring_enter_waits", "completions"] {
            assert!(
                stats["extra"][figure].as_u64().is_some_and(|n| n > 0),
                "{test}: extra.{figure}\n{stats:#}"
            );
        }
        assert_eq!(stopped.total("requests"), 10, "{test}\n{stats:#}");
        assert_eq!(stopped.total("accepted"), 1, "{test}\n{stats:#}");
        assert_eq!(stopped.total("closed"), 1, "{test}\n{stats:#}");
    }
}
