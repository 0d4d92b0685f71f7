#!/usr/bin/env python3
"""Issue 13: lost or twice? What a broken connection does to an INCR, on every model.

For each of the nine server variants, each fault phase, each retry policy and dedup off and on,
this starts a fresh server, puts `loadgen proxy` between it and loadgen, and runs an `incr`
load through it. The proxy cuts the connection at a rate per message, with a seed:

- request: it forwards part of a request and closes, so the server never runs it;
- response: it forwards the request, drops the server's reply and closes, so the server ran it
  and the client never learns;
- kill (fork and prefork only, no proxy): SIGKILL a child or worker every --kill-every while
  each INCR holds the table's lock for --kill-hold-us after writing the counter and before
  writing its record (`--debug-lock-hold-ns`), so most kills land after the increment ran and
  before its reply left: the response-path fault, made by a dying process. A run lasts
  --kill-seconds.

loadgen ends every request as ok, failed (certainly not run) or indeterminate (written, no
reply), then reads every counter back and compares it with the increments it saw acknowledged:
lost and duplicated increments, exact where it can be, bounds where it cannot.

Then the cost of dedup: the same incr load with no fault, dedup off and on, interleaved, and
the size of the server's table per client.

    python3 scripts/exactly-once.py [--requests 3000] [--rate 0.01] [--repeat 3] [--seconds 3]
Writes results/DATE-exactly-once/ (table.md, raw.tsv, cost.tsv, machine.txt).
"""
import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import tempfile
import threading

from lablib import ROOT, build_release, results_dir, start_server, write_table, write_tsv

VARIANTS = [
    ("thread", ["server-thread"]),
    ("thread --pool 4", ["server-thread", "--pool", "4"]),
    ("fork", ["server-fork"]),
    ("prefork shared", ["server-prefork", "--workers", "4", "--accept", "shared"]),
    ("prefork locked", ["server-prefork", "--workers", "4", "--accept", "locked"]),
    ("prefork reuseport", ["server-prefork", "--workers", "4", "--accept", "reuseport"]),
    ("eventloop select", ["server-eventloop", "--backend", "select"]),
    ("eventloop poll", ["server-eventloop", "--backend", "poll"]),
    ("eventloop epoll", ["server-eventloop", "--backend", "epoll"]),
]
FORKING = {"fork", "prefork shared", "prefork locked", "prefork reuseport"}
POLICIES = ["never", "safe", "always"]
LOADGEN = os.path.join(ROOT, "target", "release", "loadgen")


