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
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use echolab_servers::cli::ServerArgs;
use echolab_servers::conn::{self, Limits};
use echolab_servers::signals::{Shutdown, SignalPipe};
use echolab_servers::stats::{Counters, Report, SharedCounters};
use echolab_servers::{debug, info, log, net};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
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
    about = "echolab server: one child process per connection (fork), reaped with waitpid"
)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,

    /// Most live (unreaped) children; one more connection gets "server busy".
    /// Defaults to --max-connections.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_children: Option<u32>,

    /// How dead children are collected: loop (correct), once or none (teaching modes).
    #[arg(long, value_enum, default_value_t = Reap::Loop)]
    reap: Reap,
}

fn main() -> ExitCode {
    let args = Args::parse();
    log::init("server-fork", args.server.verbose);
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
    let max_children = args.max_children.unwrap_or(cfg.max_connections) as usize;
    let codec = cfg.protocol.codec(cfg.max_frame);
    let limits = Limits {
        idle_timeout: cfg.idle_timeout,
        write_timeout: cfg.write_timeout,
    };
    // Created before the first fork, so every child inherits the same mappings and pipes.
    let counters = SharedCounters::new(1)?;
    let mut signals = Some(SignalPipe::install(true)?);
    let mut shutdown = Shutdown::new()?;
    let listener = net::bind(cfg.addr, cfg.backlog, false)?;
    listener.set_nonblocking(true)?;
    net::announce(listener.local_addr()?)?;

    let mut children: HashSet<Pid> = HashSet::new();
    let mut tally = Tally::default();
    let mut accept_paused_until: Option<Instant> = None;

    loop {
        let sig = signals
            .as_ref()
            .ok_or_else(|| io::Error::other("signal pipe gone"))?;
        let paused = accept_paused_until.is_some_and(|t| Instant::now() < t);
        let mut fds = [
            PollFd::new(sig.fd(), PollFlags::POLLIN),
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
        ];
        let (watched, timeout) = if paused {
            (1, PollTimeout::from(100u16))
        } else {
            (2, PollTimeout::NONE)
        };
        // poll(2): interrupted by every SIGCHLD (EINTR, never restarted); either way the loop
        // goes round and looks at what the handlers recorded.
        let _ = poll(&mut fds[..watched], timeout);

        let pending = sig.take();
        if pending.child_exited {
            match args.reap {
                Reap::Loop => reap(&mut children, &mut tally, false),
                Reap::Once => reap(&mut children, &mut tally, true),
                Reap::None => {}
            }
        }
        if pending.terminate {
            break;
        }
        if paused {
            continue;
        }

        loop {
            // accept4(2) via std, which retries EINTR itself (a SIGCHLD arrives here often).
            let (stream, peer) = match listener.accept() {
                Ok(conn) => conn,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // EMFILE/ENFILE: see server-thread; pause rather than spin.
                    info!("accept: {e}; pausing accepts for 100ms");
                    accept_paused_until = Some(Instant::now() + Duration::from_millis(100));
                    break;
                }
            };
            Counters::bump(&counters.total().accepted);
            let _ = stream.set_nonblocking(false);
            // Zombies count here: an unreaped child still holds its process slot.
            if children.len() >= max_children {
                Counters::bump(&counters.total().refused);
                debug!("{peer}: refused ({} live children)", children.len());
                conn::refuse(stream, &*codec, "server busy");
                continue;
            }

            // SAFETY: this process is single-threaded (no thread is ever started in
            // server-fork), so the child is a consistent copy: no lock is held by a thread
            // that does not exist in the child, and it may allocate and use std freely.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    // The child: close what belongs to the parent, serve, and never return.
                    drop(listener);
                    if let Some(sig) = signals.take() {
                        let _ = sig.forget_in_child();
                    }
                    shutdown.child_side();
                    let outcome = conn::serve(stream, &*codec, limits, shutdown.fd());
                    conn::record_end(&outcome, &[counters.total()], peer);
                    // _exit, not exit: no atexit handlers, no flushing of stdio buffers copied
                    // from the parent (they would be written twice), no destructors for state
                    // that is the parent's business.
                    // SAFETY: _exit(2) ends this process immediately; nothing after it runs.
                    unsafe { libc::_exit(0) };
                }
                Ok(ForkResult::Parent { child }) => {
                    // The parent's copy of the connection must go, or the client never sees EOF
                    // (the socket stays open while any process holds a descriptor for it).
                    drop(stream);
                    children.insert(child);
                    tally.forked += 1;
                    tally.max_live = tally.max_live.max(children.len());
                    debug!("{peer}: forked child {child}");
                }
                Err(e) => {
                    // EAGAIN: RLIMIT_NPROC or the pids cgroup says no more processes;
                    // ENOMEM: no memory for the copy. The client gets a reply, not silence.
                    info!("fork failed: {e}; refusing {peer}");
                    Counters::bump(&counters.total().refused);
                    conn::refuse(stream, &*codec, "server busy");
                }
            }
        }
    }

    // Graceful shutdown.
    drop(listener);
    let zombies_at_shutdown = count_zombies(&children);
    info!(
        "shutting down: {} children ({zombies_at_shutdown} of them zombies); waiting up to {:?}",
        children.len(),
        cfg.grace
    );
    shutdown.trigger();
    let deadline = Instant::now() + cfg.grace;
    reap(&mut children, &mut tally, false);
    while !children.is_empty() && Instant::now() < deadline {
        let sig = signals
            .as_ref()
            .ok_or_else(|| io::Error::other("signal pipe gone"))?;
        let mut fds = [PollFd::new(sig.fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(50u16));
        sig.take();
        reap(&mut children, &mut tally, false);
    }
    if !children.is_empty() {
        info!(
            "{} children still running after the grace period; killing them",
            children.len()
        );
        for &child in &children {
            let _ = kill(child, Signal::SIGKILL);
        }
        while !children.is_empty() {
            // waitpid(2) blocking: every remaining child was just sent SIGKILL.
            match waitpid(None, None) {
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        children.remove(&pid);
                        tally.reaped += 1;
                    }
                }
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
    }

    let mut report = Report::new(
        "server-fork",
        format!("fork/reap-{:?}", args.reap).to_lowercase(),
        cfg.protocol.name(),
        started,
        &counters,
    );
    report
        .extra
        .insert("children_forked".into(), tally.forked.into());
    report
        .extra
        .insert("children_reaped".into(), tally.reaped.into());
    report
        .extra
        .insert("max_live_children".into(), tally.max_live.into());
    report
        .extra
        .insert("zombies_at_shutdown".into(), zombies_at_shutdown.into());
    report.emit(cfg.stats_file.as_deref());
    Ok(())
}

#[derive(Debug, Default)]
struct Tally {
    forked: u64,
    reaped: u64,
    max_live: usize,
}

/// waitpid(-1, WNOHANG) until no exited child is left (or, with `once`, a single call).
fn reap(children: &mut HashSet<Pid>, tally: &mut Tally, once: bool) {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            // Children exist but none has exited yet.
            Ok(WaitStatus::StillAlive) => return,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    children.remove(&pid);
                    tally.reaped += 1;
                    if let WaitStatus::Signaled(pid, signal, _) = status {
                        info!("child {pid} killed by {signal}");
                    }
                }
            }
            // waitpid(2): EINTR if a signal lands mid-call; try again.
            Err(Errno::EINTR) => continue,
            // ECHILD: no children at all.
            Err(_) => return,
        }
        if once {
            return;
        }
    }
}

/// How many of `children` are zombies right now, from the state letter in /proc/PID/stat.
fn count_zombies(children: &HashSet<Pid>) -> usize {
    children
        .iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                // The state follows the command name, which is in parentheses and may hold spaces.
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                })
                .unwrap_or(false)
        })
        .count()
}
