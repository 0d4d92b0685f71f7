#!/usr/bin/env python3
"""Issue 20, "Readiness or completion?": epoll against io_uring on both sides of the wire,
each beside the least a C program can do with epoll.

Three servers, each one thread pinned to CPU 0: `server-eventloop --backend epoll` (readiness:
mio over epoll), `server-uring` (completion: one io_uring ring, multishot accept and receive)
and the C floor server, floor.c (a level-triggered epoll loop with no error handling: the
"physical limit" of the readiness model on this machine). Three clients, one thread each,
pinned to CPU 1: loadgen's mio engine (today's, epoll via mio: `--engine epoll`, which it
also takes as `mio`), `loadgen run --engine uring` (the io_uring engine, issue 20's other
half) and the C floor client,
floorclient.c (an epoll loop that counts reply bytes and writes the next request, nothing
more). Every client drives every server (the full matrix, --servers and --clients choose
rows) with binary-protocol ECHOs of --payload bytes (16), closed loop, in --conditions: 1, 16
and 256 connections with one request in flight each, and 16 connections with 16 in flight
(loadgen --pipeline 16, floorclient DEPTH 16). The C sources are read from --bench-dir
(shared/bench beside the repository) and compiled with `cc -O2` into a temporary directory
at each run; a copy of each is kept in the results.

What each run gives, and from where:
- requests/s and p99: loadgen's JSON report (--json), over the measured --duration after
  --warmup; floorclient prints `rps N`, its replies over its whole run (it has no warmup, and
  no latency recording: its p99 is blank).
- client CPU per request. floorclient: user + system time from os.wait4's rusage, over its
  whole life (exec and connecting included, a few milliseconds), divided by rps x --duration.
  loadgen: its own getrusage(RUSAGE_SELF) over the measured window (report.client_cpu), the
  same counter taken at the window's edges, so the warmup's CPU is not charged to the measured
  requests; the whole process's wait4 figure is kept in raw.tsv beside it.
- server CPU per request: utime + stime of the server process from /proc/PID/stat
  (io_uring's worker threads, which are threads of the process, included). With floorclient
  read before and after the client process; with loadgen read by loadgen at the measured
  window's edges (--server-pid), the before/after figure kept in raw.tsv.
- system calls per request, client and server, and of them io_uring_enter: a separate, counted
  run of --count-duration (2 s) right after, because counting costs CPU of its own. The
  client runs under `perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter,...`
  (every thread; loadgen with --warmup 0, so that every call it made is charged to requests it
  counted, start-up included, as syscalls-per-request.py does); the server is counted with
  `perf stat -p PID`, started disabled and enabled through its --control fifo before the
  client starts (the ack says counting is on), and stopped when the client exits. A handful
  of other calls (epoll_wait, read, write, sendto, recvfrom, futex, ...) are counted one by one
  and kept in syscalls.tsv; every perf output is kept verbatim in counts.txt. With no perf,
  `strace -c -f` counts instead (--tool strace), which slows whichever side it traces.

Within each repetition every condition runs every pairing once, the pairings' order rotated
from one repetition to the next, so drift falls on all alike; figures are medians over
--repeat repetitions (3) of the runs that succeeded. Two goals of issue 20 are decided at the
end, each from variants measured side by side in the same repetitions:
  (a) loadgen's uring engine serves at least 1.5x the requests per client CPU-second of the C
      epoll client, on the same server (the floor server and server-uring);
  (b) server-uring reaches at least 1.0x the throughput of the C floor server, with the same
      client (floorclient and loadgen's mio engine), its CPU per request beside.
Each ratio is the ratio of the two medians; the verdict says when the repetitions' own ratios
fell on both sides of the goal. Until `loadgen run --help` lists --engine with a uring value
the loadgen-uring runs are skipped, saying so, and loadgen-mio runs loadgen as it is (with no
--engine flag its only engine is mio's).

Each measured run also reads /proc/stat before and after, for the two pinned CPUs: the share
of the run they were idle, in irq and softirq (loopback's TCP path), stolen by the hypervisor,
and busy with work not charged to the process pinned there (another task: a build beside the
run shows here). raw.tsv keeps them per run and the table says their medians and maxima, so a
run on a shared machine says how shared it was. On loopback each side's CPU figure includes
kernel work done for the other side's packets (the TCP receive path runs in the sender's
softirq), as it does for every client and server here alike.

Where the client's time goes (both on by default):
- A CPU profile of each client (--no-profile: none), once, not per repetition: after the
  matrix, a floor server of its own on CPU 0 and the client in the 16-connection condition
  (one request in flight each), its measured run as above, while `perf record -e cpu-clock
  -F 4999 -C 1 -g -k CLOCK_MONOTONIC` samples CPU 1. perf (on CPU 0) starts half a second
  before the client's measured window and stops when the client exits; the samples from 0.25 s
  into the window to 0.25 s before its end are kept (loadgen's window follows its warmup,
  floorclient's is its whole run). `perf script` gives each sample's task and kernel call chain
  and every sample on CPU 1 gets one category: client user space (a user-space ip in the
  client's process); syscall entry/exit, fd, VFS (entry_SYSCALL_64*, do_syscall_64, the
  exit_to_user_mode and __x64_sys_/ksys_ wrappers, a descriptor's lookup, vfs_read/vfs_write
  and their permission checks); epoll (ep_*, do_epoll_*, *sys_epoll*); io_uring (io_*,
  __io_*, io_uring*, tctx_*, task_work_*, and a descriptor's lookup the ring made); TCP/IP,
  sockets (tcp_*, ip_*, inet_*, sock_*, sk_*, skb_*, netif_*, napi_*, __dev_queue_xmit,
  loopback_xmit, process_backlog, net_rx_action, __sys_sendto/recvfrom, security_socket*, the
  copies to and from user memory and their checks); scheduler, wake-ups (schedule,
  try_to_wake_up, *wake_up*, enqueue_/dequeue_*, finish_task_switch, update_curr, psi_*,
  call-function IPIs, sock_def_readable: the socket's wake-up of its reader); idle (the idle
  loop, *safe_halt, cpuidle*); other tasks (any sample of another task than the client, the
  idle task and ksoftirqd: a build beside the run); other. RULES has the patterns. A generic
  helper (HELPERS: lock releases, allocators, clock reads, RCU, list checks) is charged to its
  first caller in the call chain that is not one: where interrupts were off a cpu-clock
  sample lands when they come back on, in _raw_spin_unlock_irqrestore and kin, so only the
  caller says whose work it was. Per client: each category's share of CPU 1's samples and µs
  per request (share x 1e6 / the run's requests per second), with the busy (not idle) sum
  beside getrusage's CPU per request. profile-CLIENT.txt lists the top 15 symbols, the helpers'
  callers and the symbols behind each category, so a reader can check the rules; profile.tsv
  has the figures. Needs perf allowed to sample CPU 1 (root, or kernel.perf_event_paranoid 0);
  without it the table says why there is no profile.
- The cost of one system call (--no-syscall-cost: none): a C loop of 5 000 000
  syscall(SYS_getppid) on CPU 1, timed with clock_gettime(CLOCK_MONOTONIC), compiled into the
  temporary directory and run 3 times; the median, in ns per call. With it, for the
  16-connection floor-server cells, the system calls loadgen-uring saves per request against
  floorclient and loadgen-mio (from the counted runs) x that cost: the most that crossing into
  the kernel less often can be worth, beside each client's CPU per request.

Writes results/DATE-readiness-vs-completion/: raw.tsv (every run), syscalls.tsv, counts.txt,
profile.tsv and profile-CLIENT.txt, table.md, machine.txt and the two C sources. Refuses to
record from a tree with uncommitted changes (scripts/machine-info.sh; ECHOLAB_ALLOW_DIRTY=1 for
a trial). Every subprocess has a timeout and every server, counter and perf record is stopped
on the way out (Ctrl-C and SIGTERM included).
Needs perf (Debian: apt-get install linux-perf) with the syscall tracepoints readable (root,
or kernel.perf_event_paranoid -1), or strace, and a C compiler. On 2 CPUs a repetition of the
full matrix (36 pairings and conditions) takes about 36 x (1 + 5 + 2 + 0.5) s, 5 minutes;
three, about 16, after up to 2 minutes waiting for an idle machine; the profiles add about
3 x (1 + 5 + 2) s, the system call's cost about 3 s.

    python3 scripts/readiness-vs-completion.py --repeat 3 --duration 5s
"""
import argparse
import errno
import json
import os
import re
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lablib import (ROOT, build_release, client_affinity, perf_stat_counts, pin_all_threads, proc_cpu_s,  # noqa: E402
                    results_dir, write_table, write_tsv)

NAME = "readiness-vs-completion"
# key -> (label, binary, arguments); "floor" is the compiled floor.c.
SERVERS = {"eventloop": ("eventloop-epoll", "server-eventloop", ["--backend", "epoll"]),
           "uring": ("server-uring", "server-uring", []),
           "floor": ("floor (C, epoll)", None, [])}
CLIENTS = {"mio": "loadgen-mio", "uring": "loadgen-uring", "floor": "floorclient (C, epoll)"}
# The calls counted one by one beside the total (raw_syscalls:sys_enter): what an event loop
# over sockets, or a ring, makes per request. Everything else is in the total only.
PER_CALL = ("io_uring_enter", "epoll_wait", "epoll_pwait", "epoll_pwait2", "epoll_ctl", "read", "write",
            "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg", "futex", "accept4", "close")
TRACEFS = "/sys/kernel/tracing/events/syscalls"
GOAL_A, GOAL_B = 1.5, 1.0
START_LIMIT_S = 10      # for a server's `listening on` line, perf's ack, strace's attach
STOP_LIMIT_S = 10       # for a server or a counter to exit once told to


class Interrupted(BaseException):
    """SIGTERM or SIGHUP, raised where the script is so that every finally block runs."""


