//! The blocking connection handler: one client, served start to finish by the calling thread
//! or process. server-thread, its pool, server-fork's children and server-prefork's workers
//! all call [`serve`]; they differ only in *who* calls it.
//!
//! The loop is the textbook one — read what is there, answer every complete request, write —
//! with four details that make it hold up:
//!
//! 1. **Pipelining costs one write per batch.** All replies to the requests found in one read
//!    go into one buffer and out in one `write`, so a client with 100 requests in flight does
//!    not cost 100 system calls.
//! 2. **Half a frame is kept, not lost.** A read can end anywhere; [`ReadBuffer`] keeps the tail
//!    for the next read, and the codec says "incomplete" until the rest arrives.
//! 3. **The wait is a `poll(2)` on two descriptors**: the socket and the shutdown pipe
//!    ([`crate::signals::Shutdown`]). A plain blocking `read` could only be woken by the
//!    client; this way the idle timeout is poll's timeout and a graceful shutdown is the pipe
//!    closing. The cost is one extra system call per batch (poll, read, write).
//! 4. **Closing is done with care** ([`linger_close`]): a server that closes a socket with
//!    unread input makes the kernel send a reset, which can destroy the error reply it just
//!    sent. So after a fatal error it shuts down its side and drains the input briefly first,
//!    as nginx's `lingering_close` does.
//!
//! Which protocol a connection speaks is settled by its first byte, once
//! ([`ServerCodecs::for_first_byte`]; with a fixed `--protocol` the answer is always the same).
//! From then on the loop holds a plain `&dyn Codec`, so `--protocol auto` costs one check per
//! read, not one per request.

use std::io::{self, Read, Write};
use std::net::{Shutdown as HowShutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use echolab_protocol::record::{Format, RecordCodec};
use echolab_protocol::session::hello;
use echolab_protocol::{
    detect, Codec, Command, Decoded, Protocol, ReadBuffer, Reply, Request, ServerCodecs,
};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::socket::{recv, MsgFlags};

use crate::exec::{debug_spin, execute};
use crate::outbuf::OutBuf;
use crate::poller::poll_timeout;
use crate::session::{Session, Store};
use crate::stats::Counters;
use crate::READ_CHUNK;

/// What a connection needs to know, the same for every connection of a server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Close after this long without activity: no complete request, no reply delivered.
    pub idle_timeout: Duration,
    /// Close when the client does not take a reply for this long.
    pub write_timeout: Duration,
    /// Close when a request's bytes take longer than this to arrive, first to last.
    pub request_timeout: Duration,
}

/// Why a connection ended.
#[derive(Debug)]
pub enum Ended {
    /// The client closed its side (EOF), with no partial request pending.
    PeerClosed,
    /// The client closed its side in the middle of a request.
    PeerClosedMidRequest,
    /// No complete request within the idle timeout.
    IdleTimeout,
    /// A request began arriving and was not complete within the request timeout.
    RequestTimeout,
    /// The server is shutting down; every complete request already read was answered (a
    /// partial one, or bytes still in flight, are dropped).
    Shutdown,
    /// A protocol error that makes the stream untrustworthy; the error reply was sent.
    ProtocolError(String),
    /// The client did not take its replies within the write timeout.
    WriteTimeout,
    /// The connection failed (reset by the peer, and the like).
    Failed(io::Error),
}

/// What a connection did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    /// Requests answered with a success reply.
    pub requests: u64,
    /// Requests answered with an ERROR reply.
    pub errors: u64,
    /// The first request broke a binary or JSON server's protocol, and its bytes look like
    /// RESP: probably `redis-cli` pointed at the wrong `--protocol`. [`record_end`] says so
    /// in the log.
    pub looked_like_resp: bool,
}

/// How a connection went: why it ended and what it did.
#[derive(Debug)]
pub struct Outcome {
    /// Why it ended.
    pub ended: Ended,
    /// What it did.
    pub tally: Tally,
}

/// What a connection's HELLO agreed, kept for as long as the connection lives (on a
/// blocking handler's stack, in the event loop's connection struct): the session it opened,
/// and the record format its RECORD requests are in. A connection that never says HELLO has
/// neither, and its INCRs run outside any session, its RECORDs are refused.
#[derive(Debug, Default)]
pub struct Agreed {
    /// Which client's session (see [`crate::session`]).
    pub session: Session,
    /// How RECORD's payload is laid out. Made once, at the HELLO: for Avro that is when the
    /// schema is checked and parsed, so each record after it carries values only.
    pub record: Option<RecordCodec>,
}

