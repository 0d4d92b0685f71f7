//! `loadgen proxy`, run as a harness runs it: the real binary, started on port 0 and found by
//! its `listening on ADDR` line, in front of a scripted upstream that records every whole
//! request frame it receives and echoes it.
//!
//! The upstream's record is what tells the two cuts apart, which the client alone cannot: in
//! both the client's connection ends with no reply, but a request cut on its way in never
//! reaches the upstream whole, and a reply cut on its way out belongs to a request the
//! upstream did receive and answer. The tests check that, that frames otherwise pass byte for
//! byte (pipelined and split across writes too), that the same seed and traffic cut the same
//! messages, and that SIGTERM ends the proxy with counters that match what happened. Every
//! proxy is stopped (or killed, when a test fails) with its process group, and every wait is
//! bounded by seconds.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command as Process;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{dead_addr, loadgen_bin, n, run_guarded, FakeServer, Proxy, CLIENT_WAIT};
use echolab_protocol::frame::{ByteOrder, LengthPrefix};
use echolab_protocol::{Command, Protocol, Reply, Request, DEFAULT_MAX_FRAME};
use serde_json::Value;

// ----- the scripted upstream -------------------------------------------------------------

/// An echo server that records the id of every whole request it receives, before answering.
struct Upstream {
    server: FakeServer,
    received: Arc<Mutex<Vec<u64>>>,
    ended: Arc<AtomicUsize>,
}

impl Upstream {
    fn start() -> Upstream {
        let received = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(AtomicUsize::new(0));
        let (r, e) = (Arc::clone(&received), Arc::clone(&ended));
        let server = FakeServer::start(move |mut conn| {
            while let Some(req) = conn.request() {
                r.lock()
                    .expect("the record's lock")
                    .push(req.id.expect("binary requests carry an id"));
                let reply = conn.echo_bytes(&req);
                if !conn.send(&reply) {
                    break;
                }
            }
            e.fetch_add(1, Ordering::SeqCst);
        });
        Upstream {
            server,
            received,
            ended,
        }
    }

    fn addr(&self) -> String {
        self.server.addr()
    }

    fn received(&self) -> Vec<u64> {
        self.received.lock().expect("the record's lock").clone()
    }

    /// Waits until `n` of its connections have ended (the peer closed), so that what it
    /// received is final.
    fn wait_ended(&self, n: usize) {
        let deadline = Instant::now() + CLIENT_WAIT;
        while self.ended.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "the upstream saw {} of {n} connections end",
                self.ended.load(Ordering::SeqCst)
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

// ----- the client ------------------------------------------------------------------------

fn codec() -> Box<dyn echolab_protocol::Codec> {
    Protocol::Binary.codec(DEFAULT_MAX_FRAME)
}

fn request(id: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let req = Request {
        id: Some(id),
        command: Command::Echo,
        payload,
    };
    codec()
        .encode_request(&req, &mut out)
        .expect("a request within max_frame");
    out
}

fn echo_reply(id: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let req = Request {
        id: Some(id),
        command: Command::Echo,
        payload,
    };
    codec().encode_reply(&req, Reply::Echo, &mut out);
    out
}

/// What the client got for a request.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Got {
    /// A whole reply frame.
    Reply,
    /// The end of the connection (FIN or reset), with no byte of a reply.
    Closed,
}

/// Reads one reply frame, or the connection's end; fails the test on a timeout, or on a
/// connection that ends in the middle of a frame.
fn read_reply(s: &mut TcpStream, max_frame: usize) -> (Got, Vec<u8>) {
    let framing = LengthPrefix::new(ByteOrder::Big, max_frame);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(body) = framing.split(&buf).expect("a well-formed reply") {
            let len = 4 + body.len();
            assert_eq!(buf.len(), len, "more than one reply arrived");
            return (Got::Reply, buf);
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("no reply and no close within {CLIENT_WAIT:?}")
            }
            Err(_) => break, // reset
        }
    }
    assert!(
        buf.is_empty(),
        "the connection ended inside a reply: {buf:?}"
    );
    (Got::Closed, buf)
}

/// Reads until the peer closes; fails on a timeout.
fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => out,
        Err(e) => panic!("read to the end: {e} after {} bytes", out.len()),
    }
}

// ----- the tests -------------------------------------------------------------------------

