//! Opening the listening socket, and the one line that tells a harness it is ready.
//!
//! `std::net::TcpListener::bind` hard-codes the `listen(2)` backlog (128) and cannot set
//! `SO_REUSEPORT`, and both are knobs the lab turns: the backlog is where connections wait when
//! a server is saturated, and `SO_REUSEPORT` is one of prefork's accept strategies. So the
//! socket is built step by step with the same calls a C server makes, then handed to std.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use crate::signals::{Pending, SignalPipe};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use nix::sys::socket::{
    bind as bind_socket, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag,
    SockType, SockaddrStorage,
};

/// socket(2) + `SO_REUSEADDR` (+ `SO_REUSEPORT`) + bind(2) + listen(2).
///
/// `SO_REUSEADDR` lets a restarted server bind while connections of its previous run linger
/// in `TIME_WAIT`. `SO_REUSEPORT` lets several sockets bind the same port, and makes the
/// kernel spread incoming connections over them by a hash of the client's address and port.
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
    bind_socket(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    let backlog = Backlog::new(backlog)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("--backlog: {e}")))?;
    listen(&fd, backlog)?;
    Ok(TcpListener::from(fd))
}

/// Prints `listening on ADDR` on stdout and flushes: harnesses wait for exactly this line,
/// and learn the port from it when the server was started with port 0.
pub fn announce(addr: SocketAddr) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()
}

/// The accept loop's two halves, for the models where one process accepts: wait until a
/// connection or a signal is there, then accept until the queue is empty.
///
/// Running out of descriptors is handled here, once: `accept` fails with `EMFILE`, the pending
/// connection stays in the backlog, and the listener stays readable, so a loop that simply went
/// round again would spin at 100% CPU. The acceptor instead stops watching the listener for
/// [`Acceptor::PAUSE`] (the clients wait in the backlog; existing connections keep being
/// served) and logs at most once a second. libuv and libev keep a spare descriptor to accept
/// and close such connections at once; the lab shows the simpler pause.
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    paused_until: Option<Instant>,
    last_log: Option<Instant>,
}

impl Acceptor {
    /// How long accepting pauses after running out of descriptors or memory.
    pub const PAUSE: Duration = Duration::from_millis(100);

    /// Takes over `listener` (made nonblocking, so accepting can stop at `EAGAIN`).
    pub fn new(listener: TcpListener) -> io::Result<Acceptor> {
        listener.set_nonblocking(true)?;
        Ok(Acceptor {
            listener,
            paused_until: None,
            last_log: None,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Sleeps in poll(2) until the listener or the signal pipe is readable, and returns what
    /// the signal handlers recorded meanwhile. While paused, only the signal pipe is watched.
    pub fn wait(&mut self, signals: &SignalPipe) -> Pending {
        let paused = self.paused_until.is_some_and(|t| Instant::now() < t);
        if !paused {
            self.paused_until = None;
        }
        let mut fds = [
            PollFd::new(signals.fd(), PollFlags::POLLIN),
            PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
        ];
        let (watched, timeout) = if paused {
            (1, PollTimeout::from(10u16))
        } else {
            (2, PollTimeout::NONE)
        };
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

    /// The next pending connection, or `None` when there is none (or accepting is paused).
    /// Call until `None` after each [`Acceptor::wait`].
    pub fn accept(&mut self) -> Option<(TcpStream, SocketAddr)> {
        if self.paused_until.is_some() {
            return None;
        }
        loop {
            // accept4(2) via std, which retries EINTR itself (in server-fork a SIGCHLD lands
            // here often).
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    // Accepted sockets do not inherit O_NONBLOCK on Linux; say what we rely on.
                    let _ = stream.set_nonblocking(false);
                    return Some((stream, peer));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                // ECONNABORTED: the client gave up while queued; the next one may be fine.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: out of something; see the type's docs.
                    self.log_once_a_second(&format!("accept: {e}; pausing accepts"));
                    self.paused_until = Some(Instant::now() + Self::PAUSE);
                    return None;
                }
            }
        }
    }

    fn log_once_a_second(&mut self, message: &str) {
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.last_log = Some(Instant::now());
            crate::info!("{message}");
        }
    }
}
