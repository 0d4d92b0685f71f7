//! Opening the listening socket, the one line that tells a harness it is ready, and accepting
//! ([`Acceptor`]), with what running out of descriptors takes.
//!
//! `std::net::TcpListener::bind` hard-codes the `listen(2)` backlog (128) and cannot set
//! `SO_REUSEPORT`, and both are knobs the lab turns: the backlog is where connections wait when
//! a server is saturated, and `SO_REUSEPORT` is one of prefork's accept strategies. So the
//! socket is built step by step with the same calls a C server makes, then handed to std.

use std::fs::File;
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::log::OnceASecond;
use crate::poller::poll_timeout;
use crate::signals::{Pending, SignalPipe};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use nix::sys::socket::{
    bind as bind_socket, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType,
    SockaddrStorage,
};

/// socket(2) + `SO_REUSEADDR` (+ `SO_REUSEPORT`) + bind(2) + listen(2).
///
/// `SO_REUSEADDR` lets a restarted server bind while connections of its previous run linger
/// in `TIME_WAIT`. `SO_REUSEPORT` lets several sockets bind the same port, and makes the
/// kernel spread incoming connections over them by a hash of the client's address and port.
///
/// A failure names the address and, for the two common ones, what to do: "Address already
/// in use (os error 98)" alone does not say *which* address, and a server started by a script
/// may have got its `--addr` from anywhere.
pub fn bind(addr: SocketAddr, backlog: i32, reuse_port: bool) -> io::Result<TcpListener> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    // SOCK_CLOEXEC: a listener must not leak into a program a child might exec.
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if reuse_port {
        setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    if let Err(e) = bind_socket(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
        let hint = match e {
            Errno::EADDRINUSE => {
                "; another process listens there (stop it, pick another --addr, or use port 0 for a free one)"
            }
            Errno::EADDRNOTAVAIL => "; that address is not one of this machine's",
            Errno::EACCES => "; ports below 1024 need privileges",
            _ => "",
        };
        return Err(io::Error::new(
            io::Error::from(e).kind(),
            format!("cannot listen on {addr}: {}{hint}", io::Error::from(e)),
        ));
    }
    // listen(2) (never blocks, so never EINTR) directly rather than nix's `listen`: nix's
    // `Backlog` refuses anything from
    // libc::SOMAXCONN (4096) up, while Linux takes any int and caps it at
    // net.core.somaxconn itself, which an administrator may have raised well past 4096.
    // SAFETY: listen(2) takes a descriptor and an integer and touches no memory of ours; `fd`
    // is an open socket that this function owns.
    if unsafe { libc::listen(fd.as_raw_fd(), backlog) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("cannot listen on {addr}: {e}"),
        ));
    }
    let listener = TcpListener::from(fd);
    warn_if_backlog_capped(&listener, backlog);
    Ok(listener)
}

/// Says, once per process, when the kernel gave the listener a shorter accept queue than
/// `--backlog` asked for: Linux caps it at net.core.somaxconn without a word, and someone who
/// raised `--backlog` to absorb a burst should know that it did not happen.
fn warn_if_backlog_capped(listener: &TcpListener, asked: i32) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Ok(queue) = accept_queue(listener) {
        let asked = u32::try_from(asked).unwrap_or(0);
        if queue.capacity < asked && !WARNED.swap(true, Ordering::Relaxed) {
            crate::info!(
                "--backlog {asked}: the kernel caps the accept queue at {} (net.core.somaxconn)",
                queue.capacity
            );
        }
    }
}

/// A listening socket's accept queue: connections whose handshake the kernel has completed
/// and that no `accept` has taken yet. This is where clients of a saturated server wait, and
/// from outside nothing shows it: the client's `connect` succeeded long ago.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptQueue {
    /// Connections waiting to be accepted now.
    pub waiting: u32,
    /// The most that may wait: `--backlog`, capped at net.core.somaxconn. Past it, Linux drops
    /// the handshake's last ACK and the client retransmits (or, with tcp_abort_on_overflow,
    /// gets a reset).
    pub capacity: u32,
}

/// Reads the accept queue of `listener` with getsockopt(TCP_INFO): for a socket in the
/// LISTEN state, Linux reports the current queue length in `tcpi_unacked` and its limit in
/// `tcpi_sacked` (fields that mean something else on a connected socket). `ss -lnt` shows the
/// same two numbers as Recv-Q and Send-Q.
pub fn accept_queue(listener: &TcpListener) -> io::Result<AcceptQueue> {
    let mut info = MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // getsockopt(2) (never blocks, so never EINTR) directly: nix has no TCP_INFO option.
    // SAFETY: `info` is a writable buffer of `len` bytes that outlives the call, `len` is a
    // valid socklen_t the kernel may lower, and the descriptor is open for as long as
    // `listener` is borrowed.
    let rc = unsafe {
        libc::getsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // An older kernel fills a shorter struct; the two fields we read must be in what it wrote.
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_sacked) + 4;
    if (len as usize) < needed {
        return Err(io::Error::other(
            "TCP_INFO too short to hold the accept queue",
        ));
    }
    // SAFETY: `tcp_info` is plain integers, for which all-zero bytes (from `zeroed`) are a
    // valid value; the kernel overwrote a prefix of it with more integers.
    let info = unsafe { info.assume_init() };
    Ok(AcceptQueue {
        waiting: info.tcpi_unacked,
        capacity: info.tcpi_sacked,
    })
}

