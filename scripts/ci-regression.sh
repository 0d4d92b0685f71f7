#!/usr/bin/env bash
# The throughput regression gate: is the working tree slower than BASE_REF?
#
#   scripts/ci-regression.sh [BASE_REF] [-- LOADGEN_COMPARE_FLAGS...]
#
# Builds BASE_REF (default: the merge base of HEAD with main, or origin/main) in a git worktree,
# and the working tree, both in release mode; then runs `loadgen compare` over every echolab
# model: paired, interleaved trials of the two builds on this machine, now, so that the
# machine's drift cancels out (docs/ci.md says why a stored baseline cannot work). It prints
# one table, writes a Markdown version for a pull-request comment, appends the run to a history
# file and redraws its trend plot, and exits 1 if any model regressed.
#
# The candidate's loadgen drives both builds: one instrument for both sides, so a change to
# loadgen itself cannot pass for a change to the servers.
#
# Flags after `--` go to `loadgen compare`, e.g. to check that the gate catches a slowdown:
#   scripts/ci-regression.sh HEAD -- --candidate-args "--debug-spin-ns 1000"
#
# Then the instruction gate (scripts/instr-gate.py): each model's instructions per request
# under Cachegrind, loadgen's client path, and every case of the codec benches
# (protocol/benches), the same two builds, and each model's and each loadgen engine's system
# calls per request, counted natively. It sees a CPU-only change far smaller than the paired
# gate can, and a system call more per request; a wake-up more only the paired gate sees. INSTR_FLAGS passes flags to it, e.g.
#   INSTR_FLAGS='--candidate-args "--debug-work 200"' scripts/ci-regression.sh HEAD
# and INSTR_GATE=off skips it (it needs valgrind). The summary says, per model, which gate
# fired.
#
# Environment: GATE_BUDGET (default 600) is the seconds the whole gate may take: the paired
# gate's --time-limit is what the builds leave of it, less 250 s for the instruction gate (its system-call counts take about 100 of them).
# GATE_DIR (default target/ci-regression) holds the baseline's worktree, kept between runs so
# that only what changed is rebuilt (`git worktree remove target/ci-regression/base-src` drops
# it), the baseline's binaries (base-bin; both sides build in target/, sharing their
# dependencies), and the reports; GATE_HISTORY (default
# $GATE_DIR/history.jsonl) is the history file.
#
# Exit codes: 0 no regression; 1 a regression (in either gate); 2 usage or build error; 3 a
# model could not be compared (a server failed to start, crashed, or answered wrongly); 4
# inconclusive (the machine was too noisy for the paired gate to rule out a regression in the
# time allowed, and the instruction gate found none: run it again).
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit 2
}

