#!/usr/bin/env python3
"""Why loadgen needs about half of redis-benchmark's CPU per request: the system calls each
client makes per request, counted by the kernel's syscall tracepoints with `perf stat`, beside
each client's CPU per request.

Both clients send --requests multi-bulk PINGs (`redis-benchmark -t ping_mbulk`,
`loadgen --op ping --payload 0 --warmup 0`) over --connections connections, one request in
flight each, to redis-server (Debian's package), as in loadgen-vs-redis-benchmark.py. Each
repetition runs each client twice: once under `perf stat` (every thread and child counted),
for the system calls, and once alone, for the CPU (getrusage of the child; process start and
connection setup are included for both clients alike). The counts are per completed request;
start-up calls (loading libraries, connecting) are spread over every request, in the table's
last rows.

Why perf rather than `strace -c` (the tool the docs first used): strace stops the client at
every system call, which makes it several times slower than the server it waits for, and a
client's count of `epoll_wait` per request depends on its pace (how many replies each wait
finds ready). A tracepoint counter costs a fraction of a microsecond per call and leaves the
pace as it is. --tool strace makes the same run with `strace -c -f`, to compare; in trial
runs on a 2-CPU VM the two agreed within a few hundredths of a call per request.

Server on CPU 0, client on CPU 1, as in the other loadgen proofs; clients alternate and each
figure is the median of --repeat runs. Each counted run's perf (or strace) output is kept
verbatim beside raw.tsv.

Needs perf (Debian: apt-get install linux-perf) with the syscalls tracepoints readable (root,
or kernel.perf_event_paranoid -1), redis-server and redis-benchmark (apt-get install
redis-server redis-tools); strace only for --tool strace.

    python3 scripts/syscalls-per-request.py --repeat 3 --requests 20000
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lablib import (ROOT, build_release, client_affinity, perf_stat_counts, pin_all_threads, results_dir,  # noqa: E402
                    start_redis, write_table, write_tsv)

LOADGEN = os.path.join(ROOT, "target", "release", "loadgen")
CLIENTS = ("redis-benchmark", "loadgen")
# A system call is listed on its own row when a client makes at least this many per request;
# the rest are summed into "other" (start-up calls: mmap, openat, connect, ...).
SHOWN_PER_REQUEST = 0.05
# The calls perf counts one by one: what an event-loop network client may make per request.
# Every other call is in raw_syscalls:sys_enter, the total, and so in "other". (Enabling all
# ~360 syscalls:sys_enter_* tracepoints takes perf seconds per run, for calls made once.)
TOOL_WORDS = {"perf": "the kernel's syscall tracepoints (`perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_*`)",
              "strace": "`strace -c -f` (which slows the client: see the script)"}
PER_CALL = ("epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll", "select", "pselect6",
            "sendto", "recvfrom", "sendmsg", "recvmsg", "read", "write", "readv", "writev", "futex",
            "clock_nanosleep", "nanosleep", "timerfd_settime", "sched_yield")


def client_command(client, port, conns, requests, json_path):
    if client == "redis-benchmark":
        return ["redis-benchmark", "-p", str(port), "-t", "ping_mbulk", "-c", str(conns), "-n", str(requests), "-q"]
    # --warmup 0: a warmup would send requests beyond --requests, which the counts would
    # then charge to too few requests. One thread, as in the comparison's runs.
    return [LOADGEN, "run", "--addr", f"127.0.0.1:{port}", "--protocol", "resp", "--op", "ping", "--payload", "0",
            "-c", str(conns), "-n", str(requests), "--warmup", "0", "--progress", "never", "--json", json_path]


def counted(tool, out_path, cmd):
    """CMD under the counting tool, its table written to OUT_PATH."""
    if tool == "strace":
        # -f: every thread (loadgen's workers and collector); -U: the columns parse_strace reads.
        return ["strace", "-f", "-c", "-U", "name,calls,errors", "-o", out_path, "--", *cmd]
    # perf stat follows every thread and child by default; -x, makes the output CSV.
    events = ",".join(["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{c}" for c in PER_CALL])
    return ["perf", "stat", "-x", ",", "-o", out_path, "-e", events, "--", *cmd]


def run_client(client, port, conns, requests, cpus, tool=None, out_path=None):
    """One run; returns the requests it completed and its CPU µs per request (meaningful only
    when not counted: both tools add CPU of their own to every call)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = client_command(client, port, conns, requests, f.name)
        if tool:
            cmd = counted(tool, out_path, cmd)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, preexec_fn=client_affinity(cpus))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise SystemExit(f"{client} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        # loadgen's own count of verified replies (a closed loop stops at --requests, but the
        # requests in flight then are answered too); redis-benchmark does exactly -n.
        completed = json.load(f)["counts"]["ok"] if client == "loadgen" else requests
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return completed, cpu * 1e6 / completed


def parse_strace(path):
    """{syscall: calls} from an `strace -c -U name,calls,errors` table."""
    calls = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2 or not parts[1].isdigit() or parts[0] in ("total", "syscall"):
                continue
            calls[parts[0]] = int(parts[1])
    return calls


def parse_perf(path):
    """{syscall: calls} from `perf stat -x,` output; the calls not counted one by one are
    the total's remainder, under "(not counted one by one)"."""
    try:
        counts = perf_stat_counts(path)
    except ValueError as e:
        raise SystemExit(str(e))
    total = counts.pop("(all)")
    calls = {name: n for name, n in counts.items() if n}
    calls["(not counted one by one)"] = total - sum(calls.values())
    return calls


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--requests", type=int, default=20000, help="requests per run")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--tool", choices=("perf", "strace"), default="perf",
                    help="what counts the calls (default perf; strace slows the client, which can change the counts)")
    ap.add_argument("--results", help="results directory (default results/DATE-syscalls-per-request)")
    args = ap.parse_args()
    for tool in (args.tool, "redis-server", "redis-benchmark"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed (Debian: apt-get install linux-perf strace redis-server "
                             "redis-tools)")
    build_release("echolab-loadgen")
    pin = os.cpu_count() >= 2
    server_cpus, client_cpus = ({0}, {1}) if pin else (None, None)
    out = results_dir("syscalls-per-request", args.results)

    proc, port = start_redis()
    if server_cpus:
        pin_all_threads(proc.pid, server_cpus)
    per_request = {c: [] for c in CLIENTS}   # one {syscall: calls per request} per rep
    cpu = {c: [] for c in CLIENTS}
    raw = []
    try:
        for rep in range(args.repeat):
            for client in CLIENTS:
                trace = os.path.join(out, f"{args.tool}-{rep}-{client}.txt")
                completed, _ = run_client(client, port, args.connections, args.requests, client_cpus, args.tool, trace)
                calls = parse_perf(trace) if args.tool == "perf" else parse_strace(trace)
                per_request[client].append({name: n / completed for name, n in calls.items()})
                for name, n in sorted(calls.items()):
                    raw.append(f"{rep}\t{client}\t{args.tool}\t{completed}\t{name}\t{n}\t")
                completed, us = run_client(client, port, args.connections, args.requests, client_cpus)
                cpu[client].append(us)
                raw.append(f"{rep}\t{client}\talone\t{completed}\t\t\t{us:.2f}")
                print(f"{rep} {client}: {sum(calls.values()) / completed:.2f} system calls and {us:.2f} µs of CPU "
                      "per request", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    def med(client, name):
        return statistics.median(r.get(name, 0.0) for r in per_request[client])
    names = sorted({n for c in CLIENTS for r in per_request[c] for n in r},
                   key=lambda n: -max(med(c, n) for c in CLIENTS))
    shown = [n for n in names if max(med(c, n) for c in CLIENTS) >= SHOWN_PER_REQUEST]
    placement = "server on CPU 0, client on CPU 1" if pin else "placed by the scheduler"
    lines = [f"redis-server, {args.connections} connections, one request in flight each, {args.requests} multi-bulk "
             f"PINGs per run; {placement}; medians of {args.repeat} runs per client, alternated. System calls "
             f"counted by {TOOL_WORDS[args.tool]} ({args.tool}-REP-CLIENT.txt), per completed request; CPU from "
             "getrusage of the same runs made again without counting.", "",
             "| system calls per request | " + " | ".join(CLIENTS) + " |",
             "|---|" + "---:|" * len(CLIENTS)]
    for n in shown:
        label = n if n.startswith("(") else f"`{n}`"
        lines.append(f"| {label} | " + " | ".join(f"{med(c, n):.2f}" for c in CLIENTS) + " |")
    other = {c: statistics.median(sum(v for k, v in r.items() if k not in shown) for r in per_request[c])
             for c in CLIENTS}
    total = {c: statistics.median(sum(r.values()) for r in per_request[c]) for c in CLIENTS}
    lines.append(f"| other (each below {SHOWN_PER_REQUEST} per request) | " + " | ".join(f"{other[c]:.2f}" for c in CLIENTS) + " |")
    lines.append("| **all** | " + " | ".join(f"**{total[c]:.2f}**" for c in CLIENTS) + " |")
    lines.append("| client CPU µs per request (not counted) | "
                 + " | ".join(f"{statistics.median(cpu[c]):.2f}" for c in CLIENTS) + " |")
    write_tsv(out, "raw.tsv", raw, "rep\tclient\trun\trequests\tsyscall\tcalls\tcpu_us_per_req")
    write_table(out, "\n".join(lines))


if __name__ == "__main__":
    main()
