#!/usr/bin/env bash
# How many inputs each cargo-fuzz target (protocol/fuzz: binary, resp, json) gets through in a
# fixed time, and how much of the decoder it reached: the figures docs/robustness.md#fuzzing
# quotes, kept as a run instead of read off a terminal once.
#
#   scripts/fuzz-counts.sh [SECONDS]        (default 60 per target; RESULTS=DIR for another place)
#
# Each target runs for SECONDS, one after the other, on a fresh corpus directory seeded from
# the committed seeds (protocol/fuzz/corpus/TARGET), so a run is not helped by what an earlier
# one found (fuzz/work/, where the page's own command collects, is left alone). The command
# is .ci/run's, with RUSTC_BOOTSTRAP=1 for the -Z flags cargo-fuzz passes to the stable
# compiler. A crash stops the script, as it fails CI: a count is only worth quoting from a
# run that found nothing.
#
# Writes results/DATE-fuzz-counts/: table.md (runs, runs/s, coverage per target), done.txt
# (libFuzzer's last status line and its 'Done N runs in S second(s)' line, per target) and
# machine.txt. Like every recorded run it refuses a tree with uncommitted changes
# (ECHOLAB_ALLOW_DIRTY=1 for a trial, which is not to be committed).
set -euo pipefail
cd "$(dirname "$0")/.."

# Not $SECONDS: bash counts time in that one.
each=${1:-60}
case "$each" in
  '' | *[!0-9]* | 0) echo "usage: scripts/fuzz-counts.sh [SECONDS] (a whole number above 0, got '$each')" >&2; exit 2 ;;
esac
targets=(binary resp json)

scripts/machine-info.sh --check
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "cargo-fuzz not found; install it as .ci/run does: cargo install cargo-fuzz --locked --version 0.13.2" >&2
  exit 1
fi

# Build every target first, so that compiling is not part of any target's time.
(cd protocol && RUSTC_BOOTSTRAP=1 cargo fuzz build)

# The build's load lingers in the 1-minute average: start once it has left.
before=$(scripts/machine-info.sh --wait-idle)
dir=${RESULTS:-results/$(date +%F)-fuzz-counts}
mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One value of a libFuzzer status line: field NAME LINE ('cov: 409' -> 409).
field() { echo "$2" | sed -n "s/.* $1: \([^ ]*\).*/\1/p"; }

: >"$dir/done.txt"
rows=()
for target in "${targets[@]}"; do
  mkdir "$work/$target"
  log="$work/$target.log"
  echo "== $target: ${each} s" >&2
  if ! (cd protocol && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "$work/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$each" >"$log" 2>&1); then
    tail -40 "$log" >&2
    echo "fuzz target $target failed (a crashing input is under protocol/fuzz/artifacts/$target/); nothing recorded" >&2
    exit 1
  fi
  # libFuzzer ends with a status line ('#N DONE cov: C ft: F corp: ...') and 'Done N runs in S second(s)'.
  done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1)
  status_line=$(grep -E '^#[0-9]+[[:space:]]+DONE ' "$log" | tail -1)
  if [ -z "$done_line" ]; then
    tail -20 "$log" >&2
    echo "fuzz target $target: no 'Done N runs' line in libFuzzer's output" >&2
    exit 1
  fi
  printf '%s\t%s\n%s\t%s\n' "$target" "$status_line" "$target" "$done_line" >>"$dir/done.txt"
  runs=$(echo "$done_line" | awk '{print $2}')
  secs=$(echo "$done_line" | awk '{print $5}')
  rate=$(awk -v r="$runs" -v s="$secs" 'BEGIN { printf "%.0f", (s > 0 ? r / s : r) }')
  rows+=("| $target | $secs | $runs | $rate | $(field cov "$status_line") | $(field ft "$status_line") | $(field corp "$status_line") |")
done

{
  echo "Inputs each fuzz target ran in ${each} s, one target after another, from the committed seed"
  echo "corpus: \`scripts/fuzz-counts.sh $each\` ($(cargo fuzz --version 2>/dev/null), \`RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET WORK fuzz/corpus/TARGET -- -max_total_time=$each\`)."
  echo "cov and ft are libFuzzer's coverage points and features at the end; corp is the corpus it kept (inputs/bytes)."
  echo
  echo "| target | seconds | runs | runs/s | cov | ft | corp |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${rows[@]}"
} >"$dir/table.md"
scripts/machine-info.sh "$before" >"$dir/machine.txt"
# Said under the table too, as lablib.write_table does: a busy machine's counts are low.
busy=$(sed -n 's/^busy:      yes: //p' "$dir/machine.txt")
if [ -n "$busy" ]; then
  printf '\n**Busy machine** %s\n' "$busy" >>"$dir/table.md"
fi
cat "$dir/table.md"
echo "(kept in $dir/)" >&2
