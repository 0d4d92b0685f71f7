#!/usr/bin/env python3
"""Can loadgen's numbers be trusted? Drive the same server with redis-benchmark and loadgen,
side by side, and compare throughput, median latency and each client's own CPU per request.

The server is redis-server (Debian's package) speaking RESP, and optionally echolab's own
event loop in RESP mode. Both clients send the same command, a multi-bulk PING
(`redis-benchmark -t ping_mbulk`, `loadgen --op ping`), over the same number of connections.
Runs are interleaved (redis-benchmark, loadgen, redis-benchmark, ...) and each figure is the
median of --repeat runs, so machine drift does not favour one tool.

Placement: on a small machine the scheduler likes to put a client and the server it wakes on
the same CPU, where they take turns instead of overlapping, and a single connection's round
trip then depends on where each process happened to land. So by default (--pin) the server
runs on CPU 0 and each client on CPU 1, every run: both clients see the same machine. How much
placement matters is measured too: each repetition also runs both clients at one connection
on the server's own CPU, and the table's second part sets that round trip beside the one
across CPUs.

One pair of runs (redis-server, 50 connections), made after the medians, keeps each client's
own output whole in pair.txt, with the exact commands: the docs quote it.

CPU per request: loadgen reports its own (getrusage over the measured window); for
redis-benchmark this script takes getrusage(RUSAGE_CHILDREN) around the run (which includes its
connection setup: a few ms in a multi-second run). Server CPU comes from /proc/PID/stat.

    python3 scripts/loadgen-vs-redis-benchmark.py --repeat 5 --seconds 3
"""
import argparse
import csv
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lablib import (ROOT, build_release, client_affinity, pin_all_threads, proc_cpu_s, results_dir,  # noqa: E402
                    start_redis, start_server, write_table, write_tsv)


def run_redis_benchmark(port, pid, conns, pipeline, requests, cpus):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = proc_cpu_s(pid)
    t0 = time.monotonic()
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-t", "ping_mbulk", "-c", str(conns),
                          "-P", str(pipeline), "-n", str(requests), "--csv"],
                         capture_output=True, text=True, timeout=120, check=True,
                         preexec_fn=client_affinity(cpus)).stdout
    wall = time.monotonic() - t0
    server_cpu = proc_cpu_s(pid) - server_before
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    row = next(r for r in csv.DictReader(io.StringIO(out)) if r["test"] == "PING_MBULK")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "rps": float(row["rps"]),
        "p50_us": float(row["p50_latency_ms"]) * 1000,
        "p99_us": float(row["p99_latency_ms"]) * 1000,
        "mean_us": float(row["avg_latency_ms"]) * 1000,
        "client_us_per_req": cpu * 1e6 / requests,
        "server_cpu_pct": 100 * server_cpu / wall,
        "raw": out.strip().splitlines()[-1],
    }


