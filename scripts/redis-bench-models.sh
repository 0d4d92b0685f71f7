#!/usr/bin/env bash
# Drives every server model (RESP mode) and redis-server with redis-benchmark, the
# reference client from Redis, so the models can be compared before echolab's own load
# generator exists, and so echolab's figures can be checked against a tool nobody here wrote.
#
# Models run interleaved (A B C A B C ...), and each figure is the median of the repetitions,
# so drift on a shared machine does not favour one model. Every run is bounded by -n.
#
#   scripts/redis-bench-models.sh [REPEAT] [REQUESTS]        (defaults: 3 and 20000)
#
# Prints a Markdown table, and keeps it with the raw per-run figures and a description of the
# machine in results/DATE-redis-bench-models/ (RESULTS=DIR to choose another place). The table: requests/s for PING over long-lived connections (keepalive) and over
# one new connection per request (-k 0), where a fork per connection shows its cost.
#
# The pool and prefork run with as many workers as there are clients: a worker serves one connection at a
# time, so with fewer workers the other keep-alive clients are never accepted and the run
# cannot finish (try it: that is prefork's lesson). Each run is also cut at RUN_TIMEOUT seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT=${1:-3}
REQUESTS=${2:-20000}
CLIENTS=16
RUN_TIMEOUT=${RUN_TIMEOUT:-60}
command -v redis-benchmark >/dev/null || { echo "redis-benchmark not found (apt-get install redis-tools)" >&2; exit 1; }
cargo build --release -q -p echolab-servers
BIN=target/release

declare -A MODELS=(
  [thread]="$BIN/server-thread"
  [thread-pool]="$BIN/server-thread --pool $CLIENTS"
  [fork]="$BIN/server-fork"
  [prefork-shared]="$BIN/server-prefork --workers $CLIENTS --accept shared"
  [prefork-locked]="$BIN/server-prefork --workers $CLIENTS --accept locked"
  [prefork-reuseport]="$BIN/server-prefork --workers $CLIENTS --accept reuseport"
  [eventloop-select]="$BIN/server-eventloop --backend select"
  [eventloop-poll]="$BIN/server-eventloop --backend poll"
  [eventloop-epoll]="$BIN/server-eventloop --backend epoll"
)
ORDER=(thread thread-pool fork prefork-shared prefork-locked prefork-reuseport eventloop-select eventloop-poll eventloop-epoll)
if command -v redis-server >/dev/null; then ORDER+=(redis-server); fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

start() { # model -> sets PID, PORT
  local model=$1
  if [ "$model" = redis-server ]; then
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >/dev/null &
    PID=$!
    for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && return; sleep 0.05; done
  else
    # shellcheck disable=SC2086
    ${MODELS[$model]} --addr 127.0.0.1:0 --protocol resp >"$tmp/out" 2>"$tmp/err" &
    PID=$!
    for _ in $(seq 100); do grep -q '^listening on' "$tmp/out" 2>/dev/null && break; sleep 0.05; done
    PORT=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$tmp/out")
  fi
}

stop() {
  kill -TERM "$PID"
  wait "$PID" || { echo "$1 exited with $?" >&2; }
}

rps() { # port keepalive -> requests/s of PING_MBULK
  timeout "$RUN_TIMEOUT" redis-benchmark -p "$1" -t ping -n "$REQUESTS" -c "$CLIENTS" -k "$2" -q 2>/dev/null \
    | tr '\r' '\n' | sed -n 's/^PING_MBULK: \([0-9.]*\) requests per second.*/\1/p' | grep . || echo 0
}

RESULTS=${RESULTS:-results/$(date -u +%F)-redis-bench-models}
mkdir -p "$RESULTS"
# A recorded run names the code that ran: refuse a tree with uncommitted changes (exit 3), and
# note the load it starts from, for machine.txt.
scripts/machine-info.sh --check
load_before=$(cut -d' ' -f1 /proc/loadavg)
printf 'model\trepetition\tkeepalive_rps\tshort_rps\n' >"$RESULTS/raw.tsv"
for rep in $(seq "$REPEAT"); do
  for model in "${ORDER[@]}"; do
    start "$model"
    keep=$(rps "$PORT" 1)
    short=$(rps "$PORT" 0)
    echo "$keep" >>"$tmp/$model.keep"
    echo "$short" >>"$tmp/$model.short"
    printf '%s\t%s\t%s\t%s\n' "$model" "$rep" "$keep" "$short" >>"$RESULTS/raw.tsv"
    stop "$model"
  done
  echo "repetition $rep of $REPEAT done" >&2
done

median() { sort -g "$1" | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
{
echo
echo "| model | PING, keepalive (req/s) | PING, new connection each (req/s) |"
echo "|---|---:|---:|"
for model in "${ORDER[@]}"; do
  printf '| %s | %.0f | %.0f |\n' "$model" "$(median "$tmp/$model.keep")" "$(median "$tmp/$model.short")"
done
echo
echo "redis-benchmark -t ping -n $REQUESTS -c $CLIENTS, median of $REPEAT interleaved runs, $(nproc) CPUs, $(date -u +%F)."
echo "thread-pool and prefork: $CLIENTS workers. 0 means the run did not finish within ${RUN_TIMEOUT}s."
} | tee "$RESULTS/table.md"
scripts/machine-info.sh "$load_before" >"$RESULTS/machine.txt"
echo "(kept in $RESULTS/)" >&2
