//! server-eventloop: one process, one thread, every client — nonblocking sockets and a
//! readiness API (`--backend select|poll|epoll`).
//!
//! No thread or process per client: the single thread asks the kernel which sockets are ready,
//! and for each one does whatever can be done *without blocking* — read what has arrived,
//! answer the complete requests, write what the socket will take — then moves on. The state a
//! blocking server keeps on a thread's stack (where in the frame am I, what is left to write)
//! lives in a per-connection struct instead: a read buffer that keeps half a frame until the
//! rest arrives, and a write buffer that keeps what the kernel did not take. This is Redis,
//! nginx (one loop per worker), Node.js.
//!
//! Lifecycle:
//! - The loop owns everything: the listener, the self-pipe for signals, every connection. All
//!   are registered with the poller under a token; the loop sleeps in `wait` until something
//!   is ready (or the 100 ms housekeeping tick).
//! - Listener ready: accept until `EAGAIN`, make each socket nonblocking, register it for reading.
//!   Out of descriptors, the acceptor keeps the loop idle by shedding: a spare descriptor, held
//!   in reserve, is freed to accept the client, who is told "server busy" and closed at once
//!   (`net::Acceptor::with_spare`). Other accept failures pause accepting until a later tick.
//! - Connection ready: read until `EAGAIN`, answer every complete request (the same `answer_all`
//!   the blocking servers use), write until `EAGAIN`. Writability is watched only while output
//!   is pending; reading stops while more than `--max-pending-output` bytes wait (backpressure:
//!   a client that does not read its replies cannot grow the server's memory).
//! - A connection ends on EOF, a fatal protocol error (after its reply is sent), the idle
//!   timeout (no request and nothing left to send) or the write timeout (checked on the tick),
//!   or shutdown: deregister, then close.
//! - SIGINT/SIGTERM: stop accepting, answer what each client has already sent, stop reading,
//!   send what is pending, close; exit after the last connection or `--grace`.
//!
//! # Run it
//! ```text
//! cargo run --release --bin server-eventloop -- --addr 127.0.0.1:7000 --backend epoll
//! cargo run --release --bin server-eventloop -- --addr 127.0.0.1:7000 --backend select
//! ```
//!
//! # Trade-offs
//! One thread serves thousands of connections with a few kilobytes each and no context switch
//! per request — but it is *one* thread: a SLEEP request blocks the loop and every client waits
//! for it, and a SPIN request burns the only CPU the server uses. That is the lesson, not a bug;
//! real event-loop servers push blocking work to a thread pool (Node's libuv, Redis's bio
//! threads) and run one loop per core (nginx workers, Redis 6 I/O threads). Which readiness API
//! the loop uses matters with many idle connections: select and poll scan all of them on every
//! wait, epoll only the ready ones (see `poller.rs`).
//!
//! The loop itself lives in the library (`echolab_servers::eventloop`), because prefork's
//! event-loop workers run the very same one; this file is the model's lifecycle around it.
//!
//! # See also
//! `docs/models/eventloop.md`.

use std::io;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use echolab_servers::cli::ServerArgs;
use echolab_servers::eventloop::{EventLoop, LoopArgs, Settings, Shared, Watch};
use echolab_servers::info;
use echolab_servers::net::{self, Acceptor};
use echolab_servers::poller::Backend;
use echolab_servers::session::Store;
use echolab_servers::signals::SignalPipe;
use echolab_servers::stats::{Report, SharedCounters};

/// One thread, nonblocking sockets, a readiness API.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "echolab server: one thread, nonblocking sockets, select/poll/epoll",
    next_line_help = true
)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,

    /// Readiness API: select (descriptors < 1024 only), poll, or epoll (via mio).
    #[arg(long, value_enum, default_value_t = Backend::Epoll)]
    backend: Backend,

    #[command(flatten)]
    event_loop: LoopArgs,
}

fn main() -> ExitCode {
    let args: Args = echolab_servers::parse_args(|a: &Args| &a.server);
    echolab_servers::main_with("server-eventloop", args.server.process_settings(), || {
        run(args)
    })
}

fn run(args: Args) -> io::Result<()> {
    let started = Instant::now();
    let cfg = &args.server;
    let signals = SignalPipe::install(false)?;
    // With a spare descriptor: out of descriptors, the loop sheds clients rather than pause.
    let acceptor = Acceptor::with_spare(net::bind(cfg.addr, cfg.backlog, false)?)?;
    let addr = acceptor.local_addr()?;
    // One slot, the totals: the loop is the whole server.
    let counters = SharedCounters::new(1)?;
    let store = Store::new(cfg.sessions())?;
    // The loop owns everything from here: the listener, the signal pipe (both registered
    // now, so `listening on` is true when printed), every connection.
    let mut ev = EventLoop::new(
        args.backend.create()?,
        Settings::new(cfg, &args.event_loop),
        Shared {
            store: &store,
            counters: &counters,
            slot: 0,
        },
        acceptor,
        Watch::Always,
        &signals,
    )?;
    net::announce(addr)?;
    info!("backend {}", ev.backend());

    // Serve until SIGINT/SIGTERM, then stop accepting, finish, and close every connection.
    ev.run(&signals)?;

    // Every connection is closed: the statistics.
    let backend = ev.backend();
    let model = format!("eventloop/{backend}");
    let mut report = Report::new(
        "server-eventloop",
        model,
        cfg.protocol.name(),
        started,
        &counters,
    )
    .with_sessions(&store)
    .with_wakeups(&counters);
    report.extra.insert("backend".into(), backend.into());
    report.emit(cfg.stats_file.as_deref());
    Ok(())
}