def run_loadgen(port, pid, conns, pipeline, seconds, cpus):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [os.path.join(ROOT, "target", "release", "loadgen"), "run", "--addr", f"127.0.0.1:{port}",
               "--protocol", "resp", "--op", "ping", "--payload", "0", "-c", str(conns), "-p", str(pipeline),
               "-d", f"{seconds}s", "--warmup", "0.5s", "--server-pid", str(pid), "--json", f.name,
               "--progress", "never"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30,
                              preexec_fn=client_affinity(cpus))
        if done.returncode != 0:
            raise SystemExit(f"loadgen failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        r = json.load(f)
    return {
        "rps": r["throughput_rps"],
        "p50_us": r["latency_us"]["p50"],
        "p99_us": r["latency_us"]["p99"],
        "mean_us": r["latency_us"]["mean"],
        "client_us_per_req": r["client_cpu"]["us_per_request"],
        "server_cpu_pct": 100 * (r["server"]["cpu_user_s"] + r["server"]["cpu_system_s"]) / r["elapsed_s"],
        "raw": done.stdout.strip().splitlines()[1].strip(),
    }


def verbatim_pair(port, pid, seconds, requests, pinned):
    """One redis-benchmark run and one loadgen run at 50 connections, each client's output as
    it printed it, under the commands that made them (with `taskset -c 1` when pinned: the
    command a reader would type to repeat it)."""
    taskset = ["taskset", "-c", "1"] if pinned else []
    commands = [
        taskset + ["redis-benchmark", "-p", str(port), "-t", "ping_mbulk", "-c", "50", "-n", str(requests)],
        taskset + ["target/release/loadgen", "run", "--addr", f"127.0.0.1:{port}", "--protocol", "resp", "--op",
                   "ping", "--payload", "0", "-c", "50", "-d", f"{seconds:g}s", "--warmup", "0.5s",
                   "--server-pid", str(pid)],
    ]
    text = []
    for cmd in commands:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=seconds * 4 + 60)
        if done.returncode != 0:
            raise SystemExit(f"{cmd[len(taskset)]} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        # redis-benchmark redraws a progress line with carriage returns: keep what a terminal
        # would finally show, the text after each line's last \r.
        # (str.splitlines would split at \r too, and keep every redrawn line.)
        shown = [line.rsplit("\r", 1)[-1] for line in done.stdout.split("\n")]
        text += ["$ " + " ".join(cmd)] + [line for line in shown if line.strip()] + [""]
    return "\n".join(text)


def raw_line(rep, name, conns, depth, tool, client_cpu, s):
    return (f"{rep}\t{name}\t{conns}\t{depth}\t{tool}\t{client_cpu}\t{s['rps']:.0f}\t{s['p50_us']:.0f}"
            f"\t{s['p99_us']:.0f}\t{s['mean_us']:.0f}\t{s['client_us_per_req']:.2f}\t{s['server_cpu_pct']:.0f}"
            f"\t{s['raw']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0, help="loadgen's measured window per run")
    ap.add_argument("--results", help="results directory (default results/DATE-loadgen-vs-redis-benchmark)")
    ap.add_argument("--eventloop", action="store_true", help="also drive server-eventloop --protocol resp")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="let the scheduler place server and clients (default: server on CPU 0, clients on CPU 1)")
    args = ap.parse_args()
    pin = args.pin and os.cpu_count() >= 2
    server_cpus, client_cpus = ({0}, {1}) if pin else (None, None)
    build_release("echolab-servers", "echolab-loadgen")
    # Before the runs, not after: a dirty tree is refused before minutes are spent, and the
    # load average it notes is the machine's before this script loaded it.
    out = results_dir("loadgen-vs-redis-benchmark", args.results)

    servers = [("redis-server",) + start_redis()]
    if args.eventloop:
        proc, port = start_server("server-eventloop", "--protocol", "resp", "--backend", "epoll")
        servers.append(("server-eventloop", proc, port))
    # (connections, pipeline depth): latency-bound, throughput-bound, pipelined.
    shapes = [(1, 1), (50, 1), (50, 16)]
    samples = {}
    raw_lines = []
    pair = None
    if server_cpus:
        for _, proc, _ in servers:
            pin_all_threads(proc.pid, server_cpus)
    try:
        for rep in range(args.repeat):
            for name, proc, port in servers:
                for conns, depth in shapes:
                    for tool in ("redis-benchmark", "loadgen"):
                        if tool == "loadgen":
                            s = run_loadgen(port, proc.pid, conns, depth, args.seconds, client_cpus)
                        else:
                            # Size redis-benchmark's run to about the same length as loadgen's,
                            # from its previous rate (a first short run calibrates it).
                            key = (name, conns, depth, tool)
                            prev = samples.get(key, [{"rps": 20000}])[-1]["rps"]
                            n = max(10000, int(prev * args.seconds))
                            s = run_redis_benchmark(port, proc.pid, conns, depth, n, client_cpus)
                        samples.setdefault((name, conns, depth, tool), []).append(s)
                        raw_lines.append(raw_line(rep, name, conns, depth, tool, "1" if pin else "any", s))
                        print(raw_lines[-1], file=sys.stderr)
            if pin:
                # Placement: the one-connection round trip with the client on the server's
                # own CPU, beside the runs above with the client across CPUs.
                name, proc, port = servers[0]
                for tool in ("redis-benchmark", "loadgen"):
                    if tool == "loadgen":
                        s = run_loadgen(port, proc.pid, 1, 1, args.seconds, server_cpus)
                    else:
                        prev = samples.get((name, 1, 1, tool, "co-located"), [{"rps": 20000}])[-1]["rps"]
                        s = run_redis_benchmark(port, proc.pid, 1, 1, max(10000, int(prev * args.seconds)),
                                                server_cpus)
                    samples.setdefault((name, 1, 1, tool, "co-located"), []).append(s)
                    raw_lines.append(raw_line(rep, name, 1, 1, tool, "0", s))
                    print(raw_lines[-1], file=sys.stderr)
        name, proc, port = servers[0]
        rps = statistics.median(s["rps"] for s in samples[(name, 50, 1, "redis-benchmark")])
        pair = verbatim_pair(port, proc.pid, args.seconds, max(10000, int(rps * args.seconds)), pin)
    finally:
        for _, proc, _ in servers:
            proc.terminate()
            proc.wait(timeout=10)

    med = lambda key, field: statistics.median(s[field] for s in samples[key])  # noqa: E731
    placement = "server on CPU 0, client on CPU 1" if pin else "placed by the scheduler"
    lines = [f"Medians of {args.repeat} interleaved runs; loadgen measures {args.seconds} s after a 0.5 s warmup; "
             f"{placement}.",
             "", "| server | connections | pipeline | client | req/s | p50 µs | p99 µs | mean µs | client CPU µs/req | "
             "server CPU % |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for name, _, _ in servers:
        for conns, depth in shapes:
            for tool in ("redis-benchmark", "loadgen"):
                k = (name, conns, depth, tool)
                lines.append(f"| {name} | {conns} | {depth} | {tool} | {med(k, 'rps'):.0f} | {med(k, 'p50_us'):.0f} | "
                             f"{med(k, 'p99_us'):.0f} | {med(k, 'mean_us'):.0f} | {med(k, 'client_us_per_req'):.2f} | "
                             f"{med(k, 'server_cpu_pct'):.0f} |")
            a, b = (name, conns, depth, "loadgen"), (name, conns, depth, "redis-benchmark")
            lines.append(f"| | | | **loadgen / redis-benchmark** | **{med(a, 'rps') / med(b, 'rps'):.2f}** | "
                         f"**{med(a, 'p50_us') / max(med(b, 'p50_us'), 1):.2f}** | | | "
                         f"**{med(a, 'client_us_per_req') / med(b, 'client_us_per_req'):.2f}** | |")
    if pin:
        name = servers[0][0]
        lines += ["", f"Placement: {name}, one connection, the server on CPU 0 and the client on CPU 1 (the runs "
                  "above) or on CPU 0 with the server; medians of the same repetitions.", "",
                  "| client | p50 µs, client on CPU 1 | p50 µs, client on CPU 0 | req/s, CPU 1 | req/s, CPU 0 |",
                  "|---|---:|---:|---:|---:|"]
        for tool in ("redis-benchmark", "loadgen"):
            a, b = (name, 1, 1, tool), (name, 1, 1, tool, "co-located")
            lines.append(f"| {tool} | {med(a, 'p50_us'):.0f} | {med(b, 'p50_us'):.0f} | {med(a, 'rps'):.0f} | "
                         f"{med(b, 'rps'):.0f} |")
    lines += ["", "pair.txt: both clients' own output from one more pair of runs at 50 connections against "
              f"{servers[0][0]}, with their commands."]
    write_tsv(out, "raw.tsv", raw_lines,
              "rep\tserver\tconnections\tpipeline\tclient\tclient_cpu\trps\tp50_us\tp99_us\tmean_us\t"
              "client_us_per_req\tserver_cpu_pct\tclient_output")
    with open(os.path.join(out, "pair.txt"), "w") as f:
        f.write(pair)
    write_table(out, "\n".join(lines))


if __name__ == "__main__":
    main()
