#!/usr/bin/env bash
# How evenly does the kernel spread connections over pre-forked workers, under each accept
# strategy? Starts server-prefork with --accept shared|locked|reuseport, makes short
# connections with redis-benchmark (one PING each), and prints connections accepted per worker
# and Jain's fairness index (1.0 = perfectly even) from the server's stats file. The table, the
# stats files and a machine description are kept in results/DATE-prefork-fairness/ (RESULTS=DIR).
#
#   scripts/prefork-fairness.sh [WORKERS] [CONNECTIONS] [CLIENTS]     (defaults: 4 20000 4)
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${1:-4}
CONNECTIONS=${2:-20000}
CLIENTS=${3:-4}
command -v redis-benchmark >/dev/null || { echo "redis-benchmark not found (apt-get install redis-tools)" >&2; exit 1; }
cargo build --release -q -p echolab-servers
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
RESULTS=${RESULTS:-results/$(date -u +%F)-prefork-fairness}
mkdir -p "$RESULTS"
# A recorded run names the code that ran: refuse a tree with uncommitted changes (exit 3), and
# note the load it starts from, for machine.txt.
scripts/machine-info.sh --check
load_before=$(cut -d' ' -f1 /proc/loadavg)

{
echo "| accept mode | connections per worker | Jain's index |"
echo "|---|---|---:|"
for mode in shared locked reuseport; do
  target/release/server-prefork --addr 127.0.0.1:0 --protocol resp --workers "$WORKERS" \
    --accept "$mode" --stats-file "$RESULTS/$mode.stats.json" >"$tmp/out" 2>/dev/null &
  pid=$!
  for _ in $(seq 100); do grep -q '^listening on' "$tmp/out" 2>/dev/null && break; sleep 0.05; done
  port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$tmp/out")
  timeout 120 redis-benchmark -p "$port" -t ping -n "$CONNECTIONS" -c "$CLIENTS" -k 0 -q >/dev/null 2>&1 || true
  kill -TERM "$pid"
  wait "$pid"
  python3 - "$RESULTS/$mode.stats.json" "$mode" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
counts = [w["accepted"] for w in r["workers"]]
print(f"| {sys.argv[2]} | {' / '.join(map(str, counts))} | {r.get('accept_fairness_jain') or 0:.4f} |")
PY
done
echo
echo "$WORKERS workers, redis-benchmark -t ping -n $CONNECTIONS -c $CLIENTS -k 0 (PING_INLINE + PING_MBULK: 2 x $CONNECTIONS connections), $(nproc) CPUs, $(date -u +%F)"
} | tee "$RESULTS/table.md"
scripts/machine-info.sh "$load_before" >"$RESULTS/machine.txt"
echo "(kept in $RESULTS/)" >&2
