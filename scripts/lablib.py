"""What the Python measurement scripts share: echolab's binary framing, starting a server and
learning its port from the `listening on` line, and writing a run into results/DATE-NAME/.

Imported by idle-connections.py, blocking-handler.py, loadgen-vs-redis-benchmark.py,
loadgen-pacing.py, prefork-memory.py, coordinated-omission.py, syscalls-per-request.py,
wakeup-latency.py, thread-memory.py, fork-zombies.py, fork-descriptors.py and
eventloop-flood.py (run them from anywhere: they put
scripts/ on the import path by living in it). book_client.py stays standalone on purpose: it
is the book's client, and shows the book's JSON framing on its own.
"""
import datetime
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OP_ECHO, OP_SLEEP = 0x01, 0x02


def uvarint(v):
    """Unsigned LEB128, as docs/protocol.md defines it."""
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def frame(op, request_id, arg=0, payload=b""):
    """One binary v1 request: 4-byte big-endian length, then op | id | arg | payload."""
    body = bytes([op]) + uvarint(request_id) + uvarint(arg) + payload
    return struct.pack(">I", len(body)) + body


def recv_exactly(sock, n):
    """n bytes from sock; a single recv may return fewer."""
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    return buf


def read_reply(sock):
    """One binary v1 response body: status | id | payload."""
    (n,) = struct.unpack(">I", recv_exactly(sock, 4))
    return recv_exactly(sock, n)


def criterion_median_ns(*parts):
    """Criterion's median estimate, ns, of the benchmark at target/criterion/PARTS.../new."""
    path = os.path.join(ROOT, "target", "criterion", *map(str, parts), "new", "estimates.json")
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"]


def build_release(*packages):
    """Builds the release binaries of PACKAGES (default: the servers)."""
    flags = [arg for p in (packages or ("echolab-servers",)) for arg in ("-p", p)]
    subprocess.run(["cargo", "build", "--release", "-q", *flags], cwd=ROOT, check=True)


def build_at_commit(commit, package, binary, profile="release"):
    """The directory holding BINARY of PACKAGE as it was at COMMIT, built apart under
    target/before-COMMIT/ so the current binaries stay as they are: how a script measures a
    fix against the code before it."""
    flags = ["--release"] if profile == "release" else []
    short = subprocess.run(["git", "rev-parse", "--short", commit], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.strip()
    base = os.path.join(ROOT, "target", f"before-{short}")
    src = os.path.join(base, "src")
    if not os.path.isdir(src):
        # git archive, not a worktree: nothing to register in the repository or clean up after.
        # Extracted beside `src` and renamed into place when whole, so an interrupted
        # extraction is never taken for a checkout on the next run.
        partial = src + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
        archive = subprocess.Popen(["git", "archive", short], cwd=ROOT, stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", partial], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise SystemExit(f"git archive {short} failed")
        os.rename(partial, src)
    subprocess.run(["cargo", "build", "-q", *flags, "-p", package, "--bin", binary,
                    "--target-dir", os.path.join(base, "target")], cwd=src, check=True)
    return os.path.join(base, "target", profile)


def start_server(binary, *args, bin_dir=None, env=None):
    """Starts BINARY on a free port; returns (process, port). BIN_DIR is where the binary is
    (default target/release; eventloop-flood.py passes a debug build, or an old commit's);
    ENV, if given, is added to this process's environment (thread-memory.py's
    MALLOC_ARENA_MAX)."""
    path = os.path.join(bin_dir or os.path.join(ROOT, "target", "release"), binary)
    proc = subprocess.Popen([path, "--addr", "127.0.0.1:0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, **env} if env else None)
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"{binary} did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


def free_port():
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago (for servers that, unlike
    echolab's, cannot bind port 0 and say which port they got)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis():
    """Starts redis-server (Debian's package) on a free port with persistence off, so no
    background save competes for the CPU; returns (process, port) once it accepts."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid):
    """utime + stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pin_all_threads(pid, cpus):
    """Moves every thread of PID (the server's helper threads too) onto CPUS."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass


def client_affinity(cpus):
    """A preexec_fn that pins the client (and the threads it will start) to CPUS."""
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


# The 1-minute load average when the run began (results_dir), for machine.txt.
_LOAD_BEFORE = None


def load_average():
    """The 1-minute load average."""
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def wait_for_idle(limit_s=120):
    """The 1-minute load average once it is at most half the CPUs', waiting up to LIMIT_S
    seconds for it (scripts/machine-info.sh --wait-idle: a build just before a run leaves its
    load in the average for a minute or two)."""
    return subprocess.run([os.path.join(ROOT, "scripts", "machine-info.sh"), "--wait-idle", str(limit_s)],
                          cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def results_dir(name, override=None):
    """results/DATE-NAME/ (or `override`), created, once the tree is known to be clean: a
    recorded run must name the commit that ran (scripts/machine-info.sh --check exits the
    script otherwise). Notes the load average, so a run on a busy machine says so."""
    global _LOAD_BEFORE
    check = subprocess.run([os.path.join(ROOT, "scripts", "machine-info.sh"), "--check"], cwd=ROOT)
    if check.returncode != 0:
        raise SystemExit(check.returncode)
    _LOAD_BEFORE = wait_for_idle()
    path = override or os.path.join(ROOT, "results", f"{datetime.date.today()}-{name}")
    os.makedirs(path, exist_ok=True)
    return path


def write_tsv(path, name, lines, header=None):
    """Keeps a run's raw figures in PATH/NAME: an optional header line, then one line per
    measurement (fields already tab-separated), each ending in a newline."""
    with open(os.path.join(path, name), "w") as f:
        if header is not None:
            f.write(header + "\n")
        f.writelines(line + "\n" for line in lines)


def write_table(path, table):
    """Prints the table and keeps it in PATH/table.md, with PATH/machine.txt beside it. A run
    begun on a busy machine says so under its table."""
    machine = subprocess.run([os.path.join(ROOT, "scripts", "machine-info.sh")] + ([_LOAD_BEFORE] if _LOAD_BEFORE else []),
                             cwd=ROOT, check=False, capture_output=True, text=True).stdout
    busy = [l for l in machine.splitlines() if l.startswith("busy:") and "yes" in l]
    if busy:
        table += "\n\n**Busy machine** " + busy[0].split("yes", 1)[1].lstrip(": ")
    print(table)
    with open(os.path.join(path, "table.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(path, "machine.txt"), "w") as f:
        f.write(machine)
    print(f"(kept in {os.path.relpath(path, ROOT)}/)", file=sys.stderr)


def perf_stat_counts(path):
    """{event: count} from `perf stat -x,` output, the syscall tracepoints by their call's name
    and raw_syscalls:sys_enter (every call) as "(all)". ValueError if perf could not count one,
    or if the total is missing."""
    calls = {}
    with open(path) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) < 3 or line.startswith("#"):
                continue
            if not parts[0].isdigit():
                raise ValueError(f"perf could not count {parts[2]} ({parts[0]}): are the syscall tracepoints "
                                 f"readable? (root, or sysctl kernel.perf_event_paranoid=-1)\n{path}")
            name = "(all)" if parts[2] == "raw_syscalls:sys_enter" else parts[2].removeprefix("syscalls:sys_enter_")
            calls[name] = int(parts[0])
    if "(all)" not in calls:
        raise ValueError(f"no raw_syscalls:sys_enter count in {path}")
    return calls
