//! The event loop as a library: one thread, nonblocking sockets, a readiness API, every client
//! of one process (or of one thread of it). `server-eventloop` runs one, or with `--threads N`
//! one per thread, each over its own `SO_REUSEPORT` listener; `server-prefork --worker
//! eventloop` runs one in each forked worker, over the listener it inherited (or its own
//! `SO_REUSEPORT` one).
//!
//! The state a blocking server keeps on a thread's stack (where in the frame am I, what is left
//! to write) lives in a per-connection struct instead: a read buffer that keeps half a frame
//! until the rest arrives, and an output buffer that keeps what the kernel did not take. The
//! machinery here is everything that is the same whoever runs the loop:
//!
//! - **accept** through [`Acceptor`] until `EAGAIN` (shedding with a spare descriptor when
//!   descriptors run out), and *when* the listener is watched at all ([`Watch`]): always (one
//!   loop, or prefork's shared and reuseport modes), with `EPOLLEXCLUSIVE`, or only while this
//!   process holds the accept lock (nginx's `accept_mutex`);
//! - **a connection's turn** (`drive`): read until `EAGAIN` or the read budget, answer every
//!   complete request with the same [`conn::answer_all`] the blocking servers use, write until
//!   `EAGAIN` or the write budget; writability is watched only while output is pending, and
//!   reading stops while more than `--max-pending-output` bytes wait (backpressure);
//! - **the tick**: every 100 ms, the idle, write and request timeouts, and the end of an
//!   accept pause;
//! - **graceful shutdown**: on SIGINT/SIGTERM (or, for loops that share a process, on the
//!   shutdown broadcast: [`Stop`]), stop accepting, answer what each client has already sent,
//!   stop reading, send what is pending, close; return after the last connection or `--grace`.
//!
//! The loop counts into one slot of the shared counters besides the totals (a prefork worker's
//! or a loop thread's own slot), so the server can report per worker, and it counts its
//! wake-ups: how often its
//! wait returned with something to do, how often the listener was among it, and how often the
//! listener said "ready" and accept found nothing (the thundering herd, docs/models/prefork.md).

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use echolab_protocol::{Codec, Protocol, ReadBuffer, ServerCodecs};

use crate::acceptlock::AcceptLock;
use crate::cli::{parse_size, ServerArgs};
use crate::conn::{self, Agreed, Ended, Limits, Outcome, Tally};
use crate::net::Acceptor;
use crate::outbuf::OutBuf;
use crate::poller::{Event, Interest, Poller};
use crate::session::Store;
use crate::signals::SignalPipe;
use crate::stats::{Counters, SharedCounters};
use crate::READ_CHUNK;
use crate::{debug, info};

/// The flags of an event loop beyond the shared ones, for every binary that runs one.
#[derive(Debug, Clone, clap::Args)]
pub struct LoopArgs {
    /// Stop reading from a connection while this many reply bytes wait to be sent (at least 64K).
    ///
    /// Replies to one read's worth of requests may go past it.
    #[arg(long, value_name = "SIZE", default_value = "4M", value_parser = parse_pending_cap, allow_hyphen_values = true)]
    pub max_pending_output: usize,

    /// The most one connection may write in one turn of the loop; 0: until the kernel takes no more.
    ///
    /// With no budget, one client fetching large replies holds the loop for as long as each
    /// write takes, and every other client waits (see docs/robustness.md for the measurement).
    #[arg(long, value_name = "SIZE", default_value = "64K", value_parser = parse_size, allow_hyphen_values = true)]
    pub write_budget: usize,
}

/// `--max-pending-output`: at least 64K, four reads' worth.
fn parse_pending_cap(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    if n < READ_CHUNK * 4 {
        return Err(format!("'{s}' is too small (at least 64K)"));
    }
    Ok(n)
}

/// Everything a loop needs to know from the command line, the same for every connection.
#[derive(Debug, Clone)]
pub struct Settings {
    codecs: ServerCodecs,
    limits: Limits,
    max_pending_output: usize,
    /// `--write-budget`, with 0 made "no limit".
    write_budget: usize,
    max_connections: usize,
    grace: Duration,
}

