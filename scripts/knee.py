#!/usr/bin/env python3
"""Issue 15: where is the knee? Latency against offered load on a server whose cost is known,
against the queueing textbook.

server-eventloop is one thread: with `--op spin:S` every request holds it for S µs of CPU, so
it is a single server with a fixed service time D (a little over S). `loadgen sweep` measures
its closed-loop capacity (1/D), then offers 10%, 20%, ... 110% of it, fixed and Poisson
arrivals side by side at each rate, in rounds whose medians are the figures. Beside each
measured p50 and p99 this prints what the textbook predicts for the time in the system:
- fixed arrivals (D/D/1): nobody waits below 100%, so every percentile is D;
- Poisson arrivals (M/D/1): the waiting time's distribution is Erlang's (1909),
  P(W <= t) = (1 - rho) * sum_{k=0}^{floor(t/D)} (lambda (kD - t))^k / k! * exp(-lambda (kD - t)),
  computed here in 80-digit decimals (the alternating sum cancels badly in floats); the time
  in the system is W + D.
The measured figures add what the model leaves out (the client, the kernel, the loopback):
compare their shapes, and the excess at low load.

The server and loadgen are placed by the scheduler unless --pin puts the server on CPU 0 and
loadgen on CPU 1: in a spot check at half of a SPIN 500 server's capacity, fixed arrivals,
pinned runs had p99s of 3.8-4.0 ms where unpinned ones had 0.7-1.1 ms (on this 2-vCPU VM,
whose host steals CPU time once both vCPUs are busy).

    python3 scripts/knee.py [--spin-us 200] [--repeat 5] [--seconds 3] [--pin]
Writes results/DATE-knee/ (table.md, sweep.json: loadgen sweep's own report, machine.txt).
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from decimal import Decimal, getcontext

from lablib import ROOT, build_release, client_affinity, pin_all_threads, results_dir, start_server, write_table

LOADGEN = os.path.join(ROOT, "target", "release", "loadgen")
getcontext().prec = 80


def md1_wait_cdf(t, rho):
    """P(W <= t) for M/D/1 with D = 1 and utilisation rho (Erlang's formula)."""
    lam, t = Decimal(rho), Decimal(t)
    total = Decimal(0)
    k = 0
    while k <= t:
        x = lam * (k - t)
        total += (x ** k if k else Decimal(1)) / Decimal(math.factorial(k)) * (-x).exp()
        k += 1
    return (1 - Decimal(rho)) * total


def md1_wait_quantile(q, rho):
    """The q-quantile of the M/D/1 waiting time, in units of D (bisection on the CDF)."""
    if md1_wait_cdf(0, rho) >= q:
        return 0.0
    lo, hi = 0.0, 1.0
    while md1_wait_cdf(hi, rho) < q:
        hi *= 2
    for _ in range(50):
        mid = (lo + hi) / 2
        if md1_wait_cdf(mid, rho) >= q:
            hi = mid
        else:
            lo = mid
    return hi


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--spin-us", type=int, default=200, help="CPU per request, µs (default 200)")
    p.add_argument("--repeat", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--seconds", type=float, default=3.0, help="measured time per run (default 3)")
    p.add_argument("--pin", action="store_true", help="server on CPU 0, loadgen on CPU 1")
    p.add_argument("--results", help="write here instead of results/DATE-knee")
    args = p.parse_args()

    build_release("echolab-servers", "echolab-loadgen")
    out = results_dir("knee", args.results)
    cpus = os.cpu_count() or 1
    server_cpus, client_cpus = ({0}, {1}) if args.pin and cpus >= 2 else (None, None)
    d_us = args.spin_us
    slo_us = 4 * d_us
    proc, port = start_server("server-eventloop")
    try:
        if server_cpus:
            pin_all_threads(proc.pid, server_cpus)
        with tempfile.TemporaryDirectory() as tmp:
            report_path = os.path.join(tmp, "sweep.json")
            cmd = [LOADGEN, "sweep", "--addr", f"127.0.0.1:{port}", "--op", f"spin:{d_us}", "-c", "8", "-p", "4",
                   "--slo-p99", f"{slo_us}us", "--from", "0.1", "--to", "1.1", "--points", "11",
                   "-d", f"{args.seconds}s", "--warmup", "500ms", "--capacity-duration", f"{args.seconds}s",
                   "--repeat", str(args.repeat), "--server-pid", str(proc.pid), "--json", report_path]
            print(" ".join(cmd[1:]), file=sys.stderr)
            done = subprocess.run(cmd, check=False, preexec_fn=client_affinity(client_cpus))
            shutil.copy(report_path, os.path.join(out, "sweep.json"))
            report = json.load(open(report_path))
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    cap = report["capacity"]
    service_us = 1e6 / cap["rps"]
    curves = {c["arrivals"]: c for c in report["curves"]}
    placement = "server on CPU 0, loadgen on CPU 1" if server_cpus else "placed by the scheduler"
    lines = [
        f"server-eventloop (one thread) answering SPIN {d_us} µs over binary, 8 connections, pipeline 4; "
        f"{placement}; `loadgen sweep` with {args.seconds:g} s runs after 0.5 s warmup, medians of "
        f"{args.repeat} rounds, fixed and Poisson arrivals side by side at each rate.",
        "",
        f"Closed-loop capacity {cap['rps']:.0f} req/s (runs: {', '.join(f'{r:.0f}' for r in cap['runs'])}), so the "
        f"service time D = 1/capacity = {service_us:.0f} µs; the server's CPU per request "
        f"{(cap.get('server_cpu_us') or 0):.0f} µs. SLO p99 <= {slo_us} µs (4 x SPIN).",
        "",
        "| offered | of capacity | fixed p50 µs | fixed p99 µs | D/D/1 p99 µs | Poisson p50 µs | Poisson p99 µs "
        "| M/D/1 p50 µs | M/D/1 p99 µs | Poisson p99.9 µs | M/D/1 p99.9 µs |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(pt, key):
        if pt["runs"] == 0:
            return "not run"
        if not pt["achieved"]:
            return "not achieved"
        return f"{pt[key]}"

    for i, f in enumerate(report["params"]["fractions"]):
        fx = curves["fixed"]["points"][i]
        po = curves["poisson"]["points"][i]
        if f < 1.0:
            model = [service_us * (1 + md1_wait_quantile(q, f)) for q in (0.5, 0.99, 0.999)]
            m50, m99, m999 = (f"{v:.0f}" for v in model)
            dd1 = f"{service_us:.0f}"
        else:
            m50 = m99 = m999 = dd1 = "unbounded"
        lines.append(f"| {fx['offered_rps']:.0f} | {f:.0%} | {cell(fx, 'p50_us')} | {cell(fx, 'p99_us')} | {dd1} | "
                     f"{cell(po, 'p50_us')} | {cell(po, 'p99_us')} | {m50} | {m99} | {cell(po, 'p999_us')} | {m999} |")
    lines.append("")
    for name in ("fixed", "poisson"):
        k = curves[name]["knee"]
        lines.append(f"Knee with {name} arrivals: " + (
            f"{k['offered_rps']:.0f} req/s, {k['utilisation']:.0%} of capacity (p99 {k['p99_us']} µs)."
            if k else "none (even the lowest rate missed the SLO)."))
    if done.returncode != 0 or report.get("errors"):
        # The figures stay, but a run with errors is not the queue the model describes.
        lines.append("")
        lines.append(f"**The sweep exited {done.returncode}** (errors: {report.get('errors')}; notes: "
                     f"{'; '.join(report.get('notes', [])) or 'none'}): read the figures with that in mind.")
    lines.append("")
    lines.append(f"Made by `python3 scripts/knee.py --spin-us {d_us} --repeat {args.repeat} --seconds {args.seconds:g}"
                 f"{' --pin' if args.pin else ''}`.")
    write_table(out, "\n".join(lines))


if __name__ == "__main__":
    main()
