#!/usr/bin/env bash
# Issue 17: loadgen on several machines, tested on this one as several hosts.
#
# N loadgen instances, each in a network namespace of its own with its own address, started
# through pdsh (`-R exec`, which runs a command line per "host": here `ip netns exec HOST ...`,
# with %n the host's rank as its segment), drive one server-eventloop in another namespace.
# All namespaces hang off one bridge, in a namespace of its own too, so nothing touches this
# machine's own network. Each instance runs `--segment RANK/N --start-at T` with the same
# flags (an open loop, Poisson arrivals from one seed) and writes a report and an interval
# log; `loadgen merge` makes them one report. Then one instance alone sends the same total
# load, and the checks:
#   1. the merged request counts are the sum of the segments';
#   2. the segments together sent the single instance's timetable: the same requests, within
#      one per connection slot (each slot's Poisson stream is its own, seeded by the slot);
#   3. the merged latency equals, percentile by percentile, that of one histogram of every
#      segment's samples, as an HdrHistogram implementation written elsewhere (the
#      `hdrhistogram` package on PyPI) computes it from the segments' logs, and reads it back
#      from the merged log (scripts/hlog_check.py);
#   4. the merged run agrees with the single instance within noise (throughput within 5%,
#      p50 within a factor of 3: two runs on a shared 2-vCPU machine).
#
#   sudo scripts/multi-host-check.sh [--segments 3] [--seconds 4] [--rate 3000]
#       [--connections 12] [--out DIR] [--bin-dir DIR]
# --out keeps the files (the reports, logs and pdsh's output) in DIR; default: a temporary
# directory, removed. --bin-dir takes loadgen and server-eventloop from DIR as they are
# (default: build target/release first). Needs root, iproute2 and pdsh (installed with apt
# when missing, as CI runs it), and python3 with venv (for the pinned hdrhistogram, installed
# into a cache directory). Every namespace, link and process is removed on the way out.
set -euo pipefail
cd "$(dirname "$0")/.."

segments=3 seconds=4 rate=3000 connections=12 out="" bin_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --segments) segments=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --bin-dir) bin_dir=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "multi-host-check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "multi-host-check: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
command -v ip >/dev/null || die "needs iproute2's ip"
if ! command -v pdsh >/dev/null; then
  command -v apt-get >/dev/null || die "needs pdsh"
  echo "== installing pdsh"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pdsh) >/dev/null 2>&1 ||
    die "could not install pdsh"
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  command -v apt-get >/dev/null || die "needs python3 with its venv module"
  echo "== installing python3-venv"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv) \
    >/dev/null 2>&1 || die "could not install python3-venv"
fi

# The independent reader, pinned, in a virtual environment kept between runs.
HDRH=0.10.3
venv="${XDG_CACHE_HOME:-$HOME/.cache}/echolab/hdrh-venv"
if [ "$(cat "$venv/.pinned" 2>/dev/null)" != "$HDRH" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "hdrhistogram==$HDRH" ||
    die "could not install hdrhistogram $HDRH from PyPI"
  echo "$HDRH" >"$venv/.pinned"
fi

if [ -z "$bin_dir" ]; then
  cargo build --release --quiet -p echolab-loadgen -p echolab-servers
  bin_dir=target/release
fi
loadgen=$(realpath "$bin_dir/loadgen")
server=$(realpath "$bin_dir/server-eventloop")
[ -x "$loadgen" ] && [ -x "$server" ] || die "no loadgen or server-eventloop in $bin_dir"

keep=1
if [ -z "$out" ]; then
  out=$(mktemp -d)
  keep=0
fi
mkdir -p "$out"
out=$(realpath "$out")

# Names unique to this run, so two runs (or a stale one) never collide.
tag="mh$$"
sw="echolab-$tag-sw"
srv="echolab-$tag-srv"
hosts=()
for i in $(seq 0 $((segments - 1))); do hosts+=("echolab-$tag-h$i"); done
server_pid=""

cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  for ns in "${hosts[@]}" "$srv" "$sw"; do ip netns del "$ns" 2>/dev/null || true; done
  [ "$keep" = 1 ] || rm -rf "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A bridge in its own namespace, and a veth from each host's namespace to it.
ip netns add "$sw"
ip -n "$sw" link add br0 type bridge
ip -n "$sw" link set br0 up
attach() { # NS ADDRESS
  local ns=$1 addr=$2 port="p${3}"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$ns" link add eth0 type veth peer name "$port" netns "$sw"
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$sw" link set "$port" master br0
  ip -n "$sw" link set "$port" up
}
attach "$srv" 10.79.0.1 s
for i in "${!hosts[@]}"; do attach "${hosts[$i]}" "10.79.0.$((10 + i))" "$i"; done

ip netns exec "$srv" "$server" --addr 10.79.0.1:0 --protocol binary >"$out/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
  grep -q 'listening on' "$out/server.log" && break
  sleep 0.05
done
addr=$(grep -m1 -o 'listening on [0-9.:]*' "$out/server.log" | awk '{print $3}' || true)
[ -n "$addr" ] || die "the server did not start: $(cat "$out/server.log")"

load=(--addr "$addr" --protocol binary -c "$connections" --rate "$rate" --arrivals poisson
  --seed 7 --warmup 1s -d "${seconds}s" --progress never)
# Far enough ahead for pdsh to start every instance; they sleep until then.
start=$(date -u -d '+3 seconds' '+%Y-%m-%dT%H:%M:%S.%NZ')
echo "== $segments segments through pdsh, starting together at $start"
hostlist=$(IFS=,; echo "${hosts[*]}")
status=0
pdsh -S -R exec -f "$segments" -w "$hostlist" ip netns exec %h "$loadgen" run "${load[@]}" \
  --segment "%n/$segments" --start-at "$start" \
  --json "$out/seg-%n.json" --hlog "$out/seg-%n.hlog" >"$out/pdsh.log" 2>&1 || status=$?
sed 's/^/   /' "$out/pdsh.log" | grep -E 'throughput|latency|result|error' || true
# 3 is loadgen's INVALID measurement (the client fell behind its timetable on a busy machine):
# everything was still sent and verified, and the checks below are about counts and the merge.
case "$status" in
  0 | 3) ;;
  *) die "a segment failed (pdsh exit $status): see above, or $out/pdsh.log" ;;
