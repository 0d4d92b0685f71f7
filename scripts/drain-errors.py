#!/usr/bin/env python3
"""Issue 19: did loadgen's own finished connections make blocking servers fail requests?

At the end of its window loadgen used to keep every connection open until the last reply was
in. A blocking worker (a pre-forked process, a pool thread) holding one of those finished
connections cannot take the next connection queued for it, and under SO_REUSEPORT a
connection queued for that worker is served by no other: its request waited for the whole
--timeout and was counted as the server's error. This runs the same short-connection load
with loadgen as it was before the fix (--before, default 48557fc) and as it is now, against
this tree's servers, REPEAT times interleaved, a fresh server per run, and counts what each
lost.

    python3 scripts/drain-errors.py [--repeat 3] [--before 48557fc]
Writes results/DATE-drain-errors/ (table.md, raw.tsv, machine.txt).
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

from lablib import ROOT, build_at_commit, build_release, results_dir, start_server, write_table, write_tsv

# (name, server and its flags, loadgen's flags): the command, then the two other
# bounded models it names, with fewer workers than connections so all are held at the end.
CASES = [
    ("prefork reuseport, 32 workers", ["server-prefork", "--accept", "reuseport", "--workers", "32"],
     "-c 16 --requests-per-conn 10 -d 4s --warmup 0s --timeout 2s"),
    ("prefork shared, 8 workers", ["server-prefork", "--accept", "shared", "--workers", "8"],
     "-c 16 --requests-per-conn 10 -d 3s --warmup 0s --timeout 2s"),
    ("thread --pool 8", ["server-thread", "--pool", "8"],
     "-c 16 --requests-per-conn 10 -d 3s --warmup 0s --timeout 2s"),
]


def run_once(loadgen, server, flags):
    """One run: (verified replies, lost requests, {error kind: count}, wall seconds)."""
    proc, port = start_server(*server)
    try:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            start = time.monotonic()
            subprocess.run([loadgen, "run", "--addr", f"127.0.0.1:{port}", *flags.split(),
                            "--progress", "never", "--json", out.name],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            wall = time.monotonic() - start
            report = json.load(open(out.name))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    errors = {k: v for k, v in report["errors"].items() if v}
    c = report["counts"]
    # Issue 13 split `lost` into the requests never fully written and those written and never
    # answered; the loadgen before it still reports `lost`.
    lost = c["lost"] if "lost" in c else c["unwritten"] + c["indeterminate"]
    return c["ok"], lost, errors, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--before", default="48557fc", help="the commit before issue 19's fix")
    ap.add_argument("--results", default=os.environ.get("RESULTS"))
    args = ap.parse_args()
    build_release("echolab-servers", "echolab-loadgen")
    loadgens = [(f"before ({args.before})", os.path.join(build_at_commit(args.before, "echolab-loadgen", "loadgen"), "loadgen")),
                ("now", os.path.join(ROOT, "target", "release", "loadgen"))]
    path = results_dir("drain-errors", args.results)

    raw = ["case\tloadgen\trep\tok\tlost\terrors\twall_s"]
    rows = {}
    for rep in range(args.repeat):
        for name, server, flags in CASES:
            # Alternating which goes first, so a drifting machine favours neither.
            for label, binary in (loadgens if rep % 2 == 0 else loadgens[::-1]):
                ok, lost, errors, wall = run_once(binary, server, flags)
                raw.append(f"{name}\t{label}\t{rep}\t{ok}\t{lost}\t{json.dumps(errors)}\t{wall:.2f}")
                rows.setdefault((name, label), []).append((lost, errors, wall))
    write_tsv(path, "raw.tsv", raw)

    lines = ["| case | loadgen | requests lost, each run | errors, each run | wall time (median) |",
             "|---|---|---|---|---:|"]
    for name, _, flags in CASES:
        for label, _ in loadgens:
            runs = rows[(name, label)]
            lost = " / ".join(str(r[0]) for r in runs)
            errs = " / ".join(", ".join(f"{k} {v}" for k, v in r[1].items()) or "none" for r in runs)
            wall = statistics.median(r[2] for r in runs)
            lines.append(f"| {name} | {label} | {lost} | {errs} | {wall:.1f} s |")
    lines += ["", f"loadgen run {CASES[0][2]} (and -d 3s for the others) against this tree's servers; "
              f"{args.repeat} runs per cell, interleaved, a fresh server per run. 'before' is loadgen built at "
              f"{args.before}, the commit before the fix; 'now' is this tree's. Made by `scripts/drain-errors.py "
              f"--repeat {args.repeat}`."]
    write_table(path, "\n".join(lines))


if __name__ == "__main__":
    main()
