#!/usr/bin/env python3
"""Issue 18: how far can the instruction gate be trusted? Its proof, like docs/ci.md's for the
paired wall-clock gate.

For each model, scripts/instr-gate.py's measurement (instructions per request of its fixed
conversation, under Cachegrind) is taken:
- --self times on the unchanged build: how much the count moves from run to run. Each
  consecutive pair of them is a self run of the gate; its change is the gate's noise, and
  the threshold must sit above its largest.
- --trials times with a CPU-only slowdown injected of 0.5%, 1% and 2% of that model's own
  count: `--debug-work R` on the candidate, R rounds of a fixed loop per request, R set from
  the model's count and the cost of one round (measured first, on eventloop-epoll). A trial
  is caught when its change exceeds the threshold.
loadgen's own client path is measured --self times as well (its worker thread, under
Callgrind; nothing is injected into it).

    python3 scripts/instr-gate-proof.py [--self 6] [--trials 4] [--threshold 0.2]
        [--models thread,fork,...] [--bin-dir DIR] [--out DIR]
Writes results/DATE-instr-gate-proof/ (table.md, runs.jsonl: every measurement, machine.txt).
"""
import argparse
import importlib.util
import json
import os
import statistics
import time

from lablib import ROOT, build_release, results_dir, write_table

spec = importlib.util.spec_from_file_location("instr_gate", os.path.join(ROOT, "scripts", "instr-gate.py"))
gate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gate)

LEVELS = [0.5, 1.0, 2.0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--self", type=int, default=6, dest="self_runs")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--threshold", type=float, default=0.2, help="percent")
    ap.add_argument("--models", default=",".join(gate.MODELS))
    ap.add_argument("--bin-dir", help="use these binaries as they are (default: build target/release)")
    ap.add_argument("--out", help="write here instead of results/DATE-instr-gate-proof/")
    a = ap.parse_args()
    out = results_dir("instr-gate-proof", a.out or os.environ.get("RESULTS"))
    if a.bin_dir is None:
        build_release("echolab-servers", "echolab-loadgen")
        a.bin_dir = os.path.join(ROOT, "target", "release")
    bins = os.path.abspath(a.bin_dir)
    loadgen = os.path.join(bins, "loadgen")
    started = time.time()
    runs = []

    def measure(model, extra):
        t = time.time()
        ir, procs = gate.server_per_request(bins, model, extra, loadgen, 200, 1200)
        runs.append({"model": model, "args": extra, "ir_per_request": ir, "processes": procs,
                     "seconds": time.time() - t})
        return ir

    # The cost of one --debug-work round, per request, on one model (the loop is the same in
    # every model; only where it is called differs, and it is called once per request).
    r0 = measure("eventloop-epoll", [])
    r1 = measure("eventloop-epoll", ["--debug-work", "1000"])
    per_round = (r1 - r0) / 1000
    print(f"one --debug-work round: {per_round:.2f} instructions per request")

    rows = []
    for model in [m for m in a.models.split(",") if m]:
        base = [measure(model, []) for _ in range(a.self_runs)]
        changes = [100 * (b / a_ - 1) for a_, b in zip(base, base[1:])]
        ref = statistics.median(base)
        caught = {}
        for level in LEVELS:
            rounds = max(1, round(level / 100 * ref / per_round))
            hits = 0
            got = []
            for i in range(a.trials):
                c = measure(model, ["--debug-work", str(rounds)])
                change = 100 * (c / base[i % len(base)] - 1)
                got.append(change)
                hits += change > a.threshold
            caught[level] = (hits, rounds, statistics.median(got))
        worst = max(abs(c) for c in changes)
        false_alarms = sum(c > a.threshold for c in changes)
        rows.append((model, ref, worst, false_alarms, len(changes), caught))
        print(f"{model}: {ref:.1f} Ir/req, self runs within {worst:.3f}%, "
              + ", ".join(f"{lv}%: {h}/{a.trials} (measured +{m:.2f}%)" for lv, (h, _, m) in caught.items()),
              flush=True)

    client = [gate.client_per_request(loadgen, os.path.join(bins, "server-eventloop"), 200, 1200)
              for _ in range(a.self_runs)]
    client_changes = [100 * (b / a_ - 1) for a_, b in zip(client, client[1:])]
    took = time.time() - started
    per_run = statistics.median(r["seconds"] for r in runs)

    lines = [
        f"Instruction gate proof: each model's instructions per request over the gate's conversation "
        f"({', '.join(p for p, _ in gate.PARTS)}; 1000 requests per part between a short and a long "
        f"run), under Cachegrind, release build. {a.self_runs} measurements of the unchanged build "
        f"per model (each consecutive pair is one self run of the gate), and {a.trials} with each "
        f"slowdown injected as `--debug-work R` ({per_round:.2f} instructions per round per "
        f"request). Threshold {a.threshold}%. One measurement took {per_run:.1f} s (median); "
        f"the whole proof {took:.0f} s.",
        "",
        "| model | Ir per request | self runs: largest change | false alarms | caught at 0.5% | caught at 1% | caught at 2% |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model, ref, worst, fa, n, caught in rows:
        cells = [f"{h}/{a.trials} (+{m:.2f}%, R={r})" for h, r, m in caught.values()]
        lines.append(f"| {model} | {ref:,.1f} | {worst:.3f}% | {fa}/{n} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"loadgen's client path (worker thread, Callgrind): {statistics.median(client):,.1f} Ir per "
        f"request; {len(client_changes)} self runs within {max(abs(c) for c in client_changes):.3f}%.",
        "",
        f"Made by `python3 scripts/instr-gate-proof.py --self {a.self_runs} --trials {a.trials} "
        f"--threshold {a.threshold}`.",
    ]
    with open(os.path.join(out, "runs.jsonl"), "w") as f:
        for r in runs:
            f.write(json.dumps(r) + "\n")
        f.write(json.dumps({"client_ir_per_request": client}) + "\n")
    write_table(out, "\n".join(lines))


if __name__ == "__main__":
    main()
