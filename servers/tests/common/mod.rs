//! The harness every server integration test uses: start a real server binary on
//! `127.0.0.1:0`, wait for its `listening on ADDR` line, talk to it with a small blocking client
//! built on the protocol crate's client half, look at its processes through `/proc`, and make
//! sure nothing it started outlives the test.
//!
//! Why these pieces:
//! - [`Server`] starts each binary with loadgen's harness (`echolab_loadgen::lab::launch`, the
//!   same one `loadgen suite` uses) in its own process group, so that one `killpg(SIGKILL)` in
//!   `Drop` takes the server *and* every child or worker it forked with it, even when a test
//!   fails half-way. Its stderr goes to a log file that is printed when a test panics.
//! - [`models`] is the one table of the server models (binary, flags, what each promises)
//!   that every test running "each model" takes its rows from.
//! - Tests never sleep to synchronise: they wait for the ready line, for a reply, for EOF, or
//!   poll `/proc` for a condition with a deadline ([`wait_until`]).
//! - [`Client`] decodes replies with the same codec the servers use, so a test compares
//!   messages, not bytes, except where it writes malformed bytes on purpose
//!   ([`Client::send_raw`]).
//! - `/proc`, read with procfs (the workspace's one `/proc` reader), answers what a socket
//!   cannot: which processes a server has left behind ([`group`], [`children`], shared with
//!   the harness), how many of its children are zombies, its descriptors and memory, and
//!   whether (and by which process) a connection has been accepted yet ([`accepted_inode`],
//!   [`socket_owner`]).
//! - [`skip`] is the one rule for a test the machine cannot run: it says so and passes, or
//!   fails where `ECHOLAB_NO_SKIP=1` (CI, which installs everything a test needs).
//! - [`figures::record`] keeps what a test measured (a time, a memory growth, a count) in the
//!   file `ECHOLAB_FIGURES` names, so the figures the docs quote come from a kept run
//!   (`scripts/robustness-tests.py`); without the variable it does nothing.

// Each test crate (conformance, lifecycle) compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use echolab_loadgen::lab::launch::{Ready, ServerProcess, Spawn, Stderr};
use echolab_protocol::{
    Codec, Command as Op, Decoded, Protocol, ReadBuffer, Request, Response, Status,
    DEFAULT_MAX_FRAME,
};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::Value;

pub mod figures;
pub mod models;
// Not every test crate uses the table.
#[allow(unused_imports)]
pub use models::*;
// The harness's process listing and skip rule, shared with loadgen's tests.
#[allow(unused_imports)]
pub use echolab_loadgen::lab::launch::{group, skip, Proc, READY_TIMEOUT};

/// Read timeout of every test client: a reply that takes longer is a failure, not a wait.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after `--grace` a server may take to exit before the harness calls it hung.
pub const EXIT_MARGIN: Duration = Duration::from_secs(3);
/// How long after `--grace` a graceful exit may come and still pass: the "small margin" of
/// the contract, wide enough for a loaded two-core machine running debug builds.
pub const EXIT_SLACK: Duration = Duration::from_secs(2);

/// The thread-per-connection / thread-pool server.
pub fn thread_bin() -> &'static str {
    env!("CARGO_BIN_EXE_server-thread")
}

/// The process-per-connection server.
pub fn fork_bin() -> &'static str {
    env!("CARGO_BIN_EXE_server-fork")
}

/// The pre-forked server (`--workers N --accept shared|locked|reuseport`).
pub fn prefork_bin() -> &'static str {
    env!("CARGO_BIN_EXE_server-prefork")
}

/// The single-threaded event-loop server (`--backend select|poll|epoll`).
pub fn eventloop_bin() -> &'static str {
    env!("CARGO_BIN_EXE_server-eventloop")
}

/// The single-threaded io_uring server (`--recv multishot|single`).
pub fn uring_bin() -> &'static str {
    env!("CARGO_BIN_EXE_server-uring")
}

static SERVERS_STARTED: AtomicUsize = AtomicUsize::new(0);

/// A running server binary; killed with its whole process group when dropped.
#[derive(Debug)]
pub struct Server {
    process: ServerProcess,
    /// Where it listens (from its `listening on` line).
    pub addr: SocketAddr,
    /// The protocol [`Server::client`] speaks: the one given with `--protocol`, or binary
    /// under `auto` (the default), which serves binary and RESP clients alike.
    pub protocol: Protocol,
    /// Its `--max-frame` (default 1 MiB).
    pub max_frame: usize,
    /// Its `--grace` (default 5 s).
    pub grace: Duration,
    name: String,
    log: PathBuf,
    stats: PathBuf,
}

