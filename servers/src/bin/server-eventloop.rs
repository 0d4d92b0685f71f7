//! server-eventloop: one process, one thread, every client — nonblocking sockets and a
//! readiness API (`--backend select|poll|epoll`).
//!
//! No thread or process per client: the single thread asks the kernel which sockets are ready,
//! and for each one does whatever can be done *without blocking* — read what has arrived,
//! answer the complete requests, write what the socket will take — then moves on. The state a
//! blocking server keeps on a thread's stack (where in the frame am I, what is left to write)
//! lives in a per-connection struct instead: a read buffer that keeps half a frame until the
//! rest arrives, and a write buffer that keeps what the kernel did not take. This is Redis,
//! nginx (one loop per worker), Node.js.
//!
//! Lifecycle:
//! - The loop owns everything: the listener, the self-pipe for signals, every connection. All
//!   are registered with the poller under a token; the loop sleeps in `wait` until something
//!   is ready (or the 100 ms housekeeping tick).
//! - Listener ready: accept until `EAGAIN`, make each socket nonblocking, register it for reading.
//!   Out of descriptors, the acceptor keeps the loop idle by shedding: a spare descriptor, held
//!   in reserve, is freed to accept the client, who is told "server busy" and closed at once
//!   (`net::Acceptor::with_spare`). Other accept failures pause accepting until a later tick.
//! - Connection ready: read until `EAGAIN`, answer every complete request (the same `answer_all`
//!   the blocking servers use), write until `EAGAIN`. Writability is watched only while output
//!   is pending; reading stops while more than `--max-pending-output` bytes wait (backpressure:
//!   a client that does not read its replies cannot grow the server's memory).
//! - A connection ends on EOF, a fatal protocol error (after its reply is sent), the idle
//!   timeout (no request and nothing left to send) or the write timeout (checked on the tick),
//!   or shutdown: deregister, then close.
//! - SIGINT/SIGTERM: stop accepting, answer what each client has already sent, stop reading,
//!   send what is pending, close; exit after the last connection or `--grace`.
//!
//! # Run it
//! ```text
//! cargo run --release --bin server-eventloop -- --addr 127.0.0.1:7000 --backend epoll
//! cargo run --release --bin server-eventloop -- --addr 127.0.0.1:7000 --backend select
//! ```
//!
//! # Trade-offs
//! One thread serves thousands of connections with a few kilobytes each and no context switch
//! per request — but it is *one* thread: a SLEEP request blocks the loop and every client waits
//! for it, and a SPIN request burns the only CPU the server uses. That is the lesson, not a bug;
//! real event-loop servers push blocking work to a thread pool (Node's libuv, Redis's bio
//! threads) and run one loop per core (nginx workers, Redis 6 I/O threads). Which readiness API
//! the loop uses matters with many idle connections: select and poll scan all of them on every
//! wait, epoll only the ready ones (see `poller.rs`).
//!
//! # See also
//! `docs/models/eventloop.md`.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use echolab_protocol::{Codec, Protocol, ReadBuffer, ServerCodecs};
use echolab_servers::cli::{parse_size, ServerArgs};
use echolab_servers::conn::{self, Answered, Ended, Limits, Outcome, Tally};
use echolab_servers::net::{self, Acceptor};
use echolab_servers::outbuf::OutBuf;
use echolab_servers::poller::{Backend, Event, Interest, Poller};
use echolab_servers::session::{Session, Store};
use echolab_servers::signals::SignalPipe;
use echolab_servers::stats::{Counters, Report, SharedCounters};
use echolab_servers::READ_CHUNK;
use echolab_servers::{debug, info};

/// One thread, nonblocking sockets, a readiness API.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "echolab server: one thread, nonblocking sockets, select/poll/epoll",
    next_line_help = true
)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,

    /// Readiness API: select (descriptors < 1024 only), poll, or epoll (via mio).
    #[arg(long, value_enum, default_value_t = Backend::Epoll)]
    backend: Backend,

    /// Stop reading from a connection while this many reply bytes wait to be sent (at least 64K).
    ///
    /// Replies to one read's worth of requests may go past it.
    #[arg(long, value_name = "SIZE", default_value = "4M", value_parser = parse_pending_cap, allow_hyphen_values = true)]
    max_pending_output: usize,

    /// The most one connection may write in one turn of the loop; 0: until the kernel takes no more.
    ///
    /// With no budget, one client fetching large replies holds the loop for as long as each
    /// write takes, and every other client waits (see docs/robustness.md for the measurement).
    #[arg(long, value_name = "SIZE", default_value = "64K", value_parser = parse_size, allow_hyphen_values = true)]
    write_budget: usize,
}

/// Tokens 0 and 1 are the listener and the signal pipe; connections count up from 2 and are
/// never reused, so an event for a connection closed earlier in the same batch finds nothing.
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

fn main() -> ExitCode {
    let args: Args = echolab_servers::parse_args(|a: &Args| &a.server);
    echolab_servers::main_with("server-eventloop", args.server.process_settings(), || {
        run(args)
    })
}

