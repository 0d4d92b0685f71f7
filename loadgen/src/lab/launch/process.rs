//! One server process under test: started in its own process group, ready when it says where
//! it listens (or its port accepts), stopped with a signal, and never left behind: dropping a
//! [`ServerProcess`] kills whatever of its group still runs.
//!
//! This is the harness `loadgen suite`, `loadgen compare` and both crates' integration tests
//! start servers with, so what "started", "ready" and "nothing left" mean is written once.
//! Beside it, what the tests check a group with ([`group`], [`children`], read from `/proc`
//! by procfs) and the one rule for a test this machine cannot run ([`skip`]).

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// How long a server may take to get ready (to say where it listens, or to accept on its
/// port) before it is called broken.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The first this many lines a server prints on stdout after getting ready are kept
/// ([`ServerProcess::stdout_after_ready`]); the rest are read and dropped.
const STDOUT_KEPT: usize = 1000;

/// The last this many lines of stderr a [`Stderr::Tail`] keeps, to say why a server failed.
const STDERR_TAIL: usize = 5;

/// How a started server shows that it is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// Its first line on stdout is `listening on ADDR`: echolab's servers print nothing before
    /// it, and the tests hold them to that.
    FirstLine,
    /// Some line on stdout is `listening on ADDR` (a command of the user's may print other
    /// lines first).
    AnyLine,
    /// `ADDR` accepts a connection: for a server that cannot say where it listens
    /// (redis-server, a command given with `{addr}`).
    Port(SocketAddr),
}

/// Where a started server's stderr goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stderr {
    /// Into a pipe a thread drains, keeping the last lines, to say why a server failed
    /// (`loadgen suite`, `loadgen compare`).
    Tail,
    /// Into this file, created afresh: the whole log, for a test to read and to print when
    /// it fails.
    File(PathBuf),
}

/// How to start a server, besides its command line.
#[derive(Debug, Clone)]
pub struct Spawn {
    /// How it shows it is ready.
    pub ready: Ready,
    /// Where its stderr goes.
    pub stderr: Stderr,
    /// Its soft `RLIMIT_NOFILE` (at most the hard limit), for a server that is to run out of
    /// descriptors; the starting process keeps its own.
    pub nofile: Option<u64>,
    /// The CPUs it may run on.
    pub cpus: Option<nix::sched::CpuSet>,
    /// `PR_SET_PDEATHSIG`: the kernel kills it when the thread that started it exits.
    pub die_with_parent: bool,
}

impl Spawn {
    /// Ready as `ready` says, stderr to `stderr`, nothing else changed.
    pub fn new(ready: Ready, stderr: Stderr) -> Spawn {
        Spawn {
            ready,
            stderr,
            nofile: None,
            cpus: None,
            die_with_parent: false,
        }
    }
}

/// Where [`ServerProcess`] keeps the stderr it was told to keep.
#[derive(Debug)]
enum StderrKept {
    /// The last lines, and a channel that disconnects when the pipe has been read to its end.
    Tail(Arc<Mutex<VecDeque<String>>>, Mutex<mpsc::Receiver<()>>),
    File(PathBuf),
}

/// A server process under test: started in its own process group (its pid is the group's id),
/// so that everything it forks can be looked for ([`group`]) and killed as one; ready once it
/// said where it listens; and, when dropped, killed with everything of its group still
/// running, so that not even a test that fails half-way leaves a process behind.
///
/// Its stdout is read by a thread, which waits for the ready line and then keeps draining (a
/// server never blocks on a full pipe) and keeps what else is printed
/// ([`ServerProcess::stdout_after_ready`]).
///
/// The one harness for starting a server: `loadgen suite` and `loadgen compare` use it through
/// [`Server`](super::Server), the servers' and loadgen's integration tests through their own `Server`s.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    exit: Option<ExitStatus>,
    stderr: StderrKept,
    // In a Mutex only so that a `&ServerProcess` can be shared with threads.
    stdout_rest: Mutex<mpsc::Receiver<Vec<String>>>,
}

