//! Readiness backends for the event loop: `select(2)`, `poll(2)` and `epoll(7)` (through mio),
//! behind one small trait so the loop and the connection code never know which one runs.
//!
//! All three answer the same question — "which of these descriptors can I read or write without
//! blocking?" — at very different costs:
//!
//! - **select** copies bitmaps of `FD_SETSIZE` (1024) bits (here two: read and write) into the
//!   kernel on every call,
//!   and the kernel scans every bit up to the highest descriptor. The bitmaps are rebuilt each
//!   time, and a descriptor >= 1024 cannot be expressed at all (setting its bit would write past
//!   the end of the `fd_set`: undefined behaviour in C, a panic in nix).
//! - **poll** takes an array of `pollfd`, so there is no size limit, but the array is still
//!   copied in and scanned in full on every call: O(watched descriptors), however few are ready.
//! - **epoll** keeps the interest list *in the kernel* (`epoll_ctl` once per change) and returns
//!   only the ready descriptors: O(ready). mio drives it edge-triggered: an event says "this
//!   became readable", once, so the loop must read until `EAGAIN` or never hear of that data again.
//!
//! select and poll are level-triggered (they report a readable socket for as long as it holds
//! data). The loop reads and writes until `EAGAIN` either way, which is correct under both.
//!
//! **Contract:** a descriptor is registered while, and only while, it is open: the loop
//! deregisters before it closes. The select and poll backends keep raw descriptor numbers and
//! rely on this; mio states the same rule.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use nix::poll::PollTimeout;
use nix::sys::select::{select, FdSet, FD_SETSIZE};
use nix::sys::time::{TimeVal, TimeValLike};

/// What a registered descriptor should be watched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    /// Report when reading would not block (or the peer closed).
    pub readable: bool,
    /// Report when writing would not block.
    pub writable: bool,
}

impl Interest {
    /// Readable only: the normal state of a connection with no output pending.
    pub const READ: Interest = Interest {
        readable: true,
        writable: false,
    };
}

/// One readiness report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The token the descriptor was registered with.
    pub token: usize,
    /// Readable, or hung up, or in error: a read will tell which, without blocking.
    pub readable: bool,
    /// Writable (or in error: a write will tell).
    pub writable: bool,
}

/// A readiness API: register descriptors with a token, wait for events.
///
/// `Send`, because `server-eventloop --threads` builds every loop (poller included) on the
/// main thread, so that one that cannot start stops the server before it says it listens, and
/// then hands each to its own thread. A poller is still only ever used by one thread at a time.
pub trait Poller: Send {
    /// The backend's name, for logs and reports.
    fn name(&self) -> &'static str;
    /// Starts watching `fd` under `token`. Fails for a descriptor the backend cannot watch
    /// (select: `fd >= FD_SETSIZE`), which the caller must then close without registering.
    fn register(&mut self, fd: RawFd, token: usize, interest: Interest) -> io::Result<()>;
    /// Starts watching a listening `fd` for readability with `EPOLLEXCLUSIVE`: when several
    /// pollers watch the same listener this way, a new connection wakes one of them (or a
    /// few), not all. epoll only; the other backends refuse.
    fn register_exclusive(&mut self, fd: RawFd, token: usize) -> io::Result<()> {
        let _ = (fd, token);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "EPOLLEXCLUSIVE needs the epoll backend, not {}",
                self.name()
            ),
        ))
    }
    /// Changes what `fd` is watched for.
    fn reregister(&mut self, fd: RawFd, token: usize, interest: Interest) -> io::Result<()>;
    /// Stops watching `fd`. Must be called before `fd` is closed.
    fn deregister(&mut self, fd: RawFd, token: usize) -> io::Result<()>;
    /// Waits up to `timeout` (forever if `None`) and replaces `events` with what is ready.
    /// A signal ends the wait early with no events (EINTR is not an error here).
    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()>;
}

/// Which backend `--backend` chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// select(2): bitmaps, O(highest fd) per wait, descriptors < 1024 only.
    Select,
    /// poll(2): an array, O(watched fds) per wait.
    Poll,
    /// epoll(7) via mio: kernel-side interest list, O(ready fds) per wait, edge-triggered.
    Epoll,
}

impl Backend {
    /// Its name, as its poller's [`Poller::name`] gives it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Select => "select",
            Backend::Poll => "poll",
            Backend::Epoll => "epoll",
        }
    }

    /// A new poller of this kind.
    pub fn create(self) -> io::Result<Box<dyn Poller>> {
        Ok(match self {
            Backend::Select => Box::new(SelectPoller::default()),
            Backend::Poll => Box::new(PollPoller::default()),
            Backend::Epoll => Box::new(EpollPoller::new()?),
        })
    }
}