impl Settings {
    /// The settings the shared flags and the loop's own flags give.
    pub fn new(server: &ServerArgs, args: &LoopArgs) -> Settings {
        Settings {
            codecs: server.protocol.codecs(server.max_frame),
            limits: server.limits(),
            max_pending_output: args.max_pending_output,
            write_budget: match args.write_budget {
                0 => usize::MAX,
                n => n,
            },
            max_connections: server.max_connections as usize,
            grace: server.grace,
        }
    }
}

/// When the loop watches its listener.
#[derive(Debug, Clone, Copy)]
pub enum Watch<'a> {
    /// All the time: the one loop of server-eventloop, and prefork workers that each have
    /// their own `SO_REUSEPORT` listener, or that share one and take the herd.
    Always,
    /// All the time, registered with `EPOLLEXCLUSIVE`, so that a new connection wakes one of
    /// the loops watching the shared listener rather than all of them (epoll only).
    Exclusive,
    /// Only while this process holds the accept lock, nginx's `accept_mutex`: one loop at a
    /// time watches the shared listener, so one is woken, at the cost of a lock attempt per
    /// turn and of connections that wait while nobody holds it (up to
    /// [`ACCEPT_MUTEX_DELAY`], when the last holder is busy running requests).
    Locked(&'a AcceptLock),
}

/// What tells a loop to begin its graceful shutdown.
#[derive(Debug, Clone, Copy)]
pub enum Stop<'a> {
    /// SIGINT or SIGTERM, read from the process's self-pipe: for a loop that is its process's
    /// only reader of that pipe (server-eventloop's one loop, each prefork worker's).
    Signals(&'a SignalPipe),
    /// The read end of a [`crate::signals::Shutdown`] broadcast, for loops that share a
    /// process and so its one self-pipe (`server-eventloop --threads`). A byte one loop drains
    /// from a pipe is a byte the others never see, so one thread reads the signals and closes
    /// the broadcast, which every loop sees at once: a closed pipe is readable for every reader.
    Broadcast(BorrowedFd<'a>),
}

impl<'a> From<&'a SignalPipe> for Stop<'a> {
    fn from(signals: &'a SignalPipe) -> Stop<'a> {
        Stop::Signals(signals)
    }
}

impl Stop<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Stop::Signals(pipe) => pipe.fd(),
            Stop::Broadcast(fd) => *fd,
        }
    }
}

/// Tokens 0 and 1 are the listener and the stop source (the signal pipe, or the shutdown
/// broadcast); connections count up from 2 and are never reused, so an event for a connection
/// closed earlier in the same batch finds nothing.
const LISTENER: usize = 0;
const SIGNALS: usize = 1;
const FIRST_CONNECTION: usize = 2;

/// The most one connection may read in one turn of the loop. Reading until `EAGAIN` with no
/// limit would let one client that keeps sending (and keeps reading its replies) hold the loop
/// for as long as it likes; past the budget, the connection goes on the "still ready" list and
/// is served again after everyone else's events (Redis caps each client's turn the same way).
const READ_BUDGET: usize = 64 * 1024;

/// How often the loop wakes with nothing ready, to enforce the idle and write timeouts.
const TICK: Duration = Duration::from_millis(100);

/// `Watch::Locked`: how long a loop that failed to take the accept lock waits before it tries
/// again, and the longest it holds the lock waiting for a connection. nginx's
/// `accept_mutex_delay` is 500 ms, tuned for busy servers whose lock holder is rarely idle;
/// here it is short, so that a loop that becomes free takes over soon.
pub const ACCEPT_MUTEX_DELAY: Duration = Duration::from_millis(10);

/// What a loop shares with the rest of its server (other threads, other processes), and where
/// it counts.
#[derive(Debug, Clone, Copy)]
pub struct Shared<'a> {
    /// The session table (HELLO, INCR, GET).
    pub store: &'a Store,
    /// The server's counters, in fork-shared memory.
    pub counters: &'a SharedCounters,
    /// The slot this loop counts into besides the totals: a prefork worker's or a loop
    /// thread's own, or 0 for a loop that is the whole server (which then counts once).
    pub slot: usize,
}