impl ServerProcess {
    /// Starts `cmd` as [`Spawn`] says (stdin closed, stdout read by the harness) and waits
    /// until it is ready, at most [`READY_TIMEOUT`]. A server that never gets ready is killed
    /// with all it started, and the error says why, with its last words on stderr.
    pub fn spawn(mut cmd: Command, how: &Spawn) -> Result<ServerProcess, String> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let stderr_to = match &how.stderr {
            Stderr::Tail => Stdio::piped(),
            Stderr::File(path) => fs::File::create(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?
                .into(),
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr_to)
            // Its own process group (pgid = its pid), so all it forks can be found and killed.
            .process_group(0);
        let nofile = match how.nofile {
            // Read in the parent: the closure below runs in the forked child.
            Some(limit) => {
                let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)
                    .map_err(|e| format!("getrlimit(RLIMIT_NOFILE): {e}"))?;
                Some((limit.min(hard), hard))
            }
            None => None,
        };
        let (cpus, die_with_parent) = (how.cpus, how.die_with_parent);
        if nofile.is_some() || cpus.is_some() || die_with_parent {
            // SAFETY: the closure runs in the child between fork and exec, where the other
            // threads of this process do not exist (a lock one of them held stays held), so it
            // may only do async-signal-safe work. It makes at most three system calls on values
            // copied in before the fork: setrlimit(2), sched_setaffinity(2) and
            // prctl(PR_SET_PDEATHSIG). nix's wrappers fill a struct on the stack and call the
            // kernel through libc, which takes no lock and allocates nothing for them (POSIX
            // does not list them in signal-safety(7), but each is a bare system call, like the
            // setuid and setgroups std itself makes here). An error is built from the errno
            // without allocating.
            unsafe {
                cmd.pre_exec(move || {
                    if let Some((soft, hard)) = nofile {
                        setrlimit(Resource::RLIMIT_NOFILE, soft, hard)
                            .map_err(std::io::Error::from)?;
                    }
                    if let Some(set) = cpus {
                        nix::sched::sched_setaffinity(Pid::from_raw(0), &set)
                            .map_err(std::io::Error::from)?;
                    }
                    if die_with_parent {
                        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
                            .map_err(std::io::Error::from)?;
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        let stderr = match &how.stderr {
            Stderr::Tail => {
                let (tail, drained) = keep_tail(child.stderr.take());
                StderrKept::Tail(tail, Mutex::new(drained))
            }
            Stderr::File(path) => StderrKept::File(path.clone()),
        };
        let (ready_line, stdout_rest) = read_stdout(child.stdout.take(), how.ready);
        let mut process = ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            exit: None,
            stderr,
            stdout_rest: Mutex::new(stdout_rest),
        };
        let ready = match how.ready {
            Ready::Port(addr) => process.wait_for_port(addr).map(|()| addr),
            Ready::FirstLine | Ready::AnyLine => wait_for_line(&ready_line),
        };
        match ready {
            Ok(addr) => {
                process.addr = addr;
                Ok(process)
            }
            Err(e) => {
                // Never ready: nothing it started may outlive the attempt.
                process.kill();
                process.kill_leftovers(Duration::ZERO);
                // What it said on the way out is usually why (a flag given twice, a port in
                // use): the last of it may still be in the pipe, which closes now that the
                // whole group is dead.
                if let StderrKept::Tail(_, drained) = &process.stderr {
                    if let Ok(drained) = drained.lock() {
                        let _ = drained.recv_timeout(Duration::from_secs(1));
                    }
                }
                let said = process.stderr_tail().join(" | ");
                Err(if said.is_empty() {
                    e
                } else {
                    format!("{e}; it said: {said}")
                })
            }
        }
    }

    /// Where it listens: the address of its `listening on` line, or the port it was
    /// [`Ready::Port`] on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id, which is also the id of its process group.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Sends `signal` to the server process alone (it decides what its children get).
    pub fn signal(&self, signal: Signal) -> Result<(), String> {
        kill(self.pid(), signal).map_err(|e| format!("kill({}, {signal}): {e}", self.pid()))
    }

    /// Sends `signal` to every process of its group.
    pub fn signal_group(&self, signal: Signal) -> Result<(), String> {
        killpg(self.pid(), signal).map_err(|e| format!("killpg({}, {signal}): {e}", self.pid()))
    }

    /// Whether it is still running; it is reaped the first time it is found dead.
    pub fn alive(&mut self) -> bool {
        if self.exit.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exit = Some(status);
                false
            }
            Ok(None) => true,
            // waitpid failed (ECHILD: someone else reaped it): gone, with no status to say.
            Err(_) => false,
        }
    }

    /// How it exited, once it was found to have exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exit
    }