def on_signal(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def seconds(text):
    """A duration as loadgen writes it (5s, 500ms, 1.5s) or a bare number of seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 5s, 500ms)")
    return float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)


def conditions(text):
    """'1,16,256,16x16' -> [(1, 1), (16, 1), (256, 1), (16, 16)]: CONNECTIONS or CONNECTIONSxDEPTH."""
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:x(\d+))?\s*", part)
        if not m or int(m.group(1)) < 1 or (m.group(2) and int(m.group(2)) < 1):
            raise argparse.ArgumentTypeError(f"not CONNECTIONS or CONNECTIONSxDEPTH: {part!r}")
        out.append((int(m.group(1)), int(m.group(2) or 1)))
    return out


def keys(table, what):
    def parse(text):
        chosen = [k.strip() for k in text.split(",") if k.strip()]
        bad = [k for k in chosen if k not in table]
        if bad or not chosen:
            raise argparse.ArgumentTypeError(f"{what}: {', '.join(bad) or 'none given'}; "
                                             f"choose from {', '.join(table)}")
        return chosen
    return parse


def cond_label(cond):
    conns, depth = cond
    return f"{conns}" if depth == 1 else f"{conns} x {depth} in flight"


def stop(proc, name):
    """Stops PROC (SIGTERM, then SIGKILL after STOP_LIMIT_S); a no-op once it has exited."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_LIMIT_S)
    except subprocess.TimeoutExpired:
        print(f"{NAME}: {name} ignored SIGTERM for {STOP_LIMIT_S} s: killed", file=sys.stderr)
        proc.kill()
        proc.wait(timeout=STOP_LIMIT_S)


def start_server(key, bin_dir, floor_bin, cpus):
    """Starts server KEY on a free port, pinned to CPUS; returns (process, port)."""
    _, binary, extra = SERVERS[key]
    cmd = [floor_bin, "0"] if key == "floor" else [os.path.join(bin_dir, binary), "--addr", "127.0.0.1:0", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            preexec_fn=client_affinity(cpus))
    ready, _, _ = select.select([proc.stdout], [], [], START_LIMIT_S)
    line = proc.stdout.readline().decode(errors="replace").strip() if ready else ""
    if not line.startswith("listening on "):
        stop(proc, key)
        raise SystemExit(f"{NAME}: {shlex.join(cmd)} did not say `listening on` within {START_LIMIT_S} s: {line!r}")
    if cpus:
        pin_all_threads(proc.pid, cpus)
    return proc, int(line.rsplit(":", 1)[1])


def threads_of(pid):
    """How many threads PID has now (io_uring's io-wq and SQPOLL threads show here), 0 if gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def family(pid):
    """PID and its descendants (a client under perf or strace is perf's child)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def repin(pid, cpus):
    """Pins every thread of PID and its descendants again (threads an io_uring starts after exec
    take the cpuset's CPUs, not the process's affinity); quiet if they are gone."""
    if cpus:
        for p in family(pid):
            try:
                pin_all_threads(p, cpus)
            except OSError:
                pass


def kill_tree(proc, reap=True):
    """Kills PROC's descendants, deepest first, so that a perf or strace wrapping a client reaps
    it and leaves no orphan, then PROC itself if it has not exited within a few seconds. With
    REAP false (from a timer, while the main thread waits for PROC) it only sends the signals."""
    below = family(proc.pid)[1:]
    for p in reversed(below):
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    if not reap:
        def last():
            if proc.returncode is None:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
        timer = threading.Timer(3 if below else 0, last)
        timer.daemon = True
        timer.start()
        return
    if not below:
        proc.kill()
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_LIMIT_S)


def run_bounded(cmd, limit_s, cpus, server=None, at=()):
    """Runs CMD pinned to CPUS, killed after LIMIT_S seconds. Half a second in, pins the threads
    of the client and of SERVER (pid, cpus) again and notes how many each has. AT: (seconds,
    function) pairs, each function called with the client's pid that many seconds after it
    started, unless it has exited by then (the profile's perf record). Returns (exit code,
    stdout, stderr, wait4's CPU seconds, {"client_threads", "server_threads"}, timed out?)."""
    seen, timed_out = {}, []
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, preexec_fn=client_affinity(cpus))

        def kill():
            timed_out.append(True)
            kill_tree(proc, reap=False)

        def look():
            repin(proc.pid, cpus)
            seen["client_threads"] = threads_of(proc.pid)
            if server:
                repin(server[0], server[1])
                seen["server_threads"] = threads_of(server[0])
        timers = [threading.Timer(limit_s, kill), threading.Timer(0.5, look),
                  *(threading.Timer(delay, fn, (proc.pid,)) for delay, fn in at)]
        for t in timers:
            t.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            kill_tree(proc)
            raise
        finally:
            for t in timers:
                t.cancel()
            for t in timers[2:]:
                t.join(timeout=START_LIMIT_S)   # one that had begun finishes what it started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (proc.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                usage.ru_utime + usage.ru_stime, seen, bool(timed_out))


def client_command(client, port, cond, args, tools, duration_s, warmup_s, json_path, server_pid=None):
    conns, depth = cond
    if client == "floor":
        return [tools["floorclient"], str(port), str(conns), "1", str(int(duration_s)), str(args.payload), str(depth)]
    cmd = [tools["loadgen"], "run", "--addr", f"127.0.0.1:{port}", "--protocol", "binary", "--op", "echo",
           "--payload", str(args.payload), "--connections", str(conns), "--threads", "1", "--pipeline", str(depth),
           "--duration", f"{duration_s:g}s", "--warmup", f"{warmup_s:g}s", "--progress", "never", "--json", json_path]
    if tools["engines"]:
        cmd += ["--engine", tools["engines"][client]]
    if server_pid:
        cmd += ["--server-pid", str(server_pid)]
    return cmd


