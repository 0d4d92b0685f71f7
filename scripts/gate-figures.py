#!/usr/bin/env python3
"""The figures docs/ci.md derives from a committed gate proof, computed from its files.

docs/ci.md states how far the CI machine drifts between runs, what a stored baseline would
have done, how many pairs and how much time the gate needed, how far a build against itself
strays, and how the spins were calibrated. Those figures are
not in the proof's table.md: they are arithmetic on the files the proof committed, and this
script is that arithmetic, so that anyone can check them and redo them for a later proof.

    python3 scripts/gate-figures.py [RESULTS_DIR]     (default results/2026-12-01-ci-gate)

It reads, and never runs anything:
- the histories (calibration.jsonl, self.jsonl, slowed.jsonl, scan.jsonl): one line per gate
  run, with each model's median baseline and candidate throughput (`baseline_rps`); the
  baseline is the same build, HEAD, in every run of a proof, whatever the candidate was;
- runs.json: per run its condition, the pairs each model took, each model's throughput and
  p99 ratio, the comparison's wall time, and the calibrated time per request (`per_request_ns`).
The per-pair ratios are in neither (a history line keeps a run's summary, not its pairs), so
nothing about their spread can be computed here.
"""
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HISTORIES = ("calibration", "self", "slowed", "scan")


def load(results):
    """Every gate run of the histories, oldest first, each with its condition in `_condition`."""
    runs = []
    for condition in HISTORIES:
        with open(os.path.join(results, f"{condition}.jsonl")) as f:
            for line in f:
                run = json.loads(line)
                run["_condition"] = condition
                runs.append(run)
    runs.sort(key=lambda r: r["time"])
    return runs


def baseline(run, model):
    """A model's median baseline throughput in one run (req/s), or None if it was not compared."""
    for m in run["models"]:
        if m["name"] == model and not m.get("skipped") and m["baseline_rps"] > 0:
            return m["baseline_rps"]
    return None


def spread(runs, models):
    """Per model: (lowest, highest) as (req/s, run time), over RUNS."""
    out = {}
    for model in models:
        seen = [(baseline(r, model), r["time"]) for r in runs if baseline(r, model)]
        out[model] = (min(seen), max(seen))
    return out


