#!/usr/bin/env python3
"""How late does a sleeping thread wake on this machine? The figure behind loadgen's early
wake-up: an open-loop thread arms its timer early by about this much and spins the rest
(loadgen/src/engine.rs, WAKE_MARGIN_START_NS), and without that margin every paced send
would leave this late.

Measured with cyclictest (rt-tests), the standard tool for it, rather than a home-made loop:
one thread sleeps until an absolute CLOCK_MONOTONIC deadline (clock_nanosleep with
TIMER_ABSTIME, as loadgen's timerfd uses TFD_TIMER_ABSTIME), every --intervals µs, and
records how late it woke. It runs as loadgen's threads do, not as cyclictest's defaults
would: an ordinary thread (SCHED_OTHER, not real-time), on CPU 1 (where the loadgen proofs
put the client), with timer slack 1 ns (loadgen sets it with prctl; this script sets its
own, which cyclictest inherits), and with power management left alone (--default-system: cyclictest would
otherwise hold /dev/cpu_dma_latency at 0, keeping CPUs out of the deep idle states a real
wake-up leaves). Intervals alternate and each figure is the median of --repeat runs; each
run's cyclictest histogram (1 µs buckets) is kept as JSON.

Needs rt-tests (Debian: apt-get install rt-tests).

    python3 scripts/wakeup-latency.py --repeat 3 --seconds 10
"""
import argparse
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lablib import results_dir, write_table, write_tsv  # noqa: E402

PR_SET_TIMERSLACK = 29
# cyclictest's histogram covers this many µs; later wake-ups are counted as overflows and
# enter the percentiles as this value (so a p99 here would read "≥ HIST_US").
HIST_US = 10_000


def loadgen_timer_slack():
    """Sets this script's timer slack to loadgen's 1 ns (engine.rs), so cyclictest gets it.

    Set here, in the parent, not in the child before exec: a child takes its parent's slack
    as its *default* at fork, and cyclictest briefly makes itself SCHED_FIFO on start, then
    SCHED_OTHER again, and the kernel resets the slack to that default on the way back. A
    slack set only in the child would be lost there, and the default 50 µs measured."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_TIMERSLACK)")


def percentile(hist, overflows, q):
    """The value at quantile Q of a {µs: count} histogram whose overflows lie above it all."""
    total = sum(hist.values()) + overflows
    seen = 0
    for us in sorted(hist):
        seen += hist[us]
        if seen >= q * total:
            return us
    return HIST_US


def run(interval_us, seconds, cpu, json_path):
    loops = max(100, int(seconds * 1e6 / interval_us))
    cmd = ["cyclictest", "--policy=other", "-t", "1", "-i", str(interval_us), "-l", str(loops), "-h", str(HIST_US),
           "-q", "--default-system", f"--json={json_path}"]
    if cpu is not None:
        cmd += ["-a", str(cpu)]
    # -p is left out on purpose: cyclictest turns any priority into SCHED_FIFO.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 3 + 30)
    if done.returncode != 0:
        raise SystemExit(f"cyclictest failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    with open(json_path) as f:
        thread = json.load(f)["thread"]["0"]
    hist = {int(k): v for k, v in thread["histogram"].items()}
    overflows = thread["cycles"] - sum(hist.values())
    return {
        "cycles": thread["cycles"],
        "p50": percentile(hist, overflows, 0.50),
        "p90": percentile(hist, overflows, 0.90),
        "p99": percentile(hist, overflows, 0.99),
        "max": thread["max"],
        "avg": thread["avg"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each cyclictest run")
    ap.add_argument("--intervals", default="1000,100",
                    help="sleep intervals in µs: 1000 is the gap between one loadgen thread's sends at 1k req/s, 100 at 10k")
    ap.add_argument("--results", help="results directory (default results/DATE-wakeup-latency)")
    args = ap.parse_args()
    if not shutil.which("cyclictest"):
        raise SystemExit("cyclictest is not installed (Debian: apt-get install rt-tests)")
    intervals = [int(i) for i in args.intervals.split(",")]
    cpu = 1 if os.cpu_count() >= 2 else None
    out = results_dir("wakeup-latency", args.results)
    loadgen_timer_slack()

    samples = {i: [] for i in intervals}
    raw = []
    for rep in range(args.repeat):
        for interval in intervals:
            s = run(interval, args.seconds, cpu, os.path.join(out, f"cyclictest-{rep}-{interval}us.json"))
            samples[interval].append(s)
            raw.append(f"{rep}\t{interval}\t" + "\t".join(str(s[k]) for k in ("cycles", "p50", "p90", "p99", "max", "avg")))
            print(raw[-1], file=sys.stderr)

    med = lambda i, k: statistics.median(s[k] for s in samples[i])  # noqa: E731
    where = "on CPU 1" if cpu is not None else "placed by the scheduler"
    lines = [f"cyclictest, one SCHED_OTHER thread {where}, timer slack 1 ns, power management untouched "
             f"(--default-system), absolute deadlines; {args.seconds:g} s per run; medians of {args.repeat} runs per "
             "interval, alternated. Lateness of each wake-up after its deadline.", "",
             "| sleep interval µs | wake-ups per run | p50 µs | p90 µs | p99 µs | max µs | mean µs |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for i in intervals:
        lines.append(f"| {i} | {med(i, 'cycles'):.0f} | {med(i, 'p50'):.0f} | {med(i, 'p90'):.0f} | "
                     f"{med(i, 'p99'):.0f} | {med(i, 'max'):.0f} | {med(i, 'avg'):.1f} |")
    write_tsv(out, "raw.tsv", raw, "rep\tinterval_us\tcycles\tp50_us\tp90_us\tp99_us\tmax_us\tmean_us")
    write_table(out, "\n".join(lines))


if __name__ == "__main__":
    main()