def engines(loadgen):
    """{"mio": VALUE, "uring": "uring"} for loadgen's --engine, from `loadgen run --help`: the
    mio engine's value is `epoll` (or `mio`, its alias); {} if there is no --engine."""
    text = subprocess.run([loadgen, "run", "--help"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"^\s+--engine\b(.*?)(?=^\s+-{1,2}[a-z]|\Z)", text, re.M | re.S)
    if not m:
        return {}
    values = re.findall(r"^\s+- ([a-z0-9-]+):", m.group(1), re.M) or \
        re.findall(r"possible values: ([a-z0-9, -]+)\]", m.group(1))[0].replace(" ", "").split(",")
    out = {}
    for value in ("epoll", "mio"):
        if value in values:
            out.setdefault("mio", value)
    if "uring" in values:
        out["uring"] = "uring"
    if "mio" not in out:
        raise SystemExit(f"{NAME}: loadgen's --engine has no epoll or mio value ({', '.join(values)}): which is mio's?")
    return out


def read_report(client, stdout, json_path, duration_s):
    """(requests, throughput, p99 µs or None, client CPU s in the window or None, server CPU s
    in the window or None) of one client run."""
    if client == "floor":
        m = re.search(r"^rps (\d+)", stdout, re.M)
        if not m:
            raise ValueError(f"floorclient printed no `rps N`: {stdout!r}")
        rps = float(m.group(1))
        return round(rps * duration_s), rps, None, None, None
    with open(json_path) as f:
        rep = json.load(f)
    if not rep.get("ok") or not rep.get("valid", True):
        raise ValueError(f"loadgen's report says not ok: {rep.get('invalid_reasons') or rep.get('errors')}")
    cpu = rep["client_cpu"]
    server = rep.get("server") or {}
    server_cpu = server.get("cpu_user_s", 0) + server.get("cpu_system_s", 0) if server else None
    return (rep["counts"]["ok"], rep["throughput_rps"], rep["latency_us"]["p99"], cpu["user_s"] + cpu["system_s"],
            server_cpu)


def cpu_stat():
    """{cpu number: [user, nice, system, idle, iowait, irq, softirq, steal] ticks} from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                out[int(name[3:])] = [int(x) for x in fields[:8]]
    return out


def cpu_shares(before, after, cpu, ours_s, wall_s):
    """Where CPU's time went during a run, as shares of the run's wall time: (not ours, idle,
    softirq, steal). Not ours: the time the CPU was busy (user, nice, system, irq, softirq) less
    OURS_S, the CPU time of the process pinned there: other tasks (a build beside the run),
    ksoftirqd, interrupts. softirq is mostly loopback's TCP receive path; /proc/stat counts it
    apart, and unless the kernel accounts interrupt time separately (IRQ_TIME_ACCOUNTING) the
    task it interrupted is charged for it as well, so it is then in OURS_S too."""
    if cpu not in before or cpu not in after:
        return None
    d = [(a - b) / os.sysconf("SC_CLK_TCK") for a, b in zip(after[cpu], before[cpu])]
    user, nice, system, idle, iowait, irq, softirq, steal = d
    return (max(user + nice + system + irq + softirq - ours_s, 0) / wall_s, (idle + iowait) / wall_s,
            (irq + softirq) / wall_s, steal / wall_s)


def measure(server_key, client, cond, port, server_pid, args, tools, cpus, tmp, at=()):
    """One measured run: a dict of its figures, or of its failure. AT goes to run_bounded."""
    json_path = os.path.join(tmp, "run.json")
    if os.path.exists(json_path):
        os.unlink(json_path)
    warmup = 0.0 if client == "floor" else args.warmup
    cmd = client_command(client, port, cond, args, tools, args.duration, warmup, json_path, server_pid)
    before, stat_before, t0 = proc_cpu_s(server_pid), cpu_stat(), time.monotonic()
    rc, out, err, wait4_cpu, seen, timed_out = run_bounded(
        cmd, args.duration + warmup + 30, cpus["client"], (server_pid, cpus["server"]), at)
    server_whole = proc_cpu_s(server_pid) - before
    wall, stat_after = time.monotonic() - t0, cpu_stat()
    row = {"status": "ok", "client_cpu_wait4_s": wait4_cpu, "server_cpu_whole_s": server_whole, "wall_s": wall, **seen}
    for side, ours in (("server", server_whole), ("client", wait4_cpu)):
        if cpus[side] and len(cpus[side]) == 1:
            row[f"{side}_cpu_shares"] = cpu_shares(stat_before, stat_after, next(iter(cpus[side])), ours, wall)
    if rc != 0 or timed_out:
        row["status"] = f"timed out after {args.duration + warmup + 30:g} s" if timed_out else f"exit {rc}"
        row["why"] = (err or out).strip()[-600:]
        return row
    try:
        requests, rps, p99, client_cpu, server_cpu = read_report(client, out, json_path, args.duration)
    except (ValueError, OSError, KeyError) as e:
        return {**row, "status": "unreadable", "why": str(e)[-600:]}
    if client == "floor":
        client_cpu, server_cpu = wait4_cpu, server_whole
    row.update(requests=requests, rps=rps, p99_us=p99, client_cpu_s=client_cpu, server_cpu_s=server_cpu,
               client_us=client_cpu * 1e6 / requests if requests else None,
               server_us=server_cpu * 1e6 / requests if requests and server_cpu is not None else None)
    return row


class ServerCounter:
    """Counts the system calls of a running server from before a client starts until after it
    ends: `perf stat -p PID`, started with its events disabled and enabled through its control
    fifo (perf acknowledges), or `strace -c -f -p PID` once it says it attached."""

    def __init__(self, tool, pid, out_path, events, cpus, tmp):
        self.tool, self.out_path, self.proc, self.ctl, self.ack = tool, out_path, None, None, None
        self.log = tempfile.TemporaryFile()
        if tool == "perf":
            ctl, ack = os.path.join(tmp, "perf-ctl"), os.path.join(tmp, "perf-ack")
            for fifo in (ctl, ack):
                if os.path.exists(fifo):
                    os.unlink(fifo)
                os.mkfifo(fifo)
            # The ack's read end first, nonblocking, so that perf's open of its write end finds a reader.
            self.ack = os.open(ack, os.O_RDONLY | os.O_NONBLOCK)
            cmd = ["perf", "stat", "-x", ",", "-o", out_path, "-e", events, "-D", "-1",
                   "--control", f"fifo:{ctl},{ack}", "-p", str(pid)]
        else:
            cmd = ["strace", "-f", "-c", "-U", "name,calls,errors", "-o", out_path, "-p", str(pid)]
        self.proc = subprocess.Popen(cmd, stdout=self.log,
                                     stderr=subprocess.STDOUT if tool == "perf" else subprocess.PIPE,
                                     preexec_fn=client_affinity(cpus))
        try:
            if tool == "perf":
                self.ctl = self._open_writer(ctl)
                self._command("enable")
            else:
                self._wait_attached()
        except BaseException:
            self.close()
            raise

    def _fail(self, what):
        self.log.seek(0)
        raise SystemExit(f"{NAME}: counting the server: {what}\n{self.log.read().decode(errors='replace')[-1000:]}")

    def _open_writer(self, path):
        deadline = time.monotonic() + START_LIMIT_S
        while True:
            try:
                return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._fail("perf did not open its control fifo")
            time.sleep(0.01)

    def _command(self, word):
        os.write(self.ctl, word.encode() + b"\n")
        ready, _, _ = select.select([self.ack], [], [], START_LIMIT_S)
        if not ready or not os.read(self.ack, 64).startswith(b"ack"):
            self._fail(f"perf did not acknowledge `{word}` within {START_LIMIT_S} s")

    def _wait_attached(self):
        deadline = time.monotonic() + START_LIMIT_S
        seen = b""
        while b"attached" not in seen:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stderr], [], [], max(left, 0))
            chunk = os.read(self.proc.stderr.fileno(), 4096) if ready else b""
            if not chunk:
                self._fail(f"strace did not attach within {START_LIMIT_S} s: {seen.decode(errors='replace')}")
            seen += chunk

    def finish(self):
        """Stops counting; perf's or strace's table is then in out_path."""
        if self.tool == "perf":
            self._command("disable")
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=STOP_LIMIT_S)
        except subprocess.TimeoutExpired:
            self._fail("the counter did not exit on SIGINT")
        self.close()

    def close(self):
        stop(self.proc, self.tool)
        for fd in (self.ctl, self.ack):
            if fd is not None:
                os.close(fd)
        self.ctl = self.ack = None
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
        self.log.close()


def parse_perf(path):
    """{syscall: calls, "(all)": total} from `perf stat -x,` output."""
    return perf_stat_counts(path)


def parse_strace(path):
    """{syscall: calls, "(all)": total} from an `strace -c -U name,calls,errors` table."""
    calls = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                calls["(all)" if parts[0] == "total" else parts[0]] = int(parts[1])
    if "(all)" not in calls:
        calls["(all)"] = sum(calls.values())
    return calls


def count(server_key, client, cond, port, server_pid, args, tools, cpus, tmp, counts_log):
    """One counted run: the client under perf stat (or strace), the server counted beside it.
    Returns a dict with the requests and {side: {syscall: calls}}, or a failure."""
    json_path = os.path.join(tmp, "count.json")
    if os.path.exists(json_path):
        os.unlink(json_path)
    client_out, server_out = os.path.join(tmp, "client.counts"), os.path.join(tmp, "server.counts")
    for p in (client_out, server_out):
        if os.path.exists(p):
            os.unlink(p)
    cmd = client_command(client, port, cond, args, tools, args.count_duration, 0.0, json_path)
    if args.tool == "perf":
        cmd = ["perf", "stat", "-x", ",", "-o", client_out, "-e", tools["events"], "--", *cmd]
    else:
        cmd = ["strace", "-f", "-c", "-U", "name,calls,errors", "-o", client_out, "--", *cmd]
    counter = ServerCounter(args.tool, server_pid, server_out, tools["events"], cpus["server"], tmp)
    try:
        rc, out, err, _, _, timed_out = run_bounded(cmd, args.count_duration + 60, cpus["client"],
                                                    (server_pid, cpus["server"]))
        counter.finish()
    finally:
        counter.close()
    title = f"== {server_key} x {client}, {cond_label(cond)}"
    for side, path in (("client", client_out), ("server", server_out)):
        text = open(path).read() if os.path.exists(path) else "(no output)\n"
        counts_log.append(f"{title}: {side} ({args.tool}) ==\n{text.rstrip()}\n")
    if rc != 0 or timed_out:
        return {"status": "timed out" if timed_out else f"exit {rc}", "why": (err or out).strip()[-600:]}
    try:
        requests = read_report(client, out, json_path, args.count_duration)[0]
        parse = parse_perf if args.tool == "perf" else parse_strace
        calls = {"client": parse(client_out), "server": parse(server_out)}
    except (ValueError, OSError, KeyError) as e:
        return {"status": "unreadable", "why": str(e)[-600:]}
    return {"status": "ok", "requests": requests, "calls": calls}


# ---- Where the client's CPU goes: a sampled profile of CPU 1 while each client runs ----

PROFILE_COND = (16, 1)          # 16 connections, one request in flight each, against the floor server
PROFILE_HZ = 4999
PROFILE_MARGIN_S = 0.25         # samples are kept from this long into the measured window to as long before its end
PERF_START_S = 0.5              # perf record is started this long before the measured window (it takes a while)
# (key, column heading), in the table's order.
CATEGORIES = (("user", "client user space"), ("syscall", "syscall entry/exit, fd, VFS"), ("epoll", "epoll"),
              ("uring", "io_uring"), ("net", "TCP/IP, sockets"), ("sched", "scheduler, wake-ups"),
              ("idle", "idle"), ("tasks", "other tasks"), ("other", "other"))
KERNEL_IP = 0xffff800000000000  # x86-64: kernel addresses are above this, user space's below
# Kernel symbols, tried in this order; the first match decides. Anything unmatched is "other".
RULES = [(cat, re.compile(rx)) for cat, rx in (
    ("idle", r"pv_native_safe_halt|native_safe_halt|default_idle.*|.*cpuidle.*|do_idle|poll_idle|acpi_.*idle.*|"
             r"acpi_safe_halt|intel_idle.*|mwait_idle.*|arch_cpu_idle.*|cpu_startup_entry|start_secondary|"
             r"default_enter_idle|tick_nohz_idle_.*|cpu_idle_poll.*|arch_cpu_idle_enter|common_startup_64|"
             r"haltpoll_.*|.*_haltpoll.*"),
    ("epoll", r"ep_.*|__ep_.*|do_epoll_.*|__x64_sys_epoll.*|__do_sys_epoll.*|__se_sys_epoll.*|epoll_.*|"
              r"ep_poll_callback|select_estimate_accuracy"),
    ("uring", r"(?!io_schedule)(io_.*|__io_.*|io_uring.*|__do_sys_io_uring.*|__x64_sys_io_uring.*|tctx_.*|"
              r"__se_sys_io_uring.*|task_work_run|task_work_add)"),
    ("sched", r"schedule|__schedule|schedule_.*|__schedule_.*|preempt_schedule.*|try_to_wake_up|.*wake_up.*|"
              r"wake_.*|.*_wake_function|autoremove_wake_function|pick_next.*|__pick_next.*|pick_task.*|"
              r"put_prev.*|set_next.*|enqueue_(?!to_backlog).*|dequeue_.*|finish_task_switch.*|"
              r"prepare_task_switch|context_switch|__switch_to.*|switch_mm.*|switch_fpu.*|update_curr.*|"
              r"update_load_avg|__update_load_avg.*|update_cfs_.*|update_rq_clock.*|reweight_.*|psi_.*|ttwu_.*|"
              r"select_task_rq.*|select_idle_.*|check_preempt.*|wakeup_preempt.*|resched_curr.*|sched_.*|"
              r"__sched_.*|raw_spin_rq_.*|_raw_spin_rq_.*|newidle_balance|sched_balance_.*|load_balance|"
              r"update_blocked_averages|cpuacct_.*|account_.*|__account_.*|cgroup_rstat_.*|"
              r"native_sched_clock|sched_clock.*|.*flush_smp_call_function.*|.*call_function_single.*|"
              r"set_task_cpu|migrate_task_rq.*|available_idle_cpu|avg_vruntime.*|place_entity|"
              r"__calc_delta.*|update_min_vruntime|vruntime_eligible|pick_eevdf|__enqueue_entity|"
              r"__dequeue_entity|hrtick_update|task_tick_.*|__wrgsbase_inactive|__rdgsbase_inactive|"
              r"sock_def_readable|sk_stream_write_space|sock_def_wakeup|mm_cid_.*|__traceiter_sched_.*|"
              r"add_wait_queue.*|remove_wait_queue|prepare_to_wait.*|finish_wait|do_nanosleep|hrtimer_nanosleep|"
              r"common_nsleep.*"),
    ("net", r"tcp_.*|__tcp_.*|tcp4_.*|bbr_.*|bictcp_.*|cubictcp_.*|ip_.*|__ip_.*|ipv4_.*|ip4_.*|inet_.*|"
            r"__inet_.*|sock_.*|__sock_.*|sk_.*|__sk_.*|skb_.*|__skb_.*|___skb_.*|kfree_skb.*|__kfree_skb.*|"
            r"consume_skb|__consume_stateless_skb|napi_.*|__napi_.*|alloc_skb.*|__alloc_skb.*|kmalloc_reserve|"
            r"__copy_skb_header|__dev_queue_xmit|dev_.*|__dev_.*|netdev_.*|netif_.*|__netif_.*|"
            r"process_backlog|net_rx_action|enqueue_to_backlog|loopback_xmit|eth_type_trans|validate_xmit_.*|"
            r"raw_local_deliver|raw_v4_.*|nf_.*|__nf_.*|dst_.*|__sk_dst_.*|rt_.*|fib_.*|"
            r"__sys_sendto|__sys_recvfrom|__sys_sendmsg|__sys_recvmsg|___sys_.*|__sys_send.*|__sys_recv.*|"
            r"move_addr_to_.*|security_socket.*|security_sock_.*|security_sk_.*|hook_socket_.*|"
            r"xfrm_.*|__xfrm_.*|__build_skb.*|build_skb.*|"
            r"bpf_lsm_socket.*|apparmor_socket.*|selinux_socket.*|__cgroup_bpf_run_filter_skb|"
            r"__sk_mem_.*|sk_mem_.*|mem_cgroup_charge_skmem|mem_cgroup_uncharge_skmem|page_frag_.*|"
            r"lock_sock.*|release_sock|__release_sock|__lock_sock.*|csum_.*|__csum_.*|"
            r"_copy_to_iter|_copy_from_iter|copy_to_user.*|copy_from_user.*|_copy_to_user|_copy_from_user|"
            r"copy_user_.*|rep_movs_alternative|__check_object_size|check_heap_object|check_stack_object|"
            r"__virt_addr_valid|is_vmalloc_addr|simple_copy_to_iter|import_ubuf|import_single_range|"
            r"__import_iovec|iov_iter_.*|copy_page_to_iter|__get_user_.*|__put_user_.*|"
            r"bpf_skops_.*|tcp_bpf_.*|__inet_lookup_.*|neigh_.*|__neigh_.*|qdisc_.*|__qdisc_.*|"
            r"sch_direct_xmit|pfifo_fast_.*|noqueue_.*|lock_timer_base|mod_timer|__mod_timer|sk_reset_timer"),
    ("syscall", r"entry_SYSCALL_64.*|do_syscall_64|x64_sys_call|syscall_exit_to_user_mode.*|"
                r"syscall_enter_from_user_mode.*|exit_to_user_mode.*|.*return_to_user.*|"
                r"arch_exit_to_user_mode.*|syscall_trace_enter|syscall_exit_work|__x64_sys_.*|__do_sys_.*|"
                r"__se_sys_.*|ksys_.*|vfs_read|vfs_write|new_sync_read|new_sync_write|rw_verify_area|"
                r"security_file_permission|.*file_permission|"
                r"fpregs_.*|restore_fpregs_from_fpstate|rseq_.*|__rseq_.*|clear_bhb_loop|entry_untrain_ret|"
                r"audit_.*|__audit_.*|irqentry_exit_to_user_mode|mem_cgroup_handle_over_high|"
                r"blkcg_maybe_throttle_current|__x86_indirect_thunk_.*|lockdep_sys_exit"),
)]
# Generic helpers: a sample in one of these is charged to the first caller in its kernel call
# chain that is not a helper. Chiefly the ends of irq-off regions (_raw_spin_unlock_irqrestore and
# kin): a cpu-clock sample taken while interrupts are off waits for them to come back on, so
# the work of the whole region is sampled where it ends, in whichever function took the lock.
HELPERS = re.compile(
    r"_raw_spin_.*|_raw_read_.*|_raw_write_.*|raw_spin_.*|.*queued_spin_.*|__raw_callee_save_.*|"
    r"queued_(read|write)_.*|__pv_queued.*|pv_.*spin.*|__rcu_read_(un)?lock|rcu_read_unlock_strict|read_tsc|"
    r"ktime_get.*|__local_bh_enable_ip|local_bh_enable|_local_bh_enable|__local_bh_disable_ip|"
    r"preempt_count_(add|sub)|__cond_resched|__might_.*|mutex_.*|__mutex_.*|memcpy.*|__memcpy.*|memset.*|"
    r"__memset.*|memmove.*|__memmove.*|__list_.*_valid.*|kmem_cache_.*|kmalloc.*|__kmalloc.*|kfree(?!_skb).*|"
    r"__kfree(?!_skb).*|__slab_free|___slab_alloc|__slab_alloc.*|slab_.*|__put_partials|get_partial_node|"
    r"put_cpu_partial|allocate_slab|__x86_return_thunk|srso_.*|retbleed_.*|__x86_indirect_thunk_.*|"
    r"refill_obj_stock|obj_cgroup_.*|__memcg_slab_.*|mod_objcg_state|__mod_memcg.*|__rcu_read_.*|"
    r"handle_softirqs|__do_softirq|do_softirq.*|irq_exit_rcu|__irq_exit_rcu|local_clock.*|"
    r"__fentry__|kfence_.*|should_failslab.*|stack_trace_.*|_find_next_bit|__bitmap_.*|"
    r"percpu_counter_add_batch|__percpu_counter_.*|__this_cpu_preempt_check|llist_.*|rb_.*|__rb_.*|"
    r"_find_.*_bit|__usecs_to_jiffies|.*timespec64.*|jiffies_to_.*|.*_to_jiffies|hrtimer_.*|__hrtimer_.*|"
    r"get_page_from_freelist|.*rmqueue.*|__alloc_pages.*|alloc_pages.*|__alloc_frozen_pages.*|"
    r".*free_frozen_page.*|free_unref_.*|__free_pages.*|__get_pfnblock_flags_mask.*|.*mod_node_page_state|"
    r"__mem_cgroup_uncharge.*|__mod_lruvec_.*|mod_lruvec_.*")
# A file descriptor's lookup (and its release) is the system call's, or io_uring's where it made
# the lookup for a request: one rule for read(2), sendto(2) and a ring alike.
FD_LOOKUP = re.compile(r"fdget.*|__fdget.*|fget.*|__fget.*|fput.*|__fput.*|fdput.*|sockfd_lookup_light")

def classify_symbol(sym):
    """The category of kernel symbol SYM by RULES, or None."""
    for cat, rx in RULES:
        if rx.fullmatch(sym):
            return cat
    return None


def classify_sample(pid, frames, client_pids, kthreads_ok):
    """(category, the symbol that decided it) of one sample: PID is the sampled task's process
    id, FRAMES its [(ip, symbol)] from the sampled ip up the kernel call chain (just the ip
    without call chains). CLIENT_PIDS: the client's process (its threads share its pid).
    KTHREADS_OK: pids of tasks whose kernel work is the exchange's (pid 0, idle and interrupts
    taken in it; ksoftirqd, the network's deferred softirqs)."""
    ip, sym = frames[0]
    if ip < KERNEL_IP:
        return ("user" if pid in client_pids else "tasks"), sym
    if pid not in client_pids and pid not in kthreads_ok:
        return "tasks", sym
    for i, (ip, sym) in enumerate(frames):
        if ip < KERNEL_IP:
            break               # the chain has left the kernel: no caller there decides
        if HELPERS.fullmatch(sym):
            continue
        if FD_LOOKUP.fullmatch(sym):
            uring = any(ip >= KERNEL_IP and classify_symbol(sym) == "uring" for ip, sym in frames[i + 1:])
            return ("uring" if uring else "syscall" if pid in client_pids else "other"), sym
        cat = classify_symbol(sym) or "other"
        if cat == "syscall" and pid not in client_pids:
            cat = "other"
        return cat, sym
    return classify_symbol(frames[0][1]) or "other", frames[0][1]


SAMPLE_HEAD = re.compile(r"^\s*(?P<comm>.*?)\s+(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]\s+(?P<time>\d+\.\d+):\s*(?P<rest>.*)$")
FRAME = re.compile(r"^\s*(?P<ip>[0-9a-f]+)\s+(?P<sym>.*?)\s+\((?P<dso>[^()]*)\)\s*$")


def perf_samples(text):
    """[(comm, pid, cpu, time, [(ip, symbol, dso), ...])] from `perf script -F
    comm,pid,cpu,time,ip,sym,dso` output, with or without call chains."""
    out, cur = [], None
    for line in text.splitlines():
        head = SAMPLE_HEAD.match(line) if line[:1] not in ("\t", "") else None
        if head:
            cur = (head["comm"], int(head["pid"]), int(head["cpu"]), float(head["time"]), [])
            out.append(cur)
            line = head["rest"]
            if not line.strip():
                continue
        if cur is None or not line.strip():
            continue
        m = FRAME.match(line)
        if m:
            sym = m["sym"]
            if sym.startswith("[unknown]") or not sym:
                sym = f"[unknown in {os.path.basename(m['dso'])}]"
            cur[4].append((int(m["ip"], 16), sym, m["dso"]))
    return [s for s in out if s[4]]


def profile_client(client, port, server_pid, args, tools, cpus, tmp):
    """Runs CLIENT against the floor server (PORT) in PROFILE_COND while perf records CPU 1 (the
    client's). perf starts PERF_START_S before the client's measured window and stops when the
    client exits; its clock is CLOCK_MONOTONIC, Python's, so that summarize_profile keeps just
    the samples inside the window, PROFILE_MARGIN_S in from either edge. Returns (the run's row,
    perf script's text, facts about the recording) or raises ValueError saying why there is none."""
    cpu = next(iter(cpus["client"]))
    data = os.path.join(tmp, f"profile-{client}.data")
    warmup = 0.0 if client == "floor" else args.warmup
    delay = max(warmup - PERF_START_S, 0.0)
    holder = {}
    log = tempfile.TemporaryFile()

    def start(pid):
        holder["pid"], holder["started"] = pid, time.monotonic()
        holder["perf"] = subprocess.Popen(
            ["perf", "record", "-B", "-N", "-k", "CLOCK_MONOTONIC", "-e", "cpu-clock", "-F", str(PROFILE_HZ),
             "-C", str(cpu), "-g", "-o", data, "--", "sleep", f"{args.duration + warmup - delay + 30:g}"],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=client_affinity(cpus["server"]))
    try:
        row = measure("floor", client, PROFILE_COND, port, server_pid, args, tools, cpus, tmp, at=[(delay, start)])
        ended = time.monotonic()
        perf = holder.get("perf")
        if perf is None:
            raise ValueError(f"the client exited before the recording was to begin ({row['status']})")
        if perf.poll() is None:
            perf.send_signal(signal.SIGINT)     # perf record stops, writes its file and ends the sleep
        perf.wait(timeout=STOP_LIMIT_S + 20)
        log.seek(0)
        said = log.read().decode(errors="replace").strip()
        if row["status"] != "ok":
            raise ValueError(f"the profiled run failed: {row['status']}: {row.get('why', '')[-300:]}")
        if not os.path.exists(data):
            raise ValueError(f"perf record exited {perf.returncode} and wrote nothing: {said[-400:]}")
        done = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,cpu,time,ip,sym,dso"],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0 or not done.stdout.strip():
            raise ValueError(f"perf script exited {done.returncode}: {done.stderr.strip()[-400:]}")
        # The client started within milliseconds before `start` ran, DELAY seconds in.
        began = holder["started"] - delay + warmup
        window = (began + PROFILE_MARGIN_S, min(began + args.duration - PROFILE_MARGIN_S, ended))
        return row, done.stdout, {"pid": holder["pid"], "cpu": cpu, "window": window, "perf_said": said}
    finally:
        stop(holder.get("perf"), "perf record")
        log.close()
        if os.path.exists(data):
            os.unlink(data)


def summarize_profile(client, row, text, facts, path):
    """Classifies every sample on the client's CPU, writes PATH (the top symbols, so the rules
    can be checked) and returns {category: samples} with the figures profile.tsv and the table
    need."""
    lo, hi = facts["window"]
    recorded = [s for s in perf_samples(text) if s[2] == facts["cpu"]]
    samples = [s for s in recorded if lo <= s[3] <= hi]
    if not samples:
        raise ValueError(f"perf recorded no samples on the client's CPU inside its measured window "
                         f"({len(recorded)} outside it)")
    pids = {facts["pid"]}
    kthreads = {0} | {s[1] for s in samples if re.fullmatch(r"ksoftirqd/\d+", s[0])}
    counts = {cat: 0 for cat, _ in CATEGORIES}
    leaves, deciders, resolved, by_task = {}, {}, {}, {}
    for comm, pid, _, _, frames in samples:
        cat, decider = classify_sample(pid, [(ip, sym) for ip, sym, _ in frames], pids, kthreads)
        counts[cat] += 1
        leaf = (frames[0][1], "[k]" if frames[0][0] >= KERNEL_IP else "[.]")
        leaves.setdefault(leaf, {}).setdefault(cat, 0)
        leaves[leaf][cat] += 1
        deciders.setdefault((decider, cat), 0)
        deciders[(decider, cat)] += 1
        if decider != frames[0][1]:
            key = (frames[0][1], decider, cat)
            resolved[key] = resolved.get(key, 0) + 1
        task = "idle (pid 0)" if pid == 0 else f"{comm} ({'the client' if pid in pids else pid})"
        by_task[task] = by_task.get(task, 0) + 1
    n = len(samples)
    span = samples[-1][3] - samples[0][3] if len(samples) > 1 else 0.0
    rps = row["rps"]
    if not rps:
        raise ValueError("the profiled run completed no requests")
    out = {"client": client, "samples": n, "span_s": span, "rps": rps, "counts": counts,
           "share": {c: counts[c] / n for c in counts}, "us": {c: counts[c] / n * 1e6 / rps for c in counts},
           "client_us": row.get("client_us"), "recorded": len(recorded)}
    out["busy_us"] = sum(v for c, v in out["us"].items() if c != "idle")
    kernel = [f for *_, f in samples if f[0][0] >= KERNEL_IP]
    out["unknown_kernel"] = sum(f[0][1].startswith("[unknown") for f in kernel) / len(kernel) if kernel else 0.0

    def pct(k):
        return f"{100 * k / n:5.1f}%"
    lines = [f"Profile of {CLIENTS[client]} on CPU {facts['cpu']}: {cond_label(PROFILE_COND)} connections against "
             f"floor (C, epoll); perf record -e cpu-clock -F {PROFILE_HZ} -C {facts['cpu']} -g -k CLOCK_MONOTONIC, "
             f"the samples from {PROFILE_MARGIN_S:g} s into the client's measured window to {PROFILE_MARGIN_S:g} s "
             f"before its end kept ({hi - lo:.2f} s; {len(recorded) - n} recorded outside it left out).",
             f"{n} samples over {span:.2f} s from the first to the last ({n / span if span else 0:.0f} a second); "
             f"the run: {rps:.0f} req/s, client CPU {fmt(row.get('client_us'), 2)} µs/req (getrusage over the "
             "measured window)."
             + (" Its whole run (floorclient's rps and CPU are over it) includes perf's start." if client == "floor"
                else ""),
             "", "Categories (share of CPU's samples, µs per request = share x 1e6 / req/s):"]
    lines += [f"  {label:28} {counts[c]:7d} {pct(counts[c])} {out['us'][c]:8.3f} µs" for c, label in CATEGORIES]
    lines += ["", "Top 15 symbols where the samples landed ([k] kernel, [.] user space), with the categories "
              "their samples were given:"]
    top = sorted(leaves.items(), key=lambda kv: -sum(kv[1].values()))[:15]
    for (sym, mark), cats in top:
        total = sum(cats.values())
        given = ", ".join(f"{c} {v}" for c, v in sorted(cats.items(), key=lambda kv: -kv[1]))
        lines.append(f"  {total:7d} {pct(total)} {mark} {sym}  -> {given}")
    lines += ["", "Helpers resolved through the call chain (top 15: helper <- deciding caller -> category):"]
    for (leaf, decider, cat), k in sorted(resolved.items(), key=lambda kv: -kv[1])[:15]:
        lines.append(f"  {k:7d} {pct(k)} {leaf} <- {decider}  -> {cat}")
    lines += ["", "The symbols that decided each category (up to 10 each; a helper's sample is decided by its first "
              "caller that is not a helper):"]
    for cat, label in CATEGORIES:
        mine = sorted(((sym, k) for (sym, c), k in deciders.items() if c == cat), key=lambda kv: -kv[1])
        if mine:
            lines.append(f"  {label}: {counts[cat]} samples")
            lines += [f"    {k:7d} {pct(k)} {sym}" for sym, k in mine[:10]]
    lines += ["", "Samples by task:"] + [f"  {k:7d} {pct(k)} {t}" for t, k in
                                         sorted(by_task.items(), key=lambda kv: -kv[1])]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return out


FILE_NAMES = {"mio": "loadgen-mio", "uring": "loadgen-uring", "floor": "floorclient"}


def perf_can_sample(cpu, tmp):
    """None if `perf record -e cpu-clock -C CPU` works here, else why not."""
    if not shutil.which("perf"):
        return "no perf (Debian: apt-get install linux-perf)"
    probe = os.path.join(tmp, "probe.data")
    try:
        done = subprocess.run(["perf", "record", "-e", "cpu-clock", "-F", str(PROFILE_HZ), "-C", str(cpu),
                               "-g", "-o", probe, "--", "sleep", "0.05"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "perf record did not finish a 0.05 s probe within 30 s"
    finally:
        if os.path.exists(probe):
            os.unlink(probe)
    if done.returncode != 0:
        return f"perf record -e cpu-clock -C {cpu} failed: {(done.stderr or done.stdout).strip()[-300:]}"
    return None


def run_profiles(args, clients, tools, cpus, tmp, out):
    """One profiled run per client against a floor server of its own. Returns ({client: summary},
    [notes])."""
    if not cpus["client"]:
        return {}, ["No profile: it needs the client pinned on a CPU of its own (2 CPUs or more)."]
    why = perf_can_sample(next(iter(cpus["client"])), tmp)
    if why:
        return {}, [f"No profile of the clients: {why.rstrip('.')}."]
    if args.duration < 2 * PROFILE_MARGIN_S + 0.2:
        return {}, [f"No profile: --duration {args.duration:g} s leaves no time inside the measured window."]
    results, notes, server = {}, [], None
    try:
        server, port = start_server("floor", args.bin_dir, tools["floor"], cpus["server"])
        for client in clients:
            print(f"profile {cond_label(PROFILE_COND)} {SERVERS['floor'][0]} x {CLIENTS[client]}", file=sys.stderr)
            try:
                row, text, facts = profile_client(client, port, server.pid, args, tools, cpus, tmp)
                p = results[client] = summarize_profile(client, row, text, facts,
                                                        os.path.join(out, f"profile-{FILE_NAMES[client]}.txt"))
                print(f"profile of {CLIENTS[client]}: {p['samples']} samples, " + ", ".join(
                    f"{label} {100 * p['share'][k]:.0f}%" for k, label in CATEGORIES if p["share"][k] >= 0.005),
                    file=sys.stderr)
            except (ValueError, OSError, subprocess.TimeoutExpired) as e:
                notes.append(f"No profile of {CLIENTS[client]}: {str(e).strip()[-400:]}")
                print(f"profile of {CLIENTS[client]}: {e}", file=sys.stderr)
    finally:
        stop(server, SERVERS["floor"][0])
    return results, notes


SYSCALL_COST_C = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ns per syscall(SYS_getppid): the least a system call costs, entry and exit and next to no work. */
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 5000000;
    struct timespec a, b;
    for (long i = 0; i < 10000; i++)
        syscall(SYS_getppid);
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.2f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}
"""
SYSCALL_CALLS, SYSCALL_RUNS = 5_000_000, 3


def syscall_cost(cpus, tmp):
    """({"ns": median, "runs": [ns, ...]}, None) or (None, why not): SYSCALL_RUNS runs of a C loop
    of SYSCALL_CALLS getppid system calls, pinned to the client's CPU."""
    src, exe = os.path.join(tmp, "syscall-cost.c"), os.path.join(tmp, "syscall-cost")
    with open(src, "w") as f:
        f.write(SYSCALL_COST_C)
    cc = os.environ.get("CC", "cc")
    try:
        done = subprocess.run([cc, "-O2", "-o", exe, src], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{cc} failed: {e}"
    if done.returncode != 0:
        return None, f"{cc} failed: {done.stderr.strip()[-300:]}"
    runs = []
    for _ in range(SYSCALL_RUNS):
        try:
            done = subprocess.run([exe, str(SYSCALL_CALLS)], capture_output=True, text=True, timeout=60,
                                  preexec_fn=client_affinity(cpus["client"]))
            runs.append(float(done.stdout.strip()))
        except (ValueError, OSError, subprocess.TimeoutExpired) as e:
            return None, f"the getppid loop failed: {e}"
    print(f"one system call: {statistics.median(runs):.1f} ns (runs {', '.join(f'{r:.1f}' for r in runs)})",
          file=sys.stderr)
    return {"ns": statistics.median(runs), "runs": runs,
            "where": f"pinned to CPU {next(iter(cpus['client']))}" if cpus["client"] else "unpinned"}, None


def profile_tsv(profiles):
    return [f"{c}\t{p['rps']:.1f}\t{p['samples']}\t{p['span_s']:.3f}\t{cat}\t{p['counts'][cat]}\t"
            f"{p['share'][cat]:.4f}\t{p['us'][cat]:.4f}\t{opt(p['client_us'], '.4f')}"
            for c, p in profiles.items() for cat, _ in CATEGORIES]


PROFILE_TSV_HEADER = ("client\trps\tsamples\tspan_s\tcategory\tcategory_samples\tshare\tus_per_req\t"
                      "client_cpu_us_getrusage")


def profile_section(args, profiles, notes):
    """table.md's "Where the client's CPU goes"."""
    lines = ["", "## Where the client's CPU goes", ""]
    if not profiles:
        return lines + [f"- {n}" for n in notes] if notes else lines + ["Not profiled (--no-profile)."]
    lines += [f"Each client once, {cond_label(PROFILE_COND)} connections with one request in flight each, against "
              f"floor (C, epoll), in a run of its own after the matrix: `perf record -e cpu-clock -F {PROFILE_HZ} "
              "-C 1 -g -k CLOCK_MONOTONIC` sampled CPU 1, the client's (perf itself ran on CPU 0, the server's), "
              f"and the samples from {PROFILE_MARGIN_S:g} s into the client's measured window to "
              f"{PROFILE_MARGIN_S:g} s before its end were kept (loadgen's window follows its {args.warmup:g} s "
              "warmup; floorclient's is its whole run). Each sample goes to one category by the kernel symbol it "
              "landed in (RULES in the script; profile-CLIENT.txt lists the top symbols and what they were "
              "given), or to the client's user space if it landed there; a generic helper (a lock's release, an "
              "allocator, a clock read; chiefly the end of an irq-off region, where a cpu-clock sample taken inside "
              "it lands) goes by its first caller in the kernel call chain that is not one. Copies to and from user "
              "memory count as TCP/IP, sockets; a file descriptor's lookup as syscall entry/exit, fd, VFS, or as "
              "io_uring where the ring made it; call-function IPIs (remote wake-ups, and the kick that frees an skb "
              "on the CPU that allocated it) as scheduler, wake-ups. Other tasks: any sample of a task that is "
              "neither the client nor idle nor ksoftirqd (a build beside the run). Share: of CPU 1's samples; "
              "µs/req: share x CPU 1's seconds in the window / requests in them, that is share x 1e6 / the run's "
              "req/s (loadgen's over its measured window, floorclient's over its run). Cells: share · µs/req.", ""]
    cols = [label for _, label in CATEGORIES]
    lines += ["| client | req/s | samples | " + " | ".join(cols) + " | busy µs/req (not idle) | "
              "client CPU µs/req (getrusage) |", "|---|---:|---:|" + "---:|" * len(cols) + "---:|---:|"]
    for c, p in profiles.items():
        lines.append(f"| {CLIENTS[c]} | {fmt(p['rps'])} | {p['samples']} | "
                     + " | ".join(f"{100 * p['share'][k]:.1f}% · {p['us'][k]:.2f}" for k, _ in CATEGORIES)
                     + f" | {p['busy_us']:.2f} | {fmt(p['client_us'], 2)} |")
    blind = [f"{CLIENTS[c]} {100 * p['unknown_kernel']:.0f}%" for c, p in profiles.items() if p["unknown_kernel"] > 0.2]
    if blind:
        notes = notes + [f"Kernel samples perf could not name: {', '.join(blind)} (kernel.kptr_restrict? run as "
                         "root): the categories are then mostly other."]
    lines += [""] + [f"- {n}" for n in notes] if notes else []
    return lines


def syscall_section(args, clients, runs, counted, cost, why, profiles):
    """table.md's "The cost of a system call", with what the calls loadgen-uring saves can be worth."""
    lines = ["", "## The cost of a system call", ""]
    if cost is None:
        return lines + [why or "Not measured (--no-syscall-cost)."]
    lines.append(f"One system call costs {cost['ns']:.0f} ns on this machine: `syscall(SYS_getppid)` "
                 f"{fmt(SYSCALL_CALLS)} times in a C loop {cost['where']}, timed with clock_gettime(CLOCK_MONOTONIC), "
                 f"median of {len(cost['runs'])} runs ({', '.join(f'{r:.1f}' for r in cost['runs'])} ns): the entry "
                 "and exit alone, caches warm. A call the ring makes unnecessary saves that crossing, not the work "
                 "the call did (the ring sends and receives too), so the calls saved x this cost bound what crossing "
                 "into the kernel less often is worth, as long as a crossing costs in the client what it costs in "
                 "the loop.")
    cond = PROFILE_COND
    if args.count_duration <= 0 or cond not in args.conditions or "floor" not in args.servers:
        return lines + ["", "No bound per request: it needs the counted runs (--count-duration > 0) of the "
                        f"{cond_label(cond)}-connection condition against the floor server."]
    if "uring" not in clients:
        return lines + ["", "No bound per request: loadgen-uring did not run."]

    def calls(c):
        return per_request(cell(counted, cond, "floor", c, args.repeat), "client", "all")

    def cpu(c):
        return figure(cell(runs, cond, "floor", c, args.repeat), "client_us")
    lines.append("")
    u_calls, u_cpu = calls("uring"), cpu("uring")
    for other in ("floor", "mio"):
        if other not in clients:
            continue
        o_calls, o_cpu = calls(other), cpu(other)
        if None in (u_calls, o_calls, o_cpu):
            lines.append(f"- loadgen-uring against {CLIENTS[other]}: not measured.")
            continue
        saved = o_calls - u_calls
        bound = saved * cost["ns"] / 1000
        name = FILE_NAMES[other]
        lines.append(f"- {cond_label(cond)} connections, floor server: loadgen-uring makes {u_calls:.2f} system calls "
                     f"per request, {name} {o_calls:.2f}; {saved:.2f} saved per request x {cost['ns']:.0f} ns "
                     f"= at most {bound:.2f} µs of {name}'s {o_cpu:.2f} µs of client CPU per request "
                     f"({100 * bound / o_cpu:.0f}%; loadgen-uring's own: {fmt(u_cpu, 2)} µs)."
                     if saved > 0 else
                     f"- {cond_label(cond)} connections, floor server: loadgen-uring makes {u_calls:.2f} system calls "
                     f"per request, {name} {o_calls:.2f}: it saves none.")
    if profiles:
        lines.append("- Beside it, the profile's syscall entry/exit, fd, VFS (the crossing, a descriptor's lookup and "
                     "read(2)/write(2)'s dispatch), µs per request: " + ", ".join(
                         f"{FILE_NAMES[c]} {p['us']['syscall']:.2f}" for c, p in profiles.items()) + ".")
    return lines


def compile_bench(bench_dir, tmp):
    """floor and floorclient, compiled from BENCH_DIR into TMP."""
    cc = os.environ.get("CC", "cc")
    out = {}
    for name, flags in (("floor", []), ("floorclient", ["-pthread"])):
        src = os.path.join(bench_dir, f"{name}.c")
        if not os.path.exists(src):
            raise SystemExit(f"{NAME}: no {src} (--bench-dir)")
        out[name] = os.path.join(tmp, name)
        done = subprocess.run([cc, "-O2", *flags, "-o", out[name], src], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise SystemExit(f"{NAME}: {cc} {src} failed:\n{done.stderr}")
    return out


def pick_tool(wanted):
    if wanted in ("perf", "auto") and shutil.which("perf"):
        return "perf"
    if wanted == "perf":
        raise SystemExit(f"{NAME}: no perf (Debian: apt-get install linux-perf)")
    if wanted in ("strace", "auto") and shutil.which("strace"):
        return "strace"
    raise SystemExit(f"{NAME}: neither perf nor strace is installed (Debian: apt-get install linux-perf strace), "
                     "or --count-duration 0 to measure without counting system calls")


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0, blank="–"):
    if v is None:
        return blank
    return f"{v:,.{digits}f}".replace(",", " ")


def goal_rows(pairs, runs, metric, threshold, reps):
    """For each (label, condition, numerator cell, denominator cell): the ratio of the medians
    of METRIC, the repetitions' own ratios and a verdict. Returns table rows and a summary."""
    rows, verdicts = [], []
    for label, cond, num, den in pairs:
        a = med(metric(runs.get((rep, cond) + num)) for rep in range(reps))
        b = med(metric(runs.get((rep, cond) + den)) for rep in range(reps))
        per_rep = []
        for rep in range(reps):
            x, y = metric(runs.get((rep, cond) + num)), metric(runs.get((rep, cond) + den))
            if x is not None and y:
                per_rep.append(x / y)
        if a is None or not b:
            rows.append((label, cond, num, a, b, None, "", "not measured"))
            verdicts.append(None)
            continue
        ratio = a / b
        met = ratio >= threshold
        verdict = "met" if met else "not met"
        if per_rep and min(per_rep) < threshold <= max(per_rep):
            verdict += f" (the repetitions' ratios fall on both sides of {threshold:g})"
        spread = f"{min(per_rep):.3f}–{max(per_rep):.3f}" if len(per_rep) > 1 else ""
        rows.append((label, cond, num, a, b, ratio, spread, verdict))
        verdicts.append((ratio, met, label, cond))
    measured = [v for v in verdicts if v]
    if not measured:
        return rows, "not measured"
    worst = min(measured)
    summary = "MET" if all(v[1] for v in measured) else "NOT MET"
    summary += (f": met in {sum(v[1] for v in measured)} of {len(measured)} measured cells; lowest ratio "
                f"{worst[0]:.3f} ({worst[2]}, {cond_label(worst[3])})")
    if len(measured) < len(verdicts):
        summary += f"; {len(verdicts) - len(measured)} cells not measured"
    return rows, summary


RAW_HEADER = ("rep\tconnections\tdepth\tserver\tclient\trun\tstatus\trequests\trps\tp99_us\tclient_cpu_s\t"
              "client_cpu_wait4_s\tserver_cpu_s\tserver_cpu_whole_s\tclient_threads\tserver_threads\t"
              "client_syscalls_per_req\tclient_io_uring_enter_per_req\tserver_syscalls_per_req\t"
              "server_io_uring_enter_per_req\twall_s\tserver_cpu_not_ours\tserver_cpu_idle\tserver_cpu_irq\t"
              "server_cpu_steal\tclient_cpu_not_ours\tclient_cpu_idle\tclient_cpu_irq\tclient_cpu_steal")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="repetitions; figures are their medians (default 3)")
    ap.add_argument("--duration", type=seconds, default=5.0,
                    help="measured time per run, whole seconds (floorclient takes seconds) (default 5s)")
    ap.add_argument("--warmup", type=seconds, default=1.0, help="loadgen's unmeasured warmup per run (default 1s)")
    ap.add_argument("--count-duration", type=seconds, default=2.0,
                    help="length of each counted run, whole seconds; 0: count no system calls (default 2s)")
    ap.add_argument("--conditions", type=conditions, default=conditions("1,16,256,16x16"),
                    help="CONNECTIONS or CONNECTIONSxDEPTH, comma-separated (default 1,16,256,16x16)")
    ap.add_argument("--servers", type=keys(SERVERS, "--servers"), default=list(SERVERS),
                    help=f"comma-separated, from {','.join(SERVERS)} (default all)")
    ap.add_argument("--clients", type=keys(CLIENTS, "--clients"), default=list(CLIENTS),
                    help=f"comma-separated, from {','.join(CLIENTS)} (mio and uring are loadgen's engines, "
                         "floor is floorclient) (default all)")
    ap.add_argument("--payload", type=int, default=16, help="ECHO payload bytes (default 16)")
    ap.add_argument("--tool", choices=("auto", "perf", "strace"), default="auto",
                    help="what counts system calls: perf, or strace, which slows the side it traces "
                         "(default auto: perf if installed)")
    ap.add_argument("--bin-dir",
                    help="take loadgen and the servers from DIR as they are (default: build target/release)")
    ap.add_argument("--bench-dir",
                    help="where floor.c and floorclient.c are (default shared/bench beside the repository)")
    ap.add_argument("--results", help=f"results directory (default results/DATE-{NAME})")
    ap.add_argument("--no-profile", dest="profile", action="store_false",
                    help="skip the CPU profile of each client (perf record on CPU 1, one extra run per client)")
    ap.add_argument("--no-syscall-cost", dest="syscall_cost", action="store_false",
                    help=f"skip timing one system call (a C loop of {SYSCALL_CALLS:,} getppid calls, "
                         f"{SYSCALL_RUNS} runs)")
    args = ap.parse_args()
    for flag in ("duration", "count_duration"):
        v = getattr(args, flag)
        if v != int(v) or (flag == "duration" and v < 1):
            ap.error(f"--{flag.replace('_', '-')}: whole seconds{', at least 1' if flag == 'duration' else ''} "
                     f"(floorclient counts in seconds), not {v:g}")
    if args.repeat < 1 or args.payload < 0:
        ap.error("--repeat must be at least 1, --payload at least 0")
    return args


def prepare(args):
    """Checks the tools, builds or finds the binaries, asks loadgen which engines it has.
    Returns (tools, the clients that can run, notes for the table)."""
    if args.count_duration > 0:
        args.tool = pick_tool(args.tool)
    args.bench_dir = args.bench_dir or next((d for d in (os.path.join(ROOT, "shared", "bench"),
                                                         os.path.join(os.path.dirname(ROOT), "shared", "bench"))
                                             if os.path.isdir(d)), None)
    args.profile_skip = None
    if args.profile and not args.bench_dir and "floor" not in args.servers + args.clients:
        args.profile, args.profile_skip = False, ("No profile of the clients: it runs against the floor server, and "
                                                  "there is no shared/bench with floor.c (--bench-dir).")
    if ("floor" in args.servers + args.clients or args.profile) and not args.bench_dir:
        raise SystemExit(f"{NAME}: no shared/bench with floor.c and floorclient.c: --bench-dir")
    if args.bin_dir:
        args.bin_dir = os.path.abspath(args.bin_dir)
    else:
        build_release("echolab-servers", "echolab-loadgen")
        args.bin_dir = os.path.join(ROOT, "target", "release")
    uses_loadgen = bool({"mio", "uring"} & set(args.clients))
    for b in ["loadgen"] * uses_loadgen + [SERVERS[k][1] for k in args.servers if SERVERS[k][1]]:
        if not os.access(os.path.join(args.bin_dir, b), os.X_OK):
            raise SystemExit(f"{NAME}: no {b} in {args.bin_dir}")
    tools = {"loadgen": os.path.join(args.bin_dir, "loadgen"),
             "engines": engines(os.path.join(args.bin_dir, "loadgen")) if uses_loadgen else {}}
    clients, notes = list(args.clients), []
    if "uring" in clients and "uring" not in tools["engines"]:
        clients.remove("uring")
        notes.append("**loadgen-uring was not run**: `loadgen run --help` lists no `--engine` with a `uring` value, so "
                     "this loadgen has only its mio engine; the loadgen-uring rows and goal (a) wait for it.")
    if "mio" in clients:
        notes.append(f"loadgen-mio is `loadgen run --engine {tools['engines']['mio']}`." if tools["engines"] else
                     "loadgen-mio is `loadgen run` with no `--engine` flag (this loadgen has only the mio engine).")
    if "uring" in clients:
        notes.append("loadgen-uring is `loadgen run --engine uring`.")
    if not clients:
        raise SystemExit(f"{NAME}: no client left to run")
    if args.count_duration > 0:
        names = [c for c in PER_CALL if not os.path.isdir(TRACEFS) or os.path.isdir(f"{TRACEFS}/sys_enter_{c}")]
        tools["events"] = ",".join(["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{c}" for c in names])
    return tools, clients, notes


def opt(v, spec):
    return "" if v is None else format(v, spec)


def measured_line(rep, cond, s, c, row):
    shares = [opt(x, ".3f") for side in ("server", "client") for x in (row.get(f"{side}_cpu_shares") or (None,) * 4)]
    return "\t".join(str(x) for x in (
        rep, cond[0], cond[1], s, c, "measure", row["status"], row.get("requests", ""), opt(row.get("rps"), ".1f"),
        opt(row.get("p99_us"), ""), opt(row.get("client_cpu_s"), ".6f"), opt(row.get("client_cpu_wait4_s"), ".6f"),
        opt(row.get("server_cpu_s"), ".6f"), opt(row.get("server_cpu_whole_s"), ".6f"),
        row.get("client_threads", ""), row.get("server_threads", ""), "", "", "", "", opt(row.get("wall_s"), ".3f"),
        *shares))


def run_matrix(args, clients, tools, cpus, tmp):
    """Every repetition, condition and pairing: one measured run and, unless --count-duration
    is 0, one counted run. Returns (measured runs, counted runs, both keyed by (rep, condition,
    server, client); raw.tsv's lines; syscalls.tsv's lines; counts.txt's sections)."""
    pairings = [(s, c) for s in args.servers for c in clients]
    runs, counted, raw, sys_rows, counts_log, servers = {}, {}, [], [], [], {}

    def say(rep, cond, s, c, what):
        print(f"{rep} {cond_label(cond)} {SERVERS[s][0]} x {CLIENTS[c]}{what}", file=sys.stderr)
    try:
        for key in args.servers:
            servers[key] = start_server(key, args.bin_dir, tools.get("floor"), cpus["server"])
        for rep in range(args.repeat):
            shift = rep % len(pairings)
            order = pairings[shift:] + pairings[:shift]
            for cond in args.conditions:
                for s, c in order:
                    proc, port = servers[s]
                    if proc.poll() is not None:
                        raise SystemExit(f"{NAME}: {SERVERS[s][0]} exited ({proc.returncode}) before repetition {rep}, "
                                         f"{cond_label(cond)}, {CLIENTS[c]}")
                    row = runs[(rep, cond, s, c)] = measure(s, c, cond, port, proc.pid, args, tools, cpus, tmp)
                    raw.append(measured_line(rep, cond, s, c, row))
                    say(rep, cond, s, c, f": {row['rps']:.0f} req/s, client {row['client_us']:.2f} µs/req, server "
                        f"{row['server_us']:.2f} µs/req" if row["status"] == "ok"
                        else f": {row['status']}: {row.get('why', '')}")
                if args.count_duration <= 0:
                    continue
                for s, c in order:
                    proc, port = servers[s]
                    got = counted[(rep, cond, s, c)] = count(s, c, cond, port, proc.pid, args, tools, cpus, tmp,
                                                             counts_log)
                    per = {}
                    if got["status"] == "ok":
                        for side in ("client", "server"):
                            calls = got["calls"][side]
                            sys_rows += [f"{rep}\t{cond[0]}\t{cond[1]}\t{s}\t{c}\t{side}\t{got['requests']}\t"
                                         f"{name}\t{n}" for name, n in sorted(calls.items())]
                            per[side] = (calls["(all)"] / got["requests"],
                                         calls.get("io_uring_enter", 0) / got["requests"])
                    raw.append("\t".join(str(x) for x in (
                        rep, cond[0], cond[1], s, c, f"count ({args.tool})", got["status"], got.get("requests", ""),
                        *[""] * 8,
                        *(f"{per[side][i]:.4f}" if per else "" for side in ("client", "server") for i in (0, 1)),
                        *[""] * 9)))
                    say(rep, cond, s, c, f" counted: client {per['client'][0]:.2f}, server {per['server'][0]:.2f} "
                        "system calls/req" if per else f" counted: {got['status']}: {got.get('why', '')}")
    except KeyboardInterrupt as e:
        raise Interrupted("SIGINT") from e
    finally:
        for key, (proc, _) in servers.items():
            stop(proc, SERVERS[key][0])
    return runs, counted, raw, sys_rows, counts_log


def cell(results, cond, s, c, reps):
    return [results.get((rep, cond, s, c)) for rep in range(reps)]


def figure(cell_runs, key):
    """The median of KEY over a cell's successful runs."""
    return med(r.get(key) for r in cell_runs if r and r["status"] == "ok")


def per_request(cell_counts, side, which):
    """The median over a cell's counted runs of SIDE's calls (all, or WHICH) per request."""
    vals = []
    for g in cell_counts:
        if g and g["status"] == "ok":
            calls = g["calls"][side]
            vals.append((calls["(all)"] if which == "all" else calls.get(which, 0)) / g["requests"])
    return med(vals)


def idle_share(cell_runs, side):
    """The median share of the runs that SIDE's pinned CPU was idle, as a percentage text."""
    v = med(r[f"{side}_cpu_shares"][1] for r in cell_runs if r and r["status"] == "ok" and r.get(f"{side}_cpu_shares"))
    return "–" if v is None else f"{100 * v:.0f}%"


def report(args, clients, notes, runs, counted, pinned, seconds_taken, extra=()):
    """table.md's text: what ran, the matrix, the two goals and their verdicts, the command."""
    counting = args.count_duration > 0
    placement = "server on CPU 0, client on CPU 1" if pinned else "placed by the scheduler"
    how_counted = ("perf stat (syscall tracepoints)" if args.tool == "perf"
                   else "strace -c -f (which slows the traced side)")
    lines = [f"Binary ECHO of {args.payload} B, closed loop, one client thread, one server thread; {placement}. "
             f"loadgen: {args.duration:g} s measured after {args.warmup:g} s warmup; floorclient: {args.duration:g} s, "
             f"no warmup. Medians of {args.repeat} repetition{'s' if args.repeat > 1 else ''}, each running every "
             "pairing once per condition, the order rotated between repetitions. CPU is µs per request (client: "
             "loadgen's getrusage over its measured window, floorclient's wait4 rusage; server: /proc/PID/stat "
             "utime+stime over the same window). "
             + (f"System calls per request from separate {args.count_duration:g} s runs counted by {how_counted}, "
                "loadgen with no warmup, start-up included. " if counting else "System calls not counted. ")
             + f"Binaries from {args.bin_dir}; C sources from {args.bench_dir}. {seconds_taken:.0f} s in all.", ""]
    shares = {side: [r[f"{side}_cpu_shares"] for r in runs.values() if r.get(f"{side}_cpu_shares")]
              for side in ("server", "client")}
    if shares["server"] and shares["client"]:
        def pct(side, i, f=statistics.median):
            return f"{100 * f(x[i] for x in shares[side]):.0f}%"
        notes = notes + [
            "Where the pinned CPUs' time went during the measured runs (/proc/stat; medians over the runs, each in "
            "raw.tsv): busy but not charged to the server or client pinned there (other tasks, interrupts) "
            f"{pct('server', 0)} of the server's CPU (at most {pct('server', 0, max)}) and {pct('client', 0)} of the "
            f"client's (at most {pct('client', 0, max)}); idle {pct('server', 1)} and {pct('client', 1)}; irq and "
            "softirq (loopback's TCP path, also charged to the task it interrupted unless the kernel accounts "
            f"interrupt time apart) {pct('server', 2)} and {pct('client', 2)}; steal {pct('server', 3)} and "
            f"{pct('client', 3)}."]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    header = "| connections | server | client | requests/s | p99 µs | client CPU µs/req | server CPU µs/req |"
    rule = "|---|---|---|---:|---:|---:|---:|"
    if counting:
        header += " client syscalls/req | client io_uring_enter/req | server syscalls/req | server io_uring_enter/req |"
        rule += "---:|---:|---:|---:|"
    lines += [header, rule]
    failures = []
    for cond in args.conditions:
        for s in args.servers:
            for c in clients:
                runs_here = cell(runs, cond, s, c, args.repeat)
                bad = [r for r in runs_here if r and r["status"] != "ok"]
                failures += [(cond, s, c, "measured", r) for r in bad]
                mark = f" ({len(runs_here) - len(bad)} of {len(runs_here)} runs)" if bad else ""
                row = (f"| {cond_label(cond)} | {SERVERS[s][0]} | {CLIENTS[c]}{mark} | "
                       f"{fmt(figure(runs_here, 'rps'))} | "
                       f"{fmt(figure(runs_here, 'p99_us'))} | {fmt(figure(runs_here, 'client_us'), 2)} | "
                       f"{fmt(figure(runs_here, 'server_us'), 2)} |")
                if counting:
                    counts_here = cell(counted, cond, s, c, args.repeat)
                    failures += [(cond, s, c, "counted", g) for g in counts_here if g and g["status"] != "ok"]
                    row += " " + " | ".join(fmt(per_request(counts_here, side, w), 2) for side in ("client", "server")
                                            for w in ("all", "io_uring_enter")) + " |"
                lines.append(row)
    if failures:
        lines += ["", "Runs left out of the medians:"]
        lines += [f"- {cond_label(cond)}, {SERVERS[s][0]} x {CLIENTS[c]}, {what}: {r['status']}: "
                  f"{r.get('why', '').strip().splitlines()[-1] if r.get('why', '').strip() else ''}"
                  for cond, s, c, what, r in failures]

    def cpu_rate(r):
        return 1e6 / r["client_us"] if r and r["status"] == "ok" and r.get("client_us") else None

    def rps(r):
        return r["rps"] if r and r["status"] == "ok" else None

    pairs_a = [(SERVERS[s][0], cond, (s, "uring"), (s, "floor")) for s in ("floor", "uring")
               if s in args.servers for cond in args.conditions]
    pairs_b = [(CLIENTS[c], cond, ("uring", c), ("floor", c)) for c in ("floor", "mio")
               if c in args.clients for cond in args.conditions]
    rows_a, summary_a = goal_rows(pairs_a, runs, cpu_rate, GOAL_A, args.repeat)
    rows_b, summary_b = goal_rows(pairs_b, runs, rps, GOAL_B, args.repeat)
    if "uring" in args.clients and "uring" not in clients:
        summary_a = "not measured: this loadgen has no --engine uring, so loadgen-uring did not run"
    spread = " (the repetitions' own ratios)" if args.repeat > 1 else ""
    lines += ["", f"**Goal (a)**: loadgen-uring serves at least {GOAL_A:g}x the requests per client CPU-second of "
              "floorclient, on the same server.", "",
              f"| server | connections | loadgen-uring req per client CPU-s | floorclient req per client CPU-s | "
              f"ratio | range{spread} | client CPU idle, uring / C | verdict |",
              "|---|---|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {label} | {cond_label(cond)} | {fmt(a)} | {fmt(b)} | {fmt(r, 3)} | {rng} | "
              f"{idle_share(cell(runs, cond, s, 'uring', args.repeat), 'client')} / "
              f"{idle_share(cell(runs, cond, s, 'floor', args.repeat), 'client')} | {v} |"
              for label, cond, (s, _), a, b, r, rng, v in rows_a]
    lines += ["", "A client whose CPU is hardly ever idle is paced by the exchange, not by its own cost: on "
              "loopback each side's CPU also runs the kernel's receive path for the other side's packets, and a "
              "side with time to spare spends it going to sleep and waking up, so its CPU per request is then "
              "close to its CPU's busy share over the throughput. Requests per client CPU-second measure the "
              "client's own cost best where its CPU idles."]
    lines += ["", f"**Goal (b)**: server-uring reaches at least {GOAL_B:g}x the throughput of the floor server, "
              "with the same client; each server's CPU per request beside.", "",
              f"| client | connections | server-uring req/s | floor req/s | ratio | range{spread} | "
              "server-uring CPU µs/req | floor CPU µs/req | server CPU idle, uring / floor | verdict |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {label} | {cond_label(cond)} | {fmt(a)} | {fmt(b)} | {fmt(r, 3)} | {rng} | "
              f"{fmt(figure(cell(runs, cond, 'uring', c, args.repeat), 'server_us'), 2)} | "
              f"{fmt(figure(cell(runs, cond, 'floor', c, args.repeat), 'server_us'), 2)} | "
              f"{idle_share(cell(runs, cond, 'uring', c, args.repeat), 'server')} / "
              f"{idle_share(cell(runs, cond, 'floor', c, args.repeat), 'server')} | {v} |"
              for label, cond, (_, c), a, b, r, rng, v in rows_b]
    lines += ["", f"- Goal (a), loadgen-uring >= {GOAL_A:g}x floorclient's requests per client CPU-second: "
              f"{summary_a}.",
              f"- Goal (b), server-uring >= {GOAL_B:g}x the floor server's throughput: {summary_b}.", *extra, "",
              f"Made by `{shlex.join(['python3', 'scripts/readiness-vs-completion.py', *sys.argv[1:]])}`."]
    return "\n".join(lines)


def main():
    args = parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    tools, clients, notes = prepare(args)
    pinned = os.cpu_count() >= 2
    cpus = {"server": {0} if pinned else None, "client": {1} if pinned else None}
    with tempfile.TemporaryDirectory() as tmp:
        if "floor" in args.servers + clients or args.profile:
            tools.update(compile_bench(args.bench_dir, tmp))
        out = results_dir(NAME, args.results)
        if "floor" in args.servers + clients or args.profile:
            for name in ("floor.c", "floorclient.c"):
                shutil.copy(os.path.join(args.bench_dir, name), os.path.join(out, name))
        started = time.time()
        runs, counted, raw, sys_rows, counts_log = run_matrix(args, clients, tools, cpus, tmp)
        profiles, profile_notes = (run_profiles(args, clients, tools, cpus, tmp, out) if args.profile
                                   else ({}, [args.profile_skip] if args.profile_skip else []))
        cost, why = syscall_cost(cpus, tmp) if args.syscall_cost else (None, None)
    write_tsv(out, "raw.tsv", raw, RAW_HEADER)
    if args.count_duration > 0:
        write_tsv(out, "syscalls.tsv", sys_rows,
                  "rep\tconnections\tdepth\tserver\tclient\tside\trequests\tsyscall\tcalls")
        with open(os.path.join(out, "counts.txt"), "w") as f:
            f.write("\n".join(counts_log))
    if profiles:
        write_tsv(out, "profile.tsv", profile_tsv(profiles), PROFILE_TSV_HEADER)
    extra = profile_section(args, profiles, profile_notes) + syscall_section(args, clients, runs, counted, cost, why,
                                                                              profiles)
    write_table(out, report(args, clients, notes, runs, counted, pinned, time.time() - started, extra))


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, Interrupted) as e:
        print(f"\n{NAME}: interrupted ({str(e) or 'SIGINT'}): servers and counters stopped, no table written",
              file=sys.stderr)
        sys.exit(130)
