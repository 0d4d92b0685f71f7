//! The harness loadgen's integration tests share: run the `loadgen` binary with a wall-clock
//! guard, start real echolab servers on `127.0.0.1:0`, and script fake servers that break the
//! protocol on purpose.
//!
//! Why these pieces:
//! - [`Loadgen`] runs the real binary, as a person would, with `--json` pointed at a temporary
//!   file and `--progress never`. A run that outlives [`WALL_LIMIT`] is killed and the test
//!   fails: a load generator that hangs on a broken server is exactly the bug these tests hunt.
//! - [`Server`] starts a server binary with the lab's harness (`launch::ServerProcess`, the
//!   one the servers' tests and `loadgen suite` use too): in its own process group, ready on
//!   its `listening on ADDR` line (never a sleep); `Drop` kills the whole group, so a failing
//!   test leaves nothing behind. The server binaries belong to another package, so
//!   [`server_bin`] builds them once if they are missing.
//! - [`FakeServer`] is a `TcpListener` in a thread that hands each connection to a scripted
//!   handler speaking the binary protocol through the protocol crate's server half: the tests
//!   decide, byte by byte, what a wrong server says.
//! - [`run_guarded`] runs the subcommands that start servers themselves (`suite`, `compare`)
//!   under a wall-clock guard that, when it fires, kills the process group of every server
//!   loadgen started as well as loadgen: those servers lead their own groups, so killing
//!   loadgen alone would leave them running.
//! - The process helpers ([`survivors`], [`kill_all_mentioning`], ...) read `/proc` through
//!   the harness's process listing (`launch::processes`, procfs underneath), so a test can check
//!   that nothing it started outlived it: every server a test starts carries a marker argument
//!   unique to the test (a `--stats-file` path, say), and only its command line holds it.
//! - [`spawn_loadgen`] adds `--engine E` to every `run`, `compare` and `sweep` when
//!   `ECHOLAB_TEST_ENGINE=E` is set: CI runs the verification, fault and retry tests once per
//!   engine, so the io_uring engine answers to the same tests as the epoll one. Where io_uring
//!   is unavailable those runs fail with loadgen's usage error, never pass by falling back.
//! - [`skip`] is the harness's rule for a test the machine cannot run: it says so and passes,
//!   or fails where `ECHOLAB_NO_SKIP=1` (CI).

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use echolab_loadgen::lab::launch::{self, Ready, ServerProcess, Spawn, Stderr};
use echolab_protocol::{Codec, Command as Op, Decoded, Protocol, Reply, Request};
use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::socket::{self, MsgFlags};
use nix::unistd::Pid;
use serde_json::Value;

// The skip rule the servers' tests follow too: fails instead under ECHOLAB_NO_SKIP=1.
#[allow(unused_imports)]
pub use echolab_loadgen::lab::launch::skip;

/// The longest any one loadgen run may take before the harness kills it and fails the test.
pub const WALL_LIMIT: Duration = Duration::from_secs(30);
/// What a run may take beyond `--duration` + `--timeout` on a loaded two-core machine running
/// debug builds: process start, the final drain, writing the report.
pub const SLACK: Duration = Duration::from_secs(3);

/// The loadgen binary under test.
pub fn loadgen_bin() -> &'static str {
    env!("CARGO_BIN_EXE_loadgen")
}

/// A fresh path under cargo's scratch directory for tests, removed when dropped.
#[derive(Debug)]
pub struct TempPath(pub PathBuf);

impl TempPath {
    /// A new, unused path ending in `suffix`.
    pub fn new(suffix: &str) -> TempPath {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("loadgen-test-{}-{n}{suffix}", std::process::id());
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        let _ = fs::remove_file(&path);
        TempPath(path)
    }

    /// The path as a command-line argument.
    pub fn arg(&self) -> &str {
        self.0.to_str().expect("the scratch directory is UTF-8")
    }

    /// The file's contents (panics if it was not written).
    pub fn read(&self) -> String {
        fs::read_to_string(&self.0)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.0.display()))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

// ----- loadgen ---------------------------------------------------------------------------

