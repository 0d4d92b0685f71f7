//! What the server costs: CPU time, context switches, task counts and memory of a process
//! tree, read from Linux `/proc` while loadgen runs.
//!
//! Requests per second alone cannot tell the concurrency models apart: a fork-per-connection
//! server and an event loop may both keep up with the load, while one burns several times the
//! CPU, context switches and memory for each request. `loadgen run --server-pid PID` therefore
//! samples the server's process tree (the root and every descendant, so prefork workers and
//! per-connection children count too) at the start and the end of the measured window, and
//! about once a second in between for the peaks, and [`server_cost`] divides the deltas by the
//! number of requests. [`own_cpu`] gives loadgen's own CPU, so a reader can see when the load
//! generator, not the server, was the bottleneck.
//!
//! # Where the figures come from, and where they are inexact
//! - **CPU** ([`TreeSample::cpu`]): fields 14-17 of `/proc/P/stat` (proc(5)), in clock ticks
//!   (`sysconf(_SC_CLK_TCK)`, 100 a second on every common Linux), so the resolution is 10 ms:
//!   measure over seconds, not milliseconds. Each process is truncated to whole ticks on its
//!   own, so a tree of many small processes (256 fork children that ran 3 ms each) would sum
//!   to nothing: a process whose live tasks' exact runtime (`/proc/P/task/T/schedstat`, ns)
//!   exceeds its ticks counts that instead. `utime`/`stime` cover every thread of a process,
//!   exited threads included; `cutime`/`cstime` cover the children it has reaped *and*,
//!   transitively, whatever those children had reaped. Children of a parent that ignores
//!   `SIGCHLD` (`SIG_IGN`, `SA_NOCLDWAIT`) are reaped by the kernel and their time is added
//!   nowhere: such a server's per-connection children would be missed (ours reap with
//!   `waitpid`).
//! - **Context switches**: only per task, in `/proc/P/task/T/status`; the kernel keeps the
//!   counts of exited threads and reaped children in places `/proc` does not show. The sampler
//!   remembers every task's last counts, so a task that exits keeps contributing what it had
//!   at its last sample, but whatever it did after that sample, and tasks born and gone
//!   entirely between two samples, are missed. [`ServerCost::ctx_lower_bound`] says when that
//!   may have happened.
//! - **Memory**: `VmRSS` (from `status`) counts a page shared by N processes N times, which
//!   flatters no model that forks; `Pss` from `/proc/P/smaps_rollup` divides shared pages among
//!   their sharers, so it sums correctly over a tree. It is optional because it is not free:
//!   the kernel walks the process's page tables under its mmap lock for every read.
//!
//! Linux only: the sampler reads nothing but proc(5) files. It runs as a peer of the server
//! (same user, or root); `/proc/P/smaps_rollup` needs ptrace read permission, the rest is
//! world-readable.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read};

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::time::TimeVal;
use procfs::process::Process;

/// CPU time in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct CpuTimes {
    /// Time spent running the program's own code.
    pub user_us: u64,
    /// Time the kernel spent on the program's behalf: system calls, page faults, signals.
    pub system_us: u64,
}

impl CpuTimes {
    /// User plus system time, in microseconds.
    pub fn total_us(&self) -> u64 {
        self.user_us.saturating_add(self.system_us)
    }
}

/// This process's own CPU time (getrusage(RUSAGE_SELF) via nix), used for loadgen's own cost.
///
/// It covers all of loadgen's threads. A zero result means getrusage failed, which it cannot
/// do for `RUSAGE_SELF`.
pub fn own_cpu() -> CpuTimes {
    // getrusage(2): fails only with EFAULT or EINVAL, neither possible here; never EINTR.
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(usage) => CpuTimes {
            user_us: timeval_us(usage.user_time()),
            system_us: timeval_us(usage.system_time()),
        },
        Err(_) => CpuTimes::default(),
    }
}

/// Converts a `timeval` to microseconds; a negative one (which getrusage never returns) is 0.
fn timeval_us(tv: TimeVal) -> u64 {
    let us = i128::from(tv.tv_sec()) * 1_000_000 + i128::from(tv.tv_usec());
    u64::try_from(us).unwrap_or(0)
}

