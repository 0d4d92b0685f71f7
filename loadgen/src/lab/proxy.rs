//! `loadgen proxy`: a TCP proxy that understands echolab's binary framing and cuts a
//! connection in either phase of a request, so that what a client does about a lost request
//! or a lost reply can be tried against any server, unchanged (issue 13).
//!
//! The two failures look the same to the client (the connection ends, no reply) and differ in
//! what the server did: a request cut on its way in was never run; a reply cut on its way out
//! belongs to a request that was run. A blind retry is safe after the first and not after the
//! second, which is what binary v1's sessions are for. So the proxy decides per message, not
//! per byte:
//!
//! - `--cut-request P`: each request frame from the client is, with probability P, forwarded
//!   only in part (1 to len-1 bytes, never the whole frame), and then both connections are
//!   closed: the server reads a partial frame and EOF, so it never runs the request.
//! - `--cut-response P`: each reply frame from the server is, with probability P, dropped
//!   whole, and both connections are closed: the server ran the request, the client never
//!   learns its outcome.
//!
//! Otherwise frames go through whole and byte for byte. The decisions are repeatable: each
//! direction of each connection draws from its own splitmix64 stream, seeded from `--seed`,
//! the connection's index in accept order and the direction, so the same seed and the same
//! traffic (the same frames on the same connections, connected in the same order) cut the same
//! messages, whatever the threads' timing.
//!
//! Why not `noxious`, the Rust port of Toxiproxy that issue 13 preferred: only its library is
//! on crates.io, with no server binary to run; its toxics draw from an unseeded thread RNG per
//! connection, so a run cannot be repeated; its `limit_data` cuts after a byte count per
//! connection, blind to where messages begin and end; and 1.0.4 has no `reset_peer`.
//!
//! How it relays: for each client one upstream connection, and one thread per direction, on
//! blocking sockets with `TCP_NODELAY` (the proxy must not add Nagle's delays of its own). A
//! direction reads whole frames before it forwards them (store and forward: at most
//! `--max-frame` plus one read is buffered per direction), because a decision is about a whole
//! message. What it does at the edges:
//!
//! - Bytes that are not a frame (a length of 0 or over `--max-frame`, or another protocol
//!   altogether) are forwarded as they come, and that direction of that connection makes no
//!   more decisions: once the framing is lost, no later byte can be said to start a message.
//!   Only that direction: the other still has its framing, and keeping the two apart keeps
//!   each one's decisions independent of the threads' timing. Counted in `unframed`.
//! - An end of stream (FIN) is passed on as one (`shutdown(Write)` on the other side), after
//!   any partial frame left over: a client may half-close and still read its replies, and a
//!   peer's own partial frame reaches the other side as it would without the proxy.
//! - A cut, a reset or a write error closes both sides with `shutdown(Both)`, which also wakes
//!   the other direction's thread from its read, so both threads end with the connection. The
//!   peers see a FIN, or a reset where the proxy closes with bytes still unread; a reply that
//!   was already on its way in the other direction may be lost with the connection, as it
//!   would be on a real network.
//! - `--delay D` holds each frame until D after the read that completed it, in each direction.
//!   For request-reply traffic that is D each way; frames that arrive while a direction sleeps
//!   are read after it wakes, so in a pipelined stream a frame may wait up to 2×D.
//!
//! It runs until SIGINT or SIGTERM, then closes the connections still open, waits for their
//! threads, and writes its counters ([`ProxyStats`]) as JSON to `--stats-file` (or stderr),
//! with a one-line summary on stderr.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use clap::Args;
use echolab_protocol::frame::{ByteOrder, LengthPrefix, PREFIX_LEN};
use echolab_protocol::units::{parse_addr, parse_duration, parse_size};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::Serialize;

use crate::run::INTERRUPTED;

/// How long connecting to the upstream may take before the client is told no (by a close).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the accept loop looks at the stop flag while no client connects: a signal may be
/// delivered to any thread, so it does not always interrupt the main thread's poll.
const STOP_CHECK_MS: u16 = 100;

/// The most one read takes from a socket.
const READ_CHUNK: usize = 64 * 1024;

