//! server-prefork: N pre-forked worker processes competing to `accept`.
//!
//! Apache's prefork MPM and Stevens' UNP ch. 30 servers 02-05: instead of a fork per
//! connection, the parent forks N workers once, up front, and each worker loops — accept one
//! connection, serve it to the end, accept the next. Processes are bounded (N) and the fork
//! cost is paid once; the price is that N slow clients occupy every worker, and the N+1th waits
//! in the kernel's listen backlog. The interesting part is *how* N processes share one port:
//!
//! - `--accept shared`: every worker blocks in `accept()` on the one listener it inherited.
//!   Linux queues them on the socket and wakes exactly one per connection (wake-one, since
//!   2.6; the "thundering herd" of old kernels woke them all). Which one wins is up to the
//!   scheduler.
//! - `--accept locked`: workers take a lock around `accept()`, so only one at a time waits in
//!   the kernel, as UNP does for systems whose `accept` herds. The lock is an `fcntl` record
//!   lock on a temporary file; see `echolab_servers::acceptlock` for why not `flock`.
//! - `--accept reuseport`: each worker has its own listening socket on the same port
//!   (`SO_REUSEPORT`) and the kernel hashes each connection's addresses to one of them. No
//!   sharing at all — but a connection hashed to a busy worker waits even if others are idle.
//!
//! With `--worker eventloop` each worker runs an event loop instead (the library's, as
//! server-eventloop does; `--backend`), serving many connections at once, and the question
//! becomes how N *pollers* share a port: `shared` (each watches the inherited listener, and a
//! connection wakes them all: the thundering herd, counted as `futile_wakeups`), `exclusive`
//! (`EPOLLEXCLUSIVE`: wakes one), `reuseport` (a listener each) or `locked` (nginx's
//! `accept_mutex`: only the lock holder watches the listener).
//!
//! Lifecycle:
//! - The parent opens the listener(s) and the counters (shared memory), forks the workers
//!   (`--workers`, 256 by default), prints `listening on`, and then only supervises: it
//!   sleeps in `poll(2)` on its self-pipe, and every 250 ms looks whether clients wait while
//!   no worker is free (each worker marks its slot busy; the accept queue's length comes from
//!   `TCP_INFO`), which it logs at most once a second and counts in the statistics.
//! - A worker closes what it does not need (the parent's signal pipe, the shutdown pipe's write
//!   end, the other workers' listeners), then loops: accept, serve with the shared blocking
//!   handler, close. Per-worker counts go to its slot of the shared counters, which the parent
//!   reads (and, with `--stats-file`, writes out every `--stats-interval`) while it runs.
//! - INCR's counters and the records that answer a retry are in the session table, mapped
//!   shared before the first fork, so a retry served by another worker finds them; a worker
//!   killed holding its lock costs the next one a recovery, not a deadlock.
//! - A worker that dies is reaped (SIGCHLD, `waitpid` loop) and restarted in the same slot,
//!   at once if it had been up for a while, with a doubling backoff if it keeps dying.
//! - With `--max-requests-per-worker N`, a worker that has answered N requests retires when
//!   its current connection ends (like Apache's `MaxConnectionsPerChild`, which counts
//!   connections where this counts requests; either bounds what a slow
//!   leak in a worker can grow to): it exits with [`RETIRED`], and the parent replaces it at
//!   once, without the backoff a crash gets. No client sees it: the connection was finished,
//!   and the listener stays open in the parent and the other workers.
//! - An event-loop worker replaces the parent's signal pipe with its own, then runs the loop
//!   over its listener, counting into its slot (and its wake-ups), until SIGTERM; then it stops
//!   accepting, answers what its clients sent, closes them, and exits.
//! - SIGINT/SIGTERM: the parent closes the shutdown pipe and sends SIGTERM to the workers.
//!   An idle worker (blocked in accept or the lock) exits at once; a busy one finishes its
//!   connection's in-flight requests. The parent reaps them all for up to `--grace`.
//!
//! # Run it
//! ```text
//! cargo run --release --bin server-prefork -- --workers 4 --accept shared --stats-file /tmp/pf.json
//! cargo run --release --bin server-prefork -- --workers 4 --worker eventloop --accept exclusive
//! watch -n1 cat /tmp/pf.json      # per-worker accept counts while it runs
//! ```
//!
//! # Trade-offs
//! Bounded processes and no per-connection fork, at the price of concurrency = N: the lab's
//! slow-client experiments show the N+1th client waiting, and the log says so while it does.
//! `shared` is simplest and, on modern Linux, herd-free; `locked` adds a lock round trip per
//! accept for evenness; `reuseport` spreads load by hash, not by who is free.
//!
//! # See also
//! `docs/models/prefork.md`.

