//! server-fork: one child process per connection, reaped with `waitpid`.
//!
//! The oldest concurrent server design on Unix (inetd, early Apache, the book's `fork` server):
//! the parent accepts, `fork`s, and the child — a copy of the parent — serves the one client
//! and exits. Clients are isolated from each other as completely as the OS allows: a child that
//! crashes or leaks takes nothing else with it. The price is a `fork` per connection (copying
//! page tables, a new process to schedule) and a duty the parent must not forget: *reaping*.
//!
//! Lifecycle:
//! - The parent owns the listener and waits in `poll(2)` on it and on the self-pipe that the
//!   SIGCHLD/SIGTERM handlers write to.
//! - Per accepted connection, `fork()`. Both processes now hold the connected socket *and* the
//!   listener, because a child inherits every open descriptor. The parent closes its copy of
//!   the connection (else the client would never see EOF: the socket stays open while any
//!   process holds it); the child closes its copy of the listener, the signal pipe and the
//!   shutdown pipe's write end.
//! - The child serves the connection with the shared blocking handler and leaves with
//!   `_exit`: it must never return into the parent's accept loop.
//! - What a child changes (INCR's counters, the records that answer a retry) is in the session
//!   table the parent mapped shared before the first fork: the only memory children share.
//! - A dead child stays a *zombie* (its exit status kept by the kernel) until the parent calls
//!   `waitpid`. SIGCHLD tells the parent that children exited; signals coalesce, so one SIGCHLD
//!   may stand for many, and the parent reaps in a loop until none is left.
//! - SIGINT/SIGTERM: stop accepting, close the shutdown pipe (every child sees it), reap them
//!   all for up to `--grace`, SIGKILL and reap any left.
//!
//! # Run it
//! ```text
//! cargo run --release --bin server-fork -- --addr 127.0.0.1:7000
//! cargo run --release --bin server-fork -- --addr 127.0.0.1:7000 --reap once   # watch zombies pile up
//! ps -o pid,stat,cmd --ppid $(pgrep -f 'server-fork --addr')                   # Z = zombie
//! ```
//!
//! # Trade-offs
//! Isolation and simple code, at the cost of a fork per connection: short connections pay it
//! every time (the lab's short-connection workload shows it), and memory is per process. The
//! `--reap` switch is a teaching aid: `once` is the classic bug (one `waitpid` per SIGCHLD
//! leaves zombies when signals coalesce), `none` is what the book's fork server did.
//!
//! Fork discipline: this process never starts a thread. `fork` copies only the calling thread,
//! so a lock held by any other thread at that instant (malloc's, stdout's) would stay locked
//! forever in the child. Single-threaded, the child may use the allocator freely.
//!
//! # See also
//! `docs/models/fork.md`.

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use echolab_protocol::ServerCodecs;
use echolab_servers::children::{self, Family, Reaping};
use echolab_servers::cli::ServerArgs;
use echolab_servers::conn::{self, Limits};
use echolab_servers::net::{self, Acceptor};
use echolab_servers::session::Store;
use echolab_servers::signals::{self, Shutdown, SignalPipe};
use echolab_servers::stats::{Counters, Report, SharedCounters};
use echolab_servers::{debug, info};
use nix::sys::wait::WaitStatus;
use nix::unistd::{fork, ForkResult, Pid};

/// How the parent collects dead children. Only `loop` is correct; the others are teaching aids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Reap {
    /// On each SIGCHLD, call waitpid(WNOHANG) until no exited child is left.
    Loop,
    /// On each SIGCHLD, call waitpid once: misses children whose signals coalesced (zombies).
    Once,
    /// Never reap while running: every finished child stays a zombie until shutdown.
    None,
}

/// One child process per connection.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "echolab server: one child process per connection (fork), reaped with waitpid",
    next_line_help = true
)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,

    /// Most live (unreaped) children; one more connection gets "server busy".
    /// Defaults to --max-connections.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), allow_negative_numbers = true)]
    max_children: Option<u32>,

    /// How dead children are collected: loop (correct), once or none (teaching modes).
    #[arg(long, value_enum, default_value_t = Reap::Loop)]
    reap: Reap,
}

fn main() -> ExitCode {
    let args: Args = echolab_servers::parse_args(|a: &Args| &a.server);
    echolab_servers::main_with("server-fork", args.server.process_settings(), || run(args))
}