/// One loop: everything its single thread touches. Only the session table and the counters
/// are shared, with the other processes of a prefork server or the other loop threads of
/// `server-eventloop --threads`.
pub struct EventLoop<'a> {
    poller: Box<dyn Poller>,
    connections: HashMap<usize, Connection>,
    next_token: usize,
    settings: Settings,
    counters: &'a SharedCounters,
    /// The slot this loop counts into besides the totals (slot 0): a prefork worker's or a
    /// loop thread's own; 0 for a loop that is the whole server, which then counts once.
    slot: usize,
    /// HELLO, INCR and GET's table. For server-eventloop's one loop, a fork-shared mapping
    /// that no other process ever sees, behind a lock nobody else ever wants: one thread needs
    /// neither, but one type for every model means one code path to trust. With `--threads`,
    /// the one table every loop thread shares, and its lock is theirs to contend for. For a
    /// prefork worker, the one table every worker shares. (What each connection's HELLO said
    /// is its own `Connection::agreed`.)
    store: &'a Store,
    /// What starts the graceful shutdown: the signal pipe, or the shutdown broadcast.
    stop: Stop<'a>,
    /// Connections that used up their read budget with data still waiting: an edge-triggered
    /// poller will not report them again, so the loop serves them again itself.
    still_ready: Vec<usize>,
    /// The listener, until shutdown closes it.
    acceptor: Option<Acceptor>,
    watch: Watch<'a>,
    /// Whether the listener is registered with the poller now.
    watching: bool,
    /// `Watch::Locked`: whether this process holds the lock, until when it may keep it
    /// without a connection, and when it may next try to take it.
    holding: bool,
    hold_until: Instant,
    next_try: Instant,
    /// Whether this turn of the loop accepted a connection (`Watch::Locked` gives up the
    /// lock after one that did).
    turn_accepted: bool,
}

/// One client: its socket and the state a blocking server would keep on a thread's stack.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes received and not yet answered: at most one partial request after each turn.
    input: ReadBuffer,
    /// The protocol this connection speaks, once its first byte has said
    /// (`--protocol auto`; a fixed server's one protocol, then).
    protocol: Option<Protocol>,
    /// Replies not yet taken by the kernel.
    output: OutBuf,
    tally: Tally,
    /// What this connection's HELLO agreed (its session, its record format): what a
    /// blocking handler keeps on its stack, kept here between turns.
    agreed: Agreed,
    last_request: Instant,
    /// When the first byte of the partial request in `input` arrived (`--request-timeout`).
    partial_since: Option<Instant>,
    /// When output last made progress (for the write timeout).
    last_write: Instant,
    /// What the poller watches for now.
    interest: Interest,
    /// Set once nothing more will be read (EOF, protocol error, shutdown): the connection
    /// closes, for this reason, as soon as its output is sent.
    finishing: Option<Ended>,
}

impl std::fmt::Debug for EventLoop<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("backend", &self.poller.name())
            .field("connections", &self.connections.len())
            .field("slot", &self.slot)
            .field("watch", &self.watch)
            .finish_non_exhaustive()
    }
}

