//! server-uring: one process, one thread, one io_uring ring, every client. No readiness at
//! all: the loop *submits* accepts, receives and sends, and the kernel *completes* them.
//!
//! The event loop asks "which sockets are ready?" and then makes the system calls itself (read
//! until `EAGAIN`, write until `EAGAIN`). This loop asks for the work instead, "accept on this
//! listener", "receive on this socket", "send these bytes", by writing entries into a
//! submission queue it shares with the kernel, and learns what became of each from a
//! completion queue: a new descriptor, bytes received, bytes sent. One io_uring_enter(2) hands
//! the kernel every entry queued since the last one *and* sleeps until something completes, so
//! a busy loop makes one system call per batch rather than several per connection. This is the
//! shape of tokio-uring, glommio, Seastar's and Netty's io_uring backends.
//!
//! Lifecycle:
//! - The loop owns everything: the ring, the listener, the signal self-pipe, every connection.
//!   Three operations are always in the kernel's hands: a multishot accept on the listener (one
//!   submission, a completion per connection), a poll of the self-pipe, and a 100 ms timeout
//!   (the housekeeping tick). The loop sleeps in io_uring_enter until one of them, or any
//!   connection's operation, completes.
//! - An accept completes with a new descriptor. Past `--max-connections` the client is told
//!   "server busy" and closed; out of descriptors the accept fails, and `net::Acceptor` sheds
//!   with its spare descriptor as in the event loop. Otherwise the connection gets a slot and
//!   one multishot receive, armed once for as long as it reads.
//! - A receive completes with bytes, in a buffer the kernel took from a ring of provided
//!   buffers that every connection shares: they are copied to the connection's read buffer, the
//!   buffer goes back to the ring, every complete request is answered (the same
//!   `conn::answer_all` as every model), and the replies go out in one submitted send. One send
//!   per connection is in flight at a time; replies made meanwhile wait in the output buffer.
//!   While more than `--max-pending-output` bytes wait, the receive is cancelled
//!   (backpressure), and armed again once the client has taken enough.
//! - A connection ends on EOF, a fatal protocol error (after its reply is sent), the idle,
//!   request or write timeout (checked on the tick), or shutdown: its operations are cancelled,
//!   and its slot, with every buffer the kernel may still be using, is freed only when the last
//!   of them has completed. Then the socket is closed.
//! - SIGINT/SIGTERM: cancel the accept and every receive, answer what each client had
//!   already sent (what the receives' last completions bring, then what is still in the
//!   socket), send what is pending, close; exit after the last connection or `--grace`.
//!
//! What differs from the event loop is who holds memory, and for how long. A readiness loop
//! never lends the kernel a byte: each `read` and `write` is over when the call returns. Here:
//! - **A send's bytes are the kernel's until the send completes.** The kernel reads them
//!   whenever the socket has room, long after the submission, so they live in the connection's
//!   `Outgoing` buffer, which nothing appends to, moves or frees until that completion; new
//!   replies wait in the output buffer meanwhile, and go out in the next send.
//! - **A provided buffer comes back to the ring only when we give it back.** The kernel picks
//!   one per receive and hands it to us in the completion; one we kept would be one fewer for
//!   every connection, and with all of them kept, every receive fails with `ENOBUFS`. So each
//!   is copied out and given back at once.
//! - **A completion can arrive for a connection already closed.** Closing asks the kernel to
//!   cancel the connection's operations, and it answers in its own time: a receive that raced
//!   the cancel still completes, with bytes, in a buffer that must still go back. So each
//!   operation's user_data names its connection's slot *and* the slot's generation, bumped on
//!   every reuse, and a slot is neither reused nor freed until every operation of it has
//!   completed: a late completion finds either its own closed connection or nothing.
//!
//! # Run it
//! ```text
//! cargo run --release --bin server-uring -- --addr 127.0.0.1:7000
//! cargo run --release --bin server-uring -- --addr 127.0.0.1:7000 --recv single
//! ```
//!
//! # Trade-offs
//! Everything the event loop's one thread teaches holds here too: a SLEEP request blocks the
//! loop, and every client waits for it. What changes is the cost per request: no readiness
//! call, a receive armed once per connection instead of a `read` per turn, and sends and
//! receives of many connections submitted and reaped in one system call. The price is the
//! ownership rules above, which the compiler cannot check (every `push` is `unsafe`), and
//! memory that is fixed rather than per connection: the provided-buffer ring, 2 MiB here,
//! serves every connection's receives. Each received chunk is copied into the connection's
//! read buffer; a production server would parse in place and copy only a partial frame's
//! tail. And io_uring is often not there: container runtimes' default seccomp profiles refuse
//! it, and `kernel.io_uring_disabled` turns it off; this server then says so in one line and
//! exits 2, as for a bad flag, and `server-eventloop` is the model to run instead.
//!
//! # See also
//! `docs/models/uring.md`, and `docs/models/eventloop.md`, the readiness loop it is measured
//! against.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use echolab_protocol::{Codec, Protocol, ReadBuffer, ServerCodecs};
use echolab_servers::cli::ServerArgs;
use echolab_servers::conn::{self, Agreed, Ended, Limits, Outcome, Tally};
use echolab_servers::eventloop::LoopArgs;
use echolab_servers::net::{self, Acceptor};
use echolab_servers::outbuf::OutBuf;
use echolab_servers::session::Store;
use echolab_servers::signals::SignalPipe;
use echolab_servers::stats::{Counters, Report, SharedCounters};
use echolab_servers::READ_CHUNK;
use echolab_servers::{debug, info};
use io_uring::types::{BufRingEntry, Fd, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use nix::errno::Errno;
use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
use nix::sys::socket::{recv, MsgFlags};

/// One thread, one io_uring ring: accept, receive and send submitted to the kernel.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "echolab server: one thread, one io_uring ring (accept, receive and send submitted to the kernel)",
    next_line_help = true
)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,

    /// How connections receive: multishot (armed once, into shared provided buffers) or single.
    ///
    /// multishot: one receive per connection, armed once, each completion in a buffer the
    /// kernel takes from a ring of provided buffers shared by every connection (Linux 6.0).
    /// single: one receive at a time into the connection's own read buffer, armed again after
    /// each completion, which is what a kernel without multishot receives gets (the server
    /// falls back to it by itself, and says so).
    #[arg(long, value_enum, default_value_t = RecvMode::Multishot)]
    recv: RecvMode,

    // `--max-pending-output` and `--write-budget`, as the event loop takes them. Here the
    // write budget is the most one submitted send carries.
    #[command(flatten)]
    event_loop: LoopArgs,
}

/// `--recv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RecvMode {
    /// One multishot receive per connection, into the provided-buffer ring.
    Multishot,
    /// One receive at a time, into the connection's own read buffer.
    Single,
}