#[test]
fn with_no_cuts_frames_pass_byte_for_byte_pipelined_and_in_pieces() {
    let upstream = Upstream::start();
    let proxy = Proxy::start(&upstream.addr(), "");
    let mut client = proxy.connect();

    // Payloads from empty to one that takes the proxy many reads to put together.
    let payloads: Vec<Vec<u8>> = (0..40u64)
        .map(|i| {
            let len = match i {
                7 => 300_000,
                i => (i * 37 % 1000) as usize,
            };
            (0..len).map(|b| (b as u64 * 31 + i) as u8).collect()
        })
        .collect();
    let mut sent = Vec::new();
    let mut expected = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        sent.push(request(i as u64, p));
        expected.extend_from_slice(&echo_reply(i as u64, p));
    }
    let sent_len: usize = sent.iter().map(Vec::len).sum();
    let writer = {
        let mut w = client.try_clone().unwrap();
        thread::spawn(move || {
            // The first frame a byte at a time, so the proxy must put it together...
            for b in &sent[0] {
                w.write_all(&[*b]).unwrap();
                thread::sleep(Duration::from_millis(1));
            }
            // ...then the rest pipelined in one write, and a half-close: the replies must
            // still all come back, then the end of the stream.
            w.write_all(&sent[1..].concat()).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        })
    };
    let got = read_to_end(&mut client);
    writer.join().unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "the replies differ from the upstream's");
    assert_eq!(upstream.received(), (0..40).collect::<Vec<u64>>());

    let (stats, stderr) = proxy.stop();
    assert_eq!(n(&stats, "connections"), 1, "{stats}");
    assert_eq!(n(&stats, "requests_forwarded"), 40, "{stats}");
    assert_eq!(n(&stats, "replies_forwarded"), 40, "{stats}");
    assert_eq!(n(&stats, "cut_request"), 0, "{stats}");
    assert_eq!(n(&stats, "cut_response"), 0, "{stats}");
    assert_eq!(n(&stats, "bytes_to_upstream"), sent_len as u64, "{stats}");
    assert_eq!(
        n(&stats, "bytes_to_client"),
        expected.len() as u64,
        "{stats}"
    );
    assert_eq!(n(&stats, "unframed"), 0, "{stats}");
    assert!(
        stderr.contains("loadgen proxy: 1 connections"),
        "no summary line: {stderr}"
    );
}

#[test]
fn a_request_cut_never_reaches_the_server_whole() {
    let upstream = Upstream::start();
    let proxy = Proxy::start(&upstream.addr(), "--cut-request 1");
    let mut client = proxy.connect();
    let frame = request(1, b"hello");
    client.write_all(&frame).unwrap();
    assert_eq!(read_reply(&mut client, DEFAULT_MAX_FRAME).0, Got::Closed);
    upstream.wait_ended(1);
    assert_eq!(upstream.received(), Vec::<u64>::new());

    let (stats, _) = proxy.stop();
    assert_eq!(n(&stats, "cut_request"), 1, "{stats}");
    assert_eq!(n(&stats, "requests_forwarded"), 0, "{stats}");
    assert_eq!(n(&stats, "replies_forwarded"), 0, "{stats}");
    assert_eq!(n(&stats, "bytes_to_client"), 0, "{stats}");
    // Some of the frame, never all of it.
    let partial = n(&stats, "bytes_to_upstream");
    assert!(
        (1..frame.len() as u64).contains(&partial),
        "{partial} bytes of a {}-byte frame went upstream",
        frame.len()
    );
}

#[test]
fn a_reply_cut_belongs_to_a_request_the_server_ran() {
    let upstream = Upstream::start();
    let proxy = Proxy::start(&upstream.addr(), "--cut-response 1");
    let mut client = proxy.connect();
    let frame = request(9, b"ran but lost");
    client.write_all(&frame).unwrap();
    assert_eq!(read_reply(&mut client, DEFAULT_MAX_FRAME).0, Got::Closed);
    assert_eq!(upstream.received(), vec![9]);

    let (stats, _) = proxy.stop();
    assert_eq!(n(&stats, "cut_response"), 1, "{stats}");
    assert_eq!(n(&stats, "cut_request"), 0, "{stats}");
    assert_eq!(n(&stats, "requests_forwarded"), 1, "{stats}");
    assert_eq!(n(&stats, "replies_forwarded"), 0, "{stats}");
    assert_eq!(
        n(&stats, "bytes_to_upstream"),
        frame.len() as u64,
        "{stats}"
    );
    assert_eq!(n(&stats, "bytes_to_client"), 0, "{stats}");
}