base_ref=""
if [[ $# -gt 0 && $1 != "--" ]]; then
  case $1 in -h | --help) usage ;; esac
  base_ref=$1
  shift
fi
if [[ $# -gt 0 ]]; then
  [[ $1 == "--" ]] || usage
  shift
fi
compare_flags=("$@")

# Every failure before the comparison exits 2: 1 means "a regression", and nothing else may.
fail() {
  echo "ci-regression: $*" >&2
  exit 2
}

if ! root=$(git rev-parse --show-toplevel 2>/dev/null); then
  fail "not inside a git checkout"
fi
# GATE_DIR and GATE_HISTORY may be relative to where the script was started: resolve them
# before moving to the checkout's root.
work=${GATE_DIR:-$root/target/ci-regression}
mkdir -p "$work" || fail "cannot create $work"
work=$(cd "$work" && pwd -P)
history=${GATE_HISTORY:-$work/history.jsonl}
[[ $history == /* ]] || history="$PWD/$history"
cd "$root"
git rev-parse -q --verify HEAD >/dev/null || fail "HEAD has no commit yet"
if [[ -z $base_ref ]]; then
  for main in main origin/main; do
    if git rev-parse --verify -q "$main^{commit}" >/dev/null; then
      if ! base_ref=$(git merge-base HEAD "$main" 2>/dev/null); then
        fail "HEAD and $main have no merge base here (a shallow clone? unrelated history?); fetch more history or give BASE_REF"
      fi
      break
    fi
  done
  [[ -n $base_ref ]] || fail "no branch main or origin/main to find a merge base with; give BASE_REF"
fi
base_sha=$(git rev-parse --verify -q "$base_ref^{commit}") || fail "'$base_ref' is not a commit"
base_short=$(git rev-parse --short "$base_sha")
cand_label="$(git rev-parse --short HEAD)"
if ! git diff --quiet HEAD -- || [[ -n $(git ls-files --others --exclude-standard) ]]; then
  cand_label+="+working-tree"
fi
base_label="$base_short"
[[ $base_ref == "$base_sha" || $base_ref == "$base_short" ]] || base_label="$base_ref ($base_short)"

src="$work/base-src"
# Both builds go where this script looks for them, whatever CARGO_TARGET_DIR says.
export CARGO_TARGET_DIR="$root/target"
started=$(date +%s)

# A worktree shares the repository's objects: no clone, and BASE_REF need not be pushed. It is
# kept between runs and moved to BASE_REF with checkout, which rewrites only the files that
# differ: cargo then sees the others unchanged and rebuilds only what BASE_REF changed.
# Only a registered worktree of this repository is reused: a leftover directory without its
# .git file would make `git -C` find the main checkout instead, and checkout --force there.
if [[ -f $src/.git ]] && git worktree list --porcelain | grep -qxF "worktree $src"; then
  git -C "$src" checkout -q --detach --force "$base_sha" || fail "cannot check out $base_label in $src"
  git -C "$src" clean -q -fd || fail "cannot clean $src"
else
  rm -rf "$src"
  git worktree prune
  git worktree add -q --detach --force "$src" "$base_sha" || fail "cannot add a worktree for $base_label at $src"
fi

echo "== building the baseline, $base_label (release, in $src)"
# In the candidate's target directory, so that the crates both sides depend on (most of a cold
# build's time) are compiled once: cargo keeps a workspace crate built from another path apart.
# Only the final binaries share names, so the baseline's are copied out, as cargo lists them,
# before the candidate's build puts its own in their place.
executables() {
  python3 -c 'import json, sys
kinds = set(sys.argv[1].split(","))
paths = [m["executable"] for m in map(json.loads, sys.stdin)
         if m.get("reason") == "compiler-artifact" and m.get("executable") and kinds & set(m["target"]["kind"])]
print("\n".join(paths))' "$1"
}
base_bin="$work/base-bin"
rm -rf "$base_bin" && mkdir -p "$base_bin" || fail "cannot create $base_bin"
if ! base_exes=$(cd "$src" && cargo build --release --locked -q -p echolab-servers -p echolab-loadgen --bins \
  --message-format=json | executables bin); then
  fail "the baseline $base_label does not build"
fi
while IFS= read -r exe; do
  [[ -n $exe ]] && cp "$exe" "$base_bin/"
done <<<"$base_exes"
[[ -x $base_bin/loadgen ]] || fail "the baseline $base_label built no loadgen"
echo "== building the candidate, $cand_label (release)"
if ! cargo build --release --locked -q -p echolab-servers -p echolab-loadgen; then
  fail "the working tree does not build"
fi
# The codec benches, for the instruction gate to count: their executables, as cargo names them
# (the two sides' have different hashes in target/release/deps).
bench_bins() {
  cargo build --release --locked -q -p echolab-protocol --benches --message-format=json |
    executables bench | paste -sd, -
}
base_benches="" cand_benches=""
if [[ ${INSTR_GATE:-on} != off ]]; then
  # A baseline from before the benches could be counted would time them instead (minutes).
  if [[ -f $src/protocol/benches/counting/mod.rs ]]; then
    echo "== building the codec benches of both"
    base_benches=$(cd "$src" && bench_bins) ||
      fail "the baseline's benches do not build"
    cand_benches=$(bench_bins) || fail "the working tree's benches do not build"
  else
    echo "   (the baseline's codec benches cannot be counted: it predates protocol/benches/counting)"
  fi
fi
built=$(date +%s)
echo "   builds took $((built - started)) s"

# The whole gate fits GATE_BUDGET seconds (default 600): the paired gate gets what the builds
# left, less a reserve for the instruction gate, as its --time-limit (at least a minute, and
# at most compare's own 6 minutes), unless the flags after `--` set one. Past it, a model still
# short of --precision is INCONCLUSIVE rather than the job late.
budget=${GATE_BUDGET:-600}
[[ $budget =~ ^[0-9]+$ ]] || fail "GATE_BUDGET must be a number of seconds, not '$budget'"
reserve=0
[[ ${INSTR_GATE:-on} == off ]] || reserve=250
limit=$((budget - (built - started) - reserve))
((limit > 360)) && limit=360
((limit < 60)) && limit=60
limit_flags=(--time-limit "${limit}s")
for f in ${compare_flags[@]+"${compare_flags[@]}"}; do
  [[ $f == --time-limit || $f == --time-limit=* ]] && limit_flags=()
done

echo "== comparing every model (loadgen compare; progress on stderr in $work/compare.log)"
[[ ${#limit_flags[@]} -eq 0 ]] || echo "   time limit ${limit} s: what GATE_BUDGET=${budget} s leaves after the builds and ${reserve} s for the instruction gate"
rm -f "$work/report.json" "$work/report.md"
set +e
target/release/loadgen compare \
  --baseline-bin-dir "$base_bin" \
  --candidate-bin-dir "$root/target/release" \
  --baseline-label "$base_label" \
  --candidate-label "$cand_label" \
  --json "$work/report.json" \
  --markdown "$work/report.md" \
  --history "$history" \
  ${limit_flags[@]+"${limit_flags[@]}"} \
  ${compare_flags[@]+"${compare_flags[@]}"} 2>"$work/compare.log"
rc=$?
set -e
if [[ $rc -eq 2 ]]; then
  tail -5 "$work/compare.log" >&2
  exit 2
fi
grep -v '^\[' "$work/compare.log" >&2 || true

if [[ -s $history ]]; then
  target/release/loadgen trend "$history" --svg "${history%.jsonl}.svg" --last 5 || true
fi
echo "   Markdown for a pull-request comment: $work/report.md"
echo "   paired gate took $(($(date +%s) - started)) s"

irc=0
if [[ ${INSTR_GATE:-on} != off ]]; then
  echo "== instructions per request under Cachegrind (scripts/instr-gate.py)"
  if ! command -v valgrind >/dev/null; then
    echo "ci-regression: the instruction gate needs valgrind (apt-get install valgrind), or INSTR_GATE=off" >&2
    exit 2
  fi
  instr_flags=()
  eval "instr_flags=(${INSTR_FLAGS:-})"
  rm -f "$work/instr.json"
  set +e
  python3 scripts/instr-gate.py --baseline-bin-dir "$base_bin" \
    --candidate-bin-dir "$root/target/release" --json "$work/instr.json" \
    --baseline-benches "$base_benches" --candidate-benches "$cand_benches" \
    ${instr_flags[@]+"${instr_flags[@]}"}
  irc=$?
  set -e
  [[ $irc -eq 2 ]] && exit 2
  # Which gate fired, model by model.
  python3 - "$work/report.json" "$work/instr.json" <<'EOF'
import json, os, sys
report = json.load(open(sys.argv[1])) if os.path.exists(sys.argv[1]) else {}
paired = {m.get("model") or m.get("name"): m for m in report.get("models", [])}
rows = json.load(open(sys.argv[2]))["rows"]
instr = {r["model"]: r for r in rows if r["side"] != "codec"}
print("== which gate fired")
codec = [r for r in rows if r["side"] == "codec"]
grew = [r for r in codec if r["verdict"] == "REGRESSION"]
if codec:
    print(f"   codec benches: {len(codec)} cases, {len(grew)} grew past the threshold (the instruction gate only: no wall-clock gate runs them)")
for r in grew:
    print(f"   {r['model']}: {r['change_percent']:+.3f}% instructions per iteration")
for name in list(dict.fromkeys([*paired, *instr])):
    p = paired.get(name, {})
    wall = "regression" in (p.get("throughput_verdict"), p.get("p99_verdict"))
    i = instr.get(name)
    count = i is not None and i["verdict"] == "REGRESSION"
    why = {(True, True): "both: slower in time and in instructions (a CPU cost)",
           (True, False): "the paired gate only: slower in time, not in instructions (a system call, a wake-up, a lock; or noise)",
           (False, True): "the instruction gate only: more instructions, below what time can show here",
           (False, False): "neither"}[(wall, count)]
    extra = f" ({i['change_percent']:+.3f}% instructions)" if i else ""
    print(f"   {name:20} {why}{extra}")
EOF
fi
echo "   gate took $(($(date +%s) - started)) s in all"
if [[ $rc -eq 1 || $irc -eq 1 ]]; then
  exit 1
fi
exit $rc