/// How a server ended, as [`Server::stop`] saw it.
#[derive(Debug)]
pub struct Stopped {
    /// The exit status of the server process.
    pub status: ExitStatus,
    /// From the signal to the exit.
    pub elapsed: Duration,
    /// The `--stats-file` JSON, if the server wrote it.
    pub stats: Option<Value>,
    /// Processes still in the server's process group after it exited (there should be none).
    pub left: Vec<Proc>,
    /// The server's stderr.
    pub log: String,
    /// Its `--grace`, the bound [`Stopped::assert_clean`] holds the exit to.
    pub grace: Duration,
    /// Lines the server printed on stdout after `listening on` (`None`: stdout was still
    /// open two seconds after the exit, so some process still holds it).
    pub stdout_after_ready: Option<Vec<String>>,
}

impl Stopped {
    /// Asserts a clean graceful exit: status 0, within `--grace` plus a margin, nothing left.
    pub fn assert_clean(&self, what: &str) {
        let grace = self.grace;
        assert!(
            self.status.success(),
            "{what}: exit status {:?} (signal {:?}), expected 0\n{}",
            self.status.code(),
            self.status.signal(),
            self.log
        );
        assert!(
            self.elapsed <= grace + EXIT_SLACK,
            "{what}: took {:?} to exit, --grace is {grace:?}",
            self.elapsed
        );
        assert!(
            self.left.is_empty(),
            "{what}: processes left in the server's process group after it exited: {:?}",
            self.left
        );
        assert_eq!(
            self.stdout_after_ready,
            Some(Vec::new()),
            "{what}: `listening on` should be the only stdout line"
        );
    }

    /// The stats file, which must exist.
    pub fn stats(&self) -> &Value {
        self.stats
            .as_ref()
            .unwrap_or_else(|| panic!("no stats file was written\n{}", self.log))
    }

    /// `stats.totals.<field>` as a number.
    pub fn total(&self, field: &str) -> u64 {
        self.stats()["totals"][field]
            .as_u64()
            .unwrap_or_else(|| panic!("stats has no totals.{field}: {}", self.stats()))
    }
}

impl Server {
    /// Starts `bin` with `args` plus `--addr 127.0.0.1:0 --stats-file <tmp>`, and waits (up
    /// to [`READY_TIMEOUT`]) for its `listening on ADDR` line, which must be its first line on
    /// stdout. An `--addr` in `args` replaces the harness's own (it must still be a loopback
    /// address).
    pub fn start(bin: &str, args: &[&str]) -> Server {
        Server::spawn(bin, args, None)
    }

    /// Like [`Server::start`], with the server's soft `RLIMIT_NOFILE` set to `limit` (the test
    /// process keeps its own): a server that runs out of descriptors after a few dozen
    /// connections, to test what it does about `EMFILE`.
    pub fn start_with_nofile(bin: &str, args: &[&str], limit: u64) -> Server {
        Server::spawn(bin, args, Some(limit))
    }

    fn spawn(bin: &str, args: &[&str], nofile: Option<u64>) -> Server {
        let short = Path::new(bin)
            .file_name()
            .map_or_else(|| bin.to_owned(), |n| n.to_string_lossy().into_owned());
        let n = SERVERS_STARTED.fetch_add(1, Ordering::Relaxed);
        let name = format!("{short}-{}-{n}", std::process::id());
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let log = dir.join(format!("{name}.log"));
        let stats = dir.join(format!("{name}.stats.json"));
        let _ = fs::remove_file(&stats);

        let flag = |flag: &str| {
            args.iter()
                .position(|a| *a == flag)
                .and_then(|i| args.get(i + 1))
                .copied()
        };
        let protocol = match flag("--protocol") {
            None | Some("auto") => Protocol::Binary,
            Some(p) => p.parse().expect("--protocol in a test's args"),
        };
        let max_frame = flag("--max-frame").map_or(DEFAULT_MAX_FRAME, |m| {
            m.parse().expect("--max-frame in a test's args")
        });
        let grace = flag("--grace").map_or(Duration::from_secs(5), |g| {
            echolab_servers::cli::parse_duration(g).expect("--grace in a test's args")
        });

        let mut command = Command::new(bin);
        if flag("--addr").is_none() {
            command.args(["--addr", "127.0.0.1:0"]);
        }
        command.arg("--stats-file").arg(&stats).args(args);
        let how = Spawn {
            nofile,
            ..Spawn::new(Ready::FirstLine, Stderr::File(log.clone()))
        };
        let process = match ServerProcess::spawn(command, &how) {
            Ok(process) => process,
            Err(why) => {
                let said = fs::read_to_string(&log).unwrap_or_default();
                let _ = fs::remove_file(&log);
                let _ = fs::remove_file(&stats);
                panic!("{short} {args:?} did not get ready: {why}\n---- its stderr ----\n{said}");
            }
        };
        let addr = process.addr();
        let server = Server {
            process,
            addr,
            protocol,
            max_frame,
            grace,
            name,
            log,
            stats,
        };
        assert!(
            addr.ip().is_loopback() && addr.port() != 0,
            "`listening on {addr}`: expected 127.0.0.1 and the port the kernel chose"
        );
        server
    }

