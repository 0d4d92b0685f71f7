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
//!   (crossbeam-channel); the main thread only accepts and enqueues, and every 250 ms looks
//!   whether connections wait with every worker busy, which it logs at most once a second.
//! - Either way, past `--max-connections` live connections (or with the pool's queue full) a
//!   new connection gets the ERROR reply `server busy` and is closed: the bound is explicit.
//! - SIGINT/SIGTERM: the main thread stops accepting, broadcasts shutdown, and waits for the
//!   threads to finish for up to `--grace`.
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
use echolab_protocol::ServerCodecs;
use echolab_servers::cli::{parse_stack_size, ServerArgs};
use echolab_servers::conn::{self, Limits};
use echolab_servers::net::{self, Acceptor};
use echolab_servers::saturation::{Saturation, SAMPLE_EVERY};
use echolab_servers::session::Store;
use echolab_servers::signals::{Shutdown, SignalPipe};
use echolab_servers::stats::{Counters, Report, SharedCounters};
use echolab_servers::{debug, info};

/// One OS thread per connection, or a pool of prethreaded workers.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "echolab server: one OS thread per connection, or --pool N prethreaded workers",
    next_line_help = true,
    mut_arg("max_connections", |a| a
        .help("Most connections at once, served or queued; one more gets \"server busy\". With --pool N, only N are served at once")
        .long_help(
            "Most connections at once, served or queued; one more gets an ERROR reply \
             \"server busy\" and is closed. Without --pool, every connection has its own \
             thread and this is the limit. With --pool N, the N workers are the limit on \
             connections served at once: the rest wait in the pool's queue (up to --queue, \
             then \"server busy\"), and the server logs once a second while they do."
        ))
)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,

    /// Prethreaded workers fed by a bounded queue; 0 starts a new thread per connection.
    ///
    /// A worker serves one connection from accept to close, so with long-lived clients the
    /// pool serves N of them and the rest wait in the queue, however idle the N are.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=4096), allow_negative_numbers = true)]
    pool: u16,

    /// With --pool: connections that may wait for a free worker before new ones are refused.
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..), allow_negative_numbers = true)]
    queue: u32,

    /// Stack size of each connection or worker thread (e.g. 64K, 2M; 64K to 1G).
    ///
    /// A connection handler needs up to 24 KiB (measured in release and debug builds); the
    /// floor of 64K leaves more than twice that, since a thread that overflows its stack aborts
    /// the whole server. Only the pages used become memory; the rest is address space.
    #[arg(long, value_name = "SIZE", default_value = "2M", value_parser = parse_stack_size, allow_hyphen_values = true)]
    stack_size: usize,
}

/// A connection waiting in the pool's queue, with its place in the live count.
type Queued = (TcpStream, SocketAddr, Live);

/// What every connection thread shares: read-only settings, the counters and the session table.
struct Shared {
    codecs: ServerCodecs,
    limits: Limits,
    counters: SharedCounters,
    /// HELLO, INCR and GET's table. It sits in a fork-shared mapping that no other process
    /// ever sees here: the threads share it because they share the address space, and its
    /// lock is what keeps two of them from changing it at once.
    store: Store,
    /// The read end of the shutdown broadcast; each thread polls it beside its socket.
    shutdown: Arc<OwnedFd>,
    /// Connections being served or queued.
    live: AtomicUsize,
}

fn main() -> ExitCode {
    let args: Args = echolab_servers::parse_args(|a: &Args| &a.server);
    echolab_servers::main_with("server-thread", args.server.process_settings(), || {
        run(args)
    })
}

