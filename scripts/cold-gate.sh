#!/usr/bin/env bash
# Times a cold run of the regression gate, the way docs/ci.md states it: `scripts/ci-regression.sh
# HEAD` in a fresh `git clone` of this repository, where neither side has been built, so the
# figure is what a CI job without a build cache pays. The gate reports its own phases ("builds
# took N s", and the comparison's elapsed_s in report.json); this script adds the wall time of
# the whole gate and writes them, with the gate's own report, into a results directory.
#
#   scripts/cold-gate.sh [--results DIR] [-- LOADGEN_COMPARE_FLAGS...]
#
# --results DIR    where the run goes (default results/DATE-cold-gate)
# -- FLAGS...      passed on to the gate, and so to `loadgen compare`: for a quick trial only
#                  (e.g. `-- --only thread --pairs 8 --max-pairs 8`); a run to commit is the gate
#                  as it is, and its table says when it was not.
#
# It refuses a tree with uncommitted changes (scripts/machine-info.sh --check), because the
# clone holds HEAD and machine.txt must name the code that ran. ECHOLAB_ALLOW_DIRTY=1 lets a trial
# go ahead (still timing HEAD, not the working tree); write a trial outside results/.
#
# Cost: two release builds of the workspace from nothing, then one gate comparison (at most
# about 6 minutes: --time-limit) and the instruction gate (about a minute and a half). Run it on an idle machine:
# machine.txt records the load before and after, and the table says when the machine was busy.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit 2
}

cd "$(dirname "$0")/.."
root=$PWD
out=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --results)
      [[ $# -ge 2 ]] || usage
      out=$2
      shift 2
      ;;
    --)
      shift
      break
      ;;
    -h | --help) usage ;;
    *) usage ;;
  esac
done
compare_flags=("$@")

scripts/machine-info.sh --check
commit=$(git rev-parse HEAD)
out=${out:-results/$(date -u +%F)-cold-gate}
# The clone runs elsewhere: make DIR absolute while it still means what the caller meant.
[[ $out == /* ]] || out="$root/$out"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/echolab-cold-gate.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
clone="$tmp/echolab"

# A local clone: the objects are hard-linked, but the checkout is new and has no target/, which is
# what makes the gate cold. The clone itself is not part of the gate (a CI job's checkout step
# fetches over the network and is timed apart from it), so it is reported but not added in.
echo "== cloning $root at ${commit:0:7} into $clone" >&2
t0=$(date +%s)
git clone -q --no-checkout "$root" "$clone"
git -C "$clone" checkout -q --detach "$commit" ||
  { echo "cold-gate: HEAD ($commit) is on no branch the clone could fetch; commit it to a branch" >&2; exit 2; }
t1=$(date +%s)

before=$(cut -d' ' -f1 /proc/loadavg)
echo "== the gate, cold: scripts/ci-regression.sh HEAD in the clone" >&2
# Nothing from the caller's environment may make it warm: GATE_DIR or CARGO_TARGET_DIR would point
# the builds at an existing target directory, and a rustc wrapper (sccache) would serve them
# from its cache. The crates' sources still come from this machine's cargo registry, as they
# would from a CI job's cached ~/.cargo/registry: downloading them is not timed.
start=$(date +%s)
set +e
(cd "$clone" && env -u GATE_DIR -u GATE_HISTORY -u CARGO_TARGET_DIR -u RUSTC_WRAPPER \
  -u CARGO_BUILD_RUSTC_WRAPPER scripts/ci-regression.sh HEAD -- ${compare_flags[@]+"${compare_flags[@]}"}) \
  2>&1 | tee "$tmp/gate.log"
status=${PIPESTATUS[0]}
set -e
end=$(date +%s)

gate="$clone/target/ci-regression"
# The gate's own account of its phases. Exit 2 is a usage or build error: there is no comparison
# to time, so no run is written.
builds=$(sed -n 's/^   builds took \([0-9]*\) s$/\1/p' "$tmp/gate.log")
if [[ $status -eq 2 || -z $builds || ! -s $gate/report.json ]]; then
  echo "cold-gate: the gate exited $status without a comparison (see its output above); nothing written" >&2
  exit 2
fi
# The instruction gate follows the paired one: its time is the gap between the gate's two
# running totals (empty when it was off).
paired_total=$(sed -n 's/^   paired gate took \([0-9]*\) s$/\1/p' "$tmp/gate.log")
all_total=$(sed -n 's/^   gate took \([0-9]*\) s in all$/\1/p' "$tmp/gate.log")
instr=""
if [[ -n $paired_total && -n $all_total ]] && grep -q '^== instructions per request' "$tmp/gate.log"; then
  instr=$((all_total - paired_total))
fi
compare=$(python3 -c 'import json, sys; print(round(json.load(open(sys.argv[1]))["elapsed_s"]))' "$gate/report.json")
total=$((end - start))
# Three clocks read in whole seconds: the rest can come out a second below zero.
rest=$((total - builds - compare - ${instr:-0}))
((rest >= 0)) || rest=0
case $status in
  0) verdict="0, no regression" ;;
  1) verdict="1, a regression (a build against itself: a false alarm)" ;;
  3) verdict="3, a model could not be compared" ;;
  4) verdict="4, inconclusive" ;;
  *) verdict="$status" ;;
esac

mkdir -p "$out"
cp "$tmp/gate.log" "$out/gate.log"
cp "$gate/report.md" "$gate/report.json" "$out/"
scripts/machine-info.sh "$before" >"$out/machine.txt"
{
  echo "A cold gate: \`scripts/ci-regression.sh HEAD\` in a fresh \`git clone\` of ${commit:0:7}, with no"
  echo "target directory, so the baseline (in its worktree) and the candidate are both built from"
  echo "nothing, then compared. Times from this script's clock (the whole gate), the gate's"
  echo "\"builds took\" line and the comparison's own \`elapsed_s\` (report.json)."
  echo
  echo "| phase | seconds |"
  echo "|---|---:|"
  echo "| builds (the baseline's worktree, both release builds, and both sides' codec benches) | $builds |"
  echo "| comparing (\`loadgen compare\`, every model) | $compare |"
  [[ -z $instr ]] || echo "| the instruction gate (\`instr-gate.py\`: every model, loadgen's client path, the codec benches) | $instr |"
  echo "| the rest (reports, trend plot) | $rest |"
  echo "| **the gate in all** | **$total** |"
  echo
  echo "Gate exit status: $verdict. Its report: \`report.md\` (the table), \`report.json\` (every pair),"
  echo "\`gate.log\` (all it printed). Not in the total: the local clone, $((t1 - t0)) s; downloading"
  echo "crates (they came from this machine's cargo registry, as from a CI job's cache)."
  if [[ ${#compare_flags[@]} -gt 0 ]]; then
    echo
    echo "**Not the gate as it is:** run with \`-- ${compare_flags[*]}\`."
  fi
  if grep -q '^busy:.*yes' "$out/machine.txt"; then
    echo
    echo "**Busy machine:** $(sed -n 's/^busy: *yes: //p' "$out/machine.txt")."
  fi
} >"$out/table.md"

cat "$out/table.md"
rel=${out#"$root"/}
echo "(kept in $rel/; to make it again: scripts/cold-gate.sh${compare_flags[*]:+ -- ${compare_flags[*]}})" >&2
exit "$status"