/// What clap exits with for a bad flag, and so every server for a bad command line: this one
/// also for a machine that will not give it a ring, a setting of the machine's like the flags
/// are of the command line, which no retry fixes.
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    let args: Args = echolab_servers::parse_args(|a: &Args| &a.server);
    // The ring before anything else, so that a kernel that has none (ENOSYS), or a seccomp
    // filter or kernel.io_uring_disabled that forbids it (EPERM), gets one clear line and
    // nothing half set up.
    let ring = match Ring::new() {
        Ok(ring) => ring,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOSYS | libc::EPERM | libc::EACCES)
            ) =>
        {
            eprintln!(
                "server-uring: io_uring is not available here (io_uring_setup: {e}): the kernel lacks it, or a seccomp filter or kernel.io_uring_disabled forbids it; run server-eventloop instead"
            );
            return ExitCode::from(USAGE_ERROR);
        }
        Err(e) => {
            let e = io::Error::new(e.kind(), format!("io_uring_setup: {e}"));
            return echolab_servers::main_with(
                "server-uring",
                args.server.process_settings(),
                || Err(e),
            );
        }
    };
    echolab_servers::main_with("server-uring", args.server.process_settings(), || {
        run(args, ring)
    })
}

fn run(args: Args, ring: Ring) -> io::Result<()> {
    let started = Instant::now();
    let cfg = &args.server;
    let signals = SignalPipe::install(false)?;
    let store = Store::new(cfg.sessions())?;
    // One slot, the totals: the loop is the whole server.
    let counters = SharedCounters::new(1)?;
    // With a spare descriptor: out of descriptors, the loop sheds clients rather than pause.
    let acceptor = Acceptor::with_spare(net::bind(cfg.addr, cfg.backlog, false)?)?;
    // The acceptor made the listener nonblocking, for its own accept(2) to stop at EAGAIN.
    // The ring's accept must see it blocking: on an O_NONBLOCK listener the kernel (since
    // 5.8) completes it with EAGAIN when no client waits, instead of waiting for one, and the
    // loop would go round for nothing. It is nonblocking again only while the acceptor's own
    // accept runs (`accept_backlog`).
    acceptor.listener().set_nonblocking(false)?;
    let addr = acceptor.local_addr()?;
    let settings = Settings {
        codecs: cfg.protocol.codecs(cfg.max_frame),
        limits: cfg.limits(),
        max_pending_output: args.event_loop.max_pending_output,
        write_budget: match args.event_loop.write_budget {
            0 => usize::MAX,
            n => n,
        },
        max_connections: cfg.max_connections as usize,
        grace: cfg.grace,
    };

    // The loop owns everything from here. The accept, the self-pipe's poll and the tick are
    // submitted now, so `listening on` is true when printed.
    let mut server = Uring::new(
        ring, args.recv, settings, &store, &counters, &signals, acceptor,
    )?;
    net::announce(addr)?;
    info!("io_uring: {} receives", server.recv_mode());

    // Serve until SIGINT/SIGTERM, then stop accepting, finish, and close every connection.
    server.serve()?;
    let recv = server.recv_mode();
    let (enters, completions) = (server.ring.enters, server.ring.completions);
    drop(server);

    // Every connection is closed: the statistics.
    let mut report = Report::new(
        "server-uring",
        format!("uring/{recv}"),
        cfg.protocol.name(),
        started,
        &counters,
    )
    .with_sessions(&store);
    report.extra.insert("recv".into(), recv.into());
    if recv == "multishot" {
        report
            .extra
            .insert("provided_buffers".into(), BUF_COUNT.into());
    }
    // The model's figure of merit: how many completions each system call brought back.
    report
        .extra
        .insert("io_uring_enter_waits".into(), enters.into());
    report
        .extra
        .insert("completions".into(), completions.into());
    report.emit(cfg.stats_file.as_deref());
    Ok(())
}

/// Everything the loop needs to know from the command line, the same for every connection.
#[derive(Debug)]
struct Settings {
    codecs: ServerCodecs,
    limits: Limits,
    max_pending_output: usize,
    /// `--write-budget`, with 0 made "no limit": the most one send carries.
    write_budget: usize,
    max_connections: usize,
    grace: Duration,
}

/// How often the tick completes, to enforce the idle, request and write timeouts: as often as
/// the event loop's. A static, because the kernel reads the timeout from our memory.
static TICK: Timespec = Timespec::new().nsec(100_000_000);

/// How long, after `--grace`, the loop waits for the kernel to give back what it holds of the
/// connections it was told to cancel, before it leaks their buffers rather than free them.
const RELEASE_WAIT: Duration = Duration::from_secs(1);

/// At shutdown, the most read from one connection's socket, synchronously, to answer what the
/// client had already sent: the event loop's read budget for one turn.
const READ_BUDGET: usize = 64 * 1024;

/// The loop: one ring, the listener, and every connection.
///
/// **Field order matters**: fields are dropped in declaration order, and `ring` comes first,
/// so the kernel's reference to the provided buffers (`bufs`) and to the connections' buffers
/// (`slots`) goes before the memory does.
struct Uring<'a> {
    ring: Ring,
    /// The provided-buffer ring of the multishot receives; `None` where the kernel has none.
    bufs: Option<BufRing>,
    /// Whether receives are multishot (false: `--recv single`, or a kernel that refused them).
    multishot: bool,
    slots: Slab,
    /// Connections open (slots whose connection is not yet closed): what
    /// `--max-connections` limits.
    live: usize,
    settings: Settings,
    store: &'a Store,
    counters: &'a SharedCounters,
    signals: &'a SignalPipe,
    /// The listener, until shutdown closes it.
    acceptor: Option<Acceptor>,
    /// Whether an accept is in the kernel's hands.
    accepting: bool,
    /// Whether accepts are multishot (false on a kernel before 5.19: one accept at a time).
    multishot_accept: bool,
    /// Set by SIGINT/SIGTERM: when `--grace` runs out.
    shutdown_deadline: Option<Instant>,
    /// Set once the grace period ran out and every connection was told to close.
    forced: bool,
    /// Completions reaped and not yet handled (kept to reuse its memory).
    batch: Vec<cqueue::Entry>,
}

