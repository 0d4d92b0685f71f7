#!/usr/bin/env python3
"""Issue 14: the thundering herd. Several event loops watch one port; who wakes for a connection?

server-prefork --worker eventloop runs one loop per pre-forked worker. For each accept mode
(shared with select, poll and epoll: every loop watches the one listener; exclusive:
EPOLLEXCLUSIVE; reuseport: a listener per worker; locked: an accept mutex, only its holder
watches the listener), each worker count and two workloads (short connections, one request
each; kept-alive connections), this starts a fresh server, drives it with loadgen
(--server-pid, for context switches), and reads the server's own per-worker counters from its
stats file: wake-ups, futile wake-ups (woken for the listener, accept found nothing) and
connections accepted per worker. Runs are repeated and interleaved; medians are reported.

    python3 scripts/thundering-herd.py [--workers 1,2,4,8] [--repeat 3] [--seconds 3]
Writes results/DATE-thundering-herd/ (table.md, raw.tsv, machine.txt).
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import tempfile

from lablib import ROOT, build_release, results_dir, start_server, write_table, write_tsv

MODES = [
    ("shared select", ["--accept", "shared", "--backend", "select"]),
    ("shared poll", ["--accept", "shared", "--backend", "poll"]),
    ("shared epoll", ["--accept", "shared", "--backend", "epoll"]),
    ("exclusive", ["--accept", "exclusive", "--backend", "epoll"]),
    ("reuseport", ["--accept", "reuseport", "--backend", "epoll"]),
    ("locked", ["--accept", "locked", "--backend", "epoll"]),
]
# (name, loadgen flags): one request per connection from 8 clients at once, so every
# connection is an accept; and 64 connections kept open, so accepts are rare.
# Short connections come from 32 source addresses: from one, the client's ~28 000 ephemeral
# ports fill with TIME_WAIT within two seconds, connect() spends milliseconds searching for a
# free one, and every server model, a blocking thread per connection included, measured the
# same 14 300 connections/s, a ceiling of the client and not of the server.
WORKLOADS = [
    ("short", ["-c", "8", "--requests-per-conn", "1", "--source-ips", "127.0.0.2-127.0.0.33"]),
    ("kept-alive", ["-c", "64"]),
]
LOADGEN = os.path.join(ROOT, "target", "release", "loadgen")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def one_run(mode_flags, workers, load_flags, seconds):
    """A fresh server, one loadgen run: (loadgen report, server stats)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as sstats, \
            tempfile.NamedTemporaryFile(suffix=".json") as out:
        proc, port = start_server("server-prefork", "--worker", "eventloop", "--workers", str(workers),
                                  *mode_flags, "--stats-file", sstats.name)
        try:
            subprocess.run([LOADGEN, "run", "--addr", f"127.0.0.1:{port}", *load_flags, "-d", f"{seconds}s",
                            "--warmup", "1s", "--server-pid", str(proc.pid), "--progress", "never",
                            "--json", out.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            report = json.load(open(out.name))
        finally:
            stop(proc)
        return report, json.load(open(sstats.name))


def figures(report, stats):
    """The figures of one run, from loadgen's report and the server's own counters."""
    per_worker = stats.get("workers", [])
    accepted = [w.get("accepted", 0) for w in per_worker]
    wakeups = sum(w.get("wakeups") or 0 for w in per_worker)
    futile = sum(w.get("futile_wakeups") or 0 for w in per_worker)
    total_accepted = sum(accepted) or 1
    server = report.get("server") or {}
    return {
        "rps": report["throughput_rps"],
        "p99_us": report["latency_us"]["p99"],
        "max_us": report["latency_us"]["max"],
        "ctx_per_request": server.get("ctx_per_request", 0.0),
        "accepted": sum(accepted),
        "wakeups": wakeups,
        "futile": futile,
        "futile_per_accept": futile / total_accepted,
        "jain": stats.get("accept_fairness_jain") or 0.0,
        "spread": "/".join(str(a) for a in accepted),
        "errors": sum(report["errors"].values()),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--results", default=os.environ.get("RESULTS"))
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    build_release("echolab-servers", "echolab-loadgen")
    path = results_dir("thundering-herd", args.results)

    keys = ["rps", "p99_us", "max_us", "ctx_per_request", "accepted", "wakeups", "futile", "futile_per_accept",
            "jain", "spread", "errors"]
    raw = ["workload\tmode\tworkers\trep\t" + "\t".join(keys)]
    runs = {}
    for rep in range(args.repeat):
        order = MODES if rep % 2 == 0 else MODES[::-1]
        for wname, wflags in WORKLOADS:
            for n in counts:
                for mname, mflags in order:
                    report, stats = one_run(mflags, n, wflags, args.seconds)
                    f = figures(report, stats)
                    runs.setdefault((wname, mname, n), []).append(f)
                    raw.append(f"{wname}\t{mname}\t{n}\t{rep}\t" + "\t".join(
                        f"{f[k]:.3f}" if isinstance(f[k], float) else str(f[k]) for k in keys))
                    print(raw[-1], flush=True)
    write_tsv(path, "raw.tsv", raw)

    def med(cell, key):
        return statistics.median(r[key] for r in runs[cell])

    lines = []
    for wname, wflags in WORKLOADS:
        lines += [f"### {wname} connections (`loadgen run {' '.join(wflags)} -d {args.seconds}s`)", "",
                  "| mode | workers | requests/s | futile wake-ups per accept | context switches per request "
                  "| Jain | accepted per worker (one run) | p99 | max |",
                  "|---|---:|---:|---:|---:|---:|---|---:|---:|"]
        for mname, _ in MODES:
            for n in counts:
                cell = (wname, mname, n)
                lines.append(f"| {mname} | {n} | {med(cell, 'rps'):.0f} | {med(cell, 'futile_per_accept'):.2f} "
                             f"| {med(cell, 'ctx_per_request'):.2f} | {med(cell, 'jain'):.3f} "
                             f"| {runs[cell][0]['spread']} | {med(cell, 'p99_us'):.0f} µs | {med(cell, 'max_us'):.0f} µs |")
        lines.append("")
    lines += [f"Made by `scripts/thundering-herd.py --workers {args.workers} --repeat {args.repeat} "
              f"--seconds {args.seconds}`: server-prefork --worker eventloop, a fresh server per run, "
              f"medians of {args.repeat} interleaved runs; futile wake-ups and accepts from the server's "
              f"own per-worker counters, context switches from loadgen --server-pid (the whole process tree)."]
    write_table(path, "\n".join(lines))


if __name__ == "__main__":
    main()