/// The loop's state. Everything the single thread touches is here, and nothing is shared.
struct EventLoop {
    poller: Box<dyn Poller>,
    connections: HashMap<usize, Connection>,
    next_token: usize,
    codecs: ServerCodecs,
    limits: Limits,
    max_pending_output: usize,
    /// `--write-budget`, with 0 made "no limit".
    write_budget: usize,
    max_connections: usize,
    counters: SharedCounters,
    /// HELLO, INCR and GET's table. In a fork-shared mapping that no other process ever
    /// sees here, and behind a lock that nobody else ever wants: one thread needs neither,
    /// but one type for every model means one code path to trust. (What each connection's
    /// HELLO said is its own `Connection::session`.)
    store: Store,
    /// Connections that used up their read budget with data still waiting: an edge-triggered
    /// poller will not report them again, so the loop serves them again itself.
    still_ready: Vec<usize>,
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
    /// Which client this connection's HELLO named: what a blocking handler keeps on its
    /// stack, kept here between turns.
    session: Session,
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

fn run(args: Args) -> io::Result<()> {
    let started = Instant::now();
    let cfg = &args.server;
    let signals = SignalPipe::install(false)?;
    // With a spare descriptor: out of descriptors, the loop sheds clients rather than pause.
    let acceptor = Acceptor::with_spare(net::bind(cfg.addr, cfg.backlog, false)?)?;
    let mut ev = EventLoop {
        poller: args.backend.create()?,
        connections: HashMap::new(),
        next_token: FIRST_CONNECTION,
        codecs: cfg.protocol.codecs(cfg.max_frame),
        limits: cfg.limits(),
        max_pending_output: args.max_pending_output,
        write_budget: match args.write_budget {
            0 => usize::MAX,
            n => n,
        },
        max_connections: cfg.max_connections as usize,
        counters: SharedCounters::new(1)?,
        store: Store::new(cfg.sessions())?,
        still_ready: Vec::new(),
    };
    ev.poller
        .register(acceptor.listener().as_raw_fd(), LISTENER, Interest::READ)?;
    ev.poller
        .register(signals.fd().as_raw_fd(), SIGNALS, Interest::READ)?;
    net::announce(acceptor.local_addr()?)?;
    info!("backend {}", ev.poller.name());

    // The loop: wait for readiness, then serve whatever is ready — the listener (accept), the
    // signal pipe (begin shutdown), a connection (read, answer, write, maybe close) — and on
    // each tick, the timeouts. The acceptor is dropped, and the listener closed, at shutdown.
    let mut acceptor = Some(acceptor);
    let mut shutdown_deadline: Option<Instant> = None;
    let mut events: Vec<Event> = Vec::with_capacity(1024);
    let mut next_tick = Instant::now() + TICK;
    loop {
        // Sleep until something is ready or the next housekeeping tick; do not sleep at all
        // while some connection still has data it was not given the turn to read.
        let timeout = if ev.still_ready.is_empty() {
            next_tick.saturating_duration_since(Instant::now())
        } else {
            Duration::ZERO
        };
        ev.poller.wait(&mut events, Some(timeout))?;

        for event in &events {
            match event.token {
                LISTENER => {
                    if let Some(a) = &mut acceptor {
                        ev.accept_all(a);
                    }
                }
                SIGNALS => {
                    if signals.take().terminate && shutdown_deadline.is_none() {
                        // Stop accepting (deregister before close), then stop reading.
                        if let Some(a) = acceptor.take() {
                            let _ = ev.poller.deregister(a.listener().as_raw_fd(), LISTENER);
                        }
                        info!(
                            "shutting down: {} connections; waiting up to {:?}",
                            ev.connections.len(),
                            cfg.grace
                        );
                        shutdown_deadline = Some(Instant::now() + cfg.grace);
                        ev.stop_reading_all();
                    }
                }
                token => ev.on_ready(token),
            }
        }
        // Then the connections that ran out of budget (in an earlier turn, or in this one's
        // events above), after everyone else.
        for token in std::mem::take(&mut ev.still_ready) {
            ev.on_ready(token);
        }

        if Instant::now() >= next_tick {
            next_tick = Instant::now() + TICK;
            ev.enforce_timeouts();
            // An accept pause is over: watch the listener again, and accept what queued up
            // meanwhile (edge-triggered epoll would not report it).
            if let Some(a) = &mut acceptor {
                if a.resume_if_due() {
                    ev.poller
                        .register(a.listener().as_raw_fd(), LISTENER, Interest::READ)?;
                    ev.accept_all(a);
                }
            }
        }
        // Shutting down: done once the last connection has closed, or at `--grace`.
        if let Some(deadline) = shutdown_deadline {
            if ev.connections.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                info!(
                    "{} connections still sending after the grace period; closing them",
                    ev.connections.len()
                );
                let tokens: Vec<usize> = ev.connections.keys().copied().collect();
                for token in tokens {
                    ev.close(token, None);
                }
                break;
            }
        }
    }

    // Every connection is closed: the statistics.
    let model = format!("eventloop/{}", ev.poller.name());
    let mut report = Report::new(
        "server-eventloop",
        model,
        cfg.protocol.name(),
        started,
        &ev.counters,
    )
    .with_sessions(&ev.store);
    report
        .extra
        .insert("backend".into(), ev.poller.name().into());
    report.emit(cfg.stats_file.as_deref());
    Ok(())
}

