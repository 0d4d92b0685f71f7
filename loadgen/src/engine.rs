//! One worker thread: an event loop over its share of the connections.
//!
//! Each thread owns a mio `Poll`, its connections, and a [`Tally`] it records into without
//! locks. A connection is a small state machine (down → connecting → open → down again on an
//! error or, for short connections, after its K requests), with a FIFO of requests in flight.
//!
//! Pacing comes in two kinds. In the closed loop a connection sends its next request as soon as
//! a reply frees a slot in its pipeline, and latency runs from the actual send. In the open loop
//! every request has a place on a fixed timetable — connection `g` of `N` sends at
//! `t0 + (g + k·N) / rate` — and latency runs from that scheduled time whatever delayed the send:
//! this is how wrk2 corrects coordinated omission, so a stalled server shows in the tail instead
//! of silently pausing the client. To keep the schedule honest the thread sleeps on a `timerfd`
//! armed with an absolute deadline (epoll's own timeout is whole milliseconds), set early by
//! the wake-up latency it has measured on this machine, and spins the last few microseconds;
//! it records how late each send left for reasons of its own (the lag histogram), separately
//! from waits the server caused (a full pipeline, a reconnect).
//!
//! When a connection breaks, each request in flight is judged by whether its bytes had all
//! left: one never completely written certainly did not run (*failed*), one written with no
//! reply may have (*indeterminate*). `--retry` decides which of them go again, first thing on
//! the slot's next connection, with the same id and their original start time. With `--op
//! incr` each slot is a session client ([`echolab_protocol::session`]): every connection
//! opens with `HELLO client sent` and sends nothing else until it is answered, request ids
//! are the session's sequence numbers, and each request carries the lowest one still
//! unanswered. Per counter, the thread tallies what it was told and what it cannot know, for
//! the check against the server's values at the end ([`crate::counters`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use echolab_protocol::ReadBuffer;
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use crate::arrivals::{PoissonSlot, COUNT_EXACTLY};
use crate::clock::{ns, Clock, NANOS};
use crate::config::{Arrivals, Engine, Op, Pacing, Retry, RunConfig};
use crate::ring::{self, Op as RingOp, Orphan, Ring, GEN_MASK};
use crate::schedule::Timetable;
use crate::stats::{self, ErrorKind, KeyTally, StepTally, Tally};
use crate::workload::{Check, Scratch, Workload};
use echolab_protocol::session::Refusal;

/// How often a thread checks timeouts and retries failed connections.
const HOUSEKEEPING_NS: u64 = 10_000_000;
/// Below this distance to the next scheduled send, the thread polls without sleeping rather
/// than arm the timer: a wake-up costs about this much anyway.
const SPIN_NS: u64 = 5_000;
/// The timer is armed this much before a send is due, to absorb the wake-up latency (the
/// timer interrupt, leaving an idle CPU, the context switch), and the thread spins the rest.
/// It starts here and then follows the wake-ups it measures.
const WAKE_MARGIN_START_NS: u64 = 30_000;
/// The margin never exceeds this: a machine that wakes a thread slower than that is too
/// loaded to pace at microseconds anyway, and spinning longer would only burn the CPU the
/// server needs. Late sends then show in the lag histogram.
const WAKE_MARGIN_MAX_NS: u64 = 200_000;
/// Retry delays after a connection fails: doubling from the first to the last.
const BACKOFF_FIRST_NS: u64 = 10_000_000;
const BACKOFF_MAX_NS: u64 = 200_000_000;
/// Bytes of spare room offered to each `read(2)` at least. The buffer starts this small (10 000
/// connections should not cost 160 MB of zeroed buffers) and grows when reads fill it.
const READ_CHUNK: usize = 4 * 1024;
/// While draining, how often a thread looks whether the collector has released it: the
/// closing sample takes from microseconds (no `--server-pid`) to a few milliseconds.
const RELEASE_POLL_NS: u64 = 1_000_000;
/// The timer's token; connections use their index.
const TIMER: Token = Token(usize::MAX);
/// A run limited only by `--requests` stops when every connection of a thread has failed this
/// many times in a row with no verified reply (a dead or stopped server), instead of spending
/// its budget one timeout at a time.
const GIVE_UP_AFTER: u64 = 5;
/// At most this many example error messages are kept per thread.
const MAX_EXAMPLES: usize = 5;

/// Everything the threads share, read-only.
#[derive(Debug)]
pub struct Plan {
    /// The checked configuration.
    pub cfg: RunConfig,
    /// Encoder and verifier.
    pub workload: Workload,
    /// The run's clock (t = 0 when the run began).
    pub clock: Clock,
    /// Run time at which recording starts (the end of the warmup).
    pub measure_from: u64,
    /// Run time at which no new request is started, if the run is limited by time.
    pub stop_at: Option<u64>,
    /// Open loop: the schedule on the run's clock (when each request is due, and the steps
    /// the report has a row for).
    pub timetable: Option<Timetable>,
    /// Set on Ctrl-C (or by the caller) to end the run early, with a report.
    pub interrupted: Arc<AtomicBool>,
    /// Whether the collector samples the server at the end of the window (`--server-pid`):
    /// then a thread keeps its connections open until the sample is taken, so the server's
    /// per-connection threads and processes are still there to be counted.
    pub hold_for_sample: bool,
    /// Set when any thread has verified a reply. Until then a run limited by time gives up
    /// early, as one limited by count does, on a server it cannot reach or understand: each
    /// thread checks this and not only its own replies, so a thread whose connections all
    /// wait behind a bounded server's busy workers does not give up while others are served.
    pub verified: AtomicBool,
}

impl Plan {
    /// Whether connection `c` opens with a HELLO, and sends nothing else until it is
    /// answered: to open its session (`--op incr`), to agree a record format (`--op record`).
    fn says_hello(&self, c: &Conn) -> bool {
        c.session.is_some() || self.workload.agrees_format()
    }
}

/// What a worker tells the collector.
#[derive(Debug)]
pub enum ToCollector {
    /// One second's figures.
    Interval(Interval),
    /// The worker's measured window is over: it starts no more requests and waits for those in
    /// flight. Its connections stay open until the collector has taken its closing samples
    /// (so a thread-per-connection server's threads are still there to be counted); then
    /// every connection with nothing in flight is closed at once.
    Draining {
        /// Which thread.
        thread: usize,
    },
    /// Open loop on a ramp or steps, once the worker's requests have all ended: its
    /// latency per step (by scheduled time), for the interval log's "step" histograms.
    Steps {
        /// One histogram per step of the timetable.
        latency: Vec<Histogram<u64>>,
    },
    /// The worker has sent its last interval.
    Done {
        /// Which thread.
        thread: usize,
    },
}

/// A per-second report from a thread to the collector.
#[derive(Debug)]
pub struct Interval {
    /// Which thread.
    pub thread: usize,
    /// Seconds since the measured window began (interval `i` covers `[i, i+1)`).
    pub index: u64,
    /// Latencies recorded in the interval (by reply time).
    pub latency: Histogram<u64>,
    /// Replies verified in the interval.
    pub ok: u64,
    /// Requests sent in the interval (first attempts, by send time).
    pub sent: u64,
    /// Errors of any kind in the interval.
    pub errors: u64,
    /// When the thread closed the interval (run time): the second's boundary, or for the
    /// last interval the moment the thread stopped.
    pub end: u64,
}

/// What a thread hands back when it finishes.
#[derive(Debug)]
pub struct ThreadResult {
    /// Its tally.
    pub tally: Tally,
    /// A few error messages, for the summary.
    pub examples: Vec<String>,
    /// When it stopped (run time).
    pub finished_at: u64,
    /// It stopped early: every connection kept failing.
    pub gave_up: bool,
}

/// What a pending message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A request of the workload: counted, retried, classified.
    Request,
    /// `--op incr` and `--op record`: the HELLO that opens each connection; none of the
    /// counts'.
    Hello,
}

/// One request in flight, or waiting for the slot's next connection to be resent.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// Its id (with `--op incr`, its sequence number in the slot's session).
    id: u64,
    /// Open loop: the scheduled send time; closed loop: the first send's time. A resend
    /// keeps it, so a retried request's latency includes the failure and the retry.
    start: u64,
    /// The latest attempt's send time (its timeout runs from here).
    sent: u64,
    kind: Kind,
    /// `--op incr`: the counter's index.
    key: u32,
    /// Attempts queued so far, this one included (`--max-attempts` bounds it).
    attempts: u32,
    /// Attempts completely written to a socket (earlier ones, plus this one once it is
    /// known to have been): above 0 the request may have run, above 1 it may have run twice.
    writes: u32,
    /// Where this attempt's bytes end in the stream written on this socket: all of them
    /// left once the socket has taken that many bytes.
    end: u64,
}

/// How a request ended (see [`stats::Counts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Verified reply.
    Ok,
    /// Answered with an ERROR: did not run (this time).
    Refused,
    /// Never completely written: did not run.
    Unwritten,
    /// Written, no good reply: may have run.
    Indeterminate,
}

/// `--op incr`: a connection slot's session, kept across its connections.
#[derive(Debug, Clone, Copy)]
struct Session {
    /// The client id HELLO says.
    client: u64,
    /// Sequence numbers used so far (the last one given out).
    used: u64,
    /// The highest seq ever queued on a socket under this client id: HELLO's `sent`. Not
    /// `used`: after EXPIRED the resends that never left are renumbered under a fresh id, and
    /// a HELLO claiming them would be refused EXPIRED again, for ever. A seq that never went
    /// onto a socket cannot have run, so the new client is honestly brand new.
    queued_max: u64,
    /// Times the server said EXPIRED and the slot started over with a fresh id.
    renewals: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No socket; try again at this time.
    Down { retry_at: u64 },
    /// connect(2) in progress since this time.
    Connecting { since: u64 },
    /// Connected.
    Open,
}

