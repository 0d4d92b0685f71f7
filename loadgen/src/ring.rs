//! `--engine uring`: a worker thread's io_uring, and the rule that keeps lent memory alive.
//!
//! The epoll engine asks which sockets are ready and then makes one `read` or `write` system
//! call on each. With io_uring the thread instead *submits* operations (a receive into this
//! buffer, a send of these bytes, tell me when this socket is writable), each tagged with a
//! `user_data`, and later *reaps* their completions. Everything a turn of the worker's loop
//! queues reaches the kernel in the one `io_uring_enter` that also waits, so a turn that
//! answers 200 connections and sends 200 requests costs one system call, not 400.
//!
//! The price is ownership. Between submission and completion the kernel holds a pointer into
//! our memory: a receive will write into the connection's read buffer, a send will read its
//! bytes from the send buffer, whenever the kernel gets to it. Neither buffer may move, be
//! reused or be freed until the completion says the kernel is done. So when a connection
//! closes with an operation still in flight (a timeout, a recycled short connection), its
//! buffer is not dropped: it is handed to the ring as an *orphan*, filed under the
//! operation's `user_data`, and freed when that operation's completion finally arrives
//! (cancelled, or done). Completions for a socket already closed are expected, and told apart
//! by a generation number in the `user_data`: a slot's next socket gets the next generation.
//!
//! This module is only the ring and that rule; what an operation means for a connection is
//! the engine's ([`crate::engine`]).

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// What an operation was, in the top byte of its `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A poll for writability: a nonblocking `connect` has an outcome.
    Connect = 1,
    /// A receive into the connection's read buffer.
    Recv = 2,
    /// A send from the connection's send buffer.
    Send = 3,
    /// A cancellation of one of the above (its own completion says nothing we need).
    Cancel = 4,
}

/// The generation is kept to 24 bits in the `user_data`; compared the same way.
pub const GEN_MASK: u32 = 0x00FF_FFFF;

/// `user_data` for operation `op` on connection `conn` (the worker's index) in its socket
/// generation `gen`.
pub fn tag(op: Op, conn: usize, gen: u32) -> u64 {
    ((op as u64) << 56) | (u64::from(gen & GEN_MASK) << 32) | (conn as u64 & 0xFFFF_FFFF)
}

/// The inverse of [`tag`]; `None` for an op byte that is none of ours.
pub fn untag(user_data: u64) -> Option<(Op, usize, u32)> {
    let op = match user_data >> 56 {
        1 => Op::Connect,
        2 => Op::Recv,
        3 => Op::Send,
        4 => Op::Cancel,
        _ => return None,
    };
    let gen = ((user_data >> 32) as u32) & GEN_MASK;
    Some((op, (user_data & 0xFFFF_FFFF) as usize, gen))
}

/// A buffer the kernel may still write into or read from, after its connection let go.
#[derive(Debug)]
pub enum Orphan {
    /// A read buffer with a receive in flight.
    Read(echolab_protocol::ReadBuffer),
    /// Bytes with a send in flight.
    Write(Vec<u8>),
}

/// One completion: its `user_data` and its result (bytes, or a negated errno).
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    /// Who submitted it ([`untag`]).
    pub user_data: u64,
    /// The operation's result: a count, or `-errno`.
    pub result: i32,
}

/// A worker's ring.
pub struct Ring {
    uring: IoUring<squeue::Entry, cqueue::Entry>,
    /// Operations submitted (or queued) and not yet completed. Each of ours completes exactly
    /// once (no multishot here), so this reaching 0 means the kernel holds nothing of ours.
    in_flight: usize,
    /// Buffers of closed connections, until their operation completes.
    orphans: HashMap<u64, Orphan>,
    /// `io_uring_enter` calls made, for the curious (the report counts system calls with
    /// `perf` instead, which sees every call).
    pub enters: u64,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("in_flight", &self.in_flight)
            .field("orphans", &self.orphans.len())
            .field("enters", &self.enters)
            .finish()
    }
}