impl<'a> Uring<'a> {
    /// Registers the provided buffers (where the kernel can, and `--recv` asks for them) and
    /// submits the tick, the self-pipe's poll and the accept.
    fn new(
        ring: Ring,
        recv: RecvMode,
        settings: Settings,
        store: &'a Store,
        counters: &'a SharedCounters,
        signals: &'a SignalPipe,
        acceptor: Acceptor,
    ) -> io::Result<Uring<'a>> {
        let bufs = match recv {
            RecvMode::Single => None,
            RecvMode::Multishot => match BufRing::register(&ring.uring) {
                Ok(bufs) => Some(bufs),
                // io_uring_register(2) with a command it does not know: EINVAL, before 5.19.
                Err(e) => {
                    info!("no provided-buffer rings here ({e}): single receives instead");
                    None
                }
            },
        };
        let mut server = Uring {
            ring,
            multishot: bufs.is_some(),
            bufs,
            slots: Slab::default(),
            live: 0,
            settings,
            store,
            counters,
            signals,
            acceptor: Some(acceptor),
            accepting: false,
            multishot_accept: true,
            shutdown_deadline: None,
            forced: false,
            batch: Vec::with_capacity(1024),
        };
        server.arm_tick()?;
        server.arm_signals()?;
        server.arm_accept()?;
        server.ring.submit()?;
        Ok(server)
    }

    fn recv_mode(&self) -> &'static str {
        if self.multishot {
            "multishot"
        } else {
            "single"
        }
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully: returns once the last
    /// connection has closed, or at `--grace`.
    fn serve(&mut self) -> io::Result<()> {
        // The loop: submit what was queued and sleep until at least one completion, then handle
        // every completion there is. Handling one queues more submissions (a send for the
        // replies, a receive armed again, the next tick), which the next turn's wait submits.
        loop {
            self.ring.wait()?;
            let mut batch = std::mem::take(&mut self.batch);
            self.ring.reap(&mut batch);
            for cqe in batch.drain(..) {
                self.complete(&cqe)?;
            }
            self.batch = batch;

            // Shutting down: done once the last connection has closed, or at `--grace`.
            if let Some(deadline) = self.shutdown_deadline {
                if self.slots.is_empty() {
                    return Ok(());
                }
                let now = Instant::now();
                if now >= deadline && !self.forced {
                    info!(
                        "{} connections still sending after the grace period; closing them",
                        self.live
                    );
                    self.forced = true;
                    for key in self.slots.keys() {
                        self.close(key, None);
                    }
                }
                if now >= deadline + RELEASE_WAIT {
                    self.leak_what_the_kernel_holds();
                    return Ok(());
                }
            }
        }
    }

    /// Hands one completion to whoever submitted its operation, as its user_data says.
    fn complete(&mut self, cqe: &cqueue::Entry) -> io::Result<()> {
        let (op, key) = untag(cqe.user_data());
        let (result, flags) = (cqe.result(), cqe.flags());
        match op {
            Some(Op::Tick) => self.on_tick()?,
            Some(Op::Signals) => self.on_signals()?,
            Some(Op::Accept) => self.on_accept(result, flags)?,
            Some(Op::Recv) => self.on_recv(key, result, flags),
            Some(Op::Send) => self.on_send(key, result),
            // A cancellation's own result (done, already finished, or under way) says nothing
            // the cancelled operation's completion will not say.
            Some(Op::Cancel) | None => {}
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Accepting

impl Uring<'_> {
    /// Submits the accept: multishot (a completion per connection, for as long as it is not
    /// cancelled and does not fail), or one accept at a time on a kernel before 5.19.
    fn arm_accept(&mut self) -> io::Result<()> {
        let Some(a) = &self.acceptor else {
            return Ok(());
        };
        if self.accepting || a.is_paused() || self.shutdown_deadline.is_some() {
            return Ok(());
        }
        let listener = Fd(a.listener().as_raw_fd());
        // SOCK_CLOEXEC, as std's accept does. Not SOCK_NONBLOCK: the ring waits for the socket
        // itself, and on a nonblocking socket a send the kernel hands to a worker thread would
        // fail with EAGAIN instead of waiting.
        let entry = if self.multishot_accept {
            opcode::AcceptMulti::new(listener)
                .flags(libc::SOCK_CLOEXEC)
                .build()
        } else {
            opcode::Accept::new(listener, std::ptr::null_mut(), std::ptr::null_mut())
                .flags(libc::SOCK_CLOEXEC)
                .build()
        };
        // SAFETY: an accept lends the kernel no memory of ours (no address buffer is given).
        // Its descriptor may even close before the completion: the kernel holds its own
        // reference to the socket until then.
        unsafe { self.ring.push(&entry.user_data(tag(Op::Accept, LOOP))) }?;
        self.accepting = true;
        Ok(())
    }

    /// An accept completed: a new connection's descriptor, or why there is none.
    fn on_accept(&mut self, result: i32, flags: u32) -> io::Result<()> {
        // Without MORE, this was the accept's last completion: it must be submitted again.
        if !cqueue::more(flags) {
            self.accepting = false;
        }
        if result >= 0 {
            // SAFETY: the kernel has just installed this descriptor in our table for us: it is
            // open, and nothing else owns it.
            let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(result) });
            if self.acceptor.is_none() {
                // Shutdown began after the kernel accepted it and before the cancel reached
                // the accept: closed unserved, as if it had still been in the backlog.
                drop(stream);
            } else {
                self.admit(stream);
            }
        } else {
            match -result {
                libc::ECANCELED => {}
                libc::EINVAL if self.multishot_accept => {
                    info!("no multishot accept here (before Linux 5.19): one accept at a time");
                    self.multishot_accept = false;
                }
                // The listener itself is unusable: accepting again would fail the same way.
                errno @ (libc::EINVAL | libc::EBADF | libc::ENOTSOCK | libc::EOPNOTSUPP) => {
                    return Err(io::Error::from_raw_os_error(errno));
                }
                // Out of descriptors or memory, or a client that gave up while queued: the
                // library's acceptor knows what accept(2) failing means, once for every model
                // (shed with the spare descriptor on EMFILE, pause on ENOBUFS): let it accept
                // what is queued, synchronously, then arm the ring's accept again.
                _ => self.accept_backlog(),
            }
        }
        self.arm_accept()
    }

    /// Accepts what is queued with accept(2) itself, through [`Acceptor::accept_or_shed`],
    /// until the queue is empty or accepting is paused: with the listener nonblocking for the
    /// time it takes, so that an empty queue returns EAGAIN rather than block the loop.
    fn accept_backlog(&mut self) {
        let Some(a) = &self.acceptor else {
            return;
        };
        // fcntl(2) cannot fail on an open socket; if it did, accepting waits for the tick.
        if a.listener().set_nonblocking(true).is_err() {
            return;
        }
        self.accept_queued();
        if let Some(a) = &self.acceptor {
            let _ = a.listener().set_nonblocking(false);
        }
    }

    fn accept_queued(&mut self) {
        loop {
            let (counters, codecs) = (self.counters, &self.settings.codecs);
            let Some(a) = self.acceptor.as_mut() else {
                return;
            };
            let mut shed = 0;
            let next = a.accept_or_shed(|stream, peer| {
                shed += 1;
                conn::refuse(
                    stream,
                    codecs,
                    counters.total(),
                    peer,
                    "out of file descriptors",
                );
            });
            for _ in 0..shed {
                Counters::bump(&counters.total().accepted);
            }
            let Some((stream, _)) = next else {
                return;
            };
            self.admit(stream);
        }
    }

    /// A new connection: refused past `--max-connections`, else given a slot and a receive.
    fn admit(&mut self, stream: TcpStream) {
        let counters = self.counters.total();
        Counters::bump(&counters.accepted);
        // Multishot accept gives no address (one buffer would serve every connection): ask.
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        if self.live >= self.settings.max_connections {
            let codecs = &self.settings.codecs;
            conn::refuse(stream, codecs, counters, peer, "max-connections reached");
            return;
        }
        // Replies are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let key = match self.slots.insert(Connection::new(stream, peer)) {
            Ok(key) => key,
            Err(c) => {
                let codecs = &self.settings.codecs;
                conn::refuse(c.stream, codecs, counters, peer, "no slot left");
                return;
            }
        };
        self.live += 1;
        debug!("{peer}: accepted into slot {}", key.index);
        self.update(key);
    }
}

// ---------------------------------------------------------------------------------------------
// Receiving

