#!/usr/bin/env bash
# Describes this machine and build for a results directory: figures mean little without the
# hardware, kernel, versions and commit that produced them, and how busy the machine was.
#
#   scripts/machine-info.sh --check           exit 3, saying why, if the tree is not clean
#   scripts/machine-info.sh --wait-idle [S]   wait for an idle machine, print the load average
#   scripts/machine-info.sh [LOAD_BEFORE]     print the description (machine.txt)
#
# A run is recorded only from a clean tree (no change to a file outside results/, tracked or
# not), so the commit it names is the code that ran. LOAD_BEFORE is the 1-minute
# load average read before the run (`cut -d' ' -f1 /proc/loadavg`): a run begun with more
# than half the CPUs' worth of load shared them with other work, and says so.
# ECHOLAB_ALLOW_DIRTY=1 lets a trial run go ahead; its machine.txt then says it cannot be
# traced to a commit, and the CI check (scripts/check-results.sh) refuses it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Changes under results/ are what runs write, not code: a run that rewrites its own committed
# directory (same date, same name) must not call itself untraceable.
dirty() {
  ! git diff --quiet HEAD -- . ':(exclude)results' 2>/dev/null ||
    [ -n "$(git status --porcelain --untracked-files=all -- . ':(exclude)results' 2>/dev/null)" ]
}

# --wait-idle [SECONDS]: wait (at most SECONDS, default 120) until the 1-minute load average is
# at most half the CPUs', then print it. A build just before a run leaves its load in the
# average for a minute or two; a run read then would be called busy for a load that is gone.
if [ "${1:-}" = "--wait-idle" ]; then
  limit=${2:-120}
  waited=0
  while awk -v l="$(cut -d' ' -f1 /proc/loadavg)" -v c="$(nproc)" 'BEGIN { exit !(l > c / 2) }' &&
    [ "$waited" -lt "$limit" ]; do
    sleep 5
    waited=$((waited + 5))
  done
  cut -d' ' -f1 /proc/loadavg
  exit 0
fi

if [ "${1:-}" = "--check" ]; then
  if dirty; then
    if [ "${ECHOLAB_ALLOW_DIRTY:-}" = 1 ]; then
      echo "warning: uncommitted changes: this run cannot be traced to a commit" >&2
      exit 0
    fi
    echo "refusing to record a run from a tree with uncommitted changes (commit first, or set ECHOLAB_ALLOW_DIRTY=1 for a trial run that will not be committed):" >&2
    git status --short -- . ':(exclude)results' >&2
    exit 3
  fi
  exit 0
fi

cpus=$(nproc)
after=$(cut -d' ' -f1-3 /proc/loadavg)
echo "date:      $(date -u '+%F %T UTC')"
if dirty; then
  echo "commit:    $(git rev-parse HEAD) (with uncommitted changes: not traceable)"
else
  echo "commit:    $(git rev-parse HEAD)"
fi
echo "cpu:       $cpus x $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
echo "memory:    $(free -h | awk '/^Mem:/ {print $2}')"
echo "kernel:    $(uname -sr)"
echo "rustc:     $(rustc --version 2>/dev/null)"
echo "redis:     $(redis-benchmark --version 2>/dev/null | head -1)"
if [ -n "${1:-}" ]; then
  echo "load avg:  $1 before the run; $after after (1, 5, 15 min)"
  if awk -v l="$1" -v c="$cpus" 'BEGIN { exit !(l > c / 2) }'; then
    echo "busy:      yes: the load before the run was above half the $cpus CPUs; figures are lower and noisier than on an idle machine"
  else
    echo "busy:      no"
  fi
else
  echo "load avg:  $after (at the end of the run)"
fi