/// `loadgen proxy`: relay connections to a server, cutting them per message.
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// The server to relay to (HOST:PORT), speaking echolab's binary protocol. One upstream
    /// connection is opened per client connection; if it fails, the client's connection is
    /// closed, counted in upstream_failures, and the proxy keeps running.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_addr)]
    pub upstream: SocketAddr,

    /// Where to listen (port 0 picks a free port). When ready, the proxy prints
    /// `listening on ADDR` on stdout, as the servers do.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0", value_parser = parse_addr)]
    pub listen: SocketAddr,

    /// Probability in [0, 1] that a request frame is cut: only part of it (1 byte to all but
    /// one) reaches the server, then both sides are closed. The server never runs it.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    pub cut_request: f64,

    /// Probability in [0, 1] that a reply frame is cut: none of it reaches the client, then
    /// both sides are closed. The server ran the request; the client never learns.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    pub cut_response: f64,

    /// Seed of the cut decisions. With the same seed and the same traffic (the same frames on
    /// the same connections, connected in the same order) the same messages are cut.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,

    /// A fixed one-way delay added to every frame in each direction (e.g. 5ms): each is
    /// forwarded this long after it was read. Pipelined frames may wait up to twice as long.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub delay: Duration,

    /// Write the counters as JSON here at exit (default: stderr).
    #[arg(long, value_name = "PATH")]
    pub stats_file: Option<PathBuf>,

    /// The largest frame body it parses (e.g. 1M, 64K). A longer (or zero) length is taken as
    /// lost framing: those bytes and all after them in that direction are forwarded as they
    /// come, with no more cuts.
    #[arg(long, value_name = "BYTES", default_value = "1M", value_parser = parse_max_frame)]
    pub max_frame: usize,
}

/// `--cut-request` and `--cut-response`: a probability, 0 and 1 included.
pub fn parse_probability(s: &str) -> Result<f64, String> {
    let p: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a probability (a number in [0, 1], e.g. 0.05)"))?;
    // `contains` is false for NaN too.
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("{s} is not in [0, 1]"));
    }
    Ok(p)
}

/// `--max-frame`: a size of at least one byte (with 0, no frame would ever parse).
fn parse_max_frame(s: &str) -> Result<usize, String> {
    match parse_size(s)? {
        0 => Err(format!("'{s}' is too small (at least 1 byte)")),
        n => Ok(n),
    }
}

/// What the proxy did, written as JSON at exit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProxyStats {
    /// Client connections accepted.
    pub connections: u64,
    /// Of those, how many were closed because the upstream connection could not be opened.
    pub upstream_failures: u64,
    /// Request frames forwarded whole to the server.
    pub requests_forwarded: u64,
    /// Reply frames forwarded whole to the client.
    pub replies_forwarded: u64,
    /// Request frames cut (forwarded in part, then the connection closed).
    pub cut_request: u64,
    /// Reply frames cut (dropped, then the connection closed).
    pub cut_response: u64,
    /// Bytes written to the server (partial frames and unframed bytes included).
    pub bytes_to_upstream: u64,
    /// Bytes written to the client (unframed bytes included).
    pub bytes_to_client: u64,
    /// Directions of connections that stopped parsing frames on bytes that were not one.
    pub unframed: u64,
}

impl ProxyStats {
    /// One line for stderr.
    pub fn summary(&self) -> String {
        format!(
            "{} connections ({} upstream failures); requests {} forwarded, {} cut; \
             replies {} forwarded, {} cut; {} B to upstream, {} B to client; {} unframed",
            self.connections,
            self.upstream_failures,
            self.requests_forwarded,
            self.cut_request,
            self.replies_forwarded,
            self.cut_response,
            self.bytes_to_upstream,
            self.bytes_to_client,
            self.unframed,
        )
    }
}

/// [`ProxyStats`] as the threads update them.
#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    upstream_failures: AtomicU64,
    requests_forwarded: AtomicU64,
    replies_forwarded: AtomicU64,
    cut_request: AtomicU64,
    cut_response: AtomicU64,
    bytes_to_upstream: AtomicU64,
    bytes_to_client: AtomicU64,
    unframed: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ProxyStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ProxyStats {
            connections: get(&self.connections),
            upstream_failures: get(&self.upstream_failures),
            requests_forwarded: get(&self.requests_forwarded),
            replies_forwarded: get(&self.replies_forwarded),
            cut_request: get(&self.cut_request),
            cut_response: get(&self.cut_response),
            bytes_to_upstream: get(&self.bytes_to_upstream),
            bytes_to_client: get(&self.bytes_to_client),
            unframed: get(&self.unframed),
        }
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Which way a relay thread copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Client to server: request frames.
    Request,
    /// Server to client: reply frames.
    Reply,
}