/// Each request's fate in [`scripted_traffic`].
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Fate {
    Answered,
    /// Cut on the way in: the upstream never received it.
    CutIn,
    /// Cut on the way out: the upstream received and answered it.
    CutOut,
}

/// 200 requests, one at a time, at most 4 per connection, a new connection after a cut:
/// the same traffic every time it is run. Returns each request's fate and the counters.
fn scripted_traffic(seed: u64) -> (Vec<Fate>, Value) {
    const REQUESTS: u64 = 200;
    let upstream = Upstream::start();
    let proxy = Proxy::start(
        &upstream.addr(),
        &format!("--cut-request 0.3 --cut-response 0.1 --seed {seed}"),
    );
    let mut got = Vec::new();
    let mut client: Option<(TcpStream, u32)> = None;
    for id in 0..REQUESTS {
        let (s, used) = client.get_or_insert_with(|| (proxy.connect(), 0));
        *used += 1;
        s.write_all(&request(id, &id.to_be_bytes()))
            .expect("the proxy reads what is sent");
        let (what, _) = read_reply(s, DEFAULT_MAX_FRAME);
        got.push(what);
        if what == Got::Closed || *used == 4 {
            client = None;
        }
    }
    drop(client);
    let received = upstream.received();
    let fates = got
        .iter()
        .zip(0..)
        .map(|(g, id)| match (g, received.contains(&id)) {
            (Got::Reply, true) => Fate::Answered,
            (Got::Closed, false) => Fate::CutIn,
            (Got::Closed, true) => Fate::CutOut,
            (Got::Reply, false) => panic!("request {id} was answered but never received"),
        })
        .collect();
    let (stats, _) = proxy.stop();
    (fates, stats)
}

#[test]
fn the_same_seed_and_traffic_cut_the_same_messages() {
    let (first, stats) = scripted_traffic(42);
    let (again, stats_again) = scripted_traffic(42);
    assert_eq!(first, again, "the same seed cut different requests");
    assert_eq!(stats, stats_again);

    let count = |fate| first.iter().filter(|f| **f == fate).count() as u64;
    assert_eq!(n(&stats, "cut_request"), count(Fate::CutIn), "{stats}");
    assert_eq!(n(&stats, "cut_response"), count(Fate::CutOut), "{stats}");
    assert_eq!(
        n(&stats, "replies_forwarded"),
        count(Fate::Answered),
        "{stats}"
    );
    assert_eq!(
        n(&stats, "requests_forwarded"),
        count(Fate::Answered) + count(Fate::CutOut),
        "{stats}"
    );
    // About 30% of the requests cut on the way in, and 10% of the rest on the way out.
    assert!((30..=90).contains(&count(Fate::CutIn)), "{first:?}");
    assert!((3..=40).contains(&count(Fate::CutOut)), "{first:?}");

    // And the seed is what decides: another one cuts other requests.
    let (other, _) = scripted_traffic(43);
    assert_ne!(first, other, "seeds 42 and 43 cut the same requests");
}

