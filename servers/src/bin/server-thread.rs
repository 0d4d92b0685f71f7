//! server-thread: one OS thread per connection, or `--pool N` prethreaded workers.
//!
//! The simplest concurrent server there is: the code that serves a client is plain blocking
//! code (read, answer, write), and concurrency comes from running one copy of it per client on
//! its own kernel thread. What that costs is a stack per connection and a context switch each
//! time a blocked thread wakes; what it buys is that a slow request delays only its own client.
//!
//! Lifecycle:
//! - The main thread owns the listener. It waits in `poll(2)` on the listener and the
//!   self-pipe, and accepts until `EAGAIN`.
//! - Thread per connection (default): each accepted socket is *moved* to a new thread, which
//!   owns it from then on, serves it with the shared blocking handler, and closes it on exit.
//! - `--pool N`: N worker threads started up front take sockets from a bounded queue
//!   (crossbeam-channel); the main thread only accepts and enqueues.
//! - Either way, past `--max-connections` live connections (or with the pool's queue full) a
//!   new connection gets the ERROR reply `server busy` and is closed: the bound is explicit.
//! - SIGINT/SIGTERM: the main thread stops accepting, broadcasts shutdown, and joins the
//!   threads for up to `--grace`.
//!
//! # Run it
//! ```text
//! cargo run --release --bin server-thread -- --addr 127.0.0.1:7000
//! cargo run --release --bin server-thread -- --addr 127.0.0.1:7000 --pool 8 --queue 64
//! ```
//!
//! # Trade-offs
//! Unbounded thread-per-connection is the textbook design and its classic failure: every
//! client, even an idle one, costs a thread, and a flood of clients becomes a flood of threads
//! (memory, scheduler work) until something breaks. The pool bounds that at N threads and a
//! queue, at the price of clients waiting — or being refused — when all N are busy with slow
//! requests. Same handler, one flag: that contrast is the lesson (Stevens' UNP ch. 30 serv08,
//! CS:APP's `sbuf` server). A production server would also set `RLIMIT_NPROC`-aware limits and
//! use a smaller default stack.
//!
//! # See also
//! `docs/models/thread.md`.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, FromRawFd, IntoRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use clap::Parser;
use crossbeam_channel::{Receiver, TrySendError};
use echolab_protocol::Codec;
use echolab_servers::cli::{parse_size, ServerArgs};
use echolab_servers::conn::{self, Limits};
use echolab_servers::signals::{Shutdown, SignalPipe};
use echolab_servers::stats::{Report, SharedCounters};
use echolab_servers::{debug, info, log, net};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// One OS thread per connection, or a pool of prethreaded workers.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "echolab server: one OS thread per connection, or --pool N prethreaded workers"
)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,

    /// Prethreaded workers fed by a bounded queue; 0 starts a new thread per connection.
    #[arg(long, default_value_t = 0)]
    pool: usize,

    /// With --pool: connections that may wait for a free worker before new ones are refused.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    queue: u32,

    /// Stack size of each connection or worker thread (e.g. 64K, 2M).
    #[arg(long, default_value = "2M", value_parser = parse_size)]
    stack_size: usize,
}

