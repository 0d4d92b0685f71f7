#!/usr/bin/env python3
"""The instruction gate: instructions per request, counted under Cachegrind, baseline against
candidate, per server model (issue 18; docs/ci.md, "The instruction gate").

The paired wall-clock gate (`loadgen compare`) sees everything a change does to time, and pays
for it in noise: on a shared 2-vCPU machine it needs minutes to tell 5% from nothing. This gate
counts what the CPU executes instead. Each model's server runs under Valgrind's Cachegrind
(`--cache-sim=no`: instruction counts only; `--trace-children=yes`, so a forked child's or a
pre-forked worker's instructions count too) while the candidate's loadgen, running natively,
holds one fixed conversation with it: one connection, closed loop, binary ECHO of 64 bytes,
RESP ECHO, a pipelined batch of binary ECHOs (16 in flight) and session INCRs, each for a set
number of requests. The conversation is held twice, with SHORT and then LONG requests per
part, on two fresh servers; the difference of their totals over the difference of requests
is the instructions per request, with start-up, shutdown and everything else that does not
grow with the requests cancelled out.

loadgen's own client path is counted the same way, the loadgen of each build against one
server running natively, but under Callgrind with `--separate-threads=yes`, counting only the
engine's worker thread (the third a run starts: main, collector, worker). Both engines are
counted, as rows `loadgen` (epoll) and `loadgen-uring` (`--engine uring`, issue 20); Valgrind
follows io_uring's system calls, and what the kernel does for a ring is outside its count
as every system call is. The main thread
polls its workers every 5 ms and the collector wakes each second, so their counts follow the
wall clock, which Valgrind stretches differently each run (two runs of one build differed by
8% with them counted); the worker's count per request repeats to 0.01%.

The codec benches (protocol/benches: codec and record) are counted too, when --baseline-benches
and --candidate-benches name their executables: each runs its criterion cases a fixed number of
times instead of timing them (ECHOLAB_COUNT_ITERS; protocol/benches/counting), under Callgrind
with a dump at the end of every run of a case, so each case's instructions per iteration are
exact. These have no sockets and no threads, and their counts repeat to the instruction.

System calls per request are counted too (issue 20), since instructions cannot see them:
every model's server, server-uring included, runs natively while the candidate's loadgen holds
the same conversation with `--count-syscalls --server-pid` (the kernel's raw_syscalls
tracepoint over each measured window; the pipelined part left out, as its batching follows
the timing), --syscall-runs times per side, median; and each of
loadgen's engines is counted the same way against the candidate's epoll event loop. A change
that adds a system call per request moves these by 25-50%; --syscall-threshold (percent)
flags a growth past it. A loadgen without --count-syscalls (a baseline from before it) gets
the client rows as new.

What it cannot see: anything else outside user space (a wake-up, a lock that waits) and
anything timing-dependent. The wall-clock gate sees those; this one
sees a CPU-only change of well under 1%, in a minute, without noise (docs/ci.md has the proof).

    python3 scripts/instr-gate.py --baseline-bin-dir A --candidate-bin-dir B
        [--models thread,fork,...] [--candidate-args "--debug-work 500"] [--threshold 0.3]
        [--short 200] [--long 1200] [--no-client] [--json PATH]
        [--baseline-benches A/deps/codec-HASH,... --candidate-benches B/deps/codec-HASH,...]
Exit 0: no model's count grew past --threshold percent; 1: one did (it says which); 2: bad
flags, or a server or loadgen that would not run.
"""
import argparse
import glob
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

# The models, as the suite and the paired gate name them, and the flags that select them.
MODELS = {
    "thread": ("server-thread", []),
    "thread-pool": ("server-thread", ["--pool", "4"]),
    "fork": ("server-fork", []),
    "prefork-shared": ("server-prefork", ["--workers", "4", "--accept", "shared"]),
    "prefork-locked": ("server-prefork", ["--workers", "4", "--accept", "locked"]),
    "eventloop-select": ("server-eventloop", ["--backend", "select"]),
    "eventloop-poll": ("server-eventloop", ["--backend", "poll"]),
    "eventloop-epoll": ("server-eventloop", ["--backend", "epoll"]),
    "prefork-eventloop-exclusive": ("server-prefork", ["--workers", "2", "--worker", "eventloop", "--accept", "exclusive"]),
    "eventloop-threads": ("server-eventloop", ["--backend", "epoll", "--threads", "2"]),
}