    /// The server's pid, which is also its process group id.
    pub fn pid(&self) -> Pid {
        self.process.pid()
    }

    /// Where its `--stats-file` goes.
    pub fn stats_path(&self) -> &Path {
        &self.stats
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        self.process.stderr()
    }

    /// Sends `signal` to the server process (not its group: the server decides what its
    /// children get).
    pub fn signal(&self, signal: Signal) {
        self.process
            .signal(signal)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Connects a client speaking the server's protocol.
    pub fn client(&self) -> Client {
        Client::connect(self.addr, self.protocol)
    }

    /// Waits up to `timeout` for the server to exit; on timeout kills the group and panics.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.process.wait_timeout(timeout) {
            Some(status) => status,
            None => {
                self.process.kill();
                panic!(
                    "{} did not exit within {timeout:?}; killed it\n{}",
                    self.name,
                    self.log()
                );
            }
        }
    }

    /// Sends SIGTERM and waits for the exit, up to `--grace` plus [`EXIT_MARGIN`].
    pub fn terminate(self) -> (ExitStatus, Duration) {
        let stopped = self.stop_with(Signal::SIGTERM);
        (stopped.status, stopped.elapsed)
    }

    /// Sends SIGTERM, waits for the exit, and collects what a test checks afterwards.
    pub fn stop(self) -> Stopped {
        self.stop_with(Signal::SIGTERM)
    }

    /// Like [`Server::stop`], with another signal (SIGINT).
    pub fn stop_with(self, signal: Signal) -> Stopped {
        let started = Instant::now();
        self.signal(signal);
        self.finish(started)
    }

    /// Waits for an exit already requested at `since` and collects the results.
    pub fn finish(mut self, since: Instant) -> Stopped {
        let status = self.wait_exit(self.grace + EXIT_MARGIN);
        let elapsed = since.elapsed();
        // The server has been reaped; whatever still carries its process group id escaped it.
        let left = group(self.pid().as_raw());
        let stats = fs::read(&self.stats).ok().map(|bytes| {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("stats file is not JSON: {e}"))
        });
        let stdout_after_ready = self.process.stdout_after_ready(Duration::from_secs(2));
        Stopped {
            status,
            elapsed,
            stats,
            left,
            log: self.log(),
            grace: self.grace,
            stdout_after_ready,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.process.kill();
        if thread::panicking() {
            eprintln!("---- stderr of {} ----\n{}", self.name, self.log());
        }
        let _ = fs::remove_file(&self.log);
        let _ = fs::remove_file(&self.stats);
    }
}

/// The children of `pid` (zombies included).
pub fn children(pid: Pid) -> Vec<Proc> {
    echolab_loadgen::lab::launch::children(pid.as_raw())
}

/// The children of `pid` that are alive (not zombies).
pub fn live_children(pid: Pid) -> Vec<i32> {
    children(pid)
        .into_iter()
        .filter(|p| !p.is_zombie())
        .map(|p| p.pid)
        .collect()
}

/// Process `pid`, to read its `/proc` files.
fn process(pid: Pid) -> Option<procfs::process::Process> {
    procfs::process::Process::new(pid.as_raw()).ok()
}

/// The resident memory of process `pid` in KiB (`VmRSS` in `/proc/PID/status`).
pub fn vm_rss_kib(pid: Pid) -> Option<u64> {
    process(pid)?.status().ok()?.vmrss
}

