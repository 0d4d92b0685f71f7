#!/usr/bin/env python3
"""The figures the robustness tests measure (docs/robustness.md), kept as a run: how long the
slowloris clients took to be closed, what a header-only flood cost in memory, how many clients
a server took under RLIMIT_NOFILE 64, how soon a killed child's client saw the end, ...

The tests assert bounds (closed within the deadline, at most 128 KiB per connection); the
figures they reach on the way are what the page quotes. Each test appends them to the file
ECHOLAB_FIGURES names (servers/tests/common/figures.rs); this script sets it, runs
servers/tests/robustness.rs and tests/eventloop.rs's EMFILE tests in release mode --repeat
times, and keeps every figure of every repetition.

Tests run one at a time (--test-threads=1): robustness.rs holds no lock, and two tests
sharing two cores would disturb each other's timings and memory readings. A failing test
stops the run: its figures would describe a server that does not do what the page says.

    python3 scripts/robustness-tests.py [--repeat 3]

Writes results/DATE-robustness-tests/: raw.tsv (rep, FILE::test, model, figure, value, unit),
table.md (per figure: the median and range over the repetitions, and the test that measured
it), tests.log (the tests' own output, --nocapture) and machine.txt. A trial: --repeat 1
--filter NAME (only tests whose name contains NAME) --results /tmp/DIR, with
ECHOLAB_ALLOW_DIRTY=1 on an uncommitted tree.
"""
import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lablib  # noqa: E402

# tests/eventloop.rs's own EMFILE tests, the only ones of that file the page quotes (the "2-12
# ticks in 2 s" of the event loop's column). Named exactly, so --filter can select among them.
EVENTLOOP_TESTS = ["out_of_descriptors_epoll", "out_of_descriptors_poll", "out_of_descriptors_select"]


def runs(name_filter):
    """(test target, libtest arguments) for each cargo test invocation."""
    robustness = ["--test-threads=1", "--nocapture"] + ([name_filter] if name_filter else [])
    eventloop = [t for t in EVENTLOOP_TESTS if not name_filter or name_filter in t]
    out = [("robustness", robustness)]
    if eventloop:
        out.append(("eventloop", ["--test-threads=1", "--nocapture", "--exact", *eventloop]))
    return out


def cargo_test(target, libtest_args):
    return ["cargo", "test", "--release", "-p", "echolab-servers", "--test", target, "--", *libtest_args]


def decimals(text):
    """How many digits a raw value has after its decimal point, so the median keeps them."""
    return len(text.split(".", 1)[1]) if "." in text else 0


def table(rows, repeat, name_filter):
    """The Markdown table: one row per (test, model, figure), in the order the tests ran."""
    groups = {}
    for rep, test, model, figure, value, unit in rows:
        groups.setdefault((test, model, figure, unit), []).append(value)
    command = f"python3 scripts/robustness-tests.py --repeat {repeat}" + (
        f" --filter {shlex.quote(name_filter)}" if name_filter else "")
    lines = [f"Figures the robustness tests measured, over {repeat} repetition(s): release build, "
             f"one test at a time. `{command}`", "",
             "| test | model | figure | median | range | unit | runs |",
             "|---|---|---|---:|---:|---|---:|"]
    for (test, model, figure, unit), values in groups.items():
        places = max(decimals(v) for v in values)
        nums = [float(v) for v in values]
        lines.append(f"| `{test}` | {model} | {figure} | {statistics.median(nums):.{places}f} | "
                     f"{min(nums):.{places}f}–{max(nums):.{places}f} | {unit} | {len(values)} |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--filter", help="only tests whose name contains this (a trial run)")
    ap.add_argument("--results", help="results directory (default results/DATE-robustness-tests)")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    # Refuse a dirty tree before a build that can take minutes; results_dir checks again.
    check = subprocess.run([os.path.join(lablib.ROOT, "scripts", "machine-info.sh"), "--check"], cwd=lablib.ROOT)
    if check.returncode != 0:
        raise SystemExit(check.returncode)
    plan = runs(args.filter)
    build = ["cargo", "test", "--release", "-q", "-p", "echolab-servers", "--no-run"]
    for target, _ in plan:
        build += ["--test", target]
    subprocess.run(build, cwd=lablib.ROOT, check=True)
    # The load is read after the build, as close to the tests as it can be. A build that
    # compiled something still weighs on the 1-minute average: build first (the command above)
    # when the run is to be committed.
    out = lablib.results_dir("robustness-tests", args.results)

    rows, skipped = [], []
    with open(os.path.join(out, "tests.log"), "w") as log:
        for rep in range(1, args.repeat + 1):
            for target, libtest_args in plan:
                command = cargo_test(target, libtest_args)
                fd, figures = tempfile.mkstemp(prefix="echolab-figures-", suffix=".tsv")
                os.close(fd)
                log.write(f"== repetition {rep}: {shlex.join(command)}\n")
                log.flush()
                try:
                    result = subprocess.run(command, cwd=lablib.ROOT, env={**os.environ, "ECHOLAB_FIGURES": figures},
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                    log.write(result.stdout)
                    with open(figures) as f:
                        recorded = [line.rstrip("\n").split("\t") for line in f if line.strip()]
                finally:
                    os.unlink(figures)
                if result.returncode != 0:
                    sys.stderr.write(result.stdout[-6000:])
                    raise SystemExit(f"repetition {rep}: {target} tests failed (exit {result.returncode}); "
                                     f"no table written. Their output: {os.path.join(out, 'tests.log')}")
                for fields in recorded:
                    if len(fields) != 5:
                        raise SystemExit(f"a figure line that is not test, model, figure, value, unit: {fields}")
                    # robustness::out_of_descriptors_fork, eventloop::out_of_descriptors_epoll:
                    # the file as well as the test, as `cargo test --test FILE NAME` needs.
                    rows.append([str(rep), f"{target}::{fields[0]}", *fields[1:]])
                skipped += [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
            print(f"repetition {rep}/{args.repeat} done: {len(rows)} figures so far", file=sys.stderr)

    with open(os.path.join(out, "raw.tsv"), "w") as f:
        f.write("rep\ttest\tmodel\tfigure\tvalue\tunit\n")
        f.writelines("\t".join(r) + "\n" for r in rows)
    lines = table(rows, args.repeat, args.filter)
    if skipped:
        lines += ["", "Skipped (their figures are missing above):", ""]
        lines += [f"- {s}" for s in sorted(set(skipped))]
    lablib.write_table(out, "\n".join(lines))


if __name__ == "__main__":
    main()