impl<'a> EventLoop<'a> {
    /// A loop over `poller` that accepts from `acceptor` as `watch` says, and shuts down when
    /// `stop` says to (registered now, with the listener where it is watched from the start).
    pub fn new(
        poller: Box<dyn Poller>,
        settings: Settings,
        shared: Shared<'a>,
        acceptor: Acceptor,
        watch: Watch<'a>,
        stop: impl Into<Stop<'a>>,
    ) -> io::Result<EventLoop<'a>> {
        let stop = stop.into();
        let now = Instant::now();
        let mut ev = EventLoop {
            poller,
            connections: HashMap::new(),
            next_token: FIRST_CONNECTION,
            settings,
            counters: shared.counters,
            slot: shared.slot,
            store: shared.store,
            stop,
            still_ready: Vec::new(),
            acceptor: Some(acceptor),
            watch,
            watching: false,
            holding: false,
            hold_until: now,
            next_try: now,
            turn_accepted: false,
        };
        if !matches!(watch, Watch::Locked(_)) {
            ev.watch_listener()?;
        }
        ev.poller
            .register(stop.fd().as_raw_fd(), SIGNALS, Interest::READ)?;
        Ok(ev)
    }

    /// The backend's name (select, poll, epoll).
    pub fn backend(&self) -> &'static str {
        self.poller.name()
    }

    /// Serves until its [`Stop`] says to (SIGINT or SIGTERM, or the shutdown broadcast), then
    /// shuts down gracefully: returns once the last connection has closed, or at `--grace`.
    pub fn run(&mut self) -> io::Result<()> {
        // The loop: wait for readiness, then serve whatever is ready — the listener (accept),
        // the stop source (begin shutdown), a connection (read, answer, write, maybe close) —
        // and on each tick, the timeouts. The listener is closed at shutdown.
        let mut shutdown_deadline: Option<Instant> = None;
        let mut events: Vec<Event> = Vec::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        loop {
            // nginx's turn of the accept mutex: try for the lock when there is room.
            let mut wake = next_tick;
            if let Watch::Locked(lock) = self.watch {
                self.try_accept_lock(lock)?;
                wake = wake.min(if self.holding {
                    self.hold_until
                } else {
                    self.next_try
                });
            }
            // Sleep until something is ready or the next housekeeping tick; do not sleep at
            // all while some connection still has data it was not given the turn to read.
            let timeout = if self.still_ready.is_empty() {
                wake.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            self.turn_accepted = false;
            self.poller.wait(&mut events, Some(timeout))?;
            if !events.is_empty() {
                self.count(|c| &c.wakeups);
            }

            // Under the accept lock, accept first and give the lock up before any request
            // runs, as nginx does (accept events, unlock, then the rest): a holder that ran a
            // slow request while holding it would keep every other worker from accepting.
            let locked = if let Watch::Locked(lock) = self.watch {
                if events.iter().any(|e| e.token == LISTENER) {
                    self.on_listener_ready();
                }
                let work =
                    events.iter().any(|e| e.token != LISTENER) || !self.still_ready.is_empty();
                self.maybe_release_accept_lock(lock, work);
                true
            } else {
                false
            };
            for event in &events {
                match event.token {
                    LISTENER if locked => {}
                    LISTENER => self.on_listener_ready(),
                    SIGNALS => {
                        if self.stop_requested() && shutdown_deadline.is_none() {
                            self.stop_accepting();
                            info!(
                                "shutting down: {} connections; waiting up to {:?}",
                                self.connections.len(),
                                self.settings.grace
                            );
                            shutdown_deadline = Some(Instant::now() + self.settings.grace);
                            self.stop_reading_all();
                        }
                    }
                    token => self.on_ready(token),
                }
            }
            // Then the connections that ran out of budget (in an earlier turn, or in this
            // one's events above), after everyone else.
            for token in std::mem::take(&mut self.still_ready) {
                self.on_ready(token);
            }

            if Instant::now() >= next_tick {
                next_tick = Instant::now() + TICK;
                self.enforce_timeouts();
                self.resume_accepting()?;
            }
            // Shutting down: done once the last connection has closed, or at `--grace`.
            if let Some(deadline) = shutdown_deadline {
                if self.connections.is_empty() {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    info!(
                        "{} connections still sending after the grace period; closing them",
                        self.connections.len()
                    );
                    let tokens: Vec<usize> = self.connections.keys().copied().collect();
                    for token in tokens {
                        self.close(token, None);
                    }
                    return Ok(());
                }
            }
        }
    }

    /// The stop source was reported ready: whether it says to shut down.
    fn stop_requested(&mut self) -> bool {
        match self.stop {
            Stop::Signals(pipe) => pipe.take().terminate,
            Stop::Broadcast(fd) => {
                // Nobody writes to the broadcast: it is ready only once closed, and then for
                // good, so a level-triggered poller (select, poll) would report it on every
                // wait of the grace period and the loop would spin. It has said all it will.
                let _ = self.poller.deregister(fd.as_raw_fd(), SIGNALS);
                true
            }
        }
    }

    /// Adds one to a counter in the totals and in this loop's own slot.
    fn count(&self, field: impl Fn(&Counters) -> &AtomicU64) {
        Counters::bump(field(self.counters.total()));
        if self.slot != 0 {
            Counters::bump(field(self.counters.slot(self.slot)));
        }
    }

    /// Registers the listener with the poller, as [`Watch`] says.
    fn watch_listener(&mut self) -> io::Result<()> {
        let Some(a) = &self.acceptor else {
            return Ok(());
        };
        if self.watching {
            return Ok(());
        }
        let fd = a.listener().as_raw_fd();
        match self.watch {
            Watch::Exclusive => self.poller.register_exclusive(fd, LISTENER)?,
            Watch::Always | Watch::Locked(_) => {
                self.poller.register(fd, LISTENER, Interest::READ)?
            }
        }
        self.watching = true;
        Ok(())
    }

    /// Stops watching the listener (before it closes, as the poller contract requires).
    fn unwatch_listener(&mut self) {
        if let (Some(a), true) = (&self.acceptor, self.watching) {
            let _ = self.poller.deregister(a.listener().as_raw_fd(), LISTENER);
        }
        self.watching = false;
    }

    /// The listener was reported ready: accept what there is. A wake-up with the listener
    /// ready whose first accept finds nothing (another process took the connection first) is
    /// a futile one: the thundering herd, counted.
    fn on_listener_ready(&mut self) {
        let Some(a) = &self.acceptor else {
            return;
        };
        if a.is_paused() {
            return;
        }
        self.count(|c| &c.listener_wakeups);
        if self.accept_all() == 0 {
            self.count(|c| &c.futile_wakeups);
        }
    }

    /// Accepts until `EAGAIN` (with edge-triggered epoll, a connection left in the queue would
    /// not be reported again until another one arrived); returns how many were accepted.
    fn accept_all(&mut self) -> u64 {
        let mut accepted = 0;
        while let Some(a) = &mut self.acceptor {
            let (counters, slot, codecs) = (self.counters, self.slot, &self.settings.codecs);
            let mut shed = 0;
            let next = a.accept_or_shed(|stream, peer| {
                shed += 1;
                refuse(
                    counters,
                    slot,
                    codecs,
                    stream,
                    peer,
                    "out of file descriptors",
                );
            });
            for _ in 0..shed {
                self.count(|c| &c.accepted);
            }
            accepted += shed;
            let Some((stream, peer)) = next else {
                break;
            };
            accepted += 1;
            self.count(|c| &c.accepted);
            if self.connections.len() >= self.settings.max_connections {
                refuse(
                    counters,
                    slot,
                    codecs,
                    stream,
                    peer,
                    "max-connections reached",
                );
                continue;
            }
            self.add(stream, peer);
        }
        if self.acceptor.as_ref().is_some_and(Acceptor::is_paused) {
            // Until the tick resumes it: a level-triggered poller would report the listener
            // ready on every wait, and the loop would spin.
            self.unwatch_listener();
        }
        self.mark_busy();
        self.turn_accepted |= accepted > 0;
        accepted
    }

    /// On the tick: an accept pause is over, so watch the listener again and accept what
    /// queued up meanwhile (edge-triggered epoll would not report it). Under the accept lock,
    /// the next turn that takes the lock watches it again.
    fn resume_accepting(&mut self) -> io::Result<()> {
        let due = self.acceptor.as_mut().is_some_and(Acceptor::resume_if_due);
        if due && !matches!(self.watch, Watch::Locked(_)) {
            self.watch_listener()?;
            self.accept_all();
        }
        Ok(())
    }

    /// Shutdown: stop watching the listener and close it, and give up the accept lock.
    fn stop_accepting(&mut self) {
        self.unwatch_listener();
        if let (Watch::Locked(lock), true) = (self.watch, self.holding) {
            lock.release();
            self.holding = false;
        }
        self.acceptor = None;
    }

    /// `Watch::Locked`, before each wait: a loop with room for another connection, whose
    /// turn it is, tries the lock without blocking, and watches the listener while it holds
    /// it. nginx does the same at the top of each turn (`ngx_trylock_accept_mutex`).
    fn try_accept_lock(&mut self, lock: &AcceptLock) -> io::Result<()> {
        let now = Instant::now();
        let able = self.acceptor.as_ref().is_some_and(|a| !a.is_paused())
            && self.connections.len() < self.settings.max_connections;
        if self.holding || !able || now < self.next_try {
            return Ok(());
        }
        if lock.try_acquire() {
            self.holding = true;
            self.hold_until = now + ACCEPT_MUTEX_DELAY;
            // Registering reports a connection already queued, on every backend (epoll_ctl
            // looks at the socket's state as it adds it).
            self.watch_listener()?;
        } else {
            self.next_try = now + ACCEPT_MUTEX_DELAY;
        }
        Ok(())
    }

    /// `Watch::Locked`, after each turn's accepts: a holder that accepted, whose hold is up,
    /// that has no room left, or that has requests to run (`work`) stops watching and gives
    /// up the lock. As in nginx, it may try again at its very next turn, while the others try
    /// only every [`ACCEPT_MUTEX_DELAY`]: an idle holder watches the listener again at once,
    /// at the price of fairness (an idle holder takes the lock back, and takes a burst of
    /// connections until it has no room; nginx's `accept_disabled` is the same "no room" rule,
    /// at 7/8 full), while a busy one lets the others in. An earlier version made the
    /// releaser wait a delay too, for fairness: then, for up to that delay, no loop watched
    /// the listener at all, and short connections from 8 clients came in at about a thousand
    /// a second. Another kept the lock while the turn's requests ran: then one slow request (a
    /// SLEEP of 1 s in `locked_slow_request_does_not_stop_accepting`) kept every other worker
    /// from accepting for as long, and the connections queued behind it.
    fn maybe_release_accept_lock(&mut self, lock: &AcceptLock, work: bool) {
        if !self.holding {
            return;
        }
        let now = Instant::now();
        let full = self.connections.len() >= self.settings.max_connections;
        if now >= self.hold_until || full || self.turn_accepted || work {
            self.unwatch_listener();
            lock.release();
            self.holding = false;
            self.next_try = now;
        }
    }

    /// A prefork worker marks its slot busy while it has no room for another connection: the
    /// parent reads it to tell whether clients wait with no worker free.
    fn mark_busy(&self) {
        if self.slot != 0 {
            self.counters
                .slot(self.slot)
                .set_busy(self.connections.len() >= self.settings.max_connections);
        }
    }
}