/// What every connection's threads share.
#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    framing: LengthPrefix,
    cut_request: f64,
    cut_response: f64,
    seed: u64,
    delay: Duration,
    counters: Counters,
    /// A second handle on both sockets of every open connection, by index, so that stopping
    /// can shut them down and wake their threads.
    live: Mutex<BTreeMap<u64, (TcpStream, TcpStream)>>,
    /// Set once the proxy is stopping: a connection that registers after the sweep of `live`
    /// sees it and closes itself.
    stopping: AtomicBool,
}

/// Runs the proxy until SIGINT or SIGTERM (the caller installs the handler that sets
/// [`INTERRUPTED`]), then writes the counters and returns them. An error means it could not
/// listen, or could not write `--stats-file`.
pub fn proxy(args: &ProxyArgs) -> Result<ProxyStats, String> {
    let listener = TcpListener::bind(args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    // Non-blocking, so that accepting until the queue is empty never blocks past a signal.
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot make the listener non-blocking: {e}"))?;
    announce(addr).map_err(|e| format!("cannot write to stdout: {e}"))?;

    let shared = Arc::new(Shared {
        upstream: args.upstream,
        framing: LengthPrefix::new(ByteOrder::Big, args.max_frame),
        cut_request: args.cut_request,
        cut_response: args.cut_response,
        seed: args.seed,
        delay: args.delay,
        counters: Counters::default(),
        live: Mutex::new(BTreeMap::new()),
        stopping: AtomicBool::new(false),
    });
    let connections = accept_until_stopped(&listener, &shared)?;
    drop(listener);

    // Stop: close what is still open, so every relay thread wakes from its read and ends.
    // SeqCst pairs with the load in `serve`: either the sweep sees a connection, or it sees
    // the flag.
    shared.stopping.store(true, Ordering::SeqCst);
    for (client, upstream) in shared
        .live
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
    {
        close_both(client, upstream);
    }
    for handle in connections {
        let _ = handle.join();
    }

    let stats = shared.counters.snapshot();
    eprintln!("loadgen proxy: {}", stats.summary());
    write_stats(&stats, args.stats_file.as_deref())?;
    Ok(stats)
}

/// Prints `listening on ADDR` on stdout and flushes, the servers' line (servers/src/net.rs),
/// so the harnesses that wait for a server's port find the proxy's the same way.
fn announce(addr: SocketAddr) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()
}

/// Accepts clients until [`INTERRUPTED`], each served by its own thread; returns the threads
/// still running.
fn accept_until_stopped(
    listener: &TcpListener,
    shared: &Arc<Shared>,
) -> Result<Vec<JoinHandle<()>>, String> {
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut next_index: u64 = 0;
    let mut last_complaint: Option<Instant> = None;
    while !INTERRUPTED.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(STOP_CHECK_MS)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(format!("poll on the listener: {e}")),
        }
        loop {
            match listener.accept() {
                Ok((client, _)) => {
                    // Indices in accept order: with the seed, they pick each connection's
                    // decisions.
                    let index = next_index;
                    next_index += 1;
                    add(&shared.counters.connections, 1);
                    let for_thread = Arc::clone(shared);
                    let spawned = thread::Builder::new()
                        .name(format!("proxy-{index}"))
                        .spawn(move || serve(index, client, &for_thread));
                    match spawned {
                        Ok(handle) => threads.push(handle),
                        // The client (moved into the closure) is closed as it is dropped.
                        Err(e) => eprintln!("loadgen proxy: connection {index}: no thread: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors, most likely: the client stays in the backlog and the
                    // listener stays readable, so pause instead of spinning, and say so at
                    // most once a second.
                    if last_complaint.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        eprintln!("loadgen proxy: accept: {e}; pausing");
                        last_complaint = Some(Instant::now());
                    }
                    thread::sleep(Duration::from_millis(50));
                    break;
                }
            }
        }
        // Forget the threads that are done, so a long run keeps no handle per connection.
        threads.retain(|t| !t.is_finished());
    }
    Ok(threads)
}

