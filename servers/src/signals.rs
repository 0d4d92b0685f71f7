//! Signals and shutdown, done so that no handler does real work.
//!
//! A signal handler interrupts the program at an arbitrary instruction, perhaps inside
//! `malloc` or while holding a lock, so it may only call async-signal-safe functions
//! (signal-safety(7)). echolab's handlers therefore do two things: set an atomic flag and
//! write one byte to a pipe (the *self-pipe trick*). The main loop polls that pipe beside its
//! listener, wakes up, and does the real work — `waitpid`, starting the shutdown — in normal
//! code. A naive server instead blocks in `accept()` and relies on the signal interrupting it
//! with `EINTR`; that has a race (a signal that lands just before `accept` blocks is not
//! noticed until the next connection), which the pipe closes.
//!
//! Shutdown is broadcast the other way, through a second pipe, [`Shutdown`]: every connection
//! handler polls its read end beside its socket, and the main process *closes* the write end
//! to stop them all at once. A closed pipe reports `POLLHUP` to every reader in every process
//! that holds it — threads and forked children alike — with no signal and no list of who is
//! listening. It also means that if the parent dies, even by SIGKILL, the kernel closes its
//! write end and the children notice and leave: no orphans.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{
    sigaction, sigprocmask, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal,
};

static TERMINATE: AtomicBool = AtomicBool::new(false);
static CHILD_EXITED: AtomicBool = AtomicBool::new(false);
/// The write end of the self-pipe, for the handler; -1 when there is none.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// Set by a prefork worker while it waits for a connection (see [`exit_on_terminate_when_idle`]).
static IDLE: AtomicBool = AtomicBool::new(false);
static EXIT_WHEN_IDLE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: libc::c_int) {
    // write(2) below may change errno, and the code we interrupted may be about to read it.
    let saved = Errno::last_raw();
    if signal == libc::SIGCHLD {
        CHILD_EXITED.store(true, Ordering::SeqCst);
    } else {
        if EXIT_WHEN_IDLE.load(Ordering::SeqCst) && IDLE.load(Ordering::SeqCst) {
            // A worker blocked in accept() or in the accept lock holds no client: leaving at
            // once is both safe and the only way out of a blocking accept without a race.
            // SAFETY: _exit(2) is async-signal-safe; it runs no destructors or atexit hooks,
            // which is exactly what a handler must avoid.
            unsafe { libc::_exit(0) };
        }
        TERMINATE.store(true, Ordering::SeqCst);
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is a live local. The pipe is
        // nonblocking: if it is full, a wake-up is already pending and losing this byte is fine.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
    Errno::set_raw(saved);
}

/// What the handlers recorded since the last [`SignalPipe::take`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    /// SIGINT or SIGTERM arrived: shut down gracefully.
    pub terminate: bool,
    /// SIGCHLD arrived: one *or more* children exited (signals of one kind coalesce).
    pub child_exited: bool,
}

/// The self-pipe that turns signals into readable bytes for a poll loop.
#[derive(Debug)]
pub struct SignalPipe {
    read: OwnedFd,
    /// Never used directly: the handler writes to its raw number, and this keeps it open.
    _write: OwnedFd,
}

fn install(signal: Signal, handler: SigHandler, flags: SaFlags) -> io::Result<()> {
    let action = SigAction::new(handler, flags, SigSet::empty());
    // SAFETY: the handler is either a disposition (default/ignore) or `on_signal`, which only
    // touches atomics and calls async-signal-safe functions.
    unsafe { sigaction(signal, &action) }?;
    Ok(())
}