fn run(args: Args) -> io::Result<()> {
    let started = Instant::now();
    let cfg = &args.server;
    let max_children = args.max_children.unwrap_or(cfg.max_connections) as usize;
    let codecs = cfg.protocol.codecs(cfg.max_frame);
    // Created before the first fork, so every child inherits the same mappings and pipes.
    // The session table above all: a child's INCR must land in the table the next child
    // reads, and only memory mapped shared before the fork is shared after it.
    let counters = SharedCounters::new(1)?;
    let store = Store::new(cfg.sessions())?;
    let signals = SignalPipe::install(true)?;
    let mut shutdown = Shutdown::new()?;
    let mut acceptor = Acceptor::new(net::bind(cfg.addr, cfg.backlog, false)?)?;
    net::announce(acceptor.local_addr()?)?;
    let mut children = Children::default();

    loop {
        // Sleep until a client connects or a signal arrives (SIGCHLD wakes us often).
        let pending = acceptor.wait(&signals);
        if pending.child_exited {
            match args.reap {
                Reap::Loop => children::reap(&mut children, Reaping::All),
                Reap::Once => children::reap(&mut children, Reaping::One),
                Reap::None => {}
            }
        }
        if pending.terminate {
            break;
        }

        while let Some((stream, peer)) = acceptor.accept() {
            Counters::bump(&counters.total().accepted);
            // Zombies count here: an unreaped child still holds its process slot.
            if children.live.len() >= max_children {
                conn::refuse(
                    stream,
                    &codecs,
                    counters.total(),
                    peer,
                    "max-children reached",
                );
                continue;
            }

            // Signals stay pending, not delivered, until each process has set itself up.
            let blocked = signals::block_for_fork()?;
            // SAFETY: this process is single-threaded (no thread is ever started in
            // server-fork), so the child is a consistent copy: no lock is held by a thread
            // that does not exist in the child, and it may allocate and use std freely.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => child(
                    stream,
                    peer,
                    acceptor,
                    signals,
                    shutdown,
                    &codecs,
                    cfg.limits(),
                    &counters,
                    &store,
                ),
                Ok(ForkResult::Parent { child }) => {
                    // The parent's copy of the connection must go, or the client never sees EOF
                    // (the socket stays open while any process holds a descriptor for it).
                    drop(stream);
                    children.born(child);
                    debug!("{peer}: forked child {child}");
                }
                Err(e) => {
                    // EAGAIN: RLIMIT_NPROC or the pids cgroup says no more processes;
                    // ENOMEM: no memory for the copy. The client gets a reply, not silence.
                    info!("fork failed: {e}");
                    conn::refuse(stream, &codecs, counters.total(), peer, "fork failed");
                }
            }
            drop(blocked);
        }
    }

    // Graceful shutdown: stop accepting, close the shutdown pipe (every child polls it), and
    // reap every child, killing any that outstays the grace period.
    drop(acceptor);
    let zombies_at_shutdown = count_zombies(&children.live);
    info!(
        "shutting down: {} children ({zombies_at_shutdown} of them zombies); waiting up to {:?}",
        children.live.len(),
        cfg.grace
    );
    shutdown.trigger();
    let killed = children::reap_all(&mut children, &signals, cfg.grace);

    let model = format!("fork/reap-{:?}", args.reap).to_lowercase();
    let mut report = Report::new(
        "server-fork",
        model,
        cfg.protocol.name(),
        started,
        &counters,
    )
    .with_sessions(&store);
    report
        .extra
        .insert("children_forked".into(), children.forked.into());
    report
        .extra
        .insert("children_reaped".into(), children.reaped.into());
    report
        .extra
        .insert("max_live_children".into(), children.max_live.into());
    report
        .extra
        .insert("zombies_at_shutdown".into(), zombies_at_shutdown.into());
    report
        .extra
        .insert("killed_after_grace".into(), killed.into());
    report.emit(cfg.stats_file.as_deref());
    Ok(())
}

/// The child's whole life: close what belongs to the parent, serve one client, `_exit`.
/// It takes the listener and pipes by value so that they are *this* process's to close.
#[allow(clippy::too_many_arguments)]
fn child(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: Acceptor,
    signals: SignalPipe,
    mut shutdown: Shutdown,
    codecs: &ServerCodecs,
    limits: Limits,
    counters: &SharedCounters,
    store: &Store,
) -> ! {
    // The listener: a child that kept it would keep the port bound after the parent exited.
    drop(acceptor);
    // The parent's signal pipe and handlers (this also unblocks signals, now that the
    // dispositions are the child's own).
    let _ = signals.forget_in_child();
    // The shutdown pipe's write end: only the parent may hold one, or closing it wakes nobody.
    shutdown.child_side();

    let outcome = conn::serve(stream, codecs, store, limits, shutdown.fd());
    conn::record_end(&outcome, &[counters.total()], peer);
    // _exit, not exit: no atexit handlers, no flushing of stdio buffers copied from the
    // parent (they would be written twice), no destructors for state that is the parent's.
    // SAFETY: _exit(2) ends this process immediately; nothing after it runs.
    unsafe { libc::_exit(0) }
}

/// The parent's record of its children.
#[derive(Debug, Default)]
struct Children {
    /// Forked and not yet reaped: running, or zombies.
    live: HashSet<Pid>,
    forked: u64,
    reaped: u64,
    max_live: usize,
}

impl Children {
    fn born(&mut self, pid: Pid) {
        self.live.insert(pid);
        self.forked += 1;
        self.max_live = self.max_live.max(self.live.len());
    }
}

impl Family for Children {
    fn live(&self) -> Vec<Pid> {
        self.live.iter().copied().collect()
    }

    fn exited(&mut self, pid: Pid, status: WaitStatus) {
        if self.live.remove(&pid) {
            self.reaped += 1;
        }
        if let WaitStatus::Signaled(pid, signal, _) = status {
            info!("child {pid} killed by {signal}");
        }
    }
}

/// How many of `children` are zombies right now: state `Z` in /proc/PID/stat. A child that
/// cannot be read (reaped meanwhile, or /proc not mounted) is not counted.
fn count_zombies(children: &HashSet<Pid>) -> usize {
    let is_zombie = |pid: &Pid| {
        procfs::process::Process::new(pid.as_raw())
            .and_then(|p| p.stat())
            .is_ok_and(|stat| stat.state == 'Z')
    };
    children.iter().filter(|pid| is_zombie(pid)).count()
}
