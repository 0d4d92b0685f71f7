#!/usr/bin/env bash
# A suite run to commit as a reference: refuses a tree with uncommitted changes (the run must
# name the code that ran), builds the workspace as the README does, runs `loadgen suite` with
# any flags given, and writes machine.txt (commit, CPU, load before and after) beside its
# report.md. The suite itself also says in report.md when the machine was busy.
#
#   scripts/suite-reference.sh [SUITE FLAGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/machine-info.sh --check
cargo build --release
# The build's load lingers in the 1-minute average: wait (at most 2 minutes) until it is at
# most half the CPUs', so the run is not marked busy for a load that is gone.
for _ in $(seq 24); do
  awk -v l="$(cut -d' ' -f1 /proc/loadavg)" -v c="$(nproc)" 'BEGIN { exit !(l > c / 2) }' || break
  sleep 5
done
before=$(cut -d' ' -f1 /proc/loadavg)
out=$(mktemp)
status=0
target/release/loadgen suite "$@" 2> >(tee "$out" >&2) || status=$?
wait
dir=$(sed -n 's/^loadgen suite: report in \(.*\)\/report\.md$/\1/p' "$out" | tail -1)
rm -f "$out"
if [ -n "$dir" ] && [ -d "$dir" ]; then
  scripts/machine-info.sh "$before" >"$dir/machine.txt"
  echo "machine.txt written in $dir" >&2
fi
exit "$status"
