//! Starting and stopping the servers under test, for `loadgen suite` and `loadgen compare`.
//!
//! A server is started in its own process group (so everything it forks can be checked for,
//! and killed, as one), pinned to its CPUs, with `PR_SET_PDEATHSIG` so it never outlives
//! loadgen. It is ready when it prints `listening on ADDR` (echolab's servers) or when its
//! port accepts a connection (redis-server, commands given with `{addr}`). It is stopped with
//! SIGTERM, as an operator would, and then checked: a clean exit status, and nothing left of
//! its process group two seconds later.

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use echolab_protocol::Protocol;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A server to start: one of echolab's models, redis-server, or a command of the user's.
#[derive(Debug, Clone)]
pub struct Model {
    /// Short name (file names, table rows).
    pub name: String,
    /// Program and arguments (run directly), or one shell command when `shell`.
    pub argv: Vec<String>,
    /// `argv[0]` is a command for `sh -c`.
    pub shell: bool,
    /// What it speaks.
    pub protocol: Protocol,
    /// At most this many connections are served at once (workers), if bounded.
    pub capacity: Option<u32>,
    /// One of echolab's servers: takes the flags in [`ECHOLAB_FLAGS`] and `--stats-file`.
    pub echolab: bool,
}

impl Model {
    /// A server given as a shell command that speaks `protocol` and either contains `{addr}`
    /// (or `{port}`) or prints `listening on ADDR`.
    pub fn command(name: &str, command: &str, protocol: Protocol) -> Model {
        Model {
            name: name.into(),
            argv: vec![command.into()],
            shell: true,
            protocol,
            capacity: None,
            echolab: false,
        }
    }

    /// The same model with `extra` appended to its command line (split on whitespace for a
    /// program, appended as text to a shell command).
    pub fn with_extra_args(mut self, extra: &str) -> Model {
        if extra.trim().is_empty() {
            return self;
        }
        if self.shell {
            self.argv[0] = format!("{} {extra}", self.argv[0]);
        } else {
            self.argv.extend(extra.split_whitespace().map(String::from));
        }
        self
    }
}

/// The models the lab compares, with the flags the suite gives them.
pub fn standard_models(bin: &Path, workers: u32) -> Vec<Model> {
    let path = |name: &str| bin.join(name).to_string_lossy().into_owned();
    let ours = |name: &str, bin_name: &str, extra: &[String], capacity: Option<u32>| Model {
        name: name.into(),
        argv: std::iter::once(path(bin_name))
            .chain(extra.iter().cloned())
            .collect(),
        shell: false,
        protocol: Protocol::Binary,
        capacity,
        echolab: true,
    };
    let w = workers.to_string();
    let mut models = vec![
        ours("thread", "server-thread", &[], None),
        ours(
            "thread-pool",
            "server-thread",
            &["--pool".into(), w.clone()],
            Some(workers),
        ),
        ours("fork", "server-fork", &[], None),
    ];
    for mode in ["shared", "locked", "reuseport"] {
        models.push(ours(
            &format!("prefork-{mode}"),
            "server-prefork",
            &[
                "--workers".into(),
                w.clone(),
                "--accept".into(),
                mode.into(),
            ],
            Some(workers),
        ));
    }
    for backend in ["select", "poll", "epoll"] {
        models.push(ours(
            &format!("eventloop-{backend}"),
            "server-eventloop",
            &["--backend".into(), backend.into()],
            None,
        ));
    }
    if let Some(redis) = which("redis-server") {
        models.push(Model {
            name: "redis-server".into(),
            argv: vec![
                redis,
                "--bind".into(),
                "127.0.0.1".into(),
                "--port".into(),
                "{port}".into(),
                "--save".into(),
                String::new(),
                "--appendonly".into(),
                "no".into(),
                // Protected mode admits 127.0.0.1 only; the short-connection workload comes
                // from 127.0.0.2-254 (for their ephemeral ports). Still bound to loopback.
                "--protected-mode".into(),
                "no".into(),
                "--maxclients".into(),
                "10000".into(),
            ],
            shell: false,
            protocol: Protocol::Resp,
            capacity: None,
            echolab: false,
        });
    }
    models
}