# System calls are counted natively, so server-uring (which Cachegrind does not count) is in.
SYSCALL_MODELS = {**MODELS, "uring": ("server-uring", [])}

# The conversation: loadgen flags for each part (the count is added).
PARTS = [
    ("binary echo", ["--protocol", "binary"]),
    ("resp echo", ["--protocol", "resp"]),
    ("binary pipelined x16", ["--protocol", "binary", "-p", "16"]),
    ("binary incr", ["--protocol", "binary", "--op", "incr", "--keys", "4"]),
]

# Each conversation's session clients (and so its counters' names) are new to the server:
# the client path's conversations all talk to one server, whose counters outlive a run.
_conversations = 0

VALGRIND = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--trace-children=yes", "--quiet"]


def fail(msg):
    print(f"instr-gate: {msg}", file=sys.stderr)
    sys.exit(2)


def instructions(outdir):
    """The Ir summed over every cachegrind.out file in OUTDIR (one per process)."""
    total = 0
    files = glob.glob(os.path.join(outdir, "cachegrind.out.*"))
    for path in files:
        with open(path) as f:
            for line in f:
                if line.startswith("summary:"):
                    total += int(line.split()[1])
    return total, len(files)


def start(cmd, log):
    """Starts CMD in its own process group; returns it and its address from `listening on`."""
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        with open(log.name) as f:
            m = re.search(r"listening on (\S+)", f.read())
        if m:
            return proc, m.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    stop(proc)
    with open(log.name) as f:
        fail(f"{shlex.join(cmd)} did not start:\n{f.read()}")


def stop(proc):
    """SIGTERM (a graceful shutdown, so every process writes its counts), then wait."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def converse(loadgen, addr, n, prefix=(), engine=()):
    """Holds the conversation with N requests per part; PREFIX runs loadgen under something,
    ENGINE picks its engine (flags)."""
    global _conversations
    _conversations += 1
    for name, flags in PARTS:
        if "incr" in flags:
            flags = [*flags, "--client-id-base", str(1000 * _conversations)]
        cmd = [*prefix, loadgen, "run", "--addr", addr, "-c", "1", "-n", str(n), "--warmup", "0",
               "--timeout", "30s", "--progress", "never", *engine, *flags]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            fail(f"{name}: loadgen exit {r.returncode}:\n{r.stdout}{r.stderr}")


def server_per_request(bin_dir, model, extra, loadgen, short, long_):
    """The server's instructions per request of the conversation, and its processes counted."""
    binary, args = MODELS[model]
    counts = []
    for n in (short, long_):
        with tempfile.TemporaryDirectory() as out, tempfile.NamedTemporaryFile("w+") as log:
            cmd = [*VALGRIND, f"--cachegrind-out-file={out}/cachegrind.out.%p",
                   os.path.join(bin_dir, binary), "--addr", "127.0.0.1:0", *args, *extra]
            proc, addr = start(cmd, log)
            try:
                converse(loadgen, addr, n)
            finally:
                stop(proc)
            counts.append(instructions(out))
    (a, _), (b, procs) = counts
    return (b - a) / (len(PARTS) * (long_ - short)), procs


def worker_instructions(outdir):
    """The Ir of loadgen's worker threads: callgrind.out.PID-TT for TT from 03 (01 is main,
    02 the collector), over every run in OUTDIR."""
    total = 0
    for path in glob.glob(os.path.join(outdir, "callgrind.out.*-*")):
        if int(path.rsplit("-", 1)[1]) < 3:
            continue
        with open(path) as f:
            for line in f:
                if line.startswith("summary:"):
                    total += int(line.split()[1])
    return total


# loadgen's engines, as the client rows name them, and the flags that pick them.
CLIENTS = {"loadgen": [], "loadgen-uring": ["--engine", "uring"]}


def has_engines(loadgen):
    """Whether this loadgen has --engine (a baseline from before issue 20 has not)."""
    r = subprocess.run([loadgen, "run", "--help"], capture_output=True, text=True, timeout=60)
    return "--engine" in r.stdout


