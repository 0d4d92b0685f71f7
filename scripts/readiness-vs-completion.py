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

Writes results/DATE-readiness-vs-completion/: raw.tsv (every run), syscalls.tsv, counts.txt,
table.md, machine.txt and the two C sources. Refuses to record from a tree with uncommitted
changes (scripts/machine-info.sh; ECHOLAB_ALLOW_DIRTY=1 for a trial). Every subprocess has a
timeout and every server and counter is stopped on the way out (Ctrl-C and SIGTERM included).
Needs perf (Debian: apt-get install linux-perf) with the syscall tracepoints readable (root,
or kernel.perf_event_paranoid -1), or strace, and a C compiler. On 2 CPUs a repetition of the
full matrix (36 pairings and conditions) takes about 36 x (1 + 5 + 2 + 0.5) s, 5 minutes;
three, about 16, after up to 2 minutes waiting for an idle machine.

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
from lablib import (ROOT, build_release, client_affinity, pin_all_threads, proc_cpu_s, results_dir,  # noqa: E402
                    write_table, write_tsv)

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


def run_bounded(cmd, limit_s, cpus, server=None):
    """Runs CMD pinned to CPUS, killed after LIMIT_S seconds. Half a second in, pins the threads
    of the client and of SERVER (pid, cpus) again and notes how many each has. Returns
    (exit code, stdout, stderr, wait4's CPU seconds, {"client_threads", "server_threads"},
    timed out?)."""
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
        timers = [threading.Timer(limit_s, kill), threading.Timer(0.5, look)]
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


def measure(server_key, client, cond, port, server_pid, args, tools, cpus, tmp):
    """One measured run: a dict of its figures, or of its failure."""
    json_path = os.path.join(tmp, "run.json")
    if os.path.exists(json_path):
        os.unlink(json_path)
    warmup = 0.0 if client == "floor" else args.warmup
    cmd = client_command(client, port, cond, args, tools, args.duration, warmup, json_path, server_pid)
    before, stat_before, t0 = proc_cpu_s(server_pid), cpu_stat(), time.monotonic()
    rc, out, err, wait4_cpu, seen, timed_out = run_bounded(
        cmd, args.duration + warmup + 30, cpus["client"], (server_pid, cpus["server"]))
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
    calls = {}
    with open(path) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) < 3 or line.startswith("#"):
                continue
            if not parts[0].isdigit():
                raise ValueError(f"perf could not count {parts[2]} ({parts[0]}): are the syscall tracepoints "
                                 "readable? (root, or sysctl kernel.perf_event_paranoid=-1)")
            name = "(all)" if parts[2] == "raw_syscalls:sys_enter" else parts[2].removeprefix("syscalls:sys_enter_")
            calls[name] = int(parts[0])
    if "(all)" not in calls:
        raise ValueError(f"no raw_syscalls:sys_enter count in {path}")
    return calls


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
    if "floor" in args.servers + args.clients and not args.bench_dir:
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


def report(args, clients, notes, runs, counted, pinned, seconds_taken):
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
              f"- Goal (b), server-uring >= {GOAL_B:g}x the floor server's throughput: {summary_b}.", "",
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
        if "floor" in args.servers + clients:
            tools.update(compile_bench(args.bench_dir, tmp))
        out = results_dir(NAME, args.results)
        if "floor" in args.servers + clients:
            for name in ("floor.c", "floorclient.c"):
                shutil.copy(os.path.join(args.bench_dir, name), os.path.join(out, name))
        started = time.time()
        runs, counted, raw, sys_rows, counts_log = run_matrix(args, clients, tools, cpus, tmp)
    write_tsv(out, "raw.tsv", raw, RAW_HEADER)
    if args.count_duration > 0:
        write_tsv(out, "syscalls.tsv", sys_rows,
                  "rep\tconnections\tdepth\tserver\tclient\tside\trequests\tsyscall\tcalls")
        with open(os.path.join(out, "counts.txt"), "w") as f:
            f.write("\n".join(counts_log))
    write_table(out, report(args, clients, notes, runs, counted, pinned, time.time() - started))


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, Interrupted) as e:
        print(f"\n{NAME}: interrupted ({str(e) or 'SIGINT'}): servers and counters stopped, no table written",
              file=sys.stderr)
        sys.exit(130)