/// A `--server NAME=COMMAND` of the user's: a shell command speaking the binary protocol.
pub fn custom_model(spec: &str) -> Result<Model, String> {
    let (name, command) = spec
        .split_once('=')
        .ok_or_else(|| format!("--server {spec}: expected NAME=COMMAND"))?;
    if name.is_empty() || command.trim().is_empty() {
        return Err(format!("--server {spec}: expected NAME=COMMAND"));
    }
    // The name becomes file names and table cells.
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(format!(
            "--server {name}: a name may hold only letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(Model {
        name: name.into(),
        argv: vec![command.into()],
        shell: true,
        protocol: Protocol::Binary,
        capacity: None,
        echolab: false,
    })
}

fn which(program: &str) -> Option<String> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .map(|p| p.to_string_lossy().into_owned())
}

/// Where the server binaries are: `--bin-dir`, or beside this executable, built with cargo
/// (release if this is a release build) when missing.
pub fn find_bin_dir(given: Option<&Path>) -> Result<PathBuf, String> {
    const NAMES: [&str; 4] = [
        "server-thread",
        "server-fork",
        "server-prefork",
        "server-eventloop",
    ];
    let dir = match given {
        Some(d) => d.to_path_buf(),
        None => std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .ok_or("cannot tell where this loadgen lives; pass --bin-dir")?,
    };
    if NAMES.iter().all(|n| dir.join(n).is_file()) {
        return Ok(dir);
    }
    if given.is_some() {
        return Err(format!(
            "{} does not hold the server binaries",
            dir.display()
        ));
    }
    let release = dir.ends_with("release");
    // The whole workspace, as the README's `cargo build --release` builds it: building only
    // echolab-servers would resolve the shared dependencies' features differently, compile
    // them twice, and make the next `cargo build --release` compile them a third time.
    // cargo's progress goes to the terminal: a first build takes a minute or two.
    eprintln!(
        "building the servers: cargo build{} (the first time only)",
        if release { " --release" } else { "" }
    );
    let mut cmd = Command::new("cargo");
    cmd.arg("build");
    if release {
        cmd.arg("--release");
    }
    // In the checkout this loadgen was built from (target/<profile>/ sits in it), so the
    // binaries land beside it whatever the current directory.
    if let Some(root) = dir.parent().and_then(Path::parent) {
        if root.join("Cargo.toml").is_file() {
            cmd.current_dir(root);
        }
    }
    let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
    if ok && NAMES.iter().all(|n| dir.join(n).is_file()) {
        Ok(dir)
    } else {
        Err(format!(
            "the server binaries are not in {} and cargo could not build them; run `cargo build --release` in the echolab checkout, or pass --bin-dir",
            dir.display()
        ))
    }
}

/// A running server, in its own process group so that everything it started can be checked
/// for (and, on failure, killed) as one.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    exit: Option<ExitStatus>,
    shell: bool,
}

