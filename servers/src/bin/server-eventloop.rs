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
//! With `--threads N` (N > 1), one such loop per thread, the memcached, Netty and Seastar
//! shape (one loop per core):
//! - Each loop has its own `SO_REUSEPORT` listener on the one port (the first bound learns the
//!   port when `--addr` says 0; the others join it), and the kernel hashes each new connection
//!   onto one of them: no loop is woken for a connection another takes.
//! - Every loop is built on the main thread (so `listening on` is true when printed), then
//!   runs on a thread of its own, owning its listener, its poller and its connections; a
//!   connection lives and dies on the thread that accepted it. Signals are blocked in the loop
//!   threads.
//! - The main thread only waits: for SIGINT/SIGTERM on the self-pipe, or for a loop that ended
//!   on its own (an error, a panic). Then it closes the shutdown broadcast, which every loop
//!   watches and shuts down on as above, joins every thread, and reports per loop.
//!
//! # Run it
//! ```text
//! cargo run --release --bin server-eventloop -- --addr 127.0.0.1:7000 --backend epoll
//! cargo run --release --bin server-eventloop -- --addr 127.0.0.1:7000 --backend select
//! cargo run --release --bin server-eventloop -- --addr 127.0.0.1:7000 --threads 4
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
//! `--threads` is that loop per core, in threads rather than prefork's processes
//! (`server-prefork --worker eventloop --accept reuseport`), and what differs is the address
//! space. Shared: the session table, the counters, the allocator are simply there for every
//! loop, with no `MAP_SHARED` mapping needed (the table still lives in one, because every model
//! uses the one type), and the loops' only contention is the table's lock and the allocator.
//! But nothing isolates them either: a crash in one loop (a segfault, an abort, a panic the
//! main thread turns into an exit) takes every loop and every client with it, where a prefork
//! parent restarts the one worker that died; and one loop blocked in a SLEEP still blocks only
//! the clients that hashed onto it. `--max-connections` is each loop's limit.
//!
//! The loop itself lives in the library (`echolab_servers::eventloop`), because prefork's
//! event-loop workers run the very same one; this file is the model's lifecycle around it.
//!
//! # See also
//! `docs/models/eventloop.md`.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::thread;
use std::time::Instant;

use clap::Parser;
use echolab_servers::cli::ServerArgs;
use echolab_servers::eventloop::{EventLoop, LoopArgs, Settings, Shared, Stop, Watch};
use echolab_servers::info;
use echolab_servers::net::{self, Acceptor};
use echolab_servers::poller::Backend;
use echolab_servers::session::Store;
use echolab_servers::signals::{self, Shutdown, SignalPipe};
use echolab_servers::stats::{Report, SharedCounters};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// One thread (or one per `--threads`), nonblocking sockets, a readiness API.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "echolab server: one thread (or --threads N loops), nonblocking sockets, select/poll/epoll",
    next_line_help = true
)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,

    /// Readiness API: select (descriptors < 1024 only), poll, or epoll (via mio).
    #[arg(long, value_enum, default_value_t = Backend::Epoll)]
    backend: Backend,

    /// Event loops, one per thread, 1 to 256. More than 1: each has its own SO_REUSEPORT
    /// listener on the port, and --max-connections is each loop's.
    ///
    /// The kernel spreads new connections over the listeners by a hash of their addresses, not
    /// by which loop is free. Each loop runs --backend.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..=MAX_THREADS),
        allow_hyphen_values = true
    )]
    threads: u16,

    #[command(flatten)]
    event_loop: LoopArgs,
}

/// `--threads`' bound: far more loops than cores only adds threads that wait for a CPU.
const MAX_THREADS: i64 = 256;

fn main() -> ExitCode {
    let args: Args = echolab_servers::parse_args(|a: &Args| &a.server);
    echolab_servers::main_with("server-eventloop", args.server.process_settings(), || {
        run(args)
    })
}