/// What [`answer_all`] left behind.
#[derive(Debug)]
pub enum Answered {
    /// Every complete request in the buffer was answered: this many (0 = none was complete).
    Requests(u64),
    /// The stream broke the protocol: the ERROR reply is in the output; send it and close.
    Fatal(String),
}

/// The one request-handling step of every model: answers every complete request at the front
/// of `input`, appends the replies to `output`, and counts them in `tally`. Before a slow
/// request (SLEEP, SPIN, pi) starts, `before_slow` is handed the replies so far, so the caller
/// can send them rather than make them wait for it.
///
/// The requests that depend on state (HELLO, INCR, GET, RECORD) are answered from `store`,
/// the server's one session table (shared by every thread or process of the server), and
/// `agreed`, this connection's own state (which client and record format its HELLO named):
/// each caller keeps one `Agreed` per connection. A refusal (`TOOOLD`, `EXPIRED`, a schema
/// mismatch, a record that cannot be read...) is an ERROR reply and the connection stays open.
pub fn answer_all(
    codec: &dyn Codec,
    store: &Store,
    agreed: &mut Agreed,
    input: &mut ReadBuffer,
    output: &mut OutBuf,
    tally: &mut Tally,
    mut before_slow: impl FnMut(&mut OutBuf) -> Result<(), Ended>,
) -> Result<Answered, Ended> {
    // A RECORD's reply is computed into this before it is framed (reused within the batch).
    let mut scratch = Vec::new();
    let mut answered = 0;
    loop {
        let len = match codec.decode_request(input.data()) {
            Ok(Decoded::Incomplete) => return Ok(Answered::Requests(answered)),
            Ok(Decoded::Complete { message, len }) if is_stateful(&message.command) => {
                debug_spin();
                match answer_stateful(store, agreed, codec.max_frame(), &message, &mut scratch) {
                    Ok(reply) => {
                        codec.encode_reply(&message, reply, output.appender());
                        tally.requests += 1;
                    }
                    Err(why) => {
                        codec.encode_error(message.id, &why, output.appender());
                        tally.errors += 1;
                    }
                }
                len
            }
            Ok(Decoded::Complete { message, len }) => {
                if is_slow(&message.command) && !output.is_empty() {
                    before_slow(output)?;
                }
                let reply = execute(&message);
                codec.encode_reply(&message, reply, output.appender());
                tally.requests += 1;
                len
            }
            Ok(Decoded::Invalid { id, error, len }) => {
                codec.encode_error(id, &error.to_string(), output.appender());
                tally.errors += 1;
                len
            }
            Err(error) => {
                // Only on this path, which ends the connection, is it worth asking whether the
                // client was a RESP one all along: a healthy stream never gets here.
                if codec.protocol() != Protocol::Resp
                    && tally.requests + tally.errors == 0
                    && detect::looks_like_resp(input.data())
                {
                    tally.looked_like_resp = true;
                }
                codec.encode_error(None, &error.to_string(), output.appender());
                return Ok(Answered::Fatal(error.to_string()));
            }
        };
        input.consume(len);
        answered += 1;
    }
}

/// Serves one connection until it ends, in the protocol its first byte chooses from `codecs`.
///
/// Counts are kept in locals and added to the shared counters once, at the end
/// ([`record_end`]): a shared counter bumped on every request would bounce one cache line
/// between every core serving clients, and the thread model would pay for our statistics.
///
/// `store` is the server's session table; the connection's own session state lives on this
/// call's stack and ends with it, as a session ends with its connection (the *records* stay in
/// the table, for the client's next connection).
pub fn serve(
    stream: TcpStream,
    codecs: &ServerCodecs,
    store: &Store,
    limits: Limits,
    shutdown: BorrowedFd<'_>,
) -> Outcome {
    let mut tally = Tally::default();
    let ended = serve_loop(stream, codecs, store, limits, shutdown, &mut tally);
    Outcome { ended, tally }
}