/// Answers "server busy" (with a blocking socket) and closes, counted in the totals and in
/// the loop's own slot.
fn refuse(
    counters: &SharedCounters,
    slot: usize,
    codecs: &ServerCodecs,
    stream: TcpStream,
    peer: SocketAddr,
    why: &str,
) {
    conn::refuse(stream, codecs, counters.total(), peer, why);
    if slot != 0 {
        Counters::bump(&counters.slot(slot).refused);
    }
}

impl EventLoop<'_> {
    fn add(&mut self, stream: TcpStream, peer: SocketAddr) {
        let token = self.next_token;
        self.next_token += 1;
        let setup = stream
            .set_nonblocking(true)
            .and_then(|()| stream.set_nodelay(true));
        let registered = setup.and_then(|()| {
            self.poller
                .register(stream.as_raw_fd(), token, Interest::READ)
        });
        if let Err(e) = registered {
            // select: a descriptor >= FD_SETSIZE cannot be watched. Say so, and refuse.
            info!("{peer}: {e}; refusing the connection");
            let _ = stream.set_nonblocking(false);
            refuse(
                self.counters,
                self.slot,
                &self.settings.codecs,
                stream,
                peer,
                "cannot watch the descriptor",
            );
            return;
        }
        debug!("{peer}: accepted as token {token}");
        let now = Instant::now();
        self.connections.insert(
            token,
            Connection {
                stream,
                peer,
                input: ReadBuffer::new(READ_CHUNK),
                protocol: None,
                output: OutBuf::default(),
                tally: Tally::default(),
                agreed: Agreed::default(),
                last_request: now,
                partial_since: None,
                last_write: now,
                interest: Interest::READ,
                finishing: None,
            },
        );
    }

    /// A connection is ready: do all the work that will not block, then watch for what is next.
    ///
    /// Which of readable or writable the event said does not matter: both are tried until
    /// `EAGAIN` (or the read budget), which is what edge triggering requires anyway.
    fn on_ready(&mut self, token: usize) {
        let Some(c) = self.connections.get_mut(&token) else {
            return; // closed earlier in this batch of events
        };
        match drive(c, &self.settings, self.store) {
            Err(ended) => self.close(token, Some(ended)),
            Ok(turn) => {
                if turn == Turn::BudgetSpent {
                    self.still_ready.push(token);
                }
                self.rewatch(token);
            }
        }
    }

    /// Updates what the poller watches a connection for, or closes it once it is finished.
    fn rewatch(&mut self, token: usize) {
        let Some(c) = self.connections.get_mut(&token) else {
            return;
        };
        if c.finishing.is_some() && c.output.is_empty() {
            let ended = c.finishing.take();
            self.close(token, ended);
            return;
        }
        let want = Interest {
            readable: c.finishing.is_none()
                && c.output.pending() < self.settings.max_pending_output,
            writable: !c.output.is_empty(),
        };
        if want != c.interest {
            match self.poller.reregister(c.stream.as_raw_fd(), token, want) {
                Ok(()) => c.interest = want,
                Err(e) => self.close(token, Some(Ended::Failed(e))),
            }
        }
    }
}