/// What every connection thread shares: read-only settings and the counters.
struct Shared {
    codec: Box<dyn Codec>,
    limits: Limits,
    counters: SharedCounters,
    /// The read end of the shutdown broadcast; each thread polls it beside its socket.
    shutdown: Arc<OwnedFd>,
    /// Connections being served or queued.
    live: AtomicUsize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    log::init("server-thread", args.server.verbose);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            info!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> io::Result<()> {
    let started = Instant::now();
    let cfg = &args.server;
    let signals = SignalPipe::install(false)?;
    let mut shutdown = Shutdown::new()?;
    let shared = Arc::new(Shared {
        codec: cfg.protocol.codec(cfg.max_frame),
        limits: Limits {
            idle_timeout: cfg.idle_timeout,
            write_timeout: cfg.write_timeout,
        },
        counters: SharedCounters::new(1 + args.pool)?,
        shutdown: shutdown.watcher(),
        live: AtomicUsize::new(0),
    });

    let listener = net::bind(cfg.addr, cfg.backlog, false)?;
    // Nonblocking, so the loop can accept until EAGAIN after one poll() and go back to
    // waiting on both the listener and the signal pipe.
    listener.set_nonblocking(true)?;
    net::announce(listener.local_addr()?)?;

    // --pool: start the workers before the first client arrives.
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let queue = if args.pool > 0 {
        let (tx, rx) = crossbeam_channel::bounded::<(TcpStream, SocketAddr)>(args.queue as usize);
        for worker in 0..args.pool {
            let (rx, shared) = (rx.clone(), Arc::clone(&shared));
            let handle = thread::Builder::new()
                .name(format!("worker-{worker}"))
                .stack_size(args.stack_size)
                .spawn(move || pool_worker(worker, &rx, &shared))?;
            threads.push(handle);
        }
        Some(tx)
    } else {
        None
    };

    // The accept loop.
    let mut accept_paused_until: Option<Instant> = None;
    loop {
        let paused = accept_paused_until.is_some_and(|t| Instant::now() < t);
        if !paused {
            accept_paused_until = None;
        }
        let mut fds = [
            PollFd::new(signals.fd(), PollFlags::POLLIN),
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
        ];
        // While paused after EMFILE, watch only the signals, for at most the pause.
        let (watched, timeout) = if paused {
            (1, PollTimeout::from(100u16))
        } else {
            (2, PollTimeout::NONE)
        };
        // poll(2): EINTR when a signal lands; the loop goes round and reads the pipe.
        let _ = poll(&mut fds[..watched], timeout);

        if signals.take().terminate {
            break;
        }
        if paused {
            continue;
        }
        // Reap finished connection threads now and then, so the list stays short.
        threads.retain(|t| !t.is_finished());

        loop {
            // accept4(2) via std: EINTR is retried inside std; EAGAIN means the queue is empty.
            let (stream, peer) = match listener.accept() {
                Ok(conn) => conn,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // EMFILE/ENFILE: out of descriptors. The pending connection stays in the
                    // backlog and the listener stays readable, so accepting again at once would
                    // spin at 100% CPU: pause instead, and keep serving the connections we have.
                    info!("accept: {e}; pausing accepts for 100ms");
                    accept_paused_until = Some(Instant::now() + Duration::from_millis(100));
                    break;
                }
            };
            let counters = shared.counters.total();
            echolab_servers::stats::Counters::bump(&counters.accepted);
            debug!("{peer}: accepted");
            // Accepted sockets do not inherit O_NONBLOCK on Linux, but say what we rely on.
            let _ = stream.set_nonblocking(false);

            if shared.live.load(Ordering::Relaxed) >= cfg.max_connections as usize {
                busy(&shared, stream, peer, "max-connections reached");
                continue;
            }
            shared.live.fetch_add(1, Ordering::Relaxed);
            match &queue {
                Some(tx) => match tx.try_send((stream, peer)) {
                    Ok(()) => {}
                    Err(
                        TrySendError::Full((stream, peer))
                        | TrySendError::Disconnected((stream, peer)),
                    ) => {
                        shared.live.fetch_sub(1, Ordering::Relaxed);
                        busy(&shared, stream, peer, "pool queue full");
                    }
                },
                None => match spawn_connection_thread(&shared, stream, peer, args.stack_size) {
                    Ok(handle) => threads.push(handle),
                    Err((stream, e)) => {
                        shared.live.fetch_sub(1, Ordering::Relaxed);
                        info!("cannot start a thread for {peer}: {e}");
                        busy(&shared, stream, peer, "thread creation failed");
                    }
                },
            }
        }
    }