fn serve_loop(
    mut stream: TcpStream,
    codecs: &ServerCodecs,
    store: &Store,
    limits: Limits,
    shutdown: BorrowedFd<'_>,
    tally: &mut Tally,
) -> Ended {
    // SO_SNDTIMEO: a blocking write that makes no progress for this long fails with EAGAIN,
    // so a client that never reads cannot hold this thread or process forever.
    if let Err(e) = stream.set_write_timeout(Some(limits.write_timeout)) {
        return Ended::Failed(e);
    }
    // Replies are small and latency matters more than packet count: do not let Nagle's
    // algorithm hold a reply back waiting for more.
    let _ = stream.set_nodelay(true);

    let mut input = ReadBuffer::new(READ_CHUNK);
    let mut output = OutBuf::default();
    // This connection's codec, once its first byte has said which.
    let mut chosen: Option<&dyn Codec> = None;
    let mut agreed = Agreed::default();
    let mut last_request = Instant::now();
    // When the first byte of the request now in `input` arrived: a request that never
    // completes (slowloris) is cut off `request_timeout` later, however steadily it trickles.
    let mut partial_since: Option<Instant> = None;
    loop {
        // Wait for input, the idle or request deadline, or the shutdown broadcast.
        let Some(idle_left) = limits.idle_timeout.checked_sub(last_request.elapsed()) else {
            linger_close(&stream);
            return Ended::IdleTimeout;
        };
        let request_left = match partial_since {
            Some(since) => match limits.request_timeout.checked_sub(since.elapsed()) {
                Some(left) => left,
                None => {
                    // A partial request means a byte arrived, so the codec is chosen; the
                    // fallback only keeps this total.
                    let codec = chosen.unwrap_or_else(|| codecs.before_first_byte());
                    send_request_timeout(&mut stream, codec);
                    linger_close(&stream);
                    return Ended::RequestTimeout;
                }
            },
            None => Duration::MAX,
        };
        match wait_readable(stream.as_fd(), shutdown, idle_left.min(request_left)) {
            Wait::Readable => {}
            Wait::TimedOut => continue,
            Wait::Shutdown => {
                linger_close(&stream);
                return Ended::Shutdown;
            }
            Wait::Failed(e) => return Ended::Failed(e.into()),
        }

        match stream.read(input.spare(READ_CHUNK)) {
            Ok(0) if input.is_empty() => return Ended::PeerClosed,
            Ok(0) => return Ended::PeerClosedMidRequest,
            Ok(n) => input.filled(n),
            // read(2): EINTR if a signal arrived first; nothing was read, so just go again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Ended::Failed(e),
        }
        let codec = match chosen {
            Some(codec) => codec,
            None => {
                let Some(&first) = input.data().first() else {
                    continue;
                };
                *chosen.insert(codecs.for_first_byte(first))
            }
        };

        // Answer every complete request now in the buffer. Replies already computed go out
        // before a slow request starts, so a pipelined SLEEP does not hold back the answers
        // that precede it.
        let answered = match answer_all(
            codec,
            store,
            &mut agreed,
            &mut input,
            &mut output,
            tally,
            |out| flush(&mut stream, out),
        ) {
            Ok(answered) => answered,
            Err(ended) => return ended,
        };
        let fatal = match answered {
            Answered::Requests(0) => None,
            Answered::Requests(_) => {
                last_request = Instant::now();
                // What is left began in this read: its clock starts now.
                partial_since = None;
                None
            }
            Answered::Fatal(reason) => Some(reason),
        };
        partial_since = partial_request_since(&input, partial_since);

        // One write for the whole batch. Delivering output counts as activity for the idle
        // timeout, so a client that just finished taking a long reply is not cut off at once.
        if !output.is_empty() {
            if let Err(e) = flush(&mut stream, &mut output) {
                return e;
            }
            last_request = Instant::now();
            // Time spent waiting for the client to take its replies is not the partial
            // request's fault: its deadline starts again from here.
            partial_since = partial_since.map(|_| Instant::now());
        }
        if let Some(reason) = fatal {
            linger_close(&stream);
            return Ended::ProtocolError(reason);
        }
    }
}

/// When the partial request in `input` began: `since` if one was already under way, now if
/// one just began, none if the buffer holds nothing. Shared by every model, the event loop
/// included.
pub fn partial_request_since(input: &ReadBuffer, since: Option<Instant>) -> Option<Instant> {
    if input.is_empty() {
        None
    } else {
        Some(since.unwrap_or_else(Instant::now))
    }
}