use std::io;
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use clap::builder::RangedI64ValueParser;
use clap::{CommandFactory, Parser, ValueEnum};
use echolab_protocol::ServerCodecs;
use echolab_servers::acceptlock::AcceptLock;
use echolab_servers::children::{self, Family, Reaping};
use echolab_servers::cli::{parse_duration, ServerArgs};
use echolab_servers::conn::{self, Limits};
use echolab_servers::eventloop::{EventLoop, LoopArgs, Settings, Shared, Watch};
use echolab_servers::net::Acceptor;
use echolab_servers::poller::poll_timeout;
use echolab_servers::poller::Backend;
use echolab_servers::saturation::{Saturation, SAMPLE_EVERY};
use echolab_servers::session::Store;
use echolab_servers::signals::{self, Shutdown, SignalPipe};
use echolab_servers::stats::{Counters, Report, SharedCounters};
use echolab_servers::{debug, info, net};
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::prctl;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::{fork, getpid, getppid, ForkResult, Pid};

/// How workers compete for connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AcceptMode {
    /// All workers block in accept() on one shared listener (kernel wake-one).
    Shared,
    /// Workers take an fcntl lock around accept(): one waits in the kernel at a time.
    Locked,
    /// One SO_REUSEPORT listener per worker; the kernel hashes connections over them.
    Reuseport,
    /// Event-loop workers only, epoll only: the shared listener registered with EPOLLEXCLUSIVE.
    Exclusive,
}

/// What each worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WorkerKind {
    /// One connection at a time, start to finish, with the blocking handler.
    Blocking,
    /// An event loop (select, poll or epoll): many connections at once.
    Eventloop,
}