/// What one loadgen run produced.
#[derive(Debug)]
pub struct Run {
    /// The command line, for messages.
    pub args: Vec<String>,
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// The summary.
    pub stdout: String,
    /// Usage errors and setup failures.
    pub stderr: String,
    /// Wall-clock time from spawn to exit.
    pub elapsed: Duration,
    /// The `--json` report, if it was written.
    pub json: Option<Value>,
}

impl Run {
    /// The JSON report, which must exist.
    pub fn report(&self) -> &Value {
        self.json.as_ref().unwrap_or_else(|| {
            panic!(
                "loadgen {:?} wrote no JSON report (exit {:?})\n{}",
                self.args,
                self.code,
                self.output()
            )
        })
    }

    /// The report's number at a dotted path (`counts.ok`), as u64.
    pub fn u(&self, path: &str) -> u64 {
        let v = lookup(self.report(), path);
        v.as_u64()
            .unwrap_or_else(|| panic!("{path} is {v}, not an unsigned integer\n{}", self.output()))
    }

    /// The report's number at a dotted path, as f64.
    pub fn f(&self, path: &str) -> f64 {
        let v = lookup(self.report(), path);
        v.as_f64()
            .unwrap_or_else(|| panic!("{path} is {v}, not a number\n{}", self.output()))
    }

    /// The report's value at a dotted path.
    pub fn get(&self, path: &str) -> &Value {
        lookup(self.report(), path)
    }

    /// Everything a failing assertion should show: command, exit code, stdout and stderr.
    pub fn output(&self) -> String {
        format!(
            "loadgen {}\nexit {:?} after {:?}\n--- stdout\n{}--- stderr\n{}",
            self.args.join(" "),
            self.code,
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }

    /// Asserts the exit code.
    /// Asserts the run was refused before any load: no summary, no report, and no connection
    /// to `fake`.
    pub fn assert_nothing_started(&self, fake: &FakeServer) {
        assert!(
            self.stdout.is_empty(),
            "no summary expected\n{}",
            self.output()
        );
        assert!(self.json.is_none(), "no report expected\n{}", self.output());
        assert!(
            fake.peers().is_empty(),
            "loadgen connected: {:?}\n{}",
            fake.peers(),
            self.output()
        );
    }

    pub fn assert_code(&self, code: i32) {
        assert_eq!(self.code, Some(code), "exit code\n{}", self.output());
    }

    /// Asserts the run took at most `limit` of wall-clock time.
    pub fn assert_within(&self, limit: Duration) {
        assert!(
            self.elapsed <= limit,
            "the run took {:?}, more than {limit:?}\n{}",
            self.elapsed,
            self.output()
        );
    }

    /// Asserts a clean run of exactly `n` requests: exit 0, every request sent and verified,
    /// no error of any kind, and a latency histogram holding every reply in order.
    pub fn assert_clean(&self, n: u64) {
        self.assert_code(0);
        assert_eq!(self.u("counts.sent"), n, "counts.sent\n{}", self.output());
        assert_eq!(self.u("counts.ok"), n, "counts.ok\n{}", self.output());
        for c in ["failed", "indeterminate", "unsent", "retries"] {
            assert_eq!(
                self.u(&format!("counts.{c}")),
                0,
                "counts.{c}\n{}",
                self.output()
            );
        }
        self.assert_no_errors();
        assert_eq!(
            self.u("latency_us.count"),
            n,
            "latency_us.count\n{}",
            self.output()
        );
        let (p50, p99, max) = (
            self.u("latency_us.p50"),
            self.u("latency_us.p99"),
            self.u("latency_us.max"),
        );
        assert!(
            p50 > 0 && p50 <= p99 && p99 <= max,
            "percentiles out of order\n{}",
            self.output()
        );
        assert_eq!(self.get("ok"), &Value::Bool(true), "ok\n{}", self.output());
        assert!(
            self.stdout.contains("every reply verified"),
            "{}",
            self.output()
        );
    }

    /// Asserts every error count is zero.
    pub fn assert_no_errors(&self) {
        let errors = self.get("errors");
        let obj = errors.as_object().expect("errors is an object");
        assert_eq!(obj.len(), 12, "errors should list all 12 kinds: {errors}");
        for (kind, n) in obj {
            assert_eq!(n.as_u64(), Some(0), "errors.{kind}\n{}", self.output());
        }
    }

    /// Asserts the run failed (exit 1) with at least one error of `kind`, named in the summary.
    pub fn assert_error(&self, kind: &str) {
        self.assert_code(1);
        assert!(
            self.u(&format!("errors.{kind}")) >= 1,
            "errors.{kind}\n{}",
            self.output()
        );
        assert_eq!(self.get("ok"), &Value::Bool(false), "ok\n{}", self.output());
        let line = self
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with("errors "))
            .unwrap_or_else(|| panic!("no `errors` line in the summary\n{}", self.output()));
        assert!(
            line.contains(&format!("{kind} ")),
            "the summary's errors line does not name {kind}: {line:?}\n{}",
            self.output()
        );
        assert!(self.stdout.contains("FAILED"), "{}", self.output());
    }