/// One client connection: connect upstream, relay both directions, and close.
fn serve(index: u64, client: TcpStream, shared: &Shared) {
    // Accepted sockets do not inherit the listener's O_NONBLOCK on Linux; this says so
    // rather than relying on it, since the relay threads block.
    let _ = client.set_nonblocking(false);
    let upstream = match TcpStream::connect_timeout(&shared.upstream, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            add(&shared.counters.upstream_failures, 1);
            eprintln!(
                "loadgen proxy: connection {index}: cannot connect to upstream {}: {e}; \
                 closing the client's connection",
                shared.upstream
            );
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    match (client.try_clone(), upstream.try_clone()) {
        (Ok(c), Ok(u)) => {
            shared
                .live
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(index, (c, u));
        }
        _ => {
            eprintln!("loadgen proxy: connection {index}: cannot duplicate its sockets; closing");
            close_both(&client, &upstream);
            return;
        }
    }
    if shared.stopping.load(Ordering::SeqCst) {
        close_both(&client, &upstream);
    }

    thread::scope(|s| {
        let replies = thread::Builder::new()
            .name(format!("proxy-{index}-reply"))
            .spawn_scoped(s, || {
                relay(Direction::Reply, &upstream, &client, index, shared);
            });
        if let Err(e) = replies {
            eprintln!("loadgen proxy: connection {index}: no thread: {e}; closing");
            close_both(&client, &upstream);
            return;
        }
        relay(Direction::Request, &client, &upstream, index, shared);
    });
    shared
        .live
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&index);
}

/// Copies frames from `src` to `dst` until either side ends, cutting as the direction's
/// probability and random stream say.
fn relay(direction: Direction, src: &TcpStream, dst: &TcpStream, index: u64, shared: &Shared) {
    let counters = &shared.counters;
    let (p, forwarded, cuts, bytes) = match direction {
        Direction::Request => (
            shared.cut_request,
            &counters.requests_forwarded,
            &counters.cut_request,
            &counters.bytes_to_upstream,
        ),
        Direction::Reply => (
            shared.cut_response,
            &counters.replies_forwarded,
            &counters.cut_response,
            &counters.bytes_to_client,
        ),
    };
    let mut rng = SplitMix64::stream(shared.seed, index, direction);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut framed = true;
    let (mut reader, mut writer) = (src, dst);
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => {
                // End of stream: what is left is a partial frame (or unframed bytes); it goes
                // on as it is, and so does the FIN.
                wait_delay(Instant::now(), shared.delay);
                if !buf.is_empty() && writer.write_all(&buf).is_ok() {
                    add(bytes, buf.len() as u64);
                }
                let _ = dst.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                close_both(src, dst);
                return;
            }
        };
        let arrived = Instant::now();
        buf.extend_from_slice(&chunk[..n]);

        // `whole`: the bytes at the front of `buf` made of whole frames to forward; `cut`: where
        // to stop forwarding and close, if a frame is cut.
        let mut whole = 0;
        let mut frames = 0;
        let mut cut = None;
        while framed {
            match shared.framing.split(&buf[whole..]) {
                Ok(Some(body)) => {
                    let len = PREFIX_LEN + body.len();
                    // A draw for every frame, cut or not, so that each frame's fate depends
                    // only on its place in the stream.
                    if rng.chance(p) {
                        cut = Some(match direction {
                            // 1..=len-1 bytes: the server must get some of the frame (it was
                            // being sent) and never all of it (it would run it). len >= 5.
                            Direction::Request => whole + 1 + rng.below(len as u64 - 1) as usize,
                            Direction::Reply => whole,
                        });
                        break;
                    }
                    whole += len;
                    frames += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!(
                        "loadgen proxy: connection {index}: {} stream: {e}; forwarding it \
                         unframed, with no more cuts",
                        match direction {
                            Direction::Request => "request",
                            Direction::Reply => "reply",
                        }
                    );
                    add(&counters.unframed, 1);
                    framed = false;
                }
            }
        }
        if !framed {
            whole = buf.len();
        }

        let send = cut.unwrap_or(whole);
        if send > 0 {
            wait_delay(arrived, shared.delay);
            if writer.write_all(&buf[..send]).is_err() {
                close_both(src, dst);
                return;
            }
            add(bytes, send as u64);
            add(forwarded, frames);
        }
        if cut.is_some() {
            add(cuts, 1);
            close_both(src, dst);
            return;
        }
        buf.drain(..whole);
    }
}