#[test]
fn sigterm_closes_open_connections_and_writes_the_counters() {
    let upstream = Upstream::start();
    let proxy = Proxy::start(&upstream.addr(), "");
    let mut busy = proxy.connect();
    busy.write_all(&request(5, b"x")).unwrap();
    assert_eq!(read_reply(&mut busy, DEFAULT_MAX_FRAME).0, Got::Reply);
    let mut idle = proxy.connect();
    // The second connection must have reached the upstream before the signal, for the count.
    let deadline = Instant::now() + CLIENT_WAIT;
    while upstream.server.peers().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the proxy never connected upstream"
        );
        thread::sleep(Duration::from_millis(5));
    }

    let (stats, stderr) = proxy.stop();
    // Both clients see their connection end.
    assert_eq!(read_to_end(&mut busy), Vec::<u8>::new());
    assert_eq!(read_to_end(&mut idle), Vec::<u8>::new());
    assert_eq!(n(&stats, "connections"), 2, "{stats}");
    assert_eq!(n(&stats, "requests_forwarded"), 1, "{stats}");
    assert_eq!(n(&stats, "replies_forwarded"), 1, "{stats}");
    assert_eq!(n(&stats, "upstream_failures"), 0, "{stats}");
    assert!(
        stderr.contains("2 connections (0 upstream failures); requests 1 forwarded, 0 cut"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_upstream_closes_the_client_and_the_proxy_keeps_running() {
    let dead = dead_addr();
    let mut proxy = Proxy::start(&dead, "");
    for _ in 0..2 {
        let mut client = proxy.connect();
        let _ = client.write_all(&request(1, b"anyone?"));
        assert_eq!(read_reply(&mut client, DEFAULT_MAX_FRAME).0, Got::Closed);
    }
    assert!(proxy.process.alive(), "the proxy exited");
    let (stats, stderr) = proxy.stop();
    assert_eq!(n(&stats, "connections"), 2, "{stats}");
    assert_eq!(n(&stats, "upstream_failures"), 2, "{stats}");
    assert!(
        stderr.contains(&format!("cannot connect to upstream {dead}")),
        "{stderr}"
    );
}

#[test]
fn bytes_that_are_not_a_frame_pass_as_they_are_with_no_more_cuts() {
    let upstream = Upstream::start();
    // Every frame would be cut, but a 100-byte body is over --max-frame 16 both ways.
    let proxy = Proxy::start(
        &upstream.addr(),
        "--max-frame 16 --cut-request 1 --cut-response 1",
    );
    let mut client = proxy.connect();
    let payload = [b'z'; 100];
    client.write_all(&request(3, &payload)).unwrap();
    let (what, bytes) = read_reply(&mut client, DEFAULT_MAX_FRAME);
    assert_eq!(what, Got::Reply);
    assert_eq!(bytes, echo_reply(3, &payload));
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut client), Vec::<u8>::new());

    let (stats, stderr) = proxy.stop();
    assert_eq!(n(&stats, "unframed"), 2, "{stats}");
    assert_eq!(n(&stats, "cut_request") + n(&stats, "cut_response"), 0);
    assert!(stderr.contains("forwarding it unframed"), "{stderr}");
}

#[test]
fn delay_holds_each_frame_in_each_direction() {
    let upstream = Upstream::start();
    let proxy = Proxy::start(&upstream.addr(), "--delay 150ms");
    let mut client = proxy.connect();
    let started = Instant::now();
    client.write_all(&request(1, b"slow")).unwrap();
    assert_eq!(read_reply(&mut client, DEFAULT_MAX_FRAME).0, Got::Reply);
    let rtt = started.elapsed();
    assert!(
        rtt >= Duration::from_millis(300) && rtt < Duration::from_secs(3),
        "a round trip through two 150 ms delays took {rtt:?}"
    );
    drop(client);
    proxy.stop();
}

/// Runs `loadgen proxy ARGS`; it must exit with `code` within seconds, `needle` on stderr.
fn refused(args: &[&str], code: i32, needle: &str) {
    let mut full = vec!["proxy".to_owned()];
    full.extend(args.iter().map(|a| a.to_string()));
    let run = run_guarded(&full, Duration::from_secs(5), None);
    let status = run
        .status
        .unwrap_or_else(|| panic!("loadgen {full:?} kept running: killed"));
    assert_eq!(status.code(), Some(code), "{full:?}\n{}", run.stderr);
    assert!(
        run.stderr.contains(needle),
        "{full:?}: stderr should contain {needle:?}\n{}",
        run.stderr
    );
}

#[test]
fn bad_flags_are_refused_clearly() {
    let dead = dead_addr();
    let d = dead.as_str();
    refused(
        &["--upstream", d, "--cut-request", "1.5"],
        2,
        "1.5 is not in [0, 1]",
    );
    refused(
        &["--upstream", d, "--cut-response", "-0.1"],
        2,
        "-0.1 is not in [0, 1]",
    );
    refused(
        &["--upstream", d, "--cut-request", "often"],
        2,
        "not a probability",
    );
    refused(&["--cut-request", "0.5"], 2, "--upstream");
    refused(&["--upstream", "nowhere"], 2, "HOST:PORT");
    refused(&["--upstream", d, "--max-frame", "0"], 2, "too small");
    refused(&["--upstream", d, "--delay", "soon"], 2, "not a duration");
    // A port someone else listens on: exit 1, and the address named.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap().to_string();
    refused(
        &["--upstream", d, "--listen", &at],
        1,
        &format!("cannot listen on {at}"),
    );
}

#[test]
fn help_explains_every_flag() {
    let out = Process::new(loadgen_bin())
        .args(["proxy", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--upstream",
        "--listen",
        "--cut-request",
        "--cut-response",
        "--seed",
        "--delay",
        "--stats-file",
        "--max-frame",
        "Exit codes",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}\n{help}"
        );
    }
}