/// Submits a connection's receive: multishot into the provided buffers, or one receive into
/// its own read buffer.
fn arm_recv(ring: &mut Ring, multishot: bool, c: &mut Connection, key: Key) -> io::Result<()> {
    let fd = Fd(c.stream.as_raw_fd());
    let user_data = tag(Op::Recv, key);
    if multishot {
        let entry = opcode::RecvMulti::new(fd, BUFFER_GROUP)
            .build()
            .user_data(user_data);
        // SAFETY: the kernel writes only into the provided buffers, which it took from the
        // buffer ring and which the loop owns for longer than the ring exists (see `Uring`'s
        // field order). Each completion lends us one, and the kernel does not touch it again
        // until we give it back to the ring.
        unsafe { ring.push(&entry) }?;
        c.lent = 0;
    } else {
        let spare = c.input.spare(READ_CHUNK);
        let len = u32::try_from(spare.len()).unwrap_or(u32::MAX);
        let entry = opcode::Recv::new(fd, spare.as_mut_ptr(), len)
            .build()
            .user_data(user_data);
        // SAFETY: the kernel writes up to `len` bytes at `spare`, the free end of the
        // connection's read buffer, until the receive completes. Until then nothing touches
        // that buffer (requests are answered only from a completed receive), and the slot,
        // with the buffer, is freed only after the completion. The slab growing moves the
        // `Connection`, never the buffer's heap block.
        unsafe { ring.push(&entry) }?;
        c.lent = len as usize;
    }
    c.recv = Receiving::Armed;
    Ok(())
}

impl Uring<'_> {
    /// A receive completed: bytes, EOF, or an error. The provided buffer it came in, if any,
    /// goes back to the ring whatever became of the connection.
    fn on_recv(&mut self, key: Key, result: i32, flags: u32) {
        let bid = cqueue::buffer_select(flags);
        self.received(key, result, cqueue::more(flags), bid);
        if let (Some(bid), Some(bufs)) = (bid, self.bufs.as_mut()) {
            bufs.give_back(bid);
        }
        self.update(key);
    }

    fn received(&mut self, key: Key, result: i32, more: bool, bid: Option<u16>) {
        let Some(c) = self.slots.get_mut(key) else {
            return; // cannot happen while slots wait for their operations; and harmless
        };
        // Without MORE, this was the receive's last completion.
        if !more {
            c.recv = Receiving::Off;
        }
        if c.closed {
            return; // a completion that raced the cancel: its buffer goes back all the same
        }
        let handled = match result {
            n if n > 0 => {
                let n = n as usize;
                let copied = match bid {
                    Some(bid) => match self.bufs.as_ref().and_then(|b| b.get(bid, n)) {
                        Some(bytes) => {
                            c.input.extend_from_slice(bytes);
                            true
                        }
                        None => false,
                    },
                    // Into the connection's own buffer, which said how much room it lent.
                    None if n <= c.lent => {
                        c.input.filled(n);
                        true
                    }
                    None => false,
                };
                if !copied {
                    Err(Ended::Failed(io::Error::other(
                        "a receive completed with more bytes than it was given room for",
                    )))
                } else if c.takes_input() {
                    answer(&mut self.ring, c, key, &self.settings, self.store)
                } else {
                    Ok(()) // after EOF or a fatal error: nothing more is read
                }
            }
            0 => {
                if c.finishing.is_none() {
                    c.finishing = Some(if c.input.is_empty() {
                        Ended::PeerClosed
                    } else {
                        Ended::PeerClosedMidRequest
                    });
                }
                Ok(())
            }
            error => match -error {
                // Cancelled by us (backpressure, closing, shutdown), or nothing after all:
                // `update` arms it again if it should be.
                libc::ECANCELED | libc::EAGAIN | libc::EINTR => Ok(()),
                // Every provided buffer was in use: the receive ended, and is armed again
                // once this batch's buffers are back.
                libc::ENOBUFS => {
                    debug!("{}: out of provided buffers", c.peer);
                    Ok(())
                }
                libc::EINVAL if self.multishot => {
                    info!("no multishot receives here (before Linux 6.0): single receives");
                    self.multishot = false;
                    Ok(())
                }
                errno => Err(Ended::Failed(io::Error::from_raw_os_error(errno))),
            },
        };
        if let Err(ended) = handled {
            self.close(key, Some(ended));
            return;
        }
        // Shutting down, and the receive has ended (cancelled): what the client sent before
        // the cancel may still sit in the socket. Answer it, as the event loop's last turn
        // does; then the connection finishes, once its replies are out.
        if !more && self.shutdown_deadline.is_some() {
            if c.takes_input() {
                if let Err(ended) = drain_now(&mut self.ring, c, key, &self.settings, self.store) {
                    self.close(key, Some(ended));
                    return;
                }
            }
            c.finishing.get_or_insert(Ended::Shutdown);
        }
    }
}

/// Answers every complete request in the connection's read buffer with the same
/// [`conn::answer_all`] as every model. Replies made before a slow request (SLEEP, SPIN, pi)
/// are handed to the kernel first, so they do not wait for it. `Err` means: close now.
fn answer(
    ring: &mut Ring,
    c: &mut Connection,
    key: Key,
    settings: &Settings,
    store: &Store,
) -> Result<(), Ended> {
    // Chosen on the first bytes, looked up (one match) on the later ones.
    let Some(codec) = c.codec(&settings.codecs) else {
        return Ok(());
    };
    let nothing_was_waiting = c.pending() == 0;
    let fd = c.stream.as_raw_fd();
    let outgoing = &mut c.outgoing;
    let before_slow = |output: &mut OutBuf| -> Result<(), Ended> {
        if outgoing.state == Sending::Idle {
            // Submitted now, not at the next wait: the SLEEP is about to hold this thread.
            outgoing
                .start(ring, fd, output, key, settings.write_budget)
                .and_then(|_| ring.submit())
                .map_err(Ended::Failed)?;
        }
        Ok(())
    };
    // A SLEEP here blocks the whole loop, and every other client waits: as in the event loop.
    let answered = conn::answer_all(
        codec,
        store,
        &mut c.agreed,
        &mut c.input,
        &mut c.output,
        &mut c.tally,
        before_slow,
    )?;
    let (last, partial) = (&mut c.last_request, &mut c.partial_since);
    if let Some(ended) = conn::after_answering(answered, &c.input, last, partial) {
        c.finishing = Some(ended);
    }
    // The write timeout counts from when output starts waiting.
    if nothing_was_waiting && c.pending() > 0 {
        c.outgoing.last_write = Instant::now();
    }
    Ok(())
}