    // Graceful shutdown: stop accepting (the kernel now refuses new connections), tell every
    // connection to finish, and wait for the threads up to the grace period.
    info!(
        "shutting down: waiting up to {:?} for {} connections",
        cfg.grace,
        shared.live.load(Ordering::Relaxed)
    );
    drop(listener);
    drop(queue); // pool workers leave once the queue is empty
    shutdown.trigger();
    let deadline = Instant::now() + cfg.grace;
    while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let unfinished = threads.iter().filter(|t| !t.is_finished()).count();
    if unfinished > 0 {
        // Returning from main ends the process, and with it these threads, mid-request.
        info!("{unfinished} threads still busy after the grace period; exiting anyway");
    }

    let model = if args.pool > 0 {
        format!("thread-pool/{}", args.pool)
    } else {
        "thread-per-connection".into()
    };
    let mut report = Report::new(
        "server-thread",
        model,
        cfg.protocol.name(),
        started,
        &shared.counters,
    );
    if args.pool > 0 {
        report = report.with_workers(&shared.counters, false);
    }
    report
        .extra
        .insert("stack_size".into(), args.stack_size.into());
    report.emit(cfg.stats_file.as_deref());
    Ok(())
}

/// Thread per connection: start a thread that owns `stream` for the rest of its life.
///
/// `thread::spawn` would panic if the thread cannot be created (EAGAIN: out of memory for
/// stacks, or `RLIMIT_NPROC`); `Builder::spawn` returns the error, and the client gets a busy
/// reply instead of the server dying. To get the socket back in that case, the closure carries
/// the raw descriptor rather than the `TcpStream`: if the thread never starts, the closure is
/// dropped without running, the descriptor is still ours, and we rebuild the stream.
fn spawn_connection_thread(
    shared: &Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    stack_size: usize,
) -> Result<JoinHandle<()>, (TcpStream, io::Error)> {
    let fd = stream.into_raw_fd();
    let thread_shared = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .stack_size(stack_size)
        .spawn(move || {
            // SAFETY: `fd` came from `into_raw_fd` above, and ownership passes to exactly one
            // place: this thread if it runs, the error path below if it does not.
            let stream = unsafe { TcpStream::from_raw_fd(fd) };
            serve_one(&thread_shared, stream, peer, None);
        });
    spawned.map_err(|e| {
        // SAFETY: the thread was not created, so the closure never ran and never took `fd`.
        (unsafe { TcpStream::from_raw_fd(fd) }, e)
    })
}

/// A pool worker: serve connections from the queue, one at a time, until it is closed.
fn pool_worker(worker: usize, queue: &Receiver<(TcpStream, SocketAddr)>, shared: &Shared) {
    for (stream, peer) in queue.iter() {
        echolab_servers::stats::Counters::bump(&shared.counters.slot(1 + worker).accepted);
        serve_one(shared, stream, peer, Some(worker));
    }
}

/// Serves one connection on the calling thread and accounts for it.
fn serve_one(shared: &Shared, stream: TcpStream, peer: SocketAddr, worker: Option<usize>) {
    let outcome = conn::serve(
        stream,
        &*shared.codec,
        shared.limits,
        shared.shutdown.as_fd(),
    );
    match worker {
        Some(w) => conn::record_end(
            &outcome,
            &[shared.counters.total(), shared.counters.slot(1 + w)],
            peer,
        ),
        None => conn::record_end(&outcome, &[shared.counters.total()], peer),
    }
    shared.live.fetch_sub(1, Ordering::Relaxed);
}

/// Refuses a connection with the protocol's ERROR reply.
fn busy(shared: &Shared, stream: TcpStream, peer: SocketAddr, why: &str) {
    echolab_servers::stats::Counters::bump(&shared.counters.total().refused);
    debug!("{peer}: refused ({why})");
    conn::refuse(stream, &*shared.codec, "server busy");
}