/// The proportional set size of process `pid` in KiB (`Pss` in `/proc/PID/smaps_rollup`).
pub fn pss_kib(pid: Pid) -> Option<u64> {
    let rollup = process(pid)?.smaps_rollup().ok()?;
    let pss = rollup
        .memory_map_rollup
        .iter()
        .find_map(|m| m.extension.map.get("Pss").copied())?;
    // procfs gives bytes.
    Some(pss / 1024)
}

/// The CPU time process `pid` has used, user plus system, in clock ticks (`utime` and
/// `stime` of `/proc/PID/stat`; see [`clock_ticks_per_second`]).
pub fn cpu_ticks(pid: Pid) -> Option<u64> {
    let stat = process(pid)?.stat().ok()?;
    Some(stat.utime + stat.stime)
}

/// [`cpu_ticks`] of `pid` and of its children together (a forking server's workers), or
/// `None` if `pid` itself cannot be read.
pub fn tree_cpu_ticks(pid: Pid) -> Option<u64> {
    let own = cpu_ticks(pid)?;
    let children: u64 = children(pid)
        .iter()
        .filter_map(|c| cpu_ticks(Pid::from_raw(c.pid)))
        .sum();
    Some(own + children)
}

/// Clock ticks per second, the unit of [`cpu_ticks`] (`USER_HZ`: 100 on Linux).
pub fn clock_ticks_per_second() -> u64 {
    procfs::ticks_per_second()
}

/// The descriptor numbers process `pid` has open, sorted.
pub fn open_fds(pid: Pid) -> Vec<i32> {
    let mut fds: Vec<i32> = process(pid)
        .and_then(|p| p.fd().ok())
        .map(|fds| fds.filter_map(|fd| Some(fd.ok()?.fd)).collect())
        .unwrap_or_default();
    fds.sort_unstable();
    fds
}

/// Raises this test process's soft `RLIMIT_NOFILE` to its hard limit, and returns the new
/// soft limit. A server started afterwards inherits it, so both the test's clients and the
/// server can hold thousands of sockets. Process-wide, and harmless to repeat.
pub fn raise_nofile_limit() -> u64 {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit(RLIMIT_NOFILE)");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit(RLIMIT_NOFILE)");
    }
    hard
}

/// Polls `cond` every few milliseconds until it holds or `timeout` passes; says whether it held.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Like [`eventually`], but panics with `what` on timeout.
pub fn wait_until(timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
    assert!(
        eventually(timeout, cond),
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// One row of `/proc/net/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRow {
    /// Local port.
    pub local: u16,
    /// Remote port.
    pub remote: u16,
    /// TCP state, as the kernel numbers it (1 ESTABLISHED, 3 SYN_RECV, 10 LISTEN, ...).
    pub state: u8,
    /// Bytes sent and not yet acknowledged by the peer.
    pub tx_queue: u64,
    /// Bytes received and not yet read by the application.
    pub rx_queue: u64,
    /// The socket's inode; 0 for a connection no process has accepted yet.
    pub inode: u64,
}

/// The IPv4 TCP sockets of this network namespace (the tests only use 127.0.0.1).
pub fn tcp_table() -> Vec<TcpRow> {
    let Ok(table) = procfs::net::tcp() else {
        return Vec::new();
    };
    table
        .into_iter()
        .map(|r| TcpRow {
            local: r.local_address.port(),
            remote: r.remote_address.port(),
            state: r.state.to_u8(),
            tx_queue: r.tx_queue.into(),
            rx_queue: r.rx_queue.into(),
            inode: r.inode,
        })
        .collect()
}

/// The inode of the server's end of the TCP connection from local port `client_port` to
/// `server_port`: `Some(0)` while the connection waits in a listen queue (the kernel gives a
/// socket an inode only when `accept` hands it to a process), `Some(inode)` once some process
/// accepted it, `None` if there is no such connection.
pub fn accepted_inode(server_port: u16, client_port: u16) -> Option<u64> {
    tcp_table()
        .into_iter()
        .find(|r| r.local == server_port && r.remote == client_port)
        .map(|r| r.inode)
}

/// Where the bytes `client` wrote to the server at `server_port` are: whether the client's send
/// queue is acknowledged (empty), and the unread bytes on the server's end of the connection
/// (`None` if there is no such end).
pub fn request_bytes(server_port: u16, client: &Client) -> (bool, Option<u64>) {
    let client_port = client.local_port();
    let table = tcp_table();
    let sent = table
        .iter()
        .any(|r| r.local == client_port && r.remote == server_port && r.tx_queue == 0);
    let unread = table
        .iter()
        .find(|r| r.local == server_port && r.remote == client_port)
        .map(|r| r.rx_queue);
    (sent, unread)
}

/// Whether everything `client` wrote has reached the server *and* been read by the server
/// process: the client's send queue is acknowledged (empty) and the server's end has no unread
/// bytes. Used to know that a request is being executed without sleeping.
pub fn request_taken(server_port: u16, client: &Client) -> bool {
    let (sent, unread) = request_bytes(server_port, client);
    sent && unread == Some(0)
}

/// Which of `pids` holds a descriptor for socket `inode`.
pub fn socket_owner(pids: &[i32], inode: u64) -> Option<i32> {
    use procfs::process::FDTarget;
    pids.iter().copied().find(|&pid| {
        process(Pid::from_raw(pid))
            .and_then(|p| p.fd().ok())
            .is_some_and(|mut fds| {
                fds.any(|fd| {
                    fd.is_ok_and(|fd| matches!(fd.target, FDTarget::Socket(i) if i == inode))
                })
            })
    })
}

/// A response with its payload copied out of the client's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedResponse {
    /// Binary: always (0 when the server could not read the id); JSON: when sent; RESP: never.
    pub id: Option<u64>,
    /// OK or ERROR.
    pub status: Status,
    /// Binary and RESP: the bytes; JSON: the raw JSON text of `result`.
    pub payload: Vec<u8>,
    /// The protocol it came in, to read error messages.
    pub protocol: Protocol,
}

