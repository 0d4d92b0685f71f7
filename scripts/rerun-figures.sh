#!/usr/bin/env bash
# Makes, one after another on an idle machine, every committed run the docs quote that a script
# can redo in minutes (the regression gate's two-hour proof, scripts/gate-proof.py, and the
# hand-made wrk comparison are left out). Each run refuses a dirty tree and records its
# machine and the load before it (scripts/machine-info.sh), so this script first builds every
# binary the runs need, then waits before each run (at most 3 minutes) until the 1-minute load
# average is at most half the CPUs' (machine-info.sh --wait-idle, the line above which it calls
# a run busy), so no run starts busy from the one before. A run that fails stops
# the whole sequence.
#
#   scripts/rerun-figures.sh [NAME...]     (default: every run below, in order)
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A RUNS=(
  [suite]="scripts/suite-reference.sh"
  [loadgen-vs-redis-benchmark]="python3 scripts/loadgen-vs-redis-benchmark.py --repeat 5 --seconds 3 --eventloop"
  [loadgen-pacing]="python3 scripts/loadgen-pacing.py --repeat 3 --seconds 3"
  [coordinated-omission]="python3 scripts/coordinated-omission.py --repeat 3 --seconds 5"
  [wakeup-latency]="python3 scripts/wakeup-latency.py --repeat 3 --seconds 10"
  [syscalls-per-request]="python3 scripts/syscalls-per-request.py --repeat 3 --requests 20000"
  [thread-memory]="python3 scripts/thread-memory.py"
  [thread-memory-debug]="python3 scripts/thread-memory.py --profile debug"
  [fork-zombies]="python3 scripts/fork-zombies.py"
  [fork-descriptors]="python3 scripts/fork-descriptors.py"
  [eventloop-flood]="python3 scripts/eventloop-flood.py --seconds 8 --pings 20 --before 4ef3ad3"
  [eventloop-flood-debug]="python3 scripts/eventloop-flood.py --seconds 8 --pings 20 --before 4ef3ad3 --profile debug"
  [prefork-memory]="python3 scripts/prefork-memory.py --workers 2,16,256"
  [drain-errors]="python3 scripts/drain-errors.py --repeat 3"
  [robustness-tests]="python3 scripts/robustness-tests.py --repeat 3"
  [fuzz-counts]="scripts/fuzz-counts.sh 60"
  [cold-gate]="scripts/cold-gate.sh"
  [codec-bench]="python3 scripts/codec-bench.py"
  [robustness-figures]="python3 scripts/robustness-figures.py --repeat 5 --seconds 3"
)
ORDER=(suite loadgen-vs-redis-benchmark loadgen-pacing coordinated-omission wakeup-latency
  syscalls-per-request thread-memory thread-memory-debug fork-zombies fork-descriptors
  eventloop-flood eventloop-flood-debug prefork-memory drain-errors robustness-tests fuzz-counts
  cold-gate codec-bench robustness-figures)
if [ $# -gt 0 ]; then ORDER=("$@"); fi
for name in "${ORDER[@]}"; do
  [ -n "${RUNS[$name]:-}" ] || { echo "no run named $name (known: ${!RUNS[*]})" >&2; exit 2; }
done

scripts/machine-info.sh --check
# Every build the runs do themselves, done now, so that none of it lands in a run's load.
cargo build --release
cargo build --release -q -p echolab-servers
cargo build --release -q -p echolab-loadgen
cargo build --release -q -p echolab-servers -p echolab-loadgen
cargo build -q -p echolab-servers --bin server-thread --bin server-eventloop
cargo test --release -q -p echolab-servers --no-run --test robustness --test eventloop

for name in "${ORDER[@]}"; do
  load=$(scripts/machine-info.sh --wait-idle 180)
  echo "== $name (load $load): ${RUNS[$name]}" >&2
  start=$(date +%s)
  ${RUNS[$name]}
  echo "== $name took $(($(date +%s) - start)) s" >&2
done