/// At shutdown, once a connection's receive is over: reads what has already arrived in the
/// socket, without waiting, and answers it (at most [`READ_BUDGET`], and not past
/// backpressure, like the event loop's last turn).
fn drain_now(
    ring: &mut Ring,
    c: &mut Connection,
    key: Key,
    settings: &Settings,
    store: &Store,
) -> Result<(), Ended> {
    let fd = c.stream.as_raw_fd();
    let mut budget = READ_BUDGET;
    while budget > 0 && c.pending() < settings.max_pending_output {
        // recv(2) with MSG_DONTWAIT: what has arrived, on a socket the ring wants blocking.
        match recv(fd, c.input.spare(READ_CHUNK), MsgFlags::MSG_DONTWAIT) {
            Ok(0) => break,
            Ok(n) => {
                c.input.filled(n);
                budget = budget.saturating_sub(n);
                answer(ring, c, key, settings, store)?;
            }
            // EINTR: a signal came first and nothing was read; again.
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => break,
            Err(e) => return Err(Ended::Failed(e.into())),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Sending

impl Outgoing {
    /// Lends the kernel the next bytes to send: the rest of the last send's buffer, or, once
    /// that is all sent, up to `budget` bytes moved out of `output`. Returns whether a send
    /// was submitted (false: nothing to send).
    fn start(
        &mut self,
        ring: &mut Ring,
        fd: RawFd,
        output: &mut OutBuf,
        key: Key,
        budget: usize,
    ) -> io::Result<bool> {
        if self.sent == self.bytes.len() {
            self.bytes.clear();
            self.sent = 0;
            // A burst of large replies does not pin its memory (OutBuf's own policy).
            self.bytes.shrink_to(OutBuf::KEEP);
            // A Vec takes every byte it is given, so this moves min(pending, budget) bytes.
            output.write_to(&mut self.bytes, budget)?;
        }
        let rest = &self.bytes[self.sent..];
        if rest.is_empty() {
            return Ok(false);
        }
        let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        // MSG_NOSIGNAL: a client gone sends EPIPE to this send, not SIGPIPE to the process.
        let entry = opcode::Send::new(Fd(fd), rest.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(tag(Op::Send, key));
        // SAFETY: the kernel reads `len` bytes at `rest` until the send completes, maybe long
        // after this call. They are `self.bytes`, which nothing appends to, clears, shrinks or
        // frees while `state` is not `Idle`: replies wait in `output` meanwhile, and the slot
        // holding this buffer is freed only after the completion. The slab growing moves the
        // `Outgoing`, never the vector's heap block.
        unsafe { ring.push(&entry) }?;
        self.state = Sending::InFlight;
        Ok(true)
    }
}

impl Uring<'_> {
    /// A send completed: the kernel took some bytes (perhaps fewer than asked: the rest goes
    /// in the next send), or it failed.
    fn on_send(&mut self, key: Key, result: i32) {
        let Some(c) = self.slots.get_mut(key) else {
            return;
        };
        c.outgoing.state = Sending::Idle;
        if !c.closed {
            if result > 0 {
                let out = &mut c.outgoing;
                out.sent = (out.sent + result as usize).min(out.bytes.len());
                out.last_write = Instant::now();
            } else {
                let failed = match -result {
                    0 => Some(io::Error::from(io::ErrorKind::WriteZero)),
                    // `update` sends the rest again.
                    libc::ECANCELED | libc::EAGAIN | libc::EINTR => None,
                    // EPIPE, ECONNRESET: the client is gone.
                    errno => Some(io::Error::from_raw_os_error(errno)),
                };
                if let Some(e) = failed {
                    self.close(key, Some(Ended::Failed(e)));
                    return;
                }
            }
        }
        self.update(key);
    }

    /// After anything happened to a connection: send what waits, close it once it is finished
    /// and everything is sent, and arm or cancel its receive as backpressure and shutdown say.
    /// The event loop's `rewatch`, with submissions where it has interests.
    fn update(&mut self, key: Key) {
        let Some(c) = self.slots.get_mut(key) else {
            return;
        };
        if c.closed {
            self.release_if_done(key);
            return;
        }
        if c.outgoing.state == Sending::Idle && c.pending() > 0 {
            let fd = c.stream.as_raw_fd();
            let budget = self.settings.write_budget;
            if let Err(e) = c
                .outgoing
                .start(&mut self.ring, fd, &mut c.output, key, budget)
            {
                self.close(key, Some(Ended::Failed(e)));
                return;
            }
        }
        if c.finishing.is_some() && c.pending() == 0 && c.outgoing.state == Sending::Idle {
            let ended = c.finishing.take();
            self.close(key, ended);
            return;
        }
        // Receive while nothing says stop: not after EOF, a fatal error or shutdown, and not
        // while the client has more than --max-pending-output bytes of replies to take.
        let shutting_down = self.shutdown_deadline.is_some();
        let wanted = c.finishing.is_none()
            && !shutting_down
            && c.pending() < self.settings.max_pending_output;
        let submitted = match (wanted, c.recv) {
            (true, Receiving::Off) => {
                if c.throttled {
                    // The pause was ours: a partial request's deadline starts again.
                    c.throttled = false;
                    c.partial_since = c.partial_since.map(|_| Instant::now());
                }
                arm_recv(&mut self.ring, self.multishot, c, key)
            }
            (false, Receiving::Armed) => {
                c.throttled = c.finishing.is_none() && !shutting_down;
                c.recv = Receiving::Cancelling;
                cancel(&mut self.ring, Op::Recv, key)
            }
            _ => Ok(()),
        };
        if let Err(e) = submitted {
            self.close(key, Some(Ended::Failed(e)));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Closing

/// Asks the kernel to cancel a connection's receive or send. It answers with the operation's
/// own completion (`ECANCELED`, or whatever it finished with first).
fn cancel(ring: &mut Ring, op: Op, key: Key) -> io::Result<()> {
    let entry = opcode::AsyncCancel::new(tag(op, key))
        .build()
        .user_data(tag(Op::Cancel, key));
    // SAFETY: a cancellation lends the kernel no memory: it names its target by user_data.
    unsafe { ring.push(&entry) }
}

impl Uring<'_> {
    /// Ends a connection: counts it, and asks for every operation of it back. The slot (the
    /// socket and the buffers) is released when the last one has completed.
    fn close(&mut self, key: Key, why: Option<Ended>) {
        let Some(c) = self.slots.get_mut(key) else {
            return;
        };
        if c.closed {
            return;
        }
        c.closed = true;
        self.live -= 1;
        let outcome = Outcome {
            ended: why.unwrap_or(Ended::Shutdown),
            tally: c.tally,
        };
        conn::record_end(&outcome, &[self.counters.total()], c.peer);
        // A cancellation that cannot even be queued (a broken ring) leaves the operation to
        // end on its own; the slot waits for it all the same, at worst until shutdown leaks it.
        if c.recv == Receiving::Armed && cancel(&mut self.ring, Op::Recv, key).is_ok() {
            c.recv = Receiving::Cancelling;
        }
        if c.outgoing.state == Sending::InFlight && cancel(&mut self.ring, Op::Send, key).is_ok() {
            c.outgoing.state = Sending::Cancelling;
        }
        self.release_if_done(key);
    }

    /// Frees a closed connection's slot once no operation of it is in the kernel's hands:
    /// closes the socket without resetting what was sent, and drops its buffers.
    fn release_if_done(&mut self, key: Key) {
        let done = self.slots.get_mut(key).is_some_and(|c| {
            c.closed && c.recv == Receiving::Off && c.outgoing.state == Sending::Idle
        });
        if done {
            if let Some(c) = self.slots.remove(key) {
                // Dropping the stream afterwards closes the descriptor.
                conn::close_gently(&c.stream);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tick: timeouts, and the end of an accept pause

impl Uring<'_> {
    fn arm_tick(&mut self) -> io::Result<()> {
        let entry = opcode::Timeout::new(&TICK)
            .build()
            .user_data(tag(Op::Tick, LOOP));
        // SAFETY: the kernel reads the timespec while the entry is submitted; it is a static.
        unsafe { self.ring.push(&entry) }
    }

    /// Every 100 ms: the timeouts, an accept pause that is over, and the next tick.
    fn on_tick(&mut self) -> io::Result<()> {
        self.enforce_timeouts();
        if self.acceptor.as_mut().is_some_and(Acceptor::resume_if_due) {
            // Accept what queued up during the pause, then arm the ring's accept again.
            self.accept_backlog();
        }
        self.arm_accept()?;
        self.arm_tick()
    }

    /// Closes connections idle past `--idle-timeout` (with nothing left to send: a client
    /// slowly taking a large reply is not idle) or whose client has taken no output for
    /// `--write-timeout`, and answers "request timeout" to a request that has been arriving for
    /// longer than `--request-timeout` (closed once that reply is out). The event loop's rules,
    /// word for word; O(connections), ten times a second.
    fn enforce_timeouts(&mut self) {
        let limits = self.settings.limits;
        let max_pending = self.settings.max_pending_output;
        let mut expired = Vec::new();
        let mut too_slow = Vec::new();
        for (key, c) in self.slots.iter() {
            if c.closed {
                continue;
            }
            let pending = c.pending();
            if pending > 0 && c.outgoing.last_write.elapsed() >= limits.write_timeout {
                expired.push((key, Ended::WriteTimeout));
            } else if c.finishing.is_none()
                && pending == 0
                && c.last_request.max(c.outgoing.last_write).elapsed() >= limits.idle_timeout
            {
                expired.push((key, Ended::IdleTimeout));
            } else if c.finishing.is_none()
                // Not while receiving is paused for backpressure: the rest of the request may
                // be waiting in the kernel for us, not for the client.
                && pending < max_pending
                && c
                    .partial_since
                    .is_some_and(|t| t.elapsed() >= limits.request_timeout)
            {
                too_slow.push(key);
            }
        }
        for (key, why) in expired {
            self.close(key, Some(why));
        }
        for key in too_slow {
            let Some(c) = self.slots.get_mut(key) else {
                continue;
            };
            if c.pending() == 0 {
                // The write timeout counts from when this reply starts waiting.
                c.outgoing.last_write = Instant::now();
            }
            // A partial request means a byte arrived, so the protocol is known; the fallback
            // only keeps this total.
            let codec = match c.protocol {
                Some(p) => self.settings.codecs.codec(p),
                None => self.settings.codecs.before_first_byte(),
            };
            codec.encode_error(None, conn::REQUEST_TIMEOUT_MESSAGE, c.output.appender());
            c.finishing = Some(Ended::RequestTimeout);
            // Sends the reply, cancels the receive; closes once the reply is out.
            self.update(key);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shutdown

impl Uring<'_> {
    fn arm_signals(&mut self) -> io::Result<()> {
        let pipe = Fd(self.signals.fd().as_raw_fd());
        let entry = opcode::PollAdd::new(pipe, libc::POLLIN as u32)
            .build()
            .user_data(tag(Op::Signals, LOOP));
        // SAFETY: a poll lends the kernel no memory of ours.
        unsafe { self.ring.push(&entry) }
    }

    /// The self-pipe is readable: a signal arrived. SIGINT or SIGTERM starts the shutdown;
    /// anything else, and the poll is armed again.
    fn on_signals(&mut self) -> io::Result<()> {
        if self.signals.take().terminate && self.shutdown_deadline.is_none() {
            self.begin_shutdown();
            return Ok(());
        }
        if self.shutdown_deadline.is_none() {
            self.arm_signals()?;
        }
        Ok(())
    }

    /// Stop accepting, answer what every connection has already sent, stop receiving; each
    /// connection closes once its output is sent.
    fn begin_shutdown(&mut self) {
        let grace = self.settings.grace;
        info!(
            "shutting down: {} connections; waiting up to {grace:?}",
            self.live
        );
        self.shutdown_deadline = Some(Instant::now() + grace);
        if self.accepting {
            // Best effort: if it cannot be queued, closing the listener below still leaves
            // only the kernel's reference, and a connection accepted through it is closed.
            let _ = cancel(&mut self.ring, Op::Accept, LOOP);
        }
        // The kernel keeps its own reference to the listening socket until the accept's
        // cancellation completes; a connection it accepts meanwhile is closed unserved.
        self.acceptor = None;
        for key in self.slots.keys() {
            let Some(c) = self.slots.get_mut(key) else {
                continue;
            };
            if c.closed {
                continue;
            }
            // A connection with a receive in the kernel's hands has it cancelled (`update`:
            // no receive is wanted while shutting down), and its last completion reads and
            // answers what is left in the socket (`received`). One with none in flight
            // (between two single receives, after ENOBUFS) does that now.
            if c.recv == Receiving::Off {
                if c.takes_input() {
                    let (ring, settings) = (&mut self.ring, &self.settings);
                    if let Err(ended) = drain_now(ring, c, key, settings, self.store) {
                        self.close(key, Some(ended));
                        continue;
                    }
                }
                c.finishing.get_or_insert(Ended::Shutdown);
            }
            self.update(key);
        }
    }

    /// Past `--grace` and the wait after it, some operation is still in the kernel's hands,
    /// and its memory must not be freed: the kernel may still write into a receive buffer or
    /// read from a send buffer. The process is about to exit, so the honest thing is to leak.
    fn leak_what_the_kernel_holds(&mut self) {
        info!(
            "{} connections' operations did not come back from the kernel; leaving their buffers to the exit",
            self.slots.occupied
        );
        std::mem::forget(std::mem::take(&mut self.slots));
        std::mem::forget(self.bufs.take());
    }
}

// ---------------------------------------------------------------------------------------------
// A connection, and the slab of them

/// One client: its socket and the state a blocking server would keep on a thread's stack,
/// plus what the kernel holds of it.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes received and not yet answered: at most one partial request between completions.
    input: ReadBuffer,
    /// `--recv single`: how many bytes at the end of `input` the armed receive may write.
    lent: usize,
    /// The protocol this connection speaks, once its first byte has said.
    protocol: Option<Protocol>,
    /// Replies not yet handed to the kernel.
    output: OutBuf,
    /// Replies handed to the kernel, and the send in flight.
    outgoing: Outgoing,
    recv: Receiving,
    /// Receiving was cancelled for backpressure (not for EOF, an error or shutdown).
    throttled: bool,
    tally: Tally,
    /// What this connection's HELLO agreed.
    agreed: Agreed,
    last_request: Instant,
    /// When the first byte of the partial request in `input` arrived (`--request-timeout`).
    partial_since: Option<Instant>,
    /// Set once nothing more will be read (EOF, protocol error, timeout, shutdown): the
    /// connection closes, for this reason, as soon as its output is sent.
    finishing: Option<Ended>,
    /// Counted and closed; the slot waits only for the kernel's last completions.
    closed: bool,
}

/// The bytes lent to the kernel for sending: `bytes[sent..]` are not yet sent.
struct Outgoing {
    bytes: Vec<u8>,
    sent: usize,
    state: Sending,
    /// When output last made progress, or started waiting (for the write timeout).
    last_write: Instant,
}

/// Where a connection's receive is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receiving {
    /// None in the kernel's hands.
    Off,
    /// Submitted, and (multishot) still receiving.
    Armed,
    /// A cancellation submitted; its last completion has not come yet.
    Cancelling,
}

/// Where a connection's send is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sending {
    /// None in the kernel's hands: `Outgoing::bytes` is ours.
    Idle,
    /// Submitted: `Outgoing::bytes` is the kernel's until it completes.
    InFlight,
    /// A cancellation submitted (the connection is closing); the bytes are still the kernel's.
    Cancelling,
}

impl Connection {
    fn new(stream: TcpStream, peer: SocketAddr) -> Connection {
        let now = Instant::now();
        Connection {
            stream,
            peer,
            input: ReadBuffer::new(READ_CHUNK),
            lent: 0,
            protocol: None,
            output: OutBuf::default(),
            outgoing: Outgoing {
                bytes: Vec::new(),
                sent: 0,
                state: Sending::Idle,
                last_write: now,
            },
            recv: Receiving::Off,
            throttled: false,
            tally: Tally::default(),
            agreed: Agreed::default(),
            last_request: now,
            partial_since: None,
            finishing: None,
            closed: false,
        }
    }

    /// Reply bytes not yet taken by the kernel: waiting, or lent to a send.
    fn pending(&self) -> usize {
        self.output.pending() + (self.outgoing.bytes.len() - self.outgoing.sent)
    }

    /// Whether received bytes are answered: yes until EOF or a fatal error, and at shutdown
    /// (they were sent before the client could know).
    fn takes_input(&self) -> bool {
        matches!(self.finishing, None | Some(Ended::Shutdown))
    }

    /// This connection's codec: chosen from its first byte the first time one is there, the
    /// same ever after. `None` until a byte has arrived.
    fn codec<'c>(&mut self, codecs: &'c ServerCodecs) -> Option<&'c dyn Codec> {
        if self.protocol.is_none() {
            self.protocol = self.input.data().first().map(|&b| codecs.protocol_for(b));
        }
        self.protocol.map(|p| codecs.codec(p))
    }
}

/// A connection's place in the slab, as an operation's user_data carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    index: u32,
    /// Bumped each time the slot is freed, so that a completion meant for an earlier
    /// connection in the slot can never be taken for the current one's.
    generation: u32,
}

/// The key of the loop's own operations (tick, self-pipe, accept): their `Op` tells them apart.
const LOOP: Key = Key {
    index: 0,
    generation: 0,
};

/// What an operation was, in the top byte of its user_data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Op {
    Tick = 1,
    Signals = 2,
    Accept = 3,
    Recv = 4,
    Send = 5,
    Cancel = 6,
}

/// The most slots: the index has 24 bits of the user_data (the op 8, the generation 32).
const MAX_SLOTS: u32 = 1 << 24;

fn tag(op: Op, key: Key) -> u64 {
    ((op as u64) << 56) | (u64::from(key.index) << 32) | u64::from(key.generation)
}

fn untag(user_data: u64) -> (Option<Op>, Key) {
    let op = match (user_data >> 56) as u8 {
        1 => Some(Op::Tick),
        2 => Some(Op::Signals),
        3 => Some(Op::Accept),
        4 => Some(Op::Recv),
        5 => Some(Op::Send),
        6 => Some(Op::Cancel),
        _ => None,
    };
    let key = Key {
        index: ((user_data >> 32) as u32) & (MAX_SLOTS - 1),
        generation: user_data as u32,
    };
    (op, key)
}

/// The connections, by slot. A slot is reused (with its generation bumped) only after
/// [`Slab::remove`], which the loop calls only when no operation of the slot is in flight.
#[derive(Default)]
struct Slab {
    slots: Vec<Slot>,
    free: Vec<u32>,
    occupied: usize,
}

struct Slot {
    generation: u32,
    conn: Option<Connection>,
}

impl Slab {
    /// A slot for `conn`, or `conn` back (boxed: the rare path should not make the common one
    /// move a large value) when every slot is taken.
    fn insert(&mut self, conn: Connection) -> Result<Key, Box<Connection>> {
        let index = match self.free.pop() {
            Some(i) => i,
            None => match u32::try_from(self.slots.len()) {
                Ok(i) if i < MAX_SLOTS => {
                    self.slots.push(Slot {
                        generation: 0,
                        conn: None,
                    });
                    i
                }
                _ => return Err(Box::new(conn)),
            },
        };
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return Err(Box::new(conn));
        };
        slot.conn = Some(conn);
        self.occupied += 1;
        Ok(Key {
            index,
            generation: slot.generation,
        })
    }

    /// The connection `key` names, if it is still the one in its slot.
    fn get_mut(&mut self, key: Key) -> Option<&mut Connection> {
        self.slots
            .get_mut(key.index as usize)
            .filter(|s| s.generation == key.generation)
            .and_then(|s| s.conn.as_mut())
    }

    fn remove(&mut self, key: Key) -> Option<Connection> {
        let slot = self
            .slots
            .get_mut(key.index as usize)
            .filter(|s| s.generation == key.generation)?;
        let conn = slot.conn.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(key.index);
        self.occupied -= 1;
        Some(conn)
    }

    fn iter(&self) -> impl Iterator<Item = (Key, &Connection)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            let key = Key {
                index: i as u32,
                generation: s.generation,
            };
            s.conn.as_ref().map(|c| (key, c))
        })
    }

    fn keys(&self) -> Vec<Key> {
        self.iter().map(|(key, _)| key).collect()
    }

    fn is_empty(&self) -> bool {
        self.occupied == 0
    }
}