fn run(args: Args) -> io::Result<()> {
    let started = Instant::now();
    let cfg = &args.server;
    let pool = usize::from(args.pool);
    let signals = SignalPipe::install(false)?;
    let mut shutdown = Shutdown::new()?;
    let shared = Arc::new(Shared {
        codecs: cfg.protocol.codecs(cfg.max_frame),
        limits: cfg.limits(),
        counters: SharedCounters::new(1 + pool)?,
        store: Store::new(cfg.sessions())?,
        shutdown: shutdown.watcher(),
        live: AtomicUsize::new(0),
    });
    let mut acceptor = Acceptor::new(net::bind(cfg.addr, cfg.backlog, false)?)?;
    net::announce(acceptor.local_addr()?)?;

    // --pool: start the workers before the first client arrives.
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let queue = if pool > 0 {
        let (tx, rx) = crossbeam_channel::bounded::<Queued>(args.queue as usize);
        for worker in 0..pool {
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

    // The accept loop: sleep in poll until a client or a signal comes, accept every waiting
    // client, hand each to a thread. With a pool, the loop also wakes every SAMPLE_EVERY to
    // look for clients waiting on busy workers: nothing else would notice them.
    let mut saturation = Saturation::default();
    let mut next_sample = Instant::now() + SAMPLE_EVERY;
    let tick = (pool > 0).then_some(SAMPLE_EVERY);
    loop {
        if acceptor.wait_at_most(&signals, tick).terminate {
            break;
        }
        if let Some(tx) = queue.as_ref().filter(|_| Instant::now() >= next_sample) {
            next_sample = Instant::now() + SAMPLE_EVERY;
            sample_pool(&mut saturation, &shared, &acceptor, tx.len(), args.queue);
        }
        // Forget connection threads that have finished, so the list stays short.
        threads.retain(|t| !t.is_finished());
        while let Some((stream, peer)) = acceptor.accept() {
            let totals = shared.counters.total();
            Counters::bump(&totals.accepted);
            debug!("{peer}: accepted");
            if shared.live.load(Ordering::Relaxed) >= cfg.max_connections as usize {
                conn::refuse(
                    stream,
                    &shared.codecs,
                    totals,
                    peer,
                    "max-connections reached",
                );
                continue;
            }
            let live = Live::count(&shared);
            match &queue {
                Some(tx) => {
                    if let Err(
                        TrySendError::Full((stream, peer, _))
                        | TrySendError::Disconnected((stream, peer, _)),
                    ) = tx.try_send((stream, peer, live))
                    {
                        conn::refuse(stream, &shared.codecs, totals, peer, "pool queue full");
                    }
                }
                None => match spawn_connection_thread(&shared, stream, peer, live, args.stack_size)
                {
                    Ok(handle) => threads.push(handle),
                    Err((stream, e)) => {
                        info!("cannot start a thread for {peer}: {e}");
                        conn::refuse(
                            stream,
                            &shared.codecs,
                            totals,
                            peer,
                            "thread creation failed",
                        );
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
    drop(acceptor);
    drop(queue); // pool workers leave once the queue is empty
    shutdown.trigger();
    let deadline = Instant::now() + cfg.grace;
    // JoinHandle has no timed join; finished threads are cheap to poll for.
    while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let unfinished = threads.iter().filter(|t| !t.is_finished()).count();
    if unfinished > 0 {
        // Returning from main ends the process, and with it these threads, mid-request.
        info!("{unfinished} threads still busy after the grace period; exiting anyway");
    }

    let model = if pool > 0 {
        format!("thread-pool/{pool}")
    } else {
        "thread-per-connection".into()
    };
    let mut report = Report::new(
        "server-thread",
        model,
        cfg.protocol.name(),
        started,
        &shared.counters,
    )
    .with_sessions(&shared.store);
    if pool > 0 {
        report = report.with_workers(&shared.counters, false);
        saturation.report_into(&mut report.extra);
    }
    report
        .extra
        .insert("stack_size".into(), args.stack_size.into());
    report.emit(cfg.stats_file.as_deref());
    Ok(())
}

/// One live connection, counted in `Shared::live` from accept until it is dropped — when its
/// thread finishes, or if that thread panics, or if the connection is refused after all —
/// so that no path can leak a slot and slowly make the server refuse everyone.
struct Live(Arc<Shared>);

impl Live {
    fn count(shared: &Arc<Shared>) -> Live {
        shared.live.fetch_add(1, Ordering::Relaxed);
        Live(Arc::clone(shared))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Thread per connection: start a thread that owns `stream` for the rest of its life.
///
/// `thread::spawn` would panic if the thread cannot be created (EAGAIN: out of memory for
/// stacks, or `RLIMIT_NPROC`); `Builder::spawn` returns the error, and the client gets a busy
/// reply instead of the server dying. To get the socket back in that case, the closure carries
/// the raw descriptor rather than the `TcpStream`: if the thread never starts, the closure is
/// dropped without running, the descriptor is still ours, and we rebuild the stream. (The
/// dropped closure also drops `live`, giving the connection's slot back.)
fn spawn_connection_thread(
    shared: &Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    live: Live,
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
            drop(live);
        });
    spawned.map_err(|e| {
        // SAFETY: the thread was not created, so the closure never ran and never took `fd`.
        (unsafe { TcpStream::from_raw_fd(fd) }, e)
    })
}

/// A pool worker: serve connections from the queue, one at a time, until it is closed.
fn pool_worker(worker: usize, queue: &Receiver<Queued>, shared: &Shared) {
    let mine = shared.counters.slot(1 + worker);
    for (stream, peer, live) in queue.iter() {
        // Busy until the connection ends: the accept loop reads this to tell whether any
        // worker is free (see `sample_pool`).
        mine.set_busy(true);
        Counters::bump(&mine.accepted);
        serve_one(shared, stream, peer, Some(worker));
        mine.set_busy(false);
        drop(live);
    }
}

/// One look at the pool: when every worker is busy and connections wait — in the pool's
/// queue (`queued` of room for `room`), or still in the kernel's accept queue if accepting is
/// paused — record it, and say so at most once a second.
fn sample_pool(
    saturation: &mut Saturation,
    shared: &Shared,
    acceptor: &Acceptor,
    queued: usize,
    room: u32,
) {
    let workers = shared.counters.slots() - 1;
    let busy = (1..=workers)
        .filter(|&i| shared.counters.slot(i).is_busy())
        .count();
    let kernel = net::accept_queue(acceptor.listener()).map_or(0, |q| q.waiting);
    let waiting = if busy == workers {
        queued as u64 + u64::from(kernel)
    } else {
        0
    };
    saturation.sample(waiting, || {
        format!(
            "saturated: all {workers} pool threads busy, {queued} connections waiting in the \
             pool's queue (room for {room}; past it, \"server busy\") and {kernel} in the accept \
             queue; each thread serves one connection at a time: raise --pool (now {workers}), \
             or lower --idle-timeout so idle clients let go sooner"
        )
    });
}

/// Serves one connection on the calling thread and accounts for it.
fn serve_one(shared: &Shared, stream: TcpStream, peer: SocketAddr, worker: Option<usize>) {
    let outcome = conn::serve(
        stream,
        &shared.codecs,
        &shared.store,
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
}