/// How a turn of [`drive`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// Everything that could be done without blocking is done (`EAGAIN`, finished, throttled).
    Done,
    /// The read or write budget ran out with data perhaps still waiting (to read, or to send
    /// to a socket that would take it): serve again after the others.
    BudgetSpent,
}

/// Reads, answers and writes as far as possible without blocking, reading at most
/// [`READ_BUDGET`] bytes and writing at most the write budget. `Err` means: close now.
fn drive(c: &mut Connection, settings: &Settings, store: &Store) -> Result<Turn, Ended> {
    let max_pending = settings.max_pending_output;
    let mut budget = READ_BUDGET;
    let mut allowance = settings.write_budget;
    loop {
        // Read until EAGAIN (mio is edge-triggered: stopping early would strand the rest, so a
        // connection stopped by the budget is put on the still-ready list), unless finished,
        // or backpressure says the client must first take its replies.
        while c.finishing.is_none() && c.output.pending() < max_pending {
            if budget == 0 {
                c.send(&mut allowance)?;
                return Ok(Turn::BudgetSpent);
            }
            match c.stream.read(c.input.spare(READ_CHUNK)) {
                Ok(0) => {
                    let partial = !c.input.is_empty();
                    c.finishing = Some(if partial {
                        Ended::PeerClosedMidRequest
                    } else {
                        Ended::PeerClosed
                    });
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    c.input.filled(n);
                    // Chosen on the first read, looked up (one match) on the later ones.
                    let Some(codec) = c.codec(&settings.codecs) else {
                        continue;
                    };
                    let nothing_was_waiting = c.output.is_empty();
                    // The same step as the blocking servers. A SLEEP here blocks the whole
                    // loop, and every other client waits: the lesson of this model. Replies
                    // computed before it are handed to the kernel first, as far as it takes them
                    // and this turn's write budget allows.
                    let before_slow = |out: &mut OutBuf| {
                        send(&mut c.stream, out, &mut c.last_write, &mut allowance)
                    };
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
                    // The write timeout counts from when output starts waiting, not from the
                    // last write of some earlier burst. (Only new replies start it, so bytes
                    // that complete no request do not keep an idle connection alive.)
                    if nothing_was_waiting && !c.output.is_empty() {
                        c.last_write = Instant::now();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // read(2): EINTR if a signal arrived first; nothing was read.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Ended::Failed(e)),
            }
        }
        let was_throttled = c.finishing.is_none() && c.output.pending() >= max_pending;

        c.send(&mut allowance)?;
        // Output left and the write budget spent: the socket may well take more, but others
        // get their turn first (edge triggering would not report it again: still-ready list).
        if !c.output.is_empty() && allowance == 0 {
            return Ok(Turn::BudgetSpent);
        }

        // Reading stopped for backpressure and the client has now taken enough: read again,
        // because an edge-triggered poller will not report data that was already there —
        // now if the budget allows, else on the next turn.
        if was_throttled && c.output.pending() < max_pending {
            // The pause was ours: a partial request's deadline starts again as reading resumes.
            c.partial_since = c.partial_since.map(|_| Instant::now());
            if budget > 0 {
                continue;
            }
            return Ok(Turn::BudgetSpent);
        }
        return Ok(Turn::Done);
    }
}

impl Connection {
    /// This connection's codec: chosen from its first byte the first time one is there, the
    /// same ever after. `None` until a byte has arrived.
    fn codec<'a>(&mut self, codecs: &'a ServerCodecs) -> Option<&'a dyn Codec> {
        if self.protocol.is_none() {
            self.protocol = self.input.data().first().map(|&b| codecs.protocol_for(b));
        }
        self.protocol.map(|p| codecs.codec(p))
    }

    /// [`send`] of this connection's output, within `allowance`.
    fn send(&mut self, allowance: &mut usize) -> Result<(), Ended> {
        send(
            &mut self.stream,
            &mut self.output,
            &mut self.last_write,
            allowance,
        )
    }
}