    /// Waits up to `timeout` for it to exit, and reaps it; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while self.alive() {
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.exit
    }

    /// Kills its whole process group with SIGKILL at once, and reaps it.
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            // Not reaped, so its pid (the group's id) cannot have been reused.
            let _ = killpg(self.pid(), Signal::SIGKILL);
            self.exit = self.child.wait().ok();
        } else if group_running(self.pid()) {
            // Reaped: signal the group only while something of it still runs (once it is
            // empty, its id may come back as another group's).
            let _ = killpg(self.pid(), Signal::SIGKILL);
        }
    }

    /// Sends `signal` (to the server, or to its whole group with `whole_group`) and waits up
    /// to `within` for it to exit. If it does not, kills the group and says so.
    pub fn stop(
        &mut self,
        signal: Signal,
        whole_group: bool,
        within: Duration,
    ) -> Result<ExitStatus, String> {
        if self.alive() {
            let _ = if whole_group {
                self.signal_group(signal)
            } else {
                self.signal(signal)
            };
        }
        match self.wait_timeout(within) {
            Some(status) => Ok(status),
            None => {
                self.kill();
                Err(format!(
                    "did not exit within {} of {signal} (killed)",
                    human(within)
                ))
            }
        }
    }

    /// Waits up to `within` for every other process of its group to exit, then kills what
    /// still runs; says whether anything did. A member that exited and waits to be reaped (a
    /// zombie) is not running: a server that a shell command started without `exec` is
    /// orphaned when the shell dies and stays a zombie in the group until init reaps it, which
    /// some inits do a second or more later, or never.
    pub fn kill_leftovers(&self, within: Duration) -> bool {
        let pgid = self.pid();
        let deadline = Instant::now() + within;
        while group_running(pgid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let any = group_running(pgid);
        if any {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        any
    }

    /// Its stderr so far: the whole log file, or the last lines kept.
    pub fn stderr(&self) -> String {
        match &self.stderr {
            StderrKept::File(path) => fs::read_to_string(path).unwrap_or_default(),
            StderrKept::Tail(tail, _) => tail
                .lock()
                .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
                .unwrap_or_default(),
        }
    }

    /// The last few lines of its stderr.
    fn stderr_tail(&self) -> Vec<String> {
        let all = self.stderr();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(STDERR_TAIL)..]
            .iter()
            .map(|l| l.to_string())
            .collect()
    }

    /// The lines it printed on stdout after getting ready, once stdout has closed (every
    /// process that held it has exited): `None` if it is still open `wait` from now. Given
    /// once; `None` after.
    pub fn stdout_after_ready(&self, wait: Duration) -> Option<Vec<String>> {
        self.stdout_rest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recv_timeout(wait)
            .ok()
    }

    fn wait_for_port(&mut self, addr: SocketAddr) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if !self.alive() {
                return Err(format!(
                    "exited before listening: {}",
                    self.exit
                        .map_or("(status unknown)".into(), |s| s.to_string())
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "nothing listening on {addr} within {}",
            human(READY_TIMEOUT)
        ))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a server's stdout in a thread: sends the address of its `listening on` line (or why
/// there is none) on the first channel, keeps draining so the server never blocks on a full
/// pipe, and sends the lines after the ready one (the first [`STDOUT_KEPT`]) on the second when
/// stdout closes. Under [`Ready::Port`] every line counts as after.
fn read_stdout(
    stdout: Option<std::process::ChildStdout>,
    ready: Ready,
) -> (
    mpsc::Receiver<Result<String, String>>,
    mpsc::Receiver<Vec<String>>,
) {
    let (line_tx, line_rx) = mpsc::channel();
    let (rest_tx, rest_rx) = mpsc::channel();
    let Some(stdout) = stdout else {
        let _ = line_tx.send(Err("its stdout is not a pipe".into()));
        return (line_rx, rest_rx);
    };
    std::thread::spawn(move || {
        let mut waiting = match ready {
            Ready::Port(_) => None,
            Ready::FirstLine | Ready::AnyLine => Some(line_tx),
        };
        let mut rest = Vec::new();
        // Read to the end whatever the server writes (bytes that are not UTF-8 included), so
        // it never blocks on a full pipe.
        for line in lossy_lines(stdout) {
            let Some(tx) = waiting.take() else {
                if rest.len() < STDOUT_KEPT {
                    rest.push(line);
                }
                continue;
            };
            match line.strip_prefix("listening on ") {
                Some(addr) => {
                    let _ = tx.send(Ok(addr.trim().to_owned()));
                }
                None if ready == Ready::FirstLine => {
                    let _ = tx.send(Err(format!(
                        "its first line on stdout is {line:?}, not `listening on ADDR`"
                    )));
                }
                None => waiting = Some(tx),
            }
        }
        if let Some(tx) = waiting {
            let _ = tx.send(Err(
                "closed its output without printing `listening on ADDR`".into(),
            ));
        }
        let _ = rest_tx.send(rest);
    });
    (line_rx, rest_rx)
}

/// The lines of `pipe` until its end (or a read error), bytes that are not UTF-8 replaced.
fn lossy_lines(pipe: impl std::io::Read) -> impl Iterator<Item = String> {
    let mut reader = BufReader::new(pipe);
    std::iter::from_fn(move || {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                Some(String::from_utf8_lossy(&line).into_owned())
            }
        }
    })
}

