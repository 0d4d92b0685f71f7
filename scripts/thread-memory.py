#!/usr/bin/env python3
"""What a connection costs server-thread in memory, idle: the figures behind docs/models/thread.md.

A thread per connection reserves a whole stack (--stack-size, 2 MiB by default) but touches only
the pages it uses, so two figures move apart: VmSize (address space, what a 32-bit process or a
tight `ulimit -v` runs out of) and VmRSS/PSS (memory actually used). For each server setting,
start server-thread (release build, thread per connection), then open idle connections in
steps (each does one 64-byte echo, so its thread has run its handler and touched its read
buffer, then sits idle) and read /proc/PID/status (Threads, VmSize, VmRSS) and
/proc/PID/smaps_rollup (Pss) at each step. Per connection = (figure at N - figure at 0) / N.

The settings: --stack-size 2M and 64K, and 64K again with MALLOC_ARENA_MAX=1. glibc gives
threads their own malloc arenas (up to 8 per CPU), each reserving 64 MiB of address space;
the third row shows how much of the 64K row's VmSize those reservations are.

A second table is the deepest a connection handler's stack goes: server-thread --pool 1
--stack-size 2M (one worker thread serves every connection, so its stack keeps the high-water
mark of all of them) is sent each protocol's worst cases (a 1 MB echo, SLEEP and SPIN, an
error that keeps the connection, a fatal one closed by `linger_close` with its 16 KiB drain
buffer on the stack, JSON nested to serde_json's limit), and the resident pages of the
worker's stack mapping are read from /proc/PID/smaps (the mapping that holds the stack
pointer /proc/PID/task/TID/syscall shows). This is what --stack-size's 64K floor rests on.
Pass --profile debug for the deeper debug-build stacks (the figure the floor was set from).

    python3 scripts/thread-memory.py [--counts 0,100,1000] [--profile release|debug] [--results DIR]

Writes results/DATE-thread-memory/ (results/DATE-thread-memory-debug/ with --profile debug):
table.md, raw.tsv (memory), stack.tsv (stack depth), machine.txt.
"""
import argparse
import datetime
import os
import resource
import socket
import struct
import subprocess
import time

from lablib import (OP_ECHO, OP_SLEEP, ROOT, frame, read_reply, results_dir, start_server,
                    write_table, write_tsv)

OP_SPIN = 0x03

# (label, --stack-size, extra environment). The arena row only makes sense beside the 64K one.
SETTINGS = [
    ("--stack-size 2M", "2M", {}),
    ("--stack-size 64K", "64K", {}),
    ("--stack-size 64K, MALLOC_ARENA_MAX=1", "64K", {"MALLOC_ARENA_MAX": "1"}),
]


def status(pid):
    """Threads, VmSize, VmRSS (KiB) from /proc/PID/status, and Pss (KiB) from smaps_rollup."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Threads", "VmSize", "VmRSS"):
                out[key] = int(value.split()[0])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                out["Pss"] = int(line.split()[1])
    return out


def wait_threads(pid, want, timeout=30.0):
    """Waits until PID has WANT threads: a connection's thread is spawned after its accept,
    and exits a little after its client leaves, so /proc must be read only once it settled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if status(pid)["Threads"] == want:
            return
        time.sleep(0.05)
    raise SystemExit(f"server {pid}: {status(pid)['Threads']} threads, expected {want}")


def measure(stack, env, counts, bin_dir):
    """[(connections, status)] for one server setting, connections opened in steps."""
    # --idle-timeout: the connections must stay open for the whole run, however slow the machine.
    proc, port = start_server("server-thread", "--stack-size", stack, "--idle-timeout", "1h",
                              bin_dir=bin_dir, env=env)
    socks, rows = [], []
    try:
        wait_threads(proc.pid, 1)
        for n in counts:
            while len(socks) < n:
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(frame(OP_ECHO, len(socks) + 1, 0, b"x" * 64))
                if read_reply(s)[0] != 0:
                    raise SystemExit(f"{stack}: bad reply")
                socks.append(s)
            wait_threads(proc.pid, n + 1)
            time.sleep(0.5)  # let freed memory settle (a thread's first allocations, the echo's)
            rows.append((n, status(proc.pid)))
        return rows
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait(timeout=10)