impl SignalPipe {
    /// Installs handlers for SIGINT and SIGTERM (and SIGCHLD when `children` is set) that
    /// wake the returned pipe.
    pub fn install(children: bool) -> io::Result<SignalPipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        WAKE_FD.store(write.as_raw_fd(), Ordering::SeqCst);
        // SA_RESTART: slow system calls elsewhere (a blocking write) resume rather than fail
        // with EINTR; poll(2) is never restarted, which is what wakes the main loop.
        let flags = SaFlags::SA_RESTART;
        install(Signal::SIGINT, SigHandler::Handler(on_signal), flags)?;
        install(Signal::SIGTERM, SigHandler::Handler(on_signal), flags)?;
        if children {
            // SA_NOCLDSTOP: only exits matter here, not children being stopped or continued.
            install(
                Signal::SIGCHLD,
                SigHandler::Handler(on_signal),
                flags | SaFlags::SA_NOCLDSTOP,
            )?;
        }
        Ok(SignalPipe {
            read,
            _write: write,
        })
    }

    /// The descriptor to poll for `POLLIN`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Drains the pipe and returns (and clears) what the handlers recorded.
    pub fn take(&self) -> Pending {
        let mut sink = [0u8; 64];
        // The pipe is nonblocking: read until EAGAIN. The bytes carry no meaning; the flags do.
        while matches!(nix::unistd::read(self.read.as_raw_fd(), &mut sink), Ok(n) if n > 0) {}
        Pending {
            terminate: TERMINATE.swap(false, Ordering::SeqCst),
            child_exited: CHILD_EXITED.swap(false, Ordering::SeqCst),
        }
    }

    /// In a freshly forked child: restore default dispositions and close the child's copies
    /// of the pipe. The child inherited both the handlers and the descriptors; left alone, a
    /// signal to the child would write into the *parent's* pipe.
    ///
    /// SIGINT is ignored rather than defaulted: a Ctrl-C in the terminal goes to the whole
    /// process group, and the parent alone should decide how its children end (by closing the
    /// [`Shutdown`] pipe), so in-flight requests can finish.
    pub fn forget_in_child(self) -> io::Result<()> {
        WAKE_FD.store(-1, Ordering::SeqCst);
        install(Signal::SIGCHLD, SigHandler::SigDfl, SaFlags::empty())?;
        install(Signal::SIGTERM, SigHandler::SigDfl, SaFlags::empty())?;
        install(Signal::SIGINT, SigHandler::SigIgn, SaFlags::empty())?;
        drop(self);
        unblock_after_fork()
    }

    /// In a prefork worker: on SIGTERM, `_exit` at once while [`set_idle`] says the worker is
    /// waiting for a connection, else only record it and let the current connection finish.
    /// Forgets the parent's pipe. SIGINT is ignored, as in a fork child: a Ctrl-C reaches the
    /// whole process group, and it is the parent's to act on (it sends the workers SIGTERM);
    /// a worker that left on its own would look to the parent like one that died.
    pub fn into_worker(self) -> io::Result<()> {
        WAKE_FD.store(-1, Ordering::SeqCst);
        EXIT_WHEN_IDLE.store(true, Ordering::SeqCst);
        install(Signal::SIGCHLD, SigHandler::SigDfl, SaFlags::empty())?;
        install(
            Signal::SIGTERM,
            SigHandler::Handler(on_signal),
            SaFlags::empty(),
        )?;
        install(Signal::SIGINT, SigHandler::SigIgn, SaFlags::empty())?;
        drop(self);
        unblock_after_fork()
    }
}

impl SignalPipe {
    /// In a prefork worker that runs an event loop: a self-pipe of its own, in place of the
    /// parent's, so that SIGTERM wakes *its* loop, which then shuts down gracefully like
    /// server-eventloop's: stop accepting, answer what each client sent, close. Unlike a
    /// blocking worker ([`SignalPipe::into_worker`]) it never `_exit`s from the handler: a
    /// loop is never "idle" with no client, it may hold hundreds. SIGINT is ignored and
    /// SIGCHLD defaulted, as in every child.
    pub fn into_loop_worker(self) -> io::Result<SignalPipe> {
        WAKE_FD.store(-1, Ordering::SeqCst);
        drop(self);
        let pipe = SignalPipe::install(false)?;
        install(Signal::SIGCHLD, SigHandler::SigDfl, SaFlags::empty())?;
        install(Signal::SIGINT, SigHandler::SigIgn, SaFlags::empty())?;
        unblock_after_fork()?;
        Ok(pipe)
    }
}