impl Server {
    /// Starts `model` (its `--stats-file` at `stats_file`, if one of ours) on `cpus` and waits
    /// until it is ready, at most 10 s. A server that never gets ready is killed with all it
    /// started.
    pub fn start(
        model: &Model,
        stats_file: Option<&Path>,
        cpus: Option<&nix::sched::CpuSet>,
    ) -> Result<Server, String> {
        let port_given = model
            .argv
            .iter()
            .any(|a| a.contains("{port}") || a.contains("{addr}"));
        let port = if port_given { free_port()? } else { 0 };
        let fill = |a: &str| {
            a.replace("{port}", &port.to_string())
                .replace("{addr}", &format!("127.0.0.1:{port}"))
        };
        let mut cmd = if model.shell {
            let mut c = Command::new("sh");
            c.arg("-c").arg(fill(&model.argv[0]));
            c
        } else {
            let mut c = Command::new(&model.argv[0]);
            c.args(model.argv[1..].iter().map(|a| fill(a)));
            c
        };
        if model.echolab {
            cmd.args(ECHOLAB_FLAGS);
            if let Some(path) = stats_file {
                cmd.arg("--stats-file").arg(path);
            }
        }
        let cpus = cpus.copied();
        // SAFETY: the closure runs in the forked child before exec and only makes two system
        // calls, sched_setaffinity(2) on a CpuSet copied in before the fork and
        // prctl(PR_SET_PDEATHSIG): it allocates nothing and takes no lock, so it is
        // async-signal-safe. The death signal makes the kernel kill the server if loadgen
        // itself is killed (a second Ctrl-C), so no server outlives the suite.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(set) = cpus {
                    nix::sched::sched_setaffinity(Pid::from_raw(0), &set)
                        .map_err(std::io::Error::from)?;
                }
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", model.argv[0]))?;
        let stderr_tail = keep_tail(child.stderr.take());
        let ready = if port_given {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            wait_for_port(&mut child, addr).map(|()| addr)
        } else {
            wait_for_line(&mut child)
        };
        let addr = match ready {
            Ok(addr) => addr,
            Err(e) => {
                // Never ready: nothing it started may outlive the attempt.
                let pgid = Pid::from_raw(child.id() as i32);
                let _ = kill(Pid::from_raw(-pgid.as_raw()), Signal::SIGKILL);
                let _ = child.wait();
                kill_leftovers(pgid);
                // What it said on the way out is usually why (a flag given twice, a port in use).
                std::thread::sleep(Duration::from_millis(20));
                let said = stderr_tail
                    .lock()
                    .map(|t| t.iter().cloned().collect::<Vec<_>>().join(" | "))
                    .unwrap_or_default();
                return Err(if said.is_empty() {
                    e
                } else {
                    format!("{e}; it said: {said}")
                });
            }
        };
        Ok(Server {
            child,
            addr,
            exit: None,
            shell: model.shell,
        })
    }

    /// The server's process id (the leader of its process group).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether it is still running (it is reaped the first time it is found dead).
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
            Err(_) => false,
        }
    }

    /// How it exited, in words.
    pub fn describe_exit(&self) -> String {
        self.exit.map_or("still running".into(), |s| s.to_string())
    }

    /// SIGTERM, wait (at most 10 s), then check the exit status and that nothing of its
    /// process group survived.
    pub fn stop(mut self) -> Result<(), String> {
        let pgid = Pid::from_raw(self.pid());
        if self.alive() {
            // Our servers get SIGTERM themselves, as an operator would send it, and shut their
            // workers down; a --server command run by sh gets it for its whole group, since
            // sh may not exec the server it starts.
            let target = if self.shell {
                Pid::from_raw(-pgid.as_raw())
            } else {
                pgid
            };
            let _ = kill(target, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if self.alive() {
                let _ = kill(Pid::from_raw(-pgid.as_raw()), Signal::SIGKILL);
                let _ = self.child.wait();
                return Err("did not exit within 10 s of SIGTERM (killed)".into());
            }
        } else {
            let crashed = format!("crashed during the suite ({})", self.describe_exit());
            return Err(match kill_leftovers(pgid) {
                true => format!("{crashed}, leaving processes behind (killed)"),
                false => crashed,
            });
        }
        let status = self.exit;
        // Anything still in the group 2 s after the leader exited (a worker, a child, the
        // server a shell command started and is still shutting down) outlived its server.
        let deadline = Instant::now() + Duration::from_secs(2);
        while group_running(pgid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if kill_leftovers(pgid) {
            return Err(format!(
                "left processes behind after it exited (process group {pgid}); killed them"
            ));
        }
        use std::os::unix::process::ExitStatusExt;
        match status {
            Some(s) if s.success() => Ok(()),
            // A shell command's sh dies of the SIGTERM it was sent: that is its clean exit
            // (the server it started was checked above).
            Some(s) if self.shell && s.signal() == Some(Signal::SIGTERM as i32) => Ok(()),
            Some(s) => Err(format!("exited uncleanly after SIGTERM: {s}")),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exit.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(-(self.child.id() as i32)), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Drains a child's stderr in a thread (so the child never blocks on a full pipe) and keeps its
/// last lines, to say why a server that never got ready failed.
fn keep_tail(stderr: Option<std::process::ChildStderr>) -> Arc<Mutex<VecDeque<String>>> {
    const LINES: usize = 5;
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(LINES)));
    if let Some(stderr) = stderr {
        let keep = Arc::clone(&tail);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut t) = keep.lock() {
                    if t.len() == LINES {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            }
        });
    }
    tail
}

/// What the suite adds to an echolab server's command line: a free port, a short grace
/// period (the suite stops dozens of servers), and room for the idle workload's connections.
pub const ECHOLAB_FLAGS: [&str; 6] = [
    "--addr",
    "127.0.0.1:0",
    "--grace",
    "1s",
    "--max-connections",
    "10000",
];

