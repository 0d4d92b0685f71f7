#!/usr/bin/env python3
"""Can the regression gate be trusted? Run it many times and count what it says.

Three conditions, interleaved run by run (self, slowed, scan, self, slowed, scan, ...) so that
the machine's drift over the hours this takes falls on all of them alike. Every run is the
real gate, `scripts/ci-regression.sh HEAD`, with the baseline built from HEAD in its worktree
and the candidate built from the working tree (which must equal HEAD):

- self:   the candidate is the baseline's code. Every flag is a false alarm.
- slowed: every model's candidate gets `--debug-spin-ns` set to slow it by about --slowdown
          (10%). Every run that does not flag is a miss.
- scan:   each model's candidate is slowed by one of --scan-levels, rotating from run to run
          (model k in run i gets level (k + i) mod L), to find the smallest slowdown caught in
          19 of 20 cases.

With --early-stop-proof (issue 18), the three conditions above run with `--early-stop off`, the
gate as it was, and each run's report keeps where each model's verdict was settled, pair by
pair; the table then replays every run with the early stop at each floor (where would it have
stopped, with what verdict, after how many seconds of pairs) against what the full run decided.
Two more conditions run the gate as it is now, early stop on, interleaved with the rest:

- self-early, slowed-early: self and slowed with the default early stop, measured live.

The spin that slows a model by s starts as T * s / (1 - s), where T is the model's time per
request (1 / req/s) in a calibration run, and is corrected by a second calibration run that
measures what that spin really did; the slowdown each spin caused in the experiment is measured
by the gate itself, and reported beside it.

    python3 scripts/gate-proof.py --runs 20
    python3 scripts/gate-proof.py --early-stop-proof --runs 6 --scan-every 2 --results results/DATE-ci-gate-early-stop

Writes results/DATE-ci-gate/: table.md, one history file and trend plot per condition, the
assignments, and machine.txt.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lablib  # noqa: E402

ROOT = lablib.ROOT
GATE = os.path.join(ROOT, "scripts", "ci-regression.sh")
LOADGEN = os.path.join(ROOT, "target", "release", "loadgen")


COMPARE_FLAGS = []

# The conditions, in the order each round runs them.
CONDITIONS = ["self", "slowed", "scan"]

# The floors the early stop is replayed at (pairs).
FLOORS = [8, 10, 12, 16, 20, 30]


def off_flags(args, cond):
    """The early-stop proof runs the three classic conditions with the early stop off."""
    return ["--early-stop", "off"] if args.early_stop_proof and not cond.endswith("-early") else []


GATE_DIR = os.environ.get("GATE_DIR", os.path.join(ROOT, "target", "ci-regression"))


def gate(history, extra, log):
    """One gate run; returns (exit code, the run's report). A run that gave no verdict at all
    (exit 2: a build or usage error) stops the proof rather than be counted."""
    # The instruction gate has its own proof (instr-gate-proof.py); this one is the paired gate's.
    env = dict(os.environ, GATE_HISTORY=history, GATE_DIR=GATE_DIR, INSTR_GATE="off")
    cmd = [GATE, "HEAD", "--", *COMPARE_FLAGS, *extra]
    report = os.path.join(GATE_DIR, "report.json")
    if os.path.exists(report):
        os.remove(report)
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc not in (0, 1, 3, 4) or not os.path.exists(report):
        sys.exit(f"gate-proof: the gate exited {rc} without a verdict; see {log}")
    with open(report) as f:
        return rc, json.load(f)


def spins_for(per_request_ns, levels):
    """--candidate-args-for flags that slow model m by levels[m]."""
    flags = []
    for model, level in levels.items():
        ns = round(per_request_ns[model] * level / (1 - level))
        flags += ["--candidate-args-for", f"{model}=--debug-spin-ns {ns}"]
    return flags


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20, help="gate runs per condition")
    ap.add_argument("--slowdown", type=float, default=0.10, help="the slowed condition's slowdown")
    ap.add_argument("--scan-levels", default="0.05,0.06,0.07,0.08", help="the scan's slowdowns")
    ap.add_argument("--results", help="results directory (default results/DATE-ci-gate)")
    ap.add_argument("--compare-flags", default="",
                    help="extra flags for every loadgen compare (e.g. '--pairs 8' to try this script quickly; "
                         "a proof uses the gate as it is)")
    ap.add_argument("--scan-every", type=int, default=1, metavar="K",
                    help="run the scan condition in every K-th round only (default 1: every round; 0: never). "
                         "With 8 models and 4 levels, 20 rounds at K=2 still give each level 20 model-runs")
    ap.add_argument("--early-stop-proof", action="store_true",
                    help="run self, slowed and scan with --early-stop off and replay each at every floor; "
                         "add self-early and slowed-early, the gate with its default early stop")
    ap.add_argument("--resume", action="store_true",
                    help="go on with the proof in --results: keep its calibration and the runs runs.json "
                         "records, and run only the rest (flags such as --scan-every may differ)")
    ap.add_argument("--table-from", metavar="RUNS_JSON",
                    help="run nothing: rewrite table.md beside RUNS_JSON from the runs it records "
                         "(for a proof that was stopped before the end)")
    args = ap.parse_args()
    levels = [float(x) for x in args.scan_levels.split(",")]
    COMPARE_FLAGS.extend(args.compare_flags.split())
    if args.early_stop_proof:
        CONDITIONS.extend(["self-early", "slowed-early"])
    if args.table_from:
        with open(args.table_from) as f:
            record = json.load(f)
        report(record, args, levels, os.path.dirname(os.path.abspath(args.table_from)))
        return

    dirty = subprocess.run(["git", "status", "--porcelain", "--", "servers", "protocol", "loadgen", "Cargo.lock"],
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    if dirty:
        sys.exit("gate-proof: the working tree differs from HEAD in the crates; commit first, "
                 "or the self condition is not a build compared with itself:\n" + dirty)
    out = lablib.results_dir("ci-gate", args.results)
    log = os.path.join(out, "gate.log")
    hist = {c: os.path.join(out, f"{c}.jsonl") for c in CONDITIONS}
    if args.resume:
        resume(args, levels, out, log, hist)
        return
    for h in hist.values():
        if os.path.exists(h):
            os.remove(h)
    started = time.time()

    # Calibration, in two runs (neither is counted). First a self run gives each model's time
    # per request T, and spin = T * s / (1 - s) would slow it by s if nothing else changed. But
    # a slower event loop finds more requests waiting per wakeup and pays less per request, so
    # the second run applies that spin for --slowdown, measures what it really did, and scales
    # each model's spin by target / measured.
    print("calibrating: a self run for each model's time per request", file=sys.stderr)
    _, cal = gate(os.path.join(out, "calibration.jsonl"), off_flags(args, "self"), log)
    models = [m["name"] for m in cal["models"] if m.get("throughput")]
    per_request_ns = {m["name"]: 1e9 / m["baseline_rps"] for m in cal["models"] if m.get("throughput")}
    print("calibrating: a slowed run to measure what the spin does", file=sys.stderr)
    _, cal2 = gate(os.path.join(out, "calibration.jsonl"),
                   off_flags(args, "self") + spins_for(per_request_ns, {m: args.slowdown for m in models}), log)
    for m in cal2["models"]:
        if m["name"] in per_request_ns and m.get("throughput"):
            measured = min(max(1 - m["throughput"]["ratio"], args.slowdown / 3), args.slowdown * 3)
            per_request_ns[m["name"]] *= args.slowdown / measured

    record = {"per_request_ns": per_request_ns, "started": started, "runs": []}
    rounds(record, args, levels, out, log, hist)


def resume(args, levels, out, log, hist):
    with open(os.path.join(out, "runs.json")) as f:
        record = json.load(f)
    record.pop("finished", None)
    rounds(record, args, levels, out, log, hist)


def rounds(record, args, levels, out, log, hist):
    """The proof proper: --runs rounds of self, slowed and (every --scan-every rounds) scan, less
    the ones record already holds."""
    per_request_ns = record["per_request_ns"]
    models = list(per_request_ns)
    done = {(r["run"], r["condition"]) for r in record["runs"]}
    scans = sum(1 for r in record["runs"] if r["condition"] == "scan")
    for i in range(args.runs):
        for cond in CONDITIONS:
            if (i + 1, cond) in done:
                continue
            if cond == "scan" and (not args.scan_every or i % args.scan_every):
                continue
            if cond.startswith("self"):
                assign = {m: 0.0 for m in models}
            elif cond.startswith("slowed"):
                assign = {m: args.slowdown for m in models}
            else:
                # Rotate by the scan's own count, not the round: with --scan-every 2 the round
                # is always even and half the levels would never reach a given model.
                assign = {m: levels[(k + scans) % len(levels)] for k, m in enumerate(models)}
                scans += 1
            flags = spins_for(per_request_ns, {m: s for m, s in assign.items() if s > 0})
            rc, rep = gate(hist[cond], off_flags(args, cond) + flags, log)
            res = {m["name"]: m for m in rep["models"]}
            flagged = [m for m in models if res[m].get("throughput_verdict") == "regression"
                       or res[m].get("p99_verdict") == "regression"]
            failed = [m for m in models if res[m].get("failure")]
            unsure = [m for m in models if res[m].get("throughput_verdict") == "inconclusive"]
            record["runs"].append({"run": i + 1, "condition": cond, "exit": rc, "assign": assign,
                                   "flagged": flagged, "failed": failed, "inconclusive": unsure,
                                   "pairs": {m: len(res[m].get("pairs", [])) for m in models},
                                   "ratio": {m: res[m]["throughput"]["ratio"] for m in models if res[m].get("throughput")},
                                   "p99_ratio": {m: res[m]["p99"]["ratio"] for m in models if res[m].get("p99")},
                                   "throughput_flagged": [m for m in models if res[m].get("throughput_verdict") == "regression"],
                                   "elapsed_s": rep["elapsed_s"],
                                   # For the early stop's replay: where each model's verdicts were
                                   # settled, what the run decided, and what each pair took.
                                   "settled": {m: [[t["pairs"], t["throughput"], t.get("p99")]
                                                   for t in res[m].get("settled", [])] for m in models},
                                   "verdicts": {m: [res[m].get("throughput_verdict"), res[m].get("p99_verdict")]
                                                for m in models},
                                   "stopped_settled": [m for m in models if res[m].get("stopped_settled")],
                                   "pair_seconds": {m: [round(p.get("seconds", 0.0), 3) for p in res[m].get("pairs", [])]
                                                    for m in models}})
            print(f"run {i + 1}/{args.runs} {cond}: exit {rc}, flagged {flagged or 'nothing'}"
                  f"{', failed ' + str(failed) if failed else ''}"
                  f"{', inconclusive ' + str(unsure) if unsure else ''} ({rep['elapsed_s']:.0f} s)", file=sys.stderr)
            with open(os.path.join(out, "runs.json"), "w") as f:
                json.dump(record, f, indent=1)

    record["finished"] = time.time()
    with open(os.path.join(out, "runs.json"), "w") as f:
        json.dump(record, f, indent=1)
    report(record, args, levels, out)


def decision(tv, pv):
    """What the gate does with a model's verdicts: fail it, call it inconclusive, or pass it."""
    if "regression" in (tv, pv):
        return "regression"
    return "inconclusive" if tv == "inconclusive" else "pass"


def replay(runs, models):
    """The early stop replayed on the runs made with it off: for each floor, where each model
    would have stopped (the first settled point at or past the floor), whether its verdicts
    and the gate's decision would have been the same, and the seconds of pairs it would have
    taken against the seconds the full run took."""
    off = [r for r in runs if "settled" in r and not r["condition"].endswith("-early")]
    lines = ["", "### The early stop, replayed", "",
             f"{len(off)} gate runs made with `--early-stop off` (every condition above but the -early ones), "
             "replayed: at each floor, a model stops at its first settled point at or past the floor. "
             "Verdicts: model-runs whose throughput and p99 verdicts both equal the full run's. Decisions: "
             "model-runs whose outcome (regression, inconclusive, pass) equals the full run's. Time: the seconds of "
             "pairs the replay keeps, against the full runs' (all models, all runs).", "",
             "| floor | model-runs stopped early | same verdicts | same decisions | decisions changed (full → early) | "
             "gate runs with another exit | pair-seconds kept | median per run |",
             "|---:|---:|---:|---:|---|---:|---:|---:|"]
    for floor in FLOORS:
        n = early = same_v = same_d = runs_changed = 0
        kept_total = full_total = 0.0
        changed = {}
        shares = []
        for r in off:
            run_changed = False
            kept_run = full_run = 0.0
            for m in models:
                secs = r["pair_seconds"].get(m, [])
                tv, pv = r["verdicts"][m]
                if not secs or tv is None:
                    continue
                n += 1
                stop = next((t for t in r["settled"][m] if t[0] >= floor), None)
                if stop is not None and stop[0] < len(secs):
                    early += 1
                    etv, epv = stop[1], stop[2]
                    kept = sum(secs[:stop[0]])
                else:
                    etv, epv = tv, pv
                    kept = sum(secs)
                same_v += (etv, epv) == (tv, pv)
                d, ed = decision(tv, pv), decision(etv, epv)
                if d == ed:
                    same_d += 1
                else:
                    run_changed = True
                    key = f"{d} → {ed} ({r['condition']})"
                    changed[key] = changed.get(key, 0) + 1
                kept_run += kept
                full_run += sum(secs)
            runs_changed += run_changed
            kept_total += kept_run
            full_total += full_run
            if full_run:
                shares.append(kept_run / full_run)
        lines.append(f"| {floor} | {early}/{n} | {same_v}/{n} | {same_d}/{n} | "
                     f"{', '.join(f'{k}: {v}' for k, v in sorted(changed.items())) or 'none'} | {runs_changed}/{len(off)} | "
                     f"{kept_total:.0f} of {full_total:.0f} s ({kept_total / full_total:.0%}) | "
                     f"{statistics.median(shares):.0%} |" if full_total else f"| {floor} | – |")
    live = [r for r in runs if r["condition"].endswith("-early")]
    if live:
        lines += ["", "Live, early stop on (the default), beside the runs above: loadgen compare's wall time per gate run, "
                  "median (max), against the same condition with it off.", "",
                  "| condition | runs | early stop on: s | off: s | model-runs stopped settled |", "|---|---:|---:|---:|---:|"]
        for cond in ("self", "slowed"):
            on = [r for r in runs if r["condition"] == f"{cond}-early"]
            of = [r for r in runs if r["condition"] == cond]
            if on and of:
                e_on = [r["elapsed_s"] for r in on]
                e_of = [r["elapsed_s"] for r in of]
                lines.append(f"| {cond} | {len(on)} | {statistics.median(e_on):.0f} ({max(e_on):.0f}) | "
                             f"{statistics.median(e_of):.0f} ({max(e_of):.0f}) | "
                             f"{sum(len(r['stopped_settled']) for r in on)}/{len(on) * len(models)} |")
    return lines


def report(record, args, levels, out):
    """table.md, the trend plots, from what the runs recorded."""
    per_request_ns = record["per_request_ns"]
    models = list(per_request_ns)
    runs = record["runs"]
    done = min(sum(1 for r in runs if r["condition"] == c) for c in ("self", "slowed"))
    n_scan = sum(1 for r in runs if r["condition"] == "scan")
    if "finished" in record:
        took = f"{record['finished'] - record['started']:.0f} s in all"
    else:
        took = (f"stopped after {done} of {args.runs} planned; "
                f"{sum(r['elapsed_s'] for r in runs):.0f} s of loadgen compare")
    how = f"with `{args.compare_flags}`" if args.compare_flags else "as it is (30 to 150 pairs per model until the interval is within ±2.5%, at most 6 minutes; threshold 5% throughput and 25% p99)"
    if args.early_stop_proof:
        how += ("; self, slowed and scan with `--early-stop off` (the gate before the early stop), "
                "self-early and slowed-early with the default early stop")
    lines = [f"{done} gate runs each for self and slowed, {n_scan} for the scan, interleaved; each run `scripts/ci-regression.sh HEAD` "
             f"{how}; {took}.", ""]

    def count(cond, pred):
        return sum(1 for r in runs if r["condition"] == cond and pred(r))

    n_self = count("self", lambda r: True)
    lines += ["| condition | gate runs | runs that flagged a regression | inconclusive runs | runs that failed |",
              "|---|---:|---:|---:|---:|",
              f"| self (a build against itself) | {n_self} | {count('self', lambda r: r['exit'] == 1)} | "
              f"{count('self', lambda r: r['exit'] == 4)} | {count('self', lambda r: r['exit'] == 3)} |",
              f"| slowed ~{args.slowdown:.0%} (every model) | {count('slowed', lambda r: True)} | "
              f"{count('slowed', lambda r: r['exit'] == 1)} | {count('slowed', lambda r: r['exit'] == 4)} | "
              f"{count('slowed', lambda r: r['exit'] == 3)} |"]
    for cond, words in (("self-early", "self, early stop on"), (f"slowed-early", f"slowed ~{args.slowdown:.0%}, early stop on")):
        if count(cond, lambda r: True):
            lines.append(f"| {words} | {count(cond, lambda r: True)} | {count(cond, lambda r: r['exit'] == 1)} | "
                         f"{count(cond, lambda r: r['exit'] == 4)} | {count(cond, lambda r: r['exit'] == 3)} |")
    lines += [""]
    lines += ["Per model: how often it was flagged, and the slowdown the gate measured "
              "(median over runs of 1 - ratio).", "",
              "| model | spin for ~10% (ns) | self: flagged | self: median ratio | slowed: flagged | slowed: measured slowdown | "
              + " | ".join(f"scan {lv:.0%}: flagged" for lv in levels) + " |",
              "|---|---:|---:|---:|---:|---:|" + "---:|" * len(levels)]
    for m in models:
        def of(cond, level=None):
            return [r for r in runs if r["condition"] == cond and (level is None or r["assign"][m] == level)]
        sr, lr = of("self"), of("slowed")
        cells = [m, f"{per_request_ns[m] * args.slowdown / (1 - args.slowdown):.0f}",
                 f"{sum(m in r['flagged'] for r in sr)}/{len(sr)}",
                 f"{statistics.median(r['ratio'][m] for r in sr if m in r['ratio']):.3f}" if sr else "–",
                 f"{sum(m in r['flagged'] for r in lr)}/{len(lr)}",
                 f"{1 - statistics.median(r['ratio'][m] for r in lr if m in r['ratio']):.1%}" if lr else "–"]
        for lv in levels:
            sc = of("scan", lv)
            cells.append(f"{sum(m in r['flagged'] for r in sc)}/{len(sc)}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Scan, all models pooled: slowdown → model-runs flagged (throughput or p99) / model-runs; "
              "median measured slowdown.", "",
              "| slowdown | flagged | measured slowdown (median) |", "|---:|---:|---:|"]
    for lv in levels:
        cases = [(r, m) for r in runs if r["condition"] == "scan" for m in models if r["assign"][m] == lv]
        hit = sum(m in r["flagged"] for r, m in cases)
        meas = [1 - r["ratio"][m] for r, m in cases if m in r["ratio"]]
        lines.append(f"| {lv:.0%} | {hit}/{len(cases)} | {statistics.median(meas):.1%} |" if meas else f"| {lv:.0%} | – | – |")
    gate_s = [r["elapsed_s"] for r in runs]
    lines += ["", f"loadgen compare wall time per gate run: median {statistics.median(gate_s):.0f} s, "
              f"max {max(gate_s):.0f} s (builds are cached between runs here; see docs/ci.md for a cold start)."]
    if any("settled" in r for r in runs):
        lines += replay(runs, models)
    # ci-regression.sh redraws each history's last five runs beside it; the proof's own plots
    # (below) show every run.
    for cond in ["calibration", *CONDITIONS]:
        p = os.path.join(out, f"{cond}.svg")
        if os.path.exists(p):
            os.remove(p)
    for cond in sorted({r["condition"] for r in runs}):
        h = os.path.join(out, f"{cond}.jsonl")
        subprocess.run([LOADGEN, "trend", h, "--svg", os.path.join(out, f"trend-{cond}.svg")],
                       cwd=ROOT, stdout=subprocess.DEVNULL, check=False)
    lablib.write_table(out, "\n".join(lines))


if __name__ == "__main__":
    main()