def stack_rss(pid, tid):
    """Resident KiB of the mapping holding thread TID's stack pointer.

    /proc/PID/task/TID/syscall is "NR args... SP PC" while the thread is blocked in a system
    call (the idle worker waits in futex); the mapping is glibc's stack block, whose top also
    holds the thread's descriptor and TLS, a page or two that are resident from the start."""
    with open(f"/proc/{pid}/task/{tid}/syscall") as f:
        fields = f.read().split()
    if len(fields) < 3:
        raise SystemExit(f"thread {tid} is not blocked in a system call: {fields}")
    sp = int(fields[-2], 16)
    with open(f"/proc/{pid}/smaps") as f:
        inside = False
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= sp < hi
            elif inside and head == "Rss:":
                return int(line.split()[1])
    raise SystemExit(f"no mapping holds the stack pointer {sp:#x} of thread {tid}")


def resp(*args):
    """A RESP array of bulk strings."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def json_frame(body):
    """The book's JSON framing: a little-endian length (see protocol/src/json.rs)."""
    return struct.pack("<I", len(body)) + body


# Each protocol's deepest paths, as connections: (server --protocol, [bytes sent on one
# connection each]). The same cases as servers/tests/cli.rs's
# stack_size_floor_serves_the_deepest_requests, which proves them at 64K.
WORST_CASES = [
    ("binary", [
        frame(OP_ECHO, 1, 0, b"x" * 1_000_000)
        + frame(OP_SLEEP, 2, 1000, b"slow") + frame(OP_SPIN, 3, 1000, b"slow")
        + struct.pack(">I", 3) + bytes([0x09, 4, 0])  # unknown op: ERROR, connection stays
        + frame(OP_ECHO, 5, 0, b"still here"),
        b"\xff\xff\xff\xff",  # a length past --max-frame: ERROR, then linger_close
    ]),
    ("resp", [
        resp(b"ECHO", b"x" * 1_000_000) + resp(b"NOPE") + resp(b"PING"),
        b"*3000000000\r\n",  # fatal: ERROR, then linger_close
    ]),
    ("json", [
        json_frame(b'{"in":"ping","params":"' + b"x" * 500_000 + b'","id":1}')
        + json_frame(b'{"in":"ping","params":' + b"[" * 127 + b"]" * 127 + b',"id":2}')
        + json_frame(b'{"in":"nope","id":3}'),
        json_frame(b"not json"),  # fatal: ERROR, then linger_close
    ]),
]


def deepest_stack(bin_dir):
    """[(protocol, worker stack RSS fresh, after the requests that keep the connection, after
    the fatal error too)] in KiB: the resident pages only grow, so each is a high-water mark."""
    rows = []
    for protocol, connections in WORST_CASES:
        proc, port = start_server("server-thread", "--pool", "1", "--stack-size", "2M",
                                  "--protocol", protocol, bin_dir=bin_dir)
        try:
            wait_threads(proc.pid, 2)
            tid = max(int(t) for t in os.listdir(f"/proc/{proc.pid}/task") if int(t) != proc.pid)
            time.sleep(0.2)  # the worker reaches its wait for the pool's channel
            marks = [stack_rss(proc.pid, tid)]
            for data in connections:
                # The client sends everything, then shuts its side: the server answers what it
                # read, sees EOF (or the fatal error) and closes, so reading to EOF means the
                # worker finished this connection. With one worker, connections run in turn.
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                s.settimeout(30)
                while s.recv(1 << 16):
                    pass
                s.close()
                time.sleep(0.2)  # the worker is back in its wait, where /proc shows its stack pointer
                marks.append(stack_rss(proc.pid, tid))
            rows.append((protocol, *marks))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    return rows


