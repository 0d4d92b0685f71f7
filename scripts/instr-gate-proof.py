#!/usr/bin/env python3
"""Issue 18: how far can the instruction gate be trusted? Its proof, like docs/ci.md's for the
paired wall-clock gate.

For each model, scripts/instr-gate.py's measurement (instructions per request of its fixed
conversation, under Cachegrind) is taken:
- --self times on the unchanged build: how much the count moves from run to run. Each
  consecutive pair of them is a self run of the gate; its change is the gate's noise, and
  the threshold must sit above its largest.
- --trials times with a CPU-only slowdown of about 0.5%, 1% and 2% of that model's own count
  compiled in: the candidate is a build made with ECHOLAB_DEBUG_WORK=R, R rounds of a fixed
  loop in every request (servers/src/exec.rs), as a real change would add them, with no
  per-request check (the runtime --debug-work's own check costs about 1% of a request, more
  than the smallest level). Builds are made for R in ROUNDS (in target/instr-proof, so the
  main build is left alone); the cost of one round is measured on the first model, and each
  level takes the build whose R comes nearest. The table gives the change each measured.
  A trial is caught when its change exceeds the threshold.
loadgen's own client path is measured --self times as well (its worker thread, under
Callgrind; nothing is injected into it).

    python3 scripts/instr-gate-proof.py [--self 6] [--trials 4] [--threshold 0.3]
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
ROUNDS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128]


def build_variant(rounds):
    """The servers built with ECHOLAB_DEBUG_WORK=ROUNDS, copied to a directory of their own."""
    import shutil
    import subprocess
    target = os.path.join(ROOT, "target", "instr-proof")
    env = dict(os.environ, ECHOLAB_DEBUG_WORK=str(rounds), CARGO_TARGET_DIR=target)
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "echolab-servers"],
                   cwd=ROOT, env=env, check=True)
    out = os.path.join(target, f"work-{rounds}")
    os.makedirs(out, exist_ok=True)
    for name in ("server-thread", "server-fork", "server-prefork", "server-eventloop"):
        shutil.copy2(os.path.join(target, "release", name), out)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--self", type=int, default=6, dest="self_runs")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--threshold", type=float, default=0.3, help="percent")
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

    def measure(model, where=None):
        t = time.time()
        ir, procs = gate.server_per_request(where or bins, model, [], loadgen, 200, 1200)
        runs.append({"model": model, "bin_dir": where or bins, "ir_per_request": ir,
                     "processes": procs, "seconds": time.time() - t})
        return ir

    t = time.time()
    variants = {r: build_variant(r) for r in ROUNDS}
    print(f"{len(variants)} builds with rounds compiled in: {time.time() - t:.0f} s", flush=True)
    # The cost of one round per request: the largest build against the smallest.
    first = [m for m in a.models.split(",") if m][0]
    lo, hi = measure(first, variants[ROUNDS[0]]), measure(first, variants[ROUNDS[-1]])
    per_round = (hi - lo) / (ROUNDS[-1] - ROUNDS[0])
    print(f"one round: {per_round:.2f} instructions per request ({first})")

    rows = []
    for model in [m for m in a.models.split(",") if m]:
        base = [measure(model) for _ in range(a.self_runs)]
        changes = [100 * (b / a_ - 1) for a_, b in zip(base, base[1:])]
        ref = statistics.median(base)
        caught = {}
        for level in LEVELS:
            want = level / 100 * ref / per_round
            rounds = min(ROUNDS, key=lambda r: abs(r - want))
            hits = 0
            got = []
            for i in range(a.trials):
                c = measure(model, variants[rounds])
                change = 100 * (c / base[i % len(base)] - 1)
                got.append(change)
                hits += change > a.threshold
            caught[level] = (hits, rounds, statistics.median(got))
        worst = max(abs(c) for c in changes)
        false_alarms = sum(c > a.threshold for c in changes)
        rows.append((model, ref, worst, false_alarms, len(changes), caught))
        print(f"{model}: {ref:.1f} Ir/req, self runs within {worst:.3f}%, "
              + ", ".join(f"{lv}%: {h}/{a.trials} (R={r}, measured +{m:.2f}%)" for lv, (h, r, m) in caught.items()),
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
        f"slowdown compiled in (a build with ECHOLAB_DEBUG_WORK=R: R rounds of a fixed loop per "
        f"request, {per_round:.2f} instructions each; the R nearest the level, and the change it "
        f"measured, in each cell). Threshold {a.threshold}%. One measurement took {per_run:.1f} s (median); "
        f"the whole proof {took:.0f} s.",
        "",
        "| model | Ir per request | self runs: largest change | false alarms | caught at ~0.5% | caught at ~1% | caught at ~2% |",
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
