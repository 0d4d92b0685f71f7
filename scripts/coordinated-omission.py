#!/usr/bin/env python3
"""Coordinated omission, measured: what a server frozen for one second does to each way of
measuring latency.

server-eventloop is stopped with SIGSTOP for --freeze seconds in the middle of a --seconds
loadgen run (10 connections), then resumed with SIGCONT. The same freeze is measured three
ways: loadgen's open loop at --rate req/s from the schedule (the corrected figure), the same
run's latency from the actual send (uncorrected, as most clients measure), and a closed loop
(as redis-benchmark drives a server). The open loop's tail shows the freeze because every
request due during it waited; the other two show it only in the maximum, because the client
stopped sending. docs/loadgen.md quotes this table; loadgen/tests/coordinated_omission.rs
asserts the same contrast with looser thresholds on every CI run.

Each run gets a fresh server (a resumed server carries nothing over, but a fresh one makes
every run the same). Server on CPU 0, loadgen on CPU 1, as in the other loadgen proofs; open
and closed runs alternate and each figure is the median of --repeat runs. The open-loop runs'
.hgrm files (latency from the schedule, HdrHistogram's text format) are kept beside raw.tsv:
the share of requests that waited 10 ms or more is read from them.

    python3 scripts/coordinated-omission.py --repeat 3 --seconds 5
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lablib import (ROOT, build_release, client_affinity, pin_all_threads, results_dir, start_server,  # noqa: E402
                    write_table, write_tsv)

LOADGEN = os.path.join(ROOT, "target", "release", "loadgen")
CONNECTIONS = 10
WARMUP_S = 0.5
# A request slower than this waited for the freeze: no reply takes 10 ms from an idle event
# loop on loopback, and a freeze of a second puts every request due during it far above.
WAITED_US = 10_000
FIELDS = ("p50", "p90", "p99", "p999", "max")


def fmt_us(us):
    """µs as loadgen prints them (report.rs, fmt_us): 25µs, 514.30ms, 1.00s."""
    if us < 1_000:
        return f"{us:.0f}µs"
    if us < 1_000_000:
        return f"{us / 1e3:.2f}ms"
    return f"{us / 1e6:.2f}s"


def share_at_least(hgrm_path, value_us):
    """The fraction of recorded requests at or above VALUE_US, from a .hgrm percentile
    distribution (values in ms): one minus the percentile of the last line below it."""
    below = 0.0
    with open(hgrm_path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3 or line.startswith("#") or parts[0] == "Value":
                continue
            if float(parts[0]) * 1000 >= value_us:
                break
            below = float(parts[1])
    return 1.0 - below


def run_with_a_freeze(args, rate, hgrm, client_cpus, server_cpus):
    """One loadgen run against a fresh server frozen in the middle of the measured window;
    returns (loadgen's JSON, the freeze as the script timed it, in s)."""
    proc, port = start_server("server-eventloop", "--backend", "epoll")
    if server_cpus:
        pin_all_threads(proc.pid, server_cpus)
    extra = ["--rate", str(rate), "--hgrm", hgrm] if rate else []
    try:
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            # --timeout above the freeze: a request held by the stopped server is late, not
            # failed, and must be counted with its full wait.
            cmd = [LOADGEN, "run", "--addr", f"127.0.0.1:{port}", "-c", str(CONNECTIONS), "-d", f"{args.seconds}s",
                   "--warmup", f"{WARMUP_S}s", "--timeout", f"{args.freeze + 4}s", "--progress", "never",
                   "--json", f.name, *extra]
            started = time.monotonic()
            lg = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  preexec_fn=client_affinity(client_cpus))
            # The freeze sits in the middle of the measured window, which starts after the
            # warmup; loadgen's own start (a few ms) only shifts it by as much.
            freeze_at = WARMUP_S + (args.seconds - args.freeze) / 2
            time.sleep(max(0.0, freeze_at - (time.monotonic() - started)))
            os.kill(proc.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            time.sleep(args.freeze)
            os.kill(proc.pid, signal.SIGCONT)
            frozen = time.monotonic() - stopped
            out, err = lg.communicate(timeout=args.seconds + args.freeze + 30)
            # Exit 3 is an open-loop run the client could not keep on time (a busy machine): its
            # latencies still show the freeze, and the table counts the valid runs. Errors (1)
            # would mean requests were lost, and the figures incomplete.
            if lg.returncode not in (0, 3):
                raise SystemExit(f"loadgen failed ({lg.returncode}):\n{out}{err}")
            r = json.load(f)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    # The freeze must have fallen inside the measured window: some second saw a reply that
    # waited for most of it (as the test checks).
    if not any(i.get("max_us", 0) >= 0.9 * args.freeze * 1e6 for i in r["intervals"]):
        raise SystemExit(f"no measured second shows the freeze (loadgen started late?):\n{out}")
    return r, frozen


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0, help="loadgen's measured window per run")
    ap.add_argument("--freeze", type=float, default=1.0, help="how long the server stays stopped, s")
    ap.add_argument("--rate", type=int, default=2000, help="the open loop's rate, req/s")
    ap.add_argument("--results", help="results directory (default results/DATE-coordinated-omission)")
    args = ap.parse_args()
    if not 0 < args.freeze < args.seconds:
        ap.error("--freeze must be shorter than --seconds")
    build_release("echolab-servers", "echolab-loadgen")
    pin = os.cpu_count() >= 2
    server_cpus, client_cpus = ({0}, {1}) if pin else (None, None)
    # Checked before the runs, not after: a dirty tree is refused before a minute is spent.
    out = results_dir("coordinated-omission", args.results)

    rows = {"open, from the schedule": [], "open, from the actual send": [], "closed": []}
    raw = []
    for rep in range(args.repeat):
        hgrm = os.path.join(out, f"open-{rep}.hgrm")
        r, frozen = run_with_a_freeze(args, args.rate, hgrm, client_cpus, server_cpus)
        waited = share_at_least(hgrm, WAITED_US)
        for name, key in (("open, from the schedule", "latency_us"), ("open, from the actual send",
                                                                     "latency_uncorrected_us")):
            s = {k: r[key][k] for k in FIELDS + ("count",)}
            s.update(frozen=frozen, valid=r["valid"], waited=waited if key == "latency_us" else None)
            rows[name].append(s)
        r, frozen = run_with_a_freeze(args, None, None, client_cpus, server_cpus)
        s = {k: r["latency_us"][k] for k in FIELDS + ("count",)}
        s.update(frozen=frozen, valid=True, waited=None)
        rows["closed"].append(s)
        for name in rows:
            s = rows[name][-1]
            waited = "" if s["waited"] is None else f"{s['waited']:.4f}"
            raw.append(f"{rep}\t{name}\t{s['frozen']:.3f}\t{s['count']}\t" + "\t".join(str(s[k]) for k in FIELDS)
                       + f"\t{waited}\t{s['valid']}")
            print(raw[-1], file=sys.stderr)

    med = lambda name, k: statistics.median(s[k] for s in rows[name])  # noqa: E731
    placement = "server on CPU 0, loadgen on CPU 1" if pin else "placed by the scheduler"
    frozen = statistics.median(s["frozen"] for s in rows["closed"] + rows["open, from the schedule"])
    lines = [f"server-eventloop (epoll, binary), {CONNECTIONS} connections, {args.seconds:g} s measured after a "
             f"{WARMUP_S:g} s warmup, the server stopped (SIGSTOP) for {args.freeze:g} s in the middle of the window "
             f"(median freeze as timed: {frozen:.3f} s); open loop at {args.rate} req/s; {placement}; medians of "
             f"{args.repeat} runs of each loop, alternated.", "",
             "| loop, latency measured | requests | p50 | p90 | p99 | p99.9 | max | waited ≥ 10 ms | valid runs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in rows:
        waited = "" if name != "open, from the schedule" else f"{100 * med(name, 'waited'):.1f}%"
        valid = sum(bool(s["valid"]) for s in rows[name])
        lines.append(f"| {name} | {med(name, 'count'):.0f} | " + " | ".join(fmt_us(med(name, k)) for k in FIELDS)
                     + f" | {waited} | {valid}/{len(rows[name])} |")
    lines += ["", f"The share that waited ≥ 10 ms is read from the open-loop runs' open-REP.hgrm (latency from the "
              f"schedule); a freeze of {args.freeze:g} s in {args.seconds:g} s holds {100 * args.freeze / args.seconds:.0f}% "
              "of the timetable."]
    write_tsv(out, "raw.tsv", raw, "rep\tmeasured\tfreeze_s\tcount\t" + "\t".join(f"{k}_us" for k in FIELDS) + "\twaited_10ms\tvalid")
    write_table(out, "\n".join(lines))


if __name__ == "__main__":
    main()