/// `timeout` as poll(2)'s timeout, in whole milliseconds: every wait the servers compute as a
/// `Duration` (the poll backend, the blocking handler's wait and its lingering close, the
/// acceptor, prefork's supervisor) goes to poll(2) through here.
///
/// Rounded *up*: a wait computed to end at a deadline must not end a hair before it, or the
/// loop finds the deadline not yet passed and polls again with a timeout of zero, spinning
/// until it is. At most `i32::MAX` ms (about 24 days), which is what poll(2) can take.
pub fn poll_timeout(timeout: Duration) -> PollTimeout {
    let millis = timeout.as_nanos().div_ceil(1_000_000);
    PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
}

/// select(2). The registry is a map; the bitmaps are rebuilt from it on every wait, because
/// select overwrites them with its answer.
#[derive(Debug, Default)]
pub struct SelectPoller {
    watched: HashMap<usize, (RawFd, Interest)>,
}

impl Poller for SelectPoller {
    fn name(&self) -> &'static str {
        "select"
    }

    fn register(&mut self, fd: RawFd, token: usize, interest: Interest) -> io::Result<()> {
        if usize::try_from(fd).map_or(true, |fd| fd >= FD_SETSIZE) {
            return Err(io::Error::other(format!(
                "descriptor {fd} is beyond select's FD_SETSIZE ({FD_SETSIZE})"
            )));
        }
        self.watched.insert(token, (fd, interest));
        Ok(())
    }

    fn reregister(&mut self, fd: RawFd, token: usize, interest: Interest) -> io::Result<()> {
        self.watched.insert(token, (fd, interest));
        Ok(())
    }

    fn deregister(&mut self, _fd: RawFd, token: usize) -> io::Result<()> {
        self.watched.remove(&token);
        Ok(())
    }

    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        let (mut reads, mut writes) = (FdSet::new(), FdSet::new());
        for &(fd, interest) in self.watched.values() {
            // SAFETY: by the Poller contract a registered descriptor is open until it is
            // deregistered, which cannot happen while this call holds `&mut self`.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            if interest.readable {
                reads.insert(borrowed);
            }
            if interest.writable {
                writes.insert(borrowed);
            }
        }
        let mut tv =
            timeout.map(|t| TimeVal::microseconds(t.as_micros().min(i64::MAX as u128) as i64));
        // select(2): EINTR when a signal arrives; never restarted. Report no events.
        match select(None, Some(&mut reads), Some(&mut writes), None, tv.as_mut()) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        for (&token, &(fd, _)) in &self.watched {
            // SAFETY: as above.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            let (readable, writable) = (reads.contains(borrowed), writes.contains(borrowed));
            if readable || writable {
                events.push(Event {
                    token,
                    readable,
                    writable,
                });
            }
        }
        Ok(())
    }
}

/// poll(2). The `pollfd` array persists between waits (poll leaves `events` alone and writes
/// only `revents`), with a map from token to its slot.
#[derive(Debug, Default)]
pub struct PollPoller {
    fds: Vec<libc::pollfd>,
    tokens: Vec<usize>,
    slot: HashMap<usize, usize>,
}

fn poll_events(interest: Interest) -> libc::c_short {
    let mut events = 0;
    if interest.readable {
        events |= libc::POLLIN;
    }
    if interest.writable {
        events |= libc::POLLOUT;
    }
    events
}

impl Poller for PollPoller {
    fn name(&self) -> &'static str {
        "poll"
    }

    fn register(&mut self, fd: RawFd, token: usize, interest: Interest) -> io::Result<()> {
        self.slot.insert(token, self.fds.len());
        self.fds.push(libc::pollfd {
            fd,
            events: poll_events(interest),
            revents: 0,
        });
        self.tokens.push(token);
        Ok(())
    }

    fn reregister(&mut self, _fd: RawFd, token: usize, interest: Interest) -> io::Result<()> {
        let i = *self
            .slot
            .get(&token)
            .ok_or_else(|| io::Error::other("token not registered"))?;
        self.fds[i].events = poll_events(interest);
        Ok(())
    }

    fn deregister(&mut self, _fd: RawFd, token: usize) -> io::Result<()> {
        let Some(i) = self.slot.remove(&token) else {
            return Ok(());
        };
        // Move the last entry into the hole: O(1), and the order of the array does not matter.
        self.fds.swap_remove(i);
        self.tokens.swap_remove(i);
        if let Some(&moved) = self.tokens.get(i) {
            self.slot.insert(moved, i);
        }
        Ok(())
    }

    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd structs;
        // poll(2) only writes their `revents`. Its descriptors are open (Poller contract).
        let n = unsafe {
            libc::poll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                timeout.map_or(PollTimeout::NONE, poll_timeout).into(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            // poll(2): EINTR when a signal arrives; never restarted. Report no events.
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        // The kernel scanned every entry; so must we, to find the few that are ready.
        for (pfd, &token) in self.fds.iter().zip(&self.tokens) {
            let r = pfd.revents;
            if r != 0 {
                let trouble = r & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0;
                events.push(Event {
                    token,
                    readable: r & libc::POLLIN != 0 || trouble,
                    writable: r & libc::POLLOUT != 0
                        || (trouble && pfd.events & libc::POLLOUT != 0),
                });
            }
        }
        Ok(())
    }
}