    /// The sum of the named error counts.
    pub fn errors_of(&self, kinds: &[&str]) -> u64 {
        kinds.iter().map(|k| self.u(&format!("errors.{k}"))).sum()
    }
}

fn lookup<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, key| match v.get(key) {
        Some(next) => next,
        None => panic!("the report has no {path} (at {key}): {v}"),
    })
}

/// A loadgen process started with [`Loadgen::start`]; killed if dropped before [`Loadgen::wait`].
#[derive(Debug)]
pub struct Loadgen {
    child: Option<Child>,
    args: Vec<String>,
    json: TempPath,
    started: Instant,
    /// Killed past this (see [`WALL_LIMIT`]).
    limit: Duration,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

impl Loadgen {
    /// Starts `loadgen run CMD --json TMP --progress never`, `cmd` split on whitespace (so
    /// tests read like the command lines a person types).
    pub fn start(cmd: &str) -> Loadgen {
        Loadgen::start_command("run", cmd, &["--progress", "never"])
    }

    /// Starts `loadgen SUB CMD --json TMP EXTRA...`.
    pub fn start_command(sub: &str, cmd: &str, extra: &[&str]) -> Loadgen {
        let json = TempPath::new(".json");
        let mut full: Vec<String> = vec![sub.into()];
        full.extend(cmd.split_whitespace().map(str::to_owned));
        full.extend(["--json".into(), json.arg().to_owned()]);
        full.extend(extra.iter().map(|&a| a.to_owned()));
        let started = Instant::now();
        let (child, stdout, stderr) = spawn_loadgen(&full);
        Loadgen {
            child: Some(child),
            args: full,
            json,
            started,
            limit: WALL_LIMIT,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    /// The loadgen process's pid (to signal it).
    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .map(|c| c.id() as i32)
            .expect("loadgen is running")
    }

    /// Waits for the run to end; past [`WALL_LIMIT`] kills it and fails the test.
    pub fn wait(mut self) -> Run {
        let mut child = self.child.take().expect("waited once");
        let status = wait_with_deadline(&mut child, self.started + self.limit);
        let elapsed = self.started.elapsed();
        let stdout = self
            .stdout
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let Some(status) = status else {
            let args = self.args.join(" ");
            panic!(
                "loadgen {args} did not finish within {:?}: killed\n\
                 --- stdout\n{stdout}--- stderr\n{stderr}",
                self.limit
            );
        };
        let json = fs::read_to_string(&self.json.0).ok().map(|text| {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("the JSON report does not parse: {e}\n{text}"))
        });
        Run {
            args: std::mem::take(&mut self.args),
            code: status.code(),
            stdout,
            stderr,
            elapsed,
            json,
        }
    }
}

impl Drop for Loadgen {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for `child` until `deadline`; past it kills the child and returns `None`.
fn wait_with_deadline(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Starts the loadgen binary with `args`, stdin closed, and threads draining its stdout and
/// stderr (so a chatty run can never block on a full pipe); join them for the text.
pub fn spawn_loadgen(args: &[String]) -> (Child, JoinHandle<String>, JoinHandle<String>) {
    let args = with_test_engine(args);
    let mut child = Command::new(loadgen_bin())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start loadgen: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr is piped")));
    (child, stdout, stderr)
}

/// `args` with `--engine $ECHOLAB_TEST_ENGINE` after the subcommand, for the subcommands that
/// take it, unless the test names an engine itself.
pub fn with_test_engine(args: &[String]) -> Vec<String> {
    let mut args = args.to_vec();
    let Ok(engine) = std::env::var("ECHOLAB_TEST_ENGINE") else {
        return args;
    };
    let takes_it = args
        .first()
        .is_some_and(|sub| ["run", "compare", "sweep"].contains(&sub.as_str()));
    if takes_it && !engine.is_empty() && !args.iter().any(|a| a == "--engine") {
        args.splice(1..1, ["--engine".to_string(), engine]);
    }
    args
}

/// Runs `loadgen sweep CMD --json TMP` to the end, killed past `limit` (a sweep is many runs).
pub fn sweep(cmd: &str, limit: Duration) -> Run {
    let mut l = Loadgen::start_command("sweep", cmd, &[]);
    l.limit = limit;
    l.wait()
}

/// Runs `loadgen run CMD` to the end (see [`Loadgen::start`]).
pub fn loadgen(cmd: &str) -> Run {
    Loadgen::start(cmd).wait()
}

/// A condition for [`run_guarded`] to send a signal on: called with the time since loadgen
/// started, about every 20 ms, until it first returns true.
pub type When<'a> = Box<dyn FnMut(Duration) -> bool + 'a>;

/// What a [`run_guarded`] run produced.
#[derive(Debug)]
pub struct Guarded {
    /// How loadgen exited; `None` if the guard killed it.
    pub status: Option<ExitStatus>,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// Wall-clock time from spawn to exit.
    pub elapsed: Duration,
    /// When the signal was sent (time since the start), if it was.
    pub signalled_at: Option<Duration>,
}

/// Runs the loadgen binary with `args`; sends `signal` once its condition holds. Past `limit`
/// the guard stops loadgen (SIGSTOP, so it starts no new server meanwhile), kills the process
/// group of each of its children (every server loadgen starts leads its own group), then
/// kills loadgen, and returns `status: None`: the caller fails the test.
pub fn run_guarded(
    args: &[String],
    limit: Duration,
    mut signal: Option<(Signal, When<'_>)>,
) -> Guarded {
    let started = Instant::now();
    let (mut child, stdout, stderr) = spawn_loadgen(args);
    let pid = Pid::from_raw(child.id() as i32);
    let mut signalled_at = None;
    let status = loop {
        let elapsed = started.elapsed();
        if signal.as_mut().is_some_and(|(_, when)| when(elapsed)) {
            if let Some((sig, _)) = signal.take() {
                let _ = kill(pid, sig);
                signalled_at = Some(elapsed);
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if elapsed < limit => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = kill(pid, Signal::SIGSTOP);
                for server in children_of(pid.as_raw()) {
                    let _ = killpg(Pid::from_raw(server), Signal::SIGKILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let join = |h: JoinHandle<String>| h.join().unwrap_or_default();
    Guarded {
        status,
        stdout: join(stdout),
        stderr: join(stderr),
        elapsed: started.elapsed(),
        signalled_at,
    }
}

// ----- processes -------------------------------------------------------------------------

/// How long a process that was killed (or told to stop) may take to disappear from `/proc`.
pub const GONE_WITHIN: Duration = Duration::from_secs(2);

/// The live children of `parent` (zombies excluded).
pub fn children_of(parent: i32) -> Vec<i32> {
    launch::children(parent)
        .into_iter()
        .filter(|p| !p.is_zombie())
        .map(|p| p.pid)
        .collect()
}

/// Live processes (zombies excluded) whose command line contains `needle`, as (pid, command
/// line).
pub fn processes_mentioning(needle: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    launch::processes()
        .into_iter()
        .filter(|p| p.pid != me && !p.is_zombie())
        .filter_map(|p| {
            let cmdline = p.cmdline()?;
            cmdline.contains(needle).then_some((p.pid, cmdline))
        })
        .collect()
}

/// The processes still mentioning `needle` after waiting up to [`GONE_WITHIN`] for them to go
/// (a process sent SIGKILL stays in `/proc` until the kernel has torn it down).
pub fn survivors(needle: &str) -> Vec<(i32, String)> {
    let deadline = Instant::now() + GONE_WITHIN;
    loop {
        let left = processes_mentioning(needle);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Kills, one by one by pid, every live process whose command line contains `needle`.
pub fn kill_all_mentioning(needle: &str) {
    for (pid, _) in processes_mentioning(needle) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

// ----- real servers ----------------------------------------------------------------------

/// The directory holding this build's binaries: the test runs as `target/debug/deps/<test>`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let deps = exe.parent().expect("the test binary has a directory");
    deps.parent()
        .expect("target/<profile>/deps has a parent")
        .to_path_buf()
}

/// The path of server binary `name` (`server-thread`, ...), after building the servers'
/// package once per test process: they belong to `echolab-servers`, which `cargo test -p
/// echolab-loadgen` does not build, and a binary left over from older sources would test
/// those (cargo makes the build a no-op when nothing changed).
pub fn server_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let dir = target_dir();
    let built = BUILT.get_or_init(|| {
        let out = Command::new(env!("CARGO"))
            .args(["build", "-p", "echolab-servers", "--bins"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`cargo build -p echolab-servers --bins` failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    });
    if let Err(e) = built {
        panic!("the server binaries are needed and could not be built: {e}");
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} does not exist even after building echolab-servers",
        path.display()
    );
    path
}

/// A running server binary, killed with its whole process group when dropped.
#[derive(Debug)]
pub struct Server {
    process: ServerProcess,
    /// Where it listens, from its `listening on` line.
    pub addr: SocketAddr,
    name: String,
    log: TempPath,
}

impl Server {
    /// Starts server `name` with `--addr 127.0.0.1:0` and `args`, and waits for it to listen.
    pub fn start(name: &str, args: &[&str]) -> Server {
        let bin = server_bin(name);
        let log = TempPath::new(&format!("-{name}.log"));
        let mut command = Command::new(&bin);
        command.args(["--addr", "127.0.0.1:0"]).args(args);
        let how = Spawn::new(Ready::FirstLine, Stderr::File(log.0.clone()));
        let process = ServerProcess::spawn(command, &how).unwrap_or_else(|e| {
            let said = fs::read_to_string(&log.0).unwrap_or_default();
            panic!("{name} {args:?} did not get ready: {e}\n{said}")
        });
        Server {
            addr: process.addr(),
            process,
            name: name.to_owned(),
            log,
        }
    }

    /// `--addr` for loadgen.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The server's pid (also its process group id).
    pub fn pid(&self) -> i32 {
        self.process.pid().as_raw()
    }

    /// Sends `signal` to the server process alone.
    pub fn signal(&self, signal: Signal) {
        self.process
            .signal(signal)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Kills the server and everything it started, at once, and reaps it.
    pub fn kill_now(&mut self) {
        self.process.kill();
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        self.process.stderr()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_now();
        if thread::panicking() {
            eprintln!("---- stderr of {} ----\n{}", self.name, self.log());
        }
    }
}

/// A local port on which nothing listens (bound, then released; the kernel does not hand an
/// ephemeral port straight back out, so it stays free for the few seconds a test needs).
pub fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = l.local_addr().expect("local_addr");
    drop(l);
    addr.to_string()
}

/// The longest a test's client waits for a reply or a close through a proxy.
pub const CLIENT_WAIT: Duration = Duration::from_secs(5);

// ----- loadgen proxy -------------------------------------------------------------------------

/// A running `loadgen proxy` (tests/proxy.rs, tests/exactly_once.rs); killed with its group
/// if dropped before [`Proxy::stop`].
pub struct Proxy {
    /// The proxy's process.
    pub process: ServerProcess,
    stats: TempPath,
    log: TempPath,
}

impl Proxy {
    /// Starts `loadgen proxy --upstream UPSTREAM --stats-file TMP FLAGS`, `flags` split on
    /// whitespace, and waits for its `listening on` line.
    pub fn start(upstream: &str, flags: &str) -> Proxy {
        let stats = TempPath::new(".proxy.json");
        let log = TempPath::new(".proxy.log");
        let mut cmd = Command::new(loadgen_bin());
        cmd.args(["proxy", "--upstream", upstream, "--stats-file", stats.arg()])
            .args(flags.split_whitespace());
        let mut how = Spawn::new(Ready::FirstLine, Stderr::File(log.0.clone()));
        how.die_with_parent = true;
        let process = ServerProcess::spawn(cmd, &how)
            .unwrap_or_else(|e| panic!("loadgen proxy {flags}: {e}"));
        Proxy {
            process,
            stats,
            log,
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.process.addr()
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr()).expect("connect to the proxy");
        s.set_read_timeout(Some(CLIENT_WAIT)).expect("read timeout");
        s.set_nodelay(true).expect("nodelay");
        s
    }

    /// SIGTERM; it must exit 0 within seconds, leave no process, and have written its
    /// counters. Returns them and its stderr.
    pub fn stop(mut self) -> (Value, String) {
        self.process
            .signal(Signal::SIGTERM)
            .expect("SIGTERM the proxy");
        let status = self.process.wait_timeout(Duration::from_secs(5));
        let stderr = self.log.read();
        let status = status.unwrap_or_else(|| {
            self.process.kill();
            panic!("the proxy did not exit within 5 s of SIGTERM\n{stderr}")
        });
        assert!(status.success(), "the proxy exited {status}\n{stderr}");
        assert_eq!(survivors(self.stats.arg()), vec![], "left running");
        let stats = serde_json::from_str(&self.stats.read())
            .unwrap_or_else(|e| panic!("the stats file does not parse: {e}"));
        (stats, stderr)
    }
}

/// `stats[key]` as u64.
pub fn n(stats: &Value, key: &str) -> u64 {
    stats[key]
        .as_u64()
        .unwrap_or_else(|| panic!("stats has no count {key}: {stats}"))
}

// ----- fake servers ----------------------------------------------------------------------

/// A request as a fake server received it, owned.
#[derive(Debug, Clone)]
pub struct Req {
    /// Its id.
    pub id: Option<u64>,
    /// What it asked.
    pub command: Op,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// What [`FakeConn::next`] found.
#[derive(Debug)]
pub enum Next {
    /// A whole request.
    Req(Req),
    /// No whole request arrived within the wait.
    Idle,
    /// The peer closed, the bytes were not a request, or the test is over.
    Closed,
}

/// One connection accepted by a [`FakeServer`], handed to its handler.
#[derive(Debug)]
pub struct FakeConn {
    /// The socket.
    pub stream: TcpStream,
    codec: Box<dyn Codec>,
    buf: Vec<u8>,
    stop: Arc<AtomicBool>,
}

impl FakeConn {
    /// Waits up to `wait` for the next whole request.
    pub fn next(&mut self, wait: Duration) -> Next {
        let deadline = Instant::now() + wait;
        loop {
            match self.codec.decode_request(&self.buf) {
                Ok(Decoded::Complete { message, len }) => {
                    let req = Req {
                        id: message.id,
                        command: message.command,
                        payload: message.payload.to_vec(),
                    };
                    self.buf.drain(..len);
                    return Next::Req(req);
                }
                Ok(Decoded::Incomplete) => {}
                Ok(Decoded::Invalid { .. }) | Err(_) => return Next::Closed,
            }
            if self.stopped() {
                return Next::Closed;
            }
            if Instant::now() >= deadline {
                return Next::Idle;
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Next::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Closed,
            }
        }
    }

    /// The next whole request, or `None` once the peer closed or the test is over.
    pub fn request(&mut self) -> Option<Req> {
        loop {
            match self.next(Duration::from_secs(3600)) {
                Next::Req(r) => return Some(r),
                Next::Idle => {}
                Next::Closed => return None,
            }
        }
    }

    /// The bytes of a correct reply to `req`, with `id` and `payload` as given.
    pub fn reply_bytes(&self, req: &Req, id: Option<u64>, payload: &[u8]) -> Vec<u8> {
        let request = Request {
            id,
            command: req.command,
            payload,
        };
        let mut out = Vec::new();
        self.codec.encode_reply(&request, Reply::Echo, &mut out);
        out
    }

    /// The bytes of the success reply `reply` to `req` (a value, a HELLO word).
    pub fn reply_with(&self, req: &Req, reply: Reply) -> Vec<u8> {
        let request = Request {
            id: req.id,
            command: req.command,
            payload: &req.payload,
        };
        let mut out = Vec::new();
        self.codec.encode_reply(&request, reply, &mut out);
        out
    }

    /// The bytes of the correct echo reply to `req`.
    pub fn echo_bytes(&self, req: &Req) -> Vec<u8> {
        self.reply_bytes(req, req.id, &req.payload)
    }

    /// The bytes of an ERROR reply to `req`.
    pub fn error_bytes(&self, req: &Req, message: &str) -> Vec<u8> {
        let mut out = Vec::new();
        self.codec.encode_error(req.id, message, &mut out);
        out
    }

    /// Writes `bytes`; false if the peer is gone.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Writes `bytes` and closes the connection so that the bytes and the FIN leave in one
    /// segment: `send(2)` with `MSG_MORE` holds the bytes back (as `TCP_CORK` would), and
    /// `close(2)` tacks the FIN onto them. The client then finds the bytes and the end of the
    /// stream in the same read, whatever the scheduler does: the deterministic form of "the
    /// server wrote its last bytes and closed" (a plain write then close races the client's
    /// wake-up, and the client usually reads the bytes before the FIN arrives).
    pub fn send_and_close(self, bytes: &[u8]) {
        let more = MsgFlags::from_bits_retain(libc::MSG_MORE);
        let mut sent = 0;
        while sent < bytes.len() {
            // send(2): EINTR retried; any other error means the peer is gone.
            match socket::send(self.stream.as_raw_fd(), &bytes[sent..], more) {
                Ok(n) => sent += n,
                Err(Errno::EINTR) => {}
                Err(_) => return,
            }
        }
        drop(self);
    }

    /// Holds the connection open, reading nothing, until the test is over.
    pub fn hold(&self) {
        while !self.stopped() {
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// A scripted binary-protocol server: each accepted connection runs `handler` in a thread.
/// Dropping it stops accepting and tells every handler to give up (they poll a flag).
#[derive(Debug)]
pub struct FakeServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeServer {
    /// Listens on `127.0.0.1:0` and serves every connection with `handler`.
    pub fn start<F>(handler: F) -> FakeServer
    where
        F: Fn(FakeConn) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let acceptor = {
            let (stop, peers) = (Arc::clone(&stop), Arc::clone(&peers));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, peer)) => {
                            peers.lock().expect("peers lock").push(peer);
                            // Blocking reads with a short timeout, so handlers notice `stop`.
                            let _ = stream.set_nonblocking(false);
                            let _ = stream.set_read_timeout(Some(Duration::from_millis(20)));
                            let conn = FakeConn {
                                stream,
                                codec: Protocol::Binary.codec(echolab_protocol::DEFAULT_MAX_FRAME),
                                buf: Vec::new(),
                                stop: Arc::clone(&stop),
                            };
                            let handler = Arc::clone(&handler);
                            thread::spawn(move || handler(conn));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(2));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        FakeServer {
            addr,
            stop,
            peers,
            acceptor: Some(acceptor),
        }
    }

    /// A correct echo server (to check what loadgen does, not what a server does).
    pub fn echo() -> FakeServer {
        FakeServer::start(|mut c| {
            while let Some(req) = c.request() {
                let reply = c.echo_bytes(&req);
                if !c.send(&reply) {
                    return;
                }
            }
        })
    }

    /// A listener that accepts connections and never answers (nothing should connect).
    pub fn silent() -> FakeServer {
        FakeServer::start(|c| c.hold())
    }

    /// `--addr` for loadgen.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The peer addresses of every connection accepted so far.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().expect("peers lock").clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

// ----- files -----------------------------------------------------------------------------

/// Decodes standard base64 (with `=` padding), as HdrHistogram's interval log writes it. A
/// dozen lines here spare the workspace a dependency used by one test.
pub fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("{:?} is not a base64 character", c as char),
        }
    };
    let digits: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | value(c) << (18 - 6 * i));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len() - 1]);
    }
    out
}