/// Prints `listening on ADDR` on stdout and flushes: harnesses wait for exactly this line,
/// and learn the port from it when the server was started with port 0.
pub fn announce(addr: SocketAddr) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()
}

/// Accepting, for every model where one process accepts (all but prefork, whose workers each
/// block in `accept` on the listener they share): [`Acceptor::wait`] until a connection or a
/// signal is there (the blocking models; the event loop has its poller tell it), then
/// [`Acceptor::accept`] until the queue is empty.
///
/// Running out of descriptors is handled here, once. `accept` fails with `EMFILE`, the pending
/// connection stays in the backlog, and the listener stays readable, so a loop that simply went
/// round again would spin at 100% CPU. The acceptor does one of two things, logging the
/// condition at most once a second:
///
/// - **Pause** ([`Acceptor::new`], the blocking models): stop accepting for
///   [`Acceptor::PAUSE`]. The clients wait in the backlog; existing connections keep being
///   served, and one that closes frees a descriptor for the next.
/// - **Shed** ([`Acceptor::with_spare`], the event loop): keep a spare descriptor (an open
///   `/dev/null`) in reserve; on `EMFILE`, close it, accept the client into the descriptor
///   just freed, hand it to the caller to be told "server busy" and closed, and open the spare
///   again (libuv and libev do the same). Clients over the limit get an answer at once instead
///   of waiting. If the spare cannot be had, or for any other error (`ENOBUFS`, `ENOMEM`),
///   it pauses, and takes the spare back at its next accept once it can.
///
/// Every acceptor of the process accepts and sheds under one lock (`DESCRIPTORS`): loops on
/// threads share one descriptor table, and without it the descriptor one loop freed for its
/// spare trick could be taken by another loop's `accept` first, leaving the first loop with
/// neither the client nor its spare, and the client unanswered in its queue.
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    paused_until: Option<Instant>,
    /// The descriptor held in reserve for shedding; `None` for an acceptor that pauses, and
    /// from the time the spare could not be opened again.
    spare: Option<File>,
    /// Whether this acceptor sheds ([`Acceptor::with_spare`]), so a lost spare is taken back.
    sheds: bool,
    log_limit: OnceASecond,
}

/// The process's accepts and spare-descriptor tricks, one at a time (see [`Acceptor`]). Held
/// for an `accept` call, or for the few system calls of a shed: uncontended in every model but
/// loops on threads, and there only while connections arrive at once on several loops.
static DESCRIPTORS: Mutex<()> = Mutex::new(());

impl Acceptor {
    /// How long accepting pauses after running out of descriptors or memory.
    pub const PAUSE: Duration = Duration::from_millis(100);
    /// How often a paused acceptor's wait looks whether the pause is over.
    const PAUSED_LOOK: Duration = Duration::from_millis(10);

    /// Takes over `listener` (made nonblocking, so accepting can stop at `EAGAIN`); out of
    /// descriptors, it pauses.
    pub fn new(listener: TcpListener) -> io::Result<Acceptor> {
        listener.set_nonblocking(true)?;
        Ok(Acceptor {
            listener,
            paused_until: None,
            spare: None,
            sheds: false,
            log_limit: OnceASecond::default(),
        })
    }

