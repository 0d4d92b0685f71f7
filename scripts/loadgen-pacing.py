#!/usr/bin/env python3
"""How precisely does loadgen keep its open-loop timetable?

Against server-eventloop (binary, 16 connections), first the closed-loop maximum is measured,
then open-loop runs at fixed rates and at half that maximum. For each rate the script reports
the latency from the schedule (corrected) beside the latency from the actual send
(uncorrected): when the client keeps its timetable and the server keeps up, the two medians
must agree, and the client's own lag (how late sends left) must be microseconds. wrk2, which
paces with whole-millisecond waits (round(us/1000 + 0.5) ms), can send up to a millisecond
late: arithmetic from its source, not measured here.

Each open-loop rate runs twice, with `--arrivals fixed` and `--arrivals poisson --seed N`
(a different seed per repetition): beside the latencies, the per-connection gap between sends
asked for (16 / rate) and measured, and the coefficient of variation of the gaps asked for
(0 fixed, 1 Poisson) and measured from the times the requests actually left.

Server on CPU 0, loadgen on CPU 1 (as in loadgen-vs-redis-benchmark.py); medians of --repeat
interleaved runs.

    python3 scripts/loadgen-pacing.py --repeat 3 --seconds 3
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lablib import (ROOT, build_release, client_affinity, pin_all_threads, results_dir, start_server,  # noqa: E402
                    write_table, write_tsv)

LOADGEN = os.path.join(ROOT, "target", "release", "loadgen")


def loadgen(port, seconds, cpus, *extra):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [LOADGEN, "run", "--addr", f"127.0.0.1:{port}", "-c", "16", "-d", f"{seconds}s", "--warmup", "0.5s",
               "--progress", "never", "--json", f.name, *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30,
                              preexec_fn=client_affinity(cpus))
        if done.returncode not in (0, 3):
            raise SystemExit(f"loadgen failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return json.load(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--results", help="results directory (default results/DATE-loadgen-pacing)")
    args = ap.parse_args()
    build_release("echolab-servers", "echolab-loadgen")
    # Before the runs, not after: a dirty tree is refused before minutes are spent, and the
    # load average it notes is the machine's before this script loaded it.
    out = results_dir("loadgen-pacing", args.results)
    pin = os.cpu_count() >= 2
    server_cpus, client_cpus = ({0}, {1}) if pin else (None, None)

    proc, port = start_server("server-eventloop", "--backend", "epoll")
    if server_cpus:
        pin_all_threads(proc.pid, server_cpus)
    raw = []
    try:
        closed = [loadgen(port, args.seconds, client_cpus) for _ in range(args.repeat)]
        peak = statistics.median(r["throughput_rps"] for r in closed)
        # The closed loop's client CPU per request, beside which the open loop's is read:
        # pacing costs the client CPU where sends are sparse (docs/loadgen.md).
        closed_cpu = statistics.median(r["client_cpu"]["us_per_request"] for r in closed)
        for rep, r in enumerate(closed):
            # Closed-loop rows: latency runs from the send, and there is no schedule to lag.
            raw.append(f"{rep}\tclosed\t\t{r['throughput_rps']}\t\t{r['latency_us']['p50']}\t\t{r['latency_us']['p99']}"
                       f"\t\t\t{r['client_cpu']['us_per_request']}\t{r['valid']}")
            print(raw[-1], file=sys.stderr)
        rates = [1000, 10000, int(peak / 2)]
        processes = ["fixed", "poisson"]
        samples = {(r, p): [] for r in rates for p in processes}
        for rep in range(args.repeat):
            for rate in rates:
                for process in (processes if rep % 2 == 0 else processes[::-1]):
                    seed = ["--seed", str(rep + 1)] if process == "poisson" else []
                    r = loadgen(port, args.seconds, client_cpus, "--rate", str(rate), "--arrivals", process, *seed)
                    a = r["open_loop"]["arrivals"]
                    s = {
                        "achieved": r["open_loop"]["achieved_rps"],
                        "corr_p50": r["latency_us"]["p50"],
                        "raw_p50": r["latency_uncorrected_us"]["p50"],
                        "corr_p99": r["latency_us"]["p99"],
                        "raw_p99": r["latency_uncorrected_us"]["p99"],
                        "lag_p50": r["open_loop"]["lag_us"]["p50"],
                        "lag_p99": r["open_loop"]["lag_us"]["p99"],
                        "cpu": r["client_cpu"]["us_per_request"],
                        "valid": r["valid"],
                        "gap": a["gap_us"],
                        "measured_gap": a["measured_gap_us"],
                        "cv": a["cv"],
                        "measured_cv": a["measured_cv"],
                    }
                    samples[(rate, process)].append(s)
                    raw.append(f"{rep}\t{rate}\t{process}\t" + "\t".join(str(s[k]) for k in s))
                    print(raw[-1], file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    med = lambda cell, k: statistics.median(s[k] for s in samples[cell])  # noqa: E731
    placement = "server on CPU 0, loadgen on CPU 1" if pin else "placed by the scheduler"
    lines = [f"server-eventloop (epoll, binary), 16 connections, {args.seconds} s per run, {placement}; "
             f"closed-loop maximum {peak:.0f} req/s at {closed_cpu:.1f} µs of client CPU per request (medians of "
             f"{args.repeat}); medians of {args.repeat} "
             "interleaved runs per rate.", "",
             "| target req/s | arrivals | sent req/s | p50 from schedule µs | p50 from send µs | difference µs | "
             "p99 from schedule µs | p99 from send µs | client lag p50 µs | client lag p99 µs | "
             "gap per connection µs, asked / sent | CV of gaps, asked / sent | client CPU µs/req | valid runs |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for rate in rates:
        for process in processes:
            c = (rate, process)
            valid = sum(s["valid"] for s in samples[c])
            lines.append(f"| {rate} | {process} | {med(c, 'achieved'):.0f} | {med(c, 'corr_p50'):.0f} | "
                         f"{med(c, 'raw_p50'):.0f} | {med(c, 'corr_p50') - med(c, 'raw_p50'):.0f} | "
                         f"{med(c, 'corr_p99'):.0f} | {med(c, 'raw_p99'):.0f} | {med(c, 'lag_p50'):.0f} | "
                         f"{med(c, 'lag_p99'):.0f} | {med(c, 'gap'):.0f} / {med(c, 'measured_gap'):.0f} | "
                         f"{med(c, 'cv'):.2f} / {med(c, 'measured_cv'):.2f} | {med(c, 'cpu'):.1f} | "
                         f"{valid}/{len(samples[c])} |")
    write_tsv(out, "raw.tsv", raw, "rep\trate\tarrivals\tachieved\tcorr_p50\traw_p50\tcorr_p99\traw_p99\tlag_p50"
              "\tlag_p99\tcpu_us_per_req\tvalid\tgap_us\tmeasured_gap_us\tcv\tmeasured_cv")
    write_table(out, "\n".join(lines))


if __name__ == "__main__":
    main()