#[derive(Debug)]
struct Conn {
    /// Index among all connections of the run (for the timetable, ids and source address).
    global: u64,
    sock: Option<TcpStream>,
    state: State,
    in_flight: VecDeque<Pending>,
    rbuf: ReadBuffer,
    wbuf: Vec<u8>,
    wpos: usize,
    write_blocked_since: Option<u64>,
    /// Requests started on the current socket (short connections close after K).
    on_this_socket: u64,
    /// Whether the current socket has delivered a verified reply (a server that refuses or
    /// drops connections before answering gets a backoff, not an instant reconnect loop).
    answered: bool,
    /// Whether the current socket has delivered an ERROR reply: a server that refuses a
    /// connection answers the request in flight with "server busy" and closes, and the close
    /// is then explained, not an `eof` of its own.
    error_replied: bool,
    /// Requests started on this connection slot, ever: the id sequence and, in the open
    /// loop, the index `k` of the next request on the timetable.
    next_k: u64,
    /// Open loop with Poisson arrivals: the slot's own timetable (its next request's due time).
    poisson: Option<PoissonSlot>,
    /// Open loop: when the slot's last request in the measured window left, for the gaps.
    /// Only measured sends count (a gap never spans the warmup's end), and it survives a
    /// reconnect: the timetable is the slot's, not the socket's, so a gap over an outage is
    /// one of the slot's gaps.
    last_sent: Option<u64>,
    /// When the connection last became able to send (connected, or its full pipeline got a
    /// free slot): a send waiting for that was delayed by the server, not by the client.
    ready_since: u64,
    /// Bytes queued on the current socket, and bytes it has taken: a request whose `end` is
    /// at most `written` left completely.
    queued: u64,
    written: u64,
    /// Requests to resend on the slot's next connection (`--retry`), oldest first.
    retry: VecDeque<Pending>,
    /// `--op incr`: the slot's session.
    session: Option<Session>,
    /// `--op incr` and `--op record`: the current socket's HELLO has been answered (until
    /// then it sends nothing else: a request behind a refused HELLO would be refused too).
    hello_done: bool,
    /// The deadline this connection has in the timer heap, if any (older entries are stale).
    timer_due: Option<u64>,
    backoff: u64,
    /// Whether this slot has had a verified reply in the measured window.
    served: bool,
    /// `--engine uring`: what the kernel holds of this connection's (unused with epoll).
    lent: Lent,
}

/// `--engine uring`: a connection's operations in flight, and the memory they hold.
///
/// While `recv` is set the kernel may write into `rbuf`'s spare room at any moment, so
/// nothing else touches `rbuf` until the receive completes; while `send` is set it reads
/// `sending[spos..]`, so new requests go to `wbuf` and wait for the next send. A connection
/// closed with either in flight gives that buffer to the ring as an orphan ([`ring`]).
#[derive(Debug, Default)]
struct Lent {
    /// The socket generation: bumped at each close, so a completion for an earlier socket of
    /// this slot is recognised and ignored.
    gen: u32,
    /// A writability poll is in flight (the connect's outcome).
    connect: bool,
    /// A receive into `rbuf` is in flight.
    recv: bool,
    /// A send from `sending` is in flight.
    send: bool,
    /// The bytes lent to the kernel by the send in flight.
    sending: Vec<u8>,
    /// How many of them it has taken so far (a send may be partial).
    spos: usize,
    /// When the send in flight was submitted.
    sent_at: u64,
}

impl Conn {
    /// Whether bytes queued on this socket have yet to leave: in `wbuf`, or lent to a send.
    fn unsent(&self) -> bool {
        self.wpos < self.wbuf.len() || !self.lent.sending.is_empty()
    }
}

/// How a worker waits for and does its I/O (`--engine`).
enum Io {
    /// Readiness: a mio poll over epoll, and (open loop) a timerfd for the precise deadline.
    Epoll { poll: Poll, timer: Option<TimerFd> },
    /// Completion: an io_uring, whose wait takes a timeout in nanoseconds itself.
    /// (Boxed: the ring's maps are ten times the size of a poll, and a worker has one.)
    Uring(Box<Ring>),
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Io::Epoll { .. } => "Io::Epoll",
            Io::Uring(_) => "Io::Uring",
        })
    }
}

/// The per-thread event loop.
struct Worker<'a> {
    plan: &'a Plan,
    thread: usize,
    io: Io,
    conns: Vec<Conn>,
    tally: Tally,
    examples: Vec<String>,
    /// Requests this thread may still start in the measured window (`None`: no limit).
    budget: Option<u64>,
    /// Open loop: (due, connection) min-heap.
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    /// The precise deadline the timer (epoll) or the ring's wait (uring) was set for.
    timer_armed: Option<u64>,
    /// How early the timer is armed before a due send (see [`WAKE_MARGIN_START_NS`]).
    wake_margin: u64,
    interval_index: u64,
    interval: Histogram<u64>,
    interval_ok: u64,
    interval_sent: u64,
    interval_errors: u64,
    tx: Sender<ToCollector>,
    scratch: Scratch,
    draining: bool,
    /// Disconnected by the collector once it has taken its closing samples.
    release: Receiver<()>,
    /// Set once `release` has disconnected: from then on, while draining, a connection with
    /// nothing in flight is closed rather than held open. A blocking server gives each
    /// connection a thread or worker of its own, and an idle connection held open by a client
    /// that will send nothing more would keep that worker from the connections queued behind
    /// it, whose requests would then time out in the drain (issue 19).
    released: bool,
    /// Connection failures since the last verified reply: a run limited only by `--requests`
    /// gives up when every connection has failed [`GIVE_UP_AFTER`] times in a row.
    failures_in_a_row: u64,
    /// Of those, failures of a connection that was open and got no (good) reply: a read
    /// timeout, bytes that are not a reply, a close. Before any reply was verified, one per
    /// connection is enough to give up: the server accepts but does not answer, or answers
    /// in another protocol, and waiting out more timeouts would only repeat that.
    reply_failures_in_a_row: u64,
    /// Set when the thread gave up on an unreachable server.
    gave_up: bool,
    /// While draining: when the thread stops waiting for what is in flight. A resend in the
    /// drain pushes it out by a `--timeout` (and a request queued for one, by its backoff as
    /// well), so retries are not cut short by the window's end; `--max-attempts` bounds how
    /// often that can happen.
    drain_deadline: u64,
}

/// Runs one thread's share: connections `globals` (indices into the run's connections), with
/// `budget` measured requests (if the run is limited by count). Reports go to `tx`. When its
/// window ends the thread says so and waits for in-flight requests; once `release` disconnects
/// (the collector has sampled the server with every connection still open), it closes each
/// connection as soon as nothing is in flight on it.
pub fn run_thread(
    plan: &Plan,
    thread: usize,
    globals: Vec<u64>,
    budget: Option<u64>,
    tx: Sender<ToCollector>,
    release: Receiver<()>,
) -> io::Result<ThreadResult> {
    if matches!(plan.cfg.pacing, Pacing::Open(_)) {
        // prctl(PR_SET_TIMERSLACK): the kernel may otherwise defer this thread's timer
        // wake-ups by up to 50 µs to batch them, which would show up as client lag.
        let _ = nix::sys::prctl::set_timerslack(1);
    }
    let io = match plan.cfg.engine {
        Engine::Epoll => {
            let poll = Poll::new()?;
            let timer = match plan.cfg.pacing {
                Pacing::Closed => None,
                Pacing::Open(_) => {
                    let t = TimerFd::new(
                        ClockId::CLOCK_MONOTONIC,
                        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
                    )?;
                    poll.registry().register(
                        &mut SourceFd(&t.as_fd().as_raw_fd()),
                        TIMER,
                        Interest::READABLE,
                    )?;
                    Some(t)
                }
            };
            Io::Epoll { poll, timer }
        }
        // Made here, on the thread that will be its only submitter (SINGLE_ISSUER).
        Engine::Uring => Io::Uring(Box::new(Ring::new(globals.len())?)),
    };
    let conns = globals
        .into_iter()
        .map(|global| Conn {
            global,
            sock: None,
            state: State::Down { retry_at: 0 },
            in_flight: VecDeque::with_capacity((plan.cfg.pipeline as usize).min(16)),
            rbuf: ReadBuffer::new(READ_CHUNK),
            wbuf: Vec::new(),
            wpos: 0,
            write_blocked_since: None,
            on_this_socket: 0,
            answered: false,
            error_replied: false,
            next_k: 0,
            poisson: match &plan.timetable {
                Some(tt) if plan.cfg.arrivals == Arrivals::Poisson => Some(PoissonSlot::new(
                    plan.cfg.seed(),
                    global,
                    plan.cfg.connections,
                    tt,
                )),
                _ => None,
            },
            last_sent: None,
            ready_since: 0,
            queued: 0,
            written: 0,
            retry: VecDeque::new(),
            session: (plan.cfg.op == Op::Incr).then(|| Session {
                client: client_id(&plan.cfg, global, 0),
                used: 0,
                queued_max: 0,
                renewals: 0,
            }),
            hello_done: false,
            timer_due: None,
            backoff: BACKOFF_FIRST_NS,
            served: false,
            lent: Lent::default(),
        })
        .collect();
    let mut tally = Tally::default();
    if let Some(tt) = &plan.timetable {
        tally.steps = vec![StepTally::default(); tt.steps().len()];
    }
    if plan.cfg.op == Op::Incr {
        tally.keys = vec![KeyTally::default(); plan.workload.key_count()];
    }
    let mut w = Worker {
        plan,
        thread,
        io,
        conns,
        tally,
        examples: Vec::new(),
        budget,
        heap: BinaryHeap::new(),
        timer_armed: None,
        wake_margin: WAKE_MARGIN_START_NS,
        interval_index: 0,
        interval: stats::new_histogram(),
        interval_ok: 0,
        interval_sent: 0,
        interval_errors: 0,
        tx,
        scratch: Scratch::default(),
        draining: false,
        release,
        released: false,
        failures_in_a_row: 0,
        reply_failures_in_a_row: 0,
        gave_up: false,
        drain_deadline: u64::MAX,
    };
    if let Err(e) = w.run() {
        // Closing first: with io_uring, what the kernel still holds must be orphaned before
        // the connections' buffers can go.
        w.close_all();
        return Err(e);
    }
    let finished_at = plan.clock.now();
    // The collector needs the steps' histograms only to log them (the report merges the
    // tallies): each is about 140 KB, so they are copied only when asked for.
    if !w.tally.steps.is_empty() && plan.cfg.outputs.hlog.is_some() {
        let latency = w.tally.steps.iter().map(|s| s.latency.clone()).collect();
        let _ = w.tx.send(ToCollector::Steps { latency });
    }
    let _ = w.tx.send(ToCollector::Done { thread });
    // Bounded, in case the collector is gone: the report matters more than the sample.
    if !w.released {
        let _ = w.release.recv_timeout(Duration::from_secs(5));
    }
    w.close_all();
    Ok(ThreadResult {
        tally: w.tally,
        examples: w.examples,
        finished_at,
        gave_up: w.gave_up,
    })
}

