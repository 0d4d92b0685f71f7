//! `--count-syscalls`: system calls made over the measured window, by loadgen and by the
//! server's process tree, counted by the kernel.
//!
//! A readiness loop makes a `read` and a `write` per socket each time it is ready; a
//! completion loop (io_uring) submits many operations in one `io_uring_enter`. The count per
//! request is the figure that shows the difference, so `loadgen run` can report it for both
//! sides. It is the kernel's own count: a perf event on the `raw_syscalls:sys_enter`
//! tracepoint, opened (perf_event_open(2)) on every task of a process as the window starts,
//! with `inherit` so that the threads and processes they start later count too, and read as
//! the window ends. No sampling, no stopping the process, nothing to parse afterwards.
//!
//! It is off by default, for a reason a measuring tool must respect: while any task traces
//! system calls, every system call on the machine takes the kernel's slower entry path (some
//! tens of nanoseconds each), which costs an epoll server with three calls per request more
//! than an io_uring one with a fraction of a call. Figures from a counted run are for the
//! counts; compare throughput between runs that were not counted.
//!
//! It needs perf events (root, or `kernel.perf_event_paranoid` at most 1 for one's own
//! processes) and tracefs (the tracepoint's id). Where either is missing the run says so in a
//! note and reports no count.

use std::fs;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Where the tracepoint's id may be read: tracefs, mounted on its own or under debugfs.
const TRACEPOINT_ID: [&str; 2] = [
    "/sys/kernel/tracing/events/raw_syscalls/sys_enter/id",
    "/sys/kernel/debug/tracing/events/raw_syscalls/sys_enter/id",
];
/// perf_event_attr.type for a tracepoint.
const PERF_TYPE_TRACEPOINT: u32 = 2;
/// The first version of perf_event_attr (64 bytes): every field a counter needs.
const ATTR_SIZE_VER0: u32 = 64;
/// perf_event_open(2)'s flag: the descriptor closes on exec (libc does not name it).
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
/// perf_event_attr's flag bits: count the task's future children too; not the kernel's own
/// idle tasks is implied by counting tasks, not CPUs.
const FLAG_INHERIT: u64 = 1 << 1;

/// Counters on a set of tasks; [`SyscallCounter::total`] sums them.
#[derive(Debug)]
pub struct SyscallCounter {
    fds: Vec<OwnedFd>,
}

impl SyscallCounter {
    /// Starts counting the system calls of every task in `tids`, and of whatever they start
    /// from now on. Tasks that have exited meanwhile are skipped; a refusal of the first is
    /// the error (no permission, no perf events, no tracefs).
    pub fn attach(tids: impl IntoIterator<Item = i32>) -> Result<SyscallCounter, String> {
        let id = tracepoint_id()?;
        let mut fds = Vec::new();
        for tid in tids {
            match open_counter(id, tid) {
                Ok(fd) => fds.push(fd),
                // The task exited between the listing and now.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => {
                    return Err(format!(
                        "cannot count system calls (perf_event_open on task {tid}: {e}); run as root or lower kernel.perf_event_paranoid"
                    ))
                }
            }
        }
        Ok(SyscallCounter { fds })
    }

    /// The threads of this process, for counting loadgen itself.
    pub fn own_threads() -> Vec<i32> {
        threads_of(std::process::id() as i32)
    }

    /// System calls counted so far on every task attached, their children included.
    pub fn total(&self) -> u64 {
        self.fds.iter().map(read_count).sum()
    }
}

/// The tasks (threads) of process `pid`, from `/proc/PID/task`.
pub fn threads_of(pid: i32) -> Vec<i32> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn tracepoint_id() -> Result<u64, String> {
    TRACEPOINT_ID
        .iter()
        .find_map(|path| fs::read_to_string(path).ok()?.trim().parse().ok())
        .ok_or_else(|| {
            "cannot count system calls: no tracefs (mount -t tracefs nodev /sys/kernel/tracing)"
                .to_string()
        })
}

/// perf_event_open(2) for the `raw_syscalls:sys_enter` tracepoint (`id`) on task `tid`, any
/// CPU, counting from now, inherited by the task's future children.
fn open_counter(id: u64, tid: i32) -> io::Result<OwnedFd> {
    // perf_event_attr, version 0: type and size, config, sample_period, sample_type,
    // read_format, the flag bits, wakeup_events and bp_type, config1. A counter that is never
    // sampled needs only the first three and the flags; the rest stays zero.
    let mut attr = [0u64; 8];
    attr[0] = u64::from(PERF_TYPE_TRACEPOINT) | (u64::from(ATTR_SIZE_VER0) << 32);
    attr[1] = id;
    attr[6] = FLAG_INHERIT;
    // SAFETY: `attr` is a live, 64-byte, 8-aligned perf_event_attr whose size field says 64;
    // the kernel only reads it. The other arguments are integers.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            tid,
            -1 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: perf_event_open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A counter's value (with `inherit`, the sum over the task and its inherited children).
fn read_count(fd: &OwnedFd) -> u64 {
    let mut buf = [0u8; 8];
    match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(fd), &mut buf) {
        Ok(8) => u64::from_ne_bytes(buf),
        _ => 0,
    }
}