/// The machine a benchmark ran on, for the report: figures from different machines do not
/// compare.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MachineInfo {
    /// The CPU's marketing name (`model name` in `/proc/cpuinfo`).
    pub cpu_model: String,
    /// Online CPUs in the machine, whatever loadgen's own affinity mask or cgroup quota.
    pub cores: usize,
    /// Kernel release, as `uname -r` prints it.
    pub kernel: String,
    /// Kernel name, as `uname -s` prints it ("Linux").
    pub os: String,
    /// Machine architecture, as `uname -m` prints it.
    pub arch: String,
    /// Host name, as `uname -n` prints it.
    pub hostname: String,
}

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`), if readable.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(str::parse::<f64>);
    Some([it.next()?.ok()?, it.next()?.ok()?, it.next()?.ok()?])
}

/// Whether a machine with this 1-minute load average before a run was busy with other
/// work: more than half its CPUs' worth, so the run shared them and its figures are low and
/// noisy. (After a run, its own load is in the average, so only the one before is judged.)
pub fn busy(load_before: f64, cores: usize) -> bool {
    load_before > cores as f64 / 2.0
}

/// Describes this machine. Never fails: a field that cannot be read is "unknown" (`cores`
/// falls back to the CPUs this process may use, and then to 1).
pub fn machine_info() -> MachineInfo {
    // The uname(2) fields are read from /proc/sys/kernel, which holds the very same strings
    // (for this UTS namespace): that needs no `unsafe` and no extra nix features.
    let kernel_file = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| cpu_model(&text))
        .unwrap_or_else(unknown);
    // _SC_NPROCESSORS_ONLN counts the machine's online CPUs; available_parallelism would
    // count only those loadgen may run on, which `taskset` or a cgroup can shrink.
    let cores = sysconf(libc::_SC_NPROCESSORS_ONLN)
        .and_then(|n| usize::try_from(n).ok())
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    MachineInfo {
        cpu_model,
        cores,
        kernel: kernel_file("osrelease").unwrap_or_else(unknown),
        os: kernel_file("ostype").unwrap_or_else(unknown),
        // /proc/sys/kernel/arch exists since Linux 6.1; before, the architecture this binary
        // was built for is the same on every machine that can run it natively.
        arch: kernel_file("arch").unwrap_or_else(|| std::env::consts::ARCH.to_string()),
        hostname: kernel_file("hostname").unwrap_or_else(unknown),
    }
}

fn unknown() -> String {
    "unknown".to_string()
}

/// The CPU's name from `/proc/cpuinfo`: `model name` on x86, where other architectures put
/// something like it otherwise (many arm64 kernels print none at all).
fn cpu_model(cpuinfo: &str) -> Option<String> {
    [
        "model name",
        "Model",
        "cpu model",
        "Processor",
        "cpu",
        "Hardware",
    ]
    .iter()
    .find_map(|wanted| {
        cpuinfo.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            let value = value.trim();
            (key.trim() == *wanted && !value.is_empty()).then(|| value.to_string())
        })
    })
}

/// sysconf(3) for a value that is a positive count; `None` if it is unknown.
fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf takes an integer and returns an integer; it reads and writes no memory
    // of ours, so every argument is sound (an unknown name only returns -1 with EINVAL).
    // nix's safe wrapper needs the nix feature "feature", which this crate does not enable.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value).ok().filter(|&v| v > 0)
}

/// Why a process tree could not be sampled.
#[derive(Debug)]
pub enum ProcError {
    /// No process has this pid: it has exited, was never there, or the pid now belongs to a
    /// different process than the one the sampler started with.
    NoSuchProcess(i32),
    /// A `/proc` file exists but could not be read.
    Unreadable {
        /// The file.
        path: String,
        /// What reading it returned.
        error: io::Error,
    },
    /// A `/proc` file did not have the format this module expects of Linux.
    Malformed {
        /// The file.
        path: String,
        /// What was wrong with it.
        what: String,
    },
}

impl fmt::Display for ProcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcError::NoSuchProcess(pid) => write!(
                f,
                "no process {pid} in /proc: check the pid, and that the process is still running"
            ),
            ProcError::Unreadable { path, error } => {
                write!(f, "cannot read {path}: {error}")?;
                if error.kind() == io::ErrorKind::PermissionDenied {
                    write!(
                        f,
                        " (run loadgen as the same user as the server, or as root)"
                    )?;
                }
                Ok(())
            }
            ProcError::Malformed { path, what } => write!(
                f,
                "{path} does not look like Linux /proc output ({what}); is /proc mounted?"
            ),
        }
    }
}

impl std::error::Error for ProcError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProcError::Unreadable { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// One snapshot of a process tree.
///
/// Its counters (`cpu`, the context switches, `vanished_tasks`) grow from sample to sample
/// of one [`TreeSampler`]; only differences between two samples mean anything.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TreeSample {
    /// CPU time of the tree so far: `utime`+`stime` of every process in it (all its threads,
    /// exited ones included), plus `cutime`+`cstime` of every process in it (the children
    /// each has reaped, and what those had reaped). Counting the reaped time of every
    /// process, not just the root's, keeps a grandchild's CPU in the sum while its parent
    /// lives. A descendant whose parent exits first is re-parented outside the tree and takes
    /// its time with it.
    pub cpu: CpuTimes,
    /// The part of `cpu` that comes from reaped descendants. When it grows, processes came
    /// and went, and their context switches were at best partly seen.
    pub reaped_cpu: CpuTimes,
    /// Voluntary context switches (the task blocked: read, accept, futex...) of every task
    /// in the tree, plus the last-seen counts of tasks that have vanished since.
    pub voluntary_ctxt: u64,
    /// Involuntary context switches (the scheduler preempted a runnable task), counted like
    /// `voluntary_ctxt`.
    pub involuntary_ctxt: u64,
    /// Processes in the tree now.
    pub processes: u32,
    /// Threads (tasks) in the tree now, main threads included.
    pub threads: u32,
    /// Sum of `VmRSS` over the tree's processes, in KiB. Shared pages count once per sharer.
    pub rss_kib: u64,
    /// Sum of `Pss` over the tree's processes, in KiB: shared pages divided among their
    /// sharers. `None` if memory was not sampled or the root's `smaps_rollup` is unreadable.
    pub pss_kib: Option<u64>,
    /// Tasks seen in an earlier sample that are gone now, counted since the sampler began.
    pub vanished_tasks: u64,
}

/// Samples one process tree again and again, remembering each task's context switches so
/// that the sums never go backwards when tasks exit.
pub struct TreeSampler {
    /// The pid given to [`TreeSampler::new`].
    root: i32,
    /// The root's start time (field 22 of stat), to notice if its pid is reused.
    root_start: u64,
    /// `sysconf(_SC_CLK_TCK)`: the unit of the CPU fields of stat.
    ticks_per_second: u64,
    /// Every task seen in the last sample, and what vanished tasks left behind.
    ledger: TaskLedger,
    /// Reused for every task file read: a thousand or more a second on a busy tree.
    buf: String,
}

impl fmt::Debug for TreeSampler {
    // The task map can hold thousands of entries; its size says enough.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TreeSampler")
            .field("root", &self.root)
            .field("root_start", &self.root_start)
            .field("ticks_per_second", &self.ticks_per_second)
            .field("tasks_tracked", &self.ledger.live.len())
            .field("vanished_tasks", &self.ledger.vanished)
            .finish()
    }
}

impl TreeSampler {
    /// Prepares to sample the tree rooted at `root`; fails with
    /// [`ProcError::NoSuchProcess`] if `/proc/root` does not exist.
    pub fn new(root: i32) -> Result<Self, ProcError> {
        let mut sampler = TreeSampler {
            root,
            root_start: 0,
            // USER_HZ is 100 on every architecture Linux runs on today; the fallback is
            // only for a sysconf that cannot answer.
            ticks_per_second: sysconf(libc::_SC_CLK_TCK).unwrap_or(100),
            ledger: TaskLedger::default(),
            buf: String::new(),
        };
        sampler.root_start = sampler.read_root_stat()?.starttime;
        Ok(sampler)
    }

    /// The tasks (thread ids) of the tree as the last sample found them.
    pub fn tids(&self) -> Vec<i32> {
        self.ledger.live.keys().map(|k| k.tid).collect()
    }

    /// Takes one snapshot of the tree; [`ProcError::NoSuchProcess`] if the root is gone.
    ///
    /// `with_memory = false` skips `smaps_rollup` (it walks page tables and costs more):
    /// sample memory at the window's ends and now and then in between, not every time.
    ///
    /// The cost is one read of `/proc/*/stat` for every process on the machine (to find the
    /// tree: `/proc/P/task/T/children` would be cheaper but needs `CONFIG_PROC_CHILDREN`) and
    /// one read of `status` per task in the tree: a millisecond or two for a few hundred.
    pub fn sample(&mut self, with_memory: bool) -> Result<TreeSample, ProcError> {
        let root = self.read_root_stat()?;
        let tree = self.find_tree(root)?;

        self.ledger.begin();
        let mut sample = TreeSample::default();
        let (mut utime, mut stime, mut cutime, mut cstime) = (0u64, 0u64, 0u64, 0u64);
        // Ticks lost to per-process truncation, recovered from schedstat (see sample_tasks).
        let mut extra_us = 0u64;
        let mut pss = with_memory.then_some(0u64);
        for (index, process) in tree.iter().enumerate() {
            let is_root = index == 0;
            // The CPU fields come from the same scan as the tree, so the sum is of one
            // moment even if the process has been reaped since (its time then moves to its
            // parent's cutime, which was read before).
            utime = utime.saturating_add(process.utime);
            stime = stime.saturating_add(process.stime);
            cutime = cutime.saturating_add(process.cutime);
            cstime = cstime.saturating_add(process.cstime);
            let Some(tasks) = self.sample_tasks(process, is_root)? else {
                continue;
            };
            // A process's CPU is the larger of its ticks (which include its exited threads)
            // and its live tasks' exact runtime (which does not truncate): for a busy
            // multi-threaded root the first, for many small fork children the second.
            let ticks_us = self.ticks_to_us(process.utime.saturating_add(process.stime));
            extra_us = extra_us.saturating_add((tasks.runtime_ns / 1000).saturating_sub(ticks_us));
            sample.processes += 1;
            sample.threads += tasks.threads;
            sample.rss_kib = sample.rss_kib.saturating_add(tasks.rss_kib);
            if let Some(total) = pss.as_mut() {
                match self.read_pss(process.pid) {
                    Some(kib) => *total = total.saturating_add(kib),
                    // Only the root decides: a child may have just exited.
                    None if is_root => pss = None,
                    None => {}
                }
            }
        }
        self.ledger.end();

        // schedstat does not split user from system time: what it adds beyond the ticks is
        // shared out in the ticks' own proportion (all to system when there are none).
        let (user, system) = (
            self.ticks_to_us(utime.saturating_add(cutime)),
            self.ticks_to_us(stime.saturating_add(cstime)),
        );
        let extra_user = if user + system == 0 {
            0
        } else {
            (extra_us as u128 * user as u128 / (user + system) as u128) as u64
        };
        sample.cpu = CpuTimes {
            user_us: user.saturating_add(extra_user),
            system_us: system.saturating_add(extra_us - extra_user),
        };
        sample.reaped_cpu = CpuTimes {
            user_us: self.ticks_to_us(cutime),
            system_us: self.ticks_to_us(cstime),
        };
        (sample.voluntary_ctxt, sample.involuntary_ctxt) = self.ledger.totals();
        sample.vanished_tasks = self.ledger.vanished;
        sample.pss_kib = pss;
        Ok(sample)
    }

    fn ticks_to_us(&self, ticks: u64) -> u64 {
        let us = u128::from(ticks) * 1_000_000 / u128::from(self.ticks_per_second.max(1));
        u64::try_from(us).unwrap_or(u64::MAX)
    }

    /// Reads the root's stat; NoSuchProcess if it is gone or its pid now names another
    /// process (same pid, different start time).
    fn read_root_stat(&mut self) -> Result<ProcStat, ProcError> {
        let pid = self.root;
        let gone = |e: &procfs::ProcError| matches!(e, procfs::ProcError::NotFound(_));
        let stat = Process::new(pid).and_then(|p| read_stat(&p)).map_err(|e| {
            if gone(&e) {
                ProcError::NoSuchProcess(pid)
            } else {
                e.into()
            }
        })?;
        if self.root_start != 0 && stat.starttime != self.root_start {
            return Err(ProcError::NoSuchProcess(pid));
        }
        Ok(stat)
    }

    /// The root and its descendants, root first, from one pass over `/proc/*/stat`.
    fn find_tree(&mut self, root: ProcStat) -> Result<Vec<ProcStat>, ProcError> {
        let mut all = Vec::new();
        // /proc lists thread-group leaders only (and non-numeric names like "self", which
        // the iterator passes over). Each process's directory is closed again as soon as its
        // stat is read: one descriptor at a time, however many processes the machine runs
        // (a sampler holding hundreds would take them from the load it measures).
        for process in procfs::process::all_processes()? {
            match process.and_then(|p| read_stat(&p)) {
                Ok(stat) if stat.pid == self.root => {}
                Ok(stat) => all.push(stat),
                // The process exited after the listing. PermissionDenied: another user's
                // process under hidepid=1, which a server we may read cannot have forked.
                Err(procfs::ProcError::NotFound(_) | procfs::ProcError::PermissionDenied(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }

        let mut children: HashMap<i32, Vec<usize>> = HashMap::new();
        for (index, stat) in all.iter().enumerate() {
            children.entry(stat.ppid).or_default().push(index);
        }
        // Breadth-first from the root. `taken` guards against a cycle, which pid reuse in
        // the middle of the scan could fake.
        let mut taken = vec![false; all.len()];
        let mut tree = vec![root];
        let mut next = 0;
        while let Some(parent) = tree.get(next).map(|p| p.pid) {
            next += 1;
            for &index in children.get(&parent).map(Vec::as_slice).unwrap_or_default() {
                if !std::mem::replace(&mut taken[index], true) {
                    tree.push(all[index]);
                }
            }
        }
        Ok(tree)
    }

    /// Reads the status of every task of `process` into the ledger. `None` if the process
    /// is gone (an error, for the root).
    fn sample_tasks(
        &mut self,
        process: &ProcStat,
        is_root: bool,
    ) -> Result<Option<TaskTotals>, ProcError> {
        let pid = process.pid;
        let gone = || {
            if is_root {
                Err(ProcError::NoSuchProcess(pid))
            } else {
                Ok(None)
            }
        };
        // The tasks are read by hand, not through procfs: this runs for every thread of the
        // tree once a second, and procfs's Status parses all ~55 fields of each status file
        // into a map where three are needed (and opens each task's directory first). Over a
        // thousand threads that was 35-60 ms a sample against 11-20 ms for this.
        let dir = format!("/proc/{pid}/task");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if is_gone(&error) => return gone(),
            Err(error) => return Err(ProcError::Unreadable { path: dir, error }),
        };
        let mut totals = TaskTotals::default();
        let mut rss = None;
        for entry in entries {
            // A task directory can go away while it is being listed.
            let Some(tid) = entry
                .ok()
                .and_then(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
            else {
                continue;
            };
            let path = format!("/proc/{pid}/task/{tid}/status");
            let status = match read_into(&path, &mut self.buf) {
                Ok(text) => parse_status(text),
                // This thread has exited; the others carry on.
                Err(error) if is_gone(&error) => continue,
                Err(error) => return Err(ProcError::Unreadable { path, error }),
            };
            let status = status.map_err(|what| ProcError::Malformed { path, what })?;
            // The process's start time tells apart two processes that had the same pid.
            let key = TaskKey {
                tid,
                process_start: process.starttime,
            };
            self.ledger
                .observe(key, status.voluntary, status.involuntary);
            totals.threads += 1;
            // schedstat(5)'s first field: the task's time on a CPU in ns, exact, where
            // utime/stime are whole clock ticks; without it 256 fork children that each ran
            // 3 ms would sum to 0 (each truncated to 0 ticks). Missing (no CONFIG_SCHED_INFO,
            // or the task just exited): the ticks serve.
            if let Ok(text) = read_into(&format!("/proc/{pid}/task/{tid}/schedstat"), &mut self.buf)
            {
                if let Some(ns) = text
                    .split_whitespace()
                    .next()
                    .and_then(|f| f.parse::<u64>().ok())
                {
                    totals.runtime_ns = totals.runtime_ns.saturating_add(ns);
                }
            }
            // Every thread shows its process's VmRSS (they share one mm); a zombie main
            // thread shows none, so take the first that has it.
            rss = rss.or(status.rss_kib);
        }
        if totals.threads == 0 {
            // The process exited between the scan and now: all its tasks are gone.
            return gone();
        }
        totals.rss_kib = rss.unwrap_or(0);
        Ok(Some(totals))
    }

    /// `Pss` of one process from its `smaps_rollup` (Linux 4.14+), in KiB; `None` if it
    /// cannot be read (gone, a zombie, no ptrace permission, an older kernel).
    fn read_pss(&mut self, pid: i32) -> Option<u64> {
        let rollup = Process::new(pid).and_then(|p| p.smaps_rollup()).ok()?;
        // procfs gives sizes in bytes; the file says kB.
        rollup
            .memory_map_rollup
            .iter()
            .find_map(|map| map.extension.map.get("Pss"))
            .map(|bytes| bytes / 1024)
    }
}

/// A process's stat, read in one go (`/proc` files are generated on each read, so several
/// reads could see several states). open(2), read(2): std retries EINTR in read_to_string.
fn read_stat(process: &Process) -> procfs::ProcResult<ProcStat> {
    let mut text = String::new();
    process
        .open_relative("stat")?
        .read_to_string(&mut text)
        .map_err(|e| match e.raw_os_error() {
            // ESRCH: the process is being torn down.
            Some(libc::ESRCH) => procfs::ProcError::NotFound(None),
            _ => procfs::ProcError::from(e),
        })?;
    Ok(ProcStat::of(&parse_stat_text(&text)?))
}

/// procfs's parse of a stat line, after checking the one thing it takes on trust: field 2,
/// the command name, in parentheses. Any program can set that name (prctl(PR_SET_NAME)) to
/// up to 15 bytes including spaces and ')', so it ends at the LAST ')'; procfs slices the line
/// at the first '(' and the last ')' without checking where they are, and would panic on a
/// line where they are missing or misplaced. The kernel never prints such a line; this keeps
/// a strange /proc an error, not a crash.
fn parse_stat_text(text: &str) -> procfs::ProcResult<procfs::process::Stat> {
    use procfs::FromRead;
    let line = text.trim();
    // procfs takes the pid from before the first '(' less its space, the name up to the
    // last ')', and the fields from two bytes after it: all three must be there.
    let shape_ok = match (line.find('('), line.rfind(')')) {
        (Some(open), Some(close)) => {
            open >= 2 && line.as_bytes()[open - 1] == b' ' && close > open && close + 2 < line.len()
        }
        _ => false,
    };
    if !shape_ok {
        return Err(procfs::ProcError::Other(format!(
            "a stat line without \"PID (COMMAND) \": {:?}",
            line.chars().take(40).collect::<String>()
        )));
    }
    procfs::process::Stat::from_read(line.as_bytes())
}

/// The threads and memory of one process, from its tasks' status files.
#[derive(Debug, Default)]
struct TaskTotals {
    threads: u32,
    rss_kib: u64,
    /// CPU time of the live tasks, ns (schedstat).
    runtime_ns: u64,
}

impl From<procfs::ProcError> for ProcError {
    fn from(e: procfs::ProcError) -> Self {
        let path = |p: &Option<std::path::PathBuf>| {
            p.as_ref()
                .map_or_else(|| "/proc".to_string(), |p| p.display().to_string())
        };
        match e {
            procfs::ProcError::Io(error, p) => ProcError::Unreadable {
                path: path(&p),
                error,
            },
            procfs::ProcError::PermissionDenied(p) => ProcError::Unreadable {
                path: path(&p),
                error: io::Error::from(io::ErrorKind::PermissionDenied),
            },
            procfs::ProcError::NotFound(p) => ProcError::Unreadable {
                path: path(&p),
                error: io::Error::from(io::ErrorKind::NotFound),
            },
            procfs::ProcError::Incomplete(p) => ProcError::Malformed {
                path: path(&p),
                what: "incomplete contents".to_string(),
            },
            other => ProcError::Malformed {
                path: "/proc".to_string(),
                what: other.to_string(),
            },
        }
    }
}

/// The fields of `/proc/P/stat` the tree needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    pid: i32,
    ppid: i32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
    starttime: u64,
}

impl ProcStat {
    fn of(s: &procfs::process::Stat) -> ProcStat {
        ProcStat {
            pid: s.pid,
            ppid: s.ppid,
            utime: s.utime,
            stime: s.stime,
            // Printed as signed longs; never negative in practice.
            cutime: u64::try_from(s.cutime).unwrap_or(0),
            cstime: u64::try_from(s.cstime).unwrap_or(0),
            starttime: s.starttime,
        }
    }
}

/// What the sampler needs from a `/proc/P/task/T/status` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TaskStatus {
    voluntary: u64,
    involuntary: u64,
    /// `None` for a zombie or a kernel thread, which have no memory of their own.
    rss_kib: Option<u64>,
}

/// Parses a task's status file (proc(5)): `Key:\tvalue` lines, of which three matter.
fn parse_status(text: &str) -> Result<TaskStatus, String> {
    let number = |value: &str, key: &str| -> Result<u64, String> {
        value
            .trim()
            .parse()
            .map_err(|_| format!("{key} is {value:?}, not a number"))
    };
    let (mut voluntary, mut involuntary, mut rss_kib) = (None, None, None);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key {
            "voluntary_ctxt_switches" => voluntary = Some(number(value, key)?),
            "nonvoluntary_ctxt_switches" => involuntary = Some(number(value, key)?),
            "VmRSS" => {
                let kib = value.trim().strip_suffix("kB").map(str::trim);
                rss_kib = Some(number(kib.unwrap_or(value), key)?);
            }
            _ => {}
        }
    }
    match (voluntary, involuntary) {
        (Some(voluntary), Some(involuntary)) => Ok(TaskStatus {
            voluntary,
            involuntary,
            rss_kib,
        }),
        // Every kernel since 2.6.23 prints both.
        _ => Err("no voluntary_ctxt_switches or nonvoluntary_ctxt_switches line".to_string()),
    }
}

/// Reads a whole `/proc` file into `buf` in one read (the file is generated on each read).
/// open(2), read(2): std retries EINTR in read_to_string.
fn read_into<'b>(path: &str, buf: &'b mut String) -> io::Result<&'b str> {
    buf.clear();
    std::fs::File::open(path)?.read_to_string(buf)?;
    Ok(buf)
}

/// True for the errors of a `/proc` file whose process or thread has exited: ENOENT once the
/// directory is gone, ESRCH while the task is being torn down.
fn is_gone(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::NotFound || error.raw_os_error() == Some(libc::ESRCH)
}

/// Identifies a task across samples. A tid alone is not enough: at thousands of forks a
/// second, pids wrap (32768 by default) within seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TaskKey {
    tid: i32,
    /// Start time of the task's process: two processes with one pid never start in the same
    /// clock tick. (The thread's own start time would need one more read per task; reuse of
    /// a tid inside one process is caught by the counts going down, see `observe`.)
    process_start: u64,
}

/// A task's context switches as last seen, and in which sample.
#[derive(Debug, Clone, Copy)]
struct TaskSeen {
    voluntary: u64,
    involuntary: u64,
    generation: u64,
}

/// Context switches per task, kept so that the tree's sums never go backwards: a task that
/// vanishes leaves its last-seen counts behind in `retired_*`.
#[derive(Debug, Default)]
struct TaskLedger {
    live: HashMap<TaskKey, TaskSeen>,
    /// Incremented by `begin`; entries not stamped with it by `end` have vanished.
    generation: u64,
    retired_voluntary: u64,
    retired_involuntary: u64,
    vanished: u64,
}

impl TaskLedger {
    fn begin(&mut self) {
        self.generation += 1;
    }

    fn observe(&mut self, key: TaskKey, voluntary: u64, involuntary: u64) {
        let now = TaskSeen {
            voluntary,
            involuntary,
            generation: self.generation,
        };
        match self.live.entry(key) {
            Entry::Occupied(mut entry) => {
                let before = *entry.get();
                if voluntary < before.voluntary || involuntary < before.involuntary {
                    // A live task's counts never go down, so this is a new thread that got
                    // a recycled tid: the old one vanished.
                    self.retired_voluntary += before.voluntary;
                    self.retired_involuntary += before.involuntary;
                    self.vanished += 1;
                }
                entry.insert(now);
            }
            Entry::Vacant(entry) => {
                entry.insert(now);
            }
        }
    }

    /// Retires every task not observed since `begin`.
    fn end(&mut self) {
        let generation = self.generation;
        let (mut voluntary, mut involuntary, mut vanished) = (0, 0, 0);
        self.live.retain(|_, seen| {
            let alive = seen.generation == generation;
            if !alive {
                voluntary += seen.voluntary;
                involuntary += seen.involuntary;
                vanished += 1;
            }
            alive
        });
        self.retired_voluntary += voluntary;
        self.retired_involuntary += involuntary;
        self.vanished += vanished;
    }

    /// (voluntary, involuntary) over live and retired tasks.
    fn totals(&self) -> (u64, u64) {
        self.live.values().fold(
            (self.retired_voluntary, self.retired_involuntary),
            |(v, i), seen| (v + seen.voluntary, i + seen.involuntary),
        )
    }
}

/// The server's cost over a window, from two samples and the peaks seen in between.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerCost {
    /// The root of the sampled tree.
    pub pid: i32,
    /// User CPU over the window, in seconds.
    pub cpu_user_s: f64,
    /// System CPU over the window, in seconds.
    pub cpu_system_s: f64,
    /// User plus system CPU per request, in microseconds; 0 without requests.
    pub cpu_us_per_request: f64,
    /// Voluntary context switches over the window.
    pub ctx_voluntary: u64,
    /// Involuntary context switches over the window.
    pub ctx_involuntary: u64,
    /// Both kinds of context switches per request; 0 without requests.
    pub ctx_per_request: f64,
    /// True if tasks vanished during the window or descendants were reaped in it: what they
    /// did after their last sample, or all of it if they lived between two samples, is
    /// missing, so the context-switch figures are a lower bound. Threads that are born and
    /// exit between two samples go unnoticed even here; the CPU figures are complete anyway.
    pub ctx_lower_bound: bool,
    /// Processes in the tree at the end.
    pub processes: u32,
    /// Most processes in any sample.
    pub processes_peak: u32,
    /// Threads in the tree at the end.
    pub threads: u32,
    /// Most threads in any sample.
    pub threads_peak: u32,
    /// Summed RSS at the end, in KiB (shared pages counted once per process).
    pub rss_kib: u64,
    /// Largest summed RSS in any sample, in KiB.
    pub rss_kib_peak: u64,
    /// Summed PSS at the end, in KiB, if memory was sampled then.
    pub pss_kib: Option<u64>,
    /// Largest summed PSS in any sample that had it, in KiB.
    pub pss_kib_peak: Option<u64>,
    /// `--count-syscalls`: system calls of the tree per request, counted by the kernel.
    pub syscalls_per_request: Option<f64>,
}

/// Peaks over samples.
#[derive(Debug, Clone, Default)]
pub struct Peaks {
    /// Most processes.
    pub processes: u32,
    /// Most threads.
    pub threads: u32,
    /// Largest summed RSS, in KiB.
    pub rss_kib: u64,
    /// Largest summed PSS, in KiB; `None` until a sample has one.
    pub pss_kib: Option<u64>,
}

impl Peaks {
    /// Takes the maximum of each figure with `s`'s.
    pub fn update(&mut self, s: &TreeSample) {
        self.processes = self.processes.max(s.processes);
        self.threads = self.threads.max(s.threads);
        self.rss_kib = self.rss_kib.max(s.rss_kib);
        // Option's order puts None below every Some, which is what a peak wants.
        self.pss_kib = self.pss_kib.max(s.pss_kib);
    }
}

/// The server's cost between `start` and `end` (two samples of one [`TreeSampler`]) for
/// `requests` requests. The peaks include `start` and `end` even if `peaks` did not see them.
pub fn server_cost(
    pid: i32,
    start: &TreeSample,
    end: &TreeSample,
    peaks: &Peaks,
    requests: u64,
) -> ServerCost {
    // The sums are monotonic for one sampler, but a descendant re-parented out of the tree
    // takes its CPU with it: saturate rather than wrap.
    let user_us = end.cpu.user_us.saturating_sub(start.cpu.user_us);
    let system_us = end.cpu.system_us.saturating_sub(start.cpu.system_us);
    let voluntary = end.voluntary_ctxt.saturating_sub(start.voluntary_ctxt);
    let involuntary = end.involuntary_ctxt.saturating_sub(start.involuntary_ctxt);
    let per_request = |total: u64| {
        if requests == 0 {
            0.0
        } else {
            total as f64 / requests as f64
        }
    };
    let mut all = peaks.clone();
    all.update(start);
    all.update(end);
    ServerCost {
        pid,
        cpu_user_s: user_us as f64 / 1e6,
        cpu_system_s: system_us as f64 / 1e6,
        cpu_us_per_request: per_request(user_us.saturating_add(system_us)),
        ctx_voluntary: voluntary,
        ctx_involuntary: involuntary,
        ctx_per_request: per_request(voluntary.saturating_add(involuntary)),
        ctx_lower_bound: end.vanished_tasks > start.vanished_tasks
            || end.reaped_cpu.total_us() > start.reaped_cpu.total_us(),
        processes: end.processes,
        processes_peak: all.processes,
        threads: end.threads,
        threads_peak: all.threads,
        rss_kib: end.rss_kib,
        rss_kib_peak: all.rss_kib,
        pss_kib: end.pss_kib,
        pss_kib_peak: all.pss_kib,
        syscalls_per_request: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;

    /// A child in its own process group; dropping it kills the group and reaps the child,
    /// so a failed assertion leaves no stray `sleep` behind.
    struct Group(Child);

    impl Group {
        fn spawn(program: &str, args: &[&str]) -> Group {
            let child = Command::new(program)
                .args(args)
                .process_group(0)
                .spawn()
                .unwrap();
            Group(child)
        }

        fn pid(&self) -> i32 {
            i32::try_from(self.0.id()).unwrap()
        }
    }

    impl Drop for Group {
        fn drop(&mut self) {
            let _ = killpg(Pid::from_raw(self.pid()), Signal::SIGKILL);
            let _ = self.0.wait();
        }
    }

    fn self_pid() -> i32 {
        i32::try_from(std::process::id()).unwrap()
    }

    /// Samples until `done` holds, for at most five seconds.
    fn sample_until(sampler: &mut TreeSampler, done: impl Fn(&TreeSample) -> bool) -> TreeSample {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let sample = sampler.sample(true).unwrap();
            if done(&sample) {
                return sample;
            }
            assert!(Instant::now() < deadline, "gave up waiting: {sample:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn busy(duration: Duration) {
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < duration {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }

    fn stat_line(comm: &str) -> String {
        // Fields 3..=52 as a 6.x kernel prints them, with recognisable values at 4
        // (ppid), 14-17 (utime, stime, cutime, cstime) and 22 (starttime).
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[0] = "S".to_string();
        fields[4 - 3] = "77".to_string();
        fields[14 - 3] = "1400".to_string();
        fields[15 - 3] = "1500".to_string();
        fields[16 - 3] = "1600".to_string();
        fields[17 - 3] = "1700".to_string();
        fields[22 - 3] = "2200".to_string();
        format!("4242 ({comm}) {}\n", fields.join(" "))
    }

    /// What the sampler makes of a stat line: procfs's parse, then the fields it keeps.
    fn parse_stat(line: &str) -> Result<ProcStat, String> {
        parse_stat_text(line)
            .map(|s| ProcStat::of(&s))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn stat_comm_with_parentheses_and_spaces() {
        let line = stat_line("a) (b c) S 1 (");
        let stat = parse_stat(&line).unwrap();
        assert_eq!(
            stat,
            ProcStat {
                pid: 4242,
                ppid: 77,
                utime: 1400,
                stime: 1500,
                cutime: 1600,
                cstime: 1700,
                starttime: 2200,
            }
        );
        let comm = parse_stat_text(&line).unwrap().comm;
        assert_eq!(comm, "a) (b c) S 1 (");
    }

    #[test]
    fn stat_malformed_is_an_error_not_a_panic() {
        assert!(parse_stat("").is_err());
        assert!(parse_stat("12 (x").is_err());
        assert!(parse_stat("12 x) (").is_err());
        assert!(parse_stat("12 (x) S 1 2 3").is_err());
        // Parentheses procfs would slice around wrongly.
        assert!(parse_stat("(x (y) S 1").is_err());
        assert!(parse_stat("1 (a) b)").is_err());
        assert!(parse_stat("1 (a)").is_err());
        assert!(parse_stat(&stat_line("x").replace(" 1400 ", " -3 ")).is_err());
    }

    #[test]
    fn status_lines() {
        let text = "Name:\tsleep\nState:\tS (sleeping)\nVmRSS:\t    2164 kB\nThreads:\t1\n\
                    voluntary_ctxt_switches:\t30\nnonvoluntary_ctxt_switches:\t4\n";
        assert_eq!(
            parse_status(text),
            Ok(TaskStatus {
                voluntary: 30,
                involuntary: 4,
                rss_kib: Some(2164),
            })
        );
        // A zombie has no VmRSS.
        let zombie = "Name:\tx\nState:\tZ (zombie)\nvoluntary_ctxt_switches:\t1\n\
                      nonvoluntary_ctxt_switches:\t0\n";
        assert_eq!(parse_status(zombie).unwrap().rss_kib, None);
        assert!(parse_status("Name:\tx\n").is_err());
        assert!(parse_status("voluntary_ctxt_switches:\tmany\n").is_err());
    }

    #[test]
    fn ledger_keeps_vanished_counts_and_spots_tid_reuse() {
        let key = |tid| TaskKey {
            tid,
            process_start: 1,
        };
        let mut ledger = TaskLedger::default();
        ledger.begin();
        ledger.observe(key(1), 10, 1);
        ledger.observe(key(2), 20, 2);
        ledger.end();
        assert_eq!((ledger.totals(), ledger.vanished), ((30, 3), 0));

        // Task 2 exits: its counts stay.
        ledger.begin();
        ledger.observe(key(1), 15, 1);
        ledger.end();
        assert_eq!((ledger.totals(), ledger.vanished), ((35, 3), 1));

        // Tid 1 now belongs to a new thread, whose counts start low.
        ledger.begin();
        ledger.observe(key(1), 3, 0);
        ledger.end();
        assert_eq!((ledger.totals(), ledger.vanished), ((38, 3), 2));
        assert_eq!(ledger.live.len(), 1);
    }

    #[test]
    fn sample_this_process() {
        let mut sampler = TreeSampler::new(self_pid()).unwrap();
        let before = sampler.sample(true).unwrap();
        busy(Duration::from_millis(50));
        let after = sampler.sample(true).unwrap();
        assert!(before.processes >= 1 && before.threads >= 1, "{before:?}");
        assert!(after.rss_kib > 0, "{after:?}");
        assert!(matches!(after.pss_kib, Some(kib) if kib > 0), "{after:?}");
        assert!(
            after.cpu.total_us() > before.cpu.total_us(),
            "{before:?} {after:?}"
        );
        // Without memory, no PSS; everything else is still there.
        let light = sampler.sample(false).unwrap();
        assert_eq!(light.pss_kib, None);
        assert!(light.rss_kib > 0 && light.threads >= 1);
    }

    #[test]
    fn own_cpu_grows() {
        let before = own_cpu();
        busy(Duration::from_millis(30));
        let after = own_cpu();
        assert!(after.total_us() > before.total_us(), "{before:?} {after:?}");
    }

    #[test]
    fn a_child_is_part_of_the_tree() {
        let child = Group::spawn("sleep", &["5"]);
        let mut sampler = TreeSampler::new(self_pid()).unwrap();
        // Other tests run in this process too and may have children of their own.
        let sample = sampler.sample(false).unwrap();
        assert!(sample.processes >= 2, "{sample:?}");
        drop(child);
    }

    #[test]
    fn grandchildren_are_part_of_the_tree_and_leave_their_counts() {
        let shell = Group::spawn("sh", &["-c", "sleep 0.5 & sleep 5 & wait"]);
        let mut sampler = TreeSampler::new(shell.pid()).unwrap();
        let full = sample_until(&mut sampler, |s| s.processes == 3);
        assert_eq!(full.threads, 3);
        assert_eq!(full.vanished_tasks, 0);
        assert!(full.rss_kib > 0 && full.pss_kib.is_some(), "{full:?}");

        // The short sleep exits and the shell reaps it: one task vanishes, every sum stays.
        let after = sample_until(&mut sampler, |s| s.processes == 2);
        assert_eq!(after.threads, 2);
        assert_eq!(after.vanished_tasks, 1);
        assert!(after.voluntary_ctxt >= full.voluntary_ctxt);
        assert!(after.involuntary_ctxt >= full.involuntary_ctxt);
        // CPU may dip by less than a clock tick: the exited child's exact runtime (schedstat)
        // moves into its parent's cutime, which /proc reports in whole ticks.
        let tick_us = 1_000_000 / sysconf(libc::_SC_CLK_TCK).unwrap_or(100);
        assert!(
            after.cpu.total_us() + tick_us >= full.cpu.total_us(),
            "{after:?} {full:?}"
        );
        assert!(after.reaped_cpu.total_us() >= full.reaped_cpu.total_us());
        drop(shell);
    }

    #[test]
    fn an_exited_thread_leaves_its_counts() {
        let mut sampler = TreeSampler::new(self_pid()).unwrap();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // Block a few times, so the thread has switches of its own to leave behind.
            for _ in 0..3 {
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = stopped.recv();
        });
        std::thread::sleep(Duration::from_millis(20));
        let with_thread = sampler.sample(false).unwrap();
        stop.send(()).unwrap();
        thread.join().unwrap();
        let without = sampler.sample(false).unwrap();
        // Other tests' threads come and go too, hence >= rather than ==.
        assert!(without.vanished_tasks > with_thread.vanished_tasks);
        assert!(without.voluntary_ctxt >= with_thread.voluntary_ctxt);
        assert!(without.involuntary_ctxt >= with_thread.involuntary_ctxt);
    }

    #[test]
    fn no_such_process() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        child.wait().unwrap();
        assert!(matches!(TreeSampler::new(pid), Err(ProcError::NoSuchProcess(p)) if p == pid));
        assert!(matches!(
            TreeSampler::new(-1),
            Err(ProcError::NoSuchProcess(-1))
        ));
    }

    #[test]
    fn root_exiting_ends_sampling() {
        let shell = Group::spawn("sleep", &["5"]);
        let pid = shell.pid();
        let mut sampler = TreeSampler::new(pid).unwrap();
        assert_eq!(sampler.sample(true).unwrap().processes, 1);
        drop(shell);
        assert!(matches!(
            sampler.sample(true),
            Err(ProcError::NoSuchProcess(p)) if p == pid
        ));
    }

    fn sample(cpu: (u64, u64), ctx: (u64, u64), vanished: u64, reaped_us: u64) -> TreeSample {
        TreeSample {
            cpu: CpuTimes {
                user_us: cpu.0,
                system_us: cpu.1,
            },
            reaped_cpu: CpuTimes {
                user_us: reaped_us,
                system_us: 0,
            },
            voluntary_ctxt: ctx.0,
            involuntary_ctxt: ctx.1,
            processes: 2,
            threads: 5,
            rss_kib: 1000,
            pss_kib: Some(600),
            vanished_tasks: vanished,
        }
    }

    #[test]
    fn server_cost_arithmetic() {
        let start = sample((1_000_000, 500_000), (100, 10), 3, 0);
        let mut end = sample((3_000_000, 1_500_000), (4_100, 1_010), 3, 0);
        end.processes = 1;
        end.pss_kib = None;
        let mut peaks = Peaks::default();
        peaks.update(&start);
        peaks.update(&TreeSample {
            processes: 9,
            threads: 40,
            rss_kib: 5000,
            pss_kib: Some(3000),
            ..TreeSample::default()
        });
        let cost = server_cost(7, &start, &end, &peaks, 1000);
        assert_eq!(cost.pid, 7);
        assert_eq!(cost.cpu_user_s, 2.0);
        assert_eq!(cost.cpu_system_s, 1.0);
        assert_eq!(cost.cpu_us_per_request, 3000.0);
        assert_eq!((cost.ctx_voluntary, cost.ctx_involuntary), (4000, 1000));
        assert_eq!(cost.ctx_per_request, 5.0);
        assert!(!cost.ctx_lower_bound);
        assert_eq!((cost.processes, cost.processes_peak), (1, 9));
        assert_eq!((cost.threads, cost.threads_peak), (5, 40));
        assert_eq!((cost.rss_kib, cost.rss_kib_peak), (1000, 5000));
        assert_eq!((cost.pss_kib, cost.pss_kib_peak), (None, Some(3000)));

        // No requests: no division by zero. Counters that went backwards: zero, not a wrap.
        let cost = server_cost(7, &end, &start, &Peaks::default(), 0);
        assert_eq!((cost.cpu_us_per_request, cost.ctx_per_request), (0.0, 0.0));
        assert_eq!((cost.cpu_user_s, cost.ctx_voluntary), (0.0, 0));
        // Peaks include the end samples even if the caller never updated them.
        assert_eq!((cost.processes_peak, cost.pss_kib_peak), (2, Some(600)));

        // Vanished tasks, or reaped children, make the switch counts a lower bound.
        let vanished = sample((0, 0), (0, 0), 4, 0);
        assert!(server_cost(7, &start, &vanished, &peaks, 1).ctx_lower_bound);
        let reaped = sample((0, 0), (0, 0), 3, 10_000);
        assert!(server_cost(7, &start, &reaped, &peaks, 1).ctx_lower_bound);
    }

    #[test]
    fn machine_info_is_filled_in() {
        let info = machine_info();
        for field in [
            &info.cpu_model,
            &info.kernel,
            &info.os,
            &info.arch,
            &info.hostname,
        ] {
            assert!(!field.is_empty(), "{info:?}");
        }
        assert!(info.cores >= 1);
        assert_eq!(info.os, "Linux");
        assert!(serde_json::to_string(&info).unwrap().contains("\"cores\""));
    }

    #[test]
    fn cpuinfo_model_names() {
        assert_eq!(
            cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n").as_deref(),
            Some("AMD EPYC 7B13")
        );
        assert_eq!(cpu_model("processor\t: 0\nBogoMIPS\t: 50.00\n"), None);
    }

    #[test]
    fn errors_name_the_file() {
        let error = ProcError::Unreadable {
            path: "/proc/1/smaps_rollup".to_string(),
            error: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        let text = error.to_string();
        assert!(text.contains("/proc/1/smaps_rollup") && text.contains("same user"));
        assert!(std::error::Error::source(&error).is_some());
        assert!(ProcError::NoSuchProcess(5).to_string().contains('5'));
    }
}