/// Sleeps until `delay` after `from` (`--delay`); nothing when there is no delay.
fn wait_delay(from: Instant, delay: Duration) {
    if delay.is_zero() {
        return;
    }
    let until = from + delay;
    let now = Instant::now();
    if until > now {
        thread::sleep(until - now);
    }
}

/// Closes both sides at once. `shutdown` rather than drop, because the other relay thread
/// still holds the sockets: it wakes from its read with an end of stream and ends too.
fn close_both(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

/// Writes the counters as pretty JSON to `path`, or to stderr without one.
fn write_stats(stats: &ProxyStats, path: Option<&Path>) -> Result<(), String> {
    let mut json = serde_json::to_string_pretty(stats)
        .map_err(|e| format!("cannot serialise the stats: {e}"))?;
    json.push('\n');
    match path {
        Some(path) => {
            fs::write(path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        None => {
            eprint!("{json}");
            Ok(())
        }
    }
}

/// splitmix64 (Steele, Lea and Flood, 2014; the seeder of the xoshiro family): a few lines,
/// statistically good for drawing coin flips, and no dependency. Not for cryptography.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    /// The stream of one direction of one connection. Each (connection, direction) key is
    /// multiplied by an odd constant, a bijection, so under one seed no two keys share a
    /// starting state; splitmix's output function then scatters neighbouring states.
    fn stream(seed: u64, connection: u64, direction: Direction) -> SplitMix64 {
        let key = connection
            .wrapping_mul(2)
            .wrapping_add(u64::from(direction == Direction::Reply));
        SplitMix64(seed ^ key.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    fn next_u64(&mut self) -> u64 {
        let out = crate::arrivals::splitmix64(self.0);
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        out
    }

    /// True with probability `p`: a uniform draw in [0, 1) (53 bits, a double's precision)
    /// below `p`, so 0 is never and 1 always.
    fn chance(&mut self, p: f64) -> bool {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        u < p
    }

    /// A draw in `0..n` (`n > 0`). The modulo's bias is below n / 2^64, nothing for frame
    /// lengths.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_output() {
        // The first outputs for seed 1234567 of the reference C implementation
        // (prng.di.unimi.it/splitmix64.c).
        let mut r = SplitMix64(1_234_567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn streams_differ_by_connection_direction_and_seed_and_repeat() {
        let first = |seed, conn, dir| SplitMix64::stream(seed, conn, dir).next_u64();
        let a = first(7, 0, Direction::Request);
        assert_eq!(a, first(7, 0, Direction::Request));
        assert_ne!(a, first(7, 0, Direction::Reply));
        assert_ne!(a, first(7, 1, Direction::Request));
        assert_ne!(a, first(8, 0, Direction::Request));
    }

    #[test]
    fn chance_is_never_at_zero_and_always_at_one() {
        let mut r = SplitMix64::stream(0, 0, Direction::Request);
        let hits = (0..10_000).filter(|_| r.chance(0.3)).count();
        assert!((2_700..3_300).contains(&hits), "{hits} of 10000 at p = 0.3");
        assert!((0..1000).all(|_| !r.chance(0.0)));
        assert!((0..1000).all(|_| r.chance(1.0)));
    }

    #[test]
    fn probabilities_are_checked() {
        assert_eq!(parse_probability("0"), Ok(0.0));
        assert_eq!(parse_probability("1"), Ok(1.0));
        assert_eq!(parse_probability(" 0.25 "), Ok(0.25));
        for bad in ["-0.1", "1.5", "NaN", "inf", "half", ""] {
            assert!(parse_probability(bad).is_err(), "{bad}");
        }
        assert!(parse_max_frame("0").is_err());
        assert_eq!(parse_max_frame("64K"), Ok(65_536));
    }
}
