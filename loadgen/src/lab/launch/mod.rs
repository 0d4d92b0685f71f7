//! Starting and stopping the servers under test, for `loadgen suite`, `loadgen compare` and
//! the integration tests of both crates.
//!
//! [`ServerProcess`] ([`process`]) is the one harness: a server is started in its own process group (so
//! everything it forks can be checked for, and killed, as one), optionally pinned to its CPUs,
//! with `PR_SET_PDEATHSIG` or a lower `RLIMIT_NOFILE`. It is ready when it prints `listening on
//! ADDR` (echolab's servers) or when its port accepts a connection (redis-server, commands
//! given with `{addr}`). It is stopped with a signal, as an operator would, and dropping it
//! kills whatever of its group still runs.
//!
//! [`Server`] is the lab's use of it: a [`Model`] started with the suite's flags, stopped with
//! SIGTERM and then checked: a clean exit status, and nothing left of its process group two
//! seconds later. The tests wrap [`ServerProcess`] in their own `Server`s, with a log file,
//! and check what they check from the same [`group`] and [`children`] listings (read from
//! `/proc` by procfs), and skip a test the machine cannot run by the one rule of [`skip`].

pub mod process;

pub use process::{
    children, group, processes, skip, Proc, Ready, ServerProcess, Spawn, Stderr, NO_SKIP_VAR,
    READY_TIMEOUT,
};

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use echolab_protocol::Protocol;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::Signal;
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