/// A wait as the lab's messages say it: "10 s", or "250ms" below a whole second.
fn human(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{d:?}")
    }
}

/// The address of the `listening on` line [`read_stdout`] found, waiting at most
/// [`READY_TIMEOUT`].
fn wait_for_line(line: &mpsc::Receiver<Result<String, String>>) -> Result<SocketAddr, String> {
    match line.recv_timeout(READY_TIMEOUT) {
        Ok(Ok(addr)) => addr
            .parse()
            .map_err(|e| format!("printed an unreadable `listening on {addr}` line: {e}")),
        Ok(Err(why)) => Err(why),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err("closed its output without printing `listening on ADDR`".into())
        }
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "no `listening on ADDR` line within {}",
            human(READY_TIMEOUT)
        )),
    }
}

/// Drains a child's stderr in a thread (so the child never blocks on a full pipe) and keeps its
/// last lines, to say why a server that never got ready failed. The receiver disconnects when
/// the pipe has been read to its end.
fn keep_tail(
    stderr: Option<std::process::ChildStderr>,
) -> (Arc<Mutex<VecDeque<String>>>, mpsc::Receiver<()>) {
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
    let (done, drained) = mpsc::channel::<()>();
    if let Some(stderr) = stderr {
        let keep = Arc::clone(&tail);
        std::thread::spawn(move || {
            let _done = done;
            for line in lossy_lines(stderr) {
                if let Ok(mut t) = keep.lock() {
                    if t.len() == STDERR_TAIL {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            }
        });
    }
    (tail, drained)
}

// ----- processes, from /proc ------------------------------------------------------------

/// One process as `/proc/PID/stat` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// Process id.
    pub pid: i32,
    /// State letter: R, S, D, Z (zombie: exited, not yet reaped), T, ...
    pub state: char,
    /// Parent's pid.
    pub ppid: i32,
    /// Process group id.
    pub pgrp: i32,
}

impl Proc {
    /// Whether it has exited and waits to be reaped.
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }

    /// Its command line, arguments separated by spaces (`None` once it is gone; empty for a
    /// zombie).
    pub fn cmdline(&self) -> Option<String> {
        let args = procfs::process::Process::new(self.pid)
            .and_then(|p| p.cmdline())
            .ok()?;
        Some(args.join(" "))
    }
}

/// Every process in `/proc` (one that exits while being read is left out); `None` if `/proc`
/// cannot be listed.
fn try_processes() -> Option<Vec<Proc>> {
    let all = procfs::process::all_processes().ok()?;
    Some(
        all.filter_map(|p| {
            let stat = p.ok()?.stat().ok()?;
            Some(Proc {
                pid: stat.pid,
                state: stat.state,
                ppid: stat.ppid,
                pgrp: stat.pgrp,
            })
        })
        .collect(),
    )
}

/// Every process in `/proc` (one that exits while being read is left out).
pub fn processes() -> Vec<Proc> {
    try_processes().unwrap_or_default()
}

/// The processes of process group `pgrp`, zombies included.
pub fn group(pgrp: i32) -> Vec<Proc> {
    processes().into_iter().filter(|p| p.pgrp == pgrp).collect()
}

/// The children of `pid`, zombies included.
pub fn children(pid: i32) -> Vec<Proc> {
    processes().into_iter().filter(|p| p.ppid == pid).collect()
}

/// Whether anything of process group `pgid` is still running (a zombie is not). Where `/proc`
/// cannot be read, anything the group still holds counts.
fn group_running(pgid: Pid) -> bool {
    kill(Pid::from_raw(-pgid.as_raw()), None).is_ok()
        && try_processes().is_none_or(|all| {
            all.iter()
                .any(|p| p.pgrp == pgid.as_raw() && !p.is_zombie())
        })
}

// ----- skipping a test ------------------------------------------------------------------

/// The environment variable that turns every skip into a failure: `.ci/run` sets it to `1`,
/// because CI installs everything a test may need, so a test that skips there is a test that
/// silently stopped testing.
pub const NO_SKIP_VAR: &str = "ECHOLAB_NO_SKIP";