/// Why this process cannot have a ring: `None` if it can. Asked once, before any thread
/// starts, so an unusable io_uring is one line and a usage error, not a half-started run.
pub fn unavailable() -> Option<String> {
    match IoUring::<squeue::Entry, cqueue::Entry>::new(8) {
        Ok(r) if r.params().is_feature_ext_arg() => None,
        Ok(_) => Some(
            "--engine uring needs io_uring's timed wait (IORING_FEAT_EXT_ARG, Linux 5.11): this kernel is older; use --engine epoll".into(),
        ),
        Err(e) => Some(format!(
            "--engine uring: io_uring is not available here (io_uring_setup: {e}): the kernel lacks it, or a seccomp filter or kernel.io_uring_disabled forbids it; use --engine epoll"
        )),
    }
}

impl Ring {
    /// io_uring_setup(2), sized for `connections` (each has at most a connect poll, a
    /// receive, a send and a cancel or two in flight).
    pub fn new(connections: usize) -> io::Result<Ring> {
        let sq = (connections * 2 + 64).next_power_of_two().clamp(256, 4096) as u32;
        let cq = (connections * 4 + 256)
            .next_power_of_two()
            .clamp(1024, 65536) as u32;
        // DEFER_TASKRUN (6.1): the kernel finishes our completions only when we enter to wait
        // for them, instead of interrupting the thread whenever a reply lands; it requires
        // SINGLE_ISSUER (only this thread submits, which is so). An older kernel refuses the
        // flags with EINVAL: then a plain ring.
        let deferred = IoUring::<squeue::Entry, cqueue::Entry>::builder()
            .setup_cqsize(cq)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(sq);
        let uring = match deferred {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                IoUring::<squeue::Entry, cqueue::Entry>::builder()
                    .setup_cqsize(cq)
                    .build(sq)?
            }
            Err(e) => return Err(e),
        };
        Ok(Ring {
            uring,
            in_flight: 0,
            orphans: HashMap::new(),
            enters: 0,
        })
    }

    /// Queues `entry`, submitting what is queued first if the queue is full.
    ///
    /// # Safety
    /// Whatever memory `entry` points to must stay where it is, valid and untouched by us,
    /// until the operation's completion is reaped (or it becomes an [`Orphan`]).
    unsafe fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        // SAFETY: the caller's promise, above.
        if unsafe { self.uring.submission().push(&entry) }.is_err() {
            self.submit()?;
            // SAFETY: as above.
            unsafe { self.uring.submission().push(&entry) }
                .map_err(|_| io::Error::other("the io_uring submission queue stays full"))?;
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Asks for a completion once `fd` is writable: a nonblocking connect has its outcome.
    pub fn poll_writable(&mut self, fd: RawFd, user_data: u64) -> io::Result<()> {
        let entry = opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32)
            .build()
            .user_data(user_data);
        // SAFETY: a poll lends the kernel no memory.
        unsafe { self.push(entry) }
    }

    /// Queues a receive of up to `len` bytes into `buf`.
    ///
    /// # Safety
    /// `buf..buf+len` must stay valid and untouched until the completion (see [`Orphan`]).
    pub unsafe fn recv(
        &mut self,
        fd: RawFd,
        buf: *mut u8,
        len: usize,
        user_data: u64,
    ) -> io::Result<()> {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let entry = opcode::Recv::new(types::Fd(fd), buf, len)
            .build()
            .user_data(user_data);
        // SAFETY: the caller's promise.
        unsafe { self.push(entry) }
    }

    /// Queues a send of `len` bytes from `buf`.
    ///
    /// # Safety
    /// `buf..buf+len` must stay valid and unchanged until the completion (see [`Orphan`]).
    pub unsafe fn send(
        &mut self,
        fd: RawFd,
        buf: *const u8,
        len: usize,
        user_data: u64,
    ) -> io::Result<()> {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        // MSG_NOSIGNAL: a peer that reset the connection is an EPIPE result, not a SIGPIPE.
        let entry = opcode::Send::new(types::Fd(fd), buf, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data);
        // SAFETY: the caller's promise.
        unsafe { self.push(entry) }
    }

    /// Cancels the operation tagged `user_data`; its buffer, if it has one, must be an
    /// orphan by now ([`Ring::orphan`]), since the cancel may lose the race with the data.
    pub fn cancel(&mut self, user_data: u64, conn: usize, gen: u32) -> io::Result<()> {
        let entry =
            opcode::AsyncCancel::new(user_data)
                .build()
                .user_data(tag(Op::Cancel, conn, gen));
        // SAFETY: a cancellation lends the kernel no memory.
        unsafe { self.push(entry) }
    }

    /// Keeps `buf` alive until the completion of the operation tagged `user_data`.
    pub fn orphan(&mut self, user_data: u64, buf: Orphan) {
        self.orphans.insert(user_data, buf);
    }

    /// io_uring_enter(2) without waiting.
    fn submit(&mut self) -> io::Result<()> {
        loop {
            self.enters += 1;
            match self.uring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Completions must be reaped before more can be submitted: the caller does.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Submits everything queued and sleeps until a completion or for `timeout`, in one
    /// io_uring_enter(2). Returns whether it slept the whole timeout without a completion.
    ///
    /// A zero timeout still enters to wait, not merely to submit: with DEFER_TASKRUN the
    /// kernel finishes completions only for an enter that asks for them, so a thread spinning
    /// towards a due send would otherwise see no reply until it next slept.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        self.enters += 1;
        match self.uring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(false),
            Err(e) => match e.raw_os_error() {
                Some(libc::ETIME) => Ok(true),
                // A signal (Ctrl-C: the run's flag is checked by the loop), or completions to
                // reap first.
                Some(libc::EINTR | libc::EBUSY) => Ok(false),
                _ => Err(e),
            },
        }
    }

    /// Moves every completion there is into `into`, except those of orphaned operations,
    /// whose buffers are freed here, and of cancellations.
    pub fn reap(&mut self, into: &mut Vec<Completion>) {
        for cqe in self.uring.completion() {
            self.in_flight = self.in_flight.saturating_sub(1);
            let user_data = cqe.user_data();
            // Orphans are rare (a close with operations in flight): no hashing per completion
            // while there are none.
            if !self.orphans.is_empty() && self.orphans.remove(&user_data).is_some() {
                continue;
            }
            into.push(Completion {
                user_data,
                result: cqe.result(),
            });
        }
    }
}