impl EventLoop {
    /// Accepts until `EAGAIN`: with edge-triggered epoll, a connection left in the queue would
    /// not be reported again until another one arrived.
    fn accept_all(&mut self, acceptor: &mut Acceptor) {
        loop {
            let accepted = acceptor.accept_or_shed(|stream, peer| {
                Counters::bump(&self.counters.total().accepted);
                self.refuse(stream, peer, "out of file descriptors");
            });
            let Some((stream, peer)) = accepted else {
                break;
            };
            Counters::bump(&self.counters.total().accepted);
            if self.connections.len() >= self.max_connections {
                self.refuse(stream, peer, "max-connections reached");
                continue;
            }
            self.add(stream, peer);
        }
        if acceptor.is_paused() {
            // Until the tick resumes it: a level-triggered poller would report the listener
            // ready on every wait, and the loop would spin.
            let _ = self
                .poller
                .deregister(acceptor.listener().as_raw_fd(), LISTENER);
        }
    }

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
            self.refuse(stream, peer, "cannot watch the descriptor");
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
                session: Session::default(),
                last_request: now,
                partial_since: None,
                last_write: now,
                interest: Interest::READ,
                finishing: None,
            },
        );
    }

    /// Answers "server busy" (with a blocking socket) and closes.
    fn refuse(&self, stream: TcpStream, peer: SocketAddr, why: &str) {
        conn::refuse(stream, &self.codecs, self.counters.total(), peer, why);
    }

    /// A connection is ready: do all the work that will not block, then watch for what is next.
    ///
    /// Which of readable or writable the event said does not matter: both are tried until
    /// `EAGAIN` (or the read budget), which is what edge triggering requires anyway.
    fn on_ready(&mut self, token: usize) {
        let Some(c) = self.connections.get_mut(&token) else {
            return; // closed earlier in this batch of events
        };
        match drive(
            c,
            &self.codecs,
            &self.store,
            self.max_pending_output,
            self.write_budget,
        ) {
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
            readable: c.finishing.is_none() && c.output.pending() < self.max_pending_output,
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
/// [`READ_BUDGET`] bytes and writing at most `write_budget`. `Err` means: close now.
fn drive(
    c: &mut Connection,
    codecs: &ServerCodecs,
    store: &Store,
    max_pending: usize,
    write_budget: usize,
) -> Result<Turn, Ended> {
    let mut budget = READ_BUDGET;
    let mut allowance = write_budget;
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
                    let Some(codec) = c.codec(codecs) else {
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
                    match conn::answer_all(
                        codec,
                        store,
                        &mut c.session,
                        &mut c.input,
                        &mut c.output,
                        &mut c.tally,
                        before_slow,
                    )? {
                        Answered::Requests(0) => {}
                        Answered::Requests(_) => {
                            c.last_request = Instant::now();
                            // What is left began in this read: its clock starts now.
                            c.partial_since = None;
                        }
                        Answered::Fatal(reason) => c.finishing = Some(Ended::ProtocolError(reason)),
                    }
                    c.partial_since = conn::partial_request_since(&c.input, c.partial_since);
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

impl EventLoop {
    /// On each tick: close connections idle past `--idle-timeout` (with nothing left to send:
    /// a client slowly taking a large reply is not idle), or whose client has not taken any
    /// output for `--write-timeout`, and answer "request timeout" to a request that has been
    /// arriving for longer than `--request-timeout` (then close once that reply is out).
    /// O(connections), ten times a second.
    fn enforce_timeouts(&mut self) {
        let mut too_slow = Vec::new();
        let expired: Vec<(usize, Ended)> = self
            .connections
            .iter()
            .filter_map(|(&token, c)| {
                if !c.output.is_empty() && c.last_write.elapsed() >= self.limits.write_timeout {
                    Some((token, Ended::WriteTimeout))
                } else if c.finishing.is_none()
                    && c.output.is_empty()
                    && c.last_request.max(c.last_write).elapsed() >= self.limits.idle_timeout
                {
                    Some((token, Ended::IdleTimeout))
                } else {
                    // Not while reading is paused for backpressure: the rest of the request
                    // may be waiting in the kernel for us, not for the client.
                    if c.finishing.is_none()
                        && c.output.pending() < self.max_pending_output
                        && c.partial_since
                            .is_some_and(|t| t.elapsed() >= self.limits.request_timeout)
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
                Some(p) => self.codecs.codec(p),
                None => self.codecs.before_first_byte(),
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
            let turn = match drive(
                c,
                &self.codecs,
                &self.store,
                self.max_pending_output,
                self.write_budget,
            ) {
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
        conn::record_end(&outcome, &[self.counters.total()], c.peer);
    }
}

/// `--max-pending-output`: at least 64K, four reads' worth.
fn parse_pending_cap(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    if n < READ_CHUNK * 4 {
        return Err(format!("'{s}' is too small (at least 64K)"));
    }
    Ok(n)
}