impl OwnedResponse {
    fn new(r: Response<'_>, protocol: Protocol) -> Self {
        OwnedResponse {
            id: r.id,
            status: r.status,
            payload: r.payload.to_vec(),
            protocol,
        }
    }

    /// The message of an ERROR reply as a person reads it: binary's UTF-8 payload, RESP's
    /// line without its `ERR ` prefix, JSON's `result` string.
    pub fn message(&self) -> String {
        match self.protocol {
            Protocol::Binary => String::from_utf8_lossy(&self.payload).into_owned(),
            Protocol::Resp => {
                let line = String::from_utf8_lossy(&self.payload).into_owned();
                line.strip_prefix("ERR ").map(str::to_owned).unwrap_or(line)
            }
            Protocol::Json => serde_json::from_slice::<String>(&self.payload)
                .unwrap_or_else(|_| String::from_utf8_lossy(&self.payload).into_owned()),
        }
    }

    /// Asserts this is the "server busy" refusal, in the protocol's own shape.
    pub fn assert_busy(&self) {
        assert_eq!(
            self.status,
            Status::Error,
            "expected a busy refusal: {self:?}"
        );
        assert_eq!(self.message(), "server busy", "{self:?}");
        match self.protocol {
            Protocol::Binary => assert_eq!(self.id, Some(0), "busy reply id"),
            Protocol::Resp => assert_eq!(self.payload, b"ERR server busy"),
            Protocol::Json => assert_eq!(self.id, None, "busy reply id"),
        }
    }
}

/// The bytes a client sends as the echo payload for `content`, which are also the bytes the
/// reply carries: binary and RESP echo bytes as they are; JSON echoes the JSON *text* of
/// `params`, so the content goes in as a string (it must need no escaping).
pub fn wire_payload(protocol: Protocol, content: &[u8]) -> Vec<u8> {
    match protocol {
        Protocol::Binary | Protocol::Resp => content.to_vec(),
        Protocol::Json => {
            assert!(
                content
                    .iter()
                    .all(|b| (b' '..=b'~').contains(b) && !b"\"\\".contains(b)),
                "JSON test content must need no escaping"
            );
            let mut s = Vec::with_capacity(content.len() + 2);
            s.push(b'"');
            s.extend_from_slice(content);
            s.push(b'"');
            s
        }
    }
}

/// `len` bytes of test content: every byte value for binary and RESP (both are
/// binary-safe), letters for JSON. `seed` makes different requests' payloads differ.
pub fn content(protocol: Protocol, len: usize, seed: usize) -> Vec<u8> {
    match protocol {
        Protocol::Json => (0..len)
            .map(|i| b"abcdefghijklmnopqrstuvwxyz"[(i * 7 + seed) % 26])
            .collect(),
        _ => (0..len)
            .map(|i| ((i * 31 + seed * 7) % 256) as u8)
            .collect(),
    }
}