/// How long a finished worker waits for the kernel to give back what it still holds.
const RELEASE_WAIT: Duration = Duration::from_secs(1);

impl Drop for Ring {
    /// The engine has closed every connection by now, so each operation still in flight has
    /// been cancelled and its buffer is an orphan. Wait (briefly) for their completions: only
    /// then may the orphans be freed. Whatever is still held after that is leaked on purpose,
    /// since freeing memory the kernel may yet write into would corrupt the heap.
    fn drop(&mut self) {
        let until = Instant::now() + RELEASE_WAIT;
        let mut sink = Vec::new();
        while self.in_flight > 0 {
            let now = Instant::now();
            if now >= until {
                break;
            }
            if self.wait(until - now).is_err() {
                break;
            }
            self.reap(&mut sink);
            sink.clear();
        }
        if self.in_flight > 0 {
            for (_, orphan) in self.orphans.drain() {
                std::mem::forget(orphan);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_carries_the_op_the_connection_and_the_generation() {
        for op in [Op::Connect, Op::Recv, Op::Send, Op::Cancel] {
            for (conn, gen) in [
                (0, 0),
                (7, 1),
                (u32::MAX as usize, GEN_MASK),
                (3, GEN_MASK + 5),
            ] {
                assert_eq!(untag(tag(op, conn, gen)), Some((op, conn, gen & GEN_MASK)));
            }
        }
        assert_eq!(untag(0), None, "a user_data of no op is none of ours");
    }
}