/// What a nonblocking loop (the event loop's connections, server-uring's) keeps of
/// [`answer_all`]'s result for its timeouts: a request answered restarts the idle clock, and
/// whatever is left in `input` began with these bytes; a malformed frame ends the connection
/// once its replies are out, as the `Ended` returned says.
pub fn after_answering(
    answered: Answered,
    input: &ReadBuffer,
    last_request: &mut Instant,
    partial_since: &mut Option<Instant>,
) -> Option<Ended> {
    let ended = match answered {
        Answered::Requests(0) => None,
        Answered::Requests(_) => {
            *last_request = Instant::now();
            *partial_since = None;
            None
        }
        Answered::Fatal(reason) => Some(Ended::ProtocolError(reason)),
    };
    *partial_since = partial_request_since(input, *partial_since);
    ended
}

/// The ERROR reply a client gets when its request took too long to arrive. Best effort: the
/// client may not be reading either.
fn send_request_timeout(stream: &mut TcpStream, codec: &dyn Codec) {
    let mut reply = OutBuf::default();
    codec.encode_error(None, REQUEST_TIMEOUT_MESSAGE, reply.appender());
    let _ = flush(stream, &mut reply);
}

/// What a client whose request took longer than `--request-timeout` to arrive is told, in an
/// ERROR reply, before its connection is closed.
pub const REQUEST_TIMEOUT_MESSAGE: &str = "request timeout";

/// Writes out (and empties) the pending replies. EAGAIN after SO_SNDTIMEO means the client
/// stopped reading.
fn flush(stream: &mut TcpStream, output: &mut OutBuf) -> Result<(), Ended> {
    if output.is_empty() {
        return Ok(());
    }
    output.write_all_to(stream).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Ended::WriteTimeout,
        _ => Ended::Failed(e),
    })
}

/// Whether a command is answered from the session table or the connection's agreement
/// rather than executed.
fn is_stateful(command: &Command) -> bool {
    matches!(
        command,
        Command::Hello { .. } | Command::Incr { .. } | Command::Get | Command::Record
    )
}

/// Answers HELLO, INCR, GET and RECORD: the reply (a RECORD's computed into `scratch`), or
/// an ERROR's message.
fn answer_stateful<'s>(
    store: &Store,
    agreed: &mut Agreed,
    max_frame: usize,
    request: &Request<'_>,
    scratch: &'s mut Vec<u8>,
) -> Result<Reply<'s>, String> {
    match request.command {
        Command::Hello {
            client,
            sent,
            format,
        } => {
            // The format first: a HELLO that cannot agree on it changes nothing, not even
            // the session, so the client can correct it and say HELLO again.
            let record = format
                .map(|f| agree_format(f, request.payload))
                .transpose()?;
            let reply = if client == 0 {
                Reply::Word(hello::AGREED)
            } else {
                store.hello(&mut agreed.session, client, sent)?
            };
            if record.is_some() {
                agreed.record = record;
            }
            Ok(reply)
        }
        Command::Record => {
            let codec = agreed
                .record
                .as_ref()
                .ok_or("RECORD before a HELLO that names a record format")?;
            scratch.clear();
            // The frame is checked against max_frame before a byte is decompressed.
            codec
                .answer(request.payload, max_frame, scratch)
                .map_err(|e| e.to_string())?;
            Ok(Reply::Bytes(scratch))
        }
        _ => store.answer(&mut agreed.session, request),
    }
}

/// The record codec for a HELLO's format and schema (Avro's: compared with the server's
/// own, never parsed from the peer's bytes).
fn agree_format(format: Format, schema: &[u8]) -> Result<RecordCodec, String> {
    let schema = std::str::from_utf8(schema).map_err(|_| "the schema is not UTF-8".to_string())?;
    RecordCodec::agreed(format, Some(schema)).map_err(|e| e.to_string())
}

/// Whether a command may take long enough that earlier replies should not wait for it.
fn is_slow(command: &Command) -> bool {
    matches!(
        command,
        Command::Sleep { .. } | Command::Spin { .. } | Command::Pi { .. }
    )
}

