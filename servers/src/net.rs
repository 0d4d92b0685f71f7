//! Opening the listening socket, and the one line that tells a harness it is ready.
//!
//! `std::net::TcpListener::bind` hard-codes the `listen(2)` backlog (128) and cannot set
//! `SO_REUSEPORT`, and both are knobs the lab turns: the backlog is where connections wait when
//! a server is saturated, and `SO_REUSEPORT` is one of prefork's accept strategies. So the
//! socket is built step by step with the same calls a C server makes, then handed to std.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;

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