/// The signals whose handlers touch the self-pipe.
fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGCHLD] {
        set.add(signal);
    }
    set
}

/// Blocks SIGINT, SIGTERM and SIGCHLD until dropped (in the parent) or until the child has
/// installed its own dispositions ([`SignalPipe::forget_in_child`], [`SignalPipe::into_worker`]).
///
/// Without it, a signal delivered to a new child in the instant between `fork` and that setup
/// would run the *parent's* handler in the child and write into the parent's self-pipe. While
/// blocked, a signal stays pending and is delivered, with the right disposition, on unblocking.
#[derive(Debug)]
pub struct BlockedForFork {
    previous: SigSet,
}

/// Blocks the handled signals for the duration of a `fork` (see [`BlockedForFork`]).
pub fn block_for_fork() -> io::Result<BlockedForFork> {
    let mut previous = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled()), Some(&mut previous))?;
    Ok(BlockedForFork { previous })
}

/// Blocks the handled signals while threads are spawned, so that they inherit the mask and
/// never take a signal themselves: SIGINT and SIGTERM are then delivered to the thread that
/// unblocks them again when the guard drops (the caller), the one that reads the self-pipe.
/// Any thread would do for the pipe's sake (the handler writes it, whoever runs it), but a
/// signal that lands in a loop thread also cuts its wait short for nothing.
pub fn block_for_threads() -> io::Result<BlockedForFork> {
    block_for_fork()
}

impl Drop for BlockedForFork {
    fn drop(&mut self) {
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.previous), None);
    }
}

fn unblock_after_fork() -> io::Result<()> {
    sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&handled()), None)?;
    Ok(())
}

/// Marks a prefork worker as idle (waiting in `accept`) or busy (serving a client).
pub fn set_idle(idle: bool) {
    IDLE.store(idle, Ordering::SeqCst);
}

/// Whether SIGINT/SIGTERM arrived in this process (for workers, which have no pipe).
pub fn terminate_requested() -> bool {
    TERMINATE.load(Ordering::SeqCst)
}

/// Exits immediately if termination was requested while idle (closes the window between a
/// check of the flag and the next blocking call).
pub fn exit_on_terminate_when_idle() {
    if terminate_requested() {
        // SAFETY: called in a single-threaded worker between connections; nothing needs
        // flushing (counters live in shared memory, stderr is unbuffered).
        unsafe { libc::_exit(0) };
    }
}

/// The broadcast "stop now" that every connection handler watches.
#[derive(Debug)]
pub struct Shutdown {
    read: Arc<OwnedFd>,
    write: Option<OwnedFd>,
}

impl Shutdown {
    /// A new, untriggered broadcast.
    pub fn new() -> io::Result<Shutdown> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        Ok(Shutdown {
            read: Arc::new(read),
            write: Some(write),
        })
    }

    /// The descriptor handlers poll: it reports `POLLHUP` once shutdown begins.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// A handle on the read end for a thread to keep (it must outlive the thread's polls).
    pub fn watcher(&self) -> Arc<OwnedFd> {
        Arc::clone(&self.read)
    }

    /// Starts the shutdown: closes this process's write end. Every reader wakes once *all*
    /// copies of the write end are closed, which is why children must call
    /// [`Shutdown::child_side`] right after `fork`.
    pub fn trigger(&mut self) {
        self.write = None;
    }

    /// In a forked child: drop the inherited write end, so that only the parent holds one.
    pub fn child_side(&mut self) {
        self.write = None;
    }

    /// Whether the shutdown has begun (non-blocking check).
    pub fn is_triggered(&self) -> bool {
        let mut fds = [PollFd::new(self.read.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }
}