    /// [`Acceptor::new`], but out of descriptors it sheds, with a spare opened now.
    pub fn with_spare(listener: TcpListener) -> io::Result<Acceptor> {
        let mut acceptor = Acceptor::new(listener)?;
        acceptor.spare = Some(File::open("/dev/null")?);
        acceptor.sheds = true;
        Ok(acceptor)
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The listening socket (to read its accept queue, or to register it with a poller).
    pub fn listener(&self) -> &TcpListener {
        &self.listener
    }

    /// Sleeps in poll(2) until the listener or the signal pipe is readable, and returns what
    /// the signal handlers recorded meanwhile. While paused, only the signal pipe is watched.
    pub fn wait(&mut self, signals: &SignalPipe) -> Pending {
        self.wait_at_most(signals, None)
    }

    /// [`Acceptor::wait`], but back after `tick` at the latest even if nothing happened, for
    /// a loop that also has periodic work (the thread pool watches for saturation).
    pub fn wait_at_most(&mut self, signals: &SignalPipe, tick: Option<Duration>) -> Pending {
        self.resume_if_due();
        let mut fds = [
            PollFd::new(signals.fd(), PollFlags::POLLIN),
            PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
        ];
        let (watched, timeout) = if self.is_paused() {
            // The signal pipe only, and a look every few milliseconds at whether the pause
            // is over.
            let look = tick.map_or(Self::PAUSED_LOOK, |t| t.min(Self::PAUSED_LOOK));
            (1, Some(look))
        } else {
            (2, tick)
        };
        let timeout = timeout.map_or(PollTimeout::NONE, poll_timeout);
        // poll(2): a signal interrupts it with EINTR (never restarted), which is the point;
        // ENOMEM is the only other failure, and a short pause is all we can do about it.
        if let Err(e) = poll(&mut fds[..watched], timeout) {
            if e != Errno::EINTR {
                self.log_once_a_second(&format!("poll: {e}"));
                std::thread::sleep(Self::PAUSE);
            }
        }
        signals.take()
    }

    /// The next pending connection, as a blocking socket, or `None` when there is none (or
    /// accepting is paused). Call until `None` after each [`Acceptor::wait`]. A connection
    /// shed for want of descriptors is closed without a word.
    pub fn accept(&mut self) -> Option<(TcpStream, SocketAddr)> {
        let (stream, peer) = self.accept_or_shed(|stream, _| drop(stream))?;
        // Accepted sockets do not inherit O_NONBLOCK on Linux; say what we rely on.
        let _ = stream.set_nonblocking(false);
        Some((stream, peer))
    }

    /// The next pending connection, as accept(2) made it (blocking, on Linux), or `None` when
    /// there is none or accepting is paused. Out of descriptors, an acceptor
    /// [`with_spare`](Acceptor::with_spare) hands each connection it sheds to `shed`, as a
    /// blocking socket, to be refused and closed; the spare is taken back after `shed` returns.
    pub fn accept_or_shed(
        &mut self,
        mut shed: impl FnMut(TcpStream, SocketAddr),
    ) -> Option<(TcpStream, SocketAddr)> {
        if self.is_paused() {
            return None;
        }
        if self.sheds && self.spare.is_none() {
            self.spare = File::open("/dev/null").ok();
        }
        loop {
            // A poisoned lock guards nothing broken (it holds no data): carry on.
            let _one_at_a_time = DESCRIPTORS.lock().unwrap_or_else(|e| e.into_inner());
            // accept4(2) via std, which retries EINTR itself (in server-fork a SIGCHLD lands
            // here often).
            match self.listener.accept() {
                Ok(accepted) => return Some(accepted),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                // ECONNABORTED: the client gave up while queued; the next one may be fine.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
                        && self.shed_one(&e, &mut shed) => {}
                Err(e) => {
                    // ENOBUFS, ENOMEM, or out of descriptors with no spare: retrying at once
                    // would fail again. See the type's docs.
                    self.log_once_a_second(&format!(
                        "accept: {e}; pausing accepts for {:?}",
                        Self::PAUSE
                    ));
                    self.paused_until = Some(Instant::now() + Self::PAUSE);
                    return None;
                }
            }
        }
    }

    /// Whether accepting is paused. An event loop stops watching the listener meanwhile: a
    /// level-triggered poller would report it ready on every wait.
    pub fn is_paused(&self) -> bool {
        self.paused_until.is_some()
    }

    /// Ends a pause whose time is up; true if one just ended. An event loop then watches the
    /// listener again and accepts at once, since an edge-triggered poller will not report the
    /// connections that queued up meanwhile.
    pub fn resume_if_due(&mut self) -> bool {
        let due = self.paused_until.is_some_and(|t| Instant::now() >= t);
        if due {
            self.paused_until = None;
        }
        due
    }

    /// Sheds one pending connection with the spare descriptor (see the type's docs); false if
    /// there is no spare or no connection came of it.
    fn shed_one(
        &mut self,
        cause: &io::Error,
        shed: &mut impl FnMut(TcpStream, SocketAddr),
    ) -> bool {
        let Some(spare) = self.spare.take() else {
            return false;
        };
        self.log_once_a_second(&format!(
            "accept: {cause}; refusing new connections until descriptors free up"
        ));
        drop(spare);
        let refused = match self.listener.accept() {
            Ok((stream, peer)) => {
                // A refusal writes its reply with a timeout, which needs a blocking socket.
                let _ = stream.set_nonblocking(false);
                shed(stream, peer);
                true
            }
            Err(_) => false,
        };
        self.spare = File::open("/dev/null").ok();
        if self.spare.is_none() {
            crate::info!(
                "cannot reopen the spare descriptor; accepts pause until it can be opened again"
            );
        }
        refused
    }

    fn log_once_a_second(&mut self, message: &str) {
        if self.log_limit.ready() {
            crate::info!("{message}");
        }
    }
}