/// How long [`Client::connect_accepted`] waits for a connection that may be queued behind a
/// busy worker to be accepted before it tries again from another source port.
pub const REQUEUE_PATIENCE: Duration = Duration::from_millis(300);
/// How many connections [`Client::connect_accepted`] tries before it gives up.
pub const REQUEUE_TRIES: u32 = 100;
/// The longest [`Client::connect_accepted`] may take to hand over a connection to a server
/// whose connections may queue behind a busy worker: every try's patience, plus a connect and
/// a look at `/proc` for each (on a loaded machine neither is instant).
pub const REQUEUE_WITHIN: Duration =
    Duration::from_millis((REQUEUE_PATIENCE.as_millis() as u64 + 100) * REQUEUE_TRIES as u64);

/// A blocking test client: one connection, the protocol's client codec, a read buffer.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    codec: Box<dyn Codec>,
    /// The protocol it speaks.
    pub protocol: Protocol,
    input: ReadBuffer,
    next_id: u64,
    /// Shown in panic messages, to say which case a failing read belonged to.
    pub label: String,
}

impl Client {
    /// Connects to `addr` with a [`IO_TIMEOUT`] read timeout and `TCP_NODELAY` (so that a
    /// test's separate writes leave as separate segments).
    pub fn connect(addr: SocketAddr, protocol: Protocol) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("SO_RCVTIMEO");
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .expect("SO_SNDTIMEO");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        Client {
            stream,
            // Replies may be a little longer than the largest request (JSON's envelope is), so
            // the client's own limit is looser than any server's.
            codec: protocol.codec(4 * DEFAULT_MAX_FRAME),
            protocol,
            input: ReadBuffer::new(64 * 1024),
            next_id: 1,
            label: String::new(),
        }
    }

    /// Connects and waits until some server thread or process has `accept`ed the connection
    /// (seen in `/proc/net/tcp`).
    ///
    /// With `may_queue_behind_busy_worker` (prefork with `SO_REUSEPORT`: the kernel hashes each
    /// connection onto *one* worker's listen queue, and a worker serves one client at a time),
    /// a connection that lands behind a worker busy with a held connection would wait for as
    /// long as that connection lives. Such a connection is dropped after a short patience and
    /// retried from another source port, which hashes anew. Without the flag, a connection
    /// that is not accepted within [`IO_TIMEOUT`] fails the test.
    pub fn connect_accepted(
        addr: SocketAddr,
        protocol: Protocol,
        may_queue_behind_busy_worker: bool,
    ) -> Client {
        let patience = if may_queue_behind_busy_worker {
            REQUEUE_PATIENCE
        } else {
            IO_TIMEOUT
        };
        for _ in 0..REQUEUE_TRIES {
            let client = Client::connect(addr, protocol);
            let port = client.local_port();
            if eventually(patience, || {
                accepted_inode(addr.port(), port).is_some_and(|inode| inode != 0)
            }) {
                return client;
            }
            assert!(
                may_queue_behind_busy_worker,
                "connection from port {port} to {addr} not accepted within {patience:?}"
            );
        }
        panic!("no connection to {addr} was accepted in {REQUEUE_TRIES} tries");
    }

    /// The socket, for tests that read or write below the protocol.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The client's local port.
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().expect("local address").port()
    }

    /// Sets the read timeout (default [`IO_TIMEOUT`]).
    pub fn set_read_timeout(&self, timeout: Duration) {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("SO_RCVTIMEO");
    }

    /// A fresh request id for this connection.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The id a reply to a request sent with `id` carries in this protocol.
    pub fn reply_id(&self, id: u64) -> Option<u64> {
        match self.protocol {
            Protocol::Resp => None,
            _ => Some(id),
        }
    }

    /// Encodes `request` and writes it.
    pub fn send(&mut self, request: &Request<'_>) {
        let mut wire = Vec::new();
        self.codec
            .encode_request(request, &mut wire)
            .unwrap_or_else(|e| panic!("encode {request:?}: {e}"));
        self.send_raw(&wire);
    }

    /// Writes `bytes` as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("{}: write: {e}", self.label));
    }

    /// Sends `request` and reads its response.
    pub fn request(&mut self, request: &Request<'_>) -> OwnedResponse {
        self.send(request);
        self.read_response()
    }

    /// The next response, or `Ok(None)` at a clean EOF between responses.
    pub fn try_read_response(&mut self) -> io::Result<Option<OwnedResponse>> {
        loop {
            match self.codec.decode_response(self.input.data()) {
                Ok(Decoded::Incomplete) => {}
                Ok(Decoded::Complete { message, len }) => {
                    let response = OwnedResponse::new(message, self.protocol);
                    self.input.consume(len);
                    return Ok(Some(response));
                }
                Ok(Decoded::Invalid { error, .. }) => {
                    panic!(
                        "{}: the server sent an invalid response: {error}",
                        self.label
                    )
                }
                Err(error) => panic!("{}: the server sent a corrupt stream: {error}", self.label),
            }
            match self.stream.read(self.input.spare(64 * 1024)) {
                Ok(0) if self.input.is_empty() => return Ok(None),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "EOF inside a response ({} bytes buffered)",
                            self.input.len()
                        ),
                    ))
                }
                Ok(n) => self.input.filled(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next response; panics on EOF, a timeout or a broken connection.
    pub fn read_response(&mut self) -> OwnedResponse {
        match self.try_read_response() {
            Ok(Some(r)) => r,
            Ok(None) => panic!("{}: EOF where a response was expected", self.label),
            Err(e) => panic!("{}: reading a response: {e}", self.label),
        }
    }

    /// Asserts that the server closes the connection (a clean EOF) without sending anything
    /// more, within the read timeout.
    pub fn expect_eof(&mut self) {
        match self.try_read_response() {
            Ok(None) => {}
            Ok(Some(r)) => panic!("{}: expected EOF, got a response {r:?}", self.label),
            Err(e) => panic!("{}: expected EOF, got {e}", self.label),
        }
    }

    /// Echoes `content` (see [`wire_payload`]) and asserts the reply: OK, same payload, same id.
    pub fn echo(&mut self, content: &[u8]) {
        let payload = wire_payload(self.protocol, content);
        let id = self.next_id();
        let r = self.request(&Request {
            id: Some(id),
            command: Op::Echo,
            payload: &payload,
        });
        self.assert_echo(&r, id, &payload);
    }

    /// Asserts that `r` is the OK reply to an echo of `payload` sent with `id`.
    pub fn assert_echo(&self, r: &OwnedResponse, id: u64, payload: &[u8]) {
        assert_eq!(
            r.status,
            Status::Ok,
            "{}: echo failed: {}",
            self.label,
            r.message()
        );
        assert_eq!(r.id, self.reply_id(id), "{}: reply id", self.label);
        assert!(
            r.payload == payload,
            "{}: echo of {} bytes came back as {} different bytes",
            self.label,
            payload.len(),
            r.payload.len()
        );
    }

    /// Shuts down the sending side (the server reads EOF) without closing the socket.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

/// A rendezvous for `n` threads that gives up after a timeout (std's `Barrier` would wait
/// forever for a thread that already panicked).
#[derive(Debug)]
pub struct Gate {
    arrived: Mutex<usize>,
    all_in: Condvar,
    n: usize,
}

impl Gate {
    /// A gate for `n` threads.
    pub fn new(n: usize) -> Gate {
        Gate {
            arrived: Mutex::new(0),
            all_in: Condvar::new(),
            n,
        }
    }

    /// Waits until all `n` threads arrived; panics after `timeout`.
    pub fn wait(&self, timeout: Duration) {
        let mut arrived = self.arrived.lock().unwrap_or_else(|e| e.into_inner());
        *arrived += 1;
        self.all_in.notify_all();
        let (arrived, result) = self
            .all_in
            .wait_timeout_while(arrived, timeout, |a| *a < self.n)
            .unwrap_or_else(|e| e.into_inner());
        assert!(
            !result.timed_out(),
            "only {} of {} threads reached the gate within {timeout:?}",
            *arrived,
            self.n
        );
    }
}

/// Runs `program args` with a timeout; `None` when the program is not on PATH.
pub fn run_tool(program: &str, args: &[&str], timeout: Duration) -> Option<(ExitStatus, String)> {
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run {program}: {e}"),
    };
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waitpid") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} {args:?} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut out);
    }
    Some((status, out))
}