fn run(args: Args) -> io::Result<()> {
    let started = Instant::now();
    let cfg = &args.server;
    let threads = usize::from(args.threads);
    let signals = SignalPipe::install(false)?;
    let settings = Settings::new(cfg, &args.event_loop);
    let store = Store::new(cfg.sessions())?;
    let backend = args.backend.name();

    let counters = if threads == 1 {
        // One loop, on this thread. One slot, the totals: the loop is the whole server.
        let counters = SharedCounters::new(1)?;
        // With a spare descriptor: out of descriptors, the loop sheds clients rather than pause.
        let acceptor = Acceptor::with_spare(net::bind(cfg.addr, cfg.backlog, false)?)?;
        let addr = acceptor.local_addr()?;
        // The loop owns everything from here: the listener, the signal pipe (both registered
        // now, so `listening on` is true when printed), every connection.
        let mut ev = EventLoop::new(
            args.backend.create()?,
            settings,
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
        ev.run()?;
        counters
    } else {
        // A loop per thread, each counting into its own slot (1..=N) besides the totals.
        let counters = SharedCounters::new(1 + threads)?;
        serve_on_threads(&args, threads, settings, &signals, &store, &counters)?;
        counters
    };

    // Every connection is closed (and every loop thread joined): the statistics.
    let model = if threads == 1 {
        format!("eventloop/{backend}")
    } else {
        format!("eventloop-threads/{backend}")
    };
    let mut report = Report::new(
        "server-eventloop",
        model,
        cfg.protocol.name(),
        started,
        &counters,
    )
    .with_sessions(&store);
    if threads > 1 {
        // Threads have no pid of their own: each line names its loop's tid instead.
        report = report.with_workers(&counters, false);
    }
    report = report.with_wakeups(&counters);
    report.extra.insert("backend".into(), backend.into());
    if threads > 1 {
        report.extra.insert("threads".into(), threads.into());
    }
    report.emit(cfg.stats_file.as_deref());
    Ok(())
}

/// `--threads N`: binds N `SO_REUSEPORT` listeners, builds a loop over each, runs each on its
/// own thread until a signal (or a loop's failure) says stop, then shuts them all down and
/// joins them. Returns the first loop's error, if one failed.
fn serve_on_threads(
    args: &Args,
    threads: usize,
    settings: Settings,
    signals: &SignalPipe,
    store: &Store,
    counters: &SharedCounters,
) -> io::Result<()> {
    let cfg = &args.server;
    // The first bind resolves port 0 to a real port; the others join that port. Every socket
    // must say SO_REUSEPORT, the first included, or the kernel refuses the second bind.
    let first = net::bind(cfg.addr, cfg.backlog, true)?;
    let port = first.local_addr()?;
    let mut listeners: Vec<TcpListener> = vec![first];
    for _ in 1..threads {
        listeners.push(net::bind(port, cfg.backlog, true)?);
    }

    // Every loop watches the broadcast's read end (one descriptor, shared by reference), and
    // this thread closes the write end to stop them all.
    let mut shutdown = Shutdown::new()?;
    let watcher = shutdown.watcher();
    // Built here, not on their threads: a loop that cannot start (a poller that cannot be
    // created) stops the server before `listening on`, and when that line is printed, every
    // listener is registered with its loop.
    let mut loops = Vec::with_capacity(threads);
    for (i, listener) in listeners.into_iter().enumerate() {
        loops.push(EventLoop::new(
            args.backend.create()?,
            settings.clone(),
            Shared {
                store,
                counters,
                slot: 1 + i,
            },
            Acceptor::with_spare(listener)?,
            Watch::Always,
            Stop::Broadcast(watcher.as_fd()),
        )?);
    }
    net::announce(port)?;
    info!(
        "{threads} event loops ({}), one per thread, each with its own SO_REUSEPORT listener",
        args.backend.name()
    );

    // A loop thread writes a byte here as it ends, however it ends (see `EndNotice`): loops end
    // only when told to, so a byte before the signal means one failed, and the rest must stop.
    let (ended_rx, ended_tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    thread::scope(|s| {
        let mut handles = Vec::with_capacity(threads);
        let mut spawned = Ok(());
        {
            // The loop threads inherit a mask that blocks SIGINT and SIGTERM, so that only
            // this thread, which reads the self-pipe, is ever interrupted by them.
            let _blocked = signals::block_for_threads()?;
            for (i, mut ev) in loops.into_iter().enumerate() {
                let ended_tx = &ended_tx;
                let spawn = thread::Builder::new()
                    .name(format!("loop-{i}"))
                    .spawn_scoped(s, move || {
                        let _ended = EndNotice(ended_tx);
                        // The report names each loop by its tid (`top -H`, `perf --tid`).
                        let tid = u64::try_from(nix::unistd::gettid().as_raw()).unwrap_or(0);
                        counters.slot(1 + i).pid.store(tid, Relaxed);
                        ev.run()
                    });
                match spawn {
                    Ok(handle) => handles.push(handle),
                    // Out of threads (RLIMIT_NPROC, memory for stacks): stop the ones started.
                    Err(e) => {
                        spawned = Err(e);
                        break;
                    }
                }
            }
        }
        let waited = match spawned {
            Ok(()) => wait_for_stop(signals, &ended_rx),
            Err(e) => Err(e),
        };

        // Every loop sees the broadcast close, stops accepting, finishes its clients within
        // --grace and returns; the scope would wait forever for one that was never told.
        shutdown.trigger();
        let mut result = waited;
        for (i, handle) in handles.into_iter().enumerate() {
            let joined = match handle.join() {
                Ok(served) => served,
                Err(_) => Err(io::Error::other(format!("event loop {i} panicked"))),
            };
            if let Err(e) = joined {
                info!("event loop {i}: {e}");
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    })
}

/// Writes one byte to the "a loop ended" pipe when dropped: at the end of the thread's
/// closure, or while a panic unwinds it.
struct EndNotice<'a>(&'a OwnedFd);

impl Drop for EndNotice<'_> {
    fn drop(&mut self) {
        // write(2) to a nonblocking pipe: a full pipe already says "ended", so losing the byte
        // is fine; EINTR cannot happen, this thread blocks the signals.
        let _ = nix::unistd::write(self.0, &[1]);
    }
}

/// The main thread's whole job while the loops serve: sleep until SIGINT/SIGTERM, or until a
/// loop ends on its own. `Ok` either way: the caller learns a loop's failure when it joins it.
fn wait_for_stop(signals: &SignalPipe, ended: &OwnedFd) -> io::Result<()> {
    loop {
        let mut fds = [
            PollFd::new(signals.fd(), PollFlags::POLLIN),
            PollFd::new(ended.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            // poll(2): EINTR when the signal lands here, as it should; the pipe then says which.
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        if fds[1].any().unwrap_or(false) {
            info!("an event loop ended on its own; stopping the others");
            return Ok(());
        }
        if fds[0].any().unwrap_or(false) && signals.take().terminate {
            info!("shutting down every event loop");
            return Ok(());
        }
    }
}