/// Hands the kernel what it takes of `output` without blocking, at most `allowance` bytes
/// (decreased by what went). Any progress restarts the write timeout's clock.
fn send(
    stream: &mut TcpStream,
    output: &mut OutBuf,
    last_write: &mut Instant,
    allowance: &mut usize,
) -> Result<(), Ended> {
    let written = output.write_to(stream, *allowance).map_err(Ended::Failed)?;
    *allowance -= written;
    if written > 0 {
        *last_write = Instant::now();
    }
    Ok(())
}

impl EventLoop<'_> {
    /// On each tick: close connections idle past `--idle-timeout` (with nothing left to send:
    /// a client slowly taking a large reply is not idle), or whose client has not taken any
    /// output for `--write-timeout`, and answer "request timeout" to a request that has been
    /// arriving for longer than `--request-timeout` (then close once that reply is out).
    /// O(connections), ten times a second.
    fn enforce_timeouts(&mut self) {
        let limits = self.settings.limits;
        let max_pending = self.settings.max_pending_output;
        let mut too_slow = Vec::new();
        let expired: Vec<(usize, Ended)> = self
            .connections
            .iter()
            .filter_map(|(&token, c)| {
                if !c.output.is_empty() && c.last_write.elapsed() >= limits.write_timeout {
                    Some((token, Ended::WriteTimeout))
                } else if c.finishing.is_none()
                    && c.output.is_empty()
                    && c.last_request.max(c.last_write).elapsed() >= limits.idle_timeout
                {
                    Some((token, Ended::IdleTimeout))
                } else {
                    // Not while reading is paused for backpressure: the rest of the request
                    // may be waiting in the kernel for us, not for the client.
                    if c.finishing.is_none()
                        && c.output.pending() < max_pending
                        && c.partial_since
                            .is_some_and(|t| t.elapsed() >= limits.request_timeout)
                    {
                        too_slow.push(token);
                    }
                    None
                }
            })
            .collect();
        for (token, why) in expired {
            self.close(token, Some(why));
        }
        for token in too_slow {
            let Some(c) = self.connections.get_mut(&token) else {
                continue;
            };
            if c.output.is_empty() {
                // The write timeout counts from when this reply starts waiting.
                c.last_write = Instant::now();
            }
            // A partial request means a byte arrived, so the protocol is known; the fallback
            // only keeps this total.
            let codec = match c.protocol {
                Some(p) => self.settings.codecs.codec(p),
                None => self.settings.codecs.before_first_byte(),
            };
            codec.encode_error(None, conn::REQUEST_TIMEOUT_MESSAGE, c.output.appender());
            c.finishing = Some(Ended::RequestTimeout);
            let mut unlimited = usize::MAX;
            if let Err(ended) = c.send(&mut unlimited) {
                self.close(token, Some(ended));
                continue;
            }
            self.rewatch(token);
        }
    }

    /// Shutdown: answer what every connection has already sent (its requests may be waiting
    /// in the socket, reported in this same batch of events after the signal), then stop
    /// reading; each connection closes once its output is sent.
    fn stop_reading_all(&mut self) {
        let tokens: Vec<usize> = self.connections.keys().copied().collect();
        for token in tokens {
            let Some(c) = self.connections.get_mut(&token) else {
                continue;
            };
            let turn = match drive(c, &self.settings, self.store) {
                Ok(turn) => turn,
                Err(ended) => {
                    self.close(token, Some(ended));
                    continue;
                }
            };
            c.finishing.get_or_insert(Ended::Shutdown);
            if turn == Turn::BudgetSpent {
                // Output left to a socket that may take it at once: no event would say so.
                self.still_ready.push(token);
            }
            self.rewatch(token);
        }
    }

    /// Deregisters (before the descriptor is closed, as the poller contract requires), closes
    /// without resetting what was sent, and accounts for the connection.
    fn close(&mut self, token: usize, why: Option<Ended>) {
        let Some(c) = self.connections.remove(&token) else {
            return;
        };
        let _ = self.poller.deregister(c.stream.as_raw_fd(), token);
        conn::close_gently(&c.stream);
        let outcome = Outcome {
            ended: why.unwrap_or(Ended::Shutdown),
            tally: c.tally,
        };
        if self.slot == 0 {
            conn::record_end(&outcome, &[self.counters.total()], c.peer);
        } else {
            let mine = self.counters.slot(self.slot);
            conn::record_end(&outcome, &[self.counters.total(), mine], c.peer);
        }
        self.mark_busy();
    }
}