def start_proxy(port, phase, rate, seed):
    """`loadgen proxy` in front of 127.0.0.1:PORT, cutting PHASE at RATE: (process, its port)."""
    cut = {"request": ["--cut-request", str(rate)], "response": ["--cut-response", str(rate)]}[phase]
    stats = tempfile.NamedTemporaryFile(suffix=".json", delete=False)
    proc = subprocess.Popen([LOADGEN, "proxy", "--upstream", f"127.0.0.1:{port}", *cut,
                             "--seed", str(seed), "--stats-file", stats.name],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"loadgen proxy did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1]), stats.name


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def children(pid):
    """The pids of PID's children (a fork server's connection children, prefork's workers)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def killer(server_pid, every_s, stop_event, rng, kills):
    """SIGKILLs one random child of the server every EVERY_S until STOP_EVENT."""
    while not stop_event.wait(every_s):
        kids = children(server_pid)
        if kids:
            try:
                os.kill(rng.choice(kids), signal.SIGKILL)
                kills.append(1)
            except ProcessLookupError:
                pass


def loadgen_run(port, flags):
    """One loadgen run; its JSON report."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([LOADGEN, "run", "--addr", f"127.0.0.1:{port}", *flags, "--progress", "never",
                        "--json", out.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        return json.load(open(out.name))


def fault_cell(name, server, phase, policy, dedup, args, seed):
    """One cell of the matrix: the report's outcome counts and counter check."""
    extra = ["--debug-lock-hold-ns", str(args.kill_hold_us * 1000)] if phase == "kill" else []
    with tempfile.NamedTemporaryFile(suffix=".json") as sstats:
        proc, port = start_server(*server, "--dedup", dedup, "--stats-file", sstats.name, *extra)
        length = ["-d", f"{args.kill_seconds}s"] if phase == "kill" else ["--requests", str(args.requests)]
        flags = ["--op", "incr", "--keys", str(args.keys), "-c", str(args.connections), *length,
                 "--warmup", "0s", "--retry", policy, "--timeout", "2s", "--max-attempts", str(args.max_attempts)]
        kills = []
        try:
            if phase == "kill":
                stop_event = threading.Event()
                t = threading.Thread(target=killer, args=(proc.pid, args.kill_every, stop_event,
                                                          random.Random(seed), kills))
                t.start()
                try:
                    report = loadgen_run(port, flags)
                finally:
                    stop_event.set()
                    t.join()
                cuts = len(kills)
            else:
                pproc, pport, pstats = start_proxy(port, phase, args.rate, seed)
                try:
                    report = loadgen_run(pport, flags)
                finally:
                    stop(pproc)
                pst = json.load(open(pstats))
                os.unlink(pstats)
                cuts = pst["cut_request"] + pst["cut_response"]
        finally:
            stop(proc)
        server_stats = json.load(open(sstats.name))
    return report, cuts, server_stats


def cost_run(server, dedup, args):
    """Throughput and p99 of an incr load with no fault; the server's stats."""
    with tempfile.NamedTemporaryFile(suffix=".json") as sstats:
        proc, port = start_server(*server, "--dedup", dedup, "--stats-file", sstats.name)
        try:
            report = loadgen_run(port, ["--op", "incr", "--keys", str(args.keys), "-c", str(args.connections),
                                        "-d", f"{args.seconds}s", "--warmup", "1s"])
        finally:
            stop(proc)
        return report, json.load(open(sstats.name))


def table_bytes(clients):
    """The session table's size, as the server reports it, with --dedup-clients CLIENTS."""
    with tempfile.NamedTemporaryFile(suffix=".json") as sstats:
        proc, _ = start_server("server-eventloop", "--dedup-clients", str(clients), "--stats-file", sstats.name)
        stop(proc)
        return json.load(open(sstats.name))["sessions"]["table_bytes"]


def bounds(b):
    lo, hi = b["min"], b["max"]
    return f"{lo}" if lo == hi else f"{lo}..{hi}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=3000, help="INCRs per fault cell")
    ap.add_argument("--rate", type=float, default=0.01, help="the proxy's cut probability per message")
    ap.add_argument("--keys", type=int, default=16)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--max-attempts", type=int, default=8)
    ap.add_argument("--kill-every", type=float, default=0.1, help="seconds between SIGKILLs")
    ap.add_argument("--kill-hold-us", type=int, default=200, help="lock held per INCR in the kill phase")
    ap.add_argument("--kill-seconds", type=int, default=2, help="length of a kill run")
    ap.add_argument("--repeat", type=int, default=3, help="runs per cost cell")
    ap.add_argument("--seconds", type=int, default=3, help="length of a cost run")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--results", default=os.environ.get("RESULTS"))
    args = ap.parse_args()
    build_release("echolab-servers", "echolab-loadgen")
    path = results_dir("exactly-once", args.results)

    raw = ["variant\tphase\tretry\tdedup\tcuts\tsent\tok\tfailed\tindeterminate\tretries\tacknowledged"
           "\tvalue_sum\tlost_min\tlost_max\tduplicated_min\tduplicated_max\texactly_once\treplayed\ttoo_old"
           "\tlock_recoveries"]
    cells = {}
    seed = args.seed
    for name, server in VARIANTS:
        phases = ["request", "response"] + (["kill"] if name in FORKING else [])
        for phase in phases:
            for dedup in ["off", "on"]:
                for policy in POLICIES:
                    seed += 1
                    report, cuts, sst = fault_cell(name, server, phase, policy, dedup, args, seed)
                    c, k, s = report["counts"], report["counters"], sst.get("sessions", {})
                    cells[(name, phase, dedup, policy)] = (c, k, cuts, s)
                    raw.append("\t".join(str(x) for x in [
                        name, phase, policy, dedup, cuts, c["sent"], c["ok"], c["failed"], c["indeterminate"],
                        c["retries"], k["acknowledged"], k["value_sum"], k["lost"]["min"],
                        k["lost"]["max"], k["duplicated"]["min"], k["duplicated"]["max"], k["exactly_once"],
                        s.get("replayed", ""), s.get("too_old", ""), s.get("lock_recoveries", "")]))
                    print(raw[-1], flush=True)
    write_tsv(path, "raw.tsv", raw)

    cost_raw = ["variant\tdedup\trep\trequests_per_s\tp99_us\ttable_bytes\tdedup_clients"]
    cost = {}
    for rep in range(args.repeat):
        for name, server in VARIANTS:
            for dedup in (["off", "on"] if rep % 2 == 0 else ["on", "off"]):
                report, sst = cost_run(server, dedup, args)
                rps = report["throughput_rps"]
                p99 = report["latency_us"]["p99"]
                s = sst.get("sessions", {})
                cost.setdefault((name, dedup), []).append((rps, p99, s.get("table_bytes", 0)))
                cost_raw.append(f"{name}\t{dedup}\t{rep}\t{rps:.0f}\t{p99}\t{s.get('table_bytes', '')}"
                                f"\t{s.get('clients_capacity', '')}")
    write_tsv(path, "cost.tsv", cost_raw)

    lines = ["### Outcomes under faults", "",
             "Each cell: ok / failed / indeterminate requests, then lost and duplicated increments from "
             "the counters (a range where loadgen cannot tell), and ✓ where every counter equals its "
             "acknowledged increments with nothing indeterminate.", ""]
    for phase in ["request", "response", "kill"]:
        what = "SIGKILLs" if phase == "kill" else "cuts"
        lines += [f"**Fault: {phase}**", "",
                  f"| variant | {what} | dedup | never | safe | always |", "|---|---:|---|---|---|---|"]
        for name, _ in VARIANTS:
            for dedup in ["off", "on"]:
                if (name, phase, dedup, "never") not in cells:
                    continue
                row = [name, "", dedup]
                cut_counts = []
                for policy in POLICIES:
                    c, k, cuts, st = cells[(name, phase, dedup, policy)]
                    cut_counts.append(cuts)
                    mark = " ✓" if k["exactly_once"] else ""
                    extra = f", replayed {st.get('replayed', 0)}" if dedup == "on" else ""
                    if phase == "kill":
                        extra += f", lock recovered {st.get('lock_recoveries', 0)}"
                    row.append(f"{c['ok']}/{c['failed']}/{c['indeterminate']}, lost {bounds(k['lost'])}, "
                               f"dup {bounds(k['duplicated'])}{extra}{mark}")
                row[1] = "/".join(str(x) for x in cut_counts)
                lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    small, large = table_bytes(4096), table_bytes(8192)
    per_client = (large - small) / 4096
    lines += ["### What dedup costs (no fault)", "",
              "| variant | requests/s off | on | on/off | p99 off | p99 on |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, _ in VARIANTS:
        off, on = cost[(name, "off")], cost[(name, "on")]
        r_off = statistics.median(x[0] for x in off)
        r_on = statistics.median(x[0] for x in on)
        p_off = statistics.median(x[1] for x in off)
        p_on = statistics.median(x[1] for x in on)
        lines.append(f"| {name} | {r_off:.0f} | {r_on:.0f} | {r_on / r_off:.2f} | {p_off} µs | {p_on} µs |")
    lines += ["", f"Memory: the table is {small} bytes with the default 4096 clients and {large} with 8192, "
              f"as the servers report it (`sessions.table_bytes`): {per_client:.0f} bytes per client slot "
              f"(the default --dedup-window 128 records), reserved at start whatever the clients do."]
    lines += ["", f"Made by `scripts/exactly-once.py --requests {args.requests} --rate {args.rate} "
              f"--repeat {args.repeat} --seconds {args.seconds}`: a fresh server per cell; fault cells run "
              f"`loadgen run --op incr --keys {args.keys} -c {args.connections} --requests {args.requests} "
              f"--retry POLICY --max-attempts {args.max_attempts}` through `loadgen proxy` (seeds from "
              f"{args.seed + 1}); kill cells run {args.kill_seconds} s and SIGKILL a child every {args.kill_every} s "
              f"with `--debug-lock-hold-ns {args.kill_hold_us * 1000}`; cost cells are medians of {args.repeat} "
              f"interleaved runs of {args.seconds} s."]
    write_table(path, "\n".join(lines))


if __name__ == "__main__":
    main()