/// N pre-forked worker processes competing in accept().
#[derive(Debug, Parser)]
#[command(
    version,
    about = "echolab server: N pre-forked worker processes competing in accept()",
    next_line_help = true,
    mut_arg("max_connections", |a| a
        .help("Ignored by blocking workers: the workers are the limit (see --workers); per worker with --worker eventloop")
        .long_help(
            "Ignored by prefork's blocking workers: the workers are the limit. Each of the \
             --workers serves one connection at a time, from accept to close; further clients \
             are not refused but wait in the kernel's accept queue (--backlog), and the server \
             logs once a second while they do. Accepted for the sake of scripts that pass it to \
             every model. With --worker eventloop it is each worker's limit, as in \
             server-eventloop: one more gets \"server busy\"; except under --accept locked, \
             where a full worker stops taking the lock, so once every worker is full new \
             clients wait in the accept queue instead."
        ))
)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,

    /// Worker processes: the most connections served at once.
    ///
    /// Each worker serves one connection from accept to close, so a client beyond the
    /// workers waits in the accept queue, however idle the connected ones are. The default,
    /// 256, is Apache prefork's default limit (MaxRequestWorkers): room for redis-benchmark's
    /// 50 clients, loadgen's default 16 connections and the 256 of its suite's largest echo
    /// workload. An idle worker costs about 40 KiB of memory (PSS), 80 KiB once it has served
    /// a connection: 10.5 MiB for all 256, 20.5 MiB once each has served one (measured:
    /// docs/models/prefork.md). Fewer suit clients that connect, ask one thing and hang up.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_WORKERS, value_parser = clap::value_parser!(u32).range(1..=MAX_WORKERS), allow_negative_numbers = true)]
    workers: u32,

    /// How workers share the port: shared, locked, reuseport, or exclusive (event-loop workers).
    ///
    /// shared: every worker waits on the one inherited listener (blocking workers in accept(),
    /// which wakes one; event loops in their pollers, which all wake: the thundering herd).
    /// locked: one worker at a time may wait (an fcntl lock; event loops try it once a turn,
    /// nginx's accept_mutex). reuseport: a SO_REUSEPORT listener per worker, connections
    /// spread by hash. exclusive: --worker eventloop --backend epoll only, the shared listener
    /// registered with EPOLLEXCLUSIVE (Linux 4.5), which wakes one loop. See
    /// docs/models/prefork.md.
    #[arg(long, value_enum, default_value_t = AcceptMode::Shared)]
    accept: AcceptMode,

    /// What each worker runs: blocking (one connection at a time) or eventloop (many at once).
    #[arg(long, value_enum, default_value_t = WorkerKind::Blocking)]
    worker: WorkerKind,

    /// With --worker eventloop: each worker's readiness API, select, poll or epoll [default: epoll].
    #[arg(long, value_enum)]
    backend: Option<Backend>,

    #[command(flatten)]
    event_loop: LoopArgs,

    /// With --stats-file: rewrite it this often while running, so per-worker counts can be watched.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_interval, allow_hyphen_values = true)]
    stats_interval: Duration,

    /// Replace a worker once it has answered this many requests (0: never).
    ///
    /// The worker retires when its current connection ends, like Apache's
    /// MaxConnectionsPerChild (which counts connections): it bounds what a slow leak in a
    /// worker can grow to.
    // Parsed through i64 so that "-1" is told the valid range, not "invalid digit".
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = RangedI64ValueParser::<u64>::new().range(0..=i64::MAX), allow_negative_numbers = true)]
    max_requests_per_worker: u64,
}

/// `--workers` by default: Apache prefork's default `MaxRequestWorkers`. It used to be the
/// number of CPUs, which suits only short connections: two workers on a two-CPU machine held
/// by two of redis-benchmark's 50 keep-alive clients left 48 waiting in the accept queue
/// forever, with nothing in the log.
const DEFAULT_WORKERS: u32 = 256;

/// The most `--workers`: a process each, and each forked at start.
const MAX_WORKERS: i64 = 1024;

/// The exit status of a worker that retired at `--max-requests-per-worker`: a planned exit,
/// so the parent replaces it at once and counts it as recycled, not as a death.
const RETIRED: i32 = 3;

fn main() -> ExitCode {
    let args: Args = echolab_servers::parse_args(|a: &Args| &a.server);
    if let Err(why) = check_combination(&args) {
        Args::command()
            .error(clap::error::ErrorKind::ArgumentConflict, why)
            .exit();
    }
    echolab_servers::main_with("server-prefork", args.server.process_settings(), || {
        run(args)
    })
}