def mib(kib):
    return f"{kib / 1024:.1f} MiB"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--counts", default="0,100,1000", help="idle connections, in steps; the first must be 0")
    ap.add_argument("--profile", choices=("release", "debug"), default="release")
    ap.add_argument("--results", default=os.environ.get("RESULTS"))
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    if counts[0] != 0 or counts != sorted(counts):
        raise SystemExit("--counts must start at 0 and grow")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * counts[-1] + 100  # this client's sockets, and the server's (it inherits the limit)
    if hard < need:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} is below the {need} needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))

    flags = ["--release"] if args.profile == "release" else []
    subprocess.run(["cargo", "build", "-q", *flags, "-p", "echolab-servers", "--bin", "server-thread"],
                   cwd=ROOT, check=True)
    bin_dir = os.path.join(ROOT, "target", args.profile)
    # A debug run is a run of its own, beside the release one: its own directory.
    path = results_dir("thread-memory" + ("-debug" if args.profile == "debug" else ""), args.results)

    raw = ["setting\tconnections\tthreads\tvmsize_kib\tvmrss_kib\tpss_kib"]
    lines = ["| server-thread | connections | threads | VmSize | VmRSS | PSS | VmSize per connection | VmRSS per connection | PSS per connection |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, stack, env in SETTINGS:
        rows = measure(stack, env, counts, bin_dir)
        base = rows[0][1]
        for n, st in rows:
            raw.append(f"{label}\t{n}\t{st['Threads']}\t{st['VmSize']}\t{st['VmRSS']}\t{st['Pss']}")
            per = (lambda k: f"{(st[k] - base[k]) / n:.0f} KiB") if n else (lambda k: "")
            lines.append(f"| {label} | {n} | {st['Threads']} | {mib(st['VmSize'])} | {mib(st['VmRSS'])} | "
                         f"{mib(st['Pss'])} | {per('VmSize')} | {per('VmRSS')} | {per('Pss')} |")
    lines += ["",
              f"server-thread ({args.profile} build, thread per connection) with N idle connections, each after one "
              f"64-byte echo; /proc/PID/status and smaps_rollup; per connection = (value at N - value at 0) / N. "
              f"{os.cpu_count()} CPUs; {datetime.date.today()}.",
              "",
              "| protocol | worker's stack, resident: fresh | after requests that keep the connection | after a fatal error (linger_close) |",
              "|---|---:|---:|---:|"]
    stack_raw = ["protocol\tfresh_kib\tserved_kib\tfatal_kib"]
    for protocol, fresh, served, fatal in deepest_stack(bin_dir):
        stack_raw.append(f"{protocol}\t{fresh}\t{served}\t{fatal}")
        lines.append(f"| {protocol} | {fresh} KiB | {served} KiB | {fatal} KiB |")
    lines += ["",
              f"server-thread --pool 1 --stack-size 2M ({args.profile} build): the resident pages (Rss in "
              "/proc/PID/smaps) of the one worker's stack mapping, before any client, after a connection with "
              "the protocol's deepest requests (1 MB echo, SLEEP, SPIN, an ERROR that keeps the connection; JSON: "
              "500 kB echo, params nested 127 deep), and after a second connection's fatal error, closed by "
              "linger_close with its 16 KiB drain buffer on the stack. Pages stay resident once touched, so each "
              "column is the high-water mark so far. The mapping's top holds glibc's thread descriptor and TLS, "
              "resident from the start."]

    write_tsv(path, "raw.tsv", raw)
    write_tsv(path, "stack.tsv", stack_raw)
    print(f"python3 scripts/thread-memory.py --counts {args.counts} --profile {args.profile}")
    write_table(path, "\n".join(lines))


if __name__ == "__main__":
    main()