impl Worker<'_> {
    fn run(&mut self) -> io::Result<()> {
        let plan = self.plan;
        let mut events = Events::with_capacity(1024);
        let mut completions = Vec::new();
        let now = plan.clock.now();
        for i in 0..self.conns.len() {
            self.connect(i, now);
        }
        // Timeouts are checked at least four times per --timeout, so a 1 ms timeout means
        // about 1 ms, not the 10 ms housekeeping period.
        let housekeeping = HOUSEKEEPING_NS.min(ns(plan.cfg.timeout) / 4).max(100_000);
        let mut next_housekeeping = now + housekeeping;
        loop {
            let now = plan.clock.now();
            let never_verified = !plan.verified.load(Ordering::Relaxed);
            let n = self.conns.len() as u64;
            if !self.gave_up
                && (plan.stop_at.is_none() || never_verified)
                && (self.failures_in_a_row >= GIVE_UP_AFTER * n
                    || (never_verified && self.reply_failures_in_a_row >= n))
            {
                self.gave_up = true;
                let why = format!(
                    "gave up: {} connection failures in a row and no verified reply",
                    self.failures_in_a_row
                );
                if self.examples.len() < MAX_EXAMPLES {
                    self.examples.push(why);
                }
            }
            if !self.draining
                && (plan.interrupted.load(Ordering::Relaxed)
                    || plan.stop_at.is_some_and(|s| now >= s)
                    || self.budget == Some(0)
                    || self.gave_up)
            {
                self.draining = true;
                self.count_unsent(now);
                self.drain_deadline = now + ns(plan.cfg.timeout);
                if self.conns.iter().any(|c| !c.retry.is_empty()) {
                    // A slot waiting out its backoff to resend: time to reconnect too.
                    self.drain_deadline += BACKOFF_MAX_NS;
                }
                let _ = self.tx.send(ToCollector::Draining {
                    thread: self.thread,
                });
                // With nothing to sample (no --server-pid), there is nothing to keep the
                // connections open for: close the finished ones now, rather than wait for
                // every other thread's window to end too (a run limited by -n ends each
                // thread's window at a different time).
                if !plan.hold_for_sample {
                    self.released = true;
                }
            }
            if self.draining {
                // Resends still go out in the drain: a request the run may retry is not
                // given up on because the window ended.
                let idle = self
                    .conns
                    .iter()
                    .all(|c| c.in_flight.is_empty() && c.retry.is_empty());
                if idle || now >= self.drain_deadline {
                    break;
                }
                if !self.released && self.release.try_recv() != Err(TryRecvError::Empty) {
                    self.released = true;
                }
                if self.released {
                    self.close_finished();
                }
            }
            self.flush_intervals(now);
            if now >= next_housekeeping {
                self.housekeeping(now);
                next_housekeeping = now + housekeeping;
            }
            if !self.draining {
                self.run_due(now);
            }

            // Sleep until the next thing to do: a coarse deadline through epoll's timeout,
            // a precise one (the next scheduled send) through the timerfd.
            let mut coarse = next_housekeeping.min(self.next_interval_at());
            if self.draining {
                coarse = coarse.min(self.drain_deadline);
                if !self.released {
                    // The release comes through a channel, not the poll: look again soon.
                    coarse = coarse.min(now + RELEASE_POLL_NS);
                }
            } else if let Some(stop) = plan.stop_at {
                coarse = coarse.min(stop);
            }
            let precise = if self.draining {
                None
            } else {
                self.heap.peek().map(|Reverse((due, _))| *due)
            };
            if matches!(self.io, Io::Epoll { .. }) {
                self.wait_epoll(&mut events, coarse, precise)?;
            } else {
                self.wait_uring(&mut completions, coarse, precise)?;
            }
        }
        self.tally.counts.connections_served =
            self.conns.iter().filter(|c| c.served).count() as u64;
        // Whatever is still unanswered after the drain ends as it stands: indeterminate if
        // written, failed if not, resent no more.
        let now = plan.clock.now();
        for i in 0..self.conns.len() {
            let lost = self.conns[i]
                .in_flight
                .iter()
                .filter(|p| p.kind == Kind::Request && p.start >= plan.measure_from)
                .count() as u64;
            self.write_off(i, false);
            let left: Vec<Pending> = self.conns[i].retry.drain(..).collect();
            for p in left {
                self.finish(p, unanswered(&p));
            }
            if lost > 0 {
                let c = &self.conns[i];
                let kind = if c.unsent() {
                    ErrorKind::WriteTimeout
                } else if c.rbuf.is_empty() {
                    ErrorKind::ReadTimeoutEmpty
                } else {
                    ErrorKind::ReadTimeoutPartial
                };
                self.error(
                    kind,
                    format!(
                        "{lost} requests still unanswered {:?} after the run ended",
                        plan.cfg.timeout
                    ),
                );
            }
        }
        self.flush_intervals(now);
        self.send_interval(now);
        Ok(())
    }

    /// Epoll: sleeps until a socket is ready, the precise deadline (the timerfd, armed a
    /// little early) or the coarse one (epoll's own timeout, whole milliseconds), then
    /// handles what is ready.
    fn wait_epoll(
        &mut self,
        events: &mut Events,
        coarse: u64,
        precise: Option<u64>,
    ) -> io::Result<()> {
        let now = self.plan.clock.now();
        let timeout = match precise {
            // Close to a due send: poll without sleeping until it is due.
            Some(due) if due <= now + SPIN_NS.max(self.wake_margin) => Some(Duration::ZERO),
            // Armed even when a coarse deadline comes first: epoll rounds its timeout up
            // to whole milliseconds, and a send due just after that deadline would
            // otherwise wait out the rounding (a millisecond of lag, 1% of sends at 10k/s).
            Some(due) => {
                self.arm_timer(due - self.wake_margin);
                Some(Duration::from_nanos(coarse.saturating_sub(now)))
            }
            _ => Some(Duration::from_nanos(coarse.saturating_sub(now))),
        };
        let Io::Epoll { poll, .. } = &mut self.io else {
            return Ok(());
        };
        match poll.poll(events, timeout) {
            Ok(()) => {}
            // epoll_wait(2): EINTR when a signal (Ctrl-C) lands on this thread; the loop
            // re-checks the interrupted flag.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            let token = event.token();
            if token == TIMER {
                self.timer_fired();
                continue;
            }
            if token.0 < self.conns.len() {
                let closed = event.is_read_closed() || event.is_error();
                self.on_event(token.0, event.is_readable(), event.is_writable(), closed);
            }
        }
        Ok(())
    }

    /// io_uring: submits every operation this turn queued and sleeps until a completion or
    /// a deadline, in one system call (its timeout is in nanoseconds, so one deadline does
    /// for both kinds: the precise one a little early, as with the timerfd), then handles
    /// every completion there is.
    fn wait_uring(
        &mut self,
        completions: &mut Vec<ring::Completion>,
        coarse: u64,
        precise: Option<u64>,
    ) -> io::Result<()> {
        let now = self.plan.clock.now();
        let (deadline, aimed) = match precise {
            Some(due) if due <= now + SPIN_NS.max(self.wake_margin) => (now, None),
            Some(due) if due - self.wake_margin < coarse => {
                (due - self.wake_margin, Some(due - self.wake_margin))
            }
            _ => (coarse, None),
        };
        let Io::Uring(ring) = &mut self.io else {
            return Ok(());
        };
        let timed_out = ring.wait(Duration::from_nanos(deadline.saturating_sub(now)))?;
        ring.reap(completions);
        if timed_out && aimed.is_some() {
            self.timer_armed = aimed;
            self.timer_fired();
        }
        for done in completions.drain(..) {
            self.complete(done);
        }
        Ok(())
    }

    fn close_all(&mut self) {
        for i in 0..self.conns.len() {
            self.close(i);
        }
    }

    /// While draining: closes every connection that has nothing in flight, for good. It will
    /// send nothing more, and the server should not keep a worker waiting on it.
    fn close_finished(&mut self) {
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if c.sock.is_some() && c.in_flight.is_empty() && c.retry.is_empty() {
                self.close(i);
                self.conns[i].state = State::Down { retry_at: u64::MAX };
            }
        }
    }

    // ----- connections -------------------------------------------------------------------

    /// Starts a nonblocking connect for connection `i`.
    fn connect(&mut self, i: usize, now: u64) {
        let cfg = &self.plan.cfg;
        let source = (!cfg.source_ips.is_empty()).then(|| {
            // By the slot's place among this instance's own (g / N in a segment), so a
            // segment's slots use every address, not one in N.
            let g = self.conns[i].global;
            let k = cfg.segment.map_or(g, |s| g / u64::from(s.count));
            cfg.source_ips[k as usize % cfg.source_ips.len()]
        });
        match start_connect(cfg.addr, source) {
            Ok(mut sock) => {
                let registered = match &mut self.io {
                    Io::Epoll { poll, .. } => poll
                        .registry()
                        .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)
                        .map_err(|e| format!("epoll_ctl: {e}")),
                    // The connect's outcome arrives as a completion once the socket is
                    // writable; after that, the socket takes submitted operations only.
                    Io::Uring(ring) => {
                        let gen = self.conns[i].lent.gen;
                        ring.poll_writable(sock.as_raw_fd(), ring::tag(RingOp::Connect, i, gen))
                            .map(|()| self.conns[i].lent.connect = true)
                            .map_err(|e| format!("io_uring: {e}"))
                    }
                };
                if let Err(why) = registered {
                    self.conn_failed(i, ErrorKind::LocalResource, why, now);
                    return;
                }
                let c = &mut self.conns[i];
                c.sock = Some(sock);
                c.state = State::Connecting { since: now };
                c.on_this_socket = 0;
                c.answered = false;
                c.error_replied = false;
                c.hello_done = false;
            }
            Err(e) => {
                let kind = connect_error_kind(&e);
                self.conn_failed(i, kind, format!("connect to {}: {e}", cfg.addr), now);
            }
        }
    }

    /// Closes connection `i`'s socket, if any, keeping its bookkeeping.
    fn close(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if let Some(mut sock) = c.sock.take() {
            match &mut self.io {
                // Deregister before drop (mio's rule); a failure only means it is already gone.
                Io::Epoll { poll, .. } => {
                    let _ = poll.registry().deregister(&mut sock);
                }
                Io::Uring(ring) => disown(ring, i, c),
            }
            // The descriptor closes now; with operations in flight the kernel holds the
            // socket itself until their cancellations complete.
            drop(sock);
        }
        c.rbuf.consume(c.rbuf.len());
        c.wbuf.clear();
        c.wpos = 0;
        c.queued = 0;
        c.written = 0;
        c.hello_done = false;
        c.write_blocked_since = None;
        c.timer_due = None;
    }

    /// Connection `i` broke (or the run ended, `may_resend` false): each request in flight
    /// is judged by whether all its bytes had left. Those `--retry` allows, with attempts to
    /// spare, wait for the slot's next connection, ahead of any still waiting from before;
    /// the others end here.
    fn write_off(&mut self, i: usize, may_resend: bool) {
        let cfg = &self.plan.cfg;
        let c = &mut self.conns[i];
        let written = c.written;
        let mut again = Vec::new();
        let mut done = Vec::new();
        for mut p in c.in_flight.drain(..) {
            if p.kind == Kind::Hello {
                continue;
            }
            if p.end <= written {
                p.writes += 1;
            }
            let allowed = match cfg.retry {
                Retry::Never => false,
                // gRPC's transparent retry: only what certainly did not run.
                Retry::Safe => p.writes == 0,
                Retry::Always => true,
            };
            if may_resend && allowed && p.attempts < cfg.max_attempts {
                again.push(p);
            } else {
                done.push(p);
            }
        }
        if self.draining && !again.is_empty() {
            let due = self.plan.clock.now() + c.backoff + ns(cfg.timeout);
            self.drain_deadline = self.drain_deadline.max(due);
        }
        for p in again.into_iter().rev() {
            c.retry.push_front(p);
        }
        for p in done {
            self.finish(p, unanswered(&p));
        }
    }

    /// Request `p` ended with `outcome`: count it (in the measured window) and, with `--op
    /// incr`, tally it against its counter (always: the counter holds the warmup's
    /// increments too).
    fn finish(&mut self, p: Pending, outcome: Outcome) {
        if p.start >= self.plan.measure_from {
            if let Some(step) = self.step_of(p.start) {
                match outcome {
                    Outcome::Ok => {}
                    Outcome::Refused | Outcome::Unwritten => step.failed += 1,
                    Outcome::Indeterminate => step.indeterminate += 1,
                }
            }
            let c = &mut self.tally.counts;
            match outcome {
                // Counted with its latency where the reply is taken.
                Outcome::Ok => {}
                Outcome::Refused => c.failed += 1,
                Outcome::Unwritten => {
                    c.failed += 1;
                    c.unwritten += 1;
                }
                Outcome::Indeterminate => c.indeterminate += 1,
            }
        }
        if let Some(k) = self.tally.keys.get_mut(p.key as usize) {
            match outcome {
                Outcome::Ok => k.acked += 1,
                Outcome::Refused | Outcome::Unwritten => k.failed += 1,
                Outcome::Indeterminate => k.indeterminate += 1,
            }
            if p.writes >= 2 {
                k.written_twice += 1;
                k.extra_writes += u64::from(p.writes - 1);
            }
        }
    }

    /// `--op incr` and `--op record`: connection `i` sends its HELLO, first thing on a new
    /// socket.
    fn say_hello(&mut self, i: usize, now: u64) {
        let plan = self.plan;
        let c = &mut self.conns[i];
        if !plan.says_hello(c) {
            return;
        }
        // Client 0: a HELLO that agrees a record format and opens no session.
        let (client, sent) = c.session.map_or((0, 0), |s| (s.client, s.queued_max));
        let before = c.wbuf.len();
        if let Err(e) = plan.workload.encode_hello(client, sent, &mut c.wbuf) {
            let why = format!("cannot encode HELLO: {e}");
            self.conn_failed(i, ErrorKind::Protocol, why, now);
            return;
        }
        c.queued += (c.wbuf.len() - before) as u64;
        c.in_flight.push_back(Pending {
            id: 0,
            start: now,
            sent: now,
            kind: Kind::Hello,
            key: 0,
            attempts: 1,
            writes: 0,
            end: c.queued,
        });
    }

    /// `--op incr`: the server no longer knows slot `i`'s client (EXPIRED). What the old
    /// session left unanswered may or may not have run, and its seqs mean nothing now: the
    /// resends that were written end as indeterminate, and those that never left (so never
    /// ran) are renumbered in a new session with a fresh client id.
    fn renew_session(&mut self, i: usize) {
        let cfg = &self.plan.cfg;
        let c = &mut self.conns[i];
        let Some(mut session) = c.session else {
            return;
        };
        session.renewals += 1;
        session.client = client_id(cfg, c.global, session.renewals);
        session.used = 0;
        session.queued_max = 0;
        let waiting: Vec<Pending> = c.retry.drain(..).collect();
        let mut ended = Vec::new();
        for mut p in waiting {
            if p.writes > 0 {
                ended.push(p);
            } else {
                session.used += 1;
                p.id = session.used;
                c.retry.push_back(p);
            }
        }
        c.session = Some(session);
        for p in ended {
            self.finish(p, Outcome::Indeterminate);
        }
    }

    /// Connection `i` failed with `kind`: count it, write off what was in flight, and schedule
    /// a reconnect after a backoff.
    fn conn_failed(&mut self, i: usize, kind: ErrorKind, why: String, now: u64) {
        self.write_off(i, true);
        self.charge_unused_connection(i, now);
        self.failures_in_a_row += 1;
        if matches!(
            kind,
            ErrorKind::ReadTimeoutEmpty
                | ErrorKind::ReadTimeoutPartial
                | ErrorKind::Protocol
                | ErrorKind::Mismatch
                | ErrorKind::Eof
        ) {
            self.reply_failures_in_a_row += 1;
        }
        self.error(kind, why);
        self.retry_later(i, now);
    }

    /// Closes connection `i` and schedules its reconnect after the backoff, which doubles
    /// until a verified reply resets it.
    fn retry_later(&mut self, i: usize, now: u64) {
        self.close(i);
        let c = &mut self.conns[i];
        c.state = State::Down {
            retry_at: now + c.backoff,
        };
        c.backoff = (c.backoff * 2).min(BACKOFF_MAX_NS);
    }

    /// A connection that ends (or never opens) without carrying a request still uses one of a
    /// `--requests` budget, or a run limited only by count would retry a dead, refusing or
    /// stopped server forever.
    fn charge_unused_connection(&mut self, i: usize, now: u64) {
        let c = &self.conns[i];
        let unused = matches!(c.state, State::Connecting { .. } | State::Down { .. })
            || c.on_this_socket == 0;
        if unused && now >= self.plan.measure_from {
            if let Some(b) = self.budget.as_mut() {
                if *b > 0 {
                    *b -= 1;
                    self.tally.counts.abandoned += 1;
                }
            }
        }
    }

    fn error(&mut self, kind: ErrorKind, why: String) {
        self.tally.errors.add(kind);
        self.interval_errors += 1;
        if self.examples.len() < MAX_EXAMPLES {
            // The same failure on every connection says nothing new the second time.
            let example = format!("{kind}: {why}");
            if !self.examples.contains(&example) {
                self.examples.push(example);
            }
        }
    }

    fn on_event(&mut self, i: usize, readable: bool, writable: bool, read_closed: bool) {
        let now = self.plan.clock.now();
        if let State::Connecting { since } = self.conns[i].state {
            if !self.finish_connect(i, since, now) {
                return;
            }
        }
        if self.conns[i].state != State::Open {
            return;
        }
        if writable && self.conns[i].wpos < self.conns[i].wbuf.len() && !self.flush(i, now) {
            return;
        }
        if readable && !self.read(i, read_closed) {
            return;
        }
        self.pump(i, self.plan.clock.now());
    }

    /// Completes a connect; returns whether the connection is now open.
    fn finish_connect(&mut self, i: usize, since: u64, now: u64) -> bool {
        let Some(sock) = self.conns[i].sock.as_ref() else {
            return false;
        };
        // connect(2) in progress: SO_ERROR holds the outcome once the socket is writable;
        // peer_addr succeeding is how mio's docs say to tell "connected" from "not yet".
        let failure = match sock.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match sock.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return false,
                Err(e) => Some(e),
            },
        };
        if let Some(e) = failure {
            let why = format!("connect to {}: {e}", self.plan.cfg.addr);
            self.conn_failed(i, connect_error_kind(&e), why, now);
            return false;
        }
        if since >= self.plan.measure_from {
            stats::record(&mut self.tally.connect, now.saturating_sub(since) / 1000);
        }
        let c = &mut self.conns[i];
        c.state = State::Open;
        c.ready_since = now;
        self.say_hello(i, now);
        self.conns[i].state == State::Open
    }

    // ----- io_uring completions ----------------------------------------------------------

    /// `--engine uring`: one completion, handed to the connection that submitted it. This is
    /// `on_event`'s counterpart: there the kernel said "ready" and the engine then read or
    /// wrote; here the read or write has already happened, and the result says how it went.
    fn complete(&mut self, done: ring::Completion) {
        let Some((op, i, gen)) = ring::untag(done.user_data) else {
            return;
        };
        // A completion for an earlier socket of this slot (closed since, and its buffer,
        // if it had one, already freed by the ring): nothing to do.
        if op == RingOp::Cancel || i >= self.conns.len() || self.conns[i].lent.gen & GEN_MASK != gen
        {
            return;
        }
        let now = self.plan.clock.now();
        let result = done.result;
        match op {
            RingOp::Connect => {
                self.conns[i].lent.connect = false;
                let State::Connecting { since } = self.conns[i].state else {
                    return;
                };
                if self.finish_connect(i, since, now) {
                    if let Err(e) = self.conns[i].sock.as_ref().map_or(Ok(()), set_blocking) {
                        let why = format!("fcntl: {e}");
                        self.conn_failed(i, ErrorKind::LocalResource, why, now);
                        return;
                    }
                    self.arm_recv(i, now);
                    self.pump_if_open(i, now);
                } else if let (State::Connecting { .. }, Some(sock), Io::Uring(ring)) =
                    (self.conns[i].state, &self.conns[i].sock, &mut self.io)
                {
                    // Writable, yet not connected (spurious): ask again.
                    if ring.poll_writable(sock.as_raw_fd(), done.user_data).is_ok() {
                        self.conns[i].lent.connect = true;
                    }
                }
            }
            RingOp::Recv => {
                self.conns[i].lent.recv = false;
                match usize::try_from(result) {
                    Ok(0) => {
                        self.after_read(i, true);
                    }
                    Ok(n) => {
                        // The kernel wrote these n bytes into the spare room lent to it.
                        self.conns[i].rbuf.filled(n);
                        self.tally.counts.bytes_read += n as u64;
                        if self.after_read(i, false) {
                            self.pump(i, self.plan.clock.now());
                            self.arm_recv(i, now);
                        }
                    }
                    Err(_) => self.read_failed(i, &io::Error::from_raw_os_error(-result)),
                }
            }
            RingOp::Send => {
                let c = &mut self.conns[i];
                c.lent.send = false;
                match usize::try_from(result) {
                    Ok(n) => {
                        c.lent.spos += n;
                        c.written += n as u64;
                        self.tally.counts.bytes_written += n as u64;
                        if c.lent.spos >= c.lent.sending.len() {
                            c.lent.sending.clear();
                            c.lent.spos = 0;
                            c.write_blocked_since = None;
                        } else {
                            // A partial send: the kernel tried it as it was submitted and the
                            // socket's buffer filled then. Blocked from that moment, as the
                            // epoll engine's EAGAIN would have said, not from this completion
                            // (which may be reaped much later).
                            c.write_blocked_since = Some(c.lent.sent_at);
                        }
                        // The rest of a partial send, or what queued up behind it.
                        if self.flush(i, now) {
                            self.pump(i, now);
                        }
                    }
                    Err(_) => {
                        let e = io::Error::from_raw_os_error(-result);
                        self.conn_failed(i, io_error_kind(&e, true), format!("write: {e}"), now);
                    }
                }
            }
            RingOp::Cancel => {}
        }
    }

    /// `--engine uring`: lends connection `i`'s read buffer to a receive, unless one is in
    /// flight or the connection is not open.
    fn arm_recv(&mut self, i: usize, now: u64) {
        let c = &mut self.conns[i];
        let Io::Uring(ring) = &mut self.io else {
            return;
        };
        let Some(fd) = c.sock.as_ref().map(|s| s.as_raw_fd()) else {
            return;
        };
        if c.lent.recv || c.state != State::Open {
            return;
        }
        let spare = c.rbuf.spare(READ_CHUNK);
        let user_data = ring::tag(RingOp::Recv, i, c.lent.gen);
        // SAFETY: the spare room stays where it is and is not touched until the receive
        // completes: `lent.recv` keeps every other user of `rbuf` off it (the next receive,
        // `close`, which orphans the buffer instead of reusing it), and replies are taken
        // from it only after a completion, when nothing is lent.
        let pushed = unsafe { ring.recv(fd, spare.as_mut_ptr(), spare.len(), user_data) };
        match pushed {
            Ok(()) => c.lent.recv = true,
            Err(e) => self.conn_failed(i, ErrorKind::LocalResource, format!("io_uring: {e}"), now),
        }
    }

    // ----- requests ----------------------------------------------------------------------

    /// Whether connection `i` may start another request now (pipeline room, K, budget).
    fn may_start(&self, i: usize) -> bool {
        let c = &self.conns[i];
        c.state == State::Open
            && !self.draining
            && c.retry.is_empty()
            && (c.hello_done || !self.plan.says_hello(c))
            && c.in_flight.len() < self.plan.cfg.pipeline as usize
            && self
                .plan
                .cfg
                .requests_per_conn
                .is_none_or(|k| c.on_this_socket < k)
            && self.budget != Some(0)
    }

    /// Starts every request connection `i` may start now, writes them, and (open loop) arms
    /// its next deadline.
    fn pump(&mut self, i: usize, now: u64) {
        let plan = self.plan;
        self.resend(i, now);
        match plan.cfg.pacing {
            Pacing::Closed => {
                while self.may_start(i) {
                    self.start_request(i, now, now);
                }
            }
            Pacing::Open(_) => {
                while self.may_start(i) {
                    let due = self.due(i);
                    // Not yet; or never: a request due once the window has ended is not the
                    // run's (a reply landing as the window ends must not start it: it would
                    // count as sent and belong to no step).
                    if due > now || plan.stop_at.is_some_and(|stop| due >= stop) {
                        break;
                    }
                    // The client's own lateness: from when the request could first have
                    // left (its time, or later if the server held the connection up).
                    let c = &self.conns[i];
                    let could_leave = due.max(c.ready_since);
                    if due >= plan.measure_from {
                        stats::record(&mut self.tally.lag, now.saturating_sub(could_leave) / 1000);
                        let c = &mut self.conns[i];
                        if let Some(last) = c.last_sent.replace(now) {
                            self.tally.gaps.record(now.saturating_sub(last));
                        }
                    }
                    self.start_request(i, due, now);
                }
                if self.may_start(i) {
                    let next = self.due(i);
                    let c = &mut self.conns[i];
                    if plan.stop_at.is_none_or(|stop| next < stop) && c.timer_due != Some(next) {
                        c.timer_due = Some(next);
                        self.heap.push(Reverse((next, i)));
                    }
                }
            }
        }
        if !self.conns[i].wbuf.is_empty() {
            self.flush(i, now);
        }
        self.maybe_recycle(i, now);
    }

    /// Open loop: the scheduled time of connection `i`'s next request: a Poisson slot's
    /// own draw, or on the fixed timetable when the schedule's count reaches `g + k·N`.
    fn due(&self, i: usize) -> u64 {
        let c = &self.conns[i];
        if let Some(p) = &c.poisson {
            return p.due();
        }
        let Some(tt) = &self.plan.timetable else {
            return 0;
        };
        let n = self.plan.cfg.connections as f64;
        tt.time_of(c.global as f64 + c.next_k as f64 * n) as u64
    }

    /// Queues the requests waiting to be resent on connection `i`, oldest first, as the
    /// pipeline allows, once the connection is open (and, in a session, its HELLO answered).
    /// They go out before any new request, with the same id and start time.
    fn resend(&mut self, i: usize, now: u64) {
        let plan = self.plan;
        let pipeline = plan.cfg.pipeline as usize;
        loop {
            let c = &mut self.conns[i];
            if c.state != State::Open
                || c.retry.is_empty()
                || c.in_flight.len() >= pipeline
                || (!c.hello_done && plan.says_hello(c))
            {
                return;
            }
            let Some(mut p) = c.retry.pop_front() else {
                return;
            };
            let before = c.wbuf.len();
            let encoded = if let Some(session) = c.session.as_mut() {
                session.queued_max = session.queued_max.max(p.id);
                // The same (client, seq), key and amount: the server can tell it is a retry.
                let low = lowest_unanswered(c).map_or(p.id, |l| l.min(p.id));
                plan.workload
                    .encode_incr(p.id, p.key as usize, low, &mut c.wbuf)
                    .map_err(|e| e.to_string())
            } else {
                plan.workload.encode(p.id, &mut self.scratch, &mut c.wbuf)
            };
            if let Err(e) = encoded {
                c.retry.push_front(p);
                let why = format!("cannot encode the request: {e}");
                self.conn_failed(i, ErrorKind::Protocol, why, now);
                return;
            }
            let len = (c.wbuf.len() - before) as u64;
            c.queued += len;
            if p.start >= plan.measure_from {
                self.tally.counts.request_bytes += len;
            }
            p.end = c.queued;
            p.sent = now;
            p.attempts += 1;
            c.on_this_socket += 1;
            c.in_flight.push_back(p);
            if p.start >= plan.measure_from {
                self.tally.counts.retries += 1;
            }
            if self.draining {
                self.drain_deadline = self.drain_deadline.max(now + ns(plan.cfg.timeout));
            }
        }
    }

    /// Queues one request on connection `i`: `start` is its scheduled (open) or send (closed)
    /// time, `now` the send time.
    fn start_request(&mut self, i: usize, start: u64, now: u64) {
        let plan = self.plan;
        let measured = start >= plan.measure_from;
        let c = &mut self.conns[i];
        let before = c.wbuf.len();
        let (id, key, encoded) = match c.session.as_mut() {
            Some(session) => {
                // In a session the id is the next sequence number, and the slot's requests
                // go round the counters (from a different one per slot).
                session.used += 1;
                let seq = session.used;
                session.queued_max = seq;
                let keys = plan.workload.key_count().max(1) as u64;
                let key = ((c.global + c.next_k) % keys) as usize;
                let low = lowest_unanswered(c).map_or(seq, |l| l.min(seq));
                let encoded = plan
                    .workload
                    .encode_incr(seq, key, low, &mut c.wbuf)
                    .map_err(|e| e.to_string());
                (seq, key as u32, encoded)
            }
            None => {
                // Ids are unique across the run: the slot in the high bits, a sequence in
                // the low.
                let id = (c.global << 40) | (c.next_k & ((1 << 40) - 1));
                let encoded = plan.workload.encode(id, &mut self.scratch, &mut c.wbuf);
                (id, 0, encoded)
            }
        };
        if let Err(e) = encoded {
            // The configuration was checked, so this cannot happen; were it to, report it
            // rather than send nothing forever.
            let why = format!("cannot encode the request: {e}");
            self.conn_failed(i, ErrorKind::Protocol, why, now);
            return;
        }
        let len = (c.wbuf.len() - before) as u64;
        c.queued += len;
        if measured {
            self.tally.counts.request_bytes += len;
        }
        c.in_flight.push_back(Pending {
            id,
            start,
            sent: now,
            kind: Kind::Request,
            key,
            attempts: 1,
            writes: 0,
            end: c.queued,
        });
        c.next_k += 1;
        if let (Some(p), Some(tt)) = (c.poisson.as_mut(), &plan.timetable) {
            p.advance(tt);
        }
        c.on_this_socket += 1;
        if measured {
            self.tally.counts.sent += 1;
            self.interval_sent += 1;
            if let Some(step) = self.step_of(start) {
                step.sent += 1;
            }
            if let Some(b) = self.budget.as_mut() {
                *b -= 1;
            }
        }
    }

    /// Writes connection `i`'s queued bytes until done or `EAGAIN`. Returns false if the
    /// connection failed.
    fn flush(&mut self, i: usize, now: u64) -> bool {
        if let Io::Uring(ring) = &mut self.io {
            return match lend_send(ring, i, &mut self.conns[i], now) {
                Ok(()) => true,
                Err(e) => {
                    self.conn_failed(i, ErrorKind::LocalResource, format!("io_uring: {e}"), now);
                    false
                }
            };
        }
        let c = &mut self.conns[i];
        let Some(sock) = c.sock.as_mut() else {
            return false;
        };
        while c.wpos < c.wbuf.len() {
            match sock.write(&c.wbuf[c.wpos..]) {
                Ok(n) => {
                    c.wpos += n;
                    c.written += n as u64;
                    c.write_blocked_since = None;
                    self.tally.counts.bytes_written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.write_blocked_since.get_or_insert(now);
                    return true;
                }
                // write(2): EINTR retried.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let kind = io_error_kind(&e, true);
                    self.conn_failed(i, kind, format!("write: {e}"), now);
                    return false;
                }
            }
        }
        c.wbuf.clear();
        c.wpos = 0;
        true
    }

    /// Reads everything available on connection `i` and checks the replies. `read_closed`:
    /// the event also reported the peer's FIN (or an error), which must be read to the end.
    /// Returns false if the connection was closed.
    fn read(&mut self, i: usize, read_closed: bool) -> bool {
        let mut eof = false;
        loop {
            let c = &mut self.conns[i];
            let Some(sock) = c.sock.as_mut() else {
                return false;
            };
            let spare = c.rbuf.spare(READ_CHUNK);
            let room = spare.len();
            match sock.read(spare) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    c.rbuf.filled(n);
                    self.tally.counts.bytes_read += n as u64;
                    // A short read emptied the socket's receive queue: with edge-triggered
                    // epoll, bytes (or a FIN) arriving after it raise a new edge, so the read
                    // that would only say EAGAIN can be skipped — one syscall less per reply
                    // at depth 1. Not when this event already carried the FIN: no new edge
                    // would come for it, and the EOF would go unseen.
                    if n < room && !read_closed {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // read(2): EINTR retried.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.read_failed(i, &e);
                    return false;
                }
            }
        }
        self.after_read(i, eof)
    }

    /// The read failed with `e`: replies that arrived before (a reset) still count, then the
    /// connection fails.
    fn read_failed(&mut self, i: usize, e: &io::Error) {
        let now = self.plan.clock.now();
        if !self.take_replies(i, now) {
            return;
        }
        let kind = io_error_kind(e, false);
        self.conn_failed(i, kind, format!("read: {e}"), now);
    }

    /// Bytes were read into connection `i`'s buffer, and maybe the end of the stream (`eof`):
    /// checks the replies, and decides what a close by the server means. Returns false if the
    /// connection was closed.
    fn after_read(&mut self, i: usize, eof: bool) -> bool {
        let now = self.plan.clock.now();
        if !self.take_replies(i, now) {
            return false;
        }
        if eof {
            let c = &mut self.conns[i];
            if c.rbuf.is_empty() && (c.in_flight.is_empty() || c.error_replied) {
                // Requests sent after the ERROR reply that explains this close end (or wait
                // for a resend) without a second error for the same event.
                self.write_off(i, true);
                let c = &self.conns[i];
                // The server closed a connection that owed nothing (an idle timeout, or the
                // close after a "server busy" refusal): not an error, but counted, and the
                // slot reconnects — at once if the connection had been answering, after a
                // backoff if the server closes connections before answering any.
                self.tally.counts.closed_idle += 1;
                let useful = c.answered;
                self.charge_unused_connection(i, now);
                if useful && !self.draining {
                    self.close(i);
                    self.conns[i].state = State::Down { retry_at: now };
                } else {
                    self.retry_later(i, now);
                }
                return false;
            }
            let why = if c.rbuf.is_empty() {
                format!(
                    "server closed the connection with {} requests unanswered",
                    c.in_flight.len()
                )
            } else {
                format!(
                    "server closed the connection in the middle of a reply ({} bytes of it)",
                    c.rbuf.len()
                )
            };
            self.conn_failed(i, ErrorKind::Eof, why, now);
            return false;
        }
        true
    }

    /// Checks every complete reply in connection `i`'s buffer against its request. Returns
    /// false if the connection was closed.
    fn take_replies(&mut self, i: usize, now: u64) -> bool {
        let plan = self.plan;
        let pipeline = plan.cfg.pipeline as usize;
        loop {
            let c = &mut self.conns[i];
            if c.rbuf.is_empty() {
                return true;
            }
            let Some(&front) = c.in_flight.front() else {
                return self.take_unsolicited(i, now);
            };
            if front.kind == Kind::Hello {
                if !self.take_hello(i, now) {
                    return false;
                }
                if self.conns[i].hello_done || self.conns[i].sock.is_none() {
                    continue;
                }
                return true;
            }
            let c = &mut self.conns[i];
            let measured = front.start >= plan.measure_from;
            let check = plan.workload.check(front.id, c.rbuf.data());
            if check == Check::Incomplete {
                return true;
            }
            let mut p = front;
            c.in_flight.pop_front();
            if c.in_flight.len() + 1 == pipeline {
                c.ready_since = now;
            }
            match check {
                Check::Incomplete => return true,
                Check::Ok { len } => {
                    c.rbuf.consume(len);
                    if measured {
                        self.tally.counts.reply_bytes += len as u64;
                    }
                    c.backoff = BACKOFF_FIRST_NS;
                    c.answered = true;
                    self.failures_in_a_row = 0;
                    self.reply_failures_in_a_row = 0;
                    if !plan.verified.load(Ordering::Relaxed) {
                        plan.verified.store(true, Ordering::Relaxed);
                    }
                    p.writes += 1;
                    self.finish(p, Outcome::Ok);
                    if measured {
                        let us = now.saturating_sub(p.start) / 1000;
                        stats::record(&mut self.tally.latency, us);
                        stats::record(&mut self.interval, us);
                        if let Some(step) = self.step_of(p.start) {
                            step.ok += 1;
                            stats::record(&mut step.latency, us);
                        }
                        if let Pacing::Open(_) = plan.cfg.pacing {
                            let raw = now.saturating_sub(p.sent) / 1000;
                            stats::record(&mut self.tally.uncorrected, raw);
                        }
                        self.tally.counts.ok += 1;
                        self.interval_ok += 1;
                        // Served in the window: in a run limited by time, a connection first
                        // answered after its end (when loadgen's closing connections freed a
                        // bounded server's worker) was not. A run limited by count has no
                        // such end: it drains from its last send, and every reply counts.
                        if plan.stop_at.is_none_or(|stop| now < stop) {
                            self.conns[i].served = true;
                        }
                    }
                }
                Check::Failed { len, kind, why } => {
                    c.rbuf.consume(len);
                    c.error_replied |= kind == ErrorKind::ErrorReply;
                    if kind == ErrorKind::ErrorReply {
                        // Refused: this attempt did not run (an earlier one may have).
                        self.finish(p, refused(&p));
                    } else {
                        // An answer that does not verify: the server did something with it.
                        p.writes += 1;
                        self.finish(p, Outcome::Indeterminate);
                    }
                    // Not towards giving up: an ERROR reply is an answer in the protocol
                    // ("server busy" means come back later, and a client driving a server at
                    // its connection cap must keep coming back). The cause line still says
                    // what it was.
                    self.error(kind, why);
                }
                Check::Refused { len, refusal, why } => {
                    c.rbuf.consume(len);
                    c.error_replied = true;
                    self.tally.refusals.add(refusal);
                    self.error(ErrorKind::ErrorReply, why);
                    match refusal {
                        // The server cannot say whether it ran: neither can the client.
                        Refusal::TooOld => self.finish(p, Outcome::Indeterminate),
                        // Not run now (the server no longer knows the client); an earlier
                        // attempt, if one was written, may have.
                        Refusal::Expired => {
                            self.finish(p, refused(&p));
                            self.start_over(i, now);
                            return false;
                        }
                        // Not run now; an earlier attempt, if one was written, may have.
                        Refusal::Conflict | Refusal::NoSession | Refusal::KeysFull => {
                            self.finish(p, refused(&p))
                        }
                    }
                }
                Check::Fatal { why } => {
                    // The request at the front got garbage for an answer: something came
                    // back, so it was written, and may have run; the rest go with the
                    // connection.
                    p.writes += 1;
                    self.finish(p, Outcome::Indeterminate);
                    self.conn_failed(i, ErrorKind::Protocol, why, now);
                    return false;
                }
            }
        }
    }

    /// `--op incr`: the reply to connection `i`'s HELLO, at the front. Returns false if the
    /// connection was closed; sets `hello_done` once the session is open.
    fn take_hello(&mut self, i: usize, now: u64) -> bool {
        let plan = self.plan;
        let c = &mut self.conns[i];
        match plan.workload.check_hello(c.rbuf.data()) {
            Check::Incomplete => true,
            Check::Ok { len } => {
                c.rbuf.consume(len);
                c.in_flight.pop_front();
                c.hello_done = true;
                c.ready_since = now;
                true
            }
            Check::Refused {
                len,
                refusal: Refusal::Expired,
                why,
            } => {
                c.rbuf.consume(len);
                c.in_flight.pop_front();
                self.tally.refusals.add(Refusal::Expired);
                self.error(ErrorKind::ErrorReply, why);
                self.start_over(i, now);
                false
            }
            Check::Refused { refusal, why, .. } => {
                self.tally.refusals.add(refusal);
                self.conn_failed(i, ErrorKind::ErrorReply, format!("HELLO: {why}"), now);
                false
            }
            Check::Failed { kind, why, .. } => {
                self.conn_failed(i, kind, format!("HELLO: {why}"), now);
                false
            }
            Check::Fatal { why } => {
                self.conn_failed(i, ErrorKind::Protocol, format!("HELLO: {why}"), now);
                false
            }
        }
    }

    /// `--op incr`: the server said EXPIRED. Whatever else was in flight waits for a resend
    /// or ends, the slot takes a fresh client id, and it reconnects at once to say HELLO as
    /// that client: a new connection is the one place every server takes a HELLO.
    fn start_over(&mut self, i: usize, now: u64) {
        self.write_off(i, true);
        self.renew_session(i);
        self.close(i);
        self.conns[i].state = State::Down { retry_at: now };
    }

    /// Bytes arrived with no request in flight. An ERROR reply that answers no request in
    /// particular (a "server busy" refusal sent on accept) is an `error_reply`, and ends the
    /// connection; anything else is a reply to nothing. Returns false if the connection was
    /// closed.
    fn take_unsolicited(&mut self, i: usize, now: u64) -> bool {
        let c = &mut self.conns[i];
        // Checked as if it answered request 0: an ERROR reply with id 0 or none is one that
        // answers no request in particular; any other reply is one too many.
        match self.plan.workload.check(0, c.rbuf.data()) {
            Check::Incomplete => true,
            Check::Failed {
                kind: ErrorKind::ErrorReply,
                why,
                ..
            } => {
                // The server refused this connection ("server busy") and is closing it:
                // close it first, so no request is sent into the closing connection only to
                // be reported as an EOF, and come back after a backoff.
                self.error(ErrorKind::ErrorReply, why);
                self.charge_unused_connection(i, now);
                self.retry_later(i, now);
                false
            }
            Check::Refused { refusal, why, .. } => {
                // A session refusal that answers no request: as above, and counted.
                self.tally.refusals.add(refusal);
                self.error(ErrorKind::ErrorReply, why);
                self.charge_unused_connection(i, now);
                self.retry_later(i, now);
                false
            }
            Check::Ok { .. } | Check::Failed { .. } | Check::Fatal { .. } => {
                let why = format!("{} bytes arrived with no request in flight", c.rbuf.len());
                self.conn_failed(i, ErrorKind::Mismatch, why, now);
                false
            }
        }
    }

    /// Short connections: once K requests are answered, close and reconnect at once.
    fn maybe_recycle(&mut self, i: usize, now: u64) {
        let Some(k) = self.plan.cfg.requests_per_conn else {
            return;
        };
        let c = &self.conns[i];
        if c.state == State::Open && c.on_this_socket >= k && c.in_flight.is_empty() {
            let resends = !c.retry.is_empty();
            self.close(i);
            self.conns[i].state = State::Down { retry_at: now };
            if (self.draining || self.budget == Some(0)) && !resends {
                self.conns[i].state = State::Down { retry_at: u64::MAX };
            } else {
                self.connect(i, now);
            }
        }
    }

    // ----- time --------------------------------------------------------------------------

    /// Open loop: starts the sends that have come due.
    fn run_due(&mut self, now: u64) {
        while let Some(&Reverse((due, i))) = self.heap.peek() {
            if due > now {
                break;
            }
            self.heap.pop();
            if self.conns[i].timer_due != Some(due) {
                continue; // stale: the connection was re-armed or closed since
            }
            self.conns[i].timer_due = None;
            self.pump(i, now);
        }
    }

    fn arm_timer(&mut self, due: u64) {
        if self.timer_armed == Some(due) {
            return;
        }
        if let Io::Epoll { timer: Some(t), .. } = &self.io {
            let at: TimeSpec = self.plan.clock.monotonic(due);
            // timerfd_settime(2) with TFD_TIMER_ABSTIME: a deadline in the past fires at once.
            if t.set(
                Expiration::OneShot(at),
                TimerSetTimeFlags::TFD_TIMER_ABSTIME,
            )
            .is_ok()
            {
                self.timer_armed = Some(due);
            }
        }
    }

    fn timer_fired(&mut self) {
        // Learn how late wake-ups are on this machine: arm the next timer early by about the
        // 90th percentile of the lateness seen (an average plus a third, moving slowly).
        if let Some(armed) = self.timer_armed {
            let late = self.plan.clock.now().saturating_sub(armed);
            let target = (late + late / 3).min(WAKE_MARGIN_MAX_NS);
            self.wake_margin = (self.wake_margin * 15 + target) / 16;
        }
        self.timer_armed = None;
        if let Io::Epoll { timer: Some(t), .. } = &self.io {
            // Drain the expiration count so the fd stops being readable (EAGAIN if a re-arm
            // already reset it).
            let mut buf = [0u8; 8];
            let _ = nix::unistd::read(t.as_fd().as_raw_fd(), &mut buf);
        }
    }

    fn housekeeping(&mut self, now: u64) {
        let timeout = ns(self.plan.cfg.timeout);
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            match c.state {
                // A slot with resends waiting reconnects even in the drain, or with its
                // budget spent: they were started, and the run owes them their attempts.
                State::Down { retry_at }
                    if retry_at <= now
                        && (!c.retry.is_empty() || (!self.draining && self.budget != Some(0))) =>
                {
                    self.connect(i, now);
                    self.pump_if_open(i, now);
                }
                State::Connecting { since } if now.saturating_sub(since) > timeout => {
                    let why = format!(
                        "no connection to {} within {:?}",
                        self.plan.cfg.addr, self.plan.cfg.timeout
                    );
                    self.conn_failed(i, ErrorKind::ConnectTimeout, why, now);
                }
                State::Open => {
                    if let Some(since) = c.write_blocked_since {
                        if now.saturating_sub(since) > timeout {
                            let why =
                                format!("the server took no bytes for {:?}", self.plan.cfg.timeout);
                            self.conn_failed(i, ErrorKind::WriteTimeout, why, now);
                            continue;
                        }
                    }
                    if let Some(front) = c.in_flight.front() {
                        if now.saturating_sub(front.sent) > timeout {
                            let (kind, why) = if c.rbuf.is_empty() {
                                (
                                    ErrorKind::ReadTimeoutEmpty,
                                    format!("no reply within {:?}", self.plan.cfg.timeout),
                                )
                            } else {
                                (
                                    ErrorKind::ReadTimeoutPartial,
                                    format!(
                                        "only {} bytes of a reply within {:?}",
                                        c.rbuf.len(),
                                        self.plan.cfg.timeout
                                    ),
                                )
                            };
                            self.conn_failed(i, kind, why, now);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn pump_if_open(&mut self, i: usize, now: u64) {
        if self.conns[i].state == State::Open {
            self.pump(i, now);
        }
    }

    /// Open loop, at the end: scheduled sends in the measured window that never left, in
    /// total and per step.
    fn count_unsent(&mut self, now: u64) {
        let Some(tt) = &self.plan.timetable else {
            return;
        };
        if self.budget == Some(0) {
            return;
        }
        // A run that gave up on an unreachable server never sent the rest of its window's
        // timetable either.
        let end = match self.plan.stop_at {
            Some(stop) if self.gave_up => stop,
            Some(stop) => stop.min(now),
            None => now,
        };
        let from = self.plan.measure_from;
        // The windows to count in: the whole measured window, or each step's part of it.
        let bins: Vec<(u64, u64)> = if tt.steps().is_empty() {
            vec![(from, end.max(from))]
        } else {
            tt.steps()
                .iter()
                .map(|&(a, b, _)| (a.min(end), b.min(end)))
                .collect()
        };
        let mut counts = vec![0u64; bins.len()];
        let n = self.plan.cfg.connections as f64;
        // Requests k of slot g due before t: those with g + k·n < Λ(t).
        let due_before = |global: u64, t: u64| -> u64 {
            let x = tt.count(t) - global as f64;
            if x <= 0.0 {
                0
            } else {
                (x / n).ceil() as u64
            }
        };
        // A Poisson slot's k-th due time has no closed form: its timetable is drawn from the
        // next request on, within one budget for the whole thread, then estimated.
        let mut budget = COUNT_EXACTLY;
        for c in &self.conns {
            if let Some(p) = &c.poisson {
                p.count_due(tt, &bins, &mut counts, &mut budget);
                continue;
            }
            for (&(a, b), count) in bins.iter().zip(counts.iter_mut()) {
                *count +=
                    due_before(c.global, b).saturating_sub(c.next_k.max(due_before(c.global, a)));
            }
        }
        self.tally.counts.unsent += counts.iter().sum::<u64>();
        for (step, n) in self.tally.steps.iter_mut().zip(counts) {
            step.unsent += n;
        }
    }

    /// The tally of the step whose window holds run time `start`, on a ramp or steps.
    fn step_of(&mut self, start: u64) -> Option<&mut StepTally> {
        let step = self.plan.timetable.as_ref()?.step_of(start)?;
        self.tally.steps.get_mut(step)
    }

    // ----- intervals ---------------------------------------------------------------------

    fn next_interval_at(&self) -> u64 {
        self.plan.measure_from + (self.interval_index + 1) * NANOS
    }

    fn flush_intervals(&mut self, now: u64) {
        while now >= self.next_interval_at() {
            self.send_interval(now);
            self.interval_index += 1;
        }
    }

    fn send_interval(&mut self, now: u64) {
        if now < self.plan.measure_from {
            // Warmup: nothing was recorded, but errors are reported from the first interval.
            return;
        }
        let latency = std::mem::replace(&mut self.interval, stats::new_histogram());
        // The collector may have gone (the run is ending); intervals are then moot.
        let _ = self.tx.send(ToCollector::Interval(Interval {
            thread: self.thread,
            index: self.interval_index,
            latency,
            ok: std::mem::take(&mut self.interval_ok),
            sent: std::mem::take(&mut self.interval_sent),
            errors: std::mem::take(&mut self.interval_errors),
            end: now.min(self.next_interval_at()),
        }));
    }
}

/// How an unanswered request ends: indeterminate if any attempt left completely (it may have
/// run), failed if none did.
fn unanswered(p: &Pending) -> Outcome {
    if p.writes > 0 {
        Outcome::Indeterminate
    } else {
        Outcome::Unwritten
    }
}

/// How a request answered with an ERROR ends: this attempt did not run, so it failed, unless
/// an earlier attempt left completely (then it may have run, and is indeterminate).
fn refused(p: &Pending) -> Outcome {
    if p.writes > 0 {
        Outcome::Indeterminate
    } else {
        Outcome::Refused
    }
}

/// `--op incr`: the lowest seq of connection `c`'s session still waiting for its reply, in
/// flight or to be resent (`low`: the server may forget every record below it). Both queues
/// are in seq order, and resends are all older than what is in flight behind them.
fn lowest_unanswered(c: &Conn) -> Option<u64> {
    let in_flight = c
        .in_flight
        .iter()
        .find(|p| p.kind == Kind::Request)
        .map(|p| p.id);
    let waiting = c.retry.front().map(|p| p.id);
    match (in_flight, waiting) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `--op incr`: the client id of slot `global` after `renewals` expired sessions: the base
/// plus the slot, plus a whole run's worth of slots per renewal, so no two slots (or two
/// sessions of one slot) share an id. `checked` left room for it not to wrap.
fn client_id(cfg: &RunConfig, global: u64, renewals: u64) -> u64 {
    let base = cfg.client_id_base.unwrap_or(1);
    let stride = u64::from(cfg.connections);
    base.wrapping_add(global)
        .wrapping_add(renewals.wrapping_mul(stride))
        .max(1)
}

/// `--engine uring`: connection `c` (index `i`) closes: every operation it has in flight is
/// cancelled, and the buffer each one holds becomes the ring's orphan, freed at its completion
/// (see [`ring`]). The next socket of the slot starts a new generation.
fn disown(ring: &mut Ring, i: usize, c: &mut Conn) {
    let gen = c.lent.gen;
    if c.lent.connect {
        let _ = ring.cancel(ring::tag(RingOp::Connect, i, gen), i, gen);
    }
    if c.lent.recv {
        let user_data = ring::tag(RingOp::Recv, i, gen);
        let rbuf = std::mem::replace(&mut c.rbuf, ReadBuffer::new(READ_CHUNK));
        ring.orphan(user_data, Orphan::Read(rbuf));
        let _ = ring.cancel(user_data, i, gen);
    }
    if c.lent.send {
        let user_data = ring::tag(RingOp::Send, i, gen);
        ring.orphan(
            user_data,
            Orphan::Write(std::mem::take(&mut c.lent.sending)),
        );
        let _ = ring.cancel(user_data, i, gen);
    }
    c.lent = Lent {
        gen: gen.wrapping_add(1) & GEN_MASK,
        sending: std::mem::take(&mut c.lent.sending),
        ..Lent::default()
    };
    c.lent.sending.clear();
}

/// `--engine uring`: lends connection `c`'s queued bytes to a send, unless one is in flight
/// (then they wait in `wbuf` for its completion). The bytes move to `lent.sending`, so that
/// requests started meanwhile can grow `wbuf` without moving what the kernel is reading.
fn lend_send(ring: &mut Ring, i: usize, c: &mut Conn, now: u64) -> io::Result<()> {
    let Some(fd) = c.sock.as_ref().map(|s| s.as_raw_fd()) else {
        return Ok(());
    };
    if c.lent.send {
        return Ok(());
    }
    if c.lent.sending.is_empty() {
        if c.wbuf.is_empty() {
            return Ok(());
        }
        std::mem::swap(&mut c.wbuf, &mut c.lent.sending);
        c.lent.spos = 0;
    }
    let rest = &c.lent.sending[c.lent.spos..];
    let user_data = ring::tag(RingOp::Send, i, c.lent.gen);
    // SAFETY: `lent.sending` is neither changed nor dropped while `lent.send` is set: new
    // requests go to `wbuf`, and `disown` makes it an orphan if the connection closes first.
    unsafe { ring.send(fd, rest.as_ptr(), rest.len(), user_data) }?;
    c.lent.send = true;
    c.lent.sent_at = now;
    // Until the send completes whole, the socket counts as blocked from now: a send the
    // socket cannot take at all completes never, as a peer that reads nothing would have it.
    c.write_blocked_since.get_or_insert(now);
    Ok(())
}

/// `--engine uring`: clears O_NONBLOCK once connected. The ring waits for the socket itself;
/// on a nonblocking socket an operation the kernel hands to a worker thread could end in
/// EAGAIN instead of waiting.
fn set_blocking(sock: &TcpStream) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let fd = sock.as_raw_fd();
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Opens a nonblocking TCP socket, binds it to `source` if given, and starts connecting.
fn start_connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    // socket(2): EMFILE here is the client's own limit (LocalResource).
    let fd = socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // Requests are small and latency is the point: no Nagle delay.
    socket::setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
    if let Some(ip) = source {
        if ip.is_ipv4() {
            // IP_BIND_ADDRESS_NO_PORT: pick the port at connect time, per destination, so
            // each source address gets its full ephemeral range. Best effort (Linux ≥ 4.2).
            let _ = socket::setsockopt(&fd, sockopt::IpBindAddressNoPort, &true);
        }
        socket::bind(
            fd.as_raw_fd(),
            &SockaddrStorage::from(SocketAddr::new(ip, 0)),
        )?;
    }
    // connect(2) on a nonblocking socket: EINPROGRESS is the normal answer; the outcome
    // arrives as writability. Loopback may also connect (or refuse) at once.
    match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Ok(()) | Err(Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(TcpStream::from_std(std::net::TcpStream::from(fd)))
}

fn connect_error_kind(e: &io::Error) -> ErrorKind {
    match e.raw_os_error().map(Errno::from_raw) {
        Some(Errno::ECONNREFUSED) => ErrorKind::ConnectRefused,
        Some(Errno::ETIMEDOUT) => ErrorKind::ConnectTimeout,
        Some(
            Errno::EADDRNOTAVAIL
            | Errno::EADDRINUSE
            | Errno::EMFILE
            | Errno::ENFILE
            | Errno::ENOBUFS
            | Errno::ENOMEM,
        ) => ErrorKind::LocalResource,
        _ => ErrorKind::ConnectOther,
    }
}

/// The kind of a read or write failure; `writing` says which (the kernel's own `ETIMEDOUT`,
/// after its retransmissions give up, means the peer stopped acknowledging what was written).
fn io_error_kind(e: &io::Error, writing: bool) -> ErrorKind {
    match e.raw_os_error().map(Errno::from_raw) {
        Some(Errno::ENOBUFS | Errno::ENOMEM) => ErrorKind::LocalResource,
        Some(Errno::ETIMEDOUT) if writing => ErrorKind::WriteTimeout,
        Some(Errno::ETIMEDOUT) => ErrorKind::ReadTimeoutEmpty,
        _ => ErrorKind::Reset,
    }
}

/// Splits `total` over `parts` as evenly as possible (the first ones get the remainder).
pub fn share(total: u64, parts: u64, index: u64) -> u64 {
    total / parts + u64::from(index < total % parts)
}