/// What no single flag's parser can check: which flags go together. A usage error, like any
/// bad flag, rather than a server that starts and does something else.
fn check_combination(args: &Args) -> Result<(), String> {
    match (args.worker, args.accept, args.backend) {
        (WorkerKind::Blocking, AcceptMode::Exclusive, _) => Err(
            "--accept exclusive needs --worker eventloop: EPOLLEXCLUSIVE is a flag of an epoll \
             registration, and blocking workers wait in accept(), which already wakes one"
                .into(),
        ),
        (WorkerKind::Blocking, _, Some(_)) => Err(
            "--backend needs --worker eventloop: blocking workers wait in accept(), not in a poller"
                .into(),
        ),
        (WorkerKind::Eventloop, AcceptMode::Exclusive, Some(b)) if b != Backend::Epoll => Err(
            format!(
                "--accept exclusive needs --backend epoll (not {}): EPOLLEXCLUSIVE exists only in epoll",
                format!("{b:?}").to_lowercase()
            ),
        ),
        (WorkerKind::Eventloop, _, _) if args.max_requests_per_worker > 0 => Err(
            "--max-requests-per-worker needs --worker blocking: an event-loop worker holds many \
             connections at once and has no moment between them to retire"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// What a worker inherits from the parent at `fork` and keeps using.
struct Inherited {
    /// `--worker`, `--accept`, and for event-loop workers `--backend` and the loop's settings.
    kind: WorkerKind,
    accept: AcceptMode,
    backend: Backend,
    loop_settings: Settings,
    codecs: ServerCodecs,
    limits: Limits,
    /// One listener (shared, locked) or one per worker (reuseport).
    listeners: Vec<TcpListener>,
    lock: Option<AcceptLock>,
    shutdown: Shutdown,
    /// The parent's pid, for a worker to notice that it has been orphaned.
    parent: Pid,
    /// `--max-requests-per-worker` (0: never retire).
    max_requests: u64,
}

/// The parent's view of its workers: one slot each, and whether a dead one is replaced.
struct Workers<'a> {
    slots: Vec<Slot>,
    counters: &'a SharedCounters,
    /// False once shutdown has begun: from then on a worker's exit is expected.
    restarting: bool,
}

/// The parent's view of one worker slot.
#[derive(Debug)]
struct Slot {
    pid: Option<Pid>,
    started: Instant,
    /// Delay before the next restart if this worker dies young.
    backoff: Duration,
    restart_at: Option<Instant>,
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A worker that lived at least this long is restarted at once.
const HEALTHY_UPTIME: Duration = Duration::from_secs(1);

fn run(args: Args) -> io::Result<()> {
    let started = Instant::now();
    let cfg = &args.server;
    let n = args.workers as usize;

    let listeners = match args.accept {
        AcceptMode::Shared | AcceptMode::Locked | AcceptMode::Exclusive => {
            vec![net::bind(cfg.addr, cfg.backlog, false)?]
        }
        AcceptMode::Reuseport => {
            // The first bind resolves port 0 to a real port; the others join that port. All
            // are opened here, before any worker exists, so `listening on` is true when
            // printed, and a restarted worker gets back the very socket (and backlog) its
            // predecessor had.
            let first = net::bind(cfg.addr, cfg.backlog, true)?;
            let port = first.local_addr()?;
            let mut all = vec![first];
            for _ in 1..n {
                all.push(net::bind(port, cfg.backlog, true)?);
            }
            all
        }
    };
    let addr = listeners[0].local_addr()?;
    // Created before the first fork, so every worker inherits them. The pipe is an `Option`
    // only so that a worker can take it out of its copy and close it.
    let counters = SharedCounters::new(1 + n)?;
    // The session table, mapped shared before the first fork too: a client that reconnects
    // to another worker (or to the replacement of one that died) finds its records there.
    // The parent never takes its lock (it only reads the statistics), so no fork copies a
    // held lock, and a worker stuck holding it can never stall the supervisor.
    let store = Store::new(cfg.sessions())?;
    let mut signals = Some(SignalPipe::install(true)?);
    let mut inherited = Inherited {
        kind: args.worker,
        accept: args.accept,
        backend: args.backend.unwrap_or(Backend::Epoll),
        loop_settings: Settings::new(cfg, &args.event_loop),
        codecs: cfg.protocol.codecs(cfg.max_frame),
        limits: cfg.limits(),
        listeners,
        lock: if args.accept == AcceptMode::Locked {
            Some(AcceptLock::new()?)
        } else {
            None
        },
        shutdown: Shutdown::new()?,
        parent: getpid(),
        max_requests: args.max_requests_per_worker,
    };
    let now = Instant::now();
    let mut workers = Workers {
        slots: (0..n)
            .map(|_| Slot {
                pid: None,
                started: now,
                backoff: MIN_BACKOFF,
                restart_at: None,
            })
            .collect(),
        counters: &counters,
        restarting: true,
    };
    for (i, slot) in workers.slots.iter_mut().enumerate() {
        start_worker(i, slot, &mut inherited, &mut signals, &counters, &store)?;
    }
    net::announce(addr)?;
    let accept_mode = format!("{:?}", args.accept).to_lowercase();
    let backend = inherited
        .backend
        .create()
        .map(|p| p.name())
        .unwrap_or("epoll");
    match args.worker {
        WorkerKind::Blocking => info!("{n} workers, accept mode {accept_mode}"),
        WorkerKind::Eventloop => {
            info!("{n} event-loop workers ({backend}), accept mode {accept_mode}")
        }
    }

    let report = |running: bool, saturation: &Saturation| {
        // Blocking workers keep the model name they always had; event-loop workers say so.
        let model = match args.worker {
            WorkerKind::Blocking => format!("prefork/{accept_mode}"),
            WorkerKind::Eventloop => format!("prefork-eventloop/{backend}/{accept_mode}"),
        };
        let mut r = Report::new(
            "server-prefork",
            model,
            cfg.protocol.name(),
            started,
            &counters,
        )
        .with_workers(&counters, true)
        .with_sessions(&store);
        if args.worker == WorkerKind::Eventloop {
            r = r.with_wakeups(&counters);
        }
        r.extra.insert("running".into(), running.into());
        r.extra.insert("workers".into(), n.into());
        if args.worker == WorkerKind::Eventloop {
            r.extra.insert("worker".into(), "eventloop".into());
            r.extra.insert("backend".into(), backend.into());
        }
        saturation.report_into(&mut r.extra);
        r
    };

    // Supervise: sleep until a signal, a scheduled restart, the next look at whether clients
    // wait for a worker, or the next stats snapshot.
    let mut saturation = Saturation::default();
    let mut next_snapshot = Instant::now() + args.stats_interval;
    let mut next_sample = Instant::now() + SAMPLE_EVERY;
    loop {
        let wake = workers
            .slots
            .iter()
            .filter_map(|s| s.restart_at)
            .fold(next_snapshot.min(next_sample), Instant::min);
        let timeout = poll_timeout(wake.saturating_duration_since(Instant::now()));
        let mut fds = [PollFd::new(pipe(&signals).fd(), PollFlags::POLLIN)];
        // poll(2): interrupted by SIGCHLD/SIGTERM (EINTR); either way, look at the flags.
        let _ = poll(&mut fds, timeout);
        let pending = pipe(&signals).take();

        // Terminate first: workers that exit because we are stopping must not be restarted.
        if pending.terminate {
            break;
        }
        if pending.child_exited {
            children::reap(&mut workers, Reaping::All);
        }
        let now = Instant::now();
        for (i, slot) in workers.slots.iter_mut().enumerate() {
            if slot.restart_at.is_some_and(|t| t <= now) {
                start_worker(i, slot, &mut inherited, &mut signals, &counters, &store)?;
            }
        }
        if now >= next_sample {
            next_sample = now + SAMPLE_EVERY;
            let (waiting, describe) =
                waiting_for_a_worker(&workers, &inherited.listeners, inherited.kind);
            saturation.sample(waiting, || describe(cfg.backlog));
        }
        if now >= next_snapshot {
            next_snapshot = now + args.stats_interval;
            if let Some(path) = &cfg.stats_file {
                if let Err(e) = report(true, &saturation).write_atomically(path) {
                    debug!("stats snapshot: {e}");
                }
            }
        }
    }

    // Graceful shutdown. Close the listeners first, so the kernel stops completing handshakes
    // nobody will accept; close the shutdown pipe, so busy workers answer what they have and
    // close; and send SIGTERM, which gets idle workers out of accept() or the lock.
    info!(
        "shutting down: waiting up to {:?} for the workers",
        cfg.grace
    );
    workers.restarting = false;
    inherited.listeners.clear();
    inherited.shutdown.trigger();
    for pid in workers.live() {
        let _ = kill(pid, Signal::SIGTERM);
    }
    let killed = children::reap_all(&mut workers, pipe(&signals), cfg.grace);

    let mut r = report(false, &saturation);
    r.extra.insert("killed_after_grace".into(), killed.into());
    r.emit(cfg.stats_file.as_deref());
    Ok(())
}

/// How many connections wait with no worker to take them, and a function that words the log
/// line about it (called only when a line is due).
///
/// With one shared listener (`shared`, `locked`), connections wait for *any* worker: they
/// count only when every worker is busy (or dead and not yet replaced), since an idle worker
/// is about to take them. With `reuseport`, each worker has its own queue and a connection
/// waits for the worker its hash picked even while others sit idle, so what counts is every
/// connection queued on a busy worker's socket.
fn waiting_for_a_worker(
    workers: &Workers<'_>,
    listeners: &[TcpListener],
    kind: WorkerKind,
) -> (u64, impl FnOnce(i32) -> String) {
    let n = workers.slots.len();
    let free: Vec<bool> = workers
        .slots
        .iter()
        .enumerate()
        .map(|(i, s)| s.pid.is_some() && !workers.counters.slot(1 + i).is_busy())
        .collect();
    let busy = free.iter().filter(|f| !**f).count();
    let queued = |l: &TcpListener| net::accept_queue(l).map_or(0, |q| u64::from(q.waiting));
    let waiting = if listeners.len() > 1 {
        listeners
            .iter()
            .zip(&free)
            .filter(|(_, free)| !**free)
            .map(|(l, _)| queued(l))
            .sum()
    } else if busy == n {
        listeners.first().map_or(0, queued)
    } else {
        0
    };
    let reuseport = listeners.len() > 1;
    let describe = move |backlog: i32| {
        if reuseport {
            format!(
                "saturated: {waiting} connections wait in the accept queues of busy workers \
                 ({busy} of {n} busy; with --accept reuseport a connection waits for the worker \
                 its hash picked, even while others are idle); raise --workers (now {n}) or use \
                 --accept shared"
            )
        } else {
            // A loop worker is busy only when full, so the advice is its limit, not its count.
            let (why, or_more) = match kind {
                WorkerKind::Blocking => ("each worker serves one connection at a time", ""),
                WorkerKind::Eventloop => (
                    "each event-loop worker is full at --max-connections",
                    " or --max-connections",
                ),
            };
            format!(
                "saturated: all {n} workers busy, {waiting} connections waiting in the accept \
                 queue (--backlog {backlog}); {why}: raise --workers (now {n}){or_more}, or \
                 lower --idle-timeout so idle clients let go sooner"
            )
        }
    };
    (waiting, describe)
}

/// The parent's signal pipe (only a worker ever takes it out, in its own copy).
fn pipe(signals: &Option<SignalPipe>) -> &SignalPipe {
    signals.as_ref().expect("the parent keeps its signal pipe")
}

/// Forks the worker for slot `i`. In the child this never returns.
fn start_worker(
    i: usize,
    slot: &mut Slot,
    inherited: &mut Inherited,
    signals: &mut Option<SignalPipe>,
    counters: &SharedCounters,
    store: &Store,
) -> io::Result<()> {
    slot.restart_at = None;
    // Signals stay pending, not delivered, until each process has set itself up.
    let blocked = signals::block_for_fork()?;
    // SAFETY: the parent is single-threaded (it never starts a thread), so the child is a
    // consistent copy and may allocate and use std freely.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => worker(i, inherited, signals.take(), counters, store),
        Ok(ForkResult::Parent { child }) => {
            debug!("worker {i} started as pid {child}");
            slot.pid = Some(child);
            slot.started = Instant::now();
            counters
                .slot(1 + i)
                .pid
                .store(child.as_raw() as u64, Relaxed);
        }
        Err(e) => {
            // EAGAIN (process limit) or ENOMEM: try again later rather than give up the slot.
            info!(
                "cannot fork worker {i}: {e}; retrying in {:?}",
                slot.backoff
            );
            slot.restart_at = Some(Instant::now() + slot.backoff);
            slot.backoff = (slot.backoff * 2).min(MAX_BACKOFF);
        }
    }
    drop(blocked);
    Ok(())
}

impl Family for Workers<'_> {
    fn live(&self) -> Vec<Pid> {
        self.slots.iter().filter_map(|s| s.pid).collect()
    }

    /// A worker died: log how, and schedule its replacement — at once after a healthy run,
    /// after a doubling backoff if it keeps dying young.
    fn exited(&mut self, pid: Pid, status: WaitStatus) {
        let Some(i) = self.slots.iter().position(|s| s.pid == Some(pid)) else {
            return;
        };
        let slot = &mut self.slots[i];
        slot.pid = None;
        // A worker killed mid-connection never cleared its busy mark; its successor starts idle.
        self.counters.slot(1 + i).set_busy(false);
        if !self.restarting {
            return;
        }
        let uptime = slot.started.elapsed();
        if status == WaitStatus::Exited(pid, RETIRED) {
            debug!("worker {i} (pid {pid}) retired after {uptime:.1?}; replacing it");
            Counters::bump(&self.counters.slot(1 + i).recycled);
            slot.restart_at = Some(Instant::now());
            return;
        }
        let delay = if uptime >= HEALTHY_UPTIME {
            slot.backoff = MIN_BACKOFF;
            Duration::ZERO
        } else {
            let d = slot.backoff;
            slot.backoff = (slot.backoff * 2).min(MAX_BACKOFF);
            d
        };
        let how = match status {
            WaitStatus::Signaled(_, signal, _) => format!("killed by {signal}"),
            WaitStatus::Exited(_, code) => format!("exited with status {code}"),
            other => format!("{other:?}"),
        };
        info!("worker {i} (pid {pid}) {how} after {uptime:.1?}; restarting in {delay:?}");
        Counters::bump(&self.counters.slot(1 + i).restarts);
        slot.restart_at = Some(Instant::now() + delay);
    }
}

/// The worker's whole life: tidy up what was inherited, then serve until told to stop, with
/// the blocking handler or an event loop (`--worker`).
fn worker(
    i: usize,
    inherited: &mut Inherited,
    signals: Option<SignalPipe>,
    counters: &SharedCounters,
    store: &Store,
) -> ! {
    // If the parent dies, even by SIGKILL, the kernel sends us SIGTERM: a worker idle in
    // accept() could otherwise outlive it forever, holding the port and swallowing clients.
    // The parent may have died before this call, so check that it is still our parent.
    let _ = prctl::set_pdeathsig(Signal::SIGTERM);
    if getppid() != inherited.parent {
        exit_worker();
    }
    // Close the parent's business: its signal pipe (a signal to us must not wake the parent;
    // each kind of worker sets up its own handling below), and the shutdown pipe's write end
    // (only the parent may hold one, or closing it would wake nobody).
    inherited.shutdown.child_side();
    // With reuseport, keep only our own listener and close our copies of the others: a worker
    // holds exactly the descriptors it uses, so `ls -l /proc/PID/fd` tells the story.
    let listener = if inherited.listeners.len() > 1 {
        let mine = inherited.listeners.swap_remove(i);
        inherited.listeners.clear();
        mine
    } else {
        inherited.listeners.swap_remove(0)
    };
    match inherited.kind {
        WorkerKind::Blocking => blocking_worker(i, inherited, listener, signals, counters, store),
        WorkerKind::Eventloop => loop_worker(i, inherited, listener, signals, counters, store),
    }
}

/// A blocking worker: accept one connection, serve it to the end, accept the next.
fn blocking_worker(
    i: usize,
    inherited: &mut Inherited,
    listener: TcpListener,
    signals: Option<SignalPipe>,
    counters: &SharedCounters,
    store: &Store,
) -> ! {
    // SIGTERM now means: exit at once if idle, finish the connection if busy.
    if let Some(signals) = signals {
        let _ = signals.into_worker();
    }
    let (total, mine) = (counters.total(), counters.slot(1 + i));
    let mut answered: u64 = 0;
    loop {
        signals::set_idle(true);
        // A SIGTERM that arrived while we were busy: leave now, before blocking again.
        signals::exit_on_terminate_when_idle();
        if inherited.shutdown.is_triggered() {
            exit_worker();
        }
        if let Some(lock) = &inherited.lock {
            // fcntl(F_SETLKW) can fail with EINTR (a signal) or EDEADLK; start over.
            if lock.acquire().is_err() {
                continue;
            }
        }
        // accept(2) on a blocking listener: this is where workers wait. std retries EINTR,
        // which is why an idle worker's SIGTERM handler exits directly (see signals.rs).
        let accepted = listener.accept();
        if let Some(lock) = &inherited.lock {
            lock.release();
        }
        // (A SIGTERM landing between accept returning and this line still finds the worker
        // "idle" and exits, dropping the connection just accepted: a window of a few
        // instructions, only ever open at shutdown.)
        signals::set_idle(false);

        match accepted {
            Ok((stream, peer)) => {
                // Busy from here to the end of the connection: the parent reads this to tell
                // whether any worker is free to take the next client.
                mine.set_busy(true);
                Counters::bump(&total.accepted);
                Counters::bump(&mine.accepted);
                debug!("worker {i}: {peer} accepted");
                let outcome = conn::serve(
                    stream,
                    &inherited.codecs,
                    store,
                    inherited.limits,
                    inherited.shutdown.fd(),
                );
                conn::record_end(&outcome, &[total, mine], peer);
                mine.set_busy(false);
                answered += outcome.tally.requests + outcome.tally.errors;
                if inherited.max_requests > 0 && answered >= inherited.max_requests {
                    debug!("worker {i}: retiring after {answered} requests");
                    // SAFETY: as in `exit_worker`.
                    unsafe { libc::_exit(RETIRED) }
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on a readable listener.
                info!("worker {i}: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// An event-loop worker: the same loop as server-eventloop, over the inherited listener (or
/// its own SO_REUSEPORT one), counting into its own slot, until SIGTERM; then it answers what
/// its clients have sent, closes, and exits.
fn loop_worker(
    i: usize,
    inherited: &mut Inherited,
    listener: TcpListener,
    signals: Option<SignalPipe>,
    counters: &SharedCounters,
    store: &Store,
) -> ! {
    let served = (|| -> io::Result<()> {
        // A self-pipe of its own: SIGTERM wakes this loop, which shuts down gracefully.
        let signals = match signals {
            Some(parents) => parents.into_loop_worker()?,
            None => SignalPipe::install(false)?,
        };
        // Nonblocking from here, on the open file description every worker shares: they all
        // run loops, which must never block in accept. A spare descriptor, so that out of
        // descriptors a worker sheds clients rather than pause.
        let acceptor = Acceptor::with_spare(listener)?;
        let watch = match (inherited.accept, &inherited.lock) {
            (AcceptMode::Exclusive, _) => Watch::Exclusive,
            (AcceptMode::Locked, Some(lock)) => Watch::Locked(lock),
            _ => Watch::Always,
        };
        let mut ev = EventLoop::new(
            inherited.backend.create()?,
            inherited.loop_settings.clone(),
            Shared {
                store,
                counters,
                slot: 1 + i,
            },
            acceptor,
            watch,
            &signals,
        )?;
        debug!("worker {i}: event loop on {}", ev.backend());
        ev.run()
    })();
    if let Err(e) = served {
        // The parent logs the exit and restarts the worker, with a backoff if it keeps failing
        // (as it would on a kernel without EPOLLEXCLUSIVE).
        info!("worker {i}: {e}");
        // SAFETY: as in `exit_worker`.
        unsafe { libc::_exit(1) }
    }
    exit_worker()
}

fn exit_worker() -> ! {
    // SAFETY: _exit(2) ends the worker without running the parent's atexit handlers or
    // flushing stdio buffers copied from it.
    unsafe { libc::_exit(0) }
}

/// `--stats-interval`: at least 10 ms, so the supervisor cannot be made to spin.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(10) {
        return Err(format!("'{s}' is too short (at least 10ms)"));
    }
    Ok(d)
}