/// The models the lab compares, with the flags the suite gives them. `workers` is the pool's
/// and blocking prefork's size; `loops` the number of event loops of the loop-per-core models,
/// which should be the CPUs the servers run on ([`server_cpu_count`]).
pub fn standard_models(bin: &Path, workers: u32, loops: usize) -> Vec<Model> {
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
    // Event loops on every core, as nginx runs them: a forked loop per CPU, over one listener
    // with EPOLLEXCLUSIVE or a listener each (SO_REUSEPORT).
    let cores = loops.max(1).to_string();
    for mode in ["exclusive", "reuseport"] {
        models.push(ours(
            &format!("prefork-eventloop-{mode}"),
            "server-prefork",
            &[
                "--workers".into(),
                cores.clone(),
                "--worker".into(),
                "eventloop".into(),
                "--accept".into(),
                mode.into(),
            ],
            None,
        ));
    }
    // ...and their threaded counterpart: a loop per CPU in one process (memcached, Netty).
    models.push(ours(
        "eventloop-threads",
        "server-eventloop",
        &["--threads".into(), cores.clone()],
        None,
    ));
    // One thread and one io_uring ring: the event loop's shape with submitted operations.
    models.push(ours("uring", "server-uring", &[], None));
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

/// Whether `model`'s program takes its arguments: `PROGRAM ARGS... --help` exits 0 only if
/// clap knew every flag and value before it. A baseline built before a model existed (the
/// regression gate compares against the previous commit) does not, and that model is then
/// new in the candidate rather than broken in the baseline.
pub fn takes_its_arguments(model: &Model) -> bool {
    if model.shell {
        return true;
    }
    let Some((program, args)) = model.argv.split_first() else {
        return false;
    };
    std::process::Command::new(program)
        .args(args)
        .arg("--help")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
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

/// A running server of the suite's or the gate's: a [`ServerProcess`] started from a
/// [`Model`], with what stopping it needs to know about the model.
#[derive(Debug)]
pub struct Server {
    process: ServerProcess,
    /// Where it listens.
    pub addr: SocketAddr,
    shell: bool,
}

impl Server {
    /// Starts `model` (its `--stats-file` at `stats_file`, if one of ours) on `cpus` and waits
    /// until it is ready, at most [`READY_TIMEOUT`]. A server that never gets ready is killed
    /// with all it started.
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
        let ready = if port_given {
            Ready::Port(SocketAddr::from(([127, 0, 0, 1], port)))
        } else {
            Ready::AnyLine
        };
        let process = ServerProcess::spawn(
            cmd,
            &Spawn {
                cpus: cpus.copied(),
                // The kernel kills the server if loadgen itself is killed (a second Ctrl-C),
                // so no server outlives the suite.
                die_with_parent: true,
                ..Spawn::new(ready, Stderr::Tail)
            },
        )?;
        Ok(Server {
            addr: process.addr(),
            process,
            shell: model.shell,
        })
    }

    /// The server's process id (the leader of its process group).
    pub fn pid(&self) -> i32 {
        self.process.pid().as_raw()
    }

    /// Whether it is still running (it is reaped the first time it is found dead).
    pub fn alive(&mut self) -> bool {
        self.process.alive()
    }

    /// How it exited, in words.
    pub fn describe_exit(&self) -> String {
        self.process
            .exit_status()
            .map_or("still running".into(), |s| s.to_string())
    }

    /// SIGTERM, wait (at most 10 s), then check the exit status and that nothing of its
    /// process group survived.
    pub fn stop(mut self) -> Result<(), String> {
        if !self.process.alive() {
            let crashed = format!("crashed during the suite ({})", self.describe_exit());
            return Err(match self.process.kill_leftovers(Duration::ZERO) {
                true => format!("{crashed}, leaving processes behind (killed)"),
                false => crashed,
            });
        }
        // Our servers get SIGTERM themselves, as an operator would send it, and shut their
        // workers down; a --server command run by sh gets it for its whole group, since sh may
        // not exec the server it starts.
        let status = self
            .process
            .stop(Signal::SIGTERM, self.shell, Duration::from_secs(10))?;
        // Anything still in the group 2 s after the leader exited (a worker, a child, the
        // server a shell command started and is still shutting down) outlived its server.
        if self.process.kill_leftovers(Duration::from_secs(2)) {
            return Err(format!(
                "left processes behind after it exited (process group {}); killed them",
                self.pid()
            ));
        }
        use std::os::unix::process::ExitStatusExt;
        match status {
            s if s.success() => Ok(()),
            // A shell command's sh dies of the SIGTERM it was sent: that is its clean exit
            // (the server it started was checked above).
            s if self.shell && s.signal() == Some(Signal::SIGTERM as i32) => Ok(()),
            s => Err(format!("exited uncleanly after SIGTERM: {s}")),
        }
    }
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

fn free_port() -> Result<u16, String> {
    // Bind port 0, read the port, release it: a tiny race with other programs, acceptable
    // for servers (redis-server) that cannot be told to pick a port themselves.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
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

/// How many CPUs the servers run on: those of `placement` ([`pin_halves`]'s set), or, unpinned,
/// every CPU this process may use. The loop-per-core models run this many loops: counted after
/// pinning from this process's own affinity, it would be the *client's* half instead.
pub fn server_cpu_count(placement: Option<&nix::sched::CpuSet>) -> usize {
    use nix::sched::CpuSet;
    match placement {
        Some(set) => (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .count()
            .max(1),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn model(argv: &[&str]) -> Model {
        Model {
            name: "m".into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            shell: false,
            protocol: Protocol::Binary,
            capacity: None,
            echolab: true,
        }
    }

    /// The probe the regression gate uses to tell a model newer than the baseline's build
    /// from a baseline that is broken: `PROGRAM ARGS... --help` must succeed.
    #[test]
    fn a_program_that_refuses_its_arguments_does_not_take_them() {
        assert!(takes_its_arguments(&model(&["/bin/sh", "-c", "exit 0"])));
        assert!(!takes_its_arguments(&model(&["/bin/sh", "-c", "exit 2"])));
        assert!(!takes_its_arguments(&model(&["/nonexistent/server"])));
        assert!(!takes_its_arguments(&model(&[])));
    }

    /// Every core runs a loop in the event-loop worker models and the threaded loops, and
    /// their names are the suite's and the gate's.
    #[test]
    fn the_standard_models_include_loops_on_every_core() {
        let models = standard_models(Path::new("/bin"), 4, 3);
        for (want, flag) in [
            ("prefork-eventloop-exclusive", "--workers"),
            ("prefork-eventloop-reuseport", "--workers"),
            ("eventloop-threads", "--threads"),
        ] {
            let m = models.iter().find(|m| m.name == want).expect(want);
            let at = m.argv.iter().position(|a| a == flag).expect(flag);
            assert_eq!(
                m.argv[at + 1],
                "3",
                "{want}: one loop per server CPU: {:?}",
                m.argv
            );
        }
    }

    /// The servers' CPUs are those of the placement, whatever this process's own affinity is.
    #[test]
    fn server_cpus_are_the_placement_s() {
        let mut set = nix::sched::CpuSet::new();
        for c in [0, 2, 5] {
            set.set(c).expect("a CPU number within the set");
        }
        assert_eq!(server_cpu_count(Some(&set)), 3);
        assert!(server_cpu_count(None) >= 1);
    }
}
