//! Shared machinery of echolab's server models.
//!
//! Each binary in `src/bin/` is one concurrency model and reads top to bottom as that model's
//! lifecycle: who accepts, who reads and writes, who owns each descriptor, how a connection
//! ends, who reaps or joins. Everything two models have in common lives here, written once,
//! so that a difference measured between two models is the model's and not the code's:
//!
//! - [`cli`]: the flags every server takes;
//! - [`net`]: the listening socket, the `listening on ADDR` line harnesses wait for, and the
//!   [`net::Acceptor`] that thread, fork and the event loop accept with, including what they
//!   do when descriptors run out (pause, or shed with a spare descriptor);
//! - [`conn`]: the request step every model shares (`answer_all`), and the blocking connection
//!   handler (thread, fork and prefork all call it);
//! - [`eventloop`]: the event loop itself (nonblocking connections, accept, budgets, timeouts,
//!   the tick, graceful shutdown), run by server-eventloop (once, or once per thread with
//!   `--threads`) and by each of `server-prefork --worker eventloop`'s workers, with its
//!   [`eventloop::Watch`] saying when the listener is watched (always, with `EPOLLEXCLUSIVE`,
//!   or under the accept lock) and its [`eventloop::Stop`] what starts its shutdown;
//! - [`acceptlock`]: prefork's accept lock (`fcntl`), waited for by blocking workers and tried
//!   once a turn by event-loop workers;
//! - [`outbuf`]: a connection's output buffer, written all at once by the blocking handler and
//!   as far as the socket takes it by the event loop;
//! - [`poller`]: the event loop's readiness backends (select, poll, epoll), and the one
//!   rounding of a wait to poll(2)'s milliseconds ([`poller::poll_timeout`]);
//! - [`exec`]: what a stateless request does (ECHO, SLEEP, SPIN, pi);
//! - [`session`]: the one stateful part, HELLO, INCR and GET: the counters and the records
//!   that answer a retried INCR instead of running it twice, in one fixed-size table in
//!   fork-shared memory behind a robust process-shared lock, the same for every model;
//! - [`signals`]: signal handlers that only set flags, the self-pipe, the shutdown broadcast;
//! - [`stats`]: counters in fork-shared memory and the report written on shutdown;
//! - [`saturation`]: for the bounded models, a log line and two figures when every worker
//!   is busy and connections wait;
//! - [`children`]: reaping, for the models that fork;
//! - [`log`]: `info!` and `debug!`, and the once-a-second limit on lines about a lasting
//!   condition.
//!
//! EINTR policy, in one place (also in docs/ARCHITECTURE.md): std's `accept` and `write_all`
//! retry EINTR themselves; a plain `read` and raw nix calls return it, and each call site says
//! what it does; `poll` is never restarted, which is what lets a signal wake a loop.

pub mod acceptlock;
pub mod children;
pub mod cli;
pub mod conn;
pub mod eventloop;
pub mod exec;
pub mod log;
pub mod net;
pub mod outbuf;
pub mod poller;
pub mod saturation;
pub mod session;
pub mod signals;
pub mod stats;

use std::process::ExitCode;

/// How much to ask of each `read`, in every model: big enough that a pipelined burst or a
/// large frame takes few calls, small enough that a thousand idle connections cost little (the
/// buffer is allocated on first use).
pub const READ_CHUNK: usize = 16 * 1024;

/// Parses a binary's flags, then checks what the shared flags say together
/// ([`cli::ServerArgs::check`]); a failure exits with clap's usage error, like any bad flag.
pub fn parse_args<A: clap::Parser>(server: fn(&A) -> &cli::ServerArgs) -> A {
    let args = A::parse();
    if let Err(why) = server(&args).check() {
        A::command()
            .error(clap::error::ErrorKind::ValueValidation, why)
            .exit();
    }
    args
}

/// The `main` of every server: parse nothing (the binary has), set up logging and the
/// per-request testing aid, run, and turn an error into a message and exit status 1.
pub fn main_with(
    program: &'static str,
    settings: cli::ProcessSettings,
    run: impl FnOnce() -> std::io::Result<()>,
) -> ExitCode {
    log::init(program, settings.verbose);
    // Set before the model starts any thread or forks any process, so every one of them sees it.
    exec::set_debug_spin_ns(settings.debug_spin_ns);
    exec::set_debug_work(settings.debug_work);
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            info!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