/// epoll(7), through mio: the interest list lives in the kernel, waits return only ready fds.
#[derive(Debug)]
pub struct EpollPoller {
    poll: mio::Poll,
    events: mio::Events,
}

impl EpollPoller {
    /// epoll_create1(2).
    pub fn new() -> io::Result<EpollPoller> {
        Ok(EpollPoller {
            poll: mio::Poll::new()?,
            events: mio::Events::with_capacity(1024),
        })
    }
}

fn mio_interest(interest: Interest) -> io::Result<mio::Interest> {
    match (interest.readable, interest.writable) {
        (true, true) => Ok(mio::Interest::READABLE | mio::Interest::WRITABLE),
        (true, false) => Ok(mio::Interest::READABLE),
        (false, true) => Ok(mio::Interest::WRITABLE),
        // mio has no empty interest; the loop never asks for one (a connection that may not
        // read has output pending, so it waits for writability).
        (false, false) => Err(io::Error::other("empty interest")),
    }
}

impl Poller for EpollPoller {
    fn name(&self) -> &'static str {
        "epoll"
    }

    fn register(&mut self, fd: RawFd, token: usize, interest: Interest) -> io::Result<()> {
        self.poll.registry().register(
            &mut mio::unix::SourceFd(&fd),
            mio::Token(token),
            mio_interest(interest)?,
        )
    }

    /// mio has no way to ask for `EPOLLEXCLUSIVE`, so this adds the listener to mio's own
    /// epoll instance with a raw epoll_ctl(2), under the token as mio stores it (the event's
    /// `u64`, which mio turns back into a `Token`). It must be this instance, the one the loop
    /// waits on: an exclusive entry wakes just one waiter only when someone waits *directly*
    /// on its epoll fd, so a nested epoll fd would let every worker be woken again.
    /// Deregistering through mio (EPOLL_CTL_DEL) works as for any other descriptor.
    fn register_exclusive(&mut self, fd: RawFd, token: usize) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32,
            u64: token as u64,
        };
        // epoll_ctl(2) (never blocks, so never EINTR): EINVAL before Linux 4.5.
        // SAFETY: the epoll descriptor is mio's, open for as long as `self`; `fd` is open (the
        // Poller contract); `event` is a valid epoll_event the call only reads.
        let rc =
            unsafe { libc::epoll_ctl(self.poll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn reregister(&mut self, fd: RawFd, token: usize, interest: Interest) -> io::Result<()> {
        self.poll.registry().reregister(
            &mut mio::unix::SourceFd(&fd),
            mio::Token(token),
            mio_interest(interest)?,
        )
    }

    fn deregister(&mut self, fd: RawFd, _token: usize) -> io::Result<()> {
        self.poll
            .registry()
            .deregister(&mut mio::unix::SourceFd(&fd))
    }

    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        // epoll_wait(2): EINTR when a signal arrives; never restarted. Report no events.
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        for ev in &self.events {
            let trouble = ev.is_error() || ev.is_read_closed();
            events.push(Event {
                token: ev.token().0,
                readable: ev.is_readable() || trouble,
                writable: ev.is_writable() || ev.is_error(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_timeout_rounds_up_and_saturates() {
        let ms = |d: Duration| i32::from(poll_timeout(d));
        assert_eq!(ms(Duration::ZERO), 0);
        assert_eq!(
            ms(Duration::from_nanos(1)),
            1,
            "a sub-microsecond wait still waits"
        );
        assert_eq!(ms(Duration::from_micros(1)), 1);
        assert_eq!(ms(Duration::from_millis(250)), 250);
        assert_eq!(ms(Duration::from_micros(250_001)), 251);
        assert_eq!(ms(Duration::MAX), i32::MAX);
    }
}