/// The command a model was started with, as a shell would take it (the suite's own flags
/// included; `{port}` stands for the free port picked at each start).
pub fn display_command(m: &Model) -> String {
    let quote = |a: &String| {
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
            format!("'{}'", a.replace('\'', r"'\''"))
        } else {
            a.clone()
        }
    };
    let mut words: Vec<String> = if m.shell {
        vec!["sh".into(), "-c".into(), quote(&m.argv[0])]
    } else {
        m.argv.iter().map(quote).collect()
    };
    if m.echolab {
        words.extend(ECHOLAB_FLAGS.map(String::from));
        words.extend(["--stats-file".into(), "FILE".into()]);
    }
    words.join(" ")
}

/// Whether anything of process group `pgid` is still running. A member that has exited but
/// is not yet reaped does not count: a server that a shell command started without `exec` is
/// orphaned when the shell dies, and stays a zombie in the group until init reaps it, which
/// some inits do a second or more later, or never (`kill(-pgid, 0)` succeeds all that time).
fn group_running(pgid: Pid) -> bool {
    kill(Pid::from_raw(-pgid.as_raw()), None).is_ok()
        && crate::proc::group_has_running_member(pgid.as_raw()).unwrap_or(true)
}

/// Kills whatever is left running of process group `pgid`; returns whether anything was.
fn kill_leftovers(pgid: Pid) -> bool {
    let group = Pid::from_raw(-pgid.as_raw());
    let any = group_running(pgid);
    if any {
        let _ = kill(group, Signal::SIGKILL);
    }
    any
}

fn free_port() -> Result<u16, String> {
    // Bind port 0, read the port, release it: a tiny race with other programs, acceptable
    // for servers (redis-server) that cannot be told to pick a port themselves.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

fn wait_for_line(child: &mut Child) -> Result<SocketAddr, String> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.trim().parse::<SocketAddr>().ok());
                break;
            }
        }
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Some(addr)) => Ok(addr),
        Ok(None) => Err("printed an unreadable `listening on` line".into()),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err("closed its output without printing `listening on ADDR`".into())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            Err("no `listening on ADDR` line within 10 s".into())
        }
    }
}

fn wait_for_port(child: &mut Child, addr: SocketAddr) -> Result<(), String> {
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut BufReader::new(stdout), &mut std::io::sink());
        });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Err(format!("exited before listening: {s}"));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("nothing listening on {addr} within 10 s"))
}

/// On a machine with two or more CPUs, pins this process (and so every loadgen thread it will
/// start) to the second half of the CPUs and returns the first half for the servers.
///
/// Left to itself the scheduler sometimes puts a server and its client on one CPU, where they
/// take turns instead of overlapping; a one-connection round trip then depends on where each
/// landed (14 µs together, 47 µs apart on the reference machine), which would make models
/// differ by luck. Pinned, every model gets the same CPUs.
pub fn pin_halves() -> Option<nix::sched::CpuSet> {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    let allowed = sched_getaffinity(Pid::from_raw(0)).ok()?;
    let cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&c| allowed.is_set(c).unwrap_or(false))
        .collect();
    if cpus.len() < 2 {
        return None;
    }
    let (server_cpus, client_cpus) = cpus.split_at(cpus.len() / 2);
    let (mut server, mut client) = (CpuSet::new(), CpuSet::new());
    for &c in server_cpus {
        server.set(c).ok()?;
    }
    for &c in client_cpus {
        client.set(c).ok()?;
    }
    sched_setaffinity(Pid::from_raw(0), &client).ok()?;
    Some(server)
}

/// Where servers and loadgen run, in words, for reports.
pub fn describe_placement(server: Option<&nix::sched::CpuSet>) -> String {
    let list = |set: &nix::sched::CpuSet| {
        (0..nix::sched::CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    match (server, nix::sched::sched_getaffinity(Pid::from_raw(0))) {
        (Some(s), Ok(client)) => format!(
            "servers on CPU {}, loadgen on CPU {}",
            list(s),
            list(&client)
        ),
        _ => "unpinned (placed by the scheduler)".into(),
    }
}

/// Raises this process's open-file limit to its hard limit (the servers inherit it); returns
/// the limit now in force.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    // An unlimited hard limit cannot be set as the soft one: the kernel's ceiling is nr_open.
    let nr_open = fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            let want = hard.min(nr_open);
            if setrlimit(Resource::RLIMIT_NOFILE, want, hard).is_ok() {
                want
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}
