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
# The build's load lingers in the 1-minute average: start once it has left.
before=$(scripts/machine-info.sh --wait-idle)
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
