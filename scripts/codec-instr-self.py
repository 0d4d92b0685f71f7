#!/usr/bin/env python3
"""How far the instruction gate's codec counts move when nothing changed: its threshold.

Builds the codec benches (protocol/benches) once, then runs the instruction gate's codec part
(`scripts/instr-gate.py --models '' --no-client`, so no server and no loadgen) RUNS times with
the same executables as baseline and candidate. Every case's change in every run is a self
run's error: the largest, over all cases and runs, is what `--codec-threshold` must stay above.

    python3 scripts/codec-instr-self.py [--runs 5] [--results DIR]

Writes results/DATE-codec-instr-self/: runs.jsonl (every run's rows), table.md, machine.txt.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lablib  # noqa: E402

ROOT = lablib.ROOT


def bench_executables():
    out = subprocess.run(["cargo", "build", "--release", "--locked", "-q", "-p", "echolab-protocol", "--benches",
                          "--message-format=json"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    paths = []
    for line in out.splitlines():
        m = json.loads(line)
        if m.get("reason") == "compiler-artifact" and m.get("executable") and "bench" in m["target"]["kind"]:
            paths.append(m["executable"])
    return ",".join(paths)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--results")
    a = ap.parse_args()
    benches = bench_executables()
    out = lablib.results_dir("codec-instr-self", a.results)
    runs_path = os.path.join(out, "runs.jsonl")
    rows_by_case, seconds = {}, []
    with open(runs_path, "w") as runs_file:
        for i in range(a.runs):
            with tempfile.NamedTemporaryFile(suffix=".json") as j:
                t = time.time()
                subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "instr-gate.py"),
                                "--baseline-bin-dir", "target/release", "--candidate-bin-dir", "target/release",
                                "--models", "", "--no-client", "--baseline-benches", benches,
                                "--candidate-benches", benches, "--json", j.name],
                               cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
                seconds.append(time.time() - t)
                with open(j.name) as f:
                    run = json.load(f)
            run["run"] = i + 1
            runs_file.write(json.dumps(run) + "\n")
            for r in run["rows"]:
                rows_by_case.setdefault(r["model"], []).append(r)
            print(f"run {i + 1}/{a.runs}: largest change "
                  f"{max(abs(r['change_percent']) for r in run['rows']):.3f}% ({seconds[-1]:.0f} s)", file=sys.stderr)
    worst = max(abs(r["change_percent"]) for rs in rows_by_case.values() for r in rs)
    lines = [f"{a.runs} self runs of the instruction gate's codec part (`instr-gate.py --models '' --no-client`, "
             f"{run['bench_runs']} processes per side, median per case, N = {run['bench_iters']}); one build as both sides. "
             f"Largest change over every case and run: {worst:.3f}%; a run took a median of "
             f"{statistics.median(seconds):.0f} s.", "",
             "| case | instructions per iteration (median) | largest change in a self run |", "|---|---:|---:|"]
    for case, rs in rows_by_case.items():
        lines.append(f"| {case} | {statistics.median(r['baseline_ir_per_request'] for r in rs):,.1f} | "
                     f"{max(abs(r['change_percent']) for r in rs):.3f}% |")
    lablib.write_table(out, "\n".join(lines))


if __name__ == "__main__":
    main()