def main():
    results = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "results", "2026-12-01-ci-gate")
    runs = load(results)
    models = [m["name"] for m in runs[0]["models"] if not m.get("skipped")]
    threshold = runs[0]["params"]["threshold"]
    name = os.path.basename(os.path.normpath(results))
    print(f"{name}: {len(runs)} gate runs ({', '.join(h + '.jsonl' for h in HISTORIES)}), "
          f"{runs[0]['time']} to {runs[-1]['time']}")

    print("\nDrift: each model's highest median baseline throughput over its lowest, across the runs")
    print(f"{'model':18} {'lowest req/s (run)':>34} {'highest req/s (run)':>34} {'all':>6} {'self':>6} {'next':>6}")
    self_runs = [r for r in runs if r["_condition"] == "self"]
    every, selfs, nexts = spread(runs, models), spread(self_runs, models), {}
    for model in models:
        # Neighbouring runs are a few minutes apart: the largest change from one to the next.
        v = [baseline(r, model) for r in runs]
        nexts[model] = max(max(a, b) / min(a, b) for a, b in zip(v, v[1:]) if a and b)
        (lo, lo_t), (hi, hi_t) = every[model]
        print(f"{model:18} {lo:>12.0f} ({lo_t}) {hi:>12.0f} ({hi_t}) {hi / lo:>6.2f} "
              f"{selfs[model][1][0] / selfs[model][0][0]:>6.2f} {nexts[model]:>6.2f}")

    def extremes(ratios):
        lo, hi = min(ratios, key=ratios.get), max(ratios, key=ratios.get)
        return f"{ratios[lo]:.2f}x ({lo}) to {ratios[hi]:.2f}x ({hi})"
    print(f"all {len(runs)} runs: {extremes({m: every[m][1][0] / every[m][0][0] for m in models})}")
    print(f"the {len(self_runs)} self runs: {extremes({m: selfs[m][1][0] / selfs[m][0][0] for m in models})}")
    print(f"one run to the next: {extremes(nexts)}")

    # A stored baseline, as generous as it gets: each model's median over these very runs, taken
    # on the same machine in the same hours. How many runs of the same code fall below it by more
    # than the gate's threshold in at least one model?
    medians = {m: statistics.median(baseline(r, m) for r in runs if baseline(r, m)) for m in models}
    below = [r for r in runs if any(baseline(r, m) and baseline(r, m) < (1 - threshold) * medians[m] for m in models)]
    print(f"\nA stored baseline (each model's median over the {len(runs)} runs): {len(below)} of {len(runs)} runs "
          f"are more than {threshold:.0%} below it in at least one model")

    with open(os.path.join(results, "runs.json")) as f:
        record = json.load(f)
    counted = record["runs"]
    pairs = [p for r in counted if r["condition"] == "self" for p in r["pairs"].values()]
    print(f"\nPairs per model in the self runs (runs.json): {min(pairs)} to {max(pairs)}, "
          f"median {statistics.median(pairs):g}, over {len(pairs)} model-runs")
    limit = runs[0]["params"]["time_limit_s"]
    elapsed = [r["elapsed_s"] for r in counted]
    print(f"Comparison wall time (runs.json elapsed_s, {len(elapsed)} runs): median {statistics.median(elapsed):.0f} s, "
          f"max {max(elapsed):.0f} s; {sum(e >= limit for e in elapsed)} reached the {limit:.0f} s --time-limit")
    # Every trial is --warmup plus --duration of load; what a run's wall time holds beyond that
    # per trial is a server's start and stop and loadgen's own setup.
    per_trial = [r["elapsed_s"] / (2 * sum(r["pairs"].values())) for r in counted]
    load_s = runs[0]["params"]["warmup_s"] + runs[0]["params"]["duration_s"]
    print(f"Wall time per trial (elapsed_s over twice the pairs): {min(per_trial) * 1000:.0f} to "
          f"{max(per_trial) * 1000:.0f} ms, median {statistics.median(per_trial) * 1000:.0f} ms, "
          f"of which {load_s * 1000:.0f} ms is load")
    # How far a build against itself strays, per model-run, in throughput and in p99: the gate's
    # estimates, so the noise left after pairing, not the machine's raw drift.
    for key, what in (("ratio", "throughput"), ("p99_ratio", "p99")):
        values = [v for r in counted if r["condition"] == "self" for v in r[key].values()]
        print(f"Self runs' {what} ratios (runs.json {key}): {min(values):.3f} to {max(values):.3f}, "
              f"standard deviation {statistics.pstdev(values):.1%}")
    print(f"The proof in all (runs.json finished - started): {record['finished'] - record['started']:.0f} s")

    # Calibration: the first run gives each model's time per request (1 s over its median
    # baseline rate), the second applies a spin of T * s / (1 - s) and measures what it did.
    cal = [r for r in runs if r["_condition"] == "calibration"]
    if len(cal) == 2:
        print("\nCalibration (calibration.jsonl; final spin = runs.json per_request_ns * 0.1 / 0.9, as table.md)")
        print(f"{'model':18} {'time/request µs':>16} {'first spin ns':>14} {'it slowed by':>13} {'final spin ns':>14} {'final/time':>11}")
        for model in models:
            t = 1e9 / baseline(cal[0], model)
            first = round(t * 0.1 / 0.9)
            ratio = next(m["throughput"]["ratio"] for m in cal[1]["models"] if m["name"] == model)
            final = round(record["per_request_ns"][model] * 0.1 / 0.9)
            print(f"{model:18} {t / 1000:>16.1f} {first:>14} {1 - ratio:>13.1%} {final:>14} {final / t:>11.1%}")


if __name__ == "__main__":
    main()