// ---------------------------------------------------------------------------------------------
// The ring

/// Submission queue entries: a batch of this many submissions goes in one io_uring_enter
/// (more are submitted early, as the queue fills).
const SQ_ENTRIES: u32 = 256;
/// Completion queue entries: room for a burst of multishot completions between two reaps.
/// (Past it the kernel keeps them aside rather than drop them, since Linux 5.5.)
const CQ_ENTRIES: u32 = 4096;

/// The io_uring instance, and the counts the report gives.
struct Ring {
    uring: IoUring,
    /// Waits in io_uring_enter.
    enters: u64,
    /// Completions reaped.
    completions: u64,
}

impl Ring {
    /// io_uring_setup(2).
    fn new() -> io::Result<Ring> {
        // DEFER_TASKRUN (6.1): the kernel finishes completions only when this thread enters
        // to wait for them, instead of interrupting it (task work) each time a packet lands
        // for one; it requires SINGLE_ISSUER, which one thread, one ring is. An older kernel
        // refuses the flags with EINVAL: then a plain ring.
        let deferred = IoUring::<squeue::Entry, cqueue::Entry>::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(SQ_ENTRIES);
        let uring = match deferred {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                IoUring::<squeue::Entry, cqueue::Entry>::builder()
                    .setup_cqsize(CQ_ENTRIES)
                    .build(SQ_ENTRIES)?
            }
            Err(e) => return Err(e),
        };
        Ok(Ring {
            uring,
            enters: 0,
            completions: 0,
        })
    }

    /// Queues `entry`, submitting what is queued first if the queue is full.
    ///
    /// # Safety
    /// Whatever memory `entry` points to must stay valid, where it is, until the operation's
    /// last completion: the kernel reads it (a send's bytes) or writes it (a receive's buffer)
    /// at any time until then, and we must not touch what it writes meanwhile.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        // SAFETY: the caller's promise, above.
        if unsafe { self.uring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        // Full: hand the kernel what is queued, which empties the queue.
        self.submit()?;
        // SAFETY: as above.
        unsafe { self.uring.submission().push(entry) }
            .map_err(|_| io::Error::other("the io_uring submission queue stays full"))
    }

    /// io_uring_enter(2) without waiting: the kernel takes every queued entry.
    fn submit(&mut self) -> io::Result<()> {
        loop {
            match self.uring.submit() {
                Ok(_) => return Ok(()),
                // EINTR: a signal came before anything was submitted; again.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// io_uring_enter(2): submits what is queued and sleeps until at least one completion.
    fn wait(&mut self) -> io::Result<()> {
        self.enters += 1;
        match self.uring.submit_and_wait(1) {
            Ok(_) => Ok(()),
            // EINTR: a signal woke the wait, which is never restarted; the self-pipe's poll
            // completes for it. EBUSY: completions wait to be reaped before more can be taken.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves every completion there is into `into`.
    fn reap(&mut self, into: &mut Vec<cqueue::Entry>) {
        let before = into.len();
        into.extend(self.uring.completion());
        self.completions += (into.len() - before) as u64;
    }
}

// ---------------------------------------------------------------------------------------------
// The provided-buffer ring

/// The buffer group id the multishot receives name.
const BUFFER_GROUP: u16 = 0;
/// How many provided buffers (a power of two, as the kernel requires). Shared by every
/// connection, and each is given back as soon as its bytes are copied, so only the completions
/// of one batch hold any: 128 of 16 KiB is 2 MiB for the whole server, touched as used.
const BUF_COUNT: u16 = 128;
/// Each buffer's size: one read's worth, as every model reads.
const BUF_SIZE: usize = READ_CHUNK;

/// A ring of provided buffers (io_uring_register_buf_ring(3)): an array of (address, length,
/// buffer id) entries in memory shared with the kernel, and the buffers themselves. The kernel
/// takes the entry at its head for each receive and reports the buffer id in the completion;
/// we give a buffer back by writing an entry at our tail and publishing the new tail.
///
/// Both regions are anonymous mappings rather than Rust allocations: the kernel writes into
/// them behind the compiler's back, so no Rust reference to a buffer exists except the
/// short-lived slice [`BufRing::get`] makes of one the kernel has handed over.
struct BufRing {
    /// `BUF_COUNT` entries, page-aligned (the kernel requires it). Entry 0's last field
    /// doubles as the ring's tail.
    entries: NonNull<BufRingEntry>,
    /// `BUF_COUNT` buffers of `BUF_SIZE` bytes.
    buffers: NonNull<u8>,
    /// Our tail: the next entry to fill (it wraps, as the kernel's head does).
    tail: u16,
}

impl BufRing {
    /// Maps the entries and the buffers, registers them with the ring as group
    /// [`BUFFER_GROUP`], and hands the kernel every buffer.
    fn register(ring: &IoUring) -> io::Result<BufRing> {
        let entries = map(usize::from(BUF_COUNT) * std::mem::size_of::<BufRingEntry>())?;
        let buffers = match map(usize::from(BUF_COUNT) * BUF_SIZE) {
            Ok(b) => b,
            Err(e) => {
                unmap(
                    entries,
                    usize::from(BUF_COUNT) * std::mem::size_of::<BufRingEntry>(),
                );
                return Err(e);
            }
        };
        // Made now, so that an error below unmaps both (Drop).
        let mut bufs = BufRing {
            entries: entries.cast(),
            buffers: buffers.cast(),
            tail: 0,
        };
        // SAFETY: the entries are a live mapping of BUF_COUNT entries, page-aligned, and stay
        // mapped until `bufs` is dropped, which `Uring`'s field order puts after the ring's
        // drop (which unregisters them), or which happens before the ring ever used them.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.entries.as_ptr() as u64,
                BUF_COUNT,
                BUFFER_GROUP,
                0,
            )
        }?;
        for bid in 0..BUF_COUNT {
            bufs.put(bid);
        }
        bufs.publish();
        Ok(bufs)
    }

    /// The `len` bytes the kernel received into buffer `bid`, or `None` if the completion
    /// named no buffer of ours.
    fn get(&self, bid: u16, len: usize) -> Option<&[u8]> {
        if bid >= BUF_COUNT || len > BUF_SIZE {
            return None;
        }
        // SAFETY: within the mapping. The kernel wrote these bytes before the completion that
        // named `bid`, and does not touch the buffer again until it is given back, which takes
        // `&mut self` and so cannot happen while this slice lives.
        Some(unsafe {
            std::slice::from_raw_parts(self.buffers.as_ptr().add(usize::from(bid) * BUF_SIZE), len)
        })
    }

    /// Gives buffer `bid` back: the kernel may use it from the next receive on.
    fn give_back(&mut self, bid: u16) {
        if bid < BUF_COUNT {
            self.put(bid);
            self.publish();
        }
    }

    /// Writes buffer `bid` into the entry at our tail (not yet visible to the kernel).
    fn put(&mut self, bid: u16) {
        let slot = usize::from(self.tail & (BUF_COUNT - 1));
        // SAFETY: `slot` < BUF_COUNT, within the mapping. The kernel reads only the entries
        // between its head and the published tail, and this one is at the tail: it is not
        // among them until `publish`. (Entry 0's `resv` field is the tail itself, which the
        // setters do not touch.)
        let entry = unsafe { &mut *self.entries.as_ptr().add(slot) };
        entry.set_addr(self.buffers.as_ptr() as u64 + u64::from(bid) * BUF_SIZE as u64);
        entry.set_len(BUF_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes our tail: a release store, so the kernel sees the entries written before it.
    fn publish(&self) {
        // SAFETY: the tail is entry 0's last u16, within the mapping and 2-byte aligned; the
        // kernel reads it with an acquire load and never writes it, and we only ever store to
        // it atomically.
        let tail =
            unsafe { AtomicU16::from_ptr(BufRingEntry::tail(self.entries.as_ptr()).cast_mut()) };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        unmap(
            self.entries.cast(),
            usize::from(BUF_COUNT) * std::mem::size_of::<BufRingEntry>(),
        );
        unmap(self.buffers.cast(), usize::from(BUF_COUNT) * BUF_SIZE);
    }
}

/// A fresh anonymous read-write mapping of `len` bytes (page-aligned, zero-filled).
fn map(len: usize) -> io::Result<NonNull<libc::c_void>> {
    let len = NonZeroUsize::new(len).ok_or_else(|| io::Error::other("an empty mapping"))?;
    // SAFETY: a new anonymous mapping aliases nothing of ours.
    let mapped = unsafe {
        mmap_anonymous(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE,
        )
    }?;
    Ok(mapped)
}

fn unmap(ptr: NonNull<libc::c_void>, len: usize) {
    // SAFETY: `ptr` and `len` are a mapping `map` made, unmapped once, by its only owner.
    let _ = unsafe { munmap(ptr, len) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn user_data_carries_the_op_the_slot_and_the_generation() {
        let key = Key {
            index: MAX_SLOTS - 1,
            generation: u32::MAX,
        };
        for op in [
            Op::Tick,
            Op::Signals,
            Op::Accept,
            Op::Recv,
            Op::Send,
            Op::Cancel,
        ] {
            assert_eq!(untag(tag(op, key)), (Some(op), key));
        }
        assert_eq!(untag(0).0, None, "no operation is tagged 0");
    }

    /// A completion that arrives after its connection's slot was freed and given to another
    /// connection names the old generation, and finds nothing.
    #[test]
    fn a_reused_slot_does_not_answer_to_its_old_key() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connection = || Connection::new(TcpStream::connect(addr).unwrap(), addr);
        let mut slab = Slab::default();
        let first = slab.insert(connection()).ok().unwrap();
        assert!(slab.get_mut(first).is_some());
        assert!(slab.remove(first).is_some());
        assert!(slab.is_empty());
        let second = slab.insert(connection()).ok().unwrap();
        assert_eq!(second.index, first.index, "the slot is reused");
        assert_ne!(second.generation, first.generation);
        assert!(slab.get_mut(first).is_none(), "the old key finds nothing");
        assert!(slab.remove(first).is_none());
        assert!(slab.get_mut(second).is_some());
        assert_eq!(slab.keys(), vec![second]);
    }
}
