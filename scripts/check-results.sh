#!/usr/bin/env bash
# CI's provenance check (docs/ARCHITECTURE.md, "Figures and their runs"): every committed
# run under results/ has a machine.txt naming a commit in this repository's history, and
# every link from the docs into results/ resolves. A figure the docs state is only as good as
# the run behind it, and a run is only as good as the code it names. Runs made before
# machine-info.sh refused a dirty tree, on top of a real commit, are listed as notes.
#
#   scripts/check-results.sh        prints one line per problem and 'N passed, N failed'
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

passed=0
failed=0
notes=0
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
pass() { passed=$((passed + 1)); }

if [ "$(git rev-parse --is-shallow-repository 2>/dev/null)" = true ]; then
  echo "note: a shallow clone holds no history to find run commits in: fetching it"
  git fetch --quiet --unshallow 2>/dev/null || echo "note: could not unshallow; commits are checked against what is here"
fi

# The runs that are committed (a run just made and not yet added, or one a crash left half
# written, is not this check's business until it is).
for dir in $(git ls-files results | awk -F/ 'NF > 2 { print $1 "/" $2 }' | sort -u); do
  m="$dir/machine.txt"
  if [ ! -f "$m" ]; then
    fail "$dir has no machine.txt"
    continue
  fi
  line=$(grep -m1 '^commit:' "$m" || true)
  commit=$(echo "$line" | awk '{print $2}')
  if [ -z "$commit" ]; then
    fail "$m names no commit"
  elif ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
    fail "$m names commit $commit, which this repository does not have"
  elif ! git merge-base --is-ancestor "$commit" HEAD 2>/dev/null; then
    fail "$m names commit $commit, which is not in the history of HEAD"
  elif echo "$line" | grep -q 'not traceable'; then
    # machine-info.sh writes this for a trial run made with ECHOLAB_ALLOW_DIRTY=1.
    fail "$m: a trial run from a tree with uncommitted changes, not to be committed ($line)"
  else
    pass
    # Runs recorded before machine-info.sh refused a dirty tree may say so: they name a real
    # commit, but not all of the code that ran. Said, not failed; a new run cannot be one.
    if echo "$line" | grep -q 'uncommitted'; then
      echo "note: $m: made from a tree with uncommitted changes on top of $commit"
      notes=$((notes + 1))
    fi
  fi
done

# Links: [text](path) in README.md, results/README.md and docs/, relative to the file.
while IFS= read -r doc; do
  base=$(dirname "$doc")
  while IFS= read -r target; do
    path=${target%%#*}
    case "$path" in
      http://* | https://* | mailto:* | '') continue ;;
    esac
    case "$path" in
      *results/*) ;;
      *) continue ;;
    esac
    if [ -e "$base/$path" ]; then
      pass
    else
      fail "$doc links to $target, which does not exist"
    fi
  done < <(grep -o '](\([^)]*\))' "$doc" | sed 's/^](\(.*\))$/\1/')
done < <(ls README.md results/README.md docs/*.md docs/models/*.md 2>/dev/null)

echo "provenance: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