/// The one rule for a test that cannot run here (a tool not installed, a limit too low, no
/// cgroup): it says so on stderr and passes, unless [`NO_SKIP_VAR`] is `1`, when it fails with
/// what is missing. For the servers' and loadgen's integration tests.
#[track_caller]
pub fn skip(test: &str, why: &str) {
    if std::env::var_os(NO_SKIP_VAR).is_some_and(|v| v == "1") {
        panic!("{test} cannot run here: {why} ({NO_SKIP_VAR}=1 makes a skip a failure)");
    }
    eprintln!("SKIPPED {test}: {why}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        cmd
    }

    fn spawn(script: &str, ready: Ready) -> Result<ServerProcess, String> {
        ServerProcess::spawn(sh(script), &Spawn::new(ready, Stderr::Tail))
    }

    /// Whether anything of group `pgid` still runs, `within` from now.
    fn still_running(pgid: i32, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let running = group(pgid).iter().any(|p| !p.is_zombie());
            if !running || Instant::now() >= deadline {
                return running;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A group whose one member has exited but is not reaped yet (a zombie, still in its
    /// group) is not running: the stop does not wait for the reaping.
    #[test]
    fn a_group_of_zombies_is_not_running() {
        use nix::sys::wait::{waitid, Id, WaitPidFlag};
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("sleep");
        let pgid = Pid::from_raw(child.id() as i32);
        assert!(group_running(pgid));
        kill(Pid::from_raw(-pgid.as_raw()), Signal::SIGKILL).expect("killpg");
        // Waits for it to exit and leaves it unreaped: a zombie, still in its group.
        waitid(Id::Pid(pgid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT).expect("waitid");
        assert!(
            kill(Pid::from_raw(-pgid.as_raw()), None).is_ok(),
            "the group still exists"
        );
        assert!(!group_running(pgid));
        let _ = child.wait();
    }

    #[test]
    fn ready_on_the_listening_line_and_what_came_after_is_kept() {
        let mut p = spawn(
            // One write, so the second line is out before the signal can arrive.
            "printf 'listening on 127.0.0.1:7\\nafter\\n'; exec sleep 30",
            Ready::FirstLine,
        )
        .expect("ready");
        assert_eq!(p.addr(), SocketAddr::from(([127, 0, 0, 1], 7)));
        let status = p
            .stop(Signal::SIGTERM, false, Duration::from_secs(5))
            .expect("stopped");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(Signal::SIGTERM as i32));
        assert_eq!(
            p.stdout_after_ready(Duration::from_secs(2)),
            Some(vec!["after".to_string()])
        );
    }

    #[test]
    fn a_first_line_that_is_not_the_ready_line_is_refused_only_when_it_must_be_first() {
        let script = "echo oops >&2; echo hello; echo 'listening on 127.0.0.1:7'; exec sleep 30";
        let e = spawn(script, Ready::FirstLine).expect_err("not ready");
        assert!(e.contains("\"hello\""), "{e}");
        assert!(e.contains("it said: oops"), "{e}");
        let p = spawn(script, Ready::AnyLine).expect("ready");
        assert_eq!(p.addr().port(), 7);
    }

    #[test]
    fn no_ready_line_or_an_unreadable_one_is_an_error() {
        let e = spawn("echo 'not yet'", Ready::AnyLine).expect_err("not ready");
        assert!(e.contains("without printing `listening on ADDR`"), "{e}");
        let e = spawn("echo 'listening on nowhere'", Ready::AnyLine).expect_err("bad address");
        assert!(e.contains("unreadable"), "{e}");
    }

    #[test]
    fn dropping_it_kills_its_whole_group() {
        let p = spawn(
            "sleep 30 & echo 'listening on 127.0.0.1:7'; wait",
            Ready::FirstLine,
        )
        .expect("ready");
        let pgid = p.pid().as_raw();
        assert!(group(pgid).len() >= 2, "the shell and its sleep");
        drop(p);
        assert!(!still_running(pgid, Duration::from_secs(2)));
    }

    #[test]
    fn leftovers_are_found_and_killed() {
        // The shell exits at once and leaves its sleep behind in the group.
        let mut p = spawn(
            "sleep 30 & echo 'listening on 127.0.0.1:7'",
            Ready::FirstLine,
        )
        .expect("ready");
        assert!(p.wait_timeout(Duration::from_secs(5)).is_some());
        let pgid = p.pid().as_raw();
        assert!(p.kill_leftovers(Duration::from_millis(100)));
        assert!(!still_running(pgid, Duration::from_secs(2)));
        assert!(!p.kill_leftovers(Duration::ZERO));
    }
}