/// Adds a finished connection to each of `counters` (the totals, and a worker's own slot
/// where the model has workers), and logs it at debug level.
pub fn record_end(outcome: &Outcome, counters: &[&Counters], peer: impl std::fmt::Display) {
    use std::sync::atomic::Ordering::Relaxed;
    for c in counters {
        Counters::bump(&c.closed);
        c.requests.fetch_add(outcome.tally.requests, Relaxed);
        c.errors.fetch_add(outcome.tally.errors, Relaxed);
        match outcome.ended {
            Ended::IdleTimeout => Counters::bump(&c.idle_timeouts),
            Ended::WriteTimeout => Counters::bump(&c.write_timeouts),
            Ended::RequestTimeout => Counters::bump(&c.request_timeouts),
            Ended::ProtocolError(_) => Counters::bump(&c.protocol_errors),
            _ => {}
        }
    }
    crate::debug!(
        "{peer}: closed after {} requests ({:?})",
        outcome.tally.requests,
        outcome.ended
    );
    // A whole redis-benchmark run against a binary server would print this once per
    // connection; once a second, across every process of the server, says it well enough.
    if outcome.tally.looked_like_resp {
        if let Some(totals) = counters.first() {
            if crate::log::once_a_second(&totals.resp_hint_logged_ms) {
                crate::info!(
                    "{peer}: this looks like RESP: start the server with --protocol resp (or auto)"
                );
            }
        }
    }
}

enum Wait {
    Readable,
    TimedOut,
    Shutdown,
    Failed(Errno),
}

/// poll(2) on the socket and the shutdown pipe. Input already waiting wins over shutdown, so
/// requests the client sent before the shutdown are still answered.
fn wait_readable(sock: BorrowedFd<'_>, shutdown: BorrowedFd<'_>, timeout: Duration) -> Wait {
    let mut fds = [
        PollFd::new(sock, PollFlags::POLLIN),
        PollFd::new(shutdown, PollFlags::POLLIN),
    ];
    match poll(&mut fds, poll_timeout(timeout)) {
        Ok(0) => Wait::TimedOut,
        // poll(2): EINTR is never restarted (SA_RESTART does not apply); the caller loops.
        Err(Errno::EINTR) => Wait::TimedOut,
        // On two valid descriptors only ENOMEM is left: give up on this connection rather
        // than block in a read that neither the idle timer nor shutdown could interrupt.
        Err(e) => Wait::Failed(e),
        Ok(_) => {
            let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
            if ready(&fds[0]) {
                Wait::Readable
            } else {
                Wait::Shutdown
            }
        }
    }
}

/// Refuses a connection the server will not serve: counts it, logs `why` at debug level, and
/// sends the protocol's ERROR reply "server busy" (RESP: `-ERR server busy`). The client has
/// not spoken yet, so under `--protocol auto` the reply is binary's
/// ([`ServerCodecs::before_first_byte`] says why).
pub fn refuse(
    stream: TcpStream,
    codecs: &ServerCodecs,
    counters: &Counters,
    peer: impl std::fmt::Display,
    why: &str,
) {
    Counters::bump(&counters.refused);
    crate::debug!("{peer}: refused ({why})");
    send_error_and_close(stream, codecs.before_first_byte(), "server busy");
}

/// Sends `message` as an ERROR reply, then closes with [`linger_close`]'s care, without
/// waiting for more input: the caller is an accept loop and must not block.
fn send_error_and_close(mut stream: TcpStream, codec: &dyn Codec, message: &str) {
    let mut reply = Vec::new();
    codec.encode_error(None, message, &mut reply);
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = stream.write_all(&reply);
    close_gently(&stream);
}

/// Shuts down our sending side and discards whatever input already arrived, without waiting
/// for more: closing with unread input would send a reset that can overtake our last reply.
/// Never blocks, so an event loop or an accept loop can use it.
pub fn close_gently(stream: &TcpStream) {
    let _ = stream.shutdown(HowShutdown::Write);
    drain(stream, Duration::ZERO);
}

/// Shuts down our sending side (the client sees EOF after the last reply), then reads and
/// discards input for a moment so that closing does not send a reset over our last reply.
pub fn linger_close(stream: &TcpStream) {
    let _ = stream.shutdown(HowShutdown::Write);
    drain(stream, Duration::from_millis(500));
}

/// Reads and discards input until EOF, `patience` passes, or 1 MiB has been thrown away.
fn drain(stream: &TcpStream, patience: Duration) {
    let deadline = Instant::now() + patience;
    let mut sink = [0u8; READ_CHUNK];
    let mut budget = 1 << 20;
    while budget > 0 {
        // recv(2) with MSG_DONTWAIT: a nonblocking read without changing the socket's mode.
        match recv(stream.as_raw_fd(), &mut sink, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return,
            Ok(n) => budget -= n.min(budget),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return;
                }
                let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, poll_timeout(left));
            }
            Err(_) => return,
        }
    }
}