esac

echo "== loadgen merge"
merged=0
"$loadgen" merge "$out"/seg-*.json "$out"/seg-*.hlog --json "$out/merged.json" \
  --hlog "$out/merged.hlog" >"$out/merge.txt" 2>&1 || merged=$?
sed 's/^/   /' "$out/merge.txt"
case "$merged" in
  0 | 3) ;;
  *) die "loadgen merge failed (exit $merged)" ;;
esac

echo "== one instance, the same total load"
single=0
ip netns exec "${hosts[0]}" "$loadgen" run "${load[@]}" --json "$out/single.json" \
  >"$out/single.txt" 2>&1 || single=$?
case "$single" in
  0 | 3) ;;
  *) die "the single instance failed (exit $single): $(cat "$out/single.txt")" ;;
esac

echo "== checks"
python3 - "$out" "$segments" "$connections" <<'EOF'
import json, math, sys
out, n, conns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seg = [json.load(open(f"{out}/seg-{i}.json")) for i in range(n)]
merged = json.load(open(f"{out}/merged.json"))
single = json.load(open(f"{out}/single.json"))
bad = []
def check(ok, what):
    print(("   ok    " if ok else "   FAIL  ") + what)
    if not ok:
        bad.append(what)
for k in ["sent", "ok", "failed", "indeterminate", "unsent"]:
    parts = sum(s["counts"][k] for s in seg)
    check(merged["counts"][k] == parts, f"merged counts.{k} {merged['counts'][k]} = the segments' sum {parts}")
m, s = merged["counts"]["sent"], single["counts"]["sent"]
check(abs(m - s) <= conns, f"the segments sent {m}, one instance {s}: the same timetable, within {conns} (one per slot)")
check(all(x["params"]["segment"]["count"] == n for x in seg), f"{n} segments of {n}")
check(math.isclose(merged["open_loop"]["rate"], single["open_loop"]["rate"], rel_tol=1e-9), f"together they were asked for {merged['open_loop']['rate']:.0f} req/s, as one instance was")
mt, st = merged["throughput_rps"], single["throughput_rps"]
check(abs(mt - st) <= 0.05 * st, f"throughput merged {mt:.0f} req/s, single {st:.0f}: within 5%")
mp, sp = merged["latency_us"]["p50"], single["latency_us"]["p50"]
check(mp <= 3 * sp and sp <= 3 * mp, f"p50 merged {mp} µs, single {sp} µs: within a factor of 3")
starts = [x["clock"]["measured_from_unix_s"] for x in seg]
print(f"   info  the segments' windows began within {1000 * (max(starts) - min(starts)):.1f} ms of each other")
check(merged["ok"], "the merged run is clean: every reply verified, no error")
print(f"   info  valid measurement: merged {merged['valid']}, single {single['valid']} (false when a client fell behind its timetable)")
sys.exit(1 if bad else 0)
EOF
"$venv/bin/python" scripts/hlog_check.py "$out/merged.json" "$out/merged.hlog" "$out"/seg-*.hlog |
  sed 's/^/   /'
if [ "$keep" = 1 ]; then
  echo "multi-host-check: passed ($segments segments; files in $out)"
else
  echo "multi-host-check: passed ($segments segments)"
fi