def client_per_request(loadgen, server_bin, short, long_, engine=()):
    """loadgen's worker thread's instructions per request, under Callgrind, against a native
    server."""
    with tempfile.NamedTemporaryFile("w+") as log:
        proc, addr = start([server_bin, "--addr", "127.0.0.1:0", "--backend", "epoll"], log)
        try:
            counts = []
            for n in (short, long_):
                with tempfile.TemporaryDirectory() as out:
                    converse(loadgen, addr, n, engine=engine,
                             prefix=["valgrind", "--tool=callgrind", "--separate-threads=yes",
                                     "--quiet", f"--callgrind-out-file={out}/callgrind.out.%p"])
                    counts.append(worker_instructions(out))
        finally:
            stop(proc)
    return (counts[1] - counts[0]) / (len(PARTS) * (long_ - short))


def has_flag(loadgen, flag):
    r = subprocess.run([loadgen, "run", "--help"], capture_output=True, text=True, timeout=60)
    return flag in r.stdout


def syscalls_once(loadgen, server_cmd, n, engine=()):
    """One conversation with a native server: the server's and loadgen's system calls per
    request, each the mean over the parts."""
    global _conversations
    server, client = [], []
    with tempfile.NamedTemporaryFile("w+") as log, tempfile.TemporaryDirectory() as out:
        proc, addr = start(server_cmd, log)
        try:
            for i, (name, flags) in enumerate(PARTS):
                if "-p" in flags:
                    # How many pipelined requests one read or wait finds depends on timing:
                    # counted, the part moved by 5% between two runs of one build.
                    continue
                _conversations += 1
                if "incr" in flags:
                    flags = [*flags, "--client-id-base", str(1000 * _conversations)]
                report = os.path.join(out, f"{i}.json")
                # A warmup, so that the connection's thread or process (thread, fork) exists
                # when the counters are attached to the server's tasks as the window starts.
                cmd = [loadgen, "run", "--addr", addr, "-c", "1", "-n", str(n), "--warmup", "300ms",
                       "--timeout", "30s", "--progress", "never", "--count-syscalls",
                       "--server-pid", str(proc.pid), "--json", report, *engine, *flags]
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                if r.returncode != 0:
                    fail(f"{name}: loadgen exit {r.returncode}:\n{r.stdout}{r.stderr}")
                with open(report) as f:
                    rep = json.load(f)
                s = (rep.get("server") or {}).get("syscalls_per_request")
                c = rep["client_cpu"].get("syscalls_per_request")
                if s is None or c is None:
                    fail(f"{name}: no system-call counts (perf events?): {rep.get('notes')}")
                server.append(s)
                client.append(c)
        finally:
            stop(proc)
    return statistics.mean(server), statistics.mean(client)


def syscalls_per_request(loadgen, server_cmd, n, runs, engine=()):
    """The medians over RUNS conversations: (server, loadgen) system calls per request."""
    got = [syscalls_once(loadgen, server_cmd, n, engine) for _ in range(runs)]
    return statistics.median(g[0] for g in got), statistics.median(g[1] for g in got)


def bench_name(path):
    """`codec` for target/release/deps/codec-0123456789abcdef."""
    return re.sub(r"-[0-9a-f]{16}$", "", os.path.basename(path))


def bench_counts(path, iters, runs):
    """{case: instructions per iteration} of one bench executable, under Callgrind: the median
    over RUNS processes. One process's figure can be off by 1% and more on the cases that
    allocate most (snappy's, Avro's): where the heap's top lands, and with it when malloc grows
    or trims the heap, differs from process to process, and Avro's hash maps are seeded afresh
    in each."""
    per_run = [bench_counts_once(path, iters) for _ in range(runs)]
    return {c: statistics.median(r[c] for r in per_run) for c in per_run[0]}


def bench_counts_once(path, iters):
    """{case: instructions per iteration} of one process of a bench executable."""
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, ECHOLAB_COUNT_ITERS=str(iters))
        r = subprocess.run(["valgrind", "--tool=callgrind", "--quiet", "--dump-after=*count_case*",
                            f"--callgrind-out-file={out}/cg.out", path],
                           env=env, capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            fail(f"{path} under Callgrind: exit {r.returncode}:\n{r.stderr[-2000:]}")
        cases = [line[5:] for line in r.stdout.splitlines() if line.startswith("case ")]
        dumps = {}
        for f in glob.glob(os.path.join(out, "cg.out.*")):
            with open(f) as fh:
                for line in fh:
                    if line.startswith("summary:"):
                        dumps[int(f.rsplit(".", 1)[1])] = int(line.split()[1])
        # Dumps 3i+1, 3i+2, 3i+3 are case i's 1, N and 2N iterations (counting/mod.rs).
        if len(dumps) < 3 * len(cases) or not cases:
            fail(f"{path}: {len(cases)} cases but {len(dumps)} dumps; was it built with protocol/benches/counting?")
        return {c: (dumps[3 * i + 3] - dumps[3 * i + 2]) / iters for i, c in enumerate(cases)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline-bin-dir", required=True)
    ap.add_argument("--candidate-bin-dir", required=True)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--baseline-args", default="")
    ap.add_argument("--candidate-args", default="")
    ap.add_argument("--threshold", type=float, default=0.3,
                    help="percent (default 0.3: the proof, docs/ci.md, measured self runs within 0.23%%)")
    ap.add_argument("--short", type=int, default=200)
    ap.add_argument("--long", type=int, default=1200)
    ap.add_argument("--no-client", action="store_true", help="skip loadgen's own client path")
    ap.add_argument("--baseline-benches", default="",
                    help="the baseline's codec bench executables, comma-separated (cargo build --release --benches -p echolab-protocol)")
    ap.add_argument("--candidate-benches", default="", help="the candidate's, matched to the baseline's by name")
    ap.add_argument("--bench-iters", type=int, default=20, help="iterations N per case (each runs 1, N and 2N times)")
    ap.add_argument("--bench-runs", type=int, default=3, help="processes per bench and side; each case's median counts")
    ap.add_argument("--codec-threshold", type=float, default=2.0,
                    help="percent, for the codec cases (default 2.0: in the self runs of docs/ci.md the cases "
                         "that compress or use Avro moved by up to 1.06%%, the others by 0.000%%)")
    ap.add_argument("--no-syscalls", action="store_true", help="skip the system-call counts")
    ap.add_argument("--syscall-requests", type=int, default=2000, help="requests per part of each counted conversation")
    ap.add_argument("--syscall-runs", type=int, default=3, help="conversations per side; the median counts")
    ap.add_argument("--syscall-threshold", type=float, default=10.0,
                    help="percent (default 10: in a self run (docs/ci.md) the rows moved by up to 3.6%%; "
                         "one system call more per request moves a row by 25%% or more)")
    ap.add_argument("--json")
    a = ap.parse_args()
    if not shutil.which("valgrind"):
        fail("needs valgrind (Debian: apt-get install valgrind)")
    models = [m for m in a.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        fail(f"unknown model(s) {', '.join(unknown)} (known: {', '.join(MODELS)})")
    if not 0 < a.short < a.long:
        fail("--short must be above 0 and below --long")
    base, cand = os.path.abspath(a.baseline_bin_dir), os.path.abspath(a.candidate_bin_dir)
    # One instrument for both sides, as in the paired gate: the candidate's loadgen.
    loadgen = os.path.join(cand, "loadgen")
    for d in (base, cand):
        if not os.access(os.path.join(d, "loadgen"), os.X_OK):
            fail(f"no loadgen in {d}")
    rows, regressed = [], []
    started = time.time()
    print(f"{'model':18} {'baseline Ir/req':>16} {'candidate Ir/req':>17} {'change':>9}  verdict")
    targets = [(m, "server") for m in models] + ([] if a.no_client else [(c, "client") for c in CLIENTS])
    benches = {}
    for side, arg in (("baseline", a.baseline_benches), ("candidate", a.candidate_benches)):
        for path in filter(None, arg.split(",")):
            if not os.access(path, os.X_OK):
                fail(f"{side} bench {path} is not an executable")
            benches.setdefault(bench_name(path), {})[side] = path
    if any(len(v) != 2 for v in benches.values()):
        fail("--baseline-benches and --candidate-benches must name the same benches")
    targets += [(name, "codec") for name in benches]
    if not a.no_syscalls:
        targets += [(f"syscalls/{m}", "syscalls") for m in [*models, "uring"] if m in SYSCALL_MODELS]
        targets += [] if a.no_client else [(f"syscalls/{c}", "syscalls-client") for c in CLIENTS]
    for name, side in targets:
        if side == "codec":
            b_cases = bench_counts(benches[name]["baseline"], a.bench_iters, a.bench_runs)
            c_cases = bench_counts(benches[name]["candidate"], a.bench_iters, a.bench_runs)
            for case in c_cases:
                b, c = b_cases.get(case), c_cases[case]
                if b is None:
                    print(f"{name}/{case:40} {'new':>16} {c:17.1f}")
                    continue
                change = 100.0 * (c / b - 1.0) if b > 0 else float("inf")
                verdict = "REGRESSION" if change > a.codec_threshold else (
                    "improvement" if change < -a.codec_threshold else "no significant change")
                if verdict == "REGRESSION":
                    regressed.append(f"{name}/{case}")
                print(f"{name}/{case:40} {b:16.1f} {c:17.1f} {change:+8.3f}%  {verdict}", flush=True)
                rows.append({"model": f"{name}/{case}", "side": "codec", "baseline_ir_per_request": b,
                             "candidate_ir_per_request": c, "change_percent": change,
                             "processes": 1, "verdict": verdict})
            continue
        if side.startswith("syscalls"):
            short_name = name.split("/", 1)[1]
            if side == "syscalls":
                binary, args = SYSCALL_MODELS[short_name]
                cmd = lambda d: [os.path.join(d, binary), "--addr", "127.0.0.1:0", *args]  # noqa: E731
                b = syscalls_per_request(loadgen, cmd(base), a.syscall_requests, a.syscall_runs)[0]
                c = syscalls_per_request(loadgen, cmd(cand), a.syscall_requests, a.syscall_runs)[0]
            else:
                server_cmd = [os.path.join(cand, "server-eventloop"), "--addr", "127.0.0.1:0", "--backend", "epoll"]
                engine = CLIENTS[short_name]
                c = syscalls_per_request(loadgen, server_cmd, a.syscall_requests, a.syscall_runs, engine)[1]
                base_lg = os.path.join(base, "loadgen")
                if not has_flag(base_lg, "--count-syscalls") or (engine and not has_engines(base_lg)):
                    print(f"{name:18} {'new':>16} {c:17.2f}", flush=True)
                    continue
                b = syscalls_per_request(base_lg, server_cmd, a.syscall_requests, a.syscall_runs, engine)[1]
            change = 100.0 * (c / b - 1.0) if b > 0 else float("inf")
            verdict = "REGRESSION" if change > a.syscall_threshold else (
                "improvement" if change < -a.syscall_threshold else "no significant change")
            if verdict == "REGRESSION":
                regressed.append(name)
            print(f"{name:18} {b:16.3f} {c:17.3f} {change:+8.3f}%  {verdict}", flush=True)
            rows.append({"model": name, "side": side, "baseline_per_request": b, "candidate_per_request": c,
                         "change_percent": change, "processes": 1, "verdict": verdict})
            continue
        if side == "server":
            b, procs = server_per_request(base, name, shlex.split(a.baseline_args), loadgen, a.short, a.long)
            c, _ = server_per_request(cand, name, shlex.split(a.candidate_args), loadgen, a.short, a.long)
        else:
            server_bin = os.path.join(cand, "server-eventloop")
            engine = CLIENTS[name]
            if engine and not has_engines(os.path.join(base, "loadgen")):
                c = client_per_request(loadgen, server_bin, a.short, a.long, engine)
                print(f"{name:18} {'new':>16} {c:17.1f}", flush=True)
                continue
            b = client_per_request(os.path.join(base, "loadgen"), server_bin, a.short, a.long, engine)
            c = client_per_request(loadgen, server_bin, a.short, a.long, engine)
            procs = 1
        change = 100.0 * (c / b - 1.0) if b > 0 else float("inf")
        verdict = "REGRESSION" if change > a.threshold else (
            "improvement" if change < -a.threshold else "no significant change")
        if verdict == "REGRESSION":
            regressed.append(name)
        print(f"{name:18} {b:16.1f} {c:17.1f} {change:+8.3f}%  {verdict}", flush=True)
        rows.append({"model": name, "side": side, "baseline_ir_per_request": b,
                     "candidate_ir_per_request": c, "change_percent": change,
                     "processes": procs, "verdict": verdict})
    took = time.time() - started
    print(f"instructions per request over the conversation ({', '.join(p for p, _ in PARTS)}), "
          f"{a.long - a.short} requests per part between a short and a long run; threshold "
          f"{a.threshold}%; {took:.0f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"threshold_percent": a.threshold, "codec_threshold_percent": a.codec_threshold,
                       "syscall_threshold_percent": a.syscall_threshold,
                       "bench_iters": a.bench_iters, "bench_runs": a.bench_runs, "short": a.short, "long": a.long,
                       "parts": [p for p, _ in PARTS], "seconds": took, "rows": rows,
                       "candidate_args": a.candidate_args, "baseline_args": a.baseline_args}, f, indent=1)
    if regressed:
        print(f"REGRESSION in instructions per request: {', '.join(regressed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
